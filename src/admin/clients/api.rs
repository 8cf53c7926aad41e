//! `/api/clients`: client keys in JSON. A new or rotated secret is in the
//! answer once, and nowhere else.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{
    changed, client_id, client_views, create_client, delete_client, rotate_client, row, store, view,
    with_secret, ClientInput,
};
use crate::admin::error::AdminError;
use crate::admin::request::admin_body;
use crate::admin::session::Admin;
use crate::state::AppState;

/// `POST /api/clients`: the new client, with its secret in `key`, shown only here.
pub async fn create(
    _: Admin,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let body = admin_body(&req, payload, &state).await?;
    let fields = ClientInput::parse(&body)?.apply(None)?;
    let (id, secret) = create_client(&state, fields).await?;
    Ok(HttpResponse::Created().insert_header(NO_STORE).json(with_secret(&state, id, secret).await?))
}

/// An answer that carries a secret is kept by no cache (#24).
const NO_STORE: (&str, &str) = ("Cache-Control", "no-store");

/// `GET /api/clients`: `{"clients": [...]}`, secrets masked, with today's use.
pub async fn list(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(json!({"clients": client_views(&state).await?})))
}

/// `PATCH /api/clients/{id}`: name, models, limits, expiry or `enabled`.
pub async fn patch(
    _: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let body = admin_body(&req, payload, &state).await?;
    let id = client_id(&path)?;
    let input = ClientInput::parse(&body)?;
    let old = row(&state, id).await?;
    let fields = input.apply(Some(&old))?;
    store(&state, Some(id), fields, None).await?;
    changed(&state).await?;
    Ok(HttpResponse::Ok().json(view(row(&state, id).await?, &state)))
}

/// `POST /api/clients/{id}/rotate`: a new secret; the old one stops at once.
pub async fn rotate(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = client_id(&path)?;
    let secret = rotate_client(&state, id).await?;
    Ok(HttpResponse::Ok().insert_header(NO_STORE).json(with_secret(&state, id, secret).await?))
}

/// `DELETE /api/clients/{id}`.
pub async fn delete(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = client_id(&path)?;
    delete_client(&state, id).await?;
    Ok(HttpResponse::Ok().json(json!({"id": id, "deleted": true})))
}
