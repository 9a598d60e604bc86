//! Run packets through the kernel: prepare each packet for injection (tagged with its
//! ordinal in the IPv4 ID or the IPv6 flow label, see `tag`; Ethernet addresses set for
//! the veth it enters by), inject them
//! with AF_PACKET — from the client side, or from the server side for packets whose source
//! is a real server (replies, which the kernel un-NATs) — observe both of the LB's veths,
//! and give every packet an [`Outcome`] in the vocabulary the simulator's side uses.
//!
//! A packet is *forwarded* when a frame with its tag (IPv4 ID / flow label, protocol, SYN bit and the
//! unchanged end of its tuple) leaves the LB on the other side, with its 5-tuple as it left
//! (after DNAT or reply un-NAT); *answered* when the LB sends toward the client a SYN-ACK
//! acknowledging it (synproxy), a RST for its tuple, or an ICMP error quoting it;
//! *proxied* when, for an ACK, a SYN of the same client and sequence leaves on the server
//! side (synproxy opening the connection after a valid cookie); *dropped* otherwise.
//! Packets that cannot be injected faithfully (not Ethernet + IPv4, stacked VLAN tags,
//! snapped, larger than the veth MTU) are *not injected* and left out of comparisons.
//! Frames with one 802.1Q (or 802.1ad) tag are injected as they are: the shield's nft
//! chain sees the tag, then the topology's `lbsim_vlan` chain clears it so the LB forwards
//! them (see `topology::vlan_nft`); the IPv4 header is found after the tag both ways. Tags are 16 bits: a run
//! holds at most [`MAX_PACKETS_PER_RUN`] packets.
//!
//! [`Lab`] is the reusable part: a topology with rules installed, and `exchange` (inject,
//! observe, return the raw frames) for interactive checks such as the SYN-cookie
//! cross-check; [`run_kernel`] is the one-shot batch used by `sim diff` and by `sim bench`.
//!
//! Traced runs ([`Lab::run_traced`], [`run_kernel_traced`]: what `sim diff` uses) also
//! give each packet the nft / iptables-nft rule that decided it (see `trace`), per-rule
//! hit counts and the LB's IP counter deltas; untraced runs (`sim bench`) skip the
//! monitor.
//!
//! IPv6 packets are injected unless the rules refuse them (a fwmark or IPv6 director
//! without kernel counterpart: [`KernelRules::refuse_ipv6`]), or the
//! `ip6tables-restore` input (flows, IPv6 SYNPROXY) was refused.
//!
//! Not here: QinQ.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use datapath::packet::{LinkType, tcp_flags};
use serde::Serialize;

use super::backend::Backend;
use super::outcome::{FragmentShape, FrameSummary, Outcome};
use super::rules::KernelRules;
use super::tag;
use super::topology::{
    CLIENT_ADDR, CLIENT_IFACE, CLIENT_MAC, LB_CLIENT_ADDR, LB_CLIENT_MAC, LB_SERVER_MAC,
    SERVER_IFACE, SERVER_MAC, Topology, VETH_MTU,
};
use super::trace::{self, Monitor, PROBE_TAG, RuleRef, Traces};
use super::wire::{Observed, ObservedFrame, Observer, Port, inject};
use crate::capture::CaptureReader;

mod observe;
use observe::{attribute, outcomes};

/// Why a packet was not injected into the guest on a split run.
pub const LEFT_TO_HOST: &str = "left to the host kernel (split per feature)";

/// Why guest runs are not traced.
pub const GUEST_NO_TRACE: &str = "the guest kernel (Debian's user-mode Linux 6.1) builds nf_tables without the ip, ip6, inet and netdev families: no nft trace there";

/// Packets per kernel run (tags are IPv4 IDs / IPv6 flow labels 1..=65535).
pub const MAX_PACKETS_PER_RUN: usize = 65_535;
/// How long to keep observing after the last packet was sent.
pub const SETTLE_TIME: Duration = Duration::from_millis(300);

/// One packet to run: what a capture (or a generator) gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPacket {
    /// Timestamp, ns (virtual time for the simulator side).
    pub ts_ns: u64,
    /// Link type.
    pub link: LinkType,
    /// Interface id (pcapng), 0 otherwise.
    pub interface: u32,
    /// Length on the wire.
    pub orig_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Which LB veth a packet enters by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// From the client namespace.
    Client,
    /// From the server namespace (a real server's reply).
    Server,
}

/// One packet's kernel outcome, by its ordinal over all inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KernelPacket {
    /// 0-based ordinal.
    pub ordinal: usize,
    /// What the kernel did.
    pub outcome: Outcome,
    /// Injection-to-egress time of the frame it caused, ns (user-space timestamps).
    pub latency_ns: Option<u64>,
    /// The nft / iptables-nft rule that dropped it, else the last that accepted it (traced
    /// runs only).
    pub rule: Option<RuleRef>,
    /// Whether an nft rule (not the stack) dropped it (traced runs only).
    pub dropped_by_rule: bool,
    /// The last netfilter hook it reached (`family table chain`; traced runs only).
    pub last_hook: Option<String>,
    /// The destination MAC of the frame it was forwarded as (the runner's next hop of an
    /// appliance route: see `rules::routes::runner_routes`).
    #[serde(default)]
    pub next_hop_mac: Option<[u8; 6]>,
}

/// A kernel run's per-packet outcomes plus what the observers saw.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct KernelRun {
    /// One entry per input packet, in order.
    pub packets: Vec<KernelPacket>,
    /// Frames seen leaving the LB on the server side.
    pub server_frames: usize,
    /// Frames seen leaving the LB on the client side.
    pub client_frames: usize,
    /// Packets the kernel refused at send time (counted in `packets` as not injected).
    pub send_failures: usize,
    /// Wall-clock seconds spent injecting.
    pub inject_sec: f64,
    /// Frames injected.
    pub injected: usize,
    /// Whether the run was traced (nftables trace events), and why not when it failed.
    pub trace: TraceStatus,
    /// Per deciding kernel rule, how many packets it decided (traced runs only).
    pub rule_hits: BTreeMap<String, u64>,
    /// Injected packets without any trace event (traced runs only; events lost).
    pub untraced: u64,
    /// Trace events lost (receive-buffer overflows) during the run.
    pub trace_events_lost: u64,
    /// IPv4 / ICMP counters of the LB namespace that moved during the run.
    pub counters: BTreeMap<String, u64>,
}

/// Whether a run's packets carry their deciding kernel rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "why")]
pub enum TraceStatus {
    /// Not asked for.
    #[default]
    Off,
    /// Every packet's trace was read.
    On,
    /// Asked for but unavailable (the reason).
    Failed(String),
}

/// Read every packet of `files`, in order (the order `sim replay` reads them).
pub fn read_inputs(files: &[PathBuf]) -> anyhow::Result<Vec<InputPacket>> {
    let mut packets = Vec::new();
    for path in files {
        let mut reader = CaptureReader::open(path)?;
        while let Some(packet) = reader.next_packet()? {
            packets.push(InputPacket {
                ts_ns: packet.ts_ns,
                link: packet.link,
                interface: packet.interface,
                orig_len: packet.orig_len,
                data: packet.data.to_vec(),
            });
        }
    }
    Ok(packets)
}

/// A packet ready to send: its frame, its side and what identifies it on the way out.
struct Prepared {
    frame: Vec<u8>,
    side: Side,
    tag: u16,
    /// The IPv4 ID / IPv6 flow label the tag replaced (see `tag::original`).
    untagged: u32,
    summary: FrameSummary,
}

/// Tag a frame (see `tag`) and set its Ethernet addresses for the veth it enters by.
/// IPv6 frames are refused with `ipv6_refused` when the rules have no IPv6 counterpart.
fn prepare(
    packet: &InputPacket,
    tag: u16,
    is_server: impl Fn(IpAddr) -> bool,
    ipv6_refused: Option<&str>,
) -> Result<Prepared, String> {
    if packet.link != LinkType::Ethernet {
        return Err(format!("link type {}", packet.link.name()));
    }
    if packet.data.len() < packet.orig_len as usize {
        return Err("snapped by the capture".into());
    }
    let mut frame = packet.data.clone();
    let Some(at) = tag::ip_at(&frame) else {
        return Err(tag::not_ip_reason(&frame).into());
    };
    if let (true, Some(why)) = (at.v6, ipv6_refused) {
        return Err(format!("IPv6: {why}"));
    }
    if frame.len() > at.offset + VETH_MTU as usize {
        return Err("larger than the veth MTU".into());
    }
    let summary = FrameSummary::of(LinkType::Ethernet, &frame);
    let side = match summary.src {
        Some(src) if is_server(src) => Side::Server,
        _ => Side::Client,
    };
    set_macs(&mut frame, side);
    let untagged = tag::original(&frame, at);
    tag::write(&mut frame, at, tag);
    Ok(Prepared {
        frame,
        side,
        tag,
        untagged,
        summary,
    })
}

/// Ethernet addresses of a frame entering the LB from `side`.
fn set_macs(frame: &mut [u8], side: Side) {
    let (lb, own) = match side {
        Side::Client => (LB_CLIENT_MAC, CLIENT_MAC),
        Side::Server => (LB_SERVER_MAC, SERVER_MAC),
    };
    if frame.len() >= 12 {
        frame[0..6].copy_from_slice(&lb);
        frame[6..12].copy_from_slice(&own);
    }
}

/// A topology with rules installed; dropping it removes everything.
#[derive(Debug)]
pub struct Lab {
    /// The trace reader of traced runs, started by the first one (declared first: it
    /// stops before the namespaces go).
    monitor: std::sync::Mutex<Option<Monitor>>,
    topology: Topology,
    /// Why IPv6 packets are not injected (the rules have no IPv6 counterpart), if so.
    ipv6_refused: Option<String>,
}

/// What one [`Lab::exchange`] saw.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Send time of each frame (`None`: refused).
    pub sent_at: Vec<Option<Instant>>,
    /// Frames the LB sent on the server side.
    pub server: Observed,
    /// Frames the LB sent on the client side.
    pub client: Observed,
    /// Wall-clock seconds spent injecting.
    pub inject_sec: f64,
}

impl Lab {
    /// Create a topology and install `rules` in it.
    pub fn start(rules: &KernelRules) -> anyhow::Result<Self> {
        super::topology::install_signal_cleanup();
        let topology = Topology::create_on(rules.backend)?;
        rules.install(&topology)?;
        let ipv6_refused = rules.ipv6_refused.clone().or_else(|| {
            rules
                .install_ipv6(&topology)
                .err()
                .map(|error| format!("{error:#}"))
        });
        Ok(Self {
            topology,
            ipv6_refused,
            monitor: std::sync::Mutex::new(None),
        })
    }

    /// The topology (for commands inside its namespaces).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Inject `frames` (each from a side, Ethernet addresses set here), `gap` apart, and return what left the LB on
    /// either side until [`SETTLE_TIME`] after the last one.
    pub fn exchange(
        &self,
        frames: Vec<(Side, Vec<u8>)>,
        gap: Duration,
    ) -> anyhow::Result<Exchange> {
        self.exchange_settling(frames, gap, SETTLE_TIME)
    }

    /// Replace the flow rules with `rules`' (`iptables-restore` without `--noflush`: the
    /// mangle table is flushed and rebuilt), so that one lab runs many flow files. Only the
    /// flows are replaced: the other rules stay as [`Lab::start`] installed them.
    pub fn reload_flows(&self, rules: &KernelRules) -> anyhow::Result<()> {
        let text = if rules.flows_iptables.is_empty() {
            "*mangle\nCOMMIT\n"
        } else {
            rules.flows_iptables.as_str()
        };
        let lb = self.topology.lb_ns();
        let program = rules.backend.iptables_restore(false);
        self.topology.exec(&lb, &[program], Some(text))?;
        if self.ipv6_refused.is_none() {
            let text = if rules.flows_ip6tables.is_empty() {
                "*mangle\nCOMMIT\n"
            } else {
                rules.flows_ip6tables.as_str()
            };
            let program = rules.backend.iptables_restore(true);
            self.topology.exec(&lb, &[program], Some(text))?;
        }
        Ok(())
    }

    /// Run `packets` through this lab (as [`run_kernel`] does through a fresh one),
    /// observing for `settle` after the last one. `rules` are the installed rules.
    pub fn run(
        &self,
        packets: &[InputPacket],
        rules: &KernelRules,
        gap: Duration,
        settle: Duration,
    ) -> anyhow::Result<KernelRun> {
        self.run_with(packets, rules, gap, settle, false, None)
    }

    /// [`Lab::run`], with every packet's deciding kernel rule read from the nftables
    /// trace events (see `trace`), the rules' hit counts and the LB's IP counter deltas.
    /// When tracing is unavailable the run still completes, with [`TraceStatus::Failed`].
    pub fn run_traced(
        &self,
        packets: &[InputPacket],
        rules: &KernelRules,
        gap: Duration,
        settle: Duration,
    ) -> anyhow::Result<KernelRun> {
        self.run_with(packets, rules, gap, settle, true, None)
    }

    /// [`Lab::run_traced`] injecting only the packets `selected` says (the others are
    /// [`Outcome::NotInjected`]: a split guest run leaves them to the host kernel).
    pub fn run_traced_selected(
        &self,
        packets: &[InputPacket],
        rules: &KernelRules,
        gap: Duration,
        selected: &[bool],
    ) -> anyhow::Result<KernelRun> {
        self.run_with(packets, rules, gap, SETTLE_TIME, true, Some(selected))
    }

    fn run_with(
        &self,
        packets: &[InputPacket],
        rules: &KernelRules,
        gap: Duration,
        settle: Duration,
        traced: bool,
        selected: Option<&[bool]>,
    ) -> anyhow::Result<KernelRun> {
        check_run_size(packets)?;
        // Fragments of one datagram share a tag (the first one's), or the kernel's
        // defragmentation could never put them together again.
        let mut datagram_tags: BTreeMap<Vec<u8>, u16> = BTreeMap::new();
        let prepared: Vec<Result<Prepared, String>> = packets
            .iter()
            .enumerate()
            .map(|(ordinal, packet)| {
                if selected.is_some_and(|s| !s.get(ordinal).copied().unwrap_or(true)) {
                    return Err(LEFT_TO_HOST.to_string());
                }
                let tag = match tag::datagram_key(&packet.data) {
                    Some(key) => *datagram_tags.entry(key).or_insert(tag_of(ordinal)),
                    None => tag_of(ordinal),
                };
                prepare(
                    packet,
                    tag,
                    |a| rules.is_server(a),
                    self.ipv6_refused.as_deref(),
                )
            })
            .collect();
        let frames: Vec<(Side, Vec<u8>)> = prepared
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|p| (p.side, p.frame.clone())))
            .collect();
        let counters_before = trace::snmp_counters(&self.topology).unwrap_or_default();
        let status = if traced && rules.backend == Backend::Guest {
            TraceStatus::Failed(GUEST_NO_TRACE.into())
        } else if traced {
            self.trace_begin()
        } else {
            TraceStatus::Off
        };
        let exchange = self.exchange_settling(frames, gap, settle)?;
        let (status, traces) = match status {
            TraceStatus::On => self.trace_end(),
            other => (other, Traces::default()),
        };
        let mut run = outcomes(&prepared, &exchange, rules.source_nat);
        let counters_after = trace::snmp_counters(&self.topology).unwrap_or_default();
        run.counters = trace::counter_deltas(&counters_before, &counters_after);
        if status == TraceStatus::On {
            attribute(&mut run, &prepared, &traces);
            run.trace_events_lost = traces.unparsed;
        }
        run.trace = status;
        Ok(run)
    }

    /// Send one probe frame (IPv4 ID [`PROBE_TAG`], client → the LB's own address).
    fn send_probe(&self) -> anyhow::Result<()> {
        let client: std::net::Ipv4Addr = CLIENT_ADDR.parse()?;
        let lb: std::net::Ipv4Addr = LB_CLIENT_ADDR.parse()?;
        let mut frame = datapath::packet::builder::PacketBuilder::eth()
            .ipv4(client, lb)
            .ip_id(PROBE_TAG)
            .echo_request(0x6c62, 1)
            .build();
        set_macs(&mut frame, Side::Client);
        let port = Port {
            ns: self.topology.client_ns(),
            iface: CLIENT_IFACE.into(),
        };
        inject(&[port], vec![(0, frame)], Duration::ZERO).map(drop)
    }

    fn lock_monitor(&self) -> std::sync::MutexGuard<'_, Option<Monitor>> {
        self.monitor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Make sure the trace reader runs (subscribed before this returns), and forget what
    /// it read so far.
    fn trace_begin(&self) -> TraceStatus {
        let mut slot = self.lock_monitor();
        if slot.is_none() {
            // Installed by the first traced run only: untraced runs (`sim bench`) measure
            // the kernel without the extra chain.
            let lb = self.topology.lb_ns();
            let installed = self
                .topology
                .exec(&lb, &["nft", "-f", "-"], Some(&trace::trace_nft()));
            if let Err(error) = installed {
                return TraceStatus::Failed(format!("{error:#}"));
            }
            let monitor = match Monitor::start(&self.topology) {
                Ok(monitor) => monitor,
                Err(error) => return TraceStatus::Failed(format!("{error:#}")),
            };
            *slot = Some(monitor);
        }
        if let Some(monitor) = slot.as_ref() {
            monitor.discard();
        }
        TraceStatus::On
    }

    /// Wait until the reader has this run's traces (a probe after the last packet) and
    /// group them per packet.
    fn trace_end(&self) -> (TraceStatus, Traces) {
        let mut slot = self.lock_monitor();
        let Some(monitor) = slot.as_ref() else {
            return (TraceStatus::Failed("no monitor".into()), Traces::default());
        };
        let before = monitor.probes_seen();
        if !monitor.sync(before, || self.send_probe()) {
            *slot = None;
            let why = "the trace reader saw no probe".to_string();
            return (TraceStatus::Failed(why), Traces::default());
        }
        match monitor.traces(&self.topology) {
            Ok(traces) => (TraceStatus::On, traces),
            Err(error) => (TraceStatus::Failed(format!("{error:#}")), Traces::default()),
        }
    }

    fn exchange_settling(
        &self,
        frames: Vec<(Side, Vec<u8>)>,
        gap: Duration,
        settle: Duration,
    ) -> anyhow::Result<Exchange> {
        let topology = &self.topology;
        let server = Observer::start(&topology.server_ns(), SERVER_IFACE, LB_SERVER_MAC)?;
        let client = Observer::start(&topology.client_ns(), CLIENT_IFACE, LB_CLIENT_MAC)?;
        let ports = [
            Port {
                ns: topology.client_ns(),
                iface: CLIENT_IFACE.into(),
            },
            Port {
                ns: topology.server_ns(),
                iface: SERVER_IFACE.into(),
            },
        ];
        let frames = frames
            .into_iter()
            .map(|(side, mut frame)| {
                set_macs(&mut frame, side);
                (usize::from(side == Side::Server), frame)
            })
            .collect();
        let started = Instant::now();
        let sent_at = inject(&ports, frames, gap)?;
        let inject_sec = started.elapsed().as_secs_f64();
        std::thread::sleep(settle);
        Ok(Exchange {
            sent_at,
            server: server.finish()?,
            client: client.finish()?,
            inject_sec,
        })
    }
}

/// Inject `packets` into a fresh topology with `rules` installed, observe, and return each
/// packet's outcome. The topology is removed before returning. Packets whose source is
/// one of the rules' real servers enter from the server side.
pub fn run_kernel(
    packets: &[InputPacket],
    rules: &KernelRules,
    gap: Duration,
) -> anyhow::Result<KernelRun> {
    check_run_size(packets)?; // before building a topology for nothing
    Lab::start(rules)?.run(packets, rules, gap, SETTLE_TIME)
}

/// [`run_kernel`] with per-packet rule attribution (see [`Lab::run_traced`]): what
/// `sim diff` runs.
pub fn run_kernel_traced(
    packets: &[InputPacket],
    rules: &KernelRules,
    gap: Duration,
) -> anyhow::Result<KernelRun> {
    check_run_size(packets)?; // before building a topology for nothing
    Lab::start(rules)?.run_traced(packets, rules, gap, SETTLE_TIME)
}

/// A run's packets must fit the 16-bit tags.
fn check_run_size(packets: &[InputPacket]) -> anyhow::Result<()> {
    if packets.len() > MAX_PACKETS_PER_RUN {
        anyhow::bail!(
            "{} packets: a kernel run holds at most {MAX_PACKETS_PER_RUN} (16-bit IPv4 ID tags)",
            packets.len()
        );
    }
    Ok(())
}

fn tag_of(ordinal: usize) -> u16 {
    u16::try_from(ordinal + 1).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::packet::builder::PacketBuilder;
    use datapath::packet::checksum;
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    fn input(frame: Vec<u8>) -> InputPacket {
        InputPacket {
            ts_ns: 0,
            link: LinkType::Ethernet,
            interface: 0,
            orig_len: frame.len() as u32,
            data: frame,
        }
    }

    #[test]
    fn prepare_tags_the_ip_id_and_keeps_the_header_checksum_valid() {
        let frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .tcp(1234, 80)
            .syn()
            .build();
        let prepared = prepare(&input(frame), 0x1234, |_| false, None).expect("IPv4");
        let ip = &prepared.frame[14..34];
        assert_eq!(&ip[4..6], &[0x12, 0x34]);
        assert!(checksum::is_valid(checksum::partial(ip)));
        assert_eq!(&prepared.frame[0..6], &LB_CLIENT_MAC);
        assert_eq!(prepared.side, Side::Client);
    }

    #[test]
    fn replies_of_real_servers_enter_from_the_server_side() {
        let frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 0, 1))
            .tcp(80, 1234)
            .syn_ack()
            .build();
        let servers = BTreeSet::from([IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2))]);
        let prepared = prepare(&input(frame), 9, |a| servers.contains(&a), None).expect("IPv4");
        assert_eq!(prepared.side, Side::Server);
        assert_eq!(&prepared.frame[0..6], &LB_SERVER_MAC);
    }

    #[test]
    fn prepare_keeps_a_bad_header_checksum_bad() {
        let mut frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .udp(1, 53)
            .build();
        frame[24] ^= 0xff;
        let prepared = prepare(&input(frame), 7, |_| false, None).expect("IPv4");
        let ip = &prepared.frame[14..34];
        assert!(!checksum::is_valid(checksum::partial(ip)));
    }

    #[test]
    fn ipv6_is_tagged_in_the_flow_label_unless_refused_and_qinq_is_not_injected() {
        let v6 = PacketBuilder::eth()
            .ipv6(
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
            .udp(1, 53)
            .build();
        let refused = prepare(&input(v6.clone()), 1, |_| false, Some("no IPv6 here"));
        assert_eq!(refused.err().as_deref(), Some("IPv6: no IPv6 here"));
        let prepared = prepare(&input(v6), 0x0304, |_| false, None).expect("IPv6");
        assert_eq!(&prepared.frame[15..18], &[0x00, 0x03, 0x04]);
        let qinq = PacketBuilder::eth()
            .vlan(10)
            .vlan(20)
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .udp(1, 53)
            .build();
        let why = prepare(&input(qinq), 1, |_| false, None)
            .err()
            .expect("QinQ");
        assert!(why.contains("QinQ"), "{why}");
    }

    #[test]
    fn a_single_tagged_frame_is_tagged_after_its_vlan_header() {
        let frame = PacketBuilder::eth()
            .vlan(42)
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .udp(1, 53)
            .build();
        let prepared = prepare(&input(frame), 0x0102, |_| false, None).expect("tagged IPv4");
        let at = tag::ip_at(&prepared.frame).expect("IPv4");
        assert_eq!((at.offset, at.header_len), (18, 20));
        assert_eq!(tag::read(&prepared.frame, at), 0x0102);
        assert_eq!(&prepared.frame[12..16], &[0x81, 0x00, 0x00, 42]);
        assert!(checksum::is_valid(checksum::partial(
            &prepared.frame[18..38]
        )));
    }
}
