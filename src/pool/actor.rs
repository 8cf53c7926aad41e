//! The pool actor owns every change to the key pool: it writes the database
//! and publishes the snapshot that the request path reads. The request path
//! itself only flips atomics for an immediate effect and tells this actor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::check::CheckOutcome;
use super::{mask_key, Account, Cooldown, KeyState, PoolKey, PoolShared, PoolSnapshot, TRIAL_DUE};
use crate::db::models::{account_key, is_own_account, is_upstream_account, CooldownRow, KeyRow, NewKey};
use crate::db::notify::Changed;
use crate::db::queries::{cooldowns_q, keys};
use crate::db::{now_ms, DbConn, DbError, DbPool, CONNECT_WAIT};

pub struct PoolActor {
    db: DbPool,
    shared: Arc<PoolShared>,
    default_base_url: Arc<str>,
    keys: BTreeMap<i64, Arc<PoolKey>>,
    accounts: HashMap<String, Arc<Account>>,
    /// Seconds before an exhausted key whose balance cannot be read gets one
    /// real call as a trial; `None` = never.
    retry_interval: Option<Duration>,
    /// (due at, key id) of the trials to offer.
    trial_queue: BTreeSet<(i64, i64)>,
    /// The keys offered for a trial now (what the request path sees).
    offered: Vec<Arc<PoolKey>>,
    publish_pending: bool,
    /// With PostgreSQL: this instance's name in the notifications it sends
    /// after each change, so that the others reload (and it ignores its own).
    instance: Option<String>,
    /// With several instances on one database, only the one that leads
    /// offers trials, so two never trial the same key at once.
    leadership: Option<crate::db::leader::Leadership>,
    /// States learned from calls that the database could not take (it was
    /// down): kept here, written at the next tick, and not overwritten by a
    /// reload of the older rows meanwhile.
    unsaved: BTreeMap<i64, Unsaved>,
}

/// A key's state that is not in the database yet.
#[derive(Debug, Clone)]
struct Unsaved {
    state: KeyState,
    reason: String,
    at: i64,
}

/// How often keys' call counts and last use are written to the database.
const USAGE_WRITE_INTERVAL: Duration = Duration::from_secs(10);

/// How soon a trial that told nothing (a 429, a 5xx, the client gone) is offered again.
const INCONCLUSIVE_TRIAL_RETRY: Duration = Duration::from_secs(60);

impl PoolActor {
    /// Loads keys and cooldowns from the database and publishes the first
    /// snapshot, before the server accepts requests.
    pub fn load(
        db: DbPool,
        shared: Arc<PoolShared>,
        default_base_url: String,
        retry_interval: Option<Duration>,
    ) -> Result<Self, DbError> {
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
        let mut actor = PoolActor {
            db,
            shared,
            default_base_url: Arc::from(default_base_url),
            keys: BTreeMap::new(),
            accounts: HashMap::new(),
            retry_interval,
            trial_queue: BTreeSet::new(),
            offered: Vec::new(),
            publish_pending: false,
            instance: None,
            leadership: None,
            unsaved: BTreeMap::new(),
        };
        for row in rows {
            let acc = row.account_key();
            let cds = cooling.remove(&acc).unwrap_or_default();
            let account = actor.account_with(acc, cds);
            let key = Arc::new(actor.key_from_row(&row, account));
            if key.needs_trial() {
                // The last word on the key (its exhaustion or its last trial) starts the wait.
                let since = row.state_changed_at.unwrap_or(0).max(row.last_checked.unwrap_or(0));
                actor.queue_trial_from(key.id, since);
            }
            actor.keys.insert(row.id, key);
        }
        actor.publish();
        Ok(actor)
    }

    /// Plans a trial `retry_interval` after `since`.
    fn queue_trial_from(&mut self, id: i64, since: i64) {
        if let Some(interval) = self.retry_interval {
            self.queue_trial_at(id, since + interval.as_millis() as i64);
        }
    }

    /// Plans a trial `wait` from now (trials must be on at all).
    fn queue_trial_in(&mut self, id: i64, wait: Duration, now: i64) {
        if self.retry_interval.is_some() {
            self.queue_trial_at(id, now + wait.as_millis() as i64);
        }
    }

    fn queue_trial_at(&mut self, id: i64, due: i64) {
        self.trial_queue.insert((due, id));
        self.note_next_trial();
    }

    fn note_next_trial(&self) {
        let next = self.trial_queue.first().map(|(due, _)| *due).unwrap_or(0);
        self.shared.next_trial_ms.store(next, Ordering::Relaxed);
    }

    /// Offers the trials that fell due and withdraws the ones that no longer
    /// apply; publishes the list the request path claims from.
    fn offer_due_trials(&mut self, now: i64) {
        if self.leadership.as_ref().is_some_and(|l| !l.leads()) {
            // Another instance offers them (and says how they went).
            return;
        }
        let before = self.offered.len();
        let mut added = false;
        while let Some(&(due, id)) = self.trial_queue.first() {
            if due > now {
                break;
            }
            self.trial_queue.pop_first();
            if let Some(k) = self.keys.get(&id) {
                if k.needs_trial() && k.offer_trial() {
                    self.offered.push(k.clone());
                    added = true;
                }
            }
        }
        // Claimed by a request (it reports back), or enabled, refreshed or
        // deleted meanwhile: no longer on offer.
        self.offered.retain(|k| {
            let current = self.keys.get(&k.id).is_some_and(|live| Arc::ptr_eq(live, k));
            let keep = k.trial() == TRIAL_DUE && k.needs_trial() && current;
            if !keep && k.trial() == TRIAL_DUE {
                k.end_trial();
            }
            keep
        });
        if added || self.offered.len() != before {
            self.shared.publish_trials(self.offered.clone());
        }
        self.note_next_trial();
    }

    fn key_from_row(&self, row: &KeyRow, account: Arc<Account>) -> PoolKey {
        PoolKey::new(
            row.id,
            row.key.clone(),
            match &row.base_url {
                Some(b) if **b != *self.default_base_url => Arc::from(b.as_str()),
                _ => self.default_base_url.clone(),
            },
            account,
            KeyState::parse(&row.state).unwrap_or(KeyState::Active),
            row.balance,
            row.usage_count.max(0) as u64,
            row.last_used,
            row.last_checked,
        )
    }

    fn account(&mut self, id: &str) -> Arc<Account> {
        self.account_with(id.to_string(), Vec::new())
    }

    /// The account `id` (made with these cooldowns if new). A key that is its
    /// own account (`key:<id>`) shares it with nobody: it is not kept in the
    /// map, which then holds only accounts that several keys may share.
    fn account_with(&mut self, id: String, cooldowns: Vec<Cooldown>) -> Arc<Account> {
        if is_own_account(&id) {
            return Arc::new(Account::new(id, cooldowns));
        }
        self.accounts.entry(id.clone()).or_insert_with(|| Arc::new(Account::new(id, cooldowns))).clone()
    }

    /// Sends this instance's changes to the others (PostgreSQL).
    pub fn with_instance(mut self, instance: String) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Tells the other instances what changed in the pool (after a write).
    fn notify_others(&self, change: Changed) {
        let Some(instance) = &self.instance else { return };
        if change.is_empty() {
            return;
        }
        let sent =
            self.db.get_timeout(CONNECT_WAIT).map_err(DbError::from).and_then(|mut c| {
                crate::db::notify::notify(&mut c, instance, &change).map_err(DbError::from)
            });
        Self::log_db("notify the other instances", sent);
    }

    fn publish(&self) {
        self.shared.publish(PoolSnapshot::new(self.keys.values().cloned().collect(), self.shared.strategy));
    }

    /// Republishes soon (a request changed a key's state): a burst of such
    /// changes costs one rebuild, not one each.
    fn publish_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.publish_pending {
            self.publish_pending = true;
            ctx.run_later(Duration::from_millis(20), |act, _| {
                act.publish_pending = false;
                act.publish();
            });
        }
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
        key.last_pick.store(old.last_pick.load(Ordering::Relaxed), Ordering::Relaxed);
        key.persisted_uses.store(old.persisted_uses.load(Ordering::Relaxed), Ordering::Relaxed);
        self.keys.insert(id, Arc::new(key));
    }

    /// Writes the calls made since the last write, for the keys that had any.
    fn persist_usage(&self) {
        let mut changed = Vec::new();
        for k in self.keys.values() {
            let now = k.usage_count.load(Ordering::Relaxed);
            let before = k.persisted_uses.load(Ordering::Relaxed);
            if now > before {
                changed.push((k.clone(), now, (now - before) as i64, k.last_used.load(Ordering::Relaxed)));
            }
        }
        if changed.is_empty() {
            return;
        }
        let rows: Vec<(i64, i64, i64)> =
            changed.iter().map(|(k, _, delta, last)| (k.id, *delta, *last)).collect();
        let written = self
            .db
            .get_timeout(CONNECT_WAIT)
            .map_err(DbError::from)
            .and_then(|mut conn| keys::add_usage(&mut conn, &rows));
        match written {
            Ok(()) => {
                for (k, now, _, _) in changed {
                    k.persisted_uses.store(now, Ordering::Relaxed);
                }
            }
            // Kept in the counters: the next write carries it.
            Err(e) => log::error!("pool: persist key usage: {e}"),
        }
    }

    /// Writes the states the database could not take before; answers
    /// which keys' were written (the other instances are then told).
    fn persist_unsaved(&mut self) -> Changed {
        let mut written = Vec::new();
        if self.unsaved.is_empty() {
            return Changed::default();
        }
        let Ok(mut conn) = self.db.get_timeout(CONNECT_WAIT) else { return Changed::default() };
        self.unsaved.retain(|id, u| {
            let kept = keys::set_state(&mut conn, *id, u.state.as_str(), Some(&u.reason), u.at)
                .inspect_err(|e| log::error!("pool: persist a kept key state: {e}"))
                .is_err();
            if !kept {
                written.push(*id);
            }
            kept
        });
        if !written.is_empty() {
            log::info!("pool: {} key states kept while the database was down are written", written.len());
        }
        Changed::keys(written)
    }

    /// A write on a key event's connection, if it has one (its absence was
    /// said once, when the connection could not be had).
    fn write<T>(
        conn: &mut Option<DbConn>,
        what: &str,
        work: impl FnOnce(&mut crate::db::AnyConn) -> Result<T, DbError>,
    ) -> Option<T> {
        Self::log_db(what, work(conn.as_deref_mut()?))
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

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(USAGE_WRITE_INTERVAL, |act, _| {
            act.persist_usage();
            let written = act.persist_unsaved();
            act.notify_others(written);
        });
        if self.retry_interval.is_some() {
            ctx.run_interval(Duration::from_millis(500), |act, _| act.offer_due_trials(now_ms()));
        }
    }
}

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
    pub key_id: i64,
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
                      unsaved: &mut BTreeMap<i64, Unsaved>,
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
                Self::write(&mut conn, "persist cooldown", |c| cooldowns_q::upsert(c, &row));
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
        let mut conn = match self.db.get() {
            Ok(c) => c,
            Err(e) => {
                log::error!("pool: import: {e}");
                let failed = msg.keys.into_iter().map(|c| {
                    AddResult::without_key(
                        mask_key(&c.secret),
                        AddStatus::Failed,
                        Some("database unavailable".into()),
                    )
                });
                return MessageResult(failed.collect());
            }
        };
        // One transaction for the whole import (10,000 keys: one commit, not
        // 10,000); the pool learns of the keys once it has committed.
        let label = msg.label;
        let mut stored: Vec<KeyRow> = Vec::new();
        let committed = diesel::Connection::transaction::<_, DbError, _>(&mut *conn, |conn| {
            for CheckedKey { secret, outcome, base_url } in msg.keys {
                let masked = mask_key(&secret);
                match keys::find_by_key(conn, &secret) {
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
                };
                match keys::insert(conn, &row) {
                    Ok(inserted) => {
                        stored.push(inserted.clone());
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
            Ok(())
        });
        if let Err(e) = committed {
            log::error!("pool: import: {e}");
            for r in results.iter_mut().filter(|r| r.status != AddStatus::Duplicate) {
                *r = AddResult::without_key(
                    r.key.clone(),
                    AddStatus::Failed,
                    Some(format!("not stored: {e}")),
                );
            }
            stored.clear();
        }
        let added = Changed::keys(stored.iter().map(|k| k.id));
        for inserted in stored {
            let account = self.account(&inserted.account_key());
            let key = Arc::new(self.key_from_row(&inserted, account));
            if key.needs_trial() {
                self.queue_trial_from(key.id, now);
            }
            self.keys.insert(inserted.id, key);
        }
        self.publish();
        self.notify_others(added);
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
    pub outcomes: Vec<(i64, CheckOutcome)>,
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

/// Why a key command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no key with id {0}")]
    NoSuchKey(i64),
    #[error(transparent)]
    Database(#[from] DbError),
}

#[derive(Message)]
#[rtype(result = "Result<(), CommandError>")]
pub enum KeyCommand {
    Enable(i64),
    Disable(i64),
    Delete(i64),
    /// Puts a key in an account of the owner's naming (`None` takes it out),
    /// for keys whose upstream names no account.
    SetAccount(i64, Option<String>),
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
        let ids: Vec<i64> = self.keys.values().filter(|k| k.state() == msg.0).map(|k| k.id).collect();
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
    fn account_labels_are_short_printable_names() {
        assert_eq!(parse_label(None), Ok(None));
        assert_eq!(parse_label(Some("  ")), Ok(None));
        assert_eq!(parse_label(Some(" team-a ")), Ok(Some("team-a".into())));
        assert!(parse_label(Some(&"x".repeat(65))).is_err());
        assert!(parse_label(Some("a\nb")).is_err());
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

/// Who leads among the instances on one database (see `offer_due_trials`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetLeadership(pub crate::db::leader::Leadership);

impl Handler<SetLeadership> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: SetLeadership, _: &mut Context<Self>) {
        self.leadership = Some(msg.0);
    }
}

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
            keys::all(&mut conn)?
        } else if change.keys.is_empty() {
            Vec::new()
        } else {
            keys::by_ids(&mut conn, &change.keys.iter().copied().collect::<Vec<_>>())?
        };
        let cooldowns =
            if change.all || change.cooldowns { cooldowns_q::all(&mut conn)? } else { Vec::new() };
        drop(conn);
        let now = now_ms();
        let mut changed = 0;
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            seen.insert(row.id);
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
        match self.keys.get(&row.id).cloned() {
            Some(key) => {
                let mut differs = false;
                if key.state() != state && !self.unsaved.contains_key(&row.id) {
                    key.set_state(state);
                    differs = true;
                }
                if key.balance() != row.balance {
                    key.set_balance(row.balance);
                    differs = true;
                }
                let account = row.account_key();
                if key.account.id != account {
                    self.rehome(row.id, &account);
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
                self.keys.insert(row.id, key);
                true
            }
        }
    }
}

/// Tells the other instances about a change made outside the pool (client keys).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TellOthers(pub Changed);

impl Handler<TellOthers> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: TellOthers, _: &mut Context<Self>) {
        self.notify_others(msg.0);
    }
}

/// Answers once every message queued before it has been handled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for PoolActor {
    type Result = ();

    /// (Shutdown: the calls counted since the last write are written now.)
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.persist_usage();
    }
}
