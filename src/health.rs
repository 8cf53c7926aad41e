//! `GET /health`: no auth, no secrets.
//!
//! `healthy`: the database answers, rows are written and some key can serve.
//! `degraded` (still 200): up and serving from the snapshot, with the
//! reasons why not everything is well (no active key; on PostgreSQL, the
//! database unreachable while log rows wait in memory). `unhealthy` (503):
//! the SQLite file cannot be used, which on one instance is a broken
//! installation rather than a passing outage. On PostgreSQL an outage does
//! not take the instances out of a load balancer's rotation: every one of
//! them would go at once, while each can still serve every call.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::config::Database;
use crate::db::now_ms;
use crate::db::queries::ping;
use crate::state::AppState;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let checked = crate::db::run_quick(&state.db, ping).await;
    let shared = matches!(state.config.database, Database::Postgres(_));
    let mut reasons = Vec::new();
    let database = match &checked {
        Ok(()) => "connected",
        Err(e) => {
            log::error!("health: database check failed: {e}");
            reasons.push(format!("database unreachable: {e}"));
            "unreachable"
        }
    };
    let keys = state.pool.counts(now_ms());
    if keys.active == 0 {
        reasons.push("no active key: every call would be refused".to_string());
    }
    let log = state.log.counters();
    let failing = log.failing();
    if let Some((since, error)) = &failing {
        reasons.push(format!(
            "request log: {} rows wait for the database (at most {}), failing since {}: {error}",
            log.queued(),
            log.max(),
            crate::db::iso(Some(*since)).unwrap_or_default()
        ));
    }
    let refresh = state.refresh_status.load_full();
    let unhealthy = checked.is_err() && !shared;
    let status = if unhealthy {
        "unhealthy"
    } else if reasons.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    let body = json!({
        "status": status,
        "reasons": reasons,
        "database": database,
        "keys": keys,
        // Rows not yet written, rows dropped (the queue was full), requests
        // open: a queue that keeps growing means the database cannot keep up.
        "request_log": {
            "queued": log.queued(),
            "max_queued": log.max(),
            "dropped": log.dropped(),
            "refused": log.refused(),
            "failing_since": crate::db::iso(failing.as_ref().map(|f| f.0)),
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
        // Of the instances sharing a PostgreSQL database, the one that runs
        // the scheduled refresh, retention and trials (with SQLite, this one).
        "scheduled_jobs": {
            "runs_here": state.leadership.leads(),
            // Connected and in the running: takes the jobs over if the one running them goes.
            "standing_by": !state.leadership.leads() && state.leadership.contending(),
        },
    });
    let mut answer = if unhealthy { HttpResponse::ServiceUnavailable() } else { HttpResponse::Ok() };
    answer.insert_header(("Cache-Control", "no-store")).json(body)
}

/// `GET /metrics`: Prometheus text format. Open (it holds no secret) unless
/// `METRICS_TOKEN` is set; then `Authorization: Bearer <token>`, compared in
/// constant time.
pub async fn metrics(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(token) = &state.config.metrics_token {
        use subtle::ConstantTimeEq;
        let presented = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
            return HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer realm=\"metrics\""))
                .json(json!({"error": "/metrics needs Authorization: Bearer <METRICS_TOKEN>"}));
        }
    }
    let now = now_ms();
    let gauges = crate::metrics::PoolGauges {
        keys: state.pool.counts(now),
        cooldowns: state.pool.active_cooldowns(now),
        log_queue: state.log.queued(),
    };
    match state.metrics.render(gauges) {
        Ok(text) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .content_type(crate::metrics::Metrics::content_type())
            .body(text),
        Err(e) => {
            log::error!("metrics: {e}");
            HttpResponse::InternalServerError().json(json!({"error": format!("metrics: {e}")}))
        }
    }
}
