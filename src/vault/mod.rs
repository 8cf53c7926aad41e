//! Pool keys at rest: AES-256-GCM (ring's, the crate rustls already uses)
//! under a key derived from the owner's 32-byte master key, a fresh random
//! nonce per seal and the row id as associated data, so a sealed key moved to
//! another row does not open. Duplicates are found by a keyed hash (HMAC,
//! another derived key), never by the plaintext; admin sessions are tied to
//! the password by a third.
//!
//! Stored form: `enc1:` + base64url(nonce ‖ ciphertext ‖ tag). Anything else
//! in `api_keys.key` is a key stored before encryption, sealed at the next start.

pub mod master;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::{hkdf, hmac};

pub use master::{KeySource, MasterKey};

/// What a sealed value starts with.
pub const SEALED_PREFIX: &str = "enc1:";

/// The value stored in `settings` that proves, at each start, that the key
/// given is the one the stored keys were sealed with.
pub const CHECK_SETTING: &str = "key_encryption_check";
const CHECK_PLAINTEXT: &[u8] = b"siliconflow-proxy key encryption check";
const CHECK_AAD: &[u8] = b"settings:key_encryption_check";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VaultError {
    #[error("not a sealed value")]
    NotSealed,
    #[error("cannot be decrypted with this key (sealed with another key, or altered)")]
    Unreadable,
    #[error("no random numbers from the system")]
    Random,
}

/// The keys derived from the master key. Holds no plaintext pool key.
pub struct Vault {
    seal: LessSafeKey,
    dedupe: hmac::Key,
    sessions: hmac::Key,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

/// The HKDF output length for our two kinds of derived key.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(prk: &hkdf::Prk, purpose: &'static [u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // Expanding 32 bytes from SHA-256 cannot fail (the limit is 255 * 32).
    if let Ok(okm) = prk.expand(&[purpose], Len(32)) {
        let _ = okm.fill(&mut out);
    }
    out
}

impl Vault {
    pub fn new(master: &MasterKey) -> Vault {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"siliconflow-proxy").extract(master.bytes());
        let seal_key = derive(&prk, b"pool keys: AES-256-GCM");
        let seal = match UnboundKey::new(&AES_256_GCM, &seal_key) {
            Ok(k) => LessSafeKey::new(k),
            // 32 bytes is AES-256's length: unreachable.
            Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
        };
        Vault {
            seal,
            dedupe: hmac::Key::new(hmac::HMAC_SHA256, &derive(&prk, b"pool keys: duplicate detection")),
            sessions: hmac::Key::new(hmac::HMAC_SHA256, &derive(&prk, b"admin sessions")),
        }
    }

    fn aad(id: i64) -> String {
        format!("api_keys:{id}")
    }

    /// A pool key sealed for row `id`.
    pub fn seal(&self, id: i64, secret: &str) -> Result<String, VaultError> {
        self.seal_bytes(Self::aad(id).as_bytes(), secret.as_bytes())
    }

    /// The pool key row `id` holds.
    pub fn open(&self, id: i64, stored: &str) -> Result<String, VaultError> {
        let plain = self.open_bytes(Self::aad(id).as_bytes(), stored)?;
        String::from_utf8(plain).map_err(|_| VaultError::Unreadable)
    }

    fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> Result<String, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| VaultError::Random)?;
        let mut buf = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| VaultError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    fn open_bytes(&self, aad: &[u8], stored: &str) -> Result<Vec<u8>, VaultError> {
        let encoded = stored.strip_prefix(SEALED_PREFIX).ok_or(VaultError::NotSealed)?;
        let mut raw = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| VaultError::Unreadable)?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(VaultError::Unreadable);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let plain = self
            .seal
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut raw[NONCE_LEN..])
            .map_err(|_| VaultError::Unreadable)?;
        Ok(plain.to_vec())
    }

    /// The keyed hash that finds a duplicate of `secret` (stored in
    /// `api_keys.key_hash`): equal keys give equal values under one master
    /// key, and without it the value says nothing about the key.
    pub fn fingerprint(&self, secret: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.dedupe, secret.as_bytes()).as_ref())
    }

    /// A short keyed tag of `data` for the admin sessions (the password
    /// they belong to): stored, it tells nothing without the master key.
    pub fn session_tag(&self, data: &[u8]) -> String {
        let tag = hmac::sign(&self.sessions, data);
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
    }

    /// The value kept in `settings` to recognise this key at the next start.
    pub fn check_value(&self) -> Result<String, VaultError> {
        self.seal_bytes(CHECK_AAD, CHECK_PLAINTEXT)
    }

    /// Whether `value` (from `check_value`) was made with this key.
    pub fn is_check_value(&self, value: &str) -> bool {
        self.open_bytes(CHECK_AAD, value).is_ok_and(|p| p == CHECK_PLAINTEXT)
    }
}

/// Whether a stored `api_keys.key` is sealed (else: a plaintext key from
/// before encryption).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(byte: u8) -> Vault {
        Vault::new(&MasterKey::from_bytes([byte; 32]))
    }

    #[test]
    fn a_sealed_key_opens_for_its_row_only_and_with_its_master_key_only() {
        let v = vault(1);
        let sealed = v.seal(7, "sk-secretsecretsecret").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("secret"));
        assert_eq!(v.open(7, &sealed).unwrap(), "sk-secretsecretsecret");
        assert_eq!(v.open(8, &sealed), Err(VaultError::Unreadable));
        assert_eq!(vault(2).open(7, &sealed), Err(VaultError::Unreadable));
        assert_eq!(v.open(7, "sk-plain"), Err(VaultError::NotSealed));
        assert_eq!(v.open(7, "enc1:!!"), Err(VaultError::Unreadable));
        assert_eq!(v.open(7, "enc1:AAAA"), Err(VaultError::Unreadable));
        // A fresh nonce each time: the same key sealed twice differs.
        assert_ne!(v.seal(7, "sk-a").unwrap(), v.seal(7, "sk-a").unwrap());
        // One altered character and it does not open.
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(v.open(7, &String::from_utf8(altered).unwrap()), Err(VaultError::Unreadable));
    }

    #[test]
    fn fingerprints_and_tags_depend_on_the_master_key() {
        let (a, b) = (vault(1), vault(2));
        assert_eq!(a.fingerprint("sk-x"), a.fingerprint("sk-x"));
        assert_ne!(a.fingerprint("sk-x"), a.fingerprint("sk-y"));
        assert_ne!(a.fingerprint("sk-x"), b.fingerprint("sk-x"));
        assert_ne!(a.session_tag(b"p"), b.session_tag(b"p"));
        assert_ne!(a.session_tag(b"p"), a.fingerprint("p"));
        let check = a.check_value().unwrap();
        assert!(a.is_check_value(&check));
        assert!(!b.is_check_value(&check));
        assert!(!a.is_check_value("sk-plain"));
    }
}
