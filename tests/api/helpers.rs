//! `spawn_app()`: the real server on a free port, with a fresh SQLite file and
//! its own fake SiliconFlow.

use std::collections::HashMap;
use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::web;
use base64::Engine;
use bytes::Bytes;
use diesel::prelude::*;
use serde_json::Value;
use siliconflow_proxy::config::Config;
use siliconflow_proxy::db::log_writer::Flush;
use siliconflow_proxy::db::models::LogRow;
use siliconflow_proxy::db::schema::request_logs;
use siliconflow_proxy::startup::Application;
use siliconflow_proxy::state::AppState;

use crate::fake::Fake;

pub const CLIENT_KEY: &str = "client-secret-key";
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASS: &str = "admin-test-password";

pub struct TestApp {
    /// Stops the app's own threads when the test is done with it (a test's
    /// runtime ends, but threads would run on, each holding its database).
    #[allow(dead_code)] // held for its Drop
    pub background: Background,
    /// With PostgreSQL: ends this app's connections when the test is done
    /// (the app's threads outlive the test, and the server has 100 slots).
    #[allow(dead_code)] // held for its Drop
    pub pg: Option<PgSessions>,
    pub address: String,
    pub state: web::Data<AppState>,
    pub fake: Fake,
    pub client: awc::Client,
    pub dir: tempfile::TempDir,
    pub handle: actix_web::dev::ServerHandle,
}

/// A fresh database for one test: an SQLite file in its folder, or, with
/// `TEST_POSTGRES=postgres://user@host:port` set, a new PostgreSQL database
/// on that server (`.ci/run` runs the suite both ways).
pub fn test_database_url(dir: &tempfile::TempDir) -> String {
    match std::env::var("TEST_POSTGRES") {
        Ok(base) if !base.is_empty() => {
            // One database per test folder: a restart in the test finds it again.
            let marker = dir.path().join("pg-database");
            if let Ok(name) = std::fs::read_to_string(&marker) {
                return format!("{base}/{name}");
            }
            use rand::distr::{Alphanumeric, SampleString};
            let name =
                format!("sfp_test_{}", Alphanumeric.sample_string(&mut rand::rng(), 12).to_lowercase());
            let mut admin = diesel::PgConnection::establish(&format!("{base}/postgres"))
                .expect("PostgreSQL for the tests");
            diesel::sql_query(format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .expect("a test database");
            std::fs::write(&marker, &name).expect("the test folder");
            format!("{base}/{name}")
        }
        _ => format!("sqlite://{}", dir.path().join("test.db").display()),
    }
}

pub struct Background(Vec<actix_rt::ArbiterHandle>);

impl Drop for Background {
    fn drop(&mut self) {
        for a in &self.0 {
            a.stop();
        }
    }
}

pub struct PgSessions {
    server: String,
    database: String,
}

impl PgSessions {
    fn of(url: &str) -> Option<Self> {
        let base = std::env::var("TEST_POSTGRES").ok().filter(|b| !b.is_empty())?;
        let rest = url.strip_prefix(&format!("{base}/"))?;
        // Without the URL's options (`?sslmode=require`).
        let database = rest.split('?').next().unwrap_or(rest).to_string();
        Some(PgSessions { server: base, database })
    }
}

impl Drop for PgSessions {
    fn drop(&mut self) {
        if let Ok(mut admin) = diesel::PgConnection::establish(&format!("{}/postgres", self.server)) {
            let _ = diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.database
            ))
            .execute(&mut admin);
        }
    }
}

/// The pool keys' encryption key of the PostgreSQL tests (32 bytes, base64).
pub const TEST_ENCRYPTION_KEY: &str = "dGhlIHBvb2wga2V5cyB0ZXN0IGtleSwgMzIgYnl0ZXM=";

pub fn base_env(fake: &Fake, dir: &tempfile::TempDir) -> HashMap<String, String> {
    let mut env = HashMap::new();
    let url = test_database_url(dir);
    if url.starts_with("postgres") {
        // Every instance on one PostgreSQL database needs the same key.
        env.insert("KEY_ENCRYPTION_KEY".into(), TEST_ENCRYPTION_KEY.into());
    }
    env.insert("DATABASE_URL".into(), url);
    env.insert("SILICONFLOW_BASE_URL".into(), fake.url.clone());
    env.insert("API_KEY".into(), CLIENT_KEY.into());
    env.insert("ADMIN_USERNAME".into(), ADMIN_USER.into());
    env.insert("ADMIN_PASSWORD".into(), ADMIN_PASS.into());
    env.insert("AUTO_REFRESH_INTERVAL".into(), "0".into());
    env.insert("WORKERS".into(), "2".into());
    env.insert("LOG_FLUSH_MS".into(), "50".into());
    env.insert("HOST".into(), "127.0.0.1".into());
    env.insert("PORT".into(), "0".into());
    env
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let fake = Fake::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(&fake, &dir);
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    start_with_env(fake, dir, env).await
}

pub async fn start_with_env(fake: Fake, dir: tempfile::TempDir, env: HashMap<String, String>) -> TestApp {
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = Application::build_with_listener(config, listener).await.expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.server_handle();
    let background = Background(app.background());
    actix_rt::spawn(app.run_until_stopped());
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).disable_redirects().finish();
    let pg = env.get("DATABASE_URL").and_then(|u| PgSessions::of(u));
    TestApp { background, pg, address, state, fake, client, dir, handle }
}

pub fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn send(&self, req: awc::ClientRequest, body: Option<Bytes>) -> Resp {
        let sent = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        };
        let mut resp = sent.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.body().limit(64 << 20).await.expect("body read");
        Resp { status, headers, body }
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Authorization", basic(ADMIN_USER, ADMIN_PASS)))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, Some(Bytes::from(body.to_string()))).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        let req =
            self.client.get(self.url(path)).insert_header(("Authorization", basic(ADMIN_USER, ADMIN_PASS)));
        self.send(req, None).await
    }

    pub async fn import(&self, keys: &[&str]) -> Value {
        let r = self.admin_post("/import_keys", serde_json::json!({ "keys": keys.join("\n") })).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// POST a JSON body to a /v1 route with the client key.
    pub async fn call(&self, path: &str, body: Value) -> Resp {
        self.call_raw(path, &body.to_string()).await
    }

    pub async fn chat(&self, model: &str) -> Resp {
        self.call(
            "/v1/chat/completions",
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
    }

    pub async fn flush_logs(&self) {
        self.state.log_writer.send(Flush).await.expect("log writer").expect("flush");
    }

    /// Every log row, oldest first, after flushing the writer.
    pub async fn logs(&self) -> Vec<LogRow> {
        self.flush_logs().await;
        let mut conn = self.state.db.get().expect("db");
        request_logs::table
            .order(request_logs::id.asc())
            .select(LogRow::as_select())
            .load(&mut conn)
            .expect("logs")
    }

    /// The first call's row once that call has ended (a long call's row is
    /// written in flight first, then filled in), within `limit`.
    pub async fn first_ended_row(&self, limit: Duration) -> LogRow {
        poll(limit, || async { self.logs().await.into_iter().next().filter(|r| r.call_id.is_none()) }).await
    }

    pub async fn keys_json(&self) -> Vec<Value> {
        let r = self.admin_get("/api/keys?page_size=1000").await;
        assert_eq!(r.status, 200);
        r.json()["keys"].as_array().cloned().unwrap_or_default()
    }

    pub async fn key_state(&self, masked_prefix: &str) -> String {
        let keys = self.keys_json().await;
        keys.iter()
            .find(|k| k["key"].as_str().unwrap_or("").starts_with(masked_prefix))
            .map(|k| k["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no key {masked_prefix} in {keys:?}"))
    }
}

/// A plain socket to the app (an `http://host:port` address) with a chat
/// request for JSON `body` already written, with the client key: for tests
/// that must control or see the exact bytes. Reads time out after 20 s.
pub fn raw_chat(address: &str, body: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(address.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// Polls `check` until it returns Some, or panics after `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// POST a multipart body (with boundary `boundary`) to a /v1 route with `key`.
    pub async fn upload_as(&self, key: &str, path: &str, boundary: &str, body: Vec<u8>) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Content-Type", format!("multipart/form-data; boundary={boundary}")));
        self.send(req, Some(Bytes::from(body))).await
    }

    pub async fn call_raw(&self, path: &str, body: &str) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, Some(Bytes::from(body.to_string()))).await
    }
}
