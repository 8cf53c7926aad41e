//! Client limits across instances on one PostgreSQL database: each
//! publishes its counts every second and takes the others' (what the admin
//! shows), and holds its limits by leases (`lease`), renewed every second or
//! when one runs low.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::Connection;

use super::lease::{allocate, used_beyond_held, Budget, Held};
use super::usage::{day_of, DayUsage};
use super::{Client, ClientKeys};
use crate::db::models::LeaseRow;
use crate::db::queries::clients::{self as client_rows, Counts};
use crate::db::{DbError, DbPool};
use crate::ids::ClientId;

/// One budget this instance holds a lease of, as a round finds it.
struct Ask {
    client: Arc<Client>,
    budget: Budget,
    period: i64,
    limit: u64,
    used: u64,
    active: bool,
    short_at: i64,
}

/// A lease row is written again at least this often (it tells the others
/// this instance is alive; silent for `lease::LIVE_MS`, it is taken for gone).
const REWRITE_MS: i64 = 3_000;

/// A rate's lease is of no period: one row per instance and client.
const RATE_PERIOD: i64 = 0;

impl ClientKeys {
    /// With several instances: publishes this instance's counts of today (and
    /// of the last minute, for rpm) and takes the others' (run every second,
    /// so a limit holds across the instances to within a second of traffic
    /// on each).
    pub fn sync_usage(
        &self,
        conn: &mut crate::db::AnyConn,
        instance: &str,
        now_ms: i64,
    ) -> Result<(), DbError> {
        let today = day_of(now_ms, &self.tz);
        let snapshot = self.snapshot.load();
        let mine: Vec<(ClientId, Counts)> = snapshot
            .by_id
            .values()
            .map(|c| {
                let (requests, tokens) = c.own(today);
                let recent = c.usage.minute.lock().unwrap_or_else(|e| e.into_inner()).count(now_ms);
                (c.id, Counts { requests, tokens, recent })
            })
            .filter(|(_, c)| *c != Counts::default())
            .collect();
        client_rows::publish_usage(conn, instance, today, &mine, now_ms)?;
        let others = client_rows::others_usage(conn, instance, today, now_ms)?;
        for c in snapshot.by_id.values() {
            let o = others.get(&c.id).copied().unwrap_or_default();
            *c.usage.others.lock().unwrap_or_else(|e| e.into_inner()) =
                DayUsage { day: today, requests: o.requests, tokens: o.tokens, reserved: 0 };
            c.usage.others_minute.store(o.recent, Ordering::Release);
        }
        Ok(())
    }
}

impl ClientKeys {
    /// One lease round (several instances): for every budget of every
    /// limited client, this instance's lease is worked out anew from
    /// everyone's (`lease::allocate`) and written, in one transaction that
    /// holds the other instances' rounds off. `give_back` (at a shutdown):
    /// every lease shrinks to what was used.
    pub fn lease_round(
        &self,
        conn: &mut crate::db::AnyConn,
        instance: &str,
        now_ms: i64,
        give_back: bool,
    ) -> Result<(), DbError> {
        let Some(leases) = &self.leases else { return Ok(()) };
        let today = day_of(now_ms, &self.tz);
        let mut asks = Vec::new();
        for c in self.snapshot.load().by_id.values() {
            if c.daily_requests.is_none() && c.daily_tokens.is_none() && c.rpm.is_none() {
                continue;
            }
            let day = *c.usage.day.lock().unwrap_or_else(|e| e.into_inner());
            let (requests, tokens) =
                if day.day == today { (day.requests, day.tokens + day.reserved) } else { (0, 0) };
            let lease = c.usage.lease.lock().unwrap_or_else(|e| e.into_inner());
            let active = !give_back && lease.last_want_ms > now_ms - 60_000;
            let short_at = if give_back { 0 } else { lease.last_short_ms };
            let mut ask = |budget, period, limit, used| {
                asks.push(Ask { client: c.clone(), budget, period, limit, used, active, short_at })
            };
            if let Some(limit) = c.daily_requests {
                ask(Budget::Requests, today, limit, requests);
            }
            if let Some(limit) = c.daily_tokens {
                ask(Budget::Tokens, today, limit, tokens);
            }
            if let Some(rpm) = c.rpm {
                let recent = c.usage.minute.lock().unwrap_or_else(|e| e.into_inner()).count(now_ms);
                ask(Budget::Rate, RATE_PERIOD, u64::from(rpm), recent);
            }
        }
        if asks.is_empty() {
            leases.round_done();
            return Ok(());
        }
        let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let small = |n: i64| u64::try_from(n).unwrap_or(0);
        let grants = conn.transaction::<_, DbError, _>(|conn| {
            client_rows::lock_leases(conn)?;
            let mut held: HashMap<(i64, Budget, i64), Vec<LeaseRow>> = HashMap::new();
            for row in client_rows::leases(conn, today)? {
                if let Some(b) = Budget::parse(&row.budget) {
                    held.entry((row.client_id, b, row.period)).or_default().push(row);
                }
            }
            // (new lease, what the others used lately beyond what they hold)
            let mut grants = Vec::with_capacity(asks.len());
            for a in &asks {
                let rows = held.get(&(a.client.id.0, a.budget, a.period)).map_or(&[][..], |r| &r[..]);
                let mine = rows.iter().find(|r| r.instance == instance);
                let others: Vec<Held> = rows
                    .iter()
                    .filter(|r| r.instance != instance)
                    .map(|r| Held {
                        granted: small(r.granted),
                        used: small(r.used),
                        active: r.active,
                        short_at: r.short_at,
                        updated_at: r.updated_at,
                    })
                    .collect();
                let me = Held {
                    granted: mine.map_or(0, |r| small(r.granted)),
                    used: a.used,
                    active: a.active,
                    short_at: a.short_at,
                    updated_at: now_ms,
                };
                let rate = a.budget == Budget::Rate;
                let granted = match (give_back, rate) {
                    (true, true) => 0,
                    (true, false) => a.used,
                    _ => allocate(a.limit, &me, &others, now_ms, rate),
                };
                let row = LeaseRow {
                    client_id: a.client.id.0,
                    budget: a.budget.as_str().to_string(),
                    period: a.period,
                    instance: instance.to_string(),
                    granted: big(granted),
                    used: big(a.used),
                    active: a.active,
                    short_at: a.short_at,
                    updated_at: now_ms,
                };
                let same = mine.is_some_and(|m| {
                    (m.granted, m.used, m.active, m.short_at)
                        == (row.granted, row.used, row.active, row.short_at)
                        && m.updated_at > now_ms - REWRITE_MS
                });
                if !same {
                    client_rows::write_lease(conn, &row)?;
                }
                grants.push((granted, used_beyond_held(&others, now_ms)));
            }
            if now_ms.rem_euclid(60_000) < 2_000 {
                client_rows::prune_leases(conn, today, now_ms - 3_600_000)?;
            }
            Ok(grants)
        })?;
        for (a, (granted, beyond)) in asks.iter().zip(grants) {
            let mut l = a.client.usage.lease.lock().unwrap_or_else(|e| e.into_inner());
            let low = granted.saturating_sub(a.used) / 2;
            match a.budget {
                Budget::Requests => {
                    l.on(today).requests = granted;
                    l.low[0] = low;
                }
                Budget::Tokens => {
                    l.on(today).tokens = granted;
                    l.low[1] = low;
                }
                Budget::Rate => {
                    // What it gains arrives used, as far as the others had
                    // used it (their calls of the last minute beyond their part).
                    let filled = granted.saturating_sub(l.rate).min(beyond);
                    a.client.rescale_rate(l.rate, granted, filled, now_ms);
                    l.rate = granted;
                }
            }
        }
        leases.round_done();
        Ok(())
    }
}

/// With several instances on one database: publishes this instance's counts
/// `every` (a second, or half the log's flush interval when that is
/// shorter: a crash loses no call the log keeps from the counts either; and
/// once more when `alive()` turns false, at a shutdown)
/// and takes the others', on a thread of its own; and runs the lease rounds
/// (every second, and at once when a request asks).
pub fn share_usage(
    keys: Arc<ClientKeys>,
    db: DbPool,
    instance: String,
    every: Duration,
    alive: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("client-usage".into()).spawn(move || {
        if let Some(l) = &keys.leases {
            l.set_thread(std::thread::current());
        }
        // Said once per outage, not every second.
        let mut failing = false;
        let mut last_sync: Option<Instant> = None;
        let mut last_round: Option<Instant> = None;
        let mut woken = true;
        loop {
            let last = !alive();
            let sync = last || last_sync.is_none_or(|t| t.elapsed() >= every);
            // Every second, and when a request asked (a lease ran low).
            let round = last || woken || last_round.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            let synced = db.get_timeout(crate::db::CONNECT_WAIT).map_err(DbError::from).and_then(|mut conn| {
                let now = crate::db::now_ms();
                if sync {
                    last_sync = Some(Instant::now());
                    keys.sync_usage(&mut conn, &instance, now)?;
                }
                if round {
                    last_round = Some(Instant::now());
                    keys.lease_round(&mut conn, &instance, now, last)?;
                }
                Ok(())
            });
            match synced {
                Ok(()) if failing => {
                    log::info!("client usage: shared with the other instances again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    log::warn!("client usage: cannot share with the other instances ({e}); each counts its own until the database is back");
                    failing = true;
                }
                Err(_) => {}
            }
            if last {
                break;
            }
            let until = |t: Option<Instant>, period: Duration| t.map_or(Duration::ZERO, |t| period.saturating_sub(t.elapsed()));
            let next = until(last_sync, every).min(until(last_round, Duration::from_secs(1)));
            let parked = Instant::now();
            std::thread::park_timeout(next);
            woken = parked.elapsed() < next;
            // Woken by requests: one round per 50 ms at most.
            std::thread::sleep(Duration::from_millis(50).saturating_sub(parked.elapsed()));
        }
    })?;
    Ok(())
}
