//! The text side of `sim diff`: the human-readable report (agreement per stage and
//! feature, the kernel rules that decided, each disagreement with its decode and both
//! deciding rules, timing) and the pcap of the disagreeing packets.
//!
//! Not here: running and comparing the two sides (`diff.rs`).

use super::*;

/// Human-readable report.
pub fn render(report: &DiffReport) -> String {
    let mut out = format!("kernel diff: {}\n", report.subject);
    backend_diff::render_kernels(&mut out, &report.backend);
    out.push_str("kernel mechanisms:\n");
    for f in &report.features {
        let compared = if f.compared {
            ""
        } else {
            " [no kernel counterpart: simulator only]"
        };
        let kernel = report.backend.kernel_of(&f.feature);
        let _ = writeln!(out, "  {}: {}{compared} [{kernel}]", f.feature, f.mechanism);
    }
    for note in &report.notes {
        let _ = writeln!(out, "left out: {note}");
    }
    for (title, groups) in [("stage", &report.stages), ("feature", &report.by_feature)] {
        let _ = writeln!(out, "agreement per {title}:");
        for (name, s) in groups {
            let _ = writeln!(
                out,
                "  {name:<28} {}/{} = {:.1}% ({} explained)",
                s.agreed,
                s.compared,
                s.percent(),
                s.explained
            );
        }
    }
    let (compared, agreed) = report.totals();
    let _ = writeln!(
        out,
        "  {:<28} {agreed}/{compared} = {:.1}%",
        "total",
        100.0 * agreed as f64 / compared.max(1) as f64
    );
    for (why, count) in &report.not_injected {
        let _ = writeln!(out, "not injected: {count} ({why})");
    }
    render_disagreements(&mut out, report);
    render_kernel_rules(&mut out, report);
    backend_diff::render_directors(&mut out, &report.backend);
    render_timing(&mut out, &report.timing);
    out
}

pub(super) fn render_kernel_rules(out: &mut String, report: &DiffReport) {
    match &report.kernel_trace {
        TraceStatus::Off => {}
        TraceStatus::Failed(why) => {
            let _ = writeln!(out, "kernel rules: not traced ({why})");
        }
        TraceStatus::On => {
            let _ = writeln!(
                out,
                "kernel rule hits (nft trace, deciding rule per packet):"
            );
            if report.kernel_untraced > 0 {
                let _ = writeln!(
                    out,
                    "  (no trace for {} packet(s): trace events were lost)",
                    report.kernel_untraced
                );
            }
            for (rule, hits) in &report.kernel_rule_hits {
                let _ = writeln!(out, "  {hits:>6}  {rule}");
            }
        }
    }
    // The counters that say where packets went or why they were refused (the JSON has
    // them all, including the runner's probe echoes).
    let telling = [
        "Err", "Discard", "NoRoute", "Fail", "Forw", "TimeExcd", "Unreach", "TooBig", "Trunc",
    ];
    let counters: Vec<String> = report
        .kernel_counters
        .iter()
        .filter(|(name, _)| telling.iter().any(|word| name.contains(word)))
        .map(|(name, delta)| format!("{name} +{delta}"))
        .collect();
    if !counters.is_empty() {
        let _ = writeln!(
            out,
            "kernel IP counters (LB namespace, whole run): {}",
            counters.join(", ")
        );
    }
}

pub(super) fn render_disagreements(out: &mut String, report: &DiffReport) {
    let mut first: BTreeMap<&str, &Disagreement> = BTreeMap::new();
    for d in &report.disagreements {
        match d.explained_by.as_deref() {
            Some(name) => {
                first.entry(name).or_insert(d);
            }
            None => {
                let _ = writeln!(out, "UNEXPLAINED {}", disagreement_line(d));
            }
        }
    }
    for (name, count) in report.explained_per_entry.iter().filter(|(_, n)| **n > 0) {
        let _ = writeln!(out, "explained by {name}: {count} packet(s)");
        if let Some(d) = first.get(name.as_str()) {
            let _ = writeln!(out, "  first: {}", disagreement_line(d));
        }
    }
}

pub(super) fn render_timing(out: &mut String, timing: &Timing) {
    let line = |p: &Option<Percentiles>| match p {
        Some(p) => format!(
            "p50 {} ns, p90 {} ns, p99 {} ns, max {} ns",
            p.p50, p.p90, p.p99, p.max
        ),
        None => "no samples".into(),
    };
    let _ = writeln!(
        out,
        "simulator datapath cost per packet (wall clock): {}; {:.0} packets/s",
        line(&timing.simulator_cost_ns),
        timing.simulator_pps
    );
    let _ = writeln!(
        out,
        "kernel injection-to-egress (AF_PACKET user space, both ends): {}; {:.0} packets/s injected (gap {} µs)",
        line(&timing.kernel_latency_ns),
        timing.kernel_pps,
        timing.gap_us
    );
}

pub(super) fn disagreement_line(d: &Disagreement) -> String {
    format!(
        "#{} {}: simulator {} [{}]; kernel {} [{}]",
        d.ordinal, d.decode, d.simulator, d.simulator_rule, d.kernel, d.kernel_rule
    )
}

/// Write the input frames of the disagreeing packets as a pcap (Ethernet).
pub fn write_disagreements_pcap(
    path: &Path,
    report: &DiffReport,
    packets: &[InputPacket],
) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&4u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&65_535u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for d in &report.disagreements {
        let Some(packet) = packets.get(d.ordinal) else {
            continue;
        };
        let length = u32::try_from(packet.data.len()).unwrap_or(u32::MAX);
        let seconds = u32::try_from(packet.ts_ns / 1_000_000_000).unwrap_or(u32::MAX);
        let micros = (packet.ts_ns % 1_000_000_000 / 1_000) as u32;
        for word in [seconds, micros, length, packet.orig_len] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(&packet.data);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
