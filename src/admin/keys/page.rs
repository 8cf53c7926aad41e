//! `/admin/keys`: the keys page, its import form (post/redirect/get) and its
//! buttons.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::FixedOffset;
use maud::html;
use serde::Deserialize;

use super::{
    checked_candidates, delete_in_state, import_keys, key_page, known_id, refresh_every_key, ListQuery,
    RefreshAnswer,
};
use crate::admin::error::{AdminError, PageError};
use crate::admin::page::{
    confirm_page, page_session, posted_form, see_other, warnings, without_empty, Confirm, Notice,
};
use crate::admin::session::Session;
use crate::admin::views::{badge, csrf_field, layout, link_with, page, pager, when, Chrome};
use crate::db::now_ms;
use crate::pool::refresher::{RefreshNow, Running};
use crate::pool::{parse_label, KeyCommand, KeyId, KeyState};
use crate::state::{AppState, Upstream};

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

    use crate::db::now_ms;
    use crate::db::queries::import_reports;
    use crate::pool::import::ImportReport;
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
            import_reports::prune(c, now - TTL_MS)?;
            import_reports::insert(c, &t, &owner, now, &html)
        })
        .await?;
        Ok(token)
    }

    /// The kept report, for the session that made it, while it is fresh.
    pub async fn load(state: &AppState, token: &str, session_csrf: &str) -> Option<Markup> {
        let (t, owner) = (token.to_string(), session_csrf.to_string());
        let found =
            crate::db::run(&state.db, move |c| import_reports::find(c, &t, &owner, now_ms() - TTL_MS)).await;
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
    let key = id.0 as u64;
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
    let ids: Vec<KeyId> = state
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
