//! Allow-lists for the hosts a request may make the worker connect to (Janus URLs, RTMP
//! destinations): names, `*.domain` wildcards and IP ranges in CIDR notation.
//!
//! An address written in a URL (`ws://127.0.0.1:6379`) is matched against the ranges only; a
//! name is matched against the names and wildcards only (it is not resolved here: listing a
//! name trusts whoever answers for it in DNS).

use std::net::IpAddr;

/// One entry of a [`HostList`].
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// An exact host name (lower case).
    Name(String),
    /// Any name under this domain (`*.example.com` → `example.com`).
    Domain(String),
    /// Addresses in `net/prefix`.
    Range(IpAddr, u8),
}

impl Entry {
    fn parse(s: &str) -> Entry {
        if let Some(domain) = s.strip_prefix("*.") {
            return Entry::Domain(domain.to_string());
        }
        if let Some((net, bits)) = s.split_once('/') {
            if let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u8>()) {
                let max = if net.is_ipv4() { 32 } else { 128 };
                if bits <= max {
                    return Entry::Range(net, bits);
                }
            }
        }
        match s.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => Entry::Range(ip, if ip.is_ipv4() { 32 } else { 128 }),
            Err(_) => Entry::Name(s.to_string()),
        }
    }

    fn allows(&self, host: &str, ip: Option<IpAddr>) -> bool {
        match (self, ip) {
            (Entry::Range(net, bits), Some(ip)) => in_range(ip, *net, *bits),
            (Entry::Name(n), None) => host == n,
            (Entry::Domain(d), None) => host.ends_with(&format!(".{d}")),
            _ => false,
        }
    }
}

/// Whether `ip` is in `net/bits` (an IPv4-mapped IPv6 address counts as its IPv4 address).
fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// An optional allow-list: host names, `*.domain` for any name under it, IP addresses and
/// CIDR ranges (`10.0.0.0/8`, `fd00::/8`). Unset: every host is allowed.
#[derive(Debug, Clone, Default)]
pub struct HostList(Option<Vec<Entry>>);

impl HostList {
    /// From a comma-separated list (empty or unset: every host allowed).
    pub fn parse(list: Option<&str>) -> HostList {
        let entries: Vec<Entry> = list
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .map(|h| Entry::parse(&h))
            .collect();
        HostList((!entries.is_empty()).then_some(entries))
    }

    /// Whether a list is set at all.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `url`'s host is allowed.
    pub fn allows_url(&self, url: &str) -> bool {
        let Some(list) = &self.0 else { return true };
        let Some(host) = url_host(url) else {
            return false;
        };
        let ip = host.parse::<IpAddr>().ok();
        list.iter().any(|e| e.allows(&host, ip))
    }
}

/// The host of `scheme://[user@]host[:port]/…`, lower case (brackets kept off IPv6).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_match_names_and_subdomains() {
        assert_eq!(
            url_host("rtmp://User@Live.Example.com:1935/app").as_deref(),
            Some("live.example.com")
        );
        assert_eq!(url_host("wss://[::1]:8989/x").as_deref(), Some("::1"));
        let l = HostList::parse(Some("janus.local, *.example.com"));
        assert!(l.allows_url("ws://janus.local:8188"));
        assert!(l.allows_url("wss://a.b.example.com/janus"));
        assert!(!l.allows_url("wss://example.com.evil.net"));
        assert!(!l.allows_url("ws://10.0.0.1"));
        assert!(HostList::parse(None).allows_url("ws://anything"));
        assert!(HostList::parse(Some(" , ")).allows_url("ws://anything"));
    }

    #[test]
    fn host_lists_match_addresses_by_range() {
        let l = HostList::parse(Some("10.20.0.0/16, 192.0.2.7, fd00::/8, media.example"));
        assert!(l.allows_url("ws://10.20.3.4:8188"));
        assert!(!l.allows_url("ws://10.21.0.1:8188"));
        assert!(l.allows_url("rtmp://192.0.2.7/live/x"));
        assert!(!l.allows_url("rtmp://192.0.2.8/live/x"));
        assert!(l.allows_url("wss://[fd12::1]:8989/janus"));
        assert!(!l.allows_url("wss://[fe80::1]/janus"));
        // An IPv4 address written as IPv6 is still that address.
        assert!(l.allows_url("ws://[::ffff:10.20.0.9]:8188"));
        assert!(!l.allows_url("ws://[::ffff:127.0.0.1]:6379"));
        // Loopback is not in the list, whatever port or user is given.
        assert!(!l.allows_url("ws://127.0.0.1:16379"));
        assert!(!l.allows_url("rtmp://u:p@127.0.0.1:6379/live/x"));
        // A name is not an address, and an address is not a name.
        assert!(l.allows_url("rtmp://media.example/live"));
        assert!(!HostList::parse(Some("10.0.0.0/8")).allows_url("ws://10.example/"));
        assert!(HostList::parse(Some("0.0.0.0/0")).allows_url("ws://203.0.113.9"));
        assert!(!HostList::parse(Some("0.0.0.0/0")).allows_url("ws://janus.local"));
    }
}
