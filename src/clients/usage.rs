//! What a client used: today's requests and tokens, its rate state (GCRA),
//! and its calls of the last minute, kept across snapshots. Days follow
//! `TIMEZONE`.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Mutex;

use chrono::FixedOffset;

/// What a client used today, and its rate state; kept across snapshots.
#[derive(Debug, Default)]
pub struct Usage {
    /// GCRA's theoretical arrival time, in µs since the epoch.
    pub(super) tat_us: AtomicI64,
    pub(super) day: Mutex<DayUsage>,
    /// With several instances: what the others counted today (as of their
    /// last publication, at most a second old).
    pub(super) others: Mutex<DayUsage>,
    /// Calls admitted here in the last 60 s (clients with an rpm), published
    /// for the other instances; and theirs, as last published.
    pub(super) minute: Mutex<Minute>,
    pub(super) others_minute: AtomicU64,
    /// With several instances: this instance's leases of the client's
    /// budgets (see `lease`).
    pub(super) lease: Mutex<LeaseState>,
    /// Calls refused for a model off the list: when last said in the log,
    /// and how many since.
    pub(super) refused_logged_ms: AtomicI64,
    pub(super) refused_quiet: AtomicU64,
}

/// This instance's leases of one client's budgets, and when it last wanted
/// to call (an instance where the client called in the last minute holds
/// an equal part; an idle one, one call's worth).
#[derive(Debug, Default)]
pub(super) struct LeaseState {
    pub(super) day: i64,
    /// Requests and tokens of `day` this instance may admit in all.
    pub(super) requests: u64,
    pub(super) tokens: u64,
    /// Its part of the `rpm` rate: its rate limiter runs at this.
    pub(super) rate: u64,
    /// Below this much left (requests, tokens), a round is asked for.
    pub(super) low: [u64; 2],
    pub(super) last_want_ms: i64,
    /// When a call last found a lease spent.
    pub(super) last_short_ms: i64,
}

impl LeaseState {
    /// Today's leases, started afresh on a new day.
    pub(super) fn on(&mut self, today: i64) -> &mut Self {
        if self.day != today {
            self.day = today;
            self.requests = 0;
            self.tokens = 0;
        }
        self
    }
}

/// Calls per second over the last minute: 60 one-second buckets.
#[derive(Debug)]
pub(super) struct Minute {
    /// Each bucket's second (epoch), and its count.
    buckets: [(i64, u32); 60],
}

impl Default for Minute {
    fn default() -> Self {
        Minute { buckets: [(i64::MIN, 0); 60] }
    }
}

impl Minute {
    pub(super) fn add(&mut self, now_ms: i64) {
        let sec = now_ms.div_euclid(1000);
        let b = &mut self.buckets[sec.rem_euclid(60) as usize];
        if b.0 != sec {
            *b = (sec, 0);
        }
        b.1 = b.1.saturating_add(1);
    }

    /// Calls in the 60 s up to `now_ms`.
    pub(super) fn count(&self, now_ms: i64) -> u64 {
        let sec = now_ms.div_euclid(1000);
        self.buckets.iter().filter(|(s, _)| (sec - 59..=sec).contains(s)).map(|(_, n)| u64::from(*n)).sum()
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DayUsage {
    pub(super) day: i64,
    pub(super) requests: u64,
    pub(super) tokens: u64,
    /// Tokens the calls admitted and not yet ended may still use (see `admit`).
    pub(super) reserved: u64,
}

impl DayUsage {
    /// (requests, tokens) on `today`; nothing if these counts are of another day.
    pub(super) fn of(&self, today: i64) -> (u64, u64) {
        if self.day == today {
            (self.requests, self.tokens)
        } else {
            (0, 0)
        }
    }

    /// The counts of `today`, started afresh if these are of another day.
    pub(super) fn on(&mut self, today: i64) -> &mut Self {
        if self.day != today {
            *self = DayUsage { day: today, requests: 0, tokens: 0, reserved: 0 };
        }
        self
    }
}

pub(super) const DAY_MS: i64 = 86_400_000;

pub(super) fn day_of(now_ms: i64, tz: &FixedOffset) -> i64 {
    (now_ms + i64::from(tz.local_minus_utc()) * 1000).div_euclid(DAY_MS)
}

/// Seconds until the day (in `tz`) after `now_ms` begins.
pub(super) fn secs_to_next_day(now_ms: i64, tz: &FixedOffset) -> u64 {
    let next = (day_of(now_ms, tz) + 1) * DAY_MS - i64::from(tz.local_minus_utc()) * 1000;
    ((next - now_ms + 999) / 1000).max(1) as u64
}
