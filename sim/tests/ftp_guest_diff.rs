//! FTP through a NAT director against the real `ip_vs_ftp` (guest Linux 6.1, module loaded
//! with `ports=21`, conntrack on for IPVS): the same scripted exchange (two clients,
//! `PASV`, `EPSV`, `PORT`, `EPRT`, three `227` replies that grow by 3 bytes) played
//! through lbsim's director with its FTP helper and through the guest's IPVS. Every
//! forwarded frame must be the same — addresses, ports, flags, sequence and
//! acknowledgement numbers, payload bytes — and every data connection must reach its
//! control connection's real server on both sides (a NAT service on port 21). Through the
//! seeds' fwmark service the kernel differs at the first `227` reply: pinned by a test of
//! its own. Under CI=true a guest that cannot
//! start fails the test.

mod kernel_support;

use std::net::IpAddr;

use kernel_support::{kernel_tests_enabled, lock};
use sim::kernel::guest::ftp::{
    ConnKind, FtpRecord, Service, SimWire, VIP, passive_address, play, script,
};
use sim::kernel::guest::ftp_run::run_in_guest;

/// Lines of the first difference between two records, with the step number.
fn differences(kernel: &FtpRecord, lbsim: &FtpRecord) -> Vec<String> {
    let mut out = Vec::new();
    for (n, (k, l)) in kernel.steps.iter().zip(&lbsim.steps).enumerate() {
        if k != l {
            out.push(format!(
                "step {n}:\n  kernel sent {}\n    forwarded {:?}\n  lbsim  sent {}\n    forwarded {:?}",
                k.sent, k.forwarded, l.sent, l.forwarded
            ));
        }
    }
    if kernel.steps.len() != lbsim.steps.len() {
        out.push(format!(
            "{} steps in the kernel, {} in lbsim",
            kernel.steps.len(),
            lbsim.steps.len()
        ));
    }
    out
}

/// Play the script through lbsim and through the guest's IPVS with `service`; assert
/// that they agree frame by frame and on every connection's real server, and that the
/// comparison covered the rewrites and data connections.
fn agrees_with_ip_vs_ftp(name: &str, service: Service) {
    if !kernel_tests_enabled() {
        return;
    }
    let Some(guest) = sim::kernel::guest::guest_for_test(name) else {
        return;
    };
    let _guard = lock();
    let script = script();
    let mut wire = SimWire::new(service, &[21]).expect("director");
    let lbsim = play(&script, &mut wire).expect("lbsim plays the script");
    let sim = sim::kernel::guest_run::sim_binary().expect("sim binary");
    let started = std::time::Instant::now();
    let kernel = run_in_guest(&guest, &sim, service).expect("the guest plays the script");
    eprintln!(
        "{service:?}: guest {} (ip_vs_ftp ports={}) played {} steps in {:?}",
        kernel.release,
        kernel.ports,
        kernel.record.steps.len(),
        started.elapsed()
    );
    assert_eq!(kernel.ports, "21", "ip_vs_ftp's ports parameter");
    let diff = differences(&kernel.record, &lbsim);
    assert!(
        diff.is_empty(),
        "{} of {} steps differ:\n{}\n\nipvsadm -Lcn:\n{}\nconntrack:\n{}",
        diff.len(),
        lbsim.steps.len(),
        diff.join("\n"),
        kernel.connections,
        kernel.conntrack
    );
    assert_eq!(kernel.record.reals, lbsim.reals);
    eprintln!(
        "{service:?}: {} steps, {} forwarded frames identical on both sides; {} connections on the same real server",
        lbsim.steps.len(),
        lbsim.steps.iter().map(|s| s.forwarded.len()).sum::<usize>(),
        lbsim.reals.iter().flatten().count()
    );

    // The comparison covered what it is meant to: the kernel rewrote the 227 replies to
    // the virtual address (3 bytes longer), later segments carry shifted numbers, and
    // every data connection reached its control connection's real server.
    let forwarded: Vec<&String> = kernel
        .record
        .steps
        .iter()
        .flat_map(|s| &s.forwarded)
        .collect();
    let vip = VIP.to_string().replace('.', ",");
    let rewritten = forwarded
        .iter()
        .filter(|f| f.contains(&format!("227 Entering Passive Mode ({vip},")))
        .count();
    assert_eq!(rewritten, 3, "{forwarded:#?}");
    assert!(
        kernel.record.steps.iter().all(|s| s.forwarded.len() == 1),
        "every segment forwarded once: {:#?}",
        kernel.record
    );
    let counters = wire.counters().expect("helper on");
    assert_eq!((counters.length_changes, counters.data_connections), (3, 7));
    for (n, spec) in script.conns.iter().enumerate() {
        let (ConnKind::Passive(control) | ConnKind::Active(control)) = spec.kind else {
            continue;
        };
        let data = kernel.record.reals[n].expect("data connection forwarded");
        let control = kernel.record.reals[control].expect("control forwarded");
        assert_eq!(data.ip(), control.ip(), "data connection {n}");
    }
    let reals: std::collections::BTreeSet<_> = kernel
        .record
        .reals
        .iter()
        .flatten()
        .map(|r| r.ip())
        .collect();
    assert_eq!(reals.len(), 2, "both real servers used: {reals:?}");

    // The comparison sees a helper that does nothing: lbsim without it differs.
    let without = play(&script, &mut SimWire::new(service, &[]).expect("director"));
    assert!(!differences(&kernel.record, &without.expect("plays")).is_empty());
}

#[test]
fn ftp_control_and_data_connections_agree_with_ip_vs_ftp() {
    agrees_with_ip_vs_ftp("ftp-guest", Service::Port);
}

/// The seeds' FTP service (one firewall mark for the virtual address, persistence) is a
/// difference found, not mended: Linux 6.1's `ip_vs_ftp` drops the first `227` reply of a
/// control connection of a fwmark service (nothing forwarded, no rewrite, no sequence
/// offset; its passive data connection is created all the same, `ipvsadm -Lcn` lists it in
/// LISTEN), with or without persistence, while lbsim rewrites and forwards it as for the
/// port-21 service. Everything before that reply agrees. The cause is not known yet (the
/// kernel returns 0 from `ip_vs_ftp_out`: no conntrack entry on the reply, or the mangle
/// failed); this test pins the kernel's behaviour so that a change on either side shows.
#[test]
fn the_fwmark_ftp_service_differs_from_ip_vs_ftp_at_the_first_227_reply() {
    if !kernel_tests_enabled() {
        return;
    }
    let Some(guest) = sim::kernel::guest::guest_for_test("ftp-guest-fwmark") else {
        return;
    };
    let _guard = lock();
    let script = script();
    let mut wire = SimWire::new(Service::Fwmark, &[21]).expect("director");
    let lbsim = play(&script, &mut wire).expect("lbsim plays the script");
    let sim = sim::kernel::guest_run::sim_binary().expect("sim binary");
    let kernel = run_in_guest(&guest, &sim, Service::Fwmark).expect("the guest plays");
    let first = kernel
        .record
        .steps
        .iter()
        .zip(&lbsim.steps)
        .position(|(k, l)| k != l)
        .expect("a difference");
    let (k, l) = (&kernel.record.steps[first], &lbsim.steps[first]);
    let text = format!(
        "step {first}: kernel {k:?}\nlbsim {l:?}\n{}",
        kernel.connections
    );
    assert!(
        k.sent.contains("227 Entering Passive Mode (10,100,0,"),
        "{text}"
    );
    assert!(k.forwarded.is_empty(), "{text}");
    assert_eq!(l.forwarded.len(), 1, "{text}");
    assert!(l.forwarded[0].contains("(203,0,113,121,"), "{text}");
    assert!(
        kernel
            .connections
            .contains("LISTEN      198.51.100.1:0     203.0.113.121:50001"),
        "{text}"
    );
}

#[test]
fn passive_replies_are_read_as_a_client_reads_them() {
    let vip = IpAddr::V4(VIP);
    assert_eq!(
        passive_address(
            b"227 Entering Passive Mode (203,0,113,121,195,81).\r\n",
            vip
        ),
        Some("203.0.113.121:50001".parse().unwrap())
    );
    assert_eq!(
        passive_address(b"229 Entering Extended Passive Mode (|||50002|)\r\n", vip),
        Some("203.0.113.121:50002".parse().unwrap())
    );
    assert_eq!(passive_address(b"200 ok (1,2)\r\n", vip), None);
}

/// lbsim alone (no guest needed): the helper rewrote the three 227 replies and the 229,
/// created the seven data connections, each on its control connection's real server.
#[test]
fn the_simulated_helper_ties_data_connections_to_their_control() {
    let script = script();
    let mut wire = SimWire::new(Service::Port, &[21]).unwrap();
    let record = play(&script, &mut wire).unwrap();
    let counters = wire.counters().unwrap();
    assert_eq!(
        (
            counters.replies_rewritten,
            counters.length_changes,
            counters.data_connections
        ),
        (4, 3, 7),
        "{counters:?}"
    );
    for (n, spec) in script.conns.iter().enumerate() {
        let (ConnKind::Passive(control) | ConnKind::Active(control)) = spec.kind else {
            continue;
        };
        let (data, control) = (record.reals[n].unwrap(), record.reals[control].unwrap());
        assert_eq!(data.ip(), control.ip(), "connection {n}: {record:#?}");
    }
    assert!(
        record.steps.iter().all(|s| s.forwarded.len() == 1),
        "{record:#?}"
    );
}
