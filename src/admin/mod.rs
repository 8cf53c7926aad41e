//! The owner's side: credentials, and the JSON endpoints for keys and logs.
//! (Pages come with the web UI.)

pub mod auth;
pub mod keys;
pub mod logs;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// An admin JSON error: `{"error": "..."}`.
pub fn error(status: actix_web::http::StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.into()}))
}

/// Admin authorisation for the JSON endpoints (HTTP Basic for now): the
/// answer to send instead when the caller is not the admin.
pub async fn deny_unless_admin(req: &HttpRequest, state: &AppState) -> Option<HttpResponse> {
    if let Some((user, pass)) = auth::basic_credentials(req) {
        if state.admin.verify_off_thread(user, pass).await {
            return None;
        }
    }
    Some(
        HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Basic realm=\"siliconflow-proxy admin\""))
            .json(json!({"error": "admin login required (HTTP Basic auth with ADMIN_USERNAME / ADMIN_PASSWORD)"})),
    )
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/import_keys", web::post().to(keys::import))
        .route("/refresh", web::post().to(keys::refresh_all))
        .route("/export_keys", web::get().to(keys::export))
        .route("/api/keys", web::get().to(keys::list))
        .route("/api/keys/{id}/refresh", web::post().to(keys::refresh_one))
        .route("/api/keys/{id}/enable", web::post().to(keys::enable))
        .route("/api/keys/{id}/disable", web::post().to(keys::disable))
        .route("/api/keys/{id}", web::delete().to(keys::delete))
        .route("/logs", web::get().to(logs::list))
        .route("/clear_logs", web::post().to(logs::clear));
}

/// Epoch milliseconds as RFC 3339 (UTC), for JSON.
pub fn iso(ms: Option<i64>) -> Option<String> {
    ms.filter(|t| *t > 0)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
