//! The pool actor owns every change to the key pool: it writes the database
//! and publishes the snapshot that the request path reads. The request path
//! itself only flips atomics for an immediate effect and tells this actor.

//!
//! This file is the actor's core: its state, loading, the snapshot it
//! publishes, the trials it offers and what it persists on its own clock.
//! Each kind of message has its file: `events` (what calls taught),
//! `import` (storing new keys), `checks` (refresh results), `commands` (the
//! owner's), `reload` (other instances' changes).

mod checks;
mod commands;
mod events;
mod import;
mod reload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{Account, Cooldown, KeyId, KeyState, PoolKey, PoolShared, PoolSnapshot, TRIAL_DUE};
use crate::db::models::{is_own_account, KeyRow};
use crate::db::notify::{Changed, Notifier};
use crate::db::queries::{cooldowns, keys};
use crate::db::{now_ms, DbConn, DbError, DbPool, CONNECT_WAIT};
use crate::vault::Vault;

pub use checks::{state_after_check, ApplyChecks, CheckSummary};
pub use commands::{parse_label, CommandError, DeleteInState, KeyCommand};
pub use events::{KeyEvent, KeyEventKind};
pub use import::{AddKeys, AddResult, AddStatus, CheckedKey};
pub use reload::Reload;

pub struct PoolActor {
    db: DbPool,
    /// Opens the keys read from the database and seals the ones stored.
    vault: Arc<Vault>,
    shared: Arc<PoolShared>,
    default_base_url: Arc<str>,
    keys: BTreeMap<KeyId, Arc<PoolKey>>,
    accounts: HashMap<String, Arc<Account>>,
    /// Seconds before an exhausted key whose balance cannot be read gets one
    /// real call as a trial; `None` = never.
    retry_interval: Option<Duration>,
    /// (due at, key id) of the trials to offer.
    trial_queue: BTreeSet<(i64, KeyId)>,
    /// The keys offered for a trial now (what the request path sees).
    offered: Vec<Arc<PoolKey>>,
    publish_pending: bool,
    /// Tells the other instances (PostgreSQL) what changed after each write.
    notifier: Notifier,
    /// With several instances on one database, only the one that leads
    /// offers trials, so two never trial the same key at once.
    leadership: Option<crate::db::leader::Leadership>,
    /// States learned from calls that the database could not take (it was
    /// down): kept here, written at the next tick, and not overwritten by a
    /// reload of the older rows meanwhile.
    unsaved: BTreeMap<KeyId, Unsaved>,
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
        vault: Arc<Vault>,
        shared: Arc<PoolShared>,
        default_base_url: String,
        retry_interval: Option<Duration>,
    ) -> Result<Self, DbError> {
        let mut conn = db.get()?;
        let rows = keys::all(&mut conn, &vault)?;
        let now = now_ms();
        let mut cooling: HashMap<String, Vec<Cooldown>> = HashMap::new();
        for c in cooldowns::all(&mut conn)? {
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
            vault,
            shared,
            default_base_url: Arc::from(default_base_url),
            keys: BTreeMap::new(),
            accounts: HashMap::new(),
            retry_interval,
            trial_queue: BTreeSet::new(),
            offered: Vec::new(),
            publish_pending: false,
            notifier: Notifier::none(),
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
            actor.keys.insert(key.id, key);
        }
        actor.publish();
        Ok(actor)
    }

    /// Plans a trial `retry_interval` after `since`.
    fn queue_trial_from(&mut self, id: KeyId, since: i64) {
        if let Some(interval) = self.retry_interval {
            self.queue_trial_at(id, since + interval.as_millis() as i64);
        }
    }

    /// Plans a trial `wait` from now (trials must be on at all).
    fn queue_trial_in(&mut self, id: KeyId, wait: Duration, now: i64) {
        if self.retry_interval.is_some() {
            self.queue_trial_at(id, now + wait.as_millis() as i64);
        }
    }

    fn queue_trial_at(&mut self, id: KeyId, due: i64) {
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
            row.key_id(),
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
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Tells the other instances what changed in the pool (after a write).
    fn notify_others(&self, change: Changed) {
        self.notifier.tell(&change);
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
    fn rehome(&mut self, id: KeyId, account_id: &str) {
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
        let rows: Vec<(KeyId, i64, i64)> =
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
