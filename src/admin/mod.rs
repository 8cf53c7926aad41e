//! The owner's side: credentials, and the JSON endpoints for keys and logs.
//! (Pages come with the web UI.)

pub mod keys;
pub mod logs;
pub mod pages;
pub mod request;
pub mod session;
pub mod stats;
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
        .route("/api/stats/overview", web::get().to(stats::overview_json))
        .route("/api/stats/daily", web::get().to(stats::daily_json))
        .route("/api/stats/monthly", web::get().to(stats::monthly_json))
        // Pages
        .route("/", web::get().to(pages::root))
        .route("/login", web::get().to(pages::root))
        .route("/login", web::post().to(pages::login))
        .route("/logout", web::get().to(pages::logout_page))
        .route("/logout", web::post().to(pages::logout))
        .route("/static/admin.css", web::get().to(pages::css))
        .route("/admin", web::get().to(pages::dashboard))
        .route("/admin/keys", web::get().to(pages::keys_page))
        .route("/admin/keys/import", web::post().to(pages::keys_import))
        .route("/admin/keys/refresh", web::post().to(pages::keys_refresh))
        .route("/admin/keys/{id}/delete", web::get().to(pages::key_delete_confirm))
        .route("/admin/keys/{id}/{action}", web::post().to(pages::key_action))
        .route("/admin/logs", web::get().to(pages::logs_page))
        .route("/admin/logs.csv", web::get().to(pages::logs_csv))
        .route("/admin/logs/clear", web::get().to(pages::logs_clear_confirm))
        .route("/admin/logs/clear", web::post().to(pages::logs_clear));
    cfg.service(scope);
}
