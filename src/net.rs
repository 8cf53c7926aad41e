//! Who is asking: the client's address and scheme, believing a reverse
//! proxy's `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto` headers only
//! when the connection comes from one of `TRUSTED_PROXIES`. Without that
//! setting every such header is ignored: anyone can send them.

use std::net::IpAddr;

use actix_web::HttpRequest;

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.trim().parse::<IpAddr>().ok()?, Some(p.trim().parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)), 32),
                    None => (u128::from(v6), 128),
                },
            }
        }
        let (net, net_width) = bits(self.addr);
        let (ip, ip_width) = bits(ip);
        if net_width != ip_width {
            return false;
        }
        let prefix = u32::from(self.prefix.min(net_width));
        if prefix == 0 {
            return true;
        }
        let shift = u32::from(net_width) - prefix;
        (net >> shift) == (ip >> shift)
    }
}

/// Parses `TRUSTED_PROXIES`: addresses or CIDRs, comma- or space-separated.
pub fn parse_trusted(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| IpNet::parse(p).ok_or_else(|| format!("{p:?} is not an address or CIDR block")))
        .collect()
}

fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|n| n.contains(ip))
}

/// The `for=` addresses of a `Forwarded` header, in order.
fn forwarded_for(value: &str) -> Vec<IpAddr> {
    value
        .split(',')
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                if !k.trim().eq_ignore_ascii_case("for") {
                    return None;
                }
                parse_node(v.trim().trim_matches('"'))
            })
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:80`, `2001:db8::1`.
fn parse_node(v: &str) -> Option<IpAddr> {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse().ok().or_else(|| v.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the nearest address in the chain of the one `header` that proxy sets
/// (`TRUSTED_PROXY_HEADER`) that is not itself trusted (so a client cannot
/// pass off a forged first hop). Other forwarding headers are ignored: one
/// the client sent itself and the proxy passed on must not be believed.
pub fn client_ip(req: &HttpRequest, proxies: &[IpNet], header: &str) -> IpAddr {
    let peer = req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if proxies.is_empty() || !trusted(proxies, peer) {
        return peer;
    }
    let values = req.headers().get_all(header).filter_map(|v| v.to_str().ok());
    let chain: Vec<IpAddr> = if header == "forwarded" {
        values.flat_map(forwarded_for).collect()
    } else {
        values.flat_map(|v| v.split(',')).filter_map(|p| parse_node(p.trim())).collect()
    };
    chain.into_iter().rev().find(|ip| !trusted(proxies, *ip)).unwrap_or(peer)
}

/// Whether the client reached us over HTTPS: the connection itself, or a
/// trusted proxy's `X-Forwarded-Proto` / `Forwarded: proto=`.
pub fn is_https(req: &HttpRequest, proxies: &[IpNet]) -> bool {
    if req.app_config().secure() {
        return true;
    }
    let peer = req.peer_addr().map(|a| a.ip());
    if !peer.is_some_and(|p| trusted(proxies, p)) {
        return false;
    }
    let headers = req.headers();
    let xfp = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok());
    let fwd = headers.get("forwarded").and_then(|v| v.to_str().ok()).and_then(|v| {
        v.split([',', ';']).find_map(|pair| {
            let (k, val) = pair.split_once('=')?;
            k.trim().eq_ignore_ascii_case("proto").then(|| val.trim().trim_matches('"').to_string())
        })
    });
    xfp.map(|s| s.split(',').next().unwrap_or("").trim().eq_ignore_ascii_case("https")).unwrap_or(false)
        || fwd.is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The host the client asked for (`Host`, or a trusted proxy's
/// `X-Forwarded-Host`), lower-case, for comparing with a browser's `Origin`.
pub fn requested_host(req: &HttpRequest, proxies: &[IpNet]) -> Option<String> {
    let headers = req.headers();
    let peer = req.peer_addr().map(|a| a.ip());
    let forwarded = peer
        .filter(|p| trusted(proxies, *p))
        .and_then(|_| headers.get("x-forwarded-host"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').next().unwrap_or("").trim().to_string());
    forwarded
        .filter(|h| !h.is_empty())
        .or_else(|| headers.get("host").and_then(|v| v.to_str().ok()).map(str::to_string))
        .map(|h| h.to_ascii_lowercase())
}

/// The `Content-Length` a request or answer declares, if it is a number.
pub fn content_length(headers: &actix_web::http::header::HeaderMap) -> Option<u64> {
    headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

/// Whether a request declares a body (a length above zero, or chunks).
pub fn has_body(req: &HttpRequest) -> bool {
    let h = req.headers();
    h.contains_key("transfer-encoding") || content_length(h).is_some_and(|len| len > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn address_blocks_parse_and_contain() {
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.9.9.9".parse().unwrap()), "v4-mapped v6");
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert_eq!(IpNet::parse("10.0.0.0/33"), None);
        assert_eq!(IpNet::parse("nope"), None);
        assert_eq!(parse_trusted("127.0.0.1, 172.16.0.0/12 ::1").unwrap().len(), 3);
        assert!(parse_trusted("127.0.0.1,bad").is_err());
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxies = parse_trusted("10.0.0.0/8").unwrap();
        let from = |peer: &str, hdr: (&str, &str)| {
            TestRequest::default().peer_addr(peer.parse().unwrap()).insert_header(hdr).to_http_request()
        };
        let xff = "x-forwarded-for";
        // A trusted proxy: the first untrusted hop from the right.
        let r = from("10.0.0.2:5000", ("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.9"));
        assert_eq!(client_ip(&r, &proxies, xff), "203.0.113.7".parse::<IpAddr>().unwrap());
        let r =
            from("10.0.0.2:5000", ("forwarded", "for=198.51.100.1;proto=https, for=\"[2001:db8::5]:443\""));
        assert_eq!(client_ip(&r, &proxies, "forwarded"), "2001:db8::5".parse::<IpAddr>().unwrap());
        assert!(is_https(&r, &proxies));
        // Only the configured header: a client's own `Forwarded`, passed on
        // by a proxy that sets X-Forwarded-For, is not believed.
        let r = TestRequest::default()
            .peer_addr("10.0.0.2:5000".parse().unwrap())
            .insert_header(("forwarded", "for=192.0.2.66"))
            .insert_header(("x-forwarded-for", "203.0.113.7"))
            .to_http_request();
        assert_eq!(client_ip(&r, &proxies, xff), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&r, &proxies, "x-real-ip"), "10.0.0.2".parse::<IpAddr>().unwrap(), "none set");
        // Anyone else: headers ignored.
        let r = from("203.0.113.9:5000", ("x-forwarded-for", "1.2.3.4"));
        assert_eq!(client_ip(&r, &proxies, xff), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&r, &[], xff), "203.0.113.9".parse::<IpAddr>().unwrap());
        let r = from("203.0.113.9:5000", ("x-forwarded-proto", "https"));
        assert!(!is_https(&r, &proxies));
    }
}
