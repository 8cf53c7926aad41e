//! The third hardening pass (issue 30): what a tenant holding a limited
//! client key tried against the binary, each pinned through the proxy's own
//! binary on either backend (`TEST_POSTGRES` runs them on PostgreSQL).

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::fake::{Fake, Mode};
use crate::helpers::{base_env, poll};
use crate::processes::{count_in, Instance};
use crate::KA;

/// Runs statements on the test's database itself (either backend).
fn exec_in(url: &str, sql: &str) {
    use diesel::connection::SimpleConnection;
    match url.strip_prefix("sqlite://") {
        Some(path) => SqliteConnection::establish(path).unwrap().batch_execute(sql).unwrap(),
        None => PgConnection::establish(url).unwrap().batch_execute(sql).unwrap(),
    }
}

/// A binary with key KA imported, on a fresh database: (fake, folder, env, instance).
async fn started(
    extra: &[(&str, &str)],
) -> (Fake, tempfile::TempDir, std::collections::HashMap<String, String>, Instance) {
    let fake = Fake::start();
    fake.add_key(KA, "acct-a", "20", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(&fake, &dir);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let a = Instance::start(&env, dir.path(), "a").await;
    a.import(&[KA]).await;
    (fake, dir, env, a)
}

async fn client_key(a: &Instance, body: Value) -> String {
    let created = a.admin_post("/api/clients", body).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    created.json()["key"].as_str().unwrap().to_string()
}

/// Finding 1: a NUL byte in what a tenant sends (a Responses item type, a
/// model, an alias's requested name) reached a log row, PostgreSQL refused
/// the whole batch, and from then on no row of any tenant was written; at
/// SIGTERM every queued row was lost. Now each text is cleaned where rows are
/// built: every call has its row, the log stays healthy, and SIGTERM loses nothing.
#[actix_web::test]
async fn a_nul_byte_from_a_tenant_never_stops_the_request_log() {
    let (_fake, _dir, env, a) = started(&[("MODEL_ALIASES", "claude-*=Qwen/Qwen3-8B")]).await;
    let url = env["DATABASE_URL"].clone();
    let key = client_key(&a, json!({"name": "qwen", "models": ["Qwen/*"]})).await;
    let nul_item = r#"{"model":"Qwen/Qwen3-8B","input":[{"type":"x\u0000"}]}"#;
    let req = a
        .client
        .post(a.url("/v1/responses"))
        .insert_header(("Authorization", format!("Bearer {key}")))
        .insert_header(("Content-Type", "application/json"));
    let r = a.send(req, Some(bytes::Bytes::from(nul_item))).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let nul_model = json!({"model": "Qwen/x\u{0}", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(a.call_as(&key, "/v1/chat/completions", nul_model).await.status, 400);
    let nul_alias =
        json!({"model": "claude-\u{0}", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(a.call_as(&key, "/v1/messages", nul_alias).await.status, 400);
    for _ in 0..5 {
        assert_eq!(a.chat_as(&key).await.status, 403, "Qwen/* may not call `m`: refused, no row");
        let ok = json!({"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(a.call_as(&key, "/v1/chat/completions", ok).await.status, 200);
    }
    // Every call that was answered has its row (the 403s leave none), and the log is healthy.
    let logs = poll(Duration::from_secs(10), || async {
        let logs = a.admin_get("/logs?page_size=50").await.json();
        (logs["total"] == 8).then_some(logs)
    })
    .await;
    let health = a.health().await;
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["request_log"]["queued"], 0);
    assert_eq!(health["request_log"]["refused"], 0, "cleaned, not refused: {health}");
    let responses =
        logs["logs"].as_array().unwrap().iter().find(|r| r["endpoint"] == "/v1/responses").unwrap();
    let error = responses["error"].as_str().unwrap();
    assert!(error.contains('\u{FFFD}') && !error.contains('\u{0}'), "{error}");

    // Calls queued at SIGTERM are written, whatever came before them.
    for _ in 0..3 {
        let r = a
            .send(
                a.client
                    .post(a.url("/v1/responses"))
                    .insert_header(("Authorization", format!("Bearer {key}")))
                    .insert_header(("Content-Type", "application/json")),
                Some(bytes::Bytes::from(nul_item)),
            )
            .await;
        assert_eq!(r.status, 400);
    }
    unsafe { libc::kill(a.pid(), libc::SIGTERM) };
    let mut a = a;
    a.child.wait().unwrap();
    assert_eq!(count_in(&url, "SELECT count(*) AS n FROM request_logs"), 11, "{}", a.log_text());
}

/// Finding 1, the mechanism: a row the database refuses (here a trigger
/// refuses one model) is dropped, counted and said once; the other rows of
/// its batch, and every later batch, are written.
#[actix_web::test]
async fn a_row_the_database_refuses_is_dropped_and_the_rest_of_its_batch_lands() {
    let (_fake, _dir, env, a) = started(&[("LOG_FLUSH_MS", "1000")]).await;
    let url = env["DATABASE_URL"].clone();
    if url.starts_with("sqlite://") {
        exec_in(
            &url,
            "CREATE TRIGGER poison BEFORE INSERT ON request_logs WHEN NEW.model = 'Qwen/poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;",
        );
    } else {
        exec_in(
            &url,
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.model = 'Qwen/poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; \
             END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON request_logs \
               FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        );
    }
    // One flush interval holds them all: one batch.
    for model in ["Qwen/a", "Qwen/poison", "Qwen/b", "Qwen/poison", "Qwen/c"] {
        assert_eq!(a.chat(model).await.status, 200);
    }
    let health = poll(Duration::from_secs(10), || async {
        let h = a.health().await;
        (h["request_log"]["queued"] == 0 && h["request_log"]["refused"] == 2).then_some(h)
    })
    .await;
    assert_eq!(health["status"], "healthy", "{health}");
    let logs = a.admin_get("/logs?page_size=50").await.json();
    let models: Vec<&str> =
        logs["logs"].as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["Qwen/c", "Qwen/b", "Qwen/a"], "the batch's other rows, newest first");
    // The stats count what is in the log.
    let stats = a.admin_get("/api/stats/overview").await.json();
    assert_eq!(stats["total_calls"], 3, "{stats}");
    // Later batches go in; a batch of refused rows alone is kept until it can
    // be told from a database that takes nothing: the next good row.
    assert_eq!(a.chat("Qwen/poison").await.status, 200);
    assert_eq!(a.chat("Qwen/d").await.status, 200);
    poll(Duration::from_secs(10), || async {
        let h = a.health().await;
        (h["request_log"]["queued"] == 0 && h["request_log"]["refused"] == 3).then_some(())
    })
    .await;
    let said = a.log_text();
    let lines = said.lines().filter(|l| l.contains("the database refused")).count();
    assert_eq!(lines, 1, "said once, not once per row or batch:\n{said}");
    assert!(said.contains("poisoned row"), "the database's reason is said");
    let metrics = a.send(a.client.get(a.url("/metrics")), None).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(text.contains("siliconflow_proxy_log_rows_dropped_total 3"), "{text}");
}

/// Finding 3: `count_tokens` was an unmetered endpoint for any model. Now a
/// client's model list and rpm hold there; its daily quotas neither count
/// nor refuse it and no row is logged (it costs nothing upstream); its body
/// has a 4 MiB limit of its own.
#[actix_web::test]
async fn count_tokens_honours_the_model_list_and_rpm_but_not_daily_quotas_and_has_its_own_limit() {
    let (fake, _dir, _env, a) = started(&[("MODEL_ALIASES", "claude-*=Qwen/Qwen3-8B")]).await;
    let body =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    let ratelimited = client_key(&a, json!({"name": "slow", "models": ["Qwen/*"], "rpm": 1})).await;
    let r = a.call_as(&ratelimited, "/v1/messages/count_tokens", body("deepseek-ai/DeepSeek-R1")).await;
    assert_eq!(r.status, 403, "a model off its list: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["type"], "error", "in Anthropic's shape");
    let r = a.call_as(&ratelimited, "/v1/messages/count_tokens", body("claude-opus-4-8")).await;
    assert_eq!(r.status, 200, "an alias of a model on the list: {}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
    let r = a.call_as(&ratelimited, "/v1/messages/count_tokens", body("Qwen/Qwen3-8B")).await;
    assert_eq!(r.status, 429, "its rpm of 1 is spent");
    assert!(r.header("retry-after").is_some());

    let daily = client_key(&a, json!({"name": "daily", "daily_requests": 1, "daily_tokens": 100})).await;
    for i in 0..30 {
        let r = a.call_as(&daily, "/v1/messages/count_tokens", body("Qwen/Qwen3-8B")).await;
        assert_eq!(r.status, 200, "call {i}: daily quotas do not count it");
    }
    assert_eq!(a.chat_as(&daily).await.status, 200, "its one call of the day is still there");
    assert_eq!(a.chat_as(&daily).await.status, 429);
    assert_eq!(fake.count("/v1/messages/count_tokens"), 0, "never sent upstream");
    let clients = a.admin_get("/api/clients").await.json();
    let row = clients["clients"].as_array().unwrap().iter().find(|c| c["name"] == "daily").unwrap().clone();
    assert_eq!(row["requests_today"], 1, "{row}");
    let logs = poll(Duration::from_secs(10), || async {
        let logs = a.admin_get("/logs?page_size=50").await.json();
        (logs["total"].as_i64() >= Some(1)).then_some(logs)
    })
    .await;
    assert_eq!(logs["total"], 1, "only the chat call is logged: {logs}");

    // Its own body limit: 413 past 4 MiB, read or declared.
    let big = format!(
        r#"{{"model":"Qwen/Qwen3-8B","messages":[{{"role":"user","content":[{}0]}}]}}"#,
        "0,".repeat(2_200_000)
    );
    let req = a
        .client
        .post(a.url("/v1/messages/count_tokens"))
        .insert_header(("Authorization", format!("Bearer {}", crate::helpers::CLIENT_KEY)))
        .insert_header(("Content-Type", "application/json"));
    let r = a.send(req, Some(bytes::Bytes::from(big))).await;
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("COUNT_TOKENS_BODY_BYTES"));
    // Just under it, a million zeros are counted, not built into a tree.
    let fits = format!(
        r#"{{"model":"Qwen/Qwen3-8B","messages":[{{"role":"user","content":[{}0]}}]}}"#,
        "0,".repeat(2_000_000)
    );
    let req = a
        .client
        .post(a.url("/v1/messages/count_tokens"))
        .insert_header(("Authorization", format!("Bearer {}", crate::helpers::CLIENT_KEY)))
        .insert_header(("Content-Type", "application/json"));
    let r = a.send(req, Some(bytes::Bytes::from(fits))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
