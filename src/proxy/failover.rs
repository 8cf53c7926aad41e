//! What an upstream answer means for the key that got it, and what a failed
//! attempt does to the key, its account, the cooldowns and the next attempt.
//! Pure, unit-tested; `forward::dispatch` carries the decisions out.

use crate::pool::cooldown::Hint;
use crate::pool::KeyState;
use crate::upstream::is_insufficient_balance;

/// Statuses that say the upstream did not run the request, so another key
/// may, without running (and billing) it twice: the key is dead, broke or
/// barred (401/402/403), the account is rate-limited (429), the model is
/// overloaded (503). Everything else (2xx, 4xx, and a 500/502/504, after
/// which the model may well have run) is the answer, passed to the client once.
pub fn may_fail_over(status: u16) -> bool {
    matches!(status, 401 | 402 | 403 | 429 | 503)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 401: the key is dead.
    KeyInvalid,
    /// 402/403 code 30001: the account has no funds.
    KeyExhausted,
    /// 429: the account is limited for this model.
    RateLimited,
    /// 403 other than 30001 ("Forbidden", model disabled, real-name check):
    /// this account cannot use this model; others may. Remembered as a cooldown.
    ModelForbidden,
    /// 503: try another key, change nothing.
    Transient,
}

pub fn classify(status: u16, body: &[u8]) -> Verdict {
    match status {
        401 => Verdict::KeyInvalid,
        402 | 403 if is_insufficient_balance(body) => Verdict::KeyExhausted,
        429 => Verdict::RateLimited,
        403 => Verdict::ModelForbidden,
        _ => Verdict::Transient,
    }
}

/// What a failed attempt (a status `may_fail_over` accepts) counts as.
pub fn outcome(status: u16, body: &[u8]) -> crate::metrics::Outcome {
    use crate::metrics::Outcome;
    match classify(status, body) {
        Verdict::KeyInvalid => Outcome::Invalid,
        Verdict::KeyExhausted => Outcome::Exhausted,
        Verdict::RateLimited => Outcome::RateLimited,
        Verdict::ModelForbidden => Outcome::Forbidden,
        Verdict::Transient => Outcome::ServerError,
    }
}

/// What one failed attempt (a status `may_fail_over` accepts) does.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    /// The key's state from now on, if the answer changes it.
    pub key_state: Option<KeyState>,
    /// The funds are the account's: its other keys are exhausted too.
    pub account_exhausted: bool,
    /// The account cools for this request's model, with what the answer hinted.
    pub cooldown: Option<Hint>,
    /// This was an exhausted key's trial, and it showed no funds again: the
    /// trial ends (failed) instead of the key being reported exhausted anew.
    pub trial_failed: bool,
    /// The client's answer if no other key serves.
    pub answer: LastAnswer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastAnswer {
    /// The upstream's own answer (a rate limit, an overload): the client's
    /// own retry logic knows what to do with it.
    Upstream,
    /// Ours: the key's problem (dead, broke) is not the client's, whose own
    /// key is fine; an upstream 401 would make it think so.
    NoUsableKey,
}

/// The next attempt goes on with another key in every case (up to the
/// attempts allowed); this says what the failure changes first.
pub fn after_failure(status: u16, body: &[u8], retry_after: Option<&str>, trial: bool) -> Failed {
    let none = Failed {
        key_state: None,
        account_exhausted: false,
        cooldown: None,
        trial_failed: false,
        answer: LastAnswer::Upstream,
    };
    match classify(status, body) {
        Verdict::KeyInvalid => {
            Failed { key_state: Some(KeyState::Invalid), answer: LastAnswer::NoUsableKey, ..none }
        }
        Verdict::KeyExhausted => Failed {
            key_state: Some(KeyState::Exhausted),
            account_exhausted: true,
            trial_failed: trial,
            answer: LastAnswer::NoUsableKey,
            ..none
        },
        Verdict::RateLimited => Failed { cooldown: Some(Hint::from_response(retry_after, body)), ..none },
        // Remembered like a rate limit, for the policy's time: the account
        // may be allowed the model again later.
        Verdict::ModelForbidden => Failed { cooldown: Some(Hint::default()), ..none },
        Verdict::Transient => none,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKE: &[u8] =
        br#"{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}"#;

    #[test]
    fn upstream_answers_map_to_key_verdicts() {
        assert_eq!(classify(401, br#""Invalid token""#), Verdict::KeyInvalid);
        assert_eq!(classify(403, BROKE), Verdict::KeyExhausted);
        assert_eq!(classify(402, BROKE), Verdict::KeyExhausted);
        assert_eq!(classify(403, br#""Forbidden""#), Verdict::ModelForbidden);
        assert_eq!(classify(403, br#"{"code":30003,"message":"Model disabled"}"#), Verdict::ModelForbidden);
        // The code decides, not a number quoted in the text.
        let quoted = br#"{"code":30003,"message":"Model disabled (see 30001 balance is insufficient)"}"#;
        assert_eq!(classify(403, quoted), Verdict::ModelForbidden);
        assert_eq!(classify(429, b"{}"), Verdict::RateLimited);
        assert_eq!(classify(503, b"{}"), Verdict::Transient);
        for s in [200, 400, 404, 413, 422, 500, 502, 504] {
            assert!(!may_fail_over(s), "{s}");
        }
        for s in [401, 402, 403, 429, 503] {
            assert!(may_fail_over(s), "{s}");
        }
    }

    #[test]
    fn a_failed_attempt_changes_the_key_the_account_or_the_cooldowns_and_says_what_the_client_gets() {
        let dead = after_failure(401, br#""Invalid token""#, None, false);
        assert_eq!(
            (dead.key_state, dead.account_exhausted, dead.cooldown.clone()),
            (Some(KeyState::Invalid), false, None)
        );
        assert_eq!(dead.answer, LastAnswer::NoUsableKey, "our error, not the upstream's 401");
        // A 401 on a trial is not a failed trial (it says nothing of funds).
        assert!(!after_failure(401, b"", None, true).trial_failed);

        let broke = after_failure(403, BROKE, None, false);
        assert_eq!(broke.key_state, Some(KeyState::Exhausted));
        assert!(broke.account_exhausted && !broke.trial_failed && broke.cooldown.is_none());
        assert_eq!(broke.answer, LastAnswer::NoUsableKey);
        assert!(after_failure(402, BROKE, None, true).trial_failed);

        let limited = after_failure(429, br#"{"message":"TPD limit reached"}"#, Some("12"), true);
        assert_eq!(limited.key_state, None, "a rate limit leaves the key as it is");
        assert!(!limited.trial_failed, "and says nothing of a trial's funds");
        let hint = limited.cooldown.expect("cools");
        assert_eq!((hint.retry_after, hint.daily), (Some(std::time::Duration::from_secs(12)), true));
        assert_eq!(limited.answer, LastAnswer::Upstream, "the client sees the upstream's 429");

        let barred = after_failure(403, br#"{"code":30003,"message":"Model disabled"}"#, Some("99"), false);
        assert_eq!(
            (barred.key_state, barred.cooldown),
            (None, Some(Hint::default())),
            "no hint taken from a 403"
        );

        let busy = after_failure(503, b"{}", Some("5"), false);
        assert_eq!(
            busy,
            Failed {
                key_state: None,
                account_exhausted: false,
                cooldown: None,
                trial_failed: false,
                answer: LastAnswer::Upstream
            }
        );
    }
}
