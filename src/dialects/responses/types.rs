//! The shapes read from chat answers. Texts stay as the upstream wrote them
//! (`RawValue`, escaped), so a chunk costs one scan and its text one copy.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::dialects::json::Str;

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
    /// The text after `"usage":` when the usage was found but not read
    /// (running totals: only the last chunk's is ever needed).
    #[serde(skip)]
    pub usage_text: Option<&'a str>,
}

impl<'a> ChatChunk<'a> {
    /// Reads a chunk (or a whole completion). Only `choices` is read when
    /// it can be found: an unescaped `"choices":` is a key (inside strings
    /// every quote is escaped), and the id, model and timestamps before it
    /// are never parsed; the usage after `"usage":` is kept as text, to be
    /// read once, from the last chunk. Anything else (an error in a
    /// chunk's place, unusual spacing) is read whole. The text is `str`, so
    /// its UTF-8 was checked once, not string by string.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        use memchr::memmem::Finder;
        use std::sync::LazyLock;
        // Built once: a searcher costs more to build than a chunk to search.
        static CHOICES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\":"));
        static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":"));
        let bytes = text.as_bytes();
        if let Some(at) = CHOICES.find(bytes) {
            let start = at + 10;
            let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Vec<Choice>>();
            if let Some(Ok(choices)) = values.next() {
                // The usage comes after the choices (else, before them).
                let after = start + values.byte_offset();
                let usage_text = match USAGE.find(&bytes[after..]) {
                    Some(u) => Some(&text[after + u + 8..]),
                    None => USAGE.find(&bytes[..at]).map(|u| &text[u + 8..]),
                };
                return Ok(ChatChunk { choices: Some(choices), usage_text, ..Default::default() });
            }
        }
        serde_json::from_str(text)
    }
}

#[derive(Deserialize)]
pub struct Choice<'a> {
    pub index: Option<u32>,
    #[serde(borrow)]
    pub delta: Option<Delta<'a>>,
    #[serde(borrow)]
    pub message: Option<Delta<'a>>,
    #[serde(borrow)]
    pub finish_reason: Option<Str<'a>>,
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

impl ChatUsage {
    /// The usage object at the start of `text` (what followed `"usage":`);
    /// `None` for `null` or anything else.
    pub fn read(text: &str) -> Option<ChatUsage> {
        let mut de = serde_json::Deserializer::from_str(text);
        Option::<ChatUsage>::deserialize(&mut de).ok().flatten()
    }
}

/// A string field's escaped text, when it is a non-empty string.
pub fn text(raw: Option<&RawValue>) -> Option<&str> {
    crate::dialects::json::contents(raw?.get()).filter(|inner| !inner.is_empty())
}
