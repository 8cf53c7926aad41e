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

/// What the answer's translation needs from the request.
#[derive(Debug, Clone)]
pub struct Context {
    /// `resp_<seed>`.
    pub id: String,
    /// Item ids are `<prefix>_<seed>_<n>`.
    seed: String,
    pub created_at: i64,
    /// The model as the caller named it (every answer repeats it), escaped.
    pub model: String,
    /// Tools declared `custom` (names as escaped in the request): their
    /// calls go back as `custom_tool_call` items carrying the raw `input`.
    pub custom_tools: Vec<String>,
    /// The request's settings as the response object repeats them: a JSON
    /// fragment `"key":value,...`, written once.
    pub echo: String,
}

impl Context {
    /// `model` as plain text.
    pub fn new(seed: &str, created_at: i64, model: &str, custom_tools: Vec<String>, echo: String) -> Self {
        let model = crate::dialects::json::Escaped::text(model).0.into_owned();
        Context { id: format!("resp_{seed}"), seed: seed.to_string(), created_at, model, custom_tools, echo }
    }

    fn item_id(&self, prefix: &str, n: usize) -> String {
        format!("{prefix}_{}_{n}", self.seed)
    }
}
