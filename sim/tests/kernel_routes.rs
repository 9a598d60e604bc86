//! The routing tables of `scenarios/policy-routing.toml` and the flowmgr `table` policy
//! through the host kernel: a namespace of this process gets the appliance's interfaces
//! (veth links with the `[interfaces]` addresses), the `ip route … table <id>` commands
//! of `sim::kernel::rules::routes` and the flowmgr compiler's `ip rule add fwmark …
//! lookup <id>` lines; then for packets from each LAN half to each destination, marked as
//! the flows mark them, `ip route get … iif lan mark …` (the forwarding lookup) must name
//! the table, gateway and interface the simulator's IP layer chose — or no route on both
//! sides.

mod kernel_support;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use datapath::flows::{FlowAction, compile};
use datapath::packet::{L3, PacketMeta, ip_proto};
use kernel_support::{kernel_tests_enabled, lock, own_namespaces};

/// The namespace, removed when dropped.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs");
    assert!(
        output.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// The kernel's forwarding route: (table, gateway, device), `None` when unreachable.
fn kernel_route(
    ns: &str,
    src: IpAddr,
    dst: IpAddr,
    mark: Option<u32>,
) -> Option<(u32, Option<IpAddr>, String)> {
    let (src, dst, mark) = (
        src.to_string(),
        dst.to_string(),
        mark.unwrap_or(0).to_string(),
    );
    let args = [
        "ip", "netns", "exec", ns, "ip", "-j", "-d", "route", "get", &dst, "from", &src, "iif",
        "lan", "mark", &mark,
    ];
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("ip runs");
    if !output.status.success() {
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains("unreachable"), "{dst}: {error}");
        return None;
    }
    let routes: serde_json::Value = serde_json::from_slice(&output.stdout).expect("ip -j");
    let route = &routes[0];
    let table = match route["table"].as_str() {
        None | Some("main") => 254,
        Some(id) => id.parse().expect("table id"),
    };
    let gateway = route["gateway"]
        .as_str()
        .map(|g| g.parse().expect("gateway"));
    Some((
        table,
        gateway,
        route["dev"].as_str().expect("dev").to_owned(),
    ))
}

#[test]
fn policy_routing_tables_agree_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _serial = lock();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/policy-routing.toml");
    let loaded = sim::scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = loaded
        .scenario
        .topology
        .interfaces
        .iter()
        .map(String::as_str)
        .collect();
    let pipeline =
        sim::appliance::build_pipeline(&loaded.scenario.appliance, &loaded.base_dir, 1, &names)
            .expect("builds");
    let flows = &pipeline.flows().expect("flows").table;
    let routing = pipeline.ip().expect("ip layer").routing().clone();
    let ip = sim::appliance::ip_config(&loaded.scenario.appliance, &names).expect("ip");

    let before = own_namespaces();
    let ns = Namespace(format!("lbsim-{}-routes", std::process::id()));
    run(&["ip", "netns", "add", &ns.0]);
    for (name, address) in &loaded.scenario.appliance.interfaces {
        let peer = format!("{name}-p");
        in_ns(
            &ns.0,
            &[
                "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
            ],
        );
        in_ns(
            &ns.0,
            &["ip", "addr", "add", &address.0.to_string(), "dev", name],
        );
        in_ns(&ns.0, &["ip", "link", "set", name, "up"]);
        in_ns(&ns.0, &["ip", "link", "set", &peer, "up"]);
    }
    for sysctl in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.lan.rp_filter=0",
    ] {
        in_ns(&ns.0, &["sysctl", "-qw", sysctl]);
    }
    let commands = sim::kernel::rules::routes::route_commands(&ip, &names);
    assert!(commands.len() >= 2, "{commands:?}");
    for command in &commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        in_ns(&ns.0, &args);
    }
    let rules = compile::ip_rules(flows);
    assert_eq!(rules.len(), 2, "{rules:?}");
    for rule in &rules {
        let args: Vec<&str> = rule.split_whitespace().collect();
        in_ns(&ns.0, &args);
    }

    let sources = ["192.168.0.10", "192.168.0.130"];
    let destinations = [
        "203.0.113.80",
        "203.0.113.53",
        "10.0.9.7",
        "192.168.0.20",
        "198.18.0.1",
    ];
    let mut table_routes = 0;
    for src in sources {
        for dst in destinations {
            let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let meta = PacketMeta {
                iface: 0,
                l3: L3::Ipv4,
                src: Some(src),
                dst: Some(dst),
                proto: Some(ip_proto::TCP),
                sport: Some(40000),
                dport: Some(80),
                ..PacketMeta::default()
            };
            let mark = match flows.classify(&meta).map(|v| v.action) {
                Some(FlowAction::Mark(mark)) => Some(mark),
                _ => None,
            };
            let ours = routing.lookup(dst, mark).map(|(used, route)| {
                let dev = names[usize::from(route.iface)].to_owned();
                (used.table, route.gateway, dev)
            });
            let kernel = kernel_route(&ns.0, src, dst, mark);
            assert_eq!(ours, kernel, "{src} > {dst} mark {mark:?}");
            if ours.as_ref().is_some_and(|r| r.0 != 254) {
                table_routes += 1;
            }
        }
    }
    // Table 100's default and host routes each decide some of the probes.
    assert!(table_routes >= 3, "{table_routes}");
    drop(ns);
    assert_eq!(own_namespaces(), before, "namespaces left behind");
}

/// A SYN (TCP) or a datagram (UDP) from `src` to `dst:port`.
fn probe(src: &str, dst: &str, port: u16, tcp: bool) -> Vec<u8> {
    let builder = datapath::packet::builder::PacketBuilder::eth()
        .ipv4(src.parse().expect("src"), dst.parse().expect("dst"));
    if tcp {
        builder.tcp(40_000, port).syn().build()
    } else {
        builder.udp(40_000, port).payload(b"probe").build()
    }
}

/// `sim diff` with the policy-routing appliance: the kernel runner installs table 100 and
/// the flows' fwmark rule in the LB namespace, and every packet the simulator routed by
/// table 100 leaves the kernel by the same route of table 100 (the next hop's MAC names
/// it) — the default route to the sinkhole or the update server's host route — while
/// unmarked packets are routed by neither table's routes on both sides.
#[test]
fn a_diff_compares_the_table_route_of_every_packet() {
    if !kernel_tests_enabled() {
        return;
    }
    let _serial = lock();
    let mut frames = Vec::new();
    for round in 0..4 {
        for src in ["192.168.0.10", "192.168.0.130", "192.168.0.200"] {
            frames.push(probe(src, "203.0.113.80", 80 + round, true));
            frames.push(probe(src, "203.0.113.53", 53, false));
            frames.push(probe(src, "10.0.9.7", 443, true));
        }
        frames.push(probe("192.168.0.140", "198.18.0.1", 80, true));
    }
    let pcap = kernel_support::write_pcap("policy-routing-diff.pcap", &frames);
    let appliance = kernel_support::data("policy-routing.toml");
    let input = sim::kernel::diff::DiffInput::captures(&appliance, &[pcap], 1, frames.len())
        .expect("input");
    let started = std::time::Instant::now();
    let report = sim::kernel::diff::run_input_on(
        &input,
        &[],
        std::time::Duration::from_micros(200),
        sim::kernel::backend_diff::BackendChoice::Host,
    )
    .expect("diff runs");
    let text = sim::kernel::diff::render(&report);
    eprintln!("diff in {:?}", started.elapsed());
    assert!(report.disagreements.is_empty(), "{text}");
    assert_eq!(report.totals(), (40, 40), "{text}");
    let table = &report.by_feature["routing table 100 (egress route)"];
    // 2 quarantined sources × 3 destinations × 4 rounds, and the 4 to 198.18.0.1.
    assert_eq!((table.compared, table.agreed), (28, 28), "{text}");
    assert!(
        report
            .features
            .iter()
            .any(|f| f.feature == "routing table 100" && f.compared),
        "{text}"
    );
}
