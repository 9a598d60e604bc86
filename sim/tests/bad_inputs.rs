//! The table of bad inputs in `docs/bad-inputs.md`: every row is an input run through the
//! real `sim` binary, and the doc must show what it prints now — exit code and the error
//! lines — so the doc cannot drift. `UPDATE_DOCS=1 cargo test -p sim --test bad_inputs`
//! rewrites the doc from the current behaviour (review the diff like code).
//!
//! Inputs are small files in `sim/tests/data/bad-inputs/`, written by [`write_inputs`]
//! (deterministic bytes; written when missing or with `UPDATE_DOCS`), scenario files
//! from `scenarios/invalid/`, and environments (no root, `PATH` without `nft`) built here.

use std::path::{Path, PathBuf};
use std::process::Command;

use datapath::packet::builder::PacketBuilder;

/// One row of the table.
struct Case {
    /// What is wrong with the input.
    input: &'static str,
    /// `sim` arguments, relative to the repository root.
    args: Vec<&'static str>,
    /// Stdout lines worth showing (by prefix); stderr is always shown.
    stdout_prefixes: &'static [&'static str],
    /// Runs in a special environment.
    environment: Environment,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Environment {
    Normal,
    /// As an unprivileged user (needs root to switch, `setpriv`).
    NotRoot,
    /// With a `PATH` holding only `ip` and `sh` (no `nft`, no `iptables`).
    PathWithoutNft,
    /// With a `PATH` holding what the kernel runner needs, but no `ethtool` nor `ipvsadm`.
    PathWithoutEthtool,
}

const SUMMARY: &[&str] = &["Actual:", "Invalid:"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad-inputs")
}

fn pcap_header() -> Vec<u8> {
    let mut header = Vec::new();
    header.extend(0xa1b2_c3d4u32.to_le_bytes());
    header.extend(2u16.to_le_bytes());
    header.extend(4u16.to_le_bytes());
    header.extend([0u8; 8]);
    header.extend(65_535u32.to_le_bytes());
    header.extend(1u32.to_le_bytes());
    header
}

fn pcap_record(frame: &[u8], caplen: u32) -> Vec<u8> {
    let mut record = Vec::new();
    for value in [1, 0, caplen, frame.len() as u32] {
        record.extend(u32::to_le_bytes(value));
    }
    record.extend(frame);
    record
}

fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut file = pcap_header();
    for frame in frames {
        file.extend(pcap_record(frame, frame.len() as u32));
    }
    file
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let length = (12 + body.len()) as u32;
    let mut block = kind.to_le_bytes().to_vec();
    block.extend(length.to_le_bytes());
    block.extend(body);
    block.extend(length.to_le_bytes());
    block
}

fn pcapng(packets: usize) -> Vec<u8> {
    let mut section = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    section.extend([1, 0, 0, 0]);
    section.extend((-1i64).to_le_bytes());
    let mut file = pcapng_block(0x0a0d_0d0a, &section);
    let mut interface = 1u16.to_le_bytes().to_vec();
    interface.extend([0, 0]);
    interface.extend(65_535u32.to_le_bytes());
    file.extend(pcapng_block(1, &interface));
    for _ in 0..packets {
        let frame = syn();
        let mut body = Vec::new();
        for value in [0, 0, 0, frame.len() as u32, frame.len() as u32] {
            body.extend(u32::to_le_bytes(value));
        }
        body.extend(&frame);
        body.resize(body.len().next_multiple_of(4), 0);
        file.extend(pcapng_block(6, &body));
    }
    file
}

fn syn() -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4([198, 51, 100, 7].into(), [192, 0, 2, 10].into())
        .tcp(40_000, 80)
        .syn()
        .build()
}

fn malformed_frames() -> Vec<Vec<u8>> {
    let tcp = || {
        PacketBuilder::eth()
            .ipv4([198, 51, 100, 7].into(), [192, 0, 2, 10].into())
            .tcp(40_000, 80)
    };
    let mut bad_ip_checksum = syn();
    bad_ip_checksum[24] ^= 0xff;
    let mut bad_tcp_checksum = syn();
    let last = bad_tcp_checksum.len() - 1;
    bad_tcp_checksum[last] ^= 0x01;
    bad_tcp_checksum[50] ^= 0xff;
    vec![
        syn(),
        tcp().flags(0).build(),
        tcp().flags(0x03).build(),
        bad_ip_checksum,
        bad_tcp_checksum,
        syn()[..30].to_vec(),
        PacketBuilder::eth()
            .ipv4([198, 51, 100, 7].into(), [192, 0, 2, 10].into())
            .udp(0, 53)
            .build(),
    ]
}

/// Write every generated input (deterministic bytes).
fn write_inputs() {
    let dir = data();
    std::fs::create_dir_all(&dir).unwrap();
    // Committed files are kept as they are (the gzip bytes depend on the compressor's
    // version); `UPDATE_DOCS` rewrites them.
    let rewrite = std::env::var_os("UPDATE_DOCS").is_some();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        if rewrite || !path.exists() {
            std::fs::write(path, bytes).unwrap();
        }
    };
    let good = pcap(&[syn(), syn(), syn()]);
    write("empty.pcap", b"");
    write("text.pcap", b"this is not a capture\n");
    write("short-header.pcap", &good[..10]);
    write("truncated-record.pcap", &good[..good.len() - 20]);
    let mut huge = pcap(&[syn()]);
    huge.extend(pcap_record(&syn(), 0x7fff_ffff));
    write("huge-caplen.pcap", &huge);
    let mut bad_magic = good.clone();
    bad_magic[0] = 0x00;
    write("bad-magic.pcap", &bad_magic);
    write(
        "garbage.pcap.gz",
        &[&[0x1f, 0x8b, 0x08, 0x00][..], &[0x5a; 60]].concat(),
    );
    let many: Vec<Vec<u8>> = (0..2000u16)
        .map(|n| {
            PacketBuilder::eth()
                .ipv4(
                    [198, 51, 100, (n % 250) as u8].into(),
                    [192, 0, 2, 10].into(),
                )
                .tcp(1000 + n, 80)
                .syn()
                .build()
        })
        .collect();
    let compressed = gzip(&pcap(&many));
    write("truncated.pcap.gz", &compressed[..compressed.len() / 2]);
    let ng = pcapng(2);
    write("truncated-block.pcapng", &ng[..ng.len() - 10]);
    let mut bad_length = pcapng(1);
    bad_length.extend([6, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
    write("bad-block-length.pcapng", &bad_length);
    let mut no_interface = pcapng(1);
    no_interface.drain(28..48);
    write("packet-before-interface.pcapng", &no_interface);
    write("malformed-packets.pcap", &pcap(&malformed_frames()));
    write(
        "unknown-keyword.flowmgr",
        b"flow web permit\n  match proto tcp dstport 80\n  allow everything\n",
    );
    write(
        "bad-prefix.flowmgr",
        b"flow web permit\n  match src 10.0.0.300/8\n",
    );
    write(
        "rule-outside-flow.flowmgr",
        b"  match proto tcp\nflow web permit\n",
    );
    write(
        "bad-port-range.flowmgr",
        b"flow web permit\n  match proto tcp dstport 90:80\n",
    );
    write(
        "unknown-appliance-key.toml",
        b"flows = \"x.flowmgr\"\nshields = 3\n",
    );
    write("bad-scheduler.toml", b"[[director]]\nname = \"web\"\nvip = \"192.0.2.10\"\nport = 80\nproto = \"tcp\"\nscheduler = \"fastest\"\n");
    write(
        "zero-port-director.toml",
        b"[[director]]\nname = \"any\"\nvip = \"192.0.2.10\"\nport = 0\nscheduler = \"rr\"\nreal = [{ addr = \"10.0.1.2\" }]\n",
    );
    write(
        "unknown-qa-table.toml",
        b"[qa]\nfull_after = { sessions = 5 }\n",
    );
    write(
        "bad-shield-capacity.toml",
        b"[shield]\nsession_table_capacity = 3\n",
    );
}

fn cases() -> Vec<Case> {
    let replay = |input, file| Case {
        input,
        args: vec!["replay", file],
        stdout_prefixes: SUMMARY,
        environment: Environment::Normal,
    };
    let plain = |input, args: Vec<&'static str>| Case {
        input,
        args,
        stdout_prefixes: &[],
        environment: Environment::Normal,
    };
    let appliance = |input, file| Case {
        input,
        args: vec![
            "replay",
            "--appliance",
            file,
            "sim/tests/data/bad-inputs/empty.pcap",
        ],
        stdout_prefixes: &[],
        environment: Environment::Normal,
    };
    vec![
        replay("empty file", "sim/tests/data/bad-inputs/empty.pcap"),
        replay("text, not a capture", "sim/tests/data/bad-inputs/text.pcap"),
        replay(
            "pcap: file ends inside the global header",
            "sim/tests/data/bad-inputs/short-header.pcap",
        ),
        replay(
            "pcap: bad magic number",
            "sim/tests/data/bad-inputs/bad-magic.pcap",
        ),
        replay(
            "pcap: last record truncated",
            "sim/tests/data/bad-inputs/truncated-record.pcap",
        ),
        replay(
            "pcap: record claims 2 GB captured",
            "sim/tests/data/bad-inputs/huge-caplen.pcap",
        ),
        replay(
            "gzip magic, garbage after it",
            "sim/tests/data/bad-inputs/garbage.pcap.gz",
        ),
        replay(
            "gzip of a pcap, cut short",
            "sim/tests/data/bad-inputs/truncated.pcap.gz",
        ),
        replay(
            "pcapng: last block truncated",
            "sim/tests/data/bad-inputs/truncated-block.pcapng",
        ),
        replay(
            "pcapng: block length 7 (not a multiple of 4, below 12)",
            "sim/tests/data/bad-inputs/bad-block-length.pcapng",
        ),
        replay(
            "pcapng: packet before any interface description",
            "sim/tests/data/bad-inputs/packet-before-interface.pcapng",
        ),
        replay(
            "missing file",
            "sim/tests/data/bad-inputs/no-such-file.pcap",
        ),
        replay(
            "malformed packets (no TCP flags, SYN+FIN, bad IPv4 / TCP checksum, truncated, port 0): counted invalid, with reason",
            "sim/tests/data/bad-inputs/malformed-packets.pcap",
        ),
        plain(
            "flowmgr: unknown keyword",
            vec![
                "flows",
                "check",
                "sim/tests/data/bad-inputs/unknown-keyword.flowmgr",
            ],
        ),
        plain(
            "flowmgr: bad prefix",
            vec![
                "flows",
                "check",
                "sim/tests/data/bad-inputs/bad-prefix.flowmgr",
            ],
        ),
        plain(
            "flowmgr: rule before any flow",
            vec![
                "flows",
                "check",
                "sim/tests/data/bad-inputs/rule-outside-flow.flowmgr",
            ],
        ),
        plain(
            "flowmgr: reversed port range",
            vec![
                "flows",
                "check",
                "sim/tests/data/bad-inputs/bad-port-range.flowmgr",
            ],
        ),
        appliance(
            "appliance: unknown key",
            "sim/tests/data/bad-inputs/unknown-appliance-key.toml",
        ),
        appliance(
            "appliance: unknown scheduler",
            "sim/tests/data/bad-inputs/bad-scheduler.toml",
        ),
        appliance(
            "appliance: non-persistent director on port 0 (IPVS refuses it)",
            "sim/tests/data/bad-inputs/zero-port-director.toml",
        ),
        appliance(
            "appliance: unknown `[qa] full_after` table",
            "sim/tests/data/bad-inputs/unknown-qa-table.toml",
        ),
        appliance(
            "appliance: shield table capacity out of range",
            "sim/tests/data/bad-inputs/bad-shield-capacity.toml",
        ),
        plain(
            "scenario: unknown key",
            vec!["run", "scenarios/invalid/unknown_key.toml"],
        ),
        plain(
            "scenario: bad duration",
            vec!["run", "scenarios/invalid/bad_duration.toml"],
        ),
        plain(
            "scenario: bad prefix",
            vec!["run", "scenarios/invalid/bad_prefix.toml"],
        ),
        plain(
            "scenario: unknown traffic kind",
            vec!["run", "scenarios/invalid/unknown_traffic_kind.toml"],
        ),
        plain(
            "scenario: unknown appliance key",
            vec!["run", "scenarios/invalid/unknown_appliance_key.toml"],
        ),
        plain(
            "scenario: port out of range in the second `[[traffic]]` table",
            vec!["run", "scenarios/invalid/second_source_bad_dst.toml"],
        ),
        plain(
            "scenario: misspelt key in the second `[[traffic]]` table",
            vec!["run", "scenarios/invalid/second_source_unknown_key.toml"],
        ),
        plain(
            "scenario: wrong type in the second `[[traffic]]` table",
            vec!["run", "scenarios/invalid/second_source_bad_type.toml"],
        ),
        plain(
            "scenario: weight event naming an unknown director",
            vec!["run", "scenarios/invalid/event_unknown_director.toml"],
        ),
        plain(
            "scenario: server_down event naming a server the director does not have",
            vec!["run", "scenarios/invalid/event_unknown_server.toml"],
        ),
        plain(
            "scenario: mode event naming an unknown shield context",
            vec!["run", "scenarios/invalid/event_unknown_context.toml"],
        ),
        plain(
            "scenario: negative weight in the second `[[appliance.director]]`",
            vec!["run", "scenarios/invalid/appliance_bad_real.toml"],
        ),
        plain(
            "scenario: two networks with the same prefix",
            vec!["run", "scenarios/invalid/duplicate_prefix.toml"],
        ),
        plain(
            "`sim run --packets -` (stdout carries the summary)",
            vec!["run", "scenarios/synflood.toml", "--packets", "-"],
        ),
        plain(
            "`sim run --packets` into a missing directory (refused before the run)",
            vec![
                "run",
                "scenarios/synflood.toml",
                "--packets",
                "no/such/dir/packets.jsonl",
            ],
        ),
        Case {
            input: "kernel runner: not root",
            args: vec!["kernel", "check"],
            stdout_prefixes: &[],
            environment: Environment::NotRoot,
        },
        Case {
            input: "kernel runner: `PATH` without `nft` (only `ip` and `sh`)",
            args: vec!["kernel", "up"],
            stdout_prefixes: &[],
            environment: Environment::PathWithoutNft,
        },
        Case {
            input: "kernel runner: `PATH` without `ethtool` (`sim inline` needs it)",
            args: vec!["kernel", "check"],
            stdout_prefixes: &["ok: root", "missing: sim inline"],
            environment: Environment::PathWithoutEthtool,
        },
    ]
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A directory holding only `ip` and `sh`, for a `PATH` without `nft`.
fn path_without_nft() -> PathBuf {
    path_with("nft", &["ip", "sh"])
}

/// A directory holding `tools` only (symlinks), named after what it lacks.
fn path_with(lacking: &str, tools: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lbsim-bad-inputs-path-{}-no-{lacking}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for &tool in tools {
        let link = dir.join(tool);
        if !link.exists() {
            let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{tool} is installed"));
            std::os::unix::fs::symlink(found, &link).unwrap();
        }
    }
    dir
}

/// Run a case; `None` when this machine cannot set up its environment.
fn run(case: &Case) -> Option<(i32, String)> {
    let binary = env!("CARGO_BIN_EXE_sim");
    let mut command = match case.environment {
        Environment::NotRoot if is_root() => {
            let mut command = Command::new("setpriv");
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups", binary]);
            command
        }
        Environment::PathWithoutNft | Environment::PathWithoutEthtool if !is_root() => {
            return None;
        }
        _ => Command::new(binary),
    };
    command.args(&case.args).current_dir(repository());
    if case.environment == Environment::PathWithoutNft {
        command.env("PATH", path_without_nft());
    }
    if case.environment == Environment::PathWithoutEthtool {
        let tools = ["ip", "sh", "nft", "iptables-restore"];
        command.env("PATH", path_with("ethtool", &tools));
    }
    let output = command.output().expect("run sim");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut lines = Vec::new();
    let mut in_kept_section = false;
    for line in stdout.lines() {
        // A kept line and the indented lines under it (the invalid reasons).
        let kept = case.stdout_prefixes.iter().any(|p| line.starts_with(p));
        if kept || (in_kept_section && line.starts_with("  ")) {
            lines.push(line.to_string());
        }
        in_kept_section = kept || (in_kept_section && line.starts_with("  "));
    }
    lines.extend(
        stderr
            .lines()
            .filter(|line| !line.starts_with("measured:") && !line.trim().is_empty())
            .map(str::to_string),
    );
    Some((output.status.code().unwrap_or(-1), lines.join("\n")))
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            format!("{}{}", "&nbsp;".repeat(indent), line.trim_start())
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

const PREAMBLE: &str = "# Bad inputs and what `sim` says about them

Every row is run through the real `sim` binary by `sim/tests/bad_inputs.rs`, which fails when
this table no longer matches what the code prints (exit code, error lines on stderr, and for
replays the packet-count lines of the summary). Regenerate it after a deliberate change with
`UPDATE_DOCS=1 cargo test -p sim --test bad_inputs` and review the diff. The inputs are in
`sim/tests/data/bad-inputs/` (written by the test) and `scenarios/invalid/`.

The rule they show: no input crashes `sim`; a damaged capture is read up to the damage (every
packet before it is processed and counted) and the error names the packet index and byte
offset; configuration errors name file, line and column; malformed packets are not errors but
counted outcomes (`invalid:<reason>`); the kernel runner refuses to start without what it
needs and leaves nothing behind.

| Input | Command | Exit | What `sim` prints |
|---|---|---|---|
";

fn row(input: &str, command: &str, code: i32, output: &str) -> String {
    format!(
        "| {} | `{}` | {code} | {} |\n",
        cell(input),
        command.replace('|', "\\|"),
        cell(output)
    )
}

#[test]
fn the_bad_inputs_doc_matches_what_sim_prints() {
    write_inputs();
    let doc_path = repository().join("docs/bad-inputs.md");
    let current = std::fs::read_to_string(&doc_path).unwrap_or_default();
    let mut rows = Vec::new();
    for case in cases() {
        let command = format!("sim {}", case.args.join(" "));
        let Some((code, output)) = run(&case) else {
            // This machine cannot build the environment: keep the documented row.
            let documented = current
                .lines()
                .find(|line| line.starts_with(&format!("| {} |", cell(case.input))))
                .expect("a documented row for every case");
            rows.push(format!("{documented}\n"));
            continue;
        };
        assert!(
            code >= 0,
            "{command}: killed by a signal (a crash)\n{output}"
        );
        assert!(
            !output.contains("panicked"),
            "{command} panicked:\n{output}"
        );
        rows.push(row(case.input, &command, code, &output));
    }
    let generated = format!("{PREAMBLE}{}", rows.concat());
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(doc_path.parent().unwrap()).unwrap();
        std::fs::write(&doc_path, &generated).unwrap();
        return;
    }
    assert_eq!(
        current, generated,
        "docs/bad-inputs.md is out of date: run UPDATE_DOCS=1 cargo test -p sim --test bad_inputs"
    );
}
