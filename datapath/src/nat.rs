//! Address rewriting: incremental checksum updates (RFC 1624) and in-place rewrites of the
//! source or destination address/port of an IPv4/IPv6 TCP/UDP packet, plus iptables-style
//! DNAT / SNAT / MASQUERADE rules that use [`crate::conntrack`] to translate the replies.
//!
//! The rewrite primitives touch only the bytes that change (addresses, ports, the IPv4
//! header checksum, the TCP/UDP checksum); they never re-checksum whole packets and never
//! panic on any frame: a frame they cannot rewrite gets a [`RewriteError`]. They do not
//! change packet length; tunnelling lives in the director. This module does not route.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::conntrack::{ConnTrack, Direction, FlowKey, SourcePorts};
use crate::packet::{L3, PacketMeta, ip_proto};
use crate::verdict::TimeNs;

pub mod config;

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

/// The one's-complement sum that turns a checksum over 16-bit-aligned `old` into one over
/// `new` (old words complemented, new words added; both of even length).
#[inline]
fn change_sum(old: &[u8], new: &[u8]) -> u32 {
    let (old_words, _) = old.as_chunks::<2>();
    let (new_words, _) = new.as_chunks::<2>();
    let removed: u32 = old_words
        .iter()
        .map(|word| u32::from(!u16::from_be_bytes(*word)))
        .sum();
    let added: u32 = new_words
        .iter()
        .map(|word| u32::from(u16::from_be_bytes(*word)))
        .sum();
    removed + added
}

/// RFC 1624 eqn. 3 with a precomputed [`change_sum`] (plus port changes).
#[inline]
fn apply_change(checksum: u16, change: u32) -> u16 {
    !fold(u32::from(!checksum) + change)
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
    let current = frame.get(range.clone()).ok_or(RewriteError::Truncated)?;
    // The address change, summed once for both checksums (RFC 1624 eqn. 3 applied to
    // several fields at once gives what applying it field by field gives).
    let address_change = change_sum(current, new_address);
    let l4_checksum = match layout.l4_checksum_at {
        Some(at) => Some(read_u16(frame, at)?),
        None => None,
    };
    let udp_without_checksum = layout.udp && l4_checksum == Some(0) && meta.l3 == L3::Ipv4;
    let mut l4_change = address_change;
    if let Some(at) = layout.port_at {
        let old_port = read_u16(frame, at)?;
        write_u16(frame, at, to.port())?;
        l4_change += u32::from(!old_port) + u32::from(to.port());
    }
    frame[range].copy_from_slice(new_address);
    if let Some(at) = layout.ip_checksum_at {
        let checksum = read_u16(frame, at)?;
        write_u16(frame, at, apply_change(checksum, address_change))?;
    }
    if let (Some(at), Some(checksum)) = (layout.l4_checksum_at, l4_checksum) {
        let adjusted = apply_change(checksum, l4_change);
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
    /// `nat PREROUTING -j DNAT --to-destination addr[:port]`.
    Dnat {
        /// New destination address.
        address: IpAddr,
        /// New destination port (unchanged when `None`).
        port: Option<u16>,
    },
    /// `nat POSTROUTING -j SNAT --to-source addr[:min-max]`.
    Snat {
        /// New source address.
        address: IpAddr,
        /// Source ports it may take (the kernel's default class when `None`).
        ports: Option<(u16, u16)>,
    },
    /// `nat POSTROUTING -o IFACE -j MASQUERADE [--to-ports min-max]`: SNAT to the output
    /// interface's address.
    Masquerade {
        /// Source ports it may take (the kernel's default class when `None`).
        ports: Option<(u16, u16)>,
    },
}

impl NatAction {
    /// Whether the rule belongs to POSTROUTING (source NAT).
    pub fn is_source(&self) -> bool {
        !matches!(self, Self::Dnat { .. })
    }
}

/// Which packets a rule applies to (every present field must match). Only TCP and UDP
/// are translated (connection tracking keys on ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatMatch {
    /// IP protocol.
    pub proto: Option<u8>,
    /// Source network.
    pub source: Option<IpNet>,
    /// Destination network (a single address as /32 or /128).
    pub destination: Option<IpNet>,
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Output interface (index into [`Nat::interfaces`]); POSTROUTING rules only.
    pub out: Option<usize>,
}

impl NatMatch {
    /// Whether the flow, leaving by `out` (when known), matches.
    pub fn matches(&self, flow: &FlowKey, out: Option<usize>) -> bool {
        self.proto.is_none_or(|p| p == flow.proto)
            && self.source.is_none_or(|n| n.contains(&flow.source.ip()))
            && self
                .destination
                .is_none_or(|n| n.contains(&flow.destination.ip()))
            && self
                .destination_port
                .is_none_or(|p| p == flow.destination.port())
            && self.out.is_none_or(|o| Some(o) == out)
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

/// An appliance interface as NAT sees it: its name and its address on its network (the
/// network decides the output interface of a destination; the address is what
/// MASQUERADE uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatInterface {
    /// Name (`inside`).
    pub name: String,
    /// Address and prefix (`10.0.3.1/24`).
    pub address: IpNet,
}

/// What the NAT stage did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatOutcome {
    /// No rule and no tracked connection: unchanged.
    Untouched,
    /// Rewritten (new or tracked flow); the new flow key.
    Translated(FlowKey),
    /// The connection-tracking table was full (or no source port was free): the new flow
    /// was neither tracked nor rewritten; the caller drops it.
    TableFull,
}

/// Counters of the NAT stage (the tracking table counts its own).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NatCounters {
    /// Connections each rule translated (its first packets, like the nat table's counters).
    pub rule_hits: Vec<u64>,
    /// Packets translated through tracked connections (both directions).
    pub tracked: u64,
    /// Frames a rule or a tracked connection could not rewrite.
    pub rewrite_errors: u64,
}

/// The iptables-style NAT table: DNAT rules (PREROUTING) and SNAT / MASQUERADE rules
/// (POSTROUTING), first match wins per hook, every translated connection tracked (one
/// entry per hook that changed it) so later packets get the same rewrite and replies the
/// reverse one.
#[derive(Clone, Debug)]
pub struct Nat {
    rules: Vec<NatRule>,
    interfaces: Vec<NatInterface>,
    /// The connection tracking behind the rules.
    pub conntrack: ConnTrack,
    /// Counters.
    pub counters: NatCounters,
}

impl Nat {
    /// A NAT table over validated rules whose `out` indexes `interfaces`.
    pub fn new(rules: Vec<NatRule>, interfaces: Vec<NatInterface>, conntrack: ConnTrack) -> Self {
        let counters = NatCounters {
            rule_hits: vec![0; rules.len()],
            ..NatCounters::default()
        };
        Self {
            rules,
            interfaces,
            conntrack,
            counters,
        }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[NatRule] {
        &self.rules
    }

    /// The interfaces, in order.
    pub fn interfaces(&self) -> &[NatInterface] {
        &self.interfaces
    }

    /// The interface a destination leaves by: the longest network containing it.
    pub fn out_interface(&self, destination: IpAddr) -> Option<usize> {
        self.interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.address.contains(&destination))
            .max_by_key(|(index, i)| (i.address.prefix_len(), std::cmp::Reverse(*index)))
            .map(|(index, _)| index)
    }

    /// Replies of translated connections: every reverse translation tracked for the flow
    /// (source NAT, then destination NAT under it) is undone. `None` when the packet is
    /// not such a reply (it is left untouched).
    pub fn reply(
        &mut self,
        now: TimeNs,
        frame: &mut [u8],
        meta: &PacketMeta,
    ) -> Option<Result<FlowKey, RewriteError>> {
        let original = FlowKey::from_meta(meta)?;
        let mut flow = original;
        for _ in 0..2 {
            match self.conntrack.lookup_directed(now, &flow) {
                Some((Direction::Reply, found)) => flow = found.to,
                _ => break,
            }
        }
        if flow == original {
            return None;
        }
        self.counters.tracked += 1;
        let result = apply(frame, meta, &original, &flow).map(|()| flow);
        self.counters.rewrite_errors += u64::from(result.is_err());
        Some(result)
    }

    /// PREROUTING: the destination part of a tracked connection, or the first DNAT rule
    /// matching a new one.
    pub fn prerouting(
        &mut self,
        now: TimeNs,
        frame: &mut [u8],
        meta: &PacketMeta,
    ) -> Result<NatOutcome, RewriteError> {
        self.hook(now, frame, meta, false)
    }

    /// POSTROUTING: the source part of a tracked connection, or the first SNAT /
    /// MASQUERADE rule matching a new one (its output interface found from the
    /// destination). `meta` must describe `frame` as it is now.
    pub fn postrouting(
        &mut self,
        now: TimeNs,
        frame: &mut [u8],
        meta: &PacketMeta,
    ) -> Result<NatOutcome, RewriteError> {
        self.hook(now, frame, meta, true)
    }

    fn hook(
        &mut self,
        now: TimeNs,
        frame: &mut [u8],
        meta: &PacketMeta,
        source_nat: bool,
    ) -> Result<NatOutcome, RewriteError> {
        let Some(flow) = FlowKey::from_meta(meta) else {
            return Ok(NatOutcome::Untouched);
        };
        let to = match self.conntrack.lookup_directed(now, &flow) {
            Some((Direction::Original, found)) => {
                let mut to = flow;
                if source_nat {
                    to.source = found.to.source;
                } else {
                    to.destination = found.to.destination;
                }
                if to == flow {
                    return Ok(NatOutcome::Untouched);
                }
                self.counters.tracked += 1;
                to
            }
            Some((Direction::Reply, _)) => return Ok(NatOutcome::Untouched),
            None => match self.translate_new(now, &flow, source_nat) {
                Some(NatOutcome::Translated(to)) => to,
                Some(other) => return Ok(other),
                None => return Ok(NatOutcome::Untouched),
            },
        };
        let result = apply(frame, meta, &flow, &to);
        self.counters.rewrite_errors += u64::from(result.is_err());
        result.map(|()| NatOutcome::Translated(to))
    }

    /// The first rule of the hook matching a new flow, tracked. `None`: no rule matched.
    fn translate_new(
        &mut self,
        now: TimeNs,
        flow: &FlowKey,
        source_nat: bool,
    ) -> Option<NatOutcome> {
        let out = source_nat
            .then(|| self.out_interface(flow.destination.ip()))
            .flatten();
        let (index, rule) =
            self.rules.iter().enumerate().find(|(_, r)| {
                r.action.is_source() == source_nat && r.matcher.matches(flow, out)
            })?;
        let mut wanted = *flow;
        let ports = match rule.action {
            NatAction::Dnat { address, port } => {
                wanted.destination =
                    SocketAddr::new(address, port.unwrap_or(flow.destination.port()));
                SourcePorts::Fixed
            }
            NatAction::Snat { address, ports } => {
                wanted.source = SocketAddr::new(address, flow.source.port());
                ports.map_or(SourcePorts::KernelDefault, |(a, b)| {
                    SourcePorts::Range(a, b)
                })
            }
            NatAction::Masquerade { ports } => {
                let address = self.interfaces.get(out?)?.address.addr();
                wanted.source = SocketAddr::new(address, flow.source.port());
                ports.map_or(SourcePorts::KernelDefault, |(a, b)| {
                    SourcePorts::Range(a, b)
                })
            }
        };
        let Some(unique) = self.conntrack.unique_tuple(wanted, ports) else {
            return Some(NatOutcome::TableFull);
        };
        let Some(tracked) = self.conntrack.insert(now, *flow, unique) else {
            return Some(NatOutcome::TableFull);
        };
        self.counters.rule_hits[index] += 1;
        Some(NatOutcome::Translated(tracked))
    }
}

/// A parsed description of a frame after NAT rewrote it to `flow` (rewrites keep every
/// offset and length; only addresses and ports change).
pub fn rewritten_meta(meta: &PacketMeta, flow: &FlowKey) -> PacketMeta {
    let mut rewritten = meta.clone();
    rewritten.src = Some(flow.source.ip());
    rewritten.dst = Some(flow.destination.ip());
    rewritten.sport = Some(flow.source.port());
    rewritten.dport = Some(flow.destination.port());
    rewritten
}

/// The flow of `frame` as it is now, read at the offsets `meta` found (after a director
/// rewrote addresses in place); `None` when the frame is not the one `meta` describes
/// any more (tunnelled) or not TCP/UDP.
pub fn current_flow(frame: &[u8], meta: &PacketMeta) -> Option<FlowKey> {
    let flow = FlowKey::from_meta(meta)?;
    if frame.len() != meta.cap_len as usize {
        return None;
    }
    let read = |end: End| -> Option<SocketAddr> {
        let layout = layout(meta, end).ok()?;
        let bytes = frame.get(layout.address_at..layout.address_at + layout.address_len)?;
        let address = match layout.address_len {
            4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
            _ => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        };
        Some(SocketAddr::new(
            address,
            read_u16(frame, layout.port_at?).ok()?,
        ))
    };
    Some(FlowKey {
        proto: flow.proto,
        source: read(End::Source)?,
        destination: read(End::Destination)?,
    })
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
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn meta(frame: &[u8]) -> PacketMeta {
        parse(LinkType::Ethernet, frame, frame.len() as u32, 0)
    }

    /// The reference: each changed field adjusted in turn with [`checksum_adjust`] (the
    /// port, then the address), as `rewrite` did before it summed the changes once.
    fn rewrite_field_by_field(frame: &mut [u8], meta: &PacketMeta, end: End, to: SocketAddr) {
        let layout = layout(meta, end).unwrap();
        let new: Vec<u8> = match to.ip() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let range = layout.address_at..layout.address_at + layout.address_len;
        let old = frame[range.clone()].to_vec();
        let mut l4_checksum = layout.l4_checksum_at.map(|at| read_u16(frame, at).unwrap());
        let udp_without_checksum = layout.udp && l4_checksum == Some(0) && meta.l3 == L3::Ipv4;
        if let Some(at) = layout.port_at {
            let old_port = read_u16(frame, at).unwrap();
            write_u16(frame, at, to.port()).unwrap();
            l4_checksum = l4_checksum
                .map(|c| checksum_adjust(c, &old_port.to_be_bytes(), &to.port().to_be_bytes()));
        }
        frame[range].copy_from_slice(&new);
        if let Some(at) = layout.ip_checksum_at {
            let checksum = checksum_adjust(read_u16(frame, at).unwrap(), &old, &new);
            write_u16(frame, at, checksum).unwrap();
        }
        if let (Some(at), Some(checksum)) = (layout.l4_checksum_at, l4_checksum) {
            let value = match (
                udp_without_checksum,
                layout.udp,
                checksum_adjust(checksum, &old, &new),
            ) {
                (true, _, _) => 0,
                (false, true, 0) => 0xffff,
                (_, _, value) => value,
            };
            write_u16(frame, at, value).unwrap();
        }
    }

    proptest::proptest! {
        #[test]
        fn rewrite_equals_the_field_by_field_adjustment(
            v6 in proptest::bool::ANY,
            udp in proptest::bool::ANY,
            zero_udp_checksum in proptest::bool::ANY,
            destination in proptest::bool::ANY,
            addresses in proptest::array::uniform3(proptest::num::u128::ANY),
            ports in proptest::array::uniform3(1u16..),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        ) {
            let v4 = |bits: u128| Ipv4Addr::from(bits as u32);
            let builder = if v6 {
                PacketBuilder::eth().ipv6(addresses[0].into(), addresses[1].into())
            } else {
                PacketBuilder::eth().ipv4(v4(addresses[0]), v4(addresses[1]))
            };
            let builder = if udp {
                builder.udp(ports[0], ports[1])
            } else {
                builder.tcp(ports[0], ports[1]).flags(crate::packet::tcp_flags::ACK)
            };
            let mut frame = builder.payload(&payload).build();
            let before = meta(&frame);
            proptest::prop_assume!(before.invalid.is_none());
            if udp && !v6 && zero_udp_checksum {
                let at = usize::from(before.l4_offset) + 6;
                frame[at..at + 2].fill(0);
            }
            let to = if v6 {
                SocketAddr::new(IpAddr::V6(addresses[2].into()), ports[2])
            } else {
                SocketAddr::new(IpAddr::V4(v4(addresses[2])), ports[2])
            };
            let end = if destination { End::Destination } else { End::Source };
            let mut expected = frame.clone();
            rewrite_field_by_field(&mut expected, &before, end, to);
            rewrite(&mut frame, &before, end, to).unwrap();
            proptest::prop_assert_eq!(&frame, &expected);
            proptest::prop_assert_eq!(meta(&frame).invalid, None);
        }
    }

    fn table(text: &str) -> Nat {
        #[derive(serde::Deserialize)]
        struct File {
            nat: Vec<config::NatRuleConfig>,
            interfaces: BTreeMap<String, config::InterfaceAddress>,
        }
        let file: File = toml::from_str(text).unwrap();
        config::build(
            &file.nat,
            &file.interfaces,
            crate::hash::keyed::DEFAULT_SEED,
        )
        .unwrap()
    }

    const RULES: &str = r#"
        interfaces = { inside = "10.0.3.1/24", outside = "198.51.100.254/24" }
        nat = [
            { kind = "dnat", proto = "tcp", dst = "192.0.2.30:80", to = "10.0.3.4:8080" },
            { kind = "masquerade", out = "inside", src = "198.51.100.0/24" },
        ]"#;

    fn through(nat: &mut Nat, frame: &mut [u8]) -> (NatOutcome, NatOutcome) {
        let before = meta(frame);
        let pre = nat.prerouting(0, frame, &before).unwrap();
        let after = meta(frame);
        let post = nat.postrouting(0, frame, &after).unwrap();
        assert_eq!(meta(frame).invalid, None);
        (pre, post)
    }

    #[test]
    fn dnat_and_masquerade_compose_and_the_reply_is_undone_with_valid_checksums() {
        let mut nat = table(RULES);
        let client = Ipv4Addr::new(198, 51, 100, 7);
        let mut request = PacketBuilder::eth()
            .ipv4(client, Ipv4Addr::new(192, 0, 2, 30))
            .tcp(40000, 80)
            .syn()
            .build();
        through(&mut nat, &mut request);
        let out = meta(&request);
        assert_eq!(
            (out.src, out.sport, out.dst, out.dport),
            (
                Some("10.0.3.1".parse().unwrap()),
                Some(40000),
                Some("10.0.3.4".parse().unwrap()),
                Some(8080)
            )
        );
        assert_eq!(nat.counters.rule_hits, [1, 1]);
        let mut reply = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 3, 4), Ipv4Addr::new(10, 0, 3, 1))
            .tcp(8080, 40000)
            .syn_ack()
            .build();
        let m = meta(&reply);
        let flow = nat.reply(1, &mut reply, &m).unwrap().unwrap();
        assert_eq!(flow.source, "192.0.2.30:80".parse().unwrap());
        let back = meta(&reply);
        assert_eq!(back.invalid, None);
        assert_eq!(
            (back.dst, back.dport),
            (Some(IpAddr::V4(client)), Some(40000))
        );
        // A second packet of the connection takes the tracked path, not the rules.
        let mut ack = PacketBuilder::eth()
            .ipv4(client, Ipv4Addr::new(192, 0, 2, 30))
            .tcp(40000, 80)
            .flags(crate::packet::tcp_flags::ACK)
            .build();
        through(&mut nat, &mut ack);
        assert_eq!(nat.counters.rule_hits, [1, 1]);
        assert_eq!(meta(&ack).src, Some("10.0.3.1".parse().unwrap()));
    }

    #[test]
    fn masquerade_keeps_free_ports_moves_clashing_ones_and_ignores_other_interfaces() {
        let mut nat = table(RULES);
        let mut ports = Vec::new();
        for host in [1u8, 2] {
            let mut frame = PacketBuilder::eth()
                .ipv4(
                    Ipv4Addr::new(198, 51, 100, host),
                    Ipv4Addr::new(10, 0, 3, 9),
                )
                .udp(5000, 53)
                .build();
            let (_, post) = through(&mut nat, &mut frame);
            let NatOutcome::Translated(flow) = post else {
                panic!("translated: {post:?}");
            };
            ports.push(flow.source.port());
        }
        assert_eq!(ports, [5000, 5001]);
        let mut outward = PacketBuilder::eth()
            .ipv4(
                Ipv4Addr::new(198, 51, 100, 3),
                Ipv4Addr::new(203, 0, 113, 1),
            )
            .udp(5000, 53)
            .build();
        assert_eq!(
            through(&mut nat, &mut outward),
            (NatOutcome::Untouched, NatOutcome::Untouched)
        );
    }

    #[test]
    fn a_full_table_refuses_new_connections_and_counts() {
        let mut nat = table(RULES);
        nat.conntrack = ConnTrack::new(1);
        let mut outcomes = Vec::new();
        for host in [1u8, 2] {
            let mut frame = PacketBuilder::eth()
                .ipv4(
                    Ipv4Addr::new(198, 51, 100, host),
                    Ipv4Addr::new(10, 0, 3, 9),
                )
                .udp(5000, 53)
                .build();
            outcomes.push(through(&mut nat, &mut frame).1);
        }
        assert!(matches!(outcomes[0], NatOutcome::Translated(_)));
        assert_eq!(outcomes[1], NatOutcome::TableFull);
        assert_eq!(nat.conntrack.counters.overflows, 1);
    }
}
