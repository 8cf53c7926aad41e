//! The shapes read from chat answers. Texts stay as the upstream wrote them
//! (`RawValue`, escaped), so a chunk costs one scan and its text one copy.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A chat stream chunk, or a whole chat completion (`message` in place of
/// `delta`), or an error object sent in its place.
#[derive(Deserialize, Default)]
pub struct ChatChunk<'a> {
    #[serde(borrow)]
    pub choices: Option<Vec<Choice<'a>>>,
    pub usage: Option<ChatUsage>,
    #[serde(borrow)]
    pub error: Option<&'a RawValue>,
    #[serde(borrow)]
    pub code: Option<&'a RawValue>,
    #[serde(borrow)]
    pub message: Option<&'a RawValue>,
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
    pub content: Option<&'a RawValue>,
    #[serde(borrow)]
    pub reasoning_content: Option<&'a RawValue>,
    /// Some OpenAI-compatible servers name it so.
    #[serde(borrow)]
    pub reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    pub tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
pub struct ToolCallDelta<'a> {
    pub index: Option<usize>,
    #[serde(borrow)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
pub struct FunctionDelta<'a> {
    #[serde(borrow)]
    pub name: Option<&'a RawValue>,
    #[serde(borrow)]
    pub arguments: Option<&'a RawValue>,
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

/// A string field's escaped text, when it is a non-empty string.
pub fn text(raw: Option<&RawValue>) -> Option<&str> {
    let s = raw?.get();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.is_empty()).then_some(inner)
}
