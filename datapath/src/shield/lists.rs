//! Source-prefix sets (IPv4 and IPv6, longest-prefix tries from `prefix-trie`) and port /
//! protocol sets, as the shield's lists compile to. Built once by the control plane and
//! only read while packets flow. No policy here: the stages decide what a hit means.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixSet;
use serde::{Deserialize, Deserializer};

/// A source address or prefix as written in the configuration: `203.0.113.0/24`,
/// `2001:db8::/32`, or a bare address (a host prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePrefix(pub IpNet);

impl FromStr for SourcePrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Self(net.trunc()));
        }
        text.parse::<IpAddr>()
            .map(|address| Self(IpNet::from(address)))
            .map_err(|_| format!("`{text}` is not an IP address or prefix"))
    }
}

impl fmt::Display for SourcePrefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for SourcePrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of IPv4 and IPv6 prefixes answering "does any prefix cover this address?".
#[derive(Clone, Debug, Default)]
pub struct PrefixList {
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
    len: usize,
}

impl PrefixList {
    /// Build from prefixes (duplicates collapse).
    pub fn new<'a>(prefixes: impl IntoIterator<Item = &'a SourcePrefix>) -> Self {
        let mut list = Self::default();
        for prefix in prefixes {
            list.insert(prefix.0);
        }
        list
    }

    /// Add a prefix.
    pub fn insert(&mut self, prefix: IpNet) {
        let added = match prefix {
            IpNet::V4(net) => self.v4.insert(net),
            IpNet::V6(net) => self.v6.insert(net),
        };
        if added {
            self.len += 1;
        }
    }

    /// Remove exactly this prefix (not the prefixes it covers); true when it was there.
    pub fn remove(&mut self, prefix: IpNet) -> bool {
        let removed = match prefix {
            IpNet::V4(net) => self.v4.remove(&net),
            IpNet::V6(net) => self.v6.remove(&net),
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// True when a prefix of the list covers `address`.
    pub fn contains(&self, address: IpAddr) -> bool {
        if self.len == 0 {
            return false;
        }
        match address {
            IpAddr::V4(v4) => self.v4.get_spm(&Ipv4Net::from(v4)).is_some(),
            IpAddr::V6(v6) => self.v6.get_spm(&Ipv6Net::from(v6)).is_some(),
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True without prefixes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A sorted set of ports (or protocol numbers widened to u16).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet(Vec<u16>);

impl PortSet {
    /// Build from values (sorted, deduplicated).
    pub fn new(values: impl IntoIterator<Item = u16>) -> Self {
        let mut values: Vec<u16> = values.into_iter().collect();
        values.sort_unstable();
        values.dedup();
        Self(values)
    }

    /// Membership.
    pub fn contains(&self, value: u16) -> bool {
        match self.0.len() {
            0 => false,
            1..=8 => self.0.contains(&value),
            _ => self.0.binary_search(&value).is_ok(),
        }
    }

    /// The values, ascending.
    pub fn values(&self) -> &[u16] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_addresses_of_both_families() {
        let prefixes: Vec<SourcePrefix> = ["203.0.113.0/24", "2001:db8::/32", "198.51.100.9"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let list = PrefixList::new(&prefixes);
        assert_eq!(list.len(), 3);
        assert!(list.contains("203.0.113.77".parse().unwrap()));
        assert!(!list.contains("203.0.114.1".parse().unwrap()));
        assert!(list.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!list.contains("2001:db9::5".parse().unwrap()));
        assert!(list.contains("198.51.100.9".parse().unwrap()));
        assert!(!list.contains("198.51.100.10".parse().unwrap()));
        assert!("10.0.0.300".parse::<SourcePrefix>().is_err());
    }
}
