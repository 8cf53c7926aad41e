//! Configuration from the environment (and `.env`, loaded by `main`).
//!
//! Parsing takes a lookup function rather than reading `std::env` directly, so
//! that tests can build a config from a plain map without touching the process
//! environment (which is shared between test threads).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub database: Database,
    pub upstream_base_url: String,
    /// Client access keys; empty means the proxy is open.
    pub client_api_keys: Vec<String>,
    /// `MODEL_ALIASES`: when set, replaces the stored alias table at start.
    pub model_aliases: Option<crate::aliases::Aliases>,
    /// `MODEL_CATALOG_FILE`: the owner's catalog entries, stored at the start.
    pub model_catalog_file: Option<std::path::PathBuf>,
    pub admin_username: String,
    pub admin_password: Option<String>,
    /// When set, `/metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// `None` disables the periodic refresh.
    pub auto_refresh_interval: Option<Duration>,
    pub invalid_recheck_interval: Duration,
    /// How long an exhausted key whose balance cannot be read waits before one
    /// real call is tried with it; `None` (0) = never.
    pub exhausted_retry_interval: Option<Duration>,
    pub refresh_concurrency: usize,
    /// Checks per second in a refresh of every key; `None`: unpaced.
    pub refresh_rate: Option<f64>,
    pub strategy: Strategy,
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub check_timeout: Duration,
    pub max_body_bytes: usize,
    /// `/v1/messages/count_tokens` bodies (answered here): 413 beyond.
    pub count_tokens_body_bytes: usize,
    /// Uploads up to this size are read whole so that another key can retry
    /// them; larger ones stream straight through (one attempt).
    pub failover_buffer_bytes: usize,
    pub cooldown_base: Duration,
    pub cooldown_max: Duration,
    pub log_batch_size: usize,
    pub log_flush_interval: Duration,
    /// The most request log rows that wait for the database (while it is
    /// down); rows beyond are counted as dropped.
    pub log_queue_max: usize,
    pub workers: usize,
    pub upstream_pool_size: usize,
    /// How long a stop waits for answers in flight before cutting them (their
    /// rows are still written, marked aborted). Below Docker's 10 s kill.
    pub shutdown_timeout: Duration,
    /// The one time zone used for every time bucket (stats by hour and day).
    pub timezone: chrono::FixedOffset,
    /// Request log rows older than this are deleted (with their rollup); `None` keeps all.
    pub log_retention: Option<Duration>,
    pub session_ttl: Duration,
    /// Force the Secure flag on the session cookie (it is set anyway behind HTTPS).
    pub cookie_secure: bool,
    /// Wrong admin passwords allowed per client address per minute.
    pub login_max_failures: u32,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto`
    /// are believed; empty = such headers are ignored.
    pub trusted_proxies: Vec<crate::net::IpNet>,
    /// The one header (lower-case) that gives the client's address when the
    /// peer is a trusted proxy: `x-forwarded-for` (default), `forwarded`, or
    /// another the proxy sets (`x-real-ip`). Any other such header is ignored.
    pub trusted_proxy_header: String,
    /// The largest body an admin route reads (an import of 10,000 keys is ~0.6 MiB).
    pub admin_body_bytes: usize,
    /// How long a request body may take (admin routes: in all; `/v1`: between
    /// two pieces); a client that stops sending gets 408.
    pub body_read_timeout: Duration,
    /// `KEY_ENCRYPTION_KEY` or `KEY_ENCRYPTION_KEY_FILE`; `None`: the key
    /// file beside the SQLite database (PostgreSQL refuses to start).
    pub key_encryption_key: Option<crate::vault::KeySource>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup<F>(lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        // Empty values count as unset: `.env.example` copied as-is has `API_KEY=`.
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let num = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v.parse::<u64>().map_err(|_| ConfigError {
                    var,
                    value: v.clone(),
                    reason: "expected a whole number >= 0".into(),
                }),
            }
        };
        let positive = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
            let v = num(var, default)?;
            if v == 0 {
                return Err(ConfigError { var, value: "0".into(), reason: "must be at least 1".into() });
            }
            Ok(v)
        };

        let port = match get("PORT") {
            None => 7898,
            Some(v) => v.parse::<u16>().map_err(|_| ConfigError {
                var: "PORT",
                value: v.clone(),
                reason: "expected a port number 0-65535".into(),
            })?,
        };

        let database = match (get("DATABASE_URL"), get("DB_PATH")) {
            (Some(url), _) => parse_database_url(&url)?,
            (None, Some(path)) => Database::Sqlite(PathBuf::from(path)),
            (None, None) => Database::Sqlite(PathBuf::from("data/api_keys.db")),
        };

        let upstream_base_url =
            get("SILICONFLOW_BASE_URL").unwrap_or_else(|| "https://api.siliconflow.cn".to_string());
        let upstream_base_url = normalize_base_url(&upstream_base_url).ok_or_else(|| ConfigError {
            var: "SILICONFLOW_BASE_URL",
            value: upstream_base_url.clone(),
            reason: "expected an http:// or https:// origin such as https://api.siliconflow.cn".into(),
        })?;

        let client_api_keys = get("API_KEY")
            .map(|v| v.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect())
            .unwrap_or_default();

        let model_aliases = match get("MODEL_ALIASES") {
            None => None,
            Some(v) => Some(crate::aliases::Aliases::parse_list(&v).map_err(|reason| ConfigError {
                var: "MODEL_ALIASES",
                value: v.chars().take(200).collect(),
                reason: format!("{reason} (expected pattern=model pairs, e.g. claude-*haiku*=Qwen/Qwen3-8B,claude-*=deepseek-ai/DeepSeek-V3.2)"),
            })?),
        };

        let strategy = match get("KEY_STRATEGY") {
            None => Strategy::Balance,
            Some(v) => Strategy::parse(&v).ok_or_else(|| ConfigError {
                var: "KEY_STRATEGY",
                value: v.clone(),
                reason: "expected one of balance, round_robin, random, least_used, weighted".into(),
            })?,
        };

        let refresh = num("AUTO_REFRESH_INTERVAL", 3600)?;
        let max_attempts = positive("MAX_ATTEMPTS", 3)?;
        let max_attempts = u32::try_from(max_attempts).map_err(|_| ConfigError {
            var: "MAX_ATTEMPTS",
            value: max_attempts.to_string(),
            reason: "too large".into(),
        })?;
        let cooldown_base = positive("COOLDOWN_SECONDS", 30)?;
        let cooldown_max = positive("COOLDOWN_MAX_SECONDS", 3600)?;
        if cooldown_max < cooldown_base {
            return Err(ConfigError {
                var: "COOLDOWN_MAX_SECONDS",
                value: cooldown_max.to_string(),
                reason: "must not be smaller than COOLDOWN_SECONDS".into(),
            });
        }
        let default_workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);

        Ok(Config {
            host: get("HOST").unwrap_or_else(|| "0.0.0.0".to_string()),
            port,
            database,
            upstream_base_url,
            client_api_keys,
            model_aliases,
            model_catalog_file: get("MODEL_CATALOG_FILE")
                .filter(|v| !v.trim().is_empty())
                .map(std::path::PathBuf::from),
            admin_username: get("ADMIN_USERNAME").unwrap_or_else(|| "admin".to_string()),
            admin_password: get("ADMIN_PASSWORD"),
            metrics_token: get("METRICS_TOKEN").map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
            auto_refresh_interval: (refresh > 0).then(|| Duration::from_secs(refresh)),
            invalid_recheck_interval: Duration::from_secs(positive("INVALID_RECHECK_INTERVAL", 86_400)?),
            exhausted_retry_interval: match num("EXHAUSTED_RETRY_INTERVAL", 3600)? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            refresh_concurrency: positive("REFRESH_CONCURRENCY", 8)? as usize,
            refresh_rate: match num("REFRESH_RATE", 50)? {
                0 => None,
                r => Some(r as f64),
            },
            strategy,
            max_attempts,
            connect_timeout: Duration::from_secs(positive("UPSTREAM_CONNECT_TIMEOUT", 10)?),
            response_timeout: Duration::from_secs(positive("UPSTREAM_TIMEOUT", 600)?),
            stream_idle_timeout: Duration::from_secs(positive("STREAM_IDLE_TIMEOUT", 300)?),
            check_timeout: Duration::from_secs(positive("CHECK_TIMEOUT", 15)?),
            max_body_bytes: positive("MAX_BODY_BYTES", 50 * 1024 * 1024)? as usize,
            count_tokens_body_bytes: positive("COUNT_TOKENS_BODY_BYTES", 4 * 1024 * 1024)? as usize,
            failover_buffer_bytes: num("FAILOVER_BUFFER_BYTES", 8 * 1024 * 1024)? as usize,
            cooldown_base: Duration::from_secs(cooldown_base),
            cooldown_max: Duration::from_secs(cooldown_max),
            log_batch_size: positive("LOG_BATCH_SIZE", 2048)? as usize,
            log_flush_interval: Duration::from_millis(positive("LOG_FLUSH_MS", 1000)?),
            log_queue_max: positive("LOG_QUEUE_MAX", 200_000)?.min(usize::MAX as u64) as usize,
            workers: positive("WORKERS", default_workers as u64)? as usize,
            upstream_pool_size: positive("UPSTREAM_POOL_SIZE", 1024)? as usize,
            shutdown_timeout: Duration::from_secs(num("SHUTDOWN_TIMEOUT", 8)?),
            timezone: match get("TIMEZONE") {
                None => chrono::FixedOffset::east_opt(0).ok_or_else(|| ConfigError {
                    var: "TIMEZONE",
                    value: String::new(),
                    reason: "internal".into(),
                })?,
                Some(v) => parse_offset(&v).ok_or_else(|| ConfigError {
                    var: "TIMEZONE",
                    value: v.clone(),
                    reason: "expected UTC or a fixed offset such as +08:00, -05:00, UTC+8".into(),
                })?,
            },
            log_retention: match num("LOG_RETENTION_DAYS", 90)? {
                0 => None,
                d => Some(Duration::from_secs(d.saturating_mul(86_400))),
            },
            session_ttl: Duration::from_secs(positive("SESSION_TTL_HOURS", 168)?.saturating_mul(3600)),
            cookie_secure: match get("COOKIE_SECURE").as_deref() {
                None | Some("0" | "false" | "no") => false,
                Some("1" | "true" | "yes") => true,
                Some(v) => {
                    return Err(ConfigError {
                        var: "COOKIE_SECURE",
                        value: v.to_string(),
                        reason: "expected true or false".into(),
                    })
                }
            },
            login_max_failures: positive("LOGIN_MAX_FAILURES", 5)?.min(u32::MAX as u64) as u32,
            trusted_proxies: match get("TRUSTED_PROXIES") {
                None => Vec::new(),
                Some(v) => crate::net::parse_trusted(&v).map_err(|reason| ConfigError {
                    var: "TRUSTED_PROXIES",
                    value: v.clone(),
                    reason: format!(
                        "{reason}; expected addresses or CIDR blocks, e.g. 127.0.0.1,172.16.0.0/12"
                    ),
                })?,
            },
            trusted_proxy_header: match get("TRUSTED_PROXY_HEADER") {
                None => "x-forwarded-for".into(),
                Some(v)
                    if !v.is_empty()
                        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    v.to_ascii_lowercase()
                }
                Some(v) => {
                    return Err(ConfigError {
                        var: "TRUSTED_PROXY_HEADER",
                        value: v.clone(),
                        reason: "expected a header name, e.g. x-forwarded-for, forwarded or x-real-ip".into(),
                    })
                }
            },
            admin_body_bytes: positive("ADMIN_BODY_BYTES", 1024 * 1024)? as usize,
            body_read_timeout: Duration::from_secs(positive("BODY_READ_TIMEOUT", 30)?),
            key_encryption_key: match (get("KEY_ENCRYPTION_KEY"), get("KEY_ENCRYPTION_KEY_FILE")) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError {
                        var: "KEY_ENCRYPTION_KEY_FILE",
                        value: "(set)".into(),
                        reason: "set KEY_ENCRYPTION_KEY or KEY_ENCRYPTION_KEY_FILE, not both".into(),
                    })
                }
                (Some(v), None) => Some(crate::vault::KeySource::Inline(
                    crate::vault::MasterKey::parse(&v).map_err(|reason| ConfigError {
                        var: "KEY_ENCRYPTION_KEY",
                        // Never the key itself, even a wrong one.
                        value: "***".into(),
                        reason,
                    })?,
                )),
                (None, Some(path)) => Some(crate::vault::KeySource::File(PathBuf::from(path))),
                (None, None) => None,
            },
        })
    }

    /// Several instances may share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.database, Database::Postgres(_))
    }

    pub fn is_open(&self) -> bool {
        self.client_api_keys.is_empty()
    }
}

/// `UTC`, `Z`, `+08:00`, `-0530`, `UTC+8`, `+8`.
pub fn parse_offset(s: &str) -> Option<chrono::FixedOffset> {
    let t = s.trim();
    let t = t.strip_prefix("UTC").or_else(|| t.strip_prefix("GMT")).unwrap_or(t);
    if t.is_empty() || t == "Z" {
        return chrono::FixedOffset::east_opt(0);
    }
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?),
        None if rest.len() == 4 => (rest[..2].parse::<i32>().ok()?, rest[2..].parse::<i32>().ok()?),
        None => (rest.parse::<i32>().ok()?, 0),
    };
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// Where the data lives: an SQLite file (one instance), or a PostgreSQL
/// database (several instances may share it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    /// For logs and errors: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(url) => without_password(url),
        }
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Accepts `postgres://...` / `postgresql://...`, or for SQLite
/// `sqlite://path`, `sqlite:path`, `file:path` or a bare path.
fn parse_database_url(url: &str) -> Result<Database, ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Database::Postgres(url.to_string()));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .or_else(|| url.strip_prefix("file:"))
        .unwrap_or(url);
    if path.is_empty() || url.contains("://") && !url.starts_with("sqlite://") {
        return Err(ConfigError {
            var: "DATABASE_URL",
            value: without_password(url),
            reason: "expected postgres://user:password@host:5432/db or sqlite://path/to/file.db".into(),
        });
    }
    Ok(Database::Sqlite(PathBuf::from(path)))
}

/// `https://api.siliconflow.cn/v1/` -> `https://api.siliconflow.cn`.
pub fn normalize_base_url(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix("/v1").unwrap_or(url).trim_end_matches('/');
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return None;
    }
    Some(url.to_string())
}

/// How the pool picks a key (`KEY_STRATEGY`); `pool::select` carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The highest known balance (what users of the old tool expect); equal
    /// or unknown balances spread, least recently picked first; a known
    /// balance of zero comes last.
    Balance,
    RoundRobin,
    Random,
    LeastUsed,
    /// Random, weighted by balance (an unknown balance weighs the median of
    /// the known ones).
    Weighted,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "balance" | "highest_balance" => Strategy::Balance,
            "round_robin" | "roundrobin" => Strategy::RoundRobin,
            "random" => Strategy::Random,
            "least_used" => Strategy::LeastUsed,
            "weighted" => Strategy::Weighted,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Balance => "balance",
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastUsed => "least_used",
            Strategy::Weighted => "weighted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn the_key_encryption_key_is_32_bytes_or_a_file_never_both_and_never_echoed() {
        assert_eq!(cfg(&[]).unwrap().key_encryption_key, None);
        let key = "dGhlIHBvb2wga2V5cyB0ZXN0IGtleSwgMzIgYnl0ZXM=";
        assert!(matches!(
            cfg(&[("KEY_ENCRYPTION_KEY", key)]).unwrap().key_encryption_key,
            Some(crate::vault::KeySource::Inline(_))
        ));
        assert_eq!(
            cfg(&[("KEY_ENCRYPTION_KEY_FILE", "/run/secrets/kek")]).unwrap().key_encryption_key,
            Some(crate::vault::KeySource::File(PathBuf::from("/run/secrets/kek")))
        );
        let e = cfg(&[("KEY_ENCRYPTION_KEY", key), ("KEY_ENCRYPTION_KEY_FILE", "/k")]).unwrap_err();
        assert!(e.reason.contains("not both"), "{e}");
        let e = cfg(&[("KEY_ENCRYPTION_KEY", "c2hvcnQ=")]).unwrap_err();
        assert_eq!((e.var, e.value.as_str()), ("KEY_ENCRYPTION_KEY", "***"));
        assert!(!e.to_string().contains("c2hvcnQ="), "{e}");
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.port, 7898);
        assert_eq!(c.database, Database::Sqlite(PathBuf::from("data/api_keys.db")));
        assert_eq!(c.upstream_base_url, "https://api.siliconflow.cn");
        assert!(c.is_open());
        assert_eq!(c.admin_username, "admin");
        assert_eq!(c.auto_refresh_interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.strategy, Strategy::Balance);
        assert_eq!(c.max_attempts, 3);
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert_eq!(cfg(&[("PORT", "abc")]).unwrap_err().var, "PORT");
        assert_eq!(cfg(&[("AUTO_REFRESH_INTERVAL", "-5")]).unwrap_err().var, "AUTO_REFRESH_INTERVAL");
        assert_eq!(cfg(&[("KEY_STRATEGY", "fastest")]).unwrap_err().var, "KEY_STRATEGY");
        assert_eq!(cfg(&[("MAX_ATTEMPTS", "0")]).unwrap_err().var, "MAX_ATTEMPTS");
        assert_eq!(cfg(&[("SILICONFLOW_BASE_URL", "ftp://x")]).unwrap_err().var, "SILICONFLOW_BASE_URL");
        assert_eq!(cfg(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var, "DATABASE_URL");
        let msg = cfg(&[("PORT", "abc")]).unwrap_err().to_string();
        assert!(msg.contains("PORT") && msg.contains("abc"), "{msg}");
    }

    #[test]
    fn parses_time_zone_offsets() {
        for (text, secs) in
            [("UTC", 0), ("Z", 0), ("+08:00", 28_800), ("UTC+8", 28_800), ("-0530", -19_800), ("-5", -18_000)]
        {
            assert_eq!(parse_offset(text).map(|o| o.local_minus_utc()), Some(secs), "{text}");
        }
        for bad in ["Asia/Shanghai", "+25:00", "8", "+08:99"] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
        assert_eq!(cfg(&[("TIMEZONE", "Mars/Olympus")]).unwrap_err().var, "TIMEZONE");
        assert_eq!(cfg(&[("COOKIE_SECURE", "maybe")]).unwrap_err().var, "COOKIE_SECURE");
        assert_eq!(cfg(&[("LOG_RETENTION_DAYS", "0")]).unwrap().log_retention, None);
    }

    #[test]
    fn parses_lists_urls_and_zero_interval() {
        let c = cfg(&[
            ("API_KEY", " a, b ,,c"),
            ("DATABASE_URL", "sqlite:///tmp/x.db"),
            ("SILICONFLOW_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("AUTO_REFRESH_INTERVAL", "0"),
        ])
        .unwrap();
        assert_eq!(c.client_api_keys, vec!["a", "b", "c"]);
        assert_eq!(c.database, Database::Sqlite(PathBuf::from("/tmp/x.db")));
        assert_eq!(c.upstream_base_url, "http://127.0.0.1:9");
        assert_eq!(c.auto_refresh_interval, None);
        let c = cfg(&[("DB_PATH", "/tmp/y.db"), ("API_KEY", "")]).unwrap();
        assert_eq!(c.database, Database::Sqlite(PathBuf::from("/tmp/y.db")));
        assert!(c.is_open());
        let pg = "postgresql://proxy:s3cret@db:5432/proxy";
        let c = cfg(&[("DATABASE_URL", pg)]).unwrap();
        assert_eq!(c.database, Database::Postgres(pg.into()));
        assert_eq!(c.database.display(), "postgresql://proxy:***@db:5432/proxy", "no password in logs");
        let e = cfg(&[("DATABASE_URL", "mysql://root:pw@h/db")]).unwrap_err();
        assert_eq!((e.var, e.value.as_str()), ("DATABASE_URL", "mysql://root:***@h/db"));
    }
}
