//! `PacketMeta` extraction from in-memory frames: ns/packet and packets/s (criterion's
//! elem/s is packets per second; Mpps = elem/s / 1e6).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ParseOptions, parse_with};

fn frames() -> Vec<Vec<u8>> {
    let client = Ipv4Addr::new(198, 51, 100, 7);
    let vip = Ipv4Addr::new(192, 0, 2, 10);
    let v6 = (
        "2001:db8::7".parse().unwrap(),
        "2001:db8::10".parse().unwrap(),
    );
    vec![
        PacketBuilder::eth()
            .ipv4(client, vip)
            .tcp(40000, 80)
            .syn()
            .mss(1460)
            .window_scale(7)
            .sack_permitted()
            .timestamps(1, 0)
            .build(),
        PacketBuilder::eth()
            .ipv4(client, vip)
            .tcp(40001, 443)
            .payload(&[0; 40])
            .build(),
        PacketBuilder::eth()
            .vlan(42)
            .ipv4(client, vip)
            .udp(5353, 53)
            .payload(&[0; 32])
            .build(),
        PacketBuilder::eth()
            .ipv6(v6.0, v6.1)
            .tcp(40002, 80)
            .syn()
            .build(),
        PacketBuilder::eth()
            .ipv4(client, vip)
            .echo_request(1, 1)
            .payload(&[0; 56])
            .build(),
    ]
}

fn bench_parse(c: &mut Criterion) {
    let frames = frames();
    let mut group = c.benchmark_group("parse");
    for (name, options) in [
        ("mixed_with_checksums", ParseOptions::default()),
        (
            "mixed_headers_only",
            ParseOptions {
                verify_l4_checksum: false,
                verify_ipv4_checksum: false,
            },
        ),
    ] {
        group.throughput(Throughput::Elements(frames.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for frame in &frames {
                    black_box(parse_with(
                        &options,
                        LinkType::Ethernet,
                        black_box(frame),
                        frame.len() as u32,
                        0,
                    ));
                }
            })
        });
    }
    let syn = &frames[0];
    group.throughput(Throughput::Elements(1));
    group.bench_function("syn_64B", |b| {
        b.iter(|| {
            black_box(parse_with(
                &ParseOptions::default(),
                LinkType::Ethernet,
                black_box(syn),
                syn.len() as u32,
                0,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
