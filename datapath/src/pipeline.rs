//! The pipeline: parse → invalid/fragment checks → shield → IP layer → flows → director/NAT,
//! counting every verdict per stage and reason.
//!
//! `Pipeline::process(now, iface, link, frame)` is the one entry point drivers call (the
//! simulator engine, `sim replay --appliance`, benchmarks). It returns a [`PacketOutcome`]
//! and leaves the frames the pipeline sends (the possibly rewritten packet, replies such as
//! SYN-cookie SYN-ACKs) in [`Pipeline::emitted`]. Stages are optional: a pipeline with none
//! classifies invalid packets and passes the rest, which is what a bare capture replay needs.
//!
//! Order, as the appliance's Linux kernel runs it:
//! 1. parse: the frame's headers, with `ip_rcv` / `ip_rcv_core` / `ipv6_rcv`'s sanity checks
//!    (version, IHL, lengths, header checksum) as the parser's invalid reasons, and the
//!    fragment overlap check;
//! 2. shield (PacketShield: netdev ingress, before IP);
//! 3. ip, reassembly (`nf_defrag_ipv4` / `nf_defrag_ipv6`, PREROUTING priority -400, only
//!    when conntrack runs): fragments are held until their datagram is complete;
//! 4. flows (mangle PREROUTING);
//! 5. ip, the routing decision and forwarding checks (`ip_route_input_slow` /
//!    `ip6_route_input`: martians, non-unicast destinations, `rp_filter`, forwarding off;
//!    `ip_forward` / `ip6_forward`: TTL / hop limit → ICMP time exceeded, MTU → ICMP
//!    fragmentation needed / packet too big, TTL decrement). In the kernel these come after
//!    DNAT (nat PREROUTING); here just before it, so that an ICMP error quotes the packet as
//!    received, which is what the kernel's conntrack makes of the quoted header on the way
//!    out (`nf_nat_icmp_reply_translation`); no check depends on the translated address
//!    except a DNAT to a loopback address;
//! 6. DNAT (nat PREROUTING) and the director (IPVS);
//! 7. SNAT / MASQUERADE (nat POSTROUTING). The kernel refragments a reassembled datagram
//!    along its original fragments (`ip_do_fragment`); so does `reassemble`.
//!
//! Replies of the director's own connections (real server → client) and of NATed ones are
//! un-NATed first, then shown to the shield (SYN-proxy sequence translation), then sent
//! (the IP layer's checks are not applied to them yet). A shield answer to a packet the
//! routing decision refuses is not sent (see `unroutable_answer`).
//!
//! Per queue and shared: a driver modelling several receive queues (CPUs) of one
//! appliance takes the shared stages out of one pipeline ([`Pipeline::take_shared`]: the
//! directors and NAT, with their connection/template tables, scheduler state, per-real
//! counters, conntrack and port allocation — one per network namespace in Linux) and runs
//! each queue's packets with [`Pipeline::process_local`] on its own pipeline (parse,
//! fragments, shield, flows, the IP layer, verdict counters — per CPU in Linux and
//! PacketShield, except the IP layer's ICMP rate limit and reassembly; see `split.rs`), then
//! finishes deferred packets with [`Pipeline::resume`] in its own deterministic order
//! (see `split.rs` and the simulator's `engine::shared`).
//!
//! Not here: configuration parsing (each stage's `build` does it) and any I/O.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use std::ops::ControlFlow;

use crate::director::Directors;
use crate::flows::{FlowAction, FlowCounters, FlowTable};
use crate::ip::defrag::Gathered;
use crate::ip::route::RouteRef;
use crate::ip::{IpDecision, IpLayer};
use crate::nat::{Nat, NatOutcome};
use crate::packet::fragments::{FragmentCounters, FragmentTracker};
use crate::packet::rewrite::{current_flow, rewritten_meta};
use crate::packet::{IfaceId, InvalidReason, LinkType, PacketMeta, ParseOptions, parse_into};
use crate::shield::{EmitBuffer, Shield, Toward};
use crate::verdict::{DropReason, Stage, TimeNs, Verdict};

mod later;
mod qa;
mod split;
use later::LaterStages;
pub use qa::QaTable;
pub use split::{Deferred, Local, SharedStages};

/// What happened to one packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketOutcome {
    /// The stage that decided.
    pub stage: Stage,
    /// The verdict.
    pub verdict: Verdict,
    /// Index of the flow (in the flow file's order) that classified the packet.
    pub flow: Option<u16>,
    /// 1-based rule index within that flow.
    pub flow_rule: Option<u16>,
    /// Real server chosen by the director.
    pub backend: Option<SocketAddr>,
    /// The director's virtual service (index) that decided, and whether this packet
    /// created the connection (for the simulator's persistence checks; not serialized).
    #[serde(skip)]
    pub director: Option<(u16, bool)>,
    /// The routing table and route the packet left by, when the appliance declares
    /// routing tables besides main (`[[ip.table]]`) and the destination was not translated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteRef>,
    /// Egress interface and gateway of that route (for the driver delivering the frame;
    /// not serialized).
    #[serde(skip)]
    pub next_hop: Option<(IfaceId, Option<IpAddr>)>,
    /// The egress MTU a forwarded IPv4 datagram without DF is cut to as it is sent (see
    /// `ip::fragment`), and the offset of its IP header; not serialized.
    #[serde(skip)]
    pub fragment_mtu: Option<(u32, u16)>,
}

impl PacketOutcome {
    fn decided(stage: Stage, verdict: Verdict) -> Self {
        Self {
            stage,
            verdict,
            flow: None,
            flow_rule: None,
            backend: None,
            director: None,
            route: None,
            next_hop: None,
            fragment_mtu: None,
        }
    }
}

/// A frame the pipeline sends, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmittedFrame {
    /// Interface it leaves by (the ingress interface for replies).
    pub iface: IfaceId,
    /// The bytes, link type as received.
    pub frame: Vec<u8>,
    /// The gateway it is sent to, when a routing table's route has one (`None`: to its
    /// destination).
    pub next_hop: Option<IpAddr>,
}

impl EmittedFrame {
    /// A frame leaving by `iface` toward its destination.
    pub fn new(iface: IfaceId, frame: Vec<u8>) -> Self {
        Self {
            iface,
            frame,
            next_hop: None,
        }
    }
}

/// Verdict counters per stage and reason: fixed arrays, so counting never allocates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Packets processed.
    pub packets: u64,
    /// Decisions per stage (by [`Stage::index`]) and verdict kind ([`Verdict::kind_index`]).
    pub verdicts: [[u64; 4]; Stage::ALL.len()],
    /// Drops per stage and reason (by [`DropReason::index`]).
    pub drops: [[u64; DropReason::COUNT]; Stage::ALL.len()],
    /// Fragment tracker counters.
    pub fragments: FragmentCounters,
}

impl Default for PipelineCounters {
    fn default() -> Self {
        Self {
            packets: 0,
            verdicts: [[0; 4]; Stage::ALL.len()],
            drops: [[0; DropReason::COUNT]; Stage::ALL.len()],
            fragments: FragmentCounters::default(),
        }
    }
}

/// One non-zero counter, for reports: `stage`, `verdict`, optional drop `reason`, `count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecisionRow {
    /// Deciding stage.
    pub stage: Stage,
    /// Verdict kind.
    pub verdict: &'static str,
    /// Drop reason name, for drops.
    pub reason: Option<String>,
    /// Packets.
    pub count: u64,
}

impl PipelineCounters {
    /// Add another pipeline's counters (shards of one run).
    pub fn merge(&mut self, other: &Self) {
        self.packets += other.packets;
        for (mine, theirs) in self.verdicts.iter_mut().zip(&other.verdicts) {
            mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
        }
        for (mine, theirs) in self.drops.iter_mut().zip(&other.drops) {
            mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
        }
        self.fragments.merge(&other.fragments);
    }

    fn count(&mut self, outcome: &PacketOutcome) {
        let stage = outcome.stage.index();
        self.verdicts[stage][outcome.verdict.kind_index()] += 1;
        if let Some(reason) = outcome.verdict.drop_reason() {
            self.drops[stage][reason.index()] += 1;
        }
    }

    /// Packets dropped as invalid with this reason (by the shield or, without one, at parse).
    pub fn invalid(&self, reason: InvalidReason) -> u64 {
        let index = DropReason::Invalid(reason).index();
        self.drops.iter().map(|stage| stage[index]).sum()
    }

    /// Every non-zero counter in a fixed order (stage, verdict, reason): drops broken down
    /// by reason, other verdicts as totals.
    pub fn rows(&self) -> Vec<DecisionRow> {
        let mut rows = Vec::new();
        for stage in Stage::ALL {
            for (kind, name) in Verdict::KINDS.iter().enumerate() {
                let count = self.verdicts[stage.index()][kind];
                if count == 0 {
                    continue;
                }
                if *name != "drop" {
                    rows.push(DecisionRow {
                        stage,
                        verdict: name,
                        reason: None,
                        count,
                    });
                    continue;
                }
                for (index, &count) in self.drops[stage.index()].iter().enumerate() {
                    let reason = DropReason::from_index(index).map(|r| r.name().into_owned());
                    if count > 0 {
                        rows.push(DecisionRow {
                            stage,
                            verdict: name,
                            reason,
                            count,
                        });
                    }
                }
            }
        }
        rows
    }
}

/// The flow manager as a pipeline stage: the immutable table and the counters it fills.
#[derive(Debug)]
pub struct FlowStage {
    /// The compiled flow table.
    pub table: FlowTable,
    /// Its hit counters.
    pub counters: FlowCounters,
}

/// The composed pipeline. Tables inside stages are immutable once built; state (sessions,
/// connections, counters) changes only through `process` and the stages' timed operations.
#[derive(Debug)]
pub struct Pipeline {
    parse_options: ParseOptions,
    fragments: FragmentTracker,
    counters: PipelineCounters,
    emitted: Vec<EmittedFrame>,
    last_meta: PacketMeta,
    shield: Option<Shield>,
    shield_emit: EmitBuffer,
    flows: Option<FlowStage>,
    directors: Option<Directors>,
    nat: Option<Nat>,
    ip: Option<IpLayer>,
    /// QA: tables still to be made full, and after how many packets.
    qa_full_after: Vec<(QaTable, u64)>,
    /// QA: tables made full so far, with the packet count they were set to.
    qa_full: Vec<(QaTable, u64)>,
    /// Keep the buffer of a frame the early stages consumed (dropped or answered from a
    /// copy) for [`Pipeline::take_spare_frame`], instead of freeing it.
    keep_spares: bool,
    /// That buffer, until taken.
    spare: Option<Vec<u8>>,
    /// Set when the shared stages were taken out ([`Pipeline::take_shared`]): what they
    /// are, for the per-queue half of a split run.
    split: Option<split::SplitInfo>,
    /// The shared stages are out (split, and not lent back for [`Pipeline::resume`]).
    lent: bool,
    /// Work for the shared stages found while processing locally (frames the shield sends
    /// toward servers), taken with [`Pipeline::take_deferred`].
    deferred: Vec<split::Deferred>,
    /// QA settings for shared tables that fired while the shared stages were out.
    shared_full_pending: Vec<QaTable>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new(ParseOptions::default())
    }
}

/// Where a packet goes after the shield, as far as the later stages are concerned.
struct Classified {
    outcome: PacketOutcome,
    forward: bool,
    /// An ICMP error the IP layer answers with (back out of the ingress interface).
    answer: Option<Vec<u8>>,
}

impl Pipeline {
    /// A pipeline with no stages configured yet.
    pub fn new(parse_options: ParseOptions) -> Self {
        Self {
            parse_options,
            fragments: FragmentTracker::new(),
            counters: PipelineCounters::default(),
            emitted: Vec::new(),
            last_meta: PacketMeta::default(),
            shield: None,
            shield_emit: EmitBuffer::new(),
            flows: None,
            directors: None,
            nat: None,
            ip: None,
            qa_full_after: Vec::new(),
            qa_full: Vec::new(),
            keep_spares: false,
            spare: None,
            split: None,
            lent: false,
            deferred: Vec::new(),
            shared_full_pending: Vec::new(),
        }
    }

    /// Key the pipeline's own packet-keyed table (the fragment tracker) from `seed`, the
    /// run's seed (stages get theirs when built: `shield::build`, `DirectorOptions`,
    /// `nat::config::build`). Without it the tracker is keyed from
    /// [`crate::hash::keyed::DEFAULT_SEED`]. Call it before the first packet.
    pub fn with_hash_seed(mut self, seed: u64) -> Self {
        self.fragments = FragmentTracker::keyed(seed);
        self
    }

    /// Opt in to buffer recycling: the buffer of a frame that the reply un-NAT, director
    /// reply or shield step consumed without sending it on (a drop, mostly) is kept for
    /// [`Pipeline::take_spare_frame`] instead of being freed, so a caller that allocates
    /// frames (the simulator's traffic sources) can reuse it. Off by default: then nothing
    /// is kept and nothing costs more.
    pub fn keep_spare_frames(&mut self, keep: bool) {
        self.keep_spares = keep;
        if !keep {
            self.spare = None;
        }
    }

    /// The kept buffer of the last consumed frame, if any (see
    /// [`Pipeline::keep_spare_frames`]); its contents are unspecified.
    #[inline]
    pub fn take_spare_frame(&mut self) -> Option<Vec<u8>> {
        self.spare.take()
    }

    #[inline]
    fn keep_spare(&mut self, frame: Vec<u8>) {
        if self.keep_spares && frame.capacity() > 0 {
            self.spare = Some(frame);
        }
    }

    /// Add the shield stage.
    pub fn with_shield(mut self, shield: Shield) -> Self {
        self.shield = Some(shield);
        self
    }

    /// Add the flow-manager stage.
    pub fn with_flows(mut self, table: FlowTable) -> Self {
        let counters = table.counters();
        self.flows = Some(FlowStage { table, counters });
        self
    }

    /// Add the director stage.
    pub fn with_directors(mut self, directors: Directors) -> Self {
        self.directors = Some(directors);
        self
    }

    /// Process one frame at virtual time `now`. `wire_len` is the original length when the
    /// frame is a snapped capture, else `frame.len()`.
    pub fn process(
        &mut self,
        now: TimeNs,
        iface: IfaceId,
        link: LinkType,
        frame: Vec<u8>,
        wire_len: u32,
    ) -> PacketOutcome {
        self.emitted.clear();
        self.apply_qa_full_after();
        self.counters.packets += 1;
        // Only fragments reach the tracker (its counters change only for them).
        self.parse(now, iface, link, &frame, wire_len);
        let outcome = self.decide(now, iface, link, frame);
        self.counters.count(&outcome);
        outcome
    }

    /// The stages of `process` after parsing. Each stage's entry is behind a test of
    /// whether it is configured, so an absent stage costs a branch, not a call.
    #[inline]
    fn decide(
        &mut self,
        now: TimeNs,
        iface: IfaceId,
        link: LinkType,
        mut frame: Vec<u8>,
    ) -> PacketOutcome {
        if self.nat.is_some()
            && let Some(outcome) = self.nat_reply(now, link, iface, &mut frame)
        {
            self.keep_spare(frame);
            return outcome;
        }
        if self.directors.is_some()
            && let Some(reply) = self.director_reply(now, link, iface, &mut frame)
        {
            self.keep_spare(frame);
            return reply;
        }
        if (self.shield.is_some() || self.last_meta.invalid.is_some())
            && let Some(outcome) = self.shield_stage(now, link, &mut frame)
        {
            self.keep_spare(frame);
            return self.unroutable_answer(outcome);
        }
        if self.last_meta.frag.is_fragment
            && self.ip.as_ref().is_some_and(|ip| ip.config().conntrack)
        {
            return self.reassemble(now, iface, link, frame);
        }
        if self.flows.is_none()
            && self.nat.is_none()
            && self.directors.is_none()
            && self.ip.is_none()
        {
            // What `classify` decides without any of its stages.
            self.emitted.push(EmittedFrame::new(iface, frame));
            return PacketOutcome::decided(Stage::Forward, Verdict::Pass);
        }
        self.after_shield(now, iface, frame)
    }

    /// Replies of the director's connections (real server → client) are un-NATed first,
    /// then shown to the shield (which translates sequence numbers of proxied connections,
    /// or consumes the server's SYN-ACK), then sent; flows are not applied to them again.
    fn director_reply(
        &mut self,
        now: TimeNs,
        link: LinkType,
        iface: IfaceId,
        frame: &mut Vec<u8>,
    ) -> Option<PacketOutcome> {
        let directors = self.directors.as_mut()?;
        let ControlFlow::Break(decision) = directors.process_reply(now, frame, &self.last_meta)
        else {
            return None;
        };
        let mut outcome = PacketOutcome::decided(Stage::Director, decision.verdict);
        outcome.backend = decision.backend;
        if decision.verdict != Verdict::Forward {
            return Some(outcome);
        }
        let wire_len = frame.len() as u32;
        parse_into(
            &self.parse_options,
            link,
            frame,
            wire_len,
            iface,
            &mut self.last_meta,
        );
        if let Some(decided) = self.shield_stage(now, link, frame) {
            return Some(decided);
        }
        self.emitted
            .push(EmittedFrame::new(iface, std::mem::take(frame)));
        Some(outcome)
    }

    /// Run the shield (or, without one, the bare invalid-packet check). `Some` when the
    /// packet was decided here (then `frame` is consumed: its buffer may carry a frame the
    /// shield emits). Frames the shield sends toward the server go through the
    /// later stages like passed client frames; those toward the client go out directly.
    fn shield_stage(
        &mut self,
        now: TimeNs,
        link: LinkType,
        frame: &mut Vec<u8>,
    ) -> Option<PacketOutcome> {
        let invalid = self.last_meta.invalid;
        let Some(shield) = self.shield.as_mut() else {
            let reason = invalid?;
            return Some(PacketOutcome::decided(
                Stage::Parse,
                Verdict::Drop(DropReason::Invalid(reason)),
            ));
        };
        shield.set_ethernet(link == LinkType::Ethernet);
        let flow = shield.process(now, frame, &self.last_meta, &mut self.shield_emit);
        // A decided packet is not sent on: the first frame the shield emits is copied into
        // its buffer when it fits, so a cookie SYN-ACK costs no allocation.
        let mut spare = flow.is_break().then(|| std::mem::take(frame));
        for index in 0..self.shield_emit.len() {
            let sent = &self.shield_emit.frames()[index];
            let (iface, toward) = (sent.iface, sent.toward);
            let bytes = match spare.take() {
                Some(mut buffer) if buffer.capacity() >= sent.bytes.len() => {
                    buffer.clear();
                    buffer.extend_from_slice(&sent.bytes);
                    buffer
                }
                _ => sent.bytes.clone(),
            };
            match toward {
                Toward::Client => self.emitted.push(EmittedFrame::new(iface, bytes)),
                Toward::Server => self.forward_shield_frame(now, link, iface, bytes),
            }
        }
        if let Some(buffer) = spare {
            *frame = buffer; // not used for an answer: the caller may keep it
        }
        match flow {
            ControlFlow::Break(verdict) => Some(PacketOutcome::decided(Stage::Shield, verdict)),
            // No shield instance on this interface: invalid packets still never pass.
            ControlFlow::Continue(()) => invalid.map(|reason| {
                PacketOutcome::decided(Stage::Parse, Verdict::Drop(DropReason::Invalid(reason)))
            }),
        }
    }

    /// A frame the shield originates toward the server (SYN proxy): it goes through the
    /// later stages like a client frame, without touching the current packet's description.
    fn forward_shield_frame(
        &mut self,
        now: TimeNs,
        link: LinkType,
        iface: IfaceId,
        frame: Vec<u8>,
    ) {
        if self.lent {
            self.defer_shield_frame(link, iface, frame);
            return;
        }
        let mut meta = PacketMeta::default();
        parse_into(
            &self.parse_options,
            link,
            &frame,
            frame.len() as u32,
            iface,
            &mut meta,
        );
        let mut frame = frame;
        let classified = self.later_stages().0.classify(now, &meta, &mut frame);
        self.send_classified(iface, frame, &classified);
    }

    /// Send what `classify` let through (by its route's interface and gateway when a
    /// routing table chose them; in fragments when the IP layer said so), or the ICMP
    /// error it answered with.
    fn send_classified(&mut self, iface: IfaceId, frame: Vec<u8>, classified: &Classified) {
        if classified.forward {
            if let Some((mtu, l3)) = classified.outcome.fragment_mtu {
                self.send_fragments(iface, frame, &classified.outcome, mtu, l3);
            } else {
                self.emitted.push(routed(iface, frame, &classified.outcome));
            }
        } else if let Some(answer) = &classified.answer {
            self.emitted.push(EmittedFrame::new(iface, answer.clone()));
        }
    }

    /// Flows, then the director; forward what survives.
    fn after_shield(&mut self, now: TimeNs, iface: IfaceId, mut frame: Vec<u8>) -> PacketOutcome {
        let (mut later, meta) = self.later_stages();
        let classified = later.classify(now, meta, &mut frame);
        self.send_classified(iface, frame, &classified);
        classified.outcome
    }

    /// The stages after the shield, borrowed apart from the current packet's description
    /// (so that it is read in place, not moved out and back).
    fn later_stages(&mut self) -> (LaterStages<'_>, &PacketMeta) {
        let later = LaterStages {
            flows: self.flows.as_mut(),
            nat: self.nat.as_mut(),
            directors: self.directors.as_mut(),
            ip: self.ip.as_mut(),
        };
        (later, &self.last_meta)
    }

    /// Add the NAT stage (DNAT in prerouting, SNAT / MASQUERADE in postrouting, replies
    /// translated back before the shield).
    pub fn with_nat(mut self, nat: Nat) -> Self {
        self.nat = Some(nat);
        self
    }

    /// The NAT stage, if configured (rules, rule hits, connection tracking).
    pub fn nat(&self) -> Option<&Nat> {
        self.nat.as_ref()
    }

    /// A shield answer (SYN-ACK cookie, RST) to a packet the IP layer's routing decision
    /// refuses (martian source or destination, multicast / broadcast) is not sent: Linux
    /// answers (SYN cookies, synproxy, RST) only packets its routing accepted, and a
    /// reflector toward such addresses is what the routing checks exist to prevent. The
    /// shield still saw the packet (its state and counters moved); the packet counts as
    /// the IP layer's drop.
    fn unroutable_answer(&mut self, outcome: PacketOutcome) -> PacketOutcome {
        let (Some(ip), Verdict::Reply) = (self.ip.as_ref(), outcome.verdict) else {
            return outcome;
        };
        match ip.refusal(&self.last_meta) {
            Some(reason) => {
                self.emitted.clear();
                PacketOutcome::decided(Stage::Ip, Verdict::Drop(reason))
            }
            None => outcome,
        }
    }

    /// Add the IP layer (reassembly, routing decision, forwarding checks; see `ip`).
    pub fn with_ip(mut self, ip: IpLayer) -> Self {
        self.ip = Some(ip);
        self
    }

    /// The IP layer, if configured (settings and counters).
    pub fn ip(&self) -> Option<&IpLayer> {
        self.ip.as_ref()
    }

    /// A fragment the shield let through: held until its datagram is complete, which then
    /// goes through the later stages as its first fragment (the one with the ports) and
    /// leaves as its fragments, each carrying the first's rewritten addresses and TTL.
    fn reassemble(
        &mut self,
        now: TimeNs,
        iface: IfaceId,
        link: LinkType,
        frame: Vec<u8>,
    ) -> PacketOutcome {
        let (mut first, rest) = match self.gather_datagram(now, iface, link, &frame) {
            Ok(datagram) => datagram,
            Err(outcome) => return outcome,
        };
        let (mut later, meta) = self.later_stages();
        let mut classified = later.classify(now, meta, &mut first);
        self.requote_reassembled(&mut classified, &first, &rest);
        self.send_datagram(iface, first, rest, &classified);
        classified.outcome
    }

    /// The IP layer's ICMP error for a reassembled datagram (`first` and `rest`) quotes the
    /// whole datagram, not its first fragment, as the kernel's does after nf_defrag.
    fn requote_reassembled(&self, classified: &mut Classified, first: &[u8], rest: &[Vec<u8>]) {
        if rest.is_empty() {
            return;
        }
        if let (Some(answer), Stage::Ip) = (&classified.answer, classified.outcome.stage) {
            let l3 = usize::from(self.last_meta.l3_offset);
            let mut frames = vec![first.to_vec()];
            frames.extend(rest.iter().cloned());
            let whole = crate::ip::defrag::reassembled(&frames, l3);
            if let Some(requoted) =
                whole.and_then(|w| crate::ip::icmp::requote(answer, l3, &w[l3..]))
            {
                classified.answer = Some(requoted);
            }
        }
    }

    /// Reassembly's first half: hold `frame` (a fragment) until its datagram is complete;
    /// then its first fragment (parsed into the current packet's description) and the
    /// others, or `Err` with the outcome of a fragment held, duplicated or failed.
    fn gather_datagram(
        &mut self,
        now: TimeNs,
        iface: IfaceId,
        link: LinkType,
        frame: &[u8],
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), PacketOutcome> {
        let ip = self.ip.as_mut().expect("reassembly needs the IP layer");
        let frames = match ip.defrag.gather(now, &self.last_meta, frame) {
            Gathered::Held => return Err(PacketOutcome::decided(Stage::Ip, Verdict::Pass)),
            Gathered::Duplicate => {
                let reason = DropReason::FragmentDuplicate;
                return Err(PacketOutcome::decided(Stage::Ip, Verdict::Drop(reason)));
            }
            Gathered::Failed => {
                let reason = DropReason::ReassemblyFailed;
                return Err(PacketOutcome::decided(Stage::Ip, Verdict::Drop(reason)));
            }
            Gathered::Complete(frames) => frames,
        };
        let mut frames = frames.into_iter();
        let Some(first) = frames.next() else {
            return Err(PacketOutcome::decided(Stage::Ip, Verdict::Pass));
        };
        let wire_len = first.len() as u32;
        parse_into(
            &self.parse_options,
            link,
            &first,
            wire_len,
            iface,
            &mut self.last_meta,
        );
        Ok((first, frames.collect()))
    }

    /// Reassembly's second half: send the classified first fragment (or the answer) and,
    /// when it is forwarded, the others with its rewritten header fields.
    fn send_datagram(
        &mut self,
        iface: IfaceId,
        first: Vec<u8>,
        rest: Vec<Vec<u8>>,
        classified: &Classified,
    ) {
        let l3 = usize::from(self.last_meta.l3_offset);
        let rest: Vec<Vec<u8>> = if classified.forward {
            rest.into_iter()
                .map(|mut f| {
                    crate::ip::copy_header_fields(&first, &mut f, l3);
                    f
                })
                .collect()
        } else {
            Vec::new()
        };
        self.send_classified(iface, first, classified);
        for f in rest {
            self.emitted.push(routed(iface, f, &classified.outcome));
        }
    }
}

/// A forwarded frame, by its route's interface and gateway when it has one.
fn routed(iface: IfaceId, frame: Vec<u8>, outcome: &PacketOutcome) -> EmittedFrame {
    match outcome.next_hop {
        Some((egress, next_hop)) => EmittedFrame {
            iface: egress,
            frame,
            next_hop,
        },
        None => EmittedFrame::new(iface, frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::PacketBuilder;
    use std::net::Ipv4Addr;

    #[test]
    fn invalid_packets_are_dropped_at_parse_and_counted() {
        let mut pipeline = Pipeline::default();
        let good = PacketBuilder::eth()
            .ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
            .tcp(1, 2)
            .syn()
            .build();
        let bad = PacketBuilder::eth()
            .ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
            .tcp(1, 2)
            .flags(0)
            .build();
        let ok = pipeline.process(0, 0, LinkType::Ethernet, good.clone(), good.len() as u32);
        assert_eq!((ok.stage, ok.verdict), (Stage::Forward, Verdict::Pass));
        assert_eq!(pipeline.emitted()[0].frame, good);
        let dropped = pipeline.process(1, 0, LinkType::Ethernet, bad.clone(), bad.len() as u32);
        assert_eq!(
            dropped.verdict,
            Verdict::Drop(DropReason::Invalid(InvalidReason::TcpNoFlags))
        );
        assert!(pipeline.emitted().is_empty());
        let c = pipeline.counters();
        assert_eq!((c.packets, c.invalid(InvalidReason::TcpNoFlags)), (2, 1));
        let rows: Vec<_> = c
            .rows()
            .into_iter()
            .map(|r| (r.stage, r.verdict, r.reason, r.count))
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    Stage::Parse,
                    "drop",
                    Some("invalid:tcp_no_flags".to_string()),
                    1
                ),
                (Stage::Forward, "pass", None, 1),
            ]
        );
    }
}
