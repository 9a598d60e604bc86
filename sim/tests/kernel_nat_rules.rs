//! The nft `nat` table compiled from an appliance's `[[nat]]` rules, as a snapshot (what
//! `sim kernel rules --appliance` prints; no root needed), and the pipeline's own
//! translation of a port forward (DNAT) end to end, without the kernel.

use std::net::Ipv4Addr;
use std::path::Path;

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, parse};
use datapath::verdict::{Stage, Verdict};

fn appliance(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kernel")
        .join(name)
}

#[test]
fn nat_rules_compile_to_an_nft_nat_table() {
    let rules = sim::kernel::rules_for(&appliance("nat-rules.toml")).expect("rules compile");
    insta::assert_snapshot!(format!(
        "## nat\n{}\n## features\n{}",
        rules.nat_nft,
        rules.render_features()
    ));
}

#[test]
fn a_port_forward_rewrites_the_request_and_un_nats_the_reply() {
    let path = appliance("nat-rules.toml");
    let config = sim::appliance::ApplianceConfig::load(&path).expect("appliance");
    let mut pipeline =
        sim::appliance::build_pipeline(&config, path.parent().unwrap(), 1, &[]).expect("builds");
    let client = Ipv4Addr::new(100, 64, 0, 7);
    let request = PacketBuilder::eth()
        .ipv4(client, Ipv4Addr::new(192, 0, 2, 30))
        .tcp(40_000, 80)
        .syn()
        .build();
    let outcome = pipeline.process(0, 0, LinkType::Ethernet, request.clone(), 60);
    assert_eq!(
        (outcome.stage, outcome.verdict),
        (Stage::Nat, Verdict::Forward)
    );
    let sent = pipeline.take_emitted().remove(0).frame;
    let meta = parse(LinkType::Ethernet, &sent, sent.len() as u32, 0);
    assert_eq!(meta.invalid, None);
    assert_eq!(
        (meta.src, meta.sport, meta.dst, meta.dport),
        (
            Some(client.into()),
            Some(40_000),
            Some(Ipv4Addr::new(10, 0, 3, 4).into()),
            Some(8080)
        )
    );
    let reply = PacketBuilder::eth()
        .ipv4(Ipv4Addr::new(10, 0, 3, 4), client)
        .tcp(8080, 40_000)
        .syn_ack()
        .build();
    let outcome = pipeline.process(1, 1, LinkType::Ethernet, reply, 60);
    assert_eq!(
        (outcome.stage, outcome.verdict),
        (Stage::Nat, Verdict::Forward)
    );
    let back = pipeline.take_emitted().remove(0).frame;
    let meta = parse(LinkType::Ethernet, &back, back.len() as u32, 0);
    assert_eq!(meta.invalid, None);
    assert_eq!(
        (meta.src, meta.sport),
        (Some(Ipv4Addr::new(192, 0, 2, 30).into()), Some(80))
    );
    let report = sim::appliance::report(&pipeline);
    let nat = report.nat.expect("nat report");
    assert_eq!(nat.rules[0], ("rule 1 (dnat)".to_string(), 1));
}
