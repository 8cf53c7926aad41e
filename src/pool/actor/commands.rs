//! The owner's commands on keys: enable, disable, delete, name an account.

use actix::prelude::*;

use super::PoolActor;
use crate::db::models::{account_key, is_upstream_account};
use crate::db::notify::Changed;
use crate::db::queries::keys;
use crate::db::{now_ms, DbError};
use crate::pool::{KeyId, KeyState};

/// Why a key command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no key with id {0}")]
    NoSuchKey(KeyId),
    #[error(transparent)]
    Database(#[from] DbError),
}

#[derive(Message)]
#[rtype(result = "Result<(), CommandError>")]
pub enum KeyCommand {
    Enable(KeyId),
    Disable(KeyId),
    Delete(KeyId),
    /// Puts a key in an account of the owner's naming (`None` takes it out),
    /// for keys whose upstream names no account.
    SetAccount(KeyId, Option<String>),
}

/// Checks an account label: trimmed, 1-64 printable characters; empty = none.
pub fn parse_label(raw: Option<&str>) -> Result<Option<String>, String> {
    let Some(l) = raw.map(str::trim).filter(|l| !l.is_empty()) else { return Ok(None) };
    if l.chars().count() > 64 || l.chars().any(char::is_control) {
        return Err("an account name is 1 to 64 printable characters".into());
    }
    Ok(Some(l.to_string()))
}

impl Handler<KeyCommand> for PoolActor {
    type Result = Result<(), CommandError>;

    fn handle(&mut self, msg: KeyCommand, _: &mut Context<Self>) -> Self::Result {
        let id = match &msg {
            KeyCommand::Enable(id) | KeyCommand::Disable(id) | KeyCommand::Delete(id) => *id,
            KeyCommand::SetAccount(id, _) => *id,
        };
        self.command(msg)?;
        self.notify_others(Changed::keys([id]));
        Ok(())
    }
}

impl PoolActor {
    fn command(&mut self, msg: KeyCommand) -> Result<(), CommandError> {
        let now = now_ms();
        let mut conn = self.db.get().map_err(DbError::from)?;
        match msg {
            KeyCommand::Enable(id) | KeyCommand::Disable(id) => {
                let key = self.keys.get(&id).cloned().ok_or(CommandError::NoSuchKey(id))?;
                let state = match msg {
                    KeyCommand::Disable(_) => KeyState::Disabled,
                    // The owner's word ends an exhaustion too: if the account is
                    // still broke, the next call says so and the key goes back.
                    _ => KeyState::Active,
                };
                keys::set_state(&mut conn, id, state.as_str(), None, now)?;
                key.set_state(state);
                self.publish();
                Ok(())
            }
            KeyCommand::Delete(id) => {
                if !keys::delete(&mut conn, id)? {
                    return Err(CommandError::NoSuchKey(id));
                }
                self.keys.remove(&id);
                self.publish();
                Ok(())
            }
            KeyCommand::SetAccount(id, label) => {
                let key = self.keys.get(&id).cloned().ok_or(CommandError::NoSuchKey(id))?;
                if !keys::set_label(&mut conn, id, label.as_deref())? {
                    return Err(CommandError::NoSuchKey(id));
                }
                if !is_upstream_account(&key.account.id) {
                    self.rehome(id, &account_key(None, label.as_deref(), id));
                    self.publish();
                }
                Ok(())
            }
        }
    }
}

/// Deletes every key in a state (the owner's "delete all invalid"): the count.
#[derive(Message)]
#[rtype(result = "Result<usize, CommandError>")]
pub struct DeleteInState(pub KeyState);

impl Handler<DeleteInState> for PoolActor {
    type Result = Result<usize, CommandError>;

    fn handle(&mut self, msg: DeleteInState, _: &mut Context<Self>) -> Self::Result {
        let mut conn = self.db.get().map_err(DbError::from)?;
        let ids: Vec<KeyId> = self.keys.values().filter(|k| k.state() == msg.0).map(|k| k.id).collect();
        let deleted = diesel::Connection::transaction::<_, DbError, _>(&mut *conn, |conn| {
            let mut n = 0;
            for id in &ids {
                if keys::delete(conn, *id)? {
                    n += 1;
                }
            }
            Ok(n)
        })?;
        for id in &ids {
            self.keys.remove(id);
        }
        self.publish();
        self.notify_others(Changed::keys(ids));
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_labels_are_short_printable_names() {
        assert_eq!(parse_label(None), Ok(None));
        assert_eq!(parse_label(Some("  ")), Ok(None));
        assert_eq!(parse_label(Some(" team-a ")), Ok(Some("team-a".into())));
        assert!(parse_label(Some(&"x".repeat(65))).is_err());
        assert!(parse_label(Some("a\nb")).is_err());
    }
}
