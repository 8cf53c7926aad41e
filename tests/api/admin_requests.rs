//! Requests to the admin as an attacker would send them: bodies capped and
//! read only after the credentials, stalled bodies, other sites' forms.

use std::io::{Read, Write};
use std::time::Duration;

use crate::fake::Mode;
use crate::helpers::{spawn_app, spawn_app_with, ADMIN_PASS};
use crate::KA;

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
