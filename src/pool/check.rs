//! Checking keys against the upstream. `/v1/user/info` proves a key works
//! and reads its balance and account, where it still answers; SiliconFlow
//! China retired it (410 since August 2026), so on 404/410 a key is validated
//! with `GET /v1/models` instead (free, 200 for a valid key even at zero
//! balance) and its balance stays unknown. An origin whose user info is gone
//! is remembered, and asked again once a day in case it returns.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use crate::db::now_ms;
use crate::upstream::{is_insufficient_balance, parse_balance, snippet};

#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    Valid {
        /// `None`: the key works but its balance cannot be read (no user info).
        balance: Option<f64>,
        /// Gifted and paid credit, when the upstream reports them.
        gift: Option<f64>,
        charge: Option<f64>,
        account_id: Option<String>,
        account_name: Option<String>,
    },
    /// 401: the key is dead (revoked, mistyped, other region).
    Invalid { reason: String },
    /// 402/403 code 30001: no funds.
    Exhausted { reason: String },
    /// Timeouts, 5xx, 429, anything else: says nothing about the key.
    Transient { reason: String },
}

impl CheckOutcome {
    /// A valid key whose balance the upstream does not tell.
    pub fn valid_unknown() -> Self {
        CheckOutcome::Valid { balance: None, gift: None, charge: None, account_id: None, account_name: None }
    }
}

/// How long an origin whose `/v1/user/info` answered 404/410 is not asked again.
pub const USER_INFO_REASK: Duration = Duration::from_secs(24 * 3600);

/// Which upstream origins no longer have `/v1/user/info`, and until when that
/// is believed. Touched by checks only (import, refresh), never by requests.
#[derive(Debug, Default)]
pub struct UserInfoEndpoints {
    gone_until: Mutex<HashMap<String, i64>>,
}

impl UserInfoEndpoints {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // A panic while holding this lock cannot leave the map half-written.
        self.gone_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_gone(&self, base: &str, now: i64) -> bool {
        self.map().get(base).is_some_and(|until| *until > now)
    }

    fn mark_gone(&self, base: &str, status: u16, now: i64) {
        let until = now + USER_INFO_REASK.as_millis() as i64;
        if self.map().insert(base.to_string(), until).is_none() {
            log::info!(
                "{base}/v1/user/info answers {status}: balances are unknown there; keys are validated with \
                 /v1/models and exhaustion is learned from calls (asked again in 24 h)"
            );
        }
    }

    fn mark_answering(&self, base: &str) {
        if self.map().remove(base).is_some() {
            log::info!("{base}/v1/user/info answers again: balances are read from it");
        }
    }

    /// Origins without user info now, for the admin's hint.
    pub fn gone(&self, now: i64) -> Vec<String> {
        self.map().iter().filter(|(_, until)| **until > now).map(|(b, _)| b.clone()).collect()
    }
}

#[derive(Deserialize)]
struct Envelope {
    data: Option<UserInfo>,
}

#[derive(Deserialize)]
struct UserInfo {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "totalBalance")]
    total_balance: Option<serde_json::Value>,
    #[serde(default)]
    balance: Option<serde_json::Value>,
    #[serde(default, rename = "chargeBalance")]
    charge_balance: Option<serde_json::Value>,
}

/// What a key's failure status says, for either check endpoint.
fn interpret_failure(status: u16, body: &[u8]) -> CheckOutcome {
    let text = snippet(body);
    match status {
        401 => CheckOutcome::Invalid { reason: format!("401: {text}") },
        402 | 403 if is_insufficient_balance(body) => {
            CheckOutcome::Exhausted { reason: format!("{status}: {text}") }
        }
        _ => CheckOutcome::Transient { reason: format!("{status}: {text}") },
    }
}

/// Interprets a `/v1/user/info` answer. Pure, so it is unit-tested below.
pub fn interpret(status: u16, body: &[u8]) -> CheckOutcome {
    if status != 200 {
        return interpret_failure(status, body);
    }
    let info = match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { data: Some(info) }) => info,
        _ => {
            return CheckOutcome::Transient {
                reason: format!("unexpected user info answer: {}", snippet(body)),
            }
        }
    };
    let gift = info.balance.as_ref().and_then(parse_balance);
    let charge = info.charge_balance.as_ref().and_then(parse_balance);
    let balance = info.total_balance.as_ref().and_then(parse_balance).or(match (gift, charge) {
        (None, None) => None,
        (b, c) => Some(b.unwrap_or(0.0) + c.unwrap_or(0.0)),
    });
    let account_id = info.id.and_then(|v| match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    CheckOutcome::Valid {
        balance,
        gift,
        charge,
        account_id,
        account_name: info.name.filter(|n| !n.is_empty()),
    }
}

/// Interprets a `/v1/models` answer used as a key check: 200 proves the key
/// (not its funds: the list answers at zero balance too).
pub fn interpret_models(status: u16, body: &[u8]) -> CheckOutcome {
    match status {
        200..=299 => CheckOutcome::valid_unknown(),
        _ => interpret_failure(status, body),
    }
}

async fn get(
    client: &awc::Client,
    url: String,
    key: &str,
    timeout: Duration,
) -> Result<(u16, bytes::Bytes), String> {
    let sent = client
        .get(url)
        .insert_header(("Authorization", format!("Bearer {key}")))
        .timeout(timeout)
        .send()
        .await;
    let mut resp = sent.map_err(|e| format!("upstream unreachable: {e}"))?;
    let status = resp.status().as_u16();
    match resp.body().limit(4 << 20).await {
        // Checks keep error texts (a key's last error): mask the key if quoted.
        Ok(body) => Ok((status, crate::upstream::redact(body, key, &crate::pool::mask_key(key)))),
        Err(e) => Err(format!("{status}, body unreadable: {e}")),
    }
}

/// Asks the upstream about one key. Never fails: a transport error is a
/// `Transient` outcome, which leaves the key as it was.
pub async fn check_key(
    client: &awc::Client,
    base_url: &str,
    key: &str,
    timeout: Duration,
    endpoints: &UserInfoEndpoints,
) -> CheckOutcome {
    if !endpoints.is_gone(base_url, now_ms()) {
        let (status, body) = match get(client, format!("{base_url}/v1/user/info"), key, timeout).await {
            Ok(r) => r,
            Err(reason) => return CheckOutcome::Transient { reason },
        };
        if status != 404 && status != 410 {
            let outcome = interpret(status, &body);
            if matches!(outcome, CheckOutcome::Valid { balance: Some(_), .. }) {
                endpoints.mark_answering(base_url);
            }
            return outcome;
        }
        endpoints.mark_gone(base_url, status, now_ms());
    }
    match get(client, format!("{base_url}/v1/models"), key, timeout).await {
        Ok((status, body)) => interpret_models(status, &body),
        Err(reason) => CheckOutcome::Transient { reason },
    }
}

/// The model ids the upstream lists for a key (`GET /v1/models`).
pub async fn list_models(
    client: &awc::Client,
    base_url: &str,
    key: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let (status, body) = get(client, format!("{base_url}/v1/models"), key, timeout).await?;
    if !(200..300).contains(&status) {
        return Err(format!("the model list answered {status}"));
    }
    #[derive(serde::Deserialize)]
    struct Listed {
        data: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
    }
    let listed: Listed =
        serde_json::from_slice(&body).map_err(|e| format!("the model list is unreadable: {e}"))?;
    // Bounded: the labels of the metrics come from it.
    Ok(listed.data.into_iter().map(|e| e.id).filter(|id| id.len() <= 256).take(2000).collect())
}

/// Reads the upstream's model list into the pool (the metrics' model
/// labels) with `key`, unless another read is under way.
pub async fn read_model_list(
    pool: &super::PoolShared,
    client: &awc::Client,
    base_url: &str,
    key: &str,
    timeout: Duration,
) {
    if !pool.claim_listing() {
        return;
    }
    let listed = list_models(client, base_url, key, timeout).await;
    match &listed {
        Ok(ids) if pool.served_read_at() == 0 => {
            log::info!("model list: {} models served upstream", ids.len())
        }
        Ok(_) => {}
        Err(e) => log::warn!("model list: {e}"),
    }
    pool.end_listing(listed.ok(), now_ms());
}

/// Runs `check` over `items`, `concurrency` at a time, answers in the order
/// of `items`; but the first item of each upstream origin runs alone, first:
/// its answer tells whether that origin still has `/v1/user/info`, so that a
/// refresh of 10,000 keys does not make 10,000 doomed calls before it knows.
pub async fn checked_in_order<T, F, Fut, O>(
    items: Vec<T>,
    origin: impl Fn(&T) -> String,
    concurrency: usize,
    check: F,
) -> Vec<O>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = O>,
{
    let mut seen = std::collections::HashSet::new();
    let (mut scouts, mut rest) = (Vec::new(), Vec::new());
    for (i, item) in items.into_iter().enumerate() {
        if seen.insert(origin(&item)) {
            scouts.push((i, item));
        } else {
            rest.push((i, item));
        }
    }
    let mut out: Vec<(usize, O)> = Vec::with_capacity(scouts.len() + rest.len());
    for (i, item) in scouts {
        out.push((i, check(item).await));
    }
    let check = &check;
    let more: Vec<(usize, O)> = futures_util::stream::iter(rest)
        .map(|(i, item)| async move { (i, check(item).await) })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    out.extend(more);
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interprets_user_info_answers() {
        let ok = br#"{"code":20000,"message":"OK","status":true,"data":{"id":"u1","name":"n","balance":"0.88","chargeBalance":"88.00","totalBalance":"88.88"}}"#;
        assert_eq!(
            interpret(200, ok),
            CheckOutcome::Valid {
                balance: Some(88.88),
                gift: Some(0.88),
                charge: Some(88.0),
                account_id: Some("u1".into()),
                account_name: Some("n".into())
            }
        );
        let no_total = br#"{"data":{"id":7,"balance":"1.5","chargeBalance":"2"}}"#;
        assert!(
            matches!(interpret(200, no_total), CheckOutcome::Valid { balance: Some(b), account_id: Some(ref a), .. } if b == 3.5 && a == "7")
        );
        // A 200 without any balance is a valid key with an unknown balance, not a failure.
        let no_balance = br#"{"data":{"id":"u2"}}"#;
        assert!(matches!(interpret(200, no_balance), CheckOutcome::Valid { balance: None, .. }));
        assert!(matches!(interpret(401, br#""Invalid token""#), CheckOutcome::Invalid { .. }));
        let broke = br#"{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}"#;
        assert!(matches!(interpret(403, broke), CheckOutcome::Exhausted { .. }));
        assert!(matches!(interpret(402, broke), CheckOutcome::Exhausted { .. }));
        assert!(matches!(interpret(403, br#""Forbidden""#), CheckOutcome::Transient { .. }));
        assert!(matches!(interpret(503, b"{}"), CheckOutcome::Transient { .. }));
        assert!(matches!(interpret(429, b"{}"), CheckOutcome::Transient { .. }));
        assert!(matches!(interpret(200, b"<html>"), CheckOutcome::Transient { .. }));
    }

    #[test]
    fn a_model_list_proves_the_key_but_not_its_funds() {
        assert_eq!(interpret_models(200, br#"{"object":"list","data":[]}"#), CheckOutcome::valid_unknown());
        assert!(matches!(interpret_models(401, br#""Api key is invalid""#), CheckOutcome::Invalid { .. }));
        let broke = br#"{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}"#;
        assert!(matches!(interpret_models(403, broke), CheckOutcome::Exhausted { .. }));
        for s in [403, 404, 429, 500, 503] {
            assert!(matches!(interpret_models(s, b"{}"), CheckOutcome::Transient { .. }), "{s}");
        }
    }

    #[test]
    fn a_gone_user_info_is_remembered_for_a_day() {
        let e = UserInfoEndpoints::default();
        assert!(!e.is_gone("http://a", 0));
        e.mark_gone("http://a", 410, 0);
        assert!(e.is_gone("http://a", 1000));
        assert!(!e.is_gone("http://b", 1000));
        assert!(!e.is_gone("http://a", USER_INFO_REASK.as_millis() as i64), "asked again after a day");
        assert_eq!(e.gone(1), vec!["http://a".to_string()]);
        e.mark_answering("http://a");
        assert!(!e.is_gone("http://a", 1));
    }

    #[actix_rt::test]
    async fn the_first_of_each_origin_goes_alone_and_answers_keep_their_order() {
        use std::cell::RefCell;
        let log = RefCell::new(Vec::new());
        let items: Vec<(u32, &str)> = vec![(0, "a"), (1, "a"), (2, "b"), (3, "a"), (4, "b")];
        let out = checked_in_order(
            items,
            |i| i.1.to_string(),
            4,
            |(n, o)| {
                let log = &log;
                async move {
                    log.borrow_mut().push(format!("start {n}"));
                    actix_rt::task::yield_now().await;
                    log.borrow_mut().push(format!("end {n}"));
                    (n, o)
                }
            },
        )
        .await;
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        let log = log.into_inner();
        // The scouts (0 for origin a, 2 for b) each finish before anything else starts.
        assert_eq!(&log[..4], &["start 0", "end 0", "start 2", "end 2"]);
    }
}
