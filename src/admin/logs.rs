//! Request log endpoints: `GET /logs` (filtered, paged) and `POST /clear_logs`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error;
use super::session::require_admin;
use crate::db::iso;
use crate::db::queries::logs::{self as lq, LogFilter};

/// Every field a string, parsed leniently: a bad `page` is page 1, not a 400.
#[derive(Deserialize, Default)]
pub struct LogQuery {
    pub page: Option<String>,
    pub page_size: Option<String>,
    pub model: Option<String>,
    pub key: Option<String>,
    pub status: Option<String>,
    pub endpoint: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl LogQuery {
    pub fn page(&self) -> i64 {
        self.page.as_deref().and_then(|p| p.trim().parse().ok()).unwrap_or(1).clamp(1, i64::MAX / 1000)
    }

    pub fn page_size(&self) -> i64 {
        self.page_size.as_deref().and_then(|p| p.trim().parse().ok()).unwrap_or(50).clamp(1, 1000)
    }
}

/// Accepts epoch milliseconds, RFC 3339, or a local date / date-time
/// (`2026-11-26`, `2026-11-26T10:00`, as the browser's datetime-local sends)
/// in the configured time zone.
pub fn parse_time(s: &str, tz: &chrono::FixedOffset) -> Option<i64> {
    use chrono::TimeZone;
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let local = |t: chrono::NaiveDateTime| tz.from_local_datetime(&t).single().map(|t| t.timestamp_millis());
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return local(t);
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).and_then(local)
}

pub fn filter_from(q: &LogQuery, tz: &chrono::FixedOffset) -> Result<LogFilter, String> {
    let nonempty = |o: &Option<String>| o.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let time = |o: &Option<String>, name: &str| -> Result<Option<i64>, String> {
        match nonempty(o) {
            None => Ok(None),
            Some(s) => parse_time(&s, tz)
                .map(Some)
                .ok_or_else(|| format!("`{name}` must be a date, an RFC 3339 time or epoch milliseconds")),
        }
    };
    let status = match nonempty(&q.status) {
        None => None,
        Some(s) => Some(s.parse::<i32>().map_err(|_| "`status` must be an HTTP status code".to_string())?),
    };
    Ok(LogFilter {
        model: nonempty(&q.model),
        key: nonempty(&q.key),
        key_id: None,
        status,
        endpoint: nonempty(&q.endpoint),
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
    })
}

pub async fn list(
    req: HttpRequest,
    query: web::Query<LogQuery>,
    state: web::Data<crate::state::AppState>,
) -> HttpResponse {
    if let Err(resp) = require_admin(&req, &state, None).await {
        return resp;
    }
    let filter = match filter_from(&query, &state.config.timezone) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (page, page_size) = (query.page(), query.page_size());
    let result = crate::db::run(&state.db, move |conn| {
        lq::page(conn, &filter, (page - 1).saturating_mul(page_size), page_size)
    })
    .await;
    match result {
        Ok((rows, total)) => {
            let logs: Vec<_> = rows
                .into_iter()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "created_at": iso(Some(r.created_at)),
                        "key": r.key_masked,
                        "key_id": r.key_id,
                        "model": r.model,
                        "endpoint": r.endpoint,
                        "status": r.status,
                        "input_tokens": r.input_tokens,
                        "output_tokens": r.output_tokens,
                        "total_tokens": r.total_tokens,
                        "latency_ms": r.latency_ms,
                        "ttfb_ms": r.ttfb_ms,
                        "stream": r.stream,
                        "aborted": r.aborted,
                        "attempts": r.attempts,
                        "error": r.error,
                    })
                })
                .collect();
            HttpResponse::Ok()
                .json(json!({"logs": logs, "total": total, "page": page, "page_size": page_size}))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Deletes the whole request log and the statistics built from it.
pub async fn clear_all(state: &crate::state::AppState) -> Result<usize, String> {
    crate::db::run(&state.db, lq::clear).await
}

pub async fn clear(req: HttpRequest, state: web::Data<crate::state::AppState>) -> HttpResponse {
    if let Err(resp) = require_admin(&req, &state, None).await {
        return resp;
    }
    match clear_all(&state).await {
        Ok(n) => HttpResponse::Ok().json(json!({"deleted": n})),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
