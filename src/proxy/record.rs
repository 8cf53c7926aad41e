//! The log row of one client request, and the body wrapper that streams an
//! upstream answer to the client while reading its usage (and, for another
//! dialect, rewriting it on the way). The row is sent to the log writer
//! exactly once: when the body ends, fails, times out, or is dropped because
//! the client went away (then marked aborted).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;

use super::alias::ModelRename;
use super::usage::{Usage, UsageMeter};
use crate::clients::Client;
use crate::db::log_sink::LogSink;
use crate::db::models::{column_text, NewLog};
use crate::db::now_ms;
use crate::dialects::responses::Translator;
use crate::pool::PoolKey;

/// One request's log row, sent exactly once: by `finish`, or, if the request
/// is dropped first (client gone, handler cancelled at shutdown), by `Drop`,
/// marked aborted. So a request that reached the upstream is never unlogged.
pub struct Pending {
    sink: LogSink,
    sent: bool,
    pub started: Instant,
    pub created_at: i64,
    pub endpoint: String,
    /// The model called upstream.
    pub model: String,
    /// The name the caller asked for, when an alias changed it: the answer
    /// shows this name, the log row both.
    pub requested_model: Option<String>,
    pub stream: bool,
    pub key: Option<Arc<PoolKey>>,
    pub attempts: u32,
    pub status: u16,
    pub ttfb: Option<Duration>,
    pub error: Option<String>,
    /// Who called (`None`: an open proxy), and the day's time zone for its usage.
    pub client: Option<Arc<Client>>,
    /// A batch input file's lines, recorded with the file.
    pub batch_lines: Option<i64>,
    /// Requests this call counts as against the client's daily limit (a
    /// batch: its lines).
    pub weight: u64,
    /// Tokens the client's limit reserved for this call (given back at its
    /// end), and when it was admitted (the day both count on).
    reserved: u64,
    admitted_at: i64,
    tz: chrono::FixedOffset,
    /// Listed as in flight from its dispatch (written early if long).
    ticket: Option<crate::db::in_flight::Ticket>,
    /// A call that generates text: its prompt, kept until the upstream
    /// reports the prompt's tokens, so that a call cut before its usage came
    /// is counted from it (see `Prompt`).
    pub prompt: Option<Prompt>,
}

impl Pending {
    pub fn new(state: &crate::state::AppState, req: &actix_web::HttpRequest) -> Self {
        let sink = &state.log;
        sink.opened();
        Pending {
            client: super::auth::caller(req),
            reserved: 0,
            admitted_at: 0,
            batch_lines: None,
            weight: 1,
            tz: state.config.timezone,
            ticket: None,
            prompt: None,
            sink: sink.clone(),
            sent: false,
            started: Instant::now(),
            created_at: now_ms(),
            endpoint: req.path().to_string(),
            model: String::new(),
            requested_model: None,
            stream: false,
            key: None,
            attempts: 0,
            status: 0,
            ttfb: None,
            error: None,
        }
    }

    pub fn finish(mut self, usage: Usage, aborted: bool) {
        self.send(usage, aborted);
    }

    /// The end of an answer the upstream gave (2xx): what it did not report
    /// of its usage is estimated, from the prompt and from `text_seen`
    /// (the estimated tokens of the answer that passed), and the row says so.
    pub fn finish_answered(mut self, usage: Usage, text_seen: u64, aborted: bool) {
        let answered = (200..300).contains(&self.status);
        let usage = match self.prompt.take() {
            Some(prompt) if answered => usage.estimated(|| prompt.tokens(), text_seen),
            _ => usage,
        };
        self.send(usage, aborted);
    }

    /// The caller's own rules for this call, naming `model` (empty: none).
    /// A refused call went nowhere and used nothing: it leaves no row, and
    /// the answer to send comes back as the error.
    pub async fn admit(
        mut self,
        model: &str,
        dialect: super::errors::Dialect,
        metrics: &crate::metrics::Metrics,
        reserve: &dyn Fn() -> crate::clients::Reservation,
    ) -> Result<Self, actix_web::HttpResponse> {
        let admitted = super::auth::admit(self.client.as_ref(), model, &self.tz, reserve, self.weight).await;
        match admitted {
            Ok(reserved) => {
                self.reserved = reserved;
                self.admitted_at = now_ms();
                Ok(self)
            }
            Err(e) => {
                use crate::metrics::Refused;
                let why = match e.kind {
                    super::errors::ErrorKind::Forbidden => Refused::Model,
                    super::errors::ErrorKind::RateLimited => Refused::Limit,
                    _ => Refused::Unauthorized,
                };
                metrics.refused(why);
                self.sent = true;
                self.sink.closed();
                Err(e.response(dialect))
            }
        }
    }

    /// The call is about to go upstream: listed as in flight, so that the
    /// log writer writes it early if it runs long, and a crash then leaves
    /// its row (settled as interrupted).
    pub fn take_off(&mut self) {
        if self.ticket.is_none() {
            self.ticket = Some(self.sink.take_off(crate::db::in_flight::Flight {
                created_at: self.created_at,
                endpoint: column_text(self.endpoint.clone(), 256),
                model: column_text(self.model.clone(), 256),
                requested_model: self.requested_model.clone().map(|m| column_text(m, 256)),
                stream: self.stream,
                // (Client names are cleaned when the clients are read.)
                client: self.client.as_ref().map(|c| c.name.clone()),
            }));
        }
    }

    fn send(&mut self, usage: Usage, aborted: bool) {
        if self.sent {
            return;
        }
        self.sent = true;
        let call_id = self.ticket.take().and_then(|t| self.sink.land(t));
        let (input, output, total) = usage.totals();
        if let Some(k) = &self.key {
            k.note_use(self.created_at);
        }
        if let Some(c) = &self.client {
            let day_of_call = if self.admitted_at > 0 { self.admitted_at } else { self.created_at };
            c.settle(self.reserved, total.max(0) as u64, day_of_call, &self.tz);
        }
        let row = NewLog {
            created_at: self.created_at,
            key_id: self.key.as_ref().map(|k| k.id.0),
            key_masked: self.key.as_ref().map(|k| k.masked.clone()).unwrap_or_default(),
            // Every stored text is bounded and cleaned (the request path
            // refuses longer models and control characters in them; this is
            // the backstop for the rest, errors that quote the request above all).
            model: column_text(std::mem::take(&mut self.model), 256),
            endpoint: column_text(std::mem::take(&mut self.endpoint), 256),
            status: i32::from(self.status),
            input_tokens: input,
            output_tokens: output,
            total_tokens: total,
            latency_ms: self.started.elapsed().as_millis() as i64,
            ttfb_ms: self.ttfb.map(|d| d.as_millis() as i64),
            stream: self.stream,
            aborted,
            attempts: self.attempts as i32,
            error: self.error.take().map(|e| column_text(e, 1000)),
            client: self.client.as_ref().map(|c| c.name.to_string()),
            requested_model: self.requested_model.take().map(|m| column_text(m, 256)),
            call_id,
            usage_estimated: usage.estimated,
        };
        self.sink.push(row);
        self.sink.closed();
    }
}

/// What a call that generates text sent as its prompt, for an estimate
/// should the upstream not report it: the body itself (shared, no copy)
/// while it is small, else its estimate, made at once, so that an open
/// stream never holds a large body.
pub enum Prompt {
    Body(Bytes),
    Tokens(Option<u64>),
}

impl Prompt {
    /// Bodies up to this size are kept; larger ones are estimated at once.
    const KEPT: usize = 256 << 10;

    pub fn of(body: &Bytes) -> Self {
        if body.len() <= Self::KEPT {
            Prompt::Body(body.clone())
        } else {
            Prompt::Tokens(Self::estimate(body))
        }
    }

    fn estimate(body: &[u8]) -> Option<u64> {
        use crate::dialects::count_tokens::{prompt_tokens, Pricing};
        prompt_tokens(body, Pricing::Typical)
    }

    /// Its estimated tokens (a walk of the body when it is kept whole).
    pub(super) fn tokens(&self) -> Option<u64> {
        match self {
            Prompt::Body(b) => Self::estimate(b),
            Prompt::Tokens(t) => *t,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.sent {
            if self.error.is_none() {
                self.error = Some("request cancelled before the answer was complete".into());
            }
            self.send(Usage::default(), true);
        }
    }
}

#[derive(Debug)]
pub struct StreamError(pub String);

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamError {}

pub struct TeeBody<S> {
    inner: S,
    meter: UsageMeter,
    pending: Option<Pending>,
    /// When the upstream last sent something (or the body began).
    last: Instant,
    /// Armed only once the body has to wait: an answer that is already
    /// buffered (most JSON answers) never registers a timer, and a stream
    /// re-arms it only when it fires, not on every chunk.
    idle: Option<Pin<Box<actix_rt::time::Sleep>>>,
    idle_timeout: Duration,
    /// Rewrites the upstream's chat stream as Responses events, reading its
    /// usage on the way (the meter is then `None`); `None`: passed as it comes.
    translator: Option<Box<Translator>>,
    /// Renames the model in the answer (an aliased call): `None` for most.
    rename: Option<Box<ModelRename>>,
    /// The translated stream has said its last event.
    ended: bool,
    /// Pieces of translated events not yet passed on (an event that repeats
    /// the request's long texts comes in several, shared).
    queue: std::collections::VecDeque<Bytes>,
}

impl<S> TeeBody<S> {
    pub fn new(inner: S, meter: UsageMeter, pending: Pending, idle_timeout: Duration) -> Self {
        TeeBody {
            inner,
            meter,
            pending: Some(pending),
            last: Instant::now(),
            idle: None,
            idle_timeout,
            translator: None,
            rename: None,
            ended: false,
            queue: Default::default(),
        }
    }

    /// The answer shows the model the caller asked for (see `alias`).
    pub fn rename(&mut self, rename: ModelRename) {
        self.rename = Some(Box::new(rename));
    }

    /// A body whose chat stream reaches the client as Responses events: a
    /// failure after the first byte becomes `response.failed`, not a cut.
    /// The translator reads the usage.
    pub fn translating(inner: S, pending: Pending, idle_timeout: Duration, translator: Translator) -> Self {
        let mut body = TeeBody::new(inner, UsageMeter::None, pending, idle_timeout);
        body.translator = Some(Box::new(translator));
        body
    }

    /// The upstream failed or fell silent: the log row says why; the client
    /// gets the error, or, translated, a last `response.failed` event.
    fn broke(&mut self, msg: String) -> Poll<Option<Result<Bytes, StreamError>>> {
        self.finish(Some(msg.clone()));
        match self.translator.as_mut() {
            None => Poll::Ready(Some(Err(StreamError(msg)))),
            Some(t) => {
                self.ended = true;
                let out = t.abort(&msg);
                Poll::Ready(self.emit(out).map(Ok))
            }
        }
    }

    /// Queues translated pieces: the first to send now, if any.
    fn emit(&mut self, chunks: crate::dialects::responses::Chunks) -> Option<Bytes> {
        self.queue.extend(chunks.0.into_iter().filter(|b| !b.is_empty()));
        self.queue.pop_front()
    }

    fn finish(&mut self, error: Option<String>) {
        if let Some(mut p) = self.pending.take() {
            let aborted = error.is_some();
            if error.is_some() {
                p.error = error;
            }
            let (usage, text) = match &mut self.translator {
                // It reads every chunk anyway: the meter need not read them again.
                Some(t) => (Usage::from_totals(t.usage()), t.text_tokens()),
                None => (self.meter.usage(), self.meter.text_tokens()),
            };
            p.finish_answered(usage, text, aborted);
        }
    }

    /// True once the upstream has been silent for the idle timeout; else
    /// makes sure the timer will wake this body at the silence's deadline.
    fn silent_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = actix_rt::time::Instant::from_std(self.last + self.idle_timeout);
        let timer = self.idle.get_or_insert_with(|| Box::pin(actix_rt::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            // Data came since the timer was set: move it to the new deadline.
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<S, E> Stream for TeeBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(piece) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(piece)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            // The upstream said the prompt's tokens: its body is not needed.
            if let Some(p) = this.pending.as_mut().filter(|p| p.prompt.is_some()) {
                if this.meter.input_seen() || this.translator.as_ref().is_some_and(|t| t.usage_seen()) {
                    p.prompt = None;
                }
            }
            return match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.meter.feed(&chunk);
                    this.last = Instant::now();
                    if let Some(p) = this.pending.as_mut() {
                        if p.ttfb.is_none() {
                            p.ttfb = Some(this.last - p.started);
                        }
                    }
                    match this.translator.as_mut() {
                        None => match this.rename.as_mut() {
                            None => Poll::Ready(Some(Ok(chunk))),
                            Some(r) => {
                                let out = r.feed(&chunk);
                                if out.is_empty() {
                                    // Half a line: held until its end.
                                    continue;
                                }
                                Poll::Ready(Some(Ok(out)))
                            }
                        },
                        Some(t) => {
                            let out = t.feed(&chunk);
                            match this.emit(out) {
                                Some(piece) => Poll::Ready(Some(Ok(piece))),
                                // Half an event: nothing to send yet.
                                None => continue,
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => this.broke(format!("upstream stream failed: {e}")),
                Poll::Ready(None) => match this.translator.as_mut() {
                    None => {
                        this.finish(None);
                        this.ended = true;
                        let rest = this.rename.as_mut().map(|r| r.finish()).unwrap_or_default();
                        Poll::Ready((!rest.is_empty()).then_some(Ok(rest)))
                    }
                    Some(t) => {
                        // A stream that ended unfinished is a failed answer.
                        let (out, error) = t.finish();
                        this.finish(error);
                        this.ended = true;
                        Poll::Ready(this.emit(out).map(Ok))
                    }
                },
                Poll::Pending => {
                    if this.silent_too_long(cx) {
                        return this
                            .broke(format!("upstream sent nothing for {} s", this.idle_timeout.as_secs()));
                    }
                    Poll::Pending
                }
            };
        }
    }
}

impl<S> Drop for TeeBody<S> {
    fn drop(&mut self) {
        if self.pending.is_some() {
            self.finish(Some("client closed the connection before the answer ended".into()));
        }
    }
}
