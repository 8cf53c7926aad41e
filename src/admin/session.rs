//! Admin sessions, CSRF tokens and login throttling.
//!
//! The cookie carries a random 256-bit token; the database keeps only its
//! BLAKE2 hash with the session's CSRF token and expiry. This survives a
//! restart like a signed cookie would, and unlike one, logout deletes the row,
//! so a copied cookie stops working at once.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::Method;
use actix_web::HttpRequest;
use base64::Engine;
use blake2::{Blake2b512, Digest};
use rand::RngCore;

use super::error::AdminError;
use crate::credentials::Verified;
use crate::db::queries::sessions;
use crate::db::{now_ms, DbError};
use crate::state::AppState;

pub const COOKIE: &str = "sfp_session";

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(token: &str) -> String {
    let digest = Blake2b512::digest(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..32])
}

#[derive(Debug, Clone)]
pub struct Session {
    token_hash: String,
    pub csrf: String,
}

/// Starts a session: returns the cookie to set. With the stored password,
/// `stored_hash` is the hash the login was checked against: the session is
/// opened only if it is still the stored one (else `None`: `set-password`
/// ran meanwhile, and its end of every session must hold).
pub async fn create(
    state: &AppState,
    req: &HttpRequest,
    stored_hash: Option<String>,
) -> Result<Option<Cookie<'static>>, DbError> {
    let token = random_token();
    let (token_hash, csrf) = (hash(&token), random_token());
    let now = now_ms();
    let ttl = state.config.session_ttl;
    let expires = now + ttl.as_millis() as i64;
    let generation = state.admin.generation().to_string();
    let opened = crate::db::run(&state.db, move |conn| {
        let _ = sessions::delete_expired(conn, now);
        let new = sessions::NewSession {
            token_hash: &token_hash,
            csrf: &csrf,
            generation: &generation,
            now,
            expires,
        };
        match &stored_hash {
            None => sessions::insert(conn, &new).map(|_| true),
            Some(hash) => sessions::insert_while_setting(conn, &new, crate::credentials::STORED_HASH, hash),
        }
    })
    .await?;
    Ok(opened.then(|| cookie(state, req, token, ttl)))
}

fn cookie(state: &AppState, req: &HttpRequest, value: String, ttl: Duration) -> Cookie<'static> {
    // HTTPS as the client sees it: the connection, or a trusted proxy's word.
    let secure = state.config.cookie_secure || crate::net::is_https(req, &state.config.trusted_proxies);
    Cookie::build(COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(actix_web::cookie::time::Duration::seconds(ttl.as_secs().min(i64::MAX as u64) as i64))
        .finish()
}

/// The session a request's cookie names, if it is live.
pub async fn current(state: &AppState, req: &HttpRequest) -> Option<Session> {
    let token = req.cookie(COOKIE)?.value().to_string();
    if token.is_empty() || token.len() > 100 {
        return None;
    }
    let token_hash = hash(&token);
    let th = token_hash.clone();
    let generation = state.admin.generation().to_string();
    let csrf = crate::db::run(&state.db, move |conn| sessions::find(conn, &th, &generation, now_ms()))
        .await
        .ok()
        .flatten()?;
    Some(Session { token_hash, csrf })
}

/// Ends the session for real and returns a cookie that clears the browser's.
pub async fn destroy(state: &AppState, req: &HttpRequest) -> Cookie<'static> {
    if let Some(s) = current(state, req).await {
        let _ = crate::db::run(&state.db, move |conn| sessions::delete(conn, &s.token_hash)).await;
    }
    let mut c = cookie(state, req, String::new(), Duration::ZERO);
    c.make_removal();
    c
}

/// Ends every session ("log out everywhere") and returns a cookie that
/// clears this browser's, with how many sessions ended.
pub async fn destroy_all(state: &AppState, req: &HttpRequest) -> Result<(Cookie<'static>, usize), DbError> {
    let ended = crate::db::run(&state.db, sessions::delete_all).await?;
    let mut c = cookie(state, req, String::new(), Duration::ZERO);
    c.make_removal();
    Ok((c, ended))
}

pub fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// CSRF token comparison in constant time.
pub fn csrf_ok(expected: &str, given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
}

/// Who an admin request comes from, decided from its headers alone (before
/// any body is read): a session cookie, or HTTP Basic credentials (scripts).
pub enum Identity {
    Session(Session),
    Basic,
}

impl Identity {
    /// A session (a browser) must prove each state change with its CSRF
    /// token (`X-CSRF-Token`, or the form's `csrf` field); Basic auth sends
    /// no cookie, and cross-site browser requests are refused before this.
    pub fn check_csrf(&self, req: &HttpRequest, form_csrf: Option<&str>) -> Result<(), AdminError> {
        match self {
            Identity::Session(session) if mutating(req.method()) => {
                let header = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok());
                if csrf_ok(&session.csrf, header.or(form_csrf)) {
                    Ok(())
                } else {
                    Err(AdminError::Forbidden("missing or wrong CSRF token".into()))
                }
            }
            _ => Ok(()),
        }
    }
}

/// Authenticates an admin request from its headers.
pub async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Identity, AdminError> {
    if let Some(session) = current(state, req).await {
        return Ok(Identity::Session(session));
    }
    if let Some((user, pass)) = crate::credentials::basic_credentials(req) {
        let ip = client_ip(req, state);
        // Reserved before the (slow) check: concurrent guesses cannot all slip
        // past a limit that is only counted afterwards.
        let attempt =
            state.login_throttle.begin_shared(&state.db, ip).await.map_err(|wait| AdminError::TooMany {
                message: "too many failed logins; try again later".into(),
                retry_after: wait,
            })?;
        match state.admin.verify_off_thread(user, pass).await {
            Verified::Yes => {
                attempt.succeed().await;
                return Ok(Identity::Basic);
            }
            Verified::Busy => {
                return Err(AdminError::TooMany {
                    message: "too many password checks at once; try again in a moment".into(),
                    retry_after: 1,
                })
            }
            Verified::No => {
                attempt.fail().await;
                log::warn!("admin: wrong credentials (HTTP Basic) from {ip}");
            }
        }
    }
    Err(AdminError::Unauthorized)
}

/// The one extractor of the admin's JSON routes: the caller authenticated
/// (a session, or HTTP Basic), and a session's state change carrying its
/// CSRF token in `X-CSRF-Token`. Settled from the headers, before a byte of
/// the body is read.
pub struct Admin(pub Identity);

/// An admin route that reads a body (a form may carry its CSRF token in it):
/// authenticated only; the caller checks the token once the body is read.
pub struct AdminWithBody(pub Identity);

type Extracting<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, AdminError>>>>;

/// Who asks, from the headers; with `csrf`, a session's change must carry its token.
fn identify(req: &HttpRequest, csrf: bool) -> Extracting<Identity> {
    let req = req.clone();
    Box::pin(async move {
        let state = req
            .app_data::<actix_web::web::Data<AppState>>()
            .cloned()
            .ok_or_else(|| AdminError::Internal("the application state is missing".into()))?;
        let who = authenticate(&req, &state).await?;
        if csrf {
            who.check_csrf(&req, None)?;
        }
        Ok(who)
    })
}

impl actix_web::FromRequest for Admin {
    type Error = AdminError;
    type Future = Extracting<Self>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let who = identify(req, true);
        Box::pin(async move { Ok(Admin(who.await?)) })
    }
}

impl actix_web::FromRequest for AdminWithBody {
    type Error = AdminError;
    type Future = Extracting<Self>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let who = identify(req, false);
        Box::pin(async move { Ok(AdminWithBody(who.await?)) })
    }
}

/// The client's address (a trusted proxy's forwarding headers believed).
pub fn client_ip(req: &HttpRequest, state: &AppState) -> IpAddr {
    crate::net::client_ip(req, &state.config.trusted_proxies, &state.config.trusted_proxy_header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), a);
        assert!(csrf_ok("abc", Some("abc")));
        assert!(!csrf_ok("abc", Some("abd")));
        assert!(!csrf_ok("abc", None));
    }
}
