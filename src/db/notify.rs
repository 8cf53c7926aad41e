//! Instances on one PostgreSQL database tell each other about changes to the
//! pool (keys, states, cooldowns): a write is followed by `NOTIFY`, and each
//! instance listens on a connection of its own and reloads its snapshot.
//! Notifications are lost while a listener is disconnected, so it reloads
//! after every reconnect and every `safety` interval as well.

use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};

use super::conn::AnyConn;

pub const CHANNEL: &str = "sfp_pool";

/// Tells the other instances that the pool changed (PostgreSQL only; an
/// SQLite database has one instance). `instance` lets each ignore its own.
pub fn notify(conn: &mut AnyConn, instance: &str) -> diesel::QueryResult<()> {
    if let AnyConn::Pg(c) = conn {
        diesel::sql_query(format!("SELECT pg_notify('{CHANNEL}', $1)"))
            .bind::<diesel::sql_types::Text, _>(instance)
            .execute(c)?;
    }
    Ok(())
}

/// Listens for other instances' changes on a connection of its own, on a
/// thread of its own, until `alive()` says the application is gone. Calls
/// `changed()` (at most once per `poll`) when one arrives, after each
/// reconnection (not the first connection: the pool was just loaded), and
/// every `safety` interval.
pub fn listen(
    url: String,
    instance: String,
    poll: Duration,
    safety: Duration,
    alive: impl Fn() -> bool + Send + 'static,
    changed: impl Fn() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("pg-listener".into()).spawn(move || {
        let shown = crate::config::without_password(&url);
        let mut backoff = Duration::from_millis(200);
        let mut connected_before = false;
        // Said once per outage, not at every try.
        let mut failing = false;
        while alive() {
            let mut conn = match PgConnection::establish(&url).and_then(|mut c| {
                diesel::sql_query(format!("LISTEN {CHANNEL}"))
                    .execute(&mut c)
                    .map(|_| c)
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
            }) {
                Ok(c) => c,
                Err(e) => {
                    if !failing {
                        log::warn!(
                            "pool changes: cannot listen on {shown}: {e}; trying again every 2 s at most"
                        );
                        failing = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if failing {
                log::info!("pool changes: listening again on {shown}");
                failing = false;
            }
            backoff = Duration::from_millis(200);
            // What was missed while not listening (not at the first
            // connection: the pool was just loaded).
            if connected_before {
                changed();
            }
            connected_before = true;
            let mut last_reload = Instant::now();
            'listening: while alive() {
                let mut heard = false;
                for n in conn.notifications_iter() {
                    match n {
                        Ok(n) if n.payload != instance => heard = true,
                        Ok(_) => {}
                        Err(e) => {
                            log::warn!("pool changes: the listening connection failed: {e}");
                            break 'listening;
                        }
                    }
                }
                if heard || last_reload.elapsed() >= safety {
                    // The safety reload also proves the connection alive.
                    if !heard && diesel::sql_query("SELECT 1").execute(&mut conn).is_err() {
                        break 'listening;
                    }
                    changed();
                    last_reload = Instant::now();
                }
                std::thread::sleep(poll);
            }
        }
    })
}
