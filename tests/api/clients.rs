//! Client keys: created by the owner, each with its models and limits,
//! checked on every call without the database, recorded in the log.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::fake::{Mode, CHAT_USAGE};
use crate::helpers::{poll, spawn_app, spawn_app_with, start_with_env, Resp, TestApp, CLIENT_KEY};
use crate::KA;

impl TestApp {
    pub(crate) async fn create_client(&self, body: Value) -> Value {
        let r = self.admin_post("/api/clients", body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// A new client's secret.
    pub(crate) async fn client_key(&self, body: Value) -> String {
        self.create_client(body).await["key"].as_str().expect("the new client's key").to_string()
    }

    pub(crate) async fn admin_send(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let req = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .insert_header(("Authorization", crate::helpers::basic("admin", crate::helpers::ADMIN_PASS)))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, body.map(|b| Bytes::from(b.to_string()))).await
    }

    pub(crate) async fn call_as(&self, key: &str, path: &str, body: Value) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, Some(Bytes::from(body.to_string()))).await
    }

    pub(crate) async fn chat_as(&self, key: &str, model: &str) -> Resp {
        self.call_as(
            key,
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
    }

    async fn clients(&self) -> Vec<Value> {
        let r = self.admin_get("/api/clients").await;
        assert_eq!(r.status, 200);
        r.json()["clients"].as_array().cloned().unwrap()
    }
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

/// An app with one pool key (KA) imported.
pub(crate) async fn app_with_key() -> TestApp {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.import(&[KA]).await;
    app
}

#[actix_web::test]
async fn a_client_key_is_shown_once_stored_as_a_hash_and_limited_to_its_models() {
    let app = app_with_key().await;
    let created = app.create_client(json!({"name": "alice", "models": ["Qwen/*", "BAAI/bge-m3"]})).await;
    let secret = created["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk-") && secret.len() == 51, "{secret}");
    assert_eq!(created["name"], "alice");
    assert_eq!(created["models"], json!(["Qwen/*", "BAAI/bge-m3"]));
    assert_eq!(created["rpm"], Value::Null, "absent = unlimited");

    // Listed masked; the secret is nowhere in the database.
    let list = app.admin_get("/api/clients").await;
    assert!(!text(&list).contains(&secret));
    let listed = &list.json()["clients"][0];
    assert_eq!(listed["key"], format!("{}...{}", &secret[..7], &secret[secret.len() - 4..]));
    let mut conn = app.state.db.get().unwrap();
    let dump: Vec<(String, String)> = diesel::RunQueryDsl::load(
        diesel::QueryDsl::select(
            siliconflow_proxy::db::schema::clients::table,
            (
                siliconflow_proxy::db::schema::clients::key_hash,
                siliconflow_proxy::db::schema::clients::key_hint,
            ),
        ),
        &mut *conn,
    )
    .unwrap();
    drop(conn);
    assert_eq!(dump.len(), 1);
    assert!(!dump[0].0.contains(&secret[3..]) && dump[0].0.len() == 64, "a hash, not the secret");

    // Its models: served. Others: 403 in the caller's dialect, never sent upstream.
    assert_eq!(app.chat_as(&secret, "Qwen/Qwen3-8B").await.status, 200);
    app.fake.clear_seen();
    let r = app.chat_as(&secret, "deepseek-ai/DeepSeek-V3").await;
    assert_eq!(r.status, 403, "{}", text(&r));
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("Qwen/*"), "says what it may use");
    let r = app
        .call_as(
            &secret,
            "/v1/messages",
            json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert!(app.fake.seen().is_empty(), "nothing refused reached the upstream");

    // /v1/models lists only its models; API_KEY's client sees them all.
    let models = |key: String| {
        let app = &app;
        async move {
            let req = app
                .client
                .get(app.url("/v1/models"))
                .insert_header(("Authorization", format!("Bearer {key}")));
            let r = app.send(req, None).await;
            assert_eq!(r.status, 200, "{}", text(&r));
            r.json()["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(models(secret.clone()).await, vec!["Qwen/Qwen3-8B"]);
    assert_eq!(models(CLIENT_KEY.to_string()).await, vec!["Qwen/Qwen3-8B", "deepseek-ai/DeepSeek-V3"]);

    // Every row names its client; refused calls leave none; the counts equal the log.
    let rows = app.logs().await;
    let alice: Vec<_> = rows.iter().filter(|r| r.client.as_deref() == Some("alice")).collect();
    assert_eq!(alice.len(), 2, "the chat and the model list: {rows:?}");
    assert_eq!(rows.iter().filter(|r| r.client.as_deref() == Some("env")).count(), 1);
    let listed = &app.clients().await[0];
    assert_eq!(listed["requests_today"], 2);
    assert_eq!(listed["tokens_today"], alice.iter().map(|r| r.total_tokens).sum::<i64>());
    assert_eq!(listed["tokens_today"], CHAT_USAGE.2);
    let r = app.admin_get("/logs?client=alice").await;
    assert_eq!(r.json()["total"], 2);
    assert_eq!(r.json()["logs"][0]["client"], "alice");
}

#[actix_web::test]
async fn over_a_limit_a_client_gets_429_with_retry_after_naming_it() {
    let app = app_with_key().await;
    let rpm = app.client_key(json!({"name": "per-minute", "rpm": 2})).await;
    for _ in 0..2 {
        assert_eq!(app.chat_as(&rpm, "m").await.status, 200);
    }
    let r = app.chat_as(&rpm, "m").await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(
        r.json()["error"]["message"].as_str().unwrap().contains("2 requests per minute (rpm)"),
        "{}",
        text(&r)
    );
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");

    let daily = app.client_key(json!({"name": "per-day", "daily_requests": 2})).await;
    assert_eq!(app.chat_as(&daily, "m").await.status, 200);
    assert_eq!(app.chat_as(&daily, "m").await.status, 200);
    let r = app.chat_as(&daily, "m").await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("daily_requests"), "{}", text(&r));
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&wait));

    // Tokens are counted from the metered usage; once used up, calls wait for tomorrow.
    let tokens = app.client_key(json!({"name": "tokens", "daily_tokens": CHAT_USAGE.2 + 1})).await;
    assert_eq!(app.chat_as(&tokens, "m").await.status, 200);
    // 1 token left: this call's prompt alone is more, so it is not let in.
    let r = app.chat_as(&tokens, "m").await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("daily_tokens"), "{}", text(&r));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("1 of its 19 tokens"), "{}", text(&r));

    // Limits are per client: API_KEY's is unlimited.
    for _ in 0..5 {
        assert_eq!(app.chat("m").await.status, 200);
    }
    let listed = app.clients().await;
    let used =
        |name: &str| listed.iter().find(|c| c["name"] == name).unwrap()["requests_today"].as_i64().unwrap();
    assert_eq!(
        (used("per-minute"), used("per-day"), used("tokens")),
        (2, 2, 1),
        "refused calls are not counted"
    );
}

#[actix_web::test]
async fn rotated_disabled_expired_and_deleted_keys_stop_at_once() {
    let app = app_with_key().await;
    let c = app.create_client(json!({"name": "bob"})).await;
    let (id, old) = (c["id"].as_i64().unwrap(), c["key"].as_str().unwrap().to_string());
    assert_eq!(app.chat_as(&old, "m").await.status, 200);

    let r = app.admin_send("POST", &format!("/api/clients/{id}/rotate"), None).await;
    assert_eq!(r.status, 200);
    let new = r.json()["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(app.chat_as(&old, "m").await.status, 401, "the old secret stops at once");
    assert_eq!(app.chat_as(&new, "m").await.status, 200);

    let r = app.admin_send("PATCH", &format!("/api/clients/{id}"), Some(json!({"enabled": false}))).await;
    assert_eq!((r.status, r.json()["enabled"].clone()), (200, json!(false)));
    let r = app.chat_as(&new, "m").await;
    assert_eq!(r.status, 401);
    assert!(text(&r).contains("disabled"));

    let r = app
        .admin_send(
            "PATCH",
            &format!("/api/clients/{id}"),
            Some(json!({"enabled": true, "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.json()["expired"], true);
    let r = app.chat_as(&new, "m").await;
    assert_eq!(r.status, 401);
    assert!(text(&r).contains("expired"));
    let r = app
        .admin_send(
            "PATCH",
            &format!("/api/clients/{id}"),
            Some(json!({"expires_at": null, "name": "bobby"})),
        )
        .await;
    assert_eq!((r.json()["expired"].clone(), r.json()["name"].clone()), (json!(false), json!("bobby")));
    assert_eq!(app.chat_as(&new, "m").await.status, 200);

    let r = app.admin_send("DELETE", &format!("/api/clients/{id}"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.chat_as(&new, "m").await.status, 401);
    assert_eq!(app.admin_send("DELETE", &format!("/api/clients/{id}"), None).await.status, 404);
    assert_eq!(app.admin_send("POST", "/api/clients/999/rotate", None).await.status, 404);
}

#[actix_web::test]
async fn bad_client_definitions_get_a_clear_400_or_409() {
    let app = spawn_app().await;
    for (body, says) in [
        (json!({}), "`name` is required"),
        (json!({"name": ""}), "`name` must be"),
        (json!({"name": "env"}), "API_KEY"),
        (json!({"name": "x", "rpm": 0}), "`rpm` must be at least 1"),
        (json!({"name": "x", "rpm": -3}), "expected a JSON object"),
        (json!({"name": "x", "models": []}), "`models` is empty"),
        (json!({"name": "x", "models": ["Qwen*"]}), "prefix ending in a slash"),
        (json!({"name": "x", "expires_at": "tomorrow"}), "RFC 3339"),
        (json!({"name": "x", "budget": 5}), "unknown field"),
    ] {
        let r = app.admin_post("/api/clients", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", text(&r));
        assert!(r.json()["error"].as_str().unwrap().contains(says), "{body}: {}", text(&r));
    }
    app.create_client(json!({"name": "dup"})).await;
    let r = app.admin_post("/api/clients", json!({"name": "dup"})).await;
    assert_eq!(r.status, 409);
    assert_eq!(app.admin_send("PATCH", "/api/clients/nope", Some(json!({}))).await.status, 404);
    assert_eq!(app.clients().await.len(), 1);
}

#[actix_web::test]
async fn with_client_keys_and_no_api_key_the_proxy_is_no_longer_open_and_usage_survives_a_restart() {
    let app = spawn_app_with(&[("API_KEY", "")]).await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.import(&[KA]).await;
    let open = app.call_as("anything", "/v1/chat/completions", json!({"model": "m", "messages": []})).await;
    assert_eq!(open.status, 200, "no API_KEY and no client: open, as before");
    let key = app.client_key(json!({"name": "carol", "daily_requests": 3})).await;
    assert_eq!(app.chat_as("anything", "m").await.status, 401, "a client key now required");
    assert_eq!(app.chat_as(&key, "m").await.status, 200);
    assert_eq!(app.chat_as(&key, "m").await.status, 200);
    app.flush_logs().await;
    if std::env::var("TEST_POSTGRES").is_ok_and(|v| !v.is_empty()) {
        // Shared counts are published every second: wait for this instance's.
        use diesel::prelude::*;
        use siliconflow_proxy::db::schema::client_usage::dsl as cu;
        poll(Duration::from_secs(5), || async {
            let mut conn = app.state.db.get().unwrap();
            let n: Vec<i64> = cu::client_usage.select(cu::requests).load(&mut *conn).unwrap();
            (n.iter().sum::<i64>() == 2).then_some(())
        })
        .await;
    }

    // After a restart, today's use comes back from the log.
    let TestApp { fake, dir, background, handle, .. } = app;
    drop(background);
    handle.stop(false).await;
    let mut env = crate::helpers::base_env(&fake, &dir);
    env.insert("API_KEY".into(), String::new());
    let app = start_with_env(fake, dir, env).await;
    let carol = app.clients().await.into_iter().find(|c| c["name"] == "carol").unwrap();
    assert_eq!(carol["requests_today"], 2);
    assert_eq!(carol["tokens_today"], 2 * CHAT_USAGE.2);
    assert_eq!(app.chat_as(&key, "m").await.status, 200);
    let r = app.chat_as(&key, "m").await;
    assert_eq!(r.status, 429, "the third of the day was the last");
    poll(Duration::from_secs(5), || async { (app.logs().await.len() == 4).then_some(()) }).await;
}

/// The secret shown in a page's banner.
fn secret_in(page: &str) -> String {
    let at = page.find("<code class=\"secret\">").expect("a key shown") + "<code class=\"secret\">".len();
    page[at..at + 51].to_string()
}

#[actix_web::test]
async fn the_clients_page_creates_edits_rotates_disables_and_deletes() {
    use crate::admin_ui::{csrf_of, text as page_text};
    let app = app_with_key().await;
    let cookie = app.login("admin", crate::helpers::ADMIN_PASS).await.unwrap();
    let page = app.page("/admin/clients", &cookie).await;
    assert_eq!(page.status, 200);
    assert!(page_text(&page).contains("No client keys yet"));
    let csrf = csrf_of(&page);

    // Without the CSRF token: refused.
    let r = app.post_form("/admin/clients", &cookie, &[("name", "x")]).await;
    assert_eq!(r.status, 403);

    let r = app
        .post_form(
            "/admin/clients",
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "alice"),
                ("models", "Qwen/*\ndeepseek-ai/DeepSeek-V3"),
                ("rpm", "30"),
                ("daily_requests", ""),
                ("daily_tokens", "1,000"),
                ("expires_at", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", page_text(&r));
    let html = page_text(&r);
    let secret = secret_in(&html);
    assert!(secret.starts_with("sk-"));
    assert!(html.contains("not shown again"));
    assert_eq!(app.chat_as(&secret, "Qwen/Qwen3-8B").await.status, 200);
    let listed = app.clients().await;
    assert_eq!(
        (listed[0]["rpm"].clone(), listed[0]["daily_requests"].clone(), listed[0]["daily_tokens"].clone()),
        (json!(30), Value::Null, json!(1000))
    );
    let list_page = page_text(&app.page("/admin/clients", &cookie).await);
    assert!(!list_page.contains(&secret), "shown once");
    assert!(list_page.contains(&secret[..7]) && list_page.contains("1 call ·"));

    // Bad input keeps the form and says why; a taken name is a conflict.
    let r =
        app.post_form("/admin/clients", &cookie, &[("csrf", &csrf), ("name", "bob"), ("rpm", "lots")]).await;
    assert_eq!(r.status, 400);
    assert!(page_text(&r).contains("is not a whole number") && page_text(&r).contains("value=\"bob\""));
    let r = app.post_form("/admin/clients", &cookie, &[("csrf", &csrf), ("name", "alice")]).await;
    assert_eq!(r.status, 409);

    // Edit: the form comes filled in; saving sets what it shows.
    let id = listed[0]["id"].as_i64().unwrap();
    let edit = page_text(&app.page(&format!("/admin/clients/{id}/edit"), &cookie).await);
    assert!(edit.contains("value=\"30\"") && edit.contains("deepseek-ai/DeepSeek-V3"), "{edit}");
    let r = app
        .post_form(
            &format!("/admin/clients/{id}/edit"),
            &cookie,
            &[("csrf", &csrf), ("name", "alice"), ("models", ""), ("rpm", ""), ("daily_tokens", "")],
        )
        .await;
    assert_eq!(r.status, 303);
    let c = &app.clients().await[0];
    assert_eq!(
        (c["models"].clone(), c["rpm"].clone(), c["daily_tokens"].clone()),
        (Value::Null, Value::Null, Value::Null)
    );
    assert!(page_text(&app.page(&r.header("location").unwrap(), &cookie).await)
        .contains(&format!("Client #{id} saved.")));

    // Disable, enable, rotate, delete.
    assert_eq!(
        app.post_form(&format!("/admin/clients/{id}/disable"), &cookie, &[("csrf", &csrf)]).await.status,
        303
    );
    assert_eq!(app.chat_as(&secret, "m").await.status, 401);
    assert_eq!(
        app.post_form(&format!("/admin/clients/{id}/enable"), &cookie, &[("csrf", &csrf)]).await.status,
        303
    );
    assert_eq!(app.chat_as(&secret, "m").await.status, 200);
    let r = app.post_form(&format!("/admin/clients/{id}/rotate"), &cookie, &[("csrf", &csrf)]).await;
    let rotated = secret_in(&page_text(&r));
    assert_ne!(rotated, secret);
    assert_eq!(app.chat_as(&secret, "m").await.status, 401);
    assert_eq!(app.chat_as(&rotated, "m").await.status, 200);
    let confirm = page_text(&app.page(&format!("/admin/clients/{id}/delete"), &cookie).await);
    assert!(confirm.contains("alice"));
    assert_eq!(
        app.post_form(&format!("/admin/clients/{id}/delete"), &cookie, &[("csrf", &csrf)]).await.status,
        303
    );
    assert_eq!(app.chat_as(&rotated, "m").await.status, 401);
    assert!(app.clients().await.is_empty());

    // The logs page filters by client; the CSV has the column; the dashboard ranks clients.
    app.flush_logs().await;
    let logs = page_text(&app.page("/admin/logs?client=alice", &cookie).await);
    assert!(logs.contains("<td class=\"nowrap\">alice</td>"), "{logs}");
    let csv = page_text(&app.page("/admin/logs.csv?client=alice", &cookie).await);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].ends_with(",client,usage_estimated"));
    assert_eq!(lines.len(), 1 + 3, "the three calls alice was let make: {csv}");
    assert!(lines[1..].iter().all(|l| l.ends_with(",alice,false")));
    let overview = app.admin_get("/api/stats/overview").await.json();
    assert_eq!(
        overview["calls_by_client"][0],
        json!({"client": "alice", "calls": 3, "tokens": 3 * CHAT_USAGE.2})
    );
    let dashboard = page_text(&app.page("/admin", &cookie).await);
    assert!(dashboard.contains("Calls by client, this month"));
}

/// The Responses API is the chat route's twin for a client key: its model
/// list, its rpm and its usage hold there too, in OpenAI's error shape.
#[actix_web::test]
async fn a_client_key_is_held_to_its_models_and_limits_on_the_responses_api() {
    let app = app_with_key().await;
    let created = app.create_client(json!({"name": "coder", "models": ["Qwen/*"], "rpm": 2})).await;
    let secret = created["key"].as_str().unwrap().to_string();
    app.fake.clear_seen();
    let r = app
        .call_as(&secret, "/v1/responses", json!({"model": "deepseek-ai/DeepSeek-V3", "input": "hi"}))
        .await;
    assert_eq!(r.status, 403, "{}", text(&r));
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert!(app.fake.seen().is_empty(), "a refused model is never sent upstream");
    for _ in 0..2 {
        let r = app.call_as(&secret, "/v1/responses", json!({"model": "Qwen/Qwen3-8B", "input": "hi"})).await;
        assert_eq!(r.status, 200, "{}", text(&r));
    }
    let r = app.call_as(&secret, "/v1/responses", json!({"model": "Qwen/Qwen3-8B", "input": "hi"})).await;
    assert_eq!(r.status, 429, "rpm 2: the third call in the minute is refused");
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let logs = app.logs().await;
    assert_eq!(logs.len(), 2, "refused calls leave no row");
    assert!(logs.iter().all(|l| l.endpoint == "/v1/responses" && l.client.as_deref() == Some("coder")));
    let client = poll(Duration::from_secs(5), || async {
        let c = app.clients().await.into_iter().find(|c| c["name"] == "coder")?;
        (c["requests_today"] == 2).then_some(c)
    })
    .await;
    assert_eq!(client["tokens_today"], 2 * CHAT_USAGE.2, "the translated calls' tokens count");
}

#[actix_web::test]
async fn fifty_concurrent_streams_cannot_spend_past_a_token_limit() {
    let app = app_with_key().await;
    let key = app.client_key(json!({"name": "burst", "daily_tokens": 100})).await;
    // Every call is in flight at once: the upstream takes 300 ms to answer.
    app.fake.set_header_delay(Duration::from_millis(300));
    let body = json!({"model": "m", "stream": true, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let answers = futures_util::future::join_all(
        (0..50).map(|_| app.call_as(&key, "/v1/chat/completions", body.clone())),
    )
    .await;
    let served = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(served + refused.len(), 50);
    // Each call reserves its input (~30 tokens) and its max_tokens (20): a
    // call is let in while the tokens used and reserved leave room.
    assert!((1..=3).contains(&served), "{served} served");
    assert!(
        refused
            .iter()
            .all(|r| r.header("retry-after").as_deref() == Some("1") && text(r).contains("reserved")),
        "{}",
        text(refused[0])
    );
    app.flush_logs().await;
    let used = app.clients().await[0]["tokens_today"].as_i64().unwrap();
    let rows = app.logs().await;
    assert_eq!(rows.len(), served, "one row per call served; the refused ones left none");
    assert_eq!(used, rows.iter().map(|r| r.total_tokens).sum::<i64>());
    assert!(used <= 100, "{used} tokens of 100");
    // Once they end, the reservations are given back: the next call is let in.
    app.fake.set_header_delay(Duration::ZERO);
    assert_eq!(app.call_as(&key, "/v1/chat/completions", body).await.status, 200);
}

#[actix_web::test]
async fn a_clients_files_batches_and_video_jobs_are_unknown_to_every_other_client() {
    use crate::fake::multipart;
    let app = app_with_key().await;
    let alice = app.client_key(json!({"name": "alice"})).await;
    let bob = app.client_key(json!({"name": "bob"})).await;
    let get_as = |key: &str, path: &str| {
        let req = app.client.get(app.url(path)).insert_header(("Authorization", format!("Bearer {key}")));
        app.send(req, None)
    };
    let jsonl = br#"{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#;
    let body = multipart("fb", &[("purpose", "batch")], ("file", "batch.jsonl", jsonl));
    let r = app.upload_as(&alice, "/v1/files", "fb", body).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let file = r.json()["data"]["id"].as_str().unwrap().to_string();
    let batch_body =
        json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let r = app.call_as(&alice, "/v1/batches", batch_body.clone()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let batch = r.json()["id"].as_str().unwrap().to_string();
    let r = app
        .call_as(&alice, "/v1/video/submit", json!({"model": "Wan-AI/Wan2.1-T2V-14B", "prompt": "a cat"}))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let video = r.json()["requestId"].as_str().unwrap().to_string();

    // Alice reaches all three.
    assert_eq!(get_as(&alice, &format!("/v1/batches/{batch}")).await.status, 200);
    assert_eq!(app.call_as(&alice, "/v1/video/status", json!({"requestId": video})).await.status, 200);

    // Bob: 404 for each, as for an id never seen; nothing reaches the upstream.
    let seen = app.fake.seen().len();
    let r = get_as(&bob, &format!("/v1/batches/{batch}")).await;
    assert_eq!(r.status, 404, "{}", text(&r));
    let unknown = text(&r);
    assert!(unknown.contains("unknown batch"), "{unknown}");
    assert_eq!(app.call_as(&bob, &format!("/v1/batches/{batch}/cancel"), json!({})).await.status, 404);
    assert_eq!(app.call_as(&bob, "/v1/batches", batch_body).await.status, 404, "a batch on Alice's file");
    assert_eq!(app.call_as(&bob, "/v1/video/status", json!({"requestId": video})).await.status, 404);
    assert_eq!(app.fake.seen().len(), seen, "none of Bob's calls went upstream");

    // Lists: each client sees its own; API_KEY's client sees every one.
    let ids = |v: Value, pointer: &str| -> Vec<String> {
        v.pointer(pointer)
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(get_as(&alice, "/v1/files").await.json(), "/data/data"), vec![file.clone()]);
    assert!(ids(get_as(&bob, "/v1/files").await.json(), "/data/data").is_empty());
    assert_eq!(ids(get_as(&alice, "/v1/batches").await.json(), "/data"), vec![batch.clone()]);
    assert!(ids(get_as(&bob, "/v1/batches").await.json(), "/data").is_empty());
    assert_eq!(ids(get_as(CLIENT_KEY, "/v1/batches").await.json(), "/data"), vec![batch.clone()]);
    assert_eq!(get_as(CLIENT_KEY, &format!("/v1/batches/{batch}")).await.status, 200, "env sees all");
}

/// A batch's tokens count against the client that created it, once, when
/// the upstream reports the batch completed with its usage: on the row of
/// the read that learned them (whoever read it), in the client's tokens of
/// the day, and so against its daily_tokens.
#[actix_web::test]
async fn a_completed_batchs_tokens_count_once_against_the_client_that_created_it() {
    use crate::fake::multipart;
    let app = app_with_key().await;
    let alice = app.client_key(json!({"name": "alice", "daily_tokens": 4000})).await;
    let jsonl = br#"{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#;
    let r = app
        .upload_as(
            &alice,
            "/v1/files",
            "fb",
            multipart("fb", &[("purpose", "batch")], ("file", "b.jsonl", jsonl)),
        )
        .await;
    let file = r.json()["data"]["id"].as_str().unwrap().to_string();
    let r = app
        .call_as(
            &alice,
            "/v1/batches",
            json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let batch = r.json()["id"].as_str().unwrap().to_string();
    let get_as = |key: &str| {
        let req = app
            .client
            .get(app.url(&format!("/v1/batches/{batch}")))
            .insert_header(("Authorization", format!("Bearer {key}")));
        app.send(req, None)
    };
    let tokens_today = || async {
        let clients = app.admin_get("/api/clients").await.json();
        let alice =
            clients["clients"].as_array().unwrap().iter().find(|c| c["name"] == "alice").cloned().unwrap();
        alice["tokens_today"].as_i64().unwrap()
    };
    // Running: nothing to count.
    assert_eq!(get_as(&alice).await.json()["status"], "in_progress");
    assert_eq!(tokens_today().await, 0);
    // Completed with 4,200 tokens: read by API_KEY's client first, then
    // again; counted once, against Alice.
    app.fake
        .complete_batch(&batch, json!({"input_tokens": 3000, "output_tokens": 1200, "total_tokens": 4200}));
    for _ in 0..2 {
        let r = get_as(CLIENT_KEY).await;
        assert_eq!(r.json()["status"], "completed", "passed on as it is: {}", text(&r));
    }
    assert_eq!(tokens_today().await, 4200);
    let reads: Vec<_> =
        app.logs().await.into_iter().filter(|r| r.endpoint == format!("/v1/batches/{batch}")).collect();
    assert_eq!(reads.iter().map(|r| r.total_tokens).collect::<Vec<_>>(), vec![0, 4200, 0]);
    assert_eq!(reads[1].client.as_deref(), Some("alice"), "the row that recorded them names the owner");
    assert_eq!(reads[2].client.as_deref(), Some("env"));
    assert_eq!((reads[1].input_tokens, reads[1].output_tokens), (3000, 1200));
    // 4,200 of its 4,000: Alice's calls are refused for today.
    let r = app.chat_as(&alice, "m").await;
    assert_eq!(r.status, 429, "{}", text(&r));
    assert!(text(&r).contains("4000 tokens for today"), "{}", text(&r));
}

#[actix_web::test]
async fn a_model_off_the_list_is_refused_however_the_upload_writes_its_model_field() {
    let app = spawn_app_with(&[("FAILOVER_BUFFER_BYTES", "4096")]).await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.import(&[KA]).await;
    let key = app.client_key(json!({"name": "qwen-only", "models": ["Qwen/*"]})).await;
    let upload = |body: Vec<u8>| app.upload_as(&key, "/v1/audio/transcriptions", "B", body);
    let part = |disposition: &str, value: &[u8]| {
        let mut p = format!("--B\r\nContent-Disposition: {disposition}\r\n\r\n").into_bytes();
        p.extend_from_slice(value);
        p.extend_from_slice(b"\r\n");
        p
    };
    let audio = b"RIFF0000WAVEfmt ".to_vec();
    let refused_model = b"FunAudioLLM/SenseVoiceSmall";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unquoted",
            [
                part("form-data; name=model", refused_model),
                part("form-data; name=\"file\"; filename=\"a.wav\"", &audio),
            ]
            .concat(),
        ),
        (
            "the parameter in capitals",
            [
                part("form-data; NAME=\"model\"", refused_model),
                part("form-data; name=\"file\"; filename=\"a.wav\"", &audio),
            ]
            .concat(),
        ),
        (
            "a file named model first",
            [
                part("form-data; name=\"file\"; filename=\"model\"", b"Qwen/Qwen3-8B"),
                part("form-data; name=\"model\"", refused_model),
            ]
            .concat(),
        ),
        (
            "bytes beyond ASCII in the part's header",
            [
                part("form-data; name=\"model\"; x=\"\u{e9}\"", refused_model),
                part("form-data; name=\"file\"; filename=\"a.wav\"", &audio),
            ]
            .concat(),
        ),
        (
            "named twice, its own model first",
            [
                part("form-data; name=\"model\"", b"Qwen/Qwen3-8B"),
                part("form-data; name=\"model\"", refused_model),
                part("form-data; name=\"file\"; filename=\"a.wav\"", &audio),
            ]
            .concat(),
        ),
        ("no model at all", part("form-data; name=\"file\"; filename=\"a.wav\"", &audio)),
        // Over the 4 KiB failover buffer, the model after the file: the first
        // chunk names none, and the key is held to a list.
        (
            "after a big file",
            [
                part("form-data; name=\"file\"; filename=\"a.wav\"", &vec![b'x'; 64 * 1024]),
                part("form-data; name=\"model\"", refused_model),
            ]
            .concat(),
        ),
    ];
    for (what, mut body) in cases {
        body.extend_from_slice(b"--B--\r\n");
        let r = upload(body).await;
        assert_eq!(r.status, 403, "{what}: {}", text(&r));
    }
    assert_eq!(app.fake.count("/v1/audio/transcriptions"), 0, "no refused upload reached the upstream");
    // Its own model, written any way, is served.
    let mut ok = [
        part("form-data; NAME=model", b"Qwen/Qwen3-8B"),
        part("form-data; name=\"file\"; filename=\"a.wav\"", &audio),
    ]
    .concat();
    ok.extend_from_slice(b"--B--\r\n");
    assert_eq!(upload(ok).await.status, 200);
    // An alias renames the field the parser read, not a file named "model".
    let put = json!({"aliases": [{"pattern": "whisper-*", "model": "Qwen/Qwen3-8B"}]});
    assert_eq!(app.admin_send("PUT", "/api/aliases", Some(put)).await.status, 200);
    let mut aliased = [
        part("form-data; name=\"file\"; filename=\"model\"", b"whisper-1 stays in the file"),
        part("form-data; name=model", b"whisper-1"),
    ]
    .concat();
    aliased.extend_from_slice(b"--B--\r\n");
    assert_eq!(upload(aliased).await.status, 200);
    let sent = app.fake.seen().into_iter().rev().find(|s| s.path == "/v1/audio/transcriptions").unwrap();
    let sent = String::from_utf8_lossy(&sent.body).to_string();
    assert!(
        sent.contains("whisper-1 stays in the file") && sent.contains("\r\n\r\nQwen/Qwen3-8B\r\n"),
        "{sent}"
    );
}

#[actix_web::test]
async fn a_batch_file_naming_a_model_off_the_list_is_refused_at_upload() {
    use crate::fake::multipart;
    let app = spawn_app_with(&[("FAILOVER_BUFFER_BYTES", "65536")]).await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.import(&[KA]).await;
    let key = app.client_key(json!({"name": "qwen-only", "models": ["Qwen/*"]})).await;
    let upload = |file: Vec<u8>| {
        let body = multipart("fb", &[("purpose", "batch")], ("file", "batch.jsonl", &file));
        app.upload_as(&key, "/v1/files", "fb", body)
    };
    let line = |model: &str| {
        format!(
            r#"{{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[]}}}}"#
        )
    };
    // Its own models only: uploaded.
    let ok = [line("Qwen/Qwen3-8B"), line("Qwen/Qwen2.5-7B-Instruct")].join("\n");
    let r = upload(ok.into_bytes()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    // A third line naming another model: refused, the line named, nothing sent.
    let before = app.fake.count("/v1/files");
    let bad = [line("Qwen/Qwen3-8B"), String::new(), line("deepseek-ai/DeepSeek-V3")].join("\n");
    let r = upload(bad.into_bytes()).await;
    assert_eq!(r.status, 403, "{}", text(&r));
    assert!(text(&r).contains("line 3") && text(&r).contains("deepseek-ai/DeepSeek-V3"), "{}", text(&r));
    // A line that names no model: 400, said which.
    let r = upload(b"{\"custom_id\":\"1\"}".to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(text(&r).contains("line 1"), "{}", text(&r));
    // Too big to be read here: refused for a key held to a list.
    let big = vec![line("Qwen/Qwen3-8B"); 2000].join("\n");
    assert_eq!(upload(big.into_bytes()).await.status, 403);
    assert_eq!(app.fake.count("/v1/files"), before, "no refused file reached the upstream");
}

#[actix_web::test]
async fn a_batch_counts_as_its_lines_against_daily_requests() {
    use crate::fake::multipart;
    let app = app_with_key().await;
    let key = app.client_key(json!({"name": "batcher", "daily_requests": 8})).await;
    let upload = |lines: usize| {
        let line = r#"{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":"Qwen/Qwen3-8B","messages":[]}}"#;
        let file = vec![line; lines].join("\n");
        let body = multipart("fb", &[("purpose", "batch")], ("file", "b.jsonl", file.as_bytes()));
        app.upload_as(&key, "/v1/files", "fb", body)
    };
    let batch = |file: String| {
        let body =
            json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
        app.call_as(&key, "/v1/batches", body)
    };
    // Two uploads (2 requests), then a batch of 5 lines: 7 of 8.
    let five = upload(5).await.json()["data"]["id"].as_str().unwrap().to_string();
    let four = upload(4).await.json()["data"]["id"].as_str().unwrap().to_string();
    let r = batch(five).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(app.clients().await[0]["requests_today"], 7);
    // A batch of 4 lines does not fit in the one request left: 429, nothing sent.
    let before = app.fake.count("/v1/batches");
    let r = batch(four).await;
    assert_eq!(r.status, 429, "{}", text(&r));
    assert!(text(&r).contains("counts as 4 requests") && text(&r).contains("1 of its 8"), "{}", text(&r));
    assert_eq!(app.fake.count("/v1/batches"), before);
    assert_eq!(app.clients().await[0]["requests_today"], 7, "a refused batch counts nothing");
}

/// A fresh client secret is in the answer once: no cache may keep it.
#[actix_web::test]
async fn answers_that_carry_a_client_secret_are_not_stored() {
    let app = app_with_key().await;
    let r = app.admin_post("/api/clients", json!({"name": "cached"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let id = r.json()["id"].as_i64().unwrap();
    let r = app.admin_send("POST", &format!("/api/clients/{id}/rotate"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["key"].as_str().is_some_and(|k| k.starts_with("sk-")));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
}
