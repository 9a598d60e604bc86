//! Calibration: this machine's real per-packet cost of each [`CostClass`], measured by
//! timing [`Pipeline::process`] on representative frames with the wall clock (the
//! measurement reads the clock; the datapath it times does not), and the machine's
//! description (cores, CPU model, build profile).
//!
//! Each class has its own small pipeline: a shield with SYN cookies forced on and a
//! denylist (SYN → cookie SYN-ACK; denylisted packet → drop), a flow table alone (a packet a
//! `permit` flow classifies), a NAT director alone (packets of established connections),
//! and no stage at all (parse only). Every frame's verdict is checked before timing, so a
//! calibration never times the wrong path. Not here: turning costs into cores
//! ([`super::model`]).

use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{Context, bail};
use datapath::director::Directors;
use datapath::director::config::DirectorConfig;
use datapath::flows::{FlowTable, TableConfig};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ParseOptions};
use datapath::pipeline::Pipeline;
use datapath::shield::ShieldConfig;
use datapath::verdict::{DropReason, Stage, Verdict};
use serde::{Deserialize, Serialize};

use super::model::{CostClass, Costs};

/// Frames per timed batch.
pub const BATCH: usize = 4096;
/// Timed batches per class; the fastest one is kept (the least disturbed by other work on
/// the machine).
pub const ROUNDS: usize = 7;

pub use crate::stats::Machine;

/// One class's measurement.
#[derive(Clone, Debug, Serialize)]
pub struct ClassCost {
    /// Fastest batch, ns per packet (the figure the model uses).
    pub ns_per_packet: f64,
    /// Median batch, ns per packet.
    pub median_ns_per_packet: f64,
    /// Packets timed.
    pub packets: usize,
}

/// Per-class costs on this machine.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// The machine.
    pub machine: Machine,
    /// Cost per class.
    pub classes: std::collections::BTreeMap<CostClass, ClassCost>,
}

impl Calibration {
    /// The costs the model multiplies by.
    pub fn costs(&self) -> Costs {
        self.classes
            .iter()
            .map(|(class, cost)| (*class, cost.ns_per_packet))
            .collect()
    }
}

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// Measure every class.
pub fn calibrate() -> anyhow::Result<Calibration> {
    let mut classes = std::collections::BTreeMap::new();
    for class in CostClass::ALL {
        let cost = measure(class).with_context(|| format!("calibrating {}", class.name()))?;
        classes.insert(class, cost);
    }
    Ok(Calibration {
        machine: Machine::detect(),
        classes,
    })
}

fn shield_pipeline() -> anyhow::Result<Pipeline> {
    let config: ShieldConfig = toml::from_str(
        r#"
        syn_cookies = "on"
        surge = "off"
        ttl_filter = "off"
        deny = ["203.0.0.0/8"]
        [thresholds]
        cookie_rate_max = 1000000000000
        source_syn_rate_max = 1000000000000
        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [80]
        "#,
    )?;
    let shield = datapath::shield::build(&config, 7, &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Pipeline::new(ParseOptions::default()).with_shield(shield))
}

fn director_pipeline() -> anyhow::Result<Pipeline> {
    #[derive(Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(
        r#"
        [[director]]
        name = "web"
        vip = "192.0.2.10"
        port = 80
        proto = "tcp"
        scheduler = "wlc"
        forward = "nat"
        real = [{ addr = "10.0.1.2:80", weight = 1 }, { addr = "10.0.1.3:80", weight = 1 }]
        "#,
    )?;
    let directors =
        Directors::build(&file.director, Default::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Pipeline::new(ParseOptions::default()).with_directors(directors))
}

fn flows_pipeline() -> anyhow::Result<Pipeline> {
    let source = "flow web permit\n   match proto tcp dst 192.0.2.10 dstport 80\n";
    let table = FlowTable::from_source(source, &TableConfig::default())
        .map_err(|errors| anyhow::anyhow!("{errors:?}"))?;
    Ok(Pipeline::new(ParseOptions::default()).with_flows(table))
}

/// Client `i`'s frame to the VIP from `base` + i: a SYN or an ACK to port 80, or an ACK
/// to port 8080 (not protected, so the shield's lists decide it, not its cookie check).
fn frame(base: Ipv4Addr, i: usize, flags: Flags) -> Vec<u8> {
    let source = Ipv4Addr::from(u32::from(base).wrapping_add(i as u32));
    let port = if matches!(flags, Flags::AckUnprotected) {
        8080
    } else {
        80
    };
    let builder = PacketBuilder::eth()
        .ipv4(source, VIP)
        .tcp(1024 + (i % 60_000) as u16, port);
    match flags {
        Flags::Syn => builder.syn().seq_ack(i as u32, 0).mss(1460).build(),
        Flags::Ack | Flags::AckUnprotected => builder.seq_ack(i as u32 + 1, 1).build(),
    }
}

#[derive(Clone, Copy)]
enum Flags {
    Syn,
    Ack,
    AckUnprotected,
}

/// The pipeline, the frames to time and the outcome each must have.
fn setup(class: CostClass) -> anyhow::Result<(Pipeline, Vec<Vec<u8>>, Stage, Verdict)> {
    let clients = Ipv4Addr::new(10, 0, 0, 1);
    let frames = |base, flags| (0..BATCH).map(|i| frame(base, i, flags)).collect();
    Ok(match class {
        CostClass::Parse => (
            Pipeline::new(ParseOptions::default()),
            frames(clients, Flags::Ack),
            Stage::Forward,
            Verdict::Pass,
        ),
        CostClass::ShieldDrop => (
            shield_pipeline()?,
            frames(Ipv4Addr::new(203, 0, 113, 1), Flags::AckUnprotected),
            Stage::Shield,
            Verdict::Drop(DropReason::Denylist),
        ),
        CostClass::SynCookie => (
            shield_pipeline()?,
            frames(clients, Flags::Syn),
            Stage::Shield,
            Verdict::Reply,
        ),
        CostClass::FlowsOnly => (
            flows_pipeline()?,
            frames(clients, Flags::Ack),
            Stage::Flows,
            Verdict::Pass,
        ),
        CostClass::NatEstablished => {
            let mut pipeline = director_pipeline()?;
            for i in 0..BATCH {
                pipeline.process(1, 0, LinkType::Ethernet, frame(clients, i, Flags::Syn), 0);
            }
            (
                pipeline,
                frames(clients, Flags::Ack),
                Stage::Director,
                Verdict::Forward,
            )
        }
    })
}

fn measure(class: CostClass) -> anyhow::Result<ClassCost> {
    let (mut pipeline, frames, stage, verdict) = setup(class)?;
    let mut now = 1_000_000;
    // Warm-up round, checking every outcome.
    for frame in frames.clone() {
        let wire_len = frame.len() as u32;
        let outcome = pipeline.process(now, 0, LinkType::Ethernet, frame, wire_len);
        if (outcome.stage, outcome.verdict) != (stage, verdict) {
            bail!(
                "calibration frame decided {:?} {:?}, expected {stage:?} {verdict:?}",
                outcome.stage,
                outcome.verdict
            );
        }
        now += 1_000;
    }
    let mut per_packet = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let batch: Vec<(Vec<u8>, u32)> =
            frames.iter().map(|f| (f.clone(), f.len() as u32)).collect();
        let started = Instant::now();
        for (frame, wire_len) in batch {
            std::hint::black_box(pipeline.process(now, 0, LinkType::Ethernet, frame, wire_len));
            now += 1_000;
        }
        per_packet.push(started.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    per_packet.sort_by(f64::total_cmp);
    Ok(ClassCost {
        ns_per_packet: per_packet[0],
        median_ns_per_packet: per_packet[ROUNDS / 2],
        packets: BATCH * ROUNDS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_times_its_own_path() {
        for class in CostClass::ALL {
            let cost = measure(class).unwrap_or_else(|e| panic!("{}: {e:#}", class.name()));
            assert!(cost.ns_per_packet > 0.0, "{}", class.name());
            assert!(cost.median_ns_per_packet >= cost.ns_per_packet);
        }
    }

    #[test]
    fn machine_is_described() {
        let machine = Machine::detect();
        assert!(machine.nproc >= 1);
        assert!(!machine.cpu_model.is_empty());
    }
}
