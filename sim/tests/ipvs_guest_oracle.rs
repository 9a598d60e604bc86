//! lbsim's director against a real IPVS (the guest kernel, Linux 6.1), per connection, on
//! hand-written cases: wrr's first pass after reals are added one by one, a refused
//! non-persistent port-0 service, NAT handshakes and closes counted by lc, persistence;
//! and the lblc / lblcr golden vectors (`datapath/tests/vectors/locality.toml`) replayed
//! against the real IPVS: each vector's expected servers must be the kernel's.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use sim::kernel::guest::oracle::{Case, Change, Conn, Edit, Event, Kind, MarkRule};
use sim::kernel::guest::oracle_compare::{Verdict, check_cases, render_case};
use sim::kernel::guest::{self};

fn sim_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sim"))
}

fn conn(client: &str, vip: &str) -> Conn {
    Conn {
        proto: 6,
        client: client.parse::<SocketAddr>().unwrap(),
        vip: vip.parse().unwrap(),
    }
}

fn ev(conn: usize, from_client: bool, kind: Kind) -> Event {
    Event {
        conn,
        from_client,
        kind,
    }
}

fn assert_agree(cases: &[Case], verdicts: &[Verdict]) {
    let mut failures = String::new();
    for (case, verdict) in cases.iter().zip(verdicts) {
        if !verdict.differences.is_empty() {
            failures.push_str(&format!(
                "{}\n{}\n\n",
                render_case(case),
                verdict.differences.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "lbsim and the kernel disagree:\n{failures}"
    );
}

fn wrr_case() -> Case {
    let conns: Vec<Conn> = (0..9)
        .map(|i| conn(&format!("198.18.0.{}:4000", i + 1), "10.200.0.1:80"))
        .collect();
    Case {
        appliance: r#"
[[director]]
name = "web"
vip = "10.200.0.1"
port = 80
scheduler = "wrr"
real = [{ addr = "10.100.0.1:80", weight = 4 }, { addr = "10.100.0.2:80", weight = 3 },
        { addr = "10.100.0.3:80", weight = 2 }]
"#
        .into(),
        marks: vec![],
        edits: vec![],
        events: (0..conns.len()).map(|i| ev(i, true, Kind::Syn)).collect(),
        conns,
    }
}

fn lc_handshake_case() -> Case {
    let conns: Vec<Conn> = (0..6)
        .map(|i| conn(&format!("198.18.1.{}:5000", i + 1), "10.200.0.2:443"))
        .collect();
    let mut events = Vec::new();
    for i in 0..6 {
        events.push(ev(i, true, Kind::Syn));
        events.push(ev(i, false, Kind::SynAck));
        events.push(ev(i, true, Kind::Data));
        if i % 3 == 0 {
            events.push(ev(i, true, Kind::Fin));
            events.push(ev(i, false, Kind::Fin));
        } else if i % 3 == 1 {
            events.push(ev(i, true, Kind::Rst));
        }
    }
    Case {
        appliance: r#"
[[director]]
name = "tls"
vip = "10.200.0.2"
port = 443
scheduler = "lc"
real = [{ addr = "10.100.0.1:8443" }, { addr = "10.100.0.2:8443" }, { addr = "10.100.0.3:8443" }]
"#
        .into(),
        marks: vec![],
        edits: vec![],
        conns,
        events,
    }
}

fn port_zero_case() -> Case {
    Case {
        appliance: r#"
[[director]]
name = "any"
vip = "10.200.0.3"
port = 0
scheduler = "rr"
real = [{ addr = "10.100.0.1" }]
"#
        .into(),
        marks: vec![],
        edits: vec![],
        conns: vec![conn("198.18.2.1:4000", "10.200.0.3:80")],
        events: vec![ev(0, true, Kind::Syn)],
    }
}

#[test]
fn hand_written_cases_agree_with_the_guest_ipvs() {
    let Some(guest) = guest::guest_for_test("hand_written_cases_agree_with_the_guest_ipvs") else {
        return;
    };
    let cases = vec![wrr_case(), lc_handshake_case(), port_zero_case()];
    let verdicts = check_cases(&guest, sim_binary(), &cases).expect("guest run");
    assert_agree(&cases, &verdicts);
}

#[derive(Deserialize)]
struct Localities {
    case: Vec<LocalityCase>,
}

#[derive(Deserialize)]
struct LocalityCase {
    name: String,
    scheduler: String,
    /// Names and weights in kernel list order.
    servers: Vec<(String, i32)>,
    #[allow(dead_code)]
    how: String,
    steps: String,
}

/// A locality vector as an oracle case (fwmark 1 on TCP to 10.201.0.0/24, servers
/// 10.100.0.N:8080 added last first), and per connection token the index of its SYN.
fn locality_case(vector: &LocalityCase) -> (Case, Vec<usize>) {
    let count = vector.servers.len();
    let reals: Vec<String> = (0..count)
        .rev()
        .map(|i| {
            format!(
                "{{ addr = \"10.100.0.{}:8080\", weight = {}, forward = \"nat\" }}",
                i + 1,
                vector.servers[i].1
            )
        })
        .collect();
    let appliance = format!(
        "[[director]]\nname = \"cache\"\nfwmark = 1\nscheduler = \"{}\"\nreal = [{}]\n",
        vector.scheduler,
        reals.join(", ")
    );
    // The appliance's real list is reversed: list position i is real `count - 1 - i`.
    let real = |name: &str| {
        let i = vector.servers.iter().position(|(n, _)| n == name);
        count - 1 - i.expect("server name")
    };
    let (mut conns, mut events, mut edits, mut syns) = (vec![], vec![], vec![], vec![]);
    for step in vector.steps.split_whitespace() {
        let parts: Vec<&str> = step.split(':').collect();
        let change = match parts[..] {
            ["w", name, weight] => Change::Weight {
                real: real(name),
                weight: weight.parse().unwrap(),
            },
            ["del", name] => Change::Delete { real: real(name) },
            ["add", name] => Change::Add { real: real(name) },
            ["rst", k] => {
                events.push(ev(k.parse::<usize>().unwrap() - 1, true, Kind::Rst));
                continue;
            }
            _ => {
                let (n, expected) = step.split_once('>').expect("N>S token");
                let index = conns.len();
                conns.push(conn(
                    &format!("198.18.0.{}:4000", index + 1),
                    &format!("10.201.0.{n}:80"),
                ));
                syns.push(events.len());
                events.push(ev(index, true, Kind::Syn));
                if expected.ends_with('+') {
                    events.push(ev(index, false, Kind::SynAck));
                    events.push(ev(index, true, Kind::Data));
                }
                continue;
            }
        };
        edits.push(Edit {
            before: events.len(),
            director: 0,
            change,
        });
    }
    let marks = vec![MarkRule {
        proto: "tcp".into(),
        network: "10.201.0.0/24".into(),
        mark: 1,
    }];
    let case = Case {
        appliance,
        marks,
        conns,
        events,
        edits,
    };
    (case, syns)
}

/// The vector's steps with each connection token's server as the kernel forwarded it.
fn kernel_steps(
    vector: &LocalityCase,
    record: &sim::kernel::guest::oracle::CaseRecord,
    syns: &[usize],
) -> String {
    let mut next = syns.iter();
    let steps = vector.steps.split_whitespace().map(|step| {
        let Some((n, expected)) = step.split_once('>') else {
            return step.to_string();
        };
        let forwarded = next
            .next()
            .and_then(|&i| record.packets.get(i))
            .and_then(|p| p.forwarded.first());
        // "tcp 198.18.0.1:4000 > 10.100.0.2:8080 flags 0x02 len 40"
        let server = forwarded.map_or("-".to_string(), |text| {
            let to = text.split(" > ").nth(1).and_then(|r| r.split(' ').next());
            let host = to.and_then(|t| t.parse::<SocketAddr>().ok());
            let name = host.and_then(|h| match h.ip() {
                std::net::IpAddr::V4(v4) => vector.servers.get(v4.octets()[3] as usize - 1),
                _ => None,
            });
            name.map_or(format!("?({text})"), |(n, _)| n.clone())
        });
        let plus = if expected.ends_with('+') { "+" } else { "" };
        format!("{n}>{server}{plus}")
    });
    steps.collect::<Vec<_>>().join(" ")
}

/// The lblc / lblcr golden vectors against Linux 6.1's IPVS: each connection goes to the
/// server the vector names, and lbsim agrees with the kernel packet by packet and on the
/// final tables.
#[test]
fn locality_vectors_agree_with_the_guest_ipvs() {
    let Some(guest) = guest::guest_for_test("locality_vectors_agree_with_the_guest_ipvs") else {
        return;
    };
    let text = include_str!("../../datapath/tests/vectors/locality.toml");
    let vectors: Localities = toml::from_str(text).expect("locality.toml parses");
    let built: Vec<(Case, Vec<usize>)> = vectors.case.iter().map(locality_case).collect();
    let cases: Vec<Case> = built.iter().map(|(c, _)| c.clone()).collect();
    let verdicts = check_cases(&guest, sim_binary(), &cases).expect("guest run");
    let mut wrong = String::new();
    for ((vector, (_, syns)), verdict) in vectors.case.iter().zip(&built).zip(&verdicts) {
        let kernel = kernel_steps(vector, &verdict.kernel, syns);
        if kernel != vector.steps {
            wrong.push_str(&format!(
                "{}\n  vector {}\n  kernel {kernel}\n",
                vector.name, vector.steps
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "locality vectors the kernel disagrees with:\n{wrong}"
    );
    assert_agree(&cases, &verdicts);
}
