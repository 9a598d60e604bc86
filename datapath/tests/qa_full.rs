//! The QA option "a table reports full after N packets" ([`Pipeline::report_full_after`]):
//! for every bounded table, the first N packets behave normally, and the next packet that
//! needs a new entry meets the table's documented overflow policy and its counter, exactly as
//! at capacity. Entries made before keep working.

use std::net::Ipv4Addr;

use datapath::director::config::DirectorConfig;
use datapath::director::{DirectorOptions, Directors};
use datapath::nat::conntrack::ConnTrack;
use datapath::nat::{Nat, NatAction, NatMatch, NatOutcome, NatRule};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::flow::FlowKey;
use datapath::packet::{InvalidReason, LinkType, checksum, parse};
use datapath::pipeline::{PacketOutcome, Pipeline, QaTable};
use datapath::shield::ShieldConfig;
use datapath::{DropReason, Verdict};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VIP2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

fn client(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, n)
}

fn directors(text: &str) -> Directors {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(text).unwrap();
    Directors::build(&file.director, DirectorOptions::default()).unwrap()
}

fn send(pipeline: &mut Pipeline, at: u64, frame: Vec<u8>) -> PacketOutcome {
    let len = frame.len() as u32;
    pipeline.process(at * 1_000_000, 0, LinkType::Ethernet, frame, len)
}

fn syn(source: Ipv4Addr, port: u16, destination: Ipv4Addr) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(source, destination)
        .tcp(port, 80)
        .syn()
        .build()
}

fn ack(source: Ipv4Addr, port: u16, destination: Ipv4Addr) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(source, destination)
        .tcp(port, 80)
        .flags(datapath::packet::tcp_flags::ACK)
        .build()
}

const WEB_RR: &str = r#"
[[director]]
name = "web"
vip = "192.0.2.10"
port = 80
proto = "tcp"
scheduler = "rr"
forward = "nat"
real = [{ addr = "10.0.1.2:80", weight = 1 }, { addr = "10.0.1.3:80", weight = 1 }]
"#;

#[test]
fn connections_full_after_three_packets_drops_new_connections_only() {
    let mut pipeline = Pipeline::default().with_directors(directors(WEB_RR));
    pipeline.report_full_after(QaTable::Connections, 3);
    for n in 1..=3 {
        assert_eq!(
            send(&mut pipeline, n.into(), syn(client(n), 1000, VIP)).verdict,
            Verdict::Forward
        );
    }
    let refused = send(&mut pipeline, 4, syn(client(4), 1000, VIP));
    assert_eq!(refused.verdict, Verdict::Drop(DropReason::ConnTableFull));
    let existing = send(&mut pipeline, 5, ack(client(1), 1000, VIP));
    assert_eq!(existing.verdict, Verdict::Forward);
    let directors = pipeline.directors().unwrap();
    assert_eq!(directors.table().counters.connection_overflows, 1);
    assert_eq!(directors.counters.table_full, 1);
    assert_eq!(directors.table().connection_count, 3);
    assert_eq!(
        pipeline.report_full_settings(),
        vec![(QaTable::Connections, 3, true)]
    );
}

#[test]
fn persistence_full_after_two_packets_refuses_new_templates() {
    let text = WEB_RR.replace(
        "scheduler = \"rr\"",
        "scheduler = \"rr\"\npersistence = \"60s\"",
    );
    let mut pipeline = Pipeline::default().with_directors(directors(&text));
    pipeline.report_full_after(QaTable::Persistence, 2);
    for n in 1..=2 {
        assert_eq!(
            send(&mut pipeline, n.into(), syn(client(n), 1000, VIP)).verdict,
            Verdict::Forward
        );
    }
    // A new client needs a new template: refused. A known client's new connection reuses
    // its template and is forwarded.
    let refused = send(&mut pipeline, 3, syn(client(3), 1000, VIP));
    assert_eq!(refused.verdict, Verdict::Drop(DropReason::ConnTableFull));
    let reused = send(&mut pipeline, 4, syn(client(1), 2000, VIP));
    assert_eq!(reused.verdict, Verdict::Forward);
    let table = pipeline.directors().unwrap().table();
    assert_eq!(table.counters.template_overflows, 1);
    assert_eq!(table.counters.connection_overflows, 0);
    assert_eq!((table.template_count, table.connection_count), (2, 3));
}

#[test]
fn lblc_cache_full_after_one_packet_still_schedules_but_does_not_cache() {
    let text = r#"
[[director]]
name = "a"
vip = "192.0.2.10"
port = 80
proto = "tcp"
scheduler = "lblc"
forward = "nat"
real = [{ addr = "10.0.1.2:80", weight = 1 }]
[[director]]
name = "b"
vip = "192.0.2.11"
port = 80
proto = "tcp"
scheduler = "lblcr"
forward = "nat"
real = [{ addr = "10.0.1.3:80", weight = 1 }]
"#;
    let mut pipeline = Pipeline::default().with_directors(directors(text));
    pipeline.report_full_after(QaTable::LocalityCache, 1);
    assert_eq!(
        send(&mut pipeline, 1, syn(client(1), 1000, VIP)).verdict,
        Verdict::Forward
    );
    let uncached = send(&mut pipeline, 2, syn(client(2), 1000, VIP2));
    assert_eq!(uncached.verdict, Verdict::Forward);
    let cached = send(&mut pipeline, 3, syn(client(3), 1000, VIP));
    assert_eq!(cached.verdict, Verdict::Forward);
    let directors = pipeline.directors().unwrap();
    assert_eq!(directors.locality_cache_overflows(), 1);
    assert_eq!(directors.locality_cache_entries(), 1);
}

/// A UDP datagram's fragment: `offset` in 8-byte units, `more` fragments flag.
fn fragment(id: u16, offset: u16, more: bool) -> Vec<u8> {
    let mut frame = PacketBuilder::eth()
        .ipv4(client(1), VIP)
        .ip_id(id)
        .udp(1000, 53)
        .payload(&[0; 16])
        .build();
    let ip = &mut frame[14..34];
    let flags_offset = offset | if more { 0x2000 } else { 0 };
    ip[6..8].copy_from_slice(&flags_offset.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum::field_bytes(checksum::partial(ip));
    ip[10..12].copy_from_slice(&sum);
    frame
}

#[test]
fn fragments_full_after_one_packet_leave_new_datagrams_unchecked() {
    let mut pipeline = Pipeline::default();
    pipeline.report_full_after(QaTable::Fragments, 1);
    assert_eq!(
        send(&mut pipeline, 1, fragment(1, 0, true)).verdict,
        Verdict::Pass
    );
    // The tracked datagram still has its overlap detected…
    let overlap = send(&mut pipeline, 2, fragment(1, 1, true));
    let invalid = DropReason::Invalid(InvalidReason::FragmentOverlap);
    assert_eq!(overlap.verdict, Verdict::Drop(invalid));
    // …a new one is not tracked: its overlap passes unchecked, counted untracked.
    assert_eq!(
        send(&mut pipeline, 3, fragment(2, 0, true)).verdict,
        Verdict::Pass
    );
    assert_eq!(
        send(&mut pipeline, 4, fragment(2, 1, true)).verdict,
        Verdict::Pass
    );
    let counters = pipeline.counters().fragments;
    assert_eq!((counters.overlaps, counters.untracked), (1, 2));
}

fn shield(extra: &str) -> datapath::shield::Shield {
    let text = format!("{extra}\n[[context]]\ndst = \"192.0.2.10\"\nprotected_tcp_ports = [80]\n");
    let config: ShieldConfig = toml::from_str(&text).unwrap();
    datapath::shield::build(&config, 3, &[]).unwrap()
}

#[test]
fn known_sessions_full_after_two_packets_refuse_new_half_open_sessions() {
    let mut pipeline = Pipeline::default().with_shield(shield("syn_cookies = \"off\""));
    pipeline.report_full_after(QaTable::KnownSessions, 2);
    for n in 1..=2 {
        assert_eq!(
            send(&mut pipeline, n.into(), syn(client(n), 1000, VIP)).verdict,
            Verdict::Pass
        );
    }
    let refused = send(&mut pipeline, 3, syn(client(3), 1000, VIP));
    assert_eq!(refused.verdict, Verdict::Drop(DropReason::TableFull));
    let known = send(&mut pipeline, 4, ack(client(1), 1000, VIP));
    assert_eq!(known.verdict, Verdict::Pass);
    let stats = pipeline.shield().unwrap().table_stats();
    assert_eq!((stats.sessions, stats.sessions_refused), (2, 1));
}

#[test]
fn source_rates_full_after_two_packets_stop_measuring_new_sources() {
    let settings = "syn_cookies = \"off\"\nsurge = \"on\"\n[thresholds]\nsource_syn_rate_max = 1";
    let mut pipeline = Pipeline::default().with_shield(shield(settings));
    pipeline.report_full_after(QaTable::SourceRates, 2);
    // Client 1 is measured: its second SYN in the window surges.
    assert_eq!(
        send(&mut pipeline, 1, syn(client(1), 1000, VIP)).verdict,
        Verdict::Pass
    );
    let surging = send(&mut pipeline, 2, syn(client(1), 1001, VIP));
    assert_eq!(surging.verdict, Verdict::Drop(DropReason::Rate));
    // Client 2 arrives with the table full: not kept, so never over the limit.
    for port in 1000..1003 {
        let outcome = send(&mut pipeline, 3, syn(client(2), port, VIP));
        assert_eq!(outcome.verdict, Verdict::Pass);
    }
    assert_eq!(
        send(&mut pipeline, 4, syn(client(1), 1002, VIP)).verdict,
        Verdict::Drop(DropReason::Rate)
    );
    let stats = pipeline.shield().unwrap().table_stats();
    assert_eq!((stats.sources, stats.sources_evicted), (1, 3));
}

#[test]
fn conntrack_reporting_full_refuses_new_flows_and_keeps_tracked_ones() {
    let rule = NatRule {
        matcher: NatMatch::default(),
        action: NatAction::Snat {
            address: Ipv4Addr::new(10, 9, 9, 9).into(),
            ports: None,
        },
    };
    let mut nat = Nat::new(vec![rule], Vec::new(), ConnTrack::new(16));
    let mut first = PacketBuilder::eth()
        .ipv4(client(1), VIP)
        .udp(1000, 53)
        .build();
    let meta = parse(LinkType::Ethernet, &first.clone(), first.len() as u32, 0);
    assert!(matches!(
        nat.postrouting(1, &mut first, &meta),
        Ok(NatOutcome::Translated(_))
    ));
    nat.conntrack.set_report_full(true);
    let mut second = PacketBuilder::eth()
        .ipv4(client(2), VIP)
        .udp(1000, 53)
        .build();
    let meta2 = parse(LinkType::Ethernet, &second.clone(), second.len() as u32, 0);
    assert_eq!(
        nat.postrouting(2, &mut second, &meta2),
        Ok(NatOutcome::TableFull)
    );
    let mut again = PacketBuilder::eth()
        .ipv4(client(1), VIP)
        .udp(1000, 53)
        .build();
    assert!(matches!(
        nat.postrouting(3, &mut again, &meta),
        Ok(NatOutcome::Translated(FlowKey { .. }))
    ));
    assert_eq!(
        (nat.conntrack.counters.overflows, nat.conntrack.len()),
        (1, 1)
    );
}

#[test]
fn conntrack_reports_full_after_n_packets_through_the_pipeline_nat_stage() {
    let rule = NatRule {
        matcher: NatMatch::default(),
        action: NatAction::Snat {
            address: Ipv4Addr::new(10, 9, 9, 9).into(),
            ports: None,
        },
    };
    let nat = Nat::new(vec![rule], Vec::new(), ConnTrack::new(16));
    let mut pipeline = Pipeline::default().with_nat(nat);
    pipeline.report_full_after(QaTable::Conntrack, 2);
    // Packets 1 and 2 open connections; from the third packet on the table is full.
    for n in 1..=2 {
        let outcome = send(&mut pipeline, u64::from(n), syn(client(n), 1000, VIP));
        assert_ne!(outcome.verdict, Verdict::Drop(DropReason::TableFull), "{n}");
    }
    let refused = send(&mut pipeline, 3, syn(client(3), 1000, VIP));
    assert_eq!(refused.verdict, Verdict::Drop(DropReason::TableFull));
    // A tracked connection keeps working.
    let again = send(&mut pipeline, 4, ack(client(1), 1000, VIP));
    assert_ne!(again.verdict, Verdict::Drop(DropReason::TableFull));
    let conntrack = &pipeline.nat().unwrap().conntrack;
    assert_eq!((conntrack.len(), conntrack.counters.overflows), (2, 1));
    assert_eq!(
        pipeline.report_full_settings(),
        vec![(QaTable::Conntrack, 2, true)]
    );
}
