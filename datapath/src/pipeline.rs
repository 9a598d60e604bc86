//! The pipeline: parse → invalid/fragment checks → shield → flows → director/NAT, counting
//! every verdict per stage and reason.
//!
//! `Pipeline::process(now, iface, link, frame)` is the one entry point drivers call (the
//! simulator engine, `sim replay --appliance`, benchmarks). It returns a [`PacketOutcome`]
//! and leaves the frames the pipeline sends (the possibly rewritten packet, replies such as
//! SYN-cookie SYN-ACKs) in [`Pipeline::emitted`]. Stages are optional: a pipeline with none
//! classifies invalid packets and passes the rest, which is what a bare capture replay needs.
//!
//! Not here: configuration parsing (each stage's `build` does it) and any I/O.

use std::net::SocketAddr;

use serde::Serialize;

use crate::packet::fragments::{FragmentCounters, FragmentTracker};
use crate::packet::{IfaceId, InvalidReason, LinkType, PacketMeta, ParseOptions, parse_with};
use crate::verdict::{DropReason, Stage, TimeNs, Verdict};

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
}

impl PacketOutcome {
    fn decided(stage: Stage, verdict: Verdict) -> Self {
        Self {
            stage,
            verdict,
            flow: None,
            flow_rule: None,
            backend: None,
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
}

/// Verdict counters per stage and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PipelineCounters {
    /// Packets processed.
    pub packets: u64,
    /// Packets dropped as invalid, by reason (indexed by [`InvalidReason::index`]).
    pub invalid: Vec<u64>,
    /// Decisions per (stage, verdict name, drop reason name or "").
    pub decisions: std::collections::BTreeMap<(Stage, &'static str, String), u64>,
    /// Fragment tracker counters.
    pub fragments: FragmentCounters,
}

impl PipelineCounters {
    fn count(&mut self, outcome: &PacketOutcome) {
        let reason = outcome
            .verdict
            .drop_reason()
            .map(|r| r.name().into_owned())
            .unwrap_or_default();
        *self
            .decisions
            .entry((outcome.stage, outcome.verdict.name(), reason))
            .or_default() += 1;
        if let Verdict::Drop(DropReason::Invalid(r)) = outcome.verdict {
            if self.invalid.len() < InvalidReason::COUNT {
                self.invalid.resize(InvalidReason::COUNT, 0);
            }
            self.invalid[r.index()] += 1;
        }
    }
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
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new(ParseOptions::default())
    }
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
        }
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
        self.counters.packets += 1;
        let mut meta = parse_with(&self.parse_options, link, &frame, wire_len, iface);
        if meta.invalid.is_none() {
            meta.invalid = self.fragments.observe(now, &meta);
        }
        let outcome = match meta.invalid {
            Some(reason) => {
                PacketOutcome::decided(Stage::Parse, Verdict::Drop(DropReason::Invalid(reason)))
            }
            None => {
                self.emitted.push(EmittedFrame { iface, frame });
                PacketOutcome::decided(Stage::Forward, Verdict::Pass)
            }
        };
        self.counters.fragments = self.fragments.counters();
        self.counters.count(&outcome);
        self.last_meta = meta;
        outcome
    }

    /// The parsed description of the last packet processed.
    pub fn last_meta(&self) -> &PacketMeta {
        &self.last_meta
    }

    /// Frames the last `process` call sends.
    pub fn emitted(&self) -> &[EmittedFrame] {
        &self.emitted
    }

    /// Take the frames the last `process` call sends.
    pub fn take_emitted(&mut self) -> Vec<EmittedFrame> {
        std::mem::take(&mut self.emitted)
    }

    /// Counters so far.
    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
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
        assert_eq!(
            (c.packets, c.invalid[InvalidReason::TcpNoFlags.index()]),
            (2, 1)
        );
        assert_eq!(
            c.decisions[&(Stage::Parse, "drop", "invalid:tcp_no_flags".to_string())],
            1
        );
    }
}
