//! Whole-file replay: read a capture from disk and parse every packet. Throughput is in
//! packets (criterion's elem/s; Mpps = elem/s / 1e6).

use std::hint::black_box;
use std::io::Write;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::parse;
use sim::capture::CaptureReader;

const PACKETS: u32 = 200_000;

/// A pcap of SYNs from many sources, written once to a temporary file.
fn synthetic_capture() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("lbsim-bench-{}.pcap", std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    out.write_all(&[
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ])
    .unwrap();
    for i in 0..PACKETS {
        let frame = PacketBuilder::eth()
            .ipv4(
                Ipv4Addr::from(0x0a00_0000 + i),
                Ipv4Addr::new(192, 0, 2, 10),
            )
            .tcp(1024 + (i % 60000) as u16, 80)
            .syn()
            .mss(1460)
            .build();
        for field in [
            i / 1000,
            (i % 1000) * 1000,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            out.write_all(&field.to_le_bytes()).unwrap();
        }
        out.write_all(&frame).unwrap();
    }
    out.flush().unwrap();
    path
}

fn replay(path: &std::path::Path) -> u64 {
    let mut reader = CaptureReader::open(path).unwrap();
    let mut count = 0;
    while let Some(packet) = reader.next_packet().unwrap() {
        black_box(parse(packet.link, packet.data, packet.orig_len, 0));
        count += 1;
    }
    count
}

fn bench_replay(c: &mut Criterion) {
    let path = synthetic_capture();
    let mut group = c.benchmark_group("replay_file");
    group.throughput(Throughput::Elements(u64::from(PACKETS)));
    group.sample_size(20);
    group.bench_function("syn_pcap_200k", |b| {
        b.iter(|| assert_eq!(replay(&path), u64::from(PACKETS)))
    });
    group.finish();
    std::fs::remove_file(path).ok();
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);
