//! Client limits across instances on one PostgreSQL database, held by
//! leases: each instance holds a share of a client's budget (today's
//! requests, today's tokens, and of its `rpm` rate: its own rate limiter
//! then runs at that share) and admits calls only within what it holds. The shares are taken and given back in
//! one short transaction per round (every second, or at once when a share
//! runs low), never per call; their sum never passes the limit, so a burst
//! split across instances stays within it.
//!
//! How a round shares a budget (`allocate`): an instance where the client
//! called in the last minute is *active* and holds an equal part of what is
//! left among the active ones; an idle one holds one call's worth, so its
//! first call goes through at once. An instance that runs short is helped
//! at the next rounds by those holding more than their part. A silent
//! instance (no round for 10 s: crashed) keeps only what it used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a lease is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Budget {
    Requests,
    Tokens,
    /// A part of the `rpm` rate (calls per minute, with as many at once).
    Rate,
}

impl Budget {
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Requests => "requests",
            Budget::Tokens => "tokens",
            Budget::Rate => "rate",
        }
    }

    pub fn parse(s: &str) -> Option<Budget> {
        match s {
            "requests" => Some(Budget::Requests),
            "tokens" => Some(Budget::Tokens),
            "rate" => Some(Budget::Rate),
            _ => None,
        }
    }
}

/// A shortage this old no longer asks the others to give back.
pub const SHORT_MS: i64 = 5_000;

/// An instance without a round for this long is taken for gone.
pub const LIVE_MS: i64 = 10_000;

/// Another instance's lease, as last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub granted: u64,
    pub used: u64,
    pub active: bool,
    /// When a call there last found a lease of this client spent (0: never).
    pub short_at: i64,
    pub updated_at: i64,
}

impl Held {
    fn live(&self, now: i64) -> bool {
        self.updated_at > now - LIVE_MS
    }

    /// What of the budget it may still spend or has spent (of a rate: what
    /// it holds; a gone instance's rate is free).
    fn committed(&self, now: i64, rate: bool) -> u64 {
        match (self.live(now), rate) {
            (true, false) => self.granted.max(self.used),
            (true, true) => self.granted,
            (false, false) => self.used,
            (false, true) => 0,
        }
    }
}

/// This instance's new lease of a budget of `limit`: `me` is its lease as it
/// stands (what it holds, what it used of it, `active`, `short_at`),
/// `others` the other instances'. Never less than what it used, and never
/// more than the others leave. Of a `rate`, `used` (calls of the last
/// minute) only says whether a share is spent: a rate's share is held, not
/// used up.
pub fn allocate(limit: u64, me: &Held, others: &[Held], now: i64, rate: bool) -> u64 {
    let (active, used, held) = (me.active, me.used, me.granted);
    let spent = if rate { 0 } else { used };
    let committed: u64 = others.iter().map(|h| h.committed(now, rate)).sum();
    let free = limit.saturating_sub(committed).saturating_sub(spent);
    let all_used = if rate { 0 } else { used + others.iter().map(|h| h.used).sum::<u64>() };
    let left = limit.saturating_sub(all_used);
    let live = || others.iter().filter(|h| h.live(now));
    let idle = live().filter(|h| !h.active).count() as u64;
    let actives = live().filter(|h| h.active).count() as u64 + u64::from(active);
    let to_share = left.saturating_sub(idle);
    let part = if active { to_share.div_ceil(actives.max(1)).max(1) } else { 1 };
    let unused = held.saturating_sub(spent);
    // Another active instance has run out: what is above our part (rounded
    // down, so that the last call's worth goes to the one without) goes back.
    // (Only for a shortage newer than ours: two short instances do not
    // hand the same call's worth back and forth.)
    let short =
        live().any(|h| h.short_at > me.short_at && h.short_at > now - SHORT_MS && h.granted <= h.used);
    let floor = if active { to_share / actives.max(1) } else { 0 };
    let want = if short && unused > floor { floor } else { part.max(unused) };
    spent + want.min(free)
}

/// Calls the other live instances made lately beyond the part of a rate
/// they hold: a part taken from them arrives this much used.
pub fn used_beyond_held(others: &[Held], now: i64) -> u64 {
    others.iter().filter(|h| h.live(now)).map(|h| h.used.saturating_sub(h.granted)).sum()
}

/// What the request path and the lease thread share: a way to ask for a
/// round now, and to wait (briefly) for one.
#[derive(Debug, Default)]
pub struct Leases {
    thread: OnceLock<std::thread::Thread>,
    round: tokio::sync::Notify,
    rounds: AtomicU64,
}

impl Leases {
    /// The thread that runs the rounds.
    pub fn set_thread(&self, t: std::thread::Thread) {
        let _ = self.thread.set(t);
    }

    /// Asks for a round now.
    pub fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// A round ended (the leases it took are in place).
    pub fn round_done(&self) {
        self.rounds.fetch_add(1, Ordering::AcqRel);
        self.round.notify_waiters();
    }

    /// Asks for a round and waits, at most `limit`, for one that began after
    /// the ask to end.
    pub async fn next_round(&self, limit: Duration) {
        let target = self.rounds.load(Ordering::Acquire) + 2;
        let deadline = Instant::now() + limit;
        while self.rounds.load(Ordering::Acquire) < target {
            let notified = std::pin::pin!(self.round.notified());
            let mut notified = notified;
            notified.as_mut().enable();
            if self.rounds.load(Ordering::Acquire) >= target {
                break;
            }
            self.wake();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || actix_rt::time::timeout(left, notified).await.is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn held(granted: u64, used: u64, active: bool) -> Held {
        // Spent and active: a call there found it spent.
        let short_at = if active && granted <= used { NOW - 500 } else { 0 };
        Held { granted, used, active, short_at, updated_at: NOW - 1_000 }
    }

    const ACTIVE: Held = Held { granted: 0, used: 0, active: true, short_at: 0, updated_at: NOW };
    const IDLE: Held = Held { granted: 0, used: 0, active: false, short_at: 0, updated_at: NOW };

    fn allocate(limit: u64, used: u64, active: bool, held: u64, others: &[Held], now: i64) -> u64 {
        let me = Held { granted: held, used, ..if active { ACTIVE } else { IDLE } };
        super::allocate(limit, &me, others, now, false)
    }

    #[test]
    fn alone_an_active_instance_holds_what_is_left() {
        assert_eq!(allocate(10, 0, true, 0, &[], NOW), 10);
        assert_eq!(allocate(10, 4, true, 5, &[], NOW), 10);
        // Idle: one call's worth, or what it already holds.
        assert_eq!(allocate(10, 0, false, 0, &[], NOW), 1);
        assert_eq!(allocate(10, 0, false, 6, &[], NOW), 6);
    }

    #[test]
    fn the_leases_never_add_up_past_the_limit() {
        // Two active: half each.
        let a = allocate(10, 0, true, 0, &[held(0, 0, true)], NOW);
        assert_eq!(a, 5);
        let b = allocate(10, 0, true, 0, &[held(a, 0, true)], NOW);
        assert_eq!(b, 5);
        // A third comes: nothing free until the others give some back.
        assert_eq!(allocate(10, 0, true, 0, &[held(5, 0, true), held(5, 0, true)], NOW), 0);
        // Idle instances keep one call each; the active one the rest.
        assert_eq!(allocate(10, 0, true, 0, &[held(1, 0, false), held(1, 0, false)], NOW), 8);
        // A limit lowered below what is held: nothing more, never less than used.
        assert_eq!(allocate(3, 2, true, 5, &[held(4, 4, true)], NOW), 2);
    }

    #[test]
    fn an_instance_that_runs_short_is_given_what_others_hold_above_their_part() {
        // B ran out (granted == used); A holds 8 unused, its part is 3.
        let a = allocate(10, 0, true, 8, &[held(2, 2, true)], NOW);
        assert_eq!(a, 4, "A keeps its part of the 8 left: 4");
        let b = allocate(10, 2, true, 2, &[held(a, 0, true)], NOW);
        assert_eq!(b, 6, "B takes what A gave back");
        // Nobody short: A keeps what it holds.
        assert_eq!(allocate(10, 0, true, 8, &[held(2, 1, true)], NOW), 8);
        // Spent, but no call there wants more: A keeps what it holds.
        let spent = Held { short_at: 0, ..held(2, 2, true) };
        assert_eq!(allocate(10, 0, true, 8, &[spent], NOW), 8);
        // Both short: only the newer shortage is given to.
        let (older, newer) = (Held { short_at: NOW - 900, ..held(1, 1, true) }, held(0, 0, true));
        assert_eq!(
            super::allocate(
                4,
                &Held { granted: 4, used: 3, short_at: NOW - 900, ..ACTIVE },
                &[newer],
                NOW,
                false
            ),
            3
        );
        assert_eq!(
            super::allocate(
                4,
                &Held { granted: 3, used: 0, short_at: NOW - 500, ..ACTIVE },
                &[older],
                NOW,
                false
            ),
            3
        );
        // The last call's worth goes to the one without: A used 3 of 4, B none.
        assert_eq!(allocate(4, 3, true, 4, &[held(0, 0, true)], NOW), 3);
        assert_eq!(allocate(4, 0, true, 0, &[held(3, 3, true)], NOW), 1);
    }

    #[test]
    fn a_rate_is_shared_as_held_not_used_up() {
        let rate = |used, held, me: &Held, others: &[Held]| {
            super::allocate(10, &Held { granted: held, used, ..me.clone() }, others, NOW, true)
        };
        // Alone and active: all of it, however many calls it made.
        assert_eq!(rate(10, 10, &ACTIVE, &[]), 10);
        // Two active: half each; an idle one keeps one call a minute.
        assert_eq!(rate(7, 0, &ACTIVE, &[held(0, 0, true)]), 5);
        assert_eq!(rate(0, 0, &ACTIVE, &[held(1, 0, false)]), 9);
        assert_eq!(rate(0, 9, &IDLE, &[held(9, 3, true)]), 1);
        // A spent share with a newer shortage gets what others hold above their part.
        let short = Held { granted: 1, used: 1, active: true, short_at: NOW - 100, updated_at: NOW - 100 };
        assert_eq!(rate(3, 9, &ACTIVE, std::slice::from_ref(&short)), 5);
        assert_eq!(rate(1, 1, &Held { short_at: NOW - 100, ..ACTIVE }, &[held(5, 3, true)]), 5);
        // A gone instance's rate is free.
        let gone = Held { granted: 9, used: 9, active: true, short_at: 0, updated_at: NOW - LIVE_MS - 1 };
        assert_eq!(rate(0, 1, &ACTIVE, &[gone]), 10);
    }

    #[test]
    fn a_silent_instance_keeps_only_what_it_used() {
        let gone = Held { granted: 6, used: 2, active: true, short_at: 0, updated_at: NOW - LIVE_MS - 1 };
        assert_eq!(allocate(10, 0, true, 0, &[gone], NOW), 8);
    }
}
