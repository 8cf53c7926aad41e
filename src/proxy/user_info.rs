//! `GET /v1/user/info`, answered by the proxy: the pool as one account, in
//! SiliconFlow's envelope. No pool account's id, name or email leaks.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::errors::{Dialect, ErrorKind, ProxyError};
use super::forward::reject;
use super::record::Pending;
use super::usage::Usage;
use crate::db::queries::keys;
use crate::pool::totals::totals;
use crate::state::AppState;

pub async fn user_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let mut pending = match Pending::new(&state, &req)
        .admit("", Dialect::OpenAi, &state.metrics, &|| crate::clients::Reservation::fixed(0))
        .await
    {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    // Balances and states only: the keys stay sealed (no decryption on /v1).
    let rows = match crate::db::run(&state.db, keys::all_unopened).await {
        Ok(r) => r,
        Err(e) => {
            return reject(pending, ProxyError::new(ErrorKind::Unavailable, e.to_string()), Dialect::OpenAi)
        }
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
            // Strings, as SiliconFlow writes them; null when no account's balance is known.
            "balance": money(t.gift),
            "status": "normal",
            "introduction": format!("{} keys in {} accounts", t.keys, t.accounts),
            "role": "",
            "chargeBalance": money(t.charge),
            "totalBalance": money(t.total),
            "keyCount": t.keys,
            "usableKeyCount": t.usable_keys,
            "accountCount": t.accounts,
            "balanceKnownAccounts": t.known_accounts,
            "balanceUnknownAccounts": t.unknown_accounts,
        }
    }))
}

fn money(v: Option<f64>) -> serde_json::Value {
    match v {
        Some(v) => serde_json::Value::String(format!("{v:.2}")),
        None => serde_json::Value::Null,
    }
}
