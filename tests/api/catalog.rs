//! The model catalog (issue 31): shipped, overridden by the owner (the API,
//! `MODEL_CATALOG_FILE`), on every instance; `/v1/models` carrying windows;
//! context overflow in each dialect's form; `connect` printing each agent's
//! configuration from it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake::{Fake, Mode};
use crate::helpers::{base_env, poll, spawn_app, spawn_app_with, TestApp};
use crate::processes::Instance;
use crate::KA;

const V32: &str = "deepseek-ai%2FDeepSeek-V3.2";

impl TestApp {
    async fn models(&self) -> Vec<Value> {
        let r = self.admin_get("/api/models").await;
        assert_eq!(r.status, 200);
        r.json()["models"].as_array().cloned().unwrap_or_default()
    }
}

fn find<'a>(models: &'a [Value], id: &str) -> &'a Value {
    models.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("{id} in the catalog"))
}

#[actix_web::test]
async fn the_catalog_is_shipped_and_the_owner_overrides_adds_and_drops_entries() {
    let app = spawn_app().await;
    let models = app.models().await;
    assert!(models.len() >= 20, "{}", models.len());
    let v32 = find(&models, "deepseek-ai/DeepSeek-V3.2").clone();
    assert_eq!(v32["source"], "default");
    assert!(v32["context_window"].as_u64().unwrap() >= 65536, "{v32}");
    assert_eq!(find(&models, "Qwen/Qwen3-8B")["price"]["input"], 0, "free");
    let listed = app.admin_get("/api/models").await.json();
    assert!(
        !listed["default"]["date"].as_str().unwrap().is_empty()
            && !listed["default"]["sources"].as_array().unwrap().is_empty()
    );

    // An override: the fields given replace the shipped ones, the rest stay.
    let r = app
        .admin_send(
            "PUT",
            &format!("/api/models/{V32}"),
            Some(json!({"context_window": 32768, "price": {"output": 9.5}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let e = r.json();
    assert_eq!(
        (e["source"].clone(), e["context_window"].clone(), e["price"]["output"].clone()),
        (json!("custom"), json!(32768), json!(9.5))
    );
    assert_eq!(e["price"]["input"], v32["price"]["input"], "the other prices stay");
    assert_eq!(find(&app.models().await, "deepseek-ai/DeepSeek-V3.2")["context_window"], 32768);
    // A model the shipped catalog does not know, unencoded slashes too.
    let r = app
        .admin_send("PUT", "/api/models/acme/own-model", Some(json!({"context_window": 8192, "tools": true})))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(find(&app.models().await, "acme/own-model")["tools"], true);
    // Refused, saying why.
    for (body, why) in [
        (json!({"context_window": "big"}), "invalid type"),
        (json!({"max_output_tokens": 99999999}), "1 to"),
        (json!({"price": {"input": 0.0000001}}), "six decimals"),
        (json!({"colour": "red"}), "unknown field"),
    ] {
        let r = app.admin_send("PUT", &format!("/api/models/{V32}"), Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(why),
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Dropped: back to the shipped entry; an entry of its own is gone.
    let r = app.admin_send("DELETE", &format!("/api/models/{V32}"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"]["source"], "default");
    assert_eq!(
        find(&app.models().await, "deepseek-ai/DeepSeek-V3.2")["context_window"],
        v32["context_window"]
    );
    assert_eq!(app.admin_send("DELETE", &format!("/api/models/{V32}"), None).await.status, 404);
    assert_eq!(app.admin_send("DELETE", "/api/models/acme%2Fown-model", None).await.status, 200);
    assert!(!app.models().await.iter().any(|m| m["id"] == "acme/own-model"));
    // Only the admin.
    let r = app.client.get(app.url("/api/models")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[actix_web::test]
async fn v1_models_carries_each_known_models_window_and_aliases_their_targets() {
    let app = spawn_app_with(&[("MODEL_ALIASES", "claude-*=Qwen/Qwen3-8B")]).await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.import(&[KA]).await;
    let window = find(&app.models().await, "Qwen/Qwen3-8B")["context_window"].clone();
    let r = app
        .client
        .get(app.url("/v1/models"))
        .insert_header(("Authorization", format!("Bearer {}", crate::helpers::CLIENT_KEY)))
        .send()
        .await;
    let mut r = r.unwrap();
    let list: Value = serde_json::from_slice(&r.body().await.unwrap()).unwrap();
    let data = list["data"].as_array().unwrap();
    let qwen = data.iter().find(|m| m["id"] == "Qwen/Qwen3-8B").unwrap();
    assert_eq!(qwen["context_length"], window, "{qwen}");
    assert!(qwen["max_output_tokens"].as_u64().is_some());
    let alias = data.iter().find(|m| m["id"] == "claude-*").unwrap();
    assert_eq!(alias["context_length"], window, "an alias carries its target's: {alias}");
}

#[actix_web::test]
async fn model_catalog_file_entries_are_stored_at_start_and_a_bad_one_stops_it() {
    let fake = Fake::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.json");
    std::fs::write(&file, json!({"models": [{"id": "deepseek-ai/DeepSeek-V3.2", "context_window": 40000}, {"id": "acme/m", "max_output_tokens": 100}]}).to_string()).unwrap();
    let mut env = base_env(&fake, &dir);
    env.insert("MODEL_CATALOG_FILE".into(), file.display().to_string());
    let app = crate::helpers::start_with_env(fake, dir, env.clone()).await;
    let models = app.models().await;
    assert_eq!(find(&models, "deepseek-ai/DeepSeek-V3.2")["context_window"], 40000);
    assert_eq!(find(&models, "acme/m")["source"], "custom");
    // A bad entry: the start stops, naming it.
    std::fs::write(
        app.dir.path().join("catalog.json"),
        json!({"models": [{"id": "x/y", "context_window": -1}]}).to_string(),
    )
    .unwrap();
    let config = siliconflow_proxy::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = siliconflow_proxy::startup::Application::build_with_listener(config, listener)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("MODEL_CATALOG_FILE: entry 1 (x/y)"), "{e}");
}

/// Changes reach every instance (PostgreSQL).
#[actix_web::test]
async fn an_entry_changed_on_one_instance_is_in_effect_on_the_other() {
    if std::env::var("TEST_POSTGRES").ok().filter(|v| !v.is_empty()).is_none() {
        eprintln!("skipped: instances sharing a PostgreSQL database (set TEST_POSTGRES)");
        return;
    }
    let fake = Fake::start();
    let dir = tempfile::tempdir().unwrap();
    let env = base_env(&fake, &dir);
    let a = Instance::start(&env, dir.path(), "a").await;
    let b = Instance::start(&env, dir.path(), "b").await;
    let req = a
        .client
        .put(a.url(&format!("/api/models/{V32}")))
        .insert_header((
            "Authorization",
            crate::helpers::basic(crate::helpers::ADMIN_USER, crate::helpers::ADMIN_PASS),
        ))
        .insert_header(("Content-Type", "application/json"));
    let r = a.send(req, Some(bytes::Bytes::from(json!({"context_window": 12345}).to_string()))).await;
    assert_eq!(r.status, 200);
    poll(Duration::from_secs(5), || async {
        let models = b.admin_get("/api/models").await.json();
        let m = models["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "deepseek-ai/DeepSeek-V3.2")
            .cloned();
        (m?["context_window"] == 12345).then_some(())
    })
    .await;
}

/// SiliconFlow's overflow (either wording) in the form each dialect's
/// clients read: the code `context_length_exceeded` (chat, completions,
/// Responses), Anthropic's "prompt is too long: N tokens > M maximum".
#[actix_web::test]
async fn an_overflow_is_answered_in_each_dialects_form() {
    let app = crate::clients::app_with_key().await;
    let long = "word ".repeat(2000);
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "Qwen/tiny-window", "messages": [{"role": "user", "content": long}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "Qwen/tiny-window", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": long}]}),
        ),
        ("/v1/completions", json!({"model": "Qwen/tiny-window", "prompt": long})),
        ("/v1/responses", json!({"model": "Qwen/tiny-window", "input": long, "stream": true})),
    ] {
        let r = app.call(path, body).await;
        assert_eq!(r.status, 400, "{path}");
        let v = r.json();
        assert_eq!(v["error"]["code"], "context_length_exceeded", "{path}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("max_seq_len (1024)"), "{v}");
    }
    let r = app.call("/v1/messages", json!({"model": "Qwen/tiny-window", "max_tokens": 64, "messages": [{"role": "user", "content": long}]})).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("prompt is too long: ") && m.contains(" tokens > 1024 maximum"), "{m}");
    // Another 20015 (a bad parameter) stays as it came.
    let r = app
        .call(
            "/v1/chat/completions",
            json!({"model": "Qwen/tiny-window", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let rows = app.logs().await;
    assert_eq!(rows.iter().filter(|r| r.status == 400).count(), 5, "each logged with its status");
}

/// A prompt the catalog knows cannot fit is answered without an upstream call.
#[actix_web::test]
async fn a_prompt_well_past_the_catalogs_window_costs_no_upstream_call() {
    let app = crate::clients::app_with_key().await;
    let r = app
        .admin_send(
            "PUT",
            "/api/models/Qwen%2FQwen3-8B",
            Some(json!({"context_window": 2000, "max_output_tokens": 1000})),
        )
        .await;
    assert_eq!(r.status, 200);
    let long = "word ".repeat(5000);
    app.fake.clear_seen();
    let r = app.call("/v1/messages", json!({"model": "Qwen/Qwen3-8B", "max_tokens": 64, "messages": [{"role": "user", "content": long}]})).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"].as_str().unwrap().starts_with("prompt is too long: "),
        "{}",
        r.json()
    );
    let r = app
        .call(
            "/v1/chat/completions",
            json!({"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert_eq!(app.fake.seen().len(), 0, "no upstream call");
    // Within the window (the estimate's margin too): sent.
    let fits = "word ".repeat(1500);
    let r = app
        .call(
            "/v1/chat/completions",
            json!({"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": fits}]}),
        )
        .await;
    assert_eq!(r.status, 200);
}

/// `siliconflow-proxy connect` (the binary): each agent's configuration,
/// with the window of this database's catalog (the owner's entries too).
#[actix_web::test]
async fn connect_prints_each_agents_configuration_with_the_catalogs_window() {
    let app = spawn_app().await;
    let r =
        app.admin_send("PUT", &format!("/api/models/{V32}"), Some(json!({"context_window": 50000}))).await;
    assert_eq!(r.status, 200);
    let url = app.state.config.database.clone();
    let db = match &url {
        siliconflow_proxy::config::Database::Sqlite(p) => format!("sqlite://{}", p.display()),
        siliconflow_proxy::config::Database::Postgres(u) => u.clone(),
    };
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_siliconflow-proxy"));
        cmd.env_clear()
            .env("DATABASE_URL", &db)
            .env("HOST", "0.0.0.0")
            .env("PORT", "7898")
            .env("RUST_LOG", "error");
        if db.starts_with("postgres") {
            cmd.env("KEY_ENCRYPTION_KEY", crate::helpers::TEST_ENCRYPTION_KEY);
        }
        cmd.arg("connect").args(args).output().unwrap()
    };
    let out = run(&["codex", "--key", "sk-client"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let codex = String::from_utf8(out.stdout).unwrap();
    assert!(
        codex.contains("model_context_window = 50000\nmodel_auto_compact_token_limit = 45000\n"),
        "{codex}"
    );
    assert!(
        codex.contains("base_url = \"http://127.0.0.1:7898/v1\"")
            && codex.contains("experimental_bearer_token = \"sk-client\"")
    );
    let out = run(&["claude-code", "--url", "https://gw.example/", "--model", "deepseek-ai/DeepSeek-V3.2"]);
    let claude = String::from_utf8(out.stdout).unwrap();
    assert!(claude.contains("export ANTHROPIC_BASE_URL='https://gw.example'\n"), "{claude}");
    assert!(claude.contains("export CLAUDE_CODE_AUTO_COMPACT_WINDOW=100000\n"), "{claude}");
    let out = run(&["opencode", "--key", "k"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["provider"]["siliconflow-proxy"]["models"]["deepseek-ai/DeepSeek-V3.2"]["limit"]["context"],
        50000
    );
    let out = run(&["vim"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("codex, claude-code, opencode, qwen-code, gemini-cli")
    );
    let out = run(&["gemini-cli"]);
    assert_eq!(out.status.code(), Some(2), "not served yet: said");
}

/// The admin's Connect page: the same configurations, a key pasted in by POST.
#[actix_web::test]
async fn the_connect_page_shows_each_agents_configuration_and_takes_a_pasted_key() {
    let app = spawn_app().await;
    let cookie = app.login(crate::helpers::ADMIN_USER, crate::helpers::ADMIN_PASS).await.unwrap();
    let page = app.page("/admin/connect?model=Qwen/Qwen3-8B", &cookie).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        html.contains("model_context_window = ")
            && html.contains("opencode.json")
            && html.contains("OPENAI_MODEL"),
        "{html}"
    );
    assert!(html.contains("/static/copy.js") && html.contains("data-copy=\"connect-codex\""));
    assert!(html.contains("&lt;your client key&gt;"));
    let csrf = crate::admin_ui::csrf_of(&page);
    let shown = app
        .post_form(
            "/admin/connect",
            &cookie,
            &[("csrf", &csrf), ("model", "Qwen/Qwen3-8B"), ("key", "sk-pasted-key")],
        )
        .await;
    assert_eq!(shown.status, 200);
    assert!(String::from_utf8_lossy(&shown.body)
        .contains("experimental_bearer_token = &quot;sk-pasted-key&quot;"));
    let js = app.page("/static/copy.js", &cookie).await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
}
