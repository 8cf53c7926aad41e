//! Storing keys an import checked: one transaction, then the pool takes them.
//! (The workflow before it, dedupe and checks, is `pool::import`.)

use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use super::PoolActor;
use crate::db::models::{KeyRow, NewKey};
use crate::db::notify::Changed;
use crate::db::queries::keys;
use crate::db::{now_ms, DbError};
use crate::pool::check::CheckOutcome;
use crate::pool::{mask_key, KeyId, KeyState};

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AddStatus {
    Added,
    Duplicate,
    Invalid,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct AddResult {
    pub key: String,
    pub status: AddStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<KeyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl AddResult {
    pub fn without_key(key: String, status: AddStatus, message: Option<String>) -> Self {
        AddResult { key, status, id: None, state: None, balance: None, message }
    }
}

/// Stores checked keys. Invalid keys are stored as `invalid` (shown, exported
/// with `?all=1`, re-checked now and then) so that nothing the owner typed is
/// silently lost; keys whose check failed for a passing reason are stored as
/// active with an unknown balance, to be confirmed by the next refresh.
#[derive(Message)]
#[rtype(result = "Vec<AddResult>")]
pub struct AddKeys {
    pub keys: Vec<CheckedKey>,
    /// The owner's account for these keys, where the upstream names none.
    pub label: Option<String>,
}

/// A key, what its check said, and the upstream origin it answered on when
/// that is not the configured one (a .com key in a .cn pool, or the reverse).
pub struct CheckedKey {
    pub secret: String,
    pub outcome: CheckOutcome,
    pub base_url: Option<String>,
}

impl Handler<AddKeys> for PoolActor {
    type Result = MessageResult<AddKeys>;

    fn handle(&mut self, msg: AddKeys, _: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        let mut results = Vec::with_capacity(msg.keys.len());
        // Each key as the answers show it, masked once.
        let masked_all: Vec<String> = msg.keys.iter().map(|k| mask_key(&k.secret)).collect();
        let mut conn = match self.db.get() {
            Ok(c) => c,
            Err(e) => {
                log::error!("pool: import: {e}");
                let failed = masked_all.into_iter().map(|masked| {
                    AddResult::without_key(masked, AddStatus::Failed, Some("database unavailable".into()))
                });
                return MessageResult(failed.collect());
            }
        };
        // One transaction for the whole import (10,000 keys: one commit, not
        // 10,000); the pool learns of the keys once it has committed.
        let label = msg.label;
        let mut stored: Vec<KeyRow> = Vec::new();
        let vault = self.vault.clone();
        let committed = diesel::Connection::transaction::<_, DbError, _>(&mut *conn, |conn| {
            // A `keys reencrypt` run while this instance serves: what it
            // would seal now could not be read after a restart.
            keys::check_key(conn, &vault).map_err(|_| {
                DbError::Sealed("the key encryption key changed since this instance started (`keys reencrypt`); restart it with the new key".into())
            })?;
            // One id for each key (a duplicate's is left unused).
            let ids = keys::reserve_ids(conn, msg.keys.len())?;
            for ((CheckedKey { secret, outcome, base_url }, masked), id) in
                msg.keys.into_iter().zip(masked_all.iter().cloned()).zip(ids)
            {
                match keys::find_duplicate(conn, &vault, &secret) {
                    Ok(Some(_)) => {
                        results.push(AddResult::without_key(masked, AddStatus::Duplicate, None));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        results.push(AddResult::without_key(masked, AddStatus::Failed, Some(e.to_string())));
                        continue;
                    }
                }
                let (state, balance, account, error, status) = match &outcome {
                    CheckOutcome::Valid { balance, account_id, account_name, .. } => {
                        // Unknown is not zero: a key whose balance cannot be read serves.
                        let state = match balance {
                            Some(b) if *b <= 0.0 => KeyState::Exhausted,
                            _ => KeyState::Active,
                        };
                        (
                            state,
                            *balance,
                            account_id.clone().map(|a| (a, account_name.clone())),
                            None,
                            AddStatus::Added,
                        )
                    }
                    CheckOutcome::Invalid { reason } => {
                        (KeyState::Invalid, None, None, Some(reason.clone()), AddStatus::Invalid)
                    }
                    CheckOutcome::Exhausted { reason } => {
                        (KeyState::Exhausted, None, None, Some(reason.clone()), AddStatus::Added)
                    }
                    CheckOutcome::Transient { reason } => {
                        (KeyState::Active, None, None, Some(reason.clone()), AddStatus::Failed)
                    }
                };
                let row = NewKey {
                    id: None,
                    key: secret.clone(),
                    state: state.as_str().to_string(),
                    balance,
                    account_id: account.as_ref().map(|a| a.0.clone()),
                    account_name: account.as_ref().and_then(|a| a.1.clone()),
                    base_url,
                    gift_balance: match &outcome {
                        CheckOutcome::Valid { gift, .. } => *gift,
                        _ => None,
                    },
                    charge_balance: match &outcome {
                        CheckOutcome::Valid { charge, .. } => *charge,
                        _ => None,
                    },
                    account_label: label.clone(),
                    last_checked: (!matches!(outcome, CheckOutcome::Transient { .. })).then_some(now),
                    last_error: error.clone(),
                    state_changed_at: Some(now),
                    created_at: now,
                    key_hash: None,
                };
                match keys::insert(conn, &vault, id, &row) {
                    Ok(inserted) => {
                        stored.push(inserted.clone());
                        results.push(AddResult {
                            key: masked,
                            status,
                            id: Some(inserted.key_id()),
                            state: Some(state.as_str()),
                            balance,
                            message: error,
                        });
                    }
                    Err(e) => {
                        results.push(AddResult::without_key(masked, AddStatus::Failed, Some(e.to_string())))
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = committed {
            log::error!("pool: import: {e}");
            // Every key not found a duplicate, including those the
            // transaction had not reached when it failed, says why.
            results = masked_all
                .into_iter()
                .enumerate()
                .map(|(i, masked)| match results.get(i) {
                    Some(r) if r.status == AddStatus::Duplicate => r.clone(),
                    _ => AddResult::without_key(masked, AddStatus::Failed, Some(format!("not stored: {e}"))),
                })
                .collect();
            stored.clear();
        }
        let added = Changed::keys(stored.iter().map(|k| k.key_id()));
        for inserted in stored {
            let account = self.account(&inserted.account_key());
            let key = Arc::new(self.key_from_row(&inserted, account));
            if key.needs_trial() {
                self.queue_trial_from(key.id, now);
            }
            self.keys.insert(key.id, key);
        }
        self.publish();
        self.notify_others(added);
        MessageResult(results)
    }
}
