//! What every admin request meets before its handler reads a byte of its
//! body: a state change from a browser on another site is refused, and a
//! declared body over the admin limit is refused. Handlers then authenticate
//! from the headers, and only then read the body: bounded, and timed.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::error::AdminError;
use super::session::mutating;
use crate::state::AppState;

/// A login form is two short fields; nobody needs more to log in.
pub const LOGIN_BODY_BYTES: usize = 4096;

/// Whether a request comes from a browser page on another site: by the
/// browser's own `Sec-Fetch-Site` where it sends one, else by an `Origin`
/// that is not this server. Scripts (curl, SDKs) send neither.
pub fn cross_site(req: &HttpRequest, state: &AppState) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site.trim().to_ascii_lowercase().as_str(), "cross-site" | "same-site");
    }
    let Some(origin) = headers.get("origin") else { return false };
    let Ok(origin) = origin.to_str() else { return true };
    // "null" (sandboxed frames, file: pages) is never this server.
    let Some(authority) = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/')) else {
        return true;
    };
    match crate::net::requested_host(req, &state.config.trusted_proxies) {
        Some(host) => !authority.eq_ignore_ascii_case(&host),
        None => true,
    }
}

fn body_limit(path: &str, state: &AppState) -> usize {
    if path == "/login" {
        LOGIN_BODY_BYTES
    } else {
        state.config.admin_body_bytes
    }
}

/// The admin routes' gate (see the module's comment).
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<AppState>>().cloned() {
        if mutating(req.method()) && cross_site(req.request(), &state) {
            log::warn!("admin: refused a cross-site {} {}", req.method(), req.path());
            let resp = AdminError::Forbidden("refused: this request came from a page on another site".into())
                .respond(req.request());
            return Ok(req.into_response(resp));
        }
        let limit = body_limit(req.path(), &state);
        if crate::net::content_length(req.headers()).is_some_and(|len| len > limit as u64) {
            let resp = AdminError::TooLarge(format!(
                "the request body is larger than this route takes ({limit} bytes; ADMIN_BODY_BYTES)"
            ))
            .respond(req.request());
            return Ok(req.into_response(resp));
        }
    }
    let body = crate::net::has_body(req.request());
    let mut res = next.call(req).await?.map_into_boxed_body();
    if body && matches!(res.status().as_u16(), 401 | 403 | 429) {
        // Refused before its body was read: close rather than drain it for a stranger.
        res.response_mut().head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    }
    Ok(res)
}

#[derive(Debug, PartialEq)]
pub enum BodyError {
    TooLarge(usize),
    /// The client stopped sending before the body was complete.
    Timeout(Duration),
    Read(String),
}

impl From<BodyError> for AdminError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(limit) => AdminError::TooLarge(format!(
                "the request body is larger than this route takes ({limit} bytes)"
            )),
            BodyError::Timeout(t) => AdminError::Timeout(format!(
                "the request body did not arrive within {} s (BODY_READ_TIMEOUT)",
                t.as_secs()
            )),
            BodyError::Read(e) => AdminError::BadRequest(format!("could not read the request body: {e}")),
        }
    }
}

/// Reads a whole body of at most `limit` bytes within `deadline`.
pub async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
            if buf.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    actix_rt::time::timeout(deadline, read).await.unwrap_or(Err(BodyError::Timeout(deadline)))
}

/// An admin route's body, read after its caller was authenticated.
pub async fn admin_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Bytes, AdminError> {
    Ok(read_body(payload, body_limit(req.path(), state), state.config.body_read_timeout).await?)
}
