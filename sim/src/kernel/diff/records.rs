//! `sim diff --packets`: one record per packet in the schema of `sim run` and `sim replay`
//! ([`crate::record::Record`]) with the kernel's side as [`DiffExtra`].

use std::path::Path;

use anyhow::Context;

use super::DiffReport;
use crate::kernel::simulate::SimPacket;
use crate::record::{Decision, DiffExtra, PacketRecord, Record};

/// One packet of a diff, for its per-packet record.
#[derive(Debug, Clone)]
pub struct PacketDiff {
    /// Capture timestamp, ns.
    pub ts_ns: u64,
    /// The simulator's parse of the packet.
    pub meta: datapath::packet::PacketMeta,
    /// The simulator's decision.
    pub decision: Decision<'static>,
    /// The kernel's side and the comparison.
    pub extra: DiffExtra,
}

impl PacketDiff {
    pub(super) fn new(sim: &SimPacket, extra: DiffExtra) -> Self {
        Self {
            ts_ns: sim.ts_ns,
            meta: sim.meta.clone(),
            decision: sim.decision.clone(),
            extra,
        }
    }
}

/// Where `--packets` goes (`-`: stdout), opened before the run so that a bad path fails at
/// once rather than after the kernel side.
pub(super) fn open_records(path: &Path) -> anyhow::Result<Box<dyn std::io::Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(std::io::BufWriter::new(file)))
}

/// Write a diff's per-packet records as JSON lines into `out`.
pub(super) fn write_packet_records(
    mut out: Box<dyn std::io::Write>,
    report: &DiffReport,
) -> anyhow::Result<()> {
    for (index, packet) in report.packets.iter().enumerate() {
        Record {
            packet: PacketRecord::new(None, index as u64, packet.ts_ns, &packet.meta),
            decision: Some(packet.decision.clone()),
            extra: packet.extra.clone(),
        }
        .write_jsonl(&mut out)?;
    }
    out.flush()?;
    Ok(())
}
