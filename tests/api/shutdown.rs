//! SIGTERM must not lose a buffered log row: run the real binary.

use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;

use crate::fake::{Fake, Mode};
use crate::helpers::{basic, poll, ADMIN_PASS, CLIENT_KEY};
use crate::KA;

/// The real binary against `fake`, on a free port, waiting until it answers.
pub async fn spawn_binary(
    fake: &Fake,
    dir: &tempfile::TempDir,
    extra: &[(&str, &str)],
) -> (std::process::Child, String) {
    let db_path = dir.path().join("sig.db");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_siliconflow-proxy"));
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", format!("sqlite://{}", db_path.display()))
        .env("SILICONFLOW_BASE_URL", &fake.url)
        .env("API_KEY", CLIENT_KEY)
        .env("ADMIN_PASSWORD", ADMIN_PASS)
        .env("AUTO_REFRESH_INTERVAL", "0")
        // Nothing is written before shutdown unless the flush on SIGTERM works.
        .env("LOG_FLUSH_MS", "3600000")
        .env("LOG_BATCH_SIZE", "100000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start the binary");
    let base = format!("http://127.0.0.1:{port}");
    let client = awc::Client::default();
    poll(Duration::from_secs(30), || {
        let client = client.clone();
        let url = format!("{base}/health");
        async move { client.get(url).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    (child, base)
}

/// Imports the key KA into the binary at `base`, with the admin password.
async fn import_ka(client: &awc::Client, base: &str) {
    let r = client
        .post(format!("{base}/import_keys"))
        .insert_header(("Authorization", basic("admin", ADMIN_PASS)))
        .send_json(&json!({"keys": KA}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[actix_web::test]
async fn sigterm_flushes_every_buffered_log_row() {
    let fake = Fake::start();
    fake.add_key(KA, "a1", "5", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("sig.db");
    let (mut child, base) = spawn_binary(&fake, &dir, &[]).await;
    let client = awc::Client::default();
    import_ka(&client, &base).await;
    const N: usize = 40;
    for i in 0..N {
        let mut r = client
            .post(format!("{base}/v1/chat/completions"))
            .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
            .send_json(&json!({"model": format!("m{i}"), "stream": i % 2 == 0, "messages": []}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.body().await.unwrap().is_empty());
    }
    let killed = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(killed.success());
    let exit = actix_web::rt::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "clean exit: {exit:?}");

    let mut conn = diesel::sqlite::SqliteConnection::establish(db_path.to_str().unwrap()).unwrap();
    use siliconflow_proxy::db::schema::request_logs::dsl::{request_logs, total_tokens};
    let rows: i64 = request_logs.count().get_result(&mut conn).unwrap();
    assert_eq!(rows as usize, N, "every request's row written at shutdown");
    let tokens: Vec<i64> = request_logs.select(total_tokens).load(&mut conn).unwrap();
    assert!(tokens.iter().all(|t| *t == 18 || *t == 29), "{tokens:?}");
}

/// Peak resident memory of a process, in KiB (VmHWM).
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[actix_web::test]
async fn a_large_upload_streams_through_in_flat_memory() {
    let fake = Fake::start();
    fake.add_key(KA, "a1", "5", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) =
        spawn_binary(&fake, &dir, &[("FAILOVER_BUFFER_BYTES", "1048576"), ("MAX_BODY_BYTES", "209715200")])
            .await;
    let client = awc::Client::builder().timeout(Duration::from_secs(120)).finish();
    import_ka(&client, &base).await;
    let before = peak_rss_kib(child.id());
    const SIZE: usize = 96 << 20;
    let file: Vec<u8> = (0..SIZE).map(|i| (i % 253) as u8).collect();
    let body = crate::fake::multipart(
        "big",
        &[("model", "FunAudioLLM/SenseVoiceSmall")],
        ("file", "big.wav", &file),
    );
    drop(file);
    let hash = crate::fake::fnv(&body);
    let mut r = client
        .post(format!("{base}/v1/audio/transcriptions"))
        .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
        .insert_header(("Content-Type", "multipart/form-data; boundary=big"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["hash"], hash.to_string(), "byte-exact");
    let after = peak_rss_kib(child.id());
    let growth_mib = (after.saturating_sub(before)) / 1024;
    eprintln!("96 MiB upload: proxy peak RSS {before} KiB -> {after} KiB");
    assert!(
        growth_mib < 32,
        "a 96 MiB upload grew the proxy's peak RSS by {growth_mib} MiB ({before} -> {after} KiB)"
    );
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = actix_web::rt::task::spawn_blocking(move || child.wait()).await;
}
