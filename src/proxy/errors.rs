//! Errors the proxy itself makes, in the caller's dialect: OpenAI's
//! `{"error":{"message","type","code"}}` or Anthropic's
//! `{"type":"error","error":{"type","message"}}` on `/v1/messages`.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    /// The prompt cannot fit the model's window (400, with the code and the
    /// wording each dialect's clients read).
    ContextLength,
    Authentication,
    /// The caller's key may not do this (a model outside its list).
    Forbidden,
    NotFound,
    TooLarge,
    /// The client stopped sending its request body.
    RequestTimeout,
    RateLimited,
    /// No key can serve, or the upstream cannot be reached.
    Unavailable,
    BadGateway,
    Timeout,
}

#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProxyError { kind, message: message.into(), retry_after_secs: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::ContextLength => StatusCode::BAD_REQUEST,
            ErrorKind::Authentication => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn openai_type_and_code(&self) -> (&'static str, &'static str) {
        match self.kind {
            ErrorKind::InvalidRequest => ("invalid_request_error", "invalid_request"),
            ErrorKind::ContextLength => ("invalid_request_error", "context_length_exceeded"),
            ErrorKind::Authentication => ("authentication_error", "invalid_api_key"),
            ErrorKind::Forbidden => ("permission_error", "model_not_allowed"),
            ErrorKind::NotFound => ("invalid_request_error", "not_found"),
            ErrorKind::TooLarge => ("invalid_request_error", "request_too_large"),
            ErrorKind::RequestTimeout => ("invalid_request_error", "request_timeout"),
            ErrorKind::RateLimited => ("rate_limit_error", "rate_limit_exceeded"),
            ErrorKind::Unavailable => ("service_unavailable", "no_available_key"),
            ErrorKind::BadGateway => ("api_error", "upstream_error"),
            ErrorKind::Timeout => ("api_error", "upstream_timeout"),
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::ContextLength => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::RequestTimeout => "invalid_request_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Unavailable => "overloaded_error",
            ErrorKind::BadGateway | ErrorKind::Timeout => "api_error",
        }
    }

    pub fn body(&self, dialect: Dialect) -> serde_json::Value {
        match dialect {
            Dialect::OpenAi => {
                let (kind, code) = self.openai_type_and_code();
                json!({"error": {"message": self.message, "type": kind, "code": code}})
            }
            Dialect::Anthropic => {
                json!({"type": "error", "error": {"type": self.anthropic_type(), "message": self.message}})
            }
        }
    }

    pub fn response(&self, dialect: Dialect) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status());
        if matches!(self.kind, ErrorKind::TooLarge | ErrorKind::RequestTimeout) {
            // The rest of the body is not read: the connection cannot be reused.
            builder.force_close();
        }
        if let Some(secs) = self.retry_after_secs {
            builder.insert_header(("Retry-After", secs.to_string()));
        }
        if self.kind == ErrorKind::Authentication {
            builder.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if matches!(self.kind, ErrorKind::Authentication | ErrorKind::Forbidden) {
            // The caller's key or its rules: asking again cannot help, and
            // the SDKs and agents (Claude Code: 11 tries over 3 minutes)
            // stop at once when told so.
            builder.insert_header(("x-should-retry", "false"));
        }
        builder.json(self.body(dialect))
    }
}

pub use crate::upstream::snippet;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_have_their_shapes() {
        let e = ProxyError::bad_request("missing model");
        let o = e.body(Dialect::OpenAi);
        assert_eq!(o["error"]["message"], "missing model");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        let a = e.body(Dialect::Anthropic);
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "invalid_request_error");
        assert_eq!(Dialect::for_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(Dialect::for_path("/v1/chat/completions"), Dialect::OpenAi);
        assert_eq!(ProxyError::new(ErrorKind::TooLarge, "x").status(), 413);
    }
}
