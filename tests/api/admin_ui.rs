//! The admin UI driven as a browser would: a cookie, the forms' hidden CSRF
//! fields, redirects.

use bytes::Bytes;
use serde_json::json;
use siliconflow_proxy::db::log_writer::{Maintain, Record};
use siliconflow_proxy::db::models::NewLog;

use crate::fake::{Mode, CHAT_USAGE, STREAM_USAGE};
use crate::helpers::{spawn_app, spawn_app_with, start_with_env, Resp, TestApp, ADMIN_PASS};
use crate::{KA, KB};

const PAGES: &[&str] = &["/admin", "/admin/keys", "/admin/logs", "/admin/logs/clear", "/admin/keys/1/delete"];

impl TestApp {
    /// Logs in through the form; returns the session cookie ("name=value").
    pub(crate) async fn login(&self, user: &str, pass: &str) -> Result<String, Resp> {
        let form = serde_urlencoded::to_string([("username", user), ("password", pass)]).unwrap();
        let req = self
            .client
            .post(self.url("/login"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
        let r = self.send(req, Some(Bytes::from(form))).await;
        if r.status != 303 {
            return Err(r);
        }
        assert_eq!(r.header("location").as_deref(), Some("/admin"));
        let set = r.header("set-cookie").expect("a session cookie");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        Ok(set.split(';').next().unwrap().to_string())
    }

    pub(crate) async fn page(&self, path: &str, cookie: &str) -> Resp {
        self.send(self.client.get(self.url(path)).insert_header(("Cookie", cookie.to_string())), None).await
    }

    pub(crate) async fn post_form(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Cookie", cookie.to_string()))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
        self.send(req, Some(Bytes::from(serde_urlencoded::to_string(fields).unwrap()))).await
    }
}

/// The CSRF token in a page's forms.
pub(crate) fn csrf_of(page: &Resp) -> String {
    let html = String::from_utf8_lossy(&page.body);
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

pub(crate) fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

#[actix_web::test]
async fn login_logout_and_pages_behave_like_a_site() {
    let app = spawn_app().await;
    // Anonymous: the login form at /, redirects from every page.
    let r = app.send(app.client.get(app.url("/")), None).await;
    assert_eq!(r.status, 200);
    assert!(text(&r).contains("name=\"password\""));
    for p in PAGES {
        let r = app.send(app.client.get(app.url(p)), None).await;
        assert_eq!((r.status, r.header("location").as_deref()), (303, Some("/")), "{p}");
    }
    let r = app.login("admin", "wrong").await.unwrap_err();
    assert_eq!(r.status, 401);
    assert!(text(&r).contains("Wrong username or password"));
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    // Logged in: / goes to the dashboard; every page renders with security headers.
    assert_eq!(app.page("/", &cookie).await.header("location").as_deref(), Some("/admin"));
    app.fake.add_key(KA, "a", "9", Mode::Ok);
    app.import(&[KA]).await;
    for p in PAGES {
        let r = app.page(p, &cookie).await;
        assert_eq!(r.status, 200, "{p}: {}", text(&r));
        assert!(text(&r).contains("<h1>"), "{p}");
        assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(!text(&r).contains(KA), "{p} shows a full key");
    }
    let dash = text(&app.page("/admin", &cookie).await);
    assert!(
        dash.contains(r#"<figure class="chart">"#) && dash.contains("No data yet."),
        "charts, empty: {dash}"
    );
    assert!(dash.contains("—"), "cards without calls say so, not 100% and 0 ms");
    let css = app.send(app.client.get(app.url("/static/admin.css")), None).await;
    assert_eq!((css.status, css.header("content-type").as_deref()), (200, Some("text/css; charset=utf-8")));
    assert!(text(&css).contains(".h50{height:50%}"), "the charts' sizes are in the stylesheet");

    // Logout ends the session for real: a copied cookie stops working.
    let copied = cookie.clone();
    let dash = app.page("/admin", &cookie).await;
    let r = app.post_form("/logout", &cookie, &[("csrf", &csrf_of(&dash))]).await;
    assert_eq!((r.status, r.header("location").as_deref()), (303, Some("/")));
    assert!(r.header("set-cookie").unwrap().contains("sfp_session=;"));
    assert_eq!(app.page("/admin", &copied).await.status, 303);
    let r = app.send(app.client.get(app.url("/api/keys")).insert_header(("Cookie", copied)), None).await;
    assert_eq!(r.status, 401);
}

#[actix_web::test]
async fn wrong_passwords_are_throttled_per_address() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3")]).await;
    for _ in 0..3 {
        assert_eq!(app.login("admin", "nope").await.unwrap_err().status, 401);
    }
    let r = app.login("admin", ADMIN_PASS).await.unwrap_err();
    assert_eq!(r.status, 429, "even the right password waits once the address is throttled");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    // HTTP Basic shares the throttle.
    let r = app.admin_get("/api/keys").await;
    assert_eq!(r.status, 429);
}

#[actix_web::test]
async fn state_changing_requests_with_a_cookie_need_the_csrf_token() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a", "9", Mode::Ok);
    app.import(&[KA]).await;
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let keys_page = app.page("/admin/keys", &cookie).await;
    let csrf = csrf_of(&keys_page);
    for (path, fields) in [
        ("/admin/keys/refresh", vec![]),
        ("/admin/keys/1/disable", vec![]),
        ("/admin/keys/import", vec![("keys", KB)]),
        ("/admin/logs/clear", vec![]),
        ("/logout", vec![]),
    ] {
        let r = app.post_form(path, &cookie, &fields).await;
        assert_eq!(r.status, 403, "{path} without a token");
        let mut wrong = fields.clone();
        wrong.push(("csrf", "forged"));
        assert_eq!(app.post_form(path, &cookie, &wrong).await.status, 403, "{path} with a forged token");
    }
    assert_eq!(app.key_state("sk-aaaa").await, "active", "nothing happened");
    // JSON endpoints with the cookie: X-CSRF-Token.
    let json_post = |token: Option<String>| {
        let mut req = app
            .client
            .post(app.url("/refresh"))
            .insert_header(("Cookie", cookie.clone()))
            .insert_header(("Content-Type", "application/json"));
        if let Some(t) = token {
            req = req.insert_header(("X-CSRF-Token", t));
        }
        req
    };
    assert_eq!(app.send(json_post(None), Some(Bytes::from_static(b"{}"))).await.status, 403);
    assert_eq!(app.send(json_post(Some(csrf.clone())), Some(Bytes::from_static(b"{}"))).await.status, 200);
    let r = app
        .send(app.client.delete(app.url("/api/keys/1")).insert_header(("Cookie", cookie.clone())), None)
        .await;
    assert_eq!(r.status, 403);
    // GETs need no token.
    assert_eq!(app.page("/api/keys", &cookie).await.status, 200);
    // With the token the forms work.
    let r = app.post_form("/admin/keys/1/disable", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(app.key_state("sk-aaaa").await, "disabled");
    let notice = app.page(r.header("location").as_deref().unwrap(), &cookie).await;
    assert!(text(&notice).contains("Key #1 disabled."), "{}", text(&notice));
    let r = app.post_form("/admin/keys/1/enable", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(app.key_state("sk-aaaa").await, "active");
}

#[actix_web::test]
async fn importing_and_deleting_through_the_keys_page() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a", "9", Mode::Ok);
    app.fake.add_key(KB, "b", "0", Mode::Ok);
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let csrf = csrf_of(&app.page("/admin/keys", &cookie).await);
    let r = app
        .post_form(
            "/admin/keys/import",
            &cookie,
            &[("csrf", &csrf), ("keys", &format!("{KA}, {KB} sk-unknown-000000000"))],
        )
        .await;
    // Post/redirect/get: the results are on the page the browser is sent to,
    // so a reload shows them again instead of importing again.
    assert_eq!(r.status, 303);
    let location = r.header("location").unwrap();
    assert!(location.starts_with("/admin/keys?import="), "{location}");
    for _ in 0..2 {
        let html = text(&app.page(&location, &cookie).await);
        assert!(html.contains("2 added") && html.contains("1 invalid"), "{html}");
        assert!(html.contains("sk-aaaa...0001") && !html.contains(KA) && !html.contains(KB));
    }
    assert_eq!(app.keys_json().await.len(), 3, "imported once");
    // Another session does not see this one's results.
    let other = app.login("admin", ADMIN_PASS).await.unwrap();
    assert!(!text(&app.page(&location, &other).await).contains("2 added"));
    // Sorting and searching run over all keys.
    let r = app.page("/admin/keys?sort=balance&order=desc&page_size=1", &cookie).await;
    let html = text(&r);
    assert!(html.contains("sk-aaaa...0001") && !html.contains("sk-bbbb...0002"), "richest first, one a page");
    assert!(html.contains("Page 1 of 3"));
    let html = text(&app.page("/admin/keys?state=exhausted", &cookie).await);
    assert!(html.contains("sk-bbbb...0002") && !html.contains("sk-aaaa...0001"));
    // Delete asks first, then deletes.
    let confirm = app.page("/admin/keys/2/delete", &cookie).await;
    assert!(text(&confirm).contains("Delete key #2?"));
    let r = app.post_form("/admin/keys/2/delete", &cookie, &[("csrf", &csrf_of(&confirm))]).await;
    assert_eq!(r.status, 303);
    assert_eq!(app.keys_json().await.len(), 2);
}

#[actix_web::test]
async fn stats_equal_the_traffic_sent_through_the_proxy() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a", "9", Mode::Ok);
    app.fake.add_key(KB, "b", "5", Mode::Ok);
    app.import(&[KA, KB]).await;
    for i in 0..7 {
        let stream = i % 3 == 0;
        let r = app.call("/v1/chat/completions", json!({"model": if i % 2 == 0 { "Qwen/Qwen3-8B" } else { "deepseek-ai/DeepSeek-V3" }, "stream": stream, "messages": []})).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(app.chat("bad-model").await.status, 400);
    let (streams, plain) = (3i64, 4i64);
    let tokens = streams * STREAM_USAGE.2 + plain * CHAT_USAGE.2;
    app.flush_logs().await;
    let o = app.admin_get("/api/stats/overview").await.json();
    assert_eq!(o["total_calls"], 8);
    assert_eq!(o["total_tokens"], tokens);
    assert_eq!((o["calls_today"].as_i64(), o["calls_month"].as_i64()), (Some(8), Some(8)));
    assert_eq!(o["key_count"], 2);
    assert_eq!(o["total_balance"], 14.0);
    assert_eq!(o["errors_month"], 1);
    assert!((o["success_rate"].as_f64().unwrap() - 7.0 / 8.0).abs() < 1e-9);
    let d = app.admin_get("/api/stats/daily").await.json();
    assert_eq!(d["labels"].as_array().unwrap().len(), 24);
    assert_eq!(d["calls"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum::<i64>(), 8);
    let sum = |k: &str| d[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum::<i64>();
    assert_eq!(sum("input_tokens") + sum("output_tokens"), tokens);
    assert!(d["model_labels"].as_array().unwrap().contains(&json!("Qwen/Qwen3-8B")));
    let m = app.admin_get("/api/stats/monthly").await.json();
    assert!(m["labels"].as_array().unwrap().len() >= 28);
    assert_eq!(m["calls"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum::<i64>(), 8);
    assert_eq!(app.admin_get("/logs").await.json()["total"], 8, "stats equal the logged rows");
    assert!(!text(&app.admin_get("/api/stats/overview").await).contains(KA));
}

#[actix_web::test]
async fn log_filters_pagination_csv_and_clear() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a", "9", Mode::Ok);
    app.import(&[KA]).await;
    for model in ["Qwen/Qwen3-8B", "qwen/QwQ-32B", "deepseek-ai/DeepSeek-V3"] {
        app.chat(model).await;
    }
    app.chat("bad-model").await;
    app.call("/v1/embeddings", json!({"model": "BAAI/bge-m3", "input": "x"})).await;
    app.flush_logs().await;
    let j = app.admin_get("/logs?model=QWEN").await.json();
    assert_eq!(j["total"], 2, "any part of the name, any case");
    assert_eq!(app.admin_get("/logs?status=400").await.json()["total"], 1);
    assert_eq!(app.admin_get("/logs?endpoint=/v1/embeddings").await.json()["total"], 1);
    assert_eq!(app.admin_get("/logs?key=sk-aaaa").await.json()["total"], 5);
    assert_eq!(app.admin_get("/logs?since=2000-01-01&until=2000-01-02").await.json()["total"], 0);
    assert_eq!(app.admin_get("/logs?since=nonsense").await.status, 400);
    let p1 = app.admin_get("/logs?page=1&page_size=2").await.json();
    let p3 = app.admin_get("/logs?page=3&page_size=2").await.json();
    assert_eq!((p1["logs"].as_array().unwrap().len(), p3["logs"].as_array().unwrap().len()), (2, 1));
    assert_eq!(p1["total"], 5);
    assert_eq!(app.admin_get("/logs?page=abc").await.status, 200, "a bad page is page 1");

    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let html = text(&app.page("/admin/logs?model=qwen&page_size=1", &cookie).await);
    assert!(html.contains("Page 1 of 2"), "filters kept in the query string");
    assert!(html.contains("model=qwen&amp;page_size=1&amp;page=2"), "the next link keeps the filters");
    let csv = app.page("/admin/logs.csv?model=qwen", &cookie).await;
    assert_eq!(csv.header("content-type").as_deref(), Some("text/csv; charset=utf-8"));
    let body = text(&csv);
    assert_eq!(body.lines().count(), 3, "header + 2 rows: {body}");
    assert!(body.starts_with("id,time,key,model"));

    let r = app.admin_post("/clear_logs", json!({})).await;
    assert_eq!(r.json()["deleted"], 5);
    assert_eq!(
        app.admin_get("/api/stats/overview").await.json()["total_calls"],
        0,
        "stats cleared with the rows"
    );
}

#[actix_web::test]
async fn retention_deletes_old_rows_and_their_stats_together() {
    let app = spawn_app_with(&[("LOG_RETENTION_DAYS", "30")]).await;
    app.fake.add_key(KA, "a", "9", Mode::Ok);
    app.import(&[KA]).await;
    app.chat("m").await;
    let old = chrono::Utc::now().timestamp_millis() - 40 * 86_400_000;
    for i in 0..3 {
        app.state.log_writer.do_send(Record(NewLog {
            created_at: old + i,
            key_id: None,
            key_masked: String::new(),
            model: "old".into(),
            endpoint: "/v1/chat/completions".into(),
            status: 200,
            input_tokens: 1,
            output_tokens: 1,
            total_tokens: 2,
            latency_ms: 1,
            ttfb_ms: None,
            stream: false,
            aborted: false,
            attempts: 1,
            error: None,
            client: None,
            requested_model: None,
            call_id: None,
            usage_estimated: false,
        }));
    }
    app.flush_logs().await;
    assert_eq!(app.admin_get("/api/stats/overview").await.json()["total_calls"], 4);
    let deleted = app.state.log_writer.send(Maintain).await.unwrap().unwrap();
    assert_eq!(deleted, 3);
    assert_eq!(app.admin_get("/logs").await.json()["total"], 1);
    assert_eq!(app.admin_get("/api/stats/overview").await.json()["total_calls"], 1);
}

#[actix_web::test]
async fn a_session_survives_a_restart() {
    let app = spawn_app().await;
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let TestApp { fake, dir, handle, .. } = app;
    handle.stop(true).await;
    let env = crate::helpers::base_env(&fake, &dir);
    let app = start_with_env(fake, dir, env).await;
    assert_eq!(app.page("/admin", &cookie).await.status, 200);
}
