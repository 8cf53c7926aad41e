//! `GET /v1/user/info`, answered by the proxy: the pool as one account, in
//! SiliconFlow's envelope. No pool account's id, name or email leaks.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::errors::{Dialect, ErrorKind, ProxyError};
use super::forward::reject;
use super::record::Pending;
use super::usage::Usage;
use crate::db::models::KeyRow;
use crate::db::queries::keys;
use crate::state::AppState;

#[derive(Debug, Default, PartialEq)]
pub struct PoolTotals {
    pub total: f64,
    pub gift: f64,
    pub charge: f64,
    pub accounts: usize,
    pub keys: usize,
    pub usable_keys: usize,
}

/// Keys of one account share one balance: count each account once (its
/// freshest figure), skipping invalid and disabled keys.
pub fn totals(rows: &[KeyRow]) -> PoolTotals {
    let mut per_account: HashMap<String, &KeyRow> = HashMap::new();
    let mut t = PoolTotals { keys: rows.len(), ..Default::default() };
    for r in rows {
        if r.state == "invalid" || r.state == "disabled" {
            continue;
        }
        if r.state == "active" {
            t.usable_keys += 1;
        }
        let account = r.account_id.clone().unwrap_or_else(|| format!("key:{}", r.id));
        let e = per_account.entry(account).or_insert(r);
        if r.last_checked.unwrap_or(0) > e.last_checked.unwrap_or(0) {
            *e = r;
        }
    }
    t.accounts = per_account.len();
    for r in per_account.values() {
        t.total += r.balance.unwrap_or(0.0);
        t.gift += r.gift_balance.unwrap_or(0.0);
        t.charge += r.charge_balance.unwrap_or(0.0);
    }
    t
}

pub async fn user_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let mut pending = Pending::new(&state.log, req.path());
    let rows = match crate::db::run(&state.db, keys::all).await {
        Ok(r) => r,
        Err(e) => return reject(pending, ProxyError::new(ErrorKind::Unavailable, e), Dialect::OpenAi),
    };
    let t = totals(&rows);
    pending.status = 200;
    pending.finish(Usage::default(), false);
    HttpResponse::Ok().json(json!({
        "code": 20000,
        "message": "OK",
        "status": true,
        "data": {
            "id": "siliconflow-proxy",
            "name": "siliconflow-proxy pool",
            "image": "",
            "email": "",
            "isAdmin": false,
            "balance": format!("{:.2}", t.gift),
            "status": "normal",
            "introduction": format!("{} keys in {} accounts", t.keys, t.accounts),
            "role": "",
            "chargeBalance": format!("{:.2}", t.charge),
            "totalBalance": format!("{:.2}", t.total),
            "keyCount": t.keys,
            "usableKeyCount": t.usable_keys,
            "accountCount": t.accounts,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, account: Option<&str>, state: &str, balance: f64, checked: i64) -> KeyRow {
        KeyRow {
            id,
            key: format!("sk-{id}"),
            state: state.into(),
            balance: Some(balance),
            account_id: account.map(str::to_string),
            account_name: None,
            base_url: None,
            usage_count: 0,
            last_used: None,
            last_checked: Some(checked),
            last_error: None,
            state_changed_at: None,
            created_at: 0,
            gift_balance: Some(1.0),
            charge_balance: Some(balance - 1.0),
        }
    }

    #[test]
    fn accounts_count_once_and_dead_keys_not_at_all() {
        let rows = vec![
            row(1, Some("a"), "active", 10.0, 1),
            row(2, Some("a"), "active", 9.0, 2), // same account, fresher: 9 counts
            row(3, Some("b"), "exhausted", 0.0, 1),
            row(4, None, "active", 5.0, 1),
            row(5, Some("c"), "invalid", 100.0, 1),
            row(6, Some("d"), "disabled", 100.0, 1),
        ];
        let t = totals(&rows);
        assert_eq!(t.total, 14.0);
        assert_eq!(t.accounts, 3);
        assert_eq!(t.keys, 6);
        assert_eq!(t.usable_keys, 3);
        assert_eq!(t.gift, 3.0);
    }
}
