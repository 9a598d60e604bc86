//! The bundled FTP scenario: sessions through an fwmark NAT director with persistence and
//! the `ip_vs_ftp` helper fetch six files each through PASV, PORT, EPSV and EPRT, every
//! byte checked; every data connection goes to its control connection's real server; the
//! same run without the helper fails (the clients get the real servers' own addresses),
//! and the run is the same with one or two receive queues.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use datapath::packet::tcp_flags;
use sim::actors::ftp::FtpStats;
use sim::run::{RunOptions, RunOutput, run_scenario};
use sim::scenario::{self, LoadedScenario};

fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/ftp-fwmark.toml")
}

fn run(loaded: &LoadedScenario, threads: usize) -> RunOutput {
    let options = RunOptions {
        threads,
        collect: sim::engine::Collect {
            records: true,
            emitted: false,
        },
    };
    run_scenario(loaded, options, &|_| {}).unwrap()
}

fn ftp_stats(output: &RunOutput) -> FtpStats {
    let mut total = FtpStats::default();
    for actor in &output.merged.actors {
        if let Some(stats) = &actor.ftp {
            total.merge(stats);
        }
    }
    total
}

const VIP: &str = "192.0.2.21";

#[test]
fn ftp_sessions_complete_through_the_nat_director_with_the_helper() {
    let loaded = scenario::load(&path()).unwrap();
    let output = run(&loaded, 2);
    let report = &output.report;
    let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
    assert!(report.passed, "{failed:?}");
    let stats = ftp_stats(&output);
    let files_per_session = [3000u64, 70000, 1200, 20000, 5000, 100];
    assert_eq!(stats.files, 24 * files_per_session.len() as u64);
    assert_eq!(stats.bytes, 24 * files_per_session.iter().sum::<u64>());
    assert_eq!((stats.wrong_address, stats.corrupt), (0, 0));
    // Per session: 3 PASV (each 227 two bytes longer: 10,0,1,x → 192,0,2,21), 1 EPSV
    // (same length), 1 PORT, 1 EPRT; one data connection per file.
    let helper = report.appliance.ftp.as_ref().expect("helper in the report");
    let c = helper.counters;
    assert_eq!(
        (c.control_connections, c.passive_commands, c.port_commands),
        (24, 96, 48)
    );
    assert_eq!((c.replies_rewritten, c.length_changes), (96, 72));
    assert_eq!((c.data_connections, c.overflows, c.drops), (144, 0, 0));

    // Each client's control connection and all its data connections (client SYNs to
    // the VIP's passive ports, server SYNs from port 20 of a real server) share one real
    // server.
    let vip: IpAddr = VIP.parse().unwrap();
    let mut control: BTreeMap<IpAddr, IpAddr> = BTreeMap::new();
    let mut data: Vec<(IpAddr, IpAddr)> = Vec::new();
    for record in &output.merged.records {
        let meta = &record.meta;
        let syn = meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        let (Some(backend), true) = (record.outcome.backend, syn) else {
            continue;
        };
        let (source, destination) = (meta.src.unwrap(), meta.dst.unwrap());
        match (meta.dport, meta.sport) {
            (Some(21), _) if destination == vip => {
                control.insert(source, backend.ip());
            }
            (Some(port), _) if destination == vip && port >= 50000 => {
                data.push((source, backend.ip()));
            }
            // Replies are recorded as they leave (from VIP:20); the backend names the real.
            (_, Some(20)) => data.push((destination, backend.ip())),
            _ => {}
        }
    }
    assert_eq!(data.len(), 24 * 6, "one data connection per file");
    for (client, real) in &data {
        assert_eq!(control.get(client), Some(real), "client {client}");
    }
    let reals: std::collections::BTreeSet<_> = control.values().collect();
    assert_eq!(reals.len(), 2, "rr spreads the clients over both servers");
}

#[test]
fn without_the_helper_passive_replies_name_the_real_server_and_sessions_fail() {
    let mut loaded = scenario::load(&path()).unwrap();
    loaded.scenario.appliance.ip_vs_ftp = None;
    let output = run(&loaded, 1);
    assert!(!output.report.passed);
    let stats = ftp_stats(&output);
    assert_eq!(stats.wrong_address, 24, "every session's first PASV");
    assert_eq!(stats.files, 0);
}

#[test]
fn one_or_two_queues_give_the_same_report() {
    let loaded = scenario::load(&path()).unwrap();
    let mut two = loaded.clone();
    two.scenario.queues = 2;
    let one = run(&loaded, 1);
    let two = run(&two, 2);
    assert_eq!(ftp_stats(&one), ftp_stats(&two));
    assert!(one.report.passed && two.report.passed);
}
