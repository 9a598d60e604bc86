//! A pipeline split into a per-queue half and shared stages, for drivers that model an
//! appliance with several receive queues (CPUs) sharing one director and one NAT table.
//!
//! [`Pipeline::take_shared`] takes the director and the NAT stage (connection and template
//! tables, scheduler state, per-real counters, conntrack and port allocation: what Linux
//! keeps once per network namespace) out of a pipeline; what stays is the per-queue half
//! (parse, fragment tracker, shield, flow hit counters, verdict counters: what Linux and
//! PacketShield keep per CPU). [`Pipeline::process_local`] then runs a packet as far as the
//! per-queue half can: packets the shield or the flows decide are done; the others come
//! back as [`Deferred`] work that [`Pipeline::resume`] finishes with the shared stages lent
//! back, in whatever order the driver chooses (the simulator: virtual time, then flow).
//!
//! A packet is deferred before the shield when the shared stages may claim it as a reply
//! (NAT configured: every packet, conntrack decides; director only: a packet from a real
//! server's address), after the flows otherwise. Frames the shield sends toward a server
//! (SYN proxy) are deferred too ([`Pipeline::take_deferred`]).
//!
//! The IP layer stays with each queue (like the shield): on a packet deferred after the
//! flows, `process_local` has already run its per-packet work — a shield answer to an
//! unroutable packet is withheld (`unroutable_answer`), fragments are reassembled before
//! the flows (the datagram's other fragments travel with the deferred work and leave
//! after `resume`, refragmented), and the routing decision and forwarding checks
//! (`route_and_forward`: a drop, or an ICMP error sent from the queue) run after the flows
//! and before the shared DNAT / director / SNAT. A packet deferred before the shield goes
//! through all of `process`'s stages in `resume`, still with its own queue's IP layer.
//! Simplification: the ICMP error rate limit is per queue; Linux's (the `inet_peer`
//! per-destination bucket and the global `icmp_msgs_per_sec` bucket) is shared by all
//! CPUs, so with N queues a source can get up to N times Linux's ICMP errors. Reassembly
//! queues are per queue too, which is exact as long as a datagram's fragments reach one
//! queue (the client endpoint's hash steers them; Linux keeps one table per namespace).
//!
//! `process` on an unsplit pipeline is unchanged; a split pipeline run with
//! `process_local` + `resume` right away decides exactly as `process` does.

use std::net::IpAddr;

use super::{PacketOutcome, Pipeline};
use crate::director::Directors;
use crate::nat::Nat;
use crate::packet::{IfaceId, LinkType, PacketMeta, parse_into};
use crate::verdict::TimeNs;

/// The stages every receive queue shares: directors and NAT (with connection tracking).
#[derive(Debug, Default)]
pub struct SharedStages {
    directors: Option<Directors>,
    nat: Option<Nat>,
}

impl SharedStages {
    /// The directors, if configured.
    pub fn directors(&self) -> Option<&Directors> {
        self.directors.as_ref()
    }

    /// The directors, for timed operations (server down/up, weight).
    pub fn directors_mut(&mut self) -> Option<&mut Directors> {
        self.directors.as_mut()
    }

    /// The NAT stage, if configured.
    pub fn nat(&self) -> Option<&Nat> {
        self.nat.as_ref()
    }

    /// Whether there is any shared stage (else a split changes nothing).
    pub fn is_empty(&self) -> bool {
        self.directors.is_none() && self.nat.is_none()
    }
}

/// What a split pipeline knows of the shared stages it gave away.
#[derive(Debug, Clone, Default)]
pub(super) struct SplitInfo {
    nat: bool,
    directors: bool,
    /// Addresses of every real server (sorted): the only sources of director replies.
    reals: Vec<IpAddr>,
}

/// Where a deferred packet resumes.
#[derive(Debug, Clone)]
enum Entry {
    /// From the start of the stages (a possible reply: NAT / director reply path first).
    Start,
    /// After the flows and the IP layer's routing decision, with the outcome so far, the
    /// firewall mark and, for a reassembled datagram (whose first fragment is the deferred
    /// frame), its other fragments.
    AfterFlows(PacketOutcome, Option<u32>, Vec<Vec<u8>>),
    /// A frame the shield sends toward a server: flows, then the shared stages.
    ShieldFrame,
}

/// A packet (or a frame the shield sent) waiting for the shared stages.
#[derive(Debug, Clone)]
pub struct Deferred {
    frame: Vec<u8>,
    meta: Box<PacketMeta>,
    iface: IfaceId,
    link: LinkType,
    entry: Entry,
}

impl Deferred {
    /// The packet's description (for a frame the shield sent: of the packet that made it
    /// send it), e.g. for the driver's ordering key.
    pub fn meta(&self) -> &PacketMeta {
        &self.meta
    }

    /// Whether this is a frame the shield sent (its result is no packet's outcome).
    pub fn is_shield_frame(&self) -> bool {
        matches!(self.entry, Entry::ShieldFrame)
    }
}

/// The per-queue result of a packet.
#[derive(Debug)]
pub enum Local {
    /// Decided by the per-queue half; emitted frames in [`Pipeline::emitted`].
    Done(PacketOutcome),
    /// Needs the shared stages: [`Pipeline::resume`].
    Deferred(Deferred),
}

impl Pipeline {
    /// Take the shared stages out (see the module doc); this pipeline becomes a per-queue
    /// half. Taking them again gives empty stages.
    pub fn take_shared(&mut self) -> SharedStages {
        let shared = SharedStages {
            directors: self.directors.take(),
            nat: self.nat.take(),
        };
        if self.split.is_none() && !shared.is_empty() {
            let mut reals: Vec<IpAddr> = shared
                .directors
                .iter()
                .flat_map(|d| d.services())
                .flat_map(|s| s.dests.linked().map(|(_, real)| real.address.ip()))
                .collect();
            reals.sort_unstable();
            reals.dedup();
            self.split = Some(SplitInfo {
                nat: shared.nat.is_some(),
                directors: shared.directors.is_some(),
                reals,
            });
            self.lent = true;
        }
        shared
    }

    /// Put the shared stages back (e.g. to report them with this pipeline's stages).
    pub fn restore_shared(&mut self, shared: SharedStages) {
        self.directors = shared.directors;
        self.nat = shared.nat;
        self.split = None;
        self.lent = false;
    }

    /// The per-queue half of [`Pipeline::process`] (see the module doc). On a pipeline
    /// that was not split, the same as `process`.
    pub fn process_local(
        &mut self,
        now: TimeNs,
        iface: IfaceId,
        link: LinkType,
        mut frame: Vec<u8>,
        wire_len: u32,
    ) -> Local {
        if self.split.is_none() {
            return Local::Done(self.process(now, iface, link, frame, wire_len));
        }
        self.emitted.clear();
        self.apply_qa_full_after();
        self.counters.packets += 1;
        self.parse(now, iface, link, &frame, wire_len);
        if self.may_be_reply() {
            return Local::Deferred(self.deferred(frame, iface, link, Entry::Start));
        }
        if (self.shield.is_some() || self.last_meta.invalid.is_some())
            && let Some(outcome) = self.shield_stage(now, link, &mut frame)
        {
            self.keep_spare(frame);
            let outcome = self.unroutable_answer(outcome);
            self.counters.count(&outcome);
            return Local::Done(outcome);
        }
        let local = self.local_after_shield(now, iface, link, frame);
        if let Local::Done(outcome) = &local {
            self.counters.count(outcome);
        }
        local
    }

    /// The per-queue stages after the shield: reassembly, the flows, the IP layer's routing
    /// decision and forwarding checks (an ICMP error it answers with is sent from here).
    fn local_after_shield(
        &mut self,
        now: TimeNs,
        iface: IfaceId,
        link: LinkType,
        mut frame: Vec<u8>,
    ) -> Local {
        let mut rest = Vec::new();
        if self.last_meta.frag.is_fragment
            && self.ip.as_ref().is_some_and(|ip| ip.config().conntrack)
        {
            match self.gather_datagram(now, iface, link, &frame) {
                Ok((first, others)) => {
                    self.keep_spare(std::mem::replace(&mut frame, first));
                    rest = others;
                }
                Err(outcome) => {
                    self.keep_spare(frame);
                    return Local::Done(outcome);
                }
            }
        }
        let (mut later, meta) = self.later_stages();
        match later.classify_flows(now, meta, &mut frame) {
            Ok((outcome, fwmark)) => {
                let entry = Entry::AfterFlows(outcome, fwmark, rest);
                Local::Deferred(self.deferred(frame, iface, link, entry))
            }
            Err(mut classified) => {
                self.requote_reassembled(&mut classified, &frame, &rest);
                if classified.answer.is_some() {
                    self.send_classified(iface, Vec::new(), &classified);
                }
                self.keep_spare(frame);
                Local::Done(classified.outcome)
            }
        }
    }

    /// Finish deferred work with the shared stages lent back for the call. Returns the
    /// packet's outcome (`None` for a frame the shield sent); emitted frames are in
    /// [`Pipeline::emitted`].
    pub fn resume(
        &mut self,
        now: TimeNs,
        deferred: Deferred,
        shared: &mut SharedStages,
    ) -> Option<PacketOutcome> {
        self.emitted.clear();
        std::mem::swap(&mut self.directors, &mut shared.directors);
        std::mem::swap(&mut self.nat, &mut shared.nat);
        self.lent = false;
        // Timers advance with every packet, as when every packet met the director first.
        if let Some(directors) = self.directors.as_mut() {
            directors.advance(now);
        }
        for table in std::mem::take(&mut self.shared_full_pending) {
            self.set_table_full(table);
        }
        let Deferred {
            mut frame,
            meta,
            iface,
            link,
            entry,
        } = deferred;
        let outcome = match entry {
            Entry::ShieldFrame => {
                self.forward_shield_frame(now, link, iface, frame);
                None
            }
            Entry::Start => {
                self.last_meta = *meta;
                Some(self.decide(now, iface, link, frame))
            }
            Entry::AfterFlows(outcome, fwmark, rest) => {
                let classified = self
                    .later_stages()
                    .0
                    .classify_shared(now, &meta, &mut frame, outcome, fwmark);
                self.last_meta = *meta;
                if classified.forward {
                    self.send_datagram(iface, frame, rest, &classified);
                } else {
                    self.keep_spare(frame);
                }
                Some(classified.outcome)
            }
        };
        if let Some(outcome) = &outcome {
            self.counters.count(outcome);
        }
        std::mem::swap(&mut self.directors, &mut shared.directors);
        std::mem::swap(&mut self.nat, &mut shared.nat);
        self.lent = true;
        outcome
    }

    /// Frames the shield sent toward servers while the shared stages were out, to resume
    /// after the packet that made it send them.
    pub fn take_deferred(&mut self) -> impl Iterator<Item = Deferred> + '_ {
        self.deferred.drain(..)
    }

    /// Whether the last `process_local` left frames for [`Pipeline::take_deferred`].
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Whether the shared stages may claim the current packet as a reply (NAT: any packet,
    /// conntrack decides; directors: a packet from a real server's address).
    fn may_be_reply(&self) -> bool {
        let Some(split) = &self.split else {
            return false;
        };
        let from_real = |src: &IpAddr| split.reals.binary_search(src).is_ok();
        split.nat || (split.directors && self.last_meta.src.as_ref().is_some_and(from_real))
    }

    /// Parse `frame` into the current packet's description (and track fragments).
    pub(super) fn parse(
        &mut self,
        now: TimeNs,
        iface: IfaceId,
        link: LinkType,
        frame: &[u8],
        len: u32,
    ) {
        let meta = &mut self.last_meta;
        parse_into(&self.parse_options, link, frame, len, iface, meta);
        // Only fragments reach the tracker (its counters change only for them).
        if meta.frag.is_fragment && meta.invalid.is_none() {
            meta.invalid = self.fragments.observe(now, meta);
            self.counters.fragments = self.fragments.counters();
            if meta.invalid.is_some()
                && let Some(ip) = self.ip.as_mut()
            {
                ip.defrag.discard_datagram(meta);
            }
        }
    }

    fn deferred(&self, frame: Vec<u8>, iface: IfaceId, link: LinkType, entry: Entry) -> Deferred {
        Deferred {
            frame,
            meta: Box::new(self.last_meta.clone()),
            iface,
            link,
            entry,
        }
    }

    /// A frame the shield sends toward a server while the shared stages are out.
    pub(super) fn defer_shield_frame(&mut self, link: LinkType, iface: IfaceId, frame: Vec<u8>) {
        let deferred = self.deferred(frame, iface, link, Entry::ShieldFrame);
        self.deferred.push(deferred);
    }
}
