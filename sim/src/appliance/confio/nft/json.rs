//! `nft -j list ruleset` JSON (and the `{"add": {...}}` commands of `nft -j -f`) → the chains
//! and rules of the text form: each rule's expressions are written as the words nft would
//! print, so [`super::expression`] reads both forms. A rule is located at the line of its
//! `"rule"` key (line 1 for the one-line output of `nft -j`).

use serde_json::Value;

use super::{Chain, NftRule};
use crate::appliance::confio::{Imported, located};
use crate::diagnostics::LocatedError as ConfigError;

/// The chains of a JSON ruleset.
pub(super) fn chains(
    file: &str,
    text: &str,
    into: &mut Imported,
) -> Result<Vec<Chain>, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| ConfigError {
        path: file.into(),
        // serde_json puts an error at the end of input on the line after a final newline:
        // clamp it to the file's last line.
        line: e.line().clamp(1, text.lines().count().max(1)),
        column: e.column(),
        length: 0,
        message: format!("not nft JSON: {e}"),
    })?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            located(
                file,
                1,
                "nft JSON must be an object with an `nftables` array",
            )
        })?;
    let mut rule_lines = rule_key_lines(text).into_iter();
    let mut chains: Vec<Chain> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some((key, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            return Err(located(
                file,
                1,
                format!("nftables[{index}] is not an object"),
            ));
        };
        let (key, body) = match key.as_str() {
            "add" | "create" | "insert" => match body.as_object().and_then(|o| o.iter().next()) {
                Some((k, b)) => (k.as_str(), b),
                None => continue,
            },
            "flush" | "delete" | "metainfo" => continue,
            k => (k, body),
        };
        let text_of =
            |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match key {
            "table" => {}
            "chain" | "rule" => {
                let (family, table, name) = (
                    text_of(body, "family"),
                    text_of(body, "table"),
                    text_of(body, if key == "chain" { "name" } else { "chain" }),
                );
                let at = match chains
                    .iter()
                    .position(|c| c.family == family && c.table == table && c.name == name)
                {
                    Some(at) => at,
                    None => {
                        chains.push(Chain { family, table, name, ..Chain::default() });
                        chains.len() - 1
                    }
                };
                if key == "chain" {
                    let chain = &mut chains[at];
                    if let Some(kind) = body.get("type").and_then(Value::as_str) {
                        let prio = body.get("prio").and_then(Value::as_i64).unwrap_or(0);
                        chain.base = Some((kind.into(), text_of(body, "hook"), prio));
                    }
                    if text_of(body, "policy") == "drop" {
                        chain.policy_drop = Some(1);
                    }
                } else {
                    let line = rule_lines.next().unwrap_or(1);
                    let words = rule_words(body);
                    let text = format!("{} (nftables[{index}])", words.join(" ").replace(" ,", ","));
                    chains[at].rules.push(NftRule { words, line, text });
                }
            }
            other => into.warn(
                file,
                1,
                &format!("nftables[{index}]: {other}"),
                format!("`{other}` objects are not read by the importer: rules using them are not translated"),
            ),
        }
    }
    Ok(chains)
}

/// The line of each `"rule"` key, in order.
fn rule_key_lines(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("\"rule\"") {
            let after = rest[at + 6..].trim_start();
            if after.starts_with(':') {
                out.push(index + 1);
            }
            rest = &rest[at + 6..];
        }
    }
    out
}

fn rule_words(rule: &Value) -> Vec<String> {
    let mut words = Vec::new();
    for expr in rule
        .get("expr")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some((key, body)) = expr.as_object().and_then(|o| o.iter().next()) else {
            words.push("?".into());
            continue;
        };
        match key.as_str() {
            "match" => {
                words.extend(left(body.get("left").unwrap_or(&Value::Null)));
                match body.get("op").and_then(Value::as_str).unwrap_or("==") {
                    "==" | "in" => {}
                    op => words.push(op.into()),
                }
                words.extend(right(body.get("right").unwrap_or(&Value::Null)));
            }
            "counter" => words.push("counter".into()),
            "mangle" => {
                let meta_mark =
                    body.pointer("/key/meta/key").and_then(Value::as_str) == Some("mark");
                if meta_mark {
                    words.extend(["meta", "mark", "set"].map(String::from));
                    words.push(scalar(body.get("value").unwrap_or(&Value::Null)));
                } else {
                    words.push("mangle".into());
                }
            }
            "jump" | "goto" => {
                words.push(key.clone());
                words.push(
                    body.get("target")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                );
            }
            "dnat" | "snat" => {
                words.push(key.clone());
                words.push("to".into());
                let addr = scalar(body.get("addr").unwrap_or(&Value::Null));
                words.push(match body.get("port") {
                    Some(port) => format!("{addr}:{}", scalar(port)),
                    None => addr,
                });
            }
            "masquerade" => {
                words.push("masquerade".into());
                if let Some(port) = body.get("port") {
                    words.push("to".into());
                    words.push(format!(":{}", scalar(port)));
                }
            }
            other => words.push(other.into()),
        }
    }
    words
}

fn left(value: &Value) -> Vec<String> {
    if let Some(p) = value.get("payload") {
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        return vec![text("protocol"), text("field")];
    }
    if let Some(key) = value.pointer("/meta/key").and_then(Value::as_str) {
        return match key {
            "iifname" | "oifname" | "iif" | "oif" => vec![key.into()],
            _ => vec!["meta".into(), key.into()],
        };
    }
    if let Some(key) = value.pointer("/ct/key").and_then(Value::as_str) {
        return vec!["ct".into(), key.into()];
    }
    vec![
        value
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_else(|| "?".into()),
    ]
}

fn right(value: &Value) -> Vec<String> {
    let items = value
        .get("set")
        .and_then(Value::as_array)
        .or(value.as_array());
    match items {
        Some(items) => {
            let mut out = vec!["{".to_string()];
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(",".into());
                }
                out.push(scalar(item));
            }
            out.push("}".into());
            out
        }
        None => vec![scalar(value)],
    }
}

/// A JSON value as nft prints it: numbers, strings, `a-b` ranges, `addr/len` prefixes.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some([a, b]) = o.get("range").and_then(Value::as_array).map(Vec::as_slice) {
                format!("{}-{}", scalar(a), scalar(b))
            } else if let Some(p) = o.get("prefix") {
                format!(
                    "{}/{}",
                    scalar(p.get("addr").unwrap_or(&Value::Null)),
                    scalar(p.get("len").unwrap_or(&Value::Null))
                )
            } else {
                // Anything else (a map, a concatenation) is not a value the importer reads.
                format!("@{}", o.keys().next().map_or("?", String::as_str))
            }
        }
        _ => "?".into(),
    }
}
