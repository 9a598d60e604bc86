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
///
/// The prefixes are kept in tries (exact prefixes, for [`PrefixList::insert`] and
/// [`PrefixList::remove`]); lookups use their union compiled to sorted, disjoint address
/// ranges, rebuilt after every change (a binary search per packet, no trie walk).
#[derive(Clone, Debug, Default)]
pub struct PrefixList {
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
    len: usize,
    v4_ranges: Vec<(u32, u32)>,
    v6_ranges: Vec<(u128, u128)>,
}

impl PrefixList {
    /// Build from prefixes (duplicates collapse).
    pub fn new<'a>(prefixes: impl IntoIterator<Item = &'a SourcePrefix>) -> Self {
        let mut list = Self::default();
        for prefix in prefixes {
            list.insert_prefix(prefix.0);
        }
        list.compile();
        list
    }

    /// Add a prefix.
    pub fn insert(&mut self, prefix: IpNet) {
        self.insert_prefix(prefix);
        self.compile();
    }

    /// Remove exactly this prefix (not the prefixes it covers); true when it was there.
    pub fn remove(&mut self, prefix: IpNet) -> bool {
        let removed = self.remove_prefix(prefix);
        self.compile();
        removed
    }

    /// Remove each of these exact prefixes (see [`PrefixList::remove`]), recompiling once.
    pub(crate) fn remove_all<'a>(&mut self, prefixes: impl IntoIterator<Item = &'a SourcePrefix>) {
        for prefix in prefixes {
            self.remove_prefix(prefix.0);
        }
        self.compile();
    }

    fn insert_prefix(&mut self, prefix: IpNet) {
        let added = match prefix {
            IpNet::V4(net) => self.v4.insert(net),
            IpNet::V6(net) => self.v6.insert(net),
        };
        if added {
            self.len += 1;
        }
    }

    fn remove_prefix(&mut self, prefix: IpNet) -> bool {
        let removed = match prefix {
            IpNet::V4(net) => self.v4.remove(&net),
            IpNet::V6(net) => self.v6.remove(&net),
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Rebuild the lookup ranges from the tries.
    fn compile(&mut self) {
        self.v4_ranges = merge_ranges(
            self.v4
                .iter()
                .map(|net| (u32::from(net.network()), u32::from(net.broadcast())))
                .collect(),
        );
        self.v6_ranges = merge_ranges(
            self.v6
                .iter()
                .map(|net| (u128::from(net.network()), u128::from(net.broadcast())))
                .collect(),
        );
    }

    /// True when a prefix of the list covers `address`.
    #[inline]
    pub fn contains(&self, address: IpAddr) -> bool {
        match address {
            IpAddr::V4(v4) => in_ranges(&self.v4_ranges, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6_ranges, u128::from(v6)),
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

/// Sort inclusive ranges and merge the overlapping and adjacent ones.
fn merge_ranges<T: Copy + Ord + num_step::Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 >= start || last.1.next() == Some(start) => {
                last.1 = last.1.max(end);
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// True when `value` lies in one of the sorted, disjoint inclusive `ranges`.
#[inline]
fn in_ranges<T: Copy + Ord>(ranges: &[(T, T)], value: T) -> bool {
    if ranges.len() <= 4 {
        return ranges
            .iter()
            .any(|&(start, end)| start <= value && value <= end);
    }
    let after = ranges.partition_point(|&(start, _)| start <= value);
    after > 0 && value <= ranges[after - 1].1
}

/// The successor of an address value, if any.
mod num_step {
    /// An unsigned integer with a checked successor.
    pub trait Step: Sized {
        /// `self + 1`, unless it overflows.
        fn next(self) -> Option<Self>;
    }

    impl Step for u32 {
        fn next(self) -> Option<Self> {
            self.checked_add(1)
        }
    }

    impl Step for u128 {
        fn next(self) -> Option<Self> {
            self.checked_add(1)
        }
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
    #[inline]
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

    /// The compiled ranges answer exactly as the tries' longest-prefix match, for lists
    /// of every size (linear and binary-search lookups), with nested, adjacent and
    /// removed prefixes.
    #[test]
    fn ranges_agree_with_the_tries() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut hits = [0u32; 2];
        for size in [1usize, 2, 3, 4, 5, 9, 40, 300] {
            let prefixes: Vec<SourcePrefix> = (0..size)
                .map(|_| {
                    let bits = next();
                    let v4 = Ipv4Net::new(
                        ((bits >> 32) as u32 & 0xff0f_0f00).into(),
                        8 + (bits % 25) as u8,
                    );
                    let v6 = Ipv6Net::new(
                        (u128::from(bits) << 64 | 0x2001_0db8 << 96).into(),
                        16 + (bits % 100) as u8,
                    );
                    let net = if bits & 1 == 0 {
                        IpNet::V4(v4.unwrap())
                    } else {
                        IpNet::V6(v6.unwrap())
                    };
                    SourcePrefix(net.trunc())
                })
                .collect();
            let mut list = PrefixList::new(&prefixes);
            list.remove_all(prefixes.iter().step_by(3));
            for _ in 0..4000 {
                let bits = next();
                let v4 = std::net::Ipv4Addr::from((bits >> 32) as u32 & 0xff0f_0fff);
                let v6 = std::net::Ipv6Addr::from(u128::from(bits) << 64 | 0x2001_0db8 << 96);
                for address in [IpAddr::V4(v4), IpAddr::V6(v6)] {
                    let expected = match address {
                        IpAddr::V4(v4) => list.v4.get_spm(&Ipv4Net::from(v4)).is_some(),
                        IpAddr::V6(v6) => list.v6.get_spm(&Ipv6Net::from(v6)).is_some(),
                    };
                    assert_eq!(
                        list.contains(address),
                        expected,
                        "{address} in {size} prefixes"
                    );
                    hits[usize::from(expected)] += 1;
                }
            }
        }
        assert!(hits[0] > 1000 && hits[1] > 300, "{hits:?}");
    }

    #[test]
    fn adjacent_prefixes_merge_and_edges_are_covered() {
        let prefixes: Vec<SourcePrefix> = [
            "10.0.0.0/25",
            "10.0.0.128/25",
            "0.0.0.0/32",
            "255.255.255.255/32",
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
        let list = PrefixList::new(&prefixes);
        assert_eq!(
            list.v4_ranges,
            vec![(0, 0), (0x0a00_0000, 0x0a00_00ff), (u32::MAX, u32::MAX)]
        );
        assert!(list.contains("255.255.255.255".parse().unwrap()));
        assert!(list.contains("0.0.0.0".parse().unwrap()));
        assert!(!list.contains("10.0.1.0".parse().unwrap()));
    }
}
