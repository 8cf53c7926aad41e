//! Instances on one PostgreSQL database tell each other about changes to the
//! pool (keys, states, cooldowns): a write is followed by `NOTIFY`, and each
//! instance listens on a connection of its own and reloads its snapshot.
//! Notifications are lost while a listener is disconnected, so it reloads
//! after every reconnect and every `safety` interval as well.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};

use super::conn::AnyConn;
use crate::ids::KeyId;

pub const CHANNEL: &str = "sfp_pool";

/// What changed, as the other instances are told: some keys (their rows are
/// read again), the cooldowns (a small table), or everything. A reload then
/// costs what changed, not the size of the pool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changed {
    pub all: bool,
    pub cooldowns: bool,
    /// The client keys (a small table, read whole).
    pub clients: bool,
    /// The model aliases (a small table, read whole).
    pub aliases: bool,
    /// The owner's model catalog entries (a small table, read whole).
    pub catalog: bool,
    pub keys: BTreeSet<KeyId>,
}

/// Past this many key ids a notification says "everything" (PostgreSQL
/// takes payloads up to 8,000 bytes).
const MAX_IDS: usize = 500;

impl Changed {
    pub fn all() -> Self {
        Changed { all: true, ..Default::default() }
    }

    pub fn cooldowns() -> Self {
        Changed { cooldowns: true, ..Default::default() }
    }

    pub fn clients() -> Self {
        Changed { clients: true, ..Default::default() }
    }

    pub fn aliases() -> Self {
        Changed { aliases: true, ..Default::default() }
    }

    pub fn catalog() -> Self {
        Changed { catalog: true, ..Default::default() }
    }

    pub fn keys(ids: impl IntoIterator<Item = KeyId>) -> Self {
        Changed { keys: ids.into_iter().collect(), ..Default::default() }
    }

    pub fn is_empty(&self) -> bool {
        !self.all
            && !self.cooldowns
            && !self.clients
            && !self.aliases
            && !self.catalog
            && self.keys.is_empty()
    }

    pub fn merge(&mut self, other: Changed) {
        self.all |= other.all;
        self.cooldowns |= other.cooldowns;
        self.clients |= other.clients;
        self.aliases |= other.aliases;
        self.catalog |= other.catalog;
        self.keys.extend(other.keys);
    }

    /// `instance|flags|ids`: flags `a` (all), `c` (cooldowns), `l` (client
    /// keys), `m` (model aliases) and `g` (the model catalog), ids by commas.
    fn payload(&self, instance: &str) -> String {
        if self.all || self.keys.len() > MAX_IDS {
            return format!("{instance}|a|");
        }
        let ids: Vec<String> = self.keys.iter().map(KeyId::to_string).collect();
        let flag = |on: bool, f: &'static str| if on { f } else { "" };
        let flags = format!(
            "{}{}{}{}",
            flag(self.cooldowns, "c"),
            flag(self.clients, "l"),
            flag(self.aliases, "m"),
            flag(self.catalog, "g")
        );
        format!("{instance}|{flags}|{}", ids.join(","))
    }

    /// The sender and what changed. Anything else (an older instance's bare
    /// name during a rolling upgrade) means "everything".
    fn parse(payload: &str) -> (&str, Changed) {
        let mut parts = payload.splitn(3, '|');
        let instance = parts.next().unwrap_or("");
        let (Some(flags), Some(ids)) = (parts.next(), parts.next()) else {
            return (instance, Changed::all());
        };
        let keys: Option<BTreeSet<KeyId>> =
            ids.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect();
        match keys {
            Some(keys) => (
                instance,
                Changed {
                    all: flags.contains('a'),
                    cooldowns: flags.contains('c'),
                    clients: flags.contains('l'),
                    aliases: flags.contains('m'),
                    catalog: flags.contains('g'),
                    keys,
                },
            ),
            None => (instance, Changed::all()),
        }
    }
}

/// What tells the other instances about this one's changes: its name (each
/// ignores its own notifications) and the database. With SQLite (one
/// instance) it tells nobody.
#[derive(Clone)]
pub struct Notifier {
    sender: Option<(super::DbPool, String)>,
}

impl Notifier {
    /// Tells nobody (SQLite, or a test).
    pub fn none() -> Self {
        Notifier { sender: None }
    }

    /// Tells the others on the database of `db`, as `instance`.
    pub fn new(db: super::DbPool, instance: String) -> Self {
        Notifier { sender: Some((db, instance)) }
    }

    /// This instance's name, if it has others to tell.
    pub fn instance(&self) -> Option<&str> {
        self.sender.as_ref().map(|(_, i)| i.as_str())
    }

    /// Tells the other instances what changed (after a write). Blocking: a
    /// database connection; a failure is logged (the others' periodic
    /// reload catches up).
    pub fn tell(&self, change: &Changed) {
        let Some((db, instance)) = &self.sender else { return };
        if change.is_empty() {
            return;
        }
        // A busy database gets two more tries: a lost notification is only
        // caught up by the others' periodic reload.
        for attempt in 1..=3 {
            let sent = db
                .get_timeout(super::CONNECT_WAIT)
                .map_err(super::DbError::from)
                .and_then(|mut c| notify(&mut c, instance, change).map_err(super::DbError::from));
            match sent {
                Ok(()) => return,
                Err(e) if attempt == 3 => log::error!("notify the other instances: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// Tells the other instances what changed in the pool (PostgreSQL only; an
/// SQLite database has one instance). `instance` lets each ignore its own.
pub fn notify(conn: &mut AnyConn, instance: &str, change: &Changed) -> diesel::QueryResult<()> {
    if let AnyConn::Pg(c) = conn {
        diesel::sql_query(format!("SELECT pg_notify('{CHANNEL}', $1)"))
            .bind::<diesel::sql_types::Text, _>(change.payload(instance))
            .execute(c)?;
    }
    Ok(())
}

/// Listens for other instances' changes on a connection of its own, on a
/// thread of its own, until `alive()` says the application is gone. Calls
/// `changed()` (at most once per `poll`, with what the notifications
/// named, and what it answered it could not take the time before) when one arrives, and with "everything" after each reconnection
/// (not the first connection: the pool was just loaded) and every `safety`
/// interval.
pub fn listen(
    url: String,
    instance: String,
    poll: Duration,
    safety: Duration,
    alive: impl Fn() -> bool + Send + 'static,
    changed: impl Fn(Changed) -> Changed + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("pg-listener".into()).spawn(move || {
        let shown = crate::config::without_password(&url);
        let mut backoff = Duration::from_millis(200);
        let mut connected_before = false;
        // Said once per outage, not at every try.
        let mut failing = false;
        while alive() {
            let mut conn = match PgConnection::establish(&url).and_then(|mut c| {
                diesel::sql_query(format!("LISTEN {CHANNEL}"))
                    .execute(&mut c)
                    .map(|_| c)
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
            }) {
                Ok(c) => c,
                Err(e) => {
                    if !failing {
                        log::warn!(
                            "pool changes: cannot listen on {shown}: {e}; trying again every 2 s at most"
                        );
                        failing = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if failing {
                log::info!("pool changes: listening again on {shown}");
                failing = false;
            }
            backoff = Duration::from_millis(200);
            // What was missed while not listening (not at the first
            // connection: the pool was just loaded).
            // What `changed` could not take (the database busy, say): asked again at the next poll.
            let mut retry = Changed::default();
            if connected_before {
                retry = changed(Changed::all());
            }
            connected_before = true;
            let mut last_reload = Instant::now();
            'listening: while alive() {
                let mut heard = std::mem::take(&mut retry);
                for n in conn.notifications_iter() {
                    match n {
                        Ok(n) => {
                            let (sender, change) = Changed::parse(&n.payload);
                            if sender != instance {
                                heard.merge(change);
                            }
                        }
                        Err(e) => {
                            log::warn!("pool changes: the listening connection failed: {e}");
                            break 'listening;
                        }
                    }
                }
                if last_reload.elapsed() >= safety {
                    // The safety reload also proves the connection alive.
                    if diesel::sql_query("SELECT 1").execute(&mut conn).is_err() {
                        break 'listening;
                    }
                    heard = Changed::all();
                }
                if !heard.is_empty() {
                    if heard.all {
                        last_reload = Instant::now();
                    }
                    retry = changed(heard);
                }
                std::thread::sleep(poll);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_what_changed_and_anything_unknown_means_everything() {
        let mut c = Changed::keys([KeyId(3), KeyId(1)]);
        c.merge(Changed::cooldowns());
        let p = c.payload("me");
        assert_eq!(p, "me|c|1,3");
        assert_eq!(Changed::parse(&p), ("me", c));
        assert_eq!(Changed::parse(&Changed::cooldowns().payload("x")), ("x", Changed::cooldowns()));
        assert_eq!(Changed::clients().payload("x"), "x|l|");
        assert_eq!(Changed::parse("x|l|"), ("x", Changed::clients()));
        assert_eq!(Changed::aliases().payload("x"), "x|m|");
        assert_eq!(Changed::parse("x|m|"), ("x", Changed::aliases()));
        assert_eq!(Changed::parse(&Changed::all().payload("x")), ("x", Changed::all()));
        // Too many ids for a payload: everything.
        assert_eq!(Changed::keys((0..1000).map(KeyId)).payload("x"), "x|a|");
        // An older instance's bare name, or garbage: everything.
        assert_eq!(Changed::parse("oldinstance"), ("oldinstance", Changed::all()));
        assert_eq!(Changed::parse("x||1,zz"), ("x", Changed::all()));
        assert!(Changed::default().is_empty() && !Changed::keys([KeyId(1)]).is_empty());
    }
}
