//! Named values the application keeps (`settings`).

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::settings;
use crate::db::DbError;

pub fn get(conn: &mut Conn, name: &str) -> Result<Option<String>, DbError> {
    Ok(settings::table.filter(settings::name.eq(name)).select(settings::value).first(conn).optional()?)
}

pub fn set(conn: &mut Conn, name: &str, value: &str) -> Result<(), DbError> {
    crate::per_backend!(conn, |c| diesel::insert_into(settings::table)
        .values((settings::name.eq(name), settings::value.eq(value)))
        .on_conflict(settings::name)
        .do_update()
        .set(settings::value.eq(value))
        .execute(c))?;
    Ok(())
}
