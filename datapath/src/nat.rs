//! Address rewriting: incremental checksum updates (RFC 1624) and in-place rewrites of the
//! source or destination address/port of an IPv4/IPv6 TCP/UDP packet, plus iptables-style
//! DNAT / SNAT / MASQUERADE rules that use [`crate::conntrack`] to translate the replies.
//!
//! The rewrite primitives touch only the bytes that change (addresses, ports, the IPv4
//! header checksum, the TCP/UDP checksum); they never re-checksum whole packets and never
//! panic on any frame: a frame they cannot rewrite gets a [`RewriteError`]. They do not
//! change packet length; tunnelling lives in the director. This module does not route.

use std::net::{IpAddr, SocketAddr};

use crate::conntrack::{ConnTrack, FlowKey, Translation};
use crate::packet::{L3, PacketMeta, ip_proto};
use crate::verdict::TimeNs;

/// Why a frame could not be rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// Not an IPv4/IPv6 packet with a TCP/UDP header we can reach.
    #[error("not a rewritable TCP/UDP packet")]
    NotTransport,
    /// The new address is of another family than the packet.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// The frame is shorter than its headers claim.
    #[error("truncated frame")]
    Truncated,
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
}

/// RFC 1624 eqn. 3: the checksum after the 16-bit-aligned field `old` became `new`.
pub fn checksum_adjust(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!checksum);
    sum += words(old).map(|w| !w & 0xffff).sum::<u32>();
    sum += words(new).sum::<u32>();
    !fold(sum)
}

fn read_u16(frame: &[u8], at: usize) -> Result<u16, RewriteError> {
    let bytes = frame.get(at..at + 2).ok_or(RewriteError::Truncated)?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn write_u16(frame: &mut [u8], at: usize, value: u16) -> Result<(), RewriteError> {
    let bytes = frame.get_mut(at..at + 2).ok_or(RewriteError::Truncated)?;
    bytes.copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Which end of the packet to rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Source address and port.
    Source,
    /// Destination address and port.
    Destination,
}

struct Layout {
    address_at: usize,
    address_len: usize,
    ip_checksum_at: Option<usize>,
    port_at: Option<usize>,
    l4_checksum_at: Option<usize>,
    udp: bool,
}

fn layout(meta: &PacketMeta, end: End) -> Result<Layout, RewriteError> {
    let l3 = usize::from(meta.l3_offset);
    let (address_at, address_len, ip_checksum_at) = match (meta.l3, end) {
        (L3::Ipv4, End::Source) => (l3 + 12, 4, Some(l3 + 10)),
        (L3::Ipv4, End::Destination) => (l3 + 16, 4, Some(l3 + 10)),
        (L3::Ipv6, End::Source) => (l3 + 8, 16, None),
        (L3::Ipv6, End::Destination) => (l3 + 24, 16, None),
        _ => return Err(RewriteError::NotTransport),
    };
    let l4 = usize::from(meta.l4_offset);
    let has_l4 = l4 != 0 && meta.sport.is_some();
    let (port_at, l4_checksum_at, udp) = match meta.proto {
        Some(ip_proto::TCP) if has_l4 => (Some(l4 + port_offset(end)), Some(l4 + 16), false),
        Some(ip_proto::UDP) if has_l4 => (Some(l4 + port_offset(end)), Some(l4 + 6), true),
        _ if meta.frag.is_fragment => (None, None, false),
        _ => return Err(RewriteError::NotTransport),
    };
    Ok(Layout {
        address_at,
        address_len,
        ip_checksum_at,
        port_at,
        l4_checksum_at,
        udp,
    })
}

fn port_offset(end: End) -> usize {
    match end {
        End::Source => 0,
        End::Destination => 2,
    }
}

/// Rewrite the source or destination address and port of a TCP/UDP packet in place,
/// updating the IPv4 header checksum and the TCP/UDP checksum incrementally.
pub fn rewrite(
    frame: &mut [u8],
    meta: &PacketMeta,
    end: End,
    to: SocketAddr,
) -> Result<(), RewriteError> {
    let layout = layout(meta, end)?;
    let mut new_buffer = [0u8; 16];
    match (to.ip(), layout.address_len) {
        (IpAddr::V4(v4), 4) => new_buffer[..4].copy_from_slice(&v4.octets()),
        (IpAddr::V6(v6), 16) => new_buffer.copy_from_slice(&v6.octets()),
        _ => return Err(RewriteError::FamilyMismatch),
    }
    let new_address = &new_buffer[..layout.address_len];
    let range = layout.address_at..layout.address_at + layout.address_len;
    let mut old_buffer = [0u8; 16];
    let current = frame.get(range.clone()).ok_or(RewriteError::Truncated)?;
    old_buffer[..layout.address_len].copy_from_slice(current);
    let old_address = &old_buffer[..layout.address_len];
    let mut l4_checksum = match layout.l4_checksum_at {
        Some(at) => Some(read_u16(frame, at)?),
        None => None,
    };
    let udp_without_checksum = layout.udp && l4_checksum == Some(0) && meta.l3 == L3::Ipv4;
    if let Some(at) = layout.port_at {
        let old_port = read_u16(frame, at)?;
        write_u16(frame, at, to.port())?;
        l4_checksum = l4_checksum
            .map(|c| checksum_adjust(c, &old_port.to_be_bytes(), &to.port().to_be_bytes()));
    }
    frame[range].copy_from_slice(new_address);
    if let Some(at) = layout.ip_checksum_at {
        let checksum = read_u16(frame, at)?;
        write_u16(
            frame,
            at,
            checksum_adjust(checksum, old_address, new_address),
        )?;
    }
    if let (Some(at), Some(checksum)) = (layout.l4_checksum_at, l4_checksum) {
        let adjusted = checksum_adjust(checksum, old_address, new_address);
        let value = match (udp_without_checksum, layout.udp, adjusted) {
            (true, _, _) => 0,
            (false, true, 0) => 0xffff,
            (_, _, value) => value,
        };
        write_u16(frame, at, value)?;
    }
    Ok(())
}

/// An iptables-style NAT action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatAction {
    /// `-j DNAT --to-destination addr[:port]` (PREROUTING).
    Dnat {
        /// New destination address.
        address: IpAddr,
        /// New destination port (unchanged when `None`).
        port: Option<u16>,
    },
    /// `-j SNAT --to-source addr` (POSTROUTING).
    Snat {
        /// New source address.
        address: IpAddr,
    },
    /// `-j MASQUERADE`: SNAT to the egress interface's address.
    Masquerade,
}

/// Which packets a rule applies to (every present field must match).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatMatch {
    /// IP protocol.
    pub proto: Option<u8>,
    /// Destination address.
    pub destination: Option<IpAddr>,
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Source network (address, prefix length).
    pub source: Option<(IpAddr, u8)>,
}

fn prefix_contains(network: IpAddr, prefix: u8, address: IpAddr) -> bool {
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl NatMatch {
    /// Whether the flow matches.
    pub fn matches(&self, flow: &FlowKey) -> bool {
        self.proto.is_none_or(|p| p == flow.proto)
            && self.destination.is_none_or(|d| d == flow.destination.ip())
            && self
                .destination_port
                .is_none_or(|p| p == flow.destination.port())
            && self
                .source
                .is_none_or(|(network, prefix)| prefix_contains(network, prefix, flow.source.ip()))
    }
}

/// One NAT rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatRule {
    /// Match.
    pub matcher: NatMatch,
    /// Action.
    pub action: NatAction,
}

/// What the NAT stage did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatOutcome {
    /// No rule and no tracked connection: unchanged.
    Untouched,
    /// Rewritten (new or tracked flow); the new flow key.
    Translated(FlowKey),
    /// The connection-tracking table was full: the new flow was not tracked or rewritten.
    TableFull,
}

/// An iptables-style NAT table: ordered rules, first match wins, tracked per flow.
#[derive(Clone, Debug)]
pub struct Nat {
    rules: Vec<NatRule>,
    masquerade_address: Option<IpAddr>,
    /// The connection tracking behind the rules.
    pub conntrack: ConnTrack,
}

impl Nat {
    /// A NAT table; `masquerade_address` is the egress address MASQUERADE uses.
    pub fn new(
        rules: Vec<NatRule>,
        masquerade_address: Option<IpAddr>,
        conntrack: ConnTrack,
    ) -> Self {
        Self {
            rules,
            masquerade_address,
            conntrack,
        }
    }

    fn translate_new(&self, flow: &FlowKey) -> Option<FlowKey> {
        let rule = self.rules.iter().find(|r| r.matcher.matches(flow))?;
        let mut translated = *flow;
        match rule.action {
            NatAction::Dnat { address, port } => {
                translated.destination =
                    SocketAddr::new(address, port.unwrap_or(flow.destination.port()));
            }
            NatAction::Snat { address } => {
                translated.source = SocketAddr::new(address, flow.source.port());
            }
            NatAction::Masquerade => {
                let address = self.masquerade_address?;
                translated.source = SocketAddr::new(address, flow.source.port());
            }
        }
        Some(translated)
    }

    /// Translate one packet: tracked flows (either direction) first, then the rules.
    pub fn process(
        &mut self,
        now: TimeNs,
        frame: &mut [u8],
        meta: &PacketMeta,
    ) -> Result<NatOutcome, RewriteError> {
        let Some(flow) = FlowKey::from_meta(meta) else {
            return Ok(NatOutcome::Untouched);
        };
        let translation = match self.conntrack.lookup(now, &flow) {
            Some(found) => found,
            None => {
                let Some(translated) = self.translate_new(&flow) else {
                    return Ok(NatOutcome::Untouched);
                };
                let Some(tracked) = self.conntrack.insert(now, flow, translated) else {
                    return Ok(NatOutcome::TableFull);
                };
                Translation { to: tracked }
            }
        };
        apply(frame, meta, &flow, &translation.to)?;
        Ok(NatOutcome::Translated(translation.to))
    }
}

/// Rewrite `frame` (whose flow is `from`) so that its flow becomes `to`.
pub fn apply(
    frame: &mut [u8],
    meta: &PacketMeta,
    from: &FlowKey,
    to: &FlowKey,
) -> Result<(), RewriteError> {
    if from.destination != to.destination {
        rewrite(frame, meta, End::Destination, to.destination)?;
    }
    if from.source != to.source {
        rewrite(frame, meta, End::Source, to.source)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::PacketBuilder;
    use crate::packet::{LinkType, parse};
    use std::net::Ipv4Addr;

    fn meta(frame: &[u8]) -> PacketMeta {
        parse(LinkType::Ethernet, frame, frame.len() as u32, 0)
    }

    #[test]
    fn dnat_then_reply_is_reversed_with_valid_checksums() {
        let rule = NatRule {
            matcher: NatMatch {
                proto: Some(ip_proto::TCP),
                destination_port: Some(80),
                ..NatMatch::default()
            },
            action: NatAction::Dnat {
                address: "10.0.1.2".parse().unwrap(),
                port: Some(8080),
            },
        };
        let mut nat = Nat::new(vec![rule], None, ConnTrack::new(16));
        let (client, vip) = (Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(192, 0, 2, 10));
        let mut request = PacketBuilder::eth()
            .ipv4(client, vip)
            .tcp(4000, 80)
            .syn()
            .build();
        let outcome = {
            let m = meta(&request);
            nat.process(0, &mut request, &m)
        }
        .unwrap();
        assert!(matches!(outcome, NatOutcome::Translated(_)));
        let rewritten = meta(&request);
        assert_eq!(rewritten.invalid, None);
        assert_eq!(
            (rewritten.dst, rewritten.dport),
            (Some("10.0.1.2".parse().unwrap()), Some(8080))
        );
        let real = Ipv4Addr::new(10, 0, 1, 2);
        let mut reply = PacketBuilder::eth()
            .ipv4(real, client)
            .tcp(8080, 4000)
            .syn_ack()
            .build();
        {
            let m = meta(&reply);
            nat.process(1, &mut reply, &m)
        }
        .unwrap();
        let back = meta(&reply);
        assert_eq!(back.invalid, None);
        assert_eq!((back.src, back.sport), (Some(IpAddr::V4(vip)), Some(80)));
    }

    #[test]
    fn masquerade_moves_colliding_source_ports_and_full_table_refuses() {
        let rule = NatRule {
            matcher: NatMatch::default(),
            action: NatAction::Masquerade,
        };
        let mut nat = Nat::new(
            vec![rule],
            Some("203.0.113.1".parse().unwrap()),
            ConnTrack::new(2),
        );
        let server = Ipv4Addr::new(192, 0, 2, 99);
        let mut ports = Vec::new();
        for host in [1u8, 2] {
            let mut frame = PacketBuilder::eth()
                .ipv4(Ipv4Addr::new(10, 0, 0, host), server)
                .udp(5000, 53)
                .build();
            let NatOutcome::Translated(flow) = {
                let m = meta(&frame);
                nat.process(0, &mut frame, &m)
            }
            .unwrap() else {
                panic!("translated");
            };
            assert_eq!(meta(&frame).invalid, None);
            ports.push(flow.source.port());
        }
        assert_eq!(ports, [5000, 5001]);
        let mut third = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 0, 3), server)
            .udp(5000, 53)
            .build();
        let outcome = {
            let m = meta(&third);
            nat.process(0, &mut third, &m)
        }
        .unwrap();
        assert_eq!(outcome, NatOutcome::TableFull);
        assert_eq!(nat.conntrack.counters.overflows, 1);
    }
}
