//! `sim replay`: summary snapshots of real captures, the per-packet record schema, and how a
//! damaged file is reported.

use std::path::PathBuf;
use std::process::Command;

use datapath::packet::ParseOptions;
use sim::cli::replay::{render_summary, replay_files};

/// Captures relative to the `sim/` package directory (the test's working directory).
fn real(name: &str) -> PathBuf {
    PathBuf::from("../pcaps/real").join(name)
}

fn summary_of(names: &[&str]) -> String {
    let files: Vec<PathBuf> = names.iter().map(|n| real(n)).collect();
    let outcome = replay_files::<Vec<u8>>(&files, &ParseOptions::default(), None, None, 5).unwrap();
    render_summary(&outcome.summary)
}

#[test]
fn summary_qinq_and_vlan() {
    insta::assert_snapshot!(summary_of(&[
        "zeek__q-in-q.pcap",
        "zeek__vlan-qinqinq.pcap"
    ]));
}

#[test]
fn summary_pcapng_multi_interface_with_bad_checksums() {
    insta::assert_snapshot!(summary_of(&["zeek__pcapng-multi-interface.pcapng"]));
}

#[test]
fn summary_fragments_and_ipv6() {
    insta::assert_snapshot!(summary_of(&[
        "zeek__fragmented-1.pcap",
        "zeek__ipv6-fragmented-dns.pcap"
    ]));
}

#[test]
fn summary_malformed_ipv4() {
    insta::assert_snapshot!(summary_of(&[
        "zeek__ip-bogus-header-len.pcap",
        "zeek__ip4-bad-chksum.pcap",
        "zeek__ipv4-truncated-broken-header.pcap",
        "tcpdump__ipv4_invalid_total_length.pcap",
        "zeek__syn-bad.pcap",
    ]));
}

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sim"))
}

#[test]
fn packets_jsonl_has_one_record_per_packet_with_the_documented_keys() {
    let out = std::env::temp_dir().join(format!("lbsim-replay-{}.jsonl", std::process::id()));
    let status = sim()
        .args(["replay", "--packets"])
        .arg(&out)
        .arg(real("zeek__icmp_dot1q.pcap"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!records.is_empty());
    let keys = [
        "index",
        "ts_ns",
        "vlan",
        "src",
        "dst",
        "proto",
        "sport",
        "dport",
        "tcp_flags",
        "icmp_type",
        "ttl",
        "invalid",
    ];
    for (i, record) in records.iter().enumerate() {
        for key in keys {
            assert!(
                record.get(key).is_some(),
                "record {i} lacks {key}: {record}"
            );
        }
        assert_eq!(record["index"], i as u64);
    }
    // The capture starts with ARP (no IP fields); the ICMP echoes follow.
    assert!(records[0]["src"].is_null() && records[0]["proto"].is_null());
    let first = records
        .iter()
        .find(|r| r["proto"] == "icmp")
        .expect("an ICMP packet");
    assert!(
        first["vlan"].as_array().is_some_and(|v| !v.is_empty()),
        "{first}"
    );
    assert!(first["icmp_type"].is_u64());
    std::fs::remove_file(&out).ok();
}

#[test]
fn json_summary_parses_and_counts_packets() {
    let output = sim()
        .args(["replay", "--json"])
        .arg(real("tcpdump__tcp-handshake-nano.pcap"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(summary["packets"].as_u64().unwrap() > 0);
    assert_eq!(summary["protocols"]["tcp"], summary["packets"]);
}

#[test]
fn a_damaged_capture_is_reported_with_file_packet_and_offset_after_counting_earlier_packets() {
    let original = std::fs::read(real("zeek__q-in-q.pcap")).unwrap();
    let cut = std::env::temp_dir().join(format!("lbsim-cut-{}.pcap", std::process::id()));
    std::fs::write(&cut, &original[..original.len() - 7]).unwrap();
    let output = sim().args(["replay", "--json"]).arg(&cut).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let packets = summary["packets"].as_u64().unwrap();
    assert!(packets > 0);
    assert!(
        stderr.contains(&format!("packet {packets} at byte offset")),
        "{stderr}"
    );
    assert!(stderr.contains("lbsim-cut-"), "{stderr}");
    std::fs::remove_file(&cut).ok();
}

#[test]
fn with_an_appliance_every_record_carries_the_pipeline_decision() {
    let dir = std::env::temp_dir().join(format!("lbsim-replay-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let appliance = dir.join("appliance.toml");
    std::fs::write(&appliance, "no_l4_checksum = false\n").unwrap();
    let records = dir.join("out.jsonl");
    let output = sim()
        .args(["replay", "--json", "--appliance"])
        .arg(&appliance)
        .arg("--packets")
        .arg(&records)
        .arg(real("zeek__pcapng-multi-interface.pcapng"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = summary["pipeline"].as_array().expect("pipeline rows");
    let total: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, summary["packets"].as_u64().unwrap());
    for line in std::fs::read_to_string(&records).unwrap().lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let verdict = record["verdict"].as_str().expect("verdict");
        match record["invalid"].as_str() {
            Some(reason) => {
                assert_eq!((record["stage"].as_str(), verdict), (Some("parse"), "drop"));
                assert_eq!(
                    record["reason"].as_str().unwrap(),
                    format!("invalid:{reason}")
                );
            }
            None => assert_eq!(verdict, "pass"),
        }
    }
    std::fs::write(&appliance, "[shields]\n").unwrap();
    let output = sim()
        .args(["replay", "--appliance"])
        .arg(&appliance)
        .arg(real("zeek__q-in-q.pcap"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("appliance.toml:1:2: unknown field `shields`"),
        "{stderr}"
    );
}

#[test]
fn real_syn_flood_through_the_game_appliance() {
    let appliance = sim::appliance::ApplianceConfig::load(std::path::Path::new(
        "../scenarios/appliances/game.toml",
    ))
    .unwrap();
    let mut pipeline = sim::appliance::build_pipeline(
        &appliance,
        std::path::Path::new("../scenarios/appliances"),
        7,
        &[],
    )
    .unwrap();
    // StopDDoS data is not bundled (usage grant, not BSD): read it from the shared corpus.
    let capture = PathBuf::from("../../shared/corpus/real/stopddos__pkt.TCP.synflood.spoofed.pcap");
    let outcome = replay_files::<Vec<u8>>(
        &[capture],
        &ParseOptions::default(),
        Some(&mut pipeline),
        None,
        3,
    )
    .unwrap();
    let summary = &outcome.summary;
    let rows = summary.pipeline.as_ref().unwrap();
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 25_000);
    // Every SYN is either answered with a cookie or forwarded (before the SYN rate switched
    // cookies on): nothing is dropped, nothing passes unbalanced.
    assert!(
        rows.iter()
            .all(|r| r.verdict == "reply" || r.stage.name() == "director"),
        "{rows:?}"
    );
    insta::assert_snapshot!(render_summary(summary));
}

#[test]
fn flows_eval_reads_a_capture() {
    let output = sim()
        .args([
            "flows",
            "eval",
            "../scenarios/flows/doc-examples.flowmgr",
            "--json",
            "--pcap",
        ])
        .arg(real("zeek__icmp_dot1q.pcap"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 15, "one answer per packet");
    let arp = &lines[0];
    assert_eq!(
        (arp["policy"].as_str(), arp["flow"].is_null()),
        (Some("unclassified"), true)
    );
    let echo = lines
        .iter()
        .find(|l| l["packet"].as_str().unwrap().contains("icmp"))
        .unwrap();
    // Not 192.168.0.1 (ping flow), so only the catch-all claims it.
    assert_eq!(
        (
            echo["flow"].as_str(),
            echo["policy"].as_str(),
            echo["rule"].as_u64()
        ),
        (Some("alltherest"), Some("deny"), Some(1))
    );
}
