//! Known differences between the simulator and the kernel runner, as precise rules: each
//! names the packet class it covers (a predicate over the decoded input packet), the exact
//! outcome on each side (kind, and the drop reason / drop class / answer), and the kernel
//! mechanism that decides it. A disagreement is explained only when one entry matches all
//! of that; nothing else is excused. The format is documented at the top of
//! `known-differences.toml`.
//!
//! Drops are compared by class ([`simulator_drop_class`], [`kernel_drop_class`]): a
//! shield-list drop on one side and a flow-deny drop on the other is a disagreement.
//!
//! Not here: running the two sides and the report (see `diff`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::inject::KernelPacket;
use super::outcome::{FrameSummary, Outcome};

/// One known difference.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Explanation {
    /// Unique name, reported with the count of packets it explained.
    pub name: String,
    /// The justification.
    pub why: String,
    /// Text the kernel side's deciding rule or mechanism must contain (as `sim diff`
    /// prints it in the disagreement's kernel column).
    pub mechanism: String,
    /// Forward (or proxy) on both sides: exactly the fields that differ (`src`, `sport`,
    /// `dst`, `dport`).
    #[serde(default)]
    pub differs: Vec<String>,
    /// The packet class.
    pub packet: PacketClass,
    /// The simulator's outcome.
    pub simulator: SideOutcome,
    /// The kernel's outcome.
    pub kernel: SideOutcome,
}

/// A predicate over the decoded input packet: every key given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PacketClass {
    /// `ipv4` or `ipv6`.
    pub family: Option<String>,
    /// Protocol names as decoded (`tcp`, `udp`, `icmp`, `ipv6-icmp`, …): one of these.
    pub proto: Option<Vec<String>>,
    /// TCP flags that must all be set (letters `S A F R P U`).
    pub tcp_set: Option<String>,
    /// TCP flags that must all be clear.
    pub tcp_clear: Option<String>,
    /// TTL / hop limit at most this.
    pub ttl_max: Option<u8>,
    /// An IP fragment (or not).
    pub fragment: Option<bool>,
    /// The source is in one of these address classes (see [`address_class`]).
    pub src: Option<Vec<String>>,
    /// The destination is in one of these address classes.
    pub dst: Option<Vec<String>>,
    /// `bad` or `good`: the TCP/UDP checksum, computed from the bytes.
    pub l4_checksum: Option<String>,
    /// `auto`: the destination is a protected one whose context has `syn_cookies = auto`.
    pub cookie_mode: Option<String>,
    /// A director decided it on the simulator side (a request to one of its virtual
    /// services, or a reply from one of its real servers).
    pub director: Option<bool>,
}

/// One side's exact outcome.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SideOutcome {
    /// `drop`, `forward`, `answer` or `proxy`.
    pub kind: String,
    /// Simulator drops: the exact drop reason (`invalid:tcp_syn_fin`).
    pub reason: Option<String>,
    /// Kernel drops: the drop class (see [`DROP_CLASSES`]).
    pub class: Option<String>,
    /// Answers: `syn-ack`, `rst` or `icmp T/C`.
    pub answer: Option<String>,
}

/// The drop classes both sides' drops are sorted into.
pub const DROP_CLASSES: [&str; 11] = [
    "shield-list",
    "shield-ttl",
    "shield-rate",
    "shield-cookies",
    "flow-deny",
    "director",
    "nat",
    "invalid",
    "routing",
    "defrag",
    "stack",
];
// `defrag` on the simulator side: overlapping and oversized fragments, which the kernel
// drops in `ip_frag_queue`.

/// The address classes of a packet class's `src` / `dst`; every address is in exactly one.
pub const ADDRESS_CLASSES: [&str; 8] = [
    "unspecified",
    "this-network",
    "loopback",
    "multicast",
    "broadcast",
    "reserved",
    "link-local",
    "unicast",
];

/// The class of an address: IPv4 `unspecified` (0.0.0.0), `this-network` (the rest of
/// 0/8), `loopback` (127/8), `multicast` (224/4), `broadcast` (255.255.255.255),
/// `reserved` (the rest of 240/4), `link-local` (169.254/16); IPv6 `unspecified`,
/// `loopback`, `multicast` (ff00::/8), `link-local` (fe80::/10); else `unicast`.
pub fn address_class(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(a) if a.is_unspecified() => "unspecified",
        IpAddr::V4(a) if a.octets()[0] == 0 => "this-network",
        IpAddr::V4(a) if a.is_loopback() => "loopback",
        IpAddr::V4(a) if a.is_multicast() => "multicast",
        IpAddr::V4(a) if a.is_broadcast() => "broadcast",
        IpAddr::V4(a) if a.octets()[0] >= 240 => "reserved",
        IpAddr::V4(a) if a.is_link_local() => "link-local",
        IpAddr::V6(a) if a.is_unspecified() => "unspecified",
        IpAddr::V6(a) if a.is_loopback() => "loopback",
        IpAddr::V6(a) if a.is_multicast() => "multicast",
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => "link-local",
        _ => "unicast",
    }
}

/// The class of a simulator drop reason.
pub fn simulator_drop_class(reason: Option<&str>) -> &'static str {
    match reason.unwrap_or("") {
        "invalid:fragment_overlap" | "invalid:fragment_oversize" => "defrag",
        r if r.starts_with("invalid:") => "invalid",
        "denylist" | "unmatched" => "shield-list",
        "ttl" => "shield-ttl",
        "rate" | "table_full" => "shield-rate",
        "bad_cookie" | "stale_cookie" | "no_session" => "shield-cookies",
        "flow_deny" => "flow-deny",
        "no_destination" | "conn_table_full" => "director",
        "no_reverse_translation" => "nat",
        "martian_source"
        | "martian_destination"
        | "not_unicast"
        | "rp_filter"
        | "forwarding_off" => "routing",
        "reassembly_failed" | "fragment_duplicate" | "reassembly_incomplete" => "defrag",
        _ => "stack",
    }
}

/// The class of a kernel drop: from the nft / iptables-nft rule that dropped it when one
/// did (shield table, synproxy, flows' chains, NAT, director), else the stack's, in the
/// kernel's order: `invalid` (an IPv4 header `ip_rcv_core` refuses), `routing` (a martian or not-forwardable address, `ip_route_input_slow` /
/// `ip6_route_input`), `defrag` (a fragment held by `nf_defrag`), or `stack`.
pub fn kernel_drop_class(input: &FrameSummary, packet: &KernelPacket) -> &'static str {
    if let (Some(rule), true) = (&packet.rule, packet.dropped_by_rule) {
        let text = rule.text.to_lowercase();
        return match rule.table.as_str() {
            "lbsim_shield" => "shield-list",
            "lbsim_synproxy" => "shield-cookies",
            _ if text.contains("synproxy") || rule.chain == "FORWARD" => "shield-cookies",
            "nat" | "lbsim_nat" => "nat",
            table if table.contains("director") => "director",
            _ if rule.is_iptables() => "flow-deny",
            _ => "stack",
        };
    }
    if input.ipv4_header_ok == Some(false) {
        "invalid"
    } else if routing_refusal(input).is_some() {
        "routing"
    } else if input.fragment {
        "defrag"
    } else {
        "stack"
    }
}

/// Why the kernel's routing refuses to forward a packet whatever the rules say, from its
/// addresses (IPv4 `ip_route_input_slow`: martian sources and loopback destinations; no
/// multicast routing; limited broadcast. IPv6 `ip6_forward` / `ip6_route_input`).
pub fn routing_refusal(input: &FrameSummary) -> Option<&'static str> {
    let (src, dst) = (address_class(input.src?), address_class(input.dst?));
    let ipv6 = input.src.is_some_and(|a| a.is_ipv6());
    let martian_src: &[&str] = if ipv6 {
        &["multicast", "loopback", "link-local", "unspecified"]
    } else {
        &[
            "multicast",
            "loopback",
            "broadcast",
            "unspecified",
            "reserved",
        ]
    };
    if martian_src.contains(&src) {
        return Some(if ipv6 {
            "kernel routing (IPv6): martian source (multicast, loopback, link-local or unspecified) not forwarded (ip6_forward)"
        } else {
            "kernel routing: martian source dropped (ip_route_input_slow)"
        });
    }
    match (ipv6, dst) {
        (false, "loopback") => {
            Some("kernel routing: martian destination dropped (ip_route_input_slow)")
        }
        (_, "multicast" | "broadcast") | (false, "unspecified") => Some(
            "kernel routing: multicast/broadcast destination not forwarded (no multicast routing)",
        ),
        (true, "loopback" | "link-local" | "unspecified") => Some(
            "kernel routing (IPv6): martian destination (loopback, link-local or unspecified) not forwarded (ip6_forward)",
        ),
        _ => None,
    }
}

/// What an explanation is matched against.
pub struct Case<'t> {
    /// The packet as it arrived.
    pub input: &'t FrameSummary,
    /// The simulator's outcome.
    pub simulator: &'t Outcome,
    /// The kernel's outcome (a drop's reason is its drop class).
    pub kernel: &'t Outcome,
    /// The kernel's deciding rule or mechanism.
    pub mechanism: &'t str,
    /// Whether the destination is protected with `syn_cookies = auto`.
    pub cookie_auto: bool,
    /// Whether a director decided it on the simulator side.
    pub director: bool,
}

/// `syn-ack`, `rst` or `icmp T/C`.
fn answer_kind(outcome: &Outcome) -> Option<String> {
    let text = outcome.text();
    let rest = text.strip_prefix("answer ")?;
    Some(rest.split(" [").next().unwrap_or(rest).to_string())
}

fn side_matches(side: &SideOutcome, outcome: &Outcome) -> bool {
    if side.kind != outcome.kind() {
        return false;
    }
    match outcome {
        Outcome::Drop { reason } => {
            let wanted = side.reason.as_deref().or(side.class.as_deref());
            wanted.is_some() && wanted == reason.as_deref()
        }
        Outcome::Answer { .. } => side.answer == answer_kind(outcome),
        _ => true,
    }
}

/// The 5-tuple fields in which two forwarded (or proxy) frames differ.
pub fn differing_fields(sim: &Outcome, kernel: &Outcome) -> BTreeSet<&'static str> {
    let frames = match (sim, kernel) {
        (Outcome::Forward { frame: a }, Outcome::Forward { frame: b })
        | (Outcome::Proxy { frame: a }, Outcome::Proxy { frame: b }) => Some((a, b)),
        _ => None,
    };
    let mut fields = BTreeSet::new();
    if let Some((a, b)) = frames {
        for (name, differs) in [
            ("src", a.src != b.src),
            ("sport", a.sport != b.sport),
            ("dst", a.dst != b.dst),
            ("dport", a.dport != b.dport),
        ] {
            if differs {
                fields.insert(name);
            }
        }
    }
    fields
}

impl PacketClass {
    /// Whether the packet is in the class.
    pub fn contains(&self, case: &Case<'_>) -> bool {
        let input = case.input;
        let family = match input.src {
            Some(IpAddr::V4(_)) => "ipv4",
            Some(IpAddr::V6(_)) => "ipv6",
            None => "",
        };
        let in_classes = |classes: &Option<Vec<String>>, addr: Option<IpAddr>| {
            classes
                .as_ref()
                .is_none_or(|list| addr.is_some_and(|a| list.iter().any(|c| c == address_class(a))))
        };
        let tcp = input.proto == "tcp";
        self.family.as_ref().is_none_or(|f| f == family)
            && self.proto.as_ref().is_none_or(|p| p.contains(&input.proto))
            && self
                .tcp_set
                .as_ref()
                .is_none_or(|f| tcp && input.tcp_flags_are(f, true))
            && self
                .tcp_clear
                .as_ref()
                .is_none_or(|f| tcp && input.tcp_flags_are(f, false))
            && self.ttl_max.is_none_or(|max| input.ttl <= max)
            && self.fragment.is_none_or(|f| f == input.fragment)
            && in_classes(&self.src, input.src)
            && in_classes(&self.dst, input.dst)
            && self
                .l4_checksum
                .as_ref()
                .is_none_or(|want| input.l4_checksum_ok == Some(want == "good"))
            && self.cookie_mode.as_ref().is_none_or(|_| case.cookie_auto)
            && self.director.is_none_or(|d| d == case.director)
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Explanation {
    /// Whether this entry explains the case.
    pub fn matches(&self, case: &Case<'_>) -> bool {
        side_matches(&self.simulator, case.simulator)
            && side_matches(&self.kernel, case.kernel)
            && case.mechanism.contains(self.mechanism.as_str())
            && (self.differs.is_empty()
                || differing_fields(case.simulator, case.kernel)
                    == self.differs.iter().map(String::as_str).collect())
            && self.packet.contains(case)
    }

    /// Check that the entry is precise: a packet class, both outcomes exact, a mechanism.
    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.mechanism.trim().is_empty() {
            return Err("`name` and `mechanism` must not be empty".into());
        }
        if self.packet.is_empty() {
            return Err("no packet class: give at least one [difference.packet] key".into());
        }
        validate_side("simulator", &self.simulator)?;
        validate_side("kernel", &self.kernel)?;
        if self.simulator.class.is_some() || self.kernel.reason.is_some() {
            return Err("simulator drops name a `reason`, kernel drops a `class`".into());
        }
        let both_forward = self.simulator.kind == self.kernel.kind
            && matches!(self.simulator.kind.as_str(), "forward" | "proxy");
        if both_forward == self.differs.is_empty() {
            return Err("`differs` is required exactly when both sides forward (or proxy)".into());
        }
        if let Some(field) = self
            .differs
            .iter()
            .find(|f| !["src", "sport", "dst", "dport"].contains(&f.as_str()))
        {
            return Err(format!("unknown field `{field}` in `differs`"));
        }
        self.packet.validate()
    }
}

fn validate_side(side: &str, outcome: &SideOutcome) -> Result<(), String> {
    let detail = match outcome.kind.as_str() {
        "drop" if side == "simulator" => outcome.reason.is_some(),
        "drop" => outcome
            .class
            .as_deref()
            .is_some_and(|c| DROP_CLASSES.contains(&c)),
        "answer" => outcome.answer.as_deref().is_some_and(|a| {
            a == "syn-ack" || a == "rst" || a.strip_prefix("icmp ").is_some_and(|c| c.contains('/'))
        }),
        "forward" | "proxy" => outcome.reason.is_none() && outcome.answer.is_none(),
        other => return Err(format!("{side}: unknown kind `{other}`")),
    };
    if detail {
        Ok(())
    } else {
        Err(format!(
            "{side}: a `{}` needs its exact detail (drop: simulator `reason` / kernel `class` one of {DROP_CLASSES:?}; answer: `answer` = syn-ack | rst | icmp T/C)",
            outcome.kind
        ))
    }
}

impl PacketClass {
    fn validate(&self) -> Result<(), String> {
        let known = |list: &Option<Vec<String>>| {
            list.iter()
                .flatten()
                .find(|c| !ADDRESS_CLASSES.contains(&c.as_str()))
                .map_or(Ok(()), |c| Err(format!("unknown address class `{c}`")))
        };
        known(&self.src)?;
        known(&self.dst)?;
        let checks = [
            (self.family.as_deref(), &["ipv4", "ipv6"][..], "family"),
            (
                self.l4_checksum.as_deref(),
                &["bad", "good"][..],
                "l4_checksum",
            ),
            (self.cookie_mode.as_deref(), &["auto"][..], "cookie_mode"),
        ];
        for (value, allowed, key) in checks {
            if let Some(value) = value.filter(|v| !allowed.contains(v)) {
                return Err(format!("`{key}` = `{value}`: one of {allowed:?}"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplanationFile {
    #[serde(default)]
    difference: Vec<Explanation>,
}

/// Parse an explanation file's text, refusing imprecise entries and repeated names.
pub fn parse_explanations(text: &str) -> anyhow::Result<Vec<Explanation>> {
    let entries = toml::from_str::<ExplanationFile>(text)?.difference;
    let mut names = BTreeSet::new();
    for (index, entry) in entries.iter().enumerate() {
        entry.validate().map_err(|why| {
            anyhow::anyhow!("[[difference]] #{} `{}`: {why}", index + 1, entry.name)
        })?;
        if !names.insert(entry.name.as_str()) {
            anyhow::bail!(
                "[[difference]] #{}: name `{}` repeated",
                index + 1,
                entry.name
            );
        }
    }
    Ok(entries)
}
