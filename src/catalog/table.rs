//! The catalog the application uses: a snapshot the request path reads
//! without waiting, built from the shipped entries and the owner's (stored,
//! and `MODEL_CATALOG_FILE`'s written over them at the start), changed by
//! the admin, and read again when another instance changed it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;

use super::{shipped, Catalog, Entry, Patch};
use crate::db::notify::Changed;
use crate::db::queries::catalog as rows;
use crate::db::{DbError, DbPool, CONNECT_WAIT};

pub struct CatalogTable {
    current: ArcSwap<Catalog>,
}

/// Why an owner's entry was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Db(#[from] DbError),
}

impl CatalogTable {
    /// The catalog; `file`'s entries (`MODEL_CATALOG_FILE`) are stored over
    /// the owner's first. An entry of the file that does not check stops
    /// the start, naming it.
    pub fn load(db: &DbPool, file: Option<&[Value]>) -> Result<CatalogTable, PutError> {
        let mut conn = db.get().map_err(DbError::from)?;
        let table = CatalogTable { current: ArcSwap::from_pointee(Catalog::default()) };
        if let Some(entries) = file {
            for (i, v) in entries.iter().enumerate() {
                let id = v.get("id").and_then(Value::as_str).ok_or_else(|| {
                    PutError::Invalid(format!("MODEL_CATALOG_FILE: entry {} has no `id`", i + 1))
                })?;
                let base = shipped().1.iter().find(|e| e.id == id);
                let (patch, _) = Patch::parse(id, v, base).map_err(|why| {
                    PutError::Invalid(format!("MODEL_CATALOG_FILE: entry {} ({id}): {why}", i + 1))
                })?;
                store(&mut conn, &patch)?;
            }
            log::info!("model catalog: {} entries from MODEL_CATALOG_FILE stored", entries.len());
        }
        table.read(&mut conn)?;
        Ok(table)
    }

    /// The catalog now (one atomic load).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.current.load()
    }

    /// Stores the owner's entry for `id` (a patch over the shipped one) and
    /// uses it here at once (the caller tells the other instances).
    /// Answers the entry it makes.
    pub fn put(&self, db: &DbPool, id: &str, body: &Value) -> Result<Entry, PutError> {
        let base = shipped().1.iter().find(|e| e.id == id);
        let (patch, entry) = Patch::parse(id, body, base).map_err(PutError::Invalid)?;
        let mut conn = db.get_timeout(CONNECT_WAIT).map_err(DbError::from)?;
        store(&mut conn, &patch)?;
        self.read(&mut conn)?;
        Ok(entry)
    }

    /// Drops the owner's entry for `id` (back to the shipped one, if any).
    /// Answers whether there was one.
    pub fn delete(&self, db: &DbPool, id: &str) -> Result<bool, DbError> {
        let mut conn = db.get_timeout(CONNECT_WAIT)?;
        let gone = rows::delete(&mut conn, id)?;
        self.read(&mut conn)?;
        Ok(gone)
    }

    /// Another instance changed something: the catalog is read again if the
    /// change names it (or everything). Answers false if it could not (it
    /// is asked again).
    pub fn reload_on(&self, what: &Changed, db: &DbPool) -> bool {
        if what.all || what.catalog {
            let read =
                db.get_timeout(CONNECT_WAIT).map_err(DbError::from).and_then(|mut c| self.read(&mut c));
            if let Err(e) = read {
                log::error!("model catalog: reload after another instance's change: {e}");
                return false;
            }
        }
        true
    }

    fn read(&self, conn: &mut crate::db::AnyConn) -> Result<(), DbError> {
        let patches: Vec<Patch> = rows::all(conn)?
            .into_iter()
            .filter_map(|(id, fields)| match serde_json::from_str::<Value>(&fields) {
                Ok(Value::Object(fields)) => Some(Patch { id, fields }),
                _ => {
                    log::error!("model catalog: the stored entry for {id:?} does not read; it is left out");
                    None
                }
            })
            .collect();
        self.current.store(Arc::new(Catalog::build(&shipped().1, &patches)));
        Ok(())
    }
}

fn store(conn: &mut crate::db::AnyConn, patch: &Patch) -> Result<(), DbError> {
    let fields = Value::Object(patch.fields.clone()).to_string();
    rows::upsert(conn, &patch.id, &fields, crate::db::now_ms())
}
