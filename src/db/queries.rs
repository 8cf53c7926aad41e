//! Every query the application runs, in diesel's DSL.

use diesel::prelude::*;

use super::models::{CooldownRow, KeyRow, LogRow, NewKey, NewLog, ResourceRow};
use super::schema::{api_keys, cooldowns, request_logs, resources, settings};
use super::DbError;

type Conn = diesel::sqlite::SqliteConnection;

pub mod keys {
    use super::*;

    pub fn all(conn: &mut Conn) -> Result<Vec<KeyRow>, DbError> {
        Ok(api_keys::table.order(api_keys::id.asc()).select(KeyRow::as_select()).load(conn)?)
    }

    pub fn find_by_key(conn: &mut Conn, secret: &str) -> Result<Option<KeyRow>, DbError> {
        Ok(api_keys::table
            .filter(api_keys::key.eq(secret))
            .select(KeyRow::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn insert(conn: &mut Conn, row: &NewKey) -> Result<KeyRow, DbError> {
        Ok(diesel::insert_into(api_keys::table)
            .values(row)
            .returning(KeyRow::as_returning())
            .get_result(conn)?)
    }

    pub fn set_state(
        conn: &mut Conn,
        id: i64,
        state: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), DbError> {
        diesel::update(api_keys::table.find(id))
            .set((
                api_keys::state.eq(state),
                api_keys::last_error.eq(error),
                api_keys::state_changed_at.eq(now),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn set_balance(conn: &mut Conn, id: i64, balance: f64) -> Result<(), DbError> {
        diesel::update(api_keys::table.find(id)).set(api_keys::balance.eq(balance)).execute(conn)?;
        Ok(())
    }

    pub fn set_error(conn: &mut Conn, id: i64, error: &str) -> Result<(), DbError> {
        diesel::update(api_keys::table.find(id)).set(api_keys::last_error.eq(error)).execute(conn)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_check(
        conn: &mut Conn,
        id: i64,
        state: &str,
        state_changed: bool,
        balance: Option<f64>,
        parts: Option<(Option<f64>, Option<f64>)>,
        account: Option<(&str, Option<&str>)>,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), DbError> {
        let target = api_keys::table.find(id);
        diesel::update(target)
            .set((api_keys::state.eq(state), api_keys::last_checked.eq(now), api_keys::last_error.eq(error)))
            .execute(conn)?;
        if state_changed {
            diesel::update(target).set(api_keys::state_changed_at.eq(now)).execute(conn)?;
        }
        if let Some(b) = balance {
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

    pub fn delete(conn: &mut Conn, id: i64) -> Result<bool, DbError> {
        Ok(diesel::delete(api_keys::table.find(id)).execute(conn)? > 0)
    }

    pub fn find(conn: &mut Conn, id: i64) -> Result<Option<KeyRow>, DbError> {
        Ok(api_keys::table.find(id).select(KeyRow::as_select()).first(conn).optional()?)
    }
}

pub mod cooldowns_q {
    use super::*;

    pub fn all(conn: &mut Conn) -> Result<Vec<CooldownRow>, DbError> {
        Ok(cooldowns::table.select(CooldownRow::as_select()).load(conn)?)
    }

    pub fn upsert(conn: &mut Conn, row: &CooldownRow) -> Result<(), DbError> {
        diesel::replace_into(cooldowns::table).values(row).execute(conn)?;
        Ok(())
    }

    pub fn clear_account(conn: &mut Conn, account: &str) -> Result<(), DbError> {
        diesel::delete(cooldowns::table.filter(cooldowns::account.eq(account))).execute(conn)?;
        Ok(())
    }

    pub fn prune(conn: &mut Conn, before_ms: i64) -> Result<usize, DbError> {
        Ok(diesel::delete(cooldowns::table.filter(cooldowns::until_ms.lt(before_ms))).execute(conn)?)
    }
}

pub mod logs {
    use super::*;

    /// Inserts a batch of log rows and bumps each key's usage, in one
    /// transaction: either all of it lands or none (and the caller retries).
    pub fn insert_batch(conn: &mut Conn, rows: &[NewLog]) -> Result<(), DbError> {
        conn.transaction::<_, DbError, _>(|conn| {
            for chunk in rows.chunks(500) {
                diesel::insert_into(request_logs::table).values(chunk).execute(conn)?;
            }
            let mut per_key: Vec<(i64, i64, i64)> = Vec::new();
            for r in rows {
                if let Some(id) = r.key_id {
                    match per_key.iter_mut().find(|(k, _, _)| *k == id) {
                        Some(e) => {
                            e.1 += 1;
                            e.2 = e.2.max(r.created_at);
                        }
                        None => per_key.push((id, 1, r.created_at)),
                    }
                }
            }
            for (id, n, last) in per_key {
                diesel::update(api_keys::table.find(id))
                    .set(api_keys::usage_count.eq(api_keys::usage_count + n))
                    .execute(conn)?;
                diesel::update(
                    api_keys::table
                        .find(id)
                        .filter(api_keys::last_used.is_null().or(api_keys::last_used.lt(last))),
                )
                .set(api_keys::last_used.eq(last))
                .execute(conn)?;
            }
            Ok(())
        })
    }

    #[derive(Debug, Default, Clone)]
    pub struct LogFilter {
        pub model: Option<String>,
        pub key: Option<String>,
        pub key_id: Option<i64>,
        pub status: Option<i32>,
        pub endpoint: Option<String>,
        pub since: Option<i64>,
        pub until: Option<i64>,
    }

    fn filtered(f: &LogFilter) -> request_logs::BoxedQuery<'static, diesel::sqlite::Sqlite> {
        let mut q = request_logs::table.into_boxed();
        if let Some(m) = &f.model {
            // SQLite's LIKE ignores ASCII case.
            q = q.filter(request_logs::model.like(format!("%{}%", escape_like(m))).escape('\\'));
        }
        if let Some(k) = &f.key {
            q = q.filter(request_logs::key_masked.like(format!("%{}%", escape_like(k))).escape('\\'));
        }
        if let Some(id) = f.key_id {
            q = q.filter(request_logs::key_id.eq(id));
        }
        if let Some(s) = f.status {
            q = q.filter(request_logs::status.eq(s));
        }
        if let Some(e) = &f.endpoint {
            q = q.filter(request_logs::endpoint.eq(e.clone()));
        }
        if let Some(s) = f.since {
            q = q.filter(request_logs::created_at.ge(s));
        }
        if let Some(u) = f.until {
            q = q.filter(request_logs::created_at.lt(u));
        }
        q
    }

    pub fn page(
        conn: &mut Conn,
        f: &LogFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<LogRow>, i64), DbError> {
        let total: i64 = filtered(f).count().get_result(conn)?;
        let rows = filtered(f)
            .order(request_logs::id.desc())
            .offset(offset)
            .limit(limit)
            .select(LogRow::as_select())
            .load(conn)?;
        Ok((rows, total))
    }

    pub fn count(conn: &mut Conn) -> Result<i64, DbError> {
        Ok(request_logs::table.count().get_result(conn)?)
    }

    pub fn clear(conn: &mut Conn) -> Result<usize, DbError> {
        Ok(diesel::delete(request_logs::table).execute(conn)?)
    }

    fn escape_like(s: &str) -> String {
        s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
    }
}

pub mod resources_q {
    use super::*;

    pub fn upsert(conn: &mut Conn, row: &ResourceRow) -> Result<(), DbError> {
        diesel::replace_into(resources::table).values(row).execute(conn)?;
        Ok(())
    }

    pub fn find(conn: &mut Conn, kind: &str, id: &str) -> Result<Option<ResourceRow>, DbError> {
        Ok(resources::table.find((kind, id)).select(ResourceRow::as_select()).first(conn).optional()?)
    }
}

pub mod settings_q {
    use super::*;

    pub fn get(conn: &mut Conn, name: &str) -> Result<Option<String>, DbError> {
        Ok(settings::table.filter(settings::name.eq(name)).select(settings::value).first(conn).optional()?)
    }

    pub fn set(conn: &mut Conn, name: &str, value: &str) -> Result<(), DbError> {
        diesel::replace_into(settings::table)
            .values((settings::name.eq(name), settings::value.eq(value)))
            .execute(conn)?;
        Ok(())
    }
}

pub fn ping(conn: &mut Conn) -> Result<(), DbError> {
    diesel::sql_query("SELECT 1").execute(conn)?;
    Ok(())
}
