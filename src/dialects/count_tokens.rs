//! `POST /v1/messages/count_tokens`, answered without the upstream: an
//! estimate of the prompt's tokens from `system`, `messages` and `tools`,
//! as a chat template lays them out for the models SiliconFlow serves.
//!
//! Not a tokenizer: a real one for these models (Qwen's 151k or DeepSeek's
//! 128k vocabulary) would cost the proxy tens of megabytes of memory for a
//! figure agents use to decide when to compact a conversation. Instead the
//! text is cut the way their tokenizers pre-split it (letter runs, digits,
//! punctuation, white space, CJK characters) and each piece is priced from
//! measurements: on the fixtures in `tests/fixtures/count_tokens/` (agent
//! turns with tools, prose, code, Chinese, shell output) the estimate is
//! within 8% of both real tokenizers' counts (two fixtures held out of the
//! fitting: within 7.2%); the test below holds it to 15%.

use serde_json::Value;

/// Tokens a template adds around each message (role markers, new lines).
const PER_MESSAGE: f64 = 4.0;
/// Tokens of the template's tool preamble, and around each tool.
const TOOLS_PREAMBLE: f64 = 24.0;
const PER_TOOL: f64 = 2.0;
/// The assistant's turn opened at the end.
const PROMPT_END: f64 = 3.0;

/// The estimate for a Messages request, or why the body is not one.
pub fn count_request(body: &[u8]) -> Result<u64, String> {
    let req: Value =
        serde_json::from_slice(body).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let Some(obj) = req.as_object() else { return Err("the request body must be a JSON object".into()) };
    let Some(messages) = obj.get("messages").and_then(Value::as_array) else {
        return Err("`messages` is required: a list of {role, content}".into());
    };
    let mut tokens = PROMPT_END;
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => tokens += PER_MESSAGE + text_tokens(&content_text(system)),
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        tokens += TOOLS_PREAMBLE;
        for tool in tools {
            // As templates render a tool: its name, description and schema in JSON.
            let rendered = serde_json::json!({
                "type": "function",
                "function": {
                    "name": tool.get("name").unwrap_or(&Value::Null),
                    "description": tool.get("description").unwrap_or(&Value::Null),
                    "parameters": tool.get("input_schema").unwrap_or(&Value::Null),
                }
            });
            tokens += PER_TOOL + text_tokens(&rendered.to_string());
        }
    }
    for m in messages {
        let Some(content) = m.get("content") else {
            return Err("each message needs `content`".into());
        };
        tokens += PER_MESSAGE + text_tokens(&content_text(content));
    }
    Ok(tokens.round().max(1.0) as u64)
}

/// The text of a content: a string, or a list of blocks (text, tool calls
/// and results, thinking; images count as nothing here).
fn content_text(content: &Value) -> String {
    let mut out = String::new();
    push_content(content, &mut out);
    out
}

/// Adds a content's text to `out` (one buffer, however deep the results nest).
fn push_content(content: &Value, out: &mut String) {
    match content {
        Value::String(s) => out.push_str(s),
        Value::Array(blocks) => {
            for (i, b) in blocks.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => out.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("thinking") => out.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or("")),
                    Some("tool_use") => out.push_str(
                        &serde_json::json!({
                            "name": b.get("name").unwrap_or(&Value::Null),
                            "arguments": b.get("input").unwrap_or(&Value::Null),
                        })
                        .to_string(),
                    ),
                    Some("tool_result") => {
                        if let Some(c) = b.get("content") {
                            push_content(c, out);
                        }
                    }
                    _ => {
                        if let Value::String(s) = b {
                            out.push_str(s);
                        }
                    }
                }
            }
        }
        Value::Null => {}
        other => out.push_str(&other.to_string()),
    }
}

/// What kind of piece a character starts or continues.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Newline,
    Cjk,
    Punct,
    Other,
}

fn class(c: char) -> Class {
    match c {
        'a'..='z' | 'A'..='Z' => Class::Letter,
        '0'..='9' => Class::Digit,
        ' ' | '\t' => Class::Space,
        '\n' | '\r' => Class::Newline,
        '\u{3040}'..='\u{30ff}'
        | '\u{3400}'..='\u{4dbf}'
        | '\u{4e00}'..='\u{9fff}'
        | '\u{ac00}'..='\u{d7af}' => Class::Cjk,
        c if c.is_ascii() => Class::Punct,
        // CJK punctuation and full-width forms: a token each, as punctuation.
        '\u{3000}'..='\u{303f}' | '\u{ff00}'..='\u{ffef}' => Class::Punct,
        c if c.is_alphabetic() => Class::Letter,
        _ => Class::Other,
    }
}

/// Estimated tokens of a text.
pub fn text_tokens(text: &str) -> f64 {
    let mut tokens = 0.0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let kind = class(c);
        let mut len = 1usize;
        while let Some(&n) = chars.peek() {
            if class(n) != kind {
                break;
            }
            len += 1;
            chars.next();
        }
        tokens += match kind {
            // Common words are one token; long ones and identifiers split.
            Class::Letter => (len as f64 / 8.0).ceil(),
            // Qwen takes digits one by one, DeepSeek three at a time.
            Class::Digit => len as f64 * 0.6,
            // A space before a word is part of the word; runs (indentation) merge.
            Class::Space if len == 1 => 0.0,
            Class::Space => 0.5,
            Class::Newline => 0.5,
            // Common words are two characters, most often one token.
            Class::Cjk => len as f64 * 0.55,
            // Pairs such as `",` `::` `();` are single tokens.
            Class::Punct => (len as f64 / 2.5).ceil(),
            Class::Other => len as f64,
        };
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_within_15_percent_of_the_real_tokenizers_on_the_fixtures() {
        let fixtures: Vec<Value> =
            serde_json::from_str(include_str!("../../tests/fixtures/count_tokens/fixtures.json")).unwrap();
        assert!(fixtures.len() >= 6);
        let (mut report, mut worst) = (Vec::new(), 0.0f64);
        for f in &fixtures {
            let body = f["request"].to_string();
            let estimate = count_request(body.as_bytes()).unwrap() as f64;
            for tokenizer in ["qwen", "deepseek"] {
                let real = f[tokenizer].as_f64().unwrap();
                let off = (estimate - real) / real;
                report.push(format!(
                    "{} {tokenizer}: {estimate} vs {real} ({:+.1}%)",
                    f["name"],
                    off * 100.0
                ));
                worst = worst.max(off.abs());
            }
        }
        println!("{}", report.join("\n"));
        assert!(worst <= 0.15, "{}", report.join("\n"));
    }

    #[test]
    fn requests_that_are_not_messages_are_refused_with_a_reason() {
        assert!(count_request(b"").unwrap_err().contains("not valid JSON"));
        assert!(count_request(b"[]").unwrap_err().contains("JSON object"));
        assert!(count_request(br#"{"model":"m"}"#).unwrap_err().contains("`messages`"));
        assert!(count_request(br#"{"messages":[{"role":"user"}]}"#).unwrap_err().contains("content"));
        let n = count_request(br#"{"messages":[{"role":"user","content":"hello there"}]}"#).unwrap();
        assert!((5..=12).contains(&n), "{n}");
        // Images and unknown blocks count nothing but their message.
        let img = br#"{"messages":[{"role":"user","content":[{"type":"image","source":{"data":"QUJD"}}]}]}"#;
        assert_eq!(count_request(img).unwrap(), (PER_MESSAGE + PROMPT_END) as u64);
    }
}
