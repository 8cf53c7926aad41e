//! Model aliases: clients ask for names SiliconFlow does not serve (the fake,
//! like the real one, answers `claude-*` and `gpt-*` with 400 code 20012);
//! an alias calls a model it serves, and the caller sees its own name back.

use serde_json::{json, Value};

use crate::fake::Mode;
use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::KA;

const TABLE: &str = "claude-*haiku*=Qwen/Qwen3-8B, claude-*=deepseek-ai/DeepSeek-V3, gpt-*=Qwen/Qwen3-8B";

async fn app_with_aliases() -> TestApp {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.import(&[KA]).await;
    let r = app
        .admin_send(
            "PUT",
            "/api/aliases",
            Some(json!({"aliases": [
                {"pattern": "claude-*haiku*", "model": "Qwen/Qwen3-8B"},
                {"pattern": "claude-*", "model": "deepseek-ai/DeepSeek-V3"},
                {"pattern": "gpt-*", "model": "Qwen/Qwen3-8B"},
            ]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    app
}

/// The model the fake was last asked for on `path`.
fn upstream_model(app: &TestApp, path: &str) -> String {
    let seen = app.fake.seen();
    let last = seen.iter().rev().find(|s| s.path == path).expect("a call upstream");
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    body["model"].as_str().unwrap_or_default().to_string()
}

/// Every `"model"` a streamed answer names.
fn streamed_models(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.get("model").or_else(|| v.get("message").and_then(|m| m.get("model"))).cloned())
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

#[actix_web::test]
async fn an_alias_calls_its_model_and_every_answer_names_the_alias() {
    let app = app_with_aliases().await;
    let messages = json!([{"role": "user", "content": "hi"}]);

    // Chat, whole and streamed.
    let r = app.call("/v1/chat/completions", json!({"model": "gpt-4o", "messages": messages})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["model"], "gpt-4o");
    assert_eq!(upstream_model(&app, "/v1/chat/completions"), "Qwen/Qwen3-8B");
    let r = app
        .call("/v1/chat/completions", json!({"model": "GPT-4o-mini", "stream": true, "messages": messages}))
        .await;
    assert_eq!(r.status, 200);
    let models = streamed_models(&r.body);
    assert!(models.len() >= 2 && models.iter().all(|m| m == "GPT-4o-mini"), "{models:?}");

    // Anthropic Messages, whole and streamed (the model is in message_start).
    let body = json!({"model": "claude-opus-4-8", "max_tokens": 64, "messages": messages});
    let r = app.call("/v1/messages", body.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["model"], "claude-opus-4-8");
    assert_eq!(upstream_model(&app, "/v1/messages"), "deepseek-ai/DeepSeek-V3");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = app.call("/v1/messages", streamed).await;
    assert_eq!(streamed_models(&r.body), vec!["claude-opus-4-8"], "{}", String::from_utf8_lossy(&r.body));

    // The Responses API: its answer names the alias, the chat call the model.
    let r = app.call("/v1/responses", json!({"model": "claude-haiku-4-5", "input": "hi"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["model"], "claude-haiku-4-5");
    assert_eq!(upstream_model(&app, "/v1/chat/completions"), "Qwen/Qwen3-8B");

    // Completions and embeddings too.
    let r =
        app.call("/v1/completions", json!({"model": "gpt-3.5-turbo-instruct", "prompt": "fn main"})).await;
    assert_eq!((r.status, r.json()["model"].clone()), (200, json!("gpt-3.5-turbo-instruct")));
    let r = app.call("/v1/embeddings", json!({"model": "gpt-embed", "input": "x"})).await;
    assert_eq!((r.status, r.json()["model"].clone()), (200, json!("gpt-embed")));

    // A name no alias matches goes as it is (and the upstream refuses it).
    let r = app.call("/v1/chat/completions", json!({"model": "o3", "messages": messages})).await;
    assert_eq!(r.status, 200, "the fake serves o3");
    assert_eq!(r.json()["model"], "o3");

    // The log keeps both names; the model filter finds either.
    let rows = app.logs().await;
    let aliased: Vec<_> = rows.iter().filter(|r| r.requested_model.is_some()).collect();
    assert_eq!(aliased.len(), 7, "{rows:?}");
    assert!(rows
        .iter()
        .any(|r| r.model == "deepseek-ai/DeepSeek-V3"
            && r.requested_model.as_deref() == Some("claude-opus-4-8")));
    assert!(rows.iter().any(|r| r.model == "o3" && r.requested_model.is_none()));
    let found = app.admin_get("/logs?model=claude").await.json();
    assert_eq!(found["total"], 3, "{found}");
    assert_eq!(found["logs"][0]["requested_model"].as_str().map(|m| m.starts_with("claude")), Some(true));
}

#[actix_web::test]
async fn a_clients_model_list_governs_the_model_called_and_the_model_list_shows_the_aliases() {
    let app = app_with_aliases().await;
    let client = app.create_client(json!({"name": "qwen-only", "models": ["Qwen/*"]})).await;
    let key = client["key"].as_str().unwrap();
    // gpt-* calls Qwen: allowed. claude-opus calls DeepSeek: refused, never sent.
    assert_eq!(app.chat_as(key, "gpt-4o").await.status, 200);
    let before = app.fake.count("/v1/chat/completions");
    let r = app.chat_as(key, "claude-opus-4-8").await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("deepseek-ai/DeepSeek-V3"), "names the model called");
    assert_eq!(app.fake.count("/v1/chat/completions"), before);

    let list = |r: crate::helpers::Resp| -> Vec<String> {
        r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
    };
    let everyone = list(
        app.send(
            app.client
                .get(app.url("/v1/models"))
                .insert_header(("Authorization", format!("Bearer {}", crate::helpers::CLIENT_KEY))),
            None,
        )
        .await,
    );
    for id in ["Qwen/Qwen3-8B", "deepseek-ai/DeepSeek-V3", "claude-*haiku*", "claude-*", "gpt-*"] {
        assert!(everyone.iter().any(|m| m == id), "{id} in {everyone:?}");
    }
    let limited = list(
        app.send(
            app.client.get(app.url("/v1/models")).insert_header(("Authorization", format!("Bearer {key}"))),
            None,
        )
        .await,
    );
    assert!(limited.contains(&"gpt-*".to_string()) && limited.contains(&"claude-*haiku*".to_string()));
    assert!(!limited.iter().any(|m| m == "claude-*" || m.starts_with("deepseek")), "{limited:?}");
}

#[actix_web::test]
async fn the_table_is_checked_edited_on_its_page_and_replaced_by_model_aliases_at_start() {
    let app = app_with_aliases().await;
    let got = app.admin_get("/api/aliases").await.json();
    assert_eq!(got["aliases"][2], json!({"pattern": "gpt-*", "model": "Qwen/Qwen3-8B"}));
    // Refused tables change nothing and say which rule is wrong.
    for (bad, says) in [
        (json!({"aliases": [{"pattern": "a", "model": "b"}, {"pattern": "", "model": "x"}]}), "alias 2"),
        (json!({"aliases": [{"pattern": "a", "model": "Qwen/*"}]}), "no *"),
        (json!({"aliases": "a=b"}), "expected"),
        (json!({"rules": []}), "expected"),
    ] {
        let r = app.admin_send("PUT", "/api/aliases", Some(bad)).await;
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains(says), "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(app.admin_get("/api/aliases").await.json(), got);
    // An empty table: names go as they are (and SiliconFlow refuses claude-*).
    let r = app.admin_send("PUT", "/api/aliases", Some(json!({"aliases": []}))).await;
    assert_eq!(r.status, 200);
    let r = app.chat("claude-opus-4-8").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 20012);

    // Configured as code: MODEL_ALIASES replaces the stored table at start.
    let app = spawn_app_with(&[("MODEL_ALIASES", TABLE)]).await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.import(&[KA]).await;
    let got = app.admin_get("/api/aliases").await.json();
    assert_eq!(got["aliases"].as_array().map(Vec::len), Some(3), "{got}");
    assert_eq!(app.chat("claude-3-5-haiku-latest").await.json()["model"], "claude-3-5-haiku-latest");
    assert_eq!(upstream_model(&app, "/v1/chat/completions"), "Qwen/Qwen3-8B");
}

#[actix_web::test]
async fn the_aliases_page_shows_the_table_and_saves_it_whole() {
    use crate::admin_ui::{csrf_of, text as page_text};
    let app = app_with_aliases().await;
    let cookie = app.login("admin", crate::helpers::ADMIN_PASS).await.unwrap();
    let page = app.page("/admin/aliases", &cookie).await;
    assert_eq!(page.status, 200);
    let html = page_text(&page);
    assert!(html.contains("claude-*haiku* = Qwen/Qwen3-8B\nclaude-* = deepseek-ai/DeepSeek-V3\n"), "{html}");
    let csrf = csrf_of(&page);

    // Without the CSRF token: refused, nothing changed.
    let r = app.post_form("/admin/aliases", &cookie, &[("aliases", "a = b")]).await;
    assert_eq!(r.status, 403);
    // A line that is no rule: the page again, with the error and the text as typed.
    let typed = "# agents\nclaude-* = deepseek-ai/DeepSeek-V3\nnot a rule";
    let r = app.post_form("/admin/aliases", &cookie, &[("csrf", &csrf), ("aliases", typed)]).await;
    assert_eq!(r.status, 400);
    let html = page_text(&r);
    assert!(html.contains("not a rule&quot; is not pattern=model") && html.contains("# agents"), "{html}");
    assert_eq!(app.admin_get("/api/aliases").await.json()["aliases"].as_array().map(Vec::len), Some(3));

    // Saved whole: comments and blank lines skipped; the notice says how many.
    let r = app
        .post_form(
            "/admin/aliases",
            &cookie,
            &[("csrf", &csrf), ("aliases", "# agents\n\nclaude-* = Qwen/Qwen3-8B\n")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", page_text(&r));
    let after = app.page(&r.header("location").unwrap(), &cookie).await;
    assert!(page_text(&after).contains("Saved 1 alias"), "{}", page_text(&after));
    assert_eq!(
        app.admin_get("/api/aliases").await.json()["aliases"],
        json!([{"pattern": "claude-*", "model": "Qwen/Qwen3-8B"}])
    );
    assert_eq!(app.chat("claude-opus-4-8").await.json()["model"], "claude-opus-4-8");
    assert_eq!(upstream_model(&app, "/v1/chat/completions"), "Qwen/Qwen3-8B");
}
