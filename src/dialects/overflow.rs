//! Context overflow, as SiliconFlow words it and as each dialect's clients
//! recognise it. SiliconFlow answers a prompt past a model's window with 400
//! code 20015 and one of two texts: "length of prompt_tokens (P) must be
//! less than max_seq_len (M)." or "max_total_tokens (P) must be less than or
//! equal to max_seq_len (M)" (the prompt plus `max_tokens`). The same code
//! also means "invalid parameter": the text tells them apart. Codex keys on
//! the code `context_length_exceeded`; Claude Code on Anthropic's wording
//! "prompt is too long: N tokens > M maximum". Pure.

use serde_json::json;

/// An overflow: the tokens asked for (the prompt, or the prompt and its
/// `max_tokens`), the window, and the upstream's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    pub tokens: u64,
    pub limit: u64,
    pub message: String,
}

/// An overflow a message describes, in either of SiliconFlow's wordings.
pub fn parse(message: &str) -> Option<Overflow> {
    let lower = message.to_ascii_lowercase();
    if !lower.contains("max_seq_len")
        || !(lower.contains("prompt_tokens") || lower.contains("max_total_tokens"))
    {
        return None;
    }
    // The figures in parentheses, in order: what was asked, then the window.
    let figures: Vec<u64> =
        message.split('(').skip(1).filter_map(|rest| rest.split(')').next()?.trim().parse().ok()).collect();
    match figures[..] {
        [tokens, .., limit] => Some(Overflow { tokens, limit, message: message.trim().to_string() }),
        _ => None,
    }
}

/// An overflow in an upstream error body (SiliconFlow's envelope, OpenAI's
/// or Anthropic's error shape, or a bare string).
pub fn in_body(body: &[u8]) -> Option<Overflow> {
    let (_, message) = super::responses::errors::upstream_message(body);
    if let Some(o) = parse(&message) {
        return Some(o);
    }
    // Anthropic's shape: `{"type":"error","error":{"type","message"}}`.
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    parse(v.pointer("/error/message")?.as_str()?)
}

impl Overflow {
    /// Anthropic's wording, which Claude Code reads (and then says "Prompt
    /// is too long"), followed by what the upstream said.
    pub fn anthropic_message(&self) -> String {
        format!("prompt is too long: {} tokens > {} maximum ({})", self.tokens, self.limit, self.message)
    }

    /// OpenAI's error body, with the code Codex and the SDKs read.
    pub fn openai_body(&self) -> Vec<u8> {
        json!({"error": {"message": self.message, "type": "invalid_request_error", "param": "messages",
            "code": "context_length_exceeded"}})
        .to_string()
        .into_bytes()
    }

    /// Anthropic's error body.
    pub fn anthropic_body(&self) -> Vec<u8> {
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": self.anthropic_message()}})
            .to_string()
            .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_wordings_are_read_with_their_figures_and_other_20015s_are_not() {
        let a = r#"{"code":20015,"message":"length of prompt_tokens (68957) must be less than max_seq_len (65536).","data":null}"#;
        let o = in_body(a.as_bytes()).unwrap();
        assert_eq!((o.tokens, o.limit), (68957, 65536));
        let b = r#"{"code":20015,"message":"max_total_tokens (172191) must be less than or equal to max_seq_len (131072)","data":null}"#;
        let o = in_body(b.as_bytes()).unwrap();
        assert_eq!((o.tokens, o.limit), (172191, 131072));
        // The same code for a bad parameter is not an overflow.
        assert_eq!(
            in_body(br#"{"code":20015,"message":"max_tokens: Input should be a valid integer","data":null}"#),
            None
        );
        // Anthropic-shaped, as SiliconFlow's /v1/messages may answer.
        let c = r#"{"type":"error","error":{"type":"invalid_request_error","message":"length of prompt_tokens (20032) must be less than max_seq_len (19800)."}}"#;
        let o = in_body(c.as_bytes()).unwrap();
        assert_eq!((o.tokens, o.limit), (20032, 19800));
        let m = o.anthropic_message();
        assert!(m.starts_with("prompt is too long: 20032 tokens > 19800 maximum"), "{m}");
        let v: serde_json::Value = serde_json::from_slice(&o.openai_body()).unwrap();
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(
            v["error"]["message"],
            "length of prompt_tokens (20032) must be less than max_seq_len (19800)."
        );
        assert_eq!(in_body(b"\"Invalid token\""), None);
    }
}
