//! What an upstream answer means for the key that got it. Pure, unit-tested.

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
}
