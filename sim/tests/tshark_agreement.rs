//! Every capture in `../shared/corpus/real/` parsed by lbsim and by tshark: the per-packet
//! fields of the outermost headers (VLAN ids, IP src/dst/proto/TTL, ports, TCP flags, ICMP
//! type) must agree on every packet tshark dissects, and every packet tshark flags as
//! malformed in a layer lbsim parses (link … L4) must be `invalid` here. Checksums are
//! verified on both sides (tshark's IPv4/TCP/UDP/ICMP validation on): a checksum tshark
//! finds bad makes the packet invalid here, and one lbsim calls bad tshark finds bad. The
//! other direction of the invalid verdict too: a packet lbsim refuses for its structure
//! (truncation, lengths, version) is one tshark finds wrong (malformed, an expert error,
//! cut short by the capture, or a bad checksum).
//!
//! Remaining disagreements are listed, each with a justification, in
//! `tests/data/tshark-known-differences.txt`; the test fails on any unlisted difference and on
//! any listed one that no longer occurs.
//!
//! Needs `tshark` (CI installs it). Without it the test fails, unless `LBSIM_SKIP_TSHARK=1`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use datapath::packet::{PacketMeta, parse};
use sim::capture::CaptureReader;

const FIELDS: &[&str] = &[
    "frame.number",
    "frame.protocols",
    "frame.interface_id",
    "_ws.malformed",
    "vlan.id",
    "ieee8021ad.id",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.ttl",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.hlim",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.dstopts.nxt",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "udp.srcport",
    "udp.dstport",
    "icmp.type",
    "icmpv6.type",
    "ip.checksum.status",
    "tcp.checksum.status",
    "udp.checksum.status",
    "icmp.checksum.status",
    "icmpv6.checksum.status",
    "frame.len",
    "frame.cap_len",
    "_ws.expert.severity",
];

/// tshark's checksum verdicts (status 0 = bad, 1 = good, 2 = unverified) and the invalid
/// reason lbsim gives a packet whose checksum of that layer is wrong.
const CHECKSUMS: [(&str, &str); 5] = [
    ("ip.checksum.status", "bad_ipv4_checksum"),
    ("tcp.checksum.status", "bad_tcp_checksum"),
    ("udp.checksum.status", "bad_udp_checksum"),
    ("icmp.checksum.status", "bad_icmp_checksum"),
    ("icmpv6.checksum.status", "bad_icmp_checksum"),
];

/// Invalid reasons about the packet's structure (lengths, versions, truncation): tshark
/// must see something wrong with such a packet too (malformed, or a bad checksum). The
/// others are lbsim's policy (TCP flag combinations, port 0, fragment checks, options),
/// which tshark dissects as ordinary packets.
const STRUCTURAL: &[&str] = &[
    "truncated_link",
    "truncated_vlan",
    "truncated_mpls",
    "truncated_ipv4",
    "truncated_ipv6",
    "truncated_ipv6_extension",
    "truncated_tcp",
    "truncated_udp",
    "truncated_icmp",
    "wrong_ip_version",
    "bad_ipv4_header_length",
    "ipv4_total_length_too_short",
    "ip_length_beyond_frame",
    "bad_udp_length",
    "bad_tcp_data_offset",
];

/// Layers lbsim parses; a tshark malformation in any of them must make the packet invalid.
const OUR_LAYERS: &[&str] = &[
    "eth",
    "ethertype",
    "vlan",
    "ieee8021ad",
    "sll",
    "null",
    "loop",
    "raw",
    "ip",
    "ipv6",
    "ipv6.hopopts",
    "ipv6.routing",
    "ipv6.fraghdr",
    "ipv6.dstopts",
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
];

const IPV6_EXTENSIONS: [u8; 5] = [0, 43, 44, 60, 51];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/real")
}

fn known_differences_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tshark-known-differences.txt")
}

/// One tshark row: field name → comma-separated values.
struct Row<'a> {
    values: Vec<&'a str>,
}

impl<'a> Row<'a> {
    fn all(&self, field: &str) -> Vec<&'a str> {
        let i = FIELDS
            .iter()
            .position(|f| *f == field)
            .expect("field listed");
        let v = self.values.get(i).copied().unwrap_or("");
        if v.is_empty() {
            Vec::new()
        } else {
            v.split(',').collect()
        }
    }

    fn first(&self, field: &str) -> Option<&'a str> {
        self.all(field).first().copied()
    }
}

fn run_tshark(path: &Path) -> String {
    let mut command = Command::new("tshark");
    command.args(["-n", "-r"]).arg(path);
    command.args(["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"]);
    // Checksums verified on both sides: lbsim's parser checks them (a capture taken with
    // checksum offload has bad ones on both sides alike).
    command.args([
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
    ]);
    command.args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]);
    for field in FIELDS {
        command.args(["-e", field]);
    }
    let output = command.output().expect("running tshark");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ours(path: &Path) -> (Vec<PacketMeta>, Option<String>) {
    let mut reader = match CaptureReader::open(path) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut metas = Vec::new();
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => metas.push(parse(p.link, p.data, p.orig_len, 0)),
            Ok(None) => return (metas, None),
            Err(e) => return (metas, Some(e.to_string())),
        }
    }
}

struct Diffs {
    file: String,
    frame: usize,
    out: Vec<(String, String)>,
    /// Field comparisons actually made (tshark had a value).
    compared: usize,
}

impl Diffs {
    fn add(&mut self, field: &str, detail: String) {
        self.out
            .push((format!("{} #{} {}", self.file, self.frame, field), detail));
    }

    fn check<T: PartialEq + std::fmt::Debug>(
        &mut self,
        field: &str,
        ours: Option<T>,
        theirs: Option<T>,
        invalid: bool,
    ) {
        if theirs.is_some() {
            self.compared += 1;
        }
        match (ours, theirs) {
            (_, None) => {}
            (None, Some(_)) if invalid => {}
            (o, t) if o == t => {}
            (o, t) => self.add(field, format!("lbsim={o:?} tshark={t:?}")),
        }
    }
}

fn num<T: std::str::FromStr>(s: Option<&str>) -> Option<T> {
    let s = s?;
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16)
            .ok()
            .and_then(|v| v.to_string().parse().ok()),
        None => s.parse().ok(),
    }
}

fn compare_packet(d: &mut Diffs, meta: &PacketMeta, row: &Row<'_>) {
    let protocols = row.first("frame.protocols").unwrap_or("");
    let tokens: Vec<&str> = protocols.split(':').collect();
    let ip_at = tokens.iter().position(|t| *t == "ip" || *t == "ipv6");
    let invalid = meta.invalid.is_some();
    check_malformed(d, meta, row, &tokens, ip_at);
    check_checksums(d, meta, row);
    check_invalid_is_seen(d, meta, row, &tokens);
    check_vlans(d, meta, row, &tokens[..ip_at.unwrap_or(tokens.len())]);
    let Some(ip_at) = ip_at else {
        if meta.src.is_some() && !protocols.is_empty() {
            d.add("l3", format!("lbsim found IP, tshark layers {protocols}"));
        }
        return;
    };
    let v6 = tokens[ip_at] == "ipv6";
    let (src, dst, ttl) = if v6 {
        ("ipv6.src", "ipv6.dst", "ipv6.hlim")
    } else {
        ("ip.src", "ip.dst", "ip.ttl")
    };
    d.check(
        "src",
        meta.src,
        row.first(src).and_then(|s| s.parse::<IpAddr>().ok()),
        invalid,
    );
    d.check(
        "dst",
        meta.dst,
        row.first(dst).and_then(|s| s.parse::<IpAddr>().ok()),
        invalid,
    );
    d.check(
        "ttl",
        meta.src.map(|_| meta.ttl),
        num(row.first(ttl)),
        invalid,
    );
    let theirs_proto = if v6 {
        ipv6_upper_protocol(row, &tokens)
    } else {
        num(row.first("ip.proto"))
    };
    d.check("proto", meta.proto, theirs_proto, invalid);
    let l4_at = tokens[ip_at + 1..]
        .iter()
        .position(|t| !t.starts_with("ipv6."))
        .map(|i| i + ip_at + 1);
    match l4_at.map(|i| tokens[i]) {
        Some("tcp") => {
            d.check("sport", meta.sport, num(row.first("tcp.srcport")), invalid);
            d.check("dport", meta.dport, num(row.first("tcp.dstport")), invalid);
            let flags = num::<u16>(row.first("tcp.flags")).map(|f| (f & 0xff) as u8);
            let ours_flags = meta.sport.map(|_| meta.tcp_flags);
            d.check("tcp_flags", ours_flags, flags, invalid);
        }
        Some("udp") => {
            d.check("sport", meta.sport, num(row.first("udp.srcport")), invalid);
            d.check("dport", meta.dport, num(row.first("udp.dstport")), invalid);
        }
        Some("icmp") => d.check(
            "icmp_type",
            meta.icmp_type,
            num(row.first("icmp.type")),
            invalid,
        ),
        Some("icmpv6") => d.check(
            "icmp_type",
            meta.icmp_type,
            num(row.first("icmpv6.type")),
            invalid,
        ),
        _ => {}
    }
}

/// Upper-layer protocol of a single IPv6 header chain: the one next-header value that is not
/// an extension header. `None` (not compared) when the packet nests IPv6 in IPv6.
fn ipv6_upper_protocol(row: &Row<'_>, tokens: &[&str]) -> Option<u8> {
    if tokens.iter().filter(|t| **t == "ipv6").count() != 1 {
        return num(row.first("ipv6.nxt")).filter(|p| !IPV6_EXTENSIONS.contains(p));
    }
    let fields = [
        "ipv6.nxt",
        "ipv6.hopopts.nxt",
        "ipv6.routing.nxt",
        "ipv6.fraghdr.nxt",
        "ipv6.dstopts.nxt",
    ];
    let uppers: BTreeSet<u8> = fields
        .iter()
        .flat_map(|f| row.all(f))
        .filter_map(|v| num::<u8>(Some(v)))
        .filter(|p| !IPV6_EXTENSIONS.contains(p))
        .collect();
    if uppers.len() == 1 {
        uppers.first().copied()
    } else {
        None
    }
}

fn check_vlans(d: &mut Diffs, meta: &PacketMeta, row: &Row<'_>, link_tokens: &[&str]) {
    let (mut q, mut ad) = (
        row.all("vlan.id").into_iter(),
        row.all("ieee8021ad.id").into_iter(),
    );
    let mut expected = Vec::new();
    for token in link_tokens {
        let id = match *token {
            "vlan" => q.next(),
            "ieee8021ad" => ad.next(),
            _ => continue,
        };
        match id.and_then(|v| num::<u16>(Some(v))) {
            Some(id) => expected.push(id),
            None => return,
        }
    }
    if meta.invalid.is_some() && meta.vlans().len() < expected.len() {
        return;
    }
    if meta.vlans() != expected.as_slice() {
        d.add(
            "vlan",
            format!("lbsim={:?} tshark={expected:?}", meta.vlans()),
        );
    }
}

fn check_malformed(
    d: &mut Diffs,
    meta: &PacketMeta,
    row: &Row<'_>,
    tokens: &[&str],
    ip_at: Option<usize>,
) {
    let flagged = row.first("_ws.malformed").is_some() || tokens.contains(&"_ws.malformed");
    if !flagged || meta.invalid.is_some() {
        return;
    }
    let at = tokens
        .iter()
        .position(|t| *t == "_ws.malformed")
        .unwrap_or(tokens.len());
    let layer = at.checked_sub(1).map(|i| tokens[i]).unwrap_or("");
    let l4_end = ip_at.map(|i| i + 3).unwrap_or(usize::MAX);
    if OUR_LAYERS.contains(&layer) && at <= l4_end {
        d.add(
            "malformed",
            format!("tshark flags malformed in {layer}, lbsim valid"),
        );
    }
}

/// Both directions of the checksum verdict: a checksum tshark finds bad makes the packet
/// invalid here, and a packet lbsim calls bad_X_checksum has a checksum tshark finds bad.
fn check_checksums(d: &mut Diffs, meta: &PacketMeta, row: &Row<'_>) {
    let ours = meta.invalid.map(|r| r.name());
    for (field, reason) in CHECKSUMS {
        match row.first(field) {
            Some("0") if ours.is_none() => {
                d.add("checksum", format!("tshark {field} bad, lbsim valid"));
            }
            Some("1") if ours == Some(reason) => {
                d.add("checksum", format!("lbsim {reason}, tshark {field} good"));
            }
            Some(_) => d.compared += 1,
            None => {}
        }
    }
}

/// The other direction of the invalid verdict: a packet lbsim refuses for its structure
/// is one tshark also finds wrong (malformed, cut short, or a bad checksum).
fn check_invalid_is_seen(d: &mut Diffs, meta: &PacketMeta, row: &Row<'_>, tokens: &[&str]) {
    let Some(reason) = meta.invalid.map(|r| r.name()) else {
        return;
    };
    if !STRUCTURAL.contains(&reason) {
        return;
    }
    // Expert infos of severity error (PI_ERROR, 0x00800000).
    let expert_error = row
        .all("_ws.expert.severity")
        .iter()
        .any(|s| s.parse::<u32>().is_ok_and(|v| v >= 0x0080_0000));
    let cut_by_capture = matches!(
        (num::<u32>(row.first("frame.cap_len")), num::<u32>(row.first("frame.len"))),
        (Some(captured), Some(length)) if captured < length
    );
    let seen = row.first("_ws.malformed").is_some()
        || tokens.contains(&"_ws.malformed")
        || expert_error
        || cut_by_capture
        || CHECKSUMS.iter().any(|(f, _)| row.first(f) == Some("0"));
    if !seen {
        d.add(
            "invalid",
            format!("lbsim invalid:{reason}, tshark dissects it without error"),
        );
    }
}

fn compare_file(path: &Path) -> (Vec<(String, String)>, usize) {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let tshark = run_tshark(path);
    let (metas, error) = ours(path);
    let mut diffs = Diffs {
        file: file.clone(),
        frame: 0,
        out: Vec::new(),
        compared: 0,
    };
    // tshark shows pcapng custom blocks as frames of bare "data" with no interface; they are
    // not packets.
    let rows: Vec<Row<'_>> = tshark
        .lines()
        .map(|l| Row {
            values: l.split('|').collect(),
        })
        .filter(|r| {
            !(r.first("frame.protocols") == Some("data")
                && r.first("frame.interface_id").is_none()
                && is_pcapng(path))
        })
        .collect();
    if rows.len() != metas.len() {
        diffs.add(
            "count",
            format!(
                "lbsim={} tshark={} error={error:?}",
                metas.len(),
                rows.len()
            ),
        );
    }
    for (i, (meta, row)) in metas.iter().zip(&rows).enumerate() {
        diffs.frame = i + 1;
        compare_packet(&mut diffs, meta, row);
    }
    (diffs.out, diffs.compared)
}

fn is_pcapng(path: &Path) -> bool {
    CaptureReader::open(path).is_ok_and(|r| r.format() == sim::capture::Format::PcapNg)
}

fn load_known() -> BTreeSet<String> {
    let text = std::fs::read_to_string(known_differences_path()).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, why) = l
                .split_once(" # ")
                .unwrap_or_else(|| panic!("no justification: {l}"));
            assert!(!why.trim().is_empty(), "empty justification: {l}");
            key.trim().to_string()
        })
        .collect()
}

#[test]
fn fields_agree_with_tshark_on_the_real_corpus() {
    if Command::new("tshark").arg("--version").output().is_err() {
        if std::env::var("LBSIM_SKIP_TSHARK").as_deref() == Ok("1") {
            eprintln!("SKIPPED: tshark not installed (LBSIM_SKIP_TSHARK=1)");
            return;
        }
        panic!("tshark is not installed: apt-get install tshark (or set LBSIM_SKIP_TSHARK=1)");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("../shared/corpus/real exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 90,
        "corpus incomplete: {} files",
        files.len()
    );
    let chunks: Vec<Vec<PathBuf>> = (0..4)
        .map(|k| files.iter().skip(k).step_by(4).cloned().collect())
        .collect();
    let results: Vec<(Vec<(String, String)>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || chunk.iter().map(|p| compare_file(p)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let compared: usize = results.iter().map(|(_, n)| n).sum();
    let mut found: Vec<(String, String)> = results.into_iter().flat_map(|(d, _)| d).collect();
    eprintln!("compared {compared} fields with tshark");
    // The corpus holds ~150k packets; far fewer comparisons means the harness broke.
    assert!(
        compared > 100_000,
        "only {compared} field comparisons were made"
    );
    found.sort();
    let known = load_known();
    let found_keys: BTreeSet<String> = found.iter().map(|(k, _)| k.clone()).collect();
    let unlisted: Vec<String> = found
        .iter()
        .filter(|(k, _)| !known.contains(k))
        .map(|(k, detail)| format!("{k}  ({detail})"))
        .collect();
    let stale: Vec<&String> = known.iter().filter(|k| !found_keys.contains(*k)).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "{} unlisted disagreements:\n{}\n{} listed but no longer occurring:\n{}",
        unlisted.len(),
        unlisted.join("\n"),
        stale.len(),
        stale
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
