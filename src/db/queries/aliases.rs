//! The model alias table (`model_aliases`), kept in order.

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::model_aliases;
use crate::db::DbError;

/// Every rule as (pattern, model), first to last.
pub fn all(conn: &mut Conn) -> Result<Vec<(String, String)>, DbError> {
    Ok(model_aliases::table
        .order(model_aliases::position.asc())
        .select((model_aliases::pattern, model_aliases::model))
        .load(conn)?)
}

/// Replaces the whole table, in one transaction.
pub fn replace(conn: &mut Conn, rules: &[(String, String)]) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        diesel::delete(model_aliases::table).execute(conn)?;
        for (i, (pattern, model)) in rules.iter().enumerate() {
            diesel::insert_into(model_aliases::table)
                .values((
                    model_aliases::position.eq(i as i32),
                    model_aliases::pattern.eq(pattern),
                    model_aliases::model.eq(model),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}
