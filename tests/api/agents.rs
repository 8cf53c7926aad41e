//! What coding agents rely on beyond the calls themselves: a probe of the
//! base URL, failures they do not retry, and unknown routes an owner can see.

use serde_json::json;

use crate::fake::Mode;
use crate::helpers::spawn_app;
use crate::KA;

#[actix_web::test]
async fn the_base_url_answers_a_head_probe_without_credentials() {
    let app = spawn_app().await;
    let r = app.send(app.client.head(app.url("/")), None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // GET / is still the login page.
    let r = app.send(app.client.get(app.url("/")), None).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("<form"), "the login page");
}

#[actix_web::test]
async fn the_proxys_own_401_and_403_tell_clients_not_to_retry() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.import(&[KA]).await;
    let body =
        json!({"model": "Qwen/Qwen3-8B", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        let r = app.call_as("wrong-key", path, body.clone()).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("x-should-retry").as_deref(), Some("false"), "{path}");
    }
    let limited = app.create_client(json!({"name": "deepseek-only", "models": ["deepseek-ai/*"]})).await;
    let key = limited["key"].as_str().unwrap();
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        let r = app.call_as(key, path, body.clone()).await;
        assert_eq!(r.status, 403, "{path}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-should-retry").as_deref(), Some("false"), "{path}");
    }
    // The upstream's own answers are passed as they are.
    let r = app.chat("gpt-4o").await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-should-retry"), None);
    assert_eq!(app.fake.count("/v1/chat/completions"), 1, "only the last call reached the upstream");
}

#[actix_web::test]
async fn an_unknown_v1_route_is_a_404_in_the_callers_dialect_and_counted() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let r = app.call("/v1/messages/batches", json!({})).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["type"], "error", "Anthropic's shape under /v1/messages");
    }
    let r = app.call("/v1/assistants", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let metrics = app.send(app.client.get(app.url("/metrics")), None).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("siliconflow_proxy_refusals_total{reason=\"unknown_endpoint\"} 4"),
        "{}",
        text.lines().filter(|l| l.contains("refusals")).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(app.logs().await.len(), 0, "no log row for a route that went nowhere");
}

#[actix_web::test]
async fn token_counts_are_estimated_here_without_a_pool_key_or_a_log_row() {
    let app = spawn_app().await;
    // No key in the pool at all: the count needs none.
    let fixtures: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../fixtures/count_tokens/fixtures.json")).unwrap();
    let agent = fixtures.iter().find(|f| f["name"] == "agent_with_tools").unwrap();
    let r = app.call("/v1/messages/count_tokens", agent["request"].clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let n = r.json()["input_tokens"].as_f64().unwrap();
    let real = agent["qwen"].as_f64().unwrap();
    assert!((n - real).abs() / real <= 0.15, "{n} against the real tokenizer's {real}");
    // Bad input: a 400 in Anthropic's shape.
    let r = app.call_raw("/v1/messages/count_tokens", "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = app.call("/v1/messages/count_tokens", json!({"model": "claude-opus-4-8"})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("messages"));
    // A wrong key: 401, told not to retry.
    let r = app.call_as("wrong", "/v1/messages/count_tokens", agent["request"].clone()).await;
    assert_eq!((r.status, r.header("x-should-retry").as_deref()), (401, Some("false")));
    assert!(app.fake.seen().is_empty(), "nothing reached the upstream");
    assert_eq!(app.logs().await.len(), 0, "and nothing was logged");
}
