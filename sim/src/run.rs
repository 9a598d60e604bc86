//! Running a loaded scenario: its receive queues run (in parallel with rayon, each shard its
//! own pipeline) and merge in queue order into the report; the summary text and the
//! `--packets` / `--pcap-out` writers. The `sim run` command itself is [`crate::cli::run`].
//!
//! `--threads 1` and `--threads N` give byte-identical deterministic reports: the number of
//! shards is the scenario's `queues`, not the thread count. Not here: the simulation itself
//! (see [`crate::engine`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use datapath::TimeNs;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

use crate::engine::{Collect, Engine, PacketLine, ShardResult};
use crate::net::world::World;
use crate::record::{Decision, PacketRecord, Record, RunExtra};
use crate::report::{self, Measured, Report};
use crate::scenario::LoadedScenario;
use std::borrow::Cow;

/// How to run.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Worker threads.
    pub threads: usize,
    /// What to collect besides counters.
    pub collect: Collect,
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutput {
    /// The deterministic report.
    pub report: Report,
    /// Wall-clock figures.
    pub measured: Measured,
    /// Records and emitted frames, in (time, queue, order) order.
    pub merged: ShardResult,
}

/// Run a loaded scenario. `progress` is told how much virtual time each shard advanced.
pub fn run_scenario(
    loaded: &LoadedScenario,
    options: RunOptions,
    progress: &(dyn Fn(TimeNs) + Sync),
) -> anyhow::Result<RunOutput> {
    run_scenario_observed(loaded, options, progress, None)
}

/// [`run_scenario`] with a live observer: every shard calls it with a snapshot every
/// `interval` ns of virtual time and at the end (see [`crate::engine::Observer`]).
pub fn run_scenario_observed(
    loaded: &LoadedScenario,
    options: RunOptions,
    progress: &(dyn Fn(TimeNs) + Sync),
    observer: Option<(TimeNs, crate::engine::Observer<'_>)>,
) -> anyhow::Result<RunOutput> {
    let scenario = &loaded.scenario;
    let world = World::new(scenario);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .build()?;
    let started = Instant::now();
    let engines = (0..scenario.queues)
        .map(|queue| {
            let mut engine =
                Engine::new(scenario, &loaded.base_dir, &world, queue, options.collect)?;
            if let Some((interval, observer)) = observer {
                engine.observe(interval, observer);
            }
            Ok(engine)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shards = crate::engine::shared::run_shards(engines, &pool, progress)?;
    let wall_ns = started.elapsed().as_nanos() as u64;
    let queue_wall_ns = shards.iter().map(|s| s.1).collect();
    let queue_cpu_ns = shards.iter().map(|s| s.2).collect();
    let mut results = shards.into_iter().map(|s| s.0);
    let mut merged = results
        .next()
        .context("a scenario has at least one queue")?;
    for result in results {
        merged.merge(result);
    }
    // Stable sorts: ties keep queue order, then each queue's own order.
    merged.records.sort_by_key(|r| r.time);
    merged.emitted.sort_by_key(|e| e.0);
    merged.connections.sort_unstable();
    merged.translated.sort_unstable();
    let report = report::build(scenario, &world, &merged);
    let measured = Measured::new(
        options.threads,
        wall_ns,
        queue_wall_ns,
        merged.totals.processed,
    )
    .with_cpu(queue_cpu_ns);
    Ok(RunOutput {
        report,
        measured,
        merged,
    })
}

/// Write per-packet records as JSON lines ([`crate::record::Record`] with `sim run`'s own
/// keys); `flow_names` names the flow indices (the appliance report's flows, in order).
pub fn write_records(
    path: &Path,
    records: &[PacketLine],
    flow_names: &[&str],
) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for (index, line) in records.iter().enumerate() {
        let name = |flow: u16| flow_names.get(usize::from(flow)).map(|&n| Cow::Borrowed(n));
        Record {
            packet: PacketRecord::new(None, index as u64, line.time, &line.meta),
            decision: Some(Decision::named(&line.outcome, name)),
            extra: RunExtra {
                queue: line.queue,
                emitted: line.emitted,
                appliance_ns: line.appliance_ns,
            },
        }
        .write_jsonl(&mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// Write emitted frames as an Ethernet pcap with nanosecond timestamps (virtual time).
pub fn write_pcap(path: &Path, frames: &[(TimeNs, Vec<u8>)]) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(BufWriter::new(file), header)?;
    for (time, frame) in frames {
        let packet = PcapPacket::new(Duration::from_nanos(*time), frame.len() as u32, frame);
        writer.write_packet(&packet)?;
    }
    Ok(())
}

/// One-paragraph summary for the terminal: frames, clients, shield mode changes in words,
/// the bounded tables in use, the measured speed. The verdict is [`verdict_line`].
pub fn summary(report: &Report, measured: &Measured) -> String {
    let mut text = format!(
        "scenario {} (seed {}): {} packets processed, {} emitted, {} delivered, {} unroutable\n",
        report.scenario,
        report.seed,
        report.totals.processed,
        report.totals.emitted,
        report.totals.delivered,
        report.totals.unroutable
    );
    text += &clients_summary(report);
    text += &modes_summary(report);
    text += &tables_summary(report);
    text += &cpu_summary(report);
    text += &format!(
        "measured: {:.1} ns/packet, {:.3} Mpps on {} thread(s); CPU time {:.1} ns/packet, {:.3} Mpps per core\n",
        measured.ns_per_packet,
        measured.mpps,
        measured.threads,
        measured.cpu_ns_per_packet,
        measured.mpps_per_core
    );
    text
}

/// The appliance's CPU model, when it ran: profile, CPUs, ring, utilization, drops, latency.
fn cpu_summary(report: &Report) -> String {
    let Some(cpu) = &report.cpu else {
        return String::new();
    };
    let latency = cpu.latency.unwrap_or_default();
    format!(
        "appliance CPU model: profile {}, {} CPU(s), RX ring {}: utilization {:.1}%, {} rx_ring_full drops, latency p50 {:.2} µs p99 {:.2} µs\n",
        cpu.profile,
        cpu.cpus,
        cpu.rx_ring,
        cpu.utilization * 100.0,
        cpu.rx_ring_full,
        latency.p50 as f64 / 1e3,
        latency.p99 as f64 / 1e3,
    )
}

fn clients_summary(report: &Report) -> String {
    let mut text = String::new();
    if let Some(tcp) = &report.clients.tcp {
        text += &format!(
            "tcp clients: {} attempted: {} completed, {} failed ({} timed out, {} reset), {} still open at the end; {:.2}% success (still open counts as not succeeded)\n",
            tcp.attempted,
            tcp.completed,
            tcp.failed_timeout + tcp.failed_reset,
            tcp.failed_timeout,
            tcp.failed_reset,
            tcp.unfinished,
            tcp.success_ratio * 100.0,
        );
    }
    if let Some(udp) = &report.clients.udp {
        text += &format!(
            "udp clients: {} sent: {} answered, {} timed out, {} still waiting at the end; {:.2}% success\n",
            udp.sent,
            udp.answered,
            udp.failed_timeout,
            udp.unfinished,
            udp.success_ratio * 100.0
        );
    }
    text
}

/// Mode changes shown per shield context before the rest is left to report.md.
const MODE_CHANGES_SHOWN: usize = 6;

/// One line per shield context whose protection modes changed, in words with their times.
fn modes_summary(report: &Report) -> String {
    let mut text = String::new();
    let queues = if report.queues > 1 {
        format!(" (first of {} queues to change)", report.queues)
    } else {
        String::new()
    };
    for context in &report.appliance.shield {
        let changes = context.mode_changes();
        if changes.is_empty() {
            continue;
        }
        let words: Vec<String> = changes
            .iter()
            .take(MODE_CHANGES_SHOWN)
            .map(|&(time, before, after)| {
                format!(
                    "{:.3} s {}",
                    time as f64 / 1e9,
                    crate::appliance::mode_change_words(before, after)
                )
            })
            .collect();
        let more = changes.len().saturating_sub(MODE_CHANGES_SHOWN);
        let more = if more > 0 {
            format!("; {more} more in report.md")
        } else {
            String::new()
        };
        text += &format!("{}: {}{more}{queues}\n", context.name, words.join("; "));
    }
    text
}

/// One line per bounded table in use or overflowed, with its real capacity (the sum over
/// the receive queues that each hold one).
fn tables_summary(report: &Report) -> String {
    let mut text = String::new();
    for table in &report.appliance.tables {
        if !table.notable() && table.entries.unwrap_or(0) == 0 {
            continue;
        }
        let entries = table
            .entries
            .map_or("untracked entries".to_string(), |e| format!("{e} entries"));
        let capacity = if table.copies > 1 {
            format!(
                "{} ({} queues × {})",
                table.capacity,
                table.copies,
                table.capacity / table.copies
            )
        } else {
            table.capacity.to_string()
        };
        let overflows = if table.overflows > 0 {
            format!(", {} overflows: {}", table.overflows, table.policy)
        } else {
            String::new()
        };
        let qa = table
            .full_after
            .map_or(String::new(), |n| format!(" [qa: full after {n} packets]"));
        text += &format!(
            "table {}: {entries} of {capacity}{overflows}{qa}\n",
            table.name
        );
    }
    text
}

/// A check's value and limit in words: `legit_success_ratio_min 0.9712 < 0.99`.
fn check_words(check: &crate::report::Check) -> String {
    let number = |v: f64| {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            format!("{v:.4}")
        }
    };
    let max = check.name.ends_with("_max");
    let relation = match (max, check.passed) {
        (true, true) => "≤",
        (true, false) => ">",
        (false, true) => "≥",
        (false, false) => "<",
    };
    format!(
        "{} {} {relation} {}",
        check.name,
        number(check.value),
        check.limit
    )
}

/// The verdict in one line, last on stdout: `PASS synflood (seed 7): 2 of 2 checks passed`,
/// or `FAIL …` with each failing check, its value and limit. `colour` paints PASS green and
/// FAIL red (ANSI; the caller decides from the terminal and `NO_COLOR`).
pub fn verdict_line(report: &Report, colour: bool) -> String {
    let (word, paint) = if report.passed {
        ("PASS", "\x1b[1;32m")
    } else {
        ("FAIL", "\x1b[1;31m")
    };
    let word = if colour {
        format!("{paint}{word}\x1b[0m")
    } else {
        word.to_string()
    };
    let total = report.checks.len();
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(check_words)
        .collect();
    let checks = if total == 1 { "check" } else { "checks" };
    let detail = if total == 0 {
        "no [expect] checks".to_string()
    } else if failed.is_empty() {
        format!("{total} of {total} {checks} passed")
    } else {
        format!(
            "{} of {total} {checks} failed: {}",
            failed.len(),
            failed.join("; ")
        )
    };
    format!(
        "{word} {} (seed {}): {detail}\n",
        report.scenario, report.seed
    )
}
