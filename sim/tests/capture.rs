//! The capture reader on hand-made files (every format variant, every error kind) and on
//! seeded mutations of real captures.

use std::io::Write;
use std::path::{Path, PathBuf};

use datapath::packet::LinkType;
use sim::capture::{CaptureErrorKind, CaptureReader, Format, MAX_CAPLEN};

/// A packet as read back: (index, ts_ns, link, interface, orig_len, data).
type Read = (u64, u64, LinkType, u32, u32, Vec<u8>);

fn read_all(path: &Path) -> (Vec<Read>, Option<sim::capture::CaptureError>) {
    let mut reader = CaptureReader::open(path).expect("open");
    let mut out = Vec::new();
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => out.push((
                p.index,
                p.ts_ns,
                p.link,
                p.interface,
                p.orig_len,
                p.data.to_vec(),
            )),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lbsim-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn u32b(v: u32, big: bool) -> [u8; 4] {
    if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

/// A classic pcap with the given byte order and resolution; packets are (sec, frac, data, orig).
fn pcap(big: bool, nanos: bool, linktype: u32, packets: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
    let magic = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let mut out = Vec::new();
    out.extend(u32b(magic, big));
    let (major, minor) = if big {
        ([0, 2], [0, 4])
    } else {
        ([2, 0], [4, 0])
    };
    out.extend(major);
    out.extend(minor);
    out.extend([0; 8]);
    out.extend(u32b(65_535, big));
    out.extend(u32b(linktype, big));
    for (sec, frac, data, orig) in packets {
        out.extend(u32b(*sec, big));
        out.extend(u32b(*frac, big));
        out.extend(u32b(data.len() as u32, big));
        out.extend(u32b(*orig, big));
        out.extend(*data);
    }
    out
}

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().div_ceil(4) * 4;
    let total = (12 + padded) as u32;
    let mut out = Vec::new();
    out.extend(kind.to_le_bytes());
    out.extend(total.to_le_bytes());
    out.extend(body);
    out.resize(8 + padded, 0);
    out.extend(total.to_le_bytes());
    out
}

fn shb() -> Vec<u8> {
    let mut body = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    body.extend([1, 0, 0, 0]);
    body.extend(u64::MAX.to_le_bytes());
    block(0x0a0d_0d0a, &body)
}

fn idb(linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
    let mut body = linktype.to_le_bytes().to_vec();
    body.extend([0, 0]);
    body.extend(0u32.to_le_bytes());
    if let Some(resol) = tsresol {
        body.extend(9u16.to_le_bytes());
        body.extend(1u16.to_le_bytes());
        body.extend([resol, 0, 0, 0]);
        body.extend([0, 0, 0, 0]);
    }
    block(1, &body)
}

fn epb(interface: u32, units: u64, data: &[u8], orig: u32) -> Vec<u8> {
    let mut body = interface.to_le_bytes().to_vec();
    body.extend(((units >> 32) as u32).to_le_bytes());
    body.extend((units as u32).to_le_bytes());
    body.extend((data.len() as u32).to_le_bytes());
    body.extend(orig.to_le_bytes());
    body.extend(data);
    block(6, &body)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

const A: &[u8] = b"first packet bytes";
const B: &[u8] = b"second";

#[test]
fn pcap_in_both_byte_orders_and_resolutions() {
    for big in [false, true] {
        for nanos in [false, true] {
            let frac = if nanos { 123_456_789 } else { 123_456 };
            let file = pcap(
                big,
                nanos,
                1,
                &[(10, frac, A, 1500), (11, 0, B, B.len() as u32)],
            );
            let path = temp(&format!("order-{big}-{nanos}.pcap"), &file);
            let (packets, error) = read_all(&path);
            assert!(error.is_none(), "{error:?}");
            let expected_ns = 10_000_000_000 + if nanos { 123_456_789 } else { 123_456_000 };
            assert_eq!(
                packets[0],
                (0, expected_ns, LinkType::Ethernet, 0, 1500, A.to_vec())
            );
            assert_eq!(
                packets[1],
                (
                    1,
                    11_000_000_000,
                    LinkType::Ethernet,
                    0,
                    B.len() as u32,
                    B.to_vec()
                )
            );
        }
    }
}

#[test]
fn pcapng_with_two_interfaces_of_different_link_types_and_resolutions() {
    let mut file = shb();
    file.extend(idb(1, Some(9))); // Ethernet, nanoseconds
    file.extend(idb(101, None)); // raw IP, default microseconds
    file.extend(epb(0, 1_500_000_000_123, A, 60));
    file.extend(epb(1, 2_000_000, B, 6));
    let path = temp("multi.pcapng", &file);
    let (packets, error) = read_all(&path);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        packets[0],
        (0, 1_500_000_000_123, LinkType::Ethernet, 0, 60, A.to_vec())
    );
    assert_eq!(
        packets[1],
        (1, 2_000_000_000, LinkType::RawIp, 1, 6, B.to_vec())
    );
    assert_eq!(CaptureReader::open(&path).unwrap().format(), Format::PcapNg);
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let plain = pcap(false, false, 1, &[(1, 0, A, 100)]);
    let path = temp("looks-plain.pcap", &gzip(&plain));
    let reader = CaptureReader::open(&path).unwrap();
    assert!(reader.is_gzip());
    assert_eq!(read_all(&path).0.len(), 1);
    let mut ng = shb();
    ng.extend(idb(1, None));
    ng.extend(epb(0, 1, A, 18));
    let path = temp("ng.bin", &gzip(&ng));
    assert_eq!(read_all(&path).0.len(), 1);
}

#[test]
fn truncation_reports_the_packet_index_and_offset_after_earlier_packets() {
    let file = pcap(
        false,
        false,
        1,
        &[(1, 0, A, 100), (2, 0, B, 100), (3, 0, A, 100)],
    );
    let cut = file.len() - 5;
    let path = temp("cut.pcap", &file[..cut]);
    let (packets, error) = read_all(&path);
    assert_eq!(packets.len(), 2);
    let error = error.expect("truncated");
    assert_eq!(error.packet_index, Some(2));
    let third_at = 24 + (16 + A.len()) + (16 + B.len());
    assert_eq!(error.offset, third_at as u64);
    assert!(matches!(error.kind, CaptureErrorKind::Truncated { .. }));
    let text = error.to_string();
    assert!(
        text.contains("cut.pcap")
            && text.contains("packet 2")
            && text.contains(&format!("offset {third_at}")),
        "{text}"
    );
}

#[test]
fn an_oversized_caplen_is_refused_before_reading() {
    let mut file = pcap(false, false, 1, &[(1, 0, A, 100)]);
    file.extend(1u32.to_le_bytes());
    file.extend(0u32.to_le_bytes());
    file.extend((MAX_CAPLEN + 1).to_le_bytes());
    file.extend((MAX_CAPLEN + 1).to_le_bytes());
    let path = temp("huge.pcap", &file);
    let (packets, error) = read_all(&path);
    assert_eq!(packets.len(), 1);
    let error = error.unwrap();
    assert!(matches!(error.kind, CaptureErrorKind::CaplenTooLarge(n) if n == MAX_CAPLEN + 1));
    assert_eq!(error.packet_index, Some(1));
}

#[test]
fn pcapng_errors_name_the_problem() {
    let mut unknown_interface = shb();
    unknown_interface.extend(idb(1, None));
    unknown_interface.extend(epb(3, 1, A, 18));
    let (_, error) = read_all(&temp("iface.pcapng", &unknown_interface));
    assert!(matches!(
        error.unwrap().kind,
        CaptureErrorKind::UnknownInterface(3)
    ));
    let mut bad_length = shb();
    bad_length.extend(idb(1, None));
    bad_length.extend(6u32.to_le_bytes());
    bad_length.extend(13u32.to_le_bytes());
    bad_length.extend([0; 8]);
    let (_, error) = read_all(&temp("len.pcapng", &bad_length));
    assert!(matches!(
        error.unwrap().kind,
        CaptureErrorKind::BadBlockLength(13)
    ));
}

#[test]
fn not_a_capture() {
    let path = temp("readme.txt", b"# hello, this is text");
    let error = CaptureReader::open(&path).unwrap_err();
    assert!(matches!(error.kind, CaptureErrorKind::UnknownFormat(_)));
    assert!(error.to_string().contains("readme.txt"));
    let missing = CaptureReader::open("/nonexistent/x.pcap").unwrap_err();
    assert!(matches!(missing.kind, CaptureErrorKind::Io(_)));
}

/// xorshift64*: a tiny seeded generator, so mutations are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_real_captures_never_panic_and_keep_earlier_packets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps/real");
    let names = [
        "zeek__q-in-q.pcap",
        "zeek__pcapng-multi-interface.pcapng",
        "tcpdump__dns_tcp.pcap",
        "zeek__ipv6.pcap",
        "gopacket__test202.pcapng",
    ];
    let mut rng = Rng(0x5eed_1b51);
    for name in names {
        let original = std::fs::read(dir.join(name)).unwrap();
        let (clean, _) = read_all(&dir.join(name));
        for round in 0..200 {
            let mut bytes = original.clone();
            match round % 3 {
                0 => {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
                1 => bytes.truncate(rng.below(bytes.len())),
                _ => {
                    // Overwrite a plausible length field with a random value.
                    let at = 24 + rng.below(bytes.len().saturating_sub(28).max(1));
                    let value = (rng.next() as u32).to_le_bytes();
                    let end = (at + 4).min(bytes.len());
                    bytes[at..end].copy_from_slice(&value[..end - at]);
                }
            }
            let path = temp(&format!("mutant-{round}-{name}"), &bytes);
            let Ok(mut reader) = CaptureReader::open(&path) else {
                continue;
            };
            let mut count = 0u64;
            let outcome = loop {
                match reader.next_packet() {
                    Ok(Some(p)) => {
                        let _ = datapath::packet::parse(p.link, p.data, p.orig_len, 0);
                        count += 1;
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            if let Some(error) = outcome {
                assert_eq!(
                    error.packet_index,
                    Some(count),
                    "{name} round {round}: {error}"
                );
                assert!(error.to_string().contains(name));
            }
            if round % 3 == 1 {
                // A truncated file keeps every complete packet before the cut.
                assert!(count as usize <= clean.len());
            }
            std::fs::remove_file(&path).ok();
        }
    }
}

/// An endless-looking pcap produced on the fly: header, then `packets` copies of a frame.
struct GeneratedPcap {
    header_left: Vec<u8>,
    record: Vec<u8>,
    packets_left: u64,
    at: usize,
}

impl std::io::Read for GeneratedPcap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.header_left.is_empty() {
            let n = self.header_left.len().min(buf.len());
            buf[..n].copy_from_slice(&self.header_left[..n]);
            self.header_left.drain(..n);
            return Ok(n);
        }
        let mut written = 0;
        while written < buf.len() && self.packets_left > 0 {
            let n = (self.record.len() - self.at).min(buf.len() - written);
            buf[written..written + n].copy_from_slice(&self.record[self.at..self.at + n]);
            written += n;
            self.at += n;
            if self.at == self.record.len() {
                self.at = 0;
                self.packets_left -= 1;
            }
        }
        Ok(written)
    }
}

#[test]
fn memory_stays_bounded_while_streaming_a_large_capture() {
    let frame = vec![0xabu8; 1000];
    let mut record = Vec::new();
    for field in [1u32, 0, frame.len() as u32, frame.len() as u32] {
        record.extend(field.to_le_bytes());
    }
    record.extend(&frame);
    let header = pcap(false, false, 1, &[]);
    let packets = 100_000u64; // ~100 MB through the reader
    let source = GeneratedPcap {
        header_left: header,
        record,
        packets_left: packets,
        at: 0,
    };
    let mut reader =
        CaptureReader::from_reader(PathBuf::from("generated.pcap"), Box::new(source)).unwrap();
    let mut count = 0u64;
    let mut largest = 0;
    while let Some(packet) = reader.next_packet().unwrap() {
        assert_eq!(packet.data.len(), 1000);
        count += 1;
        largest = largest.max(reader.buffer_capacity());
    }
    assert_eq!(count, packets);
    // One read chunk plus at most one record, whatever the stream length.
    assert!(
        largest <= 2 * 256 * 1024 + MAX_CAPLEN as usize,
        "buffer grew to {largest} bytes"
    );
}
