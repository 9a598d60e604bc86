//! Compare a case's actual results with its expectations and render the differences for a
//! reader: one section per counter table (`key  expected → actual`), then the first packets
//! whose verdict moved, decoded one per line.
//!
//! Not here: running the case or rewriting its file.

use std::collections::{BTreeMap, BTreeSet};

use super::case::{Expected, expand_verdicts};
use super::execute::Actual;

/// At most this many differing packets are listed.
pub const MAX_PACKETS_SHOWN: usize = 10;

/// The differences between `expected` and `actual`, as indented lines (empty: they agree).
/// Per-packet verdicts are compared only when the case lists them.
pub fn compare(expected: &Expected, actual: &Actual) -> Vec<String> {
    let got = &actual.results;
    let mut lines = Vec::new();
    compare_error(expected.error.as_deref(), got.error.as_deref(), &mut lines);
    if expected.packets != got.packets {
        lines.push(format!(
            "  packets: expected {}, got {}",
            expected.packets, got.packets
        ));
    }
    let tables = [
        ("decisions", &expected.decisions, &got.decisions),
        ("flows", &expected.flows, &got.flows),
        ("backends", &expected.backends, &got.backends),
        ("shield", &expected.shield, &got.shield),
    ];
    for (name, want, have) in tables {
        compare_table(name, want, have, &mut lines);
    }
    if let Some(runs) = &expected.verdicts {
        compare_packets(runs, actual, &mut lines);
    }
    lines
}

fn compare_error(expected: Option<&str>, actual: Option<&str>, lines: &mut Vec<String>) {
    let indent = |text: &str| text.replace('\n', "\n      ");
    match (expected, actual) {
        (None, None) => {}
        (Some(want), Some(have)) if have.contains(want) => {}
        (Some(want), have) => {
            lines.push(format!(
                "  error: expected an error containing\n      {}",
                indent(want)
            ));
            match have {
                Some(have) => lines.push(format!("    got\n      {}", indent(have))),
                None => lines.push("    got no error".to_string()),
            }
        }
        (None, Some(have)) => {
            lines.push(format!(
                "  error: expected none, got\n      {}",
                indent(have)
            ));
        }
    }
}

fn compare_table(
    name: &str,
    expected: &BTreeMap<String, u64>,
    actual: &BTreeMap<String, u64>,
    lines: &mut Vec<String>,
) {
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let rows: Vec<(&String, Option<&u64>, Option<&u64>)> = keys
        .into_iter()
        .map(|key| (key, expected.get(key), actual.get(key)))
        .filter(|(_, want, have)| want != have)
        .collect();
    if rows.is_empty() {
        return;
    }
    lines.push(format!("  {name} (expected → actual):"));
    let width = rows.iter().map(|(key, ..)| key.len()).max().unwrap_or(0);
    let show = |value: Option<&u64>| value.map_or("-".to_string(), u64::to_string);
    for (key, want, have) in rows {
        lines.push(format!(
            "    {key:<width$}  {:>7} → {}",
            show(want),
            show(have)
        ));
    }
}

fn compare_packets(runs: &[String], actual: &Actual, lines: &mut Vec<String>) {
    let expected = match expand_verdicts(runs) {
        Ok(expected) => expected,
        Err(error) => {
            lines.push(format!("  verdicts: {error}"));
            return;
        }
    };
    let total = expected.len().max(actual.packets.len());
    let differing: Vec<usize> = (0..total)
        .filter(|&i| expected.get(i) != actual.packets.get(i).map(|p| &p.label))
        .collect();
    if differing.is_empty() {
        return;
    }
    lines.push(format!(
        "  packets whose verdict moved ({} of {total}{}):",
        differing.len(),
        if differing.len() > MAX_PACKETS_SHOWN {
            format!(", first {MAX_PACKETS_SHOWN} shown")
        } else {
            String::new()
        }
    ));
    for &index in differing.iter().take(MAX_PACKETS_SHOWN) {
        let want = expected.get(index).map_or("(no packet)", String::as_str);
        let (decoded, have) = match actual.packets.get(index) {
            Some(packet) => (packet.decoded.clone(), packet.label.as_str()),
            None => (format!("#{index} (not in the capture)"), "(no packet)"),
        };
        lines.push(format!("    {decoded} → expected {want}, got {have}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::check::execute::PacketLine;

    fn actual(labels: &[&str]) -> Actual {
        let packets: Vec<PacketLine> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| PacketLine {
                decoded: format!("#{i} tcp 10.0.0.1:1 > 10.0.0.2:22 [S]"),
                label: l.to_string(),
            })
            .collect();
        let mut results = Expected {
            packets: packets.len() as u64,
            ..Expected::default()
        };
        results.flows.insert("ssh".into(), 1);
        Actual { results, packets }
    }

    #[test]
    fn equal_results_have_no_difference() {
        let got = actual(&["flows pass flow=ssh#1"]);
        let mut want = got.results.clone();
        want.verdicts = Some(vec!["0 flows pass flow=ssh#1".into()]);
        assert!(compare(&want, &got).is_empty());
    }

    #[test]
    fn moved_packets_are_decoded() {
        let got = actual(&["flows pass flow=ssh#1", "flows drop flow_deny flow=rest#1"]);
        let mut want = got.results.clone();
        want.packets = 2;
        want.flows.insert("ssh".into(), 2);
        want.verdicts = Some(vec!["0-1 flows pass flow=ssh#1".into()]);
        let text = compare(&want, &got).join("\n");
        assert_eq!(
            text,
            "  flows (expected → actual):\n    ssh        2 → 1\n  packets whose verdict moved (1 of 2):\n    #1 tcp 10.0.0.1:1 > 10.0.0.2:22 [S] → expected flows pass flow=ssh#1, got flows drop flow_deny flow=rest#1"
        );
    }

    #[test]
    fn errors_match_by_substring() {
        let mut got = actual(&[]);
        got.results.error = Some("bad.toml:2:1: unknown field `x`".into());
        let mut want = got.results.clone();
        want.error = Some("unknown field".into());
        assert!(compare(&want, &got).is_empty());
        want.error = None;
        assert!(compare(&want, &got)[0].contains("expected none"));
    }
}
