//! `GET /health`: no auth, no secrets.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::db::now_ms;
use crate::db::queries::ping;
use crate::state::AppState;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let database = match crate::db::run(&state.db, ping).await {
        Ok(()) => "connected".to_string(),
        Err(e) => {
            log::error!("health: database check failed: {e}");
            "unreachable".to_string()
        }
    };
    let keys = state.pool.counts(now_ms());
    let refresh = state.refresh_status.load_full();
    let db_ok = database == "connected";
    let status = if !db_ok {
        "unhealthy"
    } else if keys.active == 0 {
        // Up, but nothing can be served right now.
        "degraded"
    } else {
        "healthy"
    };
    let body = json!({
        "status": status,
        "database": database,
        "keys": keys,
        // Rows on their way to the database, and requests still open: a
        // queue that keeps growing means the log writer cannot keep up.
        "request_log": {
            "queued": state.log.queued(),
            "open_requests": state.log.open_requests(),
        },
        "auto_refresh": {
            "enabled": refresh.enabled,
            "interval_secs": refresh.interval_secs,
            "last_run": crate::db::iso(refresh.last_run),
            "next_run": crate::db::iso(refresh.next_run),
            "last_error": refresh.last_error,
            // A refresh of every key under way (paced at REFRESH_RATE).
            "running": refresh.running,
        },
    });
    if db_ok {
        HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(body)
    } else {
        HttpResponse::ServiceUnavailable().insert_header(("Cache-Control", "no-store")).json(body)
    }
}
