//! The reference pages stay true to the code:
//! - `docs/config-reference.md` lists, table by table, exactly the keys the scenario and
//!   appliance parsers accept: each table's list is read from the parser itself (an unknown
//!   key is refused with "expected one of …", the list `deny_unknown_fields` checks against).
//! - `docs/flowmgr.md`: every ```` ```flowmgr PATH ```` block is that file, verbatim, and
//!   parses; every `$ sim …` line of a ```` ```console ```` block prints exactly what follows
//!   it (stdout, then stderr).
//!
//! `UPDATE_DOCS=1 cargo test -p sim --test scenarios_reference` rewrites the flowmgr page's
//! blocks and outputs from the current files and binary (review the diff like code).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repository().join(relative)).unwrap()
}

const BASE: &str = "name = \"keys\"\nseed = 1\nduration = \"10ms\"\n";

/// (doc heading marker, TOML after [`BASE`] with one unknown key `zzz_unknown` in the
/// table whose keys are wanted).
fn tables() -> Vec<(&'static str, String)> {
    let mut cases: Vec<(&'static str, String)> = vec![
        ("Scenario: top level", "zzz_unknown = 1".into()),
        ("`[topology]`", "[topology]\nzzz_unknown = 1".into()),
        (
            "`[[topology.network]]`",
            "[[topology.network]]\nzzz_unknown = 1".into(),
        ),
        (
            "`[[topology.backend]]`",
            "[[topology.backend]]\nzzz_unknown = 1".into(),
        ),
        (
            "`link = { … }`",
            "[[topology.network]]\nlink = { zzz_unknown = 1 }".into(),
        ),
        (
            "`burst = { … }`",
            "[[traffic]]\nkind = \"syn_flood\"\nburst = { zzz_unknown = 1 }".into(),
        ),
        ("`[expect]`", "[expect]\nzzz_unknown = 1".into()),
        (
            "`[[expect.source]]`",
            "[[expect.source]]\nzzz_unknown = 1".into(),
        ),
        ("`[cpu]`", "[cpu]\nzzz_unknown = 1".into()),
        ("`[cpu.ns]`", "[cpu.ns]\nzzz_unknown = 1".into()),
    ];
    cases.extend(appliance_tables());
    cases.extend(kinds());
    cases
}

/// The appliance's tables, as a scenario's `[appliance]` holds them.
fn appliance_tables() -> Vec<(&'static str, String)> {
    vec![
        (
            "Appliance: top level",
            "[appliance]\nzzz_unknown = 1".into(),
        ),
        ("`[shield]`", "[appliance.shield]\nzzz_unknown = 1".into()),
        (
            "`[[shield.context]]`",
            "[[appliance.shield.context]]\nzzz_unknown = 1".into(),
        ),
        (
            "`[[shield.context]]`",
            "[appliance.shield.default]\nzzz_unknown = 1".into(),
        ),
        (
            "`[shield.thresholds]`",
            "[appliance.shield.thresholds]\nzzz_unknown = 1".into(),
        ),
        (
            "`[[shield.instance]]`",
            "[[appliance.shield.instance]]\nzzz_unknown = 1".into(),
        ),
        (
            "`[[director]]`",
            "[[appliance.director]]\nzzz_unknown = 1".into(),
        ),
        (
            "`real = [{ … }]`",
            "[[appliance.director]]\nreal = [{ zzz_unknown = 1 }]".into(),
        ),
        ("`[[nat]]`", "[[appliance.nat]]\nzzz_unknown = 1".into()),
        (
            "`[[health_check]]`",
            "[[appliance.health_check]]\nzzz_unknown = 1".into(),
        ),
        ("`[ip]`", "[appliance.ip]\nzzz_unknown = 1".into()),
        (
            "`[[ip.table]]`",
            "[[appliance.ip.table]]\nzzz_unknown = 1".into(),
        ),
        (
            "`[[ip.table.route]]`",
            "[[appliance.ip.table]]\nid = 100\n[[appliance.ip.table.route]]\nzzz_unknown = 1"
                .into(),
        ),
        (
            "`[ip_vs_ftp]`",
            "[appliance.ip_vs_ftp]\nzzz_unknown = 1".into(),
        ),
        ("`[qa]`", "[appliance.qa]\nzzz_unknown = 1".into()),
        (
            "`full_after = { … }`",
            "[appliance.qa]\nfull_after = { zzz_unknown = 1 }".into(),
        ),
    ]
}

/// Each `kind` of `[[traffic]]` and `[[events]]`.
fn kinds() -> Vec<(&'static str, String)> {
    let mut cases = Vec::new();
    for (marker, kind) in [
        ("`[[traffic]] kind = \"pcap\"`", "pcap"),
        ("`[[traffic]]` floods", "syn_flood"),
        ("`[[traffic]]` floods", "ack_flood"),
        ("`[[traffic]]` floods", "udp_flood"),
        ("`[[traffic]]` floods", "icmp_flood"),
        ("`[[traffic]] kind = \"tcp_clients\"`", "tcp_clients"),
        ("`[[traffic]] kind = \"udp_clients\"`", "udp_clients"),
        ("`[[traffic]] kind = \"ftp_clients\"`", "ftp_clients"),
    ] {
        cases.push((
            marker,
            format!("[[traffic]]\nkind = \"{kind}\"\nzzz_unknown = 1"),
        ));
    }
    for (marker, kind) in [
        ("`[[events]] kind = \"server_down\"`", "server_down"),
        ("`[[events]] kind = \"server_up\"`", "server_up"),
        ("`[[events]] kind = \"weight\"`", "weight"),
        ("`[[events]] kind = \"check_fail\"`", "check_fail"),
        ("`[[events]] kind = \"check_ok\"`", "check_ok"),
        ("`[[events]] kind = \"mode\"`", "mode"),
        ("`[[events]] kind = \"link\"`", "link"),
    ] {
        cases.push((
            marker,
            format!("[[events]]\nkind = \"{kind}\"\nzzz_unknown = 1"),
        ));
    }
    cases
}

/// The keys the parser lists when it refuses `zzz_unknown` in this scenario text.
fn accepted_keys(toml: &str) -> BTreeSet<String> {
    let text = format!("{BASE}{toml}\n");
    let error = match sim::scenario::parse(Path::new("keys.toml"), &text) {
        Ok(_) => panic!("`zzz_unknown` accepted in:\n{text}"),
        Err(error) => error.to_string(),
    };
    let list = error
        .split_once("unknown field `zzz_unknown`, expected ")
        .map(|(_, list)| list)
        .unwrap_or_else(|| panic!("no key list in the error for:\n{text}\n{error}"));
    let list = list.strip_prefix("one of ").unwrap_or(list);
    // serde: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
    let list = list.lines().next().unwrap_or("").replace("` or `", "`, `");
    list.split(", ")
        .map(|word| word.trim().trim_matches('`').to_string())
        .filter(|word| !word.is_empty())
        .collect()
}

/// The keys of the section of `page` whose heading contains `marker`: the first column of
/// its tables (`| \`key\` | …`), up to the next heading of the same or a higher level.
fn documented_keys(page: &str, marker: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = page.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with('#') && l.contains(marker))
        .unwrap_or_else(|| panic!("docs/config-reference.md has no heading with {marker}"));
    let level = lines[start].chars().take_while(|&c| c == '#').count();
    lines[start + 1..]
        .iter()
        .take_while(|l| {
            !(l.starts_with('#') && l.chars().take_while(|&c| c == '#').count() <= level)
        })
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(key, _)| key.to_string()))
        .collect()
}

#[test]
fn the_key_reference_lists_exactly_the_keys_the_parsers_accept() {
    let page = read("docs/config-reference.md");
    let mut checked = 0;
    for (marker, toml) in tables() {
        let parser = accepted_keys(&toml);
        let documented = documented_keys(&page, marker);
        let missing: Vec<_> = parser.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "docs/config-reference.md, section {marker}: keys the parser accepts but the page misses: {missing:?}"
        );
        // `kind` selects the variant of `[[traffic]]` / `[[events]]` (the parser's list is
        // the variant's own keys).
        let stale: Vec<_> = documented
            .difference(&parser)
            .filter(|key| *key != "kind")
            .collect();
        assert!(
            stale.is_empty(),
            "docs/config-reference.md, section {marker}: keys the parser refuses: {stale:?}"
        );
        checked += parser.len();
    }
    assert!(checked > 200, "only {checked} keys checked");
}

/// A fenced block of the flowmgr page: its info string, its first and last line indices
/// (exclusive of the fences).
struct Block {
    info: String,
    body: std::ops::Range<usize>,
}

fn blocks(lines: &[String]) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (index, line) in lines.iter().enumerate() {
        match (&open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_string(), index + 1)),
            (Some((info, first)), Some(_)) => {
                found.push(Block {
                    info: info.clone(),
                    body: *first..index,
                });
                open = None;
            }
            _ => {}
        }
    }
    found
}

/// Split a command line: words separated by spaces, single quotes group.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in command.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            _ => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// What `$ sim ARGS` prints: stdout then stderr, trailing blank lines removed.
fn run(command: &str) -> Vec<String> {
    let arguments = words(command);
    assert_eq!(arguments[0], "sim", "{command}");
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(&arguments[1..])
        .current_dir(repository())
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// The expected form of a block: for a flowmgr file, the file; for a console block, each
/// command followed by its output.
fn expected_body(block: &Block, lines: &[String]) -> Option<Vec<String>> {
    let mut info = block.info.split_whitespace();
    match (info.next(), info.next()) {
        (Some("flowmgr"), Some(path)) => {
            let text = read(path);
            datapath::flows::parse(&text)
                .unwrap_or_else(|errors| panic!("{path} does not parse: {errors:?}"));
            Some(text.lines().map(str::to_string).collect())
        }
        (Some("console"), None) => {
            let mut body = Vec::new();
            for line in &lines[block.body.clone()] {
                if let Some(command) = line.strip_prefix("$ ") {
                    body.push(line.clone());
                    body.extend(run(command));
                }
            }
            Some(body)
        }
        _ => None,
    }
}

#[test]
fn the_flowmgr_page_shows_the_real_files_and_outputs() {
    let path = repository().join("docs/flowmgr.md");
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let update = std::env::var_os("UPDATE_DOCS").is_some();
    let mut rewritten: Vec<String> = Vec::new();
    let mut copied = 0;
    let mut checked = 0;
    for block in blocks(&lines) {
        let Some(expected) = expected_body(&block, &lines) else {
            continue;
        };
        checked += 1;
        rewritten.extend_from_slice(&lines[copied..block.body.start]);
        if update {
            rewritten.extend(expected);
        } else {
            assert_eq!(
                lines[block.body.clone()].join("\n"),
                expected.join("\n"),
                "docs/flowmgr.md block at line {} (```{}) no longer matches; UPDATE_DOCS=1 rewrites it",
                block.body.start,
                block.info
            );
        }
        copied = block.body.end;
    }
    assert!(checked >= 8, "only {checked} blocks checked");
    if update {
        rewritten.extend_from_slice(&lines[copied..]);
        std::fs::write(&path, rewritten.join("\n") + "\n").unwrap();
    }
}
