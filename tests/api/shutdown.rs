//! SIGTERM must not lose a buffered log row: run the real binary.

use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;

use crate::fake::{Fake, Mode};
use crate::helpers::{basic, poll, ADMIN_PASS, CLIENT_KEY};
use crate::KA;

#[actix_web::test]
async fn sigterm_flushes_every_buffered_log_row() {
    let fake = Fake::start();
    fake.add_key(KA, "a1", "5", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("sig.db");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_siliconflow-proxy"))
        .current_dir(dir.path())
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
        .stderr(Stdio::null())
        .spawn()
        .expect("start the binary");
    let base = format!("http://127.0.0.1:{port}");
    let client = awc::Client::default();
    poll(Duration::from_secs(30), || {
        let client = client.clone();
        let url = format!("{base}/health");
        async move { client.get(url).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    let r = client
        .post(format!("{base}/import_keys"))
        .insert_header(("Authorization", basic("admin", ADMIN_PASS)))
        .send_json(&json!({"keys": KA}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
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
