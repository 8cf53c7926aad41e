//! Logging in and out.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde::Deserialize;

use super::error::AdminError;
use super::page::{page_session, posted_form, see_other};
use super::request::{read_body, LOGIN_BODY_BYTES};
use super::session::{self, client_ip};
use super::views::{csrf_field, layout, page, Chrome};
use crate::credentials::Verified;
use crate::state::AppState;

/// The login form; after a failed attempt, with its error and the username
/// as typed (never the password).
fn login_page(error: Option<&str>, status: StatusCode, open: bool, username: &str) -> HttpResponse {
    let body = layout(
        Chrome { title: "Log in", nav: "", csrf: None, warnings: vec![], notice: None },
        html! {
            form.login method="post" action="/login" {
                h1 { "siliconflow-proxy" }
                p.muted { "Log in to manage the key pool." }
                @if let Some(e) = error { div.banner.error role="alert" { (e) } }
                @if open { div.banner.warn { "API_KEY is not set: the proxy is open." } }
                label for="username" { "Username" }
                @if username.is_empty() {
                    input #username name="username" autocomplete="username" required autofocus;
                } @else {
                    input #username name="username" autocomplete="username" required value=(username);
                }
                label for="password" { "Password" }
                @if username.is_empty() {
                    input #password name="password" type="password" autocomplete="current-password" required;
                } @else {
                    input #password name="password" type="password" autocomplete="current-password" required autofocus;
                }
                button type="submit" { "Log in" }
            }
        },
    );
    page(status, body)
}

pub async fn root(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if session::current(&state, &req).await.is_some() {
        return see_other("/admin");
    }
    login_page(None, StatusCode::OK, state.is_open(), "")
}

#[derive(Deserialize)]
struct LoginForm {
    username: Option<String>,
    password: Option<String>,
}

fn retry_after(mut r: HttpResponse, wait: u64) -> HttpResponse {
    if let Ok(v) = wait.to_string().parse() {
        r.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
    }
    r
}

pub async fn login(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let ip = client_ip(&req, &state);
    // The place in the throttle is taken before anything else, so guesses
    // sent at once cannot all pass a limit counted only after their checks.
    let attempt = match state.login_throttle.begin_shared(&state.db, ip).await {
        Ok(a) => a,
        Err(wait) => {
            let r = login_page(
                Some(&format!("Too many failed logins from your address. Try again in {wait} s.")),
                StatusCode::TOO_MANY_REQUESTS,
                false,
                "",
            );
            return retry_after(r, wait);
        }
    };
    let body = match read_body(payload, LOGIN_BODY_BYTES, state.config.body_read_timeout).await {
        Ok(b) => b,
        Err(e) => return AdminError::from(e).page(),
    };
    let form = serde_urlencoded::from_bytes::<LoginForm>(&body).ok();
    let (user, pass) = match form {
        Some(LoginForm { username: Some(u), password: Some(p) }) => (u, p),
        _ => return login_page(Some("Enter a username and a password."), StatusCode::BAD_REQUEST, false, ""),
    };
    let user_for_log = user.chars().take(64).collect::<String>();
    let typed = user.chars().take(128).collect::<String>();
    let (verified, stored_hash) = state.admin.verify_login(user, pass).await;
    match verified {
        Verified::Yes => attempt.succeed().await,
        Verified::Busy => {
            let r = login_page(
                Some("Too many logins are being checked right now. Try again in a moment."),
                StatusCode::TOO_MANY_REQUESTS,
                false,
                &typed,
            );
            return retry_after(r, 1);
        }
        Verified::No => {
            attempt.fail().await;
            // Never the password; the username only as typed, cut short.
            log::warn!("admin: failed login for {user_for_log:?} from {ip}");
            return login_page(Some("Wrong username or password."), StatusCode::UNAUTHORIZED, false, &typed);
        }
    }
    match session::create(&state, &req, stored_hash).await {
        Ok(None) => login_page(
            Some("The admin password changed while you logged in. Log in with the new one."),
            StatusCode::UNAUTHORIZED,
            false,
            &typed,
        ),
        Ok(Some(cookie)) => {
            log::info!("admin: {user_for_log:?} logged in from {ip}");
            HttpResponse::SeeOther().insert_header(("Location", "/admin")).cookie(cookie).finish()
        }
        Err(e) => {
            log::error!("admin: cannot create a session: {e}");
            login_page(
                Some("The database is unavailable; try again."),
                StatusCode::SERVICE_UNAVAILABLE,
                false,
                &typed,
            )
        }
    }
}

/// `GET /logout`: a page with the button (a GET changes nothing).
pub async fn logout_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = match page_session(&req, &state).await {
        Ok(s) => s,
        Err(e) => return e.page(),
    };
    let body = layout(
        Chrome { title: "Log out", nav: "", csrf: Some(&s.csrf), warnings: vec![], notice: None },
        html! {
            h1 { "Log out?" }
            form method="post" action="/logout" { (csrf_field(&s.csrf)) button type="submit" { "Log out" } }
            p.muted { "Or end every admin session, in every browser and on every instance (a session you think someone else holds):" }
            form method="post" action="/logout_everywhere" {
                (csrf_field(&s.csrf)) button.danger type="submit" { "Log out everywhere" }
            }
        },
    );
    page(StatusCode::OK, body)
}

/// `POST /logout` with the session's CSRF token: ends the session for good.
pub async fn logout(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    if let Err(e) = posted_form(&req, payload, &state).await {
        return e.page();
    }
    let cookie = session::destroy(&state, &req).await;
    HttpResponse::SeeOther().insert_header(("Location", "/")).cookie(cookie).finish()
}

/// `POST /logout_everywhere` with the session's CSRF token: ends every
/// admin session (every browser, every instance), this one included.
pub async fn logout_everywhere(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(e) = posted_form(&req, payload, &state).await {
        return e.page();
    }
    match session::destroy_all(&state, &req).await {
        Ok((cookie, ended)) => {
            log::info!("admin: log out everywhere from {}: {ended} sessions ended", client_ip(&req, &state));
            HttpResponse::SeeOther().insert_header(("Location", "/")).cookie(cookie).finish()
        }
        Err(e) => AdminError::from(e).page(),
    }
}
