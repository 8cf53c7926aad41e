//! Client authentication on `/v1/*`: `Authorization: Bearer <key>` or
//! `x-api-key: <key>`, compared in constant time.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use subtle::ConstantTimeEq;

use super::errors::{Dialect, ErrorKind, ProxyError};
use crate::state::AppState;

/// The credential a client presented, if any.
pub fn presented_key(req: &HttpRequest) -> Option<&str> {
    let headers = req.headers();
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v);
        return Some(token.trim());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// True when `presented` equals one of `allowed`. Every allowed key is
/// compared, so timing tells nothing about which one was close.
pub fn key_matches(presented: &str, allowed: &[String]) -> bool {
    let mut ok = subtle::Choice::from(0u8);
    for k in allowed {
        ok |= presented.as_bytes().ct_eq(k.as_bytes());
    }
    ok.into()
}

use std::sync::Arc;

use actix_web::HttpMessage;

use crate::clients::{Client, Refusal};
use crate::net::has_body;

/// The caller, as the auth middleware found it.
#[derive(Clone)]
struct Caller(Arc<Client>);

/// Who is calling: the client the key belongs to (`API_KEY`: the client
/// `env`), or `None` on an open proxy.
pub fn caller(req: &HttpRequest) -> Option<Arc<Client>> {
    req.extensions().get::<Caller>().map(|c| c.0.clone())
}

/// Which client a presented key is: `API_KEY` (compared in constant time),
/// or a client key (a hash looked up in the snapshot). `Ok(None)`: the proxy
/// is open (no `API_KEY`, no client key exists).
fn identify(req: &HttpRequest, state: &AppState) -> Result<Option<Arc<Client>>, ProxyError> {
    let allowed = state.config.client_api_keys.as_slice();
    let clients = state.clients.snapshot();
    if allowed.is_empty() && clients.is_empty() {
        return Ok(None);
    }
    let Some(presented) = presented_key(req) else {
        return Err(ProxyError::new(
            ErrorKind::Authentication,
            "Missing API key: send Authorization: Bearer <key> or x-api-key: <key>",
        ));
    };
    if !allowed.is_empty() && key_matches(presented, allowed) {
        return Ok(Some(state.clients.env.clone()));
    }
    drop(clients);
    let Some(client) = state.clients.find(presented) else {
        return Err(ProxyError::new(ErrorKind::Authentication, "Invalid API key"));
    };
    match client.usable(crate::db::now_ms()) {
        Ok(()) => Ok(Some(client)),
        Err(r) => Err(refusal(&client, r)),
    }
}

/// A client rule's refusal in the caller's terms: 401, 403, or 429 with
/// `Retry-After`.
fn refusal(client: &Client, r: Refusal) -> ProxyError {
    match r {
        Refusal::Unauthorized(why) => {
            ProxyError::new(ErrorKind::Authentication, format!("Invalid API key: {why}"))
        }
        Refusal::Model(message) => {
            // Once a minute per client, and without its list: a caller
            // asking again and again must not fill the log.
            if let Some(unsaid) = client.log_model_refusal(crate::db::now_ms()) {
                let since = if unsaid > 0 {
                    format!(" ({unsaid} more since the last such line)")
                } else {
                    String::new()
                };
                log::info!("client {:?}: a call for a model off its list was refused{since}", &*client.name);
            }
            ProxyError::new(ErrorKind::Forbidden, message)
        }
        Refusal::Limit { message, retry_after_secs } => {
            log::debug!("client {:?} refused: {message}", &*client.name);
            let mut e = ProxyError::new(ErrorKind::RateLimited, message);
            e.retry_after_secs = Some(retry_after_secs);
            e
        }
        Refusal::Share(message) => refusal(client, Refusal::Limit { message, retry_after_secs: 1 }),
    }
}

pub async fn require_client_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // A reference count, not a copy of the key list, per request.
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    match identify(req.request(), &state) {
        Ok(Some(client)) => {
            req.extensions_mut().insert(Caller(client));
        }
        Ok(None) => {}
        Err(e) => {
            state.metrics.refused(crate::metrics::Refused::Unauthorized);
            let dialect = Dialect::for_path(req.path());
            let mut resp = e.response(dialect);
            if has_body(req.request()) {
                // Its body will not be read: close rather than drain it for a stranger.
                resp.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
            }
            return Ok(req.into_response(resp));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// How long a call waits for a lease round when this instance's share of
/// its client's limit is spent (several instances).
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One of a client's admissions (`try_once`), asked again after lease
/// rounds while it finds only this instance's share of a limit spent (not
/// the limit: a round, at once here and within a second on the others, may
/// bring more), for at most `LEASE_WAIT`; a refusal in the caller's terms.
async fn waiting_for_leases<T>(
    client: &Arc<Client>,
    mut try_once: impl FnMut() -> Result<T, Refusal>,
) -> Result<T, ProxyError> {
    let deadline = std::time::Instant::now() + LEASE_WAIT;
    loop {
        match try_once() {
            Err(Refusal::Share(m)) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match (&client.leases, left.is_zero()) {
                    (Some(leases), false) => leases.next_round(left).await,
                    _ => return Err(refusal(client, Refusal::Share(m))),
                }
            }
            other => return other.map_err(|r| refusal(client, r)),
        }
    }
}

/// The caller's own rules for one call naming `model` (empty: none): its
/// model list (403), then its daily quotas and rate (429 with Retry-After).
/// An admitted call is counted; answers the tokens it reserved.
pub async fn admit(
    client: Option<&Arc<Client>>,
    model: &str,
    tz: &chrono::FixedOffset,
    reserve: &dyn Fn() -> crate::clients::Reservation,
    weight: u64,
) -> Result<u64, ProxyError> {
    let Some(client) = client else { return Ok(0) };
    waiting_for_leases(client, || client.admit_weighted(model, crate::db::now_ms(), tz, reserve, weight))
        .await
}

/// The caller's rules for a call that costs nothing upstream
/// (`count_tokens`): its model list (403) and rate (429), not its daily
/// quotas, and nothing is counted against them.
pub async fn admit_unmetered(client: Option<&Arc<Client>>, model: &str) -> Result<(), ProxyError> {
    let Some(client) = client else { return Ok(()) };
    waiting_for_leases(client, || client.admit_unmetered(model, crate::db::now_ms())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_exact_keys() {
        let allowed = vec!["alpha".to_string(), "beta".to_string()];
        assert!(key_matches("alpha", &allowed));
        assert!(key_matches("beta", &allowed));
        assert!(!key_matches("alph", &allowed));
        assert!(!key_matches("alphaa", &allowed));
        assert!(!key_matches("", &allowed));
    }
}
