//! A Responses API request, rewritten as the chat completion request that
//! SiliconFlow serves. What cannot be honoured is refused by name; built-in
//! tools the upstream cannot run are dropped. Texts, schemas and numbers are
//! carried over as they were written (see `dialects::json`).

use std::borrow::Cow;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use bytes::Bytes;

use super::{Context, Echo};
use crate::dialects::json::{self, Escaped, Str};

/// A request this translation refuses, with the field it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub message: String,
    pub param: Option<&'static str>,
}

impl RequestError {
    fn new(message: impl Into<String>, param: Option<&'static str>) -> Self {
        RequestError { message: message.into(), param }
    }
}

/// The chat request to send and what the answer's translation needs.
#[derive(Debug)]
pub struct Translated {
    pub body: Vec<u8>,
    pub model: String,
    pub stream: bool,
    pub context: Context,
}

// ---- what comes in ----

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    input: Option<TextOr<'a, Item<'a>>>,
    #[serde(borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    parallel_tool_calls: Option<bool>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    top_p: Option<&'a RawValue>,
    stream: Option<bool>,
    #[serde(borrow)]
    text: Option<TextConfig<'a>>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    previous_response_id: Option<&'a RawValue>,
    #[serde(borrow)]
    conversation: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    background: Option<bool>,
}

/// Every input item type in one shape: each type reads the fields it has.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    role: Option<Str<'a>>,
    #[serde(borrow)]
    content: Option<TextOr<'a, Part<'a>>>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow)]
    call_id: Option<&'a RawValue>,
    #[serde(borrow)]
    output: Option<TextOr<'a, Part<'a>>>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    summary: Option<Vec<Part<'a>>>,
}

/// A string or a list (of items, of content parts), read in one pass. A
/// string with no escapes is borrowed as it stands, which is also its
/// escaped form; one with escapes is escaped again.
enum TextOr<'a, T> {
    Text(Escaped<'a>),
    List(Vec<T>),
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for TextOr<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, T>(std::marker::PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for V<'a, T> {
            type Value = TextOr<'a, T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Escaped(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Escaped::text(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(64));
                while let Some(x) = seq.next_element()? {
                    list.push(x);
                }
                Ok(TextOr::List(list))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow)]
    image_url: Option<&'a RawValue>,
    #[serde(borrow)]
    detail: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    description: Option<&'a RawValue>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    format: Option<CustomFormat<'a>>,
}

#[derive(Deserialize)]
struct CustomFormat<'a> {
    #[serde(borrow)]
    syntax: Option<Str<'a>>,
    #[serde(borrow)]
    definition: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct TextConfig<'a> {
    #[serde(borrow)]
    format: Option<TextFormat<'a>>,
}

#[derive(Deserialize)]
struct TextFormat<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    description: Option<&'a RawValue>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct ToolChoiceObject<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    mode: Option<Str<'a>>,
}

// ---- what goes out ----

#[derive(Debug, PartialEq)]
struct Message<'a> {
    role: &'static str,
    content: Content<'a>,
    reasoning_content: Option<Escaped<'a>>,
    tool_calls: Vec<ToolCall<'a>>,
    tool_call_id: Option<Escaped<'a>>,
}

impl<'a> Message<'a> {
    fn new(role: &'static str, content: Content<'a>) -> Self {
        Message { role, content, reasoning_content: None, tool_calls: Vec::new(), tool_call_id: None }
    }

    fn write(&self, out: &mut Vec<u8>) {
        json::raw(out, "{\"role\":\"");
        json::raw(out, self.role);
        out.push(b'"');
        json::key(out, "content");
        match &self.content {
            Content::Text(t) => json::string(out, t.as_str()),
            Content::Parts(parts) => {
                out.push(b'[');
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match p {
                        ChatPart::Text(t) => {
                            json::raw(out, "{\"type\":\"text\"");
                            json::field(out, "text", t.as_str());
                        }
                        ChatPart::Image { url, detail } => {
                            json::raw(out, "{\"type\":\"image_url\",\"image_url\":{\"url\":");
                            json::string(out, url.as_str());
                            if let Some(d) = detail {
                                json::field(out, "detail", d.as_str());
                            }
                            out.push(b'}');
                        }
                    }
                    out.push(b'}');
                }
                out.push(b']');
            }
        }
        if let Some(r) = &self.reasoning_content {
            json::field(out, "reasoning_content", r.as_str());
        }
        if !self.tool_calls.is_empty() {
            json::key(out, "tool_calls");
            out.push(b'[');
            for (i, c) in self.tool_calls.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json::raw(out, "{\"id\":");
                json::string(out, c.id.as_str());
                json::raw(out, ",\"type\":\"function\",\"function\":{\"name\":");
                json::string(out, c.name.as_str());
                json::field(out, "arguments", c.arguments.as_str());
                json::raw(out, "}}");
            }
            out.push(b']');
        }
        if let Some(id) = &self.tool_call_id {
            json::field(out, "tool_call_id", id.as_str());
        }
        out.push(b'}');
    }
}

#[derive(Debug, PartialEq)]
enum Content<'a> {
    Text(Escaped<'a>),
    Parts(Vec<ChatPart<'a>>),
}

#[derive(Debug, PartialEq)]
enum ChatPart<'a> {
    Text(Escaped<'a>),
    Image { url: Escaped<'a>, detail: Option<Escaped<'a>> },
}

#[derive(Debug, PartialEq)]
struct ToolCall<'a> {
    id: Escaped<'a>,
    name: Escaped<'a>,
    arguments: Escaped<'a>,
}

/// Item types that record built-in tools' work, which the upstream cannot
/// run or read: left out of the conversation.
const BUILT_IN_ITEMS: &[&str] = &[
    "web_search_call",
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "mcp_call",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "tool_search_call",
    "tool_search_output",
    "compaction",
];

/// Translates the body of `POST /v1/responses`. `id_seed` names the response
/// and its items (random in the proxy, fixed in tests).
pub fn translate(body: &Bytes, id_seed: &str, created_at: i64) -> Result<Translated, RequestError> {
    // One UTF-8 check for the whole body: read from a `str`, the parser does
    // not check each string (and each raw value) again.
    let text = std::str::from_utf8(body)
        .map_err(|e| RequestError::new(format!("the request body is not valid UTF-8: {e}"), None))?;
    let mut req: Request = serde_json::from_str(text).map_err(|e| {
        if body.is_empty() {
            RequestError::new("the request body must be a JSON object", None)
        } else if e.is_data() && e.to_string().contains("expected a string or a list") {
            RequestError::new(format!("`input` and content must be a string or a list: {e}"), Some("input"))
        } else if e.is_data() {
            RequestError::new(format!("invalid request body: {e}"), None)
        } else {
            RequestError::new(format!("the request body is not valid JSON: {e}"), None)
        }
    })?;
    refuse_unsupported(&req)?;
    let model = match req.model.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => m,
        _ => return Err(RequestError::new("`model` is required", Some("model"))),
    };
    // Borrowed, it had no escapes: as it stands, it is its escaped form.
    let model_escaped = match &req.model {
        Some(Str(Cow::Borrowed(_))) => Escaped(Cow::Borrowed(model)),
        _ => Escaped::text(model),
    };
    let instructions = match req.instructions {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(Escaped::of(raw).ok_or_else(|| {
            RequestError::new(
                "`instructions` must be a string (instructions as a list of items are not supported)",
                Some("instructions"),
            )
        })?),
    };
    let stream = req.stream.unwrap_or(false);
    let mut out = Vec::with_capacity(body.len() + 128);
    json::raw(&mut out, "{\"model\":");
    json::string(&mut out, model_escaped.as_str());
    json::key(&mut out, "messages");
    out.push(b'[');
    for (i, m) in messages(instructions.clone(), req.input.take())?.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        m.write(&mut out);
    }
    out.push(b']');
    json::raw(
        &mut out,
        if stream {
            ",\"stream\":true,\"stream_options\":{\"include_usage\":true}"
        } else {
            ",\"stream\":false"
        },
    );
    // Numbers are copied as written; anything else is the caller's mistake.
    for (name, chat, v) in [
        ("max_output_tokens", "max_tokens", req.max_output_tokens),
        ("temperature", "temperature", req.temperature),
        ("top_p", "top_p", req.top_p),
    ] {
        if let Some(raw) = v.filter(|r| r.get() != "null") {
            if !raw.get().starts_with(|c: char| c.is_ascii_digit() || c == '-') {
                return Err(RequestError::new(format!("`{name}` must be a number"), None));
            }
            json::key(&mut out, chat);
            json::raw(&mut out, raw.get());
        }
    }
    let choice = tool_choice(req.tool_choice)?;
    let (custom_tools, written) = tools(&mut out, req.tools.as_deref().unwrap_or(&[]))?;
    if written > 0 {
        if let Some(choice) = choice {
            json::key(&mut out, "tool_choice");
            json::raw(&mut out, &choice);
        }
        if let Some(p) = req.parallel_tool_calls {
            json::raw(
                &mut out,
                if p { ",\"parallel_tool_calls\":true" } else { ",\"parallel_tool_calls\":false" },
            );
        }
    }
    response_format(&mut out, req.text.as_ref().and_then(|t| t.format.as_ref()))?;
    out.push(b'}');
    let echo = echo(&req, instructions.as_ref(), body);
    let context = Context::new(id_seed, created_at, &model_escaped, custom_tools, echo);
    Ok(Translated { body: out, model: model.to_string(), stream, context })
}

/// The proxy keeps no responses: a field that needs one stored is refused
/// rather than ignored (the model would answer without the context).
fn refuse_unsupported(req: &Request) -> Result<(), RequestError> {
    let stored = "this proxy stores no responses or conversations; send the whole conversation in `input` (as Codex does with `store: false`)";
    let set = |v: Option<&RawValue>| v.is_some_and(|r| r.get() != "null");
    if set(req.previous_response_id) {
        return Err(RequestError::new(
            format!("`previous_response_id` is not supported: {stored}"),
            Some("previous_response_id"),
        ));
    }
    if set(req.conversation) {
        return Err(RequestError::new(
            format!("`conversation` is not supported: {stored}"),
            Some("conversation"),
        ));
    }
    if req.background == Some(true) {
        return Err(RequestError::new(
            "`background: true` is not supported: this proxy answers while the connection is open and keeps no responses to poll",
            Some("background"),
        ));
    }
    if set(req.prompt) {
        return Err(RequestError::new(
            "`prompt` (a stored prompt template) is not supported: send the text in `instructions` and `input`",
            Some("prompt"),
        ));
    }
    Ok(())
}

fn messages<'a>(
    instructions: Option<Escaped<'a>>,
    input: Option<TextOr<'a, Item<'a>>>,
) -> Result<Vec<Message<'a>>, RequestError> {
    let mut system: Vec<Escaped<'a>> = Vec::new();
    if let Some(text) = instructions.filter(|t| !t.is_empty()) {
        system.push(text);
    }
    let mut out: Vec<Message<'a>> = Vec::with_capacity(8);
    let items: Vec<Item<'a>> = match input {
        None => Vec::new(),
        Some(TextOr::Text(text)) => {
            out.push(Message::new("user", Content::Text(text)));
            Vec::new()
        }
        Some(TextOr::List(items)) => items,
    };
    // Reasoning waits for the assistant message it belongs to.
    let mut reasoning: Option<Escaped<'a>> = None;
    for (n, mut item) in items.into_iter().enumerate() {
        let kind = item.kind.as_deref().unwrap_or("message");
        match kind {
            "message" => {
                let role = item.role.as_deref().unwrap_or("");
                match role {
                    "system" | "developer" => {
                        let text = plain_text(item.content, n)?;
                        if out.is_empty() {
                            system.push(text);
                        } else {
                            out.push(Message::new("system", Content::Text(text)));
                        }
                    }
                    "user" => out.push(Message::new("user", user_content(item.content, n)?)),
                    "assistant" => {
                        let text = plain_text(item.content, n)?;
                        let msg = assistant(&mut out, &mut reasoning);
                        if let Content::Text(t) = &mut msg.content {
                            if t.is_empty() {
                                *t = text;
                            } else if !text.is_empty() {
                                *t = Escaped::join(&[t.clone(), text], "\n");
                            }
                        }
                    }
                    other => {
                        return Err(RequestError::new(
                            format!("input[{n}]: a message's role must be user, assistant, system or developer, not `{other}`"),
                            Some("input"),
                        ))
                    }
                }
            }
            "reasoning" => {
                let text = reasoning_text(&mut item, n)?;
                if !text.is_empty() {
                    reasoning = Some(match reasoning.take() {
                        Some(r) => Escaped::join(&[r, text], "\n"),
                        None => text,
                    });
                }
            }
            "function_call" | "custom_tool_call" => {
                let id = required(item.call_id, n, "call_id")?;
                let name = required(item.name, n, "name")?;
                let arguments = if kind == "function_call" {
                    match item.arguments {
                        Some(raw) => Escaped::of(raw).ok_or_else(|| {
                            RequestError::new(format!("input[{n}]: `arguments` must be a string"), Some("input"))
                        })?,
                        None => Escaped(Cow::Borrowed("{}")),
                    }
                } else {
                    // The raw input as a function's one string argument: `{"input": ...}` as JSON text.
                    let input = item.input.map_or("\"\"", RawValue::get);
                    Escaped::text(&format!("{{\"input\":{input}}}"))
                };
                assistant(&mut out, &mut reasoning).tool_calls.push(ToolCall { id, name, arguments });
            }
            "function_call_output" | "custom_tool_call_output" => {
                let id = required(item.call_id, n, "call_id")?;
                let mut msg = Message::new("tool", Content::Text(plain_text(item.output, n)?));
                msg.tool_call_id = Some(id);
                out.push(msg);
            }
            "item_reference" => {
                return Err(RequestError::new(
                    format!("input[{n}]: `item_reference` is not supported: this proxy stores no items; send the item itself"),
                    Some("input"),
                ))
            }
            k if BUILT_IN_ITEMS.contains(&k) => {}
            other => {
                return Err(RequestError::new(
                    format!("input[{n}]: input items of type `{other}` are not supported"),
                    Some("input"),
                ))
            }
        }
    }
    if !system.is_empty() {
        out.insert(0, Message::new("system", Content::Text(Escaped::join(&system, "\n\n"))));
    }
    Ok(out)
}

/// The assistant message the next assistant item belongs to: the last one
/// when nothing came after it (so consecutive calls share one message, as
/// chat wants), else a new one. Waiting reasoning goes with it.
fn assistant<'m, 'a>(
    out: &'m mut Vec<Message<'a>>,
    reasoning: &mut Option<Escaped<'a>>,
) -> &'m mut Message<'a> {
    if out.last().is_none_or(|m| m.role != "assistant") {
        out.push(Message::new("assistant", Content::Text(Escaped::default())));
    }
    let last = out.len() - 1;
    let msg = &mut out[last];
    if let Some(r) = reasoning.take() {
        msg.reasoning_content = Some(match msg.reasoning_content.take() {
            Some(existing) => Escaped::join(&[existing, r], "\n"),
            None => r,
        });
    }
    msg
}

fn required<'a>(v: Option<&'a RawValue>, n: usize, field: &str) -> Result<Escaped<'a>, RequestError> {
    v.and_then(Escaped::of)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RequestError::new(format!("input[{n}]: `{field}` is required"), Some("input")))
}

/// A reasoning item's text: its full `content` when given, else its summary.
fn reasoning_text<'a>(item: &mut Item<'a>, n: usize) -> Result<Escaped<'a>, RequestError> {
    if let Some(content) = item.content.take() {
        let text = plain_text(Some(content), n)?;
        if !text.is_empty() {
            return Ok(text);
        }
    }
    let texts: Vec<Escaped> = item
        .summary
        .iter()
        .flatten()
        .filter_map(|p| p.text.and_then(Escaped::of))
        .filter(|t| !t.is_empty())
        .collect();
    Ok(Escaped::join(&texts, "\n"))
}

/// Text content (system, assistant, a tool's output) as one string, as chat
/// wants there: text parts joined by blank lines. An image is refused with
/// the place it was found, since it cannot be put into a string.
fn plain_text<'a>(content: Option<TextOr<'a, Part<'a>>>, n: usize) -> Result<Escaped<'a>, RequestError> {
    let parts = match content {
        None => return Ok(Escaped::default()),
        Some(TextOr::Text(text)) => return Ok(text),
        Some(TextOr::List(parts)) => parts,
    };
    let mut texts = Vec::with_capacity(parts.len());
    for p in parts {
        match p.kind.as_ref() {
            "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                texts.push(p.text.and_then(Escaped::of).unwrap_or_default())
            }
            "refusal" => texts.push(p.refusal.or(p.text).and_then(Escaped::of).unwrap_or_default()),
            other => {
                return Err(RequestError::new(
                    format!("input[{n}]: content of type `{other}` can only be sent in a user message"),
                    Some("input"),
                ))
            }
        }
    }
    Ok(Escaped::join(&texts, "\n\n"))
}

/// A user message: a string when it is text only (what every chat template
/// reads), else parts with the images.
fn user_content<'a>(content: Option<TextOr<'a, Part<'a>>>, n: usize) -> Result<Content<'a>, RequestError> {
    let list = match content {
        Some(TextOr::List(list)) if list.iter().any(|p| p.kind == "input_image") => list,
        other => return Ok(Content::Text(plain_text(other, n)?)),
    };
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        match p.kind.as_ref() {
            "input_text" | "output_text" | "text" => {
                out.push(ChatPart::Text(p.text.and_then(Escaped::of).unwrap_or_default()))
            }
            "input_image" => match p.image_url.and_then(Escaped::of) {
                Some(url) => out.push(ChatPart::Image { url, detail: p.detail.and_then(Escaped::of) }),
                None => {
                    return Err(RequestError::new(
                        format!("input[{n}]: an `input_image` needs an `image_url` (a URL or a data: URL); uploaded file ids are not supported"),
                        Some("input"),
                    ))
                }
            },
            other => {
                return Err(RequestError::new(
                    format!("input[{n}]: content of type `{other}` is not supported"),
                    Some("input"),
                ))
            }
        }
    }
    Ok(Content::Parts(out))
}

/// Writes the function and custom tools as chat functions (built-in tools
/// dropped). Returns the custom tools' names (their calls go back as
/// `custom_tool_call` items) and how many tools were written.
fn tools(out: &mut Vec<u8>, tools: &[Tool]) -> Result<(Vec<String>, usize), RequestError> {
    let mut custom = Vec::new();
    let mut written = 0;
    for (n, tool) in tools.iter().enumerate() {
        let kind = tool.kind.as_ref();
        if kind != "function" && kind != "custom" {
            continue;
        }
        let Some(name) = tool.name.and_then(Escaped::of).filter(|n| !n.is_empty()) else {
            return Err(RequestError::new(
                format!("tools[{n}]: a {kind} tool needs a `name`"),
                Some("tools"),
            ));
        };
        json::raw(out, if written == 0 { ",\"tools\":[" } else { "," });
        written += 1;
        json::raw(out, "{\"type\":\"function\",\"function\":{\"name\":");
        json::string(out, name.as_str());
        if kind == "function" {
            if let Some(d) = tool.description.filter(|d| d.get() != "null") {
                json::key(out, "description");
                json::raw(out, d.get());
            }
            json::key(out, "parameters");
            match tool.parameters.filter(|p| p.get() != "null") {
                Some(p) => json::raw(out, p.get()),
                None => json::raw(out, "{\"type\":\"object\",\"properties\":{}}"),
            }
        } else {
            custom.push(name.as_str().to_string());
            json::key(out, "description");
            json::plain(out, &custom_description(tool));
            json::key(out, "parameters");
            json::raw(out, CUSTOM_PARAMETERS);
        }
        json::raw(out, "}}");
    }
    if written > 0 {
        out.push(b']');
    }
    Ok((custom, written))
}

/// A custom (freeform) tool takes raw text; as a function it takes one
/// string, `input`, and its grammar is told to the model in the description.
const CUSTOM_PARAMETERS: &str = r#"{"type":"object","properties":{"input":{"type":"string","description":"The tool's raw input text."}},"required":["input"],"additionalProperties":false}"#;

fn custom_description(tool: &Tool) -> String {
    let mut d = tool.description.and_then(Escaped::of).and_then(|d| d.unescape()).unwrap_or_default();
    if let Some(f) = &tool.format {
        if let Some(def) = f.definition.as_deref().filter(|d| !d.is_empty()) {
            let syntax = f.syntax.as_deref().unwrap_or("lark");
            d.push_str(&format!(
                "\n\nPut the raw input in `input`; it must match this {syntax} grammar:\n{def}"
            ));
        }
    }
    d
}

/// The chat form of a `tool_choice`, as JSON.
fn tool_choice(raw: Option<&RawValue>) -> Result<Option<String>, RequestError> {
    let Some(raw) = raw.filter(|r| r.get() != "null") else { return Ok(None) };
    if let Some(mode) = Escaped::of(raw) {
        return match mode.as_str() {
            "auto" | "none" | "required" => Ok(Some(raw.get().to_string())),
            other => Err(RequestError::new(
                format!("`tool_choice` must be auto, none, required or an object, not `{other}`"),
                Some("tool_choice"),
            )),
        };
    }
    let choice: ToolChoiceObject = serde_json::from_str(raw.get()).map_err(|e| {
        RequestError::new(format!("`tool_choice` is not a tool choice: {e}"), Some("tool_choice"))
    })?;
    Ok(Some(match (choice.kind.as_ref(), choice.name) {
        ("function" | "custom", Some(name)) => {
            format!("{{\"type\":\"function\",\"function\":{{\"name\":{}}}}}", name.get())
        }
        ("function" | "custom", None) => {
            return Err(RequestError::new("`tool_choice` names no tool", Some("tool_choice")))
        }
        // A subset of the tools: chat has no such choice; its mode holds.
        ("allowed_tools", _) if choice.mode.as_deref() == Some("required") => "\"required\"".to_string(),
        ("allowed_tools", _) => "\"auto\"".to_string(),
        // A built-in tool, which was dropped: the model chooses among the rest.
        _ => "\"auto\"".to_string(),
    }))
}

fn response_format(out: &mut Vec<u8>, format: Option<&TextFormat>) -> Result<(), RequestError> {
    let Some(f) = format else { return Ok(()) };
    match f.kind.as_ref() {
        "text" => {}
        "json_object" => json::raw(out, ",\"response_format\":{\"type\":\"json_object\"}"),
        "json_schema" => {
            json::raw(out, ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":");
            json::raw(out, f.name.map_or("\"response\"", RawValue::get));
            for (k, v) in [("description", f.description), ("schema", f.schema)] {
                if let Some(v) = v.filter(|v| v.get() != "null") {
                    json::key(out, k);
                    json::raw(out, v.get());
                }
            }
            if let Some(strict) = f.strict {
                json::raw(out, if strict { ",\"strict\":true" } else { ",\"strict\":false" });
            }
            json::raw(out, "}}");
        }
        other => {
            return Err(RequestError::new(
                format!("`text.format.type` must be text, json_object or json_schema, not `{other}`"),
                Some("text"),
            ))
        }
    }
    Ok(())
}

/// The request's settings as the response object repeats them, written once
/// as a JSON fragment (`"key":value,...`) for every response object sent;
/// its long values are the body's own bytes (see `Echo`).
fn echo(req: &Request, instructions: Option<&Escaped>, body: &Bytes) -> Echo {
    fn raw_or<'r>(raw: Option<&'r RawValue>, default: &'r str) -> &'r str {
        raw.map(RawValue::get).filter(|r| *r != "null").unwrap_or(default)
    }
    let mut parts = Vec::new();
    let mut s = Vec::with_capacity(320);
    // A value longer than this is shared from the body, not copied.
    const SHARED: usize = 4096;
    let long = |s: &mut Vec<u8>, parts: &mut Vec<Bytes>, text: &str| match shared(body, text) {
        Some(b) if text.len() > SHARED => {
            parts.push(Bytes::from(std::mem::take(s)));
            parts.push(b);
        }
        _ => json::raw(s, text),
    };
    json::raw(&mut s, "\"instructions\":");
    match instructions {
        Some(i) => {
            s.push(b'"');
            long(&mut s, &mut parts, i.as_str());
            s.push(b'"');
        }
        None => json::raw(&mut s, "null"),
    }
    // Keys and constants in as few writes as they allow.
    json::raw(&mut s, ",\"max_output_tokens\":");
    json::raw(&mut s, raw_or(req.max_output_tokens, "null"));
    json::raw(&mut s, ",\"metadata\":");
    long(&mut s, &mut parts, raw_or(req.metadata, "{}"));
    json::raw(
        &mut s,
        if req.parallel_tool_calls.unwrap_or(true) {
            ",\"parallel_tool_calls\":true,\"reasoning\":"
        } else {
            ",\"parallel_tool_calls\":false,\"reasoning\":"
        },
    );
    json::raw(&mut s, raw_or(req.reasoning, "{\"effort\":null,\"summary\":null}"));
    json::raw(&mut s, ",\"store\":false,\"temperature\":");
    json::raw(&mut s, raw_or(req.temperature, "null"));
    json::raw(&mut s, ",\"text\":");
    match req.text.as_ref().and_then(|t| t.format.as_ref()) {
        Some(f) if f.kind != "text" => {
            json::raw(&mut s, "{\"format\":{\"type\":");
            json::plain(&mut s, &f.kind);
            json::key(&mut s, "name");
            json::raw(&mut s, raw_or(f.name, "null"));
            json::key(&mut s, "schema");
            long(&mut s, &mut parts, raw_or(f.schema, "null"));
            json::raw(&mut s, "}}");
        }
        _ => json::raw(&mut s, "{\"format\":{\"type\":\"text\"}}"),
    }
    json::raw(&mut s, ",\"tool_choice\":");
    json::raw(&mut s, raw_or(req.tool_choice, "\"auto\""));
    // The tools offered, by type and name only: their schemas are the caller's own and long.
    json::raw(&mut s, ",\"tools\":[");
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        json::raw(&mut s, "{\"type\":");
        json::plain(&mut s, &t.kind);
        if let Some(name) = t.name {
            json::key(&mut s, "name");
            json::raw(&mut s, name.get());
        }
        s.push(b'}');
    }
    json::raw(&mut s, "],\"top_p\":");
    json::raw(&mut s, raw_or(req.top_p, "null"));
    json::raw(&mut s, ",\"truncation\":\"disabled\"");
    parts.push(Bytes::from(s));
    Echo::new(parts)
}

/// `text` as a piece of `body` (no copy), when it is one.
fn shared(body: &Bytes, text: &str) -> Option<Bytes> {
    let (start, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
    let at = text.as_ptr() as usize;
    (at >= start && at + text.len() <= end).then(|| body.slice_ref(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn chat(req: Value) -> Value {
        let t = translate(&Bytes::from(req.to_string()), "T", 1).unwrap();
        serde_json::from_slice(&t.body).unwrap()
    }

    fn refused(req: Value) -> RequestError {
        translate(&Bytes::from(req.to_string()), "T", 1).unwrap_err()
    }

    #[test]
    fn a_string_input_is_one_user_message_and_instructions_the_system() {
        let c = chat(json!({"model": "Qwen/Qwen3-8B", "input": "hi", "instructions": "Be brief."}));
        assert_eq!(
            c,
            json!({"model": "Qwen/Qwen3-8B", "stream": false, "messages": [
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn texts_with_escapes_and_unicode_arrive_as_they_were_sent() {
        let text = "line 1\n\t\"quoted\" \\ back, é, 😀, \u{1}";
        let c = chat(json!({"model": "m", "instructions": text, "input": [
            {"role": "user", "content": text},
            {"role": "user", "content": [{"type": "input_text", "text": text}, {"type": "input_text", "text": "plain"}]},
            {"type": "function_call", "call_id": "c\"1", "name": "f", "arguments": "{\"a\":\"x\\ny\"}"},
            {"type": "function_call_output", "call_id": "c\"1", "output": text}
        ]}));
        assert_eq!(c["messages"][0]["content"], text);
        assert_eq!(c["messages"][1]["content"], text);
        assert_eq!(c["messages"][2]["content"], format!("{text}\n\nplain"));
        assert_eq!(c["messages"][3]["tool_calls"][0]["id"], "c\"1");
        assert_eq!(c["messages"][3]["tool_calls"][0]["function"]["arguments"], "{\"a\":\"x\\ny\"}");
        assert_eq!(c["messages"][4], json!({"role": "tool", "content": text, "tool_call_id": "c\"1"}));
        let c = chat(json!({"model": "m", "input": text}));
        assert_eq!(c["messages"][0]["content"], text);
    }

    #[test]
    fn leading_developer_and_system_messages_join_the_instructions() {
        let c = chat(json!({"model": "m", "instructions": "", "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "D1"}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "D2"}, {"type": "input_text", "text": "D3"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "U1"}]},
            {"role": "user", "content": "U2"},
            {"type": "message", "role": "system", "content": "late"}
        ]}));
        assert_eq!(
            c["messages"],
            json!([
                {"role": "system", "content": "D1\n\nD2\n\nD3"},
                {"role": "user", "content": "U1"},
                {"role": "user", "content": "U2"},
                {"role": "system", "content": "late"}
            ])
        );
    }

    #[test]
    fn consecutive_calls_are_one_assistant_message_with_their_reasoning_and_outputs_are_tool_messages() {
        let c = chat(json!({"model": "m", "input": [
            {"role": "user", "content": "list and count"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "I will run two commands."}]},
            {"type": "function_call", "call_id": "call_a", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
            {"type": "function_call", "call_id": "call_b", "name": "exec_command", "arguments": "{\"cmd\":\"wc -l f\"}"},
            {"type": "function_call_output", "call_id": "call_a", "output": "f\ng"},
            {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "2 f"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Two files."}]}
        ]}));
        assert_eq!(
            c["messages"],
            json!([
                {"role": "user", "content": "list and count"},
                {"role": "assistant", "content": "", "reasoning_content": "I will run two commands.", "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"wc -l f\"}"}}
                ]},
                {"role": "tool", "content": "f\ng", "tool_call_id": "call_a"},
                {"role": "tool", "content": "2 f", "tool_call_id": "call_b"},
                {"role": "assistant", "content": "Two files."}
            ])
        );
    }

    #[test]
    fn reasoning_content_wins_over_the_summary_and_text_before_calls_shares_their_message() {
        let c = chat(json!({"model": "m", "input": [
            {"role": "user", "content": "go"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "short"}],
             "content": [{"type": "reasoning_text", "text": "the full thought"}], "encrypted_content": "opaque"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running it."}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
        ]}));
        assert_eq!(
            c["messages"][1],
            json!({"role": "assistant", "content": "Running it.", "reasoning_content": "the full thought",
                   "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        );
    }

    #[test]
    fn custom_tools_become_functions_with_one_string_and_their_calls_carry_it() {
        let t = translate(
            &Bytes::from(json!({"model": "m", "tools": [
                {"type": "custom", "name": "apply_patch", "description": "Patch files.",
                 "format": {"type": "grammar", "syntax": "lark", "definition": "start: \"*** Begin Patch\""}}
            ], "input": [
                {"role": "user", "content": "fix"},
                {"type": "custom_tool_call", "call_id": "c9", "name": "apply_patch", "input": "*** Begin Patch\n\"q\""},
                {"type": "custom_tool_call_output", "call_id": "c9", "output": "Done!"}
            ]})
            .to_string()),
            "T",
            1,
        )
        .unwrap();
        assert_eq!(t.context.custom_tools, vec!["apply_patch".to_string()]);
        let c: Value = serde_json::from_slice(&t.body).unwrap();
        let f = &c["tools"][0]["function"];
        assert_eq!(f["name"], "apply_patch");
        assert_eq!(f["parameters"]["required"], json!(["input"]));
        assert!(f["description"].as_str().unwrap().contains("Patch files.\n\nPut the raw input in `input`"));
        assert!(f["description"].as_str().unwrap().contains("start: \"*** Begin Patch\""));
        let args = c["messages"][1]["tool_calls"][0]["function"]["arguments"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(args).unwrap(), json!({"input": "*** Begin Patch\n\"q\""}));
        assert_eq!(c["messages"][2], json!({"role": "tool", "content": "Done!", "tool_call_id": "c9"}));
    }

    #[test]
    fn built_in_tools_and_their_items_are_dropped_and_settings_mapped() {
        let c = chat(json!({"model": "m", "stream": true, "max_output_tokens": 100, "temperature": 0.2,
        "top_p": 0.9, "parallel_tool_calls": true, "tool_choice": "auto", "store": false,
        "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "medium", "summary": "auto"},
        "prompt_cache_key": "k", "tools": [
            {"type": "function", "name": "exec_command", "description": "Run.", "strict": false,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
            {"type": "web_search"},
            {"type": "namespace", "name": "mcp", "tools": []},
            {"type": "image_generation"}
        ], "input": [
            {"role": "user", "content": "q"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "compaction", "encrypted_content": "x"}
        ]}));
        assert_eq!(
            c,
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": true,
                "tool_choice": "auto", "messages": [{"role": "user", "content": "q"}],
                "tools": [{"type": "function", "function": {"name": "exec_command", "description": "Run.",
                    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}}]})
        );
        // With no tool left, no tool settings are sent.
        let c = chat(
            json!({"model": "m", "input": "q", "tools": [{"type": "web_search"}], "tool_choice": "required",
            "parallel_tool_calls": false}),
        );
        assert!(
            c.get("tools").is_none()
                && c.get("tool_choice").is_none()
                && c.get("parallel_tool_calls").is_none()
        );
    }

    #[test]
    fn tool_choice_and_text_format_map_to_chat() {
        let base = json!({"model": "m", "input": "q", "tools": [{"type": "function", "name": "f", "parameters": null}]});
        let with = |k: &str, v: Value| {
            let mut r = base.clone();
            r[k] = v;
            chat(r)
        };
        assert_eq!(
            with("tool_choice", json!({"type": "function", "name": "f"}))["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(
            with("tool_choice", json!({"type": "allowed_tools", "mode": "required", "tools": []}))
                ["tool_choice"],
            json!("required")
        );
        assert_eq!(with("tool_choice", json!({"type": "web_search"}))["tool_choice"], json!("auto"));
        assert_eq!(
            with("tool_choice", json!("none"))["tools"][0]["function"]["parameters"],
            json!({"type": "object", "properties": {}})
        );
        let c = with(
            "text",
            json!({"format": {"type": "json_schema", "name": "out", "strict": true,
                "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}),
        );
        assert_eq!(
            c["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "out", "strict": true,
                "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}})
        );
        assert_eq!(
            with("text", json!({"format": {"type": "json_object"}}))["response_format"],
            json!({"type": "json_object"})
        );
        assert!(with("text", json!({"format": {"type": "text"}, "verbosity": "low"}))
            .get("response_format")
            .is_none());
    }

    #[test]
    fn images_stay_parts_of_a_user_message() {
        let c = chat(json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]}]}));
        assert_eq!(
            c["messages"][0]["content"],
            json!([{"type": "text", "text": "what is this"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}])
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        for (field, v) in [
            ("previous_response_id", json!("resp_1")),
            ("conversation", json!("conv_1")),
            ("background", json!(true)),
            ("prompt", json!({"id": "pmpt_1"})),
        ] {
            let mut r = json!({"model": "m", "input": "q"});
            r[field] = v;
            let e = refused(r);
            assert_eq!(e.param, Some(if field == "background" { "background" } else { field }));
            assert!(e.message.contains(&format!("`{field}")), "{}", e.message);
        }
        // null and false are the defaults, not requests.
        assert!(translate(
            &Bytes::from_static(
                br#"{"model":"m","input":"q","previous_response_id":null,"background":false}"#
            ),
            "T",
            1
        )
        .is_ok());
        assert!(refused(json!({"input": "q"})).message.contains("`model` is required"));
        assert!(refused(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}))
            .message
            .contains("item_reference"));
        assert!(refused(json!({"model": "m", "input": [{"type": "mystery"}]})).message.contains("`mystery`"));
        assert!(refused(json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}))
            .message
            .contains("input[0]: `call_id` is required"));
        assert!(refused(json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}))
            .message
            .contains("`tool`"));
        assert!(refused(json!({"model": "m", "input": "q", "tools": [{"type": "function"}]}))
            .message
            .contains("tools[0]"));
        assert!(refused(json!({"model": "m", "input": "q", "tool_choice": "sometimes"}))
            .message
            .contains("tool_choice"));
        assert!(translate(&Bytes::from_static(b"{"), "T", 1).unwrap_err().message.contains("not valid JSON"));
        assert!(translate(&Bytes::new(), "T", 1).unwrap_err().message.contains("JSON object"));
        assert!(translate(&Bytes::from_static(br#"{"model":"m","input":5}"#), "T", 1)
            .unwrap_err()
            .message
            .contains("`input` and content must be a string or a list"));
        assert!(translate(&Bytes::from_static(br#"{"model":"m","input":"q","temperature":"hot"}"#), "T", 1)
            .unwrap_err()
            .message
            .contains("`temperature` must be a number"));
    }

    /// Long instructions are the body's own bytes in the echo, and every
    /// event that repeats the response object shares them: a stream's memory
    /// does not grow with the number of events that describe it.
    #[test]
    fn long_instructions_are_shared_from_the_body_by_every_event_that_repeats_them() {
        let long = "be brief. ".repeat(2000);
        let body = Bytes::from(
            json!({"model": "m", "input": "q", "instructions": long, "stream": true}).to_string(),
        );
        let t = translate(&body, "T", 1).unwrap();
        let inside = |b: &Bytes| {
            let (start, at) = (body.as_ptr() as usize, b.as_ptr() as usize);
            at >= start && at + b.len() <= start + body.len()
        };
        let shared: Vec<&Bytes> = t.context.echo.parts().iter().filter(|p| inside(p)).collect();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].len(), long.len());
        let v: Value =
            serde_json::from_str(&format!("{{{}}}", String::from_utf8_lossy(&t.context.echo.to_vec())))
                .unwrap();
        assert_eq!(v["instructions"], long.as_str());
        let mut tr = crate::dialects::responses::Translator::new(t.context.clone(), true);
        let chunk = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\ndata: [DONE]\n\n";
        let mut out = tr.feed(chunk.as_bytes()).0;
        out.extend(tr.finish().0 .0);
        let repeats = out.iter().filter(|p| inside(p)).count();
        assert_eq!(repeats, 3, "created, in_progress and completed share one copy");
        assert!(out.iter().filter(|p| !inside(p)).all(|p| p.len() < 4096), "no other piece holds it");
        let text = String::from_utf8(out.concat()).unwrap();
        assert!(text.matches("be brief. be brief.").count() >= 3);
    }

    #[test]
    fn the_response_echo_is_valid_json_with_the_request_settings() {
        let t = translate(
            &Bytes::from(
                json!({"model": "m", "input": "q", "instructions": "be \"brief\"", "max_output_tokens": 7,
                "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}], "metadata": {"a": "b"}})
                .to_string(),
            ),
            "T",
            1,
        )
        .unwrap();
        let v: Value =
            serde_json::from_str(&format!("{{{}}}", String::from_utf8_lossy(&t.context.echo.to_vec())))
                .unwrap();
        assert_eq!(v["instructions"], "be \"brief\"");
        assert_eq!(v["max_output_tokens"], 7);
        assert_eq!(v["metadata"], json!({"a": "b"}));
        assert_eq!(v["tools"], json!([{"type": "function", "name": "f"}, {"type": "web_search"}]));
        assert_eq!(v["tool_choice"], "auto");
        assert_eq!(v["parallel_tool_calls"], true);
        assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    }
}
