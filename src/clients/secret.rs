//! Client secrets: made here, shown once, stored only as a hash.

use blake2::{Blake2b512, Digest};

/// A client key's hash: what is stored, and what the request path looks up.
pub fn key_hash(secret: &str) -> [u8; 32] {
    let digest = Blake2b512::digest(secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    out
}

pub fn key_hash_hex(secret: &str) -> String {
    key_hash(secret).iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new client secret: `sk-` and 48 letters and digits (285 bits).
pub fn new_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("sk-{}", Alphanumeric.sample_string(&mut rand::rng(), 48))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = key_hash_hex("sk-abc");
        assert_eq!(from_hex(&h), Some(key_hash("sk-abc")));
        assert_eq!(from_hex("zz"), None);
        let s = new_secret();
        assert!(s.starts_with("sk-") && s.len() == 51);
    }
}
