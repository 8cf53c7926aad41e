//! The owner's model catalog: what the JSON API (`api`) and the page
//! (`page`) share: storing an entry or dropping it, and telling the other
//! instances (each uses it within a poll of their listener).

pub mod api;
pub mod page;

use actix_web::web;
use serde_json::Value;

use super::error::AdminError;
use crate::catalog::table::PutError;
use crate::catalog::Entry;
use crate::db::notify::Changed;
use crate::state::AppState;

/// A model id as the path carries it (URL-encoded, slashes as `%2F` or not).
pub fn id_of(raw: &str) -> Result<String, AdminError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(b) = hex else {
                    return Err(AdminError::BadRequest("the model id is badly encoded".into()));
                };
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| AdminError::BadRequest("the model id is not UTF-8".into()))
}

/// Stores the owner's entry for `id`, uses it here at once, and tells the
/// other instances. Answers the entry it makes.
pub async fn put(state: &AppState, id: String, body: Value) -> Result<Entry, AdminError> {
    let (catalog, db, notifier) = (state.catalog.clone(), state.db.clone(), state.notifier.clone());
    let entry = web::block(move || {
        let entry = catalog.put(&db, &id, &body)?;
        notifier.tell(&Changed::catalog());
        Ok::<_, PutError>(entry)
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))?
    .map_err(|e| match e {
        PutError::Invalid(why) => AdminError::BadRequest(why),
        PutError::Db(e) => AdminError::Internal(e.to_string()),
    })?;
    log::info!("admin: model catalog entry for {:?} saved", entry.id);
    Ok(entry)
}

/// Drops the owner's entry for `id`; answers whether there was one.
pub async fn reset(state: &AppState, id: String) -> Result<bool, AdminError> {
    let (catalog, db, notifier) = (state.catalog.clone(), state.db.clone(), state.notifier.clone());
    let shown = id.clone();
    let gone = web::block(move || {
        let gone = catalog.delete(&db, &id)?;
        if gone {
            notifier.tell(&Changed::catalog());
        }
        Ok::<_, crate::db::DbError>(gone)
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))?
    .map_err(|e| AdminError::Internal(e.to_string()))?;
    if gone {
        log::info!("admin: model catalog entry for {shown:?} dropped");
    }
    Ok(gone)
}
