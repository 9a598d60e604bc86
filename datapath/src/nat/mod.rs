//! iptables-style DNAT / SNAT / MASQUERADE: the rules ([`config`] builds them from an
//! appliance's `[[nat]]`), connection tracking ([`conntrack`]) to translate the replies,
//! and the rewrite of the packets through [`crate::packet::rewrite`]. This module does not
//! route.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::packet::PacketMeta;
use crate::packet::rewrite::{RewriteError, apply};
use crate::verdict::TimeNs;
use conntrack::{ConnTrack, Direction, FlowKey, SourcePorts};

pub mod config;
pub mod conntrack;

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
