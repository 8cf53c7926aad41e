//! Admin sessions (`sessions`), by the hash of their token. Each names the
//! admin password it was opened under (`generation`, a keyed tag of it): a
//! session of another password is not found.

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::{sessions, settings};
use crate::db::DbError;

/// A session to store.
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub csrf: &'a str,
    pub generation: &'a str,
    pub now: i64,
    pub expires: i64,
}

pub fn insert(conn: &mut Conn, s: &NewSession) -> Result<(), DbError> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::token_hash.eq(s.token_hash),
            sessions::csrf.eq(s.csrf),
            sessions::generation.eq(s.generation),
            sessions::created_at.eq(s.now),
            sessions::expires_at.eq(s.expires),
        ))
        .execute(conn)?;
    Ok(())
}

/// Stores the session only while setting `name` still holds `expected` (the
/// stored password's hash the login was checked against), in one
/// transaction: on PostgreSQL the setting's row is locked, so a change of it
/// either waits for this session (and its end of every session then ends
/// this one too) or is seen here (nothing stored: `false`).
pub fn insert_while_setting(
    conn: &mut Conn,
    s: &NewSession,
    name: &str,
    expected: &str,
) -> Result<bool, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let query = settings::table.filter(settings::name.eq(name)).select(settings::value);
        let current: Option<String> = match conn {
            crate::db::AnyConn::Pg(c) => query.for_update().first(c).optional()?,
            crate::db::AnyConn::Sqlite(c) => query.first(c).optional()?,
        };
        if current.as_deref() != Some(expected) {
            return Ok(false);
        }
        insert(conn, s)?;
        Ok(true)
    })
}

/// The session's CSRF token, if the session exists, has not expired and was
/// opened under this password.
pub fn find(
    conn: &mut Conn,
    token_hash: &str,
    generation: &str,
    now: i64,
) -> Result<Option<String>, DbError> {
    Ok(sessions::table
        .filter(
            sessions::token_hash
                .eq(token_hash)
                .and(sessions::expires_at.gt(now))
                .and(sessions::generation.eq(generation)),
        )
        .select(sessions::csrf)
        .first(conn)
        .optional()?)
}

pub fn delete(conn: &mut Conn, token_hash: &str) -> Result<(), DbError> {
    diesel::delete(sessions::table.filter(sessions::token_hash.eq(token_hash))).execute(conn)?;
    Ok(())
}

pub fn delete_expired(conn: &mut Conn, now: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(sessions::table.filter(sessions::expires_at.le(now))).execute(conn)?)
}

/// Ends every session ("log out everywhere", a new password).
pub fn delete_all(conn: &mut Conn) -> Result<usize, DbError> {
    Ok(diesel::delete(sessions::table).execute(conn)?)
}

/// Ends the sessions of any other password than this one.
pub fn delete_other_generations(conn: &mut Conn, generation: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(sessions::table.filter(sessions::generation.ne(generation))).execute(conn)?)
}
