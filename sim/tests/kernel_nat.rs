//! NAT directors against the kernel: the DNAT rewrite of a connection's first packet (the
//! whole 5-tuple as it leaves toward the real server) and the un-NAT of the real server's
//! reply (injected from the server side; its source becomes the VIP again) agree packet for
//! packet for rr; an sh director emulated with nft jhash agrees on everything but possibly
//! the backend, and each such difference is explained.

mod kernel_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{render, run_diff};

const GAP: Duration = Duration::from_micros(300);

fn syn(client: u8, vip: [u8; 4]) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(Ipv4Addr::new(198, 51, 100, client), Ipv4Addr::from(vip))
        .tcp(30_000 + u16::from(client), 8080)
        .syn()
        .mss(1460)
        .build()
}

fn syn_ack(real: [u8; 4], client: u8) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(Ipv4Addr::from(real), Ipv4Addr::new(198, 51, 100, client))
        .tcp(8080, 30_000 + u16::from(client))
        .syn_ack()
        .seq_ack(99, 1)
        .mss(1460)
        .build()
}

#[test]
fn dnat_and_reply_un_nat_agree_and_jhash_differences_are_explained() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let app = [192, 0, 2, 20];
    let sticky = [192, 0, 2, 21];
    // rr (IPVS order): the last real configured first.
    let reals = [[10, 0, 3, 3], [10, 0, 3, 2]];
    let mut frames = Vec::new();
    for client in 1..=4u8 {
        frames.push(syn(client, app));
    }
    for client in 1..=4u8 {
        frames.push(syn_ack(reals[usize::from(client - 1) % 2], client));
    }
    for client in 20..=31u8 {
        frames.push(syn(client, sticky));
    }
    let pcap = write_pcap("nat.pcap", &frames);
    let before = own_namespaces();
    let report = run_diff(&data("nat.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert_eq!(report.unexplained(), 0, "{text}");
    assert!(report.not_injected.is_empty(), "{text}");
    let app = &report.by_feature["director app"];
    assert_eq!((app.compared, app.agreed), (8, 8), "{text}");
    let sticky = &report.by_feature["director sticky"];
    assert_eq!(sticky.compared, 12, "{text}");
    assert_eq!(sticky.agreed + sticky.explained, 12, "{text}");
    for d in &report.disagreements {
        let why = d.explained_by.as_deref().unwrap_or("");
        assert!(why.contains("jhash"), "{text}");
    }
}
