//! Refresh results: each key's check moves it between states, in one transaction.

use actix::prelude::*;
use serde::Serialize;

use super::PoolActor;
use crate::db::notify::Changed;
use crate::db::queries::keys;
use crate::db::{now_ms, DbError};
use crate::pool::check::CheckOutcome;
use crate::pool::{KeyId, KeyState};

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct CheckSummary {
    pub checked: usize,
    pub active: usize,
    pub exhausted: usize,
    pub invalid: usize,
    /// Checks that failed for a passing reason: those keys were left as they were.
    pub unchanged: usize,
    pub skipped: usize,
}

impl CheckSummary {
    pub fn add(&mut self, o: &CheckSummary) {
        self.checked += o.checked;
        self.active += o.active;
        self.exhausted += o.exhausted;
        self.invalid += o.invalid;
        self.unchanged += o.unchanged;
        self.skipped += o.skipped;
    }
}

/// Applies refresh results. Only a 401 makes a key invalid; timeouts, 5xx and
/// 429 change nothing but `last_error`.
#[derive(Message)]
#[rtype(result = "CheckSummary")]
pub struct ApplyChecks {
    pub outcomes: Vec<(KeyId, CheckOutcome)>,
    /// The owner asked for it (not the schedule): a valid key of unknown
    /// balance is given back its place even if it was exhausted.
    pub manual: bool,
}

impl Handler<ApplyChecks> for PoolActor {
    type Result = MessageResult<ApplyChecks>;

    fn handle(&mut self, msg: ApplyChecks, _: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        let mut summary = CheckSummary::default();
        let Some(mut conn) = Self::log_db("connection", self.db.get().map_err(DbError::from)) else {
            summary.unchanged = msg.outcomes.len();
            return MessageResult(summary);
        };
        let manual = msg.manual;
        let checked = Changed::keys(msg.outcomes.iter().map(|(id, _)| *id));
        // One transaction for the whole refresh (100,000 keys: one commit).
        let written = diesel::Connection::transaction::<_, DbError, _>(&mut *conn, |conn| {
            for (id, outcome) in msg.outcomes {
                let Some(key) = self.keys.get(&id).cloned() else {
                    continue;
                };
                summary.checked += 1;
                key.last_checked.store(now, std::sync::atomic::Ordering::Relaxed);
                let old = key.state();
                // `Some(b)`: the balance to store (`Some(None)` forgets a stale one).
                let (balance, account, error) = match &outcome {
                    CheckOutcome::Valid { balance, account_id, account_name, .. } => {
                        (Some(*balance), account_id.as_ref().map(|a| (a.clone(), account_name.clone())), None)
                    }
                    CheckOutcome::Invalid { reason } | CheckOutcome::Transient { reason } => {
                        (None, None, Some(reason.clone()))
                    }
                    CheckOutcome::Exhausted { reason } => {
                        (key.balance().map(|_| Some(0.0)), None, Some(reason.clone()))
                    }
                };
                match (&outcome, state_after_check(KeyState::Active, &outcome, manual)) {
                    (CheckOutcome::Transient { .. }, _) => summary.unchanged += 1,
                    (_, KeyState::Active) => summary.active += 1,
                    (_, KeyState::Exhausted) => summary.exhausted += 1,
                    (_, KeyState::Invalid) => summary.invalid += 1,
                    _ => {}
                }
                let new_state = state_after_check(old, &outcome, manual);
                if let Some(b) = balance {
                    key.set_balance(b);
                }
                key.set_state(new_state);
                if key.needs_trial() && old != KeyState::Exhausted {
                    self.queue_trial_from(id, now);
                }
                Self::log_db(
                    "record check",
                    keys::record_check(
                        conn,
                        id,
                        new_state.as_str(),
                        new_state != old,
                        balance,
                        match &outcome {
                            CheckOutcome::Valid { gift, charge, .. } => Some((*gift, *charge)),
                            _ => None,
                        },
                        account.as_ref().map(|(a, n)| (a.as_str(), n.as_deref())),
                        error.as_deref(),
                        now,
                    ),
                );
                if let Some((account_id, _)) = account {
                    if key.account.id != account_id {
                        self.rehome(id, &account_id);
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = written {
            log::error!("pool: record checks: {e}");
        }
        // States and balances changed: the selection is rebuilt.
        self.publish();
        self.notify_others(checked);
        MessageResult(summary)
    }
}

/// The state a key moves to after a check. Only a 401 makes a key invalid;
/// a passing failure (timeout, 5xx, 429) changes nothing; money brings an
/// exhausted or invalid key back; a valid key of unknown balance is back from
/// invalid, but back from exhausted only when the owner asked (the schedule
/// leaves that to a trial call, since a model list answers at zero balance
/// too); the owner's "disabled" outranks whatever the upstream says.
pub fn state_after_check(old: KeyState, outcome: &CheckOutcome, manual: bool) -> KeyState {
    if old == KeyState::Disabled {
        return KeyState::Disabled;
    }
    match outcome {
        CheckOutcome::Valid { balance: Some(b), .. } if *b > 0.0 => KeyState::Active,
        CheckOutcome::Valid { balance: Some(_), .. } | CheckOutcome::Exhausted { .. } => KeyState::Exhausted,
        CheckOutcome::Valid { balance: None, .. } if old == KeyState::Exhausted && !manual => {
            KeyState::Exhausted
        }
        CheckOutcome::Valid { balance: None, .. } => KeyState::Active,
        CheckOutcome::Invalid { .. } => KeyState::Invalid,
        CheckOutcome::Transient { .. } => old,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(balance: f64) -> CheckOutcome {
        CheckOutcome::Valid {
            balance: Some(balance),
            gift: None,
            charge: None,
            account_id: None,
            account_name: None,
        }
    }
    #[test]
    fn check_outcomes_move_keys_between_states() {
        use KeyState::*;
        let transient = CheckOutcome::Transient { reason: "503".into() };
        let invalid = CheckOutcome::Invalid { reason: "401".into() };
        let broke = CheckOutcome::Exhausted { reason: "30001".into() };
        let unknown = CheckOutcome::valid_unknown();
        for manual in [false, true] {
            for old in [Active, Exhausted, Invalid] {
                assert_eq!(
                    state_after_check(old, &transient, manual),
                    old,
                    "a passing failure changes nothing"
                );
                assert_eq!(state_after_check(old, &valid(1.0), manual), Active);
                assert_eq!(state_after_check(old, &valid(0.0), manual), Exhausted);
                assert_eq!(state_after_check(old, &valid(-0.01), manual), Exhausted);
                assert_eq!(state_after_check(old, &invalid, manual), Invalid);
                assert_eq!(state_after_check(old, &broke, manual), Exhausted);
            }
            for outcome in [&transient, &invalid, &broke, &valid(5.0), &unknown] {
                assert_eq!(state_after_check(Disabled, outcome, manual), Disabled);
            }
            assert_eq!(state_after_check(Active, &unknown, manual), Active);
            assert_eq!(state_after_check(Invalid, &unknown, manual), Active, "valid again");
        }
        // A model list answers at zero balance too: only the owner's refresh
        // (or a trial call) ends an exhaustion when no balance can be read.
        assert_eq!(state_after_check(Exhausted, &unknown, false), Exhausted);
        assert_eq!(state_after_check(Exhausted, &unknown, true), Active);
    }
}
