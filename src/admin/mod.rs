//! The owner's side, by feature: `login`, `dashboard`, `keys`, `logs` (each
//! its JSON endpoints and its pages); `page` (what every page shares),
//! `session` (sessions, the `Admin` extractor), `request` (the gate every
//! admin request passes), `error` (one `AdminError`, as JSON or as a page).

pub mod aliases;
pub mod clients;
pub mod connect;
pub mod dashboard;
pub mod error;
pub mod keys;
pub mod login;
pub mod logs;
pub mod models;
pub mod page;
pub mod request;
pub mod session;
pub mod views;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Every admin route passes the gate (cross-site refusal, body cap) first.
    let scope = web::scope("").wrap(actix_web::middleware::from_fn(request::gate));
    let scope = scope
        .route("/import_keys", web::post().to(keys::api::import))
        .route("/refresh", web::post().to(keys::api::refresh_all))
        .route("/export_keys", web::get().to(keys::api::export))
        .route("/api/keys", web::get().to(keys::api::list))
        .route("/api/keys", web::delete().to(keys::api::delete_many))
        .route("/api/keys/{id}/refresh", web::post().to(keys::api::refresh_one))
        .route("/api/keys/{id}/enable", web::post().to(keys::api::enable))
        .route("/api/keys/{id}/disable", web::post().to(keys::api::disable))
        .route("/api/keys/{id}", web::delete().to(keys::api::delete))
        .route("/api/keys/{id}", web::patch().to(keys::api::patch))
        .route("/api/clients", web::post().to(clients::api::create))
        .route("/api/clients", web::get().to(clients::api::list))
        .route("/api/clients/{id}", web::patch().to(clients::api::patch))
        .route("/api/clients/{id}", web::delete().to(clients::api::delete))
        .route("/api/clients/{id}/rotate", web::post().to(clients::api::rotate))
        .route("/api/aliases", web::get().to(aliases::api::list))
        .route("/api/aliases", web::put().to(aliases::api::put))
        .route("/api/models", web::get().to(models::api::list))
        .route("/api/models/{id:.+}", web::get().to(models::api::get))
        .route("/api/models/{id:.+}", web::put().to(models::api::put))
        .route("/api/models/{id:.+}", web::delete().to(models::api::delete))
        .route("/logs", web::get().to(logs::api::list))
        .route("/clear_logs", web::post().to(logs::api::clear))
        .route("/api/stats/overview", web::get().to(dashboard::api::overview_json))
        .route("/api/stats/daily", web::get().to(dashboard::api::daily_json))
        .route("/api/stats/monthly", web::get().to(dashboard::api::monthly_json))
        // Pages
        .route("/", web::get().to(login::root))
        // Agents probe the base URL first (Claude Code sends HEAD /).
        .route("/", web::head().to(actix_web::HttpResponse::Ok))
        .route("/login", web::get().to(login::root))
        .route("/login", web::post().to(login::login))
        .route("/logout", web::get().to(login::logout_page))
        .route("/logout", web::post().to(login::logout))
        .route("/logout_everywhere", web::post().to(login::logout_everywhere))
        .route("/static/admin.css", web::get().to(page::css))
        .route("/admin", web::get().to(dashboard::page::dashboard))
        .route("/admin/keys", web::get().to(keys::page::keys_page))
        .route("/admin/keys/import", web::post().to(keys::page::keys_import))
        .route("/admin/keys/refresh", web::post().to(keys::page::keys_refresh))
        .route("/admin/keys/bulk/delete-invalid", web::get().to(keys::page::delete_invalid_confirm))
        .route("/admin/keys/bulk/delete-invalid", web::post().to(keys::page::delete_invalid))
        .route("/admin/keys/bulk/recheck-exhausted", web::post().to(keys::page::recheck_exhausted))
        .route("/admin/keys/{id}/delete", web::get().to(keys::page::key_delete_confirm))
        .route("/admin/keys/{id}/{action}", web::post().to(keys::page::key_action))
        .route("/admin/clients", web::get().to(clients::page::clients_page))
        .route("/admin/clients", web::post().to(clients::page::clients_create))
        .route("/admin/clients/{id}/edit", web::get().to(clients::page::client_edit_page))
        .route("/admin/clients/{id}/edit", web::post().to(clients::page::client_edit))
        .route("/admin/clients/{id}/delete", web::get().to(clients::page::client_delete_confirm))
        .route("/admin/clients/{id}/{action}", web::post().to(clients::page::client_action))
        .route("/admin/aliases", web::get().to(aliases::page::aliases_page))
        .route("/admin/aliases", web::post().to(aliases::page::aliases_save))
        .route("/admin/models", web::get().to(models::page::models_page))
        .route("/admin/models", web::post().to(models::page::models_save))
        .route("/admin/models/reset", web::post().to(models::page::models_reset))
        .route("/admin/connect", web::get().to(connect::connect_page))
        .route("/admin/connect", web::post().to(connect::connect_post))
        .route("/static/copy.js", web::get().to(connect::copy_js))
        .route("/admin/logs", web::get().to(logs::page::logs_page))
        .route("/admin/logs.csv", web::get().to(logs::csv::logs_csv))
        .route("/admin/logs/clear", web::get().to(logs::page::logs_clear_confirm))
        .route("/admin/logs/clear", web::post().to(logs::page::logs_clear));
    cfg.service(scope);
}
