//! Shield benchmarks: denylist drop, and SYN → cookie SYN-ACK, per packet.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, parse};
use datapath::shield::{EmitBuffer, ShieldConfig, build};
use datapath::verdict::DropReason;

const BATCH: u64 = 1024;

fn config(text: &str) -> ShieldConfig {
    toml::from_str(text).expect("benchmark configuration")
}

fn frames(source_base: u32, syn: bool) -> Vec<(Vec<u8>, datapath::PacketMeta)> {
    (0..BATCH as u32)
        .map(|i| {
            let source = Ipv4Addr::from(source_base.wrapping_add(i * 7919));
            let builder = PacketBuilder::eth()
                .ipv4(source, Ipv4Addr::new(192, 0, 2, 10))
                .tcp(1024 + (i % 60_000) as u16, 443);
            let frame = if syn {
                builder.syn().seq_ack(i, 0).mss(1460).build()
            } else {
                builder.build()
            };
            let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
            (frame, meta)
        })
        .collect()
}

fn denylist_drop(criterion: &mut Criterion) {
    let config = config(
        r#"
        deny = ["203.0.0.0/8", "2001:db8::/32", "198.51.100.0/24"]
        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [443]
        "#,
    );
    let mut shield = build(&config, 7, &[]).expect("shield");
    let mut batch = frames(u32::from(Ipv4Addr::new(203, 0, 0, 1)), false);
    let mut emit = EmitBuffer::new();
    let mut group = criterion.benchmark_group("shield");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("denylist_drop", |bencher| {
        bencher.iter(|| {
            for (frame, meta) in &mut batch {
                let _ = black_box(shield.process(1, frame, meta, &mut emit));
            }
        })
    });
    group.finish();
    let counters = shield.counters(context_of(&shield, &batch));
    assert_eq!(
        counters.drops(DropReason::Denylist),
        counters.dropped_total()
    );
}

const SYN_COOKIE_CONFIG: &str = r#"
    syn_cookies = "on"
    surge = "off"
    # The default (10 M cookies/s per context) would turn SYNs into `rate` drops once a
    # run passes 10 M packets at the same virtual instant.
    [thresholds]
    cookie_rate_max = 1_000_000_000_000
    [[context]]
    dst = "192.0.2.10"
    protected_tcp_ports = [443]
    "#;

fn syn_cookie(criterion: &mut Criterion) {
    let mut shield = build(&config(SYN_COOKIE_CONFIG), 7, &[]).expect("shield");
    let mut batch = frames(u32::from(Ipv4Addr::new(10, 0, 0, 1)), true);
    let mut emit = EmitBuffer::new();
    let mut group = criterion.benchmark_group("shield");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("syn_to_cookie_syn_ack", |bencher| {
        bencher.iter(|| {
            for (frame, meta) in &mut batch {
                let _ = black_box(shield.process(1, frame, meta, &mut emit));
                black_box(emit.frames());
            }
        })
    });
    group.finish();
    let counters = shield.counters(context_of(&shield, &batch));
    assert_eq!(
        counters.drops(DropReason::Rate),
        0,
        "every SYN got a cookie"
    );
    assert_eq!(counters.cookies_sent, counters.replied);
}

fn context_of(
    shield: &datapath::shield::Shield,
    batch: &[(Vec<u8>, datapath::PacketMeta)],
) -> datapath::shield::ContextId {
    shield.select(&batch[0].1).expect("a shielded interface")
}

/// Run the SYN → cookie workload `batches` times over one batch, without criterion: for
/// instruction counts (`SHIELD_SYN_BATCHES=N valgrind --tool=callgrind target/release/deps/
/// shield-*`; the difference between two values of N, divided by the SYNs, is the cost
/// of one SYN).
fn syn_cookie_batches(batches: u64) {
    let mut shield = build(&config(SYN_COOKIE_CONFIG), 7, &[]).expect("shield");
    let mut batch = frames(u32::from(Ipv4Addr::new(10, 0, 0, 1)), true);
    let mut emit = EmitBuffer::new();
    for _ in 0..batches {
        for (frame, meta) in &mut batch {
            let _ = black_box(shield.process(1, frame, meta, &mut emit));
            black_box(emit.frames());
        }
    }
    let counters = shield.counters(context_of(&shield, &batch));
    assert_eq!(counters.cookies_sent, batches * BATCH);
}

criterion_group!(benches, denylist_drop, syn_cookie);

fn main() {
    if let Some(batches) = std::env::var("SHIELD_SYN_BATCHES")
        .ok()
        .and_then(|text| text.parse().ok())
    {
        syn_cookie_batches(batches);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
