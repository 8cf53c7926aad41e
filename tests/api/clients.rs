//! Client keys: created by the owner, each with its models and limits,
//! checked on every call without the database, recorded in the log.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::fake::{Mode, CHAT_USAGE};
use crate::helpers::{poll, spawn_app, spawn_app_with, start_with_env, Resp, TestApp, CLIENT_KEY};
use crate::KA;

impl TestApp {
    async fn create_client(&self, body: Value) -> Value {
        let r = self.admin_post("/api/clients", body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    async fn admin_send(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let req = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .insert_header(("Authorization", crate::helpers::basic("admin", crate::helpers::ADMIN_PASS)))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, body.map(|b| Bytes::from(b.to_string()))).await
    }

    async fn call_as(&self, key: &str, path: &str, body: Value) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, Some(Bytes::from(body.to_string()))).await
    }

    async fn chat_as(&self, key: &str, model: &str) -> Resp {
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

async fn app_with_key() -> TestApp {
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
    let rpm =
        app.create_client(json!({"name": "per-minute", "rpm": 2})).await["key"].as_str().unwrap().to_string();
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

    let daily = app.create_client(json!({"name": "per-day", "daily_requests": 2})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.chat_as(&daily, "m").await.status, 200);
    assert_eq!(app.chat_as(&daily, "m").await.status, 200);
    let r = app.chat_as(&daily, "m").await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("daily_requests"), "{}", text(&r));
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&wait));

    // Tokens are counted from the metered usage; once used up, calls wait for tomorrow.
    let tokens = app.create_client(json!({"name": "tokens", "daily_tokens": CHAT_USAGE.2 + 1})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.chat_as(&tokens, "m").await.status, 200);
    assert_eq!(app.chat_as(&tokens, "m").await.status, 200, "1 token left: the call is let in");
    let r = app.chat_as(&tokens, "m").await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("daily_tokens"), "{}", text(&r));

    // Limits are per client: API_KEY's is unlimited.
    for _ in 0..5 {
        assert_eq!(app.chat("m").await.status, 200);
    }
    let listed = app.clients().await;
    let used =
        |name: &str| listed.iter().find(|c| c["name"] == name).unwrap()["requests_today"].as_i64().unwrap();
    assert_eq!(
        (used("per-minute"), used("per-day"), used("tokens")),
        (2, 2, 2),
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
    let key = app.create_client(json!({"name": "carol", "daily_requests": 3})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.chat_as("anything", "m").await.status, 401, "a client key now required");
    assert_eq!(app.chat_as(&key, "m").await.status, 200);
    assert_eq!(app.chat_as(&key, "m").await.status, 200);
    app.flush_logs().await;

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
