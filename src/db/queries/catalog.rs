//! The owner's model catalog entries (`model_catalog`): patches over the
//! shipped catalog, as JSON text.

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::Conn;
use crate::db::schema::model_catalog;
use crate::db::DbError;

/// Every entry as (id, fields as JSON).
pub fn all(conn: &mut Conn) -> Result<Vec<(String, String)>, DbError> {
    Ok(model_catalog::table
        .order(model_catalog::id.asc())
        .select((model_catalog::id, model_catalog::fields))
        .load(conn)?)
}

pub fn upsert(conn: &mut Conn, id: &str, fields: &str, now: i64) -> Result<(), DbError> {
    let row = (model_catalog::id.eq(id), model_catalog::fields.eq(fields), model_catalog::updated_at.eq(now));
    crate::per_backend!(conn, |c| diesel::insert_into(model_catalog::table)
        .values(row)
        .on_conflict(model_catalog::id)
        .do_update()
        .set((
            model_catalog::fields.eq(excluded(model_catalog::fields)),
            model_catalog::updated_at.eq(excluded(model_catalog::updated_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// Answers whether there was one.
pub fn delete(conn: &mut Conn, id: &str) -> Result<bool, DbError> {
    Ok(diesel::delete(model_catalog::table.filter(model_catalog::id.eq(id))).execute(conn)? > 0)
}
