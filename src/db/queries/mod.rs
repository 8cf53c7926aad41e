//! Every query the application runs, in diesel's DSL: one file per table
//! (or per pair of tables that one feature keeps together), named after it.

pub mod aliases;
pub mod catalog;
pub mod clients;
pub mod cooldowns;
pub mod import_reports;
pub mod keys;
pub mod logins;
pub mod logs;
pub mod resources;
pub mod sessions;
pub mod settings;
pub mod stats;

use diesel::RunQueryDsl;

use super::DbError;

type Conn = super::AnyConn;

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);
diesel::define_sql_function!(
    #[sql_name = "lower"]
    fn lower_opt(x: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>
);

pub fn ping(conn: &mut Conn) -> Result<(), DbError> {
    diesel::sql_query("SELECT 1").execute(conn)?;
    Ok(())
}
