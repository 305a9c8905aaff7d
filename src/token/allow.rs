//! A token's IP allowlist (docs/reference/http-contract.md, "IP allowlists"): the
//! networks its requests may come from. Empty: any address.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

/// Most networks one token's allowlist may hold.
pub const MAX_ALLOWED_NETWORKS: usize = 64;

/// Why an allowlist was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllowError {
    /// Not a CIDR block nor an address (the entry, cut to 64 characters).
    #[error("{0:?} is not a CIDR block (203.0.113.0/24, 2001:db8::/32) or an address")]
    Syntax(String),
    /// More than [`MAX_ALLOWED_NETWORKS`].
    #[error("{0} networks, at most 64")]
    TooMany(usize),
}

/// The networks a token may be used from: checked, host bits cleared,
/// sorted, without duplicates. Cheap to clone (shared).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct AllowedIps(Option<Arc<[IpNet]>>);

impl AllowedIps {
    /// From CIDR blocks or single addresses (`203.0.113.7` is
    /// `203.0.113.7/32`).
    pub fn new<I, S>(entries: I) -> Result<Self, AllowError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| AllowError::Syntax(entry.chars().take(64).collect()))?;
            nets.push(canonical_net(net.trunc()));
        }
        nets.sort_unstable();
        nets.dedup();
        if nets.len() > MAX_ALLOWED_NETWORKS {
            return Err(AllowError::TooMany(nets.len()));
        }
        Ok(Self((!nets.is_empty()).then(|| nets.into())))
    }

    /// From the space-separated form (a stored record).
    pub fn parse_spaced(text: &str) -> Result<Self, AllowError> {
        Self::new(text.split(' ').filter(|s| !s.is_empty()))
    }

    /// The networks, sorted.
    pub fn as_slice(&self) -> &[IpNet] {
        self.0.as_deref().unwrap_or_default()
    }

    /// Whether the list is empty (any address may use the token).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether a request from `client` may use the token. An unknown
    /// client (an in-process service that did not say) is refused when
    /// there is a list: fail closed.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        let Some(nets) = &self.0 else {
            return true;
        };
        client.is_some_and(|ip| {
            let ip = ip.to_canonical();
            nets.iter().any(|net| net.contains(&ip))
        })
    }

    /// Space-separated, as stored.
    pub fn to_spaced(&self) -> String {
        let list: Vec<String> = self.as_slice().iter().map(ToString::to_string).collect();
        list.join(" ")
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120`) as the IPv4 one it
/// names, so it matches clients the way they are resolved.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4)
            }
            _ => net,
        },
        IpNet::V4(_) => net,
    }
}

impl fmt::Debug for AllowedIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for AllowedIps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice().iter().map(ToString::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_checks_and_normalizes() {
        let list = AllowedIps::new([
            "203.0.113.77/24",
            "198.51.100.7",
            "2001:db8::1/32",
            "::ffff:192.0.2.0/120",
            "203.0.113.0/24",
        ])
        .unwrap();
        assert_eq!(
            list.to_spaced(),
            "192.0.2.0/24 198.51.100.7/32 203.0.113.0/24 2001:db8::/32"
        );
        assert_eq!(AllowedIps::parse_spaced(&list.to_spaced()).unwrap(), list);
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"["192.0.2.0/24","198.51.100.7/32","203.0.113.0/24","2001:db8::/32"]"#
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "example.com",
            "10.0.0.0/8 11.0.0.0/8",
            "1.2.3",
        ] {
            assert!(
                matches!(AllowedIps::new([bad]), Err(AllowError::Syntax(_))),
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..65).map(|i| format!("10.0.{i}.0/24")).collect();
        assert_eq!(AllowedIps::new(many), Err(AllowError::TooMany(65)));
        assert!(AllowedIps::parse_spaced("").unwrap().is_empty());
    }

    #[test]
    fn allows_inside_and_fails_closed() {
        let list = AllowedIps::new(["203.0.113.0/24", "2001:db8::/32"]).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(list.allows(ip("203.0.113.9")));
        assert!(list.allows(ip("::ffff:203.0.113.9")), "mapped");
        assert!(list.allows(ip("2001:db8:1::5")));
        assert!(!list.allows(ip("203.0.114.1")));
        assert!(!list.allows(ip("2001:db9::1")));
        assert!(!list.allows(None), "unknown client");
        assert!(AllowedIps::default().allows(None));
        assert!(AllowedIps::default().allows(ip("192.0.2.1")));
    }
}
