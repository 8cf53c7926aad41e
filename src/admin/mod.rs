//! The owner's side: credentials, and the JSON endpoints for keys and logs.
//! (Pages come with the web UI.)

pub mod dashboard;
pub mod keys;
pub mod login;
pub mod logs;
pub mod page;
pub mod request;
pub mod session;
pub mod views;

use actix_web::{web, HttpResponse};
use serde_json::json;

/// An admin JSON error: `{"error": "..."}`.
pub fn error(status: actix_web::http::StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.into()}))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Every admin route passes the gate (cross-site refusal, body cap) first.
    let scope = web::scope("").wrap(actix_web::middleware::from_fn(request::gate));
    let scope = scope
        .route("/import_keys", web::post().to(keys::import))
        .route("/refresh", web::post().to(keys::refresh_all))
        .route("/export_keys", web::get().to(keys::export))
        .route("/api/keys", web::get().to(keys::list))
        .route("/api/keys/{id}/refresh", web::post().to(keys::refresh_one))
        .route("/api/keys/{id}/enable", web::post().to(keys::enable))
        .route("/api/keys/{id}/disable", web::post().to(keys::disable))
        .route("/api/keys/{id}", web::delete().to(keys::delete))
        .route("/api/keys/{id}", web::patch().to(keys::patch))
        .route("/logs", web::get().to(logs::list))
        .route("/clear_logs", web::post().to(logs::clear))
        .route("/api/stats/overview", web::get().to(dashboard::overview_json))
        .route("/api/stats/daily", web::get().to(dashboard::daily_json))
        .route("/api/stats/monthly", web::get().to(dashboard::monthly_json))
        // Pages
        .route("/", web::get().to(login::root))
        .route("/login", web::get().to(login::root))
        .route("/login", web::post().to(login::login))
        .route("/logout", web::get().to(login::logout_page))
        .route("/logout", web::post().to(login::logout))
        .route("/static/admin.css", web::get().to(page::css))
        .route("/admin", web::get().to(dashboard::dashboard))
        .route("/admin/keys", web::get().to(keys::keys_page))
        .route("/admin/keys/import", web::post().to(keys::keys_import))
        .route("/admin/keys/refresh", web::post().to(keys::keys_refresh))
        .route("/admin/keys/{id}/delete", web::get().to(keys::key_delete_confirm))
        .route("/admin/keys/{id}/{action}", web::post().to(keys::key_action))
        .route("/admin/logs", web::get().to(logs::logs_page))
        .route("/admin/logs.csv", web::get().to(logs::logs_csv))
        .route("/admin/logs/clear", web::get().to(logs::logs_clear_confirm))
        .route("/admin/logs/clear", web::post().to(logs::logs_clear));
    cfg.service(scope);
}
