//! `GET` and `PUT /api/aliases`: `{"aliases": [{"pattern", "model"}, ...]}`,
//! first match first; a PUT replaces the whole table.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::replace;
use crate::admin::error::AdminError;
use crate::admin::request::admin_body;
use crate::admin::session::Admin;
use crate::aliases::{Alias, Aliases};
use crate::state::AppState;

pub async fn list(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"aliases": state.aliases.snapshot().rules()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    aliases: Vec<Alias>,
}

pub async fn put(
    _: Admin,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let body = admin_body(&req, payload, &state).await?;
    let table = serde_json::from_slice::<Table>(&body).map_err(|e| {
        AdminError::BadRequest(format!(
            "expected {{\"aliases\": [{{\"pattern\": \"claude-*\", \"model\": \"deepseek-ai/DeepSeek-V3.2\"}}]}}: {e}"
        ))
    })?;
    let table = Aliases::new(table.aliases).map_err(AdminError::BadRequest)?;
    replace(&state, table).await?;
    Ok(HttpResponse::Ok().json(json!({"aliases": state.aliases.snapshot().rules()})))
}
