//! Model aliases on the request path: a requested name that an alias maps
//! becomes the model called (in the body sent upstream, in the client's
//! model check, in the log's `model`), and the answer shows the requested
//! name again (`ModelRename`, on every line of a stream or a JSON body).

use std::borrow::Cow;

use bytes::Bytes;

use super::errors::ProxyError;
use super::forward::{OutBody, Outgoing};
use super::record::Pending;
use crate::aliases::Aliases;

/// Applies the alias table to an outgoing call: the body and `out.model`
/// name the model to call, `pending` remembers the name asked for.
pub fn apply(out: &mut Outgoing, aliases: &Aliases, pending: &mut Pending) -> Result<(), ProxyError> {
    if out.model.is_empty() || aliases.is_empty() {
        return Ok(());
    }
    let resolved = aliases.resolve(&out.model);
    if !resolved.aliased {
        return Ok(());
    }
    let target = resolved.model.to_string();
    let renamed = match &mut out.body {
        OutBody::Empty => true,
        OutBody::Bytes(body) => match with_model(body, &target) {
            Some(b) => {
                *body = b;
                true
            }
            None => false,
        },
        OutBody::Stream { first, length, .. } => match first.as_ref().and_then(|f| with_model(f, &target)) {
            Some(b) => {
                let old = first.as_ref().map_or(0, Bytes::len) as u64;
                *length = (*length + b.len() as u64).saturating_sub(old);
                *first = Some(b);
                true
            }
            None => false,
        },
    };
    if !renamed {
        return Err(ProxyError::bad_request(format!(
            "the model {:?} maps to {target:?}, but the request's model field could not be rewritten",
            out.model
        )));
    }
    pending.requested_model = Some(std::mem::replace(&mut out.model, target));
    Ok(())
}

/// `body` with its model named `to`: a JSON object's top-level `model`, or
/// a multipart form's `model` field. `None` if it names none.
pub fn with_model(body: &[u8], to: &str) -> Option<Bytes> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[start] == b'{' {
        let probe: ModelOnly = serde_json::from_slice(body).ok()?;
        return match probe.model?.0 {
            Cow::Borrowed(m) => {
                // The name as it stands in the body, between its quotes.
                let at = (m.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
                let end = at.checked_add(m.len())?;
                if at == 0 || end >= body.len() {
                    return None;
                }
                let quoted = serde_json::to_vec(to).ok()?;
                Some(splice(body, at - 1..end + 1, &quoted))
            }
            // Escapes in the name: the object is written again.
            Cow::Owned(_) => {
                let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
                v.as_object_mut()?.insert("model".into(), to.into());
                serde_json::to_vec(&v).ok().map(Bytes::from)
            }
        };
    }
    let range = super::multipart::field_range(body, "model")?;
    Some(splice(body, range, to.as_bytes()))
}

/// A JSON body's top-level `model`, borrowed from the body where it has no
/// escapes (serde gives `Option<Cow<str>>` owned, always), so that where it
/// stands can be told.
#[derive(serde::Deserialize)]
struct ModelOnly<'a> {
    #[serde(borrow)]
    model: Option<ModelStr<'a>>,
}

struct ModelStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for ModelStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = ModelStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a model name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ModelStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ModelStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

fn splice(body: &[u8], range: std::ops::Range<usize>, with: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + with.len());
    out.extend_from_slice(&body[..range.start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&body[range.end..]);
    Bytes::from(out)
}

/// Renames the model in an answer as it passes: the `"model"` of each JSON
/// object of the answer (a stream's events, or a JSON body whole) says `to`:
/// the top-level one, and Anthropic's `message.model` (in `message_start`).
/// A `"model"` deeper down (a tool's input) is the model's own output and
/// is left alone. Lines are held until their end; a line longer than
/// `MAX_LINE` is passed unchanged.
pub struct ModelRename {
    /// `to` as a JSON string, quotes included.
    to: Vec<u8>,
    held: Vec<u8>,
    /// A line grew past the limit: the rest of the answer passes as it is.
    passing: bool,
    scan: Scan,
}

const MAX_LINE: usize = 16 << 20;

impl ModelRename {
    pub fn new(to: &str) -> Self {
        let to = serde_json::to_vec(to).unwrap_or_else(|_| b"\"\"".to_vec());
        ModelRename { to, held: Vec::new(), passing: false, scan: Scan::default() }
    }

    /// What can be sent of the answer so far (empty: half a line, held).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if self.passing {
            return Bytes::copy_from_slice(chunk);
        }
        let Some(last_newline) = memchr::memrchr(b'\n', chunk) else {
            self.held.extend_from_slice(chunk);
            if self.held.len() > MAX_LINE {
                self.passing = true;
                return Bytes::from(std::mem::take(&mut self.held));
            }
            return Bytes::new();
        };
        self.held.extend_from_slice(&chunk[..=last_newline]);
        let out = self.scan.rename(&self.held, &self.to);
        self.held.clear();
        self.held.extend_from_slice(&chunk[last_newline + 1..]);
        Bytes::from(out)
    }

    /// The rest, at the end of the answer.
    pub fn finish(&mut self) -> Bytes {
        let held = std::mem::take(&mut self.held);
        if self.passing || held.is_empty() {
            return Bytes::from(held);
        }
        Bytes::from(self.scan.rename(&held, &self.to))
    }
}

/// Where a scan of JSON text stands between two pieces of it (whole lines).
#[derive(Default)]
struct Scan {
    /// Objects and arrays open.
    depth: u32,
    /// The last key read in the top-level object was `message`.
    after_message_key: bool,
    /// The object open at depth 2 is the top-level `message`.
    in_message: bool,
}

impl Scan {
    /// `text` with the string value of each `"model"` key that names the
    /// answer's model replaced by `to` (a JSON string).
    fn rename(&mut self, text: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 32);
        let (mut i, mut copied) = (0, 0);
        while i < text.len() {
            match text[i] {
                b'"' => {
                    let Some(end) = string_end(text, i + 1) else { break };
                    let key = &text[i + 1..end];
                    let after = skip_space(text, end + 1);
                    i = end + 1;
                    if text.get(after) != Some(&b':') {
                        continue;
                    }
                    if self.depth == 1 {
                        self.after_message_key = key == b"message";
                    }
                    let named = key == b"model" && (self.depth == 1 || (self.depth == 2 && self.in_message));
                    let value = skip_space(text, after + 1);
                    if named && text.get(value) == Some(&b'"') {
                        let Some(value_end) = string_end(text, value + 1) else { break };
                        out.extend_from_slice(&text[copied..value]);
                        out.extend_from_slice(to);
                        copied = value_end + 1;
                        i = value_end + 1;
                    }
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 2 {
                        self.in_message = text[i] == b'{' && self.after_message_key;
                    }
                    i += 1;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth < 2 {
                        self.in_message = false;
                    }
                    i += 1;
                }
                _ => i += 1,
            }
        }
        out.extend_from_slice(&text[copied..]);
        out
    }
}

fn skip_space(text: &[u8], mut i: usize) -> usize {
    while i < text.len() && text[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index of the quote that closes a JSON string whose content starts at `i`.
fn string_end(text: &[u8], mut i: usize) -> Option<usize> {
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_multipart_bodies_name_the_model_to_call() {
        let b = with_model(
            br#" {"messages":[{"content":"model"}],"model":"claude-opus-4-8","stream":true}"#,
            "Qwen/Qwen3-8B",
        )
        .unwrap();
        assert_eq!(&b[..], br#" {"messages":[{"content":"model"}],"model":"Qwen/Qwen3-8B","stream":true}"#);
        // An escaped name: the object is written again, with the same fields.
        let b = with_model(br#"{"model":"claude\u002dx","n":1}"#, "a\"b").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!((v["model"].as_str(), v["n"].as_i64()), (Some("a\"b"), Some(1)));
        assert!(with_model(br#"{"messages":[]}"#, "x").is_none());
        let form = b"--X\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--X--\r\n";
        let b = with_model(form, "FunAudioLLM/SenseVoiceSmall").unwrap();
        assert!(String::from_utf8_lossy(&b).contains("\r\n\r\nFunAudioLLM/SenseVoiceSmall\r\n--X"));
        assert_eq!(b.len(), form.len() - "whisper-1".len() + "FunAudioLLM/SenseVoiceSmall".len());
    }

    #[test]
    fn answers_name_the_requested_model_on_every_line_however_they_are_cut() {
        let stream = concat!(
            "data: {\"id\":\"1\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"delta\":{\"content\":\"the \\\"model\\\": \\\"x\\\"\"}}]}\n\n",
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\" : \"Qwen/Qwen3-8B\",\"id\":\"m\"}}\n\n",
            "data: [DONE]\n\n"
        );
        let want = stream.replace("\"Qwen/Qwen3-8B\"", "\"claude-haiku-4-5\"");
        for cut in [1, 2, 7, 30, 64, stream.len()] {
            let mut r = ModelRename::new("claude-haiku-4-5");
            let mut got = Vec::new();
            for piece in stream.as_bytes().chunks(cut) {
                got.extend_from_slice(&r.feed(piece));
            }
            got.extend_from_slice(&r.finish());
            assert_eq!(String::from_utf8(got).unwrap(), want, "cut every {cut} bytes");
        }
        // A JSON body with no new line: renamed at its end.
        let mut r = ModelRename::new("gpt-4o");
        assert!(r.feed(br#"{"model":"deepseek-ai/DeepSeek-V3","usage":{}}"#).is_empty());
        assert_eq!(&r.finish()[..], br#"{"model":"gpt-4o","usage":{}}"#);
        // "model" as a value, a key whose value is not a string, or a tool's own
        // "model" argument (Anthropic's tool_use input is an object): untouched.
        let mut r = ModelRename::new("x");
        r.feed(br#"{"a":"model","model":null}"#);
        assert_eq!(&r.finish()[..], br#"{"a":"model","model":null}"#);
        let body = "{\"content\":[{\"type\":\"tool_use\",\"input\":{\"model\":\"keep\"}}],\n \"model\" : \"Qwen/Qwen3-8B\",\"message\":\"m\"}\n";
        let mut r = ModelRename::new("claude-x");
        let want = body.replace("\"Qwen/Qwen3-8B\"", "\"claude-x\"");
        assert_eq!(String::from_utf8_lossy(&r.feed(body.as_bytes())), want);
    }
}
