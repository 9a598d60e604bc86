//! Put a scenario's deserialisation error at the offending key. `[[traffic]]` and `[[events]]`
//! are tagged by `kind`, which makes serde read each element whole before choosing its type:
//! the `toml` crate can then only point at the element's `[[…]]` header. Here the failing
//! element is read again one key at a time (`kind` plus that key) with spans kept, so the
//! error names the key, its value and its own `line:col`.
//!
//! Not here: checks made after parsing (see `validate.rs`).

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{TimedEvent, TrafficSpec};
use crate::diagnostics::{KeyPath, LocatedError, TomlSpans};

/// The located form of a TOML error in scenario `text`.
pub(super) fn deserialize_error(path: &Path, text: &str, error: &toml::de::Error) -> LocatedError {
    let spans = TomlSpans::parse(text);
    let tagged: [(&str, Probe); 2] = [
        ("traffic", probe::<TrafficSpec>),
        ("events", probe::<TimedEvent>),
    ];
    for (array, probe) in tagged {
        let array = KeyPath::root().key(array);
        for index in 0..spans.len(&array) {
            let element = array.index(index);
            let Some(value) = spans.value(&element) else {
                continue;
            };
            let DeValue::Table(table) = value.get_ref() else {
                continue;
            };
            match probe(table) {
                Verdict::Fine => {}
                Verdict::Wrong {
                    key,
                    culprit,
                    message,
                } => {
                    let at = culprit.span(&spans, &element, &key);
                    let shown = value_text(text, &at, &culprit);
                    let message = format!("{element}.{key}: {shown}{message}");
                    return LocatedError::at(path, text, Some(at), message);
                }
                // No single key is wrong (a missing field): the element is the place.
                Verdict::Whole(message) => {
                    let message = format!("{element}: {message}");
                    return LocatedError::at(path, text, spans.span(&element), message);
                }
            }
        }
    }
    LocatedError::from_toml(path, text, error)
}

/// What [`probe`] found about one element.
enum Verdict {
    /// It reads.
    Fine,
    /// One key is wrong.
    Wrong {
        key: String,
        culprit: Culprit,
        message: String,
    },
    /// It does not read, but no single key is to blame.
    Whole(String),
}

type Probe = fn(&DeTable<'_>) -> Verdict;

/// What is wrong about a key: the key itself (unknown) or its value.
enum Culprit {
    Key,
    Value,
}

impl Culprit {
    fn span(&self, spans: &TomlSpans<'_>, element: &KeyPath, key: &str) -> Range<usize> {
        let found = match self {
            Self::Key => spans.key_span(element, key),
            Self::Value => spans.value(&element.key(key)).map(Spanned::span),
        };
        found.or_else(|| spans.span(element)).unwrap_or(0..0)
    }
}

/// `` `value`: `` for a value error (the value as written), nothing for an unknown key.
fn value_text(text: &str, span: &Range<usize>, culprit: &Culprit) -> String {
    match culprit {
        Culprit::Key => String::new(),
        Culprit::Value => text
            .get(span.clone())
            .map(|written| format!("`{}`: ", written.trim_matches('"')))
            .unwrap_or_default(),
    }
}

/// Whether `T` reads `table`; if not, the first key it rejects on its own (read with
/// `kind` only, so missing fields do not count), `kind` itself when it is the problem.
fn probe<T: DeserializeOwned>(table: &DeTable<'_>) -> Verdict {
    let read = |entries: &mut dyn Iterator<Item = (&Spanned<_>, &Spanned<DeValue<'_>>)>| {
        let mut partial = DeTable::new();
        for (key, value) in entries {
            partial.insert(key.clone(), value.clone());
        }
        let deserializer = toml::de::Deserializer::from(Spanned::new(0..0, partial));
        T::deserialize(deserializer)
            .err()
            .map(|e| e.message().trim().to_string())
    };
    let Some(whole) = read(&mut table.iter()) else {
        return Verdict::Fine;
    };
    let rejected = |message: Option<String>| message.filter(|m| !m.starts_with("missing field"));
    let Some(kind) = table.iter().find(|(key, _)| key.get_ref() == "kind") else {
        return Verdict::Whole(whole);
    };
    let wrong = |key: &str, message: String, value: &DeValue<'_>| {
        let culprit = if message.starts_with("unknown field") {
            Culprit::Key
        } else {
            Culprit::Value
        };
        let message = explain(&message, value);
        Verdict::Wrong {
            key: key.to_string(),
            culprit,
            message,
        }
    };
    if let Some(message) = rejected(read(&mut std::iter::once(kind))) {
        return wrong("kind", message, kind.1.get_ref());
    }
    for entry in table.iter().filter(|(key, _)| key.get_ref() != "kind") {
        if let Some(message) = rejected(read(&mut [kind, entry].into_iter())) {
            return wrong(entry.0.get_ref(), message, entry.1.get_ref());
        }
    }
    Verdict::Whole(whole)
}

/// A clearer message for a socket address the standard library rejects ("invalid socket
/// address syntax" says neither what nor why).
fn explain(message: &str, value: &DeValue<'_>) -> String {
    match value.as_str() {
        Some(written) if message == "invalid socket address syntax" => {
            super::explain_socket_address(written)
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "name = \"x\"\nseed = 1\nduration = \"1s\"\n\n[[topology.network]]\nname = \"n\"\nprefix = \"198.51.100.0/24\"\niface = \"outside\"\n\n[[traffic]]\nkind = \"udp_flood\"\nfrom = \"n\"\nrate = \"5/s\"\ndst = \"192.0.2.1\"\n\n[[traffic]]\nkind = \"tcp_clients\"\nfrom = \"n\"\n";

    fn error(tail: &str) -> String {
        let text = format!("{HEAD}{tail}");
        super::super::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_in_the_second_array_table_are_at_their_key() {
        assert_eq!(
            error("rate = \"9/s\"\ndst = \"192.0.2.10:99999\"\n"),
            "t.toml:20:7: traffic[1].dst: `192.0.2.10:99999`: port 99999 is out of range (0-65535)"
        );
        assert_eq!(
            error("rate = \"9/s\"\ndst = \"192.0.2.10:80\"\nclients = \"many\"\n"),
            "t.toml:21:11: traffic[1].clients: `many`: invalid type: string \"many\", expected u32"
        );
        assert_eq!(
            error("rate = \"9/s\"\ndst = \"192.0.2.10:80\"\nclinets = 3\n"),
            "t.toml:21:1: traffic[1].clinets: unknown field `clinets`, expected one of `name`, `from`, `clients`, `connections`, `rate`, `dst`, `response_bytes`, `timeout`, `start`"
        );
        assert_eq!(
            error("dst = \"192.0.2.10:80\"\n"),
            "t.toml:16:1: traffic[1]: missing field `rate`"
        );
    }

    #[test]
    fn errors_in_events_are_at_their_key() {
        let events = "rate = \"9/s\"\ndst = \"192.0.2.10:80\"\n\n[[events]]\nkind = \"link\"\nat = \"1ms\"\nhost = \"n\"\n\n[[events]]\nkind = \"weight\"\nat = \"soon\"\n";
        assert_eq!(
            error(events),
            "t.toml:29:6: events[1].at: `soon`: invalid duration \"soon\": expected a number and a unit (ns, us, ms, s, m, h), e.g. \"500ms\""
        );
    }
}
