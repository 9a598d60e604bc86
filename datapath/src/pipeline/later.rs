//! The later stages of a packet's way through the pipeline, borrowed together: the flow
//! manager, the IP layer's routing decision and forwarding checks, DNAT, the director and
//! SNAT ([`LaterStages::classify`]), and the reply path of NATed connections
//! (`Pipeline::nat_reply`).
//!
//! Not here: parsing, the shield and reassembly (`pipeline.rs`), the split per queue
//! (`split.rs`).

use super::*;

/// The flow manager, NAT and director stages of a pipeline, borrowed together.
pub(super) struct LaterStages<'a> {
    pub(super) flows: Option<&'a mut FlowStage>,
    pub(super) nat: Option<&'a mut Nat>,
    pub(super) directors: Option<&'a mut Directors>,
    pub(super) ip: Option<&'a mut IpLayer>,
}

impl LaterStages<'_> {
    /// Flow manager then director. A `deny` flow drops; a `director`/`table` flow sets the
    /// firewall mark the director looks services up by; the director forwards (rewritten)
    /// or drops; anything else passes unchanged.
    pub(super) fn classify(
        &mut self,
        now: TimeNs,
        meta: &PacketMeta,
        frame: &mut Vec<u8>,
    ) -> Classified {
        match self.classify_flows(now, meta, frame) {
            Ok((outcome, fwmark)) => self.classify_shared(now, meta, frame, outcome, fwmark),
            Err(denied) => denied,
        }
    }

    /// The per-queue part of [`Self::classify`]: the flow manager, then the IP layer's
    /// routing decision and forwarding checks. `Err` when a `deny` flow or the IP layer
    /// decided (dropped, or answered with an ICMP error), else the outcome so far and the
    /// firewall mark for the director.
    pub(super) fn classify_flows(
        &mut self,
        now: TimeNs,
        meta: &PacketMeta,
        frame: &mut [u8],
    ) -> Result<(PacketOutcome, Option<u32>), Classified> {
        let mut outcome = PacketOutcome::decided(Stage::Forward, Verdict::Pass);
        let mut fwmark = None;
        if let Some(flows) = self.flows.as_deref_mut()
            && let Some(hit) = flows.table.classify_counted(meta, &mut flows.counters)
        {
            outcome.stage = Stage::Flows;
            outcome.flow = u16::try_from(hit.flow).ok();
            outcome.flow_rule = u16::try_from(hit.rule).ok();
            match hit.action {
                FlowAction::Drop => {
                    outcome.verdict = Verdict::Drop(DropReason::FlowDeny);
                    return Err(Classified {
                        outcome,
                        forward: false,
                        answer: None,
                    });
                }
                FlowAction::Mark(mark) => fwmark = Some(mark),
                FlowAction::Accept | FlowAction::Skip => {}
            }
        }
        if let Some(ip) = self.ip.as_deref_mut() {
            match ip.route_and_forward(now, meta, frame, fwmark) {
                IpDecision::Forward => {
                    outcome.fragment_mtu = ip.last_fragment_mtu().map(|mtu| (mtu, meta.l3_offset));
                    if ip.routing().has_tables()
                        && let Some((used, route)) = ip.last_route()
                    {
                        outcome.route = Some(used);
                        outcome.next_hop = Some((route.iface, route.gateway));
                    }
                }
                IpDecision::Drop(reason) => {
                    outcome.stage = Stage::Ip;
                    outcome.verdict = Verdict::Drop(reason);
                    return Err(Classified {
                        outcome,
                        forward: false,
                        answer: None,
                    });
                }
                IpDecision::Answer(answer) => {
                    outcome.stage = Stage::Ip;
                    outcome.verdict = Verdict::Reply;
                    return Err(Classified {
                        outcome,
                        forward: false,
                        answer: Some(answer),
                    });
                }
            }
        }
        Ok((outcome, fwmark))
    }

    /// The shared stages' part of [`Self::classify`]: DNAT, the director, SNAT.
    pub(super) fn classify_shared(
        &mut self,
        now: TimeNs,
        meta: &PacketMeta,
        frame: &mut Vec<u8>,
        mut outcome: PacketOutcome,
        fwmark: Option<u32>,
    ) -> Classified {
        let prerouted;
        let meta = match self.nat_prerouting(now, meta, frame, &mut outcome) {
            Ok(Some(rewritten)) => {
                // The kernel routes the translated destination (after nat PREROUTING);
                // the driver delivers it by that destination.
                if rewritten.dst != meta.dst {
                    outcome.route = None;
                    outcome.next_hop = None;
                }
                prerouted = rewritten;
                &prerouted
            }
            Ok(None) => meta,
            Err(()) => {
                return Classified {
                    outcome,
                    forward: false,
                    answer: None,
                };
            }
        };
        if let Some(directors) = self.directors.as_deref_mut()
            && let ControlFlow::Break(decision) = directors.process_input(now, frame, meta, fwmark)
        {
            outcome.stage = Stage::Director;
            outcome.verdict = decision.verdict;
            // IPVS sends to the real server by its own output route.
            outcome.route = None;
            outcome.next_hop = None;
            outcome.backend = decision.backend;
            let service = u16::try_from(decision.service).unwrap_or(u16::MAX);
            outcome.director = Some((service, decision.new_connection));
        }
        if matches!(outcome.verdict, Verdict::Pass | Verdict::Forward) {
            self.nat_postrouting(now, meta, frame, &mut outcome);
        }
        let forward = matches!(outcome.verdict, Verdict::Pass | Verdict::Forward);
        Classified {
            outcome,
            forward,
            answer: None,
        }
    }

    /// DNAT (nat PREROUTING) after the flows, before the director. `Ok(Some(meta))`: the
    /// frame was rewritten and `meta` describes it now; `Err(())`: dropped (table full).
    pub(super) fn nat_prerouting(
        &mut self,
        now: TimeNs,
        meta: &PacketMeta,
        frame: &mut [u8],
        outcome: &mut PacketOutcome,
    ) -> Result<Option<PacketMeta>, ()> {
        let Some(nat) = self.nat.as_deref_mut() else {
            return Ok(None);
        };
        match nat.prerouting(now, frame, meta) {
            Ok(NatOutcome::Translated(flow)) => {
                outcome.stage = Stage::Nat;
                outcome.verdict = Verdict::Forward;
                Ok(Some(rewritten_meta(meta, &flow)))
            }
            Ok(NatOutcome::Untouched) | Err(_) => Ok(None),
            Ok(NatOutcome::TableFull) => {
                outcome.stage = Stage::Nat;
                outcome.verdict = Verdict::Drop(DropReason::TableFull);
                Err(())
            }
        }
    }

    /// SNAT / MASQUERADE (nat POSTROUTING) on what the earlier stages forward, as the
    /// frame is now (after the director's rewrite). A full table drops the packet.
    pub(super) fn nat_postrouting(
        &mut self,
        now: TimeNs,
        meta: &PacketMeta,
        frame: &mut [u8],
        outcome: &mut PacketOutcome,
    ) {
        let Some(nat) = self.nat.as_deref_mut() else {
            return;
        };
        let Some(flow) = current_flow(frame, meta) else {
            return;
        };
        let current = rewritten_meta(meta, &flow);
        match nat.postrouting(now, frame, &current) {
            Ok(NatOutcome::Translated(_)) if outcome.stage != Stage::Director => {
                outcome.stage = Stage::Nat;
                outcome.verdict = Verdict::Forward;
            }
            Ok(NatOutcome::TableFull) => {
                outcome.stage = Stage::Nat;
                outcome.verdict = Verdict::Drop(DropReason::TableFull);
            }
            _ => {}
        }
    }
}

impl Pipeline {
    /// Replies of NATed connections are translated back (source NAT, then destination
    /// NAT), then given to the director's reply path (a masqueraded director connection)
    /// or shown to the shield and sent, like the director's replies.
    pub(super) fn nat_reply(
        &mut self,
        now: TimeNs,
        link: LinkType,
        iface: IfaceId,
        frame: &mut Vec<u8>,
    ) -> Option<PacketOutcome> {
        let nat = self.nat.as_mut()?;
        let flow = match nat.reply(now, frame, &self.last_meta)? {
            Ok(flow) => flow,
            Err(_) => {
                let reason = DropReason::NoReverseTranslation;
                return Some(PacketOutcome::decided(Stage::Nat, Verdict::Drop(reason)));
            }
        };
        self.last_meta = rewritten_meta(&self.last_meta, &flow);
        if let Some(outcome) = self.director_reply(now, link, iface, frame) {
            return Some(outcome);
        }
        if let Some(decided) = self.shield_stage(now, link, frame) {
            return Some(decided);
        }
        self.emitted
            .push(EmittedFrame::new(iface, std::mem::take(frame)));
        Some(PacketOutcome::decided(Stage::Nat, Verdict::Forward))
    }

    /// A datagram the IP layer found longer than the egress MTU, without DF: sent as its
    /// fragments (as parsed now: after NAT, with the decremented TTL).
    #[cold]
    pub(super) fn send_fragments(
        &mut self,
        iface: IfaceId,
        frame: Vec<u8>,
        outcome: &PacketOutcome,
        mtu: u32,
        l3: u16,
    ) {
        let l3 = usize::from(l3);
        let total = frame
            .get(l3 + 2..l3 + 4)
            .map(|b| u16::from_be_bytes([b[0], b[1]]));
        let pieces = total.and_then(|total| {
            crate::ip::fragment::fragment_v4(&frame, l3, usize::from(total), mtu as usize)
        });
        match pieces {
            Some(pieces) => {
                for piece in pieces {
                    self.emitted.push(routed(iface, piece, outcome));
                }
            }
            None => self.emitted.push(routed(iface, frame, outcome)),
        }
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

    /// Move the frames the last `process` call sends to the end of `frames`. Unlike
    /// [`Self::take_emitted`] both vectors keep their capacity, so a driver that reuses
    /// `frames` allocates nothing per packet.
    #[inline]
    pub fn drain_emitted_into(&mut self, frames: &mut Vec<EmittedFrame>) {
        // Usually one frame: moved without `append`'s memcpy call.
        if self.emitted.len() == 1
            && let Some(frame) = self.emitted.pop()
        {
            frames.push(frame);
            return;
        }
        frames.append(&mut self.emitted);
    }

    /// Counters so far.
    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
    }

    /// The shield stage, if configured (for its per-context counters and mode timelines).
    pub fn shield(&self) -> Option<&Shield> {
        self.shield.as_ref()
    }

    /// The flow stage, if configured (table and hit counters).
    pub fn flows(&self) -> Option<&FlowStage> {
        self.flows.as_ref()
    }

    /// The directors, if configured (services, connection table, counters).
    pub fn directors(&self) -> Option<&Directors> {
        self.directors.as_ref()
    }

    /// The directors, for timed operations (server down/up, weight changes).
    pub fn directors_mut(&mut self) -> Option<&mut Directors> {
        self.directors.as_mut()
    }

    /// The shield, for timed operations.
    pub fn shield_mut(&mut self) -> Option<&mut Shield> {
        self.shield.as_mut()
    }
}
