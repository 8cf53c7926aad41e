//! `GET /api/models`, `PUT` and `DELETE /api/models/{id}` (the id
//! URL-encoded): the catalog, and the owner's entries over it.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{id_of, put as put_entry, reset};
use crate::admin::error::AdminError;
use crate::admin::request::admin_body;
use crate::admin::session::Admin;
use crate::state::AppState;

pub async fn list(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    let (shipped, _) = crate::catalog::shipped();
    HttpResponse::Ok().json(json!({
        "models": state.catalog.snapshot().entries().iter().map(|e| &**e).collect::<Vec<_>>(),
        "default": {"date": shipped.date, "sources": shipped.sources},
    }))
}

pub async fn get(_: Admin, req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AdminError> {
    let id = id_of(req.match_info().get("id").unwrap_or(""))?;
    match state.catalog.snapshot().get(&id) {
        Some(e) => Ok(HttpResponse::Ok().json(&**e)),
        None => Err(AdminError::NotFound(format!("no catalog entry for {id:?}"))),
    }
}

pub async fn put(
    _: Admin,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = id_of(req.match_info().get("id").unwrap_or(""))?;
    let body = admin_body(&req, payload, &state).await?;
    let body: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        AdminError::BadRequest(format!(
            "expected an entry such as {{\"context_window\": 131072, \"price\": {{\"input\": 2, \"output\": 8}}}}: {e}"
        ))
    })?;
    let entry = put_entry(&state, id, body).await?;
    Ok(HttpResponse::Ok().json(entry))
}

pub async fn delete(
    _: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = id_of(req.match_info().get("id").unwrap_or(""))?;
    if !reset(&state, id.clone()).await? {
        return Err(AdminError::NotFound(format!("no entry of the owner's for {id:?}")));
    }
    let now = state.catalog.snapshot().get(&id).map(|e| (**e).clone());
    Ok(HttpResponse::Ok().json(json!({"deleted": id, "model": now})))
}
