//! A Responses API request, rewritten as the chat completion request that
//! SiliconFlow serves. What cannot be honoured is refused by name; built-in
//! tools the upstream cannot run are dropped.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Context;

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
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<Input<'a>>,
    #[serde(borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    parallel_tool_calls: Option<bool>,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
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

#[derive(Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    #[serde(borrow)]
    Items(Vec<Item<'a>>),
}

/// Every input item type in one shape: each type reads the fields it has.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<TextOrParts<'a>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    output: Option<TextOrParts<'a>>,
    #[serde(borrow)]
    input: Option<Cow<'a, str>>,
    #[serde(borrow)]
    summary: Option<Vec<Part<'a>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrParts<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    #[serde(borrow)]
    Parts(Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    image_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    detail: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    format: Option<CustomFormat<'a>>,
}

#[derive(Deserialize)]
struct CustomFormat<'a> {
    #[serde(borrow)]
    syntax: Option<Cow<'a, str>>,
    #[serde(borrow)]
    definition: Option<Cow<'a, str>>,
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
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct ToolChoiceObject<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mode: Option<Cow<'a, str>>,
}

// ---- what goes out ----

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ChatTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ChatToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat<'a>>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize, Debug, PartialEq)]
struct Message<'a> {
    role: &'static str,
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<Cow<'a, str>>,
}

impl<'a> Message<'a> {
    fn new(role: &'static str, content: Content<'a>) -> Self {
        Message { role, content, reasoning_content: None, tool_calls: Vec::new(), tool_call_id: None }
    }
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(untagged)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<ChatPart<'a>>),
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ChatPart<'a> {
    Text { text: Cow<'a, str> },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Serialize, Debug, PartialEq)]
struct ImageUrl<'a> {
    url: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'a, str>>,
}

#[derive(Serialize, Debug, PartialEq)]
struct ToolCall<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize, Debug, PartialEq)]
struct FunctionCall<'a> {
    name: Cow<'a, str>,
    arguments: Cow<'a, str>,
}

#[derive(Serialize)]
struct ChatTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ChatFunction<'a>,
}

#[derive(Serialize)]
struct ChatFunction<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    parameters: Params<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Params<'a> {
    Raw(&'a RawValue),
    Built(serde_json::Value),
}

#[derive(Serialize)]
#[serde(untagged)]
enum ChatToolChoice<'a> {
    Mode(Cow<'a, str>),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NameOnly<'a>,
    },
}

#[derive(Serialize)]
struct NameOnly<'a> {
    name: Cow<'a, str>,
}

#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<JsonSchema<'a>>,
}

#[derive(Serialize)]
struct JsonSchema<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
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
pub fn translate(body: &[u8], id_seed: &str, created_at: i64) -> Result<Translated, RequestError> {
    let req: Request = serde_json::from_slice(body).map_err(|e| {
        if body.is_empty() {
            RequestError::new("the request body must be a JSON object", None)
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
    let instructions = match req.instructions {
        None => None,
        Some(raw) => match serde_json::from_str::<Option<Cow<str>>>(raw.get()) {
            Ok(text) => text,
            Err(_) => {
                return Err(RequestError::new(
                    "`instructions` must be a string (instructions as a list of items are not supported)",
                    Some("instructions"),
                ))
            }
        },
    };
    let echo = echo(&req, instructions.as_deref());
    let messages = messages(instructions.as_deref(), req.input)?;
    let (tools, custom_tools) = tools(req.tools.as_deref().unwrap_or(&[]))?;
    let tool_choice = tool_choice(req.tool_choice)?.filter(|_| !tools.is_empty());
    let stream = req.stream.unwrap_or(false);
    let chat = ChatRequest {
        model,
        messages,
        stream: Some(stream),
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        parallel_tool_calls: if tools.is_empty() { None } else { req.parallel_tool_calls },
        tools,
        tool_choice,
        response_format: response_format(req.text.as_ref().and_then(|t| t.format.as_ref()))?,
    };
    let body = serde_json::to_vec(&chat).map_err(|e| RequestError::new(e.to_string(), None))?;
    let context = Context::new(id_seed, created_at, model.to_string(), custom_tools, echo);
    Ok(Translated { body, model: model.to_string(), stream, context })
}

/// The proxy keeps no responses: a field that needs one stored is refused
/// rather than ignored (the model would answer without the context).
fn refuse_unsupported(req: &Request) -> Result<(), RequestError> {
    let stored = "this proxy stores no responses or conversations; send the whole conversation in `input` (as Codex does with `store: false`)";
    if req.previous_response_id.is_some() {
        return Err(RequestError::new(
            format!("`previous_response_id` is not supported: {stored}"),
            Some("previous_response_id"),
        ));
    }
    if req.conversation.is_some() {
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
    if req.prompt.is_some() {
        return Err(RequestError::new(
            "`prompt` (a stored prompt template) is not supported: send the text in `instructions` and `input`",
            Some("prompt"),
        ));
    }
    Ok(())
}

fn messages<'a>(
    instructions: Option<&str>,
    input: Option<Input<'a>>,
) -> Result<Vec<Message<'a>>, RequestError> {
    let mut system: Vec<Cow<'a, str>> = Vec::new();
    if let Some(text) = instructions.filter(|t| !t.is_empty()) {
        system.push(Cow::Owned(text.to_string()));
    }
    let mut out: Vec<Message<'a>> = Vec::with_capacity(8);
    let items = match input {
        None => Vec::new(),
        Some(Input::Text(text)) => {
            out.push(Message::new("user", Content::Text(text)));
            Vec::new()
        }
        Some(Input::Items(items)) => items,
    };
    // Reasoning waits for the assistant message it belongs to.
    let mut reasoning: Option<String> = None;
    for (n, item) in items.into_iter().enumerate() {
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
                        match &mut msg.content {
                            Content::Text(t) if t.is_empty() => *t = text,
                            Content::Text(t) => {
                                t.to_mut().push('\n');
                                t.to_mut().push_str(&text);
                            }
                            Content::Parts(_) => {}
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
                let text = reasoning_text(&item);
                if !text.is_empty() {
                    match &mut reasoning {
                        Some(r) => {
                            r.push('\n');
                            r.push_str(&text);
                        }
                        None => reasoning = Some(text),
                    }
                }
            }
            "function_call" | "custom_tool_call" => {
                let call_id = required(item.call_id, n, "call_id")?;
                let name = required(item.name, n, "name")?;
                let arguments = if kind == "function_call" {
                    item.arguments.unwrap_or(Cow::Borrowed("{}"))
                } else {
                    let input = item.input.unwrap_or_default();
                    Cow::Owned(serde_json::json!({ "input": input }).to_string())
                };
                let call = ToolCall { id: call_id, kind: "function", function: FunctionCall { name, arguments } };
                assistant(&mut out, &mut reasoning).tool_calls.push(call);
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = required(item.call_id, n, "call_id")?;
                let text = match item.output {
                    Some(output) => parts_text(output, n)?,
                    None => Cow::Borrowed(""),
                };
                let mut msg = Message::new("tool", Content::Text(text));
                msg.tool_call_id = Some(call_id);
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
        let text = if system.len() == 1 { system.remove(0) } else { Cow::Owned(system.join("\n\n")) };
        out.insert(0, Message::new("system", Content::Text(text)));
    }
    Ok(out)
}

/// The assistant message the next assistant item belongs to: the last one
/// when nothing came after it (so consecutive calls share one message, as
/// chat wants), else a new one. Waiting reasoning goes with it.
fn assistant<'m, 'a>(out: &'m mut Vec<Message<'a>>, reasoning: &mut Option<String>) -> &'m mut Message<'a> {
    if out.last().is_none_or(|m| m.role != "assistant") {
        out.push(Message::new("assistant", Content::Text(Cow::Borrowed(""))));
    }
    let last = out.len() - 1;
    let msg = &mut out[last];
    if let Some(r) = reasoning.take() {
        match &mut msg.reasoning_content {
            Some(existing) => {
                existing.push('\n');
                existing.push_str(&r);
            }
            None => msg.reasoning_content = Some(r),
        }
    }
    msg
}

fn required<'a>(v: Option<Cow<'a, str>>, n: usize, field: &str) -> Result<Cow<'a, str>, RequestError> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| RequestError::new(format!("input[{n}]: `{field}` is required"), Some("input")))
}

/// A reasoning item's text: its full `content` when given, else its summary.
fn reasoning_text(item: &Item) -> String {
    let joined = |parts: &[Part]| {
        parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Some(TextOrParts::Parts(parts)) = &item.content {
        let text = joined(parts);
        if !text.is_empty() {
            return text;
        }
    }
    item.summary.as_deref().map(joined).unwrap_or_default()
}

/// Text content (system, assistant): the text parts joined.
fn plain_text<'a>(content: Option<TextOrParts<'a>>, n: usize) -> Result<Cow<'a, str>, RequestError> {
    match content {
        None => Ok(Cow::Borrowed("")),
        Some(c) => parts_text(c, n),
    }
}

/// A tool's output or a text-only message as one string (chat wants a
/// string there): text parts joined by blank lines; an image is refused
/// with the place it was found, since it cannot be put into a string.
fn parts_text<'a>(content: TextOrParts<'a>, n: usize) -> Result<Cow<'a, str>, RequestError> {
    let parts = match content {
        TextOrParts::Text(t) => return Ok(t),
        TextOrParts::Parts(parts) => parts,
    };
    let mut texts: Vec<Cow<'a, str>> = Vec::with_capacity(parts.len());
    for p in parts {
        match p.kind.as_ref() {
            "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                texts.push(p.text.unwrap_or_default())
            }
            "refusal" => texts.push(p.refusal.or(p.text).unwrap_or_default()),
            other => {
                return Err(RequestError::new(
                    format!("input[{n}]: content of type `{other}` can only be sent in a user message"),
                    Some("input"),
                ))
            }
        }
    }
    Ok(if texts.len() == 1 { texts.remove(0) } else { Cow::Owned(texts.join("\n\n")) })
}

/// A user message: a string when it is text only (what every chat template
/// reads), else parts with the images.
fn user_content<'a>(content: Option<TextOrParts<'a>>, n: usize) -> Result<Content<'a>, RequestError> {
    let parts = match content {
        None => return Ok(Content::Text(Cow::Borrowed(""))),
        Some(TextOrParts::Text(t)) => return Ok(Content::Text(t)),
        Some(TextOrParts::Parts(parts)) => parts,
    };
    if !parts.iter().any(|p| p.kind == "input_image") {
        return Ok(Content::Text(parts_text(TextOrParts::Parts(parts), n)?));
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p.kind.as_ref() {
            "input_text" | "output_text" | "text" => out.push(ChatPart::Text { text: p.text.unwrap_or_default() }),
            "input_image" => match p.image_url {
                Some(url) => out.push(ChatPart::ImageUrl { image_url: ImageUrl { url, detail: p.detail } }),
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

/// Function and custom tools as chat functions; built-in tools dropped.
/// Returns the custom tools' names too: their calls go back as
/// `custom_tool_call` items with the raw input.
fn tools<'a>(tools: &[Tool<'a>]) -> Result<(Vec<ChatTool<'a>>, Vec<String>), RequestError> {
    let mut out = Vec::with_capacity(tools.len());
    let mut custom = Vec::new();
    for (n, tool) in tools.iter().enumerate() {
        let kind = tool.kind.as_ref();
        if kind != "function" && kind != "custom" {
            continue;
        }
        let name = match &tool.name {
            Some(name) if !name.is_empty() => name.clone(),
            _ => {
                return Err(RequestError::new(
                    format!("tools[{n}]: a {kind} tool needs a `name`"),
                    Some("tools"),
                ))
            }
        };
        let function = if kind == "function" {
            let parameters = match tool.parameters {
                Some(raw) if raw.get() != "null" => Params::Raw(raw),
                _ => Params::Built(serde_json::json!({"type": "object", "properties": {}})),
            };
            ChatFunction { name, description: tool.description.clone(), parameters }
        } else {
            custom.push(name.to_string());
            ChatFunction {
                name,
                description: Some(Cow::Owned(custom_description(tool))),
                parameters: Params::Built(custom_parameters()),
            }
        };
        out.push(ChatTool { kind: "function", function });
    }
    Ok((out, custom))
}

/// A custom (freeform) tool takes raw text; as a function it takes one
/// string, `input`, and its grammar is told to the model in the description.
fn custom_parameters() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's raw input text."}},
        "required": ["input"],
        "additionalProperties": false
    })
}

fn custom_description(tool: &Tool) -> String {
    let mut d = tool.description.as_deref().unwrap_or("").to_string();
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

fn tool_choice(raw: Option<&RawValue>) -> Result<Option<ChatToolChoice<'_>>, RequestError> {
    let Some(raw) = raw else { return Ok(None) };
    if let Ok(mode) = serde_json::from_str::<Option<Cow<str>>>(raw.get()) {
        return match mode.as_deref() {
            None => Ok(None),
            Some("auto" | "none" | "required") => Ok(mode.map(ChatToolChoice::Mode)),
            Some(other) => Err(RequestError::new(
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
            ChatToolChoice::Function { kind: "function", function: NameOnly { name } }
        }
        ("function" | "custom", None) => {
            return Err(RequestError::new("`tool_choice` names no tool", Some("tool_choice")))
        }
        // A subset of the tools: chat has no such choice; its mode holds.
        ("allowed_tools", _) => match choice.mode.as_deref() {
            Some("required") => ChatToolChoice::Mode(Cow::Borrowed("required")),
            _ => ChatToolChoice::Mode(Cow::Borrowed("auto")),
        },
        // A built-in tool, which was dropped: the model chooses among the rest.
        _ => ChatToolChoice::Mode(Cow::Borrowed("auto")),
    }))
}

fn response_format<'a>(format: Option<&TextFormat<'a>>) -> Result<Option<ResponseFormat<'a>>, RequestError> {
    let Some(f) = format else { return Ok(None) };
    match f.kind.as_ref() {
        "text" => Ok(None),
        "json_object" => Ok(Some(ResponseFormat { kind: "json_object", json_schema: None })),
        "json_schema" => Ok(Some(ResponseFormat {
            kind: "json_schema",
            json_schema: Some(JsonSchema {
                name: f.name.clone().unwrap_or(Cow::Borrowed("response")),
                description: f.description.clone(),
                schema: f.schema,
                strict: f.strict,
            }),
        })),
        other => Err(RequestError::new(
            format!("`text.format.type` must be text, json_object or json_schema, not `{other}`"),
            Some("text"),
        )),
    }
}

/// The request's settings as the response object repeats them, written once
/// as a JSON fragment (`"key":value,...`) for every response object sent.
fn echo(req: &Request, instructions: Option<&str>) -> String {
    fn raw_or<'r>(raw: Option<&'r RawValue>, default: &'r str) -> &'r str {
        raw.map(RawValue::get).unwrap_or(default)
    }
    let tools = match &req.tools {
        Some(_) => None,
        None => Some("[]"),
    };
    let mut s = String::with_capacity(256);
    let num = |v: Option<f64>| v.map_or("null".to_string(), |v| v.to_string());
    s.push_str("\"instructions\":");
    s.push_str(&serde_json::to_string(&instructions).unwrap_or_else(|_| "null".into()));
    s.push_str(",\"max_output_tokens\":");
    s.push_str(&req.max_output_tokens.map_or("null".to_string(), |v| v.to_string()));
    s.push_str(",\"metadata\":");
    s.push_str(raw_or(req.metadata, "{}"));
    s.push_str(",\"parallel_tool_calls\":");
    s.push_str(if req.parallel_tool_calls.unwrap_or(true) { "true" } else { "false" });
    s.push_str(",\"reasoning\":");
    s.push_str(raw_or(req.reasoning, "{\"effort\":null,\"summary\":null}"));
    s.push_str(",\"store\":false,\"temperature\":");
    s.push_str(&num(req.temperature));
    s.push_str(",\"text\":");
    match req.text.as_ref().and_then(|t| t.format.as_ref()) {
        Some(f) if f.kind != "text" => {
            let schema = f.schema.map(RawValue::get).unwrap_or("null");
            let name = serde_json::to_string(&f.name).unwrap_or_else(|_| "null".into());
            s.push_str(&format!(
                "{{\"format\":{{\"type\":\"{}\",\"name\":{name},\"schema\":{schema}}}}}",
                f.kind
            ));
        }
        _ => s.push_str("{\"format\":{\"type\":\"text\"}}"),
    }
    s.push_str(",\"tool_choice\":");
    s.push_str(raw_or(req.tool_choice, "\"auto\""));
    s.push_str(",\"tools\":");
    match tools {
        Some(empty) => s.push_str(empty),
        None => s.push_str(&tools_echo(req.tools.as_deref().unwrap_or(&[]))),
    }
    s.push_str(",\"top_p\":");
    s.push_str(&num(req.top_p));
    s.push_str(",\"truncation\":\"disabled\"");
    s
}

/// The tools the request offered, as the response object lists them (only
/// their type and name: the schemas are the caller's own and long).
fn tools_echo(tools: &[Tool]) -> String {
    #[derive(Serialize)]
    struct Echo<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    }
    let list: Vec<Echo> = tools.iter().map(|t| Echo { kind: &t.kind, name: t.name.as_deref() }).collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn chat(req: Value) -> Value {
        let t = translate(req.to_string().as_bytes(), "T", 1).unwrap();
        serde_json::from_slice(&t.body).unwrap()
    }

    fn refused(req: Value) -> RequestError {
        translate(req.to_string().as_bytes(), "T", 1).unwrap_err()
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
            json!({"model": "m", "tools": [
                {"type": "custom", "name": "apply_patch", "description": "Patch files.",
                 "format": {"type": "grammar", "syntax": "lark", "definition": "start: \"*** Begin Patch\""}}
            ], "input": [
                {"role": "user", "content": "fix"},
                {"type": "custom_tool_call", "call_id": "c9", "name": "apply_patch", "input": "*** Begin Patch\n\"q\""},
                {"type": "custom_tool_call_output", "call_id": "c9", "output": "Done!"}
            ]})
            .to_string()
            .as_bytes(),
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
            br#"{"model":"m","input":"q","previous_response_id":null,"background":false}"#,
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
        assert!(translate(b"{", "T", 1).unwrap_err().message.contains("not valid JSON"));
        assert!(translate(b"", "T", 1).unwrap_err().message.contains("JSON object"));
        assert!(translate(br#"{"model":"m","input":5}"#, "T", 1)
            .unwrap_err()
            .message
            .contains("invalid request body"));
    }

    #[test]
    fn the_response_echo_is_valid_json_with_the_request_settings() {
        let t = translate(
            json!({"model": "m", "input": "q", "instructions": "be \"brief\"", "max_output_tokens": 7,
                "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}], "metadata": {"a": "b"}})
            .to_string()
            .as_bytes(),
            "T",
            1,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&format!("{{{}}}", t.context.echo)).unwrap();
        assert_eq!(v["instructions"], "be \"brief\"");
        assert_eq!(v["max_output_tokens"], 7);
        assert_eq!(v["metadata"], json!({"a": "b"}));
        assert_eq!(v["tools"], json!([{"type": "function", "name": "f"}, {"type": "web_search"}]));
        assert_eq!(v["tool_choice"], "auto");
        assert_eq!(v["parallel_tool_calls"], true);
        assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    }
}
