//! The import workflow: an owner's list of keys becomes one result per piece
//! of it. Repeats and keys already in the pool are duplicates, text that is
//! no key is refused, and every new key is checked against the upstream
//! (bounded concurrency; a 401 on one official host is tried on the other
//! region's before the key is called dead) and then stored by the pool actor.

use std::collections::HashSet;
use std::time::Duration;

use actix::Addr;
use serde::Serialize;

use super::check::{check_key, checked_in_order, read_model_list, CheckOutcome};
use super::{mask_key, AddKeys, AddResult, AddStatus, CheckedKey, PoolActor, PoolShared};
use crate::upstream::other_region;

/// Most keys one import takes.
pub const MAX_IMPORT: usize = 10_000;

/// Splits on newlines, commas, semicolons and white space and trims. Repeats
/// are kept: each piece of the input gets its own line in the answer.
pub fn parse_key_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

fn looks_like_key(k: &str) -> bool {
    k.len() >= 8 && k.len() <= 512 && k.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub added: usize,
    pub duplicates: usize,
    pub invalid: usize,
    pub failed: usize,
    pub results: Vec<AddResult>,
}

/// What an import needs: the pool (to find duplicates and store keys) and
/// how to check a key.
pub struct Importer<'a> {
    pub pool: &'a PoolShared,
    pub actor: &'a Addr<PoolActor>,
    pub client: &'a awc::Client,
    /// The configured upstream origin.
    pub base_url: &'a str,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl Importer<'_> {
    /// Checks each new key against the upstream and stores it. The answer
    /// has one result per piece of the input, in its order.
    pub async fn import(&self, candidates: Vec<String>, label: Option<String>) -> ImportReport {
        let snapshot = self.pool.snapshot();
        let known: HashSet<&str> = snapshot.keys.iter().map(|k| k.secret.as_str()).collect();
        let mut in_this_import = HashSet::new();
        let mut slots: Vec<Option<AddResult>> = Vec::with_capacity(candidates.len());
        let mut to_check = Vec::new();
        for k in candidates {
            let early = if !in_this_import.insert(k.clone()) {
                Some((AddStatus::Duplicate, "repeated in this import"))
            } else if known.contains(k.as_str()) {
                Some((AddStatus::Duplicate, "already in the pool"))
            } else if !looks_like_key(&k) {
                Some((AddStatus::Invalid, "not a key: expected 8-512 printable characters"))
            } else {
                None
            };
            match early {
                Some((status, why)) => {
                    slots.push(Some(AddResult::without_key(mask_key(&k), status, Some(why.into()))))
                }
                None => {
                    to_check.push((slots.len(), k));
                    slots.push(None);
                }
            }
        }
        let (client, base, timeout) = (self.client, self.base_url, self.timeout);
        let endpoints = &self.pool.user_info;
        let checked: Vec<(usize, CheckedKey)> = checked_in_order(
            to_check,
            |_| base.to_string(),
            self.concurrency,
            |(slot, k)| async move {
                let outcome = check_key(client, base, &k, timeout, endpoints).await;
                // Keys belong to one region: a 401 from one official host may be
                // a key of the other. Try it before calling the key dead.
                if let (CheckOutcome::Invalid { .. }, Some(other)) = (&outcome, other_region(base)) {
                    let second = check_key(client, other, &k, timeout, endpoints).await;
                    if matches!(second, CheckOutcome::Valid { .. } | CheckOutcome::Exhausted { .. }) {
                        let key =
                            CheckedKey { secret: k, outcome: second, base_url: Some(other.to_string()) };
                        return (slot, key);
                    }
                }
                (slot, CheckedKey { secret: k, outcome, base_url: None })
            },
        )
        .await;
        // The first key that answered: it reads the model list if none was read yet.
        let lister = checked
            .iter()
            .find(|(_, k)| matches!(k.outcome, CheckOutcome::Valid { .. }))
            .map(|(_, k)| (k.secret.clone(), k.base_url.clone().unwrap_or_else(|| base.to_string())));
        if !checked.is_empty() {
            let (places, keys): (Vec<usize>, Vec<CheckedKey>) = checked.into_iter().unzip();
            let masked: Vec<String> = keys.iter().map(|k| mask_key(&k.secret)).collect();
            let stored = match self.actor.send(AddKeys { keys, label }).await {
                Ok(added) => added,
                Err(e) => {
                    log::error!("import: pool actor unavailable: {e}");
                    Vec::new()
                }
            };
            let mut stored = stored.into_iter();
            for (place, masked) in places.into_iter().zip(masked) {
                slots[place] = Some(stored.next().unwrap_or_else(|| {
                    AddResult::without_key(
                        masked,
                        AddStatus::Failed,
                        Some("not stored: the key pool is unavailable".into()),
                    )
                }));
            }
        }
        // The first keys of a pool: the model list (the metrics' model labels)
        // is read now, so the first calls are counted under their models.
        if let (0, Some((secret, origin))) = (self.pool.served_read_at(), lister) {
            read_model_list(self.pool, client, &origin, &secret, timeout).await;
        }
        let results: Vec<AddResult> = slots.into_iter().flatten().collect();
        let count = |s: AddStatus| results.iter().filter(|r| r.status == s).count();
        ImportReport {
            added: count(AddStatus::Added),
            duplicates: count(AddStatus::Duplicate),
            invalid: count(AddStatus::Invalid),
            failed: count(AddStatus::Failed),
            results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_split_trim_and_dedupe() {
        // Repeats stay: the import answers each piece of its input.
        assert_eq!(parse_key_list(" sk-a\nsk-b, sk-c  sk-a\r\n\n"), vec!["sk-a", "sk-b", "sk-c", "sk-a"]);
        assert!(parse_key_list(" \n ,").is_empty());
        assert!(looks_like_key("sk-abcdefgh"));
        assert!(!looks_like_key("short"));
        assert!(!looks_like_key("sk-abc\u{7}defgh"));
    }
}
