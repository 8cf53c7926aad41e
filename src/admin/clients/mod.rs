//! The owner's client keys: what the JSON API (`api`) and the page (`page`)
//! share: clients as the owner sees them (never a secret), the checked
//! input, and the changes both make (create, store, rotate, delete).

pub mod api;
pub mod page;

use actix_web::web;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::error::AdminError;
use crate::clients::{key_hash_hex, new_secret, parse_models, ModelRule, ENV_CLIENT};
use crate::db::models::{ClientFields, ClientRow};
use crate::db::notify::Changed;
use crate::db::queries::clients as client_rows;
use crate::db::{iso, now_ms, DbError};
use crate::ids::ClientId;
use crate::pool::mask_key;
use crate::state::AppState;

/// A client as the owner sees it: never its secret.
#[derive(Debug, Serialize)]
pub struct ClientView {
    pub id: ClientId,
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
    let (requests_today, tokens_today) = state
        .clients
        .snapshot()
        .get(row.client_id())
        .map(|c| c.today(now, &state.clients.tz))
        .unwrap_or((0, 0));
    ClientView {
        id: row.client_id(),
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
    let rows = crate::db::run(&state.db, client_rows::all).await?;
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
    let (clients, db, notifier) = (state.clients.clone(), state.db.clone(), state.notifier.clone());
    web::block(move || {
        clients.reload(&db)?;
        notifier.tell(&Changed::clients());
        Ok::<_, DbError>(())
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))?
    .map_err(AdminError::from)
}

fn client_id(path: &str) -> Result<ClientId, AdminError> {
    path.parse::<ClientId>().map_err(|_| AdminError::NotFound(format!("no client with id {path:?}")))
}

pub async fn row(state: &AppState, id: ClientId) -> Result<ClientRow, AdminError> {
    crate::db::run(&state.db, move |c| client_rows::find(c, id))
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no client with id {id}")))
}

/// Stores the fields (and a new secret's hash, for a new client); 409 for a
/// name in use.
pub async fn store(
    state: &AppState,
    id: Option<ClientId>,
    fields: ClientFields,
    secret: Option<&str>,
) -> Result<ClientId, AdminError> {
    let name = fields.name.clone();
    let key = secret.map(|s| (key_hash_hex(s), mask_key(s)));
    let stored = crate::db::run(&state.db, move |c| {
        if client_rows::name_taken(c, &fields.name, id)? {
            return Ok(None);
        }
        match (id, &key) {
            (Some(id), _) => Ok(client_rows::update(c, id, &fields)?.then_some(id)),
            (None, Some((hash, hint))) => client_rows::insert(c, &fields, hash, hint, now_ms()).map(Some),
            (None, None) => Err(DbError::Setup("a new client needs a key".into())),
        }
    })
    .await?;
    match stored {
        Some(id) => Ok(id),
        None if id.is_some() => {
            Err(AdminError::NotFound(format!("no client with id {}", id.map_or(0, |i| i.0))))
        }
        None => Err(AdminError::Conflict(format!("a client named {name:?} exists"))),
    }
}

/// Creates a client: its id and its secret (to show once).
pub async fn create_client(state: &AppState, fields: ClientFields) -> Result<(ClientId, String), AdminError> {
    let secret = new_secret();
    let id = store(state, None, fields, Some(&secret)).await?;
    changed(state).await?;
    log::info!("admin: client #{id} created");
    Ok((id, secret))
}

/// A new secret for a client (the old one stops at once): the new one, to show once.
pub async fn rotate_client(state: &AppState, id: ClientId) -> Result<String, AdminError> {
    let secret = new_secret();
    let (hash, hint) = (key_hash_hex(&secret), mask_key(&secret));
    let found = crate::db::run(&state.db, move |c| client_rows::set_key(c, id, &hash, &hint)).await?;
    if !found {
        return Err(AdminError::NotFound(format!("no client with id {id}")));
    }
    changed(state).await?;
    log::info!("admin: client #{id} has a new key");
    Ok(secret)
}

pub async fn delete_client(state: &AppState, id: ClientId) -> Result<(), AdminError> {
    let found = crate::db::run(&state.db, move |c| client_rows::delete(c, id)).await?;
    if !found {
        return Err(AdminError::NotFound(format!("no client with id {id}")));
    }
    changed(state).await?;
    log::info!("admin: client #{id} deleted");
    Ok(())
}

/// A client's view with its secret in `key` (just created or rotated).
async fn with_secret(
    state: &AppState,
    id: ClientId,
    secret: String,
) -> Result<serde_json::Value, AdminError> {
    let mut answer = serde_json::to_value(view(row(state, id).await?, state))
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    answer["key"] = json!(secret);
    Ok(answer)
}
