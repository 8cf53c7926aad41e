//! Key selection: pure functions over the snapshot's keys. No allocation on
//! the request path: every strategy walks the filtered slice at most twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{KeyState, PoolKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The highest known balance (what users of the old tool expect).
    Balance,
    RoundRobin,
    Random,
    LeastUsed,
    /// Random, weighted by balance.
    Weighted,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "balance" | "highest_balance" => Strategy::Balance,
            "round_robin" | "roundrobin" => Strategy::RoundRobin,
            "random" => Strategy::Random,
            "least_used" => Strategy::LeastUsed,
            "weighted" => Strategy::Weighted,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Balance => "balance",
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastUsed => "least_used",
            Strategy::Weighted => "weighted",
        }
    }
}

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
    },
}

impl NoKey {
    pub fn message(&self) -> String {
        match self {
            NoKey::NoneImported => "No API keys in the pool: import SiliconFlow keys in the admin UI or with POST /import_keys".into(),
            NoKey::AllTried => "Every usable API key in the pool failed for this request".into(),
            NoKey::AllCooling { until_ms } => {
                let when = chrono::DateTime::from_timestamp_millis(*until_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                format!("Every usable API key is rate-limited for this model; the first cools down at {when}")
            }
            NoKey::NoneActive { exhausted, invalid, disabled } => format!(
                "No usable API key: {exhausted} exhausted (no balance), {invalid} invalid, {disabled} disabled"
            ),
        }
    }
}

fn usable(k: &PoolKey, model: &str, exclude: &[i64], now_ms: i64) -> bool {
    k.state() == KeyState::Active
        && !exclude.contains(&k.id)
        && k.account.cooling_until(model, now_ms).is_none()
}

pub fn pick(
    keys: &[Arc<PoolKey>],
    model: &str,
    exclude: &[i64],
    now_ms: i64,
    strategy: Strategy,
    cursor: &AtomicUsize,
) -> Result<Arc<PoolKey>, NoKey> {
    let candidates = || keys.iter().filter(|k| usable(k, model, exclude, now_ms));
    let chosen = match strategy {
        Strategy::Balance => candidates().max_by(|a, b| {
            let (a, b) = (a.balance().unwrap_or(f64::MIN), b.balance().unwrap_or(f64::MIN));
            // Ties go to the earlier key, so the choice is stable.
            a.total_cmp(&b).then(std::cmp::Ordering::Greater)
        }),
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
            let weight = |k: &PoolKey| k.balance().filter(|b| *b > 0.0).unwrap_or(0.0);
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

fn why_none(keys: &[Arc<PoolKey>], model: &str, exclude: &[i64], now_ms: i64) -> NoKey {
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
        };
    }
    let cooling = active
        .iter()
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
        Arc::new(PoolKey::new(
            id,
            format!("sk-key-{id}-xxxxxxxx"),
            "http://x".into(),
            account.clone(),
            state,
            Some(balance),
            0,
            None,
            None,
        ))
    }

    fn acct(id: &str) -> Arc<Account> {
        Arc::new(Account::new(id.into(), vec![]))
    }

    fn pick_ids(keys: &[Arc<PoolKey>], strategy: Strategy, n: usize) -> Vec<i64> {
        let cursor = AtomicUsize::new(0);
        (0..n).map(|_| pick(keys, "m", &[], 0, strategy, &cursor).unwrap().id).collect()
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
        let cursor = AtomicUsize::new(0);
        assert_eq!(pick(&keys, "m", &[2], 0, Strategy::Balance, &cursor).unwrap().id, 1);
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
        let cursor = AtomicUsize::new(0);
        assert_eq!(pick(&keys, "m", &[], 1, Strategy::Balance, &cursor).unwrap().id, 3);
        assert_eq!(pick(&keys, "other", &[], 1, Strategy::Balance, &cursor).unwrap().id, 1);
        assert_eq!(
            pick(&keys, "m", &[3], 1, Strategy::Balance, &cursor).unwrap_err(),
            NoKey::AllCooling { until_ms: 30_000 },
        );
        assert_eq!(
            pick(&keys, "other", &[1, 2, 3], 1, Strategy::Balance, &cursor).unwrap_err(),
            NoKey::AllTried
        );
        b.apply_rate_limit("m", 0, &policy, &cooldown::Hint::default());
        assert_eq!(
            pick(&keys, "m", &[], 1, Strategy::Balance, &cursor).unwrap_err(),
            NoKey::AllCooling { until_ms: 30_000 }
        );
        assert_eq!(pick(&keys, "m", &[], 30_000, Strategy::Balance, &cursor).unwrap().id, 1);
    }

    #[test]
    fn explains_why_nothing_can_serve() {
        let cursor = AtomicUsize::new(0);
        assert_eq!(pick(&[], "m", &[], 0, Strategy::Balance, &cursor).unwrap_err(), NoKey::NoneImported);
        let a = acct("a");
        let keys = vec![key(1, &a, 0.0, KeyState::Exhausted), key(2, &a, 1.0, KeyState::Invalid)];
        let err = pick(&keys, "m", &[], 0, Strategy::Balance, &cursor).unwrap_err();
        assert_eq!(err, NoKey::NoneActive { exhausted: 1, invalid: 1, disabled: 0 });
        assert!(err.message().contains("1 exhausted"));
    }
}
