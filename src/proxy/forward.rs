//! Forwarding one client request to the upstream with a pool key, failing
//! over to another key when the first one is dead, broke or rate-limited.

use std::borrow::Cow;
use std::sync::Arc;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use super::affinity::{self, ResourceKind};
use super::alias::ModelRename;
use super::errors::{snippet, Dialect, ErrorKind, ProxyError};
use super::failover::{self, after_failure, may_fail_over, Failed, LastAnswer};
use super::headers::{content_length, downstream_headers, upstream_headers};
use super::record::{Pending, TeeBody};
use super::usage::{Usage, UsageMeter};
use crate::db::now_ms;
use crate::metrics::Outcome;
use crate::pool::{KeyEvent, KeyEventKind, KeyId, KeyState, NoKey, Picked, PoolKey};
use crate::state::{AppState, Upstream};
use crate::upstream::redact;

/// How the body of a route is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON, read whole (to fail over and to read `model`); `model` required or not.
    Json { model_required: bool },
    /// Any bytes (multipart uploads): small bodies are read whole so that a
    /// failed key can be replaced; large ones are streamed to the upstream.
    /// `names_model`: the upload names the model it runs (not a file to keep).
    Upload { names_model: bool },
    /// GET: no body.
    Empty,
}

/// How a route is forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub upstream_path: &'static str,
    pub dialect: Dialect,
    pub body: BodyKind,
    /// The answer creates an account-bound resource whose id is recorded.
    pub creates: Option<ResourceKind>,
}

impl Route {
    pub const fn json(upstream_path: &'static str) -> Self {
        Route {
            upstream_path,
            dialect: Dialect::OpenAi,
            body: BodyKind::Json { model_required: true },
            creates: None,
        }
    }
}

/// The fields the proxy needs from a JSON body. Deserialising into this
/// checks the whole body's syntax but allocates nothing for the rest.
///
/// A key that names one of these fields in another case (`MODEL`, `Stream`,
/// or with a letter that folds to one, `ſtream`) is refused: the proxy would
/// read `model` and check it against the client's list, while a decoder that
/// matches keys ignoring case (Go's `encoding/json`, the last one it meets)
/// would call the other. A field named twice is refused too.
#[derive(Default, Debug)]
pub struct Probe<'a> {
    pub model: Option<Cow<'a, str>>,
    pub stream: Option<bool>,
    pub voice: Option<Cow<'a, str>>,
    pub request_id: Option<Cow<'a, str>>,
    pub input_file_id: Option<Cow<'a, str>>,
    pub uri: Option<Cow<'a, str>>,
}

/// The keys `Probe` reads, as they are written.
const PROBE_FIELDS: [&str; 6] = ["model", "stream", "voice", "requestId", "input_file_id", "uri"];

/// Whether `key` reads as `field` to a decoder that ignores case: ASCII
/// case, and the two letters Unicode folds to ASCII ones (`ſ` to s, the
/// Kelvin sign to k).
pub fn folds_to(key: &str, field: &str) -> bool {
    if key.is_ascii() {
        return key.eq_ignore_ascii_case(field);
    }
    let fold = |c: char| match c {
        '\u{017F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(field.chars().map(|c| c.to_ascii_lowercase()))
}

impl<'de: 'a, 'a> Deserialize<'de> for Probe<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::dialects::json::Str;
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Probe<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Probe<'a>, M::Error> {
                let mut p = Probe::default();
                let mut seen = [false; PROBE_FIELDS.len()];
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    // Exact first; a key folds to a field only if it is as
                    // long (each folding letter is at most 3 bytes).
                    let found = PROBE_FIELDS.iter().position(|f| *f == &*key).or_else(|| {
                        PROBE_FIELDS.iter().position(|f| key.len() <= 3 * f.len() && folds_to(&key, f))
                    });
                    let Some(i) = found else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    let field = PROBE_FIELDS[i];
                    if *key != *field {
                        return Err(M::Error::custom(format_args!(
                            "the key {:?} reads as `{field}` to decoders that ignore case; write `{field}` as it is spelled",
                            key.chars().take(40).collect::<String>()
                        )));
                    }
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(M::Error::custom(format_args!("`{field}` is given twice")));
                    }
                    let text = |v: Option<Str<'de>>| v.map(|s| s.0);
                    match i {
                        0 => p.model = text(map.next_value()?),
                        1 => p.stream = map.next_value()?,
                        2 => p.voice = text(map.next_value()?),
                        3 => p.request_id = text(map.next_value()?),
                        4 => p.input_file_id = text(map.next_value()?),
                        _ => p.uri = text(map.next_value()?),
                    }
                }
                Ok(p)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

pub use super::body::read_body;
use super::body::{next_within, read_error, too_large, IdleLimited, UploadError};

pub use crate::names::MAX_MODEL_BYTES;

/// A requested model the proxy takes (see `names`): refused before any
/// alias, model list or upstream sees it.
pub fn check_model(model: &str) -> Result<(), ProxyError> {
    crate::names::check_model_name(model).map_err(|why| ProxyError::bad_request(format!("`model` {why}")))
}

/// Parses a JSON body into a probe, with errors in the caller's terms.
pub fn probe(body: &[u8], model_required: bool) -> Result<Probe<'_>, ProxyError> {
    match serde_json::from_slice::<Probe>(body) {
        Ok(p) => {
            if model_required && p.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
                return Err(ProxyError::bad_request("`model` is required"));
            }
            check_model(p.model.as_deref().unwrap_or(""))?;
            Ok(p)
        }
        Err(_) if body.is_empty() => Err(ProxyError::bad_request("the request body must be a JSON object")),
        Err(e) if e.is_data() => Err(ProxyError::bad_request(format!("invalid request body: {e}"))),
        Err(e) => Err(ProxyError::bad_request(format!("the request body is not valid JSON: {e}"))),
    }
}

/// The request body as it goes upstream.
pub enum OutBody {
    Empty,
    Bytes(Bytes),
    /// Streamed once: no failover is possible.
    Stream {
        payload: super::multipart::PartWatch<IdleLimited<web::Payload>>,
        first: Option<Bytes>,
        length: u64,
    },
}

/// Which key serves the request.
pub enum Target {
    /// The pool picks, with failover.
    Pool,
    /// The key of the account that owns a resource: no stranger may serve it.
    Pinned(Arc<PoolKey>),
}

pub struct Outgoing {
    pub path: String,
    pub body: OutBody,
    pub model: String,
    pub stream: bool,
    pub target: Target,
    pub creates: Option<ResourceKind>,
    pub dialect: Dialect,
    pub answer: Answer,
}

/// How the upstream's answer reaches the caller.
pub enum Answer {
    /// As the upstream sent it.
    AsIs,
    /// A chat completion rewritten for the Responses API (errors in
    /// OpenAI's shape, the stream as Responses events).
    Responses(Box<crate::dialects::responses::Context>),
    /// A batch object, passed on as it is; its tokens recorded once when it
    /// reports itself completed (see `resources::batch_answer`).
    Batch(String),
}

/// Why the last attempt failed, for the answer when no attempt is left.
enum Failure {
    /// An upstream answer to hand back as it is (429, 5xx, a 403 for this model).
    Upstream {
        status: StatusCode,
        headers: awc::http::header::HeaderMap,
        body: Bytes,
    },
    /// The key itself is unusable (401, no balance): the client must not see
    /// the upstream's 401 as if its own key were wrong.
    KeyProblem(String),
    Connect(String),
}

/// The handler for plain routes: read, check, dispatch.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
    route: Route,
) -> HttpResponse {
    let pending = Pending::new(&state, &req);
    let dialect = route.dialect;
    let (body, model, stream) = match read_route_body(&req, payload, &state, route.body).await {
        Ok(v) => v,
        Err(e) => return reject(pending, e, dialect),
    };
    let mut pending = pending;
    if route.creates == Some(ResourceKind::File) {
        match check_batch_file(&req, &body, &state).await {
            Ok(lines) => pending.batch_lines = lines,
            Err(e) => return reject(pending, e, dialect),
        }
    }
    let out = Outgoing {
        path: route.upstream_path.to_string(),
        body,
        model,
        stream,
        target: Target::Pool,
        creates: route.creates,
        dialect,
        answer: Answer::AsIs,
    };
    dispatch(&req, out, pending, &state, &upstream).await
}

/// A batch input file from a key held to a model list or a daily request
/// limit: each line's model must be on the list (the file goes upstream as
/// it is, so its lines are checked as they are written), and its lines are
/// counted (a batch counts as its lines). A file too big to be read here is
/// refused. Answers the lines of a batch file it read.
async fn check_batch_file(
    req: &HttpRequest,
    body: &OutBody,
    state: &AppState,
) -> Result<Option<i64>, ProxyError> {
    let Some(client) = super::auth::caller(req).filter(|c| c.models.is_some() || c.daily_requests.is_some())
    else {
        return Ok(None);
    };
    let boundary = super::multipart::boundary_of(req);
    let refuse = |why: String| ProxyError::new(ErrorKind::Forbidden, format!("this key is limited: {why}"));
    match (body, boundary) {
        (OutBody::Bytes(b), Some(boundary)) => {
            match super::multipart::batch_models(b.clone(), &boundary).await {
                None => Ok(None),
                Some(Err(why)) => Err(ProxyError::bad_request(format!("batch input file: {why}"))),
                Some(Ok(lines)) => match lines.iter().find(|(_, m)| !client.allows_model(m)) {
                    Some((line, model)) => Err(refuse(format!(
                        "line {line} of the batch input file names the model {:?}, which it may not use",
                        model.chars().take(120).collect::<String>()
                    ))),
                    None => Ok(Some(lines.len() as i64)),
                },
            }
        }
        (OutBody::Stream { .. }, _) => Err(refuse(format!(
            "a file over {} bytes cannot be checked line by line here",
            state.config.failover_buffer_bytes
        ))),
        _ => Ok(None),
    }
}

/// Reads a route's body as its kind says: (body, model, stream flag).
pub async fn read_route_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    kind: BodyKind,
) -> Result<(OutBody, String, bool), ProxyError> {
    let (limit, idle) = (state.config.max_body_bytes, state.config.body_read_timeout);
    match kind {
        BodyKind::Empty => Ok((OutBody::Empty, String::new(), false)),
        BodyKind::Json { model_required } => {
            let body = read_body(payload, limit, idle).await?;
            let p = probe(&body, model_required)?;
            let model = p.model.as_deref().unwrap_or("").to_string();
            let stream = p.stream.unwrap_or(false);
            Ok((OutBody::Bytes(body), model, stream))
        }
        BodyKind::Upload { names_model } => {
            let boundary = super::multipart::boundary_of(req);
            // A caller held to a model list: its upload must name one model,
            // plainly, where the proxy reads it.
            let held = names_model && super::auth::caller(req).is_some_and(|c| c.models.is_some());
            let refuse = |why: &str| {
                ProxyError::new(ErrorKind::Forbidden, format!("this key may use some models only: {why}"))
            };
            match content_length(req.headers()) {
                Some(len) if len > limit as u64 => Err(too_large(limit)),
                Some(len) if len > state.config.failover_buffer_bytes as u64 => {
                    // Big upload: stream it through, reading its first chunk for `model`.
                    let first = next_within(&mut payload, idle).await?;
                    let field = match (&first, &boundary) {
                        (Some(f), Some(b)) => {
                            super::multipart::text_field(f.clone(), b, "model", false).await
                        }
                        _ => super::multipart::Field::Missing,
                    };
                    let model = match field {
                        super::multipart::Field::Found(m) => m,
                        // What comes after the first chunk goes upstream unread.
                        _ if held => {
                            return Err(refuse(&format!(
                                "an upload over {} bytes must send one `model` field before the file",
                                state.config.failover_buffer_bytes
                            )))
                        }
                        _ => String::new(),
                    };
                    check_model(&model)?;
                    let payload = IdleLimited::new(payload, idle);
                    // What passes after the first chunk is read as it goes:
                    // a second `model` part stops the upload.
                    let payload = match (&first, &boundary) {
                        (Some(f), Some(b)) if held => {
                            super::multipart::PartWatch::watching(payload, b, f, "model", 1)
                        }
                        _ => super::multipart::PartWatch::open(payload),
                    };
                    Ok((OutBody::Stream { payload, first, length: len }, model, false))
                }
                _ => {
                    let body = read_body(payload, limit, idle).await?;
                    let model = match &boundary {
                        Some(b) => match super::multipart::text_field(body.clone(), b, "model", true).await {
                            super::multipart::Field::Found(m) => m,
                            super::multipart::Field::Unclear if held => {
                                return Err(refuse(
                                    "the upload's `model` field is named twice or cannot be read",
                                ))
                            }
                            _ => String::new(),
                        },
                        // Not multipart: a JSON upload (a voice as a data URI).
                        None => serde_json::from_slice::<Probe>(&body)
                            .ok()
                            .and_then(|p| p.model.map(|m| m.into_owned()))
                            .unwrap_or_default(),
                    };
                    if held && model.is_empty() {
                        return Err(refuse("the upload names no `model`"));
                    }
                    check_model(&model)?;
                    Ok((OutBody::Bytes(body), model, false))
                }
            }
        }
    }
}

/// What a client's daily token limit reserves for a call, while it runs:
/// its prompt (`count_tokens`' ceiling pricing of every text of a JSON body:
/// dense text is not undercounted; an upload's bytes are audio or a file,
/// not tokens of this call) and the most it may write: `max_tokens` (or
/// `max_completion_tokens`) times `n`; on the routes that generate text,
/// unbounded without one (it may then use what is left).
fn token_reservation(out: &Outgoing) -> crate::clients::Reservation {
    use crate::dialects::count_tokens::{prompt_tokens, Pricing};
    #[derive(Deserialize)]
    struct Limits {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
        n: Option<u64>,
    }
    let (prompt, limits) = match &out.body {
        OutBody::Bytes(body) if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => (
            // Not JSON after all: a token a byte, the most it can be.
            prompt_tokens(body, Pricing::Ceiling).unwrap_or(body.len() as u64),
            serde_json::from_slice::<Limits>(body).ok(),
        ),
        OutBody::Bytes(_) | OutBody::Stream { .. } | OutBody::Empty => (0, None),
    };
    let generates = generates(&out.path);
    let limits = limits.unwrap_or(Limits { max_tokens: None, max_completion_tokens: None, n: None });
    let answers = limits.n.unwrap_or(1).max(1);
    let output = match limits.max_tokens.or(limits.max_completion_tokens) {
        Some(max) => Some(max.saturating_mul(answers)),
        None if generates => None,
        None => Some(0),
    };
    crate::clients::Reservation { prompt, output }
}

/// Refuses a prompt well past the window the catalog gives its model: its
/// estimate over the window by a fifth (the estimate is within 15% of the
/// real tokenizers). Only a body longer in bytes than the window in tokens
/// is estimated at all (a token is at least a byte of text), so ordinary
/// calls cost nothing here.
fn fits_the_window(
    out: &Outgoing,
    prompt: Option<&super::record::Prompt>,
    catalog: &crate::catalog::Catalog,
) -> Result<(), ProxyError> {
    // (Only a call that generates text has a prompt here.)
    let (Some(prompt), OutBody::Bytes(body)) = (prompt, &out.body) else { return Ok(()) };
    let Some(window) = catalog.get(&out.model).and_then(|e| e.context_window) else { return Ok(()) };
    if (body.len() as u64) <= window {
        return Ok(());
    }
    match prompt.tokens() {
        Some(tokens) if tokens > window + window / 5 => Err(ProxyError::new(
            ErrorKind::ContextLength,
            format!(
                "prompt is too long: {tokens} tokens > {window} maximum (the prompt is about {tokens} tokens, estimated by the proxy before sending, and the context window of {} is {window} tokens)",
                out.model
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether an upstream path generates text (its answer's length is the
/// call's output).
fn generates(path: &str) -> bool {
    matches!(path, "/v1/chat/completions" | "/v1/completions" | "/v1/messages")
}

/// Sends the request, failing over between pool keys when allowed, and
/// streams the answer back.
pub async fn dispatch(
    req: &HttpRequest,
    mut out: Outgoing,
    mut pending: Pending,
    state: &AppState,
    upstream: &Upstream,
) -> HttpResponse {
    let dialect = out.dialect;
    // An alias names the model to call: the caller's rules apply to that one.
    if let Err(e) = super::alias::apply(&mut out, &state.aliases.snapshot(), &mut pending) {
        return reject(pending, e, dialect);
    }
    // A call that generates text keeps its prompt until the upstream counts
    // it (a call cut before then is counted from it); one estimate of it
    // serves the window check too.
    let prompt = match (&out.body, generates(&out.path)) {
        (OutBody::Bytes(b), true) => Some(super::record::Prompt::of(b)),
        _ => None,
    };
    // A prompt the catalog knows cannot fit costs no upstream call.
    if let Err(e) = fits_the_window(&out, prompt.as_ref(), &state.catalog.snapshot()) {
        return reject(pending, e, dialect);
    }
    // The caller's own rules first: a refused call goes nowhere and costs nothing.
    let mut pending =
        match pending.admit(&out.model, dialect, &state.metrics, &|| token_reservation(&out)).await {
            Ok(p) => p,
            Err(answer) => return answer,
        };
    pending.model = out.model.clone();
    pending.stream = out.stream;
    pending.take_off();
    // Cooldowns are per model; calls without one (model lists, batch reads)
    // cool down per endpoint, so they never block every model of an account.
    let model = if out.model.is_empty() { out.path.clone() } else { out.model };
    let mut body = out.body;
    pending.prompt = prompt;
    let single = matches!(body, OutBody::Stream { .. }) || matches!(out.target, Target::Pinned(_));
    let mut max_attempts = if single { 1 } else { state.config.max_attempts };
    let mut tried: Vec<KeyId> = Vec::with_capacity(max_attempts as usize + 1);
    let mut failure: Option<Failure> = None;
    // At most one exhausted key's trial per request, never for a body that
    // cannot be sent twice.
    let mut trial_allowed = !single;

    while pending.attempts < max_attempts {
        let now = now_ms();
        let (key, mut trial) = match &out.target {
            Target::Pinned(k) => (k.clone(), None),
            Target::Pool => match state.pool.pick(&model, &tried, now, trial_allowed) {
                Ok(Picked { key, trial: false }) => (key, None),
                Ok(Picked { key, trial: true }) => {
                    // The trial is the pool's business: it does not use up one of
                    // the client's attempts, and its failure is never the answer.
                    trial_allowed = false;
                    max_attempts += 1;
                    let guard = TrialGuard::new(&key, state);
                    (key, Some(guard))
                }
                Err(why) => {
                    if failure.is_none() {
                        return reject(pending, no_key_error(&why, now), dialect);
                    }
                    break;
                }
            },
        };
        tried.push(key.id);
        if pending.attempts > 0 {
            state.metrics.failover();
        }
        pending.attempts += 1;
        pending.key = Some(key.clone());

        let mut resp = match send(req, &out.path, &key, &mut body, upstream).await {
            Ok(r) => r,
            Err(e) => {
                let failed = after_send_error(e, state.config.response_timeout);
                state.metrics.attempt(failed.outcome());
                match failed {
                    SendFailed::TryAnother(reason) => {
                        log::warn!("attempt {} with key {} failed: {reason}", pending.attempts, key.masked);
                        let kind = KeyEventKind::Error(reason.clone());
                        state.pool_actor.do_send(KeyEvent { key_id: key.id, kind });
                        failure = Some(Failure::Connect(reason));
                        continue;
                    }
                    SendFailed::KeyAnswer(reason) => {
                        log::warn!("attempt {} with key {} failed: {reason}", pending.attempts, key.masked);
                        let kind = KeyEventKind::Error(reason.clone());
                        state.pool_actor.do_send(KeyEvent { key_id: key.id, kind });
                        return reject(pending, ProxyError::new(ErrorKind::BadGateway, reason), dialect);
                    }
                    SendFailed::Answer(e) => return reject(pending, e, dialect),
                }
            }
        };
        let status = resp.status();
        let code = status.as_u16();
        if !may_fail_over(code) {
            state.metrics.attempt(Outcome::of_status(code));
            if let Some(t) = trial.take() {
                if status.is_success() {
                    // Back at once for the next request; the actor persists it.
                    key.revive();
                    t.finish(KeyEventKind::TrialSucceeded);
                }
                // Else (a 400, a 404): the request's fault, nothing learned.
            }
            if let (Some(kind), true) = (out.creates, status.is_success()) {
                return capture_and_answer(resp, kind, pending, state).await;
            }
            if !status.is_success() {
                return error_back(resp, pending, &key, dialect, &out.answer).await;
            }
            return match out.answer {
                Answer::AsIs => stream_back(resp, pending, state),
                Answer::Batch(id) => super::resources::batch_answer(resp, pending, state, id).await,
                Answer::Responses(ctx) => {
                    super::responses::answer(resp, pending, state, *ctx, out.stream).await
                }
            };
        }
        // Error answers are small: read them to classify, and to hand back whole
        // if this was the last attempt.
        let err_body = redact(resp.body().limit(1 << 20).await.unwrap_or_default(), &key.secret, &key.masked);
        let reason = format!("{code}: {}", snippet(&err_body));
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok());
        state.metrics.attempt(failover::outcome(code, &err_body));
        let decided = after_failure(code, &err_body, retry_after, trial.is_some());
        let kind = carry_out(&decided, &key, &mut trial, &model, &reason, state);
        let fail = match decided.answer {
            LastAnswer::Upstream => {
                Failure::Upstream { status, headers: resp.headers().clone(), body: err_body }
            }
            LastAnswer::NoUsableKey => Failure::KeyProblem(match decided.key_state {
                Some(KeyState::Exhausted) => format!("key {} has no balance ({reason})", key.masked),
                _ => format!("key {} is invalid ({reason})", key.masked),
            }),
        };
        log::warn!("attempt {} with key {} failed: {reason}", pending.attempts, key.masked);
        if let Some(kind) = kind {
            state.pool_actor.do_send(KeyEvent { key_id: key.id, kind });
        }
        // An unfinished trial (a 401, a 429, a 5xx) taught nothing about funds:
        // its guard, dropped here, has it offered again soon.
        drop(trial);
        failure = Some(fail);
    }

    match failure {
        Some(Failure::Upstream { status, headers, body }) => {
            pass_error(pending, status, &headers, body, &out.answer, dialect)
        }
        Some(Failure::KeyProblem(reason)) => {
            let e = ProxyError::new(
                ErrorKind::Unavailable,
                format!("No usable API key could serve this request; last failure: {reason}"),
            );
            reject(pending, e, dialect)
        }
        Some(Failure::Connect(reason)) => {
            reject(pending, ProxyError::new(ErrorKind::BadGateway, reason), dialect)
        }
        None => reject(pending, ProxyError::new(ErrorKind::Unavailable, NoKey::AllTried.message()), dialect),
    }
}

/// Sends one attempt with `key`: the client's method, path, query and
/// headers (minus its own credentials), the key's bearer, and the body (kept
/// for another attempt when it is in memory).
async fn send(
    req: &HttpRequest,
    path: &str,
    key: &PoolKey,
    body: &mut OutBody,
    upstream: &Upstream,
) -> Result<
    awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, actix_web::error::PayloadError>>>,
    awc::error::SendRequestError,
> {
    let query = req.query_string();
    let url = if query.is_empty() {
        format!("{}{}", key.base_url, path)
    } else {
        format!("{}{}?{}", key.base_url, path, query)
    };
    let mut up = upstream.client.request(req.method().clone(), url);
    for (name, value) in upstream_headers(req.headers()) {
        up = up.append_header((name.clone(), value.clone()));
    }
    up = up.insert_header((actix_web::http::header::AUTHORIZATION, key.bearer.clone()));
    match std::mem::replace(body, OutBody::Empty) {
        OutBody::Empty if req.method() == Method::GET || req.method() == Method::HEAD => up.send().await,
        OutBody::Empty => up.send_body(Bytes::new()).await,
        OutBody::Bytes(b) => {
            let r = up.send_body(b.clone()).await;
            *body = OutBody::Bytes(b);
            r
        }
        OutBody::Stream { payload, first, length } => {
            let head = futures_util::stream::iter(first.map(Ok::<Bytes, UploadError>));
            up.send_body(SizedStream::new(length, head.chain(payload))).await
        }
    }
}

/// What a failed send means for the request.
enum SendFailed {
    /// Nothing of it can have reached the upstream: another key may try.
    TryAnother(String),
    /// The connection failed after the request was (perhaps) written: the
    /// model may be running it, so no other key tries it again; the key's
    /// record notes the error.
    KeyAnswer(String),
    /// The answer to give, the key not at fault.
    Answer(ProxyError),
}

impl SendFailed {
    fn outcome(&self) -> Outcome {
        match self {
            SendFailed::TryAnother(_) | SendFailed::KeyAnswer(_) => Outcome::ConnectError,
            SendFailed::Answer(e) if e.kind == ErrorKind::Timeout => Outcome::Timeout,
            // The client's upload failed on the way.
            SendFailed::Answer(_) => Outcome::ClientError,
        }
    }
}

fn after_send_error(e: awc::error::SendRequestError, timeout: std::time::Duration) -> SendFailed {
    use awc::error::{ConnectError, SendRequestError};
    match e {
        // The upstream may be working on it: trying another key could run
        // (and bill) the same request twice.
        SendRequestError::Timeout => SendFailed::Answer(ProxyError::new(
            ErrorKind::Timeout,
            format!("the upstream sent no answer within {} s (UPSTREAM_TIMEOUT)", timeout.as_secs()),
        )),
        // No connection, refused, TLS failed. (awc says "disconnected" when
        // the connection closed after the request was written: not retried.)
        SendRequestError::Connect(e) if !matches!(e, ConnectError::Disconnected) => {
            SendFailed::TryAnother(format!("upstream unreachable: {e}"))
        }
        // The request body (the client's upload) failed on the way.
        SendRequestError::Body(e) => SendFailed::Answer(body_send_error(&*e)),
        e => SendFailed::KeyAnswer(format!("the upstream connection failed after the request was sent: {e}")),
    }
}

/// Carries out what `after_failure` decided: the key's new state (at once,
/// for the next pick), its account's other keys, a trial's end, the
/// cooldown. Returns what the pool actor is to record for the key.
fn carry_out(
    decided: &Failed,
    key: &Arc<PoolKey>,
    trial: &mut Option<TrialGuard>,
    model: &str,
    reason: &str,
    state: &AppState,
) -> Option<KeyEventKind> {
    let mut kind = Some(KeyEventKind::Error(reason.to_string()));
    match decided.key_state {
        Some(KeyState::Invalid) => {
            // (A trial key is exhausted, not active: it is moved from there.)
            key.demote(KeyState::Invalid);
            key.transition(KeyState::Exhausted, KeyState::Invalid);
            kind = Some(KeyEventKind::Invalid(reason.to_string()));
        }
        Some(KeyState::Exhausted) => {
            key.demote(KeyState::Exhausted);
            kind = Some(KeyEventKind::Exhausted(reason.to_string()));
        }
        _ => {}
    }
    if decided.account_exhausted {
        for k in same_account(state, key) {
            if k.id != key.id && k.demote(KeyState::Exhausted) {
                let kind = KeyEventKind::Exhausted(reason.to_string());
                state.pool_actor.do_send(KeyEvent { key_id: k.id, kind });
            }
        }
    }
    if decided.trial_failed {
        if let Some(t) = trial.take() {
            t.finish(KeyEventKind::TrialFailed(reason.to_string()));
            kind = None;
        }
    }
    if let Some(hint) = &decided.cooldown {
        let cooldown = key.account.apply_rate_limit(model, now_ms(), &state.pool.cooldown_policy, hint);
        kind = Some(KeyEventKind::RateLimited { cooldown, reason: reason.to_string() });
    }
    kind
}

/// An exhausted key's trial call in flight. Ends with what it showed; if it
/// is dropped unfinished (the upstream unreachable, the client gone, a 5xx)
/// the trial told nothing, and the key is offered again soon.
struct TrialGuard {
    key_id: KeyId,
    actor: actix::Addr<crate::pool::PoolActor>,
    done: bool,
}

impl TrialGuard {
    fn new(key: &PoolKey, state: &AppState) -> Self {
        log::info!("trying exhausted key {} with one call", key.masked);
        TrialGuard { key_id: key.id, actor: state.pool_actor.clone(), done: false }
    }

    fn finish(mut self, kind: KeyEventKind) {
        self.done = true;
        self.actor.do_send(KeyEvent { key_id: self.key_id, kind });
    }
}

impl Drop for TrialGuard {
    fn drop(&mut self) {
        if !self.done {
            self.actor.do_send(KeyEvent { key_id: self.key_id, kind: KeyEventKind::TrialInconclusive });
        }
    }
}

/// The other keys of a key's account (none for keys with no known account).
fn same_account(state: &AppState, key: &PoolKey) -> Vec<Arc<PoolKey>> {
    if crate::db::models::is_own_account(&key.account.id) {
        return Vec::new();
    }
    state
        .pool
        .snapshot()
        .keys
        .iter()
        .filter(|k| k.id != key.id && k.account.id == key.account.id)
        .cloned()
        .collect()
}

pub fn no_key_error(why: &NoKey, now: i64) -> ProxyError {
    let mut e = match why {
        NoKey::AllCooling { .. } => ProxyError::new(ErrorKind::RateLimited, why.message()),
        _ => ProxyError::new(ErrorKind::Unavailable, why.message()),
    };
    if let NoKey::AllCooling { until_ms } = why {
        e.retry_after_secs = Some(((until_ms - now).max(0) as u64).div_ceil(1000).max(1));
    }
    e
}

/// An answer the proxy makes itself, logged like any other.
pub fn reject(mut pending: Pending, e: ProxyError, dialect: Dialect) -> HttpResponse {
    pending.status = e.status().as_u16();
    pending.error = Some(e.message.clone());
    pending.finish(Usage::default(), false);
    e.response(dialect)
}

pub fn copy_headers(builder: &mut HttpResponseBuilder, headers: &awc::http::header::HeaderMap) {
    for (name, value) in downstream_headers(headers) {
        builder.append_header((name.clone(), value.clone()));
    }
}

/// For calls that create an account-bound resource: read the (small) answer,
/// record which key owns the new id before the client can name it, answer.
async fn capture_and_answer<S>(
    mut resp: awc::ClientResponse<S>,
    kind: ResourceKind,
    pending: Pending,
    state: &AppState,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + 'static,
{
    let (body, mut pending) = match read_small_answer(&mut resp, pending, 16 << 20).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    if let (Some(id), Some(key)) = (affinity::created_id(kind, &body), pending.key.clone()) {
        if let Err(e) =
            affinity::record(state, kind, &id, &key, pending.client.as_deref(), pending.batch_lines).await
        {
            log::error!("could not record the owner of {} {id}: {e}", kind.as_str());
            pending.error = Some(format!("owner of {} not recorded: {e}", kind.as_str()));
        }
    }
    let mut meter = UsageMeter::for_content_type("application/json");
    meter.feed(&body);
    answer_read(&resp, pending, meter.usage(), body)
}

/// A small successful answer read whole (at most `limit` bytes), for a
/// route that looks into it before answering; an answer that cannot be read
/// ends the call (logged aborted) with a 502.
pub(super) async fn read_small_answer<S>(
    resp: &mut awc::ClientResponse<S>,
    mut pending: Pending,
    limit: usize,
) -> Result<(Bytes, Pending), HttpResponse>
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + 'static,
{
    pending.status = resp.status().as_u16();
    match resp.body().limit(limit).await {
        Ok(b) => Ok((b, pending)),
        Err(e) => {
            pending.error = Some(format!("upstream answer unreadable: {e}"));
            pending.finish(Usage::default(), true);
            Err(ProxyError::new(ErrorKind::BadGateway, format!("upstream answer unreadable: {e}"))
                .response(Dialect::OpenAi))
        }
    }
}

/// Answers with a body read by `read_small_answer`, as the upstream sent it,
/// and logs the call with `usage`.
pub(super) fn answer_read<S>(
    resp: &awc::ClientResponse<S>,
    pending: Pending,
    usage: Usage,
    body: Bytes,
) -> HttpResponse {
    let mut builder = HttpResponse::build(resp.status());
    copy_headers(&mut builder, resp.headers());
    pending.finish(usage, false);
    builder.body(body)
}

/// An upstream error answer passed to the client (a 400, a 404, a 500...):
/// read whole (errors are small), with any pool key it quotes masked.
async fn error_back<S>(
    mut resp: awc::ClientResponse<S>,
    pending: Pending,
    key: &PoolKey,
    dialect: Dialect,
    answer: &Answer,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + 'static,
{
    let status = resp.status();
    let body = match resp.body().limit(4 << 20).await {
        Ok(b) => redact(b, &key.secret, &key.masked),
        Err(e) => {
            let e = ProxyError::new(
                ErrorKind::BadGateway,
                format!("the upstream answered {} but its body could not be read: {e}", status.as_u16()),
            );
            return reject(pending, e, dialect);
        }
    };
    pass_error(pending, status, resp.headers(), body, answer, dialect)
}

/// Hands an upstream error answer (its key masked already) to the client as
/// it came (in OpenAI's shape for a translated dialect), and logs it with
/// its status and an excerpt.
fn pass_error(
    mut pending: Pending,
    status: StatusCode,
    headers: &awc::http::header::HeaderMap,
    body: Bytes,
    answer: &Answer,
    dialect: Dialect,
) -> HttpResponse {
    pending.status = status.as_u16();
    pending.error = Some(format!("{}: {}", status.as_u16(), snippet(&body)));
    pending.finish(Usage::default(), false);
    let mut builder = HttpResponse::build(status);
    copy_headers(&mut builder, headers);
    // A prompt past the model's window, in the form each dialect's clients
    // recognise (Codex: the code `context_length_exceeded`; Claude Code:
    // "prompt is too long: N tokens > M maximum").
    let overflow =
        (status == StatusCode::BAD_REQUEST).then(|| crate::dialects::overflow::in_body(&body)).flatten();
    let json = (actix_web::http::header::CONTENT_TYPE, "application/json");
    match (answer, overflow) {
        (Answer::Responses(_), _) => {
            builder.insert_header(json).body(crate::dialects::responses::error_body(status.as_u16(), &body))
        }
        (_, Some(o)) if dialect == Dialect::Anthropic => builder.insert_header(json).body(o.anthropic_body()),
        (_, Some(o)) => builder.insert_header(json).body(o.openai_body()),
        (Answer::AsIs | Answer::Batch(_), None) => builder.body(body),
    }
}

/// The error for a request body that broke while it was streamed upstream.
fn body_send_error(e: &(dyn std::error::Error + 'static)) -> ProxyError {
    match e.downcast_ref::<UploadError>() {
        Some(upload) => upload.to_proxy_error(),
        None => read_error(e),
    }
}

/// Streams a successful upstream answer back as it arrives, reading usage on
/// the way (error answers go through `error_back`).
fn stream_back<S>(resp: awc::ClientResponse<S>, mut pending: Pending, state: &AppState) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + 'static,
{
    pending.status = resp.status().as_u16();
    let content_type =
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if content_type.starts_with("text/event-stream") {
        pending.stream = true;
    }
    let length = content_length(resp.headers());
    let mut builder = HttpResponse::build(resp.status());
    copy_headers(&mut builder, resp.headers());
    let idle = state.config.stream_idle_timeout;
    // An aliased call's answer names the model asked for: its length changes.
    let text = content_type.starts_with("application/json") || content_type.starts_with("text/event-stream");
    let rename = pending.requested_model.as_deref().filter(|_| text).map(ModelRename::new);
    let mut tee = TeeBody::new(resp, UsageMeter::for_content_type(&content_type), pending, idle);
    match (rename, length) {
        (Some(r), _) => {
            tee.rename(r);
            builder.body(BodyStream::new(tee))
        }
        (None, Some(len)) => builder.body(SizedStream::new(len, tee)),
        (None, None) => builder.body(BodyStream::new(tee)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_send_is_retried_only_when_nothing_can_have_reached_the_upstream() {
        use awc::error::{ConnectError, SendRequestError};
        let t = std::time::Duration::from_secs(600);
        let unreachable = SendRequestError::Connect(ConnectError::Timeout);
        assert!(
            matches!(after_send_error(unreachable, t), SendFailed::TryAnother(r) if r.starts_with("upstream unreachable"))
        );
        // Closed after the request was written: the model may be running it.
        let closed = SendRequestError::Connect(ConnectError::Disconnected);
        assert!(matches!(after_send_error(closed, t), SendFailed::KeyAnswer(_)));
        match after_send_error(SendRequestError::Timeout, t) {
            SendFailed::Answer(e) => {
                assert!(
                    matches!(e.kind, ErrorKind::Timeout) && e.message.contains("600 s (UPSTREAM_TIMEOUT)")
                )
            }
            _ => panic!("a timeout is answered, not retried"),
        }
    }

    #[test]
    fn finds_multipart_text_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n\x00\x01\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nFunAudioLLM/SenseVoiceSmall\r\n--XyZ--\r\n";
        let at = super::super::multipart::field_range(body, "model").unwrap();
        assert_eq!(&body[at], b"FunAudioLLM/SenseVoiceSmall");
        assert_eq!(super::super::multipart::field_range(body, "purpose"), None);
    }

    #[test]
    fn probes_report_errors_in_plain_words() {
        assert!(probe(br#"{"model":"m","stream":true}"#, true).unwrap().stream.unwrap());
        assert!(probe(br#"{"messages":[]}"#, true).unwrap_err().message.contains("`model` is required"));
        assert!(probe(br#"{"requestId":"r1"}"#, false).unwrap().request_id.as_deref() == Some("r1"));
        assert!(probe(b"{x", false).unwrap_err().message.contains("not valid JSON"));
        assert!(probe(b"", false).unwrap_err().message.contains("JSON object"));
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_BYTES + 1));
        assert!(probe(long.as_bytes(), true).unwrap_err().message.contains("at most 256 bytes"));
        let fits = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_BYTES));
        assert!(probe(fits.as_bytes(), true).is_ok());
        // Keys a case-blind decoder reads as ours: refused, whichever comes first.
        for body in [
            r#"{"model":"Qwen/Qwen3-8B","MODEL":"deepseek-ai/DeepSeek-R1"}"#,
            r#"{"Model":"deepseek-ai/DeepSeek-R1","model":"Qwen/Qwen3-8B"}"#,
            r#"{"model":"m","\u017Ftream":true}"#,
            r#"{"model":"m","Input_File_Id":"file-x"}"#,
            r#"{"model":"m","REQUESTID":"r"}"#,
        ] {
            let e = probe(body.as_bytes(), false).unwrap_err().message;
            assert!(e.contains("reads as"), "{body}: {e}");
        }
        assert!(probe(br#"{"model":"a","model":"b"}"#, true).unwrap_err().message.contains("twice"));
        // An escaped key is the key it spells; other keys pass untouched.
        let p = probe(br#"{"mod\u0065l":"Qwen/Qwen3-8B","models":1,"modelx":{"MODEL":2}}"#, true).unwrap();
        assert_eq!(p.model.as_deref(), Some("Qwen/Qwen3-8B"));
        assert!(matches!(
            probe(br#"{"model":"Qwen/x","stream":true}"#, true).unwrap().model,
            Some(Cow::Borrowed(_))
        ));
        assert!(probe(br#"{"model":"Qwen/../deepseek-ai/DeepSeek-R1"}"#, true)
            .unwrap_err()
            .message
            .contains("segment"));
    }
}
