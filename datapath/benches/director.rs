//! Director benchmarks: established-flow forwarding (connection lookup + NAT rewrite +
//! incremental checksums), new connections through `process`, and the scheduling decision
//! of every scheduler.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datapath::director::config::DirectorConfig;
use datapath::director::dest::{Dests, Forward, RealServer};
use datapath::director::scheduler::{SchedulePacket, Scheduler, SchedulerFlags, SchedulerKind};
use datapath::director::{DirectorOptions, Directors};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, PacketMeta, parse, tcp_flags};

const FLOWS: usize = 1024;

fn nat_directors(scheduler: &str) -> Directors {
    let text = format!(
        r#"[[director]]
name = "web"
vip = "192.0.2.10"
port = 80
scheduler = "{scheduler}"
real = [{{ addr = "10.0.1.2:80", weight = 4 }}, {{ addr = "10.0.1.3:80", weight = 3 }}, {{ addr = "10.0.1.4:80", weight = 2 }}, {{ addr = "10.0.1.5:80", weight = 1 }}]
"#
    );
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(&text).unwrap();
    Directors::build(&file.director, DirectorOptions::default()).unwrap()
}

fn client_frames(flags: u8) -> Vec<(Vec<u8>, PacketMeta)> {
    (0..FLOWS)
        .map(|i| {
            let source = Ipv4Addr::from(0x0a00_0000u32 + i as u32);
            let frame = PacketBuilder::eth()
                .ipv4(source, Ipv4Addr::new(192, 0, 2, 10))
                .tcp(10_000 + i as u16, 80)
                .flags(flags)
                .payload(&[0u8; 64])
                .build();
            let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
            (frame, meta)
        })
        .collect()
}

fn established(c: &mut Criterion) {
    let mut directors = nat_directors("wlc");
    for (mut frame, meta) in client_frames(tcp_flags::SYN) {
        let _ = directors.process(0, &mut frame, &meta, None);
    }
    let packets = client_frames(tcp_flags::ACK);
    let mut buffer = Vec::with_capacity(256);
    let mut group = c.benchmark_group("director/established");
    group.throughput(Throughput::Elements(FLOWS as u64));
    group.bench_function("nat_forward", |b| {
        b.iter(|| {
            for (frame, meta) in &packets {
                buffer.clear();
                buffer.extend_from_slice(frame);
                let _ = black_box(directors.process(1, &mut buffer, meta, None));
            }
        })
    });
    group.finish();
}

fn new_connections(c: &mut Criterion) {
    let syns = client_frames(tcp_flags::SYN);
    let mut group = c.benchmark_group("director/new_connection");
    group.throughput(Throughput::Elements(FLOWS as u64));
    for scheduler in ["rr", "wlc", "mh"] {
        group.bench_function(scheduler, |b| {
            b.iter_batched(
                || (nat_directors(scheduler), syns.clone()),
                |(mut directors, mut frames)| {
                    for (frame, meta) in &mut frames {
                        let _ = black_box(directors.process(0, frame, meta, None));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn scheduling(c: &mut Criterion) {
    let mut dests = Dests::default();
    for i in 0..8u8 {
        let weight = i32::from(i % 4) + 1;
        let server = RealServer::new(
            SocketAddr::from(([10, 0, 1, i + 2], 80)),
            weight,
            Forward::Nat,
        );
        dests.add(server);
    }
    let packets: Vec<SchedulePacket> = (0..FLOWS as u32)
        .map(|i| SchedulePacket {
            source: Ipv4Addr::from(0x0a00_0000 + i).into(),
            source_port: i as u16,
            destination: Ipv4Addr::from(0xc000_0200 + (i % 64)).into(),
        })
        .collect();
    let mut group = c.benchmark_group("director/schedule");
    group.throughput(Throughput::Elements(FLOWS as u64));
    use SchedulerKind::*;
    for kind in [Rr, Wrr, Lc, Wlc, Sed, Nq, Sh, Dh, Mh, Lblc, Lblcr, Fo, Ovf] {
        let mut scheduler = Scheduler::new(kind, SchedulerFlags::default(), 4093, &dests);
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                for packet in &packets {
                    black_box(scheduler.schedule(0, &dests, packet));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, established, new_connections, scheduling);
criterion_main!(benches);
