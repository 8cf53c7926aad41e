//! Server-rendered pages (maud): the layout, shared components, charts.
//! No script and no external asset: the stylesheet is served by the binary.

pub mod charts;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{FixedOffset, TimeZone, Utc};
use maud::{html, Markup, DOCTYPE};

/// The stylesheet, embedded at build time.
pub const CSS: &str = include_str!("../../../templates/admin.css");

/// Security headers for every page: no framing, no inline script, nothing
/// cached (pages show key data).
pub fn page(status: StatusCode, body: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header(("Cache-Control", "no-store"))
        .body(body.into_string())
}

pub struct Chrome<'a> {
    pub title: &'a str,
    /// Which nav item is current ("dashboard", "keys", "logs"); empty on the login page.
    pub nav: &'a str,
    pub csrf: Option<&'a str>,
    pub warnings: Vec<String>,
    pub notice: Option<String>,
}

pub fn layout(c: Chrome, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (c.title) " · siliconflow-proxy" }
                link rel="stylesheet" href="/static/admin.css";
            }
            body {
                header.top {
                    a.brand href="/admin" { "siliconflow-proxy" }
                    @if let Some(csrf) = c.csrf {
                        nav {
                            a href="/admin" class=[(c.nav == "dashboard").then_some("current")] { "Dashboard" }
                            a href="/admin/keys" class=[(c.nav == "keys").then_some("current")] { "Keys" }
                            a href="/admin/logs" class=[(c.nav == "logs").then_some("current")] { "Logs" }
                            a href="/admin/clients" class=[(c.nav == "clients").then_some("current")] { "Clients" }
                            a href="/admin/aliases" class=[(c.nav == "aliases").then_some("current")] { "Aliases" }
                            a href="/admin/models" class=[(c.nav == "models").then_some("current")] { "Models" }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.link type="submit" { "Log out" }
                        }
                        form.logout.everywhere method="post" action="/logout_everywhere" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.link type="submit" title="End every admin session, in every browser" { "Log out everywhere" }
                        }
                    }
                }
                main {
                    @for w in &c.warnings { div.banner.warn role="alert" { (w) } }
                    @if let Some(n) = &c.notice { div.banner.info role="status" { (n) } }
                    (content)
                }
            }
        }
    }
}

pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// Epoch ms as local time in the configured zone, to the second.
pub fn when(ms: Option<i64>, tz: &FixedOffset) -> String {
    ms.filter(|t| *t > 0)
        .and_then(|t| Utc.timestamp_millis_opt(t).single())
        .map(|t| t.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "—".into())
}

pub fn badge(state: &str, title: Option<String>) -> Markup {
    html! { span class=(format!("badge {state}")) title=[title] { (state) } }
}

pub fn card(label: &str, value: String, sub: Option<String>) -> Markup {
    html! {
        div.card {
            div.label { (label) }
            div.value { (value) }
            @if let Some(s) = sub { div.sub { (s) } }
        }
    }
}

/// A link that keeps the current query and changes some of its fields.
pub fn link_with(path: &str, query: &[(&str, String)], changes: &[(&str, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, v)| !v.is_empty() && !changes.iter().any(|(c, _)| c == k))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    pairs.extend(changes.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.clone())));
    let q = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}

pub fn pager(path: &str, query: &[(&str, String)], page: usize, page_size: usize, total: usize) -> Markup {
    let pages = total.div_ceil(page_size.max(1)).max(1);
    html! {
        nav.pager {
            @if page > 1 { a href=(link_with(path, query, &[("page", (page - 1).to_string())])) { "← Previous" } }
            span { "Page " (page) " of " (pages) " · " (total) " in all" }
            @if page < pages { a href=(link_with(path, query, &[("page", (page + 1).to_string())])) { "Next →" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_filters_and_change_the_page() {
        let q = [("model", "qwen 3".to_string()), ("page", "2".to_string()), ("status", String::new())];
        assert_eq!(link_with("/admin/logs", &q, &[("page", "3".into())]), "/admin/logs?model=qwen+3&page=3");
        assert_eq!(link_with("/x", &[], &[]), "/x");
    }

    #[test]
    fn pages_have_security_headers() {
        let r = page(StatusCode::OK, html! { p { "x" } });
        let csp = r.headers().get("content-security-policy").unwrap().to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"));
        assert_eq!(r.headers().get("x-frame-options").unwrap(), "DENY");
        assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    }
}
