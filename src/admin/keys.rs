//! Key management endpoints: import, refresh, list, enable/disable/delete, export.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::FixedOffset;
use maud::html;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::AdminError;
use super::error::PageError;
use super::page::{
    confirm_page, page_session, posted_form, see_other, warnings, without_empty, Confirm, Notice,
};
use super::request::admin_body;
use super::session::{Admin, AdminWithBody, Session};
use super::views::{badge, csrf_field, layout, link_with, page, pager, when, Chrome};
use crate::db::models::KeyRow;
use crate::db::queries::keys as kq;
use crate::db::{iso, now_ms, DbError};
use crate::pool::actor::{
    parse_label, AddKeys, AddResult, AddStatus, CheckSummary, CheckedKey, DeleteInState, KeyCommand,
};
use crate::pool::check::{check_key, checked_in_order, CheckOutcome};
use crate::pool::refresher::{RefreshNow, Running};
use crate::pool::{mask_key, KeyState, PoolKey};
use crate::state::{AppState, Upstream};
use crate::upstream::other_region;

/// Most keys one import takes.
pub const MAX_IMPORT: usize = 10_000;

#[derive(Deserialize)]
#[serde(untagged)]
enum KeysField {
    Text(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct ImportBody {
    keys: KeysField,
    /// The account these keys belong to, for upstreams that name none.
    #[serde(default)]
    account: Option<String>,
}

/// Splits on newlines, commas, semicolons and white space and trims. Repeats
/// are kept: each piece of the input gets its own line in the answer.
pub fn parse_key_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

fn looks_like_key(k: &str) -> bool {
    k.len() >= 8 && k.len() <= 512 && k.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn import(
    who: AdminWithBody,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> Result<HttpResponse, AdminError> {
    // Who asks was settled from the headers before a byte of the body is read.
    let body = admin_body(&req, payload, &state).await?;
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let form = content_type.starts_with("application/x-www-form-urlencoded");
    #[derive(Deserialize)]
    struct Form {
        keys: Option<String>,
        csrf: Option<String>,
        account: Option<String>,
    }
    let parsed_form = form.then(|| serde_urlencoded::from_bytes::<Form>(&body));
    let form_csrf = match &parsed_form {
        Some(Ok(f)) => f.csrf.clone(),
        _ => None,
    };
    who.0.check_csrf(&req, form_csrf.as_deref())?;
    let (text, account) = match parsed_form {
        Some(Ok(Form { keys: Some(k), account, .. })) => (k, account),
        Some(_) => return Err(AdminError::BadRequest("expected a form field `keys`".into())),
        None => match serde_json::from_slice::<ImportBody>(&body) {
            Ok(ImportBody { keys: KeysField::Text(t), account }) => (t, account),
            Ok(ImportBody { keys: KeysField::List(l), account }) => (l.join("\n"), account),
            Err(e) => {
                return Err(AdminError::BadRequest(format!(
                    "expected JSON {{\"keys\": \"sk-a\\nsk-b\"}} or {{\"keys\": [\"sk-a\", \"sk-b\"]}}: {e}"
                )))
            }
        },
    };
    let label =
        parse_label(account.as_deref()).map_err(|e| AdminError::BadRequest(format!("`account`: {e}")))?;
    let candidates = checked_candidates(&text)?;
    Ok(HttpResponse::Ok().json(import_keys(candidates, label, &state, &upstream.client).await))
}

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

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub added: usize,
    pub duplicates: usize,
    pub invalid: usize,
    pub failed: usize,
    pub results: Vec<AddResult>,
}

/// Checks each new key against the upstream (bounded concurrency) and stores
/// it. The answer has one result per piece of the input, in its order.
pub async fn import_keys(
    candidates: Vec<String>,
    label: Option<String>,
    state: &AppState,
    client: &awc::Client,
) -> ImportReport {
    let snapshot = state.pool.snapshot();
    let known: HashSet<&str> = snapshot.keys.iter().map(|k| k.secret.as_str()).collect();
    let mut in_this_import = HashSet::new();
    let mut slots: Vec<Option<AddResult>> = Vec::with_capacity(candidates.len());
    let mut to_check = Vec::new();
    for k in candidates {
        let early = if !in_this_import.insert(k.clone()) {
            Some((AddStatus::Duplicate, "repeated in this import"))
        } else if known.contains(k.as_str()) {
            Some((AddStatus::Duplicate, "already in the pool"))
        } else if !looks_like_key(&k) {
            Some((AddStatus::Invalid, "not a key: expected 8-512 printable characters"))
        } else {
            None
        };
        match early {
            Some((status, why)) => {
                slots.push(Some(AddResult::without_key(mask_key(&k), status, Some(why.into()))))
            }
            None => {
                to_check.push((slots.len(), k));
                slots.push(None);
            }
        }
    }
    let base = state.config.upstream_base_url.clone();
    let timeout = state.config.check_timeout;
    let endpoints = &state.pool.user_info;
    let checked: Vec<(usize, CheckedKey)> = checked_in_order(
        to_check,
        |_| base.clone(),
        state.config.refresh_concurrency,
        |(slot, k)| {
            let base = base.as_str();
            async move {
                let outcome = check_key(client, base, &k, timeout, endpoints).await;
                // Keys belong to one region: a 401 from one official host may be
                // a key of the other. Try it before calling the key dead.
                if let (CheckOutcome::Invalid { .. }, Some(other)) = (&outcome, other_region(base)) {
                    let second = check_key(client, other, &k, timeout, endpoints).await;
                    if matches!(second, CheckOutcome::Valid { .. } | CheckOutcome::Exhausted { .. }) {
                        let key =
                            CheckedKey { secret: k, outcome: second, base_url: Some(other.to_string()) };
                        return (slot, key);
                    }
                }
                (slot, CheckedKey { secret: k, outcome, base_url: None })
            }
        },
    )
    .await;
    if !checked.is_empty() {
        let (places, keys): (Vec<usize>, Vec<CheckedKey>) = checked.into_iter().unzip();
        let masked: Vec<String> = keys.iter().map(|k| mask_key(&k.secret)).collect();
        let stored = match state.pool_actor.send(AddKeys { keys, label }).await {
            Ok(added) => added,
            Err(e) => {
                log::error!("import: pool actor unavailable: {e}");
                Vec::new()
            }
        };
        let mut stored = stored.into_iter();
        for (place, masked) in places.into_iter().zip(masked) {
            slots[place] = Some(stored.next().unwrap_or_else(|| {
                AddResult::without_key(
                    masked,
                    AddStatus::Failed,
                    Some("not stored: the key pool is unavailable".into()),
                )
            }));
        }
    }
    let results: Vec<AddResult> = slots.into_iter().flatten().collect();
    let count = |s: AddStatus| results.iter().filter(|r| r.status == s).count();
    ImportReport {
        added: count(AddStatus::Added),
        duplicates: count(AddStatus::Duplicate),
        invalid: count(AddStatus::Invalid),
        failed: count(AddStatus::Failed),
        results,
    }
}

#[derive(Deserialize)]
pub struct RefreshQuery {
    /// Seconds to wait for the summary (default 30, at most 300); a refresh
    /// still running then answers 202 with its progress and goes on.
    wait: Option<u64>,
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

pub async fn refresh_all(
    _: Admin,
    query: web::Query<RefreshQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let wait = std::time::Duration::from_secs(query.wait.unwrap_or(30).min(300));
    Ok(match refresh_every_key(&state, wait).await {
        RefreshAnswer::Done(summary) => HttpResponse::Ok().json(summary),
        RefreshAnswer::Running(progress) => HttpResponse::Accepted().json(json!({
            "running": progress,
            "message": "the refresh goes on; GET /health shows its progress (auto_refresh.running) and its end (last_run)",
        })),
        RefreshAnswer::Unavailable(e) => return Err(AdminError::Unavailable(e)),
    })
}

pub async fn refresh_one(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = known_id(&path, &state)?;
    let summary = state.refresher.send(RefreshNow(Some(vec![id]))).await?.summary().await;
    Ok(HttpResponse::Ok().json(json!({"id": id, "result": summary, "key": key_json(&state, id).await?})))
}

/// A key of the pool by the id in a path, or 404.
pub fn known_id(path: &str, state: &AppState) -> Result<i64, AdminError> {
    path.parse::<i64>()
        .ok()
        .and_then(|id| state.pool.snapshot().get(id).map(|k| k.id))
        .ok_or_else(|| AdminError::NotFound(format!("no key with id {path:?}")))
}

async fn command(
    path: web::Path<String>,
    state: web::Data<AppState>,
    make: fn(i64) -> KeyCommand,
) -> Result<HttpResponse, AdminError> {
    let id = known_id(&path, &state)?;
    state.pool_actor.send(make(id)).await??;
    Ok(HttpResponse::Ok().json(json!({"id": id, "ok": true, "key": key_json(&state, id).await?})))
}

pub async fn enable(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    command(path, state, KeyCommand::Enable).await
}

pub async fn disable(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    command(path, state, KeyCommand::Disable).await
}

pub async fn delete(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    command(path, state, KeyCommand::Delete).await
}

#[derive(Deserialize)]
pub struct StateQuery {
    state: Option<String>,
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

/// `DELETE /api/keys?state=invalid`: `{"deleted": n, "state": "invalid"}`.
pub async fn delete_many(
    _: Admin,
    query: web::Query<StateQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let n = delete_in_state(&state, query.state.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": n, "state": query.state})))
}

/// `PATCH /api/keys/{id}` with `{"account": "team-a"}` (or `null` / `""` to
/// take the key out): the account of a key whose upstream names none.
pub async fn patch(
    _: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    // JSON only: a session's CSRF token comes in its header (checked by `Admin`).
    let body = admin_body(&req, payload, &state).await?;
    let id = known_id(&path, &state)?;
    let bad = |m: &str| AdminError::BadRequest(m.to_string());
    let account = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(m)) => match m.get("account") {
            Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => return Err(bad("expected {\"account\": \"name\"} or {\"account\": null}")),
        },
        _ => return Err(bad("expected a JSON object such as {\"account\": \"team-a\"}")),
    };
    let label =
        parse_label(account.as_deref()).map_err(|e| AdminError::BadRequest(format!("`account`: {e}")))?;
    state.pool_actor.send(KeyCommand::SetAccount(id, label)).await??;
    Ok(HttpResponse::Ok().json(json!({"id": id, "ok": true, "key": key_json(&state, id).await?})))
}

#[derive(Debug, Serialize, Clone)]
pub struct KeyView {
    pub id: i64,
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
        id: r.id,
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
    let rows = crate::db::run(&state.db, kq::all).await?;
    let snapshot = state.pool.snapshot();
    let now = now_ms();
    Ok(rows
        .into_iter()
        .map(|r| {
            let live = snapshot.get(r.id).map(|k| &**k);
            view(r, live, now)
        })
        .collect())
}

/// The keys with these ids, in this order, as the owner sees them.
async fn views_of(state: &AppState, ids: Vec<i64>) -> Result<Vec<KeyView>, DbError> {
    let wanted = ids.clone();
    let rows = crate::db::run(&state.db, move |conn| kq::by_ids(conn, &wanted)).await?;
    let mut rows: std::collections::HashMap<i64, KeyRow> = rows.into_iter().map(|r| (r.id, r)).collect();
    let snapshot = state.pool.snapshot();
    let now = now_ms();
    Ok(ids
        .iter()
        .filter_map(|id| rows.remove(id).map(|r| view(r, snapshot.get(*id).map(|k| &**k), now)))
        .collect())
}

async fn key_json(state: &AppState, id: i64) -> Result<Option<KeyView>, DbError> {
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
    let ids: Vec<i64> =
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

pub async fn list(
    _: Admin,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let (keys, total, page, page_size) = key_page(&state, &query).await?;
    Ok(HttpResponse::Ok().json(json!({"keys": keys, "total": total, "page": page, "page_size": page_size})))
}

#[derive(Deserialize)]
pub struct ExportQuery {
    all: Option<String>,
}

/// The one place full keys leave the proxy: the owner's export.
pub async fn export(_: Admin, query: web::Query<ExportQuery>, state: web::Data<AppState>) -> HttpResponse {
    let all = matches!(query.all.as_deref(), Some("1" | "true" | "yes"));
    // From the running pool (every key, with its live state): no database read.
    let snapshot = state.pool.snapshot();
    let mut out = String::with_capacity(snapshot.keys.len() * 64);
    for k in snapshot.keys.iter().filter(|k| all || k.state() != KeyState::Invalid) {
        out.push_str(&k.secret);
        out.push('\n');
    }
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"siliconflow-keys.txt\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(out)
}

// ------------------------------------------------------------ the page

/// Why a balance shows as unknown.
const UNKNOWN_BALANCE_HINT: &str = "SiliconFlow does not report this key's balance (its /v1/user/info is gone): the key was validated with /v1/models, and it is marked exhausted when a call answers \"insufficient balance\" (code 30001).";

#[derive(Deserialize, Default)]
pub struct KeysPageQuery {
    page: Option<String>,
    page_size: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    q: Option<String>,
    state: Option<String>,
    notice: Option<String>,
    n: Option<String>,
    /// An import's results to show (post/redirect/get).
    import: Option<String>,
}

/// A local time without its date when that is today's.
fn short_time(local: &str, today: &str) -> String {
    match local.strip_prefix(today) {
        Some(time) if !today.is_empty() => time.trim().to_string(),
        _ => local.to_string(),
    }
}

fn local_iso(iso: &Option<String>, tz: &FixedOffset) -> String {
    let ms = iso
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis());
    when(ms, tz)
}

async fn render_keys(state: &AppState, s: &Session, q: KeysPageQuery) -> Result<HttpResponse, PageError> {
    let import = match q.import.as_deref() {
        Some(t) => imports::load(state, t, &s.csrf).await,
        None => None,
    };
    let tz = state.config.timezone;
    let list = ListQuery {
        page: q.page.as_deref().and_then(|p| p.parse().ok()),
        page_size: q.page_size.as_deref().and_then(|p| p.parse().ok()),
        sort: q.sort.clone(),
        order: q.order.clone(),
        q: q.q.clone(),
        state: q.state.clone(),
    };
    let (rows, total, page_no, page_size) = key_page(state, &list).await?;
    let (known_total, known, unknown) = {
        let snapshot = state.pool.snapshot();
        let live =
            snapshot.keys.iter().filter(|k| !matches!(k.state(), KeyState::Invalid | KeyState::Disabled));
        let (mut sum, mut known, mut unknown) = (0.0, 0usize, 0usize);
        for k in live {
            match k.balance() {
                Some(b) => {
                    sum += b.max(0.0);
                    known += 1
                }
                None => unknown += 1,
            }
        }
        (sum, known, unknown)
    };
    let counts = state.pool.counts(now_ms());
    let today = when(Some(now_ms()), &tz).chars().take(10).collect::<String>();
    let query: Vec<(&str, String)> = vec![
        ("q", q.q.clone().unwrap_or_default()),
        ("state", q.state.clone().unwrap_or_default()),
        ("sort", q.sort.clone().unwrap_or_default()),
        ("order", q.order.clone().unwrap_or_default()),
        ("page_size", q.page_size.clone().unwrap_or_default()),
    ];
    let sort_link = |col: &str| {
        let desc = q.sort.as_deref() == Some(col) && q.order.as_deref() != Some("desc");
        link_with(
            "/admin/keys",
            &query,
            &[
                ("sort", col.to_string()),
                ("order", if desc { "desc".into() } else { "asc".into() }),
                ("page", String::new()),
            ],
        )
    };
    let arrow = |col: &str| match (q.sort.as_deref() == Some(col), q.order.as_deref() == Some("desc")) {
        (true, true) => " ▼",
        (true, false) => " ▲",
        _ => "",
    };
    let csrf = s.csrf.as_str();
    let content = html! {
        h1 { "Keys" }
        @if let Some(i) = import { (i) }
        div.panel {
            form method="post" action="/admin/keys/import" {
                (csrf_field(csrf))
                label for="keys" { strong { "Import keys" } span.muted { " — one per line, or separated by commas or spaces. Each is checked against SiliconFlow." } }
                textarea #keys name="keys" placeholder="sk-...\nsk-..." required {}
                div.toolbar {
                    label { "Account " span.muted { "(optional: keys of one account share its rate limits; only used where SiliconFlow names no account)" }
                        input name="account" maxlength="64" placeholder="e.g. team-a"; }
                    button type="submit" { "Import" }
                }
            }
        }
        div.toolbar {
            form.filters method="get" action="/admin/keys" {
                label { "Search" input name="q" value=[q.q.as_deref()] placeholder="key, account, error"; }
                label { "State"
                    select name="state" {
                        option value="" { "any" }
                        @for st in ["active", "cooling", "exhausted", "invalid", "disabled"] {
                            option value=(st) selected[q.state.as_deref() == Some(st)] { (st) }
                        }
                    }
                }
                @if let Some(sort) = &q.sort { input type="hidden" name="sort" value=(sort); }
                @if let Some(order) = &q.order { input type="hidden" name="order" value=(order); }
                button.secondary type="submit" { "Filter" }
            }
            span.spacer {}
            form.inline method="post" action="/admin/keys/refresh" {
                (csrf_field(csrf))
                button type="submit" { "Refresh all" }
            }
            @if counts.exhausted > 0 {
                form.inline method="post" action="/admin/keys/bulk/recheck-exhausted" {
                    (csrf_field(csrf))
                    button.secondary type="submit" title="check every exhausted key against SiliconFlow now" { "Re-check " (counts.exhausted) " exhausted" }
                }
            }
            @if counts.invalid > 0 {
                a.button.danger href="/admin/keys/bulk/delete-invalid" { "Delete " (counts.invalid) " invalid" }
            }
            a.button.secondary href="/export_keys" { "Export" }
            a.button.secondary href="/export_keys?all=1" title="including invalid keys" { "Export all" }
        }
        p.muted {
            @if known == 0 && unknown > 0 {
                "Balance unknown for the " (unknown) " " (if unknown == 1 { "key" } else { "keys" }) " that can serve (SiliconFlow does not report it)."
            } @else {
                "Known balance of the keys that can serve: " strong { (format!("{known_total:.2}")) } " (" (known) " " (if known == 1 { "key" } else { "keys" }) ")"
                @if unknown > 0 { "; " (unknown) " more with a balance SiliconFlow does not report" }
                "."
            }
        }
        @if let Some(r) = &state.refresh_status.load().running {
            div.banner.info { "A refresh of every key is running: " (r.checked) " of " (r.total) " checked (reload to follow it)." }
        }
        @if rows.iter().any(|k| k.balance.is_none() && k.state != "invalid") {
            p.muted { "Balance \"unknown\": " (UNKNOWN_BALANCE_HINT) " An exhausted key gets one real call as a trial every " (retry_text(state)) "; it serves again when that call succeeds, or when you refresh or enable it." }
        }
        div.scroll { table {
            thead { tr {
                th { a href=(sort_link("id")) { "#" (arrow("id")) } }
                th { "Key" }
                th { a href=(sort_link("state")) { "State" (arrow("state")) } }
                th.num { a href=(sort_link("balance")) { "Balance" (arrow("balance")) } }
                th.num { a href=(sort_link("usage_count")) { "Calls" (arrow("usage_count")) } }
                th { a href=(sort_link("last_used")) { "Last used" (arrow("last_used")) } }
                th { "Last checked" }
                th { "Account" }
                th { "Last error" }
                th { "" }
            } }
            tbody {
                @if rows.is_empty() { tr { td colspan="10" .muted { "No keys" @if total == 0 && q.q.is_none() { " yet: import some above." } } } }
                @for k in &rows {
                    @let reason = match (k.state, &k.cooling_until, &k.last_error) {
                        ("cooling", Some(_), e) => Some(format!("cooling until {}{}", local_iso(&k.cooling_until, &tz), e.as_ref().map(|e| format!(" — {e}")).unwrap_or_default())),
                        ("active", _, _) => None,
                        (_, _, e) => Some(format!("since {}{}", local_iso(&k.state_changed_at, &tz), e.as_ref().map(|e| format!(" — {e}")).unwrap_or_default())),
                    };
                    tr {
                        td.num { (k.id) }
                        td.mono.nowrap { (k.key) }
                        td { (badge(k.state, reason.clone()))
                            @if k.state == "cooling" { span.muted { " until " (short_time(&local_iso(&k.cooling_until, &tz), &today)) } } }
                        td.num {
                            @if let Some(b) = k.balance { (crate::upstream::money(k.currency, b)) }
                            @else if k.state == "invalid" { span.muted { "—" } }
                            @else { span.muted title=(UNKNOWN_BALANCE_HINT) { "unknown" } }
                        }
                        td.num { (k.usage_count) }
                        td.nowrap { (local_iso(&k.last_used, &tz)) }
                        td.nowrap { (local_iso(&k.last_checked, &tz)) }
                        td.mono {
                            @if let Some(named) = k.account_name.clone().or(k.account_id.clone()) { (named) }
                            @else {
                                form.account method="post" action=(format!("/admin/keys/{}/account", k.id)) title="Keys with the same account share its rate limits and resources" {
                                    (csrf_field(csrf))
                                    input.small name="account" maxlength="64" size="8" value=[k.account_label.as_deref()] placeholder="account" aria-label="account";
                                    button.small.secondary type="submit" { "Set" }
                                }
                            }
                        }
                        td.err title=[k.last_error.clone()] { (k.last_error.clone().unwrap_or_default()) }
                        td { div.actions {
                            // What makes sense in each state: a disabled key is
                            // enabled, an exhausted one enabled or re-checked, an
                            // invalid one re-checked or deleted (not disabled).
                            form.inline method="post" action=(format!("/admin/keys/{}/refresh", k.id)) { (csrf_field(csrf)) button.small.secondary type="submit" { "Re-check" } }
                            @if matches!(k.state, "disabled" | "exhausted") {
                                form.inline method="post" action=(format!("/admin/keys/{}/enable", k.id)) { (csrf_field(csrf)) button.small.secondary type="submit" { "Enable" } }
                            }
                            @if matches!(k.state, "active" | "cooling" | "exhausted") {
                                form.inline method="post" action=(format!("/admin/keys/{}/disable", k.id)) { (csrf_field(csrf)) button.small.secondary type="submit" { "Disable" } }
                            }
                            a.button.small.secondary href=(format!("/admin/keys/{}/delete", k.id)) { "Delete" }
                        } }
                    }
                }
            }
        } }
        (pager("/admin/keys", &query, page_no, page_size, total))
    };
    let chrome = Chrome {
        title: "Keys",
        nav: "keys",
        csrf: Some(csrf),
        warnings: warnings(state),
        notice: Notice::parse(q.notice.as_deref(), q.n.as_deref()).map(|n| n.text()),
    };
    Ok(page(StatusCode::OK, layout(chrome, content)))
}

fn retry_text(state: &AppState) -> String {
    match state.config.exhausted_retry_interval {
        None => "— never (EXHAUSTED_RETRY_INTERVAL=0)".into(),
        Some(d) if d.as_secs() % 3600 == 0 => format!("{} h (EXHAUSTED_RETRY_INTERVAL)", d.as_secs() / 3600),
        Some(d) if d.as_secs() % 60 == 0 => format!("{} min (EXHAUSTED_RETRY_INTERVAL)", d.as_secs() / 60),
        Some(d) => format!("{} s (EXHAUSTED_RETRY_INTERVAL)", d.as_secs()),
    }
}

pub async fn keys_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<KeysPageQuery>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    if let Some(clean) = without_empty(&req) {
        return Ok(see_other(&clean));
    }
    render_keys(&state, &s, query.into_inner()).await
}

/// The import form's fields (its CSRF token is checked by `posted_form`).
#[derive(Deserialize, Default)]
struct ImportForm {
    keys: Option<String>,
    account: Option<String>,
}

/// Imports' results kept for the page the browser is sent to after the
/// import (post/redirect/get: a reload does not import again), for the
/// session that made them, for ten minutes. Kept in the database: with
/// several instances, the redirected request may reach another one.
mod imports {
    use maud::{html, Markup, PreEscaped};

    use super::ImportReport;
    use crate::db::now_ms;
    use crate::db::queries::import_reports_q;
    use crate::state::AppState;

    const TTL_MS: i64 = 600_000;

    /// Keeps a report for the session with this CSRF token; the token to show it.
    pub async fn keep(
        state: &AppState,
        report: &ImportReport,
        session_csrf: &str,
    ) -> Result<String, crate::db::DbError> {
        let token = super::random_token();
        let (t, owner, html) = (token.clone(), session_csrf.to_string(), render(report).into_string());
        crate::db::run(&state.db, move |c| {
            let now = now_ms();
            import_reports_q::prune(c, now - TTL_MS)?;
            import_reports_q::insert(c, &t, &owner, now, &html)
        })
        .await?;
        Ok(token)
    }

    /// The kept report, for the session that made it, while it is fresh.
    pub async fn load(state: &AppState, token: &str, session_csrf: &str) -> Option<Markup> {
        let (t, owner) = (token.to_string(), session_csrf.to_string());
        let found =
            crate::db::run(&state.db, move |c| import_reports_q::find(c, &t, &owner, now_ms() - TTL_MS))
                .await;
        match found {
            // Written by `render` below: already escaped.
            Ok(html) => html.map(PreEscaped),
            Err(e) => {
                log::error!("admin: cannot read an import's results: {e}");
                None
            }
        }
    }

    fn render(r: &ImportReport) -> Markup {
        html! {
            div.banner.info role="status" {
                strong { "Import: " (r.added) " added, " (r.duplicates) " duplicate" @if r.duplicates != 1 { "s" } ", " (r.invalid) " invalid, " (r.failed) " not checked (stored; the next refresh will check them)." }
                ul.results {
                    @for k in &r.results {
                        li { span.mono { (k.key) } " — " (format!("{:?}", k.status).to_lowercase())
                            @if let Some(m) = &k.message { span.muted { " (" (m) ")" } } }
                    }
                }
            }
        }
    }
}

fn random_token() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

pub async fn keys_import(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> Result<HttpResponse, PageError> {
    let (s, body) = posted_form(&req, payload, &state).await?;
    let form = serde_urlencoded::from_bytes::<ImportForm>(&body).unwrap_or_default();
    let keys = checked_candidates(form.keys.as_deref().unwrap_or(""))?;
    let label =
        parse_label(form.account.as_deref()).map_err(|e| AdminError::BadRequest(format!("Account: {e}")))?;
    let report = import_keys(keys, label, &state, &upstream.client).await;
    let token = imports::keep(&state, &report, &s.csrf).await.map_err(AdminError::from)?;
    Ok(see_other(&link_with("/admin/keys", &[], &[("import", token)])))
}

pub async fn keys_refresh(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    posted_form(&req, payload, &state).await?;
    let notice = match refresh_every_key(&state, std::time::Duration::from_secs(20)).await {
        RefreshAnswer::Done(r) => Notice::Refreshed(
            r.checked as u64,
            r.active as u64,
            r.exhausted as u64,
            r.invalid as u64,
            r.unchanged as u64,
        ),
        RefreshAnswer::Running(p) => {
            let p = p.unwrap_or(Running { started: 0, manual: true, total: 0, checked: 0 });
            Notice::RefreshRunning(p.checked as u64, p.total as u64)
        }
        RefreshAnswer::Unavailable(e) => return Err(AdminError::Unavailable(e).into()),
    };
    Ok(see_other(&notice.link("/admin/keys")))
}

pub async fn key_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (_, body) = posted_form(&req, payload, &state).await?;
    let (id, action) = path.into_inner();
    let id = known_id(&id, &state)?;
    let key = id as u64;
    let notice = match action.as_str() {
        "refresh" => {
            let summary = state.refresher.send(RefreshNow(Some(vec![id]))).await?.summary().await;
            match summary.unchanged {
                0 => Notice::KeyRefreshed(key),
                _ => Notice::KeyUnchanged(key),
            }
        }
        "enable" => {
            state.pool_actor.send(KeyCommand::Enable(id)).await??;
            Notice::KeyEnabled(key)
        }
        "disable" => {
            state.pool_actor.send(KeyCommand::Disable(id)).await??;
            Notice::KeyDisabled(key)
        }
        "delete" => {
            state.pool_actor.send(KeyCommand::Delete(id)).await??;
            Notice::KeyDeleted(key)
        }
        "account" => {
            #[derive(Deserialize, Default)]
            struct AccountForm {
                account: Option<String>,
            }
            let form = serde_urlencoded::from_bytes::<AccountForm>(&body).unwrap_or_default();
            let label = parse_label(form.account.as_deref())
                .map_err(|e| AdminError::BadRequest(format!("Key #{id}: {e}")))?;
            state.pool_actor.send(KeyCommand::SetAccount(id, label)).await??;
            Notice::KeyAccountSet(key)
        }
        other => return Err(AdminError::NotFound(format!("no key action {other:?}")).into()),
    };
    Ok(see_other(&notice.link("/admin/keys")))
}

pub async fn key_delete_confirm(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let id = known_id(&path, &state)?;
    let snapshot = state.pool.snapshot();
    let Some(key) = snapshot.get(id) else {
        return Err(AdminError::NotFound(format!("no key with id {id}")).into());
    };
    let message = html! {
        "Delete " span.mono { (key.masked) } " from the pool? Its request log rows stay. Files, batches, videos and voices it created can then only be reached through another key of the same account."
    };
    let confirm = Confirm {
        title: "Delete key",
        nav: "keys",
        heading: format!("Delete key #{}?", key.id),
        action: format!("/admin/keys/{}/delete", key.id),
        button: "Delete",
        cancel: "/admin/keys",
    };
    Ok(confirm_page(&s, confirm, message))
}

/// "Delete all invalid": asked first.
pub async fn delete_invalid_confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let n = state.pool.counts(now_ms()).invalid;
    let message = html! {
        "Delete the " (n) " invalid " (if n == 1 { "key" } else { "keys" }) " (SiliconFlow answered 401 for them) from the pool? Their request log rows stay. Export them first (Export all) if you may want them back."
    };
    let confirm = Confirm {
        title: "Delete invalid keys",
        nav: "keys",
        heading: format!("Delete {n} invalid keys?"),
        action: "/admin/keys/bulk/delete-invalid".into(),
        button: "Delete",
        cancel: "/admin/keys",
    };
    Ok(confirm_page(&s, confirm, message))
}

pub async fn delete_invalid(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    posted_form(&req, payload, &state).await?;
    let n = delete_in_state(&state, Some("invalid")).await?;
    Ok(see_other(&Notice::BulkDeleted(n as u64, 0).link("/admin/keys")))
}

/// "Re-check all exhausted": every exhausted key checked now (as the owner's
/// refresh: a valid key of unknown balance is given back its place).
pub async fn recheck_exhausted(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    posted_form(&req, payload, &state).await?;
    let ids: Vec<i64> = state
        .pool
        .snapshot()
        .keys
        .iter()
        .filter(|k| k.state() == KeyState::Exhausted)
        .map(|k| k.id)
        .collect();
    let n = ids.len() as u64;
    let summary = state.refresher.send(RefreshNow(Some(ids))).await?.summary().await;
    let active = summary.active as u64;
    Ok(see_other(&Notice::ExhaustedRechecked(n, active, summary.exhausted as u64).link("/admin/keys")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_split_trim_and_dedupe() {
        // Repeats stay: the import answers each piece of its input.
        assert_eq!(parse_key_list(" sk-a\nsk-b, sk-c  sk-a\r\n\n"), vec!["sk-a", "sk-b", "sk-c", "sk-a"]);
        assert!(parse_key_list(" \n ,").is_empty());
        assert!(looks_like_key("sk-abcdefgh"));
        assert!(!looks_like_key("short"));
        assert!(!looks_like_key("sk-abc\u{7}defgh"));
    }
}
