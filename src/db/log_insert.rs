//! The one hot statement: inserting request log rows, `N` at a time.
//!
//! Diesel's generic batch insert (`insert_into(..).values(&rows[..])`) has no
//! static query id, so for every batch it renders the SQL again, hashes it to
//! find the prepared statement, and walks a 15-column tuple of defaultable
//! values per row: about two thirds of the log writer's time per row
//! (BENCHMARKS.md). This statement always has exactly `N` rows, so its query
//! id is static: diesel prepares it once per connection and afterwards only
//! binds 15 values per row. It is still diesel's query builder, with the
//! column names and SQL types taken from `schema.rs`.

use diesel::backend::Backend;
use diesel::helper_types::SqlTypeOf;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Bool, HasSqlType, Integer, Text};
use diesel::{Column, QueryResult, RunQueryDsl};

use super::conn::AnyConn;

use super::models::{NewLog, UsageRow};
use super::schema::request_logs;

/// `INSERT INTO request_logs (...) VALUES (...), ...` for exactly `N` rows.
pub struct InsertLogs<'a, const N: usize>(pub &'a [NewLog; N]);

/// The statement's identity for diesel's prepared-statement cache: one
/// prepared statement per row count.
pub struct InsertLogsId<const N: usize>;

impl<const N: usize> QueryId for InsertLogs<'_, N> {
    type QueryId = InsertLogsId<N>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C, const N: usize> RunQueryDsl<C> for InsertLogs<'_, N> {}

/// A backend that can take the log's columns (SQLite and PostgreSQL). The
/// statements are run on the inner connection, not through the multi-backend
/// one, which would render their SQL again on every run.
pub trait LogBackend:
    Backend + HasSqlType<BigInt> + HasSqlType<Text> + HasSqlType<Integer> + HasSqlType<Bool>
where
    i64: ToSql<BigInt, Self>,
    i32: ToSql<Integer, Self>,
    bool: ToSql<Bool, Self>,
    String: ToSql<Text, Self>,
{
}

impl<DB> LogBackend for DB
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Text> + HasSqlType<Integer> + HasSqlType<Bool>,
    i64: ToSql<BigInt, DB>,
    i32: ToSql<Integer, DB>,
    bool: ToSql<Bool, DB>,
    String: ToSql<Text, DB>,
{
}

/// Lists every column of `NewLog` once: the exhaustive destructuring makes a
/// new field that is not inserted here a compile error.
macro_rules! columns_and_binds {
    ($($col:ident),+ $(,)?) => {
        fn push_columns<DB: LogBackend>(out: &mut AstPass<'_, '_, DB>) -> QueryResult<()>
        where
            i64: ToSql<BigInt, DB>,
            i32: ToSql<Integer, DB>,
            bool: ToSql<Bool, DB>,
            String: ToSql<Text, DB>,
        {
            let mut sep = "(";
            $(
                out.push_sql(sep);
                out.push_identifier(<request_logs::$col as Column>::NAME)?;
                sep = ", ";
            )+
            let _ = sep;
            out.push_sql(")");
            Ok(())
        }

        fn push_row<'b, DB: LogBackend>(out: &mut AstPass<'_, 'b, DB>, row: &'b NewLog) -> QueryResult<()>
        where
            i64: ToSql<BigInt, DB>,
            i32: ToSql<Integer, DB>,
            bool: ToSql<Bool, DB>,
            String: ToSql<Text, DB>,
        {
            let NewLog { $($col),+ } = row;
            let mut sep = "(";
            $(
                out.push_sql(sep);
                out.push_bind_param::<SqlTypeOf<request_logs::$col>, _>($col)?;
                sep = ", ";
            )+
            let _ = sep;
            out.push_sql(")");
            Ok(())
        }
    };
}

columns_and_binds!(
    created_at,
    key_id,
    key_masked,
    model,
    endpoint,
    status,
    input_tokens,
    output_tokens,
    total_tokens,
    latency_ms,
    ttfb_ms,
    stream,
    aborted,
    attempts,
    error,
    client,
    requested_model,
    call_id,
    usage_estimated,
);

impl<DB: LogBackend, const N: usize> QueryFragment<DB> for InsertLogs<'_, N>
where
    i64: ToSql<BigInt, DB>,
    i32: ToSql<Integer, DB>,
    bool: ToSql<Bool, DB>,
    String: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("INSERT INTO ");
        request_logs::table.walk_ast(out.reborrow())?;
        out.push_sql(" ");
        push_columns(&mut out)?;
        out.push_sql(" VALUES ");
        for (i, row) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            push_row(&mut out, row)?;
        }
        Ok(())
    }
}

/// Rows per multi-row statement: 64 x 15 = 960 parameters, far below
/// SQLite's limit; the rest of a batch goes in one row at a time.
pub const CHUNK: usize = 64;

/// Inserts `rows` with the two cached statements (`CHUNK` rows, and one row).
pub fn insert_all(conn: &mut AnyConn, rows: &[NewLog]) -> QueryResult<()> {
    let (chunks, rest) = rows.as_chunks::<CHUNK>();
    crate::per_backend!(conn, |c| {
        for chunk in chunks {
            InsertLogs(chunk).execute(c)?;
        }
        for row in rest {
            InsertLogs(std::array::from_ref(row)).execute(c)?;
        }
        Ok(())
    })
}

/// The hourly rollup's upsert, `N` groups at a time, prepared once like the
/// insert above: a batch over a large pool has as many groups as keys it
/// touched (thousands), and diesel's generic upsert rendered and hashed its
/// SQL for every one of them.
pub struct UpsertUsage<'a, const N: usize>(pub &'a [UsageRow; N]);

pub struct UpsertUsageId<const N: usize>;

impl<const N: usize> QueryId for UpsertUsage<'_, N> {
    type QueryId = UpsertUsageId<N>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C, const N: usize> RunQueryDsl<C> for UpsertUsage<'_, N> {}

impl<DB: LogBackend, const N: usize> QueryFragment<DB> for UpsertUsage<'_, N>
where
    i64: ToSql<BigInt, DB>,
    i32: ToSql<Integer, DB>,
    bool: ToSql<Bool, DB>,
    String: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        use super::schema::usage_hourly as u;
        let keys = [<u::hour as Column>::NAME, <u::model as Column>::NAME, <u::key_id as Column>::NAME];
        let sums = [
            <u::calls as Column>::NAME,
            <u::errors as Column>::NAME,
            <u::input_tokens as Column>::NAME,
            <u::output_tokens as Column>::NAME,
            <u::latency_ms as Column>::NAME,
        ];
        out.push_sql("INSERT INTO ");
        u::table.walk_ast(out.reborrow())?;
        for (i, name) in keys.iter().chain(sums.iter()).enumerate() {
            out.push_sql(if i == 0 { " (" } else { ", " });
            out.push_identifier(name)?;
        }
        out.push_sql(") VALUES ");
        for (i, g) in self.0.iter().enumerate() {
            let UsageRow { hour, model, key_id, calls, errors, input_tokens, output_tokens, latency_ms } = g;
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<SqlTypeOf<u::hour>, _>(hour)?;
            out.push_sql(", ");
            out.push_bind_param::<SqlTypeOf<u::model>, _>(model)?;
            out.push_sql(", ");
            out.push_bind_param::<SqlTypeOf<u::key_id>, _>(key_id)?;
            for v in [calls, errors, input_tokens, output_tokens, latency_ms] {
                out.push_sql(", ");
                out.push_bind_param::<diesel::sql_types::Integer, _>(v)?;
            }
            out.push_sql(")");
        }
        // Added to what the hour already holds (several batches, or instances).
        for (i, key) in keys.iter().enumerate() {
            out.push_sql(if i == 0 { " ON CONFLICT (" } else { ", " });
            out.push_identifier(key)?;
        }
        out.push_sql(") DO UPDATE SET ");
        for (i, name) in sums.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_identifier(name)?;
            // Qualified: PostgreSQL finds a bare column here ambiguous.
            out.push_sql(" = ");
            u::table.walk_ast(out.reborrow())?;
            out.push_sql(".");
            out.push_identifier(name)?;
            out.push_sql(" + excluded.");
            out.push_identifier(name)?;
        }
        Ok(())
    }
}

/// Upserts `groups` with the two cached statements (`CHUNK` groups, and one).
pub fn upsert_usage(conn: &mut AnyConn, groups: &[UsageRow]) -> QueryResult<()> {
    let (chunks, rest) = groups.as_chunks::<CHUNK>();
    crate::per_backend!(conn, |c| {
        for chunk in chunks {
            UpsertUsage(chunk).execute(c)?;
        }
        for g in rest {
            UpsertUsage(std::array::from_ref(g)).execute(c)?;
        }
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use diesel::prelude::*;
    use diesel_migrations::MigrationHarness;

    use super::*;
    use crate::db::models::LogRow;

    fn memory_db() -> AnyConn {
        let mut conn = AnyConn::Sqlite(diesel::SqliteConnection::establish(":memory:").unwrap());
        conn.run_pending_migrations(crate::db::MIGRATIONS).unwrap();
        conn
    }

    pub(crate) fn row(i: i64) -> NewLog {
        NewLog {
            created_at: 1_764_000_000_000 + i,
            key_id: (i % 3 != 0).then_some(i % 5),
            key_masked: format!("sk-abcd...{i:04}"),
            model: if i % 2 == 0 { "Qwen/Qwen3-8B".into() } else { "deepseek-ai/DeepSeek-V3 ‘x’".into() },
            endpoint: "/v1/chat/completions".into(),
            status: [200, 429, 502, 0][(i % 4) as usize],
            input_tokens: i * 7,
            output_tokens: i64::MAX - i,
            total_tokens: i,
            latency_ms: i % 11,
            ttfb_ms: (i % 2 == 1).then_some(i),
            stream: i % 2 == 0,
            aborted: i % 7 == 0,
            attempts: (i % 3) as i32 + 1,
            error: (i % 4 == 3).then(|| format!("upstream said \"no\" ({i}); 'quotes' ok")),
            client: (i % 2 == 0).then(|| format!("client-{i}")),
            requested_model: (i % 3 == 0).then(|| format!("claude-{i}")),
            call_id: (i % 5 == 4).then(|| format!("w-{i}")),
            usage_estimated: i % 6 == 5,
        }
    }

    fn stored(conn: &mut AnyConn) -> Vec<LogRow> {
        request_logs::table.order(request_logs::id.asc()).select(LogRow::as_select()).load(conn).unwrap()
    }

    #[test]
    fn writes_exactly_what_diesels_generic_insert_writes_across_chunk_boundaries() {
        // Two full chunks and a remainder, then a batch smaller than a chunk.
        let rows: Vec<NewLog> = (0..(2 * CHUNK as i64 + 5)).map(row).collect();
        let small: Vec<NewLog> = (1000..1003).map(row).collect();

        let mut fast = memory_db();
        insert_all(&mut fast, &rows).unwrap();
        insert_all(&mut fast, &small).unwrap();
        insert_all(&mut fast, &[]).unwrap();

        let mut reference = memory_db();
        // Diesel's own batch insert, on the inner SQLite connection.
        let AnyConn::Sqlite(inner) = &mut reference else { panic!("a SQLite test database") };
        diesel::insert_into(request_logs::table).values(&rows).execute(inner).unwrap();
        diesel::insert_into(request_logs::table).values(&small).execute(inner).unwrap();

        let (got, want) = (stored(&mut fast), stored(&mut reference));
        assert_eq!(got.len(), rows.len() + small.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(format!("{g:?}"), format!("{w:?}"));
        }
        assert_eq!(got[0].key_id, None);
        assert_eq!(got[3].error.as_deref(), Some("upstream said \"no\" (3); 'quotes' ok"));
    }

    #[test]
    fn the_prepared_rollup_upsert_adds_up_like_the_generic_one() {
        use crate::db::schema::usage_hourly;
        let mut conn = memory_db();
        let group = |k: i64, calls: i32| UsageRow {
            hour: 7,
            model: format!("m{}", k % 3),
            key_id: k,
            calls,
            errors: 1,
            input_tokens: 10,
            output_tokens: 20,
            latency_ms: 30,
        };
        let first: Vec<UsageRow> = (0..150).map(|k| group(k, 2)).collect();
        upsert_usage(&mut conn, &first).unwrap();
        let again: Vec<UsageRow> = (100..200).map(|k| group(k, 3)).collect();
        upsert_usage(&mut conn, &again).unwrap();
        let rows: Vec<(i64, i32, i32, i32)> = usage_hourly::table
            .order(usage_hourly::key_id)
            .select((
                usage_hourly::key_id,
                usage_hourly::calls,
                usage_hourly::errors,
                usage_hourly::latency_ms,
            ))
            .load(&mut conn)
            .unwrap();
        assert_eq!(rows.len(), 200);
        assert_eq!(rows[0], (0, 2, 1, 30));
        assert_eq!(rows[120], (120, 5, 2, 60), "existing groups are added to");
        assert_eq!(rows[199], (199, 3, 1, 30));
    }
}
