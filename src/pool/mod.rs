//! The key pool: an immutable snapshot that request handlers read without
//! waiting, the selection strategies, the actor that owns changes, and the
//! refresher that re-checks keys against the upstream.

mod actor;
pub mod check;
pub mod cooldown;
pub mod fast;
pub mod import;
pub mod refresher;
pub mod select;
pub mod totals;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

// The actor's messages and answers: the pool's surface for admin and proxy.
pub use crate::ids::KeyId;
pub use actor::{
    parse_label, state_after_check, AddKeys, AddResult, AddStatus, ApplyChecks, CheckSummary, CheckedKey,
    CommandError, DeleteInState, Drain, KeyCommand, KeyEvent, KeyEventKind, PoolActor, Reload, SetLeadership,
};
pub use cooldown::Cooldown;
pub use select::{NoKey, Strategy};

/// A key's persisted state. "cooling" is not stored here: it is derived from the
/// account's cooldowns, which expire by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyState {
    Active = 0,
    Exhausted = 1,
    Invalid = 2,
    Disabled = 3,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Exhausted => "exhausted",
            KeyState::Invalid => "invalid",
            KeyState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => KeyState::Active,
            "exhausted" => KeyState::Exhausted,
            "invalid" => KeyState::Invalid,
            "disabled" => KeyState::Disabled,
            _ => return None,
        })
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => KeyState::Exhausted,
            2 => KeyState::Invalid,
            3 => KeyState::Disabled,
            _ => KeyState::Active,
        }
    }
}

pub use crate::upstream::mask_key;

/// A SiliconFlow account. Rate limits apply per account and model, so every
/// key of an account shares these cooldowns.
#[derive(Debug)]
pub struct Account {
    pub id: String,
    cooldowns: ArcSwap<Vec<Cooldown>>,
}

impl Account {
    pub fn new(id: String, cooldowns: Vec<Cooldown>) -> Self {
        // Most accounts never cool: they share one empty list until one does.
        static NONE: std::sync::OnceLock<Arc<Vec<Cooldown>>> = std::sync::OnceLock::new();
        let list = if cooldowns.is_empty() {
            NONE.get_or_init(|| Arc::new(Vec::new())).clone()
        } else {
            Arc::new(cooldowns)
        };
        Account { id, cooldowns: ArcSwap::new(list) }
    }

    /// When `model` is usable again on this account, if it is cooling now.
    pub fn cooling_until(&self, model: &str, now_ms: i64) -> Option<i64> {
        cooldown::blocking_until(&self.cooldowns.load(), model, now_ms)
    }

    /// The latest end of any cooldown still running.
    pub fn any_cooling_until(&self, now_ms: i64) -> Option<i64> {
        self.cooldowns.load().iter().filter(|c| c.until_ms > now_ms).map(|c| c.until_ms).max()
    }

    /// Takes a cooldown another instance recorded (from the shared database):
    /// kept if it ends later than what this account knows for its model.
    /// Says whether it was new.
    pub fn merge(&self, c: &Cooldown) -> bool {
        let known = self.cooldowns.load().iter().any(|k| k.model == c.model && k.until_ms >= c.until_ms);
        if known {
            return false;
        }
        self.cooldowns.rcu(|current| {
            let mut next: Vec<Cooldown> = current.iter().filter(|k| k.model != c.model).cloned().collect();
            next.push(c.clone());
            next
        });
        true
    }

    /// Records a rate limit and returns the cooldown applied. Lock-free: a
    /// compare-and-swap loop over a small vector.
    pub fn apply_rate_limit(
        &self,
        model: &str,
        now_ms: i64,
        policy: &cooldown::Policy,
        hint: &cooldown::Hint,
    ) -> Cooldown {
        let mut applied = None;
        self.cooldowns.rcu(|current| {
            let (next, c) = cooldown::apply(current, model, now_ms, policy, hint);
            applied = Some(c);
            next
        });
        // rcu runs the closure at least once.
        applied.unwrap_or_else(|| Cooldown { model: model.to_string(), until_ms: now_ms, strikes: 1 })
    }
}

/// One pool key as the request path sees it. Fields that change at run time
/// are atomics, so a state change is visible to the next request at once,
/// without a new snapshot.
pub struct PoolKey {
    pub id: KeyId,
    pub secret: String,
    pub masked: String,
    /// `Bearer <secret>`, built once (marked sensitive, so it is never
    /// printed in a header dump), instead of formatted on every request.
    pub bearer: actix_web::http::header::HeaderValue,
    /// The upstream origin: one shared string for all keys of an origin.
    pub base_url: Arc<str>,
    pub account: Arc<Account>,
    state: AtomicU8,
    /// f64 bits; NaN = unknown.
    balance: AtomicU64,
    pub usage_count: AtomicU64,
    pub last_used: AtomicI64,
    pub last_checked: AtomicI64,
    /// When the key was last picked (the pool's pick sequence): the balance
    /// strategy spreads equal or unknown balances least recently picked first.
    pub last_pick: AtomicU64,
    /// The trial of an exhausted key: `TRIAL_IDLE`, `TRIAL_DUE` (the pool
    /// actor offered it), `TRIAL_RUNNING` (a request claimed it).
    trial: AtomicU8,
    /// `usage_count` as last written to the database (the pool actor writes
    /// the difference now and then, not the log writer per batch).
    pub persisted_uses: AtomicU64,
}

pub const TRIAL_IDLE: u8 = 0;
pub const TRIAL_DUE: u8 = 1;
pub const TRIAL_RUNNING: u8 = 2;

/// Never prints the secret.
impl std::fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolKey")
            .field("id", &self.id)
            .field("key", &self.masked)
            .field("account", &self.account.id)
            .field("state", &self.state())
            .finish()
    }
}

impl PoolKey {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: KeyId,
        secret: String,
        base_url: Arc<str>,
        account: Arc<Account>,
        state: KeyState,
        balance: Option<f64>,
        usage_count: u64,
        last_used: Option<i64>,
        last_checked: Option<i64>,
    ) -> Self {
        let mut bearer = actix_web::http::header::HeaderValue::from_str(&format!("Bearer {secret}"))
            .unwrap_or_else(|_| actix_web::http::header::HeaderValue::from_static("Bearer invalid-key"));
        bearer.set_sensitive(true);
        PoolKey {
            id,
            bearer,
            masked: mask_key(&secret),
            secret,
            base_url,
            account,
            state: AtomicU8::new(state as u8),
            balance: AtomicU64::new(balance.unwrap_or(f64::NAN).to_bits()),
            usage_count: AtomicU64::new(usage_count),
            last_used: AtomicI64::new(last_used.unwrap_or(0)),
            last_checked: AtomicI64::new(last_checked.unwrap_or(0)),
            last_pick: AtomicU64::new(0),
            trial: AtomicU8::new(TRIAL_IDLE),
            persisted_uses: AtomicU64::new(usage_count),
        }
    }

    pub fn trial(&self) -> u8 {
        self.trial.load(Ordering::Acquire)
    }

    /// Offers the key for a trial; false when one is already offered or running.
    pub fn offer_trial(&self) -> bool {
        self.trial.compare_exchange(TRIAL_IDLE, TRIAL_DUE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Takes the offered trial: exactly one request across all workers wins it.
    pub fn claim_trial(&self) -> bool {
        self.trial.compare_exchange(TRIAL_DUE, TRIAL_RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Ends a trial (or withdraws an offer).
    pub fn end_trial(&self) {
        self.trial.store(TRIAL_IDLE, Ordering::Release);
    }

    /// Brings an exhausted key back; a key in any other state is left alone.
    pub fn revive(&self) -> bool {
        self.transition(KeyState::Exhausted, KeyState::Active)
    }

    /// Whether an exhausted key can only come back through a trial: its balance
    /// cannot be read, so no refresh will show money.
    pub fn needs_trial(&self) -> bool {
        self.state() == KeyState::Exhausted && self.balance().is_none()
    }

    pub fn state(&self) -> KeyState {
        KeyState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: KeyState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// What the request path may do to a key: take an *active* key out of
    /// service. Never touches a key the owner disabled (or one already down).
    /// Returns whether this call changed it.
    pub fn demote(&self, to: KeyState) -> bool {
        self.state
            .compare_exchange(KeyState::Active as u8, to as u8, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Moves the key from one state to another, if it is still in the first.
    pub fn transition(&self, from: KeyState, to: KeyState) -> bool {
        self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    pub fn balance(&self) -> Option<f64> {
        let b = f64::from_bits(self.balance.load(Ordering::Relaxed));
        (!b.is_nan()).then_some(b)
    }

    pub fn set_balance(&self, balance: Option<f64>) {
        self.balance.store(balance.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed);
    }

    /// The state shown to people: "cooling" when active but rate-limited now.
    pub fn display_state(&self, now_ms: i64) -> (&'static str, Option<i64>) {
        match self.state() {
            KeyState::Active => match self.account.any_cooling_until(now_ms) {
                Some(until) => ("cooling", Some(until)),
                None => ("active", None),
            },
            s => (s.as_str(), None),
        }
    }

    pub fn note_use(&self, now_ms: i64) {
        self.usage_count.fetch_add(1, Ordering::Relaxed);
        self.last_used.fetch_max(now_ms, Ordering::Relaxed);
    }
}

/// The pool as the request path reads it: every key (by id), an index, and
/// what the strategy needs to pick in constant time.
#[derive(Debug, Default)]
pub struct PoolSnapshot {
    pub keys: Vec<Arc<PoolKey>>,
    index: std::collections::HashMap<KeyId, usize>,
    pub selection: fast::Selection,
}

impl PoolSnapshot {
    pub fn new(keys: Vec<Arc<PoolKey>>, strategy: Strategy) -> Self {
        let index = keys.iter().enumerate().map(|(i, k)| (k.id, i)).collect();
        let selection = fast::Selection::build(&keys, strategy);
        PoolSnapshot { keys, index, selection }
    }

    pub fn get(&self, id: KeyId) -> Option<&Arc<PoolKey>> {
        self.index.get(&id).and_then(|i| self.keys.get(*i))
    }
}

/// Counts by displayed state, for /health and the dashboard.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub struct StateCounts {
    pub total: usize,
    pub active: usize,
    pub cooling: usize,
    pub exhausted: usize,
    pub invalid: usize,
    pub disabled: usize,
}

/// What the request path shares: the snapshot (with the selection's own
/// turns and counters) and the exhausted keys offered for a trial.
pub struct PoolShared {
    snapshot: ArcSwap<PoolSnapshot>,
    pub strategy: Strategy,
    pub cooldown_policy: cooldown::Policy,
    /// Exhausted keys whose trial is due (published by the pool actor; almost
    /// always empty, so the request path pays one load for it).
    trials: ArcSwap<Vec<Arc<PoolKey>>>,
    /// When the next exhausted key's trial falls due (epoch ms; 0 = none), for
    /// the "all exhausted" answer.
    pub next_trial_ms: AtomicI64,
    /// Origins whose `/v1/user/info` is gone.
    pub user_info: check::UserInfoEndpoints,
    /// The last counts: of which snapshot (weak: its address is not reused
    /// while held), and when.
    counts_cache: std::sync::Mutex<Option<(std::sync::Weak<PoolSnapshot>, i64, StateCounts)>>,
    /// The model ids the upstream lists (`/v1/models`), and when they were
    /// read (epoch ms; 0 = not yet): the metrics' model labels.
    served: ArcSwap<(std::collections::HashSet<String>, i64)>,
    /// A read of the model list is under way (the import's or the refresher's: one at a time).
    listing: std::sync::atomic::AtomicBool,
    /// When a read was last tried (epoch ms), so that a failing one is not
    /// repeated at every look.
    listing_tried: AtomicI64,
}

/// A key for one attempt, and whether that attempt is an exhausted key's trial.
#[derive(Debug, Clone)]
pub struct Picked {
    pub key: Arc<PoolKey>,
    pub trial: bool,
}

impl PoolShared {
    pub fn new(strategy: Strategy, cooldown_policy: cooldown::Policy) -> Self {
        PoolShared {
            snapshot: ArcSwap::from_pointee(PoolSnapshot::default()),
            strategy,
            cooldown_policy,
            trials: ArcSwap::from_pointee(Vec::new()),
            next_trial_ms: AtomicI64::new(0),
            user_info: check::UserInfoEndpoints::default(),
            counts_cache: std::sync::Mutex::new(None),
            served: ArcSwap::from_pointee((std::collections::HashSet::new(), 0)),
            listing: std::sync::atomic::AtomicBool::new(false),
            listing_tried: AtomicI64::new(0),
        }
    }

    /// Whether the upstream's model list, as last read, names `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.served.load().0.contains(model)
    }

    /// When a read of the model list was last tried, successful or not.
    pub fn listing_tried_at(&self) -> i64 {
        self.listing_tried.load(Ordering::Relaxed)
    }

    /// When the model list was last read (epoch ms; 0 = never).
    pub fn served_read_at(&self) -> i64 {
        self.served.load().1
    }

    /// Claims the next read of the model list (false: one is under way).
    fn claim_listing(&self) -> bool {
        !self.listing.swap(true, Ordering::AcqRel)
    }

    /// The read claimed ended: its list, read at `now_ms`, if it got one.
    fn end_listing(&self, ids: Option<Vec<String>>, now_ms: i64) {
        self.listing_tried.store(now_ms, Ordering::Relaxed);
        if let Some(ids) = ids {
            self.served.store(Arc::new((ids.into_iter().filter(|m| !m.is_empty()).collect(), now_ms)));
        }
        self.listing.store(false, Ordering::Release);
    }

    /// Exhausted keys on offer for a trial now.
    pub fn trials_offered(&self) -> usize {
        self.trials.load().iter().filter(|k| k.trial() == TRIAL_DUE).count()
    }

    pub fn publish_trials(&self, due: Vec<Arc<PoolKey>>) {
        self.trials.store(Arc::new(due));
    }

    /// Claims a due trial that can serve `model`, if there is one.
    fn claim_trial(&self, model: &str, exclude: &[KeyId], now_ms: i64) -> Option<Arc<PoolKey>> {
        let due = self.trials.load();
        due.iter()
            .find(|k| {
                k.trial() == TRIAL_DUE
                    && k.state() == KeyState::Exhausted
                    && !exclude.contains(&k.id)
                    && k.account.cooling_until(model, now_ms).is_none()
                    && k.claim_trial()
            })
            .cloned()
    }

    pub fn snapshot(&self) -> Arc<PoolSnapshot> {
        self.snapshot.load_full()
    }

    pub fn publish(&self, snapshot: PoolSnapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Counts by state, computed at most once a second for one snapshot (a
    /// count walks every key: 7.5 ms with 100,000; health probes come often).
    /// A new snapshot (a key added, removed or changing state) is counted
    /// afresh; a cooldown shows within the second.
    pub fn counts(&self, now_ms: i64) -> StateCounts {
        let snap = self.snapshot.load_full();
        let mut cache = self.counts_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((for_snapshot, at, counts)) = &*cache {
            if std::ptr::eq(for_snapshot.as_ptr(), Arc::as_ptr(&snap)) && (*at..at + 1000).contains(&now_ms) {
                return *counts;
            }
        }
        let counts = Self::count(&snap, now_ms);
        *cache = Some((Arc::downgrade(&snap), now_ms, counts));
        counts
    }

    /// Cooldowns (an account and a model) running now, each account counted once.
    pub fn active_cooldowns(&self, now_ms: i64) -> usize {
        let snap = self.snapshot.load_full();
        let mut seen = std::collections::HashSet::new();
        snap.keys
            .iter()
            .filter(|k| seen.insert(Arc::as_ptr(&k.account)))
            .map(|k| k.account.cooldowns.load().iter().filter(|c| c.until_ms > now_ms).count())
            .sum()
    }

    fn count(snap: &PoolSnapshot, now_ms: i64) -> StateCounts {
        let mut c = StateCounts { total: snap.keys.len(), ..Default::default() };
        for k in &snap.keys {
            match k.display_state(now_ms).0 {
                "active" => c.active += 1,
                "cooling" => c.cooling += 1,
                "exhausted" => c.exhausted += 1,
                "invalid" => c.invalid += 1,
                _ => c.disabled += 1,
            }
        }
        c
    }

    /// Picks a key for `model`, skipping the ones in `exclude`. With
    /// `trial_allowed`, an exhausted key whose trial is due comes first.
    pub fn pick(
        &self,
        model: &str,
        exclude: &[KeyId],
        now_ms: i64,
        trial_allowed: bool,
    ) -> Result<Picked, NoKey> {
        if trial_allowed {
            if let Some(key) = self.claim_trial(model, exclude, now_ms) {
                return Ok(Picked { key, trial: true });
            }
        }
        let snap = self.snapshot.load();
        match snap.selection.pick(model, exclude, now_ms) {
            Ok(key) => Ok(Picked { key, trial: false }),
            Err(NoKey::NoneActive { exhausted, invalid, disabled, .. }) => {
                let next = self.next_trial_ms.load(Ordering::Relaxed);
                Err(NoKey::NoneActive {
                    exhausted,
                    invalid,
                    disabled,
                    next_trial_ms: (next > 0).then_some(next),
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_without_revealing_them() {
        assert_eq!(mask_key("sk-abcdefghijklmnopqrstuvwxyz"), "sk-abcd...wxyz");
        assert_eq!(mask_key("abcdefghijkl"), "abcd...ijkl");
        assert_eq!(mask_key("sk-12345"), "sk...");
        assert_eq!(mask_key("sk-123456"), "sk-12...3456");
        assert!(!mask_key("sk-123456789").contains("123456789"));
    }

    #[test]
    fn state_round_trips() {
        for s in [KeyState::Active, KeyState::Exhausted, KeyState::Invalid, KeyState::Disabled] {
            assert_eq!(KeyState::parse(s.as_str()), Some(s));
            assert_eq!(KeyState::from_u8(s as u8), s);
        }
    }
}
