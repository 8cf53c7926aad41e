//! The operator's commands, run by the same binary (`main.rs` parses them):
//! `admin set-password`, `keys reencrypt`, `keys new-encryption-key`,
//! `connect AGENT`. Each returns the text to print, or an error that says
//! what to do.

use std::io::{BufRead, IsTerminal, Write};

use crate::config::Config;
use crate::db::queries::keys;
use crate::db::{self, DbError};
use crate::vault::master::{self, MasterKey, Origin};
use crate::vault::Vault;

/// A command that did not run: the message, and whether it was refused
/// (exit 2: nothing was tried) or failed (exit 1).
#[derive(Debug)]
pub struct Failed {
    pub message: String,
    pub refused: bool,
}

impl Failed {
    fn refused(message: impl Into<String>) -> Self {
        Failed { message: message.into(), refused: true }
    }
    fn error(message: impl Into<String>) -> Self {
        Failed { message: message.into(), refused: false }
    }
}

impl From<DbError> for Failed {
    fn from(e: DbError) -> Self {
        Failed::error(e.to_string())
    }
}

pub const MIN_PASSWORD_CHARS: usize = 8;

/// `admin set-password`: the new password from standard input (asked twice,
/// unechoed, on a terminal; else its first line), stored as an argon2 hash;
/// every admin session ends. Refused while ADMIN_PASSWORD is set: that one
/// would still be the password.
pub fn set_password(config: &Config) -> Result<String, Failed> {
    if config.admin_password.is_some() {
        return Err(Failed::refused(
            "ADMIN_PASSWORD is set (in the environment or .env), and it is the admin password: one set here would not be used. Change ADMIN_PASSWORD instead (every session ends at the next start), or remove it and run this again.",
        ));
    }
    let password = read_new_password()?;
    let db = db::open(&config.database)?;
    let ended = crate::credentials::set_stored_password(&db, &password)?;
    Ok(format!(
        "The admin password of '{}' is set; {ended} admin session(s) ended. Running instances take it at the next login.",
        config.admin_username
    ))
}

fn read_new_password() -> Result<String, Failed> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = read_unechoed("New admin password: ")?;
        let again = read_unechoed("The same again: ")?;
        if first != again {
            return Err(Failed::refused("the two passwords differ; nothing was changed"));
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failed::error(format!("cannot read standard input: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(Failed::refused(format!(
            "the new password must have at least {MIN_PASSWORD_CHARS} characters (give it on standard input: `echo 'new password' | siliconflow-proxy admin set-password`); nothing was changed"
        )));
    }
    if chars > 1024 {
        return Err(Failed::refused("the new password is longer than 1024 characters; nothing was changed"));
    }
    Ok(password)
}

/// One line from the terminal with echo off.
fn read_unechoed(prompt: &str) -> Result<String, Failed> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    let saved = {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut term: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut term) } == 0 {
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &term) };
            Some(saved)
        } else {
            None
        }
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    #[cfg(unix)]
    if let Some(saved) = saved {
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read.map_err(|e| Failed::error(format!("cannot read the terminal: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `keys new-encryption-key`: 32 random bytes in base64, for KEY_ENCRYPTION_KEY.
pub fn new_encryption_key() -> Result<String, Failed> {
    MasterKey::generate().map(|k| k.to_base64()).map_err(Failed::error)
}

/// `keys reencrypt`: every stored key moves from the key in use to
/// `KEY_ENCRYPTION_KEY_NEW`, in one transaction; a wrong current key changes
/// nothing. The key file beside an SQLite database is replaced by the new
/// key once the database has committed; a key given in the environment is
/// the owner's to replace.
pub fn reencrypt(config: &Config, new_key: Option<String>) -> Result<String, Failed> {
    let Some(new_key) = new_key.filter(|k| !k.trim().is_empty()) else {
        return Err(Failed::refused(format!(
            "KEY_ENCRYPTION_KEY_NEW is not set: set it to the new key ({}) and run this again",
            master::HOW_TO_MAKE_ONE
        )));
    };
    let new_key =
        MasterKey::parse(&new_key).map_err(|e| Failed::refused(format!("KEY_ENCRYPTION_KEY_NEW: {e}")))?;
    let db = db::open(&config.database)?;
    let (old_key, origin) = crate::startup::master_key(config, &db).map_err(Failed::refused)?;
    if old_key == new_key {
        return Err(Failed::refused("KEY_ENCRYPTION_KEY_NEW is the key in use; nothing to do"));
    }
    let (old, new) = (Vault::new(&old_key), Vault::new(&new_key));
    // The new key file is written before the database changes and takes the
    // old one's place only after: a crash between leaves both keys on disk.
    let key_file = match &origin {
        Origin::BesideDatabase { path, .. } => {
            let next = master::next_key_file(path);
            let _ = std::fs::remove_file(&next);
            master::write_key_file(&next, &new_key).map_err(Failed::error)?;
            Some((path.clone(), next))
        }
        _ => None,
    };
    let mut conn = db.get().map_err(DbError::from)?;
    let moved = match keys::reencrypt(&mut conn, &old, &new) {
        Ok(n) => n,
        Err(e) => {
            if let Some((_, next)) = &key_file {
                let _ = std::fs::remove_file(next);
            }
            return Err(match e {
                DbError::Sealed(why) => Failed::refused(format!(
                    "the current key, from {}: {why}; nothing was changed",
                    origin.describe()
                )),
                e => Failed::error(format!("{e}; nothing was changed")),
            });
        }
    };
    match key_file {
        Some((path, next)) => {
            std::fs::rename(&next, &path).map_err(|e| {
                Failed::error(format!(
                    "{moved} keys re-encrypted, but the key file could not be replaced ({e}): move {} to {} by hand before the next start",
                    next.display(),
                    path.display()
                ))
            })?;
            Ok(format!(
                "{moved} pool keys re-encrypted; {} now holds the new key (back it up with the database). Admin sessions ended.",
                path.display()
            ))
        }
        None => Ok(format!(
            "{moved} pool keys re-encrypted. Give every instance the new key as KEY_ENCRYPTION_KEY (or in the file KEY_ENCRYPTION_KEY_FILE names) and remove KEY_ENCRYPTION_KEY_NEW before they start again. Admin sessions ended."
        )),
    }
}

/// The model `connect` names when none is asked for.
pub const CONNECT_MODEL: &str = "deepseek-ai/DeepSeek-V3.2";

/// `connect AGENT`: what the agent needs (see `connect`), with the model's
/// window from the catalog: the one this proxy's database holds when it is
/// here (SQLite's file exists, or PostgreSQL answers), else the shipped one
/// and `MODEL_CATALOG_FILE`'s entries over it.
pub fn connect(
    config: &Config,
    agent: &str,
    model: Option<String>,
    url: Option<String>,
    key: Option<String>,
) -> Result<String, Failed> {
    use crate::connect::{render, Agent, Options};
    let names = Agent::ALL.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ");
    let agent =
        Agent::parse(agent).ok_or_else(|| Failed::refused(format!("no agent {agent:?}: one of {names}")))?;
    let model = model.unwrap_or_else(|| CONNECT_MODEL.to_string());
    let url = url.unwrap_or_else(|| {
        let host =
            if config.host == "0.0.0.0" || config.host == "::" { "127.0.0.1" } else { config.host.as_str() };
        format!("http://{host}:{}", config.port)
    });
    let entry = catalog_entry(config, &model);
    if entry.is_none() {
        eprintln!("note: {model} is not in the model catalog: its window is left for you to set");
    }
    render(agent, &Options { url, key, model }, entry.as_ref()).map_err(Failed::refused)
}

/// The catalog's entry for `model` (an alias: its target's), as `connect` finds it.
fn catalog_entry(config: &Config, model: &str) -> Option<crate::catalog::Entry> {
    let here = match &config.database {
        crate::config::Database::Sqlite(path) => path.exists(),
        crate::config::Database::Postgres(_) => true,
    };
    let db = if here { db::open(&config.database).ok() } else { None };
    let target = db
        .as_ref()
        .and_then(|db| crate::aliases::AliasTable::load(db, None).ok())
        .map(|a| a.snapshot().resolve(model).model.to_string())
        .unwrap_or_else(|| model.to_string());
    let table = match &db {
        Some(db) => crate::catalog::CatalogTable::load(db, None).ok(),
        None => None,
    };
    match table {
        Some(t) => t.snapshot().get(&target).map(|e| (**e).clone()),
        None => {
            let shipped = &crate::catalog::shipped().1;
            let file = config.model_catalog_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
            let patches: Vec<crate::catalog::Patch> = file
                .and_then(|t| crate::catalog::parse_file(&t).ok())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| {
                    let id = v.get("id")?.as_str()?.to_string();
                    let fields = v.as_object()?.clone();
                    Some(crate::catalog::Patch { id, fields })
                })
                .collect();
            crate::catalog::Catalog::build(shipped, &patches).get(&target).map(|e| (**e).clone())
        }
    }
}
