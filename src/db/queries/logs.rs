//! The request log (`request_logs`), its batches and rollups, and its pages and exports.

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::{lower, lower_opt, Conn};
use crate::db::models::{LogRow, NewLog, UsageRow};
use crate::db::schema::{log_batches, request_logs, usage_clients, usage_hourly};
use crate::db::DbError;

/// What a batch's write left out: rows the database refused, and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refused {
    pub rows: usize,
    pub reason: Option<String>,
}

/// Writes a batch, its rollups and its marker (`writer`, `seq`) in one
/// transaction: either all of it lands or none (and the caller retries).
/// `flying` are calls still running, written early (not rolled up: their
/// end is); `rows` are ended calls, of which those with a `call_id` fill in
/// their in-flight row (written before, or among `flying`).
///
/// A row the database refuses (a value it cannot store) must not hold back
/// the others: the batch is then written again row by row within the same
/// transaction, each row under a savepoint, and the rows refused are left
/// out and answered. If not one row goes in, the fault is not a row's (the
/// database refuses everything, for now): the error is the answer and the
/// whole batch is tried again later.
pub fn insert_batch(
    conn: &mut Conn,
    flying: &[NewLog],
    rows: &[NewLog],
    writer: &str,
    seq: i64,
) -> Result<Refused, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        diesel::insert_into(log_batches::table)
            .values((
                log_batches::writer.eq(writer),
                log_batches::seq.eq(seq),
                log_batches::written_at.eq(crate::db::now_ms()),
            ))
            .execute(conn)?;
        // Every call counts for its client, whether the log keeps its row.
        ledger(conn, flying, rows)?;
        // Rows of calls that started before the log was last cleared are not
        // written (they may have waited here, or on another instance, while
        // it was cleared).
        let cleared = cleared_before(conn)?;
        let (flying, rows) = (after(flying, cleared), after(rows, cleared));
        let (flying, rows) = (&flying[..], &rows[..]);
        let whole = conn.transaction::<_, DbError, _>(|conn| {
            // Fixed-size statements that diesel prepares once (see log_insert).
            crate::db::log_insert::insert_all(conn, flying)?;
            write_ended(conn, rows)
        });
        match whole {
            Ok(()) => {
                // (Each key's call count and last use are written by the pool
                // actor from its counters, not here: a batch over a large pool
                // would touch thousands of keys.)
                rollup(conn, rows)?;
                Ok(Refused::default())
            }
            Err(e) if !is_refusal(&e) => Err(e),
            Err(e) => {
                let mut refused = Refused { rows: 0, reason: Some(e.to_string()) };
                let mut landed = 0;
                for row in flying {
                    let one = std::slice::from_ref(row);
                    match conn
                        .transaction::<_, DbError, _>(|c| Ok(crate::db::log_insert::insert_all(c, one)?))
                    {
                        Ok(()) => landed += 1,
                        Err(e) if is_refusal(&e) => refused.rows += 1,
                        Err(e) => return Err(e),
                    }
                }
                let mut kept = Vec::with_capacity(rows.len());
                for row in rows {
                    match conn.transaction::<_, DbError, _>(|c| write_ended(c, std::slice::from_ref(row))) {
                        Ok(()) => kept.push(row.clone()),
                        Err(e) if is_refusal(&e) => refused.rows += 1,
                        Err(e) => return Err(e),
                    }
                }
                if landed + kept.len() == 0 {
                    return Err(e);
                }
                rollup(conn, &kept)?;
                Ok(refused)
            }
        }
    })
}

/// The rows of calls that started at or after `cleared` (epoch ms).
fn after(rows: &[NewLog], cleared: i64) -> std::borrow::Cow<'_, [NewLog]> {
    if rows.iter().all(|r| r.created_at >= cleared) {
        std::borrow::Cow::Borrowed(rows)
    } else {
        std::borrow::Cow::Owned(rows.iter().filter(|r| r.created_at >= cleared).cloned().collect())
    }
}

/// The setting that says since when the log holds calls (see `clear`).
const CLEARED_BEFORE: &str = "log_cleared_before";

/// Since when (epoch ms) the log holds calls: read under a share lock on
/// PostgreSQL, so that a clear committing meanwhile waits for this batch (and
/// then deletes its rows) or is seen by it; on SQLite the batch's marker,
/// written before, holds the database's one write lock.
fn cleared_before(conn: &mut Conn) -> Result<i64, DbError> {
    use crate::db::schema::settings;
    let q = settings::table.filter(settings::name.eq(CLEARED_BEFORE)).select(settings::value);
    let value: Option<String> = match conn {
        crate::db::AnyConn::Pg(c) => q.for_share().first(c).optional()?,
        crate::db::AnyConn::Sqlite(c) => q.first(c).optional()?,
    };
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Adds a batch to the clients' ledger (`client_ledger`): a call when its
/// row is first written (in flight, or ended), its tokens when it ends.
fn ledger(conn: &mut Conn, flying: &[NewLog], rows: &[NewLog]) -> Result<(), DbError> {
    use crate::db::schema::client_ledger as l;
    use std::collections::HashMap;
    let mut groups: HashMap<(&str, i64), (i64, i64)> = HashMap::new();
    let counted =
        flying.iter().map(|r| (r, true, false)).chain(rows.iter().map(|r| (r, r.call_id.is_none(), true)));
    for (r, call, tokens) in counted {
        let Some(client) = r.client.as_deref() else { continue };
        let g = groups.entry((client, r.created_at.div_euclid(LEDGER_SLOT_MS))).or_default();
        g.0 += i64::from(call);
        if tokens {
            g.1 = g.1.saturating_add(r.total_tokens.max(0));
        }
    }
    for ((client, slot), (calls, tokens)) in groups {
        let row = (l::client.eq(client), l::slot.eq(slot), l::calls.eq(calls), l::tokens.eq(tokens));
        crate::per_backend!(conn, |c| diesel::insert_into(l::table)
            .values(row)
            .on_conflict((l::client, l::slot))
            .do_update()
            .set((l::calls.eq(l::calls + excluded(l::calls)), l::tokens.eq(l::tokens + excluded(l::tokens))))
            .execute(c))?;
    }
    Ok(())
}

/// The ledger's slot: a quarter of an hour, so that every time zone's day
/// is a run of whole slots.
pub const LEDGER_SLOT_MS: i64 = 900_000;

/// Ended calls: runs of plain rows go in together; each end of a call
/// written in flight fills its row in.
fn write_ended(conn: &mut Conn, rows: &[NewLog]) -> Result<(), DbError> {
    let mut rest = rows;
    while !rest.is_empty() {
        let plain = rest.iter().take_while(|r| r.call_id.is_none()).count();
        crate::db::log_insert::insert_all(conn, &rest[..plain])?;
        if let Some(ended) = rest.get(plain) {
            fill_in(conn, ended)?;
        }
        rest = &rest[(plain + 1).min(rest.len())..];
    }
    Ok(())
}

/// Whether the database refused what it was given (a value, a constraint),
/// as opposed to failing (a lost connection, a conflict with another
/// transaction), after which the same rows may well go in.
fn is_refusal(e: &DbError) -> bool {
    use diesel::result::{DatabaseErrorKind as K, Error};
    match e {
        DbError::Query(Error::DatabaseError(kind, _)) => !matches!(
            kind,
            K::ClosedConnection | K::UnableToSendCommand | K::SerializationFailure | K::ReadOnlyTransaction
        ),
        DbError::Query(Error::SerializationError(_) | Error::QueryBuilderError(_)) => true,
        _ => false,
    }
}

/// The end of a call written in flight: its row filled in and unmarked.
/// Inserted instead if that row is gone (the log was cleared meanwhile).
fn fill_in(conn: &mut Conn, ended: &NewLog) -> Result<(), DbError> {
    let Some(id) = ended.call_id.as_deref() else { return Ok(()) };
    let row = NewLog { call_id: None, ..ended.clone() };
    let n =
        diesel::update(request_logs::table.filter(request_logs::call_id.eq(id))).set(&row).execute(conn)?;
    if n == 0 {
        crate::db::log_insert::insert_all(conn, std::slice::from_ref(&row))?;
    }
    Ok(())
}

/// The error an interrupted call's row carries.
pub const INTERRUPTED: &str =
    "interrupted: the proxy stopped while this call was running; the upstream may have run it, its tokens are unknown";

/// Settles rows left in flight by a process that is gone: those whose
/// writer last told of them before `stale_before` (epoch ms; `None`: every
/// one, at a start on SQLite, where no other process writes). Each becomes
/// an interrupted call (status 0, tokens unknown), counted in the stats.
/// Answers how many.
pub fn settle_interrupted(conn: &mut Conn, stale_before: Option<i64>) -> Result<usize, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let mut q = request_logs::table.filter(request_logs::call_id.is_not_null()).into_boxed();
        if let Some(t) = stale_before {
            q = q.filter((request_logs::created_at + request_logs::latency_ms).lt(t));
        }
        let left: Vec<LogRow> = q.select(LogRow::as_select()).load(conn)?;
        if left.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = left.iter().map(|r| r.id).collect();
        for chunk in ids.chunks(500) {
            diesel::update(request_logs::table.filter(request_logs::id.eq_any(chunk)))
                .set((
                    request_logs::status.eq(0),
                    request_logs::error.eq(INTERRUPTED),
                    request_logs::call_id.eq(None::<String>),
                ))
                .execute(conn)?;
        }
        let settled: Vec<NewLog> = left
            .into_iter()
            .map(|r| NewLog {
                status: 0,
                input_tokens: 0,
                output_tokens: 0,
                total_tokens: 0,
                ttfb_ms: None,
                aborted: false,
                error: Some(INTERRUPTED.into()),
                ..as_new(r)
            })
            .collect();
        rollup(conn, &settled)?;
        Ok(settled.len())
    })
}

/// Tells that this writer's calls in flight still run: their rows' latency
/// is brought up to `now` (a row not told of for long is settled as
/// interrupted by the instance that leads).
pub fn touch_in_flight(conn: &mut Conn, writer: &str, now: i64) -> Result<usize, DbError> {
    let mine = format!("{writer}-%");
    Ok(diesel::update(request_logs::table.filter(request_logs::call_id.like(mine)))
        .set(
            request_logs::latency_ms
                .eq(now.into_sql::<diesel::sql_types::BigInt>() - request_logs::created_at),
        )
        .execute(conn)?)
}

/// Adds a batch to the hourly rollup: one upsert per (hour, model, key).
fn rollup(conn: &mut Conn, rows: &[NewLog]) -> Result<(), DbError> {
    use std::collections::HashMap;
    let mut groups: HashMap<(i64, &str, i64), UsageRow> = HashMap::new();
    for r in rows {
        let hour = r.created_at.div_euclid(3_600_000);
        let key_id = r.key_id.unwrap_or(0);
        let g = groups.entry((hour, r.model.as_str(), key_id)).or_insert_with(|| UsageRow {
            hour,
            model: r.model.clone(),
            key_id,
            ..Default::default()
        });
        g.calls += 1;
        g.errors += i32::from(r.status >= 400 || r.status == 0);
        g.input_tokens = g.input_tokens.saturating_add(r.input_tokens.min(i32::MAX as i64) as i32);
        g.output_tokens = g.output_tokens.saturating_add(r.output_tokens.min(i32::MAX as i64) as i32);
        g.latency_ms = g.latency_ms.saturating_add(r.latency_ms.min(i32::MAX as i64) as i32);
    }
    let groups: Vec<UsageRow> = groups.into_values().collect();
    crate::db::log_insert::upsert_usage(conn, &groups)?;
    rollup_clients(conn, rows)
}

/// Adds a batch to the clients' hourly rollup: one upsert per (hour,
/// client), additive, so that instances writing at once lose nothing.
fn rollup_clients(conn: &mut Conn, rows: &[NewLog]) -> Result<(), DbError> {
    use std::collections::HashMap;
    let mut groups: HashMap<(i64, &str), (i64, i64)> = HashMap::new();
    for r in rows {
        let Some(client) = r.client.as_deref() else { continue };
        let g = groups.entry((r.created_at.div_euclid(3_600_000), client)).or_default();
        g.0 += 1;
        g.1 = g.1.saturating_add(r.total_tokens.max(0));
    }
    for ((hour, client), (calls, tokens)) in groups {
        let row = (
            usage_clients::hour.eq(hour),
            usage_clients::client.eq(client),
            usage_clients::calls.eq(calls),
            usage_clients::tokens.eq(tokens),
        );
        crate::per_backend!(conn, |c| diesel::insert_into(usage_clients::table)
            .values(row)
            .on_conflict((usage_clients::hour, usage_clients::client))
            .do_update()
            .set((
                usage_clients::calls.eq(usage_clients::calls + excluded(usage_clients::calls)),
                usage_clients::tokens.eq(usage_clients::tokens + excluded(usage_clients::tokens)),
            ))
            .execute(c))?;
    }
    Ok(())
}

/// Calls and tokens per client over `[from_hour, to_hour)`, most calls first.
pub fn by_client(conn: &mut Conn, from_hour: i64, to_hour: i64) -> Result<Vec<(String, i64, i64)>, DbError> {
    let rows: Vec<(String, Option<i64>, Option<i64>)> = usage_clients::table
        .filter(usage_clients::hour.ge(from_hour).and(usage_clients::hour.lt(to_hour)))
        .group_by(usage_clients::client)
        .select((
            usage_clients::client,
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                "CAST(SUM(calls) AS BIGINT)",
            ),
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                "CAST(SUM(tokens) AS BIGINT)",
            ),
        ))
        .load(conn)?;
    let mut out: Vec<(String, i64, i64)> =
        rows.into_iter().map(|(c, calls, tokens)| (c, calls.unwrap_or(0), tokens.unwrap_or(0))).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Whether the batch (`writer`, `seq`) was committed.
pub fn batch_written(conn: &mut Conn, writer: &str, seq: i64) -> Result<bool, DbError> {
    let n: i64 = log_batches::table
        .filter(log_batches::writer.eq(writer).and(log_batches::seq.eq(seq)))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Batch markers older than `before` (epoch ms): no writer asks after them.
pub fn prune_batches(conn: &mut Conn, before: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(log_batches::table.filter(log_batches::written_at.lt(before))).execute(conn)?)
}

/// Retention: deletes rows older than the hour that contains `cutoff_ms`,
/// and the rollup of those hours, so stats keep equalling the log.
pub fn delete_before(conn: &mut Conn, cutoff_ms: i64) -> Result<usize, DbError> {
    let hour = cutoff_ms.div_euclid(3_600_000);
    conn.transaction::<_, DbError, _>(|conn| {
        let n = diesel::delete(request_logs::table.filter(request_logs::created_at.lt(hour * 3_600_000)))
            .execute(conn)?;
        diesel::delete(usage_hourly::table.filter(usage_hourly::hour.lt(hour))).execute(conn)?;
        diesel::delete(usage_clients::table.filter(usage_clients::hour.lt(hour))).execute(conn)?;
        Ok(n)
    })
}

/// Every row matching a filter, newest first (as the page lists them),
/// for the CSV export.
pub fn export(conn: &mut Conn, f: &LogFilter, limit: i64) -> Result<Vec<LogRow>, DbError> {
    Ok(filtered(f)
        .order((request_logs::created_at.desc(), request_logs::id.desc()))
        .limit(limit)
        .select(LogRow::as_select())
        .load(conn)?)
}

#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    pub model: Option<String>,
    pub key: Option<String>,
    pub key_id: Option<i64>,
    pub status: Option<StatusFilter>,
    /// An endpoint and the paths below it (`/v1/batches` takes `/v1/batches/b1`).
    pub endpoint: Option<String>,
    /// A client's name, exactly.
    pub client: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(i32),
    /// A class: `2xx` is 200..300.
    Class(i32),
    /// What the statistics count as errors: 4xx, 5xx, and no answer (0).
    Error,
}

fn filtered(f: &LogFilter) -> request_logs::BoxedQuery<'static, crate::db::conn::MultiBackend> {
    let mut q = request_logs::table.into_boxed();
    // Any part, ignoring case (PostgreSQL's LIKE minds case; SQLite's does not).
    if let Some(m) = &f.model {
        let pattern = format!("%{}%", escape_like(&m.to_lowercase()));
        // The model called, or the name asked for (an alias).
        q = q.filter(
            lower(request_logs::model).like(pattern.clone()).escape('\\').or(lower_opt(
                request_logs::requested_model,
            )
            .like(pattern)
            .escape('\\')
            .assume_not_null()),
        );
    }
    if let Some(k) = &f.key {
        let pattern = format!("%{}%", escape_like(&k.to_lowercase()));
        q = q.filter(lower(request_logs::key_masked).like(pattern).escape('\\'));
    }
    if let Some(id) = f.key_id {
        q = q.filter(request_logs::key_id.eq(id));
    }
    if let Some(c) = &f.client {
        q = q.filter(request_logs::client.eq(c.clone()));
    }
    match f.status {
        Some(StatusFilter::Exact(s)) => q = q.filter(request_logs::status.eq(s)),
        Some(StatusFilter::Class(c)) => {
            q = q.filter(request_logs::status.ge(c * 100).and(request_logs::status.lt(c * 100 + 100)))
        }
        Some(StatusFilter::Error) => {
            q = q.filter(request_logs::status.ge(400).or(request_logs::status.eq(0)))
        }
        None => {}
    }
    if let Some(e) = &f.endpoint {
        let below = format!("{}/%", escape_like(e.trim_end_matches('/')));
        q = q
            .filter(request_logs::endpoint.eq(e.clone()).or(request_logs::endpoint.like(below).escape('\\')));
    }
    if let Some(s) = f.since {
        q = q.filter(request_logs::created_at.ge(s));
    }
    if let Some(u) = f.until {
        q = q.filter(request_logs::created_at.lt(u));
    }
    q
}

pub fn page(conn: &mut Conn, f: &LogFilter, offset: i64, limit: i64) -> Result<(Vec<LogRow>, i64), DbError> {
    let total: i64 = filtered(f).count().get_result(conn)?;
    let rows = filtered(f)
        .order((request_logs::created_at.desc(), request_logs::id.desc()))
        .offset(offset)
        .limit(limit)
        .select(LogRow::as_select())
        .load(conn)?;
    Ok((rows, total))
}

pub fn count(conn: &mut Conn) -> Result<i64, DbError> {
    Ok(request_logs::table.count().get_result(conn)?)
}

/// Clears the log of every call that started before `now` (epoch ms), and
/// the statistics built from those rows; rows of such calls still queued
/// (here or on another instance) are not written when their batch comes
/// (`cleared_before`). The clients' ledger is not touched: what a client
/// used still counts against its limits. Answers how many rows went.
pub fn clear(conn: &mut Conn, now: i64) -> Result<usize, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        // First: on PostgreSQL this locks the setting's row, so that a batch
        // being written commits before the rows are deleted (and its rows go
        // too), or reads the new value.
        super::settings::set(conn, CLEARED_BEFORE, &now.to_string())?;
        let n = diesel::delete(request_logs::table.filter(request_logs::created_at.lt(now))).execute(conn)?;
        diesel::delete(usage_hourly::table).execute(conn)?;
        diesel::delete(usage_clients::table).execute(conn)?;
        // What stays (calls that started after `now`, written meanwhile) is
        // rolled up again, so that the stats still equal the log.
        let left: Vec<LogRow> = request_logs::table
            .filter(request_logs::call_id.is_null())
            .select(LogRow::as_select())
            .load(conn)?;
        let left: Vec<NewLog> = left.into_iter().map(as_new).collect();
        rollup(conn, &left)?;
        Ok(n)
    })
}

/// A stored row as a row to roll up.
fn as_new(r: LogRow) -> NewLog {
    NewLog {
        created_at: r.created_at,
        key_id: r.key_id,
        key_masked: r.key_masked,
        model: r.model,
        endpoint: r.endpoint,
        status: r.status,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        total_tokens: r.total_tokens,
        latency_ms: r.latency_ms,
        ttfb_ms: r.ttfb_ms,
        stream: r.stream,
        aborted: r.aborted,
        attempts: r.attempts,
        error: r.error,
        client: r.client,
        requested_model: r.requested_model,
        call_id: None,
        usage_estimated: r.usage_estimated,
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
