//! The appliance's Linux IP layer: the routing decision of a received packet and the
//! forwarding checks, as `ip_route_input_slow` / `ip6_route_input` and `ip_forward` /
//! `ip6_forward` make them, each outcome a counted verdict with a named reason.
//!
//! For a packet the earlier stages let through, [`IpLayer::route_and_forward`] decides, in
//! the kernel's order:
//! 1. martian addresses and non-unicast destinations (see [`martian`]): drop
//!    `martian_source`, `martian_destination`, `not_unicast`;
//! 2. local delivery (a destination that is one of the appliance's own addresses): no
//!    forwarding checks (the director / NAT may still take it, as IPVS on LOCAL_IN);
//! 3. `forwarding` off (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`): drop
//!    `forwarding_off` (`ip_error` sends nothing when forwarding is off);
//!    the route (see [`route`]): the flows' `table <id>` mark selects that routing table
//!    (`ip rule add fwmark … lookup <id>`), falling through to main when it has no route.
//!    No route at all, when the main table is written out
//!    ([`IpConfig::unreachable_without_route`]): ICMP net unreachable (3/0, `ip_error`,
//!    with its own rate limit first) or ICMPv6 no route (1/0, `ip6_pkt_discard`); drop
//!    `no_route` when limited. Without a written main table such a packet is forwarded
//!    as received;
//! 4. reverse-path filter (IPv4, `fib_validate_source`, `rp_filter` = strict / loose):
//!    drop `rp_filter` when the route back to the source does not leave by the ingress
//!    interface (strict) or does not exist (loose). The routes are the appliance's
//!    connected networks and its default route; without any, the filter has nothing to
//!    check against and passes;
//! 5. TTL / hop limit ≤ 1 (`ip_forward`, `ip6_forward`): ICMP time exceeded (11/0,
//!    ICMPv6 3/0) back to the source, rate-limited (see [`icmp`]); drop `ttl_exceeded`
//!    when the limit holds the error back;
//!    Then an IPv6 packet from a link-local source gets ICMPv6 destination unreachable
//!    2 (beyond scope of source address), as `ip6_forward` sends it; drop `martian_source`
//!    when limited;
//! 6. the route's interface is the egress for the MTU check and, with a gateway, the
//!    frame is sent to the gateway;
//!    MTU (`ip_exceeds_mtu`, `ip6_pkt_too_big`): an IPv4 datagram longer than the egress
//!    MTU with DF set gets ICMP fragmentation needed (3/4, next-hop MTU), an IPv6 one
//!    packet too big (2/0, MTU at least 1280); drop `packet_too_big` when limited;
//! 7. otherwise the TTL / hop limit is decremented (IPv4 header checksum updated as
//!    `ip_decrease_ttl` does) and the packet goes on. An IPv4 datagram longer than the
//!    egress MTU without DF leaves in fragments (`ip_do_fragment`, see [`fragment`]): the
//!    pipeline cuts it as it sends it, after NAT ([`IpLayer::last_fragment_mtu`]).
//!
//! `ip_rcv`'s sanity checks (version, IHL, lengths, header checksum) are the parser's
//! invalid reasons (stage `parse`); defragmentation is [`defrag`].
//!
//! Not here: ICMP
//! redirects, multicast routing, `accept_local` / `route_localnet`.

pub mod config;
pub mod defrag;
pub mod fixtures;
pub mod fragment;
pub mod icmp;
pub mod martian;
pub mod route;

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::packet::{IfaceId, PacketMeta};
use crate::verdict::{DropReason, TimeNs};
use icmp::{IcmpLimiter, IcmpLimits};
use martian::Refusal;

/// Reverse-path filtering (`net.ipv4.conf.*.rp_filter`: 0 off, 1 strict, 2 loose).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpFilter {
    /// No source validation (the kernel's default).
    #[default]
    Off,
    /// The route back to the source must leave by the ingress interface.
    Strict,
    /// Some route back to the source must exist.
    Loose,
}

impl RpFilter {
    /// The sysctl value.
    pub fn sysctl(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Strict => 1,
            Self::Loose => 2,
        }
    }
}

/// One of the appliance's addresses: its interface, network and the interface's MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInterface {
    /// Interface index.
    pub iface: IfaceId,
    /// The appliance's address on it.
    pub address: IpAddr,
    /// Prefix length of the connected network.
    pub prefix: u8,
}

/// The IP layer's settings, with the kernel's defaults (forwarding on: an appliance is a
/// router).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// IPv4 forwarding.
    pub forwarding: bool,
    /// IPv6 forwarding.
    pub forwarding_v6: bool,
    /// Reverse-path filter.
    pub rp_filter: RpFilter,
    /// ICMP rate limits.
    pub icmp: IcmpLimits,
    /// Egress MTU of interfaces without their own.
    pub mtu: u32,
    /// MTU per interface.
    pub interface_mtu: Vec<(IfaceId, u32)>,
    /// The appliance's addresses (local delivery, connected routes, ICMP sources).
    pub interfaces: Vec<IpInterface>,
    /// Interface of the default route, if any.
    pub default_route: Option<IfaceId>,
    /// Routes of the main table besides the connected networks and `default_route`
    /// (resolved: see [`route::resolve_table`]).
    pub routes: Vec<route::Route>,
    /// Routing tables other than main, for the flows' `table <id>` policies.
    pub tables: Vec<route::RoutingTable>,
    /// The main table is written out (`[[ip.table]] id = 254`): a destination no table
    /// routes gets ICMP destination unreachable. Otherwise the appliance file says
    /// nothing of routes beyond its connected networks, and such a packet is forwarded.
    pub unreachable_without_route: bool,
    /// Defragmentation limits.
    pub defrag: defrag::DefragLimits,
    /// Connection tracking runs (NAT, directors, SYN proxy): then, and only then,
    /// fragments are reassembled before the flows (`nf_defrag_ipv4/6` hooks are registered
    /// in a namespace only for conntrack's users); otherwise each is forwarded on its own.
    pub conntrack: bool,
}

impl Default for IpConfig {
    fn default() -> Self {
        Self {
            forwarding: true,
            forwarding_v6: true,
            rp_filter: RpFilter::Off,
            icmp: IcmpLimits::default(),
            mtu: 1500,
            interface_mtu: Vec::new(),
            interfaces: Vec::new(),
            default_route: None,
            routes: Vec::new(),
            tables: Vec::new(),
            unreachable_without_route: false,
            defrag: defrag::DefragLimits::default(),
            conntrack: false,
        }
    }
}

/// What the IP layer decided for a packet to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpDecision {
    /// Go on (TTL decremented unless delivered locally).
    Forward,
    /// Dropped.
    Drop(DropReason),
    /// Answered with this ICMP error (the packet is dropped).
    Answer(Vec<u8>),
}

/// Counters beyond the per-reason drops the pipeline keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IpCounters {
    /// Packets forwarded (TTL decremented).
    pub forwarded: u64,
    /// Packets for one of the appliance's addresses.
    pub local: u64,
    /// ICMP time exceeded sent.
    pub time_exceeded_sent: u64,
    /// ICMP fragmentation needed / packet too big sent.
    pub too_big_sent: u64,
    /// ICMP destination unreachable sent (no route; IPv6 beyond scope).
    pub unreachable_sent: u64,
    /// ICMP errors held back by the rate limits.
    pub icmp_rate_limited: u64,
    /// Datagrams to forward in fragments (the kernel's `FragOKs` once sent).
    pub fragmented: u64,
}

impl IpCounters {
    /// Add another layer's counters.
    pub fn merge(&mut self, other: &Self) {
        self.forwarded += other.forwarded;
        self.local += other.local;
        self.time_exceeded_sent += other.time_exceeded_sent;
        self.too_big_sent += other.too_big_sent;
        self.unreachable_sent += other.unreachable_sent;
        self.icmp_rate_limited += other.icmp_rate_limited;
        self.fragmented += other.fragmented;
    }
}

/// The IP layer: settings, ICMP rate-limit state, reassembly queues, counters.
#[derive(Debug)]
pub struct IpLayer {
    config: IpConfig,
    broadcasts: Vec<Ipv4Addr>,
    limiter: IcmpLimiter,
    routing: route::Routing,
    last_route: Option<(route::RouteRef, route::Route)>,
    last_fragment_mtu: Option<u32>,
    /// Reassembly queues.
    pub defrag: defrag::Defrag,
    counters: IpCounters,
}

impl IpLayer {
    /// A layer with these settings.
    pub fn new(config: IpConfig) -> Self {
        let broadcasts = config
            .interfaces
            .iter()
            .filter_map(|i| match i.address {
                IpAddr::V4(a) if i.prefix < 31 => {
                    Some(Ipv4Addr::from(u32::from(a) | (u32::MAX >> i.prefix)))
                }
                _ => None,
            })
            .collect();
        let defrag = defrag::Defrag::new(config.defrag);
        let routing = main_routing(&config);
        Self {
            config,
            broadcasts,
            limiter: IcmpLimiter::default(),
            routing,
            last_route: None,
            last_fragment_mtu: None,
            defrag,
            counters: IpCounters::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &IpConfig {
        &self.config
    }

    /// Counters so far.
    pub fn counters(&self) -> &IpCounters {
        &self.counters
    }

    /// The routing tables (main from the interfaces, `default_route` and `routes`).
    pub fn routing(&self) -> &route::Routing {
        &self.routing
    }

    /// The route the last packet [`Self::route_and_forward`] forwarded took (`None`:
    /// delivered locally, refused, or no route — forwarded as received).
    pub fn last_route(&self) -> Option<(route::RouteRef, route::Route)> {
        self.last_route
    }

    /// The egress MTU the last packet [`Self::route_and_forward`] forwarded must be cut
    /// to: an IPv4 datagram longer than it, without DF (see [`fragment`]).
    pub fn last_fragment_mtu(&self) -> Option<u32> {
        self.last_fragment_mtu
    }

    /// The routing decision and the forwarding checks for `frame` (described by `meta`),
    /// in the order of the module documentation, the route looked up with the flows'
    /// firewall mark (see [`route`]). Non-IP packets go on untouched.
    #[inline]
    pub fn route_and_forward(
        &mut self,
        now: TimeNs,
        meta: &PacketMeta,
        frame: &mut [u8],
        fwmark: Option<u32>,
    ) -> IpDecision {
        self.last_route = None;
        self.last_fragment_mtu = None;
        let (Some(src), Some(dst)) = (meta.src, meta.dst) else {
            return IpDecision::Forward;
        };
        let link_local_source = match martian::refusal(src, dst, &self.broadcasts) {
            None => false,
            Some(Refusal::LinkLocalSource) => true,
            Some(other) => return IpDecision::Drop(drop_reason(other)),
        };
        if !self.config.interfaces.is_empty() && self.is_local(dst) {
            self.counters.local += 1;
            return IpDecision::Forward;
        }
        let forwarding = match dst {
            IpAddr::V4(_) => self.config.forwarding,
            IpAddr::V6(_) => self.config.forwarding_v6,
        };
        if !forwarding {
            return IpDecision::Drop(DropReason::ForwardingOff);
        }
        self.last_route = self
            .routing
            .lookup(dst, fwmark)
            .map(|(used, route)| (used, *route));
        if self.last_route.is_none() && self.config.unreachable_without_route {
            return self.no_route(now, meta, frame, dst);
        }
        if self.config.rp_filter != RpFilter::Off && src.is_ipv4() && !self.source_valid(meta) {
            return IpDecision::Drop(DropReason::RpFilter);
        }
        if meta.ttl <= 1 {
            let (icmp_type, code) = if dst.is_ipv4() { (11, 0) } else { (3, 0) };
            let reason = DropReason::TtlExceeded;
            return self.icmp_error(now, meta, frame, (icmp_type, code, 0), reason);
        }
        if link_local_source {
            // ip6_forward: "beyond scope of source address", back to the link-local source.
            return self.icmp_error(now, meta, frame, (1, 2, 0), DropReason::MartianSource);
        }
        if let Some(mtu) = self.too_big(meta, frame, dst) {
            let (icmp_type, code) = if dst.is_ipv4() { (3, 4) } else { (2, 0) };
            let reason = DropReason::PacketTooBig;
            return self.icmp_error(now, meta, frame, (icmp_type, code, mtu), reason);
        }
        decrement_ttl(frame, meta);
        self.counters.forwarded += 1;
        if self.last_fragment_mtu.is_some() {
            self.counters.fragmented += 1;
        }
        IpDecision::Forward
    }

    /// The routing decision's refusal of a packet by its addresses (step 1), as the drop
    /// reason.
    #[inline]
    pub fn refusal(&self, meta: &PacketMeta) -> Option<DropReason> {
        let (src, dst) = meta.src.zip(meta.dst)?;
        martian::refusal(src, dst, &self.broadcasts).map(drop_reason)
    }

    fn is_local(&self, dst: IpAddr) -> bool {
        self.config.interfaces.iter().any(|i| i.address == dst)
    }

    /// The interface of the main table's route to `addr` (the longest connected network
    /// holding it, else a shorter route, else the default route).
    fn route_of(&self, addr: IpAddr) -> Option<IfaceId> {
        self.routing.main.lookup(addr).map(|(_, route)| route.iface)
    }

    fn source_valid(&self, meta: &PacketMeta) -> bool {
        if self.config.interfaces.is_empty() && self.config.default_route.is_none() {
            return true;
        }
        let Some(src) = meta.src else { return true };
        match (self.route_of(src), self.config.rp_filter) {
            (None, _) => false,
            (Some(out), RpFilter::Strict) => out == meta.iface,
            _ => true,
        }
    }

    /// The egress MTU when the datagram exceeds it and may not be fragmented here; one
    /// that may is marked for fragmenting ([`Self::last_fragment_mtu`]).
    fn too_big(&mut self, meta: &PacketMeta, frame: &[u8], dst: IpAddr) -> Option<u32> {
        let egress = self.last_route.map(|(_, route)| route.iface);
        let mtu = egress
            .and_then(|e| self.config.interface_mtu.iter().find(|(i, _)| *i == e))
            .map_or(self.config.mtu, |&(_, mtu)| mtu);
        if meta.ip_len <= mtu {
            return None;
        }
        match dst {
            IpAddr::V4(_) => {
                let df = frame.get(usize::from(meta.l3_offset) + 6)? & 0x40 != 0;
                if !df {
                    self.last_fragment_mtu = Some(mtu);
                }
                df.then_some(mtu)
            }
            IpAddr::V6(_) => Some(mtu.max(1280)),
        }
    }

    /// No table routes `dst` (`ip_route_input_slow` / `ip6_route_input` find no route):
    /// ICMP net unreachable (3/0) after `ip_error`'s own limit, ICMPv6 no route (1/0).
    #[cold]
    fn no_route(
        &mut self,
        now: TimeNs,
        meta: &PacketMeta,
        frame: &[u8],
        dst: IpAddr,
    ) -> IpDecision {
        let reason = DropReason::NoRoute;
        if dst.is_ipv6() {
            return self.icmp_error(now, meta, frame, (1, 0, 0), reason);
        }
        let Some(source) = meta.src else {
            return IpDecision::Drop(reason);
        };
        if !self.limiter.route_error_allow(source, now) {
            self.counters.icmp_rate_limited += 1;
            return IpDecision::Drop(reason);
        }
        self.icmp_error(now, meta, frame, (3, 0, 0), reason)
    }

    /// Answer with the ICMP error (type, code, rest-of-header word) if the rate limits
    /// let it go, else drop for `reason`.
    fn icmp_error(
        &mut self,
        now: TimeNs,
        meta: &PacketMeta,
        frame: &[u8],
        (icmp_type, code, info): (u8, u8, u32),
        reason: DropReason,
    ) -> IpDecision {
        let Some(dest) = meta.src else {
            return IpDecision::Drop(reason);
        };
        if !icmp::may_answer(meta) {
            return IpDecision::Drop(reason);
        }
        let prefix = if self.config.interfaces.is_empty() {
            0
        } else {
            self.config
                .interfaces
                .iter()
                .filter(|i| in_network(dest, i.address, i.prefix))
                .map(|i| i.prefix)
                .max()
                .unwrap_or(0)
        };
        let limits = self.config.icmp;
        if !self
            .limiter
            .allow(&limits, now, dest, icmp_type, code, prefix)
        {
            self.counters.icmp_rate_limited += 1;
            return IpDecision::Drop(reason);
        }
        let source = self
            .config
            .interfaces
            .iter()
            .find(|i| i.iface == meta.iface && i.address.is_ipv4() == dest.is_ipv4())
            .map(|i| i.address);
        match icmp::error_frame(frame, meta, source, icmp_type, code, info) {
            Some(answer) => {
                match reason {
                    DropReason::PacketTooBig => self.counters.too_big_sent += 1,
                    DropReason::TtlExceeded => self.counters.time_exceeded_sent += 1,
                    _ => self.counters.unreachable_sent += 1,
                }
                IpDecision::Answer(answer)
            }
            None => IpDecision::Drop(reason),
        }
    }
}

/// Give a later fragment of a datagram the TTL / hop limit and addresses of its first
/// fragment as it leaves (after NAT and the TTL decrement), both IP headers at `l3`; the
/// IPv4 header checksum is recomputed.
pub fn copy_header_fields(first: &[u8], fragment: &mut [u8], l3: usize) {
    let (Some(from), Some(to)) = (first.get(l3..), fragment.get_mut(l3..)) else {
        return;
    };
    match from.first().map(|b| b >> 4) {
        Some(4) if from.len() >= 20 && to.len() >= 20 => {
            to[8] = from[8];
            to[12..20].copy_from_slice(&from[12..20]);
            let ihl = usize::from(to[0] & 0x0f) * 4;
            if let Some(header) = to.get_mut(..ihl) {
                header[10..12].fill(0);
                let sum =
                    crate::packet::checksum::field_bytes(crate::packet::checksum::partial(header));
                header[10..12].copy_from_slice(&sum);
            }
        }
        Some(6) if from.len() >= 40 && to.len() >= 40 => {
            to[7] = from[7];
            to[8..40].copy_from_slice(&from[8..40]);
        }
        _ => {}
    }
}

/// The routing tables of `config`: main holds the connected networks (interface order),
/// then the `default_route` interface's default routes (IPv4 and IPv6), then `routes`.
fn main_routing(config: &IpConfig) -> route::Routing {
    let mut main: Vec<route::Route> = config
        .interfaces
        .iter()
        .filter_map(|i| {
            let destination = ipnet::IpNet::new(i.address, i.prefix).ok()?.trunc();
            Some(route::Route {
                destination,
                gateway: None,
                iface: i.iface,
            })
        })
        .collect();
    if let Some(iface) = config.default_route {
        for everything in ["0.0.0.0/0", "::/0"] {
            if let Ok(destination) = everything.parse() {
                main.push(route::Route {
                    destination,
                    gateway: None,
                    iface,
                });
            }
        }
    }
    main.extend(config.routes.iter().copied());
    route::Routing {
        main: route::RoutingTable {
            id: route::MAIN_TABLE,
            routes: main,
        },
        tables: config.tables.clone(),
    }
}

fn drop_reason(refusal: Refusal) -> DropReason {
    match refusal {
        Refusal::MartianSource | Refusal::LinkLocalSource => DropReason::MartianSource,
        Refusal::MartianDestination => DropReason::MartianDestination,
        Refusal::NotUnicast => DropReason::NotUnicast,
    }
}

fn in_network(addr: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (addr, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `ip_decrease_ttl` / `hop_limit--`: the IPv4 header checksum is updated incrementally.
#[inline]
fn decrement_ttl(frame: &mut [u8], meta: &PacketMeta) {
    let l3 = usize::from(meta.l3_offset);
    match meta.dst {
        Some(IpAddr::V4(_)) => {
            let Some(header) = frame.get_mut(l3..l3 + 20) else {
                return;
            };
            header[8] = header[8].wrapping_sub(1);
            let check = u32::from(u16::from_be_bytes([header[10], header[11]])) + 0x0100;
            let check = (check + u32::from(check >= 0xffff)) as u16;
            header[10..12].copy_from_slice(&check.to_be_bytes());
        }
        Some(IpAddr::V6(_)) => {
            if let Some(hop) = frame.get_mut(l3 + 7) {
                *hop = hop.wrapping_sub(1);
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::PacketBuilder;
    use crate::packet::{LinkType, ParseOptions, parse_with};

    #[test]
    fn decrementing_the_ttl_keeps_the_header_checksum_valid() {
        for ttl in [2u8, 64, 255] {
            let frame = PacketBuilder::eth()
                .ipv4(
                    "198.51.100.1".parse().unwrap(),
                    "192.0.2.1".parse().unwrap(),
                )
                .ttl(ttl)
                .tcp(1, 80)
                .syn()
                .build();
            let opts = ParseOptions::default();
            let meta = parse_with(&opts, LinkType::Ethernet, &frame, frame.len() as u32, 0);
            let mut out = frame.clone();
            decrement_ttl(&mut out, &meta);
            let after = parse_with(&opts, LinkType::Ethernet, &out, out.len() as u32, 0);
            assert_eq!((after.ttl, after.invalid), (ttl - 1, None));
        }
    }
}
