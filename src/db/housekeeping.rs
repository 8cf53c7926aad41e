//! What the database keeps only for a while, deleted on a schedule by the
//! instance that leads (the log writer runs it every ten minutes): expired
//! admin sessions, old failed-login counts, client usage of past days (the
//! ledger after two months), old
//! batch markers, and log rows (with their rollups) past `LOG_RETENTION_DAYS`.

use std::time::Duration;

use super::queries::{clients, logins, logs, sessions};
use super::{AnyConn, DbError};

/// One round; answers how many log rows went. Each clean-up but retention is
/// best-effort (the next round tries again).
pub fn run(conn: &mut AnyConn, now: i64, retention: Option<Duration>) -> Result<usize, DbError> {
    let _ = sessions::delete_expired(conn, now);
    // Failed-login counts whose window ended long ago.
    let _ = logins::prune(conn, now - 3_600_000);
    // Client usage of days long past (kept two days for any time zone).
    let _ = clients::prune_usage(conn, now.div_euclid(86_400_000) - 2);
    // The clients' ledger keeps what the limits and the month's figures read.
    let _ = clients::prune_ledger(conn, now - 62 * 86_400_000);
    // Batch markers a day old: a writer asks after its last one only.
    let _ = logs::prune_batches(conn, now - 86_400_000);
    let Some(keep) = retention else { return Ok(0) };
    let cutoff = now - keep.as_millis().min(i64::MAX as u128) as i64;
    let n = logs::delete_before(conn, cutoff)?;
    if n > 0 {
        log::info!("retention: deleted {n} request log rows older than {} days", keep.as_secs() / 86_400);
    }
    Ok(n)
}
