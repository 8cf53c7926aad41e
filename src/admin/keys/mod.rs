//! The owner's keys: what the JSON API (`api`) and the page (`page`) share:
//! keys as the owner sees them (rows with the live pool laid over), pages
//! of them, and the operations both offer.

pub mod api;
pub mod page;

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::error::AdminError;
use crate::db::models::KeyRow;
use crate::db::queries::keys as kq;
use crate::db::{iso, now_ms, DbError};
use crate::pool::import::{parse_key_list, ImportReport, Importer, MAX_IMPORT};
use crate::pool::refresher::{RefreshNow, Running};
use crate::pool::{mask_key, CheckSummary, DeleteInState, KeyId, KeyState, PoolKey};
use crate::state::AppState;

/// The keys of an import's text, or why there are none to take.
pub fn checked_candidates(text: &str) -> Result<Vec<String>, AdminError> {
    let candidates = parse_key_list(text);
    if candidates.is_empty() {
        return Err(AdminError::BadRequest("no keys given".into()));
    }
    if candidates.len() > MAX_IMPORT {
        return Err(AdminError::TooLarge(format!("at most {MAX_IMPORT} keys per import")));
    }
    Ok(candidates)
}

/// Imports keys (see `pool::import`) with this instance's pool and settings.
pub async fn import_keys(
    candidates: Vec<String>,
    label: Option<String>,
    state: &AppState,
    client: &awc::Client,
) -> ImportReport {
    let importer = Importer {
        pool: &state.pool,
        actor: &state.pool_actor,
        client,
        base_url: &state.config.upstream_base_url,
        timeout: state.config.check_timeout,
        concurrency: state.config.refresh_concurrency,
    };
    importer.import(candidates, label).await
}

/// How a refresh of every key went, or how far it is.
pub enum RefreshAnswer {
    Done(CheckSummary),
    Running(Option<Running>),
    Unavailable(String),
}

pub async fn refresh_every_key(state: &AppState, wait: std::time::Duration) -> RefreshAnswer {
    let started = match state.refresher.send(RefreshNow(None)).await {
        Ok(started) => started,
        Err(e) => return RefreshAnswer::Unavailable(format!("refresher unavailable: {e}")),
    };
    let progress = started.progress.clone();
    match actix_rt::time::timeout(wait, started.summary()).await {
        Ok(summary) => RefreshAnswer::Done(summary),
        // Where it is now, or where it was when it started.
        Err(_) => RefreshAnswer::Running(state.refresh_status.load().running.clone().or(progress)),
    }
}

/// A key of the pool by the id in a path, or 404.
pub fn known_id(path: &str, state: &AppState) -> Result<KeyId, AdminError> {
    path.parse::<KeyId>()
        .ok()
        .and_then(|id| state.pool.snapshot().get(id).map(|k| k.id))
        .ok_or_else(|| AdminError::NotFound(format!("no key with id {path:?}")))
}

/// Deletes every key in a state the owner would clear out: invalid,
/// exhausted or disabled. Answers how many.
pub async fn delete_in_state(state: &AppState, which: Option<&str>) -> Result<usize, AdminError> {
    let which = match which.map(str::trim) {
        Some("invalid") => KeyState::Invalid,
        Some("exhausted") => KeyState::Exhausted,
        Some("disabled") => KeyState::Disabled,
        Some(other) if !other.is_empty() => {
            return Err(AdminError::BadRequest(format!(
                "state={other:?}: keys can be deleted in bulk by state invalid, exhausted or disabled"
            )))
        }
        _ => {
            return Err(AdminError::BadRequest(
                "say which keys: ?state=invalid, exhausted or disabled (one key: DELETE /api/keys/{id})"
                    .into(),
            ))
        }
    };
    Ok(state.pool_actor.send(DeleteInState(which)).await??)
}

#[derive(Debug, Serialize, Clone)]
pub struct KeyView {
    pub id: KeyId,
    pub key: String,
    pub state: &'static str,
    pub cooling_until: Option<String>,
    pub balance: Option<f64>,
    pub usage_count: i64,
    pub last_used: Option<String>,
    pub last_checked: Option<String>,
    pub last_error: Option<String>,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    /// The account the owner named, for keys whose upstream names none.
    pub account_label: Option<String>,
    /// The balance's currency: CNY on SiliconFlow China, USD on the international host.
    pub currency: &'static str,
    pub created_at: Option<String>,
    pub state_changed_at: Option<String>,
    #[serde(skip)]
    sort_last_used: i64,
    #[serde(skip)]
    secret_for_search: String,
}

/// A key as the owner sees it: its database row with the live counters and
/// cooldowns of the running pool laid over it.
fn view(r: KeyRow, live: Option<&PoolKey>, now: i64) -> KeyView {
    let (display, until) = live
        .map(|k| k.display_state(now))
        .unwrap_or((crate::pool::KeyState::parse(&r.state).map(|s| s.as_str()).unwrap_or("active"), None));
    let usage = live.map(|k| k.usage_count.load(Ordering::Relaxed) as i64).unwrap_or(0).max(r.usage_count);
    let last_used =
        live.map(|k| k.last_used.load(Ordering::Relaxed)).unwrap_or(0).max(r.last_used.unwrap_or(0));
    let last_checked =
        live.map(|k| k.last_checked.load(Ordering::Relaxed)).unwrap_or(0).max(r.last_checked.unwrap_or(0));
    KeyView {
        id: r.key_id(),
        key: mask_key(&r.key),
        state: display,
        cooling_until: iso(until),
        balance: live.and_then(|k| k.balance()).or(r.balance),
        usage_count: usage,
        last_used: iso(Some(last_used)),
        last_checked: iso(Some(last_checked)),
        last_error: r.last_error,
        account_id: r.account_id,
        account_name: r.account_name,
        account_label: r.account_label,
        created_at: iso(Some(r.created_at)),
        state_changed_at: iso(r.state_changed_at),
        sort_last_used: last_used,
        currency: crate::upstream::currency(
            live.map(|k| &*k.base_url).or(r.base_url.as_deref()).unwrap_or_default(),
        ),
        secret_for_search: r.key,
    }
}

/// All keys as the owner sees them (for a text search, which needs every row).
pub async fn key_views(state: &AppState) -> Result<Vec<KeyView>, DbError> {
    let vault = state.vault.clone();
    let rows = crate::db::run(&state.db, move |conn| kq::all(conn, &vault)).await?;
    let snapshot = state.pool.snapshot();
    let now = now_ms();
    Ok(rows
        .into_iter()
        .map(|r| {
            let live = snapshot.get(r.key_id()).map(|k| &**k);
            view(r, live, now)
        })
        .collect())
}

/// The keys with these ids, in this order, as the owner sees them.
async fn views_of(state: &AppState, ids: Vec<KeyId>) -> Result<Vec<KeyView>, DbError> {
    let wanted = ids.clone();
    let vault = state.vault.clone();
    let rows = crate::db::run(&state.db, move |conn| kq::by_ids(conn, &vault, &wanted)).await?;
    let mut rows: std::collections::HashMap<KeyId, KeyRow> =
        rows.into_iter().map(|r| (r.key_id(), r)).collect();
    let snapshot = state.pool.snapshot();
    let now = now_ms();
    Ok(ids
        .iter()
        .filter_map(|id| rows.remove(id).map(|r| view(r, snapshot.get(*id).map(|k| &**k), now)))
        .collect())
}

async fn key_json(state: &AppState, id: KeyId) -> Result<Option<KeyView>, DbError> {
    Ok(views_of(state, vec![id]).await?.into_iter().next())
}

/// One page of keys: `(keys, total, page, page_size)`. Without a text search
/// the page is chosen from the running pool's snapshot (live states,
/// balances, counters: no database read) and only its rows are read, so a
/// page costs the same with 100 keys or 100,000.
pub async fn key_page(
    state: &AppState,
    q: &ListQuery,
) -> Result<(Vec<KeyView>, usize, usize, usize), DbError> {
    if q.q.as_deref().is_some_and(|t| !t.trim().is_empty()) {
        return Ok(filter_sort_page(key_views(state).await?, q));
    }
    let snapshot = state.pool.snapshot();
    let now = now_ms();
    let mut keys: Vec<(&PoolKey, &'static str)> =
        snapshot.keys.iter().map(|k| (&**k, k.display_state(now).0)).collect();
    if let Some(s) = q.state.as_deref().filter(|s| !s.is_empty()) {
        keys.retain(|(_, display)| *display == s);
    }
    // (The snapshot is in id order; the sorts are stable, as the search path's.)
    match q.sort.as_deref().unwrap_or("id") {
        "balance" => keys
            .sort_by(|a, b| a.0.balance().unwrap_or(f64::MIN).total_cmp(&b.0.balance().unwrap_or(f64::MIN))),
        "usage_count" | "usage" => keys.sort_by_key(|(k, _)| k.usage_count.load(Ordering::Relaxed)),
        "last_used" => keys.sort_by_key(|(k, _)| k.last_used.load(Ordering::Relaxed)),
        "state" => keys.sort_by_key(|(_, display)| *display),
        _ => {}
    }
    if q.order.as_deref().is_some_and(|o| o.eq_ignore_ascii_case("desc")) {
        keys.reverse();
    }
    let total = keys.len();
    let page_size = q.page_size.unwrap_or(50).clamp(1, 1000);
    let page = q.page.unwrap_or(1).max(1);
    let ids: Vec<KeyId> =
        keys.iter().skip((page - 1).saturating_mul(page_size)).take(page_size).map(|(k, _)| k.id).collect();
    Ok((views_of(state, ids).await?, total, page, page_size))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    pub page: Option<usize>,
    pub page_size: Option<usize>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub q: Option<String>,
    pub state: Option<String>,
}

pub fn filter_sort_page(mut views: Vec<KeyView>, q: &ListQuery) -> (Vec<KeyView>, usize, usize, usize) {
    if let Some(s) = q.state.as_deref().filter(|s| !s.is_empty()) {
        views.retain(|k| k.state == s);
    }
    if let Some(text) = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let needle = text.to_lowercase();
        views.retain(|k| {
            k.secret_for_search.to_lowercase().contains(&needle)
                || k.account_id.as_deref().is_some_and(|a| a.to_lowercase().contains(&needle))
                || k.account_name.as_deref().is_some_and(|a| a.to_lowercase().contains(&needle))
                || k.account_label.as_deref().is_some_and(|a| a.to_lowercase().contains(&needle))
                || k.last_error.as_deref().is_some_and(|a| a.to_lowercase().contains(&needle))
                || k.id.to_string() == needle
        });
    }
    let desc = q.order.as_deref().map(|o| o.eq_ignore_ascii_case("desc")).unwrap_or(false);
    match q.sort.as_deref().unwrap_or("id") {
        "balance" => {
            views.sort_by(|a, b| a.balance.unwrap_or(f64::MIN).total_cmp(&b.balance.unwrap_or(f64::MIN)))
        }
        "usage_count" | "usage" => views.sort_by_key(|k| k.usage_count),
        "last_used" => views.sort_by_key(|k| k.sort_last_used),
        "state" => views.sort_by_key(|k| k.state),
        _ => views.sort_by_key(|k| k.id),
    }
    if desc {
        views.reverse();
    }
    let total = views.len();
    let page_size = q.page_size.unwrap_or(50).clamp(1, 1000);
    let page = q.page.unwrap_or(1).max(1);
    let page_rows = views.into_iter().skip((page - 1).saturating_mul(page_size)).take(page_size).collect();
    (page_rows, total, page, page_size)
}
