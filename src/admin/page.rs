//! What every admin page shares: the session (or a redirect to log in), a
//! posted form's CSRF check, redirects, the warnings, a confirmation page.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::request::admin_body;
use super::session::{self, csrf_ok, Session};
use super::views::{csrf_field, layout, link_with, page, Chrome, CSS};
use crate::state::AppState;

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", location)).finish()
}

pub fn with_notice(path: &str, notice: &str) -> String {
    link_with(path, &[], &[("notice", notice.to_string())])
}

pub async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(CSS)
}

/// The session, or a redirect to the login page.
pub async fn page_session(req: &HttpRequest, state: &AppState) -> Result<Session, HttpResponse> {
    session::current(state, req).await.ok_or_else(|| see_other("/"))
}

pub fn forbidden_page() -> HttpResponse {
    let body = layout(
        Chrome { title: "Forbidden", nav: "", csrf: None, warnings: vec![], notice: None },
        html! { div.banner.error { "This form has expired or did not come from this site (CSRF check failed). Go back, reload the page and try again." } p { a href="/admin" { "Back to the dashboard" } } },
    );
    page(StatusCode::FORBIDDEN, body)
}

/// A posted form: the session (from the cookie, before a byte of the body
/// is read), then the body (bounded and timed), then its CSRF token checked.
pub async fn posted_form(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(Session, web::Bytes), HttpResponse> {
    let s = page_session(req, state).await?;
    let body = admin_body(req, payload, state).await?;
    let form = serde_urlencoded::from_bytes::<CsrfForm>(&body).unwrap_or_default();
    check_csrf(&s, form.csrf.as_deref())?;
    Ok((s, body))
}

/// Checks a posted form's CSRF token against the session.
pub fn check_csrf(session: &Session, given: Option<&str>) -> Result<(), HttpResponse> {
    if csrf_ok(&session.csrf, given) {
        Ok(())
    } else {
        Err(forbidden_page())
    }
}

pub fn warnings(state: &AppState) -> Vec<String> {
    let mut w = Vec::new();
    if state.config.is_open() {
        w.push("API_KEY is not set: this proxy is open, and anyone who can reach it can spend your keys' balance. Set API_KEY to require a client key.".into());
    }
    if state.admin.generated {
        w.push("You are using the admin password generated at first start. Set ADMIN_PASSWORD to one of your own.".into());
    }
    w
}

#[derive(Deserialize, Default)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// A confirmation page: a question, one POST button (with the CSRF token), Cancel.
pub struct Confirm<'a> {
    pub title: &'a str,
    pub nav: &'a str,
    pub heading: String,
    pub action: String,
    pub button: &'a str,
    pub cancel: &'a str,
}

pub fn confirm_page(s: &Session, c: Confirm, message: Markup) -> HttpResponse {
    let content = html! {
        h1 { (c.heading) }
        div.panel {
            p { (message) }
            div.toolbar {
                form.inline method="post" action=(c.action) {
                    (csrf_field(&s.csrf))
                    button.danger type="submit" { (c.button) }
                }
                a.button.secondary href=(c.cancel) { "Cancel" }
            }
        }
    };
    let chrome = Chrome { title: c.title, nav: c.nav, csrf: Some(&s.csrf), warnings: vec![], notice: None };
    page(StatusCode::OK, layout(chrome, content))
}
