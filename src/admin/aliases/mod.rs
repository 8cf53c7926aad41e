//! The owner's model aliases: what the JSON API (`api`) and the page
//! (`page`) share: checking a new table, storing it, and telling the other
//! instances (each uses it within a poll of their listener).

pub mod api;
pub mod page;

use actix_web::web;

use super::error::AdminError;
use crate::aliases::Aliases;
use crate::db::notify::Changed;
use crate::db::DbError;
use crate::state::AppState;

/// Stores `table`, uses it here at once, and tells the other instances.
pub async fn replace(state: &AppState, table: Aliases) -> Result<(), AdminError> {
    let (aliases, db, notifier) = (state.aliases.clone(), state.db.clone(), state.notifier.clone());
    let n = table.rules().len();
    web::block(move || {
        aliases.store(&db, table)?;
        notifier.tell(&Changed::aliases());
        Ok::<_, DbError>(())
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))??;
    log::info!("admin: model aliases replaced ({n} rules)");
    Ok(())
}
