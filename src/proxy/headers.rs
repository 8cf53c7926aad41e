//! Which headers cross the proxy, each way.

use actix_web::http::header::{HeaderMap, HeaderName};

/// The `Content-Length` a message declares, if it declares a valid one.
pub use crate::net::content_length;

/// Never forwarded to the upstream: hop-by-hop headers, the client's own
/// credentials, and what the proxy sets itself.
fn drop_upstream(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "x-api-key"
            | "cookie"
            | "content-length"
            // Ask for identity encoding, so that usage can be read from the answer.
            | "accept-encoding"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-real-ip"
            | "forwarded"
    )
}

/// Never passed back to the client.
fn drop_downstream(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "set-cookie"
            | "alt-svc"
    )
}

pub fn upstream_headers(
    from: &HeaderMap,
) -> impl Iterator<Item = (&HeaderName, &actix_web::http::header::HeaderValue)> {
    from.iter().filter(|(name, _)| !drop_upstream(name))
}

pub fn downstream_headers(
    from: &awc::http::header::HeaderMap,
) -> impl Iterator<Item = (&HeaderName, &actix_web::http::header::HeaderValue)> {
    from.iter().filter(|(name, _)| !drop_downstream(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn strips_credentials_and_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer client"),
            ("x-api-key", "client"),
            ("cookie", "a=b"),
            ("connection", "keep-alive"),
            ("host", "proxy"),
            ("content-type", "application/json"),
            ("x-trace-id", "t1"),
            ("traceparent", "00-abc"),
            ("anthropic-version", "2023-06-01"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let kept: Vec<&str> = upstream_headers(&h).map(|(k, _)| k.as_str()).collect();
        for k in ["content-type", "x-trace-id", "traceparent", "anthropic-version"] {
            assert!(kept.contains(&k), "{k} kept");
        }
        for k in ["authorization", "x-api-key", "cookie", "connection", "host"] {
            assert!(!kept.contains(&k), "{k} dropped");
        }
    }
}
