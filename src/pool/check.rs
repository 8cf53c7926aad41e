//! Checking one key against `/v1/user/info`: the cheap call that proves a key
//! works and reads its balance and account.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    Valid {
        balance: f64,
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

/// SiliconFlow sends balances as strings ("88.88", "-0.01"); accept numbers too.
pub fn parse_balance(v: &serde_json::Value) -> Option<f64> {
    let n = match v {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        serde_json::Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// Interprets a `/v1/user/info` answer. Pure, so it is unit-tested below.
pub fn interpret(status: u16, body: &[u8]) -> CheckOutcome {
    let text = || crate::proxy::errors::snippet(body);
    match status {
        200 => {
            let info = match serde_json::from_slice::<Envelope>(body) {
                Ok(Envelope { data: Some(info) }) => info,
                _ => {
                    return CheckOutcome::Transient {
                        reason: format!("unexpected user info answer: {}", text()),
                    }
                }
            };
            let gift = info.balance.as_ref().and_then(parse_balance);
            let charge = info.charge_balance.as_ref().and_then(parse_balance);
            let balance = info.total_balance.as_ref().and_then(parse_balance).or({
                let (b, c) = (gift, charge);
                match (b, c) {
                    (None, None) => None,
                    (b, c) => Some(b.unwrap_or(0.0) + c.unwrap_or(0.0)),
                }
            });
            let Some(balance) = balance else {
                return CheckOutcome::Transient { reason: format!("no balance in user info: {}", text()) };
            };
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
        401 => CheckOutcome::Invalid { reason: format!("401: {}", text()) },
        402 | 403 if crate::proxy::errors::is_insufficient_balance(body) => {
            CheckOutcome::Exhausted { reason: format!("{status}: {}", text()) }
        }
        _ => CheckOutcome::Transient { reason: format!("{status}: {}", text()) },
    }
}

/// Asks the upstream about one key. Never fails: a transport error is a
/// `Transient` outcome, which leaves the key as it was.
pub async fn check_key(client: &awc::Client, base_url: &str, key: &str, timeout: Duration) -> CheckOutcome {
    let url = format!("{base_url}/v1/user/info");
    let sent = client
        .get(url)
        .insert_header(("Authorization", format!("Bearer {key}")))
        .timeout(timeout)
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => return CheckOutcome::Transient { reason: format!("upstream unreachable: {e}") },
    };
    let status = resp.status().as_u16();
    match resp.body().limit(1 << 20).await {
        Ok(body) => interpret(status, &body),
        Err(e) => CheckOutcome::Transient { reason: format!("{status}, body unreadable: {e}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_are_strings_numbers_or_negative() {
        assert_eq!(parse_balance(&serde_json::json!("88.88")), Some(88.88));
        assert_eq!(parse_balance(&serde_json::json!("-0.01")), Some(-0.01));
        assert_eq!(parse_balance(&serde_json::json!(3)), Some(3.0));
        assert_eq!(parse_balance(&serde_json::json!("abc")), None);
        assert_eq!(parse_balance(&serde_json::json!("NaN")), None);
        assert_eq!(parse_balance(&serde_json::json!(null)), None);
    }

    #[test]
    fn interprets_user_info_answers() {
        let ok = br#"{"code":20000,"message":"OK","status":true,"data":{"id":"u1","name":"n","balance":"0.88","chargeBalance":"88.00","totalBalance":"88.88"}}"#;
        assert_eq!(
            interpret(200, ok),
            CheckOutcome::Valid {
                balance: 88.88,
                gift: Some(0.88),
                charge: Some(88.0),
                account_id: Some("u1".into()),
                account_name: Some("n".into())
            }
        );
        let no_total = br#"{"data":{"id":7,"balance":"1.5","chargeBalance":"2"}}"#;
        assert!(
            matches!(interpret(200, no_total), CheckOutcome::Valid { balance, account_id: Some(ref a), .. } if balance == 3.5 && a == "7")
        );
        assert!(matches!(interpret(401, br#""Invalid token""#), CheckOutcome::Invalid { .. }));
        let broke = br#"{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}"#;
        assert!(matches!(interpret(403, broke), CheckOutcome::Exhausted { .. }));
        assert!(matches!(interpret(402, broke), CheckOutcome::Exhausted { .. }));
        assert!(matches!(interpret(403, br#""Forbidden""#), CheckOutcome::Transient { .. }));
        assert!(matches!(interpret(503, b"{}"), CheckOutcome::Transient { .. }));
        assert!(matches!(interpret(429, b"{}"), CheckOutcome::Transient { .. }));
        assert!(matches!(interpret(200, b"<html>"), CheckOutcome::Transient { .. }));
    }
}
