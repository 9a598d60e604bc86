//! Located errors, one home for all of them: [`LocatedError`] (`file:line:col: message`, the
//! error type of scenario and appliance files), [`line_column`] (byte offset → 1-based line
//! and column), [`KeyPath`] and [`TomlSpans`] (the span of a key inside a TOML document, array
//! elements included) and [`render`] (rustc-style: `error[kind]: message`, `--> file:line:col`,
//! the source line with the offending token underlined, a note), which renders flowmgr errors
//! ([`render_errors`]) and located errors ([`LocatedError::render`]) alike.
//!
//! Not here: what is wrong with a file (each loader decides), reading files.

pub mod elements;

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use datapath::flows::FlowError;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A problem located in a file: renders as `file:line:col: message` (`file: message` when
/// the place is unknown, e.g. the file cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column in characters (0 when unknown).
    pub column: usize,
    /// Length of the offending text in characters (0 when unknown).
    pub length: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            let (path, line, column) = (self.path.display(), self.line, self.column);
            write!(f, "{path}:{line}:{column}: {}", self.message)
        }
    }
}

impl std::error::Error for LocatedError {}

impl LocatedError {
    /// An error at byte range `span` of `text` (`None`: place unknown).
    pub fn at(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column, length) = span.map_or((0, 0, 0), |span| {
            let (line, column) = line_column(text, span.start);
            let end = span.end.min(text.len());
            let start = span.start.min(end);
            let length = text
                .get(start..end)
                .map_or(0, |s| s.lines().next().unwrap_or("").chars().count());
            (line, column, length)
        });
        Self {
            path: path.to_path_buf(),
            line,
            column,
            length,
            message: message.into(),
        }
    }

    /// A TOML deserialisation error, located where the `toml` crate puts it (the start of
    /// the file when it gives no place).
    /// The message names the key it is at, and the value when that is what is wrong
    /// (`topology.network[0].prefix: `10.0.0.300/24`: invalid IP address syntax`).
    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> Self {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim();
        let named = match TomlSpans::parse(text).key_at(span.start) {
            // On a key (an unknown field): name the table it is in.
            Some((key, true)) => key
                .parent()
                .filter(|table| *table != KeyPath::root())
                .map(|table| format!("{table}: {message}")),
            Some((key, false)) => {
                let written = text.get(span.clone()).unwrap_or("");
                let scalar = !written.is_empty()
                    && !written.contains('\n')
                    && !written.starts_with(['{', '['])
                    && written.len() <= 80;
                Some(if scalar {
                    format!("{key}: `{}`: {message}", written.trim_matches('"'))
                } else {
                    format!("{key}: {message}")
                })
            }
            None => None,
        };
        Self::at(
            path,
            text,
            Some(span),
            named.unwrap_or_else(|| message.to_string()),
        )
    }

    /// Rendered rustc-style with the source line underlined (see [`render`]).
    pub fn render(&self, source: &str) -> String {
        let diagnostic = Diagnostic {
            kind: "config",
            message: self.message.clone(),
            line: self.line,
            column: self.column,
            length: self.length,
            note: None,
        };
        render(&self.path.display().to_string(), source, &[diagnostic])
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Why `text` is not an `address:port`: the port out of range, the address unreadable, or
/// the port missing.
pub fn explain_socket_address(text: &str) -> String {
    let (address, port) = match text.rsplit_once(':') {
        Some((address, port)) if !address.contains(':') || address.ends_with(']') => (
            address.trim_start_matches('[').trim_end_matches(']'),
            Some(port),
        ),
        _ => (text, None),
    };
    if address.parse::<IpAddr>().is_err() {
        return format!(
            "`{address}` is not an IPv4 or IPv6 address (expected \"address:port\", IPv6 as \"[2001:db8::1]:80\")"
        );
    }
    match port {
        None => "expected \"address:port\" (the port is missing)".to_string(),
        Some(port) => match port.parse::<u64>() {
            Ok(number) if number > 65535 => format!("port {number} is out of range (0-65535)"),
            _ => format!("port `{port}` is not a number from 0 to 65535"),
        },
    }
}

/// One located problem, as [`render`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Short kind shown as `error[kind]`.
    pub kind: &'static str,
    /// What is wrong.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// Characters to underline (at least one is).
    pub length: usize,
    /// A hint shown as `= note: …`.
    pub note: Option<String>,
}

impl From<&FlowError> for Diagnostic {
    fn from(error: &FlowError) -> Self {
        let number = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            kind: error.kind.name(),
            message: error.message.clone(),
            line: number(error.line()),
            column: number(error.column()),
            length: number(error.span.length),
            note: error.note.clone(),
        }
    }
}

/// Render diagnostics rustc-style: message, `--> file:line:column`, the source line with the
/// offending text underlined, an optional note; then a summary line.
pub fn render(file: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let gutter = diagnostics
        .iter()
        .map(|d| d.line.to_string().len())
        .max()
        .unwrap_or(1);
    let mut out = String::new();
    for diagnostic in diagnostics {
        let pad = " ".repeat(gutter);
        let (line, column) = (diagnostic.line, diagnostic.column);
        let _ = writeln!(out, "error[{}]: {}", diagnostic.kind, diagnostic.message);
        let _ = writeln!(out, "{pad}--> {file}:{line}:{column}");
        let _ = writeln!(out, "{pad} |");
        let text = lines.get(line.wrapping_sub(1)).copied().unwrap_or("");
        let _ = writeln!(out, "{line:>gutter$} | {text}");
        let indent: String = text
            .chars()
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let carets = "^".repeat(diagnostic.length.max(1));
        let _ = writeln!(out, "{pad} | {indent}{carets}");
        if let Some(note) = &diagnostic.note {
            let _ = writeln!(out, "{pad} = note: {note}");
        }
        out.push('\n');
    }
    let plural = if diagnostics.len() == 1 { "" } else { "s" };
    let _ = writeln!(out, "error: {file}: {} error{plural}", diagnostics.len());
    out
}

/// Render flowmgr errors (see [`render`]).
pub fn render_errors(file: &str, source: &str, errors: &[FlowError]) -> String {
    let diagnostics: Vec<Diagnostic> = errors.iter().map(Diagnostic::from).collect();
    render(file, source, &diagnostics)
}

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path of a key in a TOML document, shown as users write it: `traffic[1].dst`,
/// `topology.network[0].prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

impl KeyPath {
    /// The document itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path, then key `name`.
    pub fn key(&self, name: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(name.to_string()));
        Self(steps)
    }

    /// The path without its last step (`None` for the root).
    pub fn parent(&self) -> Option<Self> {
        let mut steps = self.0.clone();
        steps.pop()?;
        Some(Self(steps))
    }

    /// This path, then element `index` of an array.
    pub fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        Self(steps)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(name) if n == 0 => write!(f, "{name}")?,
                Step::Key(name) => write!(f, ".{name}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A TOML document parsed with the spans of every key and value, to locate problems found
/// after deserialisation (a bad value, a dangling name) at the offending key.
pub struct TomlSpans<'a> {
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> TomlSpans<'a> {
    /// Parse `text` (a document that does not parse has no spans: every lookup is `None`).
    pub fn parse(text: &'a str) -> Self {
        Self {
            root: DeTable::parse(text).ok(),
        }
    }

    /// The value at `path`, with its span.
    pub fn value(&self, path: &KeyPath) -> Option<&Spanned<DeValue<'a>>> {
        let root = self.root.as_ref()?;
        let mut table = root.get_ref();
        let mut current: Option<&Spanned<DeValue<'a>>> = None;
        for step in &path.0 {
            let next = match (step, current.map(|v| v.get_ref())) {
                (Step::Key(name), None) => table.get(name.as_str())?,
                (Step::Key(name), Some(DeValue::Table(inner))) => {
                    table = inner;
                    table.get(name.as_str())?
                }
                (Step::Index(index), Some(DeValue::Array(array))) => array.get(*index)?,
                _ => return None,
            };
            current = Some(next);
        }
        current
    }

    /// Span of the value at `path`, or of the nearest enclosing value that exists.
    pub fn span(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut path = path.clone();
        loop {
            if let Some(value) = self.value(&path) {
                return Some(value.span());
            }
            path.0.pop()?;
        }
    }

    /// Span of key `name` itself (not its value) in the table at `table`.
    pub fn key_span(&self, table: &KeyPath, name: &str) -> Option<Range<usize>> {
        let DeValue::Table(entries) = self.value(table)?.get_ref() else {
            return None;
        };
        entries
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == name)
            .map(|(key, _)| key.span())
    }

    /// The key whose key (`true`) or value (`false`) holds byte `offset`, innermost first.
    pub fn key_at(&self, offset: usize) -> Option<(KeyPath, bool)> {
        let contains = |span: Range<usize>| span.start <= offset && offset < span.end;
        let holds = |value: &Spanned<DeValue<'a>>| holds(value, offset);
        let mut table = self.root.as_ref()?.get_ref();
        let mut path = KeyPath::root();
        loop {
            let (key, value) = table
                .iter()
                .find(|(key, value)| contains(key.span()) || holds(value))?;
            path = path.key(key.get_ref());
            if contains(key.span()) {
                return Some((path, true));
            }
            let mut value = value;
            if let DeValue::Array(elements) = value.get_ref() {
                let Some(index) = elements.iter().position(holds) else {
                    return Some((path, false));
                };
                path = path.index(index);
                value = &elements[index];
            }
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return Some((path, false)),
            }
        }
    }

    /// Number of elements of the array at `path` (0 when it is not an array).
    pub fn len(&self, path: &KeyPath) -> usize {
        match self.value(path).map(Spanned::get_ref) {
            Some(DeValue::Array(elements)) => elements.len(),
            _ => 0,
        }
    }
}

/// Whether byte `offset` is in `value` (tables and arrays of tables: in one of their keys
/// or values, wherever their headers put their own spans).
fn holds(value: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    let contains = |span: Range<usize>| span.start <= offset && offset < span.end;
    contains(value.span())
        || match value.get_ref() {
            DeValue::Table(table) => table
                .iter()
                .any(|(key, value)| contains(key.span()) || holds(value, offset)),
            DeValue::Array(elements) => elements.iter().any(|element| holds(element, offset)),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = 2\n  c = 3";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // `é` is two bytes but one column.
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, 16), (3, 3));
        // Past the end and inside a character: clamped, never a panic.
        assert_eq!(line_column(text, 1000), (3, 8));
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_column(text, text.find('c').unwrap()), (3, 3));
        assert_eq!(line_column(text, text.rfind('2').unwrap()), (2, 6));
    }

    #[test]
    fn key_paths_find_keys_inside_array_tables() {
        let text = "[[traffic]]\nrate = 1\n\n[[traffic]]\nkind = \"x\"\nrate = 2\n";
        let spans = TomlSpans::parse(text);
        let path = KeyPath::root().key("traffic").index(1).key("rate");
        assert_eq!(path.to_string(), "traffic[1].rate");
        let span = spans.span(&path).expect("found");
        assert_eq!(line_column(text, span.start), (6, 8));
        let table = KeyPath::root().key("traffic").index(1);
        let key = spans.key_span(&table, "rate").expect("key found");
        assert_eq!(line_column(text, key.start), (6, 1));
        // A missing key falls back to its table.
        let missing = spans.span(&table.key("nope")).expect("table found");
        assert_eq!(missing, spans.value(&table).unwrap().span());
        assert_eq!(spans.len(&KeyPath::root().key("traffic")), 2);
        // The key at an offset, inside the second element of an array of tables.
        let (found, on_key) = spans.key_at(span.start).expect("a key");
        assert_eq!(
            (found.to_string(), on_key),
            ("traffic[1].rate".into(), false)
        );
        let (found, on_key) = spans.key_at(key.start).expect("a key");
        assert_eq!(
            (found.to_string(), on_key),
            ("traffic[1].rate".into(), true)
        );
        let nested = "[[a.b]]\nx = 1\n[[a.b]]\nlink = { loss = 5 }\n";
        let offset = nested.find('5').unwrap();
        let (found, _) = TomlSpans::parse(nested).key_at(offset).expect("a key");
        assert_eq!(found.to_string(), "a.b[1].link.loss");
    }

    #[test]
    fn located_errors_render_with_the_line_underlined() {
        let text = "a = 1\nport = 99999\n";
        let error = LocatedError::at(Path::new("f.toml"), text, Some(13..18), "port out of range");
        assert_eq!(error.to_string(), "f.toml:2:8: port out of range");
        let rendered = error.render(text);
        assert!(
            rendered.contains("2 | port = 99999\n  |        ^^^^^\n"),
            "{rendered}"
        );
        let nowhere = LocatedError::at(Path::new("f.toml"), text, None, "cannot read");
        assert_eq!(nowhere.to_string(), "f.toml: cannot read");
    }
}
