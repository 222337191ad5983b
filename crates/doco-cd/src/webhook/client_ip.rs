//! The client address logged with a refused webhook: the peer, or, when the peer is a trusted proxy
//! (`TRUSTED_PROXY_NETWORKS`), the client it names in `TRUSTED_PROXY_HEADER`. With the default header,
//! `X-Forwarded-For` is read right to left up to the first untrusted hop, then RFC 7239 `Forwarded`.
//! Used for logging only, as upstream.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use doco_config::IpNetwork;

/// The address to log for a request from `peer`.
pub fn resolve(
    peer: Option<SocketAddr>,
    header: &str,
    headers: &HeaderMap,
    trusted: &[IpNetwork],
) -> String {
    let Some(peer) = peer else {
        return "unknown".to_string();
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer.to_string();
    }
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let client = if header.is_empty() || header.eq_ignore_ascii_case("X-Forwarded-For") {
        let chain = |items: Vec<String>| -> Option<IpAddr> {
            let ips: Vec<IpAddr> = items.iter().filter_map(|s| parse_ip(s)).collect();
            ips.iter()
                .rev()
                .find(|ip| !is_trusted(**ip))
                .or(ips.first())
                .copied()
        };
        let forwarded: Vec<String> = values("Forwarded")
            .iter()
            .flat_map(|v| v.split(';').map(str::to_string).collect::<Vec<_>>())
            .filter_map(|part| {
                let (k, v) = part.trim().split_once('=')?;
                k.eq_ignore_ascii_case("for").then(|| v.trim().to_string())
            })
            .collect();
        chain(values("X-Forwarded-For")).or_else(|| chain(forwarded))
    } else {
        values(header).first().and_then(|v| parse_ip(v))
    };
    match client {
        Some(ip) => SocketAddr::new(ip, peer.port()).to_string(),
        None => peer.to_string(),
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `"[::1]:80"`, `::1`.
fn parse_ip(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .and_then(|ip| ip.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets() -> Vec<IpNetwork> {
        ["127.0.0.0/8", "10.0.0.0/8"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn trusts_headers_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let xff = headers(&[("X-Forwarded-For", "198.51.100.7, 10.0.0.5")]);
        let cases = [
            (stranger, "", &xff, "203.0.113.9:5000"),
            (proxy, "", &xff, "198.51.100.7:5000"),
            (proxy, "X-Forwarded-For", &xff, "198.51.100.7:5000"),
            (
                proxy,
                "",
                &headers(&[("Forwarded", "for=\"[2001:db8::1]:80\";proto=https")]),
                "[2001:db8::1]:5000",
            ),
            (
                proxy,
                "X-Real-IP",
                &headers(&[("X-Real-IP", "198.51.100.8")]),
                "198.51.100.8:5000",
            ),
            // A custom header has no fallback.
            (proxy, "X-Real-IP", &xff, "10.0.0.2:5000"),
            (proxy, "", &HeaderMap::new(), "10.0.0.2:5000"),
        ];
        for (peer, header, h, want) in cases {
            assert_eq!(
                resolve(Some(peer), header, h, &nets()),
                want,
                "{peer} {header}"
            );
        }
        assert_eq!(resolve(None, "", &xff, &nets()), "unknown");
    }
}
