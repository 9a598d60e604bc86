//! Unit tests of the appliance report: table capacities, ipvsadm words, mode names.

use std::path::{Path, PathBuf};

use super::*;
use crate::appliance::{ApplianceConfig, build_pipeline};

const QA_APPLIANCE: &str = r#"
[qa]
full_after = { connections = 2, known_sessions = 100 }

[[director]]
name = "web"
vip = "192.0.2.10"
port = 80
proto = "tcp"
scheduler = "rr"
forward = "nat"
real = [{ addr = "10.0.1.2:80", weight = 1 }]
"#;

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lbsim-appliance-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn qa_full_after_makes_the_table_overflow_and_the_report_shows_it() {
    use datapath::packet::LinkType;
    use datapath::packet::builder::PacketBuilder;
    let path = write_temp("qa.toml", QA_APPLIANCE);
    let config = ApplianceConfig::load(&path).unwrap();
    let mut pipeline = build_pipeline(&config, Path::new("."), 1, &[]).unwrap();
    for client in 1..=3u8 {
        let frame = PacketBuilder::eth()
            .ipv4([198, 51, 100, client].into(), [192, 0, 2, 10].into())
            .tcp(1000, 80)
            .syn()
            .build();
        let len = frame.len() as u32;
        pipeline.process(u64::from(client), 0, LinkType::Ethernet, frame, len);
    }
    let report = report(&pipeline);
    let notable: Vec<&TableReport> = report.tables.iter().filter(|t| t.notable()).collect();
    let row = notable[0];
    assert_eq!(
        (
            row.name.as_ref(),
            row.entries,
            row.overflows,
            row.full_after
        ),
        ("connections", Some(2), 1, Some(2))
    );
    let text = render_report(&report);
    assert!(
        text.contains("connections             2/1048576           1  drop new (conn_table_full) [qa: full after 2 packets]"),
        "{text}"
    );
    // The shield table is not configured: its setting is ignored, not reported.
    assert_eq!(notable.len(), 1);
    assert!(report.tables.iter().all(|t| t.name != "known_sessions"));
}

const QA_EVERY_TABLE: &str = r#"
[qa]
full_after = { connections = 6, persistence = 5, lblc_cache = 0, fragments = 0, known_sessions = 2, source_rates = 0 }

[shield]
syn_cookies = "off"
surge = "on"
[[shield.context]]
dst = "192.0.2.10"
protected_tcp_ports = [80]

[[director]]
name = "web"
vip = "192.0.2.20"
port = 80
proto = "tcp"
scheduler = "lblc"
persistence = "60s"
forward = "nat"
real = [{ addr = "10.0.1.2:80", weight = 1 }]
"#;

/// Every table of `[qa] full_after` overflows in one run, and the report lists each
/// with its policy, counter and setting.
#[test]
fn every_qa_table_shows_in_the_report() {
    use datapath::packet::LinkType;
    use datapath::packet::builder::PacketBuilder;
    let path = write_temp("qa-every.toml", QA_EVERY_TABLE);
    let config = ApplianceConfig::load(&path).unwrap();
    let mut pipeline = build_pipeline(&config, Path::new("."), 1, &[]).unwrap();
    let mut fragment = PacketBuilder::eth()
        .ipv4([198, 51, 100, 9].into(), [192, 0, 2, 99].into())
        .udp(1000, 53)
        .build();
    fragment[20] = 0x20; // more fragments
    fragment[24..26].fill(0);
    let sum = datapath::packet::checksum::field_bytes(datapath::packet::checksum::partial(
        &fragment[14..34],
    ));
    fragment[24..26].copy_from_slice(&sum);
    let syn = |client: u8, port: u16, vip: u8| {
        PacketBuilder::eth()
            .ipv4([198, 51, 100, client].into(), [192, 0, 2, vip].into())
            .tcp(port, 80)
            .syn()
            .build()
    };
    // Packets 2-4 to the protected VIP (.10): one session, then the table is full.
    // Packets 5-7 to the director's VIP (.20): a connection and its template (not
    // cached: lblc full), a new client (template table full), a new connection of the
    // first client (connection table full).
    let frames = vec![
        fragment,
        syn(1, 1000, 10),
        syn(2, 1000, 10),
        syn(3, 1000, 10),
        syn(1, 1000, 20),
        syn(2, 1000, 20),
        syn(1, 2000, 20),
    ];
    for (index, frame) in frames.into_iter().enumerate() {
        let len = frame.len() as u32;
        pipeline.process(index as u64, 0, LinkType::Ethernet, frame, len);
    }
    let report = report(&pipeline);
    let rows: Vec<_> = report
        .tables
        .iter()
        .filter(|t| t.notable())
        .map(|t| (t.name.as_ref(), t.overflows, t.full_after))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("connections", 1, Some(6)),
            ("persistence", 1, Some(5)),
            ("lblc_cache", 1, Some(0)),
            ("fragments", 1, Some(0)),
            ("known_sessions", 2, Some(2)),
            ("source_rates", 3, Some(0)),
        ],
        "{}",
        render_report(&report)
    );
}

/// The persistence words match ipvsadm -L -n's (print_service_entry).
#[test]
fn persistent_words_follow_ipvsadm() {
    let minute = 60_000_000_000;
    assert_eq!(persistent_words(minute, 32, false), "persistent 60");
    assert_eq!(
        persistent_words(minute, 24, false),
        "persistent 60 mask 255.255.255.0"
    );
    assert_eq!(
        persistent_words(300 * 1_000_000_000, 0, false),
        "persistent 300 mask 0.0.0.0"
    );
    assert_eq!(persistent_words(minute, 128, true), "persistent 60");
    assert_eq!(persistent_words(minute, 64, true), "persistent 60 mask 64");
}
