//! Figures from the hourly rollups (`usage_hourly`) and the log.

use diesel::dsl::sum;
use diesel::prelude::*;

use super::Conn;
use crate::db::schema::{request_logs, usage_hourly};
use crate::db::DbError;

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
