//! A split pipeline (per-queue half + shared stages, `process_local` then `resume` right
//! away) decides exactly as `process` does with the IP layer configured: the IP layer's
//! fixture frames (martians, TTL / hop limit, MTU, fragment sets) give the same outcomes
//! and the same emitted frames (forwarded, refragmented, ICMP errors) byte for byte, with
//! a director (the IP layer runs on the queue's side, before the deferral) and with NAT
//! (every packet deferred before the shield: the IP layer runs in `resume`).

use std::collections::BTreeMap;

use datapath::director::config::DirectorConfig;
use datapath::director::{DirectorOptions, Directors};
use datapath::ip::fixtures::{FIXTURE_MTU, cases};
use datapath::ip::{IpConfig, IpLayer};
use datapath::packet::LinkType;
use datapath::pipeline::{Local, PacketOutcome, Pipeline};

fn directors() -> Directors {
    #[derive(serde::Deserialize)]
    struct Config {
        director: Vec<DirectorConfig>,
    }
    let config: Config = toml::from_str(
        r#"
        [[director]]
        name = "dns"
        vip = "192.0.2.80"
        port = 53
        proto = "udp"
        scheduler = "rr"
        forward = "nat"
        real = [{ addr = "10.0.1.2:53", weight = 1 }, { addr = "10.0.1.3:53", weight = 1 }]
        "#,
    )
    .unwrap();
    Directors::build(&config.director, DirectorOptions::default()).unwrap()
}

fn pipeline(with_nat: bool) -> Pipeline {
    let config = IpConfig {
        mtu: FIXTURE_MTU,
        conntrack: true,
        ..IpConfig::default()
    };
    let pipeline = Pipeline::default()
        .with_ip(IpLayer::new(config))
        .with_directors(directors());
    if with_nat {
        let nat = datapath::nat::config::build(&[], &BTreeMap::new(), 7).unwrap();
        pipeline.with_nat(nat)
    } else {
        pipeline
    }
}

type Step = (PacketOutcome, Vec<(u16, Vec<u8>)>);

fn emitted(pipeline: &mut Pipeline) -> Vec<(u16, Vec<u8>)> {
    let frames = pipeline.take_emitted();
    frames.into_iter().map(|f| (f.iface, f.frame)).collect()
}

fn compare(with_nat: bool) {
    let mut whole = pipeline(with_nat);
    let mut local = pipeline(with_nat);
    let mut shared = local.take_shared();
    assert!(!shared.is_empty());
    let mut deferred = 0;
    let mut answered = 0;
    for case in cases() {
        for (index, (frame, _)) in case.frames.iter().enumerate() {
            let now = index as u64 * 1_000_000;
            let len = frame.len() as u32;
            let outcome = whole.process(now, 0, LinkType::Ethernet, frame.clone(), len);
            let expected: Step = (outcome, emitted(&mut whole));
            let got: Step =
                match local.process_local(now, 0, LinkType::Ethernet, frame.clone(), len) {
                    Local::Done(outcome) => (outcome, emitted(&mut local)),
                    Local::Deferred(work) => {
                        deferred += 1;
                        let outcome = local.resume(now, work, &mut shared).expect("a packet");
                        (outcome, emitted(&mut local))
                    }
                };
            if matches!(got.0.verdict, datapath::Verdict::Reply) {
                answered += 1;
            }
            assert_eq!(got, expected, "{} frame {index}", case.name);
        }
    }
    assert!(
        deferred > 0 && answered > 0,
        "{deferred} deferred, {answered} answered"
    );
    assert_eq!(local.counters(), whole.counters());
    assert_eq!(
        local.ip().unwrap().counters(),
        whole.ip().unwrap().counters()
    );
}

#[test]
fn split_with_a_director_decides_as_process_with_the_ip_layer() {
    compare(false);
}

#[test]
fn split_with_nat_decides_as_process_with_the_ip_layer() {
    compare(true);
}
