//! Request log endpoints: `GET /logs` (filtered, paged) and `POST /clear_logs`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::error::AdminError;
use super::error::PageError;
use super::page::{
    confirm_page, page_session, posted_form, see_other, warnings, without_empty, Confirm, Notice,
};
use super::session::Admin;
use super::views::{layout, link_with, page, pager, when, Chrome};
use crate::db::queries::logs::{self as lq, LogFilter, StatusFilter};
use crate::db::{iso, DbError};
use crate::state::AppState;
use crate::upstream::ENDPOINTS;

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

pub async fn list(
    _: Admin,
    query: web::Query<LogQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let filter = filter_from(&query, &state.config.timezone).map_err(AdminError::BadRequest)?;
    let (page, page_size) = (query.page(), query.page_size());
    let (rows, total) = crate::db::run(&state.db, move |conn| {
        lq::page(conn, &filter, (page - 1).saturating_mul(page_size), page_size)
    })
    .await?;
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
                "client": r.client,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"logs": logs, "total": total, "page": page, "page_size": page_size})))
}

/// Deletes the whole request log and the statistics built from it.
pub async fn clear_all(state: &AppState) -> Result<usize, DbError> {
    crate::db::run(&state.db, lq::clear).await
}

pub async fn clear(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(json!({"deleted": clear_all(&state).await?})))
}

// ------------------------------------------------------------ the page

#[derive(Deserialize, Default)]
pub struct LogsPageQuery {
    #[serde(flatten)]
    filter: LogQuery,
    notice: Option<String>,
    n: Option<String>,
}

fn log_query_pairs(q: &LogQuery) -> Vec<(&'static str, String)> {
    let v = |o: &Option<String>| o.as_deref().map(str::trim).unwrap_or_default().to_string();
    vec![
        ("model", v(&q.model)),
        ("key", v(&q.key)),
        ("client", v(&q.client)),
        ("status", v(&q.status)),
        ("endpoint", v(&q.endpoint)),
        ("since", v(&q.since)),
        ("until", v(&q.until)),
        ("page_size", v(&q.page_size)),
    ]
}

const PAGE_SIZES: [i64; 4] = [25, 50, 100, 200];

pub async fn logs_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LogsPageQuery>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    if let Some(clean) = without_empty(&req) {
        return Ok(see_other(&clean));
    }
    let LogsPageQuery { filter: q, notice, n } = query.into_inner();
    let tz = state.config.timezone;
    let (page_no, page_size) = (q.page(), q.page_size());
    // A bad filter shows why, and no rows (not every row, as if unfiltered).
    let (rows, total, filter_error) = match filter_from(&q, &tz) {
        Ok(filter) => {
            let (rows, total) = crate::db::run(&state.db, move |conn| {
                lq::page(conn, &filter, (page_no - 1).saturating_mul(page_size), page_size)
            })
            .await?;
            (rows, total, None)
        }
        Err(e) => (Vec::new(), 0, Some(e)),
    };
    let pairs = log_query_pairs(&q);
    let csv = link_with("/admin/logs.csv", &pairs, &[("page_size", String::new())]);
    let endpoint = q.endpoint.as_deref().map(str::trim).unwrap_or_default();
    let status = q.status.as_deref().map(str::trim).unwrap_or_default();
    let content = html! {
        h1 { "Request log" }
        @if let Some(e) = &filter_error { div.banner.error role="alert" { (e) } }
        div.toolbar {
            form.filters method="get" action="/admin/logs" {
                label { "Model" input name="model" value=[q.model.as_deref()] placeholder="any part"; }
                label { "Key" input name="key" value=[q.key.as_deref()] placeholder="sk-abcd" size="10"; }
                label { "Client" input name="client" value=[q.client.as_deref()] placeholder="name" size="8"; }
                label { "Status"
                    input name="status" value=(status) list="statuses" size="5" placeholder="any" title="a code (429), a class (2xx, 4xx, 5xx) or error";
                    datalist #statuses { @for c in ["2xx", "4xx", "5xx", "error", "429"] { option value=(c) {} } }
                }
                label { "Endpoint"
                    select name="endpoint" {
                        option value="" { "any" }
                        @for e in ENDPOINTS { option value=(e) selected[*e == endpoint] { (e) } }
                        @if !endpoint.is_empty() && !ENDPOINTS.contains(&endpoint) {
                            option value=(endpoint) selected { (endpoint) }
                        }
                    }
                }
                label { "Since" input type="datetime-local" name="since" value=[q.since.as_deref()]; }
                label { "Until" input type="datetime-local" name="until" value=[q.until.as_deref()]; }
                label { "Rows"
                    select name="page_size" {
                        @for n in PAGE_SIZES { option value=(n) selected[n == page_size] { (n) } }
                    }
                }
                button.secondary type="submit" { "Filter" }
                a href="/admin/logs" { "Reset" }
            }
            span.spacer {}
            a.button.secondary href=(csv) { "Export CSV" }
            a.button.secondary href="/admin/logs/clear" { "Clear logs…" }
        }
        div.scroll { table.logs {
            thead { tr {
                th { "Time (" (tz.to_string()) ")" } th { "Key" } th { "Client" } th { "Model" } th { "Endpoint" } th { "Status" }
                th.num { "In" } th.num { "Out" } th.num { "Total" } th.num { "Latency" } th.num { "TTFB" } th { "Error" }
            } }
            tbody {
                @if rows.is_empty() {
                    tr { td colspan="12" .muted {
                        @if filter_error.is_some() { "Fix the filter to see rows." } @else { "No requests match." }
                    } }
                }
                @for r in &rows {
                    tr {
                        td.nowrap { (when(Some(r.created_at), &tz)) }
                        td.mono.nowrap { (r.key_masked) }
                        td.nowrap { (r.client.as_deref().unwrap_or("")) }
                        td { (r.model)
                            @if r.stream { span.mark title="streamed" { "stream" } }
                            @if r.aborted { span.mark.aborted title="the answer did not complete" { "aborted" } }
                            @if r.attempts > 1 { span.mark title="keys tried" { (r.attempts) " tries" } } }
                        td.mono { (r.endpoint) }
                        td { span class=(format!("badge s{}", r.status / 100)) { (r.status) } }
                        td.num { (r.input_tokens) } td.num { (r.output_tokens) } td.num { (r.total_tokens) }
                        td.num.nowrap { (r.latency_ms) " ms" }
                        td.num.nowrap { @if let Some(t) = r.ttfb_ms { (t) " ms" } }
                        td.err title=[r.error.clone()] { (r.error.clone().unwrap_or_default()) }
                    }
                }
            }
        } }
        (pager("/admin/logs", &pairs, page_no as usize, page_size as usize, total as usize))
    };
    let notice = Notice::parse(notice.as_deref(), n.as_deref()).map(|n| n.text());
    let chrome =
        Chrome { title: "Logs", nav: "logs", csrf: Some(&s.csrf), warnings: warnings(&state), notice };
    let status = if filter_error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok(page(status, layout(chrome, content)))
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
) -> Result<HttpResponse, PageError> {
    page_session(&req, &state).await?;
    let tz = state.config.timezone;
    let filter = filter_from(&query, &tz).map_err(AdminError::BadRequest)?;
    let rows = crate::db::run(&state.db, move |conn| lq::export(conn, &filter, 1_000_000)).await?;
    let mut out = String::from("id,time,key,model,endpoint,status,input_tokens,output_tokens,total_tokens,latency_ms,ttfb_ms,stream,aborted,attempts,error,client\n");
    for r in rows {
        let fields = [
            r.id.to_string(),
            // In the page's time zone, with its offset, as the page shows it.
            local_time(r.created_at, &tz),
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
            r.client.unwrap_or_default(),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"request-log.csv\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(out))
}

/// Epoch milliseconds as RFC 3339 in the configured zone (`2026-12-02T17:05:09+08:00`).
fn local_time(ms: i64, tz: &chrono::FixedOffset) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
        .unwrap_or_default()
}

pub async fn logs_clear_confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
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
    Ok(confirm_page(&s, confirm, message))
}

pub async fn logs_clear(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    posted_form(&req, payload, &state).await?;
    let n = clear_all(&state).await?;
    Ok(see_other(&Notice::LogsCleared(n as u64).link("/admin/logs")))
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
