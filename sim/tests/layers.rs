//! Layering check: no import cycles between the modules of `sim` and `datapath`.
//!
//! Reads `sim/src` and `datapath/src` as text and builds each crate's module graph: one node
//! per module file, an edge A → B when A names B through a `crate::` / `super::` / `self::`
//! path or a path starting with one of A's own child modules (in `use` statements and in
//! code; `use` trees are expanded). A module naming one of its own ancestors (`super::Item`)
//! is not an edge: a parent owns its children. Test modules (`#[cfg(test)] mod … { … }`),
//! comments and string literals are ignored. Every cycle found is printed.
//!
//! For `sim`, the order of the `pub mod` lines of `sim/src/lib.rs` is its layer order: a
//! module may only use top-level modules declared before its own (or itself).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Datapath cycles being removed by a separate change; listed so the check fails both when a
/// new cycle appears and when one of these is gone (then delete it from this list).
const DATAPATH_ALLOWED: &[&[&str]] = &[];

/// Module path (segments joined by `::`, "" for the crate root) → source text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    collect(src, src, &mut out);
    out
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let relative = path.strip_prefix(root).expect("under root");
        if relative == Path::new("main.rs") || relative.starts_with("bin") {
            continue; // separate crates
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut segments: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
                segments.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.insert(segments.join("::"), strip(&text));
        }
    }
}

/// The text without comments, string/char literals and `#[cfg(test)]` modules.
fn strip(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |n| n + 2);
        } else if let Some(len) = raw_string_len(rest) {
            i += len;
            out.push_str("\"\"");
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' && char_literal_len(rest).is_some() {
            i += char_literal_len(rest).unwrap_or(1);
        } else if rest.starts_with("#[cfg(test)]") {
            i += skip_item(rest);
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn raw_string_len(rest: &str) -> Option<usize> {
    let after_r = rest.strip_prefix("br").or_else(|| rest.strip_prefix('r'))?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let body = after_r[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(rest.len() - body.len() + end + close.len())
}

fn char_literal_len(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1);
    let (_, c) = chars.next()?;
    if c == '\\' {
        let close = rest[2..].find('\'')?;
        return Some(close + 3);
    }
    let (idx, next) = chars.next()?;
    (next == '\'').then_some(idx + 1)
}

/// Length of a `#[cfg(test)]` item: up to its `;` or its matching closing brace.
fn skip_item(rest: &str) -> usize {
    let mut depth = 0usize;
    for (idx, c) in rest.char_indices().skip("#[cfg(test)]".len()) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return idx + 1;
                }
            }
            ';' if depth == 0 => return idx + 1,
            _ => {}
        }
    }
    rest.len()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path named in `text`: `use` trees expanded, plus paths in code.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
        if !starts_word || !is_ident(chars[i]) {
            i += 1;
            continue;
        }
        let word_end = (i..chars.len())
            .find(|&j| !is_ident(chars[j]))
            .unwrap_or(chars.len());
        let word: String = chars[i..word_end].iter().collect();
        if word == "use" {
            let end = (word_end..chars.len())
                .find(|&j| chars[j] == ';')
                .unwrap_or(chars.len());
            let tree: String = chars[word_end..end]
                .iter()
                .filter(|c| !c.is_whitespace())
                .collect();
            expand(&tree, &mut Vec::new(), &mut out);
            i = end;
            continue;
        }
        let mut segments = vec![word];
        let mut j = word_end;
        while j + 2 < chars.len()
            && chars[j] == ':'
            && chars[j + 1] == ':'
            && is_ident(chars[j + 2])
        {
            let end = (j + 2..chars.len())
                .find(|&k| !is_ident(chars[k]))
                .unwrap_or(chars.len());
            segments.push(chars[j + 2..end].iter().collect());
            j = end;
        }
        if segments.len() > 1 {
            out.push(segments);
        }
        i = j.max(i + 1);
    }
    out
}

/// Expand a `use` tree (whitespace removed) below `prefix` into full paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim_start_matches("::");
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        for part in split_top(inner) {
            expand(part, prefix, out);
        }
        return;
    }
    match tree.split_once("::") {
        Some((head, rest)) => {
            prefix.push(head.to_string());
            expand(rest, prefix, out);
            prefix.pop();
        }
        None => {
            let name = tree.split("as").next().unwrap_or(tree);
            let mut path = prefix.clone();
            if !name.is_empty() && name != "*" && name != "self" {
                path.push(name.to_string());
            }
            out.push(path);
        }
    }
}

fn split_top(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (idx, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..idx]);
                start = idx + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}::{name}")
    }
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_string())
}

fn is_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || module.starts_with(&format!("{ancestor}::"))
}

/// The module a path names: its longest prefix that is a module, from where it starts.
fn resolve(from: &str, path: &[String], known: &BTreeMap<String, String>) -> Option<String> {
    let (mut base, rest) = match path.first()?.as_str() {
        "crate" => (String::new(), &path[1..]),
        "self" => (from.to_string(), &path[1..]),
        "super" => {
            let mut base = parent(from);
            let mut rest = &path[1..];
            while rest.first().is_some_and(|s| s == "super") {
                base = parent(&base);
                rest = &rest[1..];
            }
            (base, rest)
        }
        child if known.contains_key(&join(from, child)) => (from.to_string(), path),
        _ => return None,
    };
    for segment in rest {
        let next = join(&base, segment);
        if !known.contains_key(&next) {
            break;
        }
        base = next;
    }
    Some(base)
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    edges_between(&modules(src))
}

fn edges_between(known: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in known {
        let targets = edges.entry(module.clone()).or_default();
        for path in paths(text) {
            if let Some(target) = resolve(module, &path, known)
                && target != *module
                && !is_ancestor(&target, module)
            {
                targets.insert(target);
            }
        }
    }
    edges
}

/// Every elementary cycle's node set, as strongly connected components of size > 1, each
/// with one cycle through it for the message.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<(Vec<String>, Vec<String>)> {
    let nodes: Vec<&String> = edges.keys().collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for node in &nodes {
        if done.contains(*node) || !reachable[node].contains(*node) {
            continue;
        }
        let component: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[node].contains(**m) && reachable[*m].contains(*node))
            .map(|m| (*m).clone())
            .collect();
        done.extend(component.iter().cloned());
        out.push((component, one_cycle(node, edges)));
    }
    out
}

/// One shortest cycle through `start` (breadth-first).
fn one_cycle(start: &String, edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(node) = queue.pop_front() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                let mut path = vec![node.clone()];
                while path.last() != Some(start) {
                    path.push(previous[path.last().expect("non-empty")].clone());
                }
                path.reverse();
                path.push(start.clone());
                return path;
            }
            if !previous.contains_key(next) {
                previous.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    vec![start.clone()]
}

fn report(crate_name: &str, found: &[(Vec<String>, Vec<String>)]) -> String {
    found
        .iter()
        .map(|(component, cycle)| {
            format!(
                "{crate_name}: cycle among {component:?}: {}\n",
                cycle.join(" → ")
            )
        })
        .collect()
}

fn src(crate_dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src")
}

#[test]
fn sim_has_no_import_cycles() {
    let found = cycles(&graph(&src("sim")));
    assert!(
        found.is_empty(),
        "import cycles in sim/src:\n{}",
        report("sim", &found)
    );
}

/// The top-level module of a module path.
fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn sim_modules_only_use_the_ones_declared_before_them_in_lib_rs() {
    let lib = std::fs::read_to_string(src("sim").join("lib.rs")).expect("read lib.rs");
    let order: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    let rank = |module: &str| order.iter().position(|m| *m == top(module));
    let mut upward = String::new();
    for (from, targets) in graph(&src("sim")) {
        for to in targets {
            if let (Some(a), Some(b)) = (rank(&from), rank(&to))
                && b > a
            {
                upward.push_str(&format!("{from} uses {to}, declared after it in lib.rs\n"));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports in sim/src:\n{upward}");
}

#[test]
fn datapath_has_only_the_listed_import_cycles() {
    let found = cycles(&graph(&src("datapath")));
    let components: BTreeSet<Vec<String>> = found.iter().map(|(c, _)| c.clone()).collect();
    let allowed: BTreeSet<Vec<String>> = DATAPATH_ALLOWED
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    let new: Vec<_> = found
        .iter()
        .filter(|(c, _)| !allowed.contains(c))
        .cloned()
        .collect();
    let gone: Vec<_> = allowed.difference(&components).collect();
    assert!(
        new.is_empty(),
        "new import cycles in datapath/src:\n{}",
        report("datapath", &new)
    );
    assert!(
        gone.is_empty(),
        "allowed datapath cycles no longer present, remove them from DATAPATH_ALLOWED: {gone:?}"
    );
}

#[test]
fn the_checker_finds_a_cycle_through_a_parent_and_a_use_tree() {
    let text = |t: &str| strip(t);
    let known: BTreeMap<String, String> = [
        ("".to_string(), text("pub mod a; pub mod b;")),
        (
            "a".to_string(),
            text("use crate::b::{c::Thing, self};\n// crate::x::y\n"),
        ),
        ("b".to_string(), text("pub mod c;")),
        (
            "b::c".to_string(),
            text("fn f() { super::super::a::g(); let s = \"crate::b\"; }"),
        ),
    ]
    .into_iter()
    .collect();
    let edges = edges_between(&known);
    let found = cycles(&edges);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, vec!["a".to_string(), "b::c".to_string()]);
}
