//! Key selection: pure functions over the snapshot's keys. No allocation on
//! the request path (but for `weighted` with unknown balances): every strategy
//! walks the filtered slice a few times at most.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::{KeyId, KeyState, PoolKey};

/// The configured way of picking (defined with the configuration, below the pool).
pub use crate::config::Strategy;

/// Why no key can serve a request.
#[derive(Debug, Clone, PartialEq)]
pub enum NoKey {
    NoneImported,
    /// Every active key was already tried for this request.
    AllTried,
    /// Every otherwise usable key is rate-limited for this model until then.
    AllCooling {
        until_ms: i64,
    },
    /// No active key: counts of the rest.
    NoneActive {
        exhausted: usize,
        invalid: usize,
        disabled: usize,
        /// When an exhausted key is next given a trial call, if one is planned.
        next_trial_ms: Option<i64>,
    },
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl NoKey {
    pub fn message(&self) -> String {
        match self {
            NoKey::NoneImported => {
                "No API keys in the pool: import SiliconFlow keys in the admin UI or with POST /import_keys"
                    .into()
            }
            NoKey::AllTried => "Every usable API key in the pool failed for this request".into(),
            NoKey::AllCooling { until_ms } => format!(
                "Every usable API key is rate-limited for this model; the first cools down at {}",
                rfc3339(*until_ms)
            ),
            NoKey::NoneActive { exhausted, invalid, disabled, next_trial_ms } => {
                let mut m = format!(
                    "No usable API key: {exhausted} exhausted (no balance), {invalid} invalid, {disabled} disabled"
                );
                if let Some(t) = next_trial_ms {
                    m.push_str(&format!("; an exhausted key is tried again at {}", rfc3339(*t)));
                }
                m
            }
        }
    }
}

fn usable(k: &PoolKey, model: &str, exclude: &[KeyId], now_ms: i64) -> bool {
    k.state() == KeyState::Active
        && !exclude.contains(&k.id)
        && k.account.cooling_until(model, now_ms).is_none()
}

/// The pool-wide counters some strategies move.
pub struct Counters<'a> {
    pub cursor: &'a AtomicUsize,
    pub pick_seq: &'a AtomicU64,
}

/// The balance strategy's order: a known positive balance first (richest
/// first), then unknown, then a known balance of zero or less; within equals,
/// the key picked longest ago.
fn balance_order(a: &Arc<PoolKey>, b: &Arc<PoolKey>) -> std::cmp::Ordering {
    fn rank(k: &PoolKey) -> (u8, f64) {
        match k.balance() {
            Some(b) if b > 0.0 => (0, -b),
            None => (1, 0.0),
            Some(_) => (2, 0.0),
        }
    }
    let ((ta, va), (tb, vb)) = (rank(a), rank(b));
    ta.cmp(&tb)
        .then(va.total_cmp(&vb))
        .then(a.last_pick.load(Ordering::Relaxed).cmp(&b.last_pick.load(Ordering::Relaxed)))
}

/// The middle of the known positive balances, or `None` when none is known.
pub fn median(mut known: Vec<f64>) -> Option<f64> {
    if known.is_empty() {
        return None;
    }
    known.sort_by(f64::total_cmp);
    let mid = known.len() / 2;
    Some(if known.len() % 2 == 1 { known[mid] } else { (known[mid - 1] + known[mid]) / 2.0 })
}

pub fn pick(
    keys: &[Arc<PoolKey>],
    model: &str,
    exclude: &[KeyId],
    now_ms: i64,
    strategy: Strategy,
    counters: &Counters,
) -> Result<Arc<PoolKey>, NoKey> {
    let candidates = || keys.iter().filter(|k| usable(k, model, exclude, now_ms));
    let cursor = counters.cursor;
    let chosen = match strategy {
        Strategy::Balance => {
            let mut chosen = None;
            for _ in 0..4 {
                let Some(k) = candidates().min_by(|a, b| balance_order(a, b)) else { break };
                let seen = k.last_pick.load(Ordering::Relaxed);
                let stamp = counters.pick_seq.fetch_add(1, Ordering::Relaxed);
                chosen = Some(k);
                // Another request took this key meanwhile: look again, so that
                // concurrent picks spread instead of piling onto one key.
                if k.last_pick.compare_exchange(seen, stamp, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    break;
                }
            }
            chosen
        }
        Strategy::LeastUsed => candidates().min_by_key(|k| k.usage_count.load(Ordering::Relaxed)),
        Strategy::RoundRobin | Strategy::Random => {
            let n = candidates().count();
            if n == 0 {
                None
            } else {
                let i = match strategy {
                    Strategy::RoundRobin => cursor.fetch_add(1, Ordering::Relaxed) % n,
                    _ => rand::random_range(0..n),
                };
                candidates().nth(i).or_else(|| candidates().next())
            }
        }
        Strategy::Weighted => {
            // The median of the active keys' known balances (cooling or not:
            // the pool's, not this request's).
            let unknown = if candidates().any(|k| k.balance().is_none()) {
                let known = keys.iter().filter(|k| k.state() == KeyState::Active).filter_map(|k| k.balance());
                median(known.filter(|b| *b > 0.0).collect()).unwrap_or(1.0)
            } else {
                0.0
            };
            let weight = |k: &PoolKey| k.balance().map(|b| b.max(0.0)).unwrap_or(unknown);
            let total: f64 = candidates().map(|k| weight(k)).sum();
            if total <= 0.0 {
                let n = candidates().count();
                if n == 0 {
                    None
                } else {
                    candidates().nth(rand::random_range(0..n))
                }
            } else {
                let mut point = rand::random::<f64>() * total;
                let mut last = None;
                for k in candidates() {
                    last = Some(k);
                    point -= weight(k);
                    if point < 0.0 {
                        break;
                    }
                }
                last
            }
        }
    };
    chosen.cloned().ok_or_else(|| why_none(keys, model, exclude, now_ms))
}

fn why_none(keys: &[Arc<PoolKey>], model: &str, exclude: &[KeyId], now_ms: i64) -> NoKey {
    if keys.is_empty() {
        return NoKey::NoneImported;
    }
    let active: Vec<&Arc<PoolKey>> = keys.iter().filter(|k| k.state() == KeyState::Active).collect();
    if active.is_empty() {
        let count = |s| keys.iter().filter(|k| k.state() == s).count();
        return NoKey::NoneActive {
            exhausted: count(KeyState::Exhausted),
            invalid: count(KeyState::Invalid),
            disabled: count(KeyState::Disabled),
            next_trial_ms: None,
        };
    }
    cooling_or_tried(active.into_iter(), model, exclude, now_ms)
}

/// With some key active: every one not yet tried is cooling for `model`
/// (until the first of them cools down), or every one was tried.
pub fn cooling_or_tried<'a>(
    active: impl Iterator<Item = &'a Arc<PoolKey>>,
    model: &str,
    exclude: &[KeyId],
    now_ms: i64,
) -> NoKey {
    let cooling = active
        .filter(|k| !exclude.contains(&k.id))
        .map(|k| k.account.cooling_until(model, now_ms))
        .collect::<Option<Vec<i64>>>();
    match cooling {
        Some(untils) if !untils.is_empty() => {
            NoKey::AllCooling { until_ms: untils.into_iter().min().unwrap_or(now_ms) }
        }
        _ => NoKey::AllTried,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{cooldown, Account};
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn key(id: i64, account: &Arc<Account>, balance: f64, state: KeyState) -> Arc<PoolKey> {
        key_b(id, account, Some(balance), state)
    }

    fn key_b(id: i64, account: &Arc<Account>, balance: Option<f64>, state: KeyState) -> Arc<PoolKey> {
        Arc::new(PoolKey::new(
            KeyId(id),
            format!("sk-key-{id}-xxxxxxxx"),
            "http://x".into(),
            account.clone(),
            state,
            balance,
            0,
            None,
            None,
        ))
    }

    struct Ctr(AtomicUsize, AtomicU64);

    impl Ctr {
        fn new() -> Self {
            Ctr(AtomicUsize::new(0), AtomicU64::new(1))
        }
        fn c(&self) -> Counters<'_> {
            Counters { cursor: &self.0, pick_seq: &self.1 }
        }
    }

    fn acct(id: &str) -> Arc<Account> {
        Arc::new(Account::new(id.into(), vec![]))
    }

    fn pick_ids(keys: &[Arc<PoolKey>], strategy: Strategy, n: usize) -> Vec<i64> {
        let ctr = Ctr::new();
        (0..n).map(|_| pick(keys, "m", &[], 0, strategy, &ctr.c()).unwrap().id.0).collect()
    }

    #[test]
    fn balance_picks_the_richest_active_key() {
        let a = acct("a");
        let keys = vec![
            key(1, &a, 5.0, KeyState::Active),
            key(2, &a, 9.0, KeyState::Active),
            key(3, &a, 99.0, KeyState::Exhausted),
        ];
        assert_eq!(pick_ids(&keys, Strategy::Balance, 3), vec![2, 2, 2]);
        let ctr = Ctr::new();
        assert_eq!(pick(&keys, "m", &[KeyId(2)], 0, Strategy::Balance, &ctr.c()).unwrap().id.0, 1);
    }

    #[test]
    fn round_robin_cycles_and_least_used_balances() {
        let a = acct("a");
        let keys = vec![
            key(1, &a, 1.0, KeyState::Active),
            key(2, &a, 1.0, KeyState::Active),
            key(3, &a, 1.0, KeyState::Disabled),
        ];
        assert_eq!(pick_ids(&keys, Strategy::RoundRobin, 4), vec![1, 2, 1, 2]);
        keys[0].usage_count.store(5, Ordering::Relaxed);
        assert_eq!(pick_ids(&keys, Strategy::LeastUsed, 2), vec![2, 2]);
    }

    #[test]
    fn random_and_weighted_stay_among_usable_keys_and_follow_weights() {
        let a = acct("a");
        let keys = vec![
            key(1, &a, 1.0, KeyState::Active),
            key(2, &a, 99.0, KeyState::Active),
            key(3, &a, 1000.0, KeyState::Invalid),
        ];
        let mut seen: HashMap<i64, usize> = HashMap::new();
        for id in pick_ids(&keys, Strategy::Random, 400) {
            *seen.entry(id).or_default() += 1;
        }
        assert!(!seen.contains_key(&3));
        assert!(seen[&1] > 100 && seen[&2] > 100, "{seen:?}");
        let mut seen: HashMap<i64, usize> = HashMap::new();
        for id in pick_ids(&keys, Strategy::Weighted, 1000) {
            *seen.entry(id).or_default() += 1;
        }
        assert!(!seen.contains_key(&3));
        assert!(seen[&2] > 900, "weighted by balance: {seen:?}");
    }

    #[test]
    fn cooling_account_blocks_all_its_keys_for_that_model_only() {
        let a = acct("a");
        let b = acct("b");
        let keys = vec![
            key(1, &a, 9.0, KeyState::Active),
            key(2, &a, 8.0, KeyState::Active),
            key(3, &b, 1.0, KeyState::Active),
        ];
        let policy = cooldown::Policy { base: Duration::from_secs(30), max: Duration::from_secs(3600) };
        a.apply_rate_limit("m", 0, &policy, &cooldown::Hint::default());
        let ctr = Ctr::new();
        assert_eq!(pick(&keys, "m", &[], 1, Strategy::Balance, &ctr.c()).unwrap().id.0, 3);
        assert_eq!(pick(&keys, "other", &[], 1, Strategy::Balance, &ctr.c()).unwrap().id.0, 1);
        assert_eq!(
            pick(&keys, "m", &[KeyId(3)], 1, Strategy::Balance, &ctr.c()).unwrap_err(),
            NoKey::AllCooling { until_ms: 30_000 },
        );
        assert_eq!(
            pick(&keys, "other", &[KeyId(1), KeyId(2), KeyId(3)], 1, Strategy::Balance, &ctr.c())
                .unwrap_err(),
            NoKey::AllTried
        );
        b.apply_rate_limit("m", 0, &policy, &cooldown::Hint::default());
        assert_eq!(
            pick(&keys, "m", &[], 1, Strategy::Balance, &ctr.c()).unwrap_err(),
            NoKey::AllCooling { until_ms: 30_000 }
        );
        assert_eq!(pick(&keys, "m", &[], 30_000, Strategy::Balance, &ctr.c()).unwrap().id.0, 1);
    }

    #[test]
    fn explains_why_nothing_can_serve() {
        let ctr = Ctr::new();
        assert_eq!(pick(&[], "m", &[], 0, Strategy::Balance, &ctr.c()).unwrap_err(), NoKey::NoneImported);
        let a = acct("a");
        let keys = vec![key(1, &a, 0.0, KeyState::Exhausted), key(2, &a, 1.0, KeyState::Invalid)];
        let err = pick(&keys, "m", &[], 0, Strategy::Balance, &ctr.c()).unwrap_err();
        assert_eq!(err, NoKey::NoneActive { exhausted: 1, invalid: 1, disabled: 0, next_trial_ms: None });
        assert!(err.message().contains("1 exhausted"));
    }

    #[test]
    fn balance_spreads_equal_and_unknown_balances_and_puts_known_zero_last() {
        let a = acct("a");
        // Equal balances (free-credit keys bought in bulk): every key in turn.
        let keys: Vec<_> = (1..=4).map(|i| key(i, &a, 14.0, KeyState::Active)).collect();
        let mut ids = pick_ids(&keys, Strategy::Balance, 8);
        assert_eq!(ids, vec![1, 2, 3, 4, 1, 2, 3, 4]);
        // Unknown balances: spread the same way, and a known zero only when nothing else is left.
        let keys = vec![
            key_b(1, &a, Some(0.0), KeyState::Active),
            key_b(2, &a, None, KeyState::Active),
            key_b(3, &a, None, KeyState::Active),
            key_b(4, &a, None, KeyState::Active),
        ];
        ids = pick_ids(&keys, Strategy::Balance, 6);
        assert_eq!(ids, vec![2, 3, 4, 2, 3, 4]);
        let ctr = Ctr::new();
        assert_eq!(
            pick(&keys, "m", &[KeyId(2), KeyId(3), KeyId(4)], 0, Strategy::Balance, &ctr.c()).unwrap().id.0,
            1
        );
        // A known positive balance goes before unknown ones.
        let keys = vec![key_b(1, &a, None, KeyState::Active), key_b(2, &a, Some(0.5), KeyState::Active)];
        assert_eq!(pick_ids(&keys, Strategy::Balance, 3), vec![2, 2, 2]);
    }

    #[test]
    fn concurrent_balance_picks_spread_over_equal_keys() {
        let a = acct("a");
        let keys: Vec<_> = (1..=8).map(|i| key_b(i, &a, None, KeyState::Active)).collect();
        let ctr = Ctr::new();
        let seen = std::sync::Mutex::new(HashMap::<i64, usize>::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let id = pick(&keys, "m", &[], 0, Strategy::Balance, &ctr.c()).unwrap().id.0;
                        *seen.lock().unwrap().entry(id).or_default() += 1;
                    }
                });
            }
        });
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 8, "{seen:?}");
        assert!(seen.values().all(|n| (40..=200).contains(n)), "800 picks over 8 keys: {seen:?}");
    }

    #[test]
    fn weighted_gives_unknown_balances_the_median_of_the_known() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let a = acct("a");
        // Known 1 and 9 (median 5): the unknown key weighs 5 of 15.
        let keys = vec![
            key_b(1, &a, Some(1.0), KeyState::Active),
            key_b(2, &a, Some(9.0), KeyState::Active),
            key_b(3, &a, None, KeyState::Active),
            key_b(4, &a, Some(0.0), KeyState::Active),
        ];
        let mut seen: HashMap<i64, usize> = HashMap::new();
        for id in pick_ids(&keys, Strategy::Weighted, 3000) {
            *seen.entry(id).or_default() += 1;
        }
        assert!(!seen.contains_key(&4), "a known zero weighs nothing: {seen:?}");
        assert!((800..1200).contains(&seen[&3]), "unknown = median: {seen:?}");
        assert!((1500..2100).contains(&seen[&2]), "{seen:?}");
        // None known: equal weights.
        let keys: Vec<_> = (1..=3).map(|i| key_b(i, &a, None, KeyState::Active)).collect();
        let mut seen: HashMap<i64, usize> = HashMap::new();
        for id in pick_ids(&keys, Strategy::Weighted, 3000) {
            *seen.entry(id).or_default() += 1;
        }
        assert!(seen.values().all(|n| (800..1200).contains(n)), "{seen:?}");
    }
}
