//! Failed admin logins per address (`login_failures`), shared by the instances on the database.

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};

use super::Conn;
use crate::db::schema::login_failures;
use crate::db::DbError;

/// Counts one more check for `address` (a window older than `window_ms`
/// starts again at one), in one statement, so that instances checking at
/// once each see their own count. Answers the count and when its window
/// started.
pub fn reserve(conn: &mut Conn, address: &str, now: i64, window_ms: i64) -> Result<(i32, i64), DbError> {
    use login_failures::dsl as lf;
    let expired = lf::window_start.le(now - window_ms);
    Ok(crate::per_backend!(conn, |c| diesel::insert_into(lf::login_failures)
        .values((lf::address.eq(address), lf::failures.eq(1), lf::window_start.eq(now)))
        .on_conflict(lf::address)
        .do_update()
        .set((
            lf::failures.eq(case_when::<_, _, Integer>(expired, 1).otherwise(lf::failures + 1)),
            lf::window_start.eq(case_when::<_, _, BigInt>(expired, now).otherwise(lf::window_start)),
        ))
        .returning((lf::failures, lf::window_start))
        .get_result::<(i32, i64)>(c))?)
}

/// Takes back a check that was not made (refused, or not run).
pub fn release(conn: &mut Conn, address: &str) -> Result<(), DbError> {
    diesel::update(login_failures::table.find(address).filter(login_failures::failures.gt(0)))
        .set(login_failures::failures.eq(login_failures::failures - 1))
        .execute(conn)?;
    Ok(())
}

/// A right password wipes the address's slate.
pub fn clear(conn: &mut Conn, address: &str) -> Result<(), DbError> {
    diesel::delete(login_failures::table.find(address)).execute(conn)?;
    Ok(())
}

pub fn prune(conn: &mut Conn, before: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(login_failures::table.filter(login_failures::window_start.lt(before))).execute(conn)?)
}
