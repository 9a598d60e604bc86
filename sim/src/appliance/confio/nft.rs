//! nft rulesets in: the text of `nft list ruleset` (or an `nft -f` file) and the JSON of
//! `nft -j list ruleset`.
//!
//! Each rule is translated into the iptables-save statement it is equivalent to and read by
//! [`super::iptables`], so both formats give the same flows and `[[nat]]` rules, and a
//! warning quotes the nft rule. Base chains map by type and hook: `type nat hook
//! prerouting|postrouting` → nat, `type filter hook prerouting` → mangle (raw below priority
//! -200), `hook input|forward|output` → filter; a regular chain belongs to the table of the
//! base chain that jumps to it. The expressions read (text and JSON alike): `ip|ip6
//! saddr|daddr`, `ip protocol`, `meta l4proto`, `tcp|udp sport|dport` (values, ranges and
//! anonymous sets of ports), `icmp type`, `iifname`, `oifname`, `meta nfproto` (where the
//! addresses imply it), `ct state`, `counter`, `comment`, `meta mark set`, the verdicts
//! (`accept`, `drop`, `reject`, `return`, `jump`, `goto`), `dnat to`, `snat to`,
//! `masquerade [to :PORTS]`. Anything else (named sets, maps, `define`, `log`, `limit`, other
//! families) is a located warning naming the rule.

use super::iptables::{Statement, import_statements};
use super::{Imported, located};
use crate::diagnostics::LocatedError as ConfigError;

/// Whether a line starting with `table`/`add`/`flush`/... reads as nft (format detection).
pub fn looks_like(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.first().copied() {
        Some("table") => words.len() >= 2,
        Some("flush" | "delete") => matches!(words.get(1), Some(&("ruleset" | "table" | "chain"))),
        Some("add" | "insert") => matches!(words.get(1), Some(&("table" | "chain" | "rule"))),
        Some("define") => true,
        _ => false,
    }
}

/// A token of the text form.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    /// `;` or a line end.
    End,
}

fn tokenize(text: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let mut chars = raw.chars().peekable();
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut Vec<(Tok, usize)>| {
            if !word.is_empty() {
                out.push((Tok::Word(std::mem::take(word)), line));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '#' => break,
                '"' => {
                    word.push('"');
                    for q in chars.by_ref() {
                        word.push(q);
                        if q == '"' {
                            break;
                        }
                    }
                }
                '{' | '}' | ';' | ',' => {
                    flush(&mut word, &mut out);
                    out.push((
                        match c {
                            '{' => Tok::Open,
                            '}' => Tok::Close,
                            ';' => Tok::End,
                            _ => Tok::Word(",".into()),
                        },
                        line,
                    ));
                }
                c if c.is_whitespace() => flush(&mut word, &mut out),
                c => word.push(c),
            }
        }
        flush(&mut word, &mut out);
        out.push((Tok::End, line));
    }
    out
}

/// A chain read from the ruleset.
#[derive(Debug, Default, Clone)]
struct Chain {
    family: String,
    table: String,
    name: String,
    /// `type` and `hook` of a base chain.
    base: Option<(String, String, i64)>,
    policy_drop: Option<usize>,
    rules: Vec<NftRule>,
}

/// One rule: its words (anonymous sets as `{`…`}` words), line and text.
#[derive(Debug, Clone)]
struct NftRule {
    words: Vec<String>,
    line: usize,
    text: String,
}

/// Import an nft ruleset (text or JSON).
pub fn import(file: &str, text: &str, into: &mut Imported) -> Result<(), ConfigError> {
    let chains = if text.trim_start().starts_with('{') {
        json::chains(file, text, into)?
    } else {
        Parser {
            file,
            toks: tokenize(text),
            at: 0,
            chains: Vec::new(),
        }
        .ruleset(into)?
    };
    let before = into.warnings.len();
    let statements = statements(file, &chains, into);
    import_statements(file, &statements, into)?;
    into.warnings[before..].sort_by_key(|w| w.line);
    Ok(())
}

struct Parser<'a> {
    file: &'a str,
    toks: Vec<(Tok, usize)>,
    at: usize,
    chains: Vec<Chain>,
}

impl Parser<'_> {
    fn line(&self) -> usize {
        self.toks
            .get(self.at)
            .or(self.toks.last())
            .map_or(1, |t| t.1)
    }

    /// The words up to the end of the statement (`;`, line end, or a `{` opening a block).
    fn statement(&mut self) -> Vec<String> {
        let mut words = Vec::new();
        while let Some((tok, _)) = self.toks.get(self.at) {
            match tok {
                Tok::Word(w) => words.push(w.clone()),
                _ => break,
            }
            self.at += 1;
        }
        words
    }

    fn ruleset(mut self, into: &mut Imported) -> Result<Vec<Chain>, ConfigError> {
        while self.at < self.toks.len() {
            let line = self.line();
            let words = self.statement();
            let opens = self.toks.get(self.at).is_some_and(|t| t.0 == Tok::Open);
            if opens {
                self.at += 1;
            } else {
                self.at += 1; // the End (or a stray `}`)
            }
            if words.is_empty() {
                if opens
                    || self
                        .toks
                        .get(self.at - 1)
                        .is_some_and(|t| t.0 == Tok::Close)
                {
                    return Err(located(self.file, line, "a brace without a statement"));
                }
                continue;
            }
            let w: Vec<&str> = words.iter().map(String::as_str).collect();
            match w.as_slice() {
                ["table", family, name] | ["add", "table", family, name] if opens => {
                    self.table(family, name, into)?
                }
                ["table", ..] | ["add", "table", ..] | ["flush", "ruleset"] => {}
                ["delete" | "flush", "table" | "chain", ..] => {}
                ["add", "chain", family, table, name] => {
                    let chain = self.chain_index(family, table, name);
                    if opens {
                        self.chain_body(chain)?;
                    }
                }
                ["add" | "insert", "rule", family, table, name, rest @ ..] if !opens => {
                    let chain = self.chain_index(family, table, name);
                    let rule = NftRule {
                        words: rest.iter().map(|s| s.to_string()).collect(),
                        line,
                        text: words.join(" "),
                    };
                    if w[0] == "insert" {
                        self.chains[chain].rules.insert(0, rule);
                    } else {
                        self.chains[chain].rules.push(rule);
                    }
                }
                _ => {
                    into.warn(
                        self.file,
                        line,
                        &words.join(" "),
                        format!("`{}` is not read by the importer: ignored", w[0]),
                    );
                    if opens {
                        self.skip_block()?;
                    }
                }
            }
        }
        Ok(self.chains)
    }

    fn chain_index(&mut self, family: &str, table: &str, name: &str) -> usize {
        if let Some(i) = self
            .chains
            .iter()
            .position(|c| c.family == family && c.table == table && c.name == name)
        {
            return i;
        }
        self.chains.push(Chain {
            family: family.into(),
            table: table.into(),
            name: name.into(),
            ..Chain::default()
        });
        self.chains.len() - 1
    }

    /// Skip to the `}` that closes the block just opened.
    fn skip_block(&mut self) -> Result<(), ConfigError> {
        let line = self.line();
        let mut depth = 1;
        while let Some((tok, _)) = self.toks.get(self.at) {
            self.at += 1;
            match tok {
                Tok::Open => depth += 1,
                Tok::Close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(located(self.file, line, "a block is never closed"))
    }

    fn table(&mut self, family: &str, name: &str, into: &mut Imported) -> Result<(), ConfigError> {
        let open_line = self.line();
        loop {
            let Some((tok, line)) = self.toks.get(self.at).cloned() else {
                return Err(located(
                    self.file,
                    open_line,
                    format!("table {family} {name} is never closed"),
                ));
            };
            match tok {
                Tok::Close => {
                    self.at += 1;
                    return Ok(());
                }
                Tok::End => self.at += 1,
                Tok::Open => return Err(located(self.file, line, "a brace without a statement")),
                Tok::Word(_) => {
                    let words = self.statement();
                    let opens = self.toks.get(self.at).is_some_and(|t| t.0 == Tok::Open);
                    if opens {
                        self.at += 1;
                    }
                    match (words[0].as_str(), words.get(1), opens) {
                        ("chain", Some(chain), true) => {
                            let index = self.chain_index(family, name, chain);
                            self.chain_body(index)?;
                        }
                        (_, _, opens) => {
                            into.warn(self.file, line, &words.join(" "), format!("`{}` (in table {family} {name}) is not read by the importer: rules using it are not translated", words[0]));
                            if opens {
                                self.skip_block()?;
                            }
                        }
                    }
                }
            }
        }
    }

    fn chain_body(&mut self, index: usize) -> Result<(), ConfigError> {
        let open_line = self.line();
        let mut rule: Option<NftRule> = None;
        let mut set_depth = 0;
        loop {
            let Some((tok, line)) = self.toks.get(self.at).cloned() else {
                return Err(located(self.file, open_line, "chain is never closed"));
            };
            self.at += 1;
            match tok {
                Tok::Word(w) => {
                    let r = rule.get_or_insert(NftRule {
                        words: Vec::new(),
                        line,
                        text: String::new(),
                    });
                    r.words.push(w);
                }
                Tok::Open => {
                    set_depth += 1;
                    let r = rule.get_or_insert(NftRule {
                        words: Vec::new(),
                        line,
                        text: String::new(),
                    });
                    r.words.push("{".into());
                }
                Tok::Close if set_depth > 0 => {
                    set_depth -= 1;
                    if let Some(r) = rule.as_mut() {
                        r.words.push("}".into());
                    }
                }
                Tok::End if set_depth > 0 => {}
                Tok::End | Tok::Close => {
                    if let Some(r) = rule.take() {
                        self.chain_statement(index, r);
                    }
                    if tok == Tok::Close {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn chain_statement(&mut self, index: usize, mut rule: NftRule) {
        rule.text = rule.words.join(" ").replace(" ,", ",");
        let chain = &mut self.chains[index];
        match rule.words[0].as_str() {
            "type" => {
                let get = |key: &str| {
                    rule.words
                        .iter()
                        .position(|w| w == key)
                        .and_then(|i| rule.words.get(i + 1))
                        .cloned()
                        .unwrap_or_default()
                };
                chain.base = Some((get("type"), get("hook"), priority(&get("priority"))));
            }
            "policy" => {
                if rule.words.get(1).is_some_and(|p| p == "drop") {
                    chain.policy_drop = Some(rule.line);
                }
            }
            "comment" | "devices" | "device" => {}
            _ => chain.rules.push(rule),
        }
    }
}

/// A chain priority: a number or one of nft's names.
fn priority(text: &str) -> i64 {
    let (name, offset) = match text.find(['+', '-']).filter(|&i| i > 0) {
        Some(i) => (&text[..i], text[i..].parse().unwrap_or(0)),
        None => (text, 0),
    };
    let base = match name {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        n => n.parse().unwrap_or(0),
    };
    base + offset
}

/// The iptables (table, chain) of a base chain.
fn iptables_chain(chain: &Chain) -> Option<(String, String)> {
    let (kind, hook, prio) = chain.base.as_ref()?;
    let table = match (kind.as_str(), hook.as_str()) {
        ("nat", _) => "nat",
        ("filter", "prerouting") if *prio <= -200 => "raw",
        ("filter", "prerouting") | ("route", _) => "mangle",
        ("filter", _) => "filter",
        _ => "other",
    };
    Some((table.into(), hook.to_ascii_uppercase()))
}

/// The iptables statements of every chain (regular chains in their jumpers' table).
fn statements(file: &str, chains: &[Chain], into: &mut Imported) -> Vec<Statement> {
    let table_of = |c: &Chain| -> String {
        if let Some((t, _)) = iptables_chain(c) {
            return t;
        }
        let jumper = chains.iter().find(|b| {
            b.family == c.family
                && b.table == c.table
                && b.rules.iter().any(|r| {
                    r.words
                        .windows(2)
                        .any(|w| (w[0] == "jump" || w[0] == "goto") && w[1] == c.name)
                })
        });
        jumper
            .and_then(iptables_chain)
            .map_or_else(|| "filter".into(), |(t, _)| t)
    };
    let mut out = Vec::new();
    for chain in chains {
        if !matches!(chain.family.as_str(), "ip" | "ip6" | "inet") {
            if let Some(rule) = chain.rules.first() {
                into.warn(file, rule.line, &rule.text, format!("family `{}` is not part of the appliance's datapath: chain {} not translated", chain.family, chain.name));
            }
            continue;
        }
        let table = table_of(chain);
        let name = iptables_chain(chain).map_or_else(|| flow_name(chain, &chain.name), |(_, c)| c);
        let policy = if chain.base.is_none() {
            "-"
        } else if chain.policy_drop.is_some() {
            "DROP"
        } else {
            "ACCEPT"
        };
        let line = chain
            .policy_drop
            .or(chain.rules.first().map(|r| r.line))
            .unwrap_or(1);
        out.push(Statement {
            table: table.clone(),
            line,
            statement: format!(":{name} {policy}"),
            origin: format!(
                "chain {} {} {}: policy {}",
                chain.family,
                chain.table,
                chain.name,
                policy.to_lowercase()
            ),
        });
        for rule in &chain.rules {
            let mut words = rule.words.clone();
            for i in 1..words.len() {
                if words[i - 1] == "jump" || words[i - 1] == "goto" {
                    words[i] = flow_name(chain, &words[i]);
                }
            }
            match expression::translate(&words) {
                Ok(parts) => out.extend(parts.into_iter().map(|p| Statement {
                    table: table.clone(),
                    line: rule.line,
                    statement: format!("-A {name}{p}"),
                    origin: rule.text.clone(),
                })),
                Err(why) => into.warn(
                    file,
                    rule.line,
                    &rule.text,
                    format!("{why}: rule not translated"),
                ),
            }
        }
    }
    out
}

/// The flow a regular chain becomes: its name, without the `flow_` that lbsim's own nft
/// export (`table inet lbsim_flows`) puts before each flow's name.
fn flow_name(chain: &Chain, name: &str) -> String {
    match name.strip_prefix("flow_") {
        Some(flow) if chain.table == "lbsim_flows" && !flow.is_empty() => flow.to_string(),
        _ => name.to_string(),
    }
}

mod expression;
mod json;
