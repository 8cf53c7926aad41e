//! Everything that touches the database lives in this module: the connection
//! pool, the schema, row types, queries and the log writer. A second backend
//! (PostgreSQL) is then a change to this module alone.

pub mod conn;
pub mod housekeeping;
pub mod in_flight;
pub mod leader;
pub mod log_insert;
pub mod log_sink;
pub mod log_writer;
pub mod models;
pub mod notify;
pub mod queries;
pub mod schema;

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;

pub use conn::AnyConn;
use conn::AnyManager;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

pub type DbPool = Pool<AnyManager>;
pub type DbConn = PooledConnection<AnyManager>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("database: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database setup: {0}")]
    Setup(String),
    #[error("database work was cancelled: {0}")]
    Blocking(String),
    /// A pool key that does not open with this key, or cannot be sealed.
    #[error("{0}")]
    Sealed(String),
}

#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<AnyConn, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut AnyConn) -> Result<(), diesel::r2d2::Error> {
        let AnyConn::Sqlite(conn) = conn else { return Ok(()) };
        // WAL lets the admin read while the log writer writes; busy_timeout turns
        // a momentary lock into a short wait instead of an error.
        // busy_timeout first, so that the rest waits instead of failing while
        // another connection holds a lock. (journal_mode is set once, in `connect`.)
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The pool's failed connection attempts, said at most every 10 s: while
/// the database is down the pool tries several times a second, and the
/// callers say what they could not do.
#[derive(Debug, Default)]
struct QuietErrors(std::sync::Mutex<Option<std::time::Instant>>);

impl diesel::r2d2::HandleError<diesel::r2d2::Error> for QuietErrors {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            log::error!("database connection: {error}");
            *last = Some(std::time::Instant::now());
        }
    }
}

/// Opens and migrates the database the configuration names.
pub fn open(database: &crate::config::Database) -> Result<DbPool, DbError> {
    match database {
        crate::config::Database::Sqlite(path) => connect(path),
        crate::config::Database::Postgres(url) => connect_pg(url),
    }
}

/// Any number of instances may start at once: the migrations run under a
/// session advisory lock, one instance after the other.
const MIGRATION_LOCK: i64 = 0x5346_5000_0001;

/// Opens and migrates a PostgreSQL database. Errors name the URL without its
/// password.
pub fn connect_pg(url: &str) -> Result<DbPool, DbError> {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let shown = crate::config::without_password(url);
    let mut conn = PgConnection::establish(url)
        .map_err(|e| DbError::Setup(format!("cannot connect to {shown}: {e}")))?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(&mut conn)?;
    let migrated = conn.run_pending_migrations(PG_MIGRATIONS).map(drop);
    let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(&mut conn);
    migrated.map_err(|e| DbError::Setup(format!("migrations failed on {shown}: {e}")))?;
    // Connections open when needed (none are held while idle): a database
    // server's connections are shared by every instance.
    Pool::builder()
        .max_size(8)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(10))
        .error_handler(Box::new(QuietErrors::default()))
        .build(AnyManager::postgres(url))
        .map_err(|e| DbError::Setup(format!("cannot open {shown}: {e}")))
}

/// Opens (creating the file and its folder) and migrates an SQLite database.
pub fn connect(path: &Path) -> Result<DbPool, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError::Setup(format!("cannot create {}: {e}", dir.display())))?;
    }
    let url = path.to_string_lossy().to_string();
    // WAL is a property of the file: set it once, before the pool opens its
    // connections (doing it per connection races and reports "database is locked").
    {
        use diesel::Connection;
        let mut conn = SqliteConnection::establish(&url)
            .map_err(|e| DbError::Setup(format!("cannot open {}: {e}", path.display())))?;
        conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
            .map_err(|e| DbError::Setup(format!("cannot set WAL mode on {}: {e}", path.display())))?;
    }
    let manager = AnyManager::sqlite(&url);
    let pool = Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_secs(10))
        .connection_customizer(Box::new(Pragmas))
        .build(manager)
        .map_err(|e| DbError::Setup(format!("cannot open {}: {e}", path.display())))?;
    let mut conn = pool.get()?;
    conn.run_pending_migrations(MIGRATIONS).map_err(|e| DbError::Setup(format!("migrations failed: {e}")))?;
    Ok(pool)
}

/// How long background work (the actors, the listener's helpers) and
/// `/health` wait for a database connection before they give up for now:
/// they must not sit on a database that is down.
pub const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Runs database work on actix's blocking pool (never on a request worker),
/// with a connection from the pool; errors come back as text for the answer.
pub async fn run<T, F>(db: &DbPool, work: F) -> Result<T, DbError>
where
    F: FnOnce(&mut AnyConn) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    run_waiting(db, None, work).await
}

/// As `run`, giving up after `CONNECT_WAIT` without a connection.
pub async fn run_quick<T, F>(db: &DbPool, work: F) -> Result<T, DbError>
where
    F: FnOnce(&mut AnyConn) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    run_waiting(db, Some(CONNECT_WAIT), work).await
}

async fn run_waiting<T, F>(db: &DbPool, wait: Option<Duration>, work: F) -> Result<T, DbError>
where
    F: FnOnce(&mut AnyConn) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    let db = db.clone();
    actix_web::web::block(move || -> Result<T, DbError> {
        let mut conn = match wait {
            Some(wait) => db.get_timeout(wait)?,
            None => db.get()?,
        };
        work(&mut conn)
    })
    .await
    .map_err(|e| DbError::Blocking(e.to_string()))?
}

/// Epoch milliseconds as RFC 3339 (UTC), for JSON and logs.
pub fn iso(ms: Option<i64>) -> Option<String> {
    ms.filter(|t| *t > 0)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
