//! `GET /metrics`: Prometheus text format, written by the `prometheus` crate.
//!
//! The request path does no label lookup. Each call's families (requests,
//! durations, tokens, clients) are counted from its log row by the log
//! writer's thread as it takes rows in (a row the full queue drops is counted
//! by the request that dropped it), so they run a moment (at most the log
//! flush interval) behind. On the request path there are only fixed counters:
//! an attempt's outcome, a failover, a refusal, each one atomic add. The
//! pool's state is read when Prometheus scrapes.
//!
//! Label values are bounded: endpoints are the routed ones (`other` for
//! anything else), statuses are HTTP's, clients are the owner's, and models
//! are the ones the upstream's model list names (read again with the keys)
//! or an alias calls; every other name is `other`, whatever the upstream
//! answered for it, so callers cannot fill the labels with names of their
//! own.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::db::log_sink::RowObserver;
use crate::db::models::NewLog;

/// The label value of every model, endpoint or status past the bounds.
pub const OTHER: &str = "other";
/// The model label of a call that names none (a list, a batch read).
pub const NO_MODEL: &str = "none";

/// What one upstream attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx.
    Ok,
    /// A 4xx that is the caller's (bad request, unknown model), or an upload
    /// that failed on the way.
    ClientError,
    /// 401: the key is dead.
    Invalid,
    /// 402/403 code 30001: the account has no funds.
    Exhausted,
    /// 429.
    RateLimited,
    /// 403 other than 30001: this account may not use the model.
    Forbidden,
    /// 5xx.
    ServerError,
    /// No connection, or the connection failed.
    ConnectError,
    /// No answer within `UPSTREAM_TIMEOUT`.
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::ClientError,
        Outcome::Invalid,
        Outcome::Exhausted,
        Outcome::RateLimited,
        Outcome::Forbidden,
        Outcome::ServerError,
        Outcome::ConnectError,
        Outcome::Timeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::Invalid => "invalid",
            Outcome::Exhausted => "exhausted",
            Outcome::RateLimited => "rate_limited",
            Outcome::Forbidden => "forbidden",
            Outcome::ServerError => "server_error",
            Outcome::ConnectError => "connect_error",
            Outcome::Timeout => "timeout",
        }
    }

    /// An answer that did not fail over: 2xx, the caller's 4xx, or a 5xx.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Ok,
            500.. => Outcome::ServerError,
            _ => Outcome::ClientError,
        }
    }
}

/// Why a call was refused before it went anywhere (it leaves no log row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No key, an unknown key, or a disabled or expired client's (401).
    Unauthorized,
    /// A model outside the client's list (403).
    Model,
    /// Over the client's rpm or a daily limit (429).
    Limit,
    /// A `/v1/...` route the proxy does not serve (404): what a client is missing.
    UnknownEndpoint,
}

impl Refused {
    const ALL: [Refused; 4] =
        [Refused::Unauthorized, Refused::Model, Refused::Limit, Refused::UnknownEndpoint];

    fn label(self) -> &'static str {
        match self {
            Refused::Unauthorized => "unauthorized",
            Refused::Model => "model_not_allowed",
            Refused::Limit => "limit",
            Refused::UnknownEndpoint => "unknown_endpoint",
        }
    }
}

/// The pool as the scrape finds it.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoolGauges {
    pub keys: crate::pool::StateCounts,
    pub cooldowns: usize,
    pub log_queue: usize,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    ttfb: HistogramVec,
    /// Indexed by `Outcome` (`ALL` is in declaration order): resolved once,
    /// so counting is one atomic add.
    attempts: Vec<IntCounter>,
    failovers: IntCounter,
    tokens: IntCounterVec,
    keys: IntGaugeVec,
    cooldowns: IntGauge,
    log_queue: IntGauge,
    log_dropped: IntCounter,
    client_requests: IntCounterVec,
    client_tokens: IntCounterVec,
    /// Indexed by `Refused`, likewise.
    refused: Vec<IntCounter>,
    /// Which models have a label of their own.
    named: Arc<dyn NamedModels>,
}

/// Which model names get a label of their own.
pub trait NamedModels: Send + Sync {
    fn names(&self, model: &str) -> bool;
}

/// The models the upstream lists (as the pool last read its model list) and
/// the ones an alias calls.
pub struct ServedOrAliased {
    pub pool: Arc<crate::pool::PoolShared>,
    pub aliases: Arc<crate::aliases::AliasTable>,
}

impl NamedModels for ServedOrAliased {
    fn names(&self, model: &str) -> bool {
        self.pool.serves(model) || self.aliases.snapshot().rules().iter().any(|a| a.model == model)
    }
}

/// Seconds: from a fast embedding to a long video submission.
const LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

fn name(n: &str) -> String {
    format!("siliconflow_proxy_{n}")
}

impl Metrics {
    /// Every family, registered; `named` says which models get a label.
    pub fn new(named: Arc<dyn NamedModels>) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, prometheus::Error> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter_vec = |n: &str, help: &str, labels: &[&str]| {
            reg(&registry, IntCounterVec::new(Opts::new(name(n), help), labels)?)
        };
        let counter = |n: &str, help: &str| reg(&registry, IntCounter::new(name(n), help)?);
        let gauge = |n: &str, help: &str| reg(&registry, IntGauge::new(name(n), help)?);
        let histogram = |n: &str, help: &str| {
            let opts = HistogramOpts::new(name(n), help).buckets(LATENCY_BUCKETS.to_vec());
            reg(&registry, HistogramVec::new(opts, &["endpoint"])?)
        };
        let requests = counter_vec(
            "requests_total",
            "Calls answered (each one log row), by endpoint, model and HTTP status.",
            &["endpoint", "model", "status"],
        )?;
        let duration = histogram(
            "request_duration_seconds",
            "Time from a call's arrival to the end of its answer (a stream's last byte), by endpoint.",
        )?;
        let ttfb = histogram(
            "time_to_first_byte_seconds",
            "Time from a call's arrival to the first byte of the upstream's answer body, by endpoint.",
        )?;
        let attempts_vec = counter_vec(
            "upstream_attempts_total",
            "Attempts sent to SiliconFlow, by what came of them.",
            &["outcome"],
        )?;
        let attempts = Outcome::ALL.iter().map(|o| attempts_vec.with_label_values(&[o.label()])).collect();
        let failovers =
            counter("failovers_total", "Times a call moved on to another key after a failed attempt.")?;
        let tokens = counter_vec(
            "tokens_total",
            "Tokens metered in answers, by model and direction (input, output).",
            &["model", "direction"],
        )?;
        let keys =
            reg(&registry, IntGaugeVec::new(Opts::new(name("keys"), "Pool keys by state."), &["state"])?)?;
        let cooldowns = gauge("cooldowns_active", "Rate-limit cooldowns (account and model) running now.")?;
        let log_queue = gauge("log_queue_rows", "Request log rows not yet written to the database.")?;
        let log_dropped = counter(
            "log_rows_dropped_total",
            "Request log rows dropped: LOG_QUEUE_MAX rows were already waiting for the database, or the database refused the row.",
        )?;
        let client_requests = counter_vec(
            "client_requests_total",
            "Calls answered, by client (API_KEY is \"env\").",
            &["client"],
        )?;
        let client_tokens = counter_vec("client_tokens_total", "Tokens metered, by client.", &["client"])?;
        let refused_vec = counter_vec(
            "refusals_total",
            "Calls refused before reaching the upstream by a client rule, a missing or wrong key, or an unknown route (no log row).",
            &["reason"],
        )?;
        let refused = Refused::ALL.iter().map(|r| refused_vec.with_label_values(&[r.label()])).collect();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            ttfb,
            attempts,
            failovers,
            tokens,
            keys,
            cooldowns,
            log_queue,
            log_dropped,
            client_requests,
            client_tokens,
            refused,
            named,
        })
    }

    pub fn attempt(&self, outcome: Outcome) {
        if let Some(c) = self.attempts.get(outcome as usize) {
            c.inc();
        }
    }

    pub fn failover(&self) {
        self.failovers.inc();
    }

    pub fn refused(&self, why: Refused) {
        if let Some(c) = self.refused.get(why as usize) {
            c.inc();
        }
    }

    /// A row the full log queue dropped: still a call answered.
    pub fn dropped(&self, row: &NewLog) {
        self.log_dropped.inc();
        self.observe(std::slice::from_ref(row));
    }

    /// Counts answered calls from their log rows. A batch is summed first
    /// (rows of one endpoint, model and status are one `inc_by`), so the
    /// labels are looked up once per batch rather than once per row.
    pub fn observe(&self, rows: &[NewLog]) {
        if rows.is_empty() {
            return;
        }
        type Timing = (&'static str, Histogram, Histogram);
        let mut requests: HashMap<(&'static str, &str, i32), u64> = HashMap::new();
        let mut tokens: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut clients: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut timings: Vec<Timing> = Vec::new();
        for row in rows {
            let endpoint = endpoint_label(&row.endpoint);
            let model = if row.model.is_empty() {
                NO_MODEL
            } else if self.named.names(&row.model) {
                row.model.as_str()
            } else {
                OTHER
            };
            *requests.entry((endpoint, model, row.status)).or_default() += 1;
            let (input, output) = (row.input_tokens.max(0) as u64, row.output_tokens.max(0) as u64);
            if input > 0 || output > 0 {
                let t = tokens.entry(model).or_default();
                t.0 = t.0.wrapping_add(input);
                t.1 = t.1.wrapping_add(output);
            }
            if let Some(client) = &row.client {
                let c = clients.entry(client.as_str()).or_default();
                c.0 += 1;
                c.1 = c.1.wrapping_add(row.total_tokens.max(0) as u64);
            }
            let at = match timings.iter().position(|t| t.0 == endpoint) {
                Some(at) => at,
                None => {
                    let labels = [endpoint];
                    timings.push((
                        endpoint,
                        self.duration.with_label_values(&labels),
                        self.ttfb.with_label_values(&labels),
                    ));
                    timings.len() - 1
                }
            };
            let (_, duration, ttfb) = &timings[at];
            duration.observe(row.latency_ms.max(0) as f64 / 1000.0);
            if let Some(t) = row.ttfb_ms {
                ttfb.observe(t.max(0) as f64 / 1000.0);
            }
        }
        for ((endpoint, model, status), n) in requests {
            self.requests.with_label_values(&[endpoint, model, &status_label(status)]).inc_by(n);
        }
        for (model, (input, output)) in tokens {
            if input > 0 {
                self.tokens.with_label_values(&[model, "input"]).inc_by(input);
            }
            if output > 0 {
                self.tokens.with_label_values(&[model, "output"]).inc_by(output);
            }
        }
        for (client, (calls, total)) in clients {
            self.client_requests.with_label_values(&[client]).inc_by(calls);
            if total > 0 {
                self.client_tokens.with_label_values(&[client]).inc_by(total);
            }
        }
    }

    /// The text Prometheus scrapes, with the pool's gauges as `pool` has them now.
    pub fn render(&self, pool: PoolGauges) -> Result<String, prometheus::Error> {
        let k = pool.keys;
        for (state, n) in [
            ("active", k.active),
            ("cooling", k.cooling),
            ("exhausted", k.exhausted),
            ("invalid", k.invalid),
            ("disabled", k.disabled),
        ] {
            self.keys.with_label_values(&[state]).set(n as i64);
        }
        self.cooldowns.set(pool.cooldowns as i64);
        self.log_queue.set(pool.log_queue as i64);
        let mut out = String::with_capacity(16 * 1024);
        TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)?;
        Ok(out)
    }

    /// The content type of `render`'s text.
    pub fn content_type() -> String {
        TextEncoder::new().format_type().to_string()
    }
}

/// The route a path is served by: the routed endpoints as they are, the
/// per-batch routes by their pattern, anything else `other`.
pub fn endpoint_label(path: &str) -> &'static str {
    if let Some(e) = crate::upstream::ENDPOINTS.iter().find(|e| **e == path) {
        return e;
    }
    match path.strip_prefix("/v1/batches/") {
        Some(rest) if rest.ends_with("/cancel") => "/v1/batches/{id}/cancel",
        Some(_) => "/v1/batches/{id}",
        None if path == "/v1/audio/reference/delete" => "/v1/audio/reference/delete",
        None => OTHER,
    }
}

fn status_label(status: i32) -> String {
    if (100..=599).contains(&status) {
        status.to_string()
    } else {
        // 0: the call ended before any answer (the client went away first).
        "0".to_string()
    }
}

/// The log writer hands its rows to the metrics through this.
impl RowObserver for Metrics {
    fn observe(&self, rows: &[NewLog]) {
        Metrics::observe(self, rows)
    }

    fn dropped(&self, row: &NewLog) {
        Metrics::dropped(self, row)
    }

    fn refused(&self, rows: usize) {
        self.log_dropped.inc_by(rows as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed model list.
    struct Listed(Vec<&'static str>);

    impl NamedModels for Listed {
        fn names(&self, model: &str) -> bool {
            self.0.contains(&model)
        }
    }
    use crate::db::log_insert::tests::row;

    #[test]
    fn a_batch_counts_each_row() {
        let m = Metrics::new(Arc::new(Listed(vec!["Qwen/Qwen3-8B"]))).unwrap();
        let rows: Vec<NewLog> = (0..8).map(row).collect();
        m.observe(&rows);
        m.observe(&rows[..2]);
        let text = m.render(PoolGauges::default()).unwrap();
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok()))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        };
        // Rows 0, 4 (and 0 again): status 200, an even row's model.
        let ok = r#"siliconflow_proxy_requests_total{endpoint="/v1/chat/completions",model="Qwen/Qwen3-8B",status="200"}"#;
        assert_eq!(value(ok), 3.0);
        assert_eq!(
            value(r#"siliconflow_proxy_request_duration_seconds_count{endpoint="/v1/chat/completions"}"#),
            10.0
        );
        // Odd rows have a first byte: 1, 3, 5, 7 and 1 again.
        assert_eq!(
            value(r#"siliconflow_proxy_time_to_first_byte_seconds_count{endpoint="/v1/chat/completions"}"#),
            5.0
        );
        // Even rows name a client of their own; row 0 twice.
        assert_eq!(value(r#"siliconflow_proxy_client_requests_total{client="client-0"}"#), 2.0);
        assert_eq!(value(r#"siliconflow_proxy_client_tokens_total{client="client-4"}"#), 4.0);
        assert_eq!(
            value(r#"siliconflow_proxy_tokens_total{direction="input",model="Qwen/Qwen3-8B"}"#),
            // Every even row (its model is listed), row 0 twice.
            (2 + 4 + 6) as f64 * 7.0
        );
    }

    #[test]
    fn counters_are_indexed_by_declaration_order() {
        assert!(Outcome::ALL.iter().enumerate().all(|(i, o)| *o as usize == i));
        assert!(Refused::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        let m = Metrics::new(Arc::new(Listed(vec!["Qwen/Qwen3-8B"]))).unwrap();
        m.attempt(Outcome::Timeout);
        m.refused(Refused::Limit);
        let text = m.render(PoolGauges::default()).unwrap();
        assert!(text.contains("siliconflow_proxy_upstream_attempts_total{outcome=\"timeout\"} 1"));
        assert!(text.contains("siliconflow_proxy_refusals_total{reason=\"limit\"} 1"));
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(endpoint_label("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(endpoint_label("/v1/batches/batch_abc"), "/v1/batches/{id}");
        assert_eq!(endpoint_label("/v1/batches/batch_abc/cancel"), "/v1/batches/{id}/cancel");
        assert_eq!(endpoint_label("/v1/whatever/sk-secret"), OTHER);
        assert_eq!(status_label(429), "429");
        assert_eq!(status_label(-3), "0");

        let m = Metrics::new(Arc::new(Listed(vec!["listed/0", "listed/1"]))).unwrap();
        // A name the upstream does not list gets no label of its own, served
        // (the junk a multipart upload may name) or refused.
        for i in 0..60 {
            let mut r = row(i);
            r.model = format!("junk-model-{i}");
            r.status = if i % 2 == 0 { 200 } else { 400 };
            m.observe(std::slice::from_ref(&r));
        }
        let mut r = row(2);
        r.model = "listed/1".into();
        m.observe(std::slice::from_ref(&r));
        let text = m.render(PoolGauges::default()).unwrap();
        assert!(!text.contains("junk-model"), "{text}");
        assert!(text.contains(r#"model="listed/1""#));
        let models: Vec<_> =
            text.lines().filter(|l| l.starts_with("siliconflow_proxy_requests_total{")).collect();
        // "other" with 200 and with 400, and the listed model.
        assert_eq!(models.len(), 3, "{models:?}");
    }
}
