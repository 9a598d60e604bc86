//! One appliance, many receive queues: the director's and NAT's state is one state whatever
//! `queues` says. Backends per connection, translated tuples and ipvsadm counters are the
//! same at 1, 2 and 4 queues; persistence holds; no translated tuple is reused; rr/wrr
//! hand out servers in the order `sim director which` does for the same arrivals.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use sim::engine::{Collect, reused_tuples};
use sim::run::{RunOptions, RunOutput, run_scenario};
use sim::scenario::{self, LoadedScenario};

fn load(name: &str) -> LoadedScenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"));
    scenario::load(&path).unwrap()
}

fn run(loaded: &LoadedScenario, queues: u16, threads: usize) -> RunOutput {
    let mut loaded = loaded.clone();
    loaded.scenario.queues = queues;
    let options = RunOptions {
        threads,
        collect: Collect::default(),
    };
    run_scenario(&loaded, options, &|_| {}).unwrap()
}

/// Client endpoint → (service, real) of every connection the directors created.
fn backends(output: &RunOutput) -> BTreeMap<SocketAddr, Vec<(u16, SocketAddr)>> {
    let mut map: BTreeMap<SocketAddr, Vec<(u16, SocketAddr)>> = BTreeMap::new();
    for line in &output.merged.connections {
        map.entry(line.client)
            .or_default()
            .push((line.service, line.real));
    }
    map
}

/// ipvsadm-like counters: per service, per real: connections.
fn ipvsadm(output: &RunOutput) -> Vec<(String, Vec<(String, u64)>)> {
    output
        .report
        .appliance
        .directors
        .iter()
        .map(|d| {
            let reals = d.reals.iter().map(|r| (r.address.clone(), r.connections));
            (d.name.clone(), reals.collect())
        })
        .collect()
}

fn translated(output: &RunOutput) -> BTreeSet<(SocketAddr, SocketAddr, SocketAddr)> {
    let syns = output.merged.translated.iter();
    syns.map(|s| (s.original, s.translated.0, s.translated.1))
        .collect()
}

#[test]
fn director_and_nat_results_do_not_depend_on_queues() {
    for name in [
        "multiport-fwmark",
        "nat-masquerade",
        "failover",
        "flows-doc",
    ] {
        let loaded = load(name);
        let one = run(&loaded, 1, 1);
        assert!(!one.merged.connections.is_empty(), "{name}: no connections");
        for queues in [2, 4] {
            let many = run(&loaded, queues, 2);
            let (a, b) = (backends(&one), backends(&many));
            let differ: Vec<_> = a.iter().filter(|(k, v)| b.get(k) != Some(v)).collect();
            assert!(
                a.len() == b.len() && differ.is_empty(),
                "{name}: {queues} queues: {differ:?}"
            );
            assert_eq!(ipvsadm(&one), ipvsadm(&many), "{name}: {queues} queues");
            assert_eq!(
                translated(&one),
                translated(&many),
                "{name}: {queues} queues"
            );
        }
    }
}

/// Clients whose connections to one service landed on more than one real.
fn clients_on_two_reals(output: &RunOutput) -> usize {
    let mut reals: BTreeMap<(IpAddr, u16), BTreeSet<IpAddr>> = BTreeMap::new();
    for line in &output.merged.connections {
        let key = (line.client.ip(), line.service);
        reals.entry(key).or_default().insert(line.real.ip());
    }
    reals.values().filter(|r| r.len() > 1).count()
}

#[test]
fn persistence_holds_for_an_fwmark_80_443_service_at_1_2_4_queues() {
    let loaded = load("multiport-fwmark");
    for queues in [1, 2, 4] {
        let output = run(&loaded, queues, 2);
        let ports: BTreeSet<u16> = output
            .merged
            .connections
            .iter()
            .filter(|c| c.client.ip().to_string().starts_with("198.51.100."))
            .map(|c| c.real.port())
            .collect();
        assert!(ports.contains(&80) && ports.contains(&443), "{ports:?}");
        let per_client = backends(&output);
        let web_clients = per_client.keys().map(|c| c.ip()).collect::<BTreeSet<_>>();
        assert!(
            web_clients.len() >= 40,
            "{queues} queues: {}",
            web_clients.len()
        );
        assert_eq!(clients_on_two_reals(&output), 0, "{queues} queues");
    }
}

#[test]
fn no_translated_tuple_is_reused_at_any_queue_count() {
    let loaded = load("nat-masquerade");
    for queues in [1, 2, 4] {
        let output = run(&loaded, queues, 2);
        assert!(output.merged.translated.len() > 50, "{queues} queues");
        assert_eq!(
            reused_tuples(&output.merged.translated),
            0,
            "{queues} queues"
        );
    }
}

#[test]
fn reports_are_identical_for_1_2_and_4_threads_with_shared_state() {
    for name in ["multiport-fwmark", "nat-masquerade"] {
        let loaded = load(name);
        for queues in [2, 4] {
            let reference = sim::report::deterministic_json(&run(&loaded, queues, 1).report);
            for threads in [2, 4] {
                let other = sim::report::deterministic_json(&run(&loaded, queues, threads).report);
                assert!(
                    reference == other,
                    "{name}: {queues} queues, {threads} threads"
                );
            }
        }
    }
}

/// The real servers `sim director which` hands out for the run's new connections, fed in
/// the run's arrival order, equal the run's: one scheduler state (rr/wrr cursor) for all
/// queues.
#[test]
fn rr_and_wrr_sequences_equal_director_which_for_the_same_arrivals() {
    use datapath::director::{DirectorOptions, Directors};
    for (name, queues) in [("nat-masquerade", 2), ("faults", 2), ("nat-masquerade", 4)] {
        let loaded = load(name);
        let output = run(&loaded, queues, 2);
        let configs = &loaded.scenario.appliance.director;
        let mut directors = Directors::build(configs, DirectorOptions::default()).unwrap();
        let vip = |service: u16| {
            let config = &configs[usize::from(service)];
            format!("{}:{}", config.vip.unwrap(), config.port.unwrap())
        };
        let (mut run_order, mut which_order) = (Vec::new(), Vec::new());
        for (index, line) in output.merged.connections.iter().enumerate() {
            let text = format!("tcp {} > {}", line.client, vip(line.service));
            let answer = sim::cli::director::answer(&mut directors, index as u64, &text).unwrap();
            run_order.push(line.real.to_string());
            which_order.push(answer.backend.unwrap_or_default());
        }
        assert!(
            run_order.len() > 50,
            "{name}: {} connections",
            run_order.len()
        );
        assert_eq!(run_order, which_order, "{name} at {queues} queues");
    }
}

#[test]
fn the_shared_state_checks_count_what_they_say() {
    use sim::engine::{ConnectionLine, TranslatedSyn};
    let at = |ms: u64| ms * 1_000_000;
    let client = |port: u16| SocketAddr::from(([198, 51, 100, 7], port));
    let real = |last: u8| SocketAddr::from(([10, 0, 1, last], 0));
    let line = |ms, port, last| ConnectionLine {
        at: at(ms),
        client: client(port),
        service: 0,
        real: real(last),
        queue: 0,
    };
    // Same real, then another one within 300 s, then another one 400 s later.
    let connections = [line(0, 1024, 2), line(5, 1025, 2), line(9, 1026, 3)];
    let persistent = [Some(300_000_000_000)];
    assert_eq!(
        sim::report::persistence_violations(&connections, &persistent),
        1
    );
    assert_eq!(
        sim::report::persistence_violations(&connections, &[None]),
        0
    );
    let late = [line(0, 1024, 2), line(400_000, 1025, 3)];
    assert_eq!(sim::report::persistence_violations(&late, &persistent), 0);
    let server = SocketAddr::from(([10, 0, 3, 3], 8080));
    let syn = |port, original| TranslatedSyn {
        at: 0,
        translated: (SocketAddr::from(([10, 0, 3, 1], port)), server),
        original: client(original),
    };
    // A retransmitted SYN reuses nothing; another client on the same tuple does.
    assert_eq!(reused_tuples(&[syn(1024, 1024), syn(1024, 1024)]), 0);
    assert_eq!(
        reused_tuples(&[syn(1024, 1024), syn(1024, 2000), syn(1025, 1025)]),
        1
    );
}

#[test]
fn source_expectations_are_validated_with_locations() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/flows-doc.toml"),
    )
    .unwrap();
    let unknown = text.replace("name = \"outside-ssh\"            #", "name = \"nobody\" #");
    let error = scenario::parse(Path::new("s.toml"), &unknown)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("s.toml:") && error.contains("\"nobody\""),
        "{error}"
    );
    assert!(error.contains("outside-ssh"), "{error}");
    let flood = text.replace(
        "name = \"outside-ssh\"            #",
        "name = \"lan-ping\" #",
    );
    let error = scenario::parse(Path::new("s.toml"), &flood)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("not a tcp_clients, udp_clients or ftp_clients source"),
        "{error}"
    );
    let typo = text.replace("success_ratio_max = 0.0", "success_ratio_maxx = 0.0");
    let error = scenario::parse(Path::new("s.toml"), &typo)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("s.toml:") && error.contains("success_ratio_maxx"),
        "{error}"
    );
    let ports = text.replace(
        "kind = \"tcp_clients\"\nname = \"mail\"",
        "kind = \"tcp_clients\"\nports = [0]\nname = \"mail\"",
    );
    assert!(ports != text);
    let error = scenario::parse(Path::new("s.toml"), &ports)
        .unwrap_err()
        .to_string();
    assert!(error.contains("ports must be 1 to 65535"), "{error}");
}
