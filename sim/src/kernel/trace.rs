//! Which kernel rule decided each packet, from nftables tracing: a netdev ingress chain on
//! both LB veths sets `meta nftrace` on every IP frame before any other chain
//! ([`trace_nft`]), the trace events are read from netlink in the LB namespace during the
//! exchange ([`Monitor`], see `nftrace`: what `nft monitor trace` prints, without its
//! formatting cost), grouped per packet by the IPv4 ID or IPv6 flow label (the runner's
//! 16-bit tag) of each chain's first event, and named with the rule texts of
//! `nft -a list ruleset` ([`from_events`]). iptables-nft rules (the flows'
//! iptables-restore output) are nft rules too and appear with their chain (the flow's
//! name), handle and text.
//!
//! A packet's deciding rule ([`TracedPacket::decision`]) is the rule (or chain policy) whose
//! verdict dropped it, else the last rule that accepted it. Packets that no rule dropped but
//! the kernel did not forward were refused by the stack itself (routing, martians,
//! defragmentation): the trace says which hook they reached last, and the LB namespace's
//! IP counters ([`snmp_counters`], before and after the run) say which kernel counters
//! moved. The `skb:kfree_skb` tracepoint would name a drop reason per skb, but it carries
//! no namespace and no packet bytes (so it cannot be tied to a tag) and needs a host-wide
//! tracefs mount: it is not used.
//!
//! Not here: the per-packet outcome (see `inject`) and the comparison (see `diff`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::nftrace::{RuleTexts, TraceEvent, TraceReader};
use super::topology::{LB_CLIENT_IFACE, LB_SERVER_IFACE, Topology};

/// Name of the nft table (family netdev) that turns tracing on.
pub const TRACE_TABLE: &str = "lbsim_trace";
/// The IPv4 ID of the probe frames that mark the start and end of a trace (packet tags
/// are 1..=65535).
pub const PROBE_TAG: u16 = 0;
/// How long to wait for a probe's trace before sending another.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How long to wait for the monitor to print a probe's trace.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `nft -f` input: trace every IPv4 frame entering the LB, first of all chains.
pub fn trace_nft() -> String {
    let mut out = format!("table netdev {TRACE_TABLE}\ndelete table netdev {TRACE_TABLE}\n");
    out.push_str(&format!("table netdev {TRACE_TABLE} {{\n"));
    for (chain, iface) in [("client", LB_CLIENT_IFACE), ("server", LB_SERVER_IFACE)] {
        out.push_str(&format!(
            "\tchain {chain} {{\n\t\ttype filter hook ingress device \"{iface}\" priority -1000; policy accept;\n\t\tmeta protocol {{ ip, ip6 }} meta nftrace set 1\n\t}}\n"
        ));
    }
    out.push_str("}\n");
    out
}

/// One rule (or chain policy) that gave a packet a verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct RuleRef {
    /// Table family (`netdev`, `ip`, …).
    pub family: String,
    /// Table name (`lbsim_shield`, `mangle` for iptables-nft, …).
    pub table: String,
    /// Chain name (for the flows' iptables chains: the flow's name).
    pub chain: String,
    /// Rule handle (`None`: the chain's policy).
    pub handle: Option<u32>,
    /// The rule's text as nft prints it (counter values removed), or `policy`.
    pub text: String,
    /// Its verdict (`drop`, `accept`, …).
    pub verdict: String,
}

impl RuleRef {
    /// Whether the rule is one of the flows' iptables-nft rules.
    pub fn is_iptables(&self) -> bool {
        matches!(self.family.as_str(), "ip" | "ip6")
            && matches!(self.table.as_str(), "mangle" | "filter" | "nat" | "raw")
    }
}

impl fmt::Display for RuleRef {
    /// `nft netdev lbsim_shield ingress handle 7: ip saddr @deny_default counter drop`,
    /// `iptables-nft ip mangle alltherest (flow alltherest) handle 24: counter drop`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tool = if self.is_iptables() {
            "iptables-nft"
        } else {
            "nft"
        };
        write!(
            formatter,
            "{tool} {} {} {}",
            self.family, self.table, self.chain
        )?;
        let flow_chain = self.is_iptables() && self.chain.chars().any(|c| c.is_lowercase());
        if flow_chain {
            write!(formatter, " (flow {})", self.chain)?;
        }
        match self.handle {
            Some(handle) => write!(formatter, " handle {handle}: {}", self.text),
            None => write!(formatter, " policy {}", self.verdict),
        }
    }
}

/// What the trace says about one packet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TracedPacket {
    /// The hooks it reached, in order (`family table chain` of each `packet:` line).
    pub hooks: Vec<String>,
    /// Rules and policies with a final verdict (accept, drop, …), in order.
    pub verdicts: Vec<RuleRef>,
}

impl TracedPacket {
    /// The rule that dropped (or stole: synproxy answering) it, else the last one that
    /// accepted it.
    pub fn decision(&self) -> Option<&RuleRef> {
        let dropped = self
            .verdicts
            .iter()
            .find(|r| matches!(r.verdict.as_str(), "drop" | "stolen"));
        dropped.or_else(|| {
            self.verdicts
                .iter()
                .rev()
                .find(|r| r.verdict == "accept" && r.handle.is_some())
        })
    }

    /// The rule that dropped it.
    pub fn drop_rule(&self) -> Option<&RuleRef> {
        self.verdicts.iter().find(|r| r.verdict == "drop")
    }

    /// The last hook it reached.
    pub fn last_hook(&self) -> Option<&str> {
        self.hooks.last().map(String::as_str)
    }
}

/// Per-tag traces of a run, plus what could not be read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Traces {
    /// By IPv4 ID (the packet tag).
    pub packets: BTreeMap<u16, TracedPacket>,
    /// Trace events lost during the run (receive-buffer overflows, beyond capacity).
    pub unparsed: u64,
    /// Why there are no traces (monitor failed to start or to catch up), if so.
    pub missing: Option<String>,
}

/// Whether a verdict ends the packet's walk through a chain for good (accept, drop, …)
/// rather than continuing, jumping or returning.
fn is_final(verdict: &str) -> bool {
    !matches!(
        verdict,
        "continue" | "break" | "jump" | "goto" | "return" | "unknown"
    )
}

/// Group trace events per packet tag. A trace id follows one skb through the hooks; the
/// first event of each chain carries the network header, hence the tag. Probe frames
/// (IPv4 ID [`PROBE_TAG`]) and frames without a tag are left out.
pub fn from_events(events: &[TraceEvent], texts: &RuleTexts) -> Traces {
    let mut traces = Traces::default();
    let mut current: BTreeMap<u32, u16> = BTreeMap::new();
    for event in events {
        if let Some(tag) = event.tag {
            current.insert(event.id, tag);
            if tag != PROBE_TAG && !event.probe {
                let hook = format!("{} {} {}", event.family, event.table, event.chain);
                traces.packets.entry(tag).or_default().hooks.push(hook);
            }
        }
        let Some(&tag) = current.get(&event.id) else {
            continue;
        };
        if tag == PROBE_TAG || event.probe || !is_final(event.verdict) {
            continue;
        }
        let text = match event.handle {
            None => "policy".to_string(),
            Some(handle) => texts
                .get(event.family, &event.table, &event.chain, handle)
                .map_or_else(
                    || "(rule gone from the ruleset)".to_string(),
                    str::to_string,
                ),
        };
        let rule = RuleRef {
            family: event.family.to_string(),
            table: event.table.clone(),
            chain: event.chain.clone(),
            handle: event.handle.and_then(|h| u32::try_from(h).ok()),
            text,
            verdict: event.verdict.to_string(),
        };
        traces.packets.entry(tag).or_default().verdicts.push(rule);
    }
    traces
}

/// The trace reader of a lab (see `nftrace`): events of the LB namespace, collected by a
/// thread, and the rule texts to name them with.
#[derive(Debug)]
pub struct Monitor {
    reader: TraceReader,
    ns: String,
    /// Events lost before the current run.
    lost_before: std::sync::atomic::AtomicU64,
}

impl Monitor {
    /// Start reading (the trace table must be installed).
    pub fn start(topology: &Topology) -> anyhow::Result<Self> {
        let ns = topology.lb_ns();
        Ok(Self {
            reader: TraceReader::start(&ns).context("reading nftables traces")?,
            ns,
            lost_before: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many probe trace events were read.
    pub fn probes_seen(&self) -> usize {
        self.reader.probes_seen()
    }

    /// Forget the events read so far.
    pub fn discard(&self) {
        self.reader.take_events();
        let lost = self.reader.lost();
        self.lost_before
            .store(lost, std::sync::atomic::Ordering::Relaxed);
    }

    /// Send probes with `send_probe` until the reader has seen more than `before` probe
    /// events (then every event before them was read too: netlink keeps their order).
    /// False after [`PROBE_TIMEOUT`].
    pub fn sync(&self, before: usize, send_probe: impl Fn() -> anyhow::Result<()>) -> bool {
        let deadline = Instant::now() + PROBE_TIMEOUT;
        while Instant::now() < deadline {
            if send_probe().is_err() {
                return false;
            }
            let wait_until = Instant::now() + PROBE_INTERVAL;
            while Instant::now() < wait_until {
                if self.probes_seen() > before {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        false
    }

    /// The traces read since [`Monitor::discard`], named with the rules installed now,
    /// with the events lost meanwhile (receive-buffer overflows).
    pub fn traces(&self, topology: &Topology) -> anyhow::Result<Traces> {
        let events = self.reader.take_events();
        let listing = topology.exec(&self.ns, &["nft", "-a", "list", "ruleset"], None)?;
        let mut traces = from_events(&events, &RuleTexts::parse(&listing));
        let before = self.lost_before.load(std::sync::atomic::Ordering::Relaxed);
        traces.unparsed = self.reader.lost().saturating_sub(before);
        Ok(traces)
    }
}

/// IP and ICMP counters of the LB namespace (`/proc/net/snmp` and `/proc/net/snmp6` read
/// inside it): `Ip.InAddrErrors`, `Ip6InNoRoutes` → value.
pub fn snmp_counters(topology: &Topology) -> anyhow::Result<BTreeMap<String, u64>> {
    let lb = topology.lb_ns();
    let text = topology.exec(&lb, &["cat", "/proc/net/snmp", "/proc/net/snmp6"], None)?;
    Ok(parse_snmp(&text))
}

/// Parse `/proc/net/snmp` (pairs of header and value lines per protocol: `Ip` and `Icmp`
/// are kept) followed by `/proc/net/snmp6` (`Ip6…` / `Icmp6…` name and value per line).
pub fn parse_snmp(text: &str) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    let (snmp, snmp6): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.contains(": "));
    for line in snmp6 {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(Ok(value))) = (words.next(), words.next().map(str::parse))
            && (name.starts_with("Ip6") || name.starts_with("Icmp6"))
        {
            counters.insert(name.to_string(), value);
        }
    }
    let lines = snmp;
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((proto, names)), Some((_, values))) =
            (names.split_once(": "), values.split_once(": "))
        else {
            continue;
        };
        if !matches!(proto, "Ip" | "Icmp") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(value) = value.parse() {
                counters.insert(format!("{proto}.{name}"), value);
            }
        }
    }
    counters
}

/// Counters that moved between two readings, with their increase.
pub fn counter_deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(name, &value)| {
            let delta = value.saturating_sub(before.get(name).copied().unwrap_or(0));
            (delta > 0).then(|| (name.clone(), delta))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        id: u32,
        table: &str,
        chain: &str,
        handle: Option<u64>,
        verdict: &'static str,
    ) -> TraceEvent {
        TraceEvent {
            id,
            family: if table == "lbsim_shield" {
                "netdev"
            } else {
                "ip"
            },
            table: table.into(),
            chain: chain.into(),
            handle,
            verdict,
            policy: handle.is_none(),
            tag: None,
            probe: false,
        }
    }

    fn tagged(mut event: TraceEvent, tag: u16) -> TraceEvent {
        event.tag = Some(tag);
        event
    }

    #[test]
    fn traces_are_grouped_by_tag_and_name_the_deciding_rule() {
        let listing = "table ip mangle {\n\tchain PREROUTING {\n\t\tcounter packets 1 bytes 2 jump alltherest # handle 11\n\t}\n\tchain alltherest {\n\t\tcounter packets 3 bytes 180 drop # handle 24\n\t}\n}\ntable netdev lbsim_shield {\n\tchain ingress {\n\t\tip daddr 192.0.2.10 ip saddr @allow_src_0 counter packets 1 bytes 2 accept # handle 5\n\t}\n}\n";
        let texts = RuleTexts::parse(listing);
        let mut probe = tagged(event(3, "lbsim_shield", "ingress", Some(5), "accept"), 0);
        probe.probe = true;
        let events = vec![
            tagged(event(1, "mangle", "PREROUTING", Some(11), "jump"), 7),
            event(1, "mangle", "alltherest", Some(24), "drop"),
            probe,
            tagged(event(2, "lbsim_shield", "ingress", Some(5), "accept"), 8),
            tagged(event(2, "mangle", "PREROUTING", None, "accept"), 8),
        ];
        let traces = from_events(&events, &texts);
        assert_eq!(traces.packets.len(), 2, "the probe is left out");
        let dropped = &traces.packets[&7];
        assert_eq!(
            dropped.decision().expect("drop").to_string(),
            "iptables-nft ip mangle alltherest (flow alltherest) handle 24: counter drop"
        );
        assert_eq!(dropped.last_hook(), Some("ip mangle PREROUTING"));
        let accepted = &traces.packets[&8];
        assert_eq!(
            accepted.decision().expect("accept").to_string(),
            "nft netdev lbsim_shield ingress handle 5: ip daddr 192.0.2.10 ip saddr @allow_src_0 counter accept"
        );
        assert!(accepted.drop_rule().is_none());
        assert_eq!(accepted.hooks.len(), 2);
    }

    #[test]
    fn snmp_counters_are_read_per_protocol_and_diffed() {
        let before = parse_snmp(
            "Ip: Forwarding InAddrErrors\nIp: 1 3\nTcp: RtoMin\nTcp: 200\nIp6InReceives 4\nUdp6InErrors 1\n",
        );
        let after = parse_snmp(
            "Ip: Forwarding InAddrErrors\nIp: 1 5\nTcp: RtoMin\nTcp: 200\nIp6InReceives 4\n",
        );
        assert_eq!(before.len(), 3);
        let deltas = counter_deltas(&before, &after);
        assert_eq!(deltas, BTreeMap::from([("Ip.InAddrErrors".to_string(), 2)]));
    }
}
