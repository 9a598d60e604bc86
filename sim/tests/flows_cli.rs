//! `sim flows` end to end: the built binary on the scenario files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .output()
        .expect("run sim")
}

fn scenario(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "scenarios", "flows", name]
        .iter()
        .collect();
    path.to_string_lossy().into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write_temp(name: &str, text: &str) -> String {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("write temp file");
    path.to_string_lossy().into_owned()
}

#[test]
fn check_accepts_the_examples() {
    for name in ["doc-examples.flowmgr", "every-keyword.flowmgr"] {
        let output = sim(&["flows", "check", &scenario(name)]);
        assert!(output.status.success(), "{name}: {output:?}");
        assert!(stdout(&output).contains(": ok, "));
    }
}

#[test]
fn check_reports_every_error_and_exits_1() {
    let file = write_temp(
        "bad.flowmgr",
        "flow ssh allow\n  match proto tcp dstport 99999 src 10.0.0.0/40\nflow ssh\n",
    );
    let output = sim(&["flows", "check", &file]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "error[unknown_policy]",
        "error[port_out_of_range]",
        "error[bad_mask]",
        "error[duplicate_flow_name]",
        "bad.flowmgr:2:27",
        ": 4 errors",
    ] {
        assert!(stderr.contains(expected), "missing {expected} in\n{stderr}");
    }
}

#[test]
fn check_with_context_reports_undefined_directors_and_interfaces() {
    let file = scenario("every-keyword.flowmgr");
    let output = sim(&[
        "flows",
        "check",
        &file,
        "--iface",
        "eth0",
        "--director",
        "other=7",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error[unknown_interface]: unknown interface `eth1`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error[undefined_director]: director `web-farm`"),
        "{stderr}"
    );
    let output = sim(&[
        "flows",
        "check",
        &file,
        "--iface",
        "eth0",
        "--iface",
        "eth1",
        "--director",
        "web-farm=80",
    ]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn compile_prints_what_the_library_compiles() {
    let file = scenario("doc-examples.flowmgr");
    let source = std::fs::read_to_string(&file).expect("read");
    let table =
        datapath::flows::FlowTable::from_source(&source, &Default::default()).expect("valid");
    let iptables = sim(&["flows", "compile", &file, "--to", "iptables"]);
    assert_eq!(
        stdout(&iptables),
        datapath::flows::compile::iptables(&table, datapath::flows::Family::V4)
    );
    let nft = sim(&["flows", "compile", &file, "--to", "nft"]);
    assert_eq!(stdout(&nft), datapath::flows::compile::nft(&table));
    let rules = sim(&[
        "flows",
        "compile",
        &scenario("every-keyword.flowmgr"),
        "--to",
        "ip-rules",
    ]);
    assert_eq!(
        stdout(&rules),
        "ip rule add fwmark 0x10064 lookup 100\nip -6 rule add fwmark 0x10064 lookup 100\n"
    );
}

#[test]
fn eval_says_flow_policy_and_rule() {
    let output = sim(&[
        "flows",
        "eval",
        &scenario("doc-examples.flowmgr"),
        "--packet",
        "tcp 192.168.0.7:40000 > 192.168.0.1:22",
        "--packet",
        "tcp 198.51.100.1:40000 > 192.168.0.2:143",
        "--packet",
        "icmp 192.168.0.7 > 192.168.0.1 type 8",
        "--packet",
        "udp 198.51.100.1:1 > 192.168.0.9:53",
    ]);
    assert!(output.status.success(), "{output:?}");
    insta::assert_snapshot!(stdout(&output), @r"
    tcp 192.168.0.7:40000 > 192.168.0.1:22: flow ssh, rule 2, permit
    tcp 198.51.100.1:40000 > 192.168.0.2:143: flow mail, rule 2, director maildirect
    icmp 192.168.0.7 > 192.168.0.1 type 8: flow ping, rule 3, permit
    udp 198.51.100.1:1 > 192.168.0.9:53: flow alltherest, rule 1, deny
    ");
}

#[test]
fn eval_json_has_flow_policy_rule() {
    let output = sim(&[
        "flows",
        "eval",
        &scenario("every-keyword.flowmgr"),
        "--json",
        "--packet",
        "udp 10.9.9.9:1 > 10.9.9.8:2 iface eth0",
        "--packet",
        "tcp 198.51.100.9:4000 > 192.0.2.10:80 iface eth1",
        "--packet",
        "tcp [2001:db8::99]:4000 > [2001:db8::10]:443",
    ]);
    assert!(output.status.success(), "{output:?}");
    let objects: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[0]["flow"], serde_json::Value::Null);
    assert_eq!(objects[0]["rule"], serde_json::Value::Null);
    assert_eq!(objects[0]["policy"], "unclassified");
    assert_eq!(objects[1]["flow"], "web");
    assert_eq!(objects[1]["policy"], "director web-farm");
    assert_eq!(objects[1]["rule"], 1);
    assert_eq!(objects[1]["mark"], 1);
    assert_eq!(objects[2]["flow"], "web");
    assert_eq!(objects[2]["rule"], 2);
}

#[test]
fn eval_explain_shows_every_rule_tried() {
    let output = sim(&[
        "flows",
        "eval",
        &scenario("doc-examples.flowmgr"),
        "--explain",
        "--packet",
        "tcp 198.51.100.1:40000 > 192.168.0.2:25",
    ]);
    assert!(output.status.success(), "{output:?}");
    insta::assert_snapshot!(stdout(&output));
}

#[test]
fn eval_rejects_a_bad_packet() {
    let output = sim(&[
        "flows",
        "eval",
        &scenario("doc-examples.flowmgr"),
        "--packet",
        "tcp 1.2.3.4 -> 5.6.7.8",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("expected 'PROTO SRC[:PORT] > DST[:PORT]")
    );
}

#[test]
fn eval_with_an_appliance_names_each_packets_table_and_route() {
    let appliance = write_temp(
        "routes-appliance.toml",
        "[interfaces]\nlan = \"192.168.0.254/24\"\nwan = \"203.0.113.254/24\"\ndmz = \"10.0.9.254/24\"\n\n[[ip.table]]\nid = 100\nroute = [\n  { to = \"default\", via = \"10.0.9.1\" },\n  { to = \"203.0.113.53/32\", dev = \"wan\" },\n]\n",
    );
    let flows = scenario("policy-routing.flowmgr");
    let output = sim(&[
        "flows",
        "eval",
        &flows,
        "--appliance",
        &appliance,
        "--packet",
        "tcp 192.168.0.130:4000 > 203.0.113.80:80 iface lan",
        "--packet",
        "udp 192.168.0.130:4000 > 203.0.113.53:53 iface lan",
        "--packet",
        "tcp 192.168.0.10:4000 > 203.0.113.80:80 iface lan",
        "--packet",
        "tcp 192.168.0.10:4000 > 198.18.0.1:80 iface lan",
    ]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "tcp 192.168.0.130:4000 > 203.0.113.80:80 iface lan: flow quarantine, rule 1, table 100; route: table 100 #0 default via 10.0.9.1 dev dmz",
            "udp 192.168.0.130:4000 > 203.0.113.53:53 iface lan: flow quarantine, rule 1, table 100; route: table 100 #1 203.0.113.53 dev wan",
            "tcp 192.168.0.10:4000 > 203.0.113.80:80 iface lan: flow rest, rule 1, permit; route: table 254 #2 203.0.113.0/24 dev wan",
            "tcp 192.168.0.10:4000 > 198.18.0.1:80 iface lan: flow rest, rule 1, permit; route: no route",
        ]
    );
    let json = sim(&[
        "flows",
        "eval",
        &flows,
        "--appliance",
        &appliance,
        "--json",
        "--packet",
        "tcp 192.168.0.130:4000 > 203.0.113.80:80 iface lan",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["route"]["table"], 100);
    assert_eq!(value["route"]["via"], "10.0.9.1");
    assert_eq!(value["route"]["dev"], "dmz");
}
