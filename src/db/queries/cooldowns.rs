//! Accounts cooling for a model after a 429 (`cooldowns`).

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::Conn;
use crate::db::models::CooldownRow;
use crate::db::schema::cooldowns;
use crate::db::DbError;

pub fn all(conn: &mut Conn) -> Result<Vec<CooldownRow>, DbError> {
    Ok(cooldowns::table.select(CooldownRow::as_select()).load(conn)?)
}

pub fn upsert(conn: &mut Conn, row: &CooldownRow) -> Result<(), DbError> {
    crate::per_backend!(conn, |c| diesel::insert_into(cooldowns::table)
        .values(row)
        .on_conflict((cooldowns::account, cooldowns::model))
        .do_update()
        .set((
            cooldowns::until_ms.eq(excluded(cooldowns::until_ms)),
            cooldowns::strikes.eq(excluded(cooldowns::strikes)),
            cooldowns::reason.eq(excluded(cooldowns::reason)),
        ))
        .execute(c))?;
    Ok(())
}

pub fn clear_account(conn: &mut Conn, account: &str) -> Result<(), DbError> {
    diesel::delete(cooldowns::table.filter(cooldowns::account.eq(account))).execute(conn)?;
    Ok(())
}

pub fn prune(conn: &mut Conn, before_ms: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(cooldowns::table.filter(cooldowns::until_ms.lt(before_ms))).execute(conn)?)
}
