//! lbsim's director against a real IPVS (the guest kernel, Linux 6.1), per connection, on
//! hand-written cases: wrr's first pass after reals are added one by one, a refused
//! non-persistent port-0 service, NAT handshakes and closes counted by lc, persistence.

use std::net::SocketAddr;
use std::path::Path;

use sim::kernel::guest::oracle::{Case, Conn, Event, Kind};
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
