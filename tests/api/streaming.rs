use std::io::Read;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::fake::{chat_stream_text, messages_stream_text, Mode, STREAM_USAGE};
use crate::helpers::{raw_chat, spawn_app, TestApp, CLIENT_KEY};
use crate::KA;

async fn one_key_app() -> TestApp {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a1", "5", Mode::Ok);
    app.import(&[KA]).await;
    app
}

#[actix_web::test]
async fn sse_passes_through_byte_for_byte_and_usage_is_the_last_running_total() {
    let app = one_key_app().await;
    let model = "deepseek-ai/DeepSeek-V3";
    let req = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
        .insert_header(("Content-Type", "application/json"));
    let mut resp = req
        .send_body(
            json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/event-stream"));
    let mut received = Vec::new();
    let mut reads = 0;
    while let Some(chunk) = resp.next().await {
        received.extend_from_slice(&chunk.unwrap());
        reads += 1;
    }
    assert_eq!(String::from_utf8(received).unwrap(), chat_stream_text(model, 12), "byte-exact");
    assert!(reads > 1, "streamed, not buffered whole");
    let logs = app.logs().await;
    assert_eq!(logs.len(), 1);
    let l = &logs[0];
    assert_eq!(
        (l.input_tokens, l.output_tokens, l.total_tokens),
        STREAM_USAGE,
        "last running total, not a sum"
    );
    assert!(l.stream && !l.aborted);
    assert!(l.ttfb_ms.is_some());
}

#[actix_web::test]
async fn anthropic_stream_usage_comes_from_message_start_and_message_delta() {
    let app = one_key_app().await;
    let r = app
        .call("/v1/messages", json!({"model": "m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), messages_stream_text("m"));
    let l = &app.logs().await[0];
    assert_eq!((l.input_tokens, l.output_tokens, l.total_tokens), (31, 12, 43));
    assert!(l.stream);
}

#[actix_web::test]
async fn a_stream_the_client_abandons_is_logged_as_aborted_with_usage_so_far() {
    let app = one_key_app().await;
    let addr = app.address.clone();
    let body = json!({"model": "slow-stream", "stream": true, "messages": []}).to_string();
    let got = actix_web::rt::task::spawn_blocking(move || {
        let mut s = raw_chat(&addr, &body);
        // Read until a few events have arrived, then hang up.
        let mut buf = vec![0u8; 4096];
        let mut seen = String::new();
        while seen.matches("data: ").count() < 3 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        drop(s);
        seen
    })
    .await
    .unwrap();
    assert!(got.starts_with("HTTP/1.1 200"));
    let row = app.first_ended_row(Duration::from_secs(15)).await;
    assert!(row.aborted, "{row:?}");
    assert!(row.stream);
    assert_eq!(row.input_tokens, STREAM_USAGE.0);
    assert!(row.output_tokens >= 1 && row.output_tokens < 100, "usage so far: {row:?}");
    assert!(row.error.as_deref().unwrap_or("").contains("client closed"));
}

#[actix_web::test]
async fn concurrent_requests_each_leave_exactly_one_row_with_exact_usage() {
    // Small batches, so the lock-free hand-over wakes the writer many times.
    let app = crate::helpers::spawn_app_with(&[("LOG_BATCH_SIZE", "7")]).await;
    app.fake.add_key(KA, "a1", "5", Mode::Ok);
    app.import(&[KA]).await;
    let calls = (0..120).map(|i| {
        let app = &app;
        async move {
            let r = app
                .call(
                    "/v1/chat/completions",
                    json!({"model": format!("m{}", i % 5), "stream": i % 2 == 0, "messages": []}),
                )
                .await;
            assert_eq!(r.status, 200);
        }
    });
    futures_util::future::join_all(calls).await;
    let logs = app.logs().await;
    assert_eq!(logs.len(), 120);
    let streamed = logs.iter().filter(|l| l.stream).count();
    assert_eq!(streamed, 60);
    assert!(logs.iter().all(|l| !l.aborted && l.status == 200));
    assert!(logs
        .iter()
        .filter(|l| l.stream)
        .all(|l| (l.input_tokens, l.output_tokens, l.total_tokens) == STREAM_USAGE));
    assert!(logs.iter().filter(|l| !l.stream).all(|l| l.total_tokens == crate::fake::CHAT_USAGE.2));
}

async fn idle_timeout_app() -> TestApp {
    let app = crate::helpers::spawn_app_with(&[("STREAM_IDLE_TIMEOUT", "1")]).await;
    app.fake.add_key(KA, "a1", "5", Mode::Ok);
    app.import(&[KA]).await;
    app
}

/// Reads a chat stream for `model` to its end (or its failure): what arrived,
/// and whether it ended cleanly.
async fn read_stream(app: &TestApp, model: &str) -> (String, bool) {
    let mut resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
        .insert_header(("Content-Type", "application/json"))
        .timeout(Duration::from_secs(20))
        .send_body(json!({"model": model, "stream": true, "messages": []}).to_string())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = Vec::new();
    while let Some(chunk) = resp.next().await {
        match chunk {
            Ok(c) => text.extend_from_slice(&c),
            Err(_) => return (String::from_utf8_lossy(&text).into_owned(), false),
        }
    }
    (String::from_utf8_lossy(&text).into_owned(), true)
}

#[actix_web::test]
async fn a_stream_slower_in_total_than_the_idle_timeout_but_never_silent_that_long_completes() {
    let app = idle_timeout_app().await;
    // Events 700 ms apart, 2.8 s in all, against a 1 s idle timeout.
    let (text, clean) = read_stream(&app, "steady-stream").await;
    assert!(clean, "the stream was cut: {text}");
    assert_eq!(text, chat_stream_text("steady-stream", 4));
    let row = app.first_ended_row(Duration::from_secs(10)).await;
    assert!(!row.aborted && row.error.is_none(), "{row:?}");
    assert_eq!((row.input_tokens, row.output_tokens, row.total_tokens), STREAM_USAGE);
}

#[actix_web::test]
async fn a_stream_silent_past_the_idle_timeout_is_ended_and_logged_with_usage_so_far() {
    let app = idle_timeout_app().await;
    let addr = app.address.clone();
    let body = json!({"model": "stall-stream", "stream": true, "messages": []}).to_string();
    let started = std::time::Instant::now();
    // Raw bytes, to see exactly how the answer ends.
    let raw = actix_web::rt::task::spawn_blocking(move || {
        let mut s = raw_chat(&addr, &body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(raw.matches("data: ").count(), 2, "the events before the silence arrive: {raw}");
    assert!(!raw.ends_with("0\r\n\r\n"), "a cut stream must not end like a complete one: {raw:?}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "ended after {took:?}");
    let row = app.first_ended_row(Duration::from_secs(10)).await;
    assert!(row.aborted && row.stream, "{row:?}");
    assert_eq!(row.error.as_deref(), Some("upstream sent nothing for 1 s"));
    assert_eq!((row.input_tokens, row.output_tokens), (STREAM_USAGE.0, 2), "usage so far: {row:?}");
}
