//! The flowmgr parser: text → [`FlowFile`], collecting *every* error of the file with its
//! line and column. Line-oriented: a line is a `flow` header, a `match`/`ignore` rule, a
//! comment (`#` to the end of the line) or blank; indentation carries no meaning. This
//! module checks what one line can tell (names, values, the conditions of one rule); it
//! does not resolve interfaces or directors (see [`super::table`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::ast::{
    Condition, FlowDef, FlowFile, PortRange, Prefix, Protocol, RuleDef, RuleKind, Span, Test,
};
use super::error::{FlowError, FlowErrorKind};
use super::{FLOW_NAME_MAX_CHARS, IFACE_NAME_MAX_CHARS, TABLE_ID_MAX};

/// Words iptables gives a meaning of its own; a chain (= flow) cannot be called so.
const RESERVED_NAMES: [&str; 10] = [
    "ACCEPT",
    "DROP",
    "QUEUE",
    "RETURN",
    "MARK",
    "PREROUTING",
    "INPUT",
    "FORWARD",
    "OUTPUT",
    "POSTROUTING",
];

/// The condition keywords, as listed in error messages.
const CONDITION_KEYWORDS: &str = "iface, proto, src, dst, srcport, dstport or icmptype";

/// One whitespace-separated word of a line.
#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    text: &'a str,
    span: Span,
}

/// Parse a file; `Err` holds every error found, in source order.
pub fn parse(source: &str) -> Result<FlowFile, Vec<FlowError>> {
    let (file, errors) = parse_lenient(source);
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

/// Parse a file, keeping what could be understood next to the errors (so that later
/// checks can still report theirs).
pub(crate) fn parse_lenient(source: &str) -> (FlowFile, Vec<FlowError>) {
    let mut parser = Parser::default();
    for (index, line) in source.lines().enumerate() {
        let line_number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let tokens = tokenize(line, line_number);
        parser.line(&tokens, end_span(line, line_number));
    }
    parser.errors.sort_by_key(|error| error.span);
    (parser.file, parser.errors)
}

#[derive(Default)]
struct Parser {
    file: FlowFile,
    errors: Vec<FlowError>,
    /// Flow name → line of its first definition.
    names: BTreeMap<String, u32>,
    /// Whether a flow header was seen (rules attach to the last flow).
    in_flow: bool,
}

impl Parser {
    fn line(&mut self, tokens: &[Token<'_>], end: Span) {
        let Some(first) = tokens.first() else {
            return;
        };
        match first.text {
            "flow" => self.flow_header(tokens, end),
            "match" | "ignore" => self.rule(tokens, end),
            other => self.error(
                FlowErrorKind::UnknownKeyword,
                first.span,
                format!("unknown keyword `{other}`: expected `flow`, `match` or `ignore`"),
            ),
        }
    }

    fn error(&mut self, kind: FlowErrorKind, span: Span, message: String) {
        self.errors.push(FlowError::new(kind, span, message));
    }

    fn flow_header(&mut self, tokens: &[Token<'_>], end: Span) {
        self.in_flow = true;
        let Some(name) = tokens.get(1) else {
            self.error(
                FlowErrorKind::MissingFlowName,
                end,
                "expected a flow name after `flow`".into(),
            );
            self.file.flows.push(flow_def(String::new(), end));
            return;
        };
        self.check_flow_name(name);
        let mut flow = flow_def(name.text.to_owned(), name.span);
        if let Some((policy, span)) = self.policy(&tokens[2..], end) {
            flow.policy = policy;
            flow.policy_span = span;
        }
        self.file.flows.push(flow);
    }

    fn check_flow_name(&mut self, name: &Token<'_>) {
        let text = name.text;
        let bad_char = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'));
        if let Some(bad) = bad_char {
            self.error(
                FlowErrorKind::BadFlowName,
                name.span,
                format!(
                    "flow name `{text}` contains `{bad}`: expected letters, digits, `-` and `_`"
                ),
            );
        } else if text.starts_with('-') {
            self.error(
                FlowErrorKind::BadFlowName,
                name.span,
                format!("flow name `{text}` starts with `-`: iptables chain names cannot"),
            );
        } else if text.chars().count() > FLOW_NAME_MAX_CHARS {
            self.error(
                FlowErrorKind::FlowNameTooLong,
                name.span,
                format!(
                    "flow name `{text}` has {} characters: expected at most {FLOW_NAME_MAX_CHARS}",
                    text.chars().count()
                ),
            );
        } else if RESERVED_NAMES.contains(&text) {
            self.error(
                FlowErrorKind::ReservedFlowName,
                name.span,
                format!("flow name `{text}` is reserved by iptables: choose another name"),
            );
        }
        if let Some(first_line) = self.names.get(text) {
            let error = FlowError::new(
                FlowErrorKind::DuplicateFlowName,
                name.span,
                format!("duplicate flow name `{text}`: flow names must be unique"),
            )
            .with_note(format!("`{text}` is first defined on line {first_line}"));
            self.errors.push(error);
        } else {
            self.names.insert(text.to_owned(), name.span.line);
        }
    }

    /// The policy words after the name; `None` when absent or wrong (errors recorded).
    fn policy(&mut self, tokens: &[Token<'_>], end: Span) -> Option<(super::Policy, Span)> {
        use super::Policy;
        let keyword = tokens.first()?;
        let (policy, span, used) = match keyword.text {
            "permit" => (Policy::Permit, keyword.span, 1),
            "deny" => (Policy::Deny, keyword.span, 1),
            "skip" => (Policy::Skip, keyword.span, 1),
            "director" => {
                let (name, span) = self.director_name(tokens.get(1), end)?;
                (Policy::Director(name), span, 2)
            }
            "table" => {
                let (id, span) = self.table_id(tokens.get(1), end)?;
                (Policy::Table(id), span, 2)
            }
            other => {
                self.error(
                    FlowErrorKind::UnknownPolicy,
                    keyword.span,
                    format!(
                        "unknown policy `{other}`: expected permit, deny, director <name>, skip or table <id>"
                    ),
                );
                return None;
            }
        };
        if let Some(extra) = tokens.get(used) {
            self.error(
                FlowErrorKind::UnexpectedToken,
                extra.span,
                format!(
                    "unexpected `{}` after the policy: expected the end of the line",
                    extra.text
                ),
            );
        }
        Some((policy, span))
    }

    fn director_name(&mut self, token: Option<&Token<'_>>, end: Span) -> Option<(String, Span)> {
        let Some(token) = token else {
            self.error(
                FlowErrorKind::MissingArgument,
                end,
                "expected a director name after `director`".into(),
            );
            return None;
        };
        let valid = token
            .text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.error(
                FlowErrorKind::BadDirectorName,
                token.span,
                format!(
                    "bad director name `{}`: expected letters, digits, `-`, `_` and `.`",
                    token.text
                ),
            );
            return None;
        }
        Some((token.text.to_owned(), token.span))
    }

    fn table_id(&mut self, token: Option<&Token<'_>>, end: Span) -> Option<(u32, Span)> {
        let Some(token) = token else {
            self.error(
                FlowErrorKind::MissingArgument,
                end,
                "expected a routing table id after `table`".into(),
            );
            return None;
        };
        match parse_decimal(token.text) {
            Some(id) if (1..=u64::from(TABLE_ID_MAX)).contains(&id) => {
                Some((u32::try_from(id).unwrap_or(0), token.span))
            }
            _ => {
                self.error(
                    FlowErrorKind::BadTableId,
                    token.span,
                    format!(
                        "bad routing table id `{}`: expected a number in 1..={TABLE_ID_MAX}",
                        token.text
                    ),
                );
                None
            }
        }
    }

    fn rule(&mut self, tokens: &[Token<'_>], end: Span) {
        let keyword = tokens[0];
        let kind = if keyword.text == "match" {
            RuleKind::Match
        } else {
            RuleKind::Ignore
        };
        let conditions = self.conditions(&tokens[1..], end);
        let rule = RuleDef {
            kind,
            span: keyword.span,
            conditions,
        };
        self.check_rule(&rule);
        match self.file.flows.last_mut() {
            Some(flow) if self.in_flow => flow.rules.push(rule),
            _ => self.error(
                FlowErrorKind::RuleOutsideFlow,
                keyword.span,
                format!(
                    "`{}` rule outside a flow: expected `flow <name> [<policy>]` before it",
                    keyword.text
                ),
            ),
        }
    }
}

fn flow_def(name: String, name_span: Span) -> FlowDef {
    FlowDef {
        name,
        name_span,
        policy: super::Policy::Skip,
        policy_span: name_span,
        rules: Vec::new(),
    }
}

/// Split a line (comment removed) into words with their 1-based character columns.
fn tokenize(line: &str, line_number: u32) -> Vec<Token<'_>> {
    let code = line.split('#').next().unwrap_or("");
    let mut tokens = Vec::new();
    let mut start: Option<(usize, u32)> = None;
    let mut column = 0u32;
    for (offset, character) in code.char_indices() {
        column += 1;
        match (character.is_whitespace(), start) {
            (false, None) => start = Some((offset, column)),
            (true, Some((begin, begin_column))) => {
                tokens.push(token(&code[begin..offset], line_number, begin_column));
                start = None;
            }
            _ => {}
        }
    }
    if let Some((begin, begin_column)) = start {
        tokens.push(token(&code[begin..], line_number, begin_column));
    }
    tokens
}

fn token(text: &str, line: u32, column: u32) -> Token<'_> {
    let length = u32::try_from(text.chars().count())
        .unwrap_or(u32::MAX)
        .max(1);
    Token {
        text,
        span: Span {
            line,
            column,
            length,
        },
    }
}

/// The position just after the last word of a line (where a missing word would go).
fn end_span(line: &str, line_number: u32) -> Span {
    let code = line.split('#').next().unwrap_or("").trim_end();
    let column = u32::try_from(code.chars().count()).unwrap_or(u32::MAX);
    Span {
        line: line_number,
        column: column.saturating_add(1),
        length: 1,
    }
}

/// Digits only, no sign, no leading `+`, at most 10 digits.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `a.b.c.d` mask → prefix length, when the ones are contiguous.
fn dotted_mask_length(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then(|| u8::try_from(ones).unwrap_or(32))
}

/// Parse `ip[/len]` or `ip/dotted-mask`; host bits are cleared.
pub(crate) fn parse_prefix(text: &str) -> Result<Prefix, (FlowErrorKind, String)> {
    let (address_text, mask_text) = match text.split_once('/') {
        Some((address, mask)) => (address, Some(mask)),
        None => (text, None),
    };
    let address: IpAddr = address_text.parse().map_err(|_| {
        (
            FlowErrorKind::BadAddress,
            format!("bad address `{address_text}`: expected an IPv4 or IPv6 address"),
        )
    })?;
    let max_length: u8 = if address.is_ipv4() { 32 } else { 128 };
    let length = match mask_text {
        None => max_length,
        Some(mask) => mask_length(mask, address, max_length)?,
    };
    Ok(Prefix {
        address: network_address(address, length),
        length,
    })
}

fn mask_length(mask: &str, address: IpAddr, max_length: u8) -> Result<u8, (FlowErrorKind, String)> {
    if address.is_ipv4() && mask.contains('.') {
        let dotted: Ipv4Addr = mask.parse().map_err(|_| {
            (
                FlowErrorKind::BadMask,
                format!("bad mask `{mask}`: expected a prefix length 0..=32 or a dotted mask"),
            )
        })?;
        return dotted_mask_length(dotted).ok_or_else(|| {
            (
                FlowErrorKind::BadMask,
                format!("mask `{mask}` is not contiguous: expected ones followed by zeros"),
            )
        });
    }
    match parse_decimal(mask) {
        Some(length) if length <= u64::from(max_length) => Ok(u8::try_from(length).unwrap_or(0)),
        _ => Err((
            FlowErrorKind::BadMask,
            format!("bad prefix length `{mask}`: expected 0..={max_length}"),
        )),
    }
}

fn network_address(address: IpAddr, length: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Parse `port` or `first:last`.
pub(crate) fn parse_port_range(text: &str) -> Result<PortRange, (FlowErrorKind, String)> {
    let (first_text, last_text) = text.split_once(':').unwrap_or((text, text));
    let first = parse_port(first_text)?;
    let last = parse_port(last_text)?;
    if first > last {
        return Err((
            FlowErrorKind::ReversedPortRange,
            format!("reversed port range `{text}`: expected first <= last, as in `{last}:{first}`"),
        ));
    }
    Ok(PortRange { first, last })
}

fn parse_port(text: &str) -> Result<u16, (FlowErrorKind, String)> {
    parse_decimal(text)
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| {
            (
                FlowErrorKind::PortOutOfRange,
                format!("bad port `{text}`: expected a number in 0..=65535"),
            )
        })
}

/// Whether Linux (and iptables/nft quoting) accepts an interface name.
fn valid_iface_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= IFACE_NAME_MAX_CHARS
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parse the argument of a condition keyword.
fn parse_test(keyword: &str, argument: &str) -> Result<Test, (FlowErrorKind, String)> {
    match keyword {
        "iface" if valid_iface_name(argument) => Ok(Test::Iface(argument.to_owned())),
        "iface" => Err((
            FlowErrorKind::BadInterfaceName,
            format!(
                "bad interface name `{argument}`: expected 1 to {IFACE_NAME_MAX_CHARS} letters, digits, `-`, `_` or `.` (no wildcards)"
            ),
        )),
        "proto" => match argument {
            "tcp" => Ok(Test::Proto(Protocol::Tcp)),
            "udp" => Ok(Test::Proto(Protocol::Udp)),
            "icmp" => Ok(Test::Proto(Protocol::Icmp)),
            other => Err((
                FlowErrorKind::UnknownProtocol,
                format!("unknown protocol `{other}`: expected tcp, udp or icmp"),
            )),
        },
        "src" => parse_prefix(argument).map(Test::Src),
        "dst" => parse_prefix(argument).map(Test::Dst),
        "srcport" => parse_port_range(argument).map(Test::SrcPort),
        "dstport" => parse_port_range(argument).map(Test::DstPort),
        _ => parse_decimal(argument)
            .and_then(|value| u8::try_from(value).ok())
            .map(Test::IcmpType)
            .ok_or_else(|| {
                (
                    FlowErrorKind::BadIcmpType,
                    format!("bad ICMP type `{argument}`: expected a number in 0..=255"),
                )
            }),
    }
}

fn is_condition_keyword(word: &str) -> bool {
    matches!(
        word,
        "iface" | "proto" | "src" | "dst" | "srcport" | "dstport" | "icmptype"
    )
}

fn argument_description(keyword: &str) -> &'static str {
    match keyword {
        "iface" => "an interface name",
        "proto" => "tcp, udp or icmp",
        "src" | "dst" => "an address or network",
        "srcport" | "dstport" => "a port or a range a:b",
        _ => "an ICMP type number",
    }
}

impl Parser {
    /// The conditions of a rule; errors are recorded and parsing goes on after them.
    fn conditions(&mut self, tokens: &[Token<'_>], end: Span) -> Vec<Condition> {
        let mut conditions: Vec<Condition> = Vec::new();
        let mut not_span: Option<Span> = None;
        let mut index = 0;
        while let Some(word) = tokens.get(index) {
            if word.text == "not" {
                if not_span.is_some() {
                    self.error(
                        FlowErrorKind::DanglingNot,
                        word.span,
                        "`not` twice: expected a condition keyword after `not`".into(),
                    );
                }
                not_span = Some(word.span);
                index += 1;
                continue;
            }
            if !is_condition_keyword(word.text) {
                self.error(
                    FlowErrorKind::UnknownCondition,
                    word.span,
                    format!(
                        "unknown condition `{}`: expected {CONDITION_KEYWORDS}",
                        word.text
                    ),
                );
                not_span = None;
                index += 1;
                while tokens
                    .get(index)
                    .is_some_and(|next| !is_condition_keyword(next.text) && next.text != "not")
                {
                    index += 1;
                }
                continue;
            }
            let Some(argument) = tokens.get(index + 1) else {
                self.error(
                    FlowErrorKind::MissingArgument,
                    end,
                    format!(
                        "expected {} after `{}`",
                        argument_description(word.text),
                        word.text
                    ),
                );
                return conditions;
            };
            self.condition(word, argument, not_span.take(), &mut conditions);
            index += 2;
        }
        if let Some(span) = not_span {
            self.error(
                FlowErrorKind::DanglingNot,
                span,
                format!("`not` at the end of the rule: expected {CONDITION_KEYWORDS} after it"),
            );
        }
        conditions
    }

    fn condition(
        &mut self,
        keyword: &Token<'_>,
        argument: &Token<'_>,
        not_span: Option<Span>,
        conditions: &mut Vec<Condition>,
    ) {
        let test = match parse_test(keyword.text, argument.text) {
            Ok(test) => test,
            Err((kind, message)) => {
                self.error(kind, argument.span, message);
                return;
            }
        };
        if let Some(first) = conditions.iter().find(|c| c.test.keyword() == keyword.text) {
            let error = FlowError::new(
                FlowErrorKind::DuplicateCondition,
                keyword.span,
                format!(
                    "`{}` given twice in one rule: expected each condition at most once",
                    keyword.text
                ),
            )
            .with_note(format!(
                "first `{}` at column {}",
                keyword.text, first.span.column
            ));
            self.errors.push(error);
            return;
        }
        conditions.push(Condition {
            negated: not_span.is_some(),
            test,
            span: not_span.unwrap_or(keyword.span),
            value_span: argument.span,
        });
    }

    /// Checks across the conditions of one rule: protocol dependencies and families.
    fn check_rule(&mut self, rule: &RuleDef) {
        let positive_proto = rule.conditions.iter().find_map(|c| match c.test {
            Test::Proto(protocol) if !c.negated => Some(protocol),
            _ => None,
        });
        for condition in &rule.conditions {
            match condition.test {
                Test::SrcPort(_) | Test::DstPort(_)
                    if !matches!(positive_proto, Some(Protocol::Tcp | Protocol::Udp)) =>
                {
                    self.error(
                        FlowErrorKind::PortWithoutTcpUdp,
                        condition.span,
                        format!(
                            "`{}` needs `proto tcp` or `proto udp` in the same rule (`not proto` does not count)",
                            condition.test.keyword()
                        ),
                    );
                }
                Test::IcmpType(_) if positive_proto != Some(Protocol::Icmp) => self.error(
                    FlowErrorKind::IcmpTypeWithoutIcmp,
                    condition.span,
                    "`icmptype` needs `proto icmp` in the same rule (`not proto` does not count)"
                        .into(),
                ),
                _ => {}
            }
        }
        self.check_families(rule);
    }

    fn check_families(&mut self, rule: &RuleDef) {
        let mut first: Option<(super::Family, &Condition)> = None;
        for condition in &rule.conditions {
            let family = match &condition.test {
                Test::Src(prefix) | Test::Dst(prefix) => prefix.family(),
                Test::IcmpType(_) => super::Family::V4,
                _ => continue,
            };
            match first {
                None => first = Some((family, condition)),
                Some((first_family, first_condition)) if first_family != family => {
                    let message = format!(
                        "`{}` is {} but `{}` is {}: one rule cannot match both families",
                        condition,
                        family.name(),
                        first_condition,
                        first_family.name()
                    );
                    self.error(FlowErrorKind::MixedAddressFamilies, condition.span, message);
                    return;
                }
                Some(_) => {}
            }
        }
    }
}
