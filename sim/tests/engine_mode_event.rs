//! The scenario event `kind = "mode"` forces the shield's SYN-cookie mode mid-run: a SYN
//! flood gets cookie SYN-ACKs only while cookies are forced on, and the switches show in the
//! report's mode timeline and event log.

use std::path::Path;

use sim::engine::Collect;
use sim::report::Report;
use sim::run::{RunOptions, run_scenario};

const MS: u64 = 1_000_000;

/// Cookies configured off (and the other automatic modes too, so only the events change
/// what the shield does); a 5k/s spoofed SYN flood on the protected VIP for one second.
const SCENARIO: &str = r#"
name = "mode-event"
seed = 11
duration = "1s"
queues = 1

[topology]
interfaces = ["outside", "inside"]
vips = ["192.0.2.10"]

[[topology.network]]
name = "internet"
prefix = "0.0.0.0/0"
iface = "outside"
link = { latency = "1ms" }

[[topology.backend]]
name = "web"
addr = "10.0.1.2"
also = ["192.0.2.10"]
iface = "inside"
tcp_ports = [80]
link = { latency = "100us" }

[appliance.shield]
syn_cookies = "off"
ttl_filter = "off"
surge = "off"
session_table_capacity = 65536

[[appliance.shield.context]]
dst = "192.0.2.10"
protected_tcp_ports = [80]

[[traffic]]
kind = "syn_flood"
name = "flood"
from = "internet"
rate = "5k/s"
src = "0.0.0.0/0"
dst = "192.0.2.10:80"
"#;

fn run(events: &str) -> Report {
    let text = format!("{SCENARIO}\n{events}");
    let loaded =
        sim::scenario::parse(Path::new("mode.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        threads: 1,
        collect: Collect::default(),
    };
    run_scenario(&loaded, options, &|_| {}).unwrap().report
}

fn event(at: &str, context: Option<&str>, setting: &str) -> String {
    let context = context.map_or(String::new(), |c| format!("context = \"{c}\"\n"));
    format!("[[events]]\nkind = \"mode\"\nat = \"{at}\"\n{context}syn_cookies = \"{setting}\"\n")
}

/// (cookies sent, mode timeline) of the VIP's context.
fn vip_context(report: &Report) -> (u64, Vec<(u64, u8)>) {
    let context = report
        .appliance
        .shield
        .iter()
        .find(|c| c.name == "shield/192.0.2.10")
        .expect("the VIP's shield context");
    let cookies = context.counters.get("cookies_sent").copied().unwrap_or(0);
    (cookies, context.modes.clone())
}

#[test]
fn forcing_cookies_on_and_off_mid_run_changes_the_shield() {
    let quiet = run("");
    let (cookies, modes) = vip_context(&quiet);
    assert_eq!((cookies, modes), (0, vec![]), "configured off: no cookies");

    let on_only = run(&event("300ms", Some("192.0.2.10"), "on"));
    let (cookies_on_only, modes) = vip_context(&on_only);
    assert_eq!(modes, [(300 * MS, 1)]);
    // SYNs of the last 700 ms of the flood at 5k/s, give or take the link's delay.
    assert!(
        (3_450..=3_501).contains(&cookies_on_only),
        "{cookies_on_only} cookies while forced on"
    );

    let events = event("300ms", Some("192.0.2.10"), "on")
        + &event("600ms", None, "on")
        + &event("600ms", Some("192.0.2.10"), "off");
    let switched = run(&events);
    let (cookies, modes) = vip_context(&switched);
    assert_eq!(modes, [(300 * MS, 1), (600 * MS, 0)]);
    assert!(
        (1_450..=1_501).contains(&cookies),
        "{cookies} cookies between 300 ms and 600 ms"
    );
    let default = switched
        .appliance
        .shield
        .iter()
        .find(|c| c.name == "shield/default")
        .expect("default context");
    assert_eq!(
        default.modes,
        [(600 * MS, 1)],
        "context absent: the default one"
    );
    let statuses: Vec<&str> = switched.events.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(
        statuses,
        [
            "applied to shield/192.0.2.10",
            "applied to shield/default",
            "applied to shield/192.0.2.10",
        ]
    );
}

#[test]
fn a_mode_event_for_an_unknown_context_is_refused_at_load() {
    // Checked when the scenario loads (located at the key), not left to fail mid-run.
    let text = format!("{SCENARIO}\n{}", event("100ms", Some("192.0.2.99"), "on"));
    let error = sim::scenario::parse(Path::new("mode.toml"), &text)
        .expect_err("an unknown context is refused")
        .to_string();
    assert!(
        error.contains("events[0].context: `192.0.2.99`: no shield context has that destination"),
        "{error}"
    );
    assert!(error.starts_with("mode.toml:"), "located: {error}");
}
