//! Every client key in a snapshot the request path reads (one hash, one map
//! lookup, never the database), rebuilt from the database after each change
//! here or on another instance; usage is kept across snapshots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::FixedOffset;

use super::secret::{from_hex, key_hash};
use super::usage::{day_of, DayUsage, Usage, DAY_MS};
use super::{parse_models, Client};
use crate::db::models::ClientRow;
use crate::db::queries::clients as client_rows;
use crate::db::{DbError, DbPool};
use crate::ids::ClientId;

/// The clients as the request path sees them.
#[derive(Default)]
pub struct ClientSnapshot {
    pub(super) by_hash: HashMap<[u8; 32], Arc<Client>>,
    pub(super) by_id: HashMap<ClientId, Arc<Client>>,
}

impl ClientSnapshot {
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Every client (in no order).
    pub fn all(&self) -> Vec<Arc<Client>> {
        self.by_id.values().cloned().collect()
    }

    pub fn get(&self, id: ClientId) -> Option<&Arc<Client>> {
        self.by_id.get(&id)
    }
}

/// Every client key, in a snapshot rebuilt from the database after each
/// change (here, or on another instance), with their usage kept in memory.
pub struct ClientKeys {
    pub(super) snapshot: ArcSwap<ClientSnapshot>,
    /// Usage by client id, kept across snapshots.
    usage: Mutex<HashMap<ClientId, Arc<Usage>>>,
    pub env: Arc<Client>,
    pub tz: FixedOffset,
    /// With several instances: the limits' leases (see `lease`).
    pub leases: Option<Arc<super::lease::Leases>>,
}

impl ClientKeys {
    /// Loads the clients and what each used today: from the request log when
    /// this instance is alone; with several (`shared`), every instance's
    /// count comes from `client_usage` instead (`sync_usage`).
    pub fn load(db: &DbPool, tz: FixedOffset, now_ms: i64, shared: bool) -> Result<ClientKeys, DbError> {
        let keys = ClientKeys {
            snapshot: ArcSwap::from_pointee(ClientSnapshot::default()),
            usage: Mutex::new(HashMap::new()),
            env: Arc::new(Client::env()),
            tz,
            leases: shared.then(Arc::default),
        };
        let mut conn = db.get()?;
        keys.reload_from(&mut conn)?;
        if shared {
            return Ok(keys);
        }
        let start = day_of(now_ms, &tz) * DAY_MS - i64::from(tz.local_minus_utc()) * 1000;
        let used = client_rows::usage_since(&mut conn, start)?;
        let snapshot = keys.snapshot.load();
        for client in snapshot.by_id.values().chain(std::iter::once(&keys.env)) {
            if let Some((requests, tokens)) = used.get(&*client.name) {
                let mut day = client.usage.day.lock().unwrap_or_else(|e| e.into_inner());
                *day =
                    DayUsage { day: day_of(now_ms, &tz), requests: *requests, tokens: *tokens, reserved: 0 };
            }
        }
        Ok(keys)
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<ClientSnapshot>> {
        self.snapshot.load()
    }

    /// The client whose secret this is (not checking enabled or expiry).
    pub fn find(&self, secret: &str) -> Option<Arc<Client>> {
        let snapshot = self.snapshot.load();
        if snapshot.is_empty() {
            return None;
        }
        snapshot.by_hash.get(&key_hash(secret)).cloned()
    }

    /// Another instance changed something: the client table is read again
    /// if the change names it (or everything).
    /// Answers false if it could not (it is asked again).
    pub fn reload_on(&self, what: &crate::db::notify::Changed, db: &DbPool) -> bool {
        if what.all || what.clients {
            if let Err(e) = self.reload(db) {
                log::error!("client keys: reload after another instance's change: {e}");
                return false;
            }
        }
        true
    }

    /// Reads every client again (after a change).
    pub fn reload(&self, db: &DbPool) -> Result<(), DbError> {
        let mut conn = db.get_timeout(crate::db::CONNECT_WAIT)?;
        self.reload_from(&mut conn)
    }

    fn reload_from(&self, conn: &mut crate::db::AnyConn) -> Result<(), DbError> {
        let rows = client_rows::all(conn)?;
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.retain(|id, _| rows.iter().any(|r| r.client_id() == *id));
        let mut snapshot = ClientSnapshot::default();
        for row in rows {
            let Some(hash) = from_hex(&row.key_hash) else {
                log::error!(
                    "client {:?}: its stored key hash is unreadable; the key will not work",
                    row.name
                );
                continue;
            };
            let usage = usage.entry(row.client_id()).or_default().clone();
            let client = Arc::new(client_of(&row, usage, self.leases.clone()));
            snapshot.by_hash.insert(hash, client.clone());
            snapshot.by_id.insert(row.client_id(), client);
        }
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }
}

fn client_of(row: &ClientRow, usage: Arc<Usage>, leases: Option<Arc<super::lease::Leases>>) -> Client {
    Client {
        id: row.client_id(),
        // As every log row stores it (see `column_text`).
        name: Arc::from(crate::db::models::column_text(row.name.clone(), 256)),
        models: parse_models(row.models.as_deref()),
        rpm: row.rpm.and_then(|n| u32::try_from(n).ok()),
        daily_requests: row.daily_requests.and_then(|n| u64::try_from(n).ok()),
        daily_tokens: row.daily_tokens.and_then(|n| u64::try_from(n).ok()),
        expires_at: row.expires_at,
        enabled: row.enabled,
        usage,
        leases,
    }
}
