//! The connection: SQLite or PostgreSQL, chosen by the database URL, behind
//! one type, so that every query is written once (diesel's MultiConnection).

use diesel::r2d2::{ManageConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};

#[derive(diesel::MultiConnection)]
pub enum AnyConn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Opens connections of the backend the URL names. (Diesel's own manager
/// tries each backend in turn, so with PostgreSQL down it would open the
/// URL as a SQLite file.)
#[derive(Debug, Clone)]
pub struct AnyManager {
    url: String,
    pg: bool,
}

impl AnyManager {
    pub fn sqlite(path: &str) -> Self {
        AnyManager { url: path.to_string(), pg: false }
    }

    pub fn postgres(url: &str) -> Self {
        AnyManager { url: url.to_string(), pg: true }
    }
}

impl ManageConnection for AnyManager {
    type Connection = AnyConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<AnyConn, Self::Error> {
        Ok(if self.pg {
            AnyConn::Pg(PgConnection::establish(&self.url)?)
        } else {
            AnyConn::Sqlite(SqliteConnection::establish(&self.url)?)
        })
    }

    fn is_valid(&self, conn: &mut AnyConn) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut AnyConn) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// The same code on whichever connection is inside: for what diesel does not
/// offer through the multi-backend connection (`ON CONFLICT`), and for the
/// hot statements, which keep their prepared statements this way.
#[macro_export]
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::conn::AnyConn::Pg($c) => $body,
            $crate::db::conn::AnyConn::Sqlite($c) => $body,
        }
    };
}
