//! `sim gen`: deterministic synthetic captures for the regression corpus — a SYN flood from
//! spoofed sources, a UDP flood, an ICMP flood, scripted TCP conversations (handshake, data,
//! FIN), a set of malformed packets, and damaged capture files (truncated record, truncated
//! header, bad magic, oversized record). The same kind, seed and options give byte-identical
//! files: every random draw comes from the seed's ChaCha stream ([`crate::net::rng`]) and
//! timestamps are virtual (a fixed epoch plus the packet rate).
//!
//! `sim gen corpus --out DIR` writes the fixed set committed under `pcaps/gen/`.
//!
//! Not here: replaying the captures (that is `sim replay` / `sim check`).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use datapath::packet::builder::PacketBuilder;
use datapath::packet::tcp_flags;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

use crate::net::rng::stream;

/// Timestamp of the first generated packet: 2023-11-14T22:13:20Z, in ns since the epoch.
pub const EPOCH_NS: u64 = 1_700_000_000_000_000_000;
/// Largest number of packets (or conversations) one capture may be asked for.
pub const MAX_COUNT: usize = 100_000;

/// What to generate.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenKind {
    /// SYNs from random (spoofed) sources, random TTLs and ports.
    SynFlood,
    /// UDP datagrams from random sources.
    UdpFlood,
    /// ICMP echo requests from random sources.
    IcmpFlood,
    /// `count` TCP conversations: handshake, request, response, FIN both ways.
    Conversation,
    /// One packet of each malformation (SYN+FIN, bad checksums, bad header lengths, …).
    Malformed,
    /// A conversation capture cut in the middle of its last record.
    Truncated,
    /// A capture cut inside its global header.
    TruncatedHeader,
    /// A file that is not a capture.
    BadMagic,
    /// A record claiming more captured bytes than any capture may hold.
    OversizeRecord,
    /// The fixed set of `pcaps/gen/` (`--out` is a directory).
    Corpus,
}

/// Arguments of `sim gen`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenArgs {
    /// What to generate.
    #[arg(value_enum)]
    pub kind: GenKind,
    /// Output file (a directory for `corpus`).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Packets (floods) or conversations.
    #[arg(long)]
    pub count: Option<usize>,
    /// Destination address and port.
    #[arg(long, default_value = "10.10.10.10:25565")]
    pub dst: SocketAddr,
    /// Client address of conversations (default: 198.51.100.10, .11, …).
    #[arg(long)]
    pub src: Option<Ipv4Addr>,
    /// Packets per second (virtual time).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
}

/// A capture to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenSpec {
    /// Kind (not `Corpus`).
    pub kind: GenKind,
    /// Seed.
    pub seed: u64,
    /// Packets or conversations.
    pub count: usize,
    /// Destination.
    pub dst: SocketAddr,
    /// Conversation client address.
    pub src: Option<Ipv4Addr>,
    /// Packets per second.
    pub rate: u64,
}

impl GenSpec {
    /// A spec with the defaults of `sim gen` for `kind`.
    pub fn new(kind: GenKind, seed: u64, dst: SocketAddr) -> Self {
        Self {
            kind,
            seed,
            count: default_count(kind),
            dst,
            src: None,
            rate: 20_000,
        }
    }
}

fn default_count(kind: GenKind) -> usize {
    match kind {
        GenKind::SynFlood | GenKind::UdpFlood | GenKind::IcmpFlood => 150,
        _ => 3,
    }
}

/// The capture file bytes for `spec`.
pub fn generate(spec: &GenSpec) -> Vec<u8> {
    let mut rng = stream(spec.seed, &format!("gen/{:?}", spec.kind));
    match spec.kind {
        GenKind::SynFlood | GenKind::UdpFlood | GenKind::IcmpFlood => {
            pcap_bytes(&flood(spec, &mut rng))
        }
        GenKind::Conversation => pcap_bytes(&conversations(spec, &mut rng)),
        GenKind::Malformed => pcap_bytes(&malformed(spec)),
        GenKind::Truncated => {
            let mut bytes = pcap_bytes(&conversations(spec, &mut rng));
            bytes.truncate(bytes.len() - 10);
            bytes
        }
        GenKind::TruncatedHeader => pcap_bytes(&[])[..10].to_vec(),
        GenKind::BadMagic => b"this is not a capture file\n".to_vec(),
        GenKind::OversizeRecord => oversize_record(),
        GenKind::Corpus => Vec::new(),
    }
}

type Frames = Vec<(u64, Vec<u8>)>;

fn pcap_bytes(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header).expect("writing to memory");
    for (ts_ns, frame) in frames {
        let packet = PcapPacket::new(Duration::from_nanos(*ts_ns), frame.len() as u32, frame);
        writer.write_packet(&packet).expect("writing to memory");
    }
    writer.into_writer()
}

/// A valid header, then a (little-endian) record header claiming 16 MiB captured.
fn oversize_record() -> Vec<u8> {
    let mut bytes = pcap_bytes(&[]);
    let mut record = Vec::new();
    record.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    record.extend_from_slice(&0u32.to_le_bytes());
    record.extend_from_slice(&0x0100_0000u32.to_le_bytes());
    record.extend_from_slice(&0x0100_0000u32.to_le_bytes());
    bytes.extend_from_slice(&record);
    bytes.extend_from_slice(&[0u8; 16]);
    bytes
}

fn spoofed_source(rng: &mut ChaCha8Rng) -> Ipv4Addr {
    // Unicast space 1.0.0.0 – 223.255.255.255.
    let value = 0x0100_0000 + (rng.next_u32() % (0xe000_0000 - 0x0100_0000));
    Ipv4Addr::from(value)
}

fn flood(spec: &GenSpec, rng: &mut ChaCha8Rng) -> Frames {
    let IpAddr::V4(dst) = spec.dst.ip() else {
        return Vec::new();
    };
    let interval = 1_000_000_000 / spec.rate.max(1);
    (0..spec.count.min(MAX_COUNT) as u64)
        .map(|i| {
            let src = spoofed_source(rng);
            let sport = 1024 + (rng.next_u32() % 64_000) as u16;
            let ttl = [32, 48, 52, 64, 128, 250][rng.next_u32() as usize % 6];
            let ip = PacketBuilder::eth()
                .ipv4(src, dst)
                .ttl(ttl)
                .ip_id(rng.next_u32() as u16);
            let frame = match spec.kind {
                GenKind::SynFlood => ip
                    .tcp(sport, spec.dst.port())
                    .syn()
                    .seq_ack(rng.next_u32(), 0)
                    .mss(1460)
                    .build(),
                GenKind::UdpFlood => {
                    let payload: Vec<u8> = (0..32).map(|_| rng.next_u32() as u8).collect();
                    ip.udp(sport, spec.dst.port()).payload(&payload).build()
                }
                _ => ip
                    .echo_request(rng.next_u32() as u16, i as u16)
                    .payload(&[0x61; 32])
                    .build(),
            };
            (EPOCH_NS + i * interval, frame)
        })
        .collect()
}

/// One side of a scripted conversation.
struct Endpoint {
    address: Ipv4Addr,
    port: u16,
    next_seq: u32,
}

fn segment(from: &Endpoint, to: &Endpoint, flags: u8, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(from.address, to.address)
        .tcp(from.port, to.port)
        .flags(flags)
        .seq_ack(from.next_seq, to.next_seq)
        .payload(payload)
        .build()
}

fn conversations(spec: &GenSpec, rng: &mut ChaCha8Rng) -> Frames {
    let IpAddr::V4(server_address) = spec.dst.ip() else {
        return Vec::new();
    };
    let mut frames = Vec::new();
    let step = 1_000_000; // 1 ms between segments
    for n in 0..spec.count.min(MAX_COUNT) {
        let client_address = spec
            .src
            .unwrap_or(Ipv4Addr::new(198, 51, 100, 10 + (n % 200) as u8));
        let mut client = Endpoint {
            address: client_address,
            port: 40_000 + (rng.next_u32() % 20_000) as u16,
            next_seq: rng.next_u32(),
        };
        let mut server = Endpoint {
            address: server_address,
            port: spec.dst.port(),
            next_seq: rng.next_u32(),
        };
        let start = EPOCH_NS + n as u64 * 20 * step;
        for (i, frame) in script(&mut client, &mut server).into_iter().enumerate() {
            frames.push((start + i as u64 * step, frame));
        }
    }
    frames
}

/// Handshake, request, response, FIN from the client, FIN from the server, last ACK.
fn script(client: &mut Endpoint, server: &mut Endpoint) -> Vec<Vec<u8>> {
    use tcp_flags::{ACK, FIN, PSH, SYN};
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let response = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut frames = Vec::new();
    let syn = PacketBuilder::eth()
        .ipv4(client.address, server.address)
        .tcp(client.port, server.port)
        .syn()
        .seq_ack(client.next_seq, 0)
        .mss(1460)
        .build();
    frames.push(syn);
    client.next_seq = client.next_seq.wrapping_add(1);
    frames.push(segment(server, client, SYN | ACK, &[]));
    server.next_seq = server.next_seq.wrapping_add(1);
    frames.push(segment(client, server, ACK, &[]));
    frames.push(segment(client, server, PSH | ACK, request));
    client.next_seq = client.next_seq.wrapping_add(request.len() as u32);
    frames.push(segment(server, client, PSH | ACK, response));
    server.next_seq = server.next_seq.wrapping_add(response.len() as u32);
    frames.push(segment(client, server, ACK, &[]));
    frames.push(segment(client, server, FIN | ACK, &[]));
    client.next_seq = client.next_seq.wrapping_add(1);
    frames.push(segment(server, client, FIN | ACK, &[]));
    server.next_seq = server.next_seq.wrapping_add(1);
    frames.push(segment(client, server, ACK, &[]));
    frames
}

/// Offsets in an untagged Ethernet + IPv4 frame.
const IP: usize = 14;
const L4: usize = IP + 20;

fn malformed(spec: &GenSpec) -> Frames {
    let IpAddr::V4(dst) = spec.dst.ip() else {
        return Vec::new();
    };
    let src = Ipv4Addr::new(198, 51, 100, 66);
    let port = spec.dst.port();
    let tcp = || PacketBuilder::eth().ipv4(src, dst).tcp(40_000, port);
    let mut frames = vec![tcp().syn().mss(1460).build()];
    frames.push(tcp().flags(tcp_flags::SYN | tcp_flags::FIN).build());
    frames.push(tcp().flags(0).build());
    let mut bad_tcp_checksum = tcp().syn().build();
    bad_tcp_checksum[L4 + 16] ^= 0xff;
    frames.push(bad_tcp_checksum);
    let mut bad_ip_checksum = tcp().syn().build();
    bad_ip_checksum[IP + 10] ^= 0xff;
    frames.push(bad_ip_checksum);
    let mut short_ihl = tcp().syn().build();
    short_ihl[IP] = 0x44;
    frames.push(short_ihl);
    let mut long_total = tcp().syn().build();
    long_total[IP + 2..IP + 4].copy_from_slice(&1500u16.to_be_bytes());
    frames.push(long_total);
    let mut cut_tcp = tcp().syn().build();
    cut_tcp.truncate(L4 + 10);
    frames.push(cut_tcp);
    let mut bad_version = tcp().syn().build();
    bad_version[IP] = 0x75;
    frames.push(bad_version);
    let mut bad_udp_length = PacketBuilder::eth()
        .ipv4(src, dst)
        .udp(5353, port)
        .payload(b"abcd")
        .build();
    bad_udp_length[L4 + 4..L4 + 6].copy_from_slice(&400u16.to_be_bytes());
    frames.push(bad_udp_length);
    let mut bad_icmp_checksum = PacketBuilder::eth()
        .ipv4(src, dst)
        .echo_request(1, 1)
        .build();
    bad_icmp_checksum[L4 + 2] ^= 0xff;
    frames.push(bad_icmp_checksum);
    frames.push(
        PacketBuilder::eth()
            .ipv4(src, dst)
            .ttl(0)
            .tcp(40_001, port)
            .syn()
            .build(),
    );
    let interval = 1_000_000_000 / spec.rate.max(1);
    frames
        .into_iter()
        .enumerate()
        .map(|(i, frame)| (EPOCH_NS + i as u64 * interval, frame))
        .collect()
}

/// The fixed set of `pcaps/gen/`: file name and spec.
pub fn corpus_specs() -> Vec<(&'static str, GenSpec)> {
    let at = |text: &str| text.parse::<SocketAddr>().expect("valid literal address");
    let game = at("10.10.10.10:25565");
    let web = at("192.0.2.10:80");
    let doc = at("192.168.0.1:22");
    let dns = at("192.168.0.1:53");
    let mail = at("192.168.0.2:25");
    let spec = GenSpec::new;
    let lan = |mut s: GenSpec| {
        s.src = Some(Ipv4Addr::new(192, 168, 0, 7));
        s
    };
    vec![
        ("synflood-game.pcap", spec(GenKind::SynFlood, 1, game)),
        ("synflood-web.pcap", spec(GenKind::SynFlood, 2, web)),
        ("synflood-ssh.pcap", spec(GenKind::SynFlood, 3, doc)),
        ("udpflood-game.pcap", spec(GenKind::UdpFlood, 4, game)),
        ("udpflood-dns.pcap", spec(GenKind::UdpFlood, 5, dns)),
        ("icmpflood-game.pcap", spec(GenKind::IcmpFlood, 6, game)),
        ("icmpflood-doc.pcap", spec(GenKind::IcmpFlood, 7, doc)),
        (
            "conversation-game.pcap",
            spec(GenKind::Conversation, 8, game),
        ),
        ("conversation-web.pcap", spec(GenKind::Conversation, 9, web)),
        (
            "conversation-ssh-outside.pcap",
            spec(GenKind::Conversation, 10, doc),
        ),
        (
            "conversation-ssh-lan.pcap",
            lan(spec(GenKind::Conversation, 11, doc)),
        ),
        (
            "conversation-mail.pcap",
            spec(GenKind::Conversation, 12, mail),
        ),
        ("malformed-game.pcap", spec(GenKind::Malformed, 13, game)),
        ("malformed-web.pcap", spec(GenKind::Malformed, 14, web)),
        ("truncated-record.pcap", spec(GenKind::Truncated, 15, game)),
        (
            "truncated-header.pcap",
            spec(GenKind::TruncatedHeader, 16, game),
        ),
        ("bad-magic.pcap", spec(GenKind::BadMagic, 17, game)),
        (
            "oversize-record.pcap",
            spec(GenKind::OversizeRecord, 18, game),
        ),
    ]
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// Run `sim gen`.
pub fn run(args: &GenArgs) -> anyhow::Result<ExitCode> {
    if args.kind == GenKind::Corpus {
        std::fs::create_dir_all(&args.out)?;
        for (name, spec) in corpus_specs() {
            let path = args.out.join(name);
            write_file(&path, &generate(&spec))?;
            println!("wrote {}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let count = args.count.unwrap_or(default_count(args.kind));
    anyhow::ensure!(count <= MAX_COUNT, "--count {count}: at most {MAX_COUNT}");
    let spec = GenSpec {
        kind: args.kind,
        seed: args.seed,
        count,
        dst: args.dst,
        src: args.src,
        rate: args.rate,
    };
    write_file(&args.out, &generate(&spec))?;
    Ok(ExitCode::SUCCESS)
}
