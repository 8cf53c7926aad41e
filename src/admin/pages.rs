//! The admin web UI: login, dashboard, keys, logs. Forms work without
//! JavaScript; every state-changing form carries the session's CSRF token.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::FixedOffset;
use maud::{html, Markup};
use serde::Deserialize;

use super::keys::{
    import_keys, key_page, parse_key_list, refresh_every_key, ListQuery, RefreshAnswer, MAX_IMPORT,
};
use super::logs::{filter_from, LogQuery};
use super::request::{admin_body, read_body, LOGIN_BODY_BYTES};
use super::session::{self, client_ip, csrf_ok, Session};
use super::stats;
use super::views::charts::{bar_chart, compact, hbar_chart, BarSeries};
use super::views::{badge, card, csrf_field, layout, link_with, page, pager, when, Chrome, CSS};
use crate::credentials::Verified;
use crate::db::queries::logs as lq;
use crate::pool::actor::{parse_label, KeyCommand};
use crate::pool::refresher::RefreshNow;
use crate::state::{AppState, Upstream};

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", location)).finish()
}

fn with_notice(path: &str, notice: &str) -> String {
    link_with(path, &[], &[("notice", notice.to_string())])
}

pub async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(CSS)
}

/// The session, or a redirect to the login page.
async fn page_session(req: &HttpRequest, state: &AppState) -> Result<Session, HttpResponse> {
    session::current(state, req).await.ok_or_else(|| see_other("/"))
}

fn forbidden_page() -> HttpResponse {
    let body = layout(
        Chrome { title: "Forbidden", nav: "", csrf: None, warnings: vec![], notice: None },
        html! { div.banner.error { "This form has expired or did not come from this site (CSRF check failed). Go back, reload the page and try again." } p { a href="/admin" { "Back to the dashboard" } } },
    );
    page(StatusCode::FORBIDDEN, body)
}

/// A posted form: the session (from the cookie, before a byte of the body
/// is read), then the body (bounded and timed), then its CSRF token checked.
async fn posted_form(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(Session, web::Bytes), HttpResponse> {
    let s = page_session(req, state).await?;
    let body = admin_body(req, payload, state).await?;
    let form = serde_urlencoded::from_bytes::<CsrfForm>(&body).unwrap_or_default();
    check_csrf(&s, form.csrf.as_deref())?;
    Ok((s, body))
}

/// Checks a posted form's CSRF token against the session.
fn check_csrf(session: &Session, given: Option<&str>) -> Result<(), HttpResponse> {
    if csrf_ok(&session.csrf, given) {
        Ok(())
    } else {
        Err(forbidden_page())
    }
}

fn warnings(state: &AppState) -> Vec<String> {
    let mut w = Vec::new();
    if state.config.is_open() {
        w.push("API_KEY is not set: this proxy is open, and anyone who can reach it can spend your keys' balance. Set API_KEY to require a client key.".into());
    }
    if state.admin.generated {
        w.push("You are using the admin password generated at first start. Set ADMIN_PASSWORD to one of your own.".into());
    }
    w
}

// ---------------------------------------------------------------- login

fn login_page(error: Option<&str>, status: StatusCode, open: bool) -> HttpResponse {
    let body = layout(
        Chrome { title: "Log in", nav: "", csrf: None, warnings: vec![], notice: None },
        html! {
            form.login method="post" action="/login" {
                h1 { "siliconflow-proxy" }
                p.muted { "Log in to manage the key pool." }
                @if let Some(e) = error { div.banner.error role="alert" { (e) } }
                @if open { div.banner.warn { "API_KEY is not set: the proxy is open." } }
                label for="username" { "Username" }
                input #username name="username" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
        },
    );
    page(status, body)
}

pub async fn root(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if session::current(&state, &req).await.is_some() {
        return see_other("/admin");
    }
    login_page(None, StatusCode::OK, state.config.is_open())
}

#[derive(Deserialize)]
struct LoginForm {
    username: Option<String>,
    password: Option<String>,
}

fn retry_after(mut r: HttpResponse, wait: u64) -> HttpResponse {
    if let Ok(v) = wait.to_string().parse() {
        r.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
    }
    r
}

pub async fn login(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let ip = client_ip(&req, &state);
    // The place in the throttle is taken before anything else, so guesses
    // sent at once cannot all pass a limit counted only after their checks.
    let attempt = match state.login_throttle.begin(ip) {
        Ok(a) => a,
        Err(wait) => {
            let r = login_page(
                Some(&format!("Too many failed logins from your address. Try again in {wait} s.")),
                StatusCode::TOO_MANY_REQUESTS,
                false,
            );
            return retry_after(r, wait);
        }
    };
    let body = match read_body(payload, LOGIN_BODY_BYTES, state.config.body_read_timeout).await {
        Ok(b) => b,
        Err(e) => return e.response(&req),
    };
    let form = serde_urlencoded::from_bytes::<LoginForm>(&body).ok();
    let (user, pass) = match form {
        Some(LoginForm { username: Some(u), password: Some(p) }) => (u, p),
        _ => return login_page(Some("Enter a username and a password."), StatusCode::BAD_REQUEST, false),
    };
    let user_for_log = user.chars().take(64).collect::<String>();
    match state.admin.verify_off_thread(user, pass).await {
        Verified::Yes => attempt.succeed(),
        Verified::Busy => {
            let r = login_page(
                Some("Too many logins are being checked right now. Try again in a moment."),
                StatusCode::TOO_MANY_REQUESTS,
                false,
            );
            return retry_after(r, 1);
        }
        Verified::No => {
            attempt.fail();
            // Never the password; the username only as typed, cut short.
            log::warn!("admin: failed login for {user_for_log:?} from {ip}");
            return login_page(Some("Wrong username or password."), StatusCode::UNAUTHORIZED, false);
        }
    }
    match session::create(&state, &req).await {
        Ok(cookie) => {
            log::info!("admin: {user_for_log:?} logged in from {ip}");
            HttpResponse::SeeOther().insert_header(("Location", "/admin")).cookie(cookie).finish()
        }
        Err(e) => {
            log::error!("admin: cannot create a session: {e}");
            login_page(
                Some("The database is unavailable; try again."),
                StatusCode::SERVICE_UNAVAILABLE,
                false,
            )
        }
    }
}

#[derive(Deserialize, Default)]
struct CsrfForm {
    csrf: Option<String>,
}

/// `GET /logout`: a page with the button (a GET changes nothing).
pub async fn logout_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = match page_session(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = layout(
        Chrome { title: "Log out", nav: "", csrf: Some(&s.csrf), warnings: vec![], notice: None },
        html! {
            h1 { "Log out?" }
            form method="post" action="/logout" { (csrf_field(&s.csrf)) button type="submit" { "Log out" } }
        },
    );
    page(StatusCode::OK, body)
}

/// `POST /logout` with the session's CSRF token: ends the session for good.
pub async fn logout(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    if let Err(r) = posted_form(&req, payload, &state).await {
        return r;
    }
    let cookie = session::destroy(&state, &req).await;
    HttpResponse::SeeOther().insert_header(("Location", "/")).cookie(cookie).finish()
}

// ------------------------------------------------------------ dashboard

pub async fn dashboard(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = match page_session(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (o, day, month) = match (
        stats::overview(&state).await,
        stats::daily_series(&state).await,
        stats::monthly_series(&state).await,
    ) {
        (Ok(o), Ok(d), Ok(m)) => (o, d, m),
        _ => return page(StatusCode::SERVICE_UNAVAILABLE, html! { p { "The database is unavailable." } }),
    };
    let k = &o.keys;
    let content = html! {
        h1 { "Dashboard" }
        div.cards {
            (card("Keys", o.key_count.to_string(), Some(format!("{} active · {} cooling · {} exhausted · {} invalid · {} disabled", k.active, k.cooling, k.exhausted, k.invalid, k.disabled))))
            (balance_card(&o))
            (card("Calls today", compact(o.calls_today), Some(format!("{} tokens", compact(o.tokens_today)))))
            (card("Calls this month", compact(o.calls_month), Some(format!("{} tokens", compact(o.tokens_month)))))
            (card("Success rate", format!("{:.1}%", o.success_rate * 100.0), Some(format!("{} errors this month", o.errors_month))))
            (card("Mean latency", format!("{:.0} ms", o.mean_latency_ms), Some("this month".into())))
        }
        div.charts {
            (bar_chart("Calls by hour, today", "calls", &day.labels, &[BarSeries { name: "calls", values: &day.calls, class: "bar1" }]))
            (bar_chart("Tokens by hour, today", "tokens", &day.labels, &[
                BarSeries { name: "input", values: &day.input_tokens, class: "bar1" },
                BarSeries { name: "output", values: &day.output_tokens, class: "bar2" },
            ]))
            (bar_chart("Calls by day, this month", "calls", &month.labels, &[BarSeries { name: "calls", values: &month.calls, class: "bar1" }]))
            (bar_chart("Tokens by day, this month", "tokens", &month.labels, &[
                BarSeries { name: "input", values: &month.input_tokens, class: "bar1" },
                BarSeries { name: "output", values: &month.output_tokens, class: "bar2" },
            ]))
            (hbar_chart("Tokens by model, this month (top 10)", "tokens",
                &month.model_labels.iter().cloned().zip(month.model_tokens.iter().copied()).collect::<Vec<_>>()))
            (hbar_chart("Calls by key, this month", "calls",
                &o.calls_by_key.iter().take(15).map(|c| (c.key.clone(), c.calls)).collect::<Vec<_>>()))
        }
        p.muted { "Times in " (o.timezone) " (TIMEZONE). All-time: " (compact(o.total_calls)) " calls, " (compact(o.total_tokens)) " tokens." }
    };
    let chrome = Chrome {
        title: "Dashboard",
        nav: "dashboard",
        csrf: Some(&s.csrf),
        warnings: warnings(&state),
        notice: None,
    };
    page(StatusCode::OK, layout(chrome, content))
}

/// The pool's balance: what is known, and how much is not.
fn balance_card(o: &stats::Overview) -> Markup {
    let (known, unknown) = (o.balance_known_accounts, o.balance_unknown_accounts);
    match o.total_balance {
        None if unknown == 0 => card("Total balance", "—".into(), Some("no usable key".into())),
        None => card(
            "Total balance",
            "unknown".into(),
            Some(if unknown == 1 {
                "SiliconFlow does not report this account's balance; exhaustion is learned from calls".into()
            } else {
                format!("SiliconFlow does not report balances of these {unknown} accounts; exhaustion is learned from calls")
            }),
        ),
        Some(t) if unknown == 0 => {
            card("Total balance", format!("¥{t:.2}"), Some("each account counted once".into()))
        }
        Some(t) => card(
            "Known balance",
            format!("¥{t:.2}"),
            Some(format!("{known} of {} accounts; {unknown} unknown (not counted)", known + unknown)),
        ),
    }
}

// ----------------------------------------------------------------- keys

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
}

fn local_iso(iso: &Option<String>, tz: &FixedOffset) -> String {
    let ms = iso
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis());
    when(ms, tz)
}

async fn render_keys(
    state: &AppState,
    s: &Session,
    q: KeysPageQuery,
    import: Option<Markup>,
) -> HttpResponse {
    let tz = state.config.timezone;
    let list = ListQuery {
        page: q.page.as_deref().and_then(|p| p.parse().ok()),
        page_size: q.page_size.as_deref().and_then(|p| p.parse().ok()),
        sort: q.sort.clone(),
        order: q.order.clone(),
        q: q.q.clone(),
        state: q.state.clone(),
    };
    let (rows, total, page_no, page_size) = match key_page(state, &list).await {
        Ok(v) => v,
        Err(e) => {
            return page(StatusCode::SERVICE_UNAVAILABLE, html! { p { "The database is unavailable: " (e) } })
        }
    };
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
            a.button.secondary href="/export_keys" { "Export" }
            a.button.secondary href="/export_keys?all=1" title="including invalid keys" { "Export all" }
        }
        @if let Some(r) = &state.refresh_status.load().running {
            div.banner.info { "A refresh of every key is running: " (r.checked) " of " (r.total) " checked (reload to follow it)." }
        }
        @if rows.iter().any(|k| k.balance.is_none() && k.state != "invalid") {
            p.muted { "Balance \"unknown\": " (UNKNOWN_BALANCE_HINT) " An exhausted key gets one real call as a trial every " (retry_text(state)) "; it serves again when that call succeeds, or when you refresh or enable it." }
        }
        table {
            thead { tr {
                th { a href=(sort_link("id")) { "#" } }
                th { "Key" }
                th { a href=(sort_link("state")) { "State" } }
                th.num { a href=(sort_link("balance")) { "Balance" } }
                th.num { a href=(sort_link("usage_count")) { "Calls" } }
                th { a href=(sort_link("last_used")) { "Last used" } }
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
                        td.mono { (k.key) }
                        td { (badge(k.state, reason.clone()))
                            @if k.state == "cooling" { div.muted { "until " (local_iso(&k.cooling_until, &tz)) } } }
                        td.num {
                            @if let Some(b) = k.balance { (format!("{b:.2}")) }
                            @else if k.state == "invalid" { span.muted { "—" } }
                            @else { span.muted title=(UNKNOWN_BALANCE_HINT) { "unknown" } }
                        }
                        td.num { (k.usage_count) }
                        td { (local_iso(&k.last_used, &tz)) }
                        td { (local_iso(&k.last_checked, &tz)) }
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
                            form.inline method="post" action=(format!("/admin/keys/{}/refresh", k.id)) { (csrf_field(csrf)) button.small.secondary type="submit" { "Refresh" } }
                            @if k.state == "disabled" {
                                form.inline method="post" action=(format!("/admin/keys/{}/enable", k.id)) { (csrf_field(csrf)) button.small.secondary type="submit" { "Enable" } }
                            } @else {
                                form.inline method="post" action=(format!("/admin/keys/{}/disable", k.id)) { (csrf_field(csrf)) button.small.secondary type="submit" { "Disable" } }
                            }
                            a.button.small.secondary href=(format!("/admin/keys/{}/delete", k.id)) { "Delete" }
                        } }
                    }
                }
            }
        }
        (pager("/admin/keys", &query, page_no, page_size, total))
    };
    let chrome = Chrome {
        title: "Keys",
        nav: "keys",
        csrf: Some(csrf),
        warnings: warnings(state),
        notice: q.notice.clone(),
    };
    page(StatusCode::OK, layout(chrome, content))
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
) -> HttpResponse {
    match page_session(&req, &state).await {
        Ok(s) => render_keys(&state, &s, query.into_inner(), None).await,
        Err(r) => r,
    }
}

/// The import form's fields (its CSRF token is checked by `posted_form`).
#[derive(Deserialize, Default)]
struct ImportForm {
    keys: Option<String>,
    account: Option<String>,
}

pub async fn keys_import(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    let (s, body) = match posted_form(&req, payload, &state).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let form = serde_urlencoded::from_bytes::<ImportForm>(&body).unwrap_or_default();
    let keys = parse_key_list(form.keys.as_deref().unwrap_or(""));
    let label = parse_label(form.account.as_deref());
    let summary = if keys.is_empty() {
        html! { div.banner.error { "No keys given." } }
    } else if keys.len() > MAX_IMPORT {
        html! { div.banner.error { "At most " (MAX_IMPORT) " keys per import." } }
    } else if let Err(e) = &label {
        html! { div.banner.error { "Account: " (e) } }
    } else {
        let r = import_keys(keys, label.unwrap_or_default(), &state, &upstream.client).await;
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
    };
    render_keys(&state, &s, KeysPageQuery::default(), Some(summary)).await
}

pub async fn keys_refresh(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = posted_form(&req, payload, &state).await {
        return r;
    }
    let notice = match refresh_every_key(&state, std::time::Duration::from_secs(20)).await {
        RefreshAnswer::Done(r) => format!(
            "Refreshed {} keys: {} active, {} exhausted, {} invalid, {} unchanged (the check failed for a passing reason).",
            r.checked, r.active, r.exhausted, r.invalid, r.unchanged
        ),
        RefreshAnswer::Running(p) => match p {
            Some(p) => format!("The refresh goes on in the background: {} of {} keys checked so far.", p.checked, p.total),
            None => "The refresh goes on in the background.".to_string(),
        },
        RefreshAnswer::Unavailable(e) => format!("Refresh failed: {e}"),
    };
    see_other(&with_notice("/admin/keys", &notice))
}

pub async fn key_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let body = match posted_form(&req, payload, &state).await {
        Ok((_, body)) => body,
        Err(r) => return r,
    };
    let (id, action) = path.into_inner();
    let Some(id) = id.parse::<i64>().ok().filter(|id| state.pool.snapshot().get(*id).is_some()) else {
        return see_other(&with_notice("/admin/keys", "No such key."));
    };
    let notice = match action.as_str() {
        "refresh" => match state.refresher.send(RefreshNow(Some(vec![id]))).await {
            Ok(started) => match started.summary().await.unchanged {
                0 => format!("Key #{id} refreshed."),
                _ => format!("Key #{id}: the check failed for a passing reason; the key was left as it was."),
            },
            Err(e) => format!("Refresh failed: {e}"),
        },
        "enable" | "disable" | "delete" | "account" => {
            #[derive(Deserialize, Default)]
            struct AccountForm {
                account: Option<String>,
            }
            let cmd = match action.as_str() {
                "enable" => KeyCommand::Enable(id),
                "disable" => KeyCommand::Disable(id),
                "account" => {
                    let form = serde_urlencoded::from_bytes::<AccountForm>(&body).unwrap_or_default();
                    match parse_label(form.account.as_deref()) {
                        Ok(label) => KeyCommand::SetAccount(id, label),
                        Err(e) => return see_other(&with_notice("/admin/keys", &format!("Key #{id}: {e}"))),
                    }
                }
                _ => KeyCommand::Delete(id),
            };
            let done = match action.as_str() {
                "account" => "account set".to_string(),
                a => format!("{a}d"),
            };
            match state.pool_actor.send(cmd).await {
                Ok(Ok(())) => format!("Key #{id}: {done}."),
                Ok(Err(e)) => e,
                Err(e) => format!("Failed: {e}"),
            }
        }
        _ => "Unknown action.".into(),
    };
    see_other(&with_notice("/admin/keys", &notice))
}

pub async fn key_delete_confirm(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let s = match page_session(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let snapshot = state.pool.snapshot();
    let Some(key) = path.parse::<i64>().ok().and_then(|id| snapshot.get(id)) else {
        return see_other(&with_notice("/admin/keys", "No such key."));
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
    confirm_page(&s, confirm, message)
}

/// A confirmation page: a question, one POST button (with the CSRF token), Cancel.
struct Confirm<'a> {
    title: &'a str,
    nav: &'a str,
    heading: String,
    action: String,
    button: &'a str,
    cancel: &'a str,
}

fn confirm_page(s: &Session, c: Confirm, message: Markup) -> HttpResponse {
    let content = html! {
        h1 { (c.heading) }
        div.panel {
            p { (message) }
            div.toolbar {
                form.inline method="post" action=(c.action) {
                    (csrf_field(&s.csrf))
                    button.danger type="submit" { (c.button) }
                }
                a.button.secondary href=(c.cancel) { "Cancel" }
            }
        }
    };
    let chrome = Chrome { title: c.title, nav: c.nav, csrf: Some(&s.csrf), warnings: vec![], notice: None };
    page(StatusCode::OK, layout(chrome, content))
}

// ----------------------------------------------------------------- logs

#[derive(Deserialize, Default)]
pub struct LogsPageQuery {
    #[serde(flatten)]
    filter: LogQuery,
    notice: Option<String>,
}

fn log_query_pairs(q: &LogQuery) -> Vec<(&'static str, String)> {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    vec![
        ("model", v(&q.model)),
        ("key", v(&q.key)),
        ("status", v(&q.status)),
        ("endpoint", v(&q.endpoint)),
        ("since", v(&q.since)),
        ("until", v(&q.until)),
        ("page_size", q.page_size.clone().unwrap_or_default()),
    ]
}

pub async fn logs_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LogsPageQuery>,
) -> HttpResponse {
    let s = match page_session(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let LogsPageQuery { filter: q, notice } = query.into_inner();
    let tz = state.config.timezone;
    let (filter, filter_error) = match filter_from(&q, &tz) {
        Ok(f) => (f, None),
        Err(e) => (Default::default(), Some(e)),
    };
    let (page_no, page_size) = (q.page(), q.page_size());
    let result = crate::db::run(&state.db, move |conn| {
        lq::page(conn, &filter, (page_no - 1).saturating_mul(page_size), page_size)
    })
    .await;
    let (rows, total) = match result {
        Ok(r) => r,
        _ => return page(StatusCode::SERVICE_UNAVAILABLE, html! { p { "The database is unavailable." } }),
    };
    let pairs = log_query_pairs(&q);
    let csv = link_with("/admin/logs.csv", &pairs, &[]);
    let content = html! {
        h1 { "Request log" }
        @if let Some(e) = filter_error { div.banner.error { (e) } }
        div.toolbar {
            form.filters method="get" action="/admin/logs" {
                label { "Model" input name="model" value=[q.model.as_deref()] placeholder="any part"; }
                label { "Key" input name="key" value=[q.key.as_deref()] placeholder="sk-abcd"; }
                label { "Status" input name="status" value=[q.status.as_deref()] size="4" placeholder="200"; }
                label { "Endpoint" input name="endpoint" value=[q.endpoint.as_deref()] placeholder="/v1/chat/completions"; }
                label { "Since" input type="datetime-local" name="since" value=[q.since.as_deref()]; }
                label { "Until" input type="datetime-local" name="until" value=[q.until.as_deref()]; }
                button.secondary type="submit" { "Filter" }
                a href="/admin/logs" { "Reset" }
            }
            span.spacer {}
            a.button.secondary href=(csv) { "Export CSV" }
            a.button.secondary href="/admin/logs/clear" { "Clear logs…" }
        }
        table {
            thead { tr {
                th { "Time (" (tz.to_string()) ")" } th { "Key" } th { "Model" } th { "Endpoint" } th { "Status" }
                th.num { "In" } th.num { "Out" } th.num { "Total" } th.num { "Latency" } th.num { "TTFB" } th { "Error" }
            } }
            tbody {
                @if rows.is_empty() { tr { td colspan="11" .muted { "No requests match." } } }
                @for r in &rows {
                    tr {
                        td { (when(Some(r.created_at), &tz)) }
                        td.mono { (r.key_masked) }
                        td { (r.model)
                            @if r.stream { span.mark title="streamed" { "stream" } }
                            @if r.aborted { span.mark.aborted title="the answer did not complete" { "aborted" } }
                            @if r.attempts > 1 { span.mark title="keys tried" { (r.attempts) " tries" } } }
                        td.mono { (r.endpoint) }
                        td { span class=(format!("badge s{}", r.status / 100)) { (r.status) } }
                        td.num { (r.input_tokens) } td.num { (r.output_tokens) } td.num { (r.total_tokens) }
                        td.num { (r.latency_ms) " ms" }
                        td.num { @if let Some(t) = r.ttfb_ms { (t) " ms" } }
                        td.err title=[r.error.clone()] { (r.error.clone().unwrap_or_default()) }
                    }
                }
            }
        }
        (pager("/admin/logs", &pairs, page_no as usize, page_size as usize, total as usize))
    };
    let chrome =
        Chrome { title: "Logs", nav: "logs", csrf: Some(&s.csrf), warnings: warnings(&state), notice };
    page(StatusCode::OK, layout(chrome, content))
}

/// One CSV field: quoted when needed, and defused against spreadsheet formulas.
pub fn csv_field(s: &str) -> String {
    // A spreadsheet runs a cell that starts with one of these as a formula.
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub async fn logs_csv(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LogQuery>,
) -> HttpResponse {
    if let Err(r) = page_session(&req, &state).await {
        return r;
    }
    let tz = state.config.timezone;
    let filter = match filter_from(&query, &tz) {
        Ok(f) => f,
        Err(e) => return HttpResponse::BadRequest().body(e),
    };
    let rows = match crate::db::run(&state.db, move |conn| lq::export(conn, &filter, 1_000_000)).await {
        Ok(r) => r,
        _ => return HttpResponse::ServiceUnavailable().body("database unavailable"),
    };
    let mut out = String::from("id,time,key,model,endpoint,status,input_tokens,output_tokens,total_tokens,latency_ms,ttfb_ms,stream,aborted,attempts,error\n");
    for r in rows {
        let fields = [
            r.id.to_string(),
            crate::db::iso(Some(r.created_at)).unwrap_or_default(),
            r.key_masked,
            r.model,
            r.endpoint,
            r.status.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.total_tokens.to_string(),
            r.latency_ms.to_string(),
            r.ttfb_ms.map(|t| t.to_string()).unwrap_or_default(),
            r.stream.to_string(),
            r.aborted.to_string(),
            r.attempts.to_string(),
            r.error.unwrap_or_default(),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"request-log.csv\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(out)
}

pub async fn logs_clear_confirm(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = match page_session(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let message = html! {
        "This deletes every request log row and the statistics built from them. Keys are not touched. It cannot be undone; export a CSV first if you need the history."
    };
    let confirm = Confirm {
        title: "Clear logs",
        nav: "logs",
        heading: "Clear the request log?".into(),
        action: "/admin/logs/clear".into(),
        button: "Clear the log",
        cancel: "/admin/logs",
    };
    confirm_page(&s, confirm, message)
}

pub async fn logs_clear(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    if let Err(r) = posted_form(&req, payload, &state).await {
        return r;
    }
    let notice = match super::logs::clear_all(&state).await {
        Ok(n) => format!("Deleted {n} log rows."),
        Err(e) => format!("Clearing failed: {e}"),
    };
    see_other(&with_notice("/admin/logs", &notice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        for danger in ["+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\t=1", "\r=1"] {
            let out = csv_field(danger);
            assert!(out.starts_with('\'') || out.starts_with("\"'"), "{danger:?} -> {out:?}");
        }
    }
}
