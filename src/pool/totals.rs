//! The pool's money as one account: each account's balance counted once,
//! unknown balances kept apart from known ones (unknown is not zero).

use std::collections::HashMap;

use crate::db::models::KeyRow;

#[derive(Debug, Default, PartialEq)]
pub struct PoolTotals {
    /// Sum of the known balances; `None` when no account's balance is known.
    pub total: Option<f64>,
    pub gift: Option<f64>,
    pub charge: Option<f64>,
    pub accounts: usize,
    /// Accounts whose balance is known, and those whose balance is not.
    pub known_accounts: usize,
    pub unknown_accounts: usize,
    pub keys: usize,
    pub usable_keys: usize,
}

fn add(sum: &mut Option<f64>, v: Option<f64>) {
    if let Some(v) = v {
        *sum = Some(sum.unwrap_or(0.0) + v);
    }
}

/// Keys of one account share one balance: count each account once (its
/// freshest figure), skipping invalid and disabled keys.
pub fn totals(rows: &[KeyRow]) -> PoolTotals {
    let mut per_account: HashMap<String, &KeyRow> = HashMap::new();
    let mut t = PoolTotals { keys: rows.len(), ..Default::default() };
    for r in rows {
        if r.state == "invalid" || r.state == "disabled" {
            continue;
        }
        if r.state == "active" {
            t.usable_keys += 1;
        }
        let e = per_account.entry(r.account_key()).or_insert(r);
        if r.last_checked.unwrap_or(0) > e.last_checked.unwrap_or(0) {
            *e = r;
        }
    }
    t.accounts = per_account.len();
    for r in per_account.values() {
        match r.balance {
            Some(_) => t.known_accounts += 1,
            None => t.unknown_accounts += 1,
        }
        add(&mut t.total, r.balance);
        add(&mut t.gift, r.gift_balance);
        add(&mut t.charge, r.charge_balance);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, account: Option<&str>, state: &str, balance: Option<f64>, checked: i64) -> KeyRow {
        KeyRow {
            id,
            key: format!("sk-{id}"),
            state: state.into(),
            balance,
            account_id: account.map(str::to_string),
            account_name: None,
            base_url: None,
            usage_count: 0,
            last_used: None,
            last_checked: Some(checked),
            last_error: None,
            state_changed_at: None,
            created_at: 0,
            gift_balance: balance.map(|_| 1.0),
            charge_balance: balance.map(|b| b - 1.0),
            account_label: None,
        }
    }

    #[test]
    fn accounts_count_once_and_dead_keys_not_at_all() {
        let rows = vec![
            row(1, Some("a"), "active", Some(10.0), 1),
            row(2, Some("a"), "active", Some(9.0), 2), // same account, fresher: 9 counts
            row(3, Some("b"), "exhausted", Some(0.0), 1),
            row(4, None, "active", Some(5.0), 1),
            row(5, Some("c"), "invalid", Some(100.0), 1),
            row(6, Some("d"), "disabled", Some(100.0), 1),
        ];
        let t = totals(&rows);
        assert_eq!(t.total, Some(14.0));
        assert_eq!(t.accounts, 3);
        assert_eq!((t.known_accounts, t.unknown_accounts), (3, 0));
        assert_eq!(t.keys, 6);
        assert_eq!(t.usable_keys, 3);
        assert_eq!(t.gift, Some(3.0));
    }

    #[test]
    fn unknown_balances_are_not_zero() {
        let none = vec![row(1, None, "active", None, 1), row(2, None, "active", None, 1)];
        let t = totals(&none);
        assert_eq!((t.total, t.gift, t.charge), (None, None, None));
        assert_eq!((t.known_accounts, t.unknown_accounts), (0, 2));
        let mixed = vec![row(1, None, "active", None, 1), row(2, Some("a"), "active", Some(2.5), 1)];
        let t = totals(&mixed);
        assert_eq!(t.total, Some(2.5));
        assert_eq!((t.known_accounts, t.unknown_accounts), (1, 1));
        // Two keys the owner put in one account count as one.
        let mut a = row(1, None, "active", None, 1);
        let mut b = row(2, None, "active", None, 2);
        a.account_label = Some("team".into());
        b.account_label = Some("team".into());
        assert_eq!(totals(&[a, b]).accounts, 1);
    }
}
