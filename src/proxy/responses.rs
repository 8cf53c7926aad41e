//! `POST /v1/responses`: OpenAI's Responses API (Codex's only API), served
//! on SiliconFlow's chat completions. The request is translated before the
//! pool is asked (a refused field costs no upstream call), then dispatched as
//! a chat call with the same client rules, failover and log row as chat
//! (endpoint `/v1/responses`); the answer is rewritten on its way back.

use actix_web::body::BodyStream;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::errors::{Dialect, ErrorKind, ProxyError};
use super::forward::{
    check_model, copy_headers, dispatch, read_body, reject, Answer, OutBody, Outgoing, Target,
};
use super::record::{Pending, TeeBody};
use super::usage::Usage;
use crate::dialects::responses::{translate, Context, Translator};
use crate::state::{AppState, Upstream};

/// The largest plain chat answer read whole to be rewritten.
const MAX_ANSWER_BYTES: usize = 32 << 20;

pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    let pending = Pending::new(&state, &req);
    let body = match read_body(payload, state.config.max_body_bytes, state.config.body_read_timeout).await {
        Ok(b) => b,
        Err(e) => return reject(pending, e, Dialect::OpenAi),
    };
    let translated = match translate(&body, &response_seed(), crate::db::now_ms() / 1000) {
        Ok(t) => t,
        Err(e) => return reject(pending, ProxyError::bad_request(e.message), Dialect::OpenAi),
    };
    if let Err(e) = check_model(&translated.model) {
        return reject(pending, e, Dialect::OpenAi);
    }
    let out = Outgoing {
        path: "/v1/chat/completions".to_string(),
        body: OutBody::Bytes(Bytes::from(translated.body)),
        model: translated.model,
        stream: translated.stream,
        target: Target::Pool,
        creates: None,
        dialect: Dialect::OpenAi,
        answer: Answer::Responses(Box::new(translated.context)),
    };
    dispatch(&req, out, pending, &state, &upstream).await
}

/// What names a response and its items: a random prefix drawn once per
/// process (instances never share one) and a counter, so no two responses
/// share an id and none costs a draw from the random generator.
fn response_seed() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(rand::random::<u64>);
    format!("{prefix:016x}{:08x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `GET`/`DELETE /v1/responses/{id}` and its sub-routes: nothing is stored.
pub async fn not_stored(req: HttpRequest) -> HttpResponse {
    let id = req.match_info().get("id").unwrap_or("");
    ProxyError::new(
        ErrorKind::NotFound,
        format!(
            "No response found with id '{id}': this proxy stores no responses (it answers `store: false`)"
        ),
    )
    .response(Dialect::OpenAi)
}

/// A successful chat answer, rewritten: a stream as Responses events as they
/// come; a plain answer (or a stream the upstream sent in one piece) read
/// whole and answered as a response object or its event sequence.
pub async fn answer<S>(
    mut resp: awc::ClientResponse<S>,
    mut pending: Pending,
    state: &AppState,
    ctx: Context,
    stream: bool,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + 'static,
{
    pending.status = resp.status().as_u16();
    let sse = resp.headers().get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().get(..17).is_some_and(|t| t.eq_ignore_ascii_case(b"text/event-stream"))
    });
    let mut builder = HttpResponse::build(resp.status());
    copy_headers(&mut builder, resp.headers());
    if stream {
        pending.stream = true;
        builder.insert_header((CONTENT_TYPE, "text/event-stream")).insert_header((CACHE_CONTROL, "no-cache"));
    } else {
        builder.insert_header((CONTENT_TYPE, "application/json"));
    }
    let mut translator = Translator::new(ctx, stream);
    if stream && sse {
        let idle = state.config.stream_idle_timeout;
        return builder.body(BodyStream::new(TeeBody::translating(resp, pending, idle, translator)));
    }
    let body = match resp.body().limit(MAX_ANSWER_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            let e = ProxyError::new(
                ErrorKind::BadGateway,
                format!("the upstream's answer could not be read: {e}"),
            );
            return reject(pending, e, Dialect::OpenAi);
        }
    };
    pending.ttfb = Some(pending.started.elapsed());
    let mut events = Vec::new();
    if sse {
        events.extend_from_slice(&translator.feed(&body).to_vec());
    } else if let Err(e) = translator.completion(&body) {
        return reject(pending, ProxyError::new(ErrorKind::BadGateway, e), Dialect::OpenAi);
    }
    let (tail, error) = translator.finish();
    pending.error = error;
    let aborted = pending.error.is_some();
    let answer = if stream {
        events.extend_from_slice(&tail.to_vec());
        events
    } else {
        translator.response()
    };
    // The translator read the answer, its usage included.
    let text = translator.text_tokens();
    pending.finish_answered(Usage::from_totals(translator.usage()), text, aborted);
    builder.body(answer)
}
