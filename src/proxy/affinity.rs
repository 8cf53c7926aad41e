//! Account-bound resources: files, batches, video jobs and custom voices
//! belong to the SiliconFlow account that created them. The proxy records
//! each new id with its key, and sends every later call naming it to that key
//! (or, if that key is gone, to another key of the same account), never to a
//! stranger.

use std::sync::Arc;

use serde_json::Value;

use super::errors::{ErrorKind, ProxyError};
use crate::clients::{Client, ENV_CLIENT_ID};
use crate::db::models::ResourceRow;
use crate::db::now_ms;
use crate::db::queries::resources;
use crate::pool::{KeyId, KeyState, PoolKey};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    File,
    Batch,
    Video,
    Voice,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::File => "file",
            ResourceKind::Batch => "batch",
            ResourceKind::Video => "video job",
            ResourceKind::Voice => "voice",
        }
    }
}

/// The id a create call answered with: `data.id` in SiliconFlow's envelope
/// (files), `id` (batches), `requestId` (video), `uri` (voices).
pub fn created_id(kind: ResourceKind, body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let found = match kind {
        ResourceKind::File => v.pointer("/data/id").or_else(|| v.get("id")),
        ResourceKind::Batch => v.get("id"),
        ResourceKind::Video => v.get("requestId"),
        ResourceKind::Voice => v.get("uri"),
    }?;
    let id = match found {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    // Stored for later lookups: bounded like every stored text (voice uris
    // hold a name, so they may be longer than the ids of the other kinds),
    // and never with a control character (PostgreSQL refuses a NUL; no later
    // call could name such an id: `valid_id`).
    (id.len() <= 1024 && !id.contains(char::is_control)).then_some(id)
}

/// Ids that go into upstream paths or lookups: no slashes, dots, white space
/// or control characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id.chars().all(|c| {
            !c.is_control() && !c.is_whitespace() && !matches!(c, '/' | '\\' | '.' | '?' | '#' | '%')
        })
}

pub fn check_id(kind: ResourceKind, id: &str) -> Result<(), ProxyError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ProxyError::bad_request(format!(
            "invalid {} id {:?}: ids may not contain slashes, dots, spaces or control characters",
            kind.as_str(),
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// Records a new resource: its key (so its account serves it) and the
/// client that created it (so no other client reaches it).
pub async fn record(
    state: &AppState,
    kind: ResourceKind,
    id: &str,
    key: &PoolKey,
    client: Option<&Client>,
    lines: Option<i64>,
) -> Result<(), String> {
    let row = ResourceRow {
        kind: kind.as_str().to_string(),
        resource_id: id.to_string(),
        key_id: key.id.0,
        account: Some(key.account.id.clone()),
        created_at: now_ms(),
        client_id: client.map(|c| c.id.0),
        lines,
        tokens: None,
    };
    crate::db::run(&state.db, move |conn| resources::upsert(conn, &row)).await.map_err(|e| e.to_string())
}

/// The lines of a batch input file, where they were counted at its upload.
pub async fn lines(state: &AppState, file_id: &str) -> Option<i64> {
    let (k, i) = (ResourceKind::File.as_str().to_string(), file_id.to_string());
    crate::db::run(&state.db, move |conn| resources::find(conn, &k, &i)).await.ok().flatten()?.lines
}

/// Keys that may read or manage an existing resource: not invalid, not
/// disabled. (An exhausted key can still read a batch's status.)
fn can_manage(k: &PoolKey) -> bool {
    !matches!(k.state(), KeyState::Invalid | KeyState::Disabled)
}

/// Whether `caller` may reach a resource created by `creator`: API_KEY's
/// client and an open proxy reach every one; a client, only its own.
pub fn reaches(caller: Option<&Client>, creator: Option<i64>) -> bool {
    match caller {
        None => true,
        Some(c) if c.id == ENV_CLIENT_ID => true,
        Some(c) => creator == Some(c.id.0),
    }
}

/// The key to use for a resource: its creator, or another key of its
/// account. A resource another client created is unknown to this one (404,
/// as for any id the proxy never saw: its existence is not told).
pub async fn owner(
    state: &AppState,
    kind: ResourceKind,
    id: &str,
    caller: Option<&Client>,
) -> Result<Arc<PoolKey>, ProxyError> {
    check_id(kind, id)?;
    let (k, i) = (kind.as_str().to_string(), id.to_string());
    let row = crate::db::run(&state.db, move |conn| resources::find(conn, &k, &i))
        .await
        .map_err(|e| ProxyError::new(ErrorKind::Unavailable, format!("database unavailable: {e}")))?;
    let Some(row) = row.filter(|r| reaches(caller, r.client_id)) else {
        return Err(ProxyError::new(
            ErrorKind::NotFound,
            format!(
                "unknown {} {id}: it was not created through this proxy, so no key in the pool is known to own it",
                kind.as_str()
            ),
        ));
    };
    let snapshot = state.pool.snapshot();
    if let Some(k) = snapshot.get(KeyId(row.key_id)).filter(|k| can_manage(k)) {
        return Ok(k.clone());
    }
    // Real account ids only: "key:N" accounts have exactly one key.
    if let Some(account) = row.account.as_deref().filter(|a| !crate::db::models::is_own_account(a)) {
        if let Some(k) = snapshot.keys.iter().find(|k| k.account.id == account && can_manage(k)) {
            return Ok(k.clone());
        }
    }
    let why = match snapshot.get(KeyId(row.key_id)) {
        None => "has been deleted from the pool".to_string(),
        Some(k) => format!("({}) is {}", k.masked, k.state().as_str()),
    };
    Err(ProxyError::new(
        ErrorKind::Unavailable,
        format!(
            "{} {id} belongs to the account of a key that {why}, and no other key of that account is usable; \
             it cannot be reached through another account",
            kind.as_str()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_created_ids_from_each_shape() {
        let file = br#"{"code":20000,"message":"Ok","status":true,"data":{"id":"file-abc","object":"file","createdAt":1}}"#;
        assert_eq!(created_id(ResourceKind::File, file).as_deref(), Some("file-abc"));
        assert_eq!(
            created_id(ResourceKind::Batch, br#"{"id":"batch_1","object":"batch"}"#).as_deref(),
            Some("batch_1")
        );
        assert_eq!(created_id(ResourceKind::Video, br#"{"requestId":"r-9"}"#).as_deref(), Some("r-9"));
        assert_eq!(
            created_id(ResourceKind::Voice, br#"{"uri":"speech:n:a:b"}"#).as_deref(),
            Some("speech:n:a:b")
        );
        assert_eq!(created_id(ResourceKind::Batch, b"not json"), None);
    }

    #[test]
    fn ids_with_path_tricks_are_refused() {
        for ok in ["batch_abc-123", "speech:name:acc:xyz", "file-1"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a.b", "a b", "a\nb", "a\u{0}b", "a%2Fb", "a?x", &"x".repeat(300)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
