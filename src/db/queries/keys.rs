//! The pool keys (`api_keys`): rows, states, checks, usage.

use diesel::prelude::*;

use super::Conn;
use crate::db::models::{KeyRow, NewKey};
use crate::db::schema::api_keys;
use crate::db::DbError;
use crate::ids::KeyId;

pub fn all(conn: &mut Conn) -> Result<Vec<KeyRow>, DbError> {
    Ok(api_keys::table.order(api_keys::id.asc()).select(KeyRow::as_select()).load(conn)?)
}

pub fn find_by_key(conn: &mut Conn, secret: &str) -> Result<Option<KeyRow>, DbError> {
    Ok(api_keys::table.filter(api_keys::key.eq(secret)).select(KeyRow::as_select()).first(conn).optional()?)
}

pub fn insert(conn: &mut Conn, row: &NewKey) -> Result<KeyRow, DbError> {
    // RETURNING on the inner connection: through the multi-backend one its
    // select clause is typed for neither backend.
    Ok(crate::per_backend!(conn, |c| diesel::insert_into(api_keys::table)
        .values(row)
        .returning(KeyRow::as_returning())
        .get_result(c))?)
}

pub fn set_state(
    conn: &mut Conn,
    id: KeyId,
    state: &str,
    error: Option<&str>,
    now: i64,
) -> Result<(), DbError> {
    diesel::update(api_keys::table.find(id.0))
        .set((api_keys::state.eq(state), api_keys::last_error.eq(error), api_keys::state_changed_at.eq(now)))
        .execute(conn)?;
    Ok(())
}

pub fn set_balance(conn: &mut Conn, id: KeyId, balance: f64) -> Result<(), DbError> {
    diesel::update(api_keys::table.find(id.0)).set(api_keys::balance.eq(balance)).execute(conn)?;
    Ok(())
}

/// The end of a trial: the key's state, its error set or cleared, the
/// time it was tried (a check that read nothing else).
pub fn set_state_checked(
    conn: &mut Conn,
    id: KeyId,
    state: &str,
    state_changed: bool,
    error: Option<&str>,
    now: i64,
) -> Result<(), DbError> {
    record_check(conn, id, state, state_changed, None, None, None, error, now)
}

/// Adds calls to keys' counts and moves their last use forward, in one
/// transaction: `(id, calls since the last write, last use)`.
pub fn add_usage(conn: &mut Conn, usage: &[(KeyId, i64, i64)]) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        for (id, calls, last) in usage {
            // last_used only moves forward (a CASE, as SQLite's max() and
            // PostgreSQL's greatest() are not the same function).
            let last_used = diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                &format!("CASE WHEN last_used IS NULL OR last_used < {last} THEN {last} ELSE last_used END"),
            );
            diesel::update(api_keys::table.find(id.0))
                .set((
                    api_keys::usage_count.eq(api_keys::usage_count + *calls),
                    api_keys::last_used.eq(last_used),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}

pub fn set_label(conn: &mut Conn, id: KeyId, label: Option<&str>) -> Result<bool, DbError> {
    Ok(diesel::update(api_keys::table.find(id.0)).set(api_keys::account_label.eq(label)).execute(conn)? > 0)
}

pub fn set_error(conn: &mut Conn, id: KeyId, error: &str) -> Result<(), DbError> {
    diesel::update(api_keys::table.find(id.0)).set(api_keys::last_error.eq(error)).execute(conn)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn record_check(
    conn: &mut Conn,
    id: KeyId,
    state: &str,
    state_changed: bool,
    balance: Option<Option<f64>>,
    parts: Option<(Option<f64>, Option<f64>)>,
    account: Option<(&str, Option<&str>)>,
    error: Option<&str>,
    now: i64,
) -> Result<(), DbError> {
    let target = api_keys::table.find(id.0);
    diesel::update(target)
        .set((api_keys::state.eq(state), api_keys::last_checked.eq(now), api_keys::last_error.eq(error)))
        .execute(conn)?;
    if state_changed {
        diesel::update(target).set(api_keys::state_changed_at.eq(now)).execute(conn)?;
    }
    if let Some(b) = balance {
        // `Some(None)`: the check could not read a balance; an old figure is stale now.
        diesel::update(target).set(api_keys::balance.eq(b)).execute(conn)?;
    }
    if let Some((gift, charge)) = parts {
        diesel::update(target)
            .set((api_keys::gift_balance.eq(gift), api_keys::charge_balance.eq(charge)))
            .execute(conn)?;
    }
    if let Some((account_id, name)) = account {
        diesel::update(target)
            .set((api_keys::account_id.eq(account_id), api_keys::account_name.eq(name)))
            .execute(conn)?;
    }
    Ok(())
}

pub fn delete(conn: &mut Conn, id: KeyId) -> Result<bool, DbError> {
    Ok(diesel::delete(api_keys::table.find(id.0)).execute(conn)? > 0)
}

/// The rows of these keys (a page of them), in no particular order.
pub fn by_ids(conn: &mut Conn, ids: &[KeyId]) -> Result<Vec<KeyRow>, DbError> {
    let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
    Ok(api_keys::table.filter(api_keys::id.eq_any(ids)).select(KeyRow::as_select()).load(conn)?)
}

pub fn find(conn: &mut Conn, id: KeyId) -> Result<Option<KeyRow>, DbError> {
    Ok(api_keys::table.find(id.0).select(KeyRow::as_select()).first(conn).optional()?)
}
