//! Hash flooding: for every table keyed by packet fields, the cost per packet of client keys
//! chosen to collide under the unkeyed FxHash-style hasher the director's indexes used to
//! have, against random keys. With the keyed hash both cost the same; the acceptance of
//! issue 17 is colliding ≤ 2× random.
//!
//! - `director_connections`: SYNs of new clients to an IPv6 NAT service (client- and
//!   real-side indexes).
//! - `director_templates`: the same to a persistent service (connections and templates).
//! - `conntrack`: new NAT flows tracked (original and reply indexes).
//! - `old_hasher`: a `HashMap` with the old hasher itself, on fewer keys: shows the chosen
//!   keys do collide under it (quadratic), so the figures above measure something.
//!
//! `cargo bench --bench hashflood` uses 300,000 clients; the single-iteration smoke of
//! `cargo test --benches` uses 2,000.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::hint::black_box;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datapath::director::config::DirectorConfig;
use datapath::director::{DirectorOptions, Directors};
use datapath::nat::conntrack::ConnTrack;
use datapath::packet::builder::PacketBuilder;
use datapath::packet::flow::FlowKey;
use datapath::packet::{LinkType, PacketMeta, ip_proto, parse, tcp_flags};

/// The old mix of `director/connection.rs` (private copy, to choose colliding keys).
#[derive(Default)]
struct OldFxHasher(u64);

const OLD_MULTIPLIER: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for OldFxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(OLD_MULTIPLIER);
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.write_u64(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The old connection key, with its old derived `Hash`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct OldClientKey {
    proto: u8,
    client: SocketAddr,
    virtual_address: SocketAddr,
}

fn old_hash<K: Hash>(key: &K) -> u64 {
    let mut hasher = OldFxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const CLIENT_PORT: u16 = 40_000;

fn clients() -> usize {
    if std::env::args().any(|arg| arg == "--bench") {
        300_000
    } else {
        2_000
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `count` IPv6 clients whose keys all hash alike under the old hasher. The derived `Hash`
/// writes the protocol, the address family and then the address as one `u128` (two 64-bit
/// words, low first, for the old hasher). After the low word `lo` the state is `h1`; the
/// high word `rotl(h1, 5) ^ T` turns it into `T × K` whatever `lo` was, so every client
/// (with the same port, to the same service) has the same hash. Checked below.
fn colliding_clients(count: usize) -> Vec<Ipv6Addr> {
    let mut prefix = OldFxHasher::default();
    prefix.write_u8(ip_proto::TCP);
    prefix.write_u64(1); // `SocketAddr::V6` discriminant (write_isize → write_u64).
    let target = 0x6c62_7369_6d21_u64;
    let clients: Vec<Ipv6Addr> = (0..count as u64)
        .map(|i| {
            let lo = splitmix(i);
            let mut h1 = OldFxHasher(prefix.0);
            h1.write_u64(lo);
            let hi = h1.0.rotate_left(5) ^ target;
            Ipv6Addr::from(((u128::from(hi) << 64) | u128::from(lo)).to_le_bytes())
        })
        .collect();
    let hashes: std::collections::BTreeSet<u64> = clients
        .iter()
        .map(|&client| old_hash(&old_key(client)))
        .collect();
    assert_eq!(hashes.len(), 1, "the chosen clients must collide");
    clients
}

fn random_clients(count: usize) -> Vec<Ipv6Addr> {
    (0..count as u64)
        .map(|i| {
            let bits = (u128::from(splitmix(i ^ 0xa5a5)) << 64) | u128::from(splitmix(!i));
            Ipv6Addr::from(bits)
        })
        .collect()
}

fn old_key(client: Ipv6Addr) -> OldClientKey {
    OldClientKey {
        proto: ip_proto::TCP,
        client: SocketAddr::from((client, CLIENT_PORT)),
        virtual_address: SocketAddr::from((VIP, 80)),
    }
}

fn directors(persistent: bool) -> Directors {
    let persistence = if persistent {
        "persistence = \"300s\"\n"
    } else {
        ""
    };
    let text = format!(
        "[[director]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\n{persistence}\
         real = [{{ addr = \"[2001:db8:1::2]:80\" }}, {{ addr = \"[2001:db8:1::3]:80\" }}]\n"
    );
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(&text).unwrap();
    // Room for every client in both tables (the template table's default is 2^18).
    let options = DirectorOptions {
        connection_capacity: 1 << 20,
        template_capacity: 1 << 20,
        ..DirectorOptions::default()
    };
    Directors::build(&file.director, options).unwrap()
}

fn syns(clients: &[Ipv6Addr]) -> Vec<(Vec<u8>, PacketMeta)> {
    clients
        .iter()
        .map(|&client| {
            let frame = PacketBuilder::eth()
                .ipv6(client, VIP)
                .tcp(CLIENT_PORT, 80)
                .flags(tcp_flags::SYN)
                .build();
            let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
            (frame, meta)
        })
        .collect()
}

fn key_sets() -> [(&'static str, Vec<Ipv6Addr>); 2] {
    let count = clients();
    [
        ("colliding", colliding_clients(count)),
        ("random", random_clients(count)),
    ]
}

fn director_tables(c: &mut Criterion) {
    for (table, persistent) in [
        ("director_connections", false),
        ("director_templates", true),
    ] {
        let mut group = c.benchmark_group(format!("hashflood/{table}"));
        group.sample_size(10).warm_up_time(Duration::from_secs(1));
        for (name, clients) in key_sets() {
            let packets = syns(&clients);
            group.throughput(Throughput::Elements(packets.len() as u64));
            group.bench_function(name, |b| {
                b.iter_batched(
                    || (directors(persistent), packets.clone()),
                    |(mut directors, mut packets)| {
                        for (frame, meta) in &mut packets {
                            let _ = black_box(directors.process(0, frame, meta, None));
                        }
                        assert_eq!(directors.table().connection_count, packets.len());
                        directors
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

fn conntrack(c: &mut Criterion) {
    let mut group = c.benchmark_group("hashflood/conntrack");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let real = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2), 8080));
    for (name, clients) in key_sets() {
        let flows: Vec<(FlowKey, FlowKey)> = clients
            .iter()
            .map(|&client| {
                let original = FlowKey {
                    proto: ip_proto::TCP,
                    source: SocketAddr::from((client, CLIENT_PORT)),
                    destination: SocketAddr::from((VIP, 80)),
                };
                let translated = FlowKey {
                    destination: real,
                    ..original
                };
                (original, translated)
            })
            .collect();
        group.throughput(Throughput::Elements(flows.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || ConnTrack::new(flows.len()),
                |mut table| {
                    for &(original, translated) in &flows {
                        black_box(table.insert(0, original, translated));
                    }
                    assert_eq!(table.len(), flows.len());
                    table
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn old_hasher(c: &mut Criterion) {
    let mut group = c.benchmark_group("hashflood/old_hasher");
    group.sample_size(10);
    let count = clients().min(10_000);
    for (name, clients) in [
        ("colliding", colliding_clients(count)),
        ("random", random_clients(count)),
    ] {
        let keys: Vec<OldClientKey> = clients.into_iter().map(old_key).collect();
        group.throughput(Throughput::Elements(keys.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut map: HashMap<OldClientKey, u32, BuildHasherDefault<OldFxHasher>> =
                    HashMap::default();
                for (index, key) in keys.iter().enumerate() {
                    map.insert(*key, index as u32);
                }
                black_box(map.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, director_tables, conntrack, old_hasher);
criterion_main!(benches);
