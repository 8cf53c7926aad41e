//! One error for the admin side, answered in the caller's form: `{"error":
//! ...}` for the JSON routes, a page in the admin's layout for the pages.

use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use super::views::{layout, page, Chrome};
use crate::db::DbError;
use crate::pool::CommandError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 400: the request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no session and no (right) Basic credentials.
    #[error("admin login required: a session from /login, or HTTP Basic auth with ADMIN_USERNAME / ADMIN_PASSWORD")]
    Unauthorized,
    /// 403: a CSRF token missing or wrong, or a cross-site request.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 408: the body did not arrive in time.
    #[error("{0}")]
    Timeout(String),
    /// 409: it cannot be done in the thing's present state.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the route takes.
    #[error("{0}")]
    TooLarge(String),
    /// 429: too many attempts; `retry_after` seconds.
    #[error("{message}")]
    TooMany { message: String, retry_after: u64 },
    /// 503: a part of the proxy (an actor) cannot answer now.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the database failed; the message is logged, and said.
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn finish(&self, mut resp: HttpResponse) -> HttpResponse {
        let headers = resp.headers_mut();
        match self {
            AdminError::TooMany { retry_after, .. } => {
                if let Ok(v) = retry_after.to_string().parse() {
                    headers.insert(actix_web::http::header::RETRY_AFTER, v);
                }
            }
            AdminError::Unauthorized => {
                headers.insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    actix_web::http::header::HeaderValue::from_static(
                        "Basic realm=\"siliconflow-proxy admin\"",
                    ),
                );
            }
            // The rest of the body is not read: the connection cannot be reused.
            AdminError::TooLarge(_) | AdminError::Timeout(_) => {
                resp.head_mut().set_connection_type(ConnectionType::Close)
            }
            _ => {}
        }
        resp
    }

    /// `{"error": "..."}` with the status.
    pub fn json(&self) -> HttpResponse {
        self.finish(HttpResponse::build(self.status()).json(json!({"error": self.to_string()})))
    }

    /// A page in the admin's layout with the status; without a session, the
    /// login page.
    pub fn page(&self) -> HttpResponse {
        if let AdminError::Unauthorized = self {
            return HttpResponse::SeeOther().insert_header(("Location", "/")).finish();
        }
        let status = self.status();
        let title = status.canonical_reason().unwrap_or("Error");
        let chrome = Chrome { title, nav: "", csrf: None, warnings: vec![], notice: None };
        let message = self.to_string();
        let body = maud::html! {
            h1 { (status.as_u16()) " " (title) }
            div.banner.error { (message) }
            p { a href="/admin" { "Back to the admin" } }
        };
        self.finish(page(status, layout(chrome, body)))
    }

    /// As the request's route wants it: a page under `/admin` and the login
    /// routes, JSON elsewhere.
    pub fn respond(&self, req: &HttpRequest) -> HttpResponse {
        if wants_html(req) {
            self.page()
        } else {
            self.json()
        }
    }
}

pub fn wants_html(req: &HttpRequest) -> bool {
    let p = req.path();
    p == "/" || p == "/login" || p == "/logout" || p.starts_with("/admin")
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.json()
    }
}

impl From<DbError> for AdminError {
    fn from(e: DbError) -> Self {
        log::error!("admin: {e}");
        match e {
            // Keys sealed with a key this instance does not hold: a
            // `keys reencrypt` run while it served.
            DbError::Sealed(why) => AdminError::Unavailable(format!(
                "{why}. If the keys were re-encrypted (`keys reencrypt`), restart this instance with the new key"
            )),
            e => AdminError::Internal(e.to_string()),
        }
    }
}

impl From<CommandError> for AdminError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NoSuchKey(id) => AdminError::NotFound(format!("no key with id {id}")),
            CommandError::Database(e) => AdminError::from(e),
        }
    }
}

impl From<actix::MailboxError> for AdminError {
    fn from(e: actix::MailboxError) -> Self {
        AdminError::Unavailable(format!("the key pool is unavailable: {e}"))
    }
}

/// An error answered as a page (for the HTML handlers).
#[derive(Debug)]
pub struct PageError(pub AdminError);

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.page()
    }
}

impl<E: Into<AdminError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}
