//! Classification cost per packet for flow tables of 10, 100 and 1,000 flows (3 rules
//! each): the indexed `classify` against a plain linear scan of every rule.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datapath::flows::{FlowAction, FlowTable, RuleKind, StepOutcome, TableConfig};
use datapath::packet::{L3, PacketMeta, ip_proto};

const PACKETS: usize = 1024;

fn flow_file(flows: usize) -> String {
    let mut text = String::new();
    for index in 0..flows {
        let (high, low) = (index / 250, index % 250);
        text.push_str(&format!(
            "flow f{index} director d{}\n  ignore not src 172.16.0.0/12\n  match proto tcp dst 10.{high}.{low}.1 dstport {}\n  match proto udp dst 10.{high}.{low}.0/24 dstport 5000:5100\n",
            index % 16,
            80 + index % 8,
        ));
    }
    text.push_str("flow rest deny\n  match\n");
    text
}

/// Deterministic packets aimed at the tables' addresses and ports (xorshift).
fn packets(flows: usize) -> Vec<PacketMeta> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..PACKETS)
        .map(|_| {
            let index = (next() as usize) % flows;
            let tcp = next() % 2 == 0;
            let dport = if tcp {
                80 + (next() % 10) as u16
            } else {
                5000 + (next() % 200) as u16
            };
            let dst = Ipv4Addr::new(10, (index / 250) as u8, (index % 250) as u8, 1);
            let src = Ipv4Addr::new(172, 16 + (next() % 20) as u8, 1, 2);
            PacketMeta {
                l3: L3::Ipv4,
                src: Some(IpAddr::V4(src)),
                dst: Some(IpAddr::V4(dst)),
                proto: Some(if tcp { ip_proto::TCP } else { ip_proto::UDP }),
                sport: Some(40000),
                dport: Some(dport),
                ..PacketMeta::default()
            }
        })
        .collect()
}

/// Every rule, in order, condition by condition.
fn linear(table: &FlowTable, meta: &PacketMeta) -> Option<(usize, u32)> {
    for (flow_index, flow) in table.flows().iter().enumerate() {
        for rule in table.flow_rules(flow_index) {
            if rule.try_packet(meta) != StepOutcome::Held {
                continue;
            }
            if rule.kind == RuleKind::Ignore || flow.action == FlowAction::Skip {
                break;
            }
            return Some((flow_index, rule.number));
        }
    }
    None
}

fn bench(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("flows_classify");
    group.throughput(Throughput::Elements(PACKETS as u64));
    for flows in [10, 100, 1000] {
        let table =
            FlowTable::from_source(&flow_file(flows), &TableConfig::default()).expect("valid");
        let packets = packets(flows);
        for meta in &packets {
            assert_eq!(
                table.classify(meta).map(|v| (v.flow, v.rule)),
                linear(&table, meta)
            );
        }
        group.bench_function(format!("indexed/{flows}"), |bencher| {
            bencher.iter(|| {
                for meta in &packets {
                    black_box(table.classify(black_box(meta)));
                }
            });
        });
        group.bench_function(format!("linear/{flows}"), |bencher| {
            bencher.iter(|| {
                for meta in &packets {
                    black_box(linear(&table, black_box(meta)));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
