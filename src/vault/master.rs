//! Where the master key comes from: `KEY_ENCRYPTION_KEY` (base64 of 32
//! bytes), `KEY_ENCRYPTION_KEY_FILE`, or, on SQLite with neither, a key file
//! beside the database, generated at the first start (mode 0600).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

/// The owner's 32-byte master key. Never printed; zeroed when dropped.
#[derive(Clone, PartialEq)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        // Best effort: the derived keys live on in the vault.
        for b in self.0.iter_mut() {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A new random key.
    pub fn generate() -> Result<Self, String> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| "no random numbers from the system".to_string())?;
        Ok(MasterKey(bytes))
    }

    /// Base64 (standard or URL-safe, padded or not) of exactly 32 bytes. The
    /// error never quotes the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let text = text.trim();
        let decoded =
            STANDARD.decode(text).or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))).map_err(
                |_| "not base64 (make one with `siliconflow-proxy keys new-encryption-key`)".to_string(),
            )?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|v: Vec<u8>| {
            format!(
                "{} bytes, expected 32 (make one with `siliconflow-proxy keys new-encryption-key`)",
                v.len()
            )
        })?;
        Ok(MasterKey(bytes))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

/// The key the configuration names.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// `KEY_ENCRYPTION_KEY`, already checked.
    Inline(MasterKey),
    /// `KEY_ENCRYPTION_KEY_FILE`: read at start.
    File(PathBuf),
}

/// Where the key in use came from (said in the log and in errors).
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Environment,
    File(PathBuf),
    /// The key file beside the SQLite database; `created` at this start.
    BesideDatabase {
        path: PathBuf,
        created: bool,
    },
    /// An in-memory database keeps its key in memory too.
    Memory,
}

impl Origin {
    pub fn describe(&self) -> String {
        match self {
            Origin::Environment => "KEY_ENCRYPTION_KEY".into(),
            Origin::File(p) => format!("KEY_ENCRYPTION_KEY_FILE ({})", p.display()),
            Origin::BesideDatabase { path, .. } => format!("the key file {}", path.display()),
            Origin::Memory => "a key kept in memory (in-memory database)".into(),
        }
    }
}

/// The key file beside an SQLite database: `proxy.db` -> `proxy.db.key`.
pub fn key_file_beside(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".key");
    db.with_file_name(name)
}

/// Where `keys reencrypt` writes the new key before it replaces the key
/// file: `proxy.db.key` -> `proxy.db.key.new`.
pub fn next_key_file(key_file: &Path) -> PathBuf {
    key_file.with_extension("key.new")
}

/// Reads a key file: base64 of 32 bytes, surrounding whitespace ignored.
pub fn read_key_file(path: &Path) -> Result<MasterKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    MasterKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a new key file that nobody else may read (fails if it exists).
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(format!("{}\n", key.to_base64()).as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(unix)]
fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "{} can be read by other users: `chmod 600` it (it decrypts every pool key)",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_others_can_read(_: &Path) {}

pub const HOW_TO_MAKE_ONE: &str =
    "make one with `siliconflow-proxy keys new-encryption-key` (or `openssl rand -base64 32`)";

/// The master key for this start. `sqlite` is the database file (None: on
/// PostgreSQL); `holds_sealed` says whether the database already holds keys
/// sealed with some key (then a missing key file is an error, not a reason
/// to make a new one).
pub fn resolve(
    source: Option<&KeySource>,
    sqlite: Option<&Path>,
    holds_sealed: impl FnOnce() -> Result<bool, String>,
) -> Result<(MasterKey, Origin), String> {
    match source {
        Some(KeySource::Inline(key)) => return Ok((key.clone(), Origin::Environment)),
        Some(KeySource::File(path)) => {
            warn_if_others_can_read(path);
            return Ok((read_key_file(path)?, Origin::File(path.clone())));
        }
        None => {}
    }
    let Some(db) = sqlite else {
        return Err(format!(
            "KEY_ENCRYPTION_KEY is not set. With PostgreSQL every instance needs the same key to encrypt and read the pool keys: {HOW_TO_MAKE_ONE}, and give it to every instance as KEY_ENCRYPTION_KEY or KEY_ENCRYPTION_KEY_FILE"
        ));
    };
    if db.as_os_str() == ":memory:" {
        return Ok((MasterKey::generate()?, Origin::Memory));
    }
    let path = key_file_beside(db);
    if path.exists() {
        warn_if_others_can_read(&path);
        return Ok((read_key_file(&path)?, Origin::BesideDatabase { path, created: false }));
    }
    if holds_sealed()? {
        return Err(format!(
            "the key file {} is missing, and the database holds pool keys encrypted with it. Put the file back (from the backup you keep with the database), or set KEY_ENCRYPTION_KEY to the key. Nothing was changed",
            path.display()
        ));
    }
    let key = MasterKey::generate()?;
    write_key_file(&path, &key)?;
    Ok((key, Origin::BesideDatabase { path, created: true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_32_bytes_of_base64_and_errors_do_not_quote_it() {
        let key = MasterKey::generate().unwrap();
        assert_eq!(MasterKey::parse(&key.to_base64()).unwrap(), key);
        assert_eq!(MasterKey::parse(&format!("  {}\n", key.to_base64())).unwrap(), key);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let e = MasterKey::parse(&short).unwrap_err();
        assert!(e.contains("16 bytes") && !e.contains(&short), "{e}");
        let e = MasterKey::parse("not a key at all!").unwrap_err();
        assert!(e.contains("not base64") && !e.contains("at all"), "{e}");
        assert_eq!(format!("{key:?}"), "MasterKey(***)");
    }

    #[test]
    fn on_sqlite_a_key_file_is_made_once_beside_the_database_and_only_for_a_database_without_sealed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("proxy.db");
        let (key, origin) = resolve(None, Some(&db), || Ok(false)).unwrap();
        let path = dir.path().join("proxy.db.key");
        assert_eq!(origin, Origin::BesideDatabase { path: path.clone(), created: true });
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, origin) = resolve(None, Some(&db), || Ok(true)).unwrap();
        assert_eq!((again, origin), (key, Origin::BesideDatabase { path: path.clone(), created: false }));
        std::fs::remove_file(&path).unwrap();
        let e = resolve(None, Some(&db), || Ok(true)).unwrap_err();
        assert!(e.contains("is missing") && e.contains("Nothing was changed"), "{e}");
        assert!(!path.exists());
        let e = resolve(None, None, || Ok(false)).unwrap_err();
        assert!(e.contains("KEY_ENCRYPTION_KEY is not set") && e.contains("new-encryption-key"), "{e}");
    }
}
