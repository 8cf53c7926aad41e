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

    fn item_id(&self, prefix: &str, n: usize) -> String {
        let seed = self.seed();
        let mut id = Vec::with_capacity(prefix.len() + seed.len() + 4);
        id.extend_from_slice(prefix.as_bytes());
        id.push(b'_');
        id.extend_from_slice(seed.as_bytes());
        id.push(b'_');
        crate::dialects::json::uint(&mut id, n as u64);
        String::from_utf8(id).unwrap_or_default()
    }
}
