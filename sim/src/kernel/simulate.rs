//! The simulator's side of a diff: the same input packets through the appliance's
//! pipeline, in order, in virtual time taken from the packets' timestamps (as `sim replay`
//! does), each with its [`Outcome`] read from the frames the pipeline emitted and its
//! measured datapath cost (wall clock around `Pipeline::process`: this is measurement code,
//! the datapath itself never reads a clock).
//!
//! Not here: the kernel side (see `inject`) and the comparison (see `diff`).

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use datapath::packet::PacketMeta;
use datapath::pipeline::Pipeline;
use datapath::verdict::Verdict;
use serde::Serialize;

use super::backend::Backend;
use super::inject::InputPacket;
use super::outcome::{FragmentShape, FrameSummary, Outcome};
use super::rules::KernelRules;
use crate::appliance::{ApplianceConfig, build_pipeline};
use crate::record::Decision;

/// The simulator's record of one packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimPacket {
    /// 0-based ordinal over all inputs.
    pub ordinal: usize,
    /// The packet as it arrived.
    pub input: FrameSummary,
    /// Its capture timestamp, ns.
    pub ts_ns: u64,
    /// The pipeline's parse of it (for the per-packet records).
    #[serde(skip)]
    pub meta: PacketMeta,
    /// What the pipeline did.
    pub outcome: Outcome,
    /// The pipeline's decision, as the per-packet records carry it (stage, verdict, flow,
    /// rule, backend, route).
    pub decision: Decision<'static>,
    /// The routing table (not main) and route the packet left by.
    pub route: Option<datapath::ip::route::RouteRef>,
    /// Wall-clock cost of `Pipeline::process`, ns.
    pub cost_ns: u64,
}

impl SimPacket {
    /// The deciding rule: `flow#rule`, `director → backend`, or the stage.
    pub fn deciding_rule(&self) -> String {
        let d = &self.decision;
        match (&d.flow, d.backend) {
            (Some(flow), Some(backend)) => {
                format!("flow {flow}#{} → {backend}", d.rule.unwrap_or(0))
            }
            (Some(flow), None) => format!("flow {flow}#{}", d.rule.unwrap_or(0)),
            (None, Some(backend)) => format!("{} → {backend}", d.stage),
            (None, None) => d.stage.to_string(),
        }
    }
}

/// Capture timestamps as virtual time: ns since the first packet, never going back.
#[derive(Debug, Default)]
struct VirtualClock {
    first_ts_ns: Option<u64>,
    now: u64,
}

impl VirtualClock {
    fn at(&mut self, ts_ns: u64) -> u64 {
        let first = *self.first_ts_ns.get_or_insert(ts_ns);
        self.now = self.now.max(ts_ns.saturating_sub(first));
        self.now
    }
}

/// Build the appliance's pipeline and its kernel rules (from the same tables), for the
/// host backend.
pub fn build(
    config: &ApplianceConfig,
    base: &Path,
    seed: u64,
) -> anyhow::Result<(Pipeline, KernelRules)> {
    build_on(Backend::Host, config, base, seed)
}

/// [`build`] for a backend. The guest kernel has no nft `nat` expressions: `[[nat]]`
/// rules are left to the host ([`KernelRules::host_only`]).
pub fn build_on(
    backend: Backend,
    config: &ApplianceConfig,
    base: &Path,
    seed: u64,
) -> anyhow::Result<(Pipeline, KernelRules)> {
    let pipeline = build_pipeline(config, base, seed, &[])?;
    let named;
    let config = match &config.appliance {
        Some(file) => {
            named = ApplianceConfig::load(&base.join(file))?;
            &named
        }
        None => config,
    };
    let mut rules = KernelRules::compile_on(
        backend,
        config.shield.as_ref(),
        pipeline.flows().map(|stage| &stage.table),
        &config.director,
    )?;
    match backend {
        Backend::Host => {
            rules.add_nat(&config.nat, &config.interfaces);
            let ip = crate::appliance::ip_config(config, &[])?;
            rules.add_ip(&ip);
            rules.add_routes(&ip, pipeline.flows().map(|stage| &stage.table));
        }
        Backend::Guest if !config.nat.is_empty() => rules.host_only.push("[[nat]] rules".into()),
        Backend::Guest => {}
    }
    Ok((pipeline, rules))
}

/// Run every input through `pipeline`, in order. A fragment the IP layer holds for
/// reassembly (or drops as a duplicate of a held one) takes the outcome of its datagram,
/// decided by the fragment that completes or discards it, as the kernel runner reads the
/// kernel's (fragments of one datagram share a tag); a datagram still incomplete at the
/// end is dropped (`reassembly_incomplete`: the kernel times it out).
pub fn simulate(pipeline: &mut Pipeline, inputs: &[InputPacket]) -> Vec<SimPacket> {
    let mut packets = simulate_each(pipeline, inputs);
    let mut held: std::collections::HashMap<Vec<u8>, Vec<usize>> = Default::default();
    for (index, input) in inputs.iter().enumerate() {
        let Some(key) = super::tag::datagram_key(&input.data) else {
            continue;
        };
        let packet = &packets[index];
        let waiting = packet.decision.stage == "ip"
            && match &packet.outcome {
                Outcome::Forward { frame } => frame == &packet.input,
                Outcome::Drop { reason } => reason.as_deref() == Some("fragment_duplicate"),
                _ => false,
            }
            && pipeline.ip().is_some();
        if waiting {
            held.entry(key).or_default().push(index);
            continue;
        }
        let outcome = packet.outcome.clone();
        for earlier in held.remove(&key).unwrap_or_default() {
            packets[earlier].outcome = outcome.clone();
        }
    }
    for index in held.into_values().flatten() {
        packets[index].outcome = Outcome::Drop {
            reason: Some("reassembly_incomplete".into()),
        };
    }
    packets
}

fn simulate_each(pipeline: &mut Pipeline, inputs: &[InputPacket]) -> Vec<SimPacket> {
    let mut clock = VirtualClock::default();
    let mut packets = Vec::with_capacity(inputs.len());
    for (ordinal, packet) in inputs.iter().enumerate() {
        let now = clock.at(packet.ts_ns);
        let iface = u16::try_from(packet.interface).unwrap_or(u16::MAX);
        let input = FrameSummary::of(packet.link, &packet.data);
        let started = Instant::now();
        let decided = pipeline.process(
            now,
            iface,
            packet.link,
            packet.data.clone(),
            packet.orig_len,
        );
        let emitted = pipeline.take_emitted();
        let cost_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let outcome = match decided.verdict {
            Verdict::Drop(reason) => Outcome::Drop {
                reason: Some(reason.name().into_owned()),
            },
            _ => match emitted.first() {
                Some(sent) => {
                    let mut frame = FrameSummary::of(packet.link, &sent.frame);
                    if !input.fragment && frame.fragment {
                        frame.fragments = fragment_shapes(packet.link, &emitted);
                    }
                    Outcome::from_sent(&input, frame)
                }
                None => Outcome::Forward {
                    frame: input.clone(),
                },
            },
        };
        let flows = pipeline.flows().map(|stage| &stage.table);
        let decision = Decision::named(&decided, |index| {
            let flow = flows?.flows().get(usize::from(index))?;
            Some(Cow::Owned(flow.name.clone()))
        });
        packets.push(SimPacket {
            ordinal,
            input,
            ts_ns: packet.ts_ns,
            meta: pipeline.last_meta().clone(),
            outcome,
            decision,
            route: decided
                .route
                .filter(|r| r.table != datapath::ip::route::MAIN_TABLE),
            cost_ns,
        });
    }
    packets
}

/// The fragments a whole datagram left as (the pipeline emits nothing else for it).
fn fragment_shapes(
    link: datapath::packet::LinkType,
    emitted: &[datapath::pipeline::EmittedFrame],
) -> Vec<FragmentShape> {
    emitted
        .iter()
        .filter_map(|sent| {
            let meta = datapath::packet::parse(link, &sent.frame, sent.frame.len() as u32, 0);
            FragmentShape::of(&meta, &sent.frame)
        })
        .collect()
}
