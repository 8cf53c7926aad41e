//! The shapes read from chat answers and written as Responses objects and
//! events. Borrowed wherever the text allows, so a chunk costs one parse.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

// ---- chat answers, read ----

/// A chat stream chunk, or a whole chat completion (`message` in place of
/// `delta`), or an error object sent in its place.
#[derive(Deserialize, Default)]
pub struct ChatChunk<'a> {
    #[serde(borrow)]
    pub choices: Option<Vec<Choice<'a>>>,
    pub usage: Option<ChatUsage>,
    #[serde(borrow)]
    pub error: Option<&'a RawValue>,
    pub code: Option<i64>,
    #[serde(borrow)]
    pub message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub struct Choice<'a> {
    pub index: Option<u32>,
    #[serde(borrow)]
    pub delta: Option<Delta<'a>>,
    #[serde(borrow)]
    pub message: Option<Delta<'a>>,
    #[serde(borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
pub struct Delta<'a> {
    #[serde(borrow)]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// Some OpenAI-compatible servers name it so.
    #[serde(borrow)]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
pub struct ToolCallDelta<'a> {
    pub index: Option<usize>,
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
pub struct FunctionDelta<'a> {
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatUsage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub prompt_tokens_details: Option<Cached>,
    pub completion_tokens_details: Option<Reasoning>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached {
    pub cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasoning {
    pub reasoning_tokens: Option<u64>,
}

// ---- Responses objects, written ----

#[derive(Serialize)]
pub struct UsageOut {
    pub input_tokens: u64,
    pub input_tokens_details: CachedOut,
    pub output_tokens: u64,
    pub output_tokens_details: ReasoningOut,
    pub total_tokens: u64,
}

#[derive(Serialize)]
pub struct CachedOut {
    pub cached_tokens: u64,
}

#[derive(Serialize)]
pub struct ReasoningOut {
    pub reasoning_tokens: u64,
}

impl From<ChatUsage> for UsageOut {
    fn from(u: ChatUsage) -> Self {
        let input = u.prompt_tokens.unwrap_or(0);
        let output = u.completion_tokens.unwrap_or(0);
        UsageOut {
            input_tokens: input,
            input_tokens_details: CachedOut {
                cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            },
            output_tokens: output,
            output_tokens_details: ReasoningOut {
                reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
            },
            total_tokens: u.total_tokens.unwrap_or(input + output),
        }
    }
}

/// An output item as the response object and the item events show it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ItemView<'a> {
    Reasoning { id: &'a str, summary: Vec<TextPart<'a>> },
    Message { id: &'a str, status: &'a str, role: &'static str, content: Vec<OutputText<'a>> },
    FunctionCall { id: &'a str, status: &'a str, call_id: &'a str, name: &'a str, arguments: &'a str },
    CustomToolCall { id: &'a str, status: &'a str, call_id: &'a str, name: &'a str, input: &'a str },
}

/// A summary part (`summary_text`).
#[derive(Serialize)]
pub struct TextPart<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
}

/// A message's content part.
#[derive(Serialize)]
pub struct OutputText<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
    pub annotations: [(); 0],
    pub logprobs: [(); 0],
}

impl<'a> OutputText<'a> {
    pub fn new(text: &'a str) -> Self {
        OutputText { kind: "output_text", text, annotations: [], logprobs: [] }
    }
}

/// The fields of one event after `type` and `sequence_number`; each event
/// sets the ones OpenAI's own event of that type has.
#[derive(Serialize, Default)]
pub struct EventBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<&'a str>,
    pub output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<ItemView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<Part<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<[(); 0]>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Part<'a> {
    Text(OutputText<'a>),
    Summary(TextPart<'a>),
}

/// The head of a response object; the request's echo follows it.
#[derive(Serialize)]
pub struct ResponseHead<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created_at: i64,
    pub status: &'a str,
    pub background: bool,
    pub error: Option<ErrorOut<'a>>,
    pub incomplete_details: Option<Incomplete<'a>>,
    pub model: &'a str,
    pub output: Vec<ItemView<'a>>,
    pub usage: Option<UsageOut>,
}

#[derive(Serialize)]
pub struct ErrorOut<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(Serialize)]
pub struct Incomplete<'a> {
    pub reason: &'a str,
}
