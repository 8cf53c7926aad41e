//! Key selection whose cost does not grow with the pool: what each strategy
//! needs is precomputed when the pool actor publishes a snapshot (the active
//! keys in the strategy's order, runs of equal balances with a turn each,
//! the weights' running sums), so a pick looks at a handful of keys, not all.
//!
//! `select::pick` is the plain linear definition of every strategy; the tests
//! below pin this module's picks to it (same pick, or same distribution).
//!
//! Keys change state between publishes (a request demotes a key at once, the
//! actor republishes moments later): picks skip a key that is no longer
//! active. Cooling accounts are skipped too, and the balance strategy
//! remembers, per model, how many of its best runs are cooling (until the
//! first of them cools down), so that the richest accounts' rate limits are
//! not walked past on every request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::select::{median, NoKey, Strategy};
use super::{KeyId, KeyState, PoolKey};

/// Picks so far (balance strategy), for each key's `last_pick`.
static PICKS: AtomicU64 = AtomicU64::new(1);

/// A run of keys of equal rank (balance strategy), taken in turn.
#[derive(Debug)]
struct Run {
    start: usize,
    end: usize,
    turn: AtomicUsize,
}

/// The keys not cooling for one model, valid until the first of the others
/// cools down (keys that cool later are skipped as usual).
#[derive(Debug)]
struct View {
    sel: Selection,
    until_ms: i64,
}

/// A pick that looks at more keys than this builds a view for its model.
const VIEW_AFTER: usize = 64;

/// Where the balance strategy may start looking for `model`: the runs before
/// are all cooling for it until `until_ms`.
#[derive(Debug, Clone, Copy)]
struct Hint {
    run: usize,
    until_ms: i64,
}

#[derive(Debug)]
pub struct Selection {
    strategy: Strategy,
    /// The keys active when published, in the strategy's order.
    active: Vec<Arc<PoolKey>>,
    /// Balance: runs of equal rank in `active`, best first.
    runs: Vec<Run>,
    /// Weighted: running sums of the weights of `active` (`prefix[i]` = sum of 0..=i).
    prefix: Vec<f64>,
    /// Least used: the calls of `active`'s keys, in a tree of minimums.
    uses: MinTree,
    cursor: AtomicUsize,
    hints: ArcSwap<HashMap<Box<str>, Hint>>,
    /// The other strategies: per model for which many keys cool, a selection
    /// of the keys that do not (built by the pick that first walked past many).
    views: ArcSwap<HashMap<Box<str>, Arc<View>>>,
    /// Keys that were not active when published: exhausted, invalid, disabled.
    down: (usize, usize, usize),
    total: usize,
}

impl Default for Selection {
    fn default() -> Self {
        Selection::build(&[], Strategy::Balance)
    }
}

/// The balance strategy's rank: a known positive balance first (richest
/// first), then unknown, then a known balance of zero or less.
fn rank(k: &PoolKey) -> (u8, f64) {
    match k.balance() {
        Some(b) if b > 0.0 => (0, -b),
        None => (1, 0.0),
        Some(_) => (2, 0.0),
    }
}

fn usable(k: &PoolKey, model: &str, exclude: &[KeyId], now_ms: i64) -> bool {
    k.state() == KeyState::Active
        && !exclude.contains(&k.id)
        && k.account.cooling_until(model, now_ms).is_none()
}

impl Selection {
    pub fn build(keys: &[Arc<PoolKey>], strategy: Strategy) -> Self {
        let mut active: Vec<Arc<PoolKey>> =
            keys.iter().filter(|k| k.state() == KeyState::Active).cloned().collect();
        let count = |s| keys.iter().filter(|k| k.state() == s).count();
        let down = (count(KeyState::Exhausted), count(KeyState::Invalid), count(KeyState::Disabled));
        let mut runs = Vec::new();
        let mut prefix = Vec::new();
        let mut uses = MinTree::default();
        match strategy {
            Strategy::Balance => {
                // Stable: equal ranks keep their id order, and within a run the
                // key picked longest ago comes first.
                active.sort_by(|a, b| {
                    let ((ta, va), (tb, vb)) = (rank(a), rank(b));
                    ta.cmp(&tb)
                        .then(va.total_cmp(&vb))
                        .then(a.last_pick.load(Ordering::Relaxed).cmp(&b.last_pick.load(Ordering::Relaxed)))
                });
                let mut start = 0;
                for i in 1..=active.len() {
                    if i == active.len() || rank(&active[i]) != rank(&active[start]) {
                        runs.push(Run { start, end: i, turn: AtomicUsize::new(0) });
                        start = i;
                    }
                }
            }
            Strategy::Weighted => {
                let known = active.iter().filter_map(|k| k.balance()).filter(|b| *b > 0.0).collect();
                let unknown = median(known).unwrap_or(1.0);
                let mut sum = 0.0;
                for k in &active {
                    sum += k.balance().map(|b| b.max(0.0)).unwrap_or(unknown);
                    prefix.push(sum);
                }
            }
            Strategy::LeastUsed => {
                let counts: Vec<u64> = active.iter().map(|k| k.usage_count.load(Ordering::Relaxed)).collect();
                uses = MinTree::new(&counts);
            }
            Strategy::RoundRobin | Strategy::Random => {}
        }
        Selection {
            strategy,
            active,
            runs,
            prefix,
            uses,
            cursor: AtomicUsize::new(0),
            hints: ArcSwap::from_pointee(HashMap::new()),
            views: ArcSwap::from_pointee(HashMap::new()),
            down,
            total: keys.len(),
        }
    }

    /// Picks a key for `model`, skipping the ones in `exclude`.
    pub fn pick(&self, model: &str, exclude: &[KeyId], now_ms: i64) -> Result<Arc<PoolKey>, NoKey> {
        if self.strategy == Strategy::Balance {
            // Its runs and cooling hints do this job for the balance strategy.
            return self.pick_balance(model, exclude, now_ms).cloned();
        }
        let views = self.views.load();
        if let Some(view) = views.get(model).filter(|v| v.until_ms > now_ms) {
            if view.sel.active.is_empty() {
                // Every key cools for this model until then: known without looking.
                return Err(NoKey::AllCooling { until_ms: view.until_ms });
            }
            let visits = std::cell::Cell::new(0);
            if let Some(k) = view.sel.pick_other(model, exclude, now_ms, &visits) {
                if visits.get() > VIEW_AFTER {
                    // More keys cooled since the view was made: a fresh one.
                    self.make_view(model, now_ms, Some(k));
                }
                return Ok(k.clone());
            }
            // The view's keys are all tried, demoted or cooling: the slow way.
        }
        drop(views);
        let visits = std::cell::Cell::new(0);
        let chosen = self.pick_other(model, exclude, now_ms, &visits).cloned();
        if visits.get() > VIEW_AFTER {
            self.make_view(model, now_ms, chosen.as_ref());
        }
        chosen.ok_or_else(|| self.why_none(model, exclude, now_ms))
    }

    /// Round robin, least used, random and weighted, counting the keys looked at.
    fn pick_other(
        &self,
        model: &str,
        exclude: &[KeyId],
        now_ms: i64,
        visits: &std::cell::Cell<usize>,
    ) -> Option<&Arc<PoolKey>> {
        let ok = |k: &PoolKey| {
            visits.set(visits.get() + 1);
            usable(k, model, exclude, now_ms)
        };
        match self.strategy {
            Strategy::RoundRobin => take_turn(&self.active, &self.cursor, ok),
            Strategy::LeastUsed => {
                let i = self.uses.take_least(
                    |i| ok(&self.active[i]),
                    |i| self.active[i].usage_count.load(Ordering::Relaxed),
                );
                i.map(|i| &self.active[i])
            }
            Strategy::Random => self.pick_random(ok, |n| rand::random_range(0..n)),
            Strategy::Weighted => self.pick_weighted(ok),
            Strategy::Balance => None,
        }
    }

    /// Builds and keeps the view of the keys not cooling for `model`; its
    /// turn comes after `picked`, the key just picked.
    fn make_view(&self, model: &str, now_ms: i64, picked: Option<&Arc<PoolKey>>) {
        let mut until_ms = i64::MAX;
        let keys: Vec<Arc<PoolKey>> = self
            .active
            .iter()
            .filter(|k| k.state() == KeyState::Active)
            .filter(|k| match k.account.cooling_until(model, now_ms) {
                Some(until) => {
                    until_ms = until_ms.min(until);
                    false
                }
                None => true,
            })
            .cloned()
            .collect();
        if until_ms == i64::MAX {
            // Nothing cools: the keys looked at were tried or demoted.
            return;
        }
        let sel = Selection::build(&keys, self.strategy);
        if let Some(at) = picked.and_then(|p| sel.active.iter().position(|k| k.id == p.id)) {
            sel.cursor.store(at + 1, Ordering::Relaxed);
        }
        let view = Arc::new(View { sel, until_ms });
        self.views.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.retain(|_, v| v.until_ms > now_ms);
            if m.len() >= 256 {
                m.clear();
            }
            m.insert(model.into(), view.clone());
            m
        });
    }

    fn pick_balance(&self, model: &str, exclude: &[KeyId], now_ms: i64) -> Result<&Arc<PoolKey>, NoKey> {
        let hint = self.hints.load().get(model).copied().filter(|h| h.until_ms > now_ms);
        let first = hint.map(|h| h.run).unwrap_or(0).min(self.runs.len());
        if let (Some(h), true) = (hint, first == self.runs.len() && !self.runs.is_empty()) {
            // Every run is cooling for this model: known without looking.
            return Err(NoKey::AllCooling { until_ms: h.until_ms });
        }
        // Runs passed over only because they are cooling for this model (or no
        // longer active), in an unbroken stretch from `first`, and the
        // earliest end of those cooldowns.
        let (mut cooling_runs, mut cooling_until, mut unbroken) = (0, i64::MAX, true);
        for run in &self.runs[first..] {
            let keys = &self.active[run.start..run.end];
            if let Some(k) = take_turn(keys, &run.turn, |k| usable(k, model, exclude, now_ms)) {
                // The next publish orders each run by this: least recently picked first.
                k.last_pick.store(PICKS.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                if cooling_runs > 0 && cooling_until < i64::MAX {
                    self.remember(model, Hint { run: first + cooling_runs, until_ms: cooling_until });
                }
                return Ok(k);
            }
            if unbroken {
                match run_blocked_until(keys, model, now_ms) {
                    Some(until) => {
                        cooling_runs += 1;
                        cooling_until = cooling_until.min(until);
                    }
                    None => unbroken = false,
                }
            }
        }
        // (Runs of keys demoted since the publish are not "cooling": the
        // republish that follows the demotion says what they are.)
        if unbroken && cooling_runs > 0 && cooling_until < i64::MAX && first + cooling_runs == self.runs.len()
        {
            self.remember(model, Hint { run: self.runs.len(), until_ms: cooling_until });
        }
        Err(self.why_none(model, exclude, now_ms))
    }

    fn remember(&self, model: &str, hint: Hint) {
        self.hints.rcu(|m| {
            let mut m = HashMap::clone(m);
            // Bounded: models are many, but only the cooling ones are kept.
            if m.len() >= 4096 {
                m.clear();
            }
            m.insert(model.into(), hint);
            m
        });
    }

    fn pick_random(
        &self,
        ok: impl Fn(&PoolKey) -> bool,
        mut draw: impl FnMut(usize) -> usize,
    ) -> Option<&Arc<PoolKey>> {
        let n = self.active.len();
        if n == 0 {
            return None;
        }
        // Draws with rejection keep the choice uniform over usable keys; only
        // when most keys are unusable does it fall back to walking on.
        for _ in 0..8 {
            let k = &self.active[draw(n)];
            if ok(k) {
                return Some(k);
            }
        }
        let start = draw(n);
        (0..n).map(|j| &self.active[(start + j) % n]).find(|k| ok(k))
    }

    fn pick_weighted(&self, ok: impl Fn(&PoolKey) -> bool) -> Option<&Arc<PoolKey>> {
        let total = self.prefix.last().copied().unwrap_or(0.0);
        if total <= 0.0 {
            return self.pick_random(ok, |n| rand::random_range(0..n));
        }
        for _ in 0..8 {
            let point = rand::random::<f64>() * total;
            let i = self.prefix.partition_point(|s| *s <= point).min(self.active.len() - 1);
            let k = &self.active[i];
            if ok(k) {
                return Some(k);
            }
        }
        // Mostly unusable: the usable ones, by weight, the slow way.
        let weight = |i: usize| self.prefix[i] - if i == 0 { 0.0 } else { self.prefix[i - 1] };
        let usable: Vec<usize> = (0..self.active.len()).filter(|i| ok(&self.active[*i])).collect();
        let usable_total: f64 = usable.iter().map(|i| weight(*i)).sum();
        if usable_total <= 0.0 {
            let n = usable.len();
            return (n > 0).then(|| &self.active[usable[rand::random_range(0..n)]]);
        }
        let mut point = rand::random::<f64>() * usable_total;
        let mut last = None;
        for i in usable {
            last = Some(&self.active[i]);
            point -= weight(i);
            if point < 0.0 {
                break;
            }
        }
        last
    }

    /// Why nothing can serve. Runs only when a pick found nothing.
    fn why_none(&self, model: &str, exclude: &[KeyId], now_ms: i64) -> NoKey {
        if self.total == 0 {
            return NoKey::NoneImported;
        }
        let live = || self.active.iter().filter(|k| k.state() == KeyState::Active);
        if live().next().is_none() {
            // Keys demoted since the publish count by their state now.
            let (mut exhausted, mut invalid, mut disabled) = self.down;
            for k in &self.active {
                match k.state() {
                    KeyState::Exhausted => exhausted += 1,
                    KeyState::Invalid => invalid += 1,
                    KeyState::Disabled => disabled += 1,
                    KeyState::Active => {}
                }
            }
            return NoKey::NoneActive { exhausted, invalid, disabled, next_trial_ms: None };
        }
        super::select::cooling_or_tried(live(), model, exclude, now_ms)
    }
}

/// Minimums over a list of counts, for "the least used key" in O(log n): a
/// binary tree whose every node holds the smallest count below it. A pick
/// counts at once (before its call ends), so concurrent picks spread too.
/// Updates race benignly: a node may briefly hold a stale minimum, which the
/// next update on its path corrects.
#[derive(Debug, Default)]
struct MinTree {
    /// Leaves start here (a power of two); `nodes[1]` is the root.
    cap: usize,
    len: usize,
    nodes: Vec<AtomicU64>,
}

impl MinTree {
    fn new(counts: &[u64]) -> Self {
        let cap = counts.len().next_power_of_two().max(1);
        let nodes: Vec<AtomicU64> = (0..2 * cap).map(|_| AtomicU64::new(u64::MAX)).collect();
        for (i, c) in counts.iter().enumerate() {
            nodes[cap + i].store(*c, Ordering::Relaxed);
        }
        for p in (1..cap).rev() {
            let m = nodes[2 * p].load(Ordering::Relaxed).min(nodes[2 * p + 1].load(Ordering::Relaxed));
            nodes[p].store(m, Ordering::Relaxed);
        }
        MinTree { cap, len: counts.len(), nodes }
    }

    fn value(&self, node: usize) -> u64 {
        self.nodes[node].load(Ordering::Relaxed)
    }

    /// The first leaf below `node` (ties go to the lower index, as a linear
    /// scan's would).
    fn leftmost(&self, mut node: usize) -> usize {
        while node < self.cap {
            node *= 2;
        }
        node - self.cap
    }

    /// The index of the least count that `ok` accepts (lowest index among
    /// equals), counted as used. Unacceptable leaves cost a step each.
    /// `current` is a leaf's count as it is now: calls counted elsewhere
    /// (through a view, or before this tree was built) raise a leaf found
    /// lower than it, so the tree's values stay lower bounds that it corrects.
    fn take_least(&self, ok: impl Fn(usize) -> bool, current: impl Fn(usize) -> u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        use std::cmp::Reverse;
        let mut frontier = std::collections::BinaryHeap::new();
        frontier.push(Reverse((self.value(1), self.leftmost(1), 1usize)));
        while let Some(Reverse((value, _, node))) = frontier.pop() {
            if value == u64::MAX {
                break;
            }
            if node >= self.cap {
                let i = node - self.cap;
                if i >= self.len {
                    continue;
                }
                let now = current(i);
                if now > value {
                    self.raise(node, now);
                    frontier.push(Reverse((now, i, node)));
                    continue;
                }
                if ok(i) {
                    self.raise(node, value + 1);
                    return Some(i);
                }
                continue;
            }
            for child in [2 * node, 2 * node + 1] {
                frontier.push(Reverse((self.value(child), self.leftmost(child), child)));
            }
        }
        None
    }

    fn raise(&self, leaf: usize, to: u64) {
        self.nodes[leaf].fetch_max(to, Ordering::Relaxed);
        let mut p = leaf / 2;
        while p >= 1 {
            let m = self.value(2 * p).min(self.value(2 * p + 1));
            self.nodes[p].store(m, Ordering::Relaxed);
            p /= 2;
        }
    }
}

/// When every key of a run is cooling for `model` (or no longer active), the
/// earliest end of those cooldowns; `None` if some key is not cooling.
fn run_blocked_until(keys: &[Arc<PoolKey>], model: &str, now_ms: i64) -> Option<i64> {
    let mut until = i64::MAX;
    for k in keys {
        if k.state() != KeyState::Active {
            continue;
        }
        until = until.min(k.account.cooling_until(model, now_ms)?);
    }
    Some(until)
}

/// The next usable key of `keys` in turn. Keys passed over are skipped for
/// the turns after too (the turn jumps past them), so a stretch of cooling
/// keys costs once per round, not once per pick.
fn take_turn<'a>(
    keys: &'a [Arc<PoolKey>],
    turn: &AtomicUsize,
    ok: impl Fn(&PoolKey) -> bool,
) -> Option<&'a Arc<PoolKey>> {
    let n = keys.len();
    if n == 0 {
        return None;
    }
    let start = turn.fetch_add(1, Ordering::Relaxed);
    for j in 0..n {
        let k = &keys[(start.wrapping_add(j)) % n];
        if ok(k) {
            if j > 0 {
                turn.fetch_add(j, Ordering::Relaxed);
            }
            return Some(k);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap as Map;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::super::select::{self, Counters};
    use super::super::{cooldown, Account};
    use super::*;

    /// A random pool, built twice (fresh atomics each) from one description:
    /// states, balances with ties and unknowns, shared accounts, cooldowns.
    #[derive(Clone, Debug)]
    struct Spec {
        keys: Vec<(i64, KeyState, Option<f64>, usize)>,
        cooling_accounts: Vec<usize>,
        exclude: Vec<i64>,
    }

    fn spec(rng: &mut StdRng) -> Spec {
        let n = rng.random_range(1..40);
        let accounts = rng.random_range(1..=n);
        let keys = (0..n)
            .map(|i| {
                let state = match rng.random_range(0..10) {
                    0 => KeyState::Exhausted,
                    1 => KeyState::Invalid,
                    2 => KeyState::Disabled,
                    _ => KeyState::Active,
                };
                let balance = match rng.random_range(0..5) {
                    0 => None,
                    1 => Some(0.0),
                    2 => Some(14.0), // ties
                    _ => Some(f64::from(rng.random_range(1..50u32)) / 4.0),
                };
                (i as i64 + 1, state, balance, rng.random_range(0..accounts))
            })
            .collect();
        let cooling_accounts = (0..accounts).filter(|_| rng.random_bool(0.2)).collect();
        let exclude = (1..=n as i64).filter(|_| rng.random_bool(0.1)).collect();
        Spec { keys, cooling_accounts, exclude }
    }

    fn build(s: &Spec) -> Vec<Arc<PoolKey>> {
        let uses = |id: i64| (id as u64 * 7) % 5; // uneven call counts to start from
        let accounts: Vec<Arc<Account>> =
            (0..s.keys.len()).map(|i| Arc::new(Account::new(format!("a{i}"), vec![]))).collect();
        let policy = cooldown::Policy { base: Duration::from_secs(30), max: Duration::from_secs(3600) };
        for a in &s.cooling_accounts {
            accounts[*a].apply_rate_limit("m", 0, &policy, &cooldown::Hint::default());
        }
        s.keys
            .iter()
            .map(|(id, state, balance, acct)| {
                Arc::new(PoolKey::new(
                    KeyId(*id),
                    format!("sk-{id}-xxxxxxxxxx"),
                    "http://x".into(),
                    accounts[*acct].clone(),
                    *state,
                    *balance,
                    uses(*id),
                    None,
                    None,
                ))
            })
            .collect()
    }

    type Picks = Vec<Result<i64, NoKey>>;

    /// Both ways, `n` picks each on its own copy of the pool.
    fn both(s: &Spec, strategy: Strategy, n: usize) -> (Picks, Picks) {
        let linear_keys = build(s);
        let exclude: Vec<KeyId> = s.exclude.iter().copied().map(KeyId).collect();
        let (cursor, seq) = (AtomicUsize::new(0), AtomicU64::new(1));
        // Each call finishes before the next pick (its use is counted).
        let linear = (0..n)
            .map(|_| {
                let c = Counters { cursor: &cursor, pick_seq: &seq };
                let k = select::pick(&linear_keys, "m", &exclude, 1, strategy, &c)?;
                k.note_use(1);
                Ok(k.id.0)
            })
            .collect();
        let fast_keys = build(s);
        let sel = Selection::build(&fast_keys, strategy);
        let fast = (0..n)
            .map(|_| {
                let k = sel.pick("m", &exclude, 1)?;
                k.note_use(1);
                Ok(k.id.0)
            })
            .collect();
        (linear, fast)
    }

    #[test]
    fn balance_round_robin_and_least_used_pick_what_the_linear_definition_picks() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let s = spec(&mut rng);
            for strategy in [Strategy::Balance, Strategy::RoundRobin, Strategy::LeastUsed] {
                let (linear, fast) = both(&s, strategy, 3 * s.keys.len());
                assert_eq!(linear, fast, "{strategy:?} on {s:?}");
            }
        }
    }

    #[test]
    fn random_and_weighted_follow_the_linear_distribution() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..40 {
            let s = spec(&mut rng);
            for strategy in [Strategy::Random, Strategy::Weighted] {
                let (linear, fast) = both(&s, strategy, 6000);
                let freq = |v: &[Result<i64, NoKey>]| {
                    let mut m: Map<Option<i64>, f64> = Map::new();
                    for x in v {
                        *m.entry(x.as_ref().ok().copied()).or_default() += 1.0 / v.len() as f64;
                    }
                    m
                };
                let (fl, ff) = (freq(&linear), freq(&fast));
                let keys: std::collections::HashSet<_> = fl.keys().chain(ff.keys()).cloned().collect();
                for k in keys {
                    let (a, b) = (fl.get(&k).copied().unwrap_or(0.0), ff.get(&k).copied().unwrap_or(0.0));
                    assert!((a - b).abs() < 0.04, "{strategy:?}: {k:?} linear {a:.3} fast {b:.3} on {s:?}");
                }
            }
        }
    }

    #[test]
    fn a_tree_of_minimums_gives_the_least_count_lowest_index_first() {
        let t = MinTree::new(&[3, 1, 4, 1, 5]);
        let none = |_| 0;
        assert_eq!(t.take_least(|_| true, none), Some(1));
        assert_eq!(t.take_least(|_| true, none), Some(3));
        assert_eq!(t.take_least(|i| i != 1, none), Some(3), "1 and 3 at 2 now; 1 refused");
        assert_eq!(t.take_least(|_| true, none), Some(1));
        assert_eq!(t.take_least(|i| i == 4, none), Some(4));
        assert_eq!(t.take_least(|_| false, none), None);
        assert_eq!(MinTree::new(&[]).take_least(|_| true, none), None);
        // Counts raised elsewhere (1 and 3 are at 3 now, not 3 and 3): the tree
        // corrects its stale values when it meets them.
        let t = MinTree::new(&[3, 1, 4, 1, 5]);
        let now = |i| [3, 9, 4, 9, 5][i];
        assert_eq!(t.take_least(|_| true, now), Some(0));
        assert_eq!(t.take_least(|_| true, now), Some(0), "0 (picked) and 2 at 4: the lower index");
        assert_eq!(t.take_least(|_| true, now), Some(2));
        assert_eq!(t.value(1), 5, "the root holds a true minimum again, not 1");
    }

    #[test]
    fn many_cooling_accounts_are_walked_past_once_not_on_every_pick() {
        // 1,000 keys of equal balance; the 900 richest of another 1,000 cool for "m".
        let policy = cooldown::Policy { base: Duration::from_secs(30), max: Duration::from_secs(3600) };
        let keys: Vec<Arc<PoolKey>> = (0..2000)
            .map(|i| {
                let a = Arc::new(Account::new(format!("a{i}"), vec![]));
                // The 900 cooling accounts are the richest.
                let balance = if i < 1000 { 100.0 + (999 - i) as f64 } else { 1.0 };
                if i < 900 {
                    a.apply_rate_limit("m", 0, &policy, &cooldown::Hint::default());
                }
                Arc::new(PoolKey::new(
                    KeyId(i),
                    format!("sk-{i}-xxxxxxxx"),
                    "x".into(),
                    a,
                    KeyState::Active,
                    Some(balance),
                    0,
                    None,
                    None,
                ))
            })
            .collect();
        let sel = Selection::build(&keys, Strategy::Balance);
        let first = sel.pick("m", &[], 1).unwrap();
        assert_eq!(first.id.0, 900, "the richest key that is not cooling");
        // The 900 cooling runs are remembered: the next pick starts past them.
        let hint = sel.hints.load().get("m").copied().unwrap();
        assert_eq!((hint.run, hint.until_ms), (900, 30_000));
        assert_eq!(sel.pick("m", &[], 2).unwrap().id.0, 900);
        assert_eq!(sel.pick("other", &[], 2).unwrap().id.0, 0, "another model is not cooling");
        // After the cooldowns end, the richest serves again.
        assert_eq!(sel.pick("m", &[], 30_001).unwrap().id.0, 0);
    }

    #[test]
    fn the_other_strategies_pick_among_the_keys_not_cooling_through_a_view() {
        // 3,000 keys, each its own account; the first 2,900 cool for "m" until 30 s.
        let s = Spec {
            keys: (0..3000)
                .map(|i| (i as i64 + 1, KeyState::Active, Some(1.0 + (i % 7) as f64), i))
                .collect(),
            cooling_accounts: (0..2900).collect(),
            exclude: vec![],
        };
        let usable = |id: &i64| *id > 2900;
        // Least used: the very picks of the linear definition.
        let (linear, fast) = both(&s, Strategy::LeastUsed, 600);
        assert_eq!(linear, fast);
        for strategy in [Strategy::RoundRobin, Strategy::LeastUsed, Strategy::Random, Strategy::Weighted] {
            let keys = build(&s);
            let sel = Selection::build(&keys, strategy);
            let mut counts: Map<i64, usize> = Map::new();
            for _ in 0..300 {
                let k = sel.pick("m", &[], 1).unwrap();
                k.note_use(1);
                *counts.entry(k.id.0).or_default() += 1;
            }
            assert!(counts.keys().all(usable), "{strategy:?} picked a cooling key");
            let view = sel.views.load().get("m").cloned().expect("a view for m");
            assert_eq!((view.sel.active.len(), view.until_ms), (100, 30_000), "{strategy:?}");
            if strategy == Strategy::RoundRobin {
                assert!(counts.values().all(|c| *c == 3), "{strategy:?}: each usable key thrice: {counts:?}");
            }
            if strategy == Strategy::LeastUsed {
                // From uneven starts (0-4 calls), to calls within one of each other.
                let calls: Vec<u64> = keys
                    .iter()
                    .filter(|k| usable(&k.id.0))
                    .map(|k| k.usage_count.load(Ordering::Relaxed))
                    .collect();
                let (lo, hi) = (calls.iter().min(), calls.iter().max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{calls:?}");
            }
            assert!(sel.views.load().get("other").is_none(), "no view for a model that does not cool");
            let after: std::collections::HashSet<i64> =
                (0..300).map(|_| sel.pick("m", &[], 30_001).unwrap().id.0).collect();
            assert!(after.iter().any(|id| !usable(id)), "{strategy:?}: cooled-down keys serve again");
        }
        // Every key cooling: the answer comes from the empty view, with the time.
        let all = Spec { cooling_accounts: (0..3000).collect(), ..s };
        let keys = build(&all);
        for strategy in [Strategy::RoundRobin, Strategy::LeastUsed, Strategy::Random, Strategy::Weighted] {
            let sel = Selection::build(&keys, strategy);
            for _ in 0..3 {
                assert_eq!(sel.pick("m", &[], 1).unwrap_err(), NoKey::AllCooling { until_ms: 30_000 });
            }
            assert!(sel.views.load().get("m").is_some_and(|v| v.sel.active.is_empty()), "{strategy:?}");
        }
    }
}
