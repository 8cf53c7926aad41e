//! What every admin page shares: the session (or a redirect to log in), a
//! posted form's CSRF check, redirects, the warnings, a confirmation page.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::error::AdminError;
use super::request::admin_body;
use super::session::{self, csrf_ok, Session};
use super::views::{csrf_field, layout, link_with, page, Chrome, CSS};
use crate::state::AppState;

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", location)).finish()
}

/// A page's query that may name a notice (after a redirect).
#[derive(serde::Deserialize, Default)]
pub struct NoticeQuery {
    pub notice: Option<String>,
    pub n: Option<String>,
}

/// What a redirect after a form tells the next page. Only these, with
/// numbers: the text is the server's own, never a string from the query
/// (a link could otherwise put any words into a trusted-looking banner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    KeyEnabled(u64),
    KeyDisabled(u64),
    KeyDeleted(u64),
    KeyAccountSet(u64),
    KeyRefreshed(u64),
    /// The key's check failed for a passing reason.
    KeyUnchanged(u64),
    /// checked, active, exhausted, invalid, unchanged
    Refreshed(u64, u64, u64, u64, u64),
    /// checked, total
    RefreshRunning(u64, u64),
    /// how many, of which state (0 invalid, 1 exhausted, 2 disabled)
    BulkDeleted(u64, u64),
    /// exhausted keys given a check
    ExhaustedRechecked(u64, u64, u64),
    LogsCleared(u64),
    ClientSaved(u64),
    ClientEnabled(u64),
    ClientDisabled(u64),
    ClientDeleted(u64),
    /// rules in the saved table
    AliasesSaved(u64),
    /// a model catalog entry saved
    ModelSaved(u64),
    /// 1: the owner's entry dropped; 0: there was none
    ModelReset(u64),
}

impl Notice {
    fn parts(&self) -> (&'static str, Vec<u64>) {
        match *self {
            Notice::KeyEnabled(id) => ("enabled", vec![id]),
            Notice::KeyDisabled(id) => ("disabled", vec![id]),
            Notice::KeyDeleted(id) => ("deleted", vec![id]),
            Notice::KeyAccountSet(id) => ("account", vec![id]),
            Notice::KeyRefreshed(id) => ("refreshed", vec![id]),
            Notice::KeyUnchanged(id) => ("unchanged", vec![id]),
            Notice::Refreshed(a, b, c, d, e) => ("refreshed_all", vec![a, b, c, d, e]),
            Notice::RefreshRunning(a, b) => ("refresh_running", vec![a, b]),
            Notice::BulkDeleted(n, s) => ("bulk_deleted", vec![n, s]),
            Notice::ExhaustedRechecked(n, a, e) => ("rechecked", vec![n, a, e]),
            Notice::LogsCleared(n) => ("logs_cleared", vec![n]),
            Notice::ClientSaved(id) => ("client_saved", vec![id]),
            Notice::ClientEnabled(id) => ("client_enabled", vec![id]),
            Notice::ClientDisabled(id) => ("client_disabled", vec![id]),
            Notice::ClientDeleted(id) => ("client_deleted", vec![id]),
            Notice::AliasesSaved(n) => ("aliases_saved", vec![n]),
            Notice::ModelSaved(n) => ("model_saved", vec![n]),
            Notice::ModelReset(n) => ("model_reset", vec![n]),
        }
    }

    /// The text of the notice a page's query names, if it is one of ours.
    pub fn text_of(q: &NoticeQuery) -> Option<String> {
        Notice::parse(q.notice.as_deref(), q.n.as_deref()).map(|n| n.text())
    }

    /// The page to go to, with this notice.
    pub fn link(&self, path: &str) -> String {
        let (code, n) = self.parts();
        let n = n.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        link_with(path, &[], &[("notice", code.to_string()), ("n", n)])
    }

    /// The notice a page's query names, if it is one of ours.
    pub fn parse(code: Option<&str>, n: Option<&str>) -> Option<Notice> {
        let n: Vec<u64> =
            n.unwrap_or("").split(',').map(|x| x.trim().parse::<u64>()).collect::<Result<_, _>>().ok()?;
        Some(match (code?, n.as_slice()) {
            ("enabled", [id]) => Notice::KeyEnabled(*id),
            ("disabled", [id]) => Notice::KeyDisabled(*id),
            ("deleted", [id]) => Notice::KeyDeleted(*id),
            ("account", [id]) => Notice::KeyAccountSet(*id),
            ("refreshed", [id]) => Notice::KeyRefreshed(*id),
            ("unchanged", [id]) => Notice::KeyUnchanged(*id),
            ("refreshed_all", [a, b, c, d, e]) => Notice::Refreshed(*a, *b, *c, *d, *e),
            ("refresh_running", [a, b]) => Notice::RefreshRunning(*a, *b),
            ("bulk_deleted", [n, s]) if *s <= 2 => Notice::BulkDeleted(*n, *s),
            ("rechecked", [n, a, e]) => Notice::ExhaustedRechecked(*n, *a, *e),
            ("logs_cleared", [n]) => Notice::LogsCleared(*n),
            ("client_saved", [id]) => Notice::ClientSaved(*id),
            ("client_enabled", [id]) => Notice::ClientEnabled(*id),
            ("client_disabled", [id]) => Notice::ClientDisabled(*id),
            ("client_deleted", [id]) => Notice::ClientDeleted(*id),
            ("aliases_saved", [n]) => Notice::AliasesSaved(*n),
            ("model_saved", [n]) => Notice::ModelSaved(*n),
            ("model_reset", [n]) if *n <= 1 => Notice::ModelReset(*n),
            _ => return None,
        })
    }

    pub fn text(&self) -> String {
        let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        match *self {
            Notice::KeyEnabled(id) => format!("Key #{id} enabled."),
            Notice::KeyDisabled(id) => format!("Key #{id} disabled."),
            Notice::KeyDeleted(id) => format!("Key #{id} deleted."),
            Notice::KeyAccountSet(id) => format!("Key #{id}: account set."),
            Notice::KeyRefreshed(id) => format!("Key #{id} refreshed."),
            Notice::KeyUnchanged(id) => {
                format!("Key #{id}: the check failed for a passing reason; the key was left as it was.")
            }
            Notice::Refreshed(checked, active, exhausted, invalid, unchanged) => format!(
                "Refreshed {}: {active} active, {exhausted} exhausted, {invalid} invalid, {unchanged} unchanged (the check failed for a passing reason).",
                plural(checked, "key", "keys")
            ),
            Notice::RefreshRunning(checked, total) => {
                format!("The refresh goes on in the background: {checked} of {total} keys checked so far.")
            }
            Notice::BulkDeleted(n, s) => {
                let state = ["invalid", "exhausted", "disabled"].get(s as usize).copied().unwrap_or("");
                format!("Deleted {} ({state}).", plural(n, "key", "keys"))
            }
            Notice::ExhaustedRechecked(n, active, exhausted) => format!(
                "Re-checked {}: {active} active again, {exhausted} still exhausted.",
                plural(n, "exhausted key", "exhausted keys")
            ),
            Notice::LogsCleared(n) => format!("Deleted {}.", plural(n, "log row", "log rows")),
            Notice::ClientSaved(id) => format!("Client #{id} saved."),
            Notice::ClientEnabled(id) => format!("Client #{id} enabled: its key works again."),
            Notice::ClientDisabled(id) => format!("Client #{id} disabled: its key is refused until enabled."),
            Notice::ClientDeleted(id) => format!("Client #{id} deleted: its key no longer works."),
            Notice::AliasesSaved(n) => {
                format!("Saved {}: in effect now, on every instance.", plural(n, "alias", "aliases"))
            }
            Notice::ModelSaved(_) => "Model entry saved: in effect now, on every instance.".to_string(),
            Notice::ModelReset(1) => "Your entry was dropped: the shipped figures apply again.".to_string(),
            Notice::ModelReset(_) => "There was no entry of yours for that model.".to_string(),
        }
    }
}

pub async fn css() -> HttpResponse {
    static SHEET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sheet =
        SHEET.get_or_init(|| format!("{CSS}\n/* chart sizes */\n{}", super::views::charts::css_rules()));
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(sheet.as_str())
}

/// A query with empty fields (a GET form sends every field) as the same
/// link without them; `None` if it has none.
pub fn without_empty(req: &HttpRequest) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).ok()?;
    if !pairs.iter().any(|(_, v)| v.trim().is_empty()) {
        return None;
    }
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(_, v)| !v.trim().is_empty()).collect();
    let q = serde_urlencoded::to_string(&kept).unwrap_or_default();
    Some(if q.is_empty() { req.path().to_string() } else { format!("{}?{q}", req.path()) })
}

/// The session, or (as a page) a redirect to the login page.
pub async fn page_session(req: &HttpRequest, state: &AppState) -> Result<Session, AdminError> {
    session::current(state, req).await.ok_or(AdminError::Unauthorized)
}

/// A posted form: the session (from the cookie, before a byte of the body
/// is read), then the body (bounded and timed), then its CSRF token checked.
pub async fn posted_form(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(Session, web::Bytes), AdminError> {
    let s = page_session(req, state).await?;
    let body = admin_body(req, payload, state).await?;
    let form = serde_urlencoded::from_bytes::<CsrfForm>(&body).unwrap_or_default();
    check_csrf(&s, form.csrf.as_deref())?;
    Ok((s, body))
}

/// Checks a posted form's CSRF token against the session.
pub fn check_csrf(session: &Session, given: Option<&str>) -> Result<(), AdminError> {
    if csrf_ok(&session.csrf, given) {
        Ok(())
    } else {
        Err(AdminError::Forbidden(
            "This form has expired or did not come from this site (CSRF check failed). Go back, reload the page and try again.".into(),
        ))
    }
}

pub fn warnings(state: &AppState) -> Vec<String> {
    let mut w = Vec::new();
    if state.is_open() {
        w.push("API_KEY is not set: this proxy is open, and anyone who can reach it can spend your keys' balance. Set API_KEY to require a client key.".into());
    }
    if state.admin.generated() {
        w.push("You are using the admin password generated at first start. Set one of your own with `siliconflow-proxy admin set-password` (or ADMIN_PASSWORD).".into());
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
