//! Which instance runs the jobs that must run once (the scheduled refresh):
//! the one holding a PostgreSQL advisory lock, on a connection of its own.
//! If that instance dies, its connection closes, the lock is released, and
//! another takes it at its next try. With SQLite there is one instance: it
//! always leads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl};

/// The advisory lock's key ("SFP" and 2: the migrations hold 1).
const LEADER_LOCK: i64 = 0x5346_5000_0002;

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// Whether this instance leads now (read by the jobs before they run), and
/// whether it is in the running: its contender has a live connection, so it
/// takes the jobs over when the leader goes.
#[derive(Clone, Debug)]
pub struct Leadership {
    leads: Arc<AtomicBool>,
    contending: Arc<AtomicBool>,
}

impl Leadership {
    /// One instance alone (SQLite): it always leads.
    pub fn alone() -> Self {
        Leadership { leads: Arc::new(AtomicBool::new(true)), contending: Arc::new(AtomicBool::new(true)) }
    }

    pub fn leads(&self) -> bool {
        self.leads.load(Ordering::Acquire)
    }

    /// Leads, or would take the lead at its next try if the leader went.
    pub fn contending(&self) -> bool {
        self.contending.load(Ordering::Acquire)
    }

    /// Tries for the lock every `retry`, holds it while `alive()`, and lets
    /// it go (closing its connection) when the application is gone.
    pub fn contend(
        url: String,
        retry: Duration,
        alive: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let me = Leadership {
            leads: Arc::new(AtomicBool::new(false)),
            contending: Arc::new(AtomicBool::new(false)),
        };
        let (leads, contending) = (me.leads.clone(), me.contending.clone());
        std::thread::Builder::new().name("pg-leader".into()).spawn(move || {
            let shown = crate::config::without_password(&url);
            let mut conn: Option<PgConnection> = None;
            let mut failing = false;
            while alive() {
                let held = leads.load(Ordering::Acquire);
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match PgConnection::establish(&url) {
                        Ok(c) => {
                            failing = false;
                            conn.insert(c)
                        }
                        Err(e) => {
                            contending.store(false, Ordering::Release);
                            if !failing {
                                log::warn!("jobs: cannot reach {shown} to take the lead: {e}");
                                failing = true;
                            }
                            std::thread::sleep(retry);
                            continue;
                        }
                    },
                };
                let asked = if held {
                    // Still holding it as long as the session lives.
                    diesel::sql_query("SELECT 1").execute(c).map(|_| true)
                } else {
                    diesel::sql_query(format!("SELECT pg_try_advisory_lock({LEADER_LOCK}) AS locked"))
                        .get_result::<Locked>(c)
                        .map(|l| l.locked)
                };
                // A failed query is not "another instance leads": the
                // connection is dead (the server restarted, say). It is
                // dropped, led or not, and the next try opens a new one.
                let now_held = match asked {
                    Ok(v) => {
                        contending.store(true, Ordering::Release);
                        v
                    }
                    Err(e) => {
                        if !failing {
                            log::warn!("jobs: the connection to {shown} failed ({e}); opening a new one");
                            failing = true;
                        }
                        conn = None;
                        contending.store(false, Ordering::Release);
                        false
                    }
                };
                if now_held != held {
                    log::info!(
                        "jobs: this instance {} the scheduled jobs",
                        if now_held { "now runs" } else { "no longer runs" }
                    );
                    leads.store(now_held, Ordering::Release);
                }
                if held && !now_held {
                    conn = None;
                }
                std::thread::sleep(retry);
            }
            leads.store(false, Ordering::Release);
            contending.store(false, Ordering::Release);
        })?;
        Ok(me)
    }
}
