//! `GET /logs` (filtered, paged) and `POST /clear_logs`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::*;
use crate::admin::error::AdminError;
use crate::admin::session::Admin;
use crate::db::iso;
use crate::db::queries::logs as lq;
use crate::state::AppState;

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
                "requested_model": r.requested_model,
                "in_flight": r.call_id.is_some(),
                "usage_estimated": r.usage_estimated,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"logs": logs, "total": total, "page": page, "page_size": page_size})))
}

pub async fn clear(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(json!({"deleted": clear_all(&state).await?})))
}
