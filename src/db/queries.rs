//! Every query the application runs, in diesel's DSL.

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::models::{
    ClientFields, ClientRow, CooldownRow, KeyRow, LogRow, NewKey, NewLog, ResourceRow, UsageRow,
};
use super::schema::{
    api_keys, client_usage, clients, cooldowns, import_reports, log_batches, login_failures, request_logs,
    resources, sessions, settings, usage_clients, usage_hourly,
};
use super::DbError;

type Conn = super::AnyConn;

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

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
        // RETURNING on the inner connection: through the multi-backend one its
        // select clause is typed for neither backend.
        Ok(crate::per_backend!(conn, |c| diesel::insert_into(api_keys::table)
            .values(row)
            .returning(KeyRow::as_returning())
            .get_result(c))?)
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

    /// The end of a trial: the key's state, its error set or cleared, the
    /// time it was tried (a check that read nothing else).
    pub fn set_state_checked(
        conn: &mut Conn,
        id: i64,
        state: &str,
        state_changed: bool,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), DbError> {
        record_check(conn, id, state, state_changed, None, None, None, error, now)
    }

    /// Adds calls to keys' counts and moves their last use forward, in one
    /// transaction: `(id, calls since the last write, last use)`.
    pub fn add_usage(conn: &mut Conn, usage: &[(i64, i64, i64)]) -> Result<(), DbError> {
        conn.transaction::<_, DbError, _>(|conn| {
            for (id, calls, last) in usage {
                // last_used only moves forward (a CASE, as SQLite's max() and
                // PostgreSQL's greatest() are not the same function).
                let last_used =
                    diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(&format!(
                        "CASE WHEN last_used IS NULL OR last_used < {last} THEN {last} ELSE last_used END"
                    ));
                diesel::update(api_keys::table.find(*id))
                    .set((
                        api_keys::usage_count.eq(api_keys::usage_count + *calls),
                        api_keys::last_used.eq(last_used),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
    }

    pub fn set_label(conn: &mut Conn, id: i64, label: Option<&str>) -> Result<bool, DbError> {
        Ok(diesel::update(api_keys::table.find(id)).set(api_keys::account_label.eq(label)).execute(conn)? > 0)
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
        balance: Option<Option<f64>>,
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
            // `Some(None)`: the check could not read a balance; an old figure is stale now.
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

    /// The rows of these keys (a page of them), in no particular order.
    pub fn by_ids(conn: &mut Conn, ids: &[i64]) -> Result<Vec<KeyRow>, DbError> {
        Ok(api_keys::table.filter(api_keys::id.eq_any(ids)).select(KeyRow::as_select()).load(conn)?)
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
}

pub mod logs {
    use super::*;

    /// Inserts a batch of log rows and bumps each key's usage, in one
    /// transaction: either all of it lands or none (and the caller retries).
    /// Writes a batch of rows, their rollups, and the batch's marker
    /// (`writer`, `seq`), in one transaction.
    pub fn insert_batch(conn: &mut Conn, rows: &[NewLog], writer: &str, seq: i64) -> Result<(), DbError> {
        conn.transaction::<_, DbError, _>(|conn| {
            diesel::insert_into(log_batches::table)
                .values((
                    log_batches::writer.eq(writer),
                    log_batches::seq.eq(seq),
                    log_batches::written_at.eq(crate::db::now_ms()),
                ))
                .execute(conn)?;
            // Fixed-size statements that diesel prepares once (see log_insert).
            super::super::log_insert::insert_all(conn, rows)?;
            // (Each key's call count and last use are written by the pool
            // actor from its counters, not here: a batch over a large pool
            // would touch thousands of keys.)
            rollup(conn, rows)?;
            Ok(())
        })
    }

    /// Adds a batch to the hourly rollup: one upsert per (hour, model, key).
    fn rollup(conn: &mut Conn, rows: &[NewLog]) -> Result<(), DbError> {
        use std::collections::HashMap;
        let mut groups: HashMap<(i64, &str, i64), UsageRow> = HashMap::new();
        for r in rows {
            let hour = r.created_at.div_euclid(3_600_000);
            let key_id = r.key_id.unwrap_or(0);
            let g = groups.entry((hour, r.model.as_str(), key_id)).or_insert_with(|| UsageRow {
                hour,
                model: r.model.clone(),
                key_id,
                ..Default::default()
            });
            g.calls += 1;
            g.errors += i32::from(r.status >= 400 || r.status == 0);
            g.input_tokens = g.input_tokens.saturating_add(r.input_tokens.min(i32::MAX as i64) as i32);
            g.output_tokens = g.output_tokens.saturating_add(r.output_tokens.min(i32::MAX as i64) as i32);
            g.latency_ms = g.latency_ms.saturating_add(r.latency_ms.min(i32::MAX as i64) as i32);
        }
        let groups: Vec<UsageRow> = groups.into_values().collect();
        super::super::log_insert::upsert_usage(conn, &groups)?;
        rollup_clients(conn, rows)
    }

    /// Adds a batch to the clients' hourly rollup: one upsert per (hour,
    /// client), additive, so that instances writing at once lose nothing.
    fn rollup_clients(conn: &mut Conn, rows: &[NewLog]) -> Result<(), DbError> {
        use std::collections::HashMap;
        let mut groups: HashMap<(i64, &str), (i64, i64)> = HashMap::new();
        for r in rows {
            let Some(client) = r.client.as_deref() else { continue };
            let g = groups.entry((r.created_at.div_euclid(3_600_000), client)).or_default();
            g.0 += 1;
            g.1 = g.1.saturating_add(r.total_tokens.max(0));
        }
        for ((hour, client), (calls, tokens)) in groups {
            let row = (
                usage_clients::hour.eq(hour),
                usage_clients::client.eq(client),
                usage_clients::calls.eq(calls),
                usage_clients::tokens.eq(tokens),
            );
            crate::per_backend!(conn, |c| diesel::insert_into(usage_clients::table)
                .values(row)
                .on_conflict((usage_clients::hour, usage_clients::client))
                .do_update()
                .set((
                    usage_clients::calls.eq(usage_clients::calls + excluded(usage_clients::calls)),
                    usage_clients::tokens.eq(usage_clients::tokens + excluded(usage_clients::tokens)),
                ))
                .execute(c))?;
        }
        Ok(())
    }

    /// Calls and tokens per client over `[from_hour, to_hour)`, most calls first.
    pub fn by_client(
        conn: &mut Conn,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<(String, i64, i64)>, DbError> {
        let rows: Vec<(String, Option<i64>, Option<i64>)> = usage_clients::table
            .filter(usage_clients::hour.ge(from_hour).and(usage_clients::hour.lt(to_hour)))
            .group_by(usage_clients::client)
            .select((
                usage_clients::client,
                diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                    "CAST(SUM(calls) AS BIGINT)",
                ),
                diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                    "CAST(SUM(tokens) AS BIGINT)",
                ),
            ))
            .load(conn)?;
        let mut out: Vec<(String, i64, i64)> =
            rows.into_iter().map(|(c, calls, tokens)| (c, calls.unwrap_or(0), tokens.unwrap_or(0))).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Whether the batch (`writer`, `seq`) was committed.
    pub fn batch_written(conn: &mut Conn, writer: &str, seq: i64) -> Result<bool, DbError> {
        let n: i64 = log_batches::table
            .filter(log_batches::writer.eq(writer).and(log_batches::seq.eq(seq)))
            .count()
            .get_result(conn)?;
        Ok(n > 0)
    }

    /// Batch markers older than `before` (epoch ms): no writer asks after them.
    pub fn prune_batches(conn: &mut Conn, before: i64) -> Result<usize, DbError> {
        Ok(diesel::delete(log_batches::table.filter(log_batches::written_at.lt(before))).execute(conn)?)
    }

    /// Retention: deletes rows older than the hour that contains `cutoff_ms`,
    /// and the rollup of those hours, so stats keep equalling the log.
    pub fn delete_before(conn: &mut Conn, cutoff_ms: i64) -> Result<usize, DbError> {
        let hour = cutoff_ms.div_euclid(3_600_000);
        conn.transaction::<_, DbError, _>(|conn| {
            let n = diesel::delete(request_logs::table.filter(request_logs::created_at.lt(hour * 3_600_000)))
                .execute(conn)?;
            diesel::delete(usage_hourly::table.filter(usage_hourly::hour.lt(hour))).execute(conn)?;
            diesel::delete(usage_clients::table.filter(usage_clients::hour.lt(hour))).execute(conn)?;
            Ok(n)
        })
    }

    /// Every row matching a filter, newest first (as the page lists them),
    /// for the CSV export.
    pub fn export(conn: &mut Conn, f: &LogFilter, limit: i64) -> Result<Vec<LogRow>, DbError> {
        Ok(filtered(f)
            .order((request_logs::created_at.desc(), request_logs::id.desc()))
            .limit(limit)
            .select(LogRow::as_select())
            .load(conn)?)
    }

    #[derive(Debug, Default, Clone)]
    pub struct LogFilter {
        pub model: Option<String>,
        pub key: Option<String>,
        pub key_id: Option<i64>,
        pub status: Option<StatusFilter>,
        /// An endpoint and the paths below it (`/v1/batches` takes `/v1/batches/b1`).
        pub endpoint: Option<String>,
        /// A client's name, exactly.
        pub client: Option<String>,
        pub since: Option<i64>,
        pub until: Option<i64>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum StatusFilter {
        Exact(i32),
        /// A class: `2xx` is 200..300.
        Class(i32),
        /// What the statistics count as errors: 4xx, 5xx, and no answer (0).
        Error,
    }

    fn filtered(f: &LogFilter) -> request_logs::BoxedQuery<'static, crate::db::conn::MultiBackend> {
        let mut q = request_logs::table.into_boxed();
        // Any part, ignoring case (PostgreSQL's LIKE minds case; SQLite's does not).
        if let Some(m) = &f.model {
            let pattern = format!("%{}%", escape_like(&m.to_lowercase()));
            q = q.filter(lower(request_logs::model).like(pattern).escape('\\'));
        }
        if let Some(k) = &f.key {
            let pattern = format!("%{}%", escape_like(&k.to_lowercase()));
            q = q.filter(lower(request_logs::key_masked).like(pattern).escape('\\'));
        }
        if let Some(id) = f.key_id {
            q = q.filter(request_logs::key_id.eq(id));
        }
        if let Some(c) = &f.client {
            q = q.filter(request_logs::client.eq(c.clone()));
        }
        match f.status {
            Some(StatusFilter::Exact(s)) => q = q.filter(request_logs::status.eq(s)),
            Some(StatusFilter::Class(c)) => {
                q = q.filter(request_logs::status.ge(c * 100).and(request_logs::status.lt(c * 100 + 100)))
            }
            Some(StatusFilter::Error) => {
                q = q.filter(request_logs::status.ge(400).or(request_logs::status.eq(0)))
            }
            None => {}
        }
        if let Some(e) = &f.endpoint {
            let below = format!("{}/%", escape_like(e.trim_end_matches('/')));
            q = q.filter(
                request_logs::endpoint.eq(e.clone()).or(request_logs::endpoint.like(below).escape('\\')),
            );
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
            .order((request_logs::created_at.desc(), request_logs::id.desc()))
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
        conn.transaction::<_, DbError, _>(|conn| {
            let n = diesel::delete(request_logs::table).execute(conn)?;
            diesel::delete(usage_hourly::table).execute(conn)?;
            diesel::delete(usage_clients::table).execute(conn)?;
            Ok(n)
        })
    }

    fn escape_like(s: &str) -> String {
        s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
    }
}

pub mod resources_q {
    use super::*;

    pub fn upsert(conn: &mut Conn, row: &ResourceRow) -> Result<(), DbError> {
        crate::per_backend!(conn, |c| diesel::insert_into(resources::table)
            .values(row)
            .on_conflict((resources::kind, resources::resource_id))
            .do_update()
            .set((
                resources::key_id.eq(excluded(resources::key_id)),
                resources::account.eq(excluded(resources::account)),
                resources::created_at.eq(excluded(resources::created_at)),
            ))
            .execute(c))?;
        Ok(())
    }

    pub fn find(conn: &mut Conn, kind: &str, id: &str) -> Result<Option<ResourceRow>, DbError> {
        Ok(resources::table.find((kind, id)).select(ResourceRow::as_select()).first(conn).optional()?)
    }
}

pub mod stats {
    use super::*;
    use diesel::dsl::sum;

    /// Sums over one bucket (an hour, a model, a key, or a whole range).
    #[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
    pub struct Agg {
        pub calls: i64,
        pub errors: i64,
        pub input_tokens: i64,
        pub output_tokens: i64,
        pub latency_ms: i64,
    }

    type Sums = (Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

    fn agg(s: Sums) -> Agg {
        Agg {
            calls: s.0.unwrap_or(0),
            errors: s.1.unwrap_or(0),
            input_tokens: s.2.unwrap_or(0),
            output_tokens: s.3.unwrap_or(0),
            latency_ms: s.4.unwrap_or(0),
        }
    }

    macro_rules! sums {
        () => {
            (
                sum(usage_hourly::calls),
                sum(usage_hourly::errors),
                sum(usage_hourly::input_tokens),
                sum(usage_hourly::output_tokens),
                sum(usage_hourly::latency_ms),
            )
        };
    }

    /// Totals over `[from_hour, to_hour)` (epoch hours); `None` = unbounded.
    pub fn totals(conn: &mut Conn, from_hour: Option<i64>, to_hour: Option<i64>) -> Result<Agg, DbError> {
        let mut q = usage_hourly::table.into_boxed();
        if let Some(f) = from_hour {
            q = q.filter(usage_hourly::hour.ge(f));
        }
        if let Some(t) = to_hour {
            q = q.filter(usage_hourly::hour.lt(t));
        }
        Ok(agg(q.select(sums!()).first::<Sums>(conn)?))
    }

    pub fn by_hour(conn: &mut Conn, from_hour: i64, to_hour: i64) -> Result<Vec<(i64, Agg)>, DbError> {
        let rows: Vec<(i64, Sums)> = usage_hourly::table
            .filter(usage_hourly::hour.ge(from_hour).and(usage_hourly::hour.lt(to_hour)))
            .group_by(usage_hourly::hour)
            .select((usage_hourly::hour, sums!()))
            .load(conn)?;
        Ok(rows.into_iter().map(|(h, s)| (h, agg(s))).collect())
    }

    pub fn by_model(conn: &mut Conn, from_hour: i64, to_hour: i64) -> Result<Vec<(String, Agg)>, DbError> {
        let rows: Vec<(String, Sums)> = usage_hourly::table
            .filter(usage_hourly::hour.ge(from_hour).and(usage_hourly::hour.lt(to_hour)))
            .group_by(usage_hourly::model)
            .select((usage_hourly::model, sums!()))
            .load(conn)?;
        Ok(rows.into_iter().map(|(m, s)| (m, agg(s))).collect())
    }

    pub fn by_key(conn: &mut Conn, from_hour: i64, to_hour: i64) -> Result<Vec<(i64, Agg)>, DbError> {
        let rows: Vec<(i64, Sums)> = usage_hourly::table
            .filter(usage_hourly::hour.ge(from_hour).and(usage_hourly::hour.lt(to_hour)))
            .group_by(usage_hourly::key_id)
            .select((usage_hourly::key_id, sums!()))
            .load(conn)?;
        Ok(rows.into_iter().map(|(k, s)| (k, agg(s))).collect())
    }

    /// What became of the calls of one hour.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
    pub struct Outcomes {
        pub hour: i64,
        /// Answered (below 400) by the first key tried.
        pub ok: i64,
        /// Answered after another key had failed (failover did its job).
        pub failed_over: i64,
        /// 4xx: the request's fault, or a rate limit no key could get past.
        pub client_errors: i64,
        /// 5xx or no answer: the upstream (or the way to it) failed.
        pub upstream_errors: i64,
    }

    /// Outcomes per hour since `from_ms`, from the log itself (the rollup does
    /// not keep attempts); a range scan of the `created_at` index.
    pub fn outcomes_by_hour(conn: &mut Conn, from_ms: i64) -> Result<Vec<Outcomes>, DbError> {
        use diesel::dsl::sql;
        use diesel::sql_types::{BigInt, Nullable};
        // The same text in SELECT and GROUP BY, with no parameter in it.
        const HOUR: &str = "created_at / 3600000";
        let count = |cond: &str| {
            sql::<Nullable<BigInt>>(&format!("CAST(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS BIGINT)"))
        };
        type Row = (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
        let rows: Vec<Row> = request_logs::table
            .filter(request_logs::created_at.ge(from_ms))
            .group_by(sql::<BigInt>(HOUR))
            .select((
                sql::<BigInt>(HOUR),
                count("status > 0 AND status < 400 AND attempts <= 1"),
                count("status > 0 AND status < 400 AND attempts > 1"),
                count("status >= 400 AND status < 500"),
                count("status >= 500 OR status <= 0"),
            ))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(hour, ok, failed_over, client_errors, upstream_errors)| Outcomes {
                hour,
                ok: ok.unwrap_or(0),
                failed_over: failed_over.unwrap_or(0),
                client_errors: client_errors.unwrap_or(0),
                upstream_errors: upstream_errors.unwrap_or(0),
            })
            .collect())
    }
}

pub mod sessions_q {
    use super::*;

    pub fn insert(
        conn: &mut Conn,
        token_hash: &str,
        csrf: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), DbError> {
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
}

/// Failed admin logins per address, shared by the instances on the database.
pub mod login_q {
    use super::*;
    use diesel::dsl::case_when;
    use diesel::sql_types::{BigInt, Integer};

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
        Ok(diesel::delete(login_failures::table.filter(login_failures::window_start.lt(before)))
            .execute(conn)?)
    }
}

/// Client keys.
pub mod clients_q {
    use super::*;
    use std::collections::HashMap;

    pub fn all(conn: &mut Conn) -> Result<Vec<ClientRow>, DbError> {
        Ok(clients::table.order(clients::id.asc()).select(ClientRow::as_select()).load(conn)?)
    }

    pub fn find(conn: &mut Conn, id: i64) -> Result<Option<ClientRow>, DbError> {
        Ok(clients::table.find(id).select(ClientRow::as_select()).first(conn).optional()?)
    }

    pub fn name_taken(conn: &mut Conn, name: &str, other_than: Option<i64>) -> Result<bool, DbError> {
        let n: i64 = clients::table
            .filter(clients::name.eq(name))
            .filter(clients::id.ne(other_than.unwrap_or(-1)))
            .count()
            .get_result(conn)?;
        Ok(n > 0)
    }

    pub fn insert(
        conn: &mut Conn,
        fields: &ClientFields,
        key_hash: &str,
        key_hint: &str,
        now: i64,
    ) -> Result<i64, DbError> {
        diesel::insert_into(clients::table)
            .values((
                fields,
                clients::key_hash.eq(key_hash),
                clients::key_hint.eq(key_hint),
                clients::created_at.eq(now),
            ))
            .execute(conn)?;
        Ok(clients::table.filter(clients::key_hash.eq(key_hash)).select(clients::id).first(conn)?)
    }

    /// Answers whether the client exists.
    pub fn update(conn: &mut Conn, id: i64, fields: &ClientFields) -> Result<bool, DbError> {
        Ok(diesel::update(clients::table.find(id)).set(fields).execute(conn)? > 0)
    }

    pub fn set_key(conn: &mut Conn, id: i64, key_hash: &str, key_hint: &str) -> Result<bool, DbError> {
        Ok(diesel::update(clients::table.find(id))
            .set((clients::key_hash.eq(key_hash), clients::key_hint.eq(key_hint)))
            .execute(conn)?
            > 0)
    }

    pub fn delete(conn: &mut Conn, id: i64) -> Result<bool, DbError> {
        Ok(diesel::delete(clients::table.find(id)).execute(conn)? > 0)
    }

    /// One client's counts on one instance: today's requests and tokens, and
    /// its requests in the last 60 s.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Counts {
        pub requests: u64,
        pub tokens: u64,
        pub recent: u64,
    }

    fn big(n: u64) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    /// Publishes this instance's counts of `day`, by client id.
    pub fn publish_usage(
        conn: &mut Conn,
        instance: &str,
        day: i64,
        counts: &[(i64, Counts)],
        now: i64,
    ) -> Result<(), DbError> {
        for (client, c) in counts {
            let row = (
                client_usage::instance.eq(instance),
                client_usage::client_id.eq(*client),
                client_usage::day.eq(day),
                client_usage::requests.eq(big(c.requests)),
                client_usage::tokens.eq(big(c.tokens)),
                client_usage::updated_at.eq(now),
                client_usage::recent_requests.eq(big(c.recent)),
            );
            crate::per_backend!(conn, |c| diesel::insert_into(client_usage::table)
                .values(row)
                .on_conflict((client_usage::instance, client_usage::client_id, client_usage::day))
                .do_update()
                .set((
                    client_usage::requests.eq(excluded(client_usage::requests)),
                    client_usage::tokens.eq(excluded(client_usage::tokens)),
                    client_usage::updated_at.eq(excluded(client_usage::updated_at)),
                    client_usage::recent_requests.eq(excluded(client_usage::recent_requests)),
                ))
                .execute(c))?;
        }
        Ok(())
    }

    /// What the other instances counted on `day`, by client id. Their calls
    /// of the last 60 s count from publications less than 60 s old (an
    /// instance that stopped a moment ago made them all the same).
    pub fn others_usage(
        conn: &mut Conn,
        instance: &str,
        day: i64,
        now: i64,
    ) -> Result<HashMap<i64, Counts>, DbError> {
        use diesel::sql_types::{BigInt, Nullable};
        type Sums = (i64, Option<i64>, Option<i64>, Option<i64>);
        let rows: Vec<Sums> = client_usage::table
            .filter(client_usage::day.eq(day).and(client_usage::instance.ne(instance)))
            .group_by(client_usage::client_id)
            .select((
                client_usage::client_id,
                diesel::dsl::sql::<Nullable<BigInt>>("CAST(SUM(requests) AS BIGINT)"),
                diesel::dsl::sql::<Nullable<BigInt>>("CAST(SUM(tokens) AS BIGINT)"),
                // A number of ours, not input: written into the SQL as it is.
                diesel::dsl::sql::<Nullable<BigInt>>(&format!(
                    "CAST(SUM(CASE WHEN updated_at > {} THEN recent_requests ELSE 0 END) AS BIGINT)",
                    now - 60_000
                )),
            ))
            .load(conn)?;
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        Ok(rows
            .into_iter()
            .map(|(id, r, t, m)| (id, Counts { requests: n(r), tokens: n(t), recent: n(m) }))
            .collect())
    }

    pub fn prune_usage(conn: &mut Conn, before_day: i64) -> Result<usize, DbError> {
        Ok(diesel::delete(client_usage::table.filter(client_usage::day.lt(before_day))).execute(conn)?)
    }

    /// (calls, tokens) per client name in the request log since `since`.
    pub fn usage_since(conn: &mut Conn, since: i64) -> Result<HashMap<String, (u64, u64)>, DbError> {
        let rows: Vec<(Option<String>, i64, Option<i64>)> = request_logs::table
            .filter(request_logs::created_at.ge(since))
            .filter(request_logs::client.is_not_null())
            .group_by(request_logs::client)
            .select((
                request_logs::client,
                diesel::dsl::count_star(),
                // Cast: PostgreSQL sums BIGINTs as NUMERIC.
                diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                    "CAST(SUM(total_tokens) AS BIGINT)",
                ),
            ))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, calls, tokens)| {
                Some((name?, (calls.max(0) as u64, tokens.unwrap_or(0).max(0) as u64)))
            })
            .collect())
    }
}

/// Imports' results kept for the page after the import (any instance may serve it).
pub mod import_reports_q {
    use super::*;

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
        Ok(diesel::delete(import_reports::table.filter(import_reports::created_at.le(before)))
            .execute(conn)?)
    }
}

pub mod settings_q {
    use super::*;

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
}

pub fn ping(conn: &mut Conn) -> Result<(), DbError> {
    diesel::sql_query("SELECT 1").execute(conn)?;
    Ok(())
}
