//! What the request path learned from a call (a key found dead, broke or
//! rate-limited; a trial's result): persisted and told to the others.

use std::collections::BTreeMap;

use actix::prelude::*;

use super::{PoolActor, Unsaved, INCONCLUSIVE_TRIAL_RETRY};
use crate::db::models::{is_own_account, CooldownRow};
use crate::db::notify::Changed;
use crate::db::queries::{cooldowns, keys};
use crate::db::{now_ms, DbConn, CONNECT_WAIT};
use crate::pool::{Cooldown, KeyId, KeyState};

/// What the request path saw; the key's atomics already reflect it.
#[derive(Debug, Clone)]
pub enum KeyEventKind {
    Invalid(String),
    Exhausted(String),
    RateLimited {
        cooldown: Cooldown,
        reason: String,
    },
    Error(String),
    /// The trial call of an exhausted key succeeded: the key (already active
    /// again) and the other keys of its account are back.
    TrialSucceeded,
    /// The trial answered "no funds" again: wait another interval.
    TrialFailed(String),
    /// The trial told nothing (429, 5xx, client gone): offer it again soon.
    TrialInconclusive,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct KeyEvent {
    pub key_id: KeyId,
    pub kind: KeyEventKind,
}

impl Handler<KeyEvent> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: KeyEvent, ctx: &mut Context<Self>) {
        // What the other instances must see: states and cooldowns, not an error text.
        let change = match &msg.kind {
            KeyEventKind::Error(_) | KeyEventKind::TrialInconclusive => Changed::default(),
            KeyEventKind::RateLimited { .. } => Changed::cooldowns(),
            // The account's other keys are back too.
            KeyEventKind::TrialSucceeded => match self.keys.get(&msg.key_id) {
                Some(k) if !is_own_account(&k.account.id) => {
                    Changed::keys(self.keys.values().filter(|o| o.account.id == k.account.id).map(|o| o.id))
                }
                _ => Changed::keys([msg.key_id]),
            },
            _ => Changed::keys([msg.key_id]),
        };
        self.apply_event(msg, ctx);
        self.notify_others(change);
    }
}

impl PoolActor {
    fn apply_event(&mut self, msg: KeyEvent, ctx: &mut Context<Self>) {
        let Some(key) = self.keys.get(&msg.key_id).cloned() else { return };
        if !matches!(msg.kind, KeyEventKind::RateLimited { .. } | KeyEventKind::Error(_)) {
            // A state changed: the selection's list of active keys follows.
            self.publish_soon(ctx);
        }
        let now = now_ms();
        // Without a connection (the database is down) the writes below are
        // skipped; what must not be lost (a key found invalid or broke)
        // waits in `unsaved` for the next tick.
        let mut conn = self
            .db
            .get_timeout(CONNECT_WAIT)
            .inspect_err(|e| log::error!("pool: no database connection, key states are kept for later: {e}"))
            .ok();
        let demote = |conn: &mut Option<DbConn>,
                      unsaved: &mut BTreeMap<KeyId, Unsaved>,
                      state: KeyState,
                      reason: &str| {
            // The live key (which may be a newer Arc than the request held) gets
            // the state too; a key the owner disabled stays disabled.
            key.demote(state);
            if key.state() == KeyState::Disabled {
                return;
            }
            let written = Self::write(conn, "persist state", |c| {
                keys::set_state(c, key.id, state.as_str(), Some(reason), now)
            });
            if written.is_none() {
                unsaved.insert(key.id, Unsaved { state, reason: reason.to_string(), at: now });
            }
        };
        match msg.kind {
            KeyEventKind::Invalid(reason) => {
                log::warn!("key {} is invalid: {reason}", key.masked);
                demote(&mut conn, &mut self.unsaved, KeyState::Invalid, &reason);
            }
            KeyEventKind::Exhausted(reason) => {
                log::warn!("key {} has no balance: {reason}", key.masked);
                demote(&mut conn, &mut self.unsaved, KeyState::Exhausted, &reason);
                if key.balance().is_some() {
                    // A balance that can be read is zero now; an unknown one stays unknown.
                    key.set_balance(Some(0.0));
                    Self::write(&mut conn, "persist balance", |c| keys::set_balance(c, key.id, 0.0));
                }
                if key.needs_trial() {
                    self.queue_trial_from(key.id, now);
                }
            }
            KeyEventKind::RateLimited { cooldown, reason } => {
                log::info!(
                    "account of key {} cooling for {} until {}",
                    key.masked,
                    cooldown.model,
                    crate::db::iso(Some(cooldown.until_ms)).unwrap_or_default()
                );
                let row = CooldownRow {
                    account: key.account.id.clone(),
                    model: cooldown.model,
                    until_ms: cooldown.until_ms,
                    strikes: cooldown.strikes.min(i32::MAX as u32) as i32,
                    reason: Some(reason.clone()),
                };
                Self::write(&mut conn, "persist cooldown", |c| cooldowns::upsert(c, &row));
                Self::write(&mut conn, "persist error", |c| keys::set_error(c, key.id, &reason));
            }
            KeyEventKind::Error(reason) => {
                Self::write(&mut conn, "persist error", |c| keys::set_error(c, key.id, &reason));
            }
            KeyEventKind::TrialSucceeded => {
                key.end_trial();
                let mut back = vec![key.clone()];
                if !is_own_account(&key.account.id) {
                    // The account has funds again: so do its other keys.
                    back.extend(
                        self.keys
                            .values()
                            .filter(|k| k.id != key.id && k.account.id == key.account.id && k.revive())
                            .cloned(),
                    );
                }
                // Back in the selection now, not after the usual short delay.
                self.publish();
                for k in back {
                    log::info!("key {} serves again: its trial call succeeded", k.masked);
                    if k.state() == KeyState::Active {
                        Self::write(&mut conn, "persist revival", |c| {
                            keys::set_state_checked(c, k.id, KeyState::Active.as_str(), true, None, now)
                        });
                    }
                }
            }
            KeyEventKind::TrialFailed(reason) => {
                key.end_trial();
                log::info!("key {} still has no balance: {reason}", key.masked);
                Self::write(&mut conn, "persist trial", |c| {
                    keys::set_state_checked(c, key.id, key.state().as_str(), false, Some(&reason), now)
                });
                if key.needs_trial() {
                    self.queue_trial_from(key.id, now);
                }
            }
            KeyEventKind::TrialInconclusive => {
                key.end_trial();
                if key.needs_trial() {
                    let wait = self.retry_interval.unwrap_or_default().min(INCONCLUSIVE_TRIAL_RETRY);
                    self.queue_trial_in(key.id, wait, now);
                }
            }
        }
    }
}
