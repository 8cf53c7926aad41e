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

use bytes::Bytes;

use crate::dialects::json::Escaped;

/// The request's settings as every response object repeats them: a JSON
/// fragment (`"key":value,...`) in pieces, of which the long ones (the
/// instructions, a schema) are the request body's own bytes, shared rather
/// than copied. A streamed answer repeats the object in several events; each
/// carries the same pieces, so its memory does not grow with their number.
#[derive(Debug, Clone, Default)]
pub struct Echo(Vec<Bytes>);

impl Echo {
    pub fn new(parts: Vec<Bytes>) -> Self {
        Echo(parts.into_iter().filter(|p| !p.is_empty()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.0
    }

    /// The fragment in one piece (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.concat()
    }
}

/// Bytes of an answer, in order: pieces written here, and shared ones (see
/// `Echo`) passed on without a copy.
#[derive(Debug, Default)]
pub struct Chunks(pub Vec<Bytes>);

impl Chunks {
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }

    /// In one piece (a copy): for answers sent whole, and tests.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.concat()
    }
}

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
    /// The request's settings as the response object repeats them (see `Echo`).
    pub echo: Echo,
}

impl Context {
    pub fn new(seed: &str, created_at: i64, model: &Escaped, custom_tools: Vec<String>, echo: Echo) -> Self {
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
