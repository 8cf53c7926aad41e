//! The alias table the application uses: a snapshot the request path reads
//! without waiting, loaded from the database at the start (or replaced there
//! by `MODEL_ALIASES`), stored by the admin, and read again when another
//! instance changed it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Alias, Aliases};
use crate::db::notify::Changed;
use crate::db::queries::aliases as rows;
use crate::db::{DbError, DbPool, CONNECT_WAIT};

pub struct AliasTable {
    current: ArcSwap<Aliases>,
}

impl AliasTable {
    /// The stored table; with `configured` (`MODEL_ALIASES`), that table
    /// replaces the stored one first (deployments configured as code).
    pub fn load(db: &DbPool, configured: Option<&Aliases>) -> Result<AliasTable, DbError> {
        let mut conn = db.get()?;
        if let Some(table) = configured {
            rows::replace(&mut conn, &pairs(table))?;
            log::info!(
                "model aliases: {} rules from MODEL_ALIASES replace the stored table",
                table.rules().len()
            );
        }
        let table = AliasTable { current: ArcSwap::from_pointee(Aliases::default()) };
        table.read(&mut conn)?;
        Ok(table)
    }

    /// The table now (one atomic load).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Aliases>> {
        self.current.load()
    }

    /// Stores a new table and uses it here at once (the caller tells the
    /// other instances).
    pub fn store(&self, db: &DbPool, table: Aliases) -> Result<(), DbError> {
        let mut conn = db.get_timeout(CONNECT_WAIT)?;
        rows::replace(&mut conn, &pairs(&table))?;
        self.current.store(Arc::new(table));
        Ok(())
    }

    /// Another instance changed something: the table is read again if the
    /// change names it (or everything).
    /// Answers false if it could not (it is asked again).
    pub fn reload_on(&self, what: &Changed, db: &DbPool) -> bool {
        if what.all || what.aliases {
            let read =
                db.get_timeout(CONNECT_WAIT).map_err(DbError::from).and_then(|mut c| self.read(&mut c));
            if let Err(e) = read {
                log::error!("model aliases: reload after another instance's change: {e}");
                return false;
            }
        }
        true
    }

    fn read(&self, conn: &mut crate::db::AnyConn) -> Result<(), DbError> {
        let stored = rows::all(conn)?;
        let rules = stored.into_iter().map(|(pattern, model)| Alias { pattern, model }).collect();
        match Aliases::new(rules) {
            Ok(table) => self.current.store(Arc::new(table)),
            // Written by this program, so checked already: only a hand edit gets here.
            Err(e) => log::error!("model aliases: the stored table is refused ({e}); the previous one stays"),
        }
        Ok(())
    }
}

fn pairs(table: &Aliases) -> Vec<(String, String)> {
    table.rules().iter().map(|a| (a.pattern.clone(), a.model.clone())).collect()
}
