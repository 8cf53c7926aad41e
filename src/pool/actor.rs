//! The pool actor owns every change to the key pool: it writes the database
//! and publishes the snapshot that the request path reads. The request path
//! itself only flips atomics for an immediate effect and tells this actor.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use super::check::CheckOutcome;
use super::{mask_key, Account, Cooldown, KeyState, PoolKey, PoolShared, PoolSnapshot};
use crate::db::models::{CooldownRow, KeyRow, NewKey};
use crate::db::queries::{cooldowns_q, keys};
use crate::db::{now_ms, DbError, DbPool};

pub struct PoolActor {
    db: DbPool,
    shared: Arc<PoolShared>,
    default_base_url: String,
    keys: BTreeMap<i64, Arc<PoolKey>>,
    accounts: HashMap<String, Arc<Account>>,
}

fn account_key(row_account: Option<&str>, id: i64) -> String {
    match row_account {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => format!("key:{id}"),
    }
}

impl PoolActor {
    /// Loads keys and cooldowns from the database and publishes the first
    /// snapshot, before the server accepts requests.
    pub fn load(db: DbPool, shared: Arc<PoolShared>, default_base_url: String) -> Result<Self, DbError> {
        let mut conn = db.get()?;
        let rows = keys::all(&mut conn)?;
        let now = now_ms();
        let mut cooling: HashMap<String, Vec<Cooldown>> = HashMap::new();
        for c in cooldowns_q::all(&mut conn)? {
            if c.until_ms > now - shared.cooldown_policy.max.as_millis() as i64 {
                cooling.entry(c.account).or_default().push(Cooldown {
                    model: c.model,
                    until_ms: c.until_ms,
                    strikes: c.strikes.max(1) as u32,
                });
            }
        }
        drop(conn);
        let mut actor =
            PoolActor { db, shared, default_base_url, keys: BTreeMap::new(), accounts: HashMap::new() };
        for row in rows {
            let acc = account_key(row.account_id.as_deref(), row.id);
            let cds = cooling.remove(&acc).unwrap_or_default();
            let account =
                actor.accounts.entry(acc.clone()).or_insert_with(|| Arc::new(Account::new(acc, cds))).clone();
            let key = actor.key_from_row(&row, account);
            actor.keys.insert(row.id, Arc::new(key));
        }
        actor.publish();
        Ok(actor)
    }

    fn key_from_row(&self, row: &KeyRow, account: Arc<Account>) -> PoolKey {
        PoolKey::new(
            row.id,
            row.key.clone(),
            row.base_url.clone().unwrap_or_else(|| self.default_base_url.clone()),
            account,
            KeyState::parse(&row.state).unwrap_or(KeyState::Active),
            row.balance,
            row.usage_count.max(0) as u64,
            row.last_used,
            row.last_checked,
        )
    }

    fn account(&mut self, id: &str) -> Arc<Account> {
        self.accounts
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Account::new(id.to_string(), Vec::new())))
            .clone()
    }

    fn publish(&self) {
        self.shared.publish(PoolSnapshot { keys: self.keys.values().cloned().collect() });
    }

    /// Moves a key to another account (its first successful check tells which),
    /// keeping its counters.
    fn rehome(&mut self, id: i64, account_id: &str) {
        let Some(old) = self.keys.get(&id).cloned() else {
            return;
        };
        if old.account.id == account_id {
            return;
        }
        let account = self.account(account_id);
        let key = PoolKey::new(
            old.id,
            old.secret.clone(),
            old.base_url.clone(),
            account,
            old.state(),
            old.balance(),
            old.usage_count.load(std::sync::atomic::Ordering::Relaxed),
            Some(old.last_used.load(std::sync::atomic::Ordering::Relaxed)).filter(|t| *t > 0),
            Some(old.last_checked.load(std::sync::atomic::Ordering::Relaxed)).filter(|t| *t > 0),
        );
        self.keys.insert(id, Arc::new(key));
    }

    fn log_db<T>(what: &str, r: Result<T, DbError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                log::error!("pool: {what}: {e}");
                None
            }
        }
    }
}

impl Actor for PoolActor {
    type Context = Context<Self>;
}

/// What the request path saw; the key's atomics already reflect it.
#[derive(Debug, Clone)]
pub enum KeyEventKind {
    Invalid(String),
    Exhausted(String),
    RateLimited { cooldown: Cooldown, reason: String },
    Error(String),
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct KeyEvent {
    pub key_id: i64,
    pub kind: KeyEventKind,
}

impl Handler<KeyEvent> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: KeyEvent, _: &mut Context<Self>) {
        let Some(key) = self.keys.get(&msg.key_id).cloned() else { return };
        let now = now_ms();
        let Some(mut conn) = Self::log_db("connection", self.db.get().map_err(DbError::from)) else { return };
        let mut demote = |state: KeyState, reason: &str| {
            // The live key (which may be a newer Arc than the request held) gets
            // the state too; a key the owner disabled stays disabled.
            key.demote(state);
            if key.state() == KeyState::Disabled {
                return;
            }
            Self::log_db(
                "persist state",
                keys::set_state(&mut conn, key.id, state.as_str(), Some(reason), now),
            );
        };
        match msg.kind {
            KeyEventKind::Invalid(reason) => {
                log::warn!("key {} is invalid: {reason}", key.masked);
                demote(KeyState::Invalid, &reason);
            }
            KeyEventKind::Exhausted(reason) => {
                log::warn!("key {} has no balance: {reason}", key.masked);
                key.set_balance(Some(0.0));
                demote(KeyState::Exhausted, &reason);
                Self::log_db("persist balance", keys::set_balance(&mut conn, key.id, 0.0));
            }
            KeyEventKind::RateLimited { cooldown, reason } => {
                log::info!(
                    "account of key {} cooling for {} until {}",
                    key.masked,
                    cooldown.model,
                    crate::admin::iso(Some(cooldown.until_ms)).unwrap_or_default()
                );
                let row = CooldownRow {
                    account: key.account.id.clone(),
                    model: cooldown.model,
                    until_ms: cooldown.until_ms,
                    strikes: cooldown.strikes.min(i32::MAX as u32) as i32,
                    reason: Some(reason.clone()),
                };
                Self::log_db("persist cooldown", cooldowns_q::upsert(&mut conn, &row));
                Self::log_db("persist error", keys::set_error(&mut conn, key.id, &reason));
            }
            KeyEventKind::Error(reason) => {
                Self::log_db("persist error", keys::set_error(&mut conn, key.id, &reason));
            }
        }
    }
}

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
    pub id: Option<i64>,
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
pub struct AddKeys(pub Vec<CheckedKey>);

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
        let mut results = Vec::with_capacity(msg.0.len());
        let mut conn = match self.db.get() {
            Ok(c) => c,
            Err(e) => {
                log::error!("pool: import: {e}");
                let failed = msg.0.into_iter().map(|c| {
                    AddResult::without_key(
                        mask_key(&c.secret),
                        AddStatus::Failed,
                        Some("database unavailable".into()),
                    )
                });
                return MessageResult(failed.collect());
            }
        };
        for CheckedKey { secret, outcome, base_url } in msg.0 {
            let masked = mask_key(&secret);
            match keys::find_by_key(&mut conn, &secret) {
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
                    let state = if *balance > 0.0 { KeyState::Active } else { KeyState::Exhausted };
                    (
                        state,
                        Some(*balance),
                        account_id.clone().map(|a| (a, account_name.clone())),
                        None,
                        AddStatus::Added,
                    )
                }
                CheckOutcome::Invalid { reason } => {
                    (KeyState::Invalid, None, None, Some(reason.clone()), AddStatus::Invalid)
                }
                CheckOutcome::Exhausted { reason } => {
                    (KeyState::Exhausted, Some(0.0), None, Some(reason.clone()), AddStatus::Added)
                }
                CheckOutcome::Transient { reason } => {
                    (KeyState::Active, None, None, Some(reason.clone()), AddStatus::Failed)
                }
            };
            let row = NewKey {
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
                last_checked: (!matches!(outcome, CheckOutcome::Transient { .. })).then_some(now),
                last_error: error.clone(),
                state_changed_at: Some(now),
                created_at: now,
            };
            match keys::insert(&mut conn, &row) {
                Ok(inserted) => {
                    let acc = account_key(inserted.account_id.as_deref(), inserted.id);
                    let account = self.account(&acc);
                    let key = self.key_from_row(&inserted, account);
                    self.keys.insert(inserted.id, Arc::new(key));
                    results.push(AddResult {
                        key: masked,
                        status,
                        id: Some(inserted.id),
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
        self.publish();
        MessageResult(results)
    }
}

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

/// Applies refresh results. Only a 401 makes a key invalid; timeouts, 5xx and
/// 429 change nothing but `last_error`.
#[derive(Message)]
#[rtype(result = "CheckSummary")]
pub struct ApplyChecks(pub Vec<(i64, CheckOutcome)>);

impl Handler<ApplyChecks> for PoolActor {
    type Result = MessageResult<ApplyChecks>;

    fn handle(&mut self, msg: ApplyChecks, _: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        let mut summary = CheckSummary::default();
        let Some(mut conn) = Self::log_db("connection", self.db.get().map_err(DbError::from)) else {
            summary.unchanged = msg.0.len();
            return MessageResult(summary);
        };
        let mut rehomed = false;
        for (id, outcome) in msg.0 {
            let Some(key) = self.keys.get(&id).cloned() else {
                continue;
            };
            summary.checked += 1;
            key.last_checked.store(now, std::sync::atomic::Ordering::Relaxed);
            let old = key.state();
            let (balance, account, error) = match &outcome {
                CheckOutcome::Valid { balance, account_id, account_name, .. } => {
                    (Some(*balance), account_id.as_ref().map(|a| (a.clone(), account_name.clone())), None)
                }
                CheckOutcome::Invalid { reason } | CheckOutcome::Transient { reason } => {
                    (None, None, Some(reason.clone()))
                }
                CheckOutcome::Exhausted { reason } => (Some(0.0), None, Some(reason.clone())),
            };
            match (&outcome, state_after_check(KeyState::Active, &outcome)) {
                (CheckOutcome::Transient { .. }, _) => summary.unchanged += 1,
                (_, KeyState::Active) => summary.active += 1,
                (_, KeyState::Exhausted) => summary.exhausted += 1,
                (_, KeyState::Invalid) => summary.invalid += 1,
                _ => {}
            }
            let new_state = state_after_check(old, &outcome);
            if let Some(b) = balance {
                key.set_balance(Some(b));
            }
            key.set_state(new_state);
            Self::log_db(
                "record check",
                keys::record_check(
                    &mut conn,
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
                    rehomed = true;
                }
            }
        }
        if rehomed {
            self.publish();
        }
        MessageResult(summary)
    }
}

/// The state a key moves to after a check of `/v1/user/info`. Only a 401
/// makes a key invalid; a passing failure (timeout, 5xx, 429) changes
/// nothing; money brings an exhausted or invalid key back; the owner's
/// "disabled" outranks whatever the upstream says.
pub fn state_after_check(old: KeyState, outcome: &CheckOutcome) -> KeyState {
    if old == KeyState::Disabled {
        return KeyState::Disabled;
    }
    match outcome {
        CheckOutcome::Valid { balance, .. } if *balance > 0.0 => KeyState::Active,
        CheckOutcome::Valid { .. } | CheckOutcome::Exhausted { .. } => KeyState::Exhausted,
        CheckOutcome::Invalid { .. } => KeyState::Invalid,
        CheckOutcome::Transient { .. } => old,
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub enum KeyCommand {
    Enable(i64),
    Disable(i64),
    Delete(i64),
}

impl Handler<KeyCommand> for PoolActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: KeyCommand, _: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        let mut conn = self.db.get().map_err(|e| e.to_string())?;
        match msg {
            KeyCommand::Enable(id) | KeyCommand::Disable(id) => {
                let key = self.keys.get(&id).cloned().ok_or_else(|| format!("no key with id {id}"))?;
                let state = match msg {
                    KeyCommand::Disable(_) => KeyState::Disabled,
                    // Back to active; the key's balance says whether it can serve,
                    // and a refresh (which the admin endpoint runs) corrects the rest.
                    _ if key.balance().is_some_and(|b| b <= 0.0) => KeyState::Exhausted,
                    _ => KeyState::Active,
                };
                keys::set_state(&mut conn, id, state.as_str(), None, now).map_err(|e| e.to_string())?;
                key.set_state(state);
                Ok(())
            }
            KeyCommand::Delete(id) => {
                if !keys::delete(&mut conn, id).map_err(|e| e.to_string())? {
                    return Err(format!("no key with id {id}"));
                }
                self.keys.remove(&id);
                self.publish();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(balance: f64) -> CheckOutcome {
        CheckOutcome::Valid { balance, gift: None, charge: None, account_id: None, account_name: None }
    }

    #[test]
    fn check_outcomes_move_keys_between_states() {
        use KeyState::*;
        let transient = CheckOutcome::Transient { reason: "503".into() };
        let invalid = CheckOutcome::Invalid { reason: "401".into() };
        let broke = CheckOutcome::Exhausted { reason: "30001".into() };
        for old in [Active, Exhausted, Invalid] {
            assert_eq!(state_after_check(old, &transient), old, "a passing failure changes nothing");
            assert_eq!(state_after_check(old, &valid(1.0)), Active);
            assert_eq!(state_after_check(old, &valid(0.0)), Exhausted);
            assert_eq!(state_after_check(old, &valid(-0.01)), Exhausted);
            assert_eq!(state_after_check(old, &invalid), Invalid);
            assert_eq!(state_after_check(old, &broke), Exhausted);
        }
        for outcome in [transient, invalid, broke, valid(5.0)] {
            assert_eq!(state_after_check(Disabled, &outcome), Disabled);
        }
    }
}

/// Answers once every message queued before it has been handled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for PoolActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {}
}
