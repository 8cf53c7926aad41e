//! Another instance's changes, taken from the shared database.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::PoolActor;
use crate::db::models::KeyRow;
use crate::db::notify::Changed;
use crate::db::queries::{cooldowns, keys};
use crate::db::{now_ms, DbError, CONNECT_WAIT};
use crate::pool::{Account, Cooldown, KeyState};

/// Another instance changed the shared database: take what it names (keys
/// new, deleted, their states, balances and accounts; the cooldowns; or
/// everything), keeping this instance's live counters. Answers how many
/// keys and cooldowns changed.
#[derive(Message)]
#[rtype(result = "Result<usize, DbError>")]
pub struct Reload(pub Changed);

impl Handler<Reload> for PoolActor {
    type Result = Result<usize, DbError>;

    fn handle(&mut self, msg: Reload, _: &mut Context<Self>) -> Self::Result {
        // The database is back (a reload follows each reconnection): what it
        // could not take before goes first, so that the rows read are current.
        let written = self.persist_unsaved();
        self.notify_others(written);
        let change = msg.0;
        let mut conn = self.db.get_timeout(CONNECT_WAIT)?;
        let rows = if change.all {
            keys::all(&mut conn, &self.vault)?
        } else if change.keys.is_empty() {
            Vec::new()
        } else {
            keys::by_ids(&mut conn, &self.vault, &change.keys.iter().copied().collect::<Vec<_>>())?
        };
        let cooldowns = if change.all || change.cooldowns { cooldowns::all(&mut conn)? } else { Vec::new() };
        drop(conn);
        let now = now_ms();
        let mut changed = 0;
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            seen.insert(row.key_id());
            changed += usize::from(self.take_row(row));
        }
        let before = self.keys.len();
        if change.all {
            self.keys.retain(|id, _| seen.contains(id));
        } else {
            // Named and not found: deleted on the other instance.
            for id in change.keys.iter().filter(|id| !seen.contains(id)) {
                self.keys.remove(id);
            }
        }
        changed += before - self.keys.len();
        if !cooldowns.is_empty() {
            let by_account: HashMap<&str, &Arc<Account>> =
                self.keys.values().map(|k| (k.account.id.as_str(), &k.account)).collect();
            for c in cooldowns.iter().filter(|c| c.until_ms > now) {
                if let Some(account) = by_account.get(c.account.as_str()) {
                    let strikes = c.strikes.max(1) as u32;
                    if account.merge(&Cooldown { model: c.model.clone(), until_ms: c.until_ms, strikes }) {
                        changed += 1;
                    }
                }
            }
        }
        // A new snapshot only for a change: it restarts the strategies' turns.
        if changed > 0 {
            self.publish();
        }
        Ok(changed)
    }
}

impl PoolActor {
    /// Takes a key's row as another instance wrote it; answers whether
    /// anything changed.
    fn take_row(&mut self, row: &KeyRow) -> bool {
        let state = KeyState::parse(&row.state).unwrap_or(KeyState::Active);
        let id = row.key_id();
        match self.keys.get(&id).cloned() {
            Some(key) => {
                let mut differs = false;
                if key.state() != state && !self.unsaved.contains_key(&id) {
                    key.set_state(state);
                    differs = true;
                }
                if key.balance() != row.balance {
                    key.set_balance(row.balance);
                    differs = true;
                }
                let account = row.account_key();
                if key.account.id != account {
                    self.rehome(id, &account);
                    differs = true;
                }
                differs
            }
            None => {
                let account = self.account(&row.account_key());
                let key = Arc::new(self.key_from_row(row, account));
                if key.needs_trial() {
                    let since = row.state_changed_at.unwrap_or(0).max(row.last_checked.unwrap_or(0));
                    self.queue_trial_from(key.id, since);
                }
                self.keys.insert(key.id, key);
                true
            }
        }
    }
}
