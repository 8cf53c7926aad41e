//! Rate-limit cooldowns: pure functions over a small list, unit-tested here.

use std::time::Duration;

use chrono::{Duration as ChronoDuration, FixedOffset, TimeZone, Utc};

/// Matches every model: used when a 429 names no model.
pub const ANY_MODEL: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cooldown {
    pub model: String,
    pub until_ms: i64,
    pub strikes: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub base: Duration,
    pub max: Duration,
}

/// What the 429 told us.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hint {
    pub retry_after: Option<Duration>,
    /// A daily limit (RPD, TPD, IPD): nothing helps before the next day.
    pub daily: bool,
}

impl Hint {
    /// What a 429 answer says (`upstream::rate_limit_hint`).
    pub fn from_response(retry_after: Option<&str>, body: &[u8]) -> Hint {
        let (retry_after, daily) = crate::upstream::rate_limit_hint(retry_after, body);
        Hint { retry_after, daily }
    }
}

/// The latest end among cooldowns that block `model` at `now_ms`.
pub fn blocking_until(list: &[Cooldown], model: &str, now_ms: i64) -> Option<i64> {
    list.iter()
        .filter(|c| c.until_ms > now_ms && (c.model == model || c.model == ANY_MODEL))
        .map(|c| c.until_ms)
        .max()
}

/// Returns the new list (expired entries pruned) and the cooldown applied.
/// Repeats double the wait (30 s, 60 s, 120 s ... up to `max`); a 429 that
/// comes long after the last cooldown ended starts again from `base`.
pub fn apply(
    current: &[Cooldown],
    model: &str,
    now_ms: i64,
    policy: &Policy,
    hint: &Hint,
) -> (Vec<Cooldown>, Cooldown) {
    let model = if model.is_empty() { ANY_MODEL } else { model };
    let max_ms = policy.max.as_millis().min(i64::MAX as u128) as i64;
    let previous = current.iter().find(|c| c.model == model);
    // 429s from requests that were in flight together are one event, not
    // repeats: while a cooldown runs, it keeps its strikes.
    let running = previous.filter(|p| p.until_ms > now_ms);
    let strikes = match (running, previous) {
        (Some(p), _) => p.strikes,
        (None, Some(p)) if now_ms - p.until_ms < max_ms => p.strikes.saturating_add(1),
        _ => 1,
    };
    let backoff_ms = (policy.base.as_millis().min(i64::MAX as u128) as i64)
        .saturating_mul(1i64 << (strikes.max(1) - 1).min(20))
        .min(max_ms);
    // An upstream Retry-After is honoured, but never beyond the configured maximum.
    let wait_ms = match hint.retry_after {
        Some(d) => (d.as_millis().min(i64::MAX as u128) as i64).min(max_ms),
        None => backoff_ms,
    };
    let mut until_ms = now_ms.saturating_add(wait_ms);
    if hint.daily {
        until_ms = until_ms.max(next_day_start_ms(now_ms));
    }
    // Never shorten a cooldown that runs longer (a daily limit, say).
    if let Some(p) = running {
        until_ms = until_ms.max(p.until_ms);
    }
    let applied = Cooldown { model: model.to_string(), until_ms, strikes };
    let mut next: Vec<Cooldown> = current
        .iter()
        .filter(|c| c.model != model && c.until_ms.saturating_add(max_ms) > now_ms)
        .cloned()
        .collect();
    next.push(applied.clone());
    (next, applied)
}

/// Daily quotas reset at midnight China Standard Time (UTC+8), where
/// SiliconFlow runs. (Inferred: the API docs do not state the time zone.)
pub fn next_day_start_ms(now_ms: i64) -> i64 {
    let Some(cst) = FixedOffset::east_opt(8 * 3600) else {
        return now_ms + 86_400_000;
    };
    let Some(now) = Utc.timestamp_millis_opt(now_ms).single() else {
        return now_ms + 86_400_000;
    };
    let local = now.with_timezone(&cst);
    let tomorrow = local.date_naive() + ChronoDuration::days(1);
    tomorrow
        .and_hms_opt(0, 0, 0)
        .and_then(|t| cst.from_local_datetime(&t).single())
        .map(|t| t.timestamp_millis())
        .unwrap_or(now_ms + 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { base: Duration::from_secs(30), max: Duration::from_secs(3600) };

    #[test]
    fn backoff_doubles_on_repeats_and_resets_later() {
        let (l1, c1) = apply(&[], "m", 0, &POLICY, &Hint::default());
        assert_eq!((c1.until_ms, c1.strikes), (30_000, 1));
        let (l2, c2) = apply(&l1, "m", 30_000, &POLICY, &Hint::default());
        assert_eq!((c2.until_ms, c2.strikes), (90_000, 2));
        let (_, c3) = apply(&l2, "m", 90_000, &POLICY, &Hint::default());
        assert_eq!(c3.until_ms - 90_000, 120_000);
        // Long after: back to the base.
        let (_, c4) = apply(&l2, "m", 90_000 + 3_600_000, &POLICY, &Hint::default());
        assert_eq!(c4.strikes, 1);
        assert_eq!(l2.len(), 1, "one entry per model");
    }

    #[test]
    fn concurrent_429s_do_not_escalate_and_long_cooldowns_are_not_shortened() {
        let (l1, c1) = apply(&[], "m", 0, &POLICY, &Hint::default());
        let (l2, c2) = apply(&l1, "m", 10, &POLICY, &Hint::default());
        assert_eq!((c2.strikes, c2.until_ms), (1, c1.until_ms + 10), "same strike, not doubled");
        let daily = Hint { retry_after: None, daily: true };
        let (l3, c3) = apply(&l2, "m", 20, &POLICY, &daily);
        let (_, c4) = apply(&l3, "m", 30, &POLICY, &Hint::default());
        assert_eq!(c4.until_ms, c3.until_ms, "a TPM 429 does not cut a daily wait short");
        let huge = Hint { retry_after: Some(Duration::from_secs(u64::MAX / 2)), daily: false };
        let (_, c5) = apply(&[], "m", 0, &POLICY, &huge);
        assert_eq!(c5.until_ms, 3_600_000, "Retry-After clamped to the maximum");
    }

    #[test]
    fn backoff_is_capped() {
        let mut list = Vec::new();
        let mut now = 0;
        let mut last_wait = 0;
        for _ in 0..30 {
            let (l, c) = apply(&list, "m", now, &POLICY, &Hint::default());
            last_wait = c.until_ms - now;
            assert!(last_wait <= 3_600_000);
            now = c.until_ms;
            list = l;
        }
        assert_eq!(last_wait, 3_600_000);
    }

    #[test]
    fn retry_after_wins_and_daily_waits_for_the_next_day() {
        let hint = Hint::from_response(Some("7"), b"{\"message\":\"... TPM limit reached.\"}");
        assert_eq!(hint, Hint { retry_after: Some(Duration::from_secs(7)), daily: false });
        let (_, c) = apply(&[], "m", 1_000, &POLICY, &hint);
        assert_eq!(c.until_ms, 8_000);
        let hint = Hint::from_response(None, b"Details:RPD limit reached.");
        assert!(hint.daily);
        // 2026-11-26T20:00:00Z is 04:00 on the 27th in UTC+8: next reset 2026-11-27T16:00Z.
        let now = 1_795_723_200_000;
        let (_, c) = apply(&[], "m", now, &POLICY, &hint);
        assert_eq!(c.until_ms, 1_795_795_200_000);
    }

    #[test]
    fn cooldowns_block_their_model_and_the_wildcard_blocks_all() {
        let list = vec![
            Cooldown { model: "a".into(), until_ms: 100, strikes: 1 },
            Cooldown { model: ANY_MODEL.into(), until_ms: 50, strikes: 1 },
        ];
        assert_eq!(blocking_until(&list, "a", 10), Some(100));
        assert_eq!(blocking_until(&list, "b", 10), Some(50));
        assert_eq!(blocking_until(&list, "b", 60), None);
        assert_eq!(blocking_until(&list, "a", 100), None);
    }
}
