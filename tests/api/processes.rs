//! Two real instances: processes of the proxy's binary on one PostgreSQL
//! database, behind the same fake SiliconFlow (run with `TEST_POSTGRES`; on
//! SQLite these tests say they are skipped). Also PostgreSQL going away for
//! 10 s under traffic, through a gate the test opens and closes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diesel::prelude::*;
use serde_json::{json, Value};

use crate::fake::{multipart, Fake, Mode};
use crate::helpers::{base_env, basic, poll, Resp, ADMIN_PASS, ADMIN_USER, CLIENT_KEY};
use crate::{KA, KB};

fn postgres() -> Option<String> {
    let base = std::env::var("TEST_POSTGRES").ok().filter(|v| !v.is_empty());
    if base.is_none() {
        eprintln!("skipped: instances sharing a PostgreSQL database (set TEST_POSTGRES)");
    }
    base
}

/// One process of the proxy's binary, killed when dropped.
pub(crate) struct Instance {
    pub(crate) child: Child,
    pub(crate) address: String,
    pub(crate) client: awc::Client,
    log: PathBuf,
}

impl Instance {
    pub(crate) async fn start(env: &HashMap<String, String>, dir: &Path, name: &str) -> Instance {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_siliconflow-proxy"))
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .env("PORT", port.to_string())
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the proxy's binary");
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).disable_redirects().finish();
        let me = Instance { child, address: format!("http://127.0.0.1:{port}"), client, log };
        poll(Duration::from_secs(30), || async { me.try_health().await.map(drop) }).await;
        me
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) async fn send(&self, req: awc::ClientRequest, body: Option<Bytes>) -> Resp {
        let sent = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        };
        let mut resp = sent.unwrap_or_else(|e| panic!("{}: {e}\n{}", self.address, self.log_text()));
        let body = resp.body().limit(64 << 20).await.expect("a body");
        Resp { status: resp.status().as_u16(), headers: resp.headers().clone(), body }
    }

    pub(crate) async fn try_health(&self) -> Option<Value> {
        let mut r = self.client.get(self.url("/health")).send().await.ok()?;
        serde_json::from_slice(&r.body().await.ok()?).ok()
    }

    pub(crate) async fn health(&self) -> Value {
        self.send(self.client.get(self.url("/health")), None).await.json()
    }

    pub(crate) async fn admin_get(&self, path: &str) -> Resp {
        let req =
            self.client.get(self.url(path)).insert_header(("Authorization", basic(ADMIN_USER, ADMIN_PASS)));
        self.send(req, None).await
    }

    pub(crate) async fn import(&self, keys: &[&str]) {
        let req = self
            .client
            .post(self.url("/import_keys"))
            .insert_header(("Authorization", basic(ADMIN_USER, ADMIN_PASS)))
            .insert_header(("Content-Type", "application/json"));
        let r = self.send(req, Some(Bytes::from(json!({ "keys": keys }).to_string()))).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    pub(crate) async fn admin_post(&self, path: &str, body: Value) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Authorization", basic(ADMIN_USER, ADMIN_PASS)))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, Some(Bytes::from(body.to_string()))).await
    }

    pub(crate) async fn call(&self, path: &str, body: Value) -> Resp {
        self.call_as(CLIENT_KEY, path, body).await
    }

    pub(crate) async fn chat_as(&self, key: &str) -> Resp {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        self.call_as(key, "/v1/chat/completions", body).await
    }

    pub(crate) async fn call_as(&self, key: &str, path: &str, body: Value) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, Some(Bytes::from(body.to_string()))).await
    }

    pub(crate) async fn chat(&self, model: &str) -> Resp {
        self.call(
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
    }

    pub(crate) async fn key_state(&self, prefix: &str) -> String {
        let keys = self.admin_get("/api/keys?page_size=100").await.json();
        keys["keys"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["key"].as_str().is_some_and(|m| m.starts_with(prefix))))
            .map(|k| k["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    /// Logs in through the form: the session cookie.
    pub(crate) async fn login(&self) -> String {
        let form = serde_urlencoded::to_string([("username", ADMIN_USER), ("password", ADMIN_PASS)]).unwrap();
        let req = self
            .client
            .post(self.url("/login"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
        let r = self.send(req, Some(Bytes::from(form))).await;
        assert_eq!(r.status, 303);
        r.header("set-cookie").unwrap().split(';').next().unwrap().to_string()
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn total_calls(stats: &Resp) -> i64 {
    stats.json()["total_calls"].as_i64().unwrap_or(-1)
}

/// Rows in the request log, read from the database itself (either backend).
fn rows_in(url: &str) -> i64 {
    count_in(url, "SELECT count(*) AS n FROM request_logs")
}

/// A `SELECT count(*) AS n` read from the database itself (either backend).
pub(crate) fn count_in(url: &str, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let q = diesel::sql_query(sql);
    match url.strip_prefix("sqlite://") {
        Some(path) => q.get_result::<N>(&mut SqliteConnection::establish(path).unwrap()).unwrap().n,
        None => q.get_result::<N>(&mut PgConnection::establish(url).unwrap()).unwrap().n,
    }
}

/// Clients calling without pause until stopped: (answered with 200, failed).
struct Traffic {
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    clients: Vec<actix_rt::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(address: &str, clients: usize) -> Traffic {
        let (answered, failed, stop) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let clients = (0..clients)
            .map(|_| {
                let (address, answered, failed, stop) =
                    (address.to_string(), answered.clone(), failed.clone(), stop.clone());
                actix_rt::spawn(async move {
                    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
                    let body =
                        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
                    while !stop.load(Ordering::Acquire) {
                        let sent = client
                            .post(format!("{address}/v1/chat/completions"))
                            .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
                            .insert_header(("Content-Type", "application/json"))
                            .send_body(body.clone())
                            .await;
                        let ok = match sent {
                            Ok(mut r) => r.status() == 200 && r.body().await.is_ok(),
                            Err(_) => false,
                        };
                        let counter = if ok { &answered } else { &failed };
                        counter.fetch_add(1, Ordering::AcqRel);
                        if !ok {
                            // The server is gone (the kill tests): no busy loop.
                            actix_rt::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                })
            })
            .collect();
        Traffic { answered, failed, stop, clients }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// Stops the clients: (answered, failed).
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Release);
        for c in self.clients {
            c.await.unwrap();
        }
        (self.answered.load(Ordering::Acquire), self.failed.load(Ordering::Acquire))
    }
}

/// SIGTERM under traffic loses no row; SIGKILL loses at most the rows of the
/// last flush interval (LOG_FLUSH_MS, 1 s by default), measured here.
#[actix_web::test]
async fn sigterm_under_traffic_loses_no_row_and_sigkill_at_most_one_flush_interval() {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        let fake = Fake::start();
        fake.add_key(KA, "acct-a", "20", Mode::Ok);
        let dir = tempfile::tempdir().unwrap();
        let mut env = base_env(&fake, &dir);
        env.insert("LOG_FLUSH_MS".into(), "1000".into());
        let url = env["DATABASE_URL"].clone();
        let a = Instance::start(&env, dir.path(), "a").await;
        a.import(&[KA]).await;
        let started = Instant::now();
        let traffic = Traffic::start(&a.address, 4);
        // Past a few flushes, and between two of them.
        poll(Duration::from_secs(20), || async {
            (started.elapsed() >= Duration::from_millis(2500) && traffic.answered() >= 300).then_some(())
        })
        .await;
        let rate = traffic.answered() as f64 / started.elapsed().as_secs_f64();
        unsafe { libc::kill(a.pid(), signal) };
        let mut a = a;
        let exited = a.child.wait().unwrap();
        let (answered, _) = traffic.stop().await;
        let rows = rows_in(&url) as u64;
        let lost = answered.saturating_sub(rows);
        eprintln!(
            "{name}: {answered} calls answered ({rate:.0}/s), {rows} rows written, {lost} lost = {:.2} s of traffic ({exited})",
            lost as f64 / rate
        );
        assert!(rows <= answered, "no row twice");
        if signal == libc::SIGTERM {
            assert_eq!(rows, answered, "SIGTERM: every answered call has its row\n{}", a.log_text());
        } else {
            // At most the rows of one flush interval (1 s) at this rate, and some slack.
            assert!((lost as f64) <= rate * 1.5 + 10.0, "SIGKILL lost {lost} rows at {rate:.0} calls/s");
        }
    }
}

/// SIGKILL with 20 long calls in flight: the upstream ran them all, so after
/// the restart the log has their 20 rows (interrupted, tokens unknown), the
/// stats count them, and the client's daily limit counts them.
#[actix_web::test]
async fn sigkill_with_calls_in_flight_leaves_their_rows_and_the_clients_usage() {
    let fake = Fake::start();
    fake.add_key(KA, "acct-a", "20", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(&fake, &dir);
    env.insert("LOG_FLUSH_MS".into(), "100".into());
    let url = env["DATABASE_URL"].clone();
    let a = Instance::start(&env, dir.path(), "a").await;
    a.import(&[KA]).await;
    let created = a.admin_post("/api/clients", json!({"name": "limited", "daily_requests": 30})).await;
    assert_eq!(created.status, 201);
    let key = created.json()["key"].as_str().unwrap().to_string();
    fake.set_header_delay(Duration::from_secs(60));
    let a = std::rc::Rc::new(a);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (a, key) = (a.clone(), key.clone());
            actix_rt::spawn(async move {
                let _ = a
                    .client
                    .post(a.url("/v1/chat/completions"))
                    .insert_header(("Authorization", format!("Bearer {key}")))
                    .insert_header(("Content-Type", "application/json"))
                    .send_body(
                        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
                    )
                    .await;
            })
        })
        .collect();
    // Every call reached the upstream and was written in flight.
    let in_flight = "SELECT count(*) AS n FROM request_logs WHERE call_id IS NOT NULL";
    // (On PostgreSQL the client's count and its lease's use are written
    // each second: waited for.)
    let shared = "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n FROM client_usage";
    let leased =
        "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT) AS n FROM client_leases WHERE budget = 'requests'";
    let published = if url.starts_with("sqlite://") { 0 } else { 20 };
    poll(Duration::from_secs(20), || async {
        (fake.count("/v1/chat/completions") == 20
            && count_in(&url, in_flight) == 20
            && count_in(&url, shared) == published
            && count_in(&url, leased) == published)
            .then_some(())
    })
    .await;
    let before = a.admin_get("/logs?page_size=50").await.json();
    assert_eq!(before["logs"][0]["in_flight"], true, "{before}");
    unsafe { libc::kill(a.pid(), libc::SIGKILL) };
    for c in calls {
        let _ = c.await;
    }
    drop(a);
    fake.set_header_delay(Duration::ZERO);

    let b = Instance::start(&env, dir.path(), "b").await;
    // At once on SQLite; on PostgreSQL once the instance that leads sees
    // the dead one silent (six of its 1 s heartbeats).
    let logs = poll(Duration::from_secs(30), || async {
        let logs = b.admin_get("/logs?page_size=50").await.json();
        let rows = logs["logs"].as_array().cloned().unwrap_or_default();
        (rows.len() == 20 && rows.iter().all(|r| r["in_flight"] == false)).then_some(rows)
    })
    .await;
    for r in &logs {
        assert_eq!(r["status"], 0, "{r}");
        assert_eq!(r["client"], "limited");
        assert_eq!(r["total_tokens"], 0, "tokens unknown");
        assert!(r["error"].as_str().unwrap().starts_with("interrupted"), "{r}");
    }
    assert_eq!(count_in(&url, in_flight), 0);
    let stats = b.admin_get("/api/stats/overview").await;
    assert_eq!(total_calls(&stats), 20, "the stats count them");
    let clients = b.admin_get("/api/clients").await.json();
    let limited =
        clients["clients"].as_array().unwrap().iter().find(|c| c["name"] == "limited").cloned().unwrap();
    assert_eq!(limited["requests_today"], 20, "{limited}");
    // 30 a day: 10 more, then refused. (On PostgreSQL the dead instance's
    // lease is free again 10 s after its last round: until then, 429s.)
    poll(Duration::from_secs(20), || async { (b.chat_as(&key).await.status == 200).then_some(()) }).await;
    for i in 1..10 {
        assert_eq!(b.chat_as(&key).await.status, 200, "call {i}");
    }
    assert_eq!(b.chat_as(&key).await.status, 429);
}

/// 300 calls for a model off a client's list: one line in the process log,
/// without the list (it said one line each, with the list, 578 kB for 2,000).
#[actix_web::test]
async fn refused_models_are_logged_once_a_minute_per_client_without_the_list() {
    let fake = Fake::start();
    fake.add_key(KA, "acct-a", "20", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::start(&base_env(&fake, &dir), dir.path(), "a").await;
    a.import(&[KA]).await;
    let list = json!(["Qwen/Qwen3-8B", "deepseek-ai/DeepSeek-V3.2-secret-list-entry"]);
    let created = a.admin_post("/api/clients", json!({"name": "listed", "models": list})).await;
    let key = created.json()["key"].as_str().unwrap().to_string();
    let before = a.log_text().len();
    for _ in 0..300 {
        let r = a.call_as(&key, "/v1/chat/completions", json!({"model": "junk", "messages": []})).await;
        assert_eq!(r.status, 403);
    }
    let added = &a.log_text()[before..];
    let lines: Vec<&str> = added.lines().filter(|l| l.contains("off its list")).collect();
    assert_eq!(lines.len(), 1, "{added}");
    assert!(!added.contains("secret-list-entry"), "{added}");
    assert!(added.len() < 2_000, "{} bytes of log for 300 refusals", added.len());
}

/// The `location` block shipped in `docker-compose.postgres.yml`, as nginx
/// reads it (compose's `$$` is nginx's `$`).
fn shipped_nginx_location() -> String {
    let compose =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.postgres.yml"))
            .expect("docker-compose.postgres.yml");
    let start = compose.find("location / {").expect("a location block");
    let mut depth = 0;
    let mut end = start;
    for (i, c) in compose[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = start + i + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    compose[start..end].replace("$$", "$")
}

/// Through a real nginx with the shipped location block in front of the
/// binary (TRUSTED_PROXIES naming it): a guesser's own `Forwarded: for=`,
/// new each time, does not reach the proxy, so its wrong passwords are
/// throttled (without the block clearing it and TRUSTED_PROXY_HEADER, 30
/// guesses never met a 429).
#[actix_web::test]
async fn behind_the_shipped_nginx_a_forged_forwarded_header_does_not_escape_the_login_throttle() {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists());
    let Some(nginx) = nginx else {
        assert!(std::env::var("CI").is_err(), "nginx is not installed (apt-get install nginx-light)");
        eprintln!("skipped: nginx is not installed");
        return;
    };
    let fake = Fake::start();
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(&fake, &dir);
    env.insert("TRUSTED_PROXIES".into(), "127.0.0.1".into());
    let a = Instance::start(&env, dir.path(), "a").await;
    let upstream = a.address.trim_start_matches("http://").to_string();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = format!(
        "pid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\nevents {{}}\nhttp {{\n access_log off;\n          client_body_temp_path {dir};\n proxy_temp_path {dir};\n          upstream siliconflow_proxy {{ server {upstream}; keepalive 8; }}\n          server {{ listen 127.0.0.1:{port}; {location} }}\n}}\n",
        dir = dir.path().display(),
        location = shipped_nginx_location(),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(nginx)
        .args(["-p", &dir.path().display().to_string(), "-c", &conf_path.display().to_string()])
        .args(["-g", "daemon off;"])
        .spawn()
        .expect("nginx");
    let front = format!("http://127.0.0.1:{port}");
    let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    poll(Duration::from_secs(10), || async {
        client.get(format!("{front}/health")).send().await.ok().map(drop)
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        let r = client
            .post(format!("{front}/login"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .insert_header(("Forwarded", format!("for=198.51.100.{i}")))
            .send_body("username=admin&password=wrong")
            .await
            .expect("an answer through nginx");
        statuses.push(r.status().as_u16());
    }
    // SIGTERM: nginx's master stops its workers too (SIGKILL would orphan them).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}\n{}", a.log_text());
    assert!(statuses[5..].iter().all(|s| *s == 429), "throttled: {statuses:?}");
}

/// Two processes of the binary, a burst of 20 split across both, all at
/// once: a client with `daily_requests 10`, and one with `rpm 10`, get at
/// most 10 (each instance admits within its lease; counting the other's
/// calls a second late let 20 through).
#[actix_web::test]
async fn a_burst_split_across_two_processes_stays_within_each_limit() {
    let Some(_) = postgres() else { return };
    let fake = Fake::start();
    fake.add_key(KA, "acct-a", "20", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let env = base_env(&fake, &dir);
    let a = Instance::start(&env, dir.path(), "a").await;
    let b = Instance::start(&env, dir.path(), "b").await;
    a.import(&[KA]).await;
    for (name, limit) in [("daily", json!({"daily_requests": 10})), ("paced", json!({"rpm": 10}))] {
        let mut body = limit.clone();
        body["name"] = json!(name);
        let created = a.admin_post("/api/clients", body).await;
        assert_eq!(created.status, 201);
        let key = created.json()["key"].as_str().unwrap().to_string();
        // B knows the key (a route that does not exist costs no call).
        poll(Duration::from_secs(5), || async {
            let probe = b
                .client
                .get(b.url("/v1/no-such-route"))
                .insert_header(("Authorization", format!("Bearer {key}")));
            (b.send(probe, None).await.status == 404).then_some(())
        })
        .await;
        let burst = (0..20).map(|i| {
            let key = key.clone();
            let to = if i % 2 == 0 { &a } else { &b };
            async move { to.chat_as(&key).await.status }
        });
        let statuses = futures_util::future::join_all(burst).await;
        let served = statuses.iter().filter(|s| **s == 200).count();
        eprintln!("{name} {limit}: {served} of 20 served: {statuses:?}");
        assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
        assert!(served <= 10, "{name}: {served} served of a limit of 10");
        assert!(served >= 2, "{name}: {statuses:?}");
    }
}

#[actix_web::test]
async fn two_processes_on_one_database_share_keys_cooldowns_sessions_files_stats_and_jobs() {
    let Some(_) = postgres() else { return };
    let fake = Fake::start();
    fake.add_key(KA, "acct-a", "20", Mode::Ok);
    fake.add_key(KB, "acct-b", "10", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(&fake, &dir);
    env.insert("AUTO_REFRESH_INTERVAL".into(), "1".into());
    let a = Instance::start(&env, dir.path(), "a").await;
    let b = Instance::start(&env, dir.path(), "b").await;

    // A key imported on A is served by B.
    assert_eq!(b.chat("m").await.status, 503, "B has no key yet");
    a.import(&[KA, KB]).await;
    let t = Instant::now();
    poll(Duration::from_secs(5), || async { (b.chat("m").await.status == 200).then_some(()) }).await;
    assert!(t.elapsed() < Duration::from_secs(1), "B served A's key after {:?}", t.elapsed());

    // A 429 on A cools that account for that model on B.
    fake.set_mode(KA, Mode::RateLimited("TPM"));
    assert_eq!(a.chat("m").await.status, 200, "A fails over to KB");
    fake.set_mode(KA, Mode::Ok);
    let t = Instant::now();
    poll(Duration::from_secs(5), || async { (b.key_state("sk-aaaa").await == "cooling").then_some(()) })
        .await;
    assert!(t.elapsed() < Duration::from_secs(1), "B saw the cooldown after {:?}", t.elapsed());
    fake.clear_seen();
    assert_eq!(b.chat("m").await.status, 200);
    assert_eq!(fake.keys_for("/v1/chat/completions"), vec![KB.to_string()], "B skips the cooling account");

    // A session made on A works on B.
    let cookie = a.login().await;
    let r = b.send(b.client.get(b.url("/admin")).insert_header(("Cookie", cookie)), None).await;
    assert_eq!(r.status, 200);

    // A file uploaded through A is used by a batch created through B (and
    // so sent with a key of the file's account).
    let jsonl = br#"{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#;
    let req = a
        .client
        .post(a.url("/v1/files"))
        .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
        .insert_header(("Content-Type", "multipart/form-data; boundary=fb"));
    let body = multipart("fb", &[("purpose", "batch")], ("file", "batch.jsonl", jsonl));
    let r = a.send(req, Some(Bytes::from(body))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let file = r.json()["data"]["id"].as_str().unwrap().to_string();
    let uploader = fake.keys_for("/v1/files").last().cloned().unwrap();
    let r = b
        .call(
            "/v1/batches",
            json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(fake.keys_for("/v1/batches"), vec![uploader], "the batch went with the file's account");

    // The stats on B count A's calls (and the other way round).
    poll(Duration::from_secs(5), || async {
        let (on_a, on_b) = (
            total_calls(&a.admin_get("/api/stats/overview").await),
            total_calls(&b.admin_get("/api/stats/overview").await),
        );
        (on_a == on_b && on_a >= 6).then_some(())
    })
    .await;

    // One instance runs the scheduled refresh: the other has never run it.
    let leads = |h: &Value| h["scheduled_jobs"]["runs_here"] == true;
    let (ha, hb) = poll(Duration::from_secs(10), || async {
        let (ha, hb) = (a.health().await, b.health().await);
        (leads(&ha) != leads(&hb)
            && (ha["auto_refresh"]["last_run"].is_string() || hb["auto_refresh"]["last_run"].is_string()))
        .then_some((ha, hb))
    })
    .await;
    let (leader, other, other_health) = if leads(&ha) { (a, b, hb) } else { (b, a, ha) };
    assert!(
        other_health["auto_refresh"]["last_run"].is_null(),
        "one refresh per interval, not two: {other_health}"
    );

    // kill -9 of the instance holding the jobs: the other takes them over.
    let killed = Instant::now();
    unsafe { libc::kill(leader.pid(), libc::SIGKILL) };
    drop(leader);
    poll(Duration::from_secs(10), || async {
        let h = other.health().await;
        (leads(&h) && h["auto_refresh"]["last_run"].is_string()).then_some(())
    })
    .await;
    eprintln!("the jobs moved {:?} after kill -9", killed.elapsed());
    assert!(killed.elapsed() < Duration::from_secs(5), "within the 2 s retry and one refresh interval");
}

/// A TCP gate between the instances and PostgreSQL: open, it forwards; shut,
/// it cuts every connection and refuses new ones (the server gone, as far as
/// the proxy can tell), without stopping the machine's PostgreSQL.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    fn start(target: &str) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_open, all, target) = (open.clone(), streams.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !is_open.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let mut held = all.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Gate { port, open, streams }
    }

    fn shut(&self) {
        self.open.store(false, Ordering::Release);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::Release);
    }
}

#[actix_web::test]
async fn postgresql_gone_for_10_s_under_traffic_every_call_is_answered_and_every_row_written() {
    let Some(base) = postgres() else { return };
    let fake = Fake::start();
    fake.add_key(KA, "acct-a", "20", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(&fake, &dir);
    let direct = env["DATABASE_URL"].clone();
    let server = base.rsplit('@').next().unwrap().trim_end_matches('/').to_string();
    let gate = Gate::start(&server);
    let through_gate = direct.replace(&server, &format!("127.0.0.1:{}", gate.port));
    env.insert("DATABASE_URL".into(), through_gate);
    let a = Instance::start(&env, dir.path(), "a").await;
    a.import(&[KA]).await;
    assert_eq!(a.health().await["status"], "healthy");

    // Four clients call without pause while the database goes away for 10 s.
    let traffic = Traffic::start(&a.address, 4);
    poll(Duration::from_secs(10), || async { (traffic.answered() >= 20).then_some(()) }).await;
    gate.shut();
    let shut_at = Instant::now();
    let during = poll(Duration::from_secs(8), || async {
        let h = a.health().await;
        (h["database"] == "unreachable" && h["request_log"]["queued"].as_u64() > Some(0)).then_some(h)
    })
    .await;
    assert_eq!(during["status"], "degraded", "{during}");
    let before_back = traffic.answered();
    while shut_at.elapsed() < Duration::from_secs(10) {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let served_while_down = traffic.answered() - before_back;
    gate.reopen();
    let back = traffic.answered();
    poll(Duration::from_secs(5), || async { (traffic.answered() > back + 20).then_some(()) }).await;
    let (answered, failed) = traffic.stop().await;
    assert_eq!(failed, 0, "every call answered while the database was gone");
    assert!(served_while_down > 50, "calls kept coming while the database was gone: {served_while_down}");
    let rows = poll(Duration::from_secs(20), || async {
        let rows = rows_in(&direct);
        (rows as u64 >= answered).then_some(rows)
    })
    .await;
    // The import's checks are not logged; the calls are, once each.
    assert_eq!(rows as u64, answered, "every row written once it was back, none twice");
    let h = poll(Duration::from_secs(10), || async {
        let h = a.health().await;
        (h["status"] == "healthy").then_some(h)
    })
    .await;
    assert_eq!(h["request_log"]["dropped"], 0);
    assert_eq!(h["request_log"]["queued"], 0);
    eprintln!(
        "{answered} calls ({served_while_down} while the database was gone), {rows} rows; max queued seen {}",
        during["request_log"]["queued"]
    );
    let log = a.log_text();
    assert!(log.contains("the database takes rows again"), "{log}");
    // Said, not shouted: a few lines a second at most while it was gone.
    let errors = log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).count();
    eprintln!(
        "{errors} error and warning lines in the instance's log:\n{}",
        log.lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(errors < 20, "{errors} error lines for a 10 s outage");
}

#[actix_web::test]
async fn after_postgresql_comes_back_the_instance_that_did_not_lead_takes_the_jobs_when_the_leader_dies() {
    let Some(base) = postgres() else { return };
    let fake = Fake::start();
    fake.add_key(KA, "acct-a", "20", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(&fake, &dir);
    let server = base.rsplit('@').next().unwrap().trim_end_matches('/').to_string();
    let gate = Gate::start(&server);
    let through_gate = env["DATABASE_URL"].replace(&server, &format!("127.0.0.1:{}", gate.port));
    env.insert("DATABASE_URL".into(), through_gate);
    let a = Instance::start(&env, dir.path(), "a").await;
    let b = Instance::start(&env, dir.path(), "b").await;
    let leads = |h: &Value| h["scheduled_jobs"]["runs_here"] == true;
    let standing_by = |h: &Value| h["scheduled_jobs"]["standing_by"] == true;
    // One leads, the other stands by (connected, ready to take over).
    let one_leads = || async {
        let (ha, hb) = (a.health().await, b.health().await);
        (leads(&ha) != leads(&hb) && (standing_by(&ha) || standing_by(&hb))).then_some(leads(&ha))
    };
    poll(Duration::from_secs(10), one_leads).await;

    // PostgreSQL goes away and comes back: every connection is cut, each
    // instance's leader thread fails a query meanwhile (the 2 s retry).
    gate.shut();
    poll(Duration::from_secs(10), || async {
        let (ha, hb) = (a.health().await, b.health().await);
        // The one that stood by has lost its connection.
        (!standing_by(&ha) && !standing_by(&hb)).then_some(())
    })
    .await;
    gate.reopen();
    let a_leads = poll(Duration::from_secs(15), one_leads).await;

    // The leader dies: the other, which did not lead, takes the jobs over.
    let (leader, other) = if a_leads { (a, b) } else { (b, a) };
    let killed = Instant::now();
    unsafe { libc::kill(leader.pid(), libc::SIGKILL) };
    drop(leader);
    poll(Duration::from_secs(15), || async { leads(&other.health().await).then_some(()) }).await;
    eprintln!("the jobs moved {:?} after kill -9, after an outage", killed.elapsed());
    assert!(killed.elapsed() < Duration::from_secs(5), "within the 2 s retry");
    assert!(other.log_text().contains("opening a new one"), "{}", other.log_text());
}
