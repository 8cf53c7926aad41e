//! A chat answer rewritten as a Responses answer. One state machine serves
//! both: fed a chat stream's bytes (split anywhere), it writes the Responses
//! event sequence; fed a whole chat completion, it builds the same items,
//! and the response object is the one `response.completed` would carry.
//!
//! Items open when their first piece arrives and close (`.done` events,
//! which are what put an item into Codex's conversation) when another kind
//! begins or the answer ends: reasoning, then text, then the tool calls,
//! which stay open together because a model may interleave their
//! arguments. A stream that ends without a finish reason or `[DONE]` was cut:
//! it ends with `response.failed`, never `response.completed`.
//!
//! Texts are kept escaped, as the upstream wrote them, and copied into the
//! events (see `dialects::json`): the translation costs about a copy.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::errors::Failure;
use super::types::{text, ChatChunk, ChatUsage, ToolCallDelta};
use super::{Chunks, Context};
use crate::dialects::json::{self, field, key, number, raw, Escaped};
use crate::sse::{self, Lines};

/// An output item; its texts escaped.
#[derive(Debug)]
enum Kind {
    Reasoning {
        text: String,
    },
    Message {
        text: String,
    },
    /// `input`: a custom tool's raw input, read from the arguments when the call closes.
    Call {
        chat_index: usize,
        call_id: String,
        name: String,
        arguments: String,
        custom: bool,
        input: String,
    },
}

/// An output item; its id is `<prefix>_<seed>_<index>`, written where it
/// is needed rather than kept.
#[derive(Debug)]
struct Item {
    prefix: &'static str,
    done: bool,
    kind: Kind,
}

/// Writes `"<prefix>_<seed>_<n>"`.
fn item_id(o: &mut Vec<u8>, ctx: &Context, prefix: &str, n: usize) {
    o.push(b'"');
    ctx.write_item_id(o, prefix, n);
    o.push(b'"');
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    Incomplete(&'static str),
    Failed,
}

/// The events written so far, numbered.
#[derive(Debug)]
struct Events {
    out: Vec<u8>,
    /// What was written before a shared piece, and the pieces (see `Echo`).
    parts: Vec<Bytes>,
    seq: u64,
    /// Write events (a stream), or only count them (a plain answer).
    emit: bool,
}

impl Events {
    /// Adds the echo's pieces after what is written so far, sharing them.
    fn share(&mut self, echo: &super::Echo) {
        if !self.out.is_empty() {
            self.parts.push(Bytes::copy_from_slice(&self.out));
            self.out.clear();
        }
        self.parts.extend(echo.parts().iter().cloned());
    }

    /// Starts event `kind` (`{"type":..,"sequence_number":n`); the caller
    /// adds its fields and `close`s it. `None` when events are not written.
    fn open(&mut self, kind: &str) -> Option<&mut Vec<u8>> {
        let n = self.seq;
        self.seq += 1;
        if !self.emit {
            return None;
        }
        let o = &mut self.out;
        raw(o, "event: ");
        raw(o, kind);
        raw(o, "\ndata: {\"type\":\"");
        raw(o, kind);
        raw(o, "\",\"sequence_number\":");
        json::uint(o, n);
        Some(o)
    }
}

fn close(o: &mut Vec<u8>) {
    raw(o, "}\n\n");
}

#[derive(Debug)]
pub struct Translator {
    ctx: Context,
    ev: Events,
    started: bool,
    items: Vec<Item>,
    open_reasoning: Option<usize>,
    open_text: Option<usize>,
    /// Open tool calls, by item index.
    open_calls: Vec<usize>,
    /// How the upstream said the answer ended (its finish reason).
    finish_reason: Option<End>,
    saw_done: bool,
    usage: Option<ChatUsage>,
    /// The last usage seen but not yet read (see `ChatChunk::parse`).
    usage_text: String,
    failure: Option<Failure>,
    end: Option<End>,
    lines: Lines,
}

impl Translator {
    /// `emit`: write the event sequence (for a streamed request).
    pub fn new(ctx: Context, emit: bool) -> Self {
        Translator {
            ctx,
            ev: Events { out: Vec::new(), parts: Vec::new(), seq: 0, emit },
            started: false,
            items: Vec::new(),
            open_reasoning: None,
            open_text: None,
            open_calls: Vec::new(),
            finish_reason: None,
            saw_done: false,
            usage: None,
            usage_text: String::new(),
            failure: None,
            end: None,
            lines: Lines::default(),
        }
    }

    /// Bytes of a chat stream in; the events they complete out (often none).
    pub fn feed(&mut self, chunk: &[u8]) -> Chunks {
        self.start();
        if self.end.is_none() {
            let mut lines = std::mem::take(&mut self.lines);
            lines.feed(chunk, |line| self.line(line));
            self.lines = lines;
        }
        self.take()
    }

    /// The chat stream ended: the closing events, and the reason the answer
    /// failed when it did (for the log).
    pub fn finish(&mut self) -> (Chunks, Option<String>) {
        self.start();
        if self.end.is_none() {
            if let Some(rest) = self.lines.rest() {
                self.line(&rest);
            }
        }
        if self.end.is_none() {
            if self.finish_reason.is_some() || self.saw_done {
                self.complete();
            } else {
                self.fail(Failure::server("the upstream stream ended before the answer was complete"));
            }
        }
        (self.take(), self.failure.as_ref().map(|f| f.message.clone()))
    }

    /// The upstream broke off (a read error, silence): `response.failed`.
    pub fn abort(&mut self, message: &str) -> Chunks {
        self.start();
        if self.end.is_none() {
            self.fail(Failure::server(message));
        }
        self.take()
    }

    /// A whole chat completion in (a plain answer, or a stream request the
    /// upstream answered in one piece): its parts go through the same steps
    /// as a stream's. Call `finish` (events) or `response` (object) after.
    pub fn completion(&mut self, body: &[u8]) -> Result<(), String> {
        self.start();
        let text =
            std::str::from_utf8(body).map_err(|e| format!("the upstream's chat answer is not UTF-8: {e}"))?;
        let chunk = ChatChunk::parse(text)
            .map_err(|e| format!("the upstream's chat answer could not be read: {e}"))?;
        if chunk.choices.is_none() {
            return Err("the upstream's chat answer has no choices".to_string());
        }
        self.chunk(chunk);
        self.saw_done = true;
        Ok(())
    }

    /// The response object (after `finish` or `completion`): what a plain
    /// request gets.
    pub fn response(&mut self) -> Vec<u8> {
        if self.end.is_none() {
            self.end = Some(self.ending());
            self.close_all();
        }
        self.read_usage();
        let mut out = Vec::with_capacity(1024);
        write_response(&mut out, &self.ctx, &self.items, self.end, self.failure.as_ref(), self.usage);
        out
    }

    /// The usage the upstream reported last (input, output, total): running
    /// totals, so the last wins.
    pub fn usage(&mut self) -> Option<(u64, u64, u64)> {
        self.read_usage();
        self.usage.map(|u| {
            let (i, o) = (u.prompt_tokens.unwrap_or(0), u.completion_tokens.unwrap_or(0));
            (i, o, u.total_tokens.unwrap_or(i + o))
        })
    }

    /// Whether the upstream has reported usage yet.
    pub fn usage_seen(&self) -> bool {
        self.usage.is_some() || !self.usage_text.is_empty()
    }

    /// The estimated tokens of what the answer carried so far (its texts,
    /// reasoning and tool calls): for a stream cut before its usage came.
    pub fn text_tokens(&self) -> u64 {
        use crate::dialects::count_tokens::{Pricing, Tally};
        let mut t = Tally::new(Pricing::Typical);
        for item in &self.items {
            match &item.kind {
                Kind::Reasoning { text } | Kind::Message { text } => t.text(text),
                Kind::Call { name, arguments, .. } => {
                    t.text(name);
                    t.text(arguments);
                }
            }
        }
        t.tokens().ceil() as u64
    }

    /// Reads the usage kept as text, once.
    fn read_usage(&mut self) {
        if !self.usage_text.is_empty() {
            if let Some(u) = ChatUsage::read(&self.usage_text) {
                self.usage = Some(u);
            }
            self.usage_text.clear();
        }
    }

    /// The events written since the last call. The buffer keeps its
    /// capacity: a stream's events are written without growing it again
    /// (the long pieces they repeat are shared, never in it).
    fn take(&mut self) -> Chunks {
        let mut parts = std::mem::take(&mut self.ev.parts);
        if !self.ev.out.is_empty() {
            parts.push(Bytes::copy_from_slice(&self.ev.out));
            self.ev.out.clear();
        }
        Chunks(parts)
    }

    fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.response_event("response.created");
            self.response_event("response.in_progress");
        }
    }

    fn line(&mut self, line: &[u8]) {
        if self.end.is_some() {
            return;
        }
        let Some(data) = sse::data(line) else { return };
        if data == b"[DONE]" {
            self.saw_done = true;
            return;
        }
        // A line that is not a chunk holds nothing of the answer.
        if let Some(chunk) = std::str::from_utf8(data).ok().and_then(|t| ChatChunk::parse(t).ok()) {
            self.chunk(chunk);
        }
    }

    fn chunk(&mut self, chunk: ChatChunk) {
        if let Some(failure) = chunk_error(&chunk) {
            self.fail(failure);
            return;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
            self.usage_text.clear();
        } else if let Some(text) = chunk.usage_text.filter(|t| !t.trim_start().starts_with("null")) {
            self.usage_text.clear();
            self.usage_text.push_str(text);
        }
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(d) = choice.delta.or(choice.message) {
                if let Some(r) = text(d.reasoning_content).or_else(|| text(d.reasoning)) {
                    self.reasoning(r);
                }
                if let Some(c) = text(d.content) {
                    self.text(c);
                }
                for (n, call) in d.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    self.call(call, n);
                }
            }
            if let Some(f) = choice.finish_reason {
                self.finish_reason = Some(match &*f {
                    "length" => End::Incomplete("max_output_tokens"),
                    "content_filter" => End::Incomplete("content_filter"),
                    _ => End::Completed,
                });
            }
        }
    }

    fn reasoning(&mut self, piece: &str) {
        let i = match self.open_reasoning {
            Some(i) => i,
            None => {
                self.close_text();
                self.close_calls();
                let i = self.open(Kind::Reasoning { text: String::new() }, "rs");
                self.open_reasoning = Some(i);
                self.item_event("response.output_item.added", i);
                if let Some(o) = self.ev.open("response.reasoning_summary_part.added") {
                    item_ref(o, &self.ctx, self.items[i].prefix, i);
                    number(o, "summary_index", 0);
                    raw(o, ",\"part\":{\"type\":\"summary_text\",\"text\":\"\"}");
                    close(o);
                }
                i
            }
        };
        if let Kind::Reasoning { text } = &mut self.items[i].kind {
            text.push_str(piece);
        }
        if let Some(o) = self.ev.open("response.reasoning_summary_text.delta") {
            item_ref(o, &self.ctx, self.items[i].prefix, i);
            number(o, "summary_index", 0);
            field(o, "delta", piece);
            close(o);
        }
    }

    fn text(&mut self, piece: &str) {
        let i = match self.open_text {
            Some(i) => i,
            None => {
                self.close_reasoning();
                self.close_calls();
                let i = self.open(Kind::Message { text: String::new() }, "msg");
                self.open_text = Some(i);
                self.item_event("response.output_item.added", i);
                if let Some(o) = self.ev.open("response.content_part.added") {
                    item_ref(o, &self.ctx, self.items[i].prefix, i);
                    number(o, "content_index", 0);
                    key(o, "part");
                    output_text(o, "");
                    close(o);
                }
                i
            }
        };
        if let Kind::Message { text } = &mut self.items[i].kind {
            text.push_str(piece);
        }
        if let Some(o) = self.ev.open("response.output_text.delta") {
            item_ref(o, &self.ctx, self.items[i].prefix, i);
            number(o, "content_index", 0);
            field(o, "delta", piece);
            raw(o, ",\"logprobs\":[]");
            close(o);
        }
    }

    /// A tool call's piece. `position` is its place in the chunk, for
    /// upstreams that leave out `index`.
    fn call(&mut self, call: ToolCallDelta, position: usize) {
        let chat_index = call.index.unwrap_or(position);
        let (name, arguments) = match call.function {
            Some(f) => (text(f.name), text(f.arguments)),
            None => (None, None),
        };
        let id = text(call.id);
        let open = self.open_calls.iter().copied().find(|&i| {
            matches!(&self.items[i].kind, Kind::Call { chat_index: c, call_id, .. }
                // A new id under a used index is a new call (some upstreams number every call 0).
                if *c == chat_index && id.is_none_or(|id| id == call_id.as_str()))
        });
        let i = match open {
            Some(i) => i,
            None => {
                self.close_reasoning();
                self.close_text();
                let name = name.unwrap_or("").to_string();
                let custom = self.ctx.custom_tools.contains(&name);
                let call_id = match id {
                    Some(id) => id.to_string(),
                    None => self.ctx.item_id("call", self.items.len()),
                };
                let kind = Kind::Call {
                    chat_index,
                    call_id,
                    name,
                    arguments: String::new(),
                    custom,
                    input: String::new(),
                };
                let i = self.open(kind, if custom { "ctc" } else { "fc" });
                self.open_calls.push(i);
                self.item_event("response.output_item.added", i);
                i
            }
        };
        let Some(piece) = arguments else { return };
        let Kind::Call { arguments, custom, .. } = &mut self.items[i].kind else { return };
        arguments.push_str(piece);
        // A custom tool's input is inside the JSON arguments: it is sent whole when the call closes.
        if !*custom {
            if let Some(o) = self.ev.open("response.function_call_arguments.delta") {
                item_ref(o, &self.ctx, self.items[i].prefix, i);
                field(o, "delta", piece);
                close(o);
            }
        }
    }

    fn open(&mut self, kind: Kind, prefix: &'static str) -> usize {
        let n = self.items.len();
        self.items.push(Item { prefix, done: false, kind });
        n
    }

    fn close_reasoning(&mut self) {
        let Some(i) = self.open_reasoning.take() else { return };
        self.items[i].done = true;
        if let Kind::Reasoning { text } = &self.items[i].kind {
            let prefix = self.items[i].prefix;
            if let Some(o) = self.ev.open("response.reasoning_summary_text.done") {
                item_ref(o, &self.ctx, prefix, i);
                number(o, "summary_index", 0);
                field(o, "text", text);
                close(o);
            }
            if let Some(o) = self.ev.open("response.reasoning_summary_part.done") {
                item_ref(o, &self.ctx, prefix, i);
                number(o, "summary_index", 0);
                raw(o, ",\"part\":{\"type\":\"summary_text\"");
                field(o, "text", text);
                raw(o, "}");
                close(o);
            }
        }
        self.item_event("response.output_item.done", i);
    }

    fn close_text(&mut self) {
        let Some(i) = self.open_text.take() else { return };
        self.items[i].done = true;
        if let Kind::Message { text } = &self.items[i].kind {
            let prefix = self.items[i].prefix;
            if let Some(o) = self.ev.open("response.output_text.done") {
                item_ref(o, &self.ctx, prefix, i);
                number(o, "content_index", 0);
                field(o, "text", text);
                raw(o, ",\"logprobs\":[]");
                close(o);
            }
            if let Some(o) = self.ev.open("response.content_part.done") {
                item_ref(o, &self.ctx, prefix, i);
                number(o, "content_index", 0);
                key(o, "part");
                output_text(o, text);
                close(o);
            }
        }
        self.item_event("response.output_item.done", i);
    }

    fn close_calls(&mut self) {
        for i in std::mem::take(&mut self.open_calls) {
            let item = &mut self.items[i];
            item.done = true;
            let Kind::Call { name, arguments, custom, input, .. } = &mut item.kind else { continue };
            let prefix = item.prefix;
            if *custom {
                *input = custom_input(arguments);
                if let Some(o) = self.ev.open("response.custom_tool_call_input.delta") {
                    item_ref(o, &self.ctx, prefix, i);
                    field(o, "delta", input);
                    close(o);
                }
                if let Some(o) = self.ev.open("response.custom_tool_call_input.done") {
                    item_ref(o, &self.ctx, prefix, i);
                    field(o, "input", input);
                    close(o);
                }
            } else if let Some(o) = self.ev.open("response.function_call_arguments.done") {
                item_ref(o, &self.ctx, prefix, i);
                field(o, "name", name);
                field(o, "arguments", arguments);
                close(o);
            }
            self.item_event("response.output_item.done", i);
        }
    }

    fn close_all(&mut self) {
        self.close_reasoning();
        self.close_text();
        self.close_calls();
    }

    fn ending(&self) -> End {
        self.finish_reason.unwrap_or(End::Completed)
    }

    fn complete(&mut self) {
        // The end first: the items' `.done` events show their final status.
        let end = self.ending();
        self.end = Some(end);
        self.close_all();
        match end {
            End::Incomplete(_) => self.response_event("response.incomplete"),
            _ => self.response_event("response.completed"),
        }
    }

    fn fail(&mut self, failure: Failure) {
        self.failure = Some(failure);
        self.end = Some(End::Failed);
        self.response_event("response.failed");
    }

    /// An item event (`output_item.added` / `.done`) with the item as it is.
    fn item_event(&mut self, kind: &str, i: usize) {
        if let Some(o) = self.ev.open(kind) {
            number(o, "output_index", i as u64);
            key(o, "item");
            write_item(o, &self.ctx, &self.items[i], i, self.end);
            close(o);
        }
    }

    /// `response.created` and the rest that carry the whole response.
    fn response_event(&mut self, kind: &str) {
        if self.end.is_some() {
            self.read_usage();
        }
        if let Some(o) = self.ev.open(kind) {
            key(o, "response");
            write_response_head(o, &self.ctx, &self.items, self.end, self.failure.as_ref(), self.usage);
            self.ev.share(&self.ctx.echo);
            self.ev.out.push(b'}');
            close(&mut self.ev.out);
        }
    }
}

/// `,"item_id":..,"output_index":..`
fn item_ref(o: &mut Vec<u8>, ctx: &Context, prefix: &str, i: usize) {
    key(o, "item_id");
    item_id(o, ctx, prefix, i);
    number(o, "output_index", i as u64);
}

fn output_text(o: &mut Vec<u8>, text: &str) {
    raw(o, "{\"type\":\"output_text\"");
    field(o, "text", text);
    raw(o, ",\"annotations\":[],\"logprobs\":[]}");
}

fn status(end: Option<End>) -> &'static str {
    match end {
        None => "in_progress",
        Some(End::Completed) => "completed",
        Some(End::Incomplete(_)) => "incomplete",
        Some(End::Failed) => "failed",
    }
}

/// An item as the response object and the item events show it.
fn write_item(o: &mut Vec<u8>, ctx: &Context, item: &Item, i: usize, end: Option<End>) {
    let state = match (item.done, end) {
        (false, _) => "in_progress",
        (true, Some(End::Incomplete(_))) => "incomplete",
        (true, _) => "completed",
    };
    match &item.kind {
        Kind::Reasoning { text } => {
            raw(o, "{\"type\":\"reasoning\"");
            key(o, "id");
            item_id(o, ctx, item.prefix, i);
            raw(o, ",\"summary\":[");
            if item.done {
                raw(o, "{\"type\":\"summary_text\"");
                field(o, "text", text);
                raw(o, "}");
            }
            raw(o, "]}");
        }
        Kind::Message { text } => {
            raw(o, "{\"type\":\"message\"");
            key(o, "id");
            item_id(o, ctx, item.prefix, i);
            field(o, "status", state);
            raw(o, ",\"role\":\"assistant\",\"content\":[");
            if item.done {
                output_text(o, text);
            }
            raw(o, "]}");
        }
        Kind::Call { call_id, name, arguments, custom, input, .. } => {
            raw(o, if *custom { "{\"type\":\"custom_tool_call\"" } else { "{\"type\":\"function_call\"" });
            key(o, "id");
            item_id(o, ctx, item.prefix, i);
            field(o, "status", state);
            field(o, "call_id", call_id);
            field(o, "name", name);
            match (custom, item.done) {
                (true, _) => field(o, "input", input),
                (false, true) => field(o, "arguments", arguments),
                (false, false) => field(o, "arguments", ""),
            }
            raw(o, "}");
        }
    }
}

/// The response object, whole (a plain answer: its echo copied in).
fn write_response(
    o: &mut Vec<u8>,
    ctx: &Context,
    items: &[Item],
    end: Option<End>,
    failure: Option<&Failure>,
    usage: Option<ChatUsage>,
) {
    write_response_head(o, ctx, items, end, failure, usage);
    for part in ctx.echo.parts() {
        o.extend_from_slice(part);
    }
    o.push(b'}');
}

/// The response object up to its echo: the echo's pieces, then `}`, follow
/// (shared in a stream's events, copied in a plain answer). The echo opens
/// with `,`.
fn write_response_head(
    o: &mut Vec<u8>,
    ctx: &Context,
    items: &[Item],
    end: Option<End>,
    failure: Option<&Failure>,
    usage: Option<ChatUsage>,
) {
    raw(o, "{\"id\":");
    json::string(o, &ctx.id);
    raw(o, ",\"object\":\"response\"");
    key(o, "created_at");
    json::int(o, ctx.created_at);
    field(o, "status", status(end));
    raw(o, ",\"background\":false,\"error\":");
    match failure {
        Some(f) => {
            raw(o, "{\"code\":");
            json::plain(o, f.code);
            raw(o, ",\"message\":");
            json::plain(o, &f.message);
            raw(o, "}");
        }
        None => raw(o, "null"),
    }
    raw(o, ",\"incomplete_details\":");
    match end {
        Some(End::Incomplete(reason)) => {
            raw(o, "{\"reason\":");
            json::plain(o, reason);
            raw(o, "}");
        }
        _ => raw(o, "null"),
    }
    field(o, "model", &ctx.model);
    // While in progress the object lists nothing yet, as OpenAI's does.
    raw(o, ",\"output\":[");
    if end.is_some() {
        let mut first = true;
        for (i, item) in items.iter().enumerate().filter(|(_, it)| it.done) {
            if !first {
                o.push(b',');
            }
            first = false;
            write_item(o, ctx, item, i, end);
        }
    }
    raw(o, "]");
    key(o, "usage");
    match usage.filter(|_| end.is_some()) {
        Some(u) => {
            let input = u.prompt_tokens.unwrap_or(0);
            let output = u.completion_tokens.unwrap_or(0);
            raw(o, "{\"input_tokens\":");
            json::uint(o, input);
            raw(o, ",\"input_tokens_details\":{\"cached_tokens\":");
            json::uint(o, u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0));
            raw(o, "},\"output_tokens\":");
            json::uint(o, output);
            raw(o, ",\"output_tokens_details\":{\"reasoning_tokens\":");
            json::uint(o, u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0));
            raw(o, "}");
            number(o, "total_tokens", u.total_tokens.unwrap_or(input + output));
            raw(o, "}");
        }
        None => raw(o, "null"),
    }
    if !ctx.echo.is_empty() {
        o.push(b',');
    }
}

/// A custom tool's raw input (escaped): the `input` string of the function
/// arguments it was called with (as the request's translation declared it);
/// the arguments as they are when the model wrote something else.
fn custom_input(arguments: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        input: &'a RawValue,
    }
    let Some(args) = Escaped(Cow::Borrowed(arguments)).unescape() else { return arguments.to_string() };
    match serde_json::from_str::<Wrapped>(&args)
        .ok()
        .and_then(|w| Escaped::of(w.input).map(Escaped::into_owned))
    {
        Some(input) => input.0.into_owned(),
        None => arguments.to_string(),
    }
}

/// A chunk that is an error, not an answer: OpenAI's `{"error":...}` or
/// SiliconFlow's `{"code","message"}` in place of a chunk.
fn chunk_error(chunk: &ChatChunk) -> Option<Failure> {
    if let Some(raw) = chunk.error {
        // The error object has the shape of an error body's: `{"message","code"}` or a string.
        let (code, message) = super::errors::upstream_message(raw.get().as_bytes());
        return Some(Failure::from_upstream(None, code, &message));
    }
    if chunk.choices.is_none() && chunk.usage.is_none() && chunk.usage_text.is_none() {
        if let Some(m) = chunk.message.and_then(Escaped::of).and_then(|m| m.unescape()) {
            let code = chunk.code.and_then(|c| c.get().parse::<i64>().ok());
            return Some(Failure::from_upstream(None, code, &m));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ctx(custom: &[&str]) -> Context {
        let echo = super::super::Echo::new(vec![Bytes::from_static(b"\"instructions\":null,\"tools\":[]")]);
        Context::new(
            "T",
            1700,
            &Escaped::text("Qwen/Qwen3-8B"),
            custom.iter().map(|s| s.to_string()).collect(),
            echo,
        )
    }

    /// A chat stream as SiliconFlow sends it: running usage in every chunk.
    fn chat_stream(deltas: &[Value], finish: Option<&str>, done: bool) -> Vec<u8> {
        let mut s = String::new();
        let n = deltas.len();
        for (i, d) in deltas.iter().enumerate() {
            let last = i + 1 == n;
            let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "Qwen/Qwen3-8B",
                "choices": [{"index": 0, "delta": d, "finish_reason": if last { finish.map(Value::from) } else { None }}],
                "usage": {"prompt_tokens": 20, "completion_tokens": i + 1, "total_tokens": 21 + i,
                          "completion_tokens_details": {"reasoning_tokens": 2}}});
            s.push_str(&format!("data: {chunk}\n\n"));
        }
        if done {
            s.push_str("data: [DONE]\n\n");
        }
        s.into_bytes()
    }

    /// Every event written, fed `step` bytes at a time.
    fn run(custom: &[&str], body: &[u8], step: usize) -> (Vec<Value>, Option<String>) {
        let mut t = Translator::new(ctx(custom), true);
        let mut out = Vec::new();
        for piece in body.chunks(step) {
            out.extend_from_slice(&t.feed(piece).to_vec());
        }
        let (tail, err) = t.finish();
        out.extend_from_slice(&tail.to_vec());
        (events(&out), err)
    }

    fn events(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("\n\n"), "events end whole");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (event, data) = e.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(event.strip_prefix("event: ").unwrap(), v["type"], "event line names the type");
                v
            })
            .collect()
    }

    fn types(evs: &[Value]) -> Vec<&str> {
        evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    /// The rules every sequence keeps: numbered from 0 without gaps, every
    /// item added once and done once with the same id and index, every
    /// delta naming an open item.
    fn well_formed(evs: &[Value]) {
        let mut open: std::collections::HashMap<u64, String> = Default::default();
        let mut closed = std::collections::HashSet::new();
        for (n, e) in evs.iter().enumerate() {
            assert_eq!(e["sequence_number"], n as u64, "sequence at {n}");
            let t = e["type"].as_str().unwrap();
            let idx = e["output_index"].as_u64();
            match t {
                "response.output_item.added" => {
                    let id = e["item"]["id"].as_str().unwrap().to_string();
                    assert!(open.insert(idx.unwrap(), id).is_none(), "added twice");
                }
                "response.output_item.done" => {
                    let id = e["item"]["id"].as_str().unwrap();
                    assert_eq!(
                        open.get(&idx.unwrap()).map(String::as_str),
                        Some(id),
                        "done names the added id"
                    );
                    assert!(closed.insert(idx.unwrap()), "done twice");
                }
                _ if e.get("item_id").is_some() => {
                    let i = idx.unwrap();
                    assert_eq!(
                        open.get(&i),
                        Some(&e["item_id"].as_str().unwrap().to_string()),
                        "{t} names its item"
                    );
                    assert!(!closed.contains(&i), "{t} after its item closed");
                }
                _ => {}
            }
        }
        let last = types(evs).last().copied().unwrap();
        if last == "response.completed" || last == "response.incomplete" {
            assert_eq!(open.len(), closed.len(), "every item closed");
        }
    }

    #[test]
    fn a_text_stream_split_anywhere_gives_the_exact_sequence() {
        let body = chat_stream(
            &[
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Hel"}),
                json!({"content": "lo ü"}),
                json!({"content": ""}),
            ],
            Some("stop"),
            true,
        );
        let (whole, _) = run(&[], &body, body.len());
        for step in [1, 2, 3, 5, 7, 11, 64] {
            assert_eq!(run(&[], &body, step).0, whole, "step {step}");
        }
        well_formed(&whole);
        assert_eq!(
            types(&whole),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(whole[0]["response"]["status"], "in_progress");
        assert_eq!(whole[0]["response"]["id"], "resp_T");
        assert_eq!(whole[0]["response"]["model"], "Qwen/Qwen3-8B");
        assert_eq!(whole[0]["response"]["output"], json!([]));
        assert_eq!(
            whole[2]["item"],
            json!({"type": "message", "id": "msg_T_0", "status": "in_progress", "role": "assistant", "content": []})
        );
        assert_eq!(
            whole[4],
            json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_T_0",
            "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []})
        );
        assert_eq!(whole[6]["text"], "Hello ü");
        assert_eq!(
            whole[7]["part"],
            json!({"type": "output_text", "text": "Hello ü", "annotations": [], "logprobs": []})
        );
        let done = &whole[9]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(
            done["output"],
            json!([{"type": "message", "id": "msg_T_0", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello ü", "annotations": [], "logprobs": []}]}])
        );
        assert_eq!(
            done["usage"],
            json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 24})
        );
        assert_eq!(done["tools"], json!([]), "the request's echo is inside the object");
        assert!(done["error"].is_null() && done["incomplete_details"].is_null());
    }

    /// SiliconFlow's tool calls: reasoning first, then each call's first
    /// delta names it with empty arguments, later ones carry pieces.
    fn reasoning_and_parallel_calls() -> Vec<u8> {
        chat_stream(
            &[
                json!({"role": "assistant", "content": null, "reasoning_content": "Two "}),
                json!({"content": null, "reasoning_content": "commands."}),
                json!({"content": null, "tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "exec_command", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"cmd\":"}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"ls\"}"}}]}),
                json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "exec_command", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"cmd\":\"pwd\"}"}}]}),
                json!({}),
            ],
            Some("tool_calls"),
            true,
        )
    }

    #[test]
    fn reasoning_then_parallel_calls_are_items_each_opened_and_closed() {
        let body = reasoning_and_parallel_calls();
        let (evs, err) = run(&[], &body, 13);
        assert!(err.is_none());
        assert_eq!(evs, run(&[], &body, 1).0);
        well_formed(&evs);
        assert_eq!(
            types(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(evs[3]["part"], json!({"type": "summary_text", "text": ""}));
        assert_eq!(evs[4]["summary_index"], 0);
        assert_eq!(evs[6]["text"], "Two commands.");
        assert_eq!(
            evs[9]["item"],
            json!({"type": "function_call", "id": "fc_T_1", "status": "in_progress",
            "call_id": "call_a", "name": "exec_command", "arguments": ""})
        );
        assert_eq!(
            evs[14],
            json!({"type": "response.function_call_arguments.done", "sequence_number": 14,
            "item_id": "fc_T_1", "output_index": 1, "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"})
        );
        let out = &evs[18]["response"]["output"];
        assert_eq!(
            out[0],
            json!({"type": "reasoning", "id": "rs_T_0", "summary": [{"type": "summary_text", "text": "Two commands."}]})
        );
        assert_eq!(out[1]["arguments"], "{\"cmd\":\"ls\"}");
        assert_eq!(
            out[2],
            json!({"type": "function_call", "id": "fc_T_2", "status": "completed", "call_id": "call_b",
            "name": "exec_command", "arguments": "{\"cmd\":\"pwd\"}"})
        );
    }

    #[test]
    fn a_custom_tool_call_carries_its_raw_input() {
        let patch = "*** Begin Patch\n*** Add File: a.txt\n+hi \"there\"\n*** End Patch";
        let args = json!({"input": patch}).to_string();
        let (a, b) = args.split_at(17);
        let body = chat_stream(
            &[
                json!({"tool_calls": [{"index": 0, "id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
            ],
            Some("tool_calls"),
            true,
        );
        let (evs, _) = run(&["apply_patch"], &body, 9);
        well_formed(&evs);
        assert_eq!(
            types(&evs)[2..],
            [
                "response.output_item.added",
                "response.custom_tool_call_input.delta",
                "response.custom_tool_call_input.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(evs[4]["input"], patch);
        let item = json!({"type": "custom_tool_call", "id": "ctc_T_0", "status": "completed", "call_id": "call_p",
            "name": "apply_patch", "input": patch});
        assert_eq!(evs[5]["item"], item);
        assert_eq!(evs[6]["response"]["output"][0], item);
    }

    #[test]
    fn length_is_incomplete_and_a_cut_stream_fails_rather_than_completes() {
        let body = chat_stream(&[json!({"content": "partial"})], Some("length"), true);
        let (evs, err) = run(&[], &body, 4);
        assert!(err.is_none());
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(last["response"]["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");

        // No finish reason, no [DONE]: the upstream was cut.
        let full = chat_stream(&[json!({"content": "Hel"}), json!({"content": "lo"})], Some("stop"), true);
        let cut = &full[..full.len() / 2 + 3];
        let (evs, err) = run(&[], cut, 5);
        well_formed(&evs);
        assert!(err.unwrap().contains("ended before the answer was complete"));
        assert!(!types(&evs).contains(&"response.completed"));
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["error"]["code"], "server_error");

        // A read error or silence: the proxy aborts.
        let mut t = Translator::new(ctx(&[]), true);
        let mut out = t.feed(&full[..40]).to_vec();
        out.extend_from_slice(&t.abort("upstream sent nothing for 300 s").to_vec());
        let (tail, err) = t.finish();
        assert!(tail.is_empty(), "nothing after the failure");
        assert_eq!(err.as_deref(), Some("upstream sent nothing for 300 s"));
        let evs = events(&out);
        assert_eq!(evs.last().unwrap()["response"]["error"]["message"], "upstream sent nothing for 300 s");
    }

    #[test]
    fn an_error_inside_the_stream_fails_with_the_code_codex_reads() {
        let mut body = chat_stream(&[json!({"content": "a"})], None, false);
        body.extend_from_slice(b"data: {\"code\":50603,\"message\":\"Request was rejected due to rate limiting. Details: TPM limit reached.\",\"data\":null}\n\n");
        body.extend_from_slice(&chat_stream(&[json!({"content": "ignored"})], Some("stop"), true));
        let (evs, err) = run(&[], &body, 8);
        assert!(err.unwrap().contains("TPM limit reached"));
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["error"]["code"], "rate_limit_exceeded");
        assert!(last["response"]["error"]["message"].as_str().unwrap().contains("try again in 10s"));
        let body = b"data: {\"error\":{\"message\":\"Sorry, your account balance is insufficient\",\"code\":30001}}\n\n";
        let (evs, _) = run(&[], body, 3);
        assert_eq!(evs.last().unwrap()["response"]["error"]["code"], "insufficient_quota");
    }

    #[test]
    fn a_plain_completion_is_the_object_the_stream_would_complete_with() {
        let completion = json!({"id": "c", "object": "chat.completion", "model": "Qwen/Qwen3-8B",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "Running.", "reasoning_content": "Think.",
                "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                               {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42,
                      "prompt_tokens_details": {"cached_tokens": 16}, "completion_tokens_details": {"reasoning_tokens": 5}}});
        let bytes = completion.to_string().into_bytes();
        let mut plain = Translator::new(ctx(&[]), false);
        plain.completion(&bytes).unwrap();
        let object: Value = serde_json::from_slice(&plain.response()).unwrap();
        assert_eq!(object["status"], "completed");
        assert_eq!(object["object"], "response");
        assert_eq!(object["created_at"], 1700);
        let kinds: Vec<_> =
            object["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["reasoning", "message", "function_call", "function_call"]);
        assert_eq!(object["output"][3]["call_id"], "call_b");
        assert_eq!(
            object["usage"],
            json!({"input_tokens": 30, "input_tokens_details": {"cached_tokens": 16},
            "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 42})
        );

        // The same answer asked for as a stream: the events end in the same object.
        let mut streamed = Translator::new(ctx(&[]), true);
        streamed.completion(&bytes).unwrap();
        let (out, err) = streamed.finish();
        assert!(err.is_none());
        let evs = events(&out.to_vec());
        well_formed(&evs);
        assert_eq!(evs.last().unwrap()["response"], object);

        assert!(Translator::new(ctx(&[]), false).completion(b"{\"message\":\"x\"}").is_err());
        assert!(Translator::new(ctx(&[]), false).completion(b"not json").is_err());
    }

    #[test]
    fn usage_is_the_last_reported_whether_every_chunk_or_a_final_chunk_carries_it() {
        // OpenAI's way: null in every chunk, then one with no choices and the usage.
        let body = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n\
data: [DONE]\n\n";
        let (evs, _) = run(&[], body, 7);
        assert_eq!(evs.last().unwrap()["response"]["usage"]["total_tokens"], 12);
        // A null after a count does not erase it; spaces after the colon are read too.
        let body = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\": {\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
        let mut t = Translator::new(ctx(&[]), true);
        let mut out = t.feed(body).to_vec();
        assert_eq!(t.usage(), Some((3, 1, 4)));
        out.extend_from_slice(&t.finish().0.to_vec());
        assert_eq!(events(&out).last().unwrap()["response"]["usage"]["input_tokens"], 3);
    }

    #[test]
    fn calls_without_index_or_with_a_reused_index_stay_apart() {
        let body = chat_stream(
            &[
                json!({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}},
                                  {"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
                json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "h", "arguments": "{}"}}]}),
            ],
            Some("tool_calls"),
            true,
        );
        let (evs, _) = run(&[], &body, 100);
        well_formed(&evs);
        let out = &evs.last().unwrap()["response"]["output"];
        let ids: Vec<_> = out.as_array().unwrap().iter().map(|i| i["call_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
