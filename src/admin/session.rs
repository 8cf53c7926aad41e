//! Admin sessions, CSRF tokens and login throttling.
//!
//! The cookie carries a random 256-bit token; the database keeps only its
//! BLAKE2 hash with the session's CSRF token and expiry. This survives a
//! restart like a signed cookie would, and unlike one, logout deletes the row,
//! so a copied cookie stops working at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use blake2::{Blake2b512, Digest};
use rand::RngCore;
use serde_json::json;

use crate::db::now_ms;
use crate::db::queries::sessions_q;
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

/// Starts a session: returns the cookie to set.
pub async fn create(state: &AppState, req: &HttpRequest) -> Result<Cookie<'static>, String> {
    let token = random_token();
    let (token_hash, csrf) = (hash(&token), random_token());
    let now = now_ms();
    let ttl = state.config.session_ttl;
    let expires = now + ttl.as_millis() as i64;
    crate::db::run(&state.db, move |conn| {
        let _ = sessions_q::delete_expired(conn, now);
        sessions_q::insert(conn, &token_hash, &csrf, now, expires)
    })
    .await?;
    Ok(cookie(state, req, token, ttl))
}

fn cookie(state: &AppState, req: &HttpRequest, value: String, ttl: Duration) -> Cookie<'static> {
    let secure = state.config.cookie_secure || req.connection_info().scheme() == "https";
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
    let csrf =
        crate::db::run(&state.db, move |conn| sessions_q::find(conn, &th, now_ms())).await.ok().flatten()?;
    Some(Session { token_hash, csrf })
}

/// Ends the session for real and returns a cookie that clears the browser's.
pub async fn destroy(state: &AppState, req: &HttpRequest) -> Cookie<'static> {
    if let Some(s) = current(state, req).await {
        let _ = crate::db::run(&state.db, move |conn| sessions_q::delete(conn, &s.token_hash)).await;
    }
    let mut c = cookie(state, req, String::new(), Duration::ZERO);
    c.make_removal();
    c
}

fn mutating(req: &HttpRequest) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
}

/// CSRF token comparison in constant time.
pub fn csrf_ok(expected: &str, given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
}

fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

/// Admin access for the JSON endpoints: a session cookie (with a CSRF token
/// on anything that changes state, in `X-CSRF-Token` or the form's `csrf`
/// field) or HTTP Basic auth (scripts; no cookie, so no CSRF risk).
pub async fn require_admin(
    req: &HttpRequest,
    state: &AppState,
    form_csrf: Option<&str>,
) -> Result<(), HttpResponse> {
    if let Some(session) = current(state, req).await {
        if mutating(req) {
            let header = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok());
            if !csrf_ok(&session.csrf, header.or(form_csrf)) {
                return Err(json_error(StatusCode::FORBIDDEN, "missing or wrong CSRF token"));
            }
        }
        return Ok(());
    }
    if let Some((user, pass)) = super::auth::basic_credentials(req) {
        let ip = client_ip(req);
        if let Err(wait) = state.login_throttle.check(ip) {
            return Err(HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", wait.to_string()))
                .json(json!({"error": "too many failed logins; try again later"})));
        }
        if state.admin.verify_off_thread(user, pass).await {
            return Ok(());
        }
        state.login_throttle.fail(ip);
        log::warn!("admin: wrong credentials (HTTP Basic) from {ip}");
    }
    Err(HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Basic realm=\"siliconflow-proxy admin\""))
        .json(json!({"error": "admin login required: a session from /login, or HTTP Basic auth with ADMIN_USERNAME / ADMIN_PASSWORD"})))
}

pub fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Failed logins per client address in a sliding minute.
pub struct Throttle {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    pub fn new(max: u32) -> Self {
        Throttle { max, window: Duration::from_secs(60), failures: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds to wait)` when this address has used up its attempts.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let Ok(map) = self.failures.lock() else { return Ok(()) };
        match map.get(&ip) {
            Some((n, since)) if *n >= self.max && since.elapsed() < self.window => {
                Err((self.window - since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn fail(&self, ip: IpAddr) {
        let Ok(mut map) = self.failures.lock() else { return };
        if map.len() > 10_000 {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        let e = map.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    pub fn succeed(&self, ip: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_allows_max_failures_a_minute() {
        let t = Throttle::new(3);
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            assert!(t.check(ip).is_ok());
            t.fail(ip);
        }
        let wait = t.check(ip).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(t.check(IpAddr::from([10, 0, 0, 2])).is_ok(), "per address");
        t.succeed(ip);
        assert!(t.check(ip).is_ok());
    }

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
