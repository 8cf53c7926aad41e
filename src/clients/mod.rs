//! Client keys: who may call `/v1`, which models each may use, and how much.
//!
//! The owner hands out keys (`sk-` + 48 random characters), each with its
//! own name, model list, per-minute rate and daily quotas; only a hash of the
//! secret is stored. The request path finds the caller with one hash and one
//! map lookup in a snapshot (never the database), and counts its use in
//! memory: the rate with GCRA (a "theoretical arrival time" per client, one
//! compare-and-swap per call, exact for any burst), the day's requests and
//! tokens under a per-client lock. `API_KEY` stays an unlimited client named
//! `env`. Days follow `TIMEZONE`.

mod keys;
pub mod lease;
mod models;
mod secret;
mod share;
mod usage;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::FixedOffset;

use crate::ids::ClientId;
pub use keys::{ClientKeys, ClientSnapshot};
pub use models::{parse_models, ModelRule};
pub use secret::{key_hash, key_hash_hex, new_secret};
pub use share::share_usage;
pub use usage::Usage;
use usage::{day_of, secs_to_next_day};

/// The name of the client that `API_KEY` authenticates.
pub const ENV_CLIENT: &str = "env";

/// Its id (no row has it: ids start at 1).
pub const ENV_CLIENT_ID: ClientId = ClientId(0);

#[derive(Debug)]
pub struct Client {
    pub id: ClientId,
    pub name: Arc<str>,
    /// `None`: every model.
    pub models: Option<Vec<ModelRule>>,
    pub rpm: Option<u32>,
    pub daily_requests: Option<u64>,
    pub daily_tokens: Option<u64>,
    /// Epoch ms after which the key no longer works.
    pub expires_at: Option<i64>,
    pub enabled: bool,
    pub usage: Arc<Usage>,
    /// With several instances: limits are held by leases (see `lease`).
    pub leases: Option<Arc<lease::Leases>>,
}

/// What a call may use of a daily token limit, worked out from its body
/// before it is admitted: its prompt (an estimate that does not undercount
/// dense text) and the most it may write (`max_tokens` times `n`; `None`
/// when it sets no bound: it may then use whatever is left).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    pub prompt: u64,
    pub output: Option<u64>,
}

impl Reservation {
    /// A call that uses exactly `tokens` at most.
    pub fn fixed(tokens: u64) -> Self {
        Reservation { prompt: tokens, output: Some(0) }
    }

    /// The least room it needs: its prompt and one token of answer when
    /// its output is unbounded.
    fn least(&self) -> u64 {
        self.prompt.saturating_add(self.output.unwrap_or(1))
    }

    /// The most it may use, when bounded.
    fn most(&self) -> Option<u64> {
        self.output.map(|o| self.prompt.saturating_add(o))
    }

    fn describe(&self) -> String {
        match self.output {
            Some(0) => format!("up to {}", self.prompt),
            Some(o) => format!(
                "up to {} (a prompt of about {} and {o} of answer)",
                self.prompt.saturating_add(o),
                self.prompt
            ),
            None => format!("a prompt of about {} and an answer of no set length", self.prompt),
        }
    }
}

/// Why a call is refused before it goes anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: the key is disabled or expired (said as "invalid", as for any
    /// unknown key: the caller learns nothing about other keys).
    Unauthorized(&'static str),
    /// 403: the model is not on the client's list.
    Model(String),
    /// 429: a limit is reached; the message names it.
    Limit { message: String, retry_after_secs: u64 },
    /// 429 unless a lease round brings more: this instance's share of a
    /// limit (several instances) is spent, though the limit is not.
    Share(String),
}

impl Client {
    /// The unlimited client that `API_KEY` authenticates.
    pub fn env() -> Client {
        Client {
            id: ENV_CLIENT_ID,
            name: Arc::from(ENV_CLIENT),
            models: None,
            rpm: None,
            daily_requests: None,
            daily_tokens: None,
            expires_at: None,
            enabled: true,
            usage: Arc::default(),
            leases: None,
        }
    }

    pub fn allows_model(&self, model: &str) -> bool {
        match &self.models {
            None => true,
            Some(rules) => rules.iter().any(|r| r.matches(model)),
        }
    }

    /// May the key be used at all now (401 otherwise)?
    pub fn usable(&self, now_ms: i64) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::Unauthorized("this key is disabled"));
        }
        if self.expires_at.is_some_and(|t| now_ms >= t) {
            return Err(Refusal::Unauthorized("this key has expired"));
        }
        Ok(())
    }

    /// Admits one call for `model` (empty: a call naming no model), or says
    /// why not. An admitted call is counted in the day's requests now. With a
    /// daily token limit it also reserves the tokens it may use (`reserve`,
    /// asked only then) and is admitted only while the tokens used and
    /// reserved leave room, so concurrent calls cannot overshoot the limit by
    /// more than the calls already admitted could use. Answers the tokens
    /// reserved, given back with the tokens used when it ends (`settle`).
    pub fn admit(
        &self,
        model: &str,
        now_ms: i64,
        tz: &FixedOffset,
        reserve: &dyn Fn() -> Reservation,
    ) -> Result<u64, Refusal> {
        self.admit_weighted(model, now_ms, tz, reserve, 1)
    }

    /// As `admit`, for a call that counts as `weight` requests against the
    /// daily limit (a batch: its lines).
    pub fn admit_weighted(
        &self,
        model: &str,
        now_ms: i64,
        tz: &FixedOffset,
        reserve: &dyn Fn() -> Reservation,
        weight: u64,
    ) -> Result<u64, Refusal> {
        let weight = weight.max(1);
        if self.id == ENV_CLIENT_ID {
            // `API_KEY`'s client: no list, no limit, nothing to count here (the
            // log has its calls), so no lock shared by every request.
            return Ok(0);
        }
        // (Disabled and expired keys were refused when the key was checked.)
        if !model.is_empty() && !self.allows_model(model) {
            return Err(self.off_the_list(model));
        }
        // Worked out before the lock (it reads the whole body).
        let wants = if self.daily_tokens.is_some() { reserve() } else { Reservation::default() };
        let today = day_of(now_ms, tz);
        let next_day = secs_to_next_day(now_ms, tz);
        let (other_requests, other_tokens) = self.others(today);
        let mut guard = self.usage.day.lock().unwrap_or_else(|e| e.into_inner());
        let day = guard.on(today);
        let (requests, tokens) = (day.requests + other_requests, day.tokens + other_tokens);
        let in_flight = day.reserved;
        if let Some(max) = self.daily_requests.filter(|max| requests + weight > *max) {
            let message = if requests >= max {
                format!(
                    "client {:?} has used its {max} requests for today (daily_requests); the day ends in {next_day} s",
                    &*self.name,
                )
            } else {
                format!(
                    "client {:?}: this batch counts as {weight} requests, and {} of its {max} requests for today are left (daily_requests); the day ends in {next_day} s",
                    &*self.name,
                    max - requests,
                )
            };
            return Err(Refusal::Limit { message, retry_after_secs: next_day });
        }
        if let Some(max) = self.daily_tokens.filter(|max| tokens >= *max) {
            return Err(Refusal::Limit {
                message: format!(
                    "client {:?} has used its {max} tokens for today (daily_tokens: {tokens} used); the day ends in {next_day} s",
                    &*self.name,
                ),
                retry_after_secs: next_day,
            });
        }
        // The most this call may use must fit in what is left: with nothing
        // else running (else it never will today), and beside what the calls
        // running may still use (else it waits for them).
        let mut reservation = 0;
        if let Some(max) = self.daily_tokens {
            let left = max - tokens;
            let free = left.saturating_sub(in_flight);
            let least = wants.least();
            if least > left {
                return Err(Refusal::Limit {
                    message: format!(
                        "client {:?}: this call may use {} tokens, and {left} of its {max} tokens for today are left (daily_tokens); ask for fewer (max_tokens) or wait for the day to end, in {next_day} s",
                        &*self.name,
                        wants.describe(),
                    ),
                    retry_after_secs: next_day,
                });
            }
            if least > free {
                // Calls in flight may use what is left: wait for them to end.
                return Err(Refusal::Limit {
                    message: format!(
                        "client {:?}: the calls it has running may use the rest of its {max} tokens for today (daily_tokens: {tokens} used, {in_flight} reserved; this call may use {}); try again when they end",
                        &*self.name,
                        wants.describe(),
                    ),
                    retry_after_secs: 1,
                });
            }
            // Without a `max_tokens`, what it may write is what is left.
            reservation = wants.most().unwrap_or(free).min(free);
        }
        // With several instances, within this instance's leases.
        let mut lease =
            self.leases.as_ref().map(|_| self.usage.lease.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(l) = lease.as_deref_mut() {
            l.last_want_ms = now_ms;
            let l = l.on(today);
            let short = match (self.daily_requests, self.daily_tokens) {
                (Some(max), _) if day.requests + weight > l.requests => {
                    Some(format!("{max} requests for today (daily_requests)"))
                }
                (_, Some(max)) if day.tokens + day.reserved + wants.least() > l.tokens => {
                    Some(format!("{max} tokens for today (daily_tokens)"))
                }
                _ => None,
            };
            if let Some(limit) = short {
                l.last_short_ms = now_ms;
                return Err(self.share_spent(&limit));
            }
            if self.daily_tokens.is_some() {
                // Within what this instance holds of the limit.
                reservation = reservation.min(l.tokens - (day.tokens + day.reserved));
            }
        }
        self.rate(lease.as_deref_mut(), now_ms)?;
        day.requests += weight;
        day.reserved += reservation;
        if let Some(l) = lease.as_deref_mut() {
            let low = (self.daily_requests.is_some() && l.requests.saturating_sub(day.requests) <= l.low[0])
                || (self.daily_tokens.is_some()
                    && l.tokens.saturating_sub(day.tokens + day.reserved) <= l.low[1]);
            if low {
                self.wake_leases();
            }
        }
        Ok(reservation)
    }

    /// Admits a call that costs nothing upstream (`count_tokens`): the
    /// client's model list and its rate hold, its daily quotas neither
    /// refuse it nor count it.
    pub fn admit_unmetered(&self, model: &str, now_ms: i64) -> Result<(), Refusal> {
        if self.id == ENV_CLIENT_ID {
            return Ok(());
        }
        if !model.is_empty() && !self.allows_model(model) {
            return Err(self.off_the_list(model));
        }
        if self.rpm.is_none() {
            return Ok(());
        }
        let mut lease =
            self.leases.as_ref().map(|_| self.usage.lease.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(l) = lease.as_deref_mut() {
            l.last_want_ms = now_ms;
        }
        self.rate(lease.as_deref_mut(), now_ms)
    }

    fn off_the_list(&self, model: &str) -> Refusal {
        Refusal::Model(format!(
            "the model {:?} is not available to this key (client {:?}); it may use: {}",
            model.chars().take(120).collect::<String>(),
            &*self.name,
            self.models.iter().flatten().map(ModelRule::text).collect::<Vec<_>>().join(", ")
        ))
    }

    /// One call against the client's rate (`rpm`), counted in its last
    /// minute when taken: with several instances, within this instance's
    /// part of the rate (`lease`).
    fn rate(&self, lease: Option<&mut usage::LeaseState>, now_ms: i64) -> Result<(), Refusal> {
        let Some(rpm) = self.rpm else { return Ok(()) };
        match lease {
            // Leased: this instance's limiter runs at its part of the
            // rate (the parts add up to `rpm`).
            Some(l) => {
                let share = u32::try_from(l.rate.min(u64::from(rpm))).unwrap_or(rpm);
                if share == rpm {
                    // All of it here: over it is over the limit.
                    self.take_rate(rpm, 0, now_ms)?;
                } else if share == 0 || self.take_rate(share, 0, now_ms).is_err() {
                    l.last_short_ms = now_ms;
                    return Err(self.share_spent(&format!("limit of {rpm} requests per minute (rpm)")));
                }
            }
            None => {
                let others = self.usage.others_minute.load(Ordering::Acquire);
                self.take_rate(rpm, others, now_ms)?;
            }
        }
        self.usage.minute.lock().unwrap_or_else(|e| e.into_inner()).add(now_ms);
        Ok(())
    }

    /// This instance's lease of `limit` is spent (not the limit, as far as
    /// it knows): a round is asked for, and the call may wait for it.
    fn share_spent(&self, limit: &str) -> Refusal {
        self.wake_leases();
        Refusal::Share(format!(
            "client {:?}: this instance's share of its {limit} is used and the other instances hold the rest for now; try again in 1 s",
            &*self.name,
        ))
    }

    /// A call for a model off the list was refused: whether to say so in
    /// the log now (at most once a minute per client, so a caller cannot
    /// fill the log), and how many such refusals went unsaid since.
    pub fn log_model_refusal(&self, now_ms: i64) -> Option<u64> {
        let last = self.usage.refused_logged_ms.load(Ordering::Acquire);
        if now_ms - last < 60_000
            || self
                .usage
                .refused_logged_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.usage.refused_quiet.fetch_add(1, Ordering::AcqRel);
            return None;
        }
        Some(self.usage.refused_quiet.swap(0, Ordering::AcqRel))
    }

    /// Asks the lease thread for a round now.
    fn wake_leases(&self) {
        if let Some(l) = &self.leases {
            l.wake();
        }
    }

    /// GCRA: `rpm` calls per 60 s, any `rpm` of them at once; the `others`
    /// calls other instances made in the last 60 s fill the bucket too.
    fn take_rate(&self, rpm: u32, others: u64, now_ms: i64) -> Result<(), Refusal> {
        let now = now_ms.saturating_mul(1000);
        let period = 60_000_000 / i64::from(rpm.max(1));
        let tolerance = 60_000_000 - period;
        let elsewhere = i64::try_from(others).unwrap_or(i64::MAX).saturating_mul(period);
        let mut current = self.usage.tat_us.load(Ordering::Acquire);
        loop {
            let tat = current.max(now);
            let level = (tat - now).saturating_add(elsewhere);
            if level > tolerance {
                let wait_secs = ((level - tolerance).saturating_add(999_999) / 1_000_000).clamp(1, 60) as u64;
                return Err(Refusal::Limit {
                    message: format!(
                        "client {:?} is over its limit of {rpm} requests per minute (rpm); try again in {wait_secs} s",
                        &*self.name,
                    ),
                    retry_after_secs: wait_secs,
                });
            }
            match self.usage.tat_us.compare_exchange_weak(
                current,
                tat + period,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    /// This instance's part of the rate changed from `from` to `to` calls a
    /// minute: the calls in its limiter's bucket keep their number, each now
    /// worth the new period, and `filled` more are put in (a part taken from
    /// instances that have just used it arrives used: moving a part between
    /// instances moves the rate, never a fresh burst).
    pub(super) fn rescale_rate(&self, from: u64, to: u64, filled: u64, now_ms: i64) {
        if to == 0 || (from == to && filled == 0) {
            return;
        }
        let now = now_ms.saturating_mul(1000);
        let period = |rate: u64| 60_000_000 / rate.clamp(1, 60_000_000) as i64;
        let new = period(to);
        let _ = self.usage.tat_us.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
            // (tat - now) / old calls in the bucket, each now `new` long.
            let level = if tat <= now || from == 0 {
                0
            } else {
                i128::from(tat - now) * i128::from(new) / i128::from(period(from))
            };
            let level = level + i128::from(filled.min(to)) * i128::from(new);
            Some(now + level.clamp(0, i128::from(i64::MAX / 2)) as i64)
        });
    }

    /// A call admitted at `started_ms` ended: the tokens it reserved are
    /// given back and the tokens it used added to that day.
    pub fn settle(&self, reserved: u64, tokens: u64, started_ms: i64, tz: &FixedOffset) {
        if self.id == ENV_CLIENT_ID || (tokens == 0 && reserved == 0) {
            return;
        }
        let started = day_of(started_ms, tz);
        let mut guard = self.usage.day.lock().unwrap_or_else(|e| e.into_inner());
        if guard.day > started {
            // Its day has ended: its tokens and its reservation went with it
            // (taking them now would wipe the new day's counts).
            return;
        }
        let day = guard.on(started);
        day.reserved = day.reserved.saturating_sub(reserved);
        day.tokens += tokens;
    }

    /// What the other instances counted on `today`.
    fn others(&self, today: i64) -> (u64, u64) {
        self.usage.others.lock().unwrap_or_else(|e| e.into_inner()).of(today)
    }

    /// This instance's own count of today: (requests, tokens).
    fn own(&self, today: i64) -> (u64, u64) {
        self.usage.day.lock().unwrap_or_else(|e| e.into_inner()).of(today)
    }

    /// (requests, tokens) today, on every instance.
    pub fn today(&self, now_ms: i64, tz: &FixedOffset) -> (u64, u64) {
        let today = day_of(now_ms, tz);
        let ((r, t), (or, ot)) = (self.own(today), self.others(today));
        (r + or, t + ot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(rpm: Option<u32>, daily_requests: Option<u64>, daily_tokens: Option<u64>) -> Client {
        Client {
            id: ClientId(1),
            name: Arc::from("team"),
            models: Some(vec![
                ModelRule::parse("Qwen/*").unwrap(),
                ModelRule::parse("deepseek-ai/DeepSeek-V3").unwrap(),
            ]),
            rpm,
            daily_requests,
            daily_tokens,
            expires_at: None,
            enabled: true,
            usage: Arc::default(),
            leases: None,
        }
    }

    #[test]
    fn the_rate_allows_rpm_at_once_then_one_per_period() {
        let tz = FixedOffset::east_opt(0).unwrap();
        let c = client(Some(3), None, None);
        let t = 1_000_000_000;
        for _ in 0..3 {
            assert_eq!(c.admit("Qwen/Qwen3-8B", t, &tz, &|| Reservation::fixed(0)), Ok(0));
        }
        let Err(Refusal::Limit { message, retry_after_secs }) =
            c.admit("Qwen/Qwen3-8B", t, &tz, &|| Reservation::fixed(0))
        else {
            panic!("the fourth call in the same instant is refused")
        };
        assert!(message.contains("3 requests per minute (rpm)"), "{message}");
        assert_eq!(retry_after_secs, 20);
        // One period (20 s) later, one more.
        assert_eq!(c.admit("Qwen/Qwen3-8B", t + 20_000, &tz, &|| Reservation::fixed(0)), Ok(0));
        assert!(c.admit("Qwen/Qwen3-8B", t + 20_000, &tz, &|| Reservation::fixed(0)).is_err());
        assert_eq!(c.today(t, &tz).0, 4, "refused calls are not counted");
    }

    #[test]
    fn refusals_for_a_model_off_the_list_are_logged_once_a_minute() {
        let c = client(None, None, None);
        let t = 1_000_000_000;
        assert_eq!(c.log_model_refusal(t), Some(0));
        for i in 1..=5 {
            assert_eq!(c.log_model_refusal(t + i * 1000), None);
        }
        assert_eq!(c.log_model_refusal(t + 60_000), Some(5), "the next line says how many went unsaid");
        assert_eq!(c.log_model_refusal(t + 61_000), None);
    }

    /// A part of the rate moved here keeps the calls already in the bucket
    /// and arrives as used as the others had used it: no fresh burst.
    #[test]
    fn a_rate_part_that_changes_keeps_the_calls_made_and_arrives_used() {
        let c = client(Some(4), None, None);
        let t = 1_000_000_000;
        for _ in 0..2 {
            assert_eq!(c.take_rate(2, 0, t), Ok(()));
        }
        assert!(c.take_rate(2, 0, t).is_err(), "a part of 2: two at once");
        // The part grows to 4, of which 1 arrives used: one more now, not two.
        c.rescale_rate(2, 4, 1, t);
        assert_eq!(c.take_rate(4, 0, t), Ok(()));
        assert!(c.take_rate(4, 0, t).is_err());
        // Shrunk to 1: the 4 calls in the bucket drain at one a minute.
        c.rescale_rate(4, 1, 0, t);
        assert!(c.take_rate(1, 0, t + 120_000).is_err());
        assert_eq!(c.take_rate(1, 0, t + 240_000), Ok(()));
    }

    #[test]
    fn the_rate_counts_the_calls_other_instances_made_in_the_last_minute() {
        let tz = FixedOffset::east_opt(0).unwrap();
        let c = client(Some(4), None, None);
        let t = 1_000_000_000;
        // Three calls elsewhere in the last minute: one more here, of four.
        c.usage.others_minute.store(3, Ordering::Release);
        assert_eq!(c.admit("Qwen/Qwen3-8B", t, &tz, &|| Reservation::fixed(0)), Ok(0));
        let Err(Refusal::Limit { message, retry_after_secs }) =
            c.admit("Qwen/Qwen3-8B", t, &tz, &|| Reservation::fixed(0))
        else {
            panic!("the fifth call of the minute, counting the other instances'")
        };
        assert!(message.contains("4 requests per minute (rpm)"), "{message}");
        assert!((1..=60).contains(&retry_after_secs));
        // What this instance publishes: its own call, in the last 60 s only.
        let minute = c.usage.minute.lock().unwrap();
        assert_eq!(minute.count(t), 1);
        assert_eq!(minute.count(t + 59_000), 1);
        assert_eq!(minute.count(t + 60_000), 0);
        drop(minute);
        // The others' calls age out (their next publication says so).
        c.usage.others_minute.store(0, Ordering::Release);
        assert_eq!(c.admit("Qwen/Qwen3-8B", t, &tz, &|| Reservation::fixed(0)), Ok(0));
    }

    #[test]
    fn daily_limits_reset_at_midnight_in_the_time_zone() {
        let tz = FixedOffset::east_opt(8 * 3600).unwrap();
        let c = client(None, Some(2), Some(100));
        // 2026-12-02 15:59:59 UTC = 23:59:59 at +08:00.
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-02T15:59:59Z").unwrap().timestamp_millis();
        assert!(c.admit("Qwen/a", t, &tz, &|| Reservation::fixed(0)).is_ok());
        c.settle(0, 150, t, &tz);
        let Err(Refusal::Limit { message, retry_after_secs }) =
            c.admit("Qwen/a", t, &tz, &|| Reservation::fixed(0))
        else {
            panic!()
        };
        assert!(message.contains("100 tokens for today (daily_tokens: 150 used)"), "{message}");
        assert_eq!(retry_after_secs, 1, "midnight at +08:00 is a second away");
        // A second later it is a new day there.
        assert!(c.admit("Qwen/a", t + 1000, &tz, &|| Reservation::fixed(0)).is_ok());
        assert!(c.admit("Qwen/a", t + 1000, &tz, &|| Reservation::fixed(0)).is_ok());
        let Err(Refusal::Limit { message, .. }) = c.admit("Qwen/a", t + 1000, &tz, &|| Reservation::fixed(0))
        else {
            panic!()
        };
        assert!(message.contains("2 requests for today (daily_requests)"), "{message}");
        assert!(matches!(
            c.admit("other/model", t + 1000, &tz, &|| Reservation::fixed(0)),
            Err(Refusal::Model(_))
        ));
    }

    #[test]
    fn token_limits_reserve_what_calls_in_flight_may_use() {
        let tz = FixedOffset::east_opt(0).unwrap();
        let c = client(None, None, Some(100));
        let t = 1_000_000_000;
        // Each call may use 40: a second is let in (80 of 100 reserved), a third waits.
        assert_eq!(c.admit("Qwen/a", t, &tz, &|| Reservation::fixed(40)), Ok(40));
        assert_eq!(c.admit("Qwen/a", t, &tz, &|| Reservation::fixed(40)), Ok(40));
        let Err(Refusal::Limit { message, retry_after_secs }) =
            c.admit("Qwen/a", t, &tz, &|| Reservation::fixed(40))
        else {
            panic!("the calls running may use the rest")
        };
        assert!(message.contains("0 used, 80 reserved"), "{message}");
        assert_eq!(retry_after_secs, 1);
        // They end having used 14 each: 28 used, room again.
        c.settle(40, 14, t, &tz);
        c.settle(40, 14, t, &tz);
        assert_eq!(c.today(t, &tz).1, 28);
        assert_eq!(c.admit("Qwen/a", t, &tz, &|| Reservation::fixed(60)), Ok(60));
        // A call of a day that has ended takes nothing from the new day.
        c.settle(60, 5, t - 86_400_000, &tz);
        assert_eq!(c.usage.day.lock().unwrap().reserved, 60);
        assert_eq!(c.today(t, &tz), (3, 28));
        // Without a token limit nothing is reserved, and nothing is asked.
        let free = client(None, None, None);
        assert_eq!(free.admit("Qwen/a", t, &tz, &|| unreachable!("not asked")), Ok(0));
    }

    #[test]
    fn a_call_is_admitted_only_if_its_worst_case_fits_in_what_is_left() {
        let tz = FixedOffset::east_opt(0).unwrap();
        let t = 1_000_000_000;
        let c = client(None, None, Some(100));
        let big = || Reservation { prompt: 4_000, output: Some(16) };
        let Err(Refusal::Limit { message, retry_after_secs }) = c.admit("Qwen/a", t, &tz, &big) else {
            panic!("a 4,000-token prompt never fits in 100")
        };
        assert!(message.contains("100 of its 100 tokens for today are left"), "{message}");
        assert!(retry_after_secs > 1, "not before the day ends");
        // n = 8 answers of 10 tokens and a prompt of 30: 110 > 100.
        assert!(c.admit("Qwen/a", t, &tz, &|| Reservation { prompt: 30, output: Some(80) }).is_err());
        assert_eq!(c.admit("Qwen/a", t, &tz, &|| Reservation { prompt: 30, output: Some(70) }), Ok(100));
        c.settle(100, 40, t, &tz);
        // No max_tokens: it reserves everything left, so nothing else runs beside it.
        assert_eq!(c.admit("Qwen/a", t, &tz, &|| Reservation { prompt: 10, output: None }), Ok(60));
        let Err(Refusal::Limit { retry_after_secs, .. }) =
            c.admit("Qwen/a", t, &tz, &|| Reservation { prompt: 1, output: Some(1) })
        else {
            panic!("the unbounded call holds the rest")
        };
        assert_eq!(retry_after_secs, 1);
        c.settle(60, 20, t, &tz);
        assert_eq!(c.today(t, &tz).1, 60);
        // A prompt that leaves no room for one token of answer is refused.
        assert!(c.admit("Qwen/a", t, &tz, &|| Reservation { prompt: 40, output: None }).is_err());
        assert_eq!(c.admit("Qwen/a", t, &tz, &|| Reservation { prompt: 39, output: None }), Ok(40));
    }

    #[test]
    fn disabled_and_expired_keys_are_unusable() {
        let mut c = client(None, None, None);
        c.expires_at = Some(5_000);
        assert!(c.usable(4_999).is_ok());
        assert!(c.usable(5_000).is_err());
        c.expires_at = None;
        c.enabled = false;
        assert!(c.usable(0).is_err());
    }

    #[test]
    fn model_rules_are_exact_names_or_prefixes_ending_in_a_slash() {
        let c = client(None, None, None);
        assert!(c.allows_model("Qwen/Qwen3-8B"));
        assert!(c.allows_model("deepseek-ai/DeepSeek-V3"));
        assert!(!c.allows_model("deepseek-ai/DeepSeek-V3.1"));
        assert!(!c.allows_model("QwenX/whatever"));
        assert!(ModelRule::parse("Qwen*").is_err());
        assert!(ModelRule::parse("a*b").is_err());
        assert!(ModelRule::parse("").is_err());
        assert_eq!(ModelRule::parse("*").unwrap(), ModelRule::Prefix(String::new()));
    }
}
