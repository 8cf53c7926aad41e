//! The request log for the owner: the filters that the JSON (`api`), the
//! page (`page`) and the CSV export (`csv`) share, and clearing it.

pub mod api;
pub mod csv;
pub mod page;

use serde::Deserialize;

use crate::db::queries::logs::{self as lq, LogFilter, StatusFilter};
use crate::db::DbError;
use crate::state::AppState;

/// Every field a string, parsed leniently: a bad `page` is page 1, not a 400.
#[derive(Deserialize, Default)]
pub struct LogQuery {
    pub page: Option<String>,
    pub page_size: Option<String>,
    pub model: Option<String>,
    pub key: Option<String>,
    pub status: Option<String>,
    pub endpoint: Option<String>,
    pub client: Option<String>,
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

/// `429`, `2xx`..`5xx`, or `error` (4xx, 5xx and no answer, as the
/// statistics count errors).
pub fn parse_status(s: &str) -> Option<StatusFilter> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "error" | "errors" => Some(StatusFilter::Error),
        "1xx" | "2xx" | "3xx" | "4xx" | "5xx" => s[..1].parse().ok().map(StatusFilter::Class),
        _ => s.parse::<i32>().ok().filter(|c| (0..1000).contains(c)).map(StatusFilter::Exact),
    }
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
        Some(s) => Some(parse_status(&s).ok_or_else(|| {
            format!(
                "`status` must be a status code (e.g. 429), a class (2xx, 4xx, 5xx) or `error`, not {s:?}"
            )
        })?),
    };
    Ok(LogFilter {
        model: nonempty(&q.model),
        key: nonempty(&q.key),
        key_id: None,
        status,
        endpoint: nonempty(&q.endpoint),
        client: nonempty(&q.client),
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
    })
}

/// Deletes the rows of every call that started before now, and the
/// statistics built from them: this instance's queued rows are written
/// first (so they are counted and deleted), and any still queued anywhere
/// are not written later. What clients used still counts (their ledger).
pub async fn clear_all(state: &AppState) -> Result<usize, DbError> {
    let now = crate::db::now_ms();
    if let Ok(Err(e)) = state.log_writer.send(crate::db::log_writer::Flush).await {
        // Not written now: they are left out when they are (`cleared_before`).
        log::warn!("clearing the log: its queued rows could not be written first ({e})");
    }
    crate::db::run(&state.db, move |conn| lq::clear(conn, now)).await
}
