use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::fake::{Mode, CHAT_USAGE};
use crate::helpers::{spawn_app, spawn_app_with, TestApp, CLIENT_KEY};
use crate::{KA, KB, KC, KD};

async fn app_with(strategy: &str, keys: &[(&str, &str, &str, Mode)]) -> TestApp {
    let app = spawn_app_with(&[("KEY_STRATEGY", strategy)]).await;
    for (k, acct, bal, mode) in keys {
        app.fake.add_key(k, acct, bal, mode.clone());
    }
    let names: Vec<&str> = keys.iter().map(|k| k.0).collect();
    app.import(&names).await;
    app.fake.clear_seen();
    app
}

fn counts(keys: Vec<String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[actix_web::test]
async fn chat_is_forwarded_with_a_pool_key_and_logged_with_its_usage() {
    let app = app_with("balance", &[(KA, "a1", "5", Mode::Ok), (KB, "a2", "50", Mode::Ok)]).await;
    let req = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("X-Trace-Id", "trace-abc"))
        .insert_header(("Cookie", "session=secret"));
    let r = app.send(req, Some(json!({"model": "Qwen/Qwen3-8B", "messages": []}).to_string().into())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["usage"]["total_tokens"], CHAT_USAGE.2);
    assert_eq!(r.header("x-siliconcloud-trace-id").as_deref(), Some("fake-trace-1"), "trace header back");
    assert_eq!(r.header("x-echo-trace-id").as_deref(), Some("trace-abc"), "trace header forth");
    let seen = app.fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].key, KB, "balance strategy picks the richest key");
    assert!(!seen[0].headers.contains_key("cookie"));
    assert!(
        !seen[0].headers.values().any(|v| v.contains(CLIENT_KEY)),
        "client key never reaches the upstream"
    );

    let logs = app.logs().await;
    assert_eq!(logs.len(), 1);
    let l = &logs[0];
    assert_eq!((l.input_tokens, l.output_tokens, l.total_tokens), CHAT_USAGE);
    assert_eq!((l.status, l.attempts, l.stream, l.aborted), (200, 1, false, false));
    assert_eq!(l.model, "Qwen/Qwen3-8B");
    assert_eq!(l.endpoint, "/v1/chat/completions");
    assert!(l.key_masked.starts_with("sk-bbbb") && !l.key_masked.contains(KB));
}

#[actix_web::test]
async fn embeddings_rerank_messages_and_models_are_forwarded() {
    let app = app_with("balance", &[(KA, "a1", "5", Mode::Ok)]).await;
    let r = app.call("/v1/embeddings", json!({"model": "BAAI/bge-m3", "input": "hello"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["object"], "embedding");
    let r = app
        .call("/v1/rerank", json!({"model": "BAAI/bge-reranker-v2-m3", "query": "q", "documents": ["a"]}))
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .call(
            "/v1/messages",
            json!({"model": "deepseek-ai/DeepSeek-V3", "max_tokens": 10, "messages": [{"role":"user","content":"hi"}]}),
        )
        .await;
    assert_eq!(r.json()["type"], "message");
    let req = app
        .client
        .get(app.url("/v1/models?type=text&sub_type=chat"))
        .insert_header(("x-api-key", CLIENT_KEY));
    let r = app.send(req, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["query"], "type=text&sub_type=chat", "query string kept");
    let req = app.client.get(app.url("/v1/user/models?type=image")).insert_header(("x-api-key", CLIENT_KEY));
    let r = app.send(req, None).await;
    assert_eq!(r.json()["query"], "type=image");
    assert_eq!(app.fake.seen().last().unwrap().path, "/v1/models");

    let logs = app.logs().await;
    let tokens: Vec<(String, i64, i64, i64)> =
        logs.iter().map(|l| (l.endpoint.clone(), l.input_tokens, l.output_tokens, l.total_tokens)).collect();
    assert_eq!(tokens[0], ("/v1/embeddings".into(), 5, 0, 5));
    assert_eq!(tokens[1], ("/v1/rerank".into(), 9, 0, 9), "rerank's `tokens` object");
    assert_eq!(tokens[2], ("/v1/messages".into(), 13, 4, 17));
    assert_eq!(logs.len(), 5, "every call logged once");
}

#[actix_web::test]
async fn round_robin_least_used_random_and_weighted_strategies() {
    let keys = [(KA, "a1", "1", Mode::Ok), (KB, "a2", "1", Mode::Ok), (KC, "a3", "1", Mode::Ok)];
    let app = app_with("round_robin", &keys).await;
    for _ in 0..6 {
        assert_eq!(app.chat("m").await.status, 200);
    }
    let c = counts(app.fake.keys_for("/v1/chat/completions"));
    assert_eq!((c[KA], c[KB], c[KC]), (2, 2, 2), "round robin: {c:?}");

    let app = app_with("least_used", &keys).await;
    for _ in 0..6 {
        app.chat("m").await;
    }
    let c = counts(app.fake.keys_for("/v1/chat/completions"));
    assert_eq!((c[KA], c[KB], c[KC]), (2, 2, 2), "least used: {c:?}");

    let app = app_with(
        "random",
        &[(KA, "a1", "1", Mode::Ok), (KB, "a2", "1", Mode::Ok), (KD, "a4", "1", Mode::Unauthorized)],
    )
    .await;
    for _ in 0..30 {
        app.chat("m").await;
    }
    let c = counts(app.fake.keys_for("/v1/chat/completions"));
    assert!(
        c.contains_key(KA) && c.contains_key(KB) && !c.contains_key(KD),
        "random among usable keys: {c:?}"
    );

    let app = app_with("weighted", &[(KA, "a1", "1", Mode::Ok), (KB, "a2", "999", Mode::Ok)]).await;
    for _ in 0..40 {
        app.chat("m").await;
    }
    let c = counts(app.fake.keys_for("/v1/chat/completions"));
    assert!(c.get(KB).copied().unwrap_or(0) >= 36, "weighted by balance: {c:?}");
}

#[actix_web::test]
async fn failover_past_429_503_and_401_keys_then_skips_them() {
    // Richest first: KD 401, KC 429, KB 503, KA ok. MAX_ATTEMPTS 4.
    let app = spawn_app_with(&[("MAX_ATTEMPTS", "4")]).await;
    for (k, acct, bal) in [(KA, "a1", "10"), (KB, "a2", "20"), (KC, "a3", "30"), (KD, "a4", "40")] {
        app.fake.add_key(k, acct, bal, Mode::Ok);
    }
    app.import(&[KA, KB, KC, KD]).await;
    app.fake.set_mode(KD, Mode::Unauthorized);
    app.fake.set_mode(KC, Mode::RateLimited("TPM"));
    app.fake.set_mode(KB, Mode::Overloaded);
    app.fake.clear_seen();
    let r = app.chat("m").await;
    assert_eq!(r.status, 200);
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KD, KC, KB, KA]);
    let logs = app.logs().await;
    assert_eq!((logs[0].attempts, logs[0].status), (4, 200));
    assert!(logs[0].key_masked.starts_with("sk-aaaa"));

    // Next request: the 401 key is invalid and the 429 account cools; the 503 key is tried again.
    app.fake.clear_seen();
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KB, KA]);
    assert_eq!(app.key_state("sk-dddd").await, "invalid");
    assert_eq!(app.key_state("sk-cccc").await, "cooling");
    // The error text is written by the pool actor, after the answer: poll for it.
    let c = crate::helpers::poll(Duration::from_secs(5), || async {
        let keys = app.keys_json().await;
        keys.into_iter()
            .find(|k| k["key"].as_str().unwrap().starts_with("sk-cccc") && k["last_error"].as_str().is_some())
    })
    .await;
    assert!(c["cooling_until"].is_string() && c["last_error"].as_str().unwrap().contains("TPM"), "{c}");
    // Another model is not rate-limited on that account.
    app.fake.set_mode(KC, Mode::Ok);
    app.fake.clear_seen();
    assert_eq!(app.chat("other-model").await.status, 200);
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KC]);
}

#[actix_web::test]
async fn a_429_cools_every_key_of_that_account_for_that_model() {
    let app = app_with(
        "balance",
        &[
            (KA, "shared", "30", Mode::RateLimited("RPM")),
            (KB, "shared", "20", Mode::Ok),
            (KC, "other", "10", Mode::Ok),
        ],
    )
    .await;
    let r = app.chat("m").await;
    assert_eq!(r.status, 200);
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KA, KC], "KB shares KA's account: not tried");
    app.fake.clear_seen();
    for _ in 0..3 {
        app.chat("m").await;
    }
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KC, KC, KC]);
}

#[actix_web::test]
async fn all_keys_cooling_answers_429_with_retry_after_and_no_key_answers_503() {
    let app = spawn_app().await;
    let r = app.chat("m").await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("import"), "says why");

    app.fake.add_key(KA, "a1", "10", Mode::RateLimited("TPM"));
    app.import(&[KA]).await;
    let r = app.chat("m").await;
    assert_eq!(r.status, 429, "the upstream's own 429 once the last key is spent");
    assert!(String::from_utf8_lossy(&r.body).contains("TPM limit"));
    let r = app.chat("m").await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("rate-limited"));
    assert_eq!(app.fake.keys_for("/v1/chat/completions").len(), 1, "the cooling key was not asked again");
}

#[actix_web::test]
async fn exhausted_and_dead_keys_are_skipped_and_the_client_never_sees_their_401() {
    let app = app_with(
        "balance",
        &[(KA, "a1", "0", Mode::Ok), (KB, "a2", "5", Mode::Broke), (KC, "a3", "3", Mode::Broke402)],
    )
    .await;
    assert_eq!(app.key_state("sk-aaaa").await, "exhausted");
    let r = app.chat("m").await;
    assert_eq!(r.status, 503, "no key left: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        app.fake.keys_for("/v1/chat/completions"),
        vec![KB, KC],
        "the zero-balance key is never tried"
    );
    assert_eq!(app.key_state("sk-bbbb").await, "exhausted");
    assert_eq!(app.key_state("sk-cccc").await, "exhausted");
    let r = app.chat("m").await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("3 exhausted"));

    let app = app_with("balance", &[(KA, "a1", "5", Mode::Unauthorized)]).await;
    let r = app.chat("m").await;
    assert_eq!(r.status, 503, "a dead pool key is the proxy's problem, not a client 401");
    assert_eq!(r.json()["error"]["type"], "service_unavailable");
}

#[actix_web::test]
async fn client_errors_pass_through_once_without_failover() {
    let app = app_with("balance", &[(KA, "a1", "5", Mode::Ok), (KB, "a2", "3", Mode::Ok)]).await;
    let r = app.chat("bad-model").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 20012, "the upstream's body, unchanged");
    assert_eq!(app.fake.keys_for("/v1/chat/completions").len(), 1, "no retry on 400");
    let logs = app.logs().await;
    assert_eq!((logs[0].status, logs[0].attempts), (400, 1));
    // A 403 that is not about balance: another key may serve.
    app.fake.set_mode(KA, Mode::Forbidden);
    app.fake.clear_seen();
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KA, KB]);
    let keys = app.keys_json().await;
    let a = keys.iter().find(|k| k["key"].as_str().unwrap().starts_with("sk-aaaa")).unwrap();
    assert_eq!(
        a["state"], "cooling",
        "a model-level 403 cools the account for that model, it does not kill the key"
    );
    app.fake.clear_seen();
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(
        app.fake.keys_for("/v1/chat/completions"),
        vec![KB],
        "remembered: the forbidden key is not asked again"
    );
    app.fake.clear_seen();
    app.fake.set_mode(KA, Mode::Ok);
    assert_eq!(app.chat("another-model").await.status, 200);
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KA], "other models still use it");
}

#[actix_web::test]
async fn slow_headers_beyond_awcs_default_five_seconds_still_succeed() {
    let app = app_with("balance", &[(KA, "a1", "5", Mode::Ok)]).await;
    app.fake.set_header_delay(Duration::from_millis(5_500));
    let r = app.chat("m").await;
    assert_eq!(r.status, 200);
    assert_eq!(app.logs().await[0].total_tokens, CHAT_USAGE.2);
}

#[actix_web::test]
async fn an_unreachable_upstream_gives_502_in_the_callers_dialect_and_is_logged() {
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = app_with("balance", &[(KA, "a1", "5", Mode::Ok)]).await;
    let id = app.keys_json().await[0]["id"].as_i64().unwrap();
    // Point the key's account at the dead port through the database, then restart-free:
    // simplest is a second app whose base URL is the dead port, sharing the DB.
    let crate::helpers::TestApp { fake, dir, handle, .. } = app;
    handle.stop(true).await;
    let mut env = crate::helpers::base_env(&fake, &dir);
    env.insert("SILICONFLOW_BASE_URL".into(), format!("http://127.0.0.1:{port}"));
    let app = crate::helpers::start_with_env(fake, dir, env).await;
    let r = app.call("/v1/messages", json!({"model": "m", "max_tokens": 5, "messages": []})).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["type"], "error", "Anthropic shape");
    let logs = app.logs().await;
    assert_eq!(logs.last().unwrap().status, 502);
    assert!(logs.last().unwrap().error.as_deref().unwrap().contains("unreachable"));
    // A refresh against the dead upstream leaves the key as it was.
    let summary = app.admin_post("/refresh", json!({})).await.json();
    assert_eq!(summary["unchanged"], 1);
    let keys = app.keys_json().await;
    assert_eq!((keys[0]["id"].as_i64(), keys[0]["state"].as_str()), (Some(id), Some("active")));
}

#[actix_web::test]
async fn a_response_timeout_is_a_504_without_failover_so_nothing_is_billed_twice() {
    let app = spawn_app_with(&[("UPSTREAM_TIMEOUT", "1")]).await;
    app.fake.add_key(KA, "a1", "20", Mode::Ok);
    app.fake.add_key(KB, "a2", "10", Mode::Ok);
    app.import(&[KA, KB]).await;
    app.fake.clear_seen();
    app.fake.set_header_delay(Duration::from_millis(1_600));
    let r = app.chat("m").await;
    assert_eq!(r.status, 504);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("UPSTREAM_TIMEOUT"));
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KA], "not retried on another key");
    let logs = app.logs().await;
    assert_eq!((logs[0].status, logs[0].attempts), (504, 1));
    assert_eq!(app.key_state("sk-aaaa").await, "active", "a slow answer says nothing about the key");
}

#[actix_web::test]
async fn no_balance_on_one_key_exhausts_every_key_of_its_account() {
    let app = app_with(
        "balance",
        &[
            (KA, "shared", "30", Mode::Broke),
            (KC, "shared", "25", Mode::Broke),
            (KB, "other", "10", Mode::Ok),
        ],
    )
    .await;
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(
        app.fake.keys_for("/v1/chat/completions"),
        vec![KA, KB],
        "KC shares KA's empty account: skipped"
    );
    assert_eq!(app.key_state("sk-cccc").await, "exhausted");
    assert_eq!(app.key_state("sk-aaaa").await, "exhausted");
}

#[actix_web::test]
async fn a_request_the_client_abandons_before_the_answer_is_dropped_and_logged_as_aborted() {
    let app = app_with("balance", &[(KA, "a1", "5", Mode::Ok)]).await;
    // The upstream would answer after 8 s; the client leaves after 0.2 s.
    app.fake.set_header_delay(Duration::from_millis(8_000));
    let addr = app.address.clone();
    let left = std::time::Instant::now();
    actix_web::rt::task::spawn_blocking(move || {
        let s = crate::helpers::raw_chat(&addr, r#"{"model":"m","messages":[]}"#);
        std::thread::sleep(Duration::from_millis(200));
        drop(s);
    })
    .await
    .unwrap();
    // (A row in flight comes first, then its end.)
    let row = app.first_ended_row(Duration::from_secs(6)).await;
    // Logged long before the upstream would have answered: the call was
    // dropped with the client, not run on for nobody.
    assert!(left.elapsed() < Duration::from_secs(6));
    assert_eq!(row.model, "m");
    assert!(row.aborted, "{row:?}");
    assert_eq!(row.total_tokens, 0, "{row:?}");
    assert_eq!(app.fake.keys_for("/v1/chat/completions").len(), 1, "it had reached the upstream");
}

/// The upstream client keeps one codec configuration per thread (see
/// vendor/awc/PATCHED.md) instead of building one, with its own date timer,
/// per request. The `date` header it sends must still be current, and move.
#[actix_web::test]
async fn upstream_requests_carry_a_current_date_header_that_keeps_moving() {
    let app = app_with("balance", &[(KA, "a1", "5", Mode::Ok)]).await;
    let date_of_last_call = || async {
        let r = app.chat("Qwen/Qwen3-8B").await;
        assert_eq!(r.status, 200);
        let seen = app.fake.seen();
        let date = seen.last().and_then(|s| s.headers.get("date").cloned()).expect("a date header");
        let at = httpdate::parse_http_date(&date).expect("an HTTP date");
        let skew = std::time::SystemTime::now().duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(skew <= Duration::from_secs(2), "date {date} is {skew:?} off");
        date
    };
    let first = date_of_last_call().await;
    // The per-thread date service ticks every 500 ms: a later call sees a later date.
    crate::helpers::poll(Duration::from_secs(5), || async {
        let d = date_of_last_call().await;
        (d != first).then_some(())
    })
    .await;
}

/// Sends `body` as a chunked request in `pieces` separate writes (20 ms apart,
/// so they reach the proxy as separate reads); answers the raw response.
fn post_in_pieces(addr: &str, body: &str, pieces: &[usize]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut at: usize = 0;
    for &n in pieces.iter().chain(std::iter::once(&usize::MAX)) {
        let end = at.saturating_add(n).min(body.len());
        if end > at {
            // Byte offsets: a piece may end inside a UTF-8 character.
            write!(s, "{:x}\r\n", end - at).unwrap();
            s.write_all(&body.as_bytes()[at..end]).unwrap();
            s.write_all(b"\r\n").unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        at = end;
    }
    write!(s, "0\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[actix_web::test]
async fn a_body_that_arrives_in_pieces_is_forwarded_whole_and_the_limit_counts_every_piece() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "2000")]).await;
    app.fake.add_key(KA, "a1", "5", Mode::Ok);
    app.import(&[KA]).await;
    app.fake.clear_seen();
    let addr = app.address.trim_start_matches("http://").to_string();

    let body =
        json!({"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "héllo ".repeat(50)}]})
            .to_string();
    let (a, b) = (addr.clone(), body.clone());
    let raw =
        actix_web::rt::task::spawn_blocking(move || post_in_pieces(&a, &b, &[7, 100, 14])).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let seen = app.fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes(), "the upstream gets the body byte for byte");

    // Each piece is under the limit; together they are over it.
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(3000)}]}).to_string();
    let raw = actix_web::rt::task::spawn_blocking(move || post_in_pieces(&addr, &big, &[1500, 1500]))
        .await
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("request_too_large"), "{raw}");
    assert_eq!(app.fake.seen().len(), 1, "nothing over the limit reached the upstream");
}

#[actix_web::test]
async fn a_model_name_longer_than_256_bytes_is_refused_in_the_callers_dialect_and_never_stored() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "5", Mode::Ok);
    app.import(&[KA]).await;
    let long = "m".repeat(45_000);
    let r = app.call("/v1/chat/completions", json!({"model": long, "messages": []})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("at most 256 bytes"), "{:?}", r.json());
    let r = app.call("/v1/messages", json!({"model": long, "max_tokens": 5, "messages": []})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error", "Anthropic shape");
    assert_eq!(
        app.fake.count("/v1/chat/completions") + app.fake.count("/v1/messages"),
        0,
        "never sent upstream"
    );
    // 256 bytes is still a model name.
    let r = app.call("/v1/chat/completions", json!({"model": "m".repeat(256), "messages": []})).await;
    assert_eq!(r.status, 200);
    let rows = app.logs().await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.model.len() <= 256 && r.error.as_deref().unwrap_or("").len() <= 1000));
}
