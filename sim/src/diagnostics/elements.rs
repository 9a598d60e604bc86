//! Put a TOML deserialisation error at the offending element and key. An element of an
//! array of tables tagged by `kind` (a scenario's `[[traffic]]`, `[[events]]`) or read through
//! `try_from` (`[[nat]]`) is read whole by serde before its type is chosen: the `toml` crate can
//! then only point at the array's first `[[…]]` header. Here each element is read again alone
//! with spans kept, and for tagged ones key by key (`kind` plus that key), so the error names
//! the element, the key, its value and their own `line:col`.
//!
//! Not here: which arrays a file has (its loader says).

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::{KeyPath, LocatedError, TomlSpans};

/// The located form of TOML `error` in `text`: when an element of one of `arrays` does not
/// read on its own, the error is that element's (at its wrong key when [`ElementCheck`] finds
/// one); otherwise where the `toml` crate put it.
pub fn locate_in_arrays(
    path: &Path,
    text: &str,
    error: &toml::de::Error,
    arrays: &[(KeyPath, ElementCheck)],
) -> LocatedError {
    let spans = TomlSpans::parse(text);
    for (array, probe) in arrays {
        for index in 0..spans.len(array) {
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

/// What an [`ElementCheck`] found about one element.
pub enum Verdict {
    /// It reads.
    Fine,
    /// One key is wrong.
    Wrong {
        /// The key.
        key: String,
        /// The key itself (unknown) or its value.
        culprit: Culprit,
        /// What is wrong.
        message: String,
    },
    /// It does not read, but no single key is to blame.
    Whole(String),
}

/// Reads one element of an array of tables again, alone: [`tagged`] or [`whole`].
pub type ElementCheck = fn(&DeTable<'_>) -> Verdict;

/// What is wrong about a key: the key itself (unknown) or its value.
pub enum Culprit {
    /// The key (unknown).
    Key,
    /// Its value.
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

/// `T`'s error reading just `entries`, if any.
fn read<'a, 'i: 'a, T: DeserializeOwned>(
    entries: impl Iterator<Item = (&'a Spanned<DeString<'i>>, &'a Spanned<DeValue<'i>>)>,
) -> Option<String> {
    let mut partial = DeTable::new();
    for (key, value) in entries {
        partial.insert(key.clone(), value.clone());
    }
    let deserializer = toml::de::Deserializer::from(Spanned::new(0..0, partial));
    T::deserialize(deserializer)
        .err()
        .map(|e| e.message().trim().to_string())
}

/// Whether `T` reads `table` (an element whose keys are checked together, e.g. a type read
/// through `try_from`): the element is the place of its error.
pub fn whole<T: DeserializeOwned>(table: &DeTable<'_>) -> Verdict {
    read::<T>(table.iter()).map_or(Verdict::Fine, Verdict::Whole)
}

/// Whether `T` (an enum tagged by `kind`) reads `table`; if not, the first key it rejects on
/// its own (read with `kind` only, so missing fields do not count), `kind` itself when it is
/// the problem.
pub fn tagged<T: DeserializeOwned>(table: &DeTable<'_>) -> Verdict {
    let Some(whole) = read::<T>(table.iter()) else {
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
    if let Some(message) = rejected(read::<T>(std::iter::once(kind))) {
        return wrong("kind", message, kind.1.get_ref());
    }
    for entry in table.iter().filter(|(key, _)| key.get_ref() != "kind") {
        if let Some(message) = rejected(read::<T>([kind, entry].into_iter())) {
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
