//! Which key created an upstream resource (file, batch, video, voice): `resources`.

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::Conn;
use crate::db::models::ResourceRow;
use crate::db::schema::resources;
use crate::db::DbError;
use crate::ids::ClientId;

pub fn upsert(conn: &mut Conn, row: &ResourceRow) -> Result<(), DbError> {
    crate::per_backend!(conn, |c| diesel::insert_into(resources::table)
        .values(row)
        .on_conflict((resources::kind, resources::resource_id))
        // The client that created it stays its owner (`client_id` is not taken).
        .do_update()
        .set((
            resources::key_id.eq(excluded(resources::key_id)),
            resources::account.eq(excluded(resources::account)),
            resources::created_at.eq(excluded(resources::created_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// The ids of one kind a client created.
pub fn ids_of_client(conn: &mut Conn, kind: &str, client: ClientId) -> Result<Vec<String>, DbError> {
    Ok(resources::table
        .filter(resources::client_id.eq(client.0).and(resources::kind.eq(kind)))
        .select(resources::resource_id)
        .load(conn)?)
}

/// Records a batch's tokens, once: answers `Some(its owner)` (a client id,
/// or `None` for an open proxy's) when this call recorded them; `None` when
/// they were recorded before, or the batch is unknown here.
pub fn record_batch_tokens(conn: &mut Conn, id: &str, tokens: i64) -> Result<Option<Option<i64>>, DbError> {
    let n = diesel::update(resources::table.find(("batch", id)).filter(resources::tokens.is_null()))
        .set(resources::tokens.eq(tokens))
        .execute(conn)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(resources::table.find(("batch", id)).select(resources::client_id).first(conn)?))
}

pub fn find(conn: &mut Conn, kind: &str, id: &str) -> Result<Option<ResourceRow>, DbError> {
    Ok(resources::table.find((kind, id)).select(ResourceRow::as_select()).first(conn).optional()?)
}
