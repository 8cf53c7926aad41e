//! `/import_keys`, `/refresh`, `/export_keys` and `/api/keys`: the keys in JSON.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{
    checked_candidates, delete_in_state, import_keys, key_json, key_page, known_id, refresh_every_key,
    ListQuery, RefreshAnswer,
};
use crate::admin::error::AdminError;
use crate::admin::request::admin_body;
use crate::admin::session::{Admin, AdminWithBody};
use crate::pool::refresher::RefreshNow;
use crate::pool::{parse_label, KeyCommand, KeyId, KeyState};
use crate::state::{AppState, Upstream};

#[derive(Deserialize)]
#[serde(untagged)]
enum KeysField {
    Text(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct ImportBody {
    keys: KeysField,
    /// The account these keys belong to, for upstreams that name none.
    #[serde(default)]
    account: Option<String>,
}

pub async fn import(
    who: AdminWithBody,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> Result<HttpResponse, AdminError> {
    // Who asks was settled from the headers before a byte of the body is read.
    let body = admin_body(&req, payload, &state).await?;
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let form = content_type.starts_with("application/x-www-form-urlencoded");
    #[derive(Deserialize)]
    struct Form {
        keys: Option<String>,
        csrf: Option<String>,
        account: Option<String>,
    }
    let parsed_form = form.then(|| serde_urlencoded::from_bytes::<Form>(&body));
    let form_csrf = match &parsed_form {
        Some(Ok(f)) => f.csrf.clone(),
        _ => None,
    };
    who.0.check_csrf(&req, form_csrf.as_deref())?;
    let (text, account) = match parsed_form {
        Some(Ok(Form { keys: Some(k), account, .. })) => (k, account),
        Some(_) => return Err(AdminError::BadRequest("expected a form field `keys`".into())),
        None => match serde_json::from_slice::<ImportBody>(&body) {
            Ok(ImportBody { keys: KeysField::Text(t), account }) => (t, account),
            Ok(ImportBody { keys: KeysField::List(l), account }) => (l.join("\n"), account),
            Err(e) => {
                return Err(AdminError::BadRequest(format!(
                    "expected JSON {{\"keys\": \"sk-a\\nsk-b\"}} or {{\"keys\": [\"sk-a\", \"sk-b\"]}}: {e}"
                )))
            }
        },
    };
    let label =
        parse_label(account.as_deref()).map_err(|e| AdminError::BadRequest(format!("`account`: {e}")))?;
    let candidates = checked_candidates(&text)?;
    Ok(HttpResponse::Ok().json(import_keys(candidates, label, &state, &upstream.client).await))
}

#[derive(Deserialize)]
pub struct RefreshQuery {
    /// Seconds to wait for the summary (default 30, at most 300); a refresh
    /// still running then answers 202 with its progress and goes on.
    wait: Option<u64>,
}

pub async fn refresh_all(
    _: Admin,
    query: web::Query<RefreshQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let wait = std::time::Duration::from_secs(query.wait.unwrap_or(30).min(300));
    Ok(match refresh_every_key(&state, wait).await {
        RefreshAnswer::Done(summary) => HttpResponse::Ok().json(summary),
        RefreshAnswer::Running(progress) => HttpResponse::Accepted().json(json!({
            "running": progress,
            "message": "the refresh goes on; GET /health shows its progress (auto_refresh.running) and its end (last_run)",
        })),
        RefreshAnswer::Unavailable(e) => return Err(AdminError::Unavailable(e)),
    })
}

pub async fn refresh_one(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = known_id(&path, &state)?;
    let summary = state.refresher.send(RefreshNow(Some(vec![id]))).await?.summary().await;
    Ok(HttpResponse::Ok().json(json!({"id": id, "result": summary, "key": key_json(&state, id).await?})))
}

async fn command(
    path: web::Path<String>,
    state: web::Data<AppState>,
    make: fn(KeyId) -> KeyCommand,
) -> Result<HttpResponse, AdminError> {
    let id = known_id(&path, &state)?;
    state.pool_actor.send(make(id)).await??;
    Ok(HttpResponse::Ok().json(json!({"id": id, "ok": true, "key": key_json(&state, id).await?})))
}

pub async fn enable(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    command(path, state, KeyCommand::Enable).await
}

pub async fn disable(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    command(path, state, KeyCommand::Disable).await
}

pub async fn delete(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    command(path, state, KeyCommand::Delete).await
}

#[derive(Deserialize)]
pub struct StateQuery {
    state: Option<String>,
}

/// `DELETE /api/keys?state=invalid`: `{"deleted": n, "state": "invalid"}`.
pub async fn delete_many(
    _: Admin,
    query: web::Query<StateQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let n = delete_in_state(&state, query.state.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": n, "state": query.state})))
}

/// `PATCH /api/keys/{id}` with `{"account": "team-a"}` (or `null` / `""` to
/// take the key out): the account of a key whose upstream names none.
pub async fn patch(
    _: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    // JSON only: a session's CSRF token comes in its header (checked by `Admin`).
    let body = admin_body(&req, payload, &state).await?;
    let id = known_id(&path, &state)?;
    let bad = |m: &str| AdminError::BadRequest(m.to_string());
    let account = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(m)) => match m.get("account") {
            Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => return Err(bad("expected {\"account\": \"name\"} or {\"account\": null}")),
        },
        _ => return Err(bad("expected a JSON object such as {\"account\": \"team-a\"}")),
    };
    let label =
        parse_label(account.as_deref()).map_err(|e| AdminError::BadRequest(format!("`account`: {e}")))?;
    state.pool_actor.send(KeyCommand::SetAccount(id, label)).await??;
    Ok(HttpResponse::Ok().json(json!({"id": id, "ok": true, "key": key_json(&state, id).await?})))
}

pub async fn list(
    _: Admin,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let (keys, total, page, page_size) = key_page(&state, &query).await?;
    Ok(HttpResponse::Ok().json(json!({"keys": keys, "total": total, "page": page, "page_size": page_size})))
}

#[derive(Deserialize)]
pub struct ExportQuery {
    all: Option<String>,
}

/// The one place full keys leave the proxy: the owner's export.
pub async fn export(_: Admin, query: web::Query<ExportQuery>, state: web::Data<AppState>) -> HttpResponse {
    let all = matches!(query.all.as_deref(), Some("1" | "true" | "yes"));
    // From the running pool (every key, with its live state): no database read.
    let snapshot = state.pool.snapshot();
    let mut out = String::with_capacity(snapshot.keys.len() * 64);
    for k in snapshot.keys.iter().filter(|k| all || k.state() != KeyState::Invalid) {
        out.push_str(&k.secret);
        out.push('\n');
    }
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"siliconflow-keys.txt\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(out)
}
