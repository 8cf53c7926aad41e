//! `GET /metrics`: the families a dashboard relies on equal the calls and
//! tokens served (failovers and streams included); the text passes
//! `promtool check metrics`, and a real Prometheus server (Debian's
//! `prometheus`) scrapes it. Without those programs the last two checks
//! say so and pass, except under CI (`CI` set), which installs them.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::fake::Mode;
use crate::helpers::*;
use crate::{KA, KB};

const MODEL: &str = "Qwen/Qwen3-8B";
const TOKEN: &str = "metrics-test-token";

/// One sample: its name, its labels, its value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let mut labels = BTreeMap::new();
                for pair in rest.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad labels in {line}"));
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// The sum of the samples of `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .sum()
}

fn present(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|(n, _, _)| n == name)
}

async fn scrape(app: &TestApp, token: Option<&str>) -> Resp {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    app.send(req, None).await
}

/// What the known sequence served, from the log.
struct Served {
    calls: usize,
    input: i64,
    output: i64,
    total: i64,
    with_first_byte: usize,
}

/// KB (more funds, so picked first) is rate-limited, KA serves: the first
/// call of each model fails over once. Three plain calls, two streams, one
/// call the upstream refuses (an unknown model, after its own failover),
/// and one call without a key.
async fn serve_known_sequence(app: &TestApp) -> Served {
    app.fake.add_key(KA, "acct-a", "10.00", Mode::Ok);
    app.fake.add_key(KB, "acct-b", "50.00", Mode::RateLimited("TPM"));
    app.import(&[KA, KB]).await;
    for _ in 0..3 {
        assert_eq!(app.chat(MODEL).await.status, 200);
    }
    for _ in 0..2 {
        let r = app
            .call(
                "/v1/chat/completions",
                json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).contains("[DONE]"));
    }
    assert_eq!(app.chat("bad-model").await.status, 400);
    let no_key = app.send(app.client.post(app.url("/v1/chat/completions")), Some("{}".into())).await;
    assert_eq!(no_key.status, 401);

    let rows = app.logs().await;
    assert_eq!(rows.len(), 6, "the refused call has no row");
    let ok: Vec<_> = rows.iter().filter(|r| r.model == MODEL).collect();
    assert_eq!(ok.len(), 5);
    assert!(ok.iter().all(|r| r.status == 200));
    assert_eq!(rows.iter().map(|r| r.attempts).sum::<i32>(), 8, "two calls failed over once");
    let served = Served {
        calls: rows.len(),
        input: ok.iter().map(|r| r.input_tokens).sum(),
        output: ok.iter().map(|r| r.output_tokens).sum(),
        total: rows.iter().map(|r| r.total_tokens).sum(),
        with_first_byte: rows.iter().filter(|r| r.ttfb_ms.is_some()).count(),
    };
    assert!(served.input > 0 && served.output > 0);
    served
}

#[actix_rt::test]
async fn the_metrics_equal_the_calls_attempts_and_tokens_served() {
    let app = spawn_app().await;
    let served = serve_known_sequence(&app).await;

    let r = scrape(&app, None).await;
    assert_eq!(r.status, 200, "open without METRICS_TOKEN, though API_KEY is set");
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    for secret in [KA, KB, CLIENT_KEY, ADMIN_PASS] {
        assert!(!text.contains(secret), "a secret in /metrics");
    }
    let s = parse(&text);
    let chat = ("endpoint", "/v1/chat/completions");
    let requests = "siliconflow_proxy_requests_total";
    assert_eq!(value(&s, requests, &[]), served.calls as f64);
    assert_eq!(value(&s, requests, &[chat, ("model", MODEL), ("status", "200")]), 5.0);
    // A model the upstream never served gets no label of its own.
    assert_eq!(value(&s, requests, &[chat, ("model", "other"), ("status", "400")]), 1.0);
    assert!(!text.contains("bad-model"));

    let tokens = "siliconflow_proxy_tokens_total";
    assert_eq!(value(&s, tokens, &[("model", MODEL), ("direction", "input")]), served.input as f64);
    assert_eq!(value(&s, tokens, &[("model", MODEL), ("direction", "output")]), served.output as f64);

    let attempts = "siliconflow_proxy_upstream_attempts_total";
    assert_eq!(value(&s, attempts, &[("outcome", "ok")]), 5.0);
    assert_eq!(value(&s, attempts, &[("outcome", "rate_limited")]), 2.0);
    assert_eq!(value(&s, attempts, &[("outcome", "client_error")]), 1.0);
    for outcome in ["invalid", "exhausted", "forbidden", "server_error", "connect_error", "timeout"] {
        assert!(
            s.iter().any(|(n, l, v)| n == attempts && l["outcome"] == outcome && *v == 0.0),
            "{outcome} is exported from the start, at 0"
        );
    }
    assert_eq!(value(&s, "siliconflow_proxy_failovers_total", &[]), 2.0);

    let count = |n: &str| value(&s, n, &[chat]);
    assert_eq!(count("siliconflow_proxy_request_duration_seconds_count"), served.calls as f64);
    assert_eq!(count("siliconflow_proxy_time_to_first_byte_seconds_count"), served.with_first_byte as f64);
    // Answers streamed back through the body (the five served); an error
    // handed back whole (the 400) has no first byte of its own.
    assert_eq!(served.with_first_byte, 5);
    assert_eq!(value(&s, "siliconflow_proxy_request_duration_seconds_bucket", &[chat, ("le", "+Inf")]), 6.0);

    assert_eq!(value(&s, "siliconflow_proxy_client_requests_total", &[("client", "env")]), 6.0);
    assert_eq!(value(&s, "siliconflow_proxy_client_tokens_total", &[("client", "env")]), served.total as f64);
    assert_eq!(value(&s, "siliconflow_proxy_refusals_total", &[("reason", "unauthorized")]), 1.0);

    // KB's account cools for both models it refused.
    assert_eq!(value(&s, "siliconflow_proxy_keys", &[("state", "active")]), 1.0);
    assert_eq!(value(&s, "siliconflow_proxy_keys", &[("state", "cooling")]), 1.0);
    assert_eq!(value(&s, "siliconflow_proxy_cooldowns_active", &[]), 2.0);
    assert_eq!(value(&s, "siliconflow_proxy_log_queue_rows", &[]), 0.0);
    assert!(present(&s, "siliconflow_proxy_log_rows_dropped_total"));
    assert!(value(&s, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&s, "process_open_fds", &[]) > 3.0);
    assert!(present(&s, "process_cpu_seconds_total"));

    match find("promtool") {
        Some(promtool) => {
            let mut child = Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => missing("promtool"),
    }
}

#[actix_rt::test]
async fn metrics_token_closes_the_endpoint() {
    let app = spawn_app_with(&[("METRICS_TOKEN", TOKEN)]).await;
    for token in [None, Some("wrong"), Some(CLIENT_KEY)] {
        let r = scrape(&app, token).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer realm=\"metrics\""));
        assert!(!String::from_utf8_lossy(&r.body).contains("siliconflow_proxy_"));
    }
    let r = scrape(&app, Some(TOKEN)).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("siliconflow_proxy_failovers_total 0"));
}

/// A program on PATH (or /usr/bin, /usr/sbin).
fn find(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file());
    found
}

fn missing(program: &str) {
    assert!(std::env::var_os("CI").is_none(), "{program} is not installed (CI installs Debian's prometheus)");
    eprintln!("SKIPPED: {program} is not installed; the check that needs it did not run");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks Prometheus for one number (`None` until the query has an answer).
async fn query(client: &awc::Client, base: &str, q: &str) -> Option<f64> {
    let mut r = client.get(format!("{base}/api/v1/query")).query(&[("query", q)]).ok()?.send().await.ok()?;
    let body: Value = r.json().await.ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[actix_rt::test]
async fn a_real_prometheus_scrapes_series_equal_to_what_was_served() {
    let Some(prometheus) = find("prometheus") else {
        return missing("prometheus");
    };
    let app = spawn_app_with(&[("METRICS_TOKEN", TOKEN)]).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = app.address.trim_start_matches("http://");
    let config = app.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: siliconflow-proxy\n    \
             authorization:\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(app.dir.path().join("prometheus.log")).unwrap();
    let _server = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", app.dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let served = serve_known_sequence(&app).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
    let expected = [
        ("up{job=\"siliconflow-proxy\"}", 1.0),
        ("sum(siliconflow_proxy_requests_total)", served.calls as f64),
        ("sum(siliconflow_proxy_requests_total{status=\"200\"})", 5.0),
        ("sum(siliconflow_proxy_tokens_total{direction=\"input\"})", served.input as f64),
        ("sum(siliconflow_proxy_tokens_total{direction=\"output\"})", served.output as f64),
        ("siliconflow_proxy_failovers_total", 2.0),
        ("siliconflow_proxy_upstream_attempts_total{outcome=\"rate_limited\"}", 2.0),
        ("siliconflow_proxy_client_tokens_total{client=\"env\"}", served.total as f64),
        ("siliconflow_proxy_keys{state=\"cooling\"}", 1.0),
    ];
    let seen = poll(Duration::from_secs(60), || {
        let (client, base) = (&client, &base);
        async move {
            let mut seen = Vec::new();
            for (q, want) in expected {
                let got = query(client, base, q).await;
                if got != Some(want) {
                    return None;
                }
                seen.push((q, got));
            }
            Some(seen)
        }
    })
    .await;
    assert_eq!(seen.len(), expected.len());
}

#[actix_web::test]
async fn model_labels_are_the_upstreams_listed_models_and_the_aliases_targets_never_a_callers_names() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-a", "10.00", Mode::Ok);
    app.import(&[KA]).await;
    // Sixty uploads naming models of the caller's invention: the upstream
    // answers 200 for each (a transcription), none gets a label.
    for i in 0..60 {
        let body = crate::fake::multipart(
            "mb",
            &[("model", &format!("junk-model-{i}"))],
            ("file", "a.wav", b"RIFF0000"),
        );
        assert_eq!(app.upload_as(CLIENT_KEY, "/v1/audio/transcriptions", "mb", body).await.status, 200);
    }
    // A listed model keeps its label; so does a model only an alias calls.
    assert_eq!(app.chat(MODEL).await.status, 200);
    let put = json!({"aliases": [{"pattern": "x-*", "model": "FunAudioLLM/SenseVoiceSmall"}]});
    assert_eq!(app.admin_send("PUT", "/api/aliases", Some(put)).await.status, 200);
    assert_eq!(app.chat("x-voice").await.status, 200);
    app.flush_logs().await;
    let s = poll(Duration::from_secs(5), || async {
        let s = parse(&String::from_utf8_lossy(&scrape(&app, None).await.body));
        (value(&s, "siliconflow_proxy_requests_total", &[("model", "other")]) >= 60.0).then_some(s)
    })
    .await;
    let transcriptions = ("endpoint", "/v1/audio/transcriptions");
    assert_eq!(value(&s, "siliconflow_proxy_requests_total", &[transcriptions, ("model", "other")]), 60.0);
    assert!(s.iter().all(|(_, labels, _)| !labels.get("model").is_some_and(|m| m.starts_with("junk"))));
    assert_eq!(value(&s, "siliconflow_proxy_requests_total", &[("model", MODEL)]), 1.0);
    assert_eq!(
        value(&s, "siliconflow_proxy_requests_total", &[("model", "FunAudioLLM/SenseVoiceSmall")]),
        1.0
    );
}
