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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use blake2::{Blake2b512, Digest};
use chrono::FixedOffset;

use crate::db::models::ClientRow;
use crate::db::queries::clients::{self as client_rows, Counts};
use crate::db::{DbError, DbPool};
use crate::ids::ClientId;

/// The name of the client that `API_KEY` authenticates.
pub const ENV_CLIENT: &str = "env";

/// Its id (no row has it: ids start at 1).
pub const ENV_CLIENT_ID: ClientId = ClientId(0);

/// A client key's hash: what is stored, and what the request path looks up.
pub fn key_hash(secret: &str) -> [u8; 32] {
    let digest = Blake2b512::digest(secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    out
}

pub fn key_hash_hex(secret: &str) -> String {
    key_hash(secret).iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new client secret: `sk-` and 48 letters and digits (285 bits).
pub fn new_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("sk-{}", Alphanumeric.sample_string(&mut rand::rng(), 48))
}

/// One entry of a client's model list: an exact name, or `prefix/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRule {
    Exact(String),
    Prefix(String),
}

impl ModelRule {
    pub fn parse(s: &str) -> Result<ModelRule, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 200 {
            return Err("a model entry must be 1 to 200 characters".into());
        }
        if s.chars().any(char::is_control) {
            return Err(format!("model entry {s:?} holds a control character"));
        }
        match s.strip_suffix('*') {
            Some(prefix) if prefix.is_empty() || prefix.ends_with('/') => {
                Ok(ModelRule::Prefix(prefix.to_string()))
            }
            Some(_) => Err(format!(
                "model entry {s:?}: a pattern is a prefix ending in a slash, then *, like \"Qwen/*\""
            )),
            None if s.contains('*') => Err(format!("model entry {s:?}: * may only end a pattern")),
            None => Ok(ModelRule::Exact(s.to_string())),
        }
    }

    pub fn matches(&self, model: &str) -> bool {
        match self {
            ModelRule::Exact(m) => m == model,
            ModelRule::Prefix(p) => model.starts_with(p.as_str()),
        }
    }

    pub fn text(&self) -> String {
        match self {
            ModelRule::Exact(m) => m.clone(),
            ModelRule::Prefix(p) => format!("{p}*"),
        }
    }
}

/// What a client used today, and its rate state; kept across snapshots.
#[derive(Debug, Default)]
pub struct Usage {
    /// GCRA's theoretical arrival time, in µs since the epoch.
    tat_us: AtomicI64,
    day: Mutex<DayUsage>,
    /// With several instances: what the others counted today (as of their
    /// last publication, at most a second old).
    others: Mutex<DayUsage>,
    /// Calls admitted here in the last 60 s (clients with an rpm), published
    /// for the other instances; and theirs, as last published.
    minute: Mutex<Minute>,
    others_minute: AtomicU64,
}

/// Calls per second over the last minute: 60 one-second buckets.
#[derive(Debug)]
struct Minute {
    /// Each bucket's second (epoch), and its count.
    buckets: [(i64, u32); 60],
}

impl Default for Minute {
    fn default() -> Self {
        Minute { buckets: [(i64::MIN, 0); 60] }
    }
}

impl Minute {
    fn add(&mut self, now_ms: i64) {
        let sec = now_ms.div_euclid(1000);
        let b = &mut self.buckets[sec.rem_euclid(60) as usize];
        if b.0 != sec {
            *b = (sec, 0);
        }
        b.1 = b.1.saturating_add(1);
    }

    /// Calls in the 60 s up to `now_ms`.
    fn count(&self, now_ms: i64) -> u64 {
        let sec = now_ms.div_euclid(1000);
        self.buckets.iter().filter(|(s, _)| (sec - 59..=sec).contains(s)).map(|(_, n)| u64::from(*n)).sum()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct DayUsage {
    day: i64,
    requests: u64,
    tokens: u64,
}

impl DayUsage {
    /// (requests, tokens) on `today`; nothing if these counts are of another day.
    fn of(&self, today: i64) -> (u64, u64) {
        if self.day == today {
            (self.requests, self.tokens)
        } else {
            (0, 0)
        }
    }

    /// The counts of `today`, started afresh if these are of another day.
    fn on(&mut self, today: i64) -> &mut Self {
        if self.day != today {
            *self = DayUsage { day: today, requests: 0, tokens: 0 };
        }
        self
    }
}

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
}

const DAY_MS: i64 = 86_400_000;

fn day_of(now_ms: i64, tz: &FixedOffset) -> i64 {
    (now_ms + i64::from(tz.local_minus_utc()) * 1000).div_euclid(DAY_MS)
}

/// Seconds until the day (in `tz`) after `now_ms` begins.
fn secs_to_next_day(now_ms: i64, tz: &FixedOffset) -> u64 {
    let next = (day_of(now_ms, tz) + 1) * DAY_MS - i64::from(tz.local_minus_utc()) * 1000;
    ((next - now_ms + 999) / 1000).max(1) as u64
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
    /// why not. An admitted call is counted in the day's requests now; its
    /// tokens are added when it ends (`add_tokens`).
    pub fn admit(&self, model: &str, now_ms: i64, tz: &FixedOffset) -> Result<(), Refusal> {
        if self.id == ENV_CLIENT_ID {
            // `API_KEY`'s client: no list, no limit, nothing to count here (the
            // log has its calls), so no lock shared by every request.
            return Ok(());
        }
        // (Disabled and expired keys were refused when the key was checked.)
        if !model.is_empty() && !self.allows_model(model) {
            return Err(Refusal::Model(format!(
                "the model {:?} is not available to this key (client {:?}); it may use: {}",
                model.chars().take(120).collect::<String>(),
                &*self.name,
                self.models.iter().flatten().map(ModelRule::text).collect::<Vec<_>>().join(", ")
            )));
        }
        let today = day_of(now_ms, tz);
        let next_day = secs_to_next_day(now_ms, tz);
        let (other_requests, other_tokens) = self.others(today);
        let mut guard = self.usage.day.lock().unwrap_or_else(|e| e.into_inner());
        let day = guard.on(today);
        let (requests, tokens) = (day.requests + other_requests, day.tokens + other_tokens);
        if let Some(max) = self.daily_requests.filter(|max| requests >= *max) {
            return Err(Refusal::Limit {
                message: format!(
                    "client {:?} has used its {max} requests for today (daily_requests); the day ends in {next_day} s",
                    &*self.name,
                ),
                retry_after_secs: next_day,
            });
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
        if let Some(rpm) = self.rpm {
            let others = self.usage.others_minute.load(Ordering::Acquire);
            self.take_rate(rpm, others, now_ms)?;
            self.usage.minute.lock().unwrap_or_else(|e| e.into_inner()).add(now_ms);
        }
        day.requests += 1;
        Ok(())
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

    /// Adds a finished call's tokens to its day.
    pub fn add_tokens(&self, tokens: u64, now_ms: i64, tz: &FixedOffset) {
        if tokens == 0 || self.id == ENV_CLIENT_ID {
            return;
        }
        let mut day = self.usage.day.lock().unwrap_or_else(|e| e.into_inner());
        day.on(day_of(now_ms, tz)).tokens += tokens;
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

/// The clients as the request path sees them.
#[derive(Default)]
pub struct ClientSnapshot {
    by_hash: HashMap<[u8; 32], Arc<Client>>,
    by_id: HashMap<ClientId, Arc<Client>>,
}

impl ClientSnapshot {
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn get(&self, id: ClientId) -> Option<&Arc<Client>> {
        self.by_id.get(&id)
    }
}

/// Every client key, in a snapshot rebuilt from the database after each
/// change (here, or on another instance), with their usage kept in memory.
pub struct ClientKeys {
    snapshot: ArcSwap<ClientSnapshot>,
    /// Usage by client id, kept across snapshots.
    usage: Mutex<HashMap<ClientId, Arc<Usage>>>,
    pub env: Arc<Client>,
    pub tz: FixedOffset,
}

impl ClientKeys {
    /// Loads the clients and what each used today: from the request log when
    /// this instance is alone; with several (`shared`), every instance's
    /// count comes from `client_usage` instead (`sync_usage`).
    pub fn load(db: &DbPool, tz: FixedOffset, now_ms: i64, shared: bool) -> Result<ClientKeys, DbError> {
        let keys = ClientKeys {
            snapshot: ArcSwap::from_pointee(ClientSnapshot::default()),
            usage: Mutex::new(HashMap::new()),
            env: Arc::new(Client::env()),
            tz,
        };
        let mut conn = db.get()?;
        keys.reload_from(&mut conn)?;
        if shared {
            return Ok(keys);
        }
        let start = day_of(now_ms, &tz) * DAY_MS - i64::from(tz.local_minus_utc()) * 1000;
        let used = client_rows::usage_since(&mut conn, start)?;
        let snapshot = keys.snapshot.load();
        for client in snapshot.by_id.values().chain(std::iter::once(&keys.env)) {
            if let Some((requests, tokens)) = used.get(&*client.name) {
                let mut day = client.usage.day.lock().unwrap_or_else(|e| e.into_inner());
                *day = DayUsage { day: day_of(now_ms, &tz), requests: *requests, tokens: *tokens };
            }
        }
        Ok(keys)
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<ClientSnapshot>> {
        self.snapshot.load()
    }

    /// The client whose secret this is (not checking enabled or expiry).
    pub fn find(&self, secret: &str) -> Option<Arc<Client>> {
        let snapshot = self.snapshot.load();
        if snapshot.is_empty() {
            return None;
        }
        snapshot.by_hash.get(&key_hash(secret)).cloned()
    }

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
                DayUsage { day: today, requests: o.requests, tokens: o.tokens };
            c.usage.others_minute.store(o.recent, Ordering::Release);
        }
        Ok(())
    }

    /// Another instance changed something: the client table is read again
    /// if the change names it (or everything).
    pub fn reload_on(&self, what: &crate::db::notify::Changed, db: &DbPool) {
        if what.all || what.clients {
            if let Err(e) = self.reload(db) {
                log::error!("client keys: reload after another instance's change: {e}");
            }
        }
    }

    /// Reads every client again (after a change).
    pub fn reload(&self, db: &DbPool) -> Result<(), DbError> {
        let mut conn = db.get_timeout(crate::db::CONNECT_WAIT)?;
        self.reload_from(&mut conn)
    }

    fn reload_from(&self, conn: &mut crate::db::AnyConn) -> Result<(), DbError> {
        let rows = client_rows::all(conn)?;
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.retain(|id, _| rows.iter().any(|r| r.client_id() == *id));
        let mut snapshot = ClientSnapshot::default();
        for row in rows {
            let Some(hash) = from_hex(&row.key_hash) else {
                log::error!(
                    "client {:?}: its stored key hash is unreadable; the key will not work",
                    row.name
                );
                continue;
            };
            let client = Arc::new(client_of(&row, usage.entry(row.client_id()).or_default().clone()));
            snapshot.by_hash.insert(hash, client.clone());
            snapshot.by_id.insert(row.client_id(), client);
        }
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }
}

/// With several instances on one database: publishes this instance's counts
/// every second (and once more when `alive()` turns false, at a shutdown)
/// and takes the others', on a thread of its own.
pub fn share_usage(
    keys: Arc<ClientKeys>,
    db: DbPool,
    instance: String,
    alive: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("client-usage".into()).spawn(move || {
        // Said once per outage, not every second.
        let mut failing = false;
        loop {
            let last = !alive();
            let synced = db
                .get_timeout(crate::db::CONNECT_WAIT)
                .map_err(DbError::from)
                .and_then(|mut conn| keys.sync_usage(&mut conn, &instance, crate::db::now_ms()));
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
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    })?;
    Ok(())
}

/// The stored model list: a JSON array of entries.
pub fn parse_models(stored: Option<&str>) -> Option<Vec<ModelRule>> {
    let list: Vec<String> = serde_json::from_str(stored?).ok()?;
    Some(list.iter().filter_map(|m| ModelRule::parse(m).ok()).collect())
}

fn client_of(row: &ClientRow, usage: Arc<Usage>) -> Client {
    Client {
        id: row.client_id(),
        name: Arc::from(row.name.as_str()),
        models: parse_models(row.models.as_deref()),
        rpm: row.rpm.and_then(|n| u32::try_from(n).ok()),
        daily_requests: row.daily_requests.and_then(|n| u64::try_from(n).ok()),
        daily_tokens: row.daily_tokens.and_then(|n| u64::try_from(n).ok()),
        expires_at: row.expires_at,
        enabled: row.enabled,
        usage,
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
        }
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

    #[test]
    fn the_rate_allows_rpm_at_once_then_one_per_period() {
        let tz = FixedOffset::east_opt(0).unwrap();
        let c = client(Some(3), None, None);
        let t = 1_000_000_000;
        for _ in 0..3 {
            assert_eq!(c.admit("Qwen/Qwen3-8B", t, &tz), Ok(()));
        }
        let Err(Refusal::Limit { message, retry_after_secs }) = c.admit("Qwen/Qwen3-8B", t, &tz) else {
            panic!("the fourth call in the same instant is refused")
        };
        assert!(message.contains("3 requests per minute (rpm)"), "{message}");
        assert_eq!(retry_after_secs, 20);
        // One period (20 s) later, one more.
        assert_eq!(c.admit("Qwen/Qwen3-8B", t + 20_000, &tz), Ok(()));
        assert!(c.admit("Qwen/Qwen3-8B", t + 20_000, &tz).is_err());
        assert_eq!(c.today(t, &tz).0, 4, "refused calls are not counted");
    }

    #[test]
    fn the_rate_counts_the_calls_other_instances_made_in_the_last_minute() {
        let tz = FixedOffset::east_opt(0).unwrap();
        let c = client(Some(4), None, None);
        let t = 1_000_000_000;
        // Three calls elsewhere in the last minute: one more here, of four.
        c.usage.others_minute.store(3, Ordering::Release);
        assert_eq!(c.admit("Qwen/Qwen3-8B", t, &tz), Ok(()));
        let Err(Refusal::Limit { message, retry_after_secs }) = c.admit("Qwen/Qwen3-8B", t, &tz) else {
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
        assert_eq!(c.admit("Qwen/Qwen3-8B", t, &tz), Ok(()));
    }

    #[test]
    fn daily_limits_reset_at_midnight_in_the_time_zone() {
        let tz = FixedOffset::east_opt(8 * 3600).unwrap();
        let c = client(None, Some(2), Some(100));
        // 2026-12-02 15:59:59 UTC = 23:59:59 at +08:00.
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-02T15:59:59Z").unwrap().timestamp_millis();
        assert!(c.admit("Qwen/a", t, &tz).is_ok());
        c.add_tokens(150, t, &tz);
        let Err(Refusal::Limit { message, retry_after_secs }) = c.admit("Qwen/a", t, &tz) else { panic!() };
        assert!(message.contains("100 tokens for today (daily_tokens: 150 used)"), "{message}");
        assert_eq!(retry_after_secs, 1, "midnight at +08:00 is a second away");
        // A second later it is a new day there.
        assert!(c.admit("Qwen/a", t + 1000, &tz).is_ok());
        assert!(c.admit("Qwen/a", t + 1000, &tz).is_ok());
        let Err(Refusal::Limit { message, .. }) = c.admit("Qwen/a", t + 1000, &tz) else { panic!() };
        assert!(message.contains("2 requests for today (daily_requests)"), "{message}");
        assert!(matches!(c.admit("other/model", t + 1000, &tz), Err(Refusal::Model(_))));
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
    fn hashes_round_trip_through_hex() {
        let h = key_hash_hex("sk-abc");
        assert_eq!(from_hex(&h), Some(key_hash("sk-abc")));
        assert_eq!(from_hex("zz"), None);
        let s = new_secret();
        assert!(s.starts_with("sk-") && s.len() == 51);
    }
}
