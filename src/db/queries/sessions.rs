//! Admin sessions (`sessions`), by the hash of their token.

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::sessions;
use crate::db::DbError;

pub fn insert(conn: &mut Conn, token_hash: &str, csrf: &str, now: i64, expires: i64) -> Result<(), DbError> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::token_hash.eq(token_hash),
            sessions::csrf.eq(csrf),
            sessions::created_at.eq(now),
            sessions::expires_at.eq(expires),
        ))
        .execute(conn)?;
    Ok(())
}

/// The session's CSRF token, if the session exists and has not expired.
pub fn find(conn: &mut Conn, token_hash: &str, now: i64) -> Result<Option<String>, DbError> {
    Ok(sessions::table
        .filter(sessions::token_hash.eq(token_hash).and(sessions::expires_at.gt(now)))
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
