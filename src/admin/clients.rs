//! Client keys, for the owner: create (the secret shown once), list with
//! today's use, change, rotate, delete. `/api/clients` in JSON.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::error::AdminError;
use super::request::admin_body;
use super::session::Admin;
use crate::clients::{key_hash_hex, new_secret, parse_models, ModelRule, ENV_CLIENT};
use crate::db::models::{ClientFields, ClientRow};
use crate::db::notify::Changed;
use crate::db::queries::clients_q;
use crate::db::{iso, now_ms, DbError};
use crate::pool::mask_key;
use crate::state::AppState;

/// A client as the owner sees it: never its secret.
#[derive(Debug, Serialize)]
pub struct ClientView {
    pub id: i64,
    pub name: String,
    /// The secret, masked (`sk-abcd...wxyz`).
    pub key: String,
    /// `null`: every model.
    pub models: Option<Vec<String>>,
    pub rpm: Option<i32>,
    pub daily_requests: Option<i64>,
    pub daily_tokens: Option<i64>,
    pub expires_at: Option<String>,
    pub enabled: bool,
    /// Past `expires_at`.
    pub expired: bool,
    pub created_at: Option<String>,
    pub requests_today: u64,
    pub tokens_today: u64,
}

fn view(row: ClientRow, state: &AppState) -> ClientView {
    let now = now_ms();
    let (requests_today, tokens_today) =
        state.clients.snapshot().get(row.id).map(|c| c.today(now, &state.clients.tz)).unwrap_or((0, 0));
    ClientView {
        id: row.id,
        key: row.key_hint,
        models: parse_models(row.models.as_deref()).map(|rules| rules.iter().map(ModelRule::text).collect()),
        rpm: row.rpm,
        daily_requests: row.daily_requests,
        daily_tokens: row.daily_tokens,
        expired: row.expires_at.is_some_and(|t| now >= t),
        expires_at: iso(row.expires_at),
        enabled: row.enabled,
        created_at: iso(Some(row.created_at)),
        name: row.name,
        requests_today,
        tokens_today,
    }
}

/// Every client, oldest first.
pub async fn client_views(state: &AppState) -> Result<Vec<ClientView>, DbError> {
    let rows = crate::db::run(&state.db, clients_q::all).await?;
    Ok(rows.into_iter().map(|r| view(r, state)).collect())
}

/// A present field that may be `null` (`Some(None)`), told apart from an
/// absent one (`None`).
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// What `POST` and `PATCH` take. Absent: unchanged (on create: unlimited);
/// `null`: unlimited.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientInput {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub daily_requests: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub daily_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<String>>,
    pub enabled: Option<bool>,
}

const MAX_NAME: usize = 64;
const MAX_MODELS: usize = 200;

fn bad(m: impl Into<String>) -> AdminError {
    AdminError::BadRequest(m.into())
}

fn limit(name: &str, v: Option<u64>, max: u64) -> Result<Option<i64>, AdminError> {
    match v {
        None => Ok(None),
        Some(0) => Err(bad(format!("`{name}` must be at least 1 (null for no limit)"))),
        Some(n) if n > max => Err(bad(format!("`{name}` is at most {max}"))),
        Some(n) => Ok(Some(n as i64)),
    }
}

impl ClientInput {
    fn parse(body: &[u8]) -> Result<ClientInput, AdminError> {
        serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "expected a JSON object with name, models, rpm, daily_requests, daily_tokens, expires_at, enabled: {e}"
            ))
        })
    }

    /// The fields after this input, over `old` (a new client: none).
    pub fn apply(self, old: Option<&ClientRow>) -> Result<ClientFields, AdminError> {
        let name = match (self.name, old) {
            (Some(n), _) => {
                let n = n.trim().to_string();
                if n.is_empty() || n.chars().count() > MAX_NAME || n.chars().any(char::is_control) {
                    return Err(bad(format!(
                        "`name` must be 1 to {MAX_NAME} characters, no control characters"
                    )));
                }
                if n == ENV_CLIENT {
                    return Err(bad(format!("`name` {ENV_CLIENT:?} is taken by API_KEY's client")));
                }
                n
            }
            (None, Some(o)) => o.name.clone(),
            (None, None) => return Err(bad("`name` is required")),
        };
        let models = match self.models {
            None => old.and_then(|o| o.models.clone()),
            Some(None) => None,
            Some(Some(list)) => {
                if list.is_empty() {
                    return Err(bad("`models` is empty: no model could be called (null allows every model)"));
                }
                if list.len() > MAX_MODELS {
                    return Err(bad(format!("`models` holds at most {MAX_MODELS} entries")));
                }
                let rules =
                    list.iter().map(|m| ModelRule::parse(m).map_err(bad)).collect::<Result<Vec<_>, _>>()?;
                let texts: Vec<String> = rules.iter().map(ModelRule::text).collect();
                Some(serde_json::to_string(&texts).map_err(|e| AdminError::Internal(e.to_string()))?)
            }
        };
        let keep = |new: Option<Option<u64>>, old: Option<i64>, name: &str, max: u64| match new {
            None => Ok(old),
            Some(v) => limit(name, v, max),
        };
        let rpm = keep(self.rpm, old.and_then(|o| o.rpm.map(i64::from)), "rpm", 1_000_000)?.map(|n| n as i32);
        let daily_requests =
            keep(self.daily_requests, old.and_then(|o| o.daily_requests), "daily_requests", 1_000_000_000)?;
        let daily_tokens =
            keep(self.daily_tokens, old.and_then(|o| o.daily_tokens), "daily_tokens", 1_000_000_000_000_000)?;
        let expires_at = match self.expires_at {
            None => old.and_then(|o| o.expires_at),
            Some(None) => None,
            Some(Some(t)) => Some(
                chrono::DateTime::parse_from_rfc3339(t.trim())
                    .map_err(|e| {
                        bad(format!(
                            "`expires_at` {t:?}: expected RFC 3339, like 2027-01-31T23:59:59+08:00 ({e})"
                        ))
                    })?
                    .timestamp_millis(),
            ),
        };
        let enabled = self.enabled.or(old.map(|o| o.enabled)).unwrap_or(true);
        Ok(ClientFields { name, models, rpm, daily_requests, daily_tokens, expires_at, enabled })
    }
}

/// After a change: this instance's snapshot now, the others' by NOTIFY.
pub async fn changed(state: &AppState) -> Result<(), AdminError> {
    let (clients, db) = (state.clients.clone(), state.db.clone());
    web::block(move || clients.reload(&db))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?
        .map_err(AdminError::from)?;
    state.pool_actor.do_send(crate::pool::actor::TellOthers(Changed::clients()));
    Ok(())
}

fn client_id(path: &str) -> Result<i64, AdminError> {
    path.parse::<i64>().map_err(|_| AdminError::NotFound(format!("no client with id {path:?}")))
}

pub async fn row(state: &AppState, id: i64) -> Result<ClientRow, AdminError> {
    crate::db::run(&state.db, move |c| clients_q::find(c, id))
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no client with id {id}")))
}

/// Stores the fields (and a new secret's hash, for a new client); 409 for a
/// name in use.
pub async fn store(
    state: &AppState,
    id: Option<i64>,
    fields: ClientFields,
    secret: Option<&str>,
) -> Result<i64, AdminError> {
    let name = fields.name.clone();
    let key = secret.map(|s| (key_hash_hex(s), mask_key(s)));
    let stored = crate::db::run(&state.db, move |c| {
        if clients_q::name_taken(c, &fields.name, id)? {
            return Ok(None);
        }
        match (id, &key) {
            (Some(id), _) => Ok(clients_q::update(c, id, &fields)?.then_some(id)),
            (None, Some((hash, hint))) => clients_q::insert(c, &fields, hash, hint, now_ms()).map(Some),
            (None, None) => Err(DbError::Setup("a new client needs a key".into())),
        }
    })
    .await?;
    match stored {
        Some(id) => Ok(id),
        None if id.is_some() => Err(AdminError::NotFound(format!("no client with id {}", id.unwrap_or(0)))),
        None => Err(AdminError::Conflict(format!("a client named {name:?} exists"))),
    }
}

/// Creates a client: its id and its secret (to show once).
pub async fn create_client(state: &AppState, fields: ClientFields) -> Result<(i64, String), AdminError> {
    let secret = new_secret();
    let id = store(state, None, fields, Some(&secret)).await?;
    changed(state).await?;
    log::info!("admin: client #{id} created");
    Ok((id, secret))
}

/// A new secret for a client (the old one stops at once): the new one, to show once.
pub async fn rotate_client(state: &AppState, id: i64) -> Result<String, AdminError> {
    let secret = new_secret();
    let (hash, hint) = (key_hash_hex(&secret), mask_key(&secret));
    let found = crate::db::run(&state.db, move |c| clients_q::set_key(c, id, &hash, &hint)).await?;
    if !found {
        return Err(AdminError::NotFound(format!("no client with id {id}")));
    }
    changed(state).await?;
    log::info!("admin: client #{id} has a new key");
    Ok(secret)
}

pub async fn delete_client(state: &AppState, id: i64) -> Result<(), AdminError> {
    let found = crate::db::run(&state.db, move |c| clients_q::delete(c, id)).await?;
    if !found {
        return Err(AdminError::NotFound(format!("no client with id {id}")));
    }
    changed(state).await?;
    log::info!("admin: client #{id} deleted");
    Ok(())
}

/// A client's view with its secret in `key` (just created or rotated).
async fn with_secret(state: &AppState, id: i64, secret: String) -> Result<serde_json::Value, AdminError> {
    let mut answer = serde_json::to_value(view(row(state, id).await?, state))
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    answer["key"] = json!(secret);
    Ok(answer)
}

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
    Ok(HttpResponse::Created().json(with_secret(&state, id, secret).await?))
}

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
    Ok(HttpResponse::Ok().json(with_secret(&state, id, secret).await?))
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

// ------------------------------------------------------------ the page

use actix_web::http::StatusCode;
use maud::{html, Markup};

use super::error::PageError;
use super::page::{confirm_page, page_session, posted_form, see_other, warnings, Confirm, Notice};
use super::views::{badge, csrf_field, layout, page, when, Chrome};

/// The create/edit form's fields, as the browser sends them: an empty field
/// is "no limit" (or "every model").
#[derive(Debug, Default, Deserialize)]
pub struct ClientForm {
    name: Option<String>,
    models: Option<String>,
    rpm: Option<String>,
    daily_requests: Option<String>,
    daily_tokens: Option<String>,
    expires_at: Option<String>,
}

impl ClientForm {
    fn input(&self, tz: &chrono::FixedOffset) -> Result<ClientInput, AdminError> {
        let text =
            |o: &Option<String>| o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let number = |o: &Option<String>, name: &str| -> Result<Option<u64>, AdminError> {
            match text(o) {
                None => Ok(None),
                Some(s) => s.replace([',', '_', ' '], "").parse::<u64>().map(Some).map_err(|_| {
                    bad(format!("{name}: {s:?} is not a whole number (leave it empty for no limit)"))
                }),
            }
        };
        let models = text(&self.models).map(|m| {
            m.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        });
        let expires_at = match text(&self.expires_at) {
            None => None,
            Some(s) => Some(
                super::logs::parse_time(&s, tz)
                    .and_then(|ms| iso(Some(ms)))
                    .ok_or_else(|| bad(format!("Expires: {s:?} is not a date and time")))?,
            ),
        };
        Ok(ClientInput {
            name: Some(self.name.clone().unwrap_or_default()),
            models: Some(models),
            rpm: Some(number(&self.rpm, "Requests per minute")?),
            daily_requests: Some(number(&self.daily_requests, "Requests per day")?),
            daily_tokens: Some(number(&self.daily_tokens, "Tokens per day")?),
            expires_at: Some(expires_at),
            enabled: None,
        })
    }

    fn of(c: &ClientView, tz: &chrono::FixedOffset) -> ClientForm {
        let n = |v: Option<i64>| v.map(|n| n.to_string());
        ClientForm {
            name: Some(c.name.clone()),
            models: c.models.as_ref().map(|m| m.join("\n")),
            rpm: n(c.rpm.map(i64::from)),
            daily_requests: n(c.daily_requests),
            daily_tokens: n(c.daily_tokens),
            expires_at: c
                .expires_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(tz).format("%Y-%m-%dT%H:%M").to_string()),
        }
    }
}

fn form_fields(f: &ClientForm, tz: &chrono::FixedOffset) -> Markup {
    html! {
        div.fields {
            label { "Name" input name="name" required maxlength="64" value=[f.name.as_deref()] placeholder="e.g. alice, ci-bot"; }
            label { "Requests per minute" input name="rpm" inputmode="numeric" size="8" value=[f.rpm.as_deref()] placeholder="no limit"; }
            label { "Requests per day" input name="daily_requests" inputmode="numeric" size="8" value=[f.daily_requests.as_deref()] placeholder="no limit"; }
            label { "Tokens per day" input name="daily_tokens" inputmode="numeric" size="10" value=[f.daily_tokens.as_deref()] placeholder="no limit"; }
            label { "Expires (" (tz.to_string()) ")" input type="datetime-local" name="expires_at" value=[f.expires_at.as_deref()]; }
        }
        label.block { "Models — exact names or prefix/*, one per line; empty: every model"
            textarea name="models" rows="3" placeholder="Qwen/*\ndeepseek-ai/DeepSeek-V3" { (f.models.clone().unwrap_or_default()) }
        }
    }
}

fn limit_text(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "—".into())
}

/// The page: every client, and a form for a new one. `secret`: a key to
/// show once (just created or rotated).
async fn render(
    state: &AppState,
    s: &super::session::Session,
    status: StatusCode,
    error: Option<String>,
    secret: Option<(String, String)>,
    form: ClientForm,
    notice: Option<String>,
) -> Result<HttpResponse, PageError> {
    let tz = state.config.timezone;
    let clients = client_views(state).await?;
    let content = html! {
        h1 { "Clients" }
        p.muted { "Hand each person, app or script its own key, with the models it may call and how much. "
            "API_KEY keeps working as the unlimited client " code { "env" } "." }
        @if let Some(e) = &error { div.banner.error role="alert" { (e) } }
        @if let Some((name, key)) = &secret {
            div.banner.info role="status" {
                strong { "The key of " (name) ": " } code.secret { (key) }
                br; "Copy it now: it is not shown again (only a hash of it is kept). Rotate the client for a new one."
            }
        }
        div.scroll { table.clients {
            thead { tr {
                th { "#" } th { "Name" } th { "Key" } th { "Models" } th.num { "RPM" } th.num { "Req/day" } th.num { "Tokens/day" }
                th { "Expires" } th.num { "Today" } th { "State" } th {}
            } }
            tbody {
                @if clients.is_empty() { tr { td colspan="11" .muted { "No client keys yet: every caller uses API_KEY." } } }
                @for c in &clients {
                    tr {
                        td.num { (c.id) }
                        td.nowrap { (c.name) }
                        td.mono.nowrap { (c.key) }
                        td { @match &c.models { None => span.muted { "every model" }, Some(m) => span.mono { (m.join(", ")) } } }
                        td.num { (limit_text(c.rpm.map(i64::from))) }
                        td.num { (limit_text(c.daily_requests)) }
                        td.num { (limit_text(c.daily_tokens)) }
                        td.nowrap { @match &c.expires_at {
                            None => span.muted { "never" },
                            Some(t) => (when(chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp_millis()), &tz)),
                        } }
                        td.num.nowrap { (c.requests_today) (if c.requests_today == 1 { " call · " } else { " calls · " }) (c.tokens_today) (if c.tokens_today == 1 { " token" } else { " tokens" }) }
                        td { @if !c.enabled { (badge("disabled", None)) } @else if c.expired { (badge("expired", None)) } @else { (badge("active", None)) } }
                        td { div.actions {
                            a.button.secondary href=(format!("/admin/clients/{}/edit", c.id)) { "Edit" }
                            form.inline method="post" action=(format!("/admin/clients/{}/rotate", c.id)) {
                                (csrf_field(&s.csrf)) button.secondary type="submit" { "Rotate" } }
                            form.inline method="post" action=(format!("/admin/clients/{}/{}", c.id, if c.enabled { "disable" } else { "enable" })) {
                                (csrf_field(&s.csrf)) button.secondary type="submit" { (if c.enabled { "Disable" } else { "Enable" }) } }
                            a.button.secondary href=(format!("/admin/clients/{}/delete", c.id)) { "Delete" }
                        } }
                    }
                }
            }
        } }
        section.panel {
            h2 { "New client" }
            form method="post" action="/admin/clients" {
                (csrf_field(&s.csrf))
                (form_fields(&form, &tz))
                button type="submit" { "Create" }
            }
        }
    };
    let chrome =
        Chrome { title: "Clients", nav: "clients", csrf: Some(&s.csrf), warnings: warnings(state), notice };
    Ok(page(status, layout(chrome, content)))
}

#[derive(Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
    n: Option<String>,
}

pub async fn clients_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let notice = Notice::parse(q.notice.as_deref(), q.n.as_deref()).map(|n| n.text());
    render(&state, &s, StatusCode::OK, None, None, ClientForm::default(), notice).await
}

/// Creates a client from the form: the page, with its key shown once.
pub async fn clients_create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, body) = posted_form(&req, payload, &state).await?;
    let form = serde_urlencoded::from_bytes::<ClientForm>(&body).unwrap_or_default();
    let created = async {
        let fields = form.input(&state.config.timezone)?.apply(None)?;
        let name = fields.name.clone();
        let (_, secret) = create_client(&state, fields).await?;
        Ok::<_, AdminError>((name, secret))
    }
    .await;
    match created {
        Ok(secret) => {
            render(&state, &s, StatusCode::OK, None, Some(secret), ClientForm::default(), None).await
        }
        Err(e @ (AdminError::BadRequest(_) | AdminError::Conflict(_))) => {
            let status = if matches!(e, AdminError::Conflict(_)) {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            render(&state, &s, status, Some(e.to_string()), None, form, None).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn edit_page(
    state: &AppState,
    s: &super::session::Session,
    id: i64,
    form: ClientForm,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let tz = state.config.timezone;
    let content = html! {
        h1 { "Edit client #" (id) }
        @if let Some(e) = &error { div.banner.error role="alert" { (e) } }
        section.panel {
            form method="post" action=(format!("/admin/clients/{id}/edit")) {
                (csrf_field(&s.csrf))
                (form_fields(&form, &tz))
                button type="submit" { "Save" } " " a href="/admin/clients" { "Cancel" }
            }
        }
    };
    let chrome = Chrome {
        title: "Edit client",
        nav: "clients",
        csrf: Some(&s.csrf),
        warnings: warnings(state),
        notice: None,
    };
    Ok(page(status, layout(chrome, content)))
}

pub async fn client_edit_page(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let id = client_id(&path)?;
    let c = view(row(&state, id).await?, &state);
    edit_page(&state, &s, id, ClientForm::of(&c, &state.config.timezone), StatusCode::OK, None).await
}

pub async fn client_edit(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, body) = posted_form(&req, payload, &state).await?;
    let id = client_id(&path)?;
    let form = serde_urlencoded::from_bytes::<ClientForm>(&body).unwrap_or_default();
    let saved = async {
        let old = row(&state, id).await?;
        let fields = form.input(&state.config.timezone)?.apply(Some(&old))?;
        store(&state, Some(id), fields, None).await?;
        changed(&state).await
    }
    .await;
    match saved {
        Ok(()) => Ok(see_other(&Notice::ClientSaved(id as u64).link("/admin/clients"))),
        Err(e @ (AdminError::BadRequest(_) | AdminError::Conflict(_))) => {
            edit_page(&state, &s, id, form, StatusCode::BAD_REQUEST, Some(e.to_string())).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Rotate, enable, disable, delete, from the page's buttons.
pub async fn client_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, _) = posted_form(&req, payload, &state).await?;
    let (id, action) = path.into_inner();
    let id = client_id(&id)?;
    let old = row(&state, id).await?;
    let set_enabled = |on: bool| ClientInput { enabled: Some(on), ..Default::default() };
    let notice = match action.as_str() {
        "rotate" => {
            let shown = Some((old.name.clone(), rotate_client(&state, id).await?));
            return render(&state, &s, StatusCode::OK, None, shown, ClientForm::default(), None).await;
        }
        "enable" | "disable" => {
            let on = action == "enable";
            store(&state, Some(id), set_enabled(on).apply(Some(&old))?, None).await?;
            changed(&state).await?;
            if on {
                Notice::ClientEnabled(id as u64)
            } else {
                Notice::ClientDisabled(id as u64)
            }
        }
        "delete" => {
            delete_client(&state, id).await?;
            Notice::ClientDeleted(id as u64)
        }
        other => return Err(AdminError::NotFound(format!("no client action {other:?}")).into()),
    };
    Ok(see_other(&notice.link("/admin/clients")))
}

pub async fn client_delete_confirm(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let id = client_id(&path)?;
    let c = row(&state, id).await?;
    let message = html! { "Delete the client " strong { (c.name) } "? Its key stops working at once. Its request log rows stay." };
    let confirm = Confirm {
        title: "Delete client",
        nav: "clients",
        heading: format!("Delete client #{id}?"),
        action: format!("/admin/clients/{id}/delete"),
        button: "Delete",
        cancel: "/admin/clients",
    };
    Ok(confirm_page(&s, confirm, message))
}
