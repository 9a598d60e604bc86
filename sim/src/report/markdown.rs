//! `report.md`: the report as Markdown (checks, pipeline decisions, flows, backends,
//! clients and their latency, the appliance, the measured cost).
//!
//! Not here: building the report (`report.rs`), HTML (`report_html`).

use super::*;

pub(super) fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// `report.md`: the deterministic part, then the measured part under its own heading.
pub fn markdown(report: &Report, measured: Option<&Measured>) -> String {
    let mut md = String::new();
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(md, "# Scenario `{}` — {verdict}\n", report.scenario);
    let _ = writeln!(
        md,
        "seed {} · duration {} ms · {} receive queues\n",
        report.seed,
        ms(report.duration_ns),
        report.queues
    );
    if !report.checks.is_empty() {
        md.push_str("## Checks\n\n| check | limit | value | result |\n|---|---|---|---|\n");
        for c in &report.checks {
            let _ = writeln!(
                md,
                "| {} | {} | {:.4} | {} |",
                c.name,
                c.limit,
                c.value,
                if c.passed { "pass" } else { "FAIL" }
            );
        }
        md.push('\n');
    }
    let t = &report.totals;
    md.push_str("## Frames\n\n| sent | processed | emitted | delivered | unroutable | link lost | link queue full |\n|---|---|---|---|---|---|---|\n");
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {} |\n",
        t.sent, t.processed, t.emitted, t.delivered, t.unroutable, t.link_lost, t.link_queue_full
    );
    if t.link_duplicated + t.link_reordered + t.link_corrupted > 0 {
        md.push_str("## Link faults\n\n| duplicated | reordered | corrupted | invalid (pipeline) |\n|---|---|---|---|\n");
        let invalid: u64 = report.pipeline.invalid.values().sum();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {invalid} |\n",
            t.link_duplicated, t.link_reordered, t.link_corrupted
        );
    }
    if let Some(cpu) = &report.cpu {
        md.push_str(&cpu.markdown());
    }
    md.push_str(
        "## Pipeline decisions\n\n| stage | verdict | reason | packets |\n|---|---|---|---|\n",
    );
    for d in &report.pipeline.decisions {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            d.stage, d.verdict, d.reason, d.packets
        );
    }
    md.push('\n');
    let appliance = crate::appliance::render_report(&report.appliance);
    if !appliance.is_empty() {
        let _ = writeln!(md, "## Appliance\n\n```\n{appliance}```\n");
    }
    markdown_clients(&mut md, report);
    if !report.backends.is_empty() {
        md.push_str("## Real servers\n\n| server | packets | share |\n|---|---|---|\n");
        for b in &report.backends {
            let _ = writeln!(md, "| {} | {} | {:.3} |", b.server, b.packets, b.share);
        }
        md.push('\n');
    }
    // Per-flow and per-rule hits are in the appliance section's Flowmgr block, by name and
    // counted where the flow manager evaluates (frames the SYN proxy sends on its own and
    // packets a later stage decided included); `report.flows` counts only final outcomes.
    markdown_tail(&mut md, report);
    if let Some(m) = measured {
        let _ = writeln!(
            md,
            "## Measured (wall clock, not deterministic)\n\n{} threads · {} ms · {:.1} ns/packet · {:.3} Mpps",
            m.threads,
            ms(m.wall_ns),
            m.ns_per_packet,
            m.mpps
        );
        if m.mpps_per_core > 0.0 {
            let _ = writeln!(
                md,
                "\nCPU time of the shards: {:.1} ns/packet · {:.3} Mpps per core",
                m.cpu_ns_per_packet, m.mpps_per_core
            );
        }
    }
    md
}

pub(super) fn markdown_clients(md: &mut String, report: &Report) {
    if let Some(tcp) = &report.clients.tcp {
        md.push_str("## TCP clients\n\n| attempted | established | completed | timeout | reset | unfinished | success | connect p50/p99 ms |\n|---|---|---|---|---|---|---|---|\n");
        let connect = tcp
            .connect_ns
            .as_ref()
            .map_or("-".into(), |p| format!("{} / {}", ms(p.p50), ms(p.p99)));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.4} | {connect} |\n",
            tcp.attempted,
            tcp.established,
            tcp.completed,
            tcp.failed_timeout,
            tcp.failed_reset,
            tcp.unfinished,
            tcp.success_ratio
        );
    }
    if let Some(udp) = &report.clients.udp {
        md.push_str("## UDP clients\n\n| sent | answered | timeout | unfinished | success | rtt p50/p99 ms |\n|---|---|---|---|---|---|\n");
        let rtt = udp
            .rtt_ns
            .as_ref()
            .map_or("-".into(), |p| format!("{} / {}", ms(p.p50), ms(p.p99)));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.4} | {rtt} |\n",
            udp.sent, udp.answered, udp.failed_timeout, udp.unfinished, udp.success_ratio
        );
    }
}

pub(super) fn markdown_tail(md: &mut String, report: &Report) {
    md.push_str("## Sources\n\n| source | kind | sent | received |\n|---|---|---|---|\n");
    for s in &report.sources {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            s.name, s.kind, s.sent, s.received
        );
    }
    md.push_str("\n## Hosts\n\n| host | delivered |\n|---|---|\n");
    for h in &report.hosts {
        let _ = writeln!(md, "| {} | {} |", h.name, h.delivered);
    }
    md.push('\n');
    if !report.events.is_empty() {
        md.push_str("## Timed events\n\n| at ms | event | status |\n|---|---|---|\n");
        for e in &report.events {
            let event = serde_json::to_string(&e.event).unwrap_or_default();
            let _ = writeln!(md, "| {} | `{event}` | {} |", ms(e.at_ns), e.status);
        }
        md.push('\n');
    }
    md.push_str("## Per second\n\n| s | processed | pass | drop | reply | forward | emitted | delivered |\n|---|---|---|---|---|---|---|---|\n");
    for r in &report.timeline {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.second, r.processed, r.pass, r.drop, r.reply, r.forward, r.emitted, r.delivered
        );
    }
    md.push('\n');
}
