//! Row types. Reads (`Queryable`) and writes (`Insertable`) are separate structs,
//! as in lemmy and vaultwarden, so that ids and defaults stay the database's.

use crate::ids::{ClientId, KeyId};
use diesel::prelude::*;
use serde::Serialize;

use super::schema::{api_keys, client_leases, clients, cooldowns, request_logs, resources, usage_hourly};

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct KeyRow {
    pub id: i64,
    /// The key itself once read through `queries::keys` (stored sealed).
    #[diesel(column_name = sealed_key)]
    pub key: String,
    pub state: String,
    pub balance: Option<f64>,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub base_url: Option<String>,
    pub usage_count: i64,
    pub last_used: Option<i64>,
    pub last_checked: Option<i64>,
    pub last_error: Option<String>,
    pub state_changed_at: Option<i64>,
    pub created_at: i64,
    pub gift_balance: Option<f64>,
    pub charge_balance: Option<f64>,
    /// The account the owner put this key in, when the upstream names none.
    pub account_label: Option<String>,
}

impl KeyRow {
    pub fn key_id(&self) -> KeyId {
        KeyId(self.id)
    }

    /// The account whose cooldowns, resources and funds this key shares: the
    /// upstream's id when known, else the owner's label, else the key alone.
    pub fn account_key(&self) -> String {
        account_key(self.account_id.as_deref(), self.account_label.as_deref(), self.key_id())
    }
}

/// See `KeyRow::account_key`.
pub fn account_key(account_id: Option<&str>, label: Option<&str>, key_id: KeyId) -> String {
    match (account_id, label) {
        (Some(a), _) if !a.is_empty() => a.to_string(),
        (_, Some(l)) if !l.is_empty() => format!("{LABEL_PREFIX}{l}"),
        _ => format!("{OWN_PREFIX}{key_id}"),
    }
}

const LABEL_PREFIX: &str = "label:";
const OWN_PREFIX: &str = "key:";

/// Whether an account (as `account_key` names it) is a key on its own: no
/// other key shares its cooldowns, resources or funds.
pub fn is_own_account(account: &str) -> bool {
    account.starts_with(OWN_PREFIX)
}

/// Whether an account is the upstream's (not a key alone, nor the owner's label).
pub fn is_upstream_account(account: &str) -> bool {
    !is_own_account(account) && !account.starts_with(LABEL_PREFIX)
}

#[derive(Clone, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewKey {
    /// Given (`queries::keys::reserve_ids`) so the key is sealed with it.
    pub id: Option<i64>,
    #[diesel(column_name = sealed_key)]
    pub key: String,
    pub state: String,
    pub balance: Option<f64>,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub base_url: Option<String>,
    pub gift_balance: Option<f64>,
    pub charge_balance: Option<f64>,
    pub account_label: Option<String>,
    pub last_checked: Option<i64>,
    pub last_error: Option<String>,
    pub state_changed_at: Option<i64>,
    pub created_at: i64,
    /// Set by `queries::keys::insert` (the keyed hash of `key`).
    pub key_hash: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = cooldowns)]
pub struct CooldownRow {
    pub account: String,
    pub model: String,
    pub until_ms: i64,
    pub strikes: i32,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = request_logs)]
pub struct LogRow {
    pub id: i64,
    pub created_at: i64,
    pub key_id: Option<i64>,
    pub key_masked: String,
    pub model: String,
    pub endpoint: String,
    pub status: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub stream: bool,
    pub aborted: bool,
    pub attempts: i32,
    pub error: Option<String>,
    pub client: Option<String>,
    /// The name the caller asked for, when an alias changed it.
    pub requested_model: Option<String>,
    /// Set while the call runs (an `in flight` row written before its end).
    #[serde(skip)]
    pub call_id: Option<String>,
    /// The tokens were estimated here: the call was cut before its usage came.
    pub usage_estimated: bool,
}

/// Text as a column stores it: at most `max` bytes (cut at a character
/// boundary), with NUL and the other control characters but tab and line
/// ends replaced by U+FFFD. PostgreSQL refuses a NUL in text ("invalid byte
/// sequence for encoding UTF8: 0x00"), and a refused row would hold back
/// every row of its batch; the rest would reach the admin pages and the CSV
/// as they came. Every text of a log row passes through here. Costs a scan
/// when the text is clean, as it nearly always is.
pub fn column_text(mut s: String, max: usize) -> String {
    let unclean = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
    // Bytes first (what nearly every text is): a control character is a
    // byte below 0x20, DEL, or (C1) one that starts with 0xC2.
    // (Tab and line ends pass the test here and are let through below.)
    let suspect = s.as_bytes().iter().fold(false, |seen, &b| seen | (b < 0x20) | (b == 0x7f) | (b == 0xc2));
    if suspect && s.chars().any(unclean) {
        s = s.chars().map(|c| if unclean(c) { char::REPLACEMENT_CHARACTER } else { c }).collect();
    }
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[derive(Debug, Clone, Insertable, AsChangeset, PartialEq)]
#[diesel(table_name = request_logs, treat_none_as_null = true)]
pub struct NewLog {
    pub created_at: i64,
    pub key_id: Option<i64>,
    pub key_masked: String,
    pub model: String,
    pub endpoint: String,
    pub status: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub stream: bool,
    pub aborted: bool,
    pub attempts: i32,
    pub error: Option<String>,
    pub client: Option<String>,
    /// The name the caller asked for, when an alias changed it.
    pub requested_model: Option<String>,
    /// An in-flight row (written before the call's end), or the end of a
    /// call written so: its row is then filled in, not inserted.
    pub call_id: Option<String>,
    /// The tokens were estimated here: the call was cut before its usage came.
    pub usage_estimated: bool,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = resources)]
pub struct ResourceRow {
    pub kind: String,
    pub resource_id: String,
    pub key_id: i64,
    pub account: Option<String>,
    pub created_at: i64,
    /// The client that created it (0: API_KEY's; `None`: an open proxy's).
    pub client_id: Option<i64>,
    /// A batch input file's lines.
    pub lines: Option<i64>,
    /// A batch's tokens, once reported and recorded.
    pub tokens: Option<i64>,
}

/// Never prints the secret.
impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("id", &self.id)
            .field("key", &crate::upstream::mask_key(&self.key))
            .field("state", &self.state)
            .field("balance", &self.balance)
            .field("account_id", &self.account_id)
            .finish()
    }
}

#[derive(Debug, Clone, Default, Insertable)]
#[diesel(table_name = usage_hourly)]
pub struct UsageRow {
    pub hour: i64,
    pub model: String,
    pub key_id: i64,
    pub calls: i32,
    pub errors: i32,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub latency_ms: i32,
}

#[cfg(test)]
mod tests {
    #[test]
    fn column_text_replaces_control_characters_and_bounds_at_a_character() {
        use super::column_text;
        assert_eq!(column_text("Qwen/x\u{0}y".into(), 256), "Qwen/x\u{FFFD}y");
        assert_eq!(column_text("a\u{1b}[31mb\u{7f}\u{85}".into(), 256), "a\u{FFFD}[31mb\u{FFFD}\u{FFFD}");
        assert_eq!(column_text("line\nnext\ttab\r".into(), 256), "line\nnext\ttab\r");
        assert_eq!(column_text("ééé".into(), 3), "é", "cut at a character boundary");
        assert_eq!(column_text("\u{0}\u{0}".into(), 4), "\u{FFFD}", "bounded after the replacement");
    }
}

impl ClientRow {
    pub fn client_id(&self) -> ClientId {
        ClientId(self.id)
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = clients)]
pub struct ClientRow {
    pub id: i64,
    pub name: String,
    pub key_hash: String,
    pub key_hint: String,
    /// A JSON array of model names and `prefix/*` patterns; NULL = every model.
    pub models: Option<String>,
    pub rpm: Option<i32>,
    pub daily_requests: Option<i64>,
    pub daily_tokens: Option<i64>,
    pub expires_at: Option<i64>,
    pub enabled: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = clients, treat_none_as_null = true)]
pub struct ClientFields {
    pub name: String,
    pub models: Option<String>,
    pub rpm: Option<i32>,
    pub daily_requests: Option<i64>,
    pub daily_tokens: Option<i64>,
    pub expires_at: Option<i64>,
    pub enabled: bool,
}

/// One instance's lease of one client's budget for one period (see
/// `clients::lease`).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = client_leases)]
pub struct LeaseRow {
    pub client_id: i64,
    pub budget: String,
    pub period: i64,
    pub instance: String,
    pub granted: i64,
    pub used: i64,
    pub active: bool,
    pub short_at: i64,
    pub updated_at: i64,
}
