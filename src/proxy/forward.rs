//! Forwarding one client request to the upstream with a pool key, failing
//! over to another key when the first one is dead, broke or rate-limited.

use std::borrow::Cow;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;

use super::errors::{snippet, Dialect, ErrorKind, ProxyError};
use super::failover::{classify, may_fail_over, Verdict};
use super::headers::{downstream_headers, upstream_headers};
use super::record::{Pending, TeeBody};
use super::usage::{Usage, UsageMeter};
use crate::db::now_ms;
use crate::pool::actor::{KeyEvent, KeyEventKind};
use crate::pool::cooldown::Hint;
use crate::pool::{KeyState, NoKey};
use crate::state::{AppState, Upstream};

/// How a route is forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub upstream_path: &'static str,
    pub dialect: Dialect,
    /// A JSON body whose `model` is required.
    pub json_model: bool,
}

/// The two fields the proxy needs from a JSON body. Deserialising into this
/// checks the whole body's syntax but allocates nothing for the rest.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
}

/// Reads the request body, up to `limit` bytes.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, ProxyError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ProxyError::bad_request(format!("could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ProxyError::new(
                ErrorKind::TooLarge,
                format!("request body is larger than the limit of {limit} bytes (MAX_BODY_BYTES)"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
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

pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
    route: Route,
) -> HttpResponse {
    let mut pending = Pending::new(state.log_writer.clone(), req.path());
    let dialect = route.dialect;
    let body = match read_body(payload, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return reject(pending, e, dialect),
    };
    let mut model = String::new();
    if route.json_model {
        match serde_json::from_slice::<Probe>(&body) {
            Ok(probe) => {
                pending.stream = probe.stream.unwrap_or(false);
                match probe.model {
                    Some(m) if !m.trim().is_empty() => model = m.into_owned(),
                    _ => return reject(pending, ProxyError::bad_request("`model` is required"), dialect),
                }
            }
            Err(e) if body.is_empty() => {
                let _ = e;
                return reject(
                    pending,
                    ProxyError::bad_request("the request body must be a JSON object"),
                    dialect,
                );
            }
            Err(e) if e.is_data() => {
                return reject(
                    pending,
                    ProxyError::bad_request(format!("invalid request body: {e}")),
                    dialect,
                )
            }
            Err(e) => {
                return reject(
                    pending,
                    ProxyError::bad_request(format!("the request body is not valid JSON: {e}")),
                    dialect,
                )
            }
        }
    }
    pending.model = model.clone();

    let query = req.query_string();
    let max_attempts = state.config.max_attempts;
    let mut tried: Vec<i64> = Vec::with_capacity(max_attempts as usize);
    let mut failure: Option<Failure> = None;

    while pending.attempts < max_attempts {
        let now = now_ms();
        let key = match state.pool.pick(&model, &tried, now) {
            Ok(k) => k,
            Err(why) => {
                if failure.is_none() {
                    return reject(pending, no_key_error(&why, now), dialect);
                }
                break;
            }
        };
        tried.push(key.id);
        pending.attempts += 1;
        pending.key = Some(key.clone());

        let url = if query.is_empty() {
            format!("{}{}", key.base_url, route.upstream_path)
        } else {
            format!("{}{}?{}", key.base_url, route.upstream_path, query)
        };
        let mut up = upstream.client.request(req.method().clone(), url);
        for (name, value) in upstream_headers(req.headers()) {
            up = up.append_header((name.clone(), value.clone()));
        }
        up = up.insert_header(("Authorization", format!("Bearer {}", key.secret)));
        let sent = if req.method() == Method::GET || req.method() == Method::HEAD {
            up.send().await
        } else {
            up.send_body(body.clone()).await
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("upstream unreachable: {e}");
                log::warn!("attempt {} with key {} failed: {reason}", pending.attempts, key.masked);
                state
                    .pool_actor
                    .do_send(KeyEvent { key_id: key.id, kind: KeyEventKind::Error(reason.clone()) });
                failure = Some(Failure::Connect(reason));
                continue;
            }
        };
        let status = resp.status();
        let code = status.as_u16();
        let retryable = may_fail_over(code);
        if !retryable {
            return stream_back(resp, pending, &state);
        }
        // Error answers are small: read them to classify, and to hand back whole
        // if this was the last attempt.
        let err_body = resp.body().limit(1 << 20).await.unwrap_or_default();
        let reason = format!("{code}: {}", snippet(&err_body));
        let now = now_ms();
        let (kind, fail) = match classify(code, &err_body) {
            Verdict::KeyInvalid => {
                key.set_state(KeyState::Invalid);
                (
                    KeyEventKind::Invalid(reason.clone()),
                    Failure::KeyProblem(format!("key {} is invalid ({reason})", key.masked)),
                )
            }
            Verdict::KeyExhausted => {
                key.set_state(KeyState::Exhausted);
                key.set_balance(Some(0.0));
                (
                    KeyEventKind::Exhausted(reason.clone()),
                    Failure::KeyProblem(format!("key {} has no balance ({reason})", key.masked)),
                )
            }
            Verdict::RateLimited => {
                let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok());
                let hint = Hint::from_response(retry_after, &err_body);
                let cooldown = key.account.apply_rate_limit(&model, now, &state.pool.cooldown_policy, &hint);
                (
                    KeyEventKind::RateLimited { cooldown, reason: reason.clone() },
                    Failure::Upstream { status, headers: resp.headers().clone(), body: err_body },
                )
            }
            Verdict::Transient => (
                KeyEventKind::Error(reason.clone()),
                Failure::Upstream { status, headers: resp.headers().clone(), body: err_body },
            ),
        };
        log::warn!("attempt {} with key {} failed: {reason}", pending.attempts, key.masked);
        state.pool_actor.do_send(KeyEvent { key_id: key.id, kind });
        failure = Some(fail);
    }

    match failure {
        Some(Failure::Upstream { status, headers, body }) => {
            pending.status = status.as_u16();
            pending.error = Some(format!("{}: {}", status.as_u16(), snippet(&body)));
            pending.finish(Usage::default(), false);
            let mut builder = HttpResponse::build(status);
            copy_headers(&mut builder, &headers);
            builder.body(body)
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

fn no_key_error(why: &NoKey, now: i64) -> ProxyError {
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
fn reject(mut pending: Pending, e: ProxyError, dialect: Dialect) -> HttpResponse {
    pending.status = e.status().as_u16();
    pending.error = Some(e.message.clone());
    pending.finish(Usage::default(), false);
    e.response(dialect)
}

fn copy_headers(builder: &mut HttpResponseBuilder, headers: &awc::http::header::HeaderMap) {
    for (name, value) in downstream_headers(headers) {
        builder.append_header((name.clone(), value.clone()));
    }
}

/// Streams the upstream answer back as it arrives, reading usage on the way.
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
    if !resp.status().is_success() {
        pending.error = Some(format!("upstream answered {}", resp.status().as_u16()));
    }
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut builder = HttpResponse::build(resp.status());
    copy_headers(&mut builder, resp.headers());
    let idle = state.config.stream_idle_timeout;
    let tee = TeeBody::new(resp, UsageMeter::for_content_type(&content_type), pending, idle);
    match length {
        Some(len) => builder.body(SizedStream::new(len, tee)),
        None => builder.body(BodyStream::new(tee)),
    }
}
