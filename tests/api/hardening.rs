//! The adversarial pass (issue "Hardening"): each test reproduces one finding
//! through the real server and fails without its fix.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::fake::Mode;
use crate::helpers::{poll, raw_chat, spawn_app, spawn_app_with, ADMIN_PASS};
use crate::{KA, KB, KC};

/// Reads a raw HTTP answer to the end of the connection.
fn read_all(mut s: std::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
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

#[actix_web::test]
async fn csv_cells_that_a_spreadsheet_would_run_as_formulas_are_defused() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "5", Mode::Ok);
    app.import(&[KA]).await;
    for model in ["=HYPERLINK(\"http://x\")", "+1+cmd", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1"] {
        assert_eq!(
            app.call("/v1/chat/completions", json!({"model": model, "messages": []})).await.status,
            200
        );
    }
    app.flush_logs().await;
    let cookie = app.login("admin", ADMIN_PASS).await.expect("login");
    let csv = crate::admin_ui::text(&app.page("/admin/logs.csv", &cookie).await);
    for bad in ["=HYPERLINK", "+1+cmd", "-2+3", "@SUM", "\t=1+1", "\r=1+1"] {
        let at = csv.find(bad).unwrap_or_else(|| panic!("{bad:?} missing from {csv:?}"));
        let before = &csv[..at];
        assert!(before.ends_with(",'") || before.ends_with(",\"'"), "{bad:?} not defused: {csv:?}");
    }
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

// ---------------------------------------------------------------- admin requests

/// Opens a connection to the app at `address` and writes `text` on it.
fn send_raw(address: &str, text: &[u8]) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(address.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    s.write_all(text).unwrap();
    s
}

/// Reads until the end of an answer's head; returns it (lower-cased).
fn read_head(s: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).to_lowercase()
}

#[actix_web::test]
async fn admin_bodies_are_capped_and_read_only_after_the_credentials_are_checked() {
    let app = spawn_app_with(&[("ADMIN_BODY_BYTES", "2000")]).await;
    let addr = app.address.clone();
    let basic = crate::helpers::basic("admin", ADMIN_PASS);
    actix_web::rt::task::spawn_blocking(move || {
        // A 45 MB login: refused from its head, nothing read.
        let mut s = send_raw(&addr, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 47185920\r\n\r\nusername=a");
        assert!(read_head(&mut s).starts_with("http/1.1 413"));
        // An anonymous import: 401 at once, though its body never comes.
        let mut s = send_raw(&addr, b"POST /import_keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1500\r\n\r\n");
        assert!(read_head(&mut s).starts_with("http/1.1 401"), "credentials first");
        // Logged in, but over ADMIN_BODY_BYTES: declared, or sent in chunks.
        let head = format!("POST /import_keys HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\nContent-Type: application/json\r\nContent-Length: 2001\r\n\r\n");
        let mut s = send_raw(&addr, head.as_bytes());
        assert!(read_head(&mut s).starts_with("http/1.1 413"));
        let head = format!("POST /import_keys HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut s = send_raw(&addr, head.as_bytes());
        for _ in 0..3 {
            let _ = s.write_all(format!("3e8\r\n{}\r\n", "x".repeat(1000)).as_bytes());
        }
        assert!(read_head(&mut s).starts_with("http/1.1 413"));
    })
    .await
    .unwrap();
}

#[actix_web::test]
async fn a_client_that_stops_sending_its_body_gets_408() {
    let app = spawn_app_with(&[("BODY_READ_TIMEOUT", "1"), ("FAILOVER_BUFFER_BYTES", "1000")]).await;
    app.fake.add_key(KA, "acct-1", "5", Mode::Ok);
    app.import(&[KA]).await;
    let addr = app.address.clone();
    let key = crate::helpers::CLIENT_KEY;
    actix_web::rt::task::spawn_blocking(move || {
        let cases: [(String, &str); 3] = [
            ("POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=a".into(), "login"),
            (format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"), "chat"),
            (format!("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n{}", "x".repeat(1500)), "streamed upload"),
        ];
        for (text, what) in cases {
            let started = std::time::Instant::now();
            let mut s = send_raw(&addr, text.as_bytes());
            let head = read_head(&mut s);
            assert!(head.starts_with("http/1.1 408"), "{what}: {head}");
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(10), "{what}: {waited:?}");
        }
    })
    .await
    .unwrap();
}

#[actix_web::test]
async fn state_changes_from_another_sites_pages_are_refused_whatever_their_credentials() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "5", Mode::Ok);
    app.import(&[KA]).await;
    app.chat("m").await;
    let id = app.keys_json().await[0]["id"].as_i64().unwrap();
    let basic = crate::helpers::basic("admin", ADMIN_PASS);
    let attempts: Vec<(awc::http::Method, String, &str)> = vec![
        (awc::http::Method::POST, "/import_keys".into(), r#"{"keys":"sk-evil-000000000000000000009"}"#),
        (awc::http::Method::POST, "/clear_logs".into(), ""),
        (awc::http::Method::POST, "/refresh".into(), ""),
        (awc::http::Method::POST, format!("/api/keys/{id}/disable"), ""),
        (awc::http::Method::DELETE, format!("/api/keys/{id}"), ""),
        (awc::http::Method::PATCH, format!("/api/keys/{id}"), r#"{"account":"x"}"#),
    ];
    let browsers: [(&str, &str); 3] = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
        ("Origin", "https://evil.example"),
    ];
    for (method, path, body) in &attempts {
        for (h, v) in browsers {
            let req = app
                .client
                .request(method.clone(), app.url(path))
                .insert_header(("Authorization", basic.clone()))
                .insert_header(("Content-Type", "application/json"))
                .insert_header((h, v));
            let r = app.send(req, Some(body.to_string().into())).await;
            assert_eq!(r.status, 403, "{method} {path} with {h}: {v}");
        }
    }
    assert_eq!(app.key_state("sk-aaaa").await, "active");
    assert_eq!(app.keys_json().await.len(), 1);
    assert_eq!(app.logs().await.len(), 1, "the log was not cleared");
    // The same server's own pages, and scripts, go through.
    let own = app.address.trim_start_matches("http://").to_string();
    let req = app
        .client
        .post(app.url("/refresh"))
        .insert_header(("Authorization", basic.clone()))
        .insert_header(("Origin", format!("http://{own}")));
    assert_eq!(app.send(req, None).await.status, 200);
    let req = app.client.post(app.url("/refresh")).insert_header(("Authorization", basic.clone()));
    assert_eq!(app.send(req, None).await.status, 200, "curl-like: no Origin, no Sec-Fetch-*");
    // A login form posted from elsewhere (login CSRF) is refused too.
    let req = app
        .client
        .post(app.url("/login"))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .insert_header(("Sec-Fetch-Site", "cross-site"));
    let form = format!("username=admin&password={ADMIN_PASS}");
    assert_eq!(app.send(req, Some(form.into())).await.status, 403);
}

#[actix_web::test]
async fn logging_out_is_a_post_with_the_csrf_token() {
    let app = spawn_app().await;
    let cookie = app.login("admin", ADMIN_PASS).await.expect("login");
    // A GET (a link, an <img> elsewhere) does not log anyone out.
    let r = app.page("/logout", &cookie).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.page("/admin", &cookie).await.status, 200, "still logged in");
    assert_eq!(app.post_form("/logout", &cookie, &[]).await.status, 403, "no CSRF token");
    assert_eq!(app.page("/admin", &cookie).await.status, 200);
    let csrf = crate::admin_ui::csrf_of(&r);
    let r = app.post_form("/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(app.page("/admin", &cookie).await.status, 303, "logged out");
}

#[actix_web::test]
async fn sixty_wrong_passwords_at_once_get_at_most_the_allowed_checks() {
    let hash = siliconflow_proxy::credentials::hash_password("the-right-one").unwrap();
    let app = spawn_app_with(&[("ADMIN_PASSWORD", &hash), ("LOGIN_MAX_FAILURES", "5")]).await;
    let logins = (0..60).map(|i| {
        let req = app
            .client
            .post(app.url("/login"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
        app.send(req, Some(format!("username=admin&password=wrong-{i}").into()))
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(logins).await.into_iter().map(|r| r.status).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(checked <= 5, "{checked} passwords checked: {statuses:?}");
    assert_eq!(checked + refused, 60, "{statuses:?}");
    // Then through HTTP Basic, which shares the throttle: still at most 5 checks in all.
    let basics = (0..20).map(|i| {
        let req = app
            .client
            .get(app.url("/api/keys"))
            .insert_header(("Authorization", crate::helpers::basic("admin", &format!("wrong-{i}"))));
        app.send(req, None)
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(basics).await.into_iter().map(|r| r.status).collect();
    let more = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked + more <= 5, "{checked} + {more} passwords checked: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
}

/// A login through a (claimed) proxy: wrong, or with `proto`, right.
async fn login_via(app: &crate::helpers::TestApp, xff: &str, proto: Option<&str>) -> crate::helpers::Resp {
    let mut req = app
        .client
        .post(app.url("/login"))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .insert_header(("X-Forwarded-For", xff.to_string()));
    if let Some(p) = proto {
        req = req.insert_header(("X-Forwarded-Proto", p.to_string()));
    }
    let password = if proto.is_some() { ADMIN_PASS } else { "wrong" };
    app.send(req, Some(format!("username=admin&password={password}").into())).await
}

#[actix_web::test]
async fn behind_trusted_proxies_the_forwarded_client_address_is_throttled_not_the_proxys() {
    let wrong = login_via;
    let app = spawn_app_with(&[("TRUSTED_PROXIES", "127.0.0.1/32, ::1")]).await;
    for _ in 0..5 {
        assert_eq!(wrong(&app, "203.0.113.1", None).await.status, 401);
    }
    assert_eq!(wrong(&app, "203.0.113.1", None).await.status, 429, "that client is throttled");
    assert_eq!(wrong(&app, "203.0.113.2", None).await.status, 401, "the owner behind the same proxy is not");
    let r = wrong(&app, "203.0.113.3", Some("https")).await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Secure"), "HTTPS as the trusted proxy says");

    // Without TRUSTED_PROXIES the headers are anyone's: ignored.
    let app = spawn_app().await;
    for i in 0..5 {
        assert_eq!(wrong(&app, &format!("198.51.100.{i}"), None).await.status, 401);
    }
    assert_eq!(wrong(&app, "198.51.100.99", None).await.status, 429, "one peer address, one throttle");
    let app = spawn_app().await;
    let r = wrong(&app, "1.2.3.4", Some("https")).await;
    assert!(!r.header("set-cookie").unwrap().contains("Secure"), "an untrusted X-Forwarded-Proto is ignored");
}

#[actix_web::test]
async fn anonymous_callers_cannot_pin_memory_with_big_or_stalled_bodies() {
    let fake = crate::fake::Fake::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = crate::shutdown::spawn_binary(&fake, &dir, &[]).await;
    let pid = child.id();
    let before = crate::shutdown::peak_rss_kib(pid);
    let addr = base.clone();
    // 48 anonymous connections each push up to 4 MiB of a declared 45 MB body
    // (at /login, an admin route, and /v1), then stall with their sockets open.
    let held = actix_web::rt::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for i in 0..48 {
            let path = ["/login", "/import_keys", "/v1/chat/completions"][i % 3];
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 47185920\r\n\r\n"
            );
            let mut s = send_raw(&addr, head.as_bytes());
            s.set_nonblocking(true).unwrap();
            let chunk = vec![b'a'; 64 << 10];
            let mut sent = 0;
            let started = std::time::Instant::now();
            while sent < (4 << 20) && started.elapsed() < Duration::from_secs(2) {
                match s.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(_) => break, // refused and closed by the server
                }
            }
            held.push(s);
        }
        held
    })
    .await
    .unwrap();
    let after = crate::shutdown::peak_rss_kib(pid);
    eprintln!("48 anonymous 45 MB bodies: proxy peak RSS {before} KiB -> {after} KiB");
    assert!(after.saturating_sub(before) < 16 << 10, "peak RSS grew from {before} KiB to {after} KiB");
    drop(held);
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = actix_web::rt::task::spawn_blocking(move || child.wait()).await;
}
