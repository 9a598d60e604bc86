//! The per-packet record: one JSON object per packet, the one schema of `sim replay
//! --packets`, `sim run --packets` and `sim diff --packets` (every key is documented in
//! `docs/packet-records.md`; `sim/tests/packet_records.rs` checks the three commands agree).
//!
//! A [`Record`] is three parts, flattened into one object:
//! - [`PacketRecord`]: the packet as parsed (`index`, `ts_ns`, `iface`, `len`, `vlan`,
//!   `src`, `dst`, `proto`, `sport`, `dport`, `tcp_flags`, `icmp_type`, `ttl`, `invalid`, and
//!   `file` when several captures are replayed);
//! - [`Decision`]: what the pipeline decided, present whenever a pipeline ran (`stage`,
//!   `verdict`, `reason`, `flow`, `rule`, `backend`, `route`; each key always present, `null`
//!   when it does not apply);
//! - the command's own keys: [`RunExtra`] for `sim run` (`queue`, `emitted`,
//!   `appliance_ns`), [`DiffExtra`] for `sim diff` (`kernel`, `kernel_rule`, `agree`,
//!   `explained_by`), nothing for `sim replay`.

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

use datapath::TimeNs;
use datapath::flows::FlowTable;
use datapath::packet::{InvalidReason, PacketMeta, ip_proto};
use datapath::pipeline::PacketOutcome;
use serde::Serialize;

/// `proto` as the records spell it: a name for the common protocols, else the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ProtoField {
    /// `tcp`, `udp`, `icmp`, `icmpv6`.
    Name(&'static str),
    /// Any other IP protocol number.
    Number(u8),
}

impl ProtoField {
    /// From an IP protocol number.
    pub fn from_number(proto: u8) -> Self {
        match proto {
            ip_proto::TCP => Self::Name("tcp"),
            ip_proto::UDP => Self::Name("udp"),
            ip_proto::ICMP => Self::Name("icmp"),
            ip_proto::ICMPV6 => Self::Name("icmpv6"),
            other => Self::Number(other),
        }
    }
}

/// One packet's record, borrowing what it can.
#[derive(Debug, Serialize)]
pub struct PacketRecord<'a> {
    /// Capture file, when several are replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'a str>,
    /// 0-based index within the file.
    pub index: u64,
    /// Capture timestamp, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Ingress interface index.
    pub iface: u16,
    /// Wire length.
    pub len: u32,
    /// VLAN ids, outermost first.
    pub vlan: &'a [u16],
    /// Outermost IP source.
    pub src: Option<IpAddr>,
    /// Outermost IP destination.
    pub dst: Option<IpAddr>,
    /// Transport protocol.
    pub proto: Option<ProtoField>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// TCP flags byte.
    pub tcp_flags: Option<u8>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
    /// TTL / hop limit.
    pub ttl: Option<u8>,
    /// Invalid reason.
    pub invalid: Option<InvalidReason>,
}

impl<'a> PacketRecord<'a> {
    /// Build the record of a parsed packet.
    pub fn new(file: Option<&'a str>, index: u64, ts_ns: u64, meta: &'a PacketMeta) -> Self {
        let has_ip = meta.src.is_some();
        Self {
            file,
            index,
            ts_ns,
            iface: meta.iface,
            len: meta.wire_len,
            vlan: meta.vlans(),
            src: meta.src,
            dst: meta.dst,
            proto: meta.proto.map(ProtoField::from_number),
            sport: meta.sport,
            dport: meta.dport,
            tcp_flags: (meta.proto == Some(ip_proto::TCP) && meta.sport.is_some())
                .then_some(meta.tcp_flags),
            icmp_type: meta.icmp_type,
            ttl: has_ip.then_some(meta.ttl),
            invalid: meta.invalid,
        }
    }

    /// Write the record as one JSON line.
    pub fn write_jsonl<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }
}

/// The route a forwarded packet took (`route` in the records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RouteRecord {
    /// Routing table id (254: main).
    pub table: u32,
    /// Index of the route in that table.
    pub route: u16,
    /// Gateway, if the route has one.
    pub via: Option<IpAddr>,
    /// Egress interface index.
    pub dev: u16,
}

impl RouteRecord {
    /// From a pipeline outcome (`None` when it names no route).
    pub fn of(outcome: &datapath::pipeline::PacketOutcome) -> Option<Self> {
        let used = outcome.route?;
        let (dev, via) = outcome.next_hop?;
        Some(Self {
            table: used.table,
            route: used.route,
            via,
            dev,
        })
    }
}

/// What the pipeline decided about one packet: the same keys whichever command ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision<'a> {
    /// The deciding stage (`shield`, `flows`, `director`, `nat`, `ip`, …).
    pub stage: &'static str,
    /// `pass`, `drop`, `reply` or `forward`.
    pub verdict: &'static str,
    /// Drop reason (`null` unless dropped).
    pub reason: Option<Cow<'static, str>>,
    /// Name of the flow that classified the packet.
    pub flow: Option<Cow<'a, str>>,
    /// 1-based index of the deciding rule within that flow.
    pub rule: Option<u16>,
    /// Real server chosen by a director.
    pub backend: Option<SocketAddr>,
    /// The routing table and route it left by (appliances with `[[ip.table]]`).
    pub route: Option<RouteRecord>,
}

impl<'a> Decision<'a> {
    /// From a pipeline outcome; `flows` names the flow index (`None`: no flow stage).
    pub fn of(outcome: &PacketOutcome, flows: Option<&'a FlowTable>) -> Self {
        Self::named(outcome, |index| {
            flows?
                .flows()
                .get(usize::from(index))
                .map(|f| Cow::Borrowed(f.name.as_str()))
        })
    }

    /// From a pipeline outcome, naming flow indices with `name`.
    pub fn named(outcome: &PacketOutcome, name: impl Fn(u16) -> Option<Cow<'a, str>>) -> Self {
        Self {
            stage: outcome.stage.name(),
            verdict: outcome.verdict.name(),
            reason: outcome.verdict.drop_reason().map(|r| r.name()),
            flow: outcome.flow.and_then(name),
            rule: outcome.flow_rule,
            backend: outcome.backend,
            route: RouteRecord::of(outcome),
        }
    }
}

/// `sim run`'s own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunExtra {
    /// Receive queue that processed the packet.
    pub queue: u16,
    /// Frames the pipeline emitted for it.
    pub emitted: u16,
    /// Appliance latency (RX ring wait + service) with a `[cpu]` model, else `null`.
    pub appliance_ns: Option<TimeNs>,
}

/// `sim diff`'s own keys: the kernel's side of the same packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffExtra {
    /// The simulator's outcome in the diff's words (`drop flow_deny`, `forward …`).
    pub simulator: String,
    /// The kernel's outcome in the same words.
    pub kernel: String,
    /// What decided on the kernel side (nft / iptables rule, the stack, the mechanism).
    pub kernel_rule: String,
    /// Whether both sides did the same (`null`: the packet was not injected).
    pub agree: Option<bool>,
    /// The known difference that explains a disagreement.
    pub explained_by: Option<String>,
}

/// No keys of its own (`sim replay`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NoExtra {}

/// One per-packet record: the packet, the pipeline's decision when one ran, and the
/// command's own keys.
#[derive(Debug, Serialize)]
pub struct Record<'a, X: Serialize = NoExtra> {
    /// The parsed packet.
    #[serde(flatten)]
    pub packet: PacketRecord<'a>,
    /// The pipeline's decision (absent when no pipeline ran).
    #[serde(flatten)]
    pub decision: Option<Decision<'a>>,
    /// The command's own keys.
    #[serde(flatten)]
    pub extra: X,
}

impl<X: Serialize> Record<'_, X> {
    /// Write the record as one JSON line.
    pub fn write_jsonl<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }
}
