//! Client keys (`clients`) and their use per day (`client_usage`, `usage_clients`).

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::Conn;
use crate::db::models::{ClientFields, ClientRow, LeaseRow};
use crate::db::schema::{client_leases, client_usage, clients};
use crate::db::DbError;
use crate::ids::ClientId;

pub fn all(conn: &mut Conn) -> Result<Vec<ClientRow>, DbError> {
    Ok(clients::table.order(clients::id.asc()).select(ClientRow::as_select()).load(conn)?)
}

pub fn find(conn: &mut Conn, id: ClientId) -> Result<Option<ClientRow>, DbError> {
    Ok(clients::table.find(id.0).select(ClientRow::as_select()).first(conn).optional()?)
}

pub fn name_taken(conn: &mut Conn, name: &str, other_than: Option<ClientId>) -> Result<bool, DbError> {
    let n: i64 = clients::table
        .filter(clients::name.eq(name))
        .filter(clients::id.ne(other_than.map_or(-1, |id| id.0)))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

pub fn insert(
    conn: &mut Conn,
    fields: &ClientFields,
    key_hash: &str,
    key_hint: &str,
    now: i64,
) -> Result<ClientId, DbError> {
    diesel::insert_into(clients::table)
        .values((
            fields,
            clients::key_hash.eq(key_hash),
            clients::key_hint.eq(key_hint),
            clients::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(ClientId(clients::table.filter(clients::key_hash.eq(key_hash)).select(clients::id).first(conn)?))
}

/// Answers whether the client exists.
pub fn update(conn: &mut Conn, id: ClientId, fields: &ClientFields) -> Result<bool, DbError> {
    Ok(diesel::update(clients::table.find(id.0)).set(fields).execute(conn)? > 0)
}

pub fn set_key(conn: &mut Conn, id: ClientId, key_hash: &str, key_hint: &str) -> Result<bool, DbError> {
    Ok(diesel::update(clients::table.find(id.0))
        .set((clients::key_hash.eq(key_hash), clients::key_hint.eq(key_hint)))
        .execute(conn)?
        > 0)
}

pub fn delete(conn: &mut Conn, id: ClientId) -> Result<bool, DbError> {
    Ok(diesel::delete(clients::table.find(id.0)).execute(conn)? > 0)
}

/// One client's counts on one instance: today's requests and tokens, and
/// its requests in the last 60 s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub tokens: u64,
    pub recent: u64,
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Publishes this instance's counts of `day`, by client id.
pub fn publish_usage(
    conn: &mut Conn,
    instance: &str,
    day: i64,
    counts: &[(ClientId, Counts)],
    now: i64,
) -> Result<(), DbError> {
    for (client, c) in counts {
        let row = (
            client_usage::instance.eq(instance),
            client_usage::client_id.eq(client.0),
            client_usage::day.eq(day),
            client_usage::requests.eq(big(c.requests)),
            client_usage::tokens.eq(big(c.tokens)),
            client_usage::updated_at.eq(now),
            client_usage::recent_requests.eq(big(c.recent)),
        );
        crate::per_backend!(conn, |c| diesel::insert_into(client_usage::table)
            .values(row)
            .on_conflict((client_usage::instance, client_usage::client_id, client_usage::day))
            .do_update()
            .set((
                client_usage::requests.eq(excluded(client_usage::requests)),
                client_usage::tokens.eq(excluded(client_usage::tokens)),
                client_usage::updated_at.eq(excluded(client_usage::updated_at)),
                client_usage::recent_requests.eq(excluded(client_usage::recent_requests)),
            ))
            .execute(c))?;
    }
    Ok(())
}

/// What the other instances counted on `day`, by client id. Their calls
/// of the last 60 s count from publications less than 60 s old (an
/// instance that stopped a moment ago made them all the same).
pub fn others_usage(
    conn: &mut Conn,
    instance: &str,
    day: i64,
    now: i64,
) -> Result<HashMap<ClientId, Counts>, DbError> {
    use diesel::sql_types::{BigInt, Nullable};
    type Sums = (i64, Option<i64>, Option<i64>, Option<i64>);
    let rows: Vec<Sums> = client_usage::table
        .filter(client_usage::day.eq(day).and(client_usage::instance.ne(instance)))
        .group_by(client_usage::client_id)
        .select((
            client_usage::client_id,
            diesel::dsl::sql::<Nullable<BigInt>>("CAST(SUM(requests) AS BIGINT)"),
            diesel::dsl::sql::<Nullable<BigInt>>("CAST(SUM(tokens) AS BIGINT)"),
            // A number of ours, not input: written into the SQL as it is.
            diesel::dsl::sql::<Nullable<BigInt>>(&format!(
                "CAST(SUM(CASE WHEN updated_at > {} THEN recent_requests ELSE 0 END) AS BIGINT)",
                now - 60_000
            )),
        ))
        .load(conn)?;
    let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    Ok(rows
        .into_iter()
        .map(|(id, r, t, m)| (ClientId(id), Counts { requests: n(r), tokens: n(t), recent: n(m) }))
        .collect())
}

pub fn prune_usage(conn: &mut Conn, before_day: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(client_usage::table.filter(client_usage::day.lt(before_day))).execute(conn)?)
}

/// (calls, tokens) per client name since `since` (epoch ms), from the
/// clients' ledger (which clearing the log does not touch); the quarter
/// hour that holds `since` counts whole.
pub fn usage_since(conn: &mut Conn, since: i64) -> Result<HashMap<String, (u64, u64)>, DbError> {
    use crate::db::schema::client_ledger as l;
    let rows: Vec<(String, Option<i64>, Option<i64>)> = l::table
        .filter(l::slot.ge(since.div_euclid(super::logs::LEDGER_SLOT_MS)))
        .group_by(l::client)
        .select((
            l::client,
            // Cast: PostgreSQL sums BIGINTs as NUMERIC.
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                "CAST(SUM(calls) AS BIGINT)",
            ),
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                "CAST(SUM(tokens) AS BIGINT)",
            ),
        ))
        .load(conn)?;
    let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    Ok(rows.into_iter().map(|(name, calls, tokens)| (name, (n(calls), n(tokens)))).collect())
}

/// The ledger's slots before `before` (epoch ms).
pub fn prune_ledger(conn: &mut Conn, before: i64) -> Result<usize, DbError> {
    use crate::db::schema::client_ledger as l;
    Ok(diesel::delete(l::table.filter(l::slot.lt(before.div_euclid(super::logs::LEDGER_SLOT_MS))))
        .execute(conn)?)
}

/// Holds every other instance's lease round off until this transaction
/// ends (PostgreSQL; SQLite's writes are one at a time anyway).
pub fn lock_leases(conn: &mut Conn) -> Result<(), DbError> {
    if let crate::db::AnyConn::Pg(c) = conn {
        diesel::sql_query("LOCK TABLE client_leases IN EXCLUSIVE MODE").execute(c)?;
    }
    Ok(())
}

/// Every lease of a rate, and of a day from `day` on.
pub fn leases(conn: &mut Conn, day: i64) -> Result<Vec<LeaseRow>, DbError> {
    Ok(client_leases::table
        .filter(client_leases::budget.eq("rate").or(client_leases::period.ge(day)))
        .select(LeaseRow::as_select())
        .load(conn)?)
}

pub fn write_lease(conn: &mut Conn, row: &LeaseRow) -> Result<(), DbError> {
    crate::per_backend!(conn, |c| diesel::insert_into(client_leases::table)
        .values(row)
        .on_conflict((
            client_leases::client_id,
            client_leases::budget,
            client_leases::period,
            client_leases::instance,
        ))
        .do_update()
        .set((
            client_leases::granted.eq(excluded(client_leases::granted)),
            client_leases::used.eq(excluded(client_leases::used)),
            client_leases::active.eq(excluded(client_leases::active)),
            client_leases::short_at.eq(excluded(client_leases::short_at)),
            client_leases::updated_at.eq(excluded(client_leases::updated_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// Leases of days before `day`, and of a rate not written since `silent_since`
/// (a gone instance's).
pub fn prune_leases(conn: &mut Conn, day: i64, silent_since: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(
        client_leases::table.filter(
            client_leases::budget
                .eq("rate")
                .and(client_leases::updated_at.lt(silent_since))
                .or(client_leases::budget.ne("rate").and(client_leases::period.lt(day))),
        ),
    )
    .execute(conn)?)
}
