//! Builds the application: database, actors, HTTP server. Binding happens here
//! (port 0 works), so tests start the real server on a free port.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use arc_swap::ArcSwap;

use crate::config::Config;
use crate::credentials::{AdminCredentials, Throttle};
use crate::db::log_writer::LogSink;
use crate::db::log_writer::{Flush, LogWriter};
use crate::db::{self, DbError};
use crate::pool::actor::PoolActor;
use crate::pool::cooldown::Policy;
use crate::pool::refresher::{RefreshStatus, Refresher, RefresherSettings};
use crate::pool::PoolShared;
use crate::state::{build_client, AppState, Upstream};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    arbiters: Vec<Arbiter>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))?;
        Self::build_with_listener(config, listener).await
    }

    pub async fn build_with_listener(config: Config, listener: TcpListener) -> Result<Self, StartupError> {
        let config = Arc::new(config);
        let db = db::open(&config.database)?;
        log::info!("database: {}", config.database.display());
        let admin = AdminCredentials::init(&config, &db)?;
        let shared_database = matches!(config.database, crate::config::Database::Postgres(_));
        let clients =
            Arc::new(crate::clients::ClientKeys::load(&db, config.timezone, db::now_ms(), shared_database)?);

        let policy = Policy { base: config.cooldown_base, max: config.cooldown_max };
        let shared = Arc::new(PoolShared::new(config.strategy, policy));
        let mut pool_actor = PoolActor::load(
            db.clone(),
            shared.clone(),
            config.upstream_base_url.clone(),
            config.exhausted_retry_interval,
        )?;
        // Several instances may share a PostgreSQL database: each names itself
        // in the notifications it sends after a change.
        let shared_db = match &config.database {
            crate::config::Database::Postgres(url) => {
                use rand::distr::{Alphanumeric, SampleString};
                let instance = Alphanumeric.sample_string(&mut rand::rng(), 16);
                pool_actor = pool_actor.with_instance(instance.clone());
                Some((url.clone(), instance))
            }
            crate::config::Database::Sqlite(_) => None,
        };
        let counts = shared.counts(db::now_ms());
        log::info!(
            "key pool: {} keys ({} active, {} exhausted, {} invalid, {} disabled), strategy {}",
            counts.total,
            counts.active,
            counts.exhausted,
            counts.invalid,
            counts.disabled,
            config.strategy.as_str()
        );

        // Actors that touch the database run on their own threads, so a slow
        // write never holds up a request worker.
        let pool_arbiter = Arbiter::new();
        let log_arbiter = Arbiter::new();
        pool_arbiter.spawn_fn(|| name_thread(c"key-pool"));
        log_arbiter.spawn_fn(|| name_thread(c"log-writer"));
        let pool_addr: Addr<PoolActor> =
            PoolActor::start_in_arbiter(&pool_arbiter.handle(), move |_| pool_actor);
        if let Some((url, instance)) = &shared_db {
            // Other instances' changes: reload within a poll (100 ms), and every
            // 30 s whatever was heard; the listener ends with the pool actor.
            let (alive, changed) = (pool_addr.clone(), pool_addr.clone());
            let (client_keys, client_db) = (clients.clone(), db.clone());
            crate::db::notify::listen(
                url.clone(),
                instance.clone(),
                Duration::from_millis(100),
                Duration::from_secs(30),
                move || alive.connected(),
                move |what| {
                    if what.all || what.clients {
                        if let Err(e) = client_keys.reload(&client_db) {
                            log::error!("client keys: reload after another instance's change: {e}");
                        }
                    }
                    changed.do_send(crate::pool::actor::Reload(what))
                },
            )?;
            // Client limits across instances: each publishes its counts of
            // today every second and takes the others'.
            let alive = pool_addr.clone();
            crate::clients::share_usage(clients.clone(), db.clone(), instance.clone(), move || {
                alive.connected()
            })?;
        }
        // One instance of those sharing a PostgreSQL database runs the scheduled jobs.
        let leadership = match &shared_db {
            Some((url, _)) => {
                let alive = pool_addr.clone();
                crate::db::leader::Leadership::contend(url.clone(), Duration::from_secs(2), move || {
                    alive.connected()
                })?
            }
            None => crate::db::leader::Leadership::alone(),
        };
        let (log_db, jobs) = (db.clone(), leadership.clone());
        let settings = crate::db::log_writer::WriterSettings {
            batch_size: config.log_batch_size,
            interval: config.log_flush_interval,
            retention: config.log_retention,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new(most_used_models(&db))?);
        let writer_metrics = metrics.clone();
        let (log_tx, log_rx) = std::sync::mpsc::channel();
        let log_counters = crate::db::log_writer::LogCounters::new(config.log_queue_max);
        let writer_counters = log_counters.clone();
        let log_writer = LogWriter::start_in_arbiter(&log_arbiter.handle(), move |_| {
            LogWriter::new(log_db, log_rx, writer_counters, writer_metrics, settings, jobs)
        });
        let refresh_status = Arc::new(ArcSwap::from_pointee(RefreshStatus::default()));
        pool_addr.do_send(crate::pool::actor::SetLeadership(leadership.clone()));
        let refresher = {
            let (cfg, pool, shared, status, leadership) = (
                config.clone(),
                pool_addr.clone(),
                shared.clone(),
                refresh_status.clone(),
                leadership.clone(),
            );
            Refresher::start_in_arbiter(&pool_arbiter.handle(), move |_| {
                let settings = RefresherSettings {
                    interval: cfg.auto_refresh_interval,
                    invalid_recheck: cfg.invalid_recheck_interval,
                    concurrency: cfg.refresh_concurrency,
                    timeout: cfg.check_timeout,
                    rate: cfg.refresh_rate,
                    leadership,
                };
                Refresher::new(build_client(&cfg), pool, shared, status, settings)
            })
        };

        if config.is_open() && clients.snapshot().is_empty() {
            log::warn!("API_KEY is not set: the proxy is OPEN, anyone who can reach it can spend your keys' balance. Set API_KEY to require a client key.");
        }

        let state = web::Data::new(AppState {
            config: config.clone(),
            pool: shared,
            pool_actor: pool_addr,
            refresher,
            refresh_status,
            log: LogSink::new(
                log_writer.clone(),
                log_tx,
                log_counters,
                config.log_batch_size,
                metrics.clone(),
            ),
            log_writer,
            db,
            admin,
            login_throttle: Throttle::new(config.login_max_failures),
            clients,
            leadership,
            metrics,
        });
        let port = listener.local_addr()?.port();
        let server_state = state.clone();
        let client_config = config.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(server_state.clone())
                .app_data(web::Data::new(Upstream { client: build_client(&client_config) }))
                // Bodies are read by the handlers with their own limit and error.
                .app_data(web::PayloadConfig::new(client_config.max_body_bytes))
                // Malformed query strings and paths: a JSON 400, not actix's plain text.
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    let body = serde_json::json!({"error": format!("invalid query string: {err}")});
                    actix_web::error::InternalError::from_response(
                        err,
                        actix_web::HttpResponse::BadRequest().json(body),
                    )
                    .into()
                }))
                .app_data(web::PathConfig::default().error_handler(|err, _| {
                    let body = serde_json::json!({"error": format!("invalid path: {err}")});
                    actix_web::error::InternalError::from_response(
                        err,
                        actix_web::HttpResponse::BadRequest().json(body),
                    )
                    .into()
                }))
                .route("/health", web::get().to(crate::health::health))
                .route("/metrics", web::get().to(crate::health::metrics))
                .configure(crate::proxy::configure)
                .configure(crate::admin::configure)
        })
        .workers(config.workers)
        .backlog(4096)
        // Stream chunks and small answers go out at once, not after an ACK.
        .tcp_nodelay(true)
        // Signals are handled in `run_until_stopped`: actix-server's own handler
        // stops the whole actor system, log writer included, before it can flush.
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        // A client that closes its connection while waiting for an answer has
        // gone: drop its request (and so the upstream call it was waiting
        // on) at once, instead of letting the model run on for nobody.
        .h1_allow_half_closed(false)
        .listen(listener)?
        .run();
        log::info!("listening on {}:{}", config.host, port);
        Ok(Application { port, server, state, arbiters: vec![pool_arbiter, log_arbiter] })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// The threads of the pool actor, refresher and log writer, for a host
    /// (a test) that ends the application without `run_until_stopped`.
    pub fn background(&self) -> Vec<actix_rt::ArbiterHandle> {
        self.arbiters.iter().map(|a| a.handle()).collect()
    }

    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (or a stop through the handle), then writes
    /// every buffered log row before returning.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let handle = self.server.handle();
        actix_rt::spawn(async move {
            wait_for_stop_signal().await;
            log::info!("stop signal received: finishing requests in flight, then flushing the request log");
            handle.stop(true).await;
        });
        let served = self.server.await;
        // Requests cut at the shutdown timeout are dropped after the workers
        // report back: wait (bounded) until each has handed over its row.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while self.state.log.open_requests() > 0 && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if self.state.log.open_requests() > 0 {
            log::error!(
                "shutdown: {} requests still open; their rows may be missing",
                self.state.log.open_requests()
            );
        }
        // Let the pool actor persist the key events already queued.
        if let Err(e) = self.state.pool_actor.send(crate::pool::actor::Drain).await {
            log::error!("shutdown: pool actor unavailable: {e}");
        }
        for attempt in 1..=3 {
            match self.state.log_writer.send(Flush).await {
                Ok(Ok(n)) => {
                    log::info!("shutdown: request log flushed ({n} rows written this run)");
                    break;
                }
                Ok(Err(e)) => {
                    log::error!("shutdown: request log flush failed (attempt {attempt}): {e}");
                    actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => {
                    log::error!("shutdown: log writer unavailable: {e}");
                    break;
                }
            }
        }
        for a in self.arbiters {
            a.stop();
        }
        served?;
        Ok(())
    }
}

/// The models most used successfully in the last 30 days, most first: they
/// get their own metrics label from the start. Empty if the database cannot
/// say (the labels then fill as models are served).
fn most_used_models(db: &db::DbPool) -> Vec<String> {
    let Ok(mut conn) = db.get_timeout(db::CONNECT_WAIT) else { return Vec::new() };
    let hour = db::now_ms().div_euclid(3_600_000);
    match db::queries::stats::by_model(&mut conn, hour - 30 * 24, hour + 1) {
        Ok(mut rows) => {
            rows.retain(|(_, a)| a.calls > a.errors);
            rows.sort_by_key(|(_, a)| std::cmp::Reverse(a.calls - a.errors));
            rows.into_iter().map(|(m, _)| m).take(crate::metrics::MAX_MODELS).collect()
        }
        Err(e) => {
            log::warn!("metrics: could not read the most used models: {e}");
            Vec::new()
        }
    }
}

#[cfg(unix)]
async fn wait_for_stop_signal() {
    use actix_rt::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen for SIGTERM: {e}");
            let _ = actix_rt::signal::ctrl_c().await;
            return;
        }
    };
    tokio_select(term.recv(), actix_rt::signal::ctrl_c()).await;
}

#[cfg(not(unix))]
async fn wait_for_stop_signal() {
    let _ = actix_rt::signal::ctrl_c().await;
}

/// Waits for whichever of two futures finishes first.
#[cfg(unix)]
async fn tokio_select<A: std::future::Future, B: std::future::Future>(a: A, b: B) {
    futures_util::future::select(std::pin::pin!(a), std::pin::pin!(b)).await;
}

/// Names the current thread, so `top -H` and the benchmark's per-thread CPU
/// figures tell the actor threads apart (Linux keeps the first 15 bytes).
fn name_thread(name: &std::ffi::CStr) {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_NAME reads a NUL-terminated string, which a CStr is.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}
