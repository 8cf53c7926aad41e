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

use crate::net::has_body;

pub async fn require_client_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // A reference count, not a copy of the key list, per request.
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let allowed = state.as_ref().map_or(&[][..], |s| s.config.client_api_keys.as_slice());
    if !allowed.is_empty() {
        let ok = presented_key(req.request()).is_some_and(|k| key_matches(k, allowed));
        if !ok {
            let dialect = Dialect::for_path(req.path());
            let missing = presented_key(req.request()).is_none();
            let message = if missing {
                "Missing API key: send Authorization: Bearer <key> or x-api-key: <key>"
            } else {
                "Invalid API key"
            };
            let mut resp = ProxyError::new(ErrorKind::Authentication, message).response(dialect);
            if has_body(req.request()) {
                // Its body will not be read: close rather than drain it for a stranger.
                resp.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
            }
            return Ok(req.into_response(resp));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
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
