//! The dashboard's figures, from the hourly rollup: today by hour, this
//! month by day, tokens by model, calls by key and client, outcomes, all in
//! the one configured time zone. `api` answers them in JSON, `page` draws them.

pub mod api;
pub mod page;

use std::collections::HashMap;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::db::queries::keys;
use crate::db::queries::stats::{self as sq, Agg, Outcomes};
use crate::db::{self, now_ms, DbError};
use crate::pool::StateCounts;
use crate::state::AppState;

const HOUR_MS: i64 = 3_600_000;

/// Epoch milliseconds of local midnight starting `date` in `tz`.
fn local_midnight_ms(tz: &FixedOffset, date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .and_then(|t| tz.from_local_datetime(&t).single())
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

fn local_now(tz: &FixedOffset, now_ms: i64) -> DateTime<FixedOffset> {
    Utc.timestamp_millis_opt(now_ms).single().unwrap_or_default().with_timezone(tz)
}

/// Time buckets of a chart: `[start, end)` in epoch ms, with labels (and
/// longer titles, for tooltips).
#[derive(Debug, Clone)]
pub struct Buckets {
    pub start_ms: i64,
    pub size_ms: i64,
    pub labels: Vec<String>,
    pub titles: Vec<String>,
}

impl Buckets {
    /// The 24 hours up to now: the current hour last.
    pub fn last_24_hours(tz: &FixedOffset, now_ms: i64) -> Self {
        let start_ms = (now_ms.div_euclid(HOUR_MS) - 23) * HOUR_MS;
        let at = |i: i64| local_now(tz, start_ms + i * HOUR_MS);
        Buckets {
            start_ms,
            size_ms: HOUR_MS,
            labels: (0..24).map(|i| at(i).format("%H").to_string()).collect(),
            titles: (0..24).map(|i| at(i).format("%Y-%m-%d %H:00").to_string()).collect(),
        }
    }

    /// The 30 days up to today (in the zone): today last.
    pub fn last_30_days(tz: &FixedOffset, now_ms: i64) -> Self {
        let today = local_now(tz, now_ms).date_naive();
        let first = today - chrono::Duration::days(29);
        let day = |i: i64| first + chrono::Duration::days(i);
        Buckets {
            start_ms: local_midnight_ms(tz, first),
            size_ms: 24 * HOUR_MS,
            labels: (0..30).map(|i| day(i).format("%d").to_string()).collect(),
            titles: (0..30).map(|i| day(i).format("%Y-%m-%d").to_string()).collect(),
        }
    }

    pub fn today(tz: &FixedOffset, now_ms: i64) -> Self {
        let start_ms = local_midnight_ms(tz, local_now(tz, now_ms).date_naive());
        let labels: Vec<String> = (0..24).map(|h| format!("{h:02}")).collect();
        Buckets { start_ms, size_ms: HOUR_MS, titles: labels.clone(), labels }
    }

    pub fn this_month(tz: &FixedOffset, now_ms: i64) -> Self {
        let today = local_now(tz, now_ms).date_naive();
        let first = today.with_day(1).unwrap_or(today);
        let next = if first.month() == 12 {
            NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
        }
        .unwrap_or(first);
        let days = (next - first).num_days().max(1);
        let labels: Vec<String> = (1..=days).map(|d| format!("{d:02}")).collect();
        Buckets {
            start_ms: local_midnight_ms(tz, first),
            size_ms: 24 * HOUR_MS,
            titles: labels.clone(),
            labels,
        }
    }

    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.size_ms * self.labels.len() as i64
    }

    /// The rollup hours that cover the buckets.
    pub fn hours(&self) -> (i64, i64) {
        (self.start_ms.div_euclid(HOUR_MS), (self.end_ms() + HOUR_MS - 1).div_euclid(HOUR_MS))
    }

    pub fn index_of_hour(&self, hour: i64) -> Option<usize> {
        let t = hour * HOUR_MS;
        if t < self.start_ms || t >= self.end_ms() {
            return None;
        }
        Some(((t - self.start_ms) / self.size_ms) as usize)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub labels: Vec<String>,
    #[serde(skip)]
    pub titles: Vec<String>,
    pub calls: Vec<i64>,
    pub input_tokens: Vec<i64>,
    pub output_tokens: Vec<i64>,
    pub errors: Vec<i64>,
    pub model_labels: Vec<String>,
    pub model_tokens: Vec<i64>,
    pub model_calls: Vec<i64>,
    pub total_calls: i64,
    pub total_tokens: i64,
    pub timezone: String,
}

/// Buckets the rollup's hours and ranks models by tokens (top 10).
pub fn series(b: &Buckets, hours: &[(i64, Agg)], models: &[(String, Agg)], tz: &FixedOffset) -> Series {
    let n = b.labels.len();
    let mut s = Series {
        labels: b.labels.clone(),
        titles: b.titles.clone(),
        calls: vec![0; n],
        input_tokens: vec![0; n],
        output_tokens: vec![0; n],
        errors: vec![0; n],
        model_labels: Vec::new(),
        model_tokens: Vec::new(),
        model_calls: Vec::new(),
        total_calls: 0,
        total_tokens: 0,
        timezone: tz.to_string(),
    };
    for (hour, a) in hours {
        if let Some(i) = b.index_of_hour(*hour) {
            s.calls[i] += a.calls;
            s.input_tokens[i] += a.input_tokens;
            s.output_tokens[i] += a.output_tokens;
            s.errors[i] += a.errors;
            s.total_calls += a.calls;
            s.total_tokens += a.input_tokens + a.output_tokens;
        }
    }
    let mut ranked: Vec<&(String, Agg)> = models.iter().collect();
    ranked.sort_by_key(|(m, a)| {
        (std::cmp::Reverse(a.input_tokens + a.output_tokens), std::cmp::Reverse(a.calls), m.clone())
    });
    for (m, a) in ranked.into_iter().take(10) {
        s.model_labels.push(if m.is_empty() { "(none)".into() } else { m.clone() });
        s.model_tokens.push(a.input_tokens + a.output_tokens);
        s.model_calls.push(a.calls);
    }
    s
}

async fn load_series(state: &AppState, b: Buckets) -> Result<Series, DbError> {
    let tz = state.config.timezone;
    let (from, to) = b.hours();
    db::run(&state.db, move |conn| {
        let hours = sq::by_hour(conn, from, to)?;
        let models = sq::by_model(conn, from, to)?;
        Ok(series(&b, &hours, &models, &tz))
    })
    .await
}

pub async fn daily_series(state: &AppState) -> Result<Series, DbError> {
    load_series(state, Buckets::today(&state.config.timezone, now_ms())).await
}

pub async fn monthly_series(state: &AppState) -> Result<Series, DbError> {
    load_series(state, Buckets::this_month(&state.config.timezone, now_ms())).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub key_count: usize,
    pub keys: StateCounts,
    /// The sum of the known balances (each account once); `None` when no
    /// account's balance is known (SiliconFlow China no longer tells it).
    pub total_balance: Option<f64>,
    pub balance_known_accounts: usize,
    pub balance_unknown_accounts: usize,
    pub total_calls: i64,
    pub total_tokens: i64,
    pub calls_today: i64,
    pub tokens_today: i64,
    pub calls_month: i64,
    pub tokens_month: i64,
    /// Share of this month's calls that got a 2xx/3xx, 0..1 (1 when there were none).
    pub success_rate: f64,
    pub mean_latency_ms: f64,
    pub errors_month: i64,
    pub open_proxy: bool,
    pub generated_admin_password: bool,
    pub timezone: String,
    /// Calls this month by key: (masked key, calls, tokens), most first.
    pub calls_by_key: Vec<KeyCalls>,
    /// Calls and tokens this month by client, most calls first (`env` is
    /// API_KEY's client).
    pub calls_by_client: Vec<ClientCalls>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientCalls {
    pub client: String,
    pub calls: i64,
    pub tokens: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyCalls {
    pub key: String,
    pub calls: i64,
    pub tokens: i64,
}

pub async fn overview(state: &AppState) -> Result<Overview, DbError> {
    let tz = state.config.timezone;
    let now = now_ms();
    let today = Buckets::today(&tz, now).hours();
    let month = Buckets::this_month(&tz, now).hours();
    let vault = state.vault.clone();
    let (all, t, m, by_key, rows, by_client) = db::run(&state.db, move |conn| {
        let all = sq::totals(conn, None, None)?;
        let t = sq::totals(conn, Some(today.0), Some(today.1))?;
        let m = sq::totals(conn, Some(month.0), Some(month.1))?;
        let by_key = sq::by_key(conn, month.0, month.1)?;
        let rows = keys::all(conn, &vault)?;
        let by_client = crate::db::queries::logs::by_client(conn, month.0, month.1)?;
        Ok((all, t, m, by_key, rows, by_client))
    })
    .await?;
    let snapshot = state.pool.snapshot();
    // Balance per account once, usable keys only (like /v1/user/info).
    let totals = crate::pool::totals::totals(&rows);
    let masked: HashMap<i64, String> = rows.iter().map(|r| (r.id, crate::pool::mask_key(&r.key))).collect();
    let mut calls_by_key: Vec<KeyCalls> = by_key
        .into_iter()
        .map(|(id, a)| KeyCalls {
            key: if id == 0 {
                "(no key)".into()
            } else {
                masked.get(&id).cloned().unwrap_or_else(|| format!("deleted key #{id}"))
            },
            calls: a.calls,
            tokens: a.input_tokens + a.output_tokens,
        })
        .collect();
    calls_by_key.sort_by_key(|k| std::cmp::Reverse(k.calls));
    Ok(Overview {
        key_count: snapshot.keys.len(),
        keys: state.pool.counts(now),
        total_balance: totals.total.map(|t| (t * 100.0).round() / 100.0),
        balance_known_accounts: totals.known_accounts,
        balance_unknown_accounts: totals.unknown_accounts,
        total_calls: all.calls,
        total_tokens: all.input_tokens + all.output_tokens,
        calls_today: t.calls,
        tokens_today: t.input_tokens + t.output_tokens,
        calls_month: m.calls,
        tokens_month: m.input_tokens + m.output_tokens,
        success_rate: if m.calls == 0 { 1.0 } else { 1.0 - m.errors as f64 / m.calls as f64 },
        mean_latency_ms: if m.calls == 0 { 0.0 } else { m.latency_ms as f64 / m.calls as f64 },
        errors_month: m.errors,
        open_proxy: state.is_open(),
        generated_admin_password: state.admin.generated(),
        timezone: tz.to_string(),
        calls_by_key,
        calls_by_client: by_client
            .into_iter()
            .map(|(client, calls, tokens)| ClientCalls { client, calls, tokens })
            .collect(),
    })
}

/// The outcomes chart's four series, per hour of `b`.
fn outcome_series(b: &Buckets, rows: &[Outcomes]) -> [Vec<i64>; 4] {
    let n = b.labels.len();
    let mut out = [vec![0; n], vec![0; n], vec![0; n], vec![0; n]];
    for r in rows {
        if let Some(i) = b.index_of_hour(r.hour) {
            out[0][i] += r.ok;
            out[1][i] += r.failed_over;
            out[2][i] += r.client_errors;
            out[3][i] += r.upstream_errors;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_configured_zone() {
        let cst = FixedOffset::east_opt(8 * 3600).unwrap();
        // 2026-11-26T20:00Z is 04:00 on the 27th in UTC+8.
        let now = 1_795_723_200_000;
        let b = Buckets::today(&cst, now);
        assert_eq!(b.start_ms, 1_795_708_800_000, "local midnight of the 27th = 16:00Z on the 26th");
        assert_eq!(b.labels.len(), 24);
        assert_eq!(b.index_of_hour(now / HOUR_MS), Some(4));
        assert_eq!(b.index_of_hour(b.start_ms / HOUR_MS - 1), None);
        let m = Buckets::this_month(&cst, now);
        assert_eq!(m.labels.len(), 30, "November");
        assert_eq!(m.index_of_hour(now / HOUR_MS), Some(26), "the 27th");
        let utc = FixedOffset::east_opt(0).unwrap();
        assert_eq!(Buckets::today(&utc, now).index_of_hour(now / HOUR_MS), Some(20));
    }

    #[test]
    fn rolling_windows_end_now_in_the_zone() {
        let cst = FixedOffset::east_opt(8 * 3600).unwrap();
        // 2026-11-26T20:30Z is 04:30 on the 27th in UTC+8.
        let now = 1_795_723_200_000 + 1_800_000;
        let h = Buckets::last_24_hours(&cst, now);
        assert_eq!(h.labels.len(), 24);
        assert_eq!(h.index_of_hour(now / HOUR_MS), Some(23), "the current hour is the last bar");
        assert_eq!(h.index_of_hour(now / HOUR_MS - 24), None);
        assert_eq!((h.labels[23].as_str(), h.labels[0].as_str()), ("04", "05"), "local hours");
        assert_eq!(h.titles[0], "2026-11-26 05:00");
        let d = Buckets::last_30_days(&cst, now);
        assert_eq!(d.labels.len(), 30);
        assert_eq!(d.index_of_hour(now / HOUR_MS), Some(29), "today is the last bar");
        assert_eq!((d.titles[0].as_str(), d.titles[29].as_str()), ("2026-10-29", "2026-11-27"));
        assert_eq!(d.start_ms, 1_795_708_800_000 - 29 * 24 * HOUR_MS, "local midnight, 29 days back");
    }

    #[test]
    fn outcomes_fall_in_their_hours() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let now = 1_795_723_200_000;
        let b = Buckets::last_24_hours(&utc, now);
        let o = |hour, ok, failed_over, client_errors, upstream_errors| Outcomes {
            hour,
            ok,
            failed_over,
            client_errors,
            upstream_errors,
        };
        let h = now / HOUR_MS;
        let [ok, fo, client, upstream] =
            outcome_series(&b, &[o(h, 5, 1, 2, 3), o(h - 2, 1, 0, 0, 0), o(h - 40, 9, 9, 9, 9)]);
        assert_eq!((ok[23], fo[23], client[23], upstream[23]), (5, 1, 2, 3));
        assert_eq!(ok[21], 1);
        assert_eq!(ok.iter().sum::<i64>(), 6, "an hour outside the window is left out");
    }

    #[test]
    fn series_sums_buckets_and_ranks_models() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let b = Buckets::today(&utc, 1_795_723_200_000);
        let h0 = b.start_ms / HOUR_MS;
        let a = |calls, i, o| Agg { calls, errors: 0, input_tokens: i, output_tokens: o, latency_ms: 0 };
        let hours = vec![(h0, a(2, 10, 5)), (h0 + 3, a(1, 1, 1)), (h0 - 1, a(9, 9, 9))];
        let models: Vec<(String, Agg)> = (0..12).map(|i| (format!("m{i}"), a(1, i, 0))).collect();
        let s = series(&b, &hours, &models, &utc);
        assert_eq!((s.calls[0], s.calls[3], s.total_calls), (2, 1, 3));
        assert_eq!(s.total_tokens, 17);
        assert_eq!(s.model_labels.len(), 10);
        assert_eq!(s.model_labels[0], "m11");
    }
}
