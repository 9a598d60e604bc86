//! Located errors rendered for people: rustc-style (`error[kind]: message`, `--> file:line:col`,
//! the source line with the offending token underlined, a note), used by `sim flows`, the
//! appliance loader and the fuzz targets.

use std::fmt::Write as _;

use datapath::flows::FlowError;

/// Render errors rustc-style: message, `--> file:line:column`, the source line with the
/// offending token underlined, an optional note; then a summary line.
pub fn render_errors(file: &str, source: &str, errors: &[FlowError]) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let gutter = errors
        .iter()
        .map(|error| error.line().to_string().len())
        .max()
        .unwrap_or(1);
    let mut out = String::new();
    for error in errors {
        let pad = " ".repeat(gutter);
        let _ = writeln!(out, "error[{}]: {}", error.kind.name(), error.message);
        let _ = writeln!(out, "{pad}--> {file}:{}:{}", error.line(), error.column());
        let _ = writeln!(out, "{pad} |");
        let text = lines
            .get(
                usize::try_from(error.line())
                    .unwrap_or(usize::MAX)
                    .wrapping_sub(1),
            )
            .copied()
            .unwrap_or("");
        let _ = writeln!(out, "{:>gutter$} | {text}", error.line());
        let indent: String = text
            .chars()
            .take(
                usize::try_from(error.column())
                    .unwrap_or(1)
                    .saturating_sub(1),
            )
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let carets = "^".repeat(usize::try_from(error.span.length).unwrap_or(1).max(1));
        let _ = writeln!(out, "{pad} | {indent}{carets}");
        if let Some(note) = &error.note {
            let _ = writeln!(out, "{pad} = note: {note}");
        }
        out.push('\n');
    }
    let plural = if errors.len() == 1 { "" } else { "s" };
    let _ = writeln!(out, "error: {file}: {} error{plural}", errors.len());
    out
}
