//! The admin's credentials and the guard on guessing them, below the admin
//! pages that use them: ADMIN_PASSWORD in plaintext or as an argon2 PHC
//! string, or (when unset) an argon2 hash kept in the database: a random
//! password generated at first start and printed once, or the one the owner
//! set with `siliconflow-proxy admin set-password`. At most two argon2
//! checks run at once, and failed logins are throttled per client address.
//!
//! Sessions belong to the password they were opened under (a keyed tag,
//! `generation`): a changed ADMIN_PASSWORD ends them at the next start, and
//! `set-password` deletes them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::db::queries::{logins, sessions, settings};
use crate::db::{DbError, DbPool};
use crate::vault::Vault;

/// The stored password's argon2 hash (generated or set).
pub const STORED_HASH: &str = "admin_password_hash";
/// Present once the owner has set the stored password (`set-password`).
const STORED_CHOSEN: &str = "admin_password_chosen";

#[derive(Clone)]
enum Secret {
    Plain(String),
    Hash(String),
    /// The hash in `settings`, read at each check: `set-password` run while
    /// the proxy serves takes effect at once, on every instance.
    Stored(DbPool),
}

#[derive(Clone)]
pub struct AdminCredentials {
    pub username: String,
    secret: Secret,
    /// True while the password is the generated one (the dashboard warns).
    generated: Arc<AtomicBool>,
    /// The tag this password's sessions carry.
    generation: Arc<str>,
    /// argon2 checks running now (each takes tens of ms of a core).
    hashing: Arc<AtomicUsize>,
}

/// argon2 checks allowed at once; more get "busy" (429) rather than queue up
/// and burn every core.
const MAX_CONCURRENT_HASHES: usize = 2;

/// What a password check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    Yes,
    No,
    /// Not checked: too many argon2 checks are running.
    Busy,
}

/// A running argon2 check's slot.
struct HashSlot(Arc<AtomicUsize>);

impl HashSlot {
    fn take(counter: &Arc<AtomicUsize>) -> Option<HashSlot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONCURRENT_HASHES).then_some(n + 1)
            })
            .ok()
            .map(|_| HashSlot(counter.clone()))
    }
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AdminCredentials {
    /// The credentials at start; the sessions of any other password end.
    pub fn init(config: &Config, db: &DbPool, vault: &Vault) -> Result<Self, DbError> {
        let username = config.admin_username.clone();
        let mut conn = db.get()?;
        let (secret, generated, generation) = match &config.admin_password {
            Some(p) => {
                let secret = if p.starts_with("$argon2") {
                    PasswordHash::new(p).map_err(|e| {
                        DbError::Setup(format!(
                            "ADMIN_PASSWORD looks like an argon2 hash but is not valid: {e}"
                        ))
                    })?;
                    Secret::Hash(p.clone())
                } else {
                    Secret::Plain(p.clone())
                };
                let tag = vault.session_tag(format!("environment\0{username}\0{p}").as_bytes());
                (secret, false, tag)
            }
            None => {
                let (stored, chosen) = read_stored(&mut conn)?;
                if stored.is_some() {
                    if !chosen {
                        log::warn!("ADMIN_PASSWORD is not set: using the password generated at first start (printed in the log then; `siliconflow-proxy admin set-password` sets another)");
                    }
                } else {
                    let password = Alphanumeric.sample_string(&mut rand::rng(), 20);
                    let hash = hash_password(&password).map_err(DbError::Setup)?;
                    settings::set(&mut conn, STORED_HASH, &hash)?;
                    // Printed once, on purpose: this is the only way the owner learns it.
                    log::warn!(
                        "ADMIN_PASSWORD is not set: generated an admin password. Log in as '{username}' with password: {password}  (shown only this once; `siliconflow-proxy admin set-password` or ADMIN_PASSWORD sets your own)"
                    );
                }
                // `set-password` ends the sessions itself; this tag changes
                // with the user name and with a move to ADMIN_PASSWORD and back.
                let tag = vault.session_tag(format!("stored\0{username}").as_bytes());
                (Secret::Stored(db.clone()), !chosen, tag)
            }
        };
        let ended = sessions::delete_other_generations(&mut conn, &generation)?;
        if ended > 0 {
            log::info!("the admin password changed: {ended} admin sessions ended");
        }
        Ok(AdminCredentials {
            username,
            secret,
            generated: Arc::new(AtomicBool::new(generated)),
            generation: generation.into(),
            hashing: Arc::default(),
        })
    }

    /// Whether the password is still the one generated at first start.
    pub fn generated(&self) -> bool {
        self.generated.load(Ordering::Relaxed)
    }

    /// The tag of this password's sessions.
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// Checks a login (blocking: argon2, and for the stored password one
    /// database read).
    pub fn verify(&self, username: &str, password: &str) -> bool {
        self.verify_stored(username, password).0
    }

    /// As `verify`, with the stored hash that said yes (the stored password's
    /// case): a session is opened only while that hash is still the one
    /// stored, so a login that raced `set-password` does not outlive it.
    fn verify_stored(&self, username: &str, password: &str) -> (bool, Option<String>) {
        let user_ok: bool = username.as_bytes().ct_eq(self.username.as_bytes()).into();
        let argon = |h: &str| {
            PasswordHash::new(h)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        };
        let (pass_ok, stored) = match &self.secret {
            Secret::Plain(p) => (password.as_bytes().ct_eq(p.as_bytes()).into(), None),
            Secret::Hash(h) => (argon(h), None),
            Secret::Stored(db) => match db
                .get_timeout(crate::db::CONNECT_WAIT)
                .map_err(DbError::from)
                .and_then(|mut c| read_stored(&mut c))
            {
                Ok((Some(hash), chosen)) => {
                    self.generated.store(!chosen, Ordering::Relaxed);
                    (argon(&hash), Some(hash))
                }
                Ok((None, _)) => (false, None),
                Err(e) => {
                    log::error!("admin login: cannot read the stored password: {e}");
                    (false, None)
                }
            },
        };
        (user_ok & pass_ok, stored)
    }

    /// Verifies on the blocking pool: an argon2 check takes tens of
    /// milliseconds, which must not stall a worker that also serves `/v1`;
    /// at most `MAX_CONCURRENT_HASHES` at once.
    pub async fn verify_off_thread(&self, username: String, password: String) -> Verified {
        self.verify_login(username, password).await.0
    }

    /// As `verify_off_thread`, with the stored hash that said yes (for
    /// `session::create`, which opens the session only while it is stored).
    pub async fn verify_login(&self, username: String, password: String) -> (Verified, Option<String>) {
        let yes_no = |ok| if ok { Verified::Yes } else { Verified::No };
        if let Secret::Plain(_) = self.secret {
            return (yes_no(self.verify(&username, &password)), None);
        }
        let Some(slot) = HashSlot::take(&self.hashing) else { return (Verified::Busy, None) };
        let me = self.clone();
        let (ok, stored) = actix_web::web::block(move || me.verify_stored(&username, &password))
            .await
            .unwrap_or((false, None));
        drop(slot);
        (yes_no(ok), stored)
    }
}

/// The stored password's hash, and whether the owner chose it (else it is
/// the generated one).
fn read_stored(conn: &mut crate::db::AnyConn) -> Result<(Option<String>, bool), DbError> {
    Ok((settings::get(conn, STORED_HASH)?, settings::get(conn, STORED_CHOSEN)?.is_some()))
}

/// `siliconflow-proxy admin set-password`: stores the new password's argon2
/// hash and ends every session, in one transaction. Returns the sessions ended.
pub fn set_stored_password(db: &DbPool, password: &str) -> Result<usize, DbError> {
    let hash = hash_password(password).map_err(DbError::Setup)?;
    let mut conn = db.get()?;
    diesel::Connection::transaction::<_, DbError, _>(&mut *conn, |conn| {
        settings::set(conn, STORED_HASH, &hash)?;
        settings::set(conn, STORED_CHOSEN, &crate::db::now_ms().to_string())?;
        sessions::delete_all(conn)
    })
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the admin password: {e}"))
}

pub fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Failed logins per client address in a sliding minute. A password check
/// reserves its place before it runs, so the limit holds for guesses that
/// arrive at once: at most `max` checks per address per window, counting the
/// ones still running.
pub struct Throttle {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    running: u32,
    since: Instant,
}

/// One password check's place in the throttle. Ends as a failure (counted),
/// a success (the address's slate wiped), or unfinished (not counted).
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    ip: IpAddr,
}

impl Attempt<'_> {
    pub fn fail(self) {
        self.throttle.settle(self.ip, Some(false));
        std::mem::forget(self);
    }

    pub fn succeed(self) {
        self.throttle.settle(self.ip, Some(true));
        std::mem::forget(self);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.throttle.settle(self.ip, None);
    }
}

impl Throttle {
    pub fn new(max: u32) -> Self {
        Throttle { max, window: Duration::from_secs(60), entries: Mutex::new(HashMap::new()) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one password check, or `Err(seconds to wait)`.
    pub fn begin(&self, ip: IpAddr) -> Result<Attempt<'_>, u64> {
        let mut map = self.map();
        if map.len() > 10_000 {
            let window = self.window;
            map.retain(|_, e| e.running > 0 || e.since.elapsed() < window);
        }
        let e = map.entry(ip).or_insert(Entry { failures: 0, running: 0, since: Instant::now() });
        if e.since.elapsed() >= self.window && e.running == 0 {
            *e = Entry { failures: 0, running: 0, since: Instant::now() };
        }
        if e.failures + e.running >= self.max {
            return Err(self.window.saturating_sub(e.since.elapsed()).as_secs().max(1));
        }
        e.running += 1;
        Ok(Attempt { throttle: self, ip })
    }

    fn settle(&self, ip: IpAddr, outcome: Option<bool>) {
        let mut map = self.map();
        let Some(e) = map.get_mut(&ip) else { return };
        e.running = e.running.saturating_sub(1);
        match outcome {
            Some(true) => {
                map.remove(&ip);
            }
            Some(false) => {
                if e.failures == 0 {
                    e.since = Instant::now();
                }
                e.failures += 1;
            }
            None => {}
        }
    }
}

/// One password check's places: in this instance's throttle, and in the
/// count that every instance on the database shares (wrong passwords on one
/// instance count on the others). Settled like `Attempt`: a failure stays
/// counted, a success wipes the address's slate, and a check not made (the
/// request dropped, a bad form, too busy) is taken back.
pub struct LoginAttempt<'a> {
    local: Option<Attempt<'a>>,
    shared: Option<(DbPool, String)>,
}

impl Throttle {
    /// A place for one password check from `ip`, here and in the shared
    /// count, or `Err(seconds to wait)`. With the database out of reach the
    /// instance's own count still holds.
    pub async fn begin_shared(&self, db: &DbPool, ip: IpAddr) -> Result<LoginAttempt<'_>, u64> {
        let local = self.begin(ip)?;
        let (address, now, window) = (ip.to_string(), crate::db::now_ms(), self.window.as_millis() as i64);
        let max = self.max;
        let counted = {
            let address = address.clone();
            crate::db::run(db, move |c| logins::reserve(c, &address, now, window)).await
        };
        match counted {
            Ok((n, start)) if n.max(0) as u32 > max => {
                release(db.clone(), address);
                Err(((start + window - now) / 1000).max(1) as u64)
            }
            Ok(_) => Ok(LoginAttempt { local: Some(local), shared: Some((db.clone(), address)) }),
            Err(e) => {
                log::warn!(
                    "login throttle: the shared count is out of reach ({e}); this instance's count holds"
                );
                Ok(LoginAttempt { local: Some(local), shared: None })
            }
        }
    }
}

/// Takes back a reserved check, off the caller's thread.
fn release(db: DbPool, address: String) {
    let spawned = std::thread::Builder::new().name("login-release".into()).spawn(move || {
        if let Err(e) = db.get().map_err(DbError::from).and_then(|mut c| logins::release(&mut c, &address)) {
            log::warn!("login throttle: cannot take back a check not made: {e}");
        }
    });
    if let Err(e) = spawned {
        log::warn!("login throttle: cannot take back a check not made: {e}");
    }
}

impl LoginAttempt<'_> {
    pub async fn fail(mut self) {
        if let Some(a) = self.local.take() {
            a.fail();
        }
        // Stays counted in the shared table.
        self.shared = None;
    }

    pub async fn succeed(mut self) {
        if let Some(a) = self.local.take() {
            a.succeed();
        }
        if let Some((db, address)) = self.shared.take() {
            if let Err(e) = crate::db::run(&db, move |c| logins::clear(c, &address)).await {
                log::warn!("login throttle: cannot clear the shared count: {e}");
            }
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if let Some((db, address)) = self.shared.take() {
            release(db, address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_passwords_verify() {
        let plain = AdminCredentials {
            username: "admin".into(),
            secret: Secret::Plain("pw".into()),
            generated: Arc::default(),
            generation: "".into(),
            hashing: Arc::default(),
        };
        assert!(plain.verify("admin", "pw"));
        assert!(!plain.verify("admin", "pw2"));
        assert!(!plain.verify("root", "pw"));
        let hashed = AdminCredentials {
            username: "admin".into(),
            secret: Secret::Hash(hash_password("s3cret").unwrap()),
            generated: Arc::default(),
            generation: "".into(),
            hashing: Arc::default(),
        };
        assert!(hashed.verify("admin", "s3cret"));
        assert!(!hashed.verify("admin", "s3cre"));
    }

    #[test]
    fn at_most_two_hashes_run_at_once() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = HashSlot::take(&counter).unwrap();
        let b = HashSlot::take(&counter).unwrap();
        assert!(HashSlot::take(&counter).is_none());
        drop(a);
        assert!(HashSlot::take(&counter).is_some());
        drop(b);
    }

    #[test]
    fn throttle_allows_max_failures_a_minute() {
        let t = Throttle::new(3);
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            t.begin(ip).unwrap().fail();
        }
        let wait = t.begin(ip).err().unwrap();
        assert!((1..=60).contains(&wait));
        assert!(t.begin(IpAddr::from([10, 0, 0, 2])).is_ok(), "per address");
        t.map().get_mut(&ip).unwrap().failures = 2;
        t.begin(ip).unwrap().succeed();
        for _ in 0..3 {
            t.begin(ip).unwrap().fail();
        }
        assert!(t.begin(ip).is_err(), "a success wiped the slate: three more failures were allowed");
    }

    #[test]
    fn checks_running_at_once_count_against_the_limit() {
        let t = Throttle::new(3);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let running: Vec<_> = (0..3).map(|_| t.begin(ip).unwrap()).collect();
        assert!(t.begin(ip).is_err(), "a fourth check while three run");
        drop(running); // unfinished: not counted as failures
        let a = t.begin(ip).unwrap();
        let b = t.begin(ip).unwrap();
        a.fail();
        b.fail();
        let third = t.begin(ip).unwrap();
        assert!(t.begin(ip).is_err(), "two failures and one running use up three");
        drop(third);
    }
}
