//! Every bundled scenario runs its whole duration (each takes well under a second of wall
//! clock, even in a debug build; the line-rate one, 25 ms of a 14.88 Mpps flood, has its own
//! test and no snapshot yet), meets its `[expect]`, fires every timed event, and the
//! deterministic part of its report is a snapshot. The failover and faults scenarios' events
//! are asserted by their effect: the quiesced and the downed server get no new connection
//! while out, the downed one gets new ones again once up, the link latency change shows in
//! the connection setup times, and the link-fault escalation in the corrupted frames the
//! pipeline drops as invalid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use datapath::packet::tcp_flags;
use datapath::verdict::{DropReason, Verdict};
use sim::engine::{Collect, PacketLine};
use sim::run::{RunOptions, RunOutput, run_scenario};
use sim::scenario;

/// Scenarios bundled in `scenarios/`.
pub const BUNDLED: [&str; 12] = [
    "synflood",
    "udpflood",
    "replay-real",
    "flows-doc",
    "multiport-fwmark",
    "nat-masquerade",
    "failover",
    "faults",
    "ipvs-schedulers",
    "policy-routing",
    "linerate",
    "ftp-fwmark",
];

const MS: u64 = 1_000_000;

fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"))
}

fn run_full(name: &str, records: bool) -> (RunOutput, usize) {
    let loaded = scenario::load(&path(name)).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        threads: 2,
        collect: Collect {
            records,
            emitted: false,
        },
    };
    let events = loaded.scenario.events.len();
    (run_scenario(&loaded, options, &|_| {}).unwrap(), events)
}

#[test]
fn bundled_scenarios_run_full_length_meet_their_expectations_and_match_their_snapshots() {
    for name in BUNDLED {
        let (output, events) = run_full(name, false);
        let report = &output.report;
        assert!(report.totals.processed > 0, "{name} processed nothing");
        let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
        assert!(report.passed && failed.is_empty(), "{name}: {failed:?}");
        assert_eq!(report.events.len(), events, "{name}: every event fires");
        for entry in &report.events {
            assert!(entry.status.starts_with("applied"), "{name}: {entry:?}");
        }
        insta::assert_snapshot!(
            format!("bundled_{name}"),
            sim::report::markdown(report, None)
        );
    }
}

/// New connections (client SYNs the director scheduled): (time, real server).
fn new_connections(records: &[PacketLine]) -> Vec<(u64, SocketAddr)> {
    records
        .iter()
        .filter(|r| r.meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN)
        .filter_map(|r| r.outcome.backend.map(|b| (r.time, b)))
        .collect()
}

#[test]
fn failover_events_take_effect() {
    let (output, _) = run_full("failover", true);
    let events: Vec<u64> = output.report.events.iter().map(|e| e.at_ns).collect();
    assert_eq!(events, [150 * MS, 200 * MS, 300 * MS, 400 * MS]);
    let new = new_connections(&output.merged.records);
    let quiesced: SocketAddr = "10.0.1.4:80".parse().unwrap();
    let downed: SocketAddr = "10.0.1.3:80".parse().unwrap();
    let to = |real: SocketAddr, from: u64, until: u64| {
        new.iter()
            .filter(|(t, b)| *b == real && (from..until).contains(t))
            .count()
    };
    // weight 0 at 150 ms: no new connection after it, some before.
    assert!(to(quiesced, 0, 150 * MS) > 0);
    assert_eq!(to(quiesced, 150 * MS, u64::MAX), 0);
    // server_down at 200 ms, server_up at 400 ms.
    assert!(to(downed, 0, 200 * MS) > 0);
    assert_eq!(to(downed, 200 * MS, 400 * MS), 0);
    assert!(
        to(downed, 400 * MS, u64::MAX) > 0,
        "set_up: new connections again"
    );
    // link latency 2 ms -> 5 ms at 300 ms: a handshake takes a round trip over it.
    let samples = &output.report.plots.connect_samples;
    let before: Vec<u64> = samples
        .iter()
        .filter(|(done, _)| *done < 300 * MS)
        .map(|s| s.1)
        .collect();
    let after: Vec<u64> = samples
        .iter()
        .filter(|(done, connect)| done - connect > 300 * MS)
        .map(|s| s.1)
        .collect();
    assert!(!before.is_empty() && !after.is_empty());
    assert!(before.iter().all(|c| *c < 10 * MS), "{before:?}");
    assert!(after.iter().all(|c| *c >= 10 * MS), "{after:?}");
}

#[test]
fn faults_link_escalation_and_recovery_take_effect() {
    let (output, _) = run_full("faults", true);
    let events: Vec<u64> = output.report.events.iter().map(|e| e.at_ns).collect();
    assert_eq!(events, [300 * MS, 600 * MS]);
    // Share of the packets the pipeline saw that it dropped as invalid (corrupted frames),
    // per window: corrupt_ppm 2000, then 20000 from 300 ms, then 2000 again from 600 ms.
    let share = |from: u64, until: u64| {
        let window: Vec<_> = output
            .merged
            .records
            .iter()
            .filter(|r| (from..until).contains(&r.time))
            .collect();
        let invalid = window
            .iter()
            .filter(|r| matches!(r.outcome.verdict, Verdict::Drop(DropReason::Invalid(_))))
            .count();
        invalid as f64 / window.len().max(1) as f64
    };
    let (calm, worse, recovered) = (
        share(0, 300 * MS),
        share(300 * MS, 600 * MS),
        share(600 * MS, 1_000 * MS),
    );
    assert!(worse > 3.0 * calm, "{calm} {worse} {recovered}");
    assert!(worse > 3.0 * recovered, "{calm} {worse} {recovered}");
    let totals = &output.report.totals;
    assert!(totals.link_duplicated > 0 && totals.link_reordered > 0);
}

/// Connections still open at the end count as not succeeded: failover cut right after
/// its `server_down` strands connections, and they lower the success ratio.
#[test]
fn stranded_connections_lower_the_success_ratio() {
    let mut loaded = scenario::load(&path("failover")).unwrap();
    loaded.scenario.duration = scenario::DurationNs(203 * MS);
    let options = RunOptions {
        threads: 1,
        collect: Collect::default(),
    };
    let output = run_scenario(&loaded, options, &|_| {}).unwrap();
    let tcp = output.report.clients.tcp.as_ref().expect("tcp clients");
    assert!(tcp.unfinished > 0, "{tcp:?}");
    let expected = tcp.completed as f64 / tcp.attempted as f64;
    assert!((tcp.success_ratio - expected).abs() < 1e-12, "{tcp:?}");
    assert!(tcp.success_ratio < 1.0, "{tcp:?}");
    let summary = sim::run::summary(&output.report, &output.measured);
    assert!(
        summary.contains(&format!("{} still open at the end", tcp.unfinished)),
        "{summary}"
    );
}

/// The line-rate scenario's flood is 10 Gbit/s of minimum frames: 14.88 Mpps of virtual
/// time. Its spread of TTLs trips the shield's TTL filter, the SYNs it lets through get
/// cookies, no flood packet reaches a server, and every legitimate client's connection
/// completes through the cookie proxy.
#[test]
fn linerate_floods_at_ten_gigabit_line_rate_and_clients_get_through() {
    let (output, _) = run_full("linerate", false);
    let report = &output.report;
    let source = |name: &str| report.sources.iter().find(|s| s.name == name).unwrap();
    let (flood, legit) = (source("flood"), source("legit"));
    let expected = 14_880_000 * report.duration_ns / 1_000_000_000;
    assert!(
        flood.sent.abs_diff(expected) <= 1,
        "flood sent {} in {} ns, line rate is {expected}",
        flood.sent,
        report.duration_ns
    );
    let tcp = report.clients.tcp.as_ref().unwrap();
    assert_eq!(tcp.attempted, 300, "{tcp:?}");
    assert!(tcp.completed >= 297 && tcp.success_ratio >= 0.99, "{tcp:?}");
    let counter = |name: &str| -> u64 {
        let shield = &report.appliance.shield;
        shield.iter().filter_map(|s| s.counters.get(name)).sum()
    };
    assert!(
        counter("dropped.ttl") > flood.sent / 2,
        "{:?}",
        report.appliance.shield
    );
    assert!(
        counter("cookies_sent") > 10 * tcp.attempted,
        "{:?}",
        report.appliance.shield
    );
    assert_eq!(counter("cookies_validated"), tcp.attempted);
    let to_servers: u64 = report.backends.iter().map(|b| b.packets).sum();
    assert!(
        to_servers <= legit.sent,
        "{to_servers} packets reached the servers"
    );
}

#[test]
fn policy_routing_records_name_the_table_and_route_each_packet_took() {
    let (output, _) = run_full("policy-routing", true);
    let records = &output.merged.records;
    let quarantined: ipnet::IpNet = "192.168.0.128/25".parse().unwrap();
    let sinkhole: std::net::IpAddr = "10.0.9.1".parse().unwrap();
    let (mut by_table, mut by_host_route, mut by_main) = (0, 0, 0);
    for record in records {
        let (Some(src), Some(dst)) = (record.meta.src, record.meta.dst) else {
            continue;
        };
        let route = record
            .outcome
            .route
            .expect("every forwarded packet has a route");
        let (dev, via) = record.outcome.next_hop.expect("and a next hop");
        if quarantined.contains(&src) {
            assert_eq!(route.table, 100, "{src} > {dst}");
            if dst == "203.0.113.53".parse::<std::net::IpAddr>().unwrap() {
                assert_eq!((route.route, via, dev), (1, None, 1), "host route, wan");
                by_host_route += 1;
            } else {
                assert_eq!(
                    (route.route, via, dev),
                    (0, Some(sinkhole), 2),
                    "default, dmz"
                );
                by_table += 1;
            }
        } else {
            assert_eq!(
                (route.table, via),
                (254, None),
                "{src} > {dst}: main, on-link"
            );
            by_main += 1;
        }
    }
    assert!(by_table > 0 && by_host_route > 0 && by_main > 0);
}
