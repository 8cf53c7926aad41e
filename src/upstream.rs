//! Facts about SiliconFlow's API that every layer relies on: its error codes,
//! how it writes balances. Pure and at the bottom: `pool/`, `proxy/` and
//! `admin/` use it; it uses none of them.

/// Error codes SiliconFlow puts in `{"code": ..., "message": ...}` bodies.
pub mod code {
    /// "Sorry, your account balance is insufficient".
    pub const INSUFFICIENT_BALANCE: i64 = 30001;
    /// "Model disabled" for this account.
    pub const MODEL_DISABLED: i64 = 30003;
}

/// The JSON `code` of an upstream error body, if it has one (a number, or a
/// string of digits). `None` for bare strings, HTML, or objects without it.
pub fn error_code(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Coded {
        code: Option<serde_json::Value>,
    }
    // Only objects are worth parsing; skip the rest without allocating.
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    match serde_json::from_slice::<Coded>(body).ok()?.code? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// "No funds" (code 30001). The code decides when there is one: a body whose
/// code is something else is not exhaustion, whatever its text quotes (the
/// upstream's messages may echo the request). Only a body without a code is
/// read for the sentence SiliconFlow uses.
pub fn is_insufficient_balance(body: &[u8]) -> bool {
    match error_code(body) {
        Some(c) => c == code::INSUFFICIENT_BALANCE,
        None => memchr::memmem::find(body, b"balance is insufficient").is_some(),
    }
}

/// SiliconFlow sends balances as strings ("88.88", "-0.01"); accept numbers too.
pub fn parse_balance(v: &serde_json::Value) -> Option<f64> {
    let n = match v {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        serde_json::Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// The body with every occurrence of `secret` (the pool key the request was
/// sent with) replaced by `masked`: an upstream error that quotes the
/// `Authorization` header must not hand a pool key to the client, the log
/// table or stdout. The same bytes, uncopied, when the key is not there.
pub fn redact(body: bytes::Bytes, secret: &str, masked: &str) -> bytes::Bytes {
    if secret.is_empty() || memchr::memmem::find(&body, secret.as_bytes()).is_none() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest: &[u8] = &body;
    let finder = memchr::memmem::Finder::new(secret.as_bytes());
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(masked.as_bytes());
        rest = &rest[at + secret.len()..];
    }
    out.extend_from_slice(rest);
    bytes::Bytes::from(out)
}

/// A short, printable excerpt of an upstream body for logs and errors.
pub fn snippet(body: &[u8]) -> String {
    let end = body.len().min(300);
    let text = String::from_utf8_lossy(&body[..end]);
    text.trim().replace(['\n', '\r'], " ")
}

/// SiliconFlow's two official hosts (China and international); keys of one
/// answer 401 on the other.
pub fn other_region(base: &str) -> Option<&'static str> {
    match base.trim_end_matches('/') {
        "https://api.siliconflow.cn" => Some("https://api.siliconflow.com"),
        "https://api.siliconflow.com" => Some("https://api.siliconflow.cn"),
        _ => None,
    }
}

/// The currency of an upstream's balances: USD on the international host,
/// CNY elsewhere (SiliconFlow China, the default).
pub fn currency(base: &str) -> &'static str {
    if base.trim_end_matches('/').ends_with("api.siliconflow.com") {
        "USD"
    } else {
        "CNY"
    }
}

/// A balance with its currency's sign: `¥12.34`, `$5.00`.
pub fn money(currency: &str, amount: f64) -> String {
    match currency {
        "USD" => format!("${amount:.2}"),
        _ => format!("¥{amount:.2}"),
    }
}

/// What a 429 says about waiting: its `Retry-After` (seconds), and whether
/// the limit is a daily one (RPD, TPD, IPD, named in SiliconFlow's message,
/// e.g. "Request was rejected due to rate limiting. Details:RPD limit
/// reached."), after which nothing helps before the next day.
pub fn rate_limit_hint(retry_after: Option<&str>, body: &[u8]) -> (Option<std::time::Duration>, bool) {
    let retry_after =
        retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(std::time::Duration::from_secs);
    let daily =
        [&b"RPD"[..], b"TPD", b"IPD"].iter().any(|needle| memchr::memmem::find(body, needle).is_some());
    (retry_after, daily)
}

/// The endpoints the proxy serves (SiliconFlow's, and the aliases it takes),
/// for the log's endpoint filter. A filter on one also takes the paths below
/// it (`/v1/batches` takes `/v1/batches/b1/cancel`).
pub const ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/messages",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/images/generations",
    "/v1/image/generations",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/audio/reference",
    "/v1/uploads/audio/voice",
    "/v1/audio/voice/list",
    "/v1/audio/voice/deletions",
    "/v1/video/generations",
    "/v1/video/submit",
    "/v1/video/status",
    "/v1/files",
    "/v1/batches",
    "/v1/models",
    "/v1/user/models",
    "/v1/user/info",
];

/// `sk-abcdefgh...wxyz` -> `sk-abcd...wxyz`. Short keys keep only their edges,
/// so that no key is ever shown whole.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        let head: String = chars.iter().take(2).collect();
        return format!("{head}...");
    }
    let head_len = if key.starts_with("sk-") { 7 } else { 4 };
    let head_len = head_len.min(chars.len() - 4);
    let head: String = chars[..head_len].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_json_objects_only() {
        assert_eq!(error_code(br#"{"code":30001,"message":"x","data":null}"#), Some(30001));
        assert_eq!(error_code(br#" {"code":"30003","message":"Model disabled"}"#), Some(30003));
        assert_eq!(error_code(br#"{"message":"no code"}"#), None);
        assert_eq!(error_code(br#""Forbidden""#), None);
        assert_eq!(error_code(b"<html>30001</html>"), None);
        assert_eq!(error_code(b""), None);
    }

    #[test]
    fn exhaustion_is_decided_by_the_code_first() {
        assert!(is_insufficient_balance(
            br#"{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}"#
        ));
        assert!(is_insufficient_balance(br#"{"code":"30001","message":"?"}"#));
        // A 403 whose text merely quotes 30001 (say, the request's own text) is not exhaustion.
        assert!(!is_insufficient_balance(
            br#"{"code":30003,"message":"Model disabled for prompt 'code 30001 balance is insufficient'"}"#
        ));
        assert!(!is_insufficient_balance(br#""Forbidden: user 30001""#));
        // Without a code, SiliconFlow's sentence still counts.
        assert!(is_insufficient_balance(br#""Sorry, your account balance is insufficient""#));
        assert!(!is_insufficient_balance(br#""Forbidden""#));
    }

    #[test]
    fn pool_keys_quoted_by_the_upstream_are_masked() {
        let body =
            bytes::Bytes::from_static(b"{\"message\":\"bad header: Bearer sk-secret-123 (sk-secret-123)\"}");
        let out = redact(body, "sk-secret-123", "sk-secr...123");
        assert_eq!(&out[..], b"{\"message\":\"bad header: Bearer sk-secr...123 (sk-secr...123)\"}");
        let clean = bytes::Bytes::from_static(b"{}");
        let same = redact(clean.clone(), "sk-secret-123", "x");
        assert_eq!(same.as_ptr(), clean.as_ptr(), "no copy when there is nothing to mask");
    }

    #[test]
    fn balances_are_strings_numbers_or_negative() {
        assert_eq!(parse_balance(&serde_json::json!("88.88")), Some(88.88));
        assert_eq!(parse_balance(&serde_json::json!("-0.01")), Some(-0.01));
        assert_eq!(parse_balance(&serde_json::json!(3)), Some(3.0));
        assert_eq!(parse_balance(&serde_json::json!("abc")), None);
        assert_eq!(parse_balance(&serde_json::json!("NaN")), None);
        assert_eq!(parse_balance(&serde_json::json!(null)), None);
        assert_eq!(snippet(b"a\nb"), "a b");
    }
}
