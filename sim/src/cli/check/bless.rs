//! `sim check --bless`: rewrite a case's `[expect]` table with the actual results, in place
//! with `toml_edit`, so comments and every other key of the file stay as written. Per-packet
//! verdicts are written when they fit in [`MAX_VERDICT_RUNS`] runs, and removed otherwise.
//!
//! Not here: deciding whether a case should be blessed (the caller does).

use std::collections::BTreeMap;
use std::path::Path;

use toml_edit::{Array, DocumentMut, Item, Table, Value, value};

use super::case::Expected;
use super::execute::MAX_VERDICT_RUNS;

/// Rewrite the expectations of the case file at `path` with `actual`.
pub fn bless(path: &Path, actual: &Expected) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let updated =
        blessed_text(&text, actual).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if updated != text {
        std::fs::write(path, updated)?;
    }
    Ok(())
}

/// The case file `text` with its `[expect]` table replaced by `actual`.
pub fn blessed_text(text: &str, actual: &Expected) -> Result<String, toml_edit::TomlError> {
    let mut document: DocumentMut = text.parse()?;
    if !document.contains_table("expect") {
        document.insert("expect", Item::Table(Table::new()));
    }
    let expect = document["expect"]
        .as_table_mut()
        .expect("`expect` was checked to be a table");
    match &actual.error {
        Some(error) => set_keeping_decor(expect, "error", error_value(error)),
        None => {
            expect.remove("error");
        }
    }
    set_keeping_decor(expect, "packets", Value::from(actual.packets as i64));
    match actual
        .verdicts
        .as_ref()
        .filter(|v| v.len() <= MAX_VERDICT_RUNS)
    {
        Some(runs) if !runs.is_empty() => {
            set_keeping_decor(expect, "verdicts", Value::Array(multiline(runs)))
        }
        _ => {
            expect.remove("verdicts");
        }
    }
    let tables = [
        ("decisions", &actual.decisions),
        ("flows", &actual.flows),
        ("backends", &actual.backends),
        ("shield", &actual.shield),
    ];
    for (name, counters) in tables {
        set_table(expect, name, counters);
    }
    Ok(document.to_string())
}

/// An error as a multi-line literal string when it spans lines (readable in the file).
fn error_value(error: &str) -> Value {
    if error.contains('\n')
        && !error.contains("'''")
        && let Ok(literal) = format!("'''\n{error}'''").parse::<Value>()
    {
        return literal;
    }
    Value::from(error)
}

fn multiline(runs: &[String]) -> Array {
    let mut array: Array = runs.iter().map(String::as_str).collect();
    for item in array.iter_mut() {
        item.decor_mut().set_prefix("\n    ");
    }
    array.set_trailing("\n");
    array.set_trailing_comma(true);
    array
}

/// Replace `key`'s value, keeping the comments around it.
fn set_keeping_decor(table: &mut Table, key: &str, mut new: Value) {
    if let Some(old) = table.get(key).and_then(Item::as_value) {
        *new.decor_mut() = old.decor().clone();
    }
    table[key] = value(new);
}

/// Make the sub-table `name` hold exactly `counters` (absent when empty), keeping the
/// comments of keys that stay.
fn set_table(expect: &mut Table, name: &str, counters: &BTreeMap<String, u64>) {
    if counters.is_empty() {
        expect.remove(name);
        return;
    }
    if !expect.get(name).is_some_and(Item::is_table) {
        expect.insert(name, Item::Table(Table::new()));
    }
    let table = expect[name].as_table_mut().expect("checked to be a table");
    let stale: Vec<String> = table
        .iter()
        .map(|(key, _)| key.to_string())
        .filter(|key| !counters.contains_key(key))
        .collect();
    for key in stale {
        table.remove(&key);
    }
    for (key, count) in counters {
        set_keeping_decor(table, key, Value::from(*count as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blessing_keeps_comments_and_other_keys() {
        let text = "# a case\ncaptures = [\"x.pcap\"] # the capture\n\n[expect]\n# how many\npackets = 1\n\n[expect.flows]\nssh = 1 # the ssh flow\nold = 3\n";
        let mut actual = Expected {
            packets: 2,
            verdicts: Some(vec!["0-1 flows pass flow=ssh#1".into()]),
            ..Expected::default()
        };
        actual.flows.insert("ssh".into(), 2);
        actual.flows.insert("(unclassified)".into(), 0);
        let blessed = blessed_text(text, &actual).unwrap();
        insta::assert_snapshot!(blessed);
        let reparsed: crate::cli::check::case::CaseFile = toml::from_str(&blessed).unwrap();
        assert_eq!(reparsed.expect, actual);
        assert_eq!(blessed_text(&blessed, &actual).unwrap(), blessed);
    }

    #[test]
    fn multi_line_errors_are_literal_strings() {
        let actual = Expected {
            error: Some("a.flowmgr:2:3: bad\n  | here\n".into()),
            ..Expected::default()
        };
        let blessed = blessed_text("captures = [\"x\"]\n", &actual).unwrap();
        assert!(
            blessed.contains("error = '''\na.flowmgr:2:3: bad\n  | here\n'''"),
            "{blessed}"
        );
        let reparsed: crate::cli::check::case::CaseFile = toml::from_str(&blessed).unwrap();
        assert_eq!(reparsed.expect.error, actual.error);
    }
}
