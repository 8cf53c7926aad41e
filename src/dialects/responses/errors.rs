//! Upstream errors as a Responses client reads them: before the stream, an
//! HTTP error in OpenAI's shape (the SDK picks its exception class from the
//! status, Codex its retry from the code); after it began, the `error` of a
//! `response.failed` event, with the codes Codex knows.

use serde::Deserialize;
use serde_json::json;

/// Seconds a client is told to wait after a rate limit it learns of inside a
/// stream (the upstream gives no figure there; Codex reads "try again in Ns").
pub const RATE_LIMIT_RETRY_SECS: u64 = 10;

/// Why a started response failed: `code` is one Codex reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn server(message: impl Into<String>) -> Self {
        Failure { code: "server_error", message: message.into() }
    }

    /// From an upstream error: its status (if it had one), SiliconFlow's
    /// numeric code and message.
    pub fn from_upstream(status: Option<u16>, code: Option<i64>, message: &str) -> Self {
        let lower = message.to_ascii_lowercase();
        if status == Some(429) || matches!(code, Some(50602 | 50603)) || lower.contains("rate limit") {
            return Failure {
                code: "rate_limit_exceeded",
                message: format!("{message} Please try again in {RATE_LIMIT_RETRY_SECS}s."),
            };
        }
        if code == Some(30001) || lower.contains("balance is insufficient") {
            return Failure { code: "insufficient_quota", message: message.to_string() };
        }
        if lower.contains("context length")
            || lower.contains("maximum context")
            || lower.contains("too long")
            || crate::dialects::overflow::parse(message).is_some()
        {
            return Failure { code: "context_length_exceeded", message: message.to_string() };
        }
        Failure::server(message)
    }
}

/// What an upstream error body says: SiliconFlow's `{"code","message"}`, a
/// bare JSON string, OpenAI's `{"error":{...}}`, or text.
pub fn upstream_message(body: &[u8]) -> (Option<i64>, String) {
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        code: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Outer {
        code: Option<serde_json::Value>,
        message: Option<String>,
        error: Option<Inner>,
    }
    let number = |v: &Option<serde_json::Value>| v.as_ref().and_then(|c| c.as_i64());
    if let Ok(text) = serde_json::from_slice::<String>(body) {
        return (None, text);
    }
    if let Ok(o) = serde_json::from_slice::<Outer>(body) {
        if let Some(e) = o.error {
            if let Some(m) = e.message {
                return (number(&e.code), m);
            }
        }
        if let Some(m) = o.message {
            return (number(&o.code), m);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (
        None,
        if text.is_empty() {
            "the upstream gave no reason".to_string()
        } else {
            text.chars().take(1000).collect()
        },
    )
}

/// An upstream error answer (status, body) as OpenAI's error body.
pub fn error_body(status: u16, body: &[u8]) -> Vec<u8> {
    if let Some(o) = crate::dialects::overflow::in_body(body).filter(|_| status == 400) {
        return o.openai_body();
    }
    let (code, message) = upstream_message(body);
    let (kind, code_name) = match status {
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        402 => ("insufficient_quota", "insufficient_quota"),
        _ if code == Some(30001) => ("insufficient_quota", "insufficient_quota"),
        400 if code == Some(20012) => ("invalid_request_error", "model_not_found"),
        400 | 413 | 422 => ("invalid_request_error", "invalid_request"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        _ => ("server_error", "server_error"),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code_name}})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn body(status: u16, upstream: &str) -> Value {
        serde_json::from_slice(&error_body(status, upstream.as_bytes())).unwrap()
    }

    #[test]
    fn upstream_errors_take_openai_shape_with_their_message() {
        let b = body(
            400,
            r#"{"code":20012,"message":"Model does not exist. Please check it carefully.","data":null}"#,
        );
        assert_eq!(b["error"]["message"], "Model does not exist. Please check it carefully.");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["code"], "model_not_found");
        assert_eq!(body(401, r#""Invalid token""#)["error"]["message"], "Invalid token");
        assert_eq!(
            body(
                403,
                r#"{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}"#
            )["error"]["code"],
            "insufficient_quota"
        );
        let b = body(
            429,
            r#"{"message":"Request was rejected due to rate limiting. Details:TPM limit reached.","data":"x"}"#,
        );
        assert_eq!(
            (b["error"]["type"].as_str(), b["error"]["code"].as_str()),
            (Some("rate_limit_error"), Some("rate_limit_exceeded"))
        );
        assert_eq!(
            body(
                503,
                r#"{"code":50505,"message":"Model service overloaded. Please try again later.","data":""}"#
            )["error"]["code"],
            "server_error"
        );
        assert_eq!(body(502, "<html>bad gateway</html>")["error"]["message"], "<html>bad gateway</html>");
        assert_eq!(body(500, "")["error"]["message"], "the upstream gave no reason");
        assert_eq!(body(400, r#"{"error":{"message":"bad","code":"x"}}"#)["error"]["message"], "bad");
    }

    #[test]
    fn failures_name_the_codes_codex_reads() {
        let f = Failure::from_upstream(Some(429), None, "TPM limit reached.");
        assert_eq!(f.code, "rate_limit_exceeded");
        assert!(f.message.ends_with("Please try again in 10s."), "{}", f.message);
        assert_eq!(Failure::from_upstream(None, Some(30001), "Sorry").code, "insufficient_quota");
        assert_eq!(
            Failure::from_upstream(None, None, "Request was rejected due to rate limiting.").code,
            "rate_limit_exceeded"
        );
        assert_eq!(
            Failure::from_upstream(None, Some(20015), "input is too long for the maximum context").code,
            "context_length_exceeded"
        );
        assert_eq!(Failure::from_upstream(Some(503), Some(50505), "overloaded").code, "server_error");
        // SiliconFlow's own wordings, inside a stream.
        for m in [
            "length of prompt_tokens (68957) must be less than max_seq_len (65536).",
            "max_total_tokens (172191) must be less than or equal to max_seq_len (131072)",
        ] {
            assert_eq!(Failure::from_upstream(None, Some(20015), m).code, "context_length_exceeded", "{m}");
        }
        assert_eq!(
            body(
                400,
                r#"{"code":20015,"message":"length of prompt_tokens (9) must be less than max_seq_len (8).","data":null}"#
            )["error"]["code"],
            "context_length_exceeded"
        );
        assert_eq!(
            body(
                400,
                r#"{"code":20015,"message":"max_tokens: Input should be a valid integer","data":null}"#
            )["error"]["code"],
            "invalid_request"
        );
    }
}
