//! The pool keys (`api_keys`): rows, states, checks, usage. Keys are stored
//! sealed (`vault`): rows are opened as they are read and sealed as they
//! are written, so a `KeyRow` in memory holds the key itself.

use diesel::prelude::*;

use super::{settings, Conn};
use crate::db::models::{KeyRow, NewKey};
use crate::db::schema::{api_keys, sessions};
use crate::db::DbError;
use crate::ids::KeyId;
use crate::vault::{is_sealed, Vault, CHECK_SETTING};

/// Opens each row's key. A row stored before encryption (by an older
/// instance sharing the database) is read as it is, and sealed at the next
/// start; one that does not open is an error, never a silently missing key.
fn open_rows(vault: &Vault, mut rows: Vec<KeyRow>) -> Result<Vec<KeyRow>, DbError> {
    for row in &mut rows {
        if is_sealed(&row.key) {
            row.key = vault
                .open(row.id, &row.key)
                .map_err(|e| DbError::Sealed(format!("pool key #{}: {e}", row.id)))?;
        }
    }
    Ok(rows)
}

pub fn all(conn: &mut Conn, vault: &Vault) -> Result<Vec<KeyRow>, DbError> {
    open_rows(vault, all_unopened(conn)?)
}

/// Every row with its key left sealed (`key` is the stored text), for
/// figures that need no key (balances, states): nothing is decrypted.
pub fn all_unopened(conn: &mut Conn) -> Result<Vec<KeyRow>, DbError> {
    Ok(api_keys::table.order(api_keys::id.asc()).select(KeyRow::as_select()).load(conn)?)
}

/// The id of the stored key equal to `secret`, found by its keyed hash.
pub fn find_duplicate(conn: &mut Conn, vault: &Vault, secret: &str) -> Result<Option<i64>, DbError> {
    Ok(api_keys::table
        .filter(api_keys::key_hash.eq(vault.fingerprint(secret)))
        .select(api_keys::id)
        .first(conn)
        .optional()?)
}

/// Ids for `n` new keys, taken before they are stored so that each key can
/// be sealed with its id in the one statement that stores it (PostgreSQL:
/// from the table's sequence, in one query; SQLite: after the largest id
/// ever given, which the import's transaction holds).
pub fn reserve_ids(conn: &mut Conn, n: usize) -> Result<Vec<i64>, DbError> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    match conn {
        crate::db::AnyConn::Pg(c) => Ok(diesel::sql_query(format!(
            "SELECT nextval(pg_get_serial_sequence('api_keys', 'id')) AS id FROM generate_series(1, {n})"
        ))
        .load::<Id>(c)?
        .into_iter()
        .map(|r| r.id)
        .collect()),
        crate::db::AnyConn::Sqlite(c) => {
            let last = diesel::sql_query(
                "SELECT max(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'api_keys'), 0), \
                 COALESCE((SELECT max(id) FROM api_keys), 0)) AS id",
            )
            .get_result::<Id>(c)?
            .id;
            Ok((1..=n as i64).map(|i| last + i).collect())
        }
    }
}

/// Stores a key (`row.key` is the key itself) as row `id` (from
/// `reserve_ids`): sealed with that id, with its keyed hash.
pub fn insert(conn: &mut Conn, vault: &Vault, id: i64, row: &NewKey) -> Result<KeyRow, DbError> {
    let sealed = vault.seal(id, &row.key).map_err(|e| DbError::Sealed(e.to_string()))?;
    let stored =
        NewKey { id: Some(id), key: sealed, key_hash: Some(vault.fingerprint(&row.key)), ..row.clone() };
    // RETURNING on the inner connection: through the multi-backend one its
    // select clause is typed for neither backend.
    let mut inserted = crate::per_backend!(conn, |c| diesel::insert_into(api_keys::table)
        .values(&stored)
        .returning(KeyRow::as_returning())
        .get_result(c))?;
    inserted.key = row.key.clone();
    Ok(inserted)
}

/// Holds every other instance's writes to the keys off until this
/// transaction ends (PostgreSQL; SQLite's writes are one at a time anyway).
fn lock_keys(conn: &mut Conn) -> Result<(), DbError> {
    if let crate::db::AnyConn::Pg(c) = conn {
        diesel::sql_query("LOCK TABLE api_keys IN EXCLUSIVE MODE").execute(c)?;
    }
    Ok(())
}

/// Whether the database holds anything sealed with some key.
pub fn holds_sealed(conn: &mut Conn) -> Result<bool, DbError> {
    if settings::get(conn, CHECK_SETTING)?.is_some() {
        return Ok(true);
    }
    let sealed: i64 = api_keys::table.filter(api_keys::sealed_key.like("enc1:%")).count().get_result(conn)?;
    Ok(sealed > 0)
}

/// Refuses a vault whose key is not the one the stored keys were sealed
/// with: the check value says, or without one (removed, or never written
/// by the start that was to write it) the first sealed key.
pub fn check_key(conn: &mut Conn, vault: &Vault) -> Result<(), DbError> {
    let recognised = match settings::get(conn, CHECK_SETTING)? {
        Some(check) => vault.is_check_value(&check),
        None => api_keys::table
            .filter(api_keys::sealed_key.like("enc1:%"))
            .select((api_keys::id, api_keys::sealed_key))
            .first::<(i64, String)>(conn)
            .optional()?
            .is_none_or(|(id, sealed)| vault.open(id, &sealed).is_ok()),
    };
    if recognised {
        Ok(())
    } else {
        Err(DbError::Sealed("this is not the key the stored pool keys were encrypted with".into()))
    }
}

/// What `seal_at_rest` did.
#[derive(Debug, Default, PartialEq)]
pub struct Sealing {
    /// Keys stored before encryption, sealed now.
    pub sealed: usize,
    /// Keys in all.
    pub total: usize,
}

/// At each start, in one transaction: checks that `vault` is the key the
/// stored keys were sealed with (`check_key`; the pool's load then opens
/// every key, and stops the start if one does not open), seals
/// the keys stored before encryption and gives each row its keyed hash. On
/// any refusal nothing is changed.
pub fn seal_at_rest(conn: &mut Conn, vault: &Vault) -> Result<Sealing, DbError> {
    // SQLite leaves a replaced value's bytes in the page's free space unless
    // told to zero them.
    if let crate::db::AnyConn::Sqlite(c) = conn {
        diesel::sql_query("PRAGMA secure_delete = ON").execute(c)?;
    }
    let done = seal_every_key(conn, vault);
    if let crate::db::AnyConn::Sqlite(c) = conn {
        diesel::sql_query("PRAGMA secure_delete = OFF").execute(c)?;
    }
    let done = done?;
    if done.sealed > 0 {
        scrub(conn);
    }
    Ok(done)
}

/// After keys in plain text were sealed: the old versions of their rows
/// leave the files where a copy would find them. SQLite: the write-ahead
/// log is written into the database and emptied. PostgreSQL: the table is
/// rewritten (a dump never held them; the old row versions would have
/// stayed in its files until a vacuum). Best effort: said if it fails.
fn scrub(conn: &mut Conn) {
    let done = match conn {
        crate::db::AnyConn::Sqlite(c) => diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").execute(c),
        crate::db::AnyConn::Pg(c) => diesel::sql_query("VACUUM FULL api_keys").execute(c),
    };
    if let Err(e) = done {
        log::warn!("the keys are sealed, but the old plaintext rows may remain in the database files until they are reused: {e}");
    }
}

fn seal_every_key(conn: &mut Conn, vault: &Vault) -> Result<Sealing, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        lock_keys(conn)?;
        check_key(conn, vault)?;
        // Only the rows with work to do: every key is opened once more
        // anyway, by the pool's load that follows.
        let rows: Vec<(i64, String)> = api_keys::table
            .filter(api_keys::sealed_key.not_like("enc1:%").or(api_keys::key_hash.is_null()))
            .select((api_keys::id, api_keys::sealed_key))
            .load(conn)?;
        let total: i64 = api_keys::table.count().get_result(conn)?;
        let mut done = Sealing { sealed: 0, total: total.max(0) as usize };
        let mut unreadable = Vec::new();
        for (id, stored) in rows {
            let plain = if is_sealed(&stored) {
                match vault.open(id, &stored) {
                    Ok(plain) => plain,
                    Err(_) => {
                        unreadable.push(format!("#{id}"));
                        continue;
                    }
                }
            } else {
                let sealed = vault.seal(id, &stored).map_err(|e| DbError::Sealed(e.to_string()))?;
                diesel::update(api_keys::table.find(id))
                    .set(api_keys::sealed_key.eq(sealed))
                    .execute(conn)?;
                done.sealed += 1;
                stored
            };
            diesel::update(api_keys::table.find(id))
                .set(api_keys::key_hash.eq(vault.fingerprint(&plain)))
                .execute(conn)?;
        }
        if !unreadable.is_empty() {
            return Err(DbError::Sealed(format!(
                "pool keys {} cannot be decrypted with this key (encrypted with another key, or altered)",
                unreadable.join(", ")
            )));
        }
        if settings::get(conn, CHECK_SETTING)?.is_none() {
            let check = vault.check_value().map_err(|e| DbError::Sealed(e.to_string()))?;
            settings::set(conn, CHECK_SETTING, &check)?;
        }
        Ok(done)
    })
}

/// Moves every stored key from `old` to `new` in one transaction (each
/// resealed, its keyed hash remade); the admin sessions end, as their tags
/// were made with the old key. Returns how many keys were moved.
pub fn reencrypt(conn: &mut Conn, old: &Vault, new: &Vault) -> Result<usize, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        lock_keys(conn)?;
        check_key(conn, old)?;
        let rows: Vec<(i64, String)> =
            api_keys::table.select((api_keys::id, api_keys::sealed_key)).load(conn)?;
        for (id, stored) in &rows {
            let plain = if is_sealed(stored) {
                old.open(*id, stored).map_err(|e| DbError::Sealed(format!("pool key #{id}: {e}")))?
            } else {
                stored.clone()
            };
            let sealed = new.seal(*id, &plain).map_err(|e| DbError::Sealed(e.to_string()))?;
            diesel::update(api_keys::table.find(*id))
                .set((api_keys::sealed_key.eq(sealed), api_keys::key_hash.eq(new.fingerprint(&plain))))
                .execute(conn)?;
        }
        let check = new.check_value().map_err(|e| DbError::Sealed(e.to_string()))?;
        settings::set(conn, CHECK_SETTING, &check)?;
        diesel::delete(sessions::table).execute(conn)?;
        Ok(rows.len())
    })
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
pub fn by_ids(conn: &mut Conn, vault: &Vault, ids: &[KeyId]) -> Result<Vec<KeyRow>, DbError> {
    let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
    open_rows(vault, api_keys::table.filter(api_keys::id.eq_any(ids)).select(KeyRow::as_select()).load(conn)?)
}
