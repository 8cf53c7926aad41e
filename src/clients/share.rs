//! Client limits across instances on one PostgreSQL database: each
//! publishes its counts every second and takes the others'.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::usage::{day_of, DayUsage};
use super::ClientKeys;
use crate::db::queries::clients::{self as client_rows, Counts};
use crate::db::{DbError, DbPool};
use crate::ids::ClientId;

impl ClientKeys {
    /// With several instances: publishes this instance's counts of today (and
    /// of the last minute, for rpm) and takes the others' (run every second,
    /// so a limit holds across the instances to within a second of traffic
    /// on each).
    pub fn sync_usage(
        &self,
        conn: &mut crate::db::AnyConn,
        instance: &str,
        now_ms: i64,
    ) -> Result<(), DbError> {
        let today = day_of(now_ms, &self.tz);
        let snapshot = self.snapshot.load();
        let mine: Vec<(ClientId, Counts)> = snapshot
            .by_id
            .values()
            .map(|c| {
                let (requests, tokens) = c.own(today);
                let recent = c.usage.minute.lock().unwrap_or_else(|e| e.into_inner()).count(now_ms);
                (c.id, Counts { requests, tokens, recent })
            })
            .filter(|(_, c)| *c != Counts::default())
            .collect();
        client_rows::publish_usage(conn, instance, today, &mine, now_ms)?;
        let others = client_rows::others_usage(conn, instance, today, now_ms)?;
        for c in snapshot.by_id.values() {
            let o = others.get(&c.id).copied().unwrap_or_default();
            *c.usage.others.lock().unwrap_or_else(|e| e.into_inner()) =
                DayUsage { day: today, requests: o.requests, tokens: o.tokens, reserved: 0 };
            c.usage.others_minute.store(o.recent, Ordering::Release);
        }
        Ok(())
    }
}

/// With several instances on one database: publishes this instance's counts
/// every second (and once more when `alive()` turns false, at a shutdown)
/// and takes the others', on a thread of its own.
pub fn share_usage(
    keys: Arc<ClientKeys>,
    db: DbPool,
    instance: String,
    alive: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("client-usage".into()).spawn(move || {
        // Said once per outage, not every second.
        let mut failing = false;
        loop {
            let last = !alive();
            let synced = db
                .get_timeout(crate::db::CONNECT_WAIT)
                .map_err(DbError::from)
                .and_then(|mut conn| keys.sync_usage(&mut conn, &instance, crate::db::now_ms()));
            match synced {
                Ok(()) if failing => {
                    log::info!("client usage: shared with the other instances again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    log::warn!("client usage: cannot share with the other instances ({e}); each counts its own until the database is back");
                    failing = true;
                }
                Err(_) => {}
            }
            if last {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    })?;
    Ok(())
}
