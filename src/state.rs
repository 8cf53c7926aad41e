//! What every handler shares.

use std::sync::Arc;

use actix::Addr;
use arc_swap::ArcSwap;

use crate::config::Config;
use crate::credentials::{AdminCredentials, Throttle};
use crate::db::log_sink::LogSink;
use crate::db::log_writer::LogWriter;
use crate::db::DbPool;
use crate::pool::refresher::{RefreshStatus, Refresher};
use crate::pool::{PoolActor, PoolShared};

pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Arc<PoolShared>,
    pub pool_actor: Addr<PoolActor>,
    pub refresher: Addr<Refresher>,
    pub refresh_status: Arc<ArcSwap<RefreshStatus>>,
    pub log_writer: Addr<LogWriter>,
    pub log: LogSink,
    pub db: DbPool,
    /// Seals and opens the pool keys at rest.
    pub vault: Arc<crate::vault::Vault>,
    /// Tells the other instances on the database about this one's changes.
    pub notifier: crate::db::notify::Notifier,
    pub admin: AdminCredentials,
    pub login_throttle: Throttle,
    /// Model aliases: the names clients ask for and the models they call.
    pub aliases: Arc<crate::aliases::AliasTable>,
    /// The model catalog: windows, output limits, prices.
    pub catalog: Arc<crate::catalog::CatalogTable>,
    /// Client keys: who may call `/v1`, and how much.
    pub clients: Arc<crate::clients::ClientKeys>,
    /// Whether this instance runs the scheduled jobs (always, with SQLite).
    pub leadership: crate::db::leader::Leadership,
    /// What `/metrics` reports.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    /// Whether `/v1` takes calls without a key: no `API_KEY` and no client
    /// key (once one exists, the proxy is never open).
    pub fn is_open(&self) -> bool {
        self.config.is_open() && self.clients.snapshot().is_empty()
    }
}

/// The upstream HTTP client. awc clients are not `Send`, so each worker
/// thread builds its own (they share nothing but configuration).
pub struct Upstream {
    pub client: awc::Client,
}

pub fn build_client(config: &Config) -> awc::Client {
    let connector = awc::Connector::new()
        .timeout(config.connect_timeout)
        .handshake_timeout(config.connect_timeout)
        .limit(config.upstream_pool_size);
    awc::Client::builder()
        .connector(connector)
        // Time allowed until the answer's headers arrive; long, since a
        // non-streaming completion sends nothing until it is done.
        .timeout(config.response_timeout)
        .disable_redirects()
        .no_default_headers()
        .finish()
}
