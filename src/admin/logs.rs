//! Request log endpoints: `GET /logs` (filtered, paged) and `POST /clear_logs`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{deny_unless_admin, error, iso};
use crate::db::queries::logs::{self as lq, LogFilter};

#[derive(Deserialize, Default)]
pub struct LogQuery {
    pub page: Option<i64>,
    pub page_size: Option<i64>,
    pub model: Option<String>,
    pub key: Option<String>,
    pub status: Option<String>,
    pub endpoint: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// Accepts epoch milliseconds, RFC 3339, or a date (`2026-11-26`, as UTC).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M") {
        return Some(t.and_utc().timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

pub fn filter_from(q: &LogQuery) -> Result<LogFilter, String> {
    let nonempty = |o: &Option<String>| o.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let time = |o: &Option<String>, name: &str| -> Result<Option<i64>, String> {
        match nonempty(o) {
            None => Ok(None),
            Some(s) => parse_time(&s)
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
    if let Some(resp) = deny_unless_admin(&req, &state).await {
        return resp;
    }
    let filter = match filter_from(&query) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let page = query.page.unwrap_or(1).clamp(1, i64::MAX / 1000);
    let page_size = query.page_size.unwrap_or(50).clamp(1, 1000);
    let db = state.db.clone();
    let result = web::block(move || -> Result<_, String> {
        let mut conn = db.get().map_err(|e| e.to_string())?;
        lq::page(&mut conn, &filter, (page - 1).saturating_mul(page_size), page_size)
            .map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok((rows, total))) => {
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
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

pub async fn clear(req: HttpRequest, state: web::Data<crate::state::AppState>) -> HttpResponse {
    if let Some(resp) = deny_unless_admin(&req, &state).await {
        return resp;
    }
    let db = state.db.clone();
    let result = web::block(move || -> Result<usize, String> {
        let mut conn = db.get().map_err(|e| e.to_string())?;
        lq::clear(&mut conn).map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(n)) => HttpResponse::Ok().json(json!({"deleted": n})),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
