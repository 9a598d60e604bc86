//! Which kernel rule decided each packet, from nftables tracing: a netdev ingress chain on
//! both LB veths sets `meta nftrace` on every IPv4 frame before any other chain
//! ([`trace_nft`]), `nft -a monitor trace` runs in the LB namespace during the exchange
//! ([`Monitor`]), and its lines are grouped per packet by the IPv4 ID or IPv6 flow label
//! (the runner's 16-bit tag) of each trace's `packet:` lines ([`parse`]). iptables-nft rules (the flows'
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
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::topology::{LB_CLIENT_IFACE, LB_SERVER_IFACE, Topology};

/// Name of the nft table (family netdev) that turns tracing on.
pub const TRACE_TABLE: &str = "lbsim_trace";
/// The IPv4 ID of the probe frames that mark the start and end of a trace (packet tags
/// are 1..=65535).
pub const PROBE_TAG: u16 = 0;
/// How long to wait for a probe's trace before sending another.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// At most this many trace lines are kept (a counted overflow beyond).
pub const TRACE_LINES_CAPACITY: usize = 1 << 22;
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
    /// The rule that dropped it, else the last one that accepted it.
    pub fn decision(&self) -> Option<&RuleRef> {
        let dropped = self.verdicts.iter().find(|r| r.verdict == "drop");
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
    /// Trace lines that were not understood or beyond the capacity.
    pub unparsed: u64,
    /// Why there are no traces (monitor failed to start or to catch up), if so.
    pub missing: Option<String>,
}

/// The value after `key ` in a `packet:` line.
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()
}

/// `counter packets 3 bytes 180 drop` → `counter drop`.
fn without_counter_values(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::with_capacity(words.len());
    let mut index = 0;
    while index < words.len() {
        if words[index] == "counter" && words.get(index + 1) == Some(&"packets") {
            out.push("counter");
            index += 5;
            continue;
        }
        out.push(words[index]);
        index += 1;
    }
    out.join(" ")
}

/// A `rule …` or `policy …` line's rule and verdict.
fn rule_of(hook: [&str; 3], rest: &str) -> Option<RuleRef> {
    let [family, table, chain] = hook.map(str::to_string);
    if let Some(verdict) = rest.strip_prefix("policy ") {
        return Some(RuleRef {
            family,
            table,
            chain,
            handle: None,
            text: "policy".into(),
            verdict: verdict.trim().to_string(),
        });
    }
    let rule = rest.strip_prefix("rule ")?;
    let (body, verdict) = rule.rsplit_once(" (verdict ")?;
    let verdict = verdict.trim().trim_end_matches(')').to_string();
    let (text, handle) = match body.rsplit_once(" # handle ") {
        Some((text, handle)) => (text, handle.trim().parse().ok()),
        None => (body, None),
    };
    Some(RuleRef {
        family,
        table,
        chain,
        handle,
        text: without_counter_values(text),
        verdict,
    })
}

/// Group `nft monitor trace` lines per packet tag. A trace id follows one skb through the
/// hooks; its `packet:` lines carry the IPv4 ID. Probe frames (ID [`PROBE_TAG`]) are left out.
pub fn parse(lines: &[String]) -> Traces {
    let mut traces = Traces::default();
    let mut current: BTreeMap<&str, u16> = BTreeMap::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("trace id ") else {
            traces.unparsed += 1;
            continue;
        };
        let mut words = rest.splitn(5, ' ');
        let (Some(id), Some(family), Some(table), Some(chain), Some(rest)) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            traces.unparsed += 1;
            continue;
        };
        if rest.starts_with("packet: ") {
            let tag = field(rest, " ip id ").or_else(|| field(rest, " ip6 flowlabel "));
            match tag.and_then(|v| v.parse::<u16>().ok()) {
                Some(tag) => {
                    current.insert(id, tag);
                    if tag != PROBE_TAG {
                        let packet = traces.packets.entry(tag).or_default();
                        packet.hooks.push(format!("{family} {table} {chain}"));
                    }
                }
                None => {
                    current.remove(id);
                }
            }
            continue;
        }
        let Some(&tag) = current.get(id) else {
            continue;
        };
        if tag == PROBE_TAG {
            continue;
        }
        match rule_of([family, table, chain], rest) {
            Some(rule)
                if !matches!(rule.verdict.as_str(), "continue" | "return")
                    && !rule.verdict.starts_with("jump")
                    && !rule.verdict.starts_with("goto") =>
            {
                traces.packets.entry(tag).or_default().verdicts.push(rule);
            }
            Some(_) => {}
            None => traces.unparsed += 1,
        }
    }
    traces
}

/// `nft -a monitor trace` in the LB namespace, its lines collected by a thread.
#[derive(Debug)]
pub struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    probes_seen: Arc<AtomicUsize>,
    overflow: Arc<AtomicUsize>,
    reader: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Start the monitor (the trace table must be installed).
    pub fn start(topology: &Topology) -> anyhow::Result<Self> {
        let lb = topology.lb_ns();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lb, "nft", "-a", "monitor", "trace"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `nft monitor trace`")?;
        let stdout = child.stdout.take().context("nft monitor stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let probes_seen = Arc::new(AtomicUsize::new(0));
        let overflow = Arc::new(AtomicUsize::new(0));
        let (kept, probes, over) = (lines.clone(), probes_seen.clone(), overflow.clone());
        let probe = format!(" ip id {PROBE_TAG} ");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(" packet: ") && line.contains(&probe) {
                    probes.fetch_add(1, Ordering::Release);
                }
                let mut kept = kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if kept.len() >= TRACE_LINES_CAPACITY {
                    over.fetch_add(1, Ordering::Relaxed);
                } else {
                    kept.push(line);
                }
            }
        });
        Ok(Self {
            child,
            lines,
            probes_seen,
            overflow,
            reader: Some(reader),
        })
    }

    /// How many probe traces the monitor has printed.
    pub fn probes_seen(&self) -> usize {
        self.probes_seen.load(Ordering::Acquire)
    }

    /// Take the lines printed so far.
    pub fn take_lines(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Send probes with `send_probe` until the monitor prints one more than `before`
    /// (then every event before it was printed too). False after [`PROBE_TIMEOUT`].
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

    /// Stop the monitor (the process this runner started) and parse what it printed.
    pub fn finish(mut self) -> Traces {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let lines = std::mem::take(
            &mut *self
                .lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut traces = parse(&lines);
        traces.unparsed += self.overflow.load(Ordering::Relaxed) as u64;
        traces
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    const TRACE: &str = "\
trace id 8b0d835f netdev lbsim_trace client packet: iif \"lbc\" ip saddr 10.9.9.9 ip daddr 192.168.0.3 ip ttl 64 ip id 7 ip protocol tcp tcp dport 22
trace id 8b0d835f netdev lbsim_trace client rule meta protocol ip meta nftrace set 1 # handle 2 (verdict continue)
trace id 8b0d835f netdev lbsim_trace client policy accept 
trace id 8b0d835f ip mangle PREROUTING packet: iif \"lbc\" ip saddr 10.9.9.9 ip daddr 192.168.0.3 ip id 7 ip length 60
trace id 8b0d835f ip mangle PREROUTING rule counter packets 0 bytes 0 jump alltherest # handle 11 (verdict jump alltherest)
trace id 8b0d835f ip mangle alltherest rule counter packets 3 bytes 180 drop # handle 24 (verdict drop)
trace id 0c25fc43 netdev lbsim_trace client packet: iif \"lbc\" ip saddr 100.127.255.2 ip id 0 ip protocol icmp
trace id 0c25fc43 netdev lbsim_shield ingress rule ip saddr @deny_default counter packets 1 bytes 2 drop # handle 9 (verdict drop)
trace id 1111 netdev lbsim_shield ingress packet: iif \"lbc\" ip saddr 10.1.1.1 ip id 8 ip protocol udp
trace id 1111 netdev lbsim_shield ingress rule ip daddr 192.0.2.10 ip saddr @allow_src_0 counter packets 1 bytes 2 accept # handle 5 (verdict accept)
trace id 1111 ip mangle PREROUTING packet: iif \"lbc\" ip saddr 10.1.1.1 ip id 8
trace id 1111 ip mangle PREROUTING policy accept 
";

    #[test]
    fn traces_are_grouped_by_ip_id_and_name_the_deciding_rule() {
        let traces = parse(&lines(TRACE));
        assert_eq!(traces.unparsed, 0);
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
    }

    #[test]
    fn snmp_counters_are_read_per_protocol_and_diffed() {
        let before = parse_snmp(
            "Ip: Forwarding InAddrErrors\nIp: 1 3\nTcp: RtoMin\nTcp: 200\nIp6InReceives 4\nUdp6InErrors 1\n",
        );
        let after = parse_snmp("Ip: Forwarding InAddrErrors\nIp: 1 5\nTcp: RtoMin\nTcp: 200\n");
        assert_eq!(before.len(), 3);
        let deltas = counter_deltas(&before, &after);
        assert_eq!(deltas, BTreeMap::from([("Ip.InAddrErrors".to_string(), 2)]));
    }
}
