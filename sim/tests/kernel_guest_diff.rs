//! `sim diff` on the guest backend: directors compared with a real IPVS (user-mode Linux
//! 6.1), one test per scheduler family — counts (wlc), hashes (sh, mh), weighted rr and
//! persistence —
//! each asserting that every new connection went to the same real server on both sides,
//! with the same rewritten 5-tuple, and that the IPVS counters equal lbsim's at the end.
//! Under CI=true a guest that cannot start fails these tests (`guest_for_test`).

mod kernel_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{data, kernel_tests_enabled, lock, write_pcap};
use sim::kernel::backend_diff::BackendChoice;
use sim::kernel::diff::{DiffInput, DiffReport, render, run_input_on};

const GAP: Duration = Duration::from_micros(500);

fn syn(src: Ipv4Addr, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(src, dst.parse().expect("address"))
        .tcp(sport, dport)
        .syn()
        .mss(1460)
        .build()
}

/// SYNs of `clients` clients (198.51.100.x), `per_client` connections each, to `vip:port`.
fn syns(vip: &str, port: u16, clients: u8, per_client: u16) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for round in 0..per_client {
        for client in 1..=clients {
            let src = Ipv4Addr::new(198, 51, 100, client);
            frames.push(syn(src, 20_000 + round, vip, port));
        }
    }
    frames
}

/// Diff `frames` through the guest-scheduler appliance on the guest backend.
fn guest_diff(name: &str, frames: &[Vec<u8>]) -> Option<DiffReport> {
    if !kernel_tests_enabled() {
        return None;
    }
    sim::kernel::guest::guest_for_test(name)?;
    let _guard = lock();
    let pcap = write_pcap(&format!("{name}.pcap"), frames);
    let appliance = data("guest-schedulers.toml");
    let input = DiffInput::captures(&appliance, &[pcap], 1, frames.len()).expect("input");
    let report = run_input_on(&input, &[], GAP, BackendChoice::Guest).expect("guest diff runs");
    Some(report)
}

/// Every request agreed (tuple and real server), IPVS answered, counters equal.
fn assert_ipvs_agrees(report: &DiffReport, director: &str, connections: u64) {
    let text = render(report);
    assert_eq!(report.backend.backend, "guest", "{text}");
    assert!(report.disagreements.is_empty(), "{text}");
    let d = report
        .backend
        .directors
        .iter()
        .find(|d| d.director == director)
        .unwrap_or_else(|| panic!("director {director} compared: {text}"));
    assert_eq!(
        (d.compared, d.same_backend),
        (connections, connections),
        "{text}"
    );
    let mechanism = report
        .features
        .iter()
        .find(|f| f.feature.starts_with(&format!("director {director} ")))
        .map(|f| f.mechanism.as_str())
        .unwrap_or_default();
    assert!(mechanism.starts_with("IPVS (guest Linux 6.1"), "{text}");
    assert!(!report.backend.counters.is_empty(), "{text}");
    for row in &report.backend.counters {
        assert_eq!(
            row.kernel, row.lbsim,
            "{} {}: {text}",
            row.entry, row.column
        );
    }
}

#[test]
fn wlc_chooses_the_real_servers_ipvs_chooses() {
    let frames = syns("192.0.2.30", 80, 12, 2);
    if let Some(report) = guest_diff("guest-wlc", &frames) {
        assert_ipvs_agrees(&report, "counts", 24);
    }
}

#[test]
fn sh_and_mh_hash_clients_to_the_real_servers_ipvs_hashes_them_to() {
    let mut frames = syns("192.0.2.31", 80, 16, 1);
    frames.extend(syns("192.0.2.32", 80, 16, 1));
    if let Some(report) = guest_diff("guest-hash", &frames) {
        assert_ipvs_agrees(&report, "source-hash", 16);
        assert_ipvs_agrees(&report, "maglev", 16);
    }
}

#[test]
fn persistence_keeps_each_client_on_its_ipvs_real_server() {
    let frames = syns("192.0.2.33", 443, 6, 3);
    if let Some(report) = guest_diff("guest-persistence", &frames) {
        assert_ipvs_agrees(&report, "sticky", 18);
        assert_eq!(
            report.backend.templates,
            Some((6, 6)),
            "{}",
            render(&report)
        );
    }
}

/// A fwmark service behind the flowmgr documentation's flows: the flows' mangle rules
/// (iptables-legacy in the guest) mark the mail ports, IPVS schedules the marked packets
/// (rr over three reals: the kernel's list order, newest first), other flows forward or
/// deny. Every packet agrees, whichever mechanism decided it.
#[test]
fn fwmark_service_marked_by_the_flows_iptables_rules() {
    if !kernel_tests_enabled() {
        return;
    }
    let Some(_) = sim::kernel::guest::guest_for_test("guest-fwmark") else {
        return;
    };
    let _guard = lock();
    let mut frames = Vec::new();
    for client in 1..=4u8 {
        let src = Ipv4Addr::new(10, 9, 9, client);
        for (index, port) in [110u16, 143, 25].into_iter().enumerate() {
            frames.push(syn(src, 30_000 + index as u16, "192.168.0.2", port));
        }
    }
    frames.push(syn(Ipv4Addr::new(192, 168, 0, 5), 1001, "192.168.0.1", 22));
    frames.push(syn(Ipv4Addr::new(10, 9, 9, 9), 1002, "192.168.0.1", 22));
    frames.push(syn(Ipv4Addr::new(10, 9, 9, 9), 1003, "192.168.0.2", 80));
    let pcap = write_pcap("guest-fwmark.pcap", &frames);
    let appliance = data("doc-examples.toml");
    let input = DiffInput::captures(&appliance, &[pcap], 1, frames.len()).expect("input");
    let report = run_input_on(&input, &[], GAP, BackendChoice::Guest).expect("guest diff");
    let text = render(&report);
    assert!(report.disagreements.is_empty(), "{text}");
    assert_eq!(report.totals(), (15, 15), "{text}");
    assert_ipvs_agrees(&report, "maildirect", 12);
}

/// The bundled `ipvs-schedulers` scenario (wlc, sh, mh, rr + persistence behind a shield
/// denylist): every director's choices and counters equal real IPVS's, the denylist is
/// answered by the host kernel (split per feature) and agrees too.
#[test]
fn the_ipvs_schedulers_scenario_agrees_with_real_ipvs() {
    if !kernel_tests_enabled() {
        return;
    }
    let Some(_) = sim::kernel::guest::guest_for_test("guest-scenario") else {
        return;
    };
    let _guard = lock();
    let scenario =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/ipvs-schedulers.toml");
    let input = DiffInput::scenario(&scenario, None, 5_000).expect("scenario input");
    let report = run_input_on(&input, &[], GAP, BackendChoice::Auto).expect("guest diff");
    let text = render(&report);
    assert!(report.disagreements.is_empty(), "{text}");
    let (compared, agreed) = report.totals();
    assert!(compared > 400 && agreed == compared, "{text}");
    for director in ["counts", "source-hash", "maglev", "sticky"] {
        let d = report
            .backend
            .directors
            .iter()
            .find(|d| d.director == director);
        let d = d.unwrap_or_else(|| panic!("{director}: {text}"));
        assert!(d.compared > 50, "{text}");
        assert_ipvs_agrees(&report, director, d.compared);
    }
    assert!(
        report
            .backend
            .answered_by
            .keys()
            .any(|f| f.starts_with("shield deny")),
        "{text}"
    );
    assert_eq!(
        report.by_feature["shield lists"].agreed,
        report.by_feature["shield lists"].compared
    );
    let (kernel_templates, lbsim_templates) = report.backend.templates.expect("templates");
    assert!(
        kernel_templates > 0 && kernel_templates == lbsim_templates,
        "{text}"
    );
}

/// wrr over reals added one by one: lbsim's first pass is the kernel's (the order
/// `ip_vs_wrr_dest_changed` leaves after each `ipvsadm -a`), over two full cycles.
#[test]
fn wrr_follows_the_kernels_order_from_the_first_connection() {
    let frames = syns("192.0.2.34", 80, 18, 1);
    if let Some(report) = guest_diff("guest-wrr", &frames) {
        assert_ipvs_agrees(&report, "weighted", 18);
    }
}
