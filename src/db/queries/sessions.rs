//! Admin sessions (`sessions`), by the hash of their token. Each names the
//! admin password it was opened under (`generation`, a keyed tag of it): a
//! session of another password is not found.

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::sessions;
use crate::db::DbError;

pub fn insert(
    conn: &mut Conn,
    token_hash: &str,
    csrf: &str,
    generation: &str,
    now: i64,
    expires: i64,
) -> Result<(), DbError> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::token_hash.eq(token_hash),
            sessions::csrf.eq(csrf),
            sessions::generation.eq(generation),
            sessions::created_at.eq(now),
            sessions::expires_at.eq(expires),
        ))
        .execute(conn)?;
    Ok(())
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
