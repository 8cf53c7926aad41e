//! `/admin/logs`: the log page, its filters and pages, and clearing it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde::Deserialize;

use super::*;
use crate::admin::error::PageError;
use crate::admin::page::{
    confirm_page, page_session, posted_form, see_other, warnings, without_empty, Confirm, Notice,
};
use crate::admin::views::{layout, link_with, page, pager, when, Chrome};
use crate::db::queries::logs as lq;
use crate::state::AppState;
use crate::upstream::ENDPOINTS;

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
                            @if let Some(asked) = &r.requested_model { span.mark title="the name the caller asked for (an alias)" { "as " (asked) } }
                            @if r.stream { span.mark title="streamed" { "stream" } }
                            @if r.aborted { span.mark.aborted title="the answer did not complete" { "aborted" } }
                            @if r.usage_estimated { span.mark title="cut before the upstream reported its usage: tokens estimated from the request and the text that passed" { "≈ tokens" } }
                            @if r.call_id.is_some() { span.mark title="still running when this row was written" { "in flight" } }
                            @if r.attempts > 1 { span.mark title="keys tried" { (r.attempts) " tries" } } }
                        td.mono { (r.endpoint) }
                        td { @if r.call_id.is_some() { span.badge title="still running when this row was written" { "…" } } @else { span class=(format!("badge s{}", r.status / 100)) { (r.status) } } }
                        td.num { (r.input_tokens) } td.num { (r.output_tokens) } td.num { (r.total_tokens) }
                        td.num.nowrap { (r.latency_ms) " ms" }
                        td.num.nowrap { @if let Some(t) = r.ttfb_ms { (t) " ms" } }
                        @if r.call_id.is_some() { td {} } @else { td.err title=[r.error.clone()] { (r.error.clone().unwrap_or_default()) } }
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
