//! Request log endpoints: `GET /logs` (filtered, paged) and `POST /clear_logs`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::error;
use super::page::{confirm_page, page_session, posted_form, see_other, warnings, with_notice, Confirm};
use super::session::require_admin;
use super::views::{layout, link_with, page, pager, when, Chrome};
use crate::db::iso;
use crate::db::queries::logs::{self as lq, LogFilter};
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

// ------------------------------------------------------------ the page

#[derive(Deserialize, Default)]
pub struct LogsPageQuery {
    #[serde(flatten)]
    filter: LogQuery,
    notice: Option<String>,
}

fn log_query_pairs(q: &LogQuery) -> Vec<(&'static str, String)> {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    vec![
        ("model", v(&q.model)),
        ("key", v(&q.key)),
        ("status", v(&q.status)),
        ("endpoint", v(&q.endpoint)),
        ("since", v(&q.since)),
        ("until", v(&q.until)),
        ("page_size", q.page_size.clone().unwrap_or_default()),
    ]
}

pub async fn logs_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LogsPageQuery>,
) -> HttpResponse {
    let s = match page_session(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let LogsPageQuery { filter: q, notice } = query.into_inner();
    let tz = state.config.timezone;
    let (filter, filter_error) = match filter_from(&q, &tz) {
        Ok(f) => (f, None),
        Err(e) => (Default::default(), Some(e)),
    };
    let (page_no, page_size) = (q.page(), q.page_size());
    let result = crate::db::run(&state.db, move |conn| {
        lq::page(conn, &filter, (page_no - 1).saturating_mul(page_size), page_size)
    })
    .await;
    let (rows, total) = match result {
        Ok(r) => r,
        _ => return page(StatusCode::SERVICE_UNAVAILABLE, html! { p { "The database is unavailable." } }),
    };
    let pairs = log_query_pairs(&q);
    let csv = link_with("/admin/logs.csv", &pairs, &[]);
    let content = html! {
        h1 { "Request log" }
        @if let Some(e) = filter_error { div.banner.error { (e) } }
        div.toolbar {
            form.filters method="get" action="/admin/logs" {
                label { "Model" input name="model" value=[q.model.as_deref()] placeholder="any part"; }
                label { "Key" input name="key" value=[q.key.as_deref()] placeholder="sk-abcd"; }
                label { "Status" input name="status" value=[q.status.as_deref()] size="4" placeholder="200"; }
                label { "Endpoint" input name="endpoint" value=[q.endpoint.as_deref()] placeholder="/v1/chat/completions"; }
                label { "Since" input type="datetime-local" name="since" value=[q.since.as_deref()]; }
                label { "Until" input type="datetime-local" name="until" value=[q.until.as_deref()]; }
                button.secondary type="submit" { "Filter" }
                a href="/admin/logs" { "Reset" }
            }
            span.spacer {}
            a.button.secondary href=(csv) { "Export CSV" }
            a.button.secondary href="/admin/logs/clear" { "Clear logs…" }
        }
        table {
            thead { tr {
                th { "Time (" (tz.to_string()) ")" } th { "Key" } th { "Model" } th { "Endpoint" } th { "Status" }
                th.num { "In" } th.num { "Out" } th.num { "Total" } th.num { "Latency" } th.num { "TTFB" } th { "Error" }
            } }
            tbody {
                @if rows.is_empty() { tr { td colspan="11" .muted { "No requests match." } } }
                @for r in &rows {
                    tr {
                        td { (when(Some(r.created_at), &tz)) }
                        td.mono { (r.key_masked) }
                        td { (r.model)
                            @if r.stream { span.mark title="streamed" { "stream" } }
                            @if r.aborted { span.mark.aborted title="the answer did not complete" { "aborted" } }
                            @if r.attempts > 1 { span.mark title="keys tried" { (r.attempts) " tries" } } }
                        td.mono { (r.endpoint) }
                        td { span class=(format!("badge s{}", r.status / 100)) { (r.status) } }
                        td.num { (r.input_tokens) } td.num { (r.output_tokens) } td.num { (r.total_tokens) }
                        td.num { (r.latency_ms) " ms" }
                        td.num { @if let Some(t) = r.ttfb_ms { (t) " ms" } }
                        td.err title=[r.error.clone()] { (r.error.clone().unwrap_or_default()) }
                    }
                }
            }
        }
        (pager("/admin/logs", &pairs, page_no as usize, page_size as usize, total as usize))
    };
    let chrome =
        Chrome { title: "Logs", nav: "logs", csrf: Some(&s.csrf), warnings: warnings(&state), notice };
    page(StatusCode::OK, layout(chrome, content))
}

/// One CSV field: quoted when needed, and defused against spreadsheet formulas.
pub fn csv_field(s: &str) -> String {
    // A spreadsheet runs a cell that starts with one of these as a formula.
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub async fn logs_csv(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LogQuery>,
) -> HttpResponse {
    if let Err(r) = page_session(&req, &state).await {
        return r;
    }
    let tz = state.config.timezone;
    let filter = match filter_from(&query, &tz) {
        Ok(f) => f,
        Err(e) => return HttpResponse::BadRequest().body(e),
    };
    let rows = match crate::db::run(&state.db, move |conn| lq::export(conn, &filter, 1_000_000)).await {
        Ok(r) => r,
        _ => return HttpResponse::ServiceUnavailable().body("database unavailable"),
    };
    let mut out = String::from("id,time,key,model,endpoint,status,input_tokens,output_tokens,total_tokens,latency_ms,ttfb_ms,stream,aborted,attempts,error\n");
    for r in rows {
        let fields = [
            r.id.to_string(),
            crate::db::iso(Some(r.created_at)).unwrap_or_default(),
            r.key_masked,
            r.model,
            r.endpoint,
            r.status.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.total_tokens.to_string(),
            r.latency_ms.to_string(),
            r.ttfb_ms.map(|t| t.to_string()).unwrap_or_default(),
            r.stream.to_string(),
            r.aborted.to_string(),
            r.attempts.to_string(),
            r.error.unwrap_or_default(),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"request-log.csv\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(out)
}

pub async fn logs_clear_confirm(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = match page_session(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let message = html! {
        "This deletes every request log row and the statistics built from them. Keys are not touched. It cannot be undone; export a CSV first if you need the history."
    };
    let confirm = Confirm {
        title: "Clear logs",
        nav: "logs",
        heading: "Clear the request log?".into(),
        action: "/admin/logs/clear".into(),
        button: "Clear the log",
        cancel: "/admin/logs",
    };
    confirm_page(&s, confirm, message)
}

pub async fn logs_clear(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    if let Err(r) = posted_form(&req, payload, &state).await {
        return r;
    }
    let notice = match super::logs::clear_all(&state).await {
        Ok(n) => format!("Deleted {n} log rows."),
        Err(e) => format!("Clearing failed: {e}"),
    };
    see_other(&with_notice("/admin/logs", &notice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        for danger in ["+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\t=1", "\r=1"] {
            let out = csv_field(danger);
            assert!(out.starts_with('\'') || out.starts_with("\"'"), "{danger:?} -> {out:?}");
        }
    }
}
