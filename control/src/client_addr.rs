//! Who is on the other end: the client's IP address, read from a forwarding header only when the
//! TCP peer is a proxy the operator named.
//!
//! The session cookie is `Secure`, so in production the control plane sits behind a TLS proxy
//! and every TCP peer is that proxy. Its `X-Forwarded-For` (or `Forwarded`) names the real
//! client, but any client can send those headers too: only hops that a trusted proxy appended
//! can be believed. So the chain is read from the right, skipping trusted proxies, and the first
//! hop that is not one is the client. A peer that is not a trusted proxy is the client itself,
//! whatever headers it sent. See `docs/sign-in.md`.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use clap::ValueEnum;

/// An IP network, `ADDRESS/PREFIX` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpNetError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The prefix is not a number up to 32 (IPv4) or 128 (IPv6).
    #[error("{0:?} is not a valid prefix length")]
    Prefix(String),
    /// `/0` trusts every address on the internet to name the client: never what is meant.
    #[error("{0:?} matches every address; name the proxies' own addresses")]
    Everything(String),
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = text
            .split_once('/')
            .map_or((text, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| IpNetError::Address(text.to_owned()))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| IpNetError::Prefix(text.to_owned()))?,
        };
        if prefix == 0 {
            return Err(IpNetError::Everything(text.to_owned()));
        }
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX << (32 - u32::from(self.prefix));
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX << (128 - u32::from(self.prefix));
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The header a trusted proxy writes the client's address into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...` (nginx, HAProxy, AWS/GCP load balancers, Caddy).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (Envoy can, some CDNs do).
    Forwarded,
}

/// The proxies whose forwarding header is believed. Empty: the TCP peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Trusts `nets`, reading `header` from them. Only the header the proxy writes may be named:
    /// it must overwrite or append to that header, or a client could write the hop it reads.
    pub fn new(nets: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { nets, header }
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the right-most
    /// hop of the forwarding header that is not a trusted proxy. If that hop is not an address
    /// (`unknown`, an obfuscated name, garbage), the last trusted hop stands for the client:
    /// a trusted proxy wrote it, so it cannot be a value the client chose.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        // Several header lines are one comma-separated list, in order (RFC 9110, 5.3).
        let mut hops: Vec<&str> = Vec::new();
        for value in headers.get_all(name) {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            hops.extend(value.split(','));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let parsed = match self.header {
                ForwardedHeader::XForwardedFor => parse_hop(hop),
                ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_hop),
            };
            match parsed {
                Some(ip) if self.trusts(ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
        client
    }
}

/// The `for=` value of one `Forwarded` element (`for=1.2.3.4;proto=https`), unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// One hop: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// The unit one client controls: its IPv4 address, or its IPv6 /64 (a single host is commonly
/// given a whole /64, so counting its addresses one by one would count nothing).
pub fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        v4 => v4,
    }
}

/// The client's address for a request, if the server recorded the peer (it always does when
/// served with `into_make_service_with_connect_info`).
pub fn client_ip(parts: &Parts, proxies: &TrustedProxies) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| proxies.client_ip(ci.0.ip(), &parts.headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(nets: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect(), header)
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn networks_parse_and_match() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.1.1")));
        assert!(
            net.contains(ip("::ffff:10.0.0.1")),
            "v4-mapped is the v4 address"
        );
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        for (bad, expected) in [
            ("0.0.0.0/0", IpNetError::Everything("0.0.0.0/0".into())),
            ("::/0", IpNetError::Everything("::/0".into())),
            ("10.0.0.0/33", IpNetError::Prefix("10.0.0.0/33".into())),
            ("10.0.0.0/x", IpNetError::Prefix("10.0.0.0/x".into())),
            (
                "proxy.internal",
                IpNetError::Address("proxy.internal".into()),
            ),
            ("", IpNetError::Address(String::new())),
        ] {
            assert_eq!(bad.parse::<IpNet>(), Err(expected), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let xff = proxies(&["127.0.0.1", "10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let fwd = proxies(&["127.0.0.1", "10.0.0.0/8"], ForwardedHeader::Forwarded);
        let proxy = ip("127.0.0.1");
        let cases: [(&TrustedProxies, IpAddr, HeaderMap, &str); 14] = [
            // No trusted proxy in front: headers are the client's own words.
            (
                &xff,
                ip("198.51.100.9"),
                headers("x-forwarded-for", &["1.1.1.1"]),
                "198.51.100.9",
            ),
            (
                &xff,
                proxy,
                headers("x-forwarded-for", &["203.0.113.5"]),
                "203.0.113.5",
            ),
            // A client's forged entries sit left of what the proxy appended.
            (
                &xff,
                proxy,
                headers("x-forwarded-for", &["9.9.9.9, 203.0.113.5"]),
                "203.0.113.5",
            ),
            // Two trusted proxies in a row are skipped.
            (
                &xff,
                proxy,
                headers("x-forwarded-for", &["203.0.113.5, 10.1.2.3"]),
                "203.0.113.5",
            ),
            // Header lines are one list, in order.
            (
                &xff,
                proxy,
                headers("x-forwarded-for", &["9.9.9.9", "203.0.113.5"]),
                "203.0.113.5",
            ),
            (
                &xff,
                proxy,
                headers("x-forwarded-for", &["203.0.113.5:4711"]),
                "203.0.113.5",
            ),
            (
                &xff,
                proxy,
                headers("x-forwarded-for", &["[2001:db8::7]:443"]),
                "2001:db8::7",
            ),
            // Garbage where the proxy should have written: the proxy stands for the client.
            (
                &xff,
                proxy,
                headers("x-forwarded-for", &["203.0.113.5, unknown"]),
                "127.0.0.1",
            ),
            (&xff, proxy, HeaderMap::new(), "127.0.0.1"),
            // Only the configured header is read.
            (
                &xff,
                proxy,
                headers("forwarded", &["for=203.0.113.5"]),
                "127.0.0.1",
            ),
            (
                &fwd,
                proxy,
                headers("x-forwarded-for", &["203.0.113.5"]),
                "127.0.0.1",
            ),
            (
                &fwd,
                proxy,
                headers(
                    "forwarded",
                    &["for=9.9.9.9, For=\"[2001:db8::7]:80\";proto=https"],
                ),
                "2001:db8::7",
            ),
            (
                &fwd,
                proxy,
                headers("forwarded", &["for=203.0.113.5;by=10.0.0.1, for=10.0.0.2"]),
                "203.0.113.5",
            ),
            (
                &fwd,
                proxy,
                headers("forwarded", &["for=_hidden"]),
                "127.0.0.1",
            ),
        ];
        for (proxies, peer, headers, expected) in cases {
            assert_eq!(
                proxies.client_ip(peer, &headers),
                ip(expected),
                "{peer} {headers:?}"
            );
        }
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(network(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(proxy, &headers("x-forwarded-for", &["203.0.113.5"])),
            proxy
        );
    }
}
