//! List calls (files, batches, custom voices) across the pool: ask one key of
//! every account (bounded concurrency) and answer one list in the upstream's
//! shape, so the pool looks like one account.

use std::collections::HashSet;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::affinity::ResourceKind;
use super::errors::{snippet, Dialect, ErrorKind, ProxyError};
use super::forward::{copy_headers, reject};
use super::record::Pending;
use super::usage::Usage;
use crate::clients::ENV_CLIENT_ID;
use crate::db::queries::resources;
use crate::pool::{KeyState, PoolKey};
use crate::state::{AppState, Upstream};
use crate::upstream::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `{"code":20000,...,"data":{"data":[...],"object":"list"}}`
    Files,
    /// `{"object":"list","data":[...],"first_id","last_id","has_more"}`
    Batches,
    /// `{"results":[...]}`
    Voices,
}

impl ListKind {
    /// The kind of resource listed, as `affinity` records it.
    fn resource(self) -> ResourceKind {
        match self {
            ListKind::Files => ResourceKind::File,
            ListKind::Batches => ResourceKind::Batch,
            ListKind::Voices => ResourceKind::Voice,
        }
    }

    /// An item's id, as its create call answered it.
    fn id_of(self, item: &Value) -> Option<String> {
        let id = match self {
            ListKind::Files | ListKind::Batches => item.get("id"),
            ListKind::Voices => item.get("uri"),
        }?;
        match id {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn items(self, v: &Value) -> Option<Vec<Value>> {
        let arr = match self {
            ListKind::Files => v.pointer("/data/data"),
            ListKind::Batches => v.get("data"),
            ListKind::Voices => v.get("results"),
        }?;
        arr.as_array().cloned()
    }

    fn answer(self, mut items: Vec<Value>, has_more: bool) -> Value {
        match self {
            ListKind::Files => {
                json!({"code": 20000, "message": "Ok", "status": true, "data": {"data": items, "object": "list"}})
            }
            ListKind::Batches => {
                // Newest first across accounts, as the upstream orders one account's list.
                items.sort_by_key(|b| {
                    std::cmp::Reverse(b.get("created_at").and_then(Value::as_i64).unwrap_or(0))
                });
                let first = items.first().and_then(|b| b.get("id")).cloned().unwrap_or(Value::Null);
                let last = items.last().and_then(|b| b.get("id")).cloned().unwrap_or(Value::Null);
                json!({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": has_more})
            }
            ListKind::Voices => json!({"results": items}),
        }
    }
}

/// An upstream answer, read whole.
type Answer = (StatusCode, awc::http::header::HeaderMap, Bytes);

/// One usable key per account (exhausted keys may still list).
fn one_key_per_account(keys: &[Arc<PoolKey>]) -> Vec<Arc<PoolKey>> {
    let mut seen = HashSet::new();
    keys.iter()
        .filter(|k| matches!(k.state(), KeyState::Active | KeyState::Exhausted))
        .filter(|k| seen.insert(k.account.id.clone()))
        .cloned()
        .collect()
}

pub async fn merged(
    req: HttpRequest,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
    kind: ListKind,
    upstream_path: &'static str,
) -> HttpResponse {
    let mut pending = match Pending::new(&state, &req)
        .admit("", Dialect::OpenAi, &state.metrics, &|| crate::clients::Reservation::fixed(0))
        .await
    {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let keys = one_key_per_account(&state.pool.snapshot().keys);
    if keys.is_empty() {
        let e = ProxyError::new(ErrorKind::Unavailable, "No usable API key in the pool to list with");
        return reject(pending, e, Dialect::OpenAi);
    }
    let query = req.query_string().to_string();
    let client = &upstream.client;
    let results: Vec<(Arc<PoolKey>, Result<Answer, String>)> = futures_util::stream::iter(keys)
        .map(|key| {
            let url = if query.is_empty() {
                format!("{}{upstream_path}", key.base_url)
            } else {
                format!("{}{upstream_path}?{query}", key.base_url)
            };
            let req =
                client.get(url).insert_header((actix_web::http::header::AUTHORIZATION, key.bearer.clone()));
            async move {
                let r = match req.send().await {
                    Ok(mut resp) => match resp.body().limit(32 << 20).await {
                        Ok(b) => {
                            Ok((resp.status(), resp.headers().clone(), redact(b, &key.secret, &key.masked)))
                        }
                        Err(e) => Err(format!("answer unreadable: {e}")),
                    },
                    Err(e) => Err(format!("upstream unreachable: {e}")),
                };
                (key, r)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    pending.attempts = results.len() as u32;
    let mut items = Vec::new();
    let mut has_more = false;
    let mut ok = 0;
    let mut first_failure = None;
    for (key, r) in results {
        match r {
            Ok((status, headers, body)) if status.is_success() => {
                match serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                    has_more |= v.get("has_more").and_then(Value::as_bool).unwrap_or(false);
                    kind.items(&v)
                }) {
                    Some(list) => {
                        ok += 1;
                        items.extend(list);
                    }
                    None => log::warn!("list with key {}: unexpected answer {}", key.masked, snippet(&body)),
                }
                let _ = headers;
            }
            Ok((status, headers, body)) => {
                log::warn!("list with key {} failed: {}: {}", key.masked, status.as_u16(), snippet(&body));
                first_failure.get_or_insert((status, headers, body));
            }
            Err(e) => log::warn!("list with key {} failed: {e}", key.masked),
        }
    }
    if ok == 0 {
        if let Some((status, headers, body)) = first_failure {
            pending.status = status.as_u16();
            pending.error = Some(format!("{}: {}", status.as_u16(), snippet(&body)));
            pending.finish(Usage::default(), false);
            let mut b = HttpResponse::build(status);
            copy_headers(&mut b, &headers);
            return b.body(body);
        }
        let e = ProxyError::new(ErrorKind::BadGateway, "no account of the pool answered the list call");
        return reject(pending, e, Dialect::OpenAi);
    }
    // A client sees what it created; API_KEY's client and an open proxy, all.
    if let Some(client) = pending.client.clone().filter(|c| c.id != ENV_CLIENT_ID) {
        let (what, id) = (kind.resource().as_str(), client.id);
        match crate::db::run(&state.db, move |c| resources::ids_of_client(c, what, id)).await {
            Ok(own) => {
                let own: HashSet<String> = own.into_iter().collect();
                items.retain(|item| kind.id_of(item).is_some_and(|id| own.contains(&id)));
            }
            Err(e) => {
                let e = ProxyError::new(ErrorKind::Unavailable, format!("database unavailable: {e}"));
                return reject(pending, e, Dialect::OpenAi);
            }
        }
    }
    pending.status = 200;
    pending.finish(Usage::default(), false);
    HttpResponse::Ok().json(kind.answer(items, has_more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_merge_in_the_upstreams_shapes() {
        let files = json!({"code":20000,"data":{"data":[{"id":"f1"}],"object":"list"}});
        assert_eq!(ListKind::Files.items(&files).unwrap().len(), 1);
        let merged = ListKind::Files.answer(vec![json!({"id":"f1"}), json!({"id":"f2"})], false);
        assert_eq!(merged["data"]["data"].as_array().unwrap().len(), 2);
        assert_eq!(merged["code"], 20000);
        let merged = ListKind::Batches
            .answer(vec![json!({"id":"b_old","created_at":1}), json!({"id":"b_new","created_at":9})], true);
        assert_eq!((merged["first_id"].as_str(), merged["last_id"].as_str()), (Some("b_new"), Some("b_old")));
        assert_eq!(merged["has_more"], true);
        assert_eq!(ListKind::Voices.answer(vec![json!({"uri":"u"})], false)["results"][0]["uri"], "u");
    }
}
