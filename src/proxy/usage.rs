//! Reading token usage out of upstream answers as they stream past.
//!
//! SSE chat streams from SiliconFlow carry running totals in every chunk (take
//! the last, never add); other OpenAI-compatible upstreams send one final
//! usage chunk. Anthropic streams give input tokens in `message_start` and the
//! running output count in `message_delta`. Rerank reports `tokens`, not
//! `usage`. Events may be split across reads at any byte.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};
use serde::Deserialize;

use crate::dialects::count_tokens::{Pricing, Tally};
use crate::dialects::json::Str;
use crate::sse::Lines;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub total: Option<u64>,
    /// Estimated here (see `estimated`), not reported by the upstream.
    pub estimated: bool,
}

impl Usage {
    /// From (input, output, total) read elsewhere (a dialect's translator).
    pub fn from_totals(totals: Option<(u64, u64, u64)>) -> Self {
        match totals {
            Some((i, o, t)) => Usage { input: Some(i), output: Some(o), total: Some(t), estimated: false },
            None => Usage::default(),
        }
    }

    /// Whether the upstream reported both sides of the call.
    pub fn reported(&self) -> bool {
        self.input.is_some() && self.output.is_some()
    }

    /// What the upstream did not report, estimated: the prompt (`prompt`,
    /// asked only when missing) and the answer from the text that passed.
    /// Marked estimated when anything was.
    pub fn estimated(self, prompt: impl FnOnce() -> Option<u64>, text_seen: u64) -> Usage {
        if self.reported() {
            return self;
        }
        let input = self.input.or_else(prompt).unwrap_or(0);
        let output = self.output.unwrap_or(text_seen);
        Usage { input: Some(input), output: Some(output), total: Some(input + output), estimated: true }
    }

    /// (input, output, total) for the log; a missing total is the sum.
    pub fn totals(&self) -> (i64, i64, i64) {
        let i = self.input.unwrap_or(0);
        let o = self.output.unwrap_or(0);
        let t = self.total.unwrap_or(i + o);
        (clamp(i), clamp(o), clamp(t))
    }

    fn absorb(&mut self, f: &UsageFields) {
        if let Some(p) = f.prompt_tokens {
            self.input = Some(p);
        }
        if let Some(c) = f.completion_tokens {
            self.output = Some(c);
        }
        if let Some(t) = f.total_tokens {
            self.total = Some(t);
        }
        // Anthropic's message_delta may repeat input_tokens as 0: keep the count
        // from message_start then.
        if let Some(i) = f.input_tokens {
            if i > 0 || self.input.is_none() {
                self.input = Some(i);
            }
        }
        if let Some(o) = f.output_tokens {
            self.output = Some(o);
        }
    }
}

/// A batch object's usage, when it reports itself completed with one
/// (OpenAI's shape: `status`, `usage.input_tokens`/`output_tokens`/
/// `total_tokens`, or the chat names).
pub fn completed_batch_usage(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Batch {
        status: Option<String>,
        usage: Option<UsageFields>,
    }
    let b: Batch = serde_json::from_slice(body).ok()?;
    if b.status.as_deref() != Some("completed") {
        return None;
    }
    let mut u = Usage::default();
    u.absorb(&b.usage?);
    (u != Usage::default()).then_some(u)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Debug, Default, Deserialize)]
struct UsageFields {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Holder {
    usage: Option<UsageFields>,
}

#[derive(Debug, Default, Deserialize)]
struct Envelope {
    usage: Option<UsageFields>,
    tokens: Option<UsageFields>,
    message: Option<Holder>,
}

impl Envelope {
    fn apply(&self, u: &mut Usage) {
        if let Some(m) = self.message.as_ref().and_then(|m| m.usage.as_ref()) {
            // Anthropic's message_start: its input is the count; its output
            // (1, or 0) is a placeholder until message_delta says it.
            u.absorb(&UsageFields {
                input_tokens: m.input_tokens,
                prompt_tokens: m.prompt_tokens,
                ..Default::default()
            });
        }
        if let Some(t) = &self.tokens {
            u.absorb(t);
        }
        if let Some(x) = &self.usage {
            u.absorb(x);
        }
    }
}

/// Non-streaming bodies are kept whole up to this size; beyond it only the
/// tail is kept, where `usage` sits in OpenAI-style answers.
const JSON_CAP: usize = 4 << 20;
const JSON_TAIL: usize = 64 << 10;
/// A single SSE line longer than this is skipped rather than buffered.
const SSE_LINE_CAP: usize = 1 << 20;

#[derive(Debug)]
pub enum UsageMeter {
    /// `text`: the estimated tokens of the answer's text, counted while the
    /// upstream has reported no output (for a stream cut before it does).
    Sse {
        lines: Lines,
        usage: Usage,
        text: Tally,
    },
    Json {
        buf: Vec<u8>,
        overflowed: bool,
    },
    None,
}

impl UsageMeter {
    pub fn for_content_type(content_type: &str) -> Self {
        let ct = content_type.to_ascii_lowercase();
        if ct.starts_with("text/event-stream") {
            UsageMeter::Sse {
                lines: Lines::with_cap(SSE_LINE_CAP),
                usage: Usage::default(),
                text: Tally::new(Pricing::Typical),
            }
        } else if ct.starts_with("application/json") || ct.contains("+json") {
            UsageMeter::Json { buf: Vec::new(), overflowed: false }
        } else {
            UsageMeter::None
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            UsageMeter::Sse { lines, usage, text } => {
                lines.feed(chunk, |line| sse_line(line, usage, Some(text)))
            }
            UsageMeter::Json { buf, overflowed } => {
                buf.extend_from_slice(chunk);
                if buf.len() > JSON_CAP || *overflowed {
                    *overflowed = true;
                    if buf.len() > JSON_TAIL {
                        let excess = buf.len() - JSON_TAIL;
                        buf.drain(..excess);
                    }
                }
            }
            UsageMeter::None => {}
        }
    }

    /// Whether the upstream has reported the prompt's tokens yet.
    pub fn input_seen(&self) -> bool {
        match self {
            UsageMeter::Sse { usage, .. } => usage.input.is_some(),
            UsageMeter::Json { .. } | UsageMeter::None => false,
        }
    }

    /// The estimated tokens of the answer's text that passed (streams).
    pub fn text_tokens(&self) -> u64 {
        match self {
            UsageMeter::Sse { text, .. } => text.tokens().ceil() as u64,
            UsageMeter::Json { .. } | UsageMeter::None => 0,
        }
    }

    /// The usage seen so far (for a stream the client abandoned) or in all.
    pub fn usage(&self) -> Usage {
        match self {
            UsageMeter::Sse { lines, usage, .. } => {
                // A last event without its trailing newline still counts.
                let mut u = *usage;
                if let Some(line) = lines.partial() {
                    sse_line(line, &mut u, None);
                }
                u
            }
            UsageMeter::Json { buf, overflowed } => json_usage(buf, *overflowed),
            UsageMeter::None => Usage::default(),
        }
    }
}

// Searchers built once: building one costs more than searching a chunk with it.
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"usage"));
static TOKENS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"tokens"));
static USAGE_KEY: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));
static TOKENS_KEY: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"tokens\""));

/// Reads one SSE line's usage into `usage` and, until the upstream reports
/// its output, the answer's text into `text` (some models report usage only
/// in their last chunk).
fn sse_line(line: &[u8], usage: &mut Usage, text: Option<&mut Tally>) {
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    if let Some(text) = text.filter(|_| usage.output.is_none()) {
        delta_text(data, text);
    }
    // Cheap test before parsing: most chunks of other upstreams carry no usage.
    if USAGE.find(data).is_none() && TOKENS.find(data).is_none() {
        return;
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(data) {
        env.apply(usage);
    }
}

/// Counts the text a stream event carries: chat deltas (content, reasoning,
/// tool call names and arguments), completions' text, Anthropic's deltas.
fn delta_text(data: &[u8], tally: &mut Tally) {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        choices: Option<Vec<Choice<'a>>>,
        #[serde(borrow)]
        delta: Option<Delta<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow)]
        delta: Option<Delta<'a>>,
        #[serde(borrow)]
        text: Option<Str<'a>>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(borrow)]
        content: Option<Str<'a>>,
        #[serde(borrow)]
        reasoning_content: Option<Str<'a>>,
        #[serde(borrow)]
        text: Option<Str<'a>>,
        #[serde(borrow)]
        thinking: Option<Str<'a>>,
        #[serde(borrow)]
        partial_json: Option<Str<'a>>,
        #[serde(borrow)]
        tool_calls: Option<Vec<Call<'a>>>,
    }
    #[derive(Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        function: Option<Function<'a>>,
    }
    #[derive(Deserialize)]
    struct Function<'a> {
        #[serde(borrow)]
        name: Option<Str<'a>>,
        #[serde(borrow)]
        arguments: Option<Str<'a>>,
    }
    let Ok(event) = serde_json::from_slice::<Event>(data) else { return };
    fn delta(d: &Delta, tally: &mut Tally) {
        let calls = d.tool_calls.iter().flatten().filter_map(|c| c.function.as_ref());
        let texts = [&d.content, &d.reasoning_content, &d.text, &d.thinking, &d.partial_json]
            .into_iter()
            .chain(calls.flat_map(|f| [&f.name, &f.arguments]));
        for s in texts.flatten() {
            tally.text(s);
        }
    }
    for c in event.choices.iter().flatten() {
        if let Some(d) = &c.delta {
            delta(d, tally);
        }
        if let Some(t) = &c.text {
            tally.text(t);
        }
    }
    if let Some(d) = &event.delta {
        delta(d, tally);
    }
}

fn json_usage(buf: &[u8], overflowed: bool) -> Usage {
    // Fast path: the last `"usage"` (or rerank's `"tokens"`) key, parsed on
    // its own. Inside JSON strings every quote is escaped, so an unescaped
    // `"usage"` is a real key; OpenAI-style answers put it last. This reads
    // ~100 bytes instead of the whole answer (7k -> ~1k instructions).
    if let Some(u) = tail_usage(buf) {
        return u;
    }
    let mut u = Usage::default();
    if !overflowed {
        if let Ok(env) = serde_json::from_slice::<Envelope>(buf) {
            env.apply(&mut u);
        }
    }
    u
}

fn tail_usage(buf: &[u8]) -> Option<Usage> {
    for (finder, needle) in [(&*USAGE_KEY, &b"\"usage\""[..]), (&*TOKENS_KEY, b"\"tokens\"")] {
        let Some(pos) = finder.rfind(buf) else { continue };
        let rest = &buf[pos + needle.len()..];
        let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        if rest[colon] != b':' {
            continue;
        }
        let mut it = serde_json::Deserializer::from_slice(&rest[colon + 1..]).into_iter::<UsageFields>();
        if let Some(Ok(f)) = it.next() {
            let mut u = Usage::default();
            u.absorb(&f);
            return Some(u);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(meter: &mut UsageMeter, body: &[u8], step: usize) {
        for chunk in body.chunks(step) {
            meter.feed(chunk);
        }
    }

    const OPENAI_STREAM: &[u8] = b"data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,\"total_tokens\":11}}\n\n\
data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}}\n\n\
data: {\"id\":\"1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn running_totals_take_the_last_at_any_split() {
        for step in [1, 2, 3, 7, 13, 64, 1000] {
            let mut m = UsageMeter::for_content_type("text/event-stream; charset=utf-8");
            feed_all(&mut m, OPENAI_STREAM, step);
            assert_eq!(m.usage().totals(), (10, 3, 13), "step {step}");
        }
    }

    #[test]
    fn final_usage_chunk_and_crlf_lines() {
        let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let mut m = UsageMeter::for_content_type("text/event-stream");
        feed_all(&mut m, body, 5);
        assert_eq!(m.usage().totals(), (5, 7, 12));
    }

    #[test]
    fn anthropic_stream_input_from_start_output_from_delta() {
        let body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":0,\"output_tokens\":15}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for step in [1, 4, 9, 100] {
            let mut m = UsageMeter::for_content_type("text/event-stream");
            feed_all(&mut m, body, step);
            assert_eq!(m.usage().totals(), (25, 15, 40), "step {step}");
        }
    }

    #[test]
    fn a_stream_cut_before_its_usage_is_estimated_from_its_text() {
        let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"hello \"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think\",\"content\":null}}]}\n\ndata: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"cmd\\\":\\\"ls\\\"}\"}}]}}]}\n\n";
        let mut m = UsageMeter::for_content_type("text/event-stream");
        feed_all(&mut m, body, 7);
        let u = m.usage();
        assert!(!u.reported());
        assert!(m.text_tokens() >= 5, "{}", m.text_tokens());
        let e = u.estimated(|| Some(40), m.text_tokens());
        assert!(e.estimated);
        assert_eq!(e.totals(), (40, m.text_tokens() as i64, 40 + m.text_tokens() as i64));
        // Reported usage is never estimated over.
        let mut m = UsageMeter::for_content_type("text/event-stream");
        feed_all(&mut m, OPENAI_STREAM, 5);
        let u = m.usage().estimated(|| unreachable!("reported"), 99);
        assert_eq!((u.totals(), u.estimated), ((10, 3, 13), false));
        // Anthropic: the input from message_start, the answer from its deltas.
        let cut = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"one two three\"}}\n\n";
        let mut m = UsageMeter::for_content_type("text/event-stream");
        feed_all(&mut m, cut, 3);
        let e = m.usage().estimated(|| Some(1000), m.text_tokens());
        assert_eq!(e.totals(), (25, 3, 28));
        assert!(e.estimated);
    }

    #[test]
    fn partial_stream_reports_usage_so_far() {
        let cut = OPENAI_STREAM.len() / 2;
        let mut m = UsageMeter::for_content_type("text/event-stream");
        m.feed(&OPENAI_STREAM[..cut]);
        let (i, o, _) = m.usage().totals();
        assert_eq!(i, 10);
        assert!((1..3).contains(&o));
    }

    #[test]
    fn json_bodies_usage_tokens_and_big_bodies() {
        let mut m = UsageMeter::for_content_type("application/json");
        feed_all(
            &mut m,
            br#"{"id":"x","usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}"#,
            3,
        );
        assert_eq!(m.usage().totals(), (4, 6, 10));
        let mut m = UsageMeter::for_content_type("application/json");
        m.feed(br#"{"id":"r","results":[],"tokens":{"input_tokens":12,"output_tokens":0}}"#);
        assert_eq!(m.usage().totals(), (12, 0, 12));
        let mut m = UsageMeter::for_content_type("application/json");
        m.feed(br#"{"type":"message","usage":{"input_tokens":3,"output_tokens":9}}"#);
        assert_eq!(m.usage().totals(), (3, 9, 12));
        // Larger than the cap: usage found in the tail.
        let mut m = UsageMeter::for_content_type("application/json");
        m.feed(b"{\"data\":[");
        let filler = vec![b'1'; 1 << 20];
        for _ in 0..5 {
            m.feed(&filler);
        }
        m.feed(br#"],"usage":{"prompt_tokens":8,"total_tokens":8}}"#);
        assert_eq!(m.usage().totals(), (8, 0, 8));
        assert_eq!(UsageMeter::for_content_type("audio/mpeg").usage().totals(), (0, 0, 0));
        // A model answer that talks about "usage" does not fool the fast path.
        let mut m = UsageMeter::for_content_type("application/json");
        m.feed(br#"{"choices":[{"message":{"content":"set \"usage\": 99 here"}}],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5},"system_fingerprint":""}"#);
        assert_eq!(m.usage().totals(), (2, 3, 5));
        let mut m = UsageMeter::for_content_type("application/json");
        m.feed(br#"{"id":"x","usage":null}"#);
        assert_eq!(m.usage().totals(), (0, 0, 0));
    }
}
