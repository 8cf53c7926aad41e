//! Imports' results kept for the page after the import (any instance may serve it): `import_reports`.

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::import_reports;
use crate::db::DbError;

pub fn insert(conn: &mut Conn, token: &str, owner: &str, now: i64, html: &str) -> Result<(), DbError> {
    diesel::insert_into(import_reports::table)
        .values((
            import_reports::token.eq(token),
            import_reports::owner.eq(owner),
            import_reports::created_at.eq(now),
            import_reports::html.eq(html),
        ))
        .execute(conn)?;
    Ok(())
}

/// The report's HTML, if `owner` made it after `since`.
pub fn find(conn: &mut Conn, token: &str, owner: &str, since: i64) -> Result<Option<String>, DbError> {
    Ok(import_reports::table
        .filter(import_reports::token.eq(token))
        .filter(import_reports::owner.eq(owner))
        .filter(import_reports::created_at.gt(since))
        .select(import_reports::html)
        .first(conn)
        .optional()?)
}

pub fn prune(conn: &mut Conn, before: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(import_reports::table.filter(import_reports::created_at.le(before))).execute(conn)?)
}
