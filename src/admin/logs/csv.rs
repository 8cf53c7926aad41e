//! `/admin/logs.csv`: the filtered log as a CSV file, in the page's time zone,
//! with cells a spreadsheet would run as formulas defused.

use actix_web::{web, HttpRequest, HttpResponse};

use super::*;
use crate::admin::error::AdminError;
use crate::admin::error::PageError;
use crate::admin::page::page_session;
use crate::db::queries::logs as lq;
use crate::state::AppState;

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
    let mut out = String::from("id,time,key,model,requested_model,endpoint,status,input_tokens,output_tokens,total_tokens,latency_ms,ttfb_ms,stream,aborted,attempts,error,client,usage_estimated\n");
    for r in rows {
        let fields = [
            r.id.to_string(),
            // In the page's time zone, with its offset, as the page shows it.
            local_time(r.created_at, &tz),
            r.key_masked,
            r.model,
            r.requested_model.unwrap_or_default(),
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
            r.usage_estimated.to_string(),
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
