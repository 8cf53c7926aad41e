//! Builds the application: database, actors, HTTP server. Binding happens here
//! (port 0 works), so tests start the real server on a free port.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use arc_swap::ArcSwap;

use crate::aliases::AliasTable;
use crate::clients::ClientKeys;
use crate::config::{Config, Database};
use crate::credentials::{AdminCredentials, Throttle};
use crate::db::leader::Leadership;
use crate::db::log_sink::{LogCounters, LogSink};
use crate::db::log_writer::{Flush, LogWriter, WriterSettings};
use crate::db::notify::{Changed, Notifier};
use crate::db::queries::keys;
use crate::db::{self, DbError};
use crate::metrics::{Metrics, ServedOrAliased};
use crate::pool::cooldown::Policy;
use crate::pool::refresher::{RefreshStatus, Refresher, RefresherSettings};
use crate::pool::{Drain, PoolActor, PoolShared, Reload, SetLeadership};
use crate::state::{build_client, AppState, Upstream};
use crate::vault::master::{self, MasterKey, Origin};
use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The key that seals pool keys at rest: missing, unreadable or wrong.
    #[error("{0}")]
    Vault(String),
    /// `MODEL_CATALOG_FILE` unreadable, or an entry of it that does not check.
    #[error("{0}")]
    Catalog(String),
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    arbiters: Vec<Arbiter>,
}

/// The threads of the actors that touch the database, so that a slow write
/// never holds up a request worker: the pool's (the pool actor and the
/// refresher) and the log writer's.
struct Threads {
    pool: Arbiter,
    log: Arbiter,
}

impl Threads {
    fn start() -> Self {
        let (pool, log) = (Arbiter::new(), Arbiter::new());
        pool.spawn_fn(|| name_thread(c"key-pool"));
        log.spawn_fn(|| name_thread(c"log-writer"));
        Threads { pool, log }
    }
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))?;
        Self::build_with_listener(config, listener).await
    }

    /// The steps, in order: the database and what it holds, the actors on
    /// their threads, the ties between instances, then the server.
    pub async fn build_with_listener(config: Config, listener: TcpListener) -> Result<Self, StartupError> {
        let config = Arc::new(config);
        let db = db::open(&config.database)?;
        log::info!("database: {}", config.database.display());
        let vault = Arc::new(open_vault(&config, &db)?);
        let admin = AdminCredentials::init(&config, &db, &vault)?;
        settle_interrupted_calls(&config, &db)?;
        let clients = Arc::new(ClientKeys::load(&db, config.timezone, db::now_ms(), config.is_shared())?);
        let aliases = Arc::new(AliasTable::load(&db, config.model_aliases.as_ref())?);
        let catalog = Arc::new(load_catalog(&config, &db)?);
        let notifier = notifier(&config, &db);
        let (pool, pool_actor) = load_pool(&config, &db, &vault, notifier.clone())?;
        let threads = Threads::start();
        let pool_actor = PoolActor::start_in_arbiter(&threads.pool.handle(), move |_| pool_actor);
        let alive = {
            let pool_actor = pool_actor.clone();
            move || pool_actor.connected()
        };
        let leadership = leadership(&config, alive.clone())?;
        pool_actor.do_send(SetLeadership(leadership.clone()));
        if let Some(instance) = notifier.instance() {
            let tables =
                Tables { clients: clients.clone(), aliases: aliases.clone(), catalog: catalog.clone() };
            follow_other_instances(&config, &db, instance, tables, &pool_actor, alive)?;
        }
        let named = Arc::new(ServedOrAliased { pool: pool.clone(), aliases: aliases.clone() });
        let metrics = Arc::new(Metrics::new(named)?);
        let (log_writer, log) = start_log_writer(&config, &db, &threads, metrics.clone(), leadership.clone());
        let refresh_status = Arc::new(ArcSwap::from_pointee(RefreshStatus::default()));
        let refresher = start_refresher(&config, &threads, &pool_actor, &pool, &refresh_status, &leadership);
        if config.is_open() && clients.snapshot().is_empty() {
            log::warn!("API_KEY is not set: the proxy is OPEN, anyone who can reach it can spend your keys' balance. Set API_KEY to require a client key.");
        }
        let state = web::Data::new(AppState {
            config: config.clone(),
            pool,
            pool_actor,
            refresher,
            refresh_status,
            log,
            log_writer,
            db,
            vault,
            notifier,
            admin,
            login_throttle: Throttle::new(config.login_max_failures),
            clients,
            aliases,
            catalog,
            leadership,
            metrics,
        });
        let port = listener.local_addr()?.port();
        let server = serve(listener, state.clone())?;
        log::info!("listening on {}:{}", config.host, port);
        Ok(Application { port, server, state, arbiters: vec![threads.pool, threads.log] })
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
        if let Err(e) = self.state.pool_actor.send(Drain).await {
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

/// The master key the configuration names, or the key file beside the
/// SQLite database (made now, and said, for a database without sealed keys):
/// for the start and for `keys reencrypt`.
pub fn master_key(config: &Config, db: &db::DbPool) -> Result<(MasterKey, Origin), String> {
    let sqlite = match &config.database {
        Database::Sqlite(path) => Some(path.as_path()),
        Database::Postgres(_) => None,
    };
    let (master, origin) = master::resolve(config.key_encryption_key.as_ref(), sqlite, || {
        let mut conn = db.get().map_err(|e| e.to_string())?;
        keys::holds_sealed(&mut conn).map_err(|e| e.to_string())
    })?;
    if let Origin::BesideDatabase { path, created: true } = &origin {
        log::warn!(
            "generated the key that encrypts the pool keys at rest: {} (mode 0600). Back it up with the database: without it the stored keys cannot be read",
            path.display()
        );
    }
    Ok((master, origin))
}

/// The key that seals the pool keys at rest (see `vault`), checked against
/// what the database holds; keys stored before encryption are sealed now,
/// in one transaction. A missing or wrong key stops the start and changes
/// nothing.
pub fn open_vault(config: &Config, db: &db::DbPool) -> Result<Vault, StartupError> {
    let (master, origin) = master_key(config, db).map_err(StartupError::Vault)?;
    let vault = Vault::new(&master);
    let mut conn = db.get().map_err(DbError::from)?;
    match keys::seal_at_rest(&mut conn, &vault) {
        Ok(done) if done.sealed > 0 => {
            log::warn!(
                "encrypted {} pool keys that were stored in plain text (of {})",
                done.sealed,
                done.total
            )
        }
        Ok(_) => {}
        Err(DbError::Sealed(why)) => {
            // A `keys reencrypt` stopped after its commit, before the file moved.
            let unfinished = match &origin {
                Origin::BesideDatabase { path, .. } if master::next_key_file(path).exists() => format!(
                    " ({} exists: a `keys reencrypt` stopped before it replaced the key file; if the keys were re-encrypted, move it over {})",
                    master::next_key_file(path).display(),
                    path.display()
                ),
                _ => String::new(),
            };
            return Err(StartupError::Vault(format!(
                "the pool keys' encryption key, from {}: {why}. Start with the key they were encrypted with; nothing was changed{unfinished}",
                origin.describe()
            )));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(vault)
}

/// Several instances may share a PostgreSQL database: each names itself in
/// the notifications it sends after a change (and ignores its own). With
/// SQLite there is nobody to tell.
fn notifier(config: &Config, db: &db::DbPool) -> Notifier {
    if !config.is_shared() {
        return Notifier::none();
    }
    use rand::distr::{Alphanumeric, SampleString};
    Notifier::new(db.clone(), Alphanumeric.sample_string(&mut rand::rng(), 16))
}

/// Calls a crashed process left in flight become interrupted calls, before
/// the clients' usage of the day is read from the log. On SQLite, at the
/// start (no other process writes there); on PostgreSQL the instance that
/// leads settles those of instances gone silent, as it runs.
/// The model catalog, with `MODEL_CATALOG_FILE`'s entries stored first.
fn load_catalog(config: &Config, db: &db::DbPool) -> Result<crate::catalog::CatalogTable, StartupError> {
    use crate::catalog::table::PutError;
    let file = match &config.model_catalog_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| StartupError::Catalog(format!("MODEL_CATALOG_FILE {}: {e}", path.display())))?;
            let entries = crate::catalog::parse_file(&text)
                .map_err(|e| StartupError::Catalog(format!("MODEL_CATALOG_FILE {}: {e}", path.display())))?;
            Some(entries)
        }
    };
    match crate::catalog::CatalogTable::load(db, file.as_deref()) {
        Ok(table) => {
            log::info!("model catalog: {} models known", table.snapshot().len());
            Ok(table)
        }
        Err(PutError::Db(e)) => Err(e.into()),
        Err(PutError::Invalid(why)) => Err(StartupError::Catalog(why)),
    }
}

fn settle_interrupted_calls(config: &Config, db: &db::DbPool) -> Result<(), StartupError> {
    if config.is_shared() {
        return Ok(());
    }
    let mut conn = db.get().map_err(db::DbError::from)?;
    let n = db::queries::logs::settle_interrupted(&mut conn, None)?;
    if n > 0 {
        log::warn!("request log: {n} calls were running when the proxy last stopped; their rows say interrupted (tokens unknown)");
    }
    Ok(())
}

/// The key pool from the database: the snapshot the request path reads, and
/// the actor (not started yet) that owns its changes.
fn load_pool(
    config: &Config,
    db: &db::DbPool,
    vault: &Arc<Vault>,
    notifier: Notifier,
) -> Result<(Arc<PoolShared>, PoolActor), StartupError> {
    let policy = Policy { base: config.cooldown_base, max: config.cooldown_max };
    let shared = Arc::new(PoolShared::new(config.strategy, policy));
    let actor = PoolActor::load(
        db.clone(),
        vault.clone(),
        shared.clone(),
        config.upstream_base_url.clone(),
        config.exhausted_retry_interval,
    )?
    .with_notifier(notifier);
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
    Ok((shared, actor))
}

/// Which instance runs the scheduled jobs: with PostgreSQL, the one holding
/// the advisory lock; with SQLite, this one.
fn leadership(
    config: &Config,
    alive: impl Fn() -> bool + Send + 'static,
) -> Result<Leadership, StartupError> {
    Ok(match &config.database {
        Database::Postgres(url) => Leadership::contend(url.clone(), Duration::from_secs(2), alive)?,
        Database::Sqlite(_) => Leadership::alone(),
    })
}

/// The small tables every instance holds in a snapshot and reads again
/// when another instance changed them.
struct Tables {
    clients: Arc<ClientKeys>,
    aliases: Arc<AliasTable>,
    catalog: Arc<crate::catalog::CatalogTable>,
}

/// Other instances' changes: each is reloaded by what it concerns (the
/// tables' `reload_on`, the pool actor's `Reload`) within a poll
/// (100 ms), and every 30 s whatever was heard. Client limits: each instance
/// publishes its counts of today every second and takes the others'. Both
/// threads end with the pool actor.
fn follow_other_instances(
    config: &Config,
    db: &db::DbPool,
    instance: &str,
    tables: Tables,
    pool_actor: &Addr<PoolActor>,
    alive: impl Fn() -> bool + Clone + Send + 'static,
) -> Result<(), StartupError> {
    let Database::Postgres(url) = &config.database else { return Ok(()) };
    let clients = tables.clients.clone();
    let (client_db, pool) = (db.clone(), pool_actor.clone());
    crate::db::notify::listen(
        url.clone(),
        instance.to_string(),
        Duration::from_millis(100),
        Duration::from_secs(30),
        alive.clone(),
        move |what| {
            // What could not be read now is asked again at the next poll.
            let again = Changed {
                clients: !tables.clients.reload_on(&what, &client_db),
                aliases: !tables.aliases.reload_on(&what, &client_db),
                catalog: !tables.catalog.reload_on(&what, &client_db),
                ..Default::default()
            };
            pool.do_send(Reload(what));
            again
        },
    )?;
    let every = (config.log_flush_interval / 2)
        .clamp(std::time::Duration::from_millis(50), std::time::Duration::from_secs(1));
    crate::clients::share_usage(clients, db.clone(), instance.to_string(), every, alive)?;
    Ok(())
}

/// The log writer on its thread, and the sink the request path hands rows to.
fn start_log_writer(
    config: &Config,
    db: &db::DbPool,
    threads: &Threads,
    metrics: Arc<Metrics>,
    leadership: Leadership,
) -> (Addr<LogWriter>, LogSink) {
    let settings = WriterSettings {
        batch_size: config.log_batch_size,
        interval: config.log_flush_interval,
        retention: config.log_retention,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let counters = LogCounters::new(config.log_queue_max);
    let (writer_db, writer_counters, writer_metrics) = (db.clone(), counters.clone(), metrics.clone());
    let writer = LogWriter::start_in_arbiter(&threads.log.handle(), move |_| {
        LogWriter::new(writer_db, rx, writer_counters, writer_metrics, settings, leadership)
    });
    let sink = LogSink::new(writer.clone(), tx, counters, config.log_batch_size, metrics);
    (writer, sink)
}

/// The refresher, beside the pool actor it reports to.
fn start_refresher(
    config: &Arc<Config>,
    threads: &Threads,
    pool_actor: &Addr<PoolActor>,
    pool: &Arc<PoolShared>,
    status: &Arc<ArcSwap<RefreshStatus>>,
    leadership: &Leadership,
) -> Addr<Refresher> {
    let (cfg, pool_actor, pool, status, leadership) =
        (config.clone(), pool_actor.clone(), pool.clone(), status.clone(), leadership.clone());
    Refresher::start_in_arbiter(&threads.pool.handle(), move |_| {
        let settings = RefresherSettings {
            interval: cfg.auto_refresh_interval,
            invalid_recheck: cfg.invalid_recheck_interval,
            concurrency: cfg.refresh_concurrency,
            timeout: cfg.check_timeout,
            rate: cfg.refresh_rate,
            leadership,
        };
        Refresher::new(build_client(&cfg), pool_actor, pool, status, settings)
    })
}

/// The HTTP server on `listener`: every route, the JSON answers to malformed
/// queries and paths, and the connection settings.
fn serve(listener: TcpListener, state: web::Data<AppState>) -> Result<Server, StartupError> {
    let config = state.config.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(Upstream { client: build_client(&state.config) }))
            // Bodies are read by the handlers with their own limit and error.
            .app_data(web::PayloadConfig::new(state.config.max_body_bytes))
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
    Ok(server)
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
