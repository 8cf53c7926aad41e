//! OpenAI's Responses API (what Codex speaks), served on SiliconFlow's chat
//! completions: the request rewritten as a chat request (`request`), the
//! chat answer or stream rewritten as a response object or the Responses
//! event sequence (`stream`, which both use), and upstream errors in
//! OpenAI's shape (`errors`). Pure code: serde and `crate::sse` only.

pub mod errors;
pub mod request;
pub mod stream;
mod types;

pub use errors::{error_body, Failure};
pub use request::{translate, RequestError, Translated};
pub use stream::Translator;

use crate::dialects::json::Escaped;

/// What the answer's translation needs from the request.
#[derive(Debug, Clone)]
pub struct Context {
    /// `resp_<seed>`; item ids are `<prefix>_<seed>_<n>`.
    pub id: String,
    pub created_at: i64,
    /// The model as the caller named it (every answer repeats it), escaped.
    pub model: String,
    /// Tools declared `custom` (names as escaped in the request): their
    /// calls go back as `custom_tool_call` items carrying the raw `input`.
    pub custom_tools: Vec<String>,
    /// The request's settings as the response object repeats them: a JSON
    /// fragment `"key":value,...`, written once.
    pub echo: Vec<u8>,
}

impl Context {
    pub fn new(
        seed: &str,
        created_at: i64,
        model: &Escaped,
        custom_tools: Vec<String>,
        echo: Vec<u8>,
    ) -> Self {
        let mut id = String::with_capacity(5 + seed.len());
        id.push_str("resp_");
        id.push_str(seed);
        Context { id, created_at, model: model.as_str().to_string(), custom_tools, echo }
    }

    /// What follows `resp_` in the id: item ids carry it too.
    fn seed(&self) -> &str {
        self.id.strip_prefix("resp_").unwrap_or(&self.id)
    }

    /// Writes `<prefix>_<seed>_<n>`, the id of an item (or of a call the
    /// upstream left unnamed).
    fn write_item_id(&self, o: &mut Vec<u8>, prefix: &str, n: usize) {
        o.extend_from_slice(prefix.as_bytes());
        o.push(b'_');
        o.extend_from_slice(self.seed().as_bytes());
        o.push(b'_');
        crate::dialects::json::uint(o, n as u64);
    }

    fn item_id(&self, prefix: &str, n: usize) -> String {
        let mut id = Vec::with_capacity(prefix.len() + self.id.len() + 4);
        self.write_item_id(&mut id, prefix, n);
        String::from_utf8(id).unwrap_or_default()
    }
}
