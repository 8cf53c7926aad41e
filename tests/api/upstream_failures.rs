//! What the upstream does wrong, and what the client and the log see: a 500
//! or a dropped connection is not sent again on another key, a cut answer
//! is an error and an aborted row, a pool key quoted in an error is masked.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::fake::Mode;
use crate::helpers::{poll, raw_chat, spawn_app, spawn_app_with};
use crate::{KA, KB, KC};

/// Reads a raw HTTP answer to the end of the connection.
fn read_all(mut s: std::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[actix_web::test]
async fn a_500_is_the_answer_not_a_reason_to_run_the_request_again_on_another_key() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "9", Mode::ServerError);
    app.fake.add_key(KB, "acct-2", "8", Mode::Ok);
    app.import(&[KA, KB]).await;
    let r = app.chat("m").await;
    assert_eq!(r.status, 500, "passed through once");
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), [KA], "the model may have run: no second key");
    // 503 (overloaded: it did not run) still fails over.
    app.fake.set_mode(KA, Mode::Overloaded);
    app.fake.clear_seen();
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), [KA, KB]);
}

/// An upstream on a bare socket: answers the key checks, and for every POST
/// reads the whole request and closes the connection without a word.
fn dying_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = posts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            if head.starts_with("post") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                continue; // dropped: closed with no answer
            }
            let body: &str =
                if head.starts_with("get /v1/models") { r#"{"object":"list","data":[]}"# } else { "" };
            let status = if body.is_empty() { "410 Gone" } else { "200 OK" };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, posts)
}

#[actix_web::test]
async fn a_connection_that_dies_after_the_request_was_written_is_not_retried_on_other_keys() {
    let (url, posts) = dying_upstream();
    let app = spawn_app_with(&[("SILICONFLOW_BASE_URL", &url)]).await;
    let body = app.import(&[KA, KB, KC]).await;
    assert_eq!(body["added"], 3, "{body}");
    let r = app.chat("m").await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("after the request was sent"));
    assert_eq!(posts.load(Ordering::SeqCst), 1, "sent once: it may be running (and billed) upstream");
    let rows = app.logs().await;
    assert_eq!((rows[0].status, rows[0].attempts), (502, 1));
}

#[actix_web::test]
async fn pool_keys_quoted_in_upstream_errors_are_masked_for_the_client_the_log_and_the_key() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "9", Mode::Echo(400));
    app.import(&[KA]).await;
    // A client error passed through.
    let r = app.chat("m").await;
    assert_eq!(r.status, 400);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(!text.contains(KA) && text.contains("sk-aaaa...0001"), "{text}");
    // A failover status that ends up being the answer, and the key's last error.
    app.fake.set_mode(KA, Mode::Echo(503));
    let r = app.chat("m").await;
    assert_eq!(r.status, 503);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(!text.contains(KA) && text.contains("sk-aaaa...0001"), "{text}");
    // The key's error is recorded by the pool actor, after the answer.
    let keys = poll(Duration::from_secs(10), || async {
        let keys = serde_json::to_string(&app.keys_json().await).unwrap();
        keys.contains("sk-aaaa...0001'").then_some(keys)
    })
    .await;
    assert!(!keys.contains(KA), "{keys}");
    for row in app.logs().await {
        let e = row.error.unwrap_or_default();
        assert!(!e.contains(KA) && e.contains("sk-aaaa...0001"), "{e}");
    }
}

#[actix_web::test]
async fn truncated_upstream_answers_are_errors_for_the_client_and_aborted_rows() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "9", Mode::Ok);
    app.import(&[KA]).await;

    // A stream whose upstream dies after 5 of 20 events: the client's
    // connection ends without the last chunk, so its SDK raises.
    let s = raw_chat(&app.address, r#"{"model":"cut-stream","stream":true,"messages":[]}"#);
    let raw = String::from_utf8_lossy(&read_all(s)).to_string();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert_eq!(raw.matches("data: {").count(), 5, "{raw}");
    assert!(!raw.ends_with("0\r\n\r\n"), "a clean end was sent for a cut stream: {raw:?}");

    // A body shorter than its Content-Length.
    let s = raw_chat(&app.address, r#"{"model":"short-body","messages":[]}"#);
    let raw = read_all(s);
    let text = String::from_utf8_lossy(&raw).to_string();
    let body_at = text.find("\r\n\r\n").unwrap() + 4;
    assert!(text.contains("content-length: 1000"), "{text}");
    assert_eq!(raw.len() - body_at, 12, "the 12 bytes that came, then the connection closed: {text:?}");

    let rows = app.logs().await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert!(row.aborted, "{row:?}");
        assert!(row.error.as_deref().unwrap_or("").contains("closed before the end of the body"), "{row:?}");
    }
    assert!(rows[0].output_tokens > 0, "usage so far is kept: {:?}", rows[0]);
}
