//! nftables trace events read straight from netlink (`NETLINK_NETFILTER`, multicast group
//! `NFNLGRP_NFTRACE`), the messages `nft monitor trace` prints — without printing them:
//! `nft` formats each event with a packet dump and falls behind at a few thousand packets
//! per second, so its socket overflows and events are lost. Here a thread inside the LB
//! namespace keeps only what attribution needs ([`TraceEvent`]: trace id, family, table,
//! chain, rule handle, verdict, and the 16-bit tag read from the network header the first
//! event of each chain carries). Rule texts come from `nft -a list ruleset`
//! ([`RuleTexts`]). Socket calls are nix's: no `unsafe` here.
//!
//! Not here: grouping events per packet (see `trace`).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, setsockopt,
    socket, sockopt,
};
use nix::sys::time::TimeVal;

/// The multicast group of nftables traces.
const NFNLGRP_NFTRACE: u32 = 9;
/// `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE`.
const NFT_TRACE_MESSAGE: u16 = (10 << 8) | 17;
const NLMSG_HEADER_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const ATTRIBUTE_TYPE_MASK: u16 = 0x3fff;
const TRACE_TABLE: u16 = 1;
const TRACE_CHAIN: u16 = 2;
const TRACE_RULE_HANDLE: u16 = 3;
const TRACE_TYPE: u16 = 4;
const TRACE_VERDICT: u16 = 5;
const TRACE_ID: u16 = 6;
const TRACE_NETWORK_HEADER: u16 = 8;
const TRACE_POLICY: u16 = 16;
const VERDICT_CODE: u16 = 1;
const TRACE_TYPE_POLICY: u32 = 3;
/// Receive buffer asked for (`SO_RCVBUFFORCE`): bursts of a fast run fit.
const RECEIVE_BUFFER_BYTES: usize = 64 << 20;
/// At most this many events are kept (a counted overflow beyond).
pub const TRACE_EVENTS_CAPACITY: usize = 1 << 22;

/// One trace event, reduced to what attribution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The trace id (one skb through the hooks).
    pub id: u32,
    /// Table family: `netdev`, `ip`, `ip6`, `inet`, …
    pub family: &'static str,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// Rule handle (`None` for policy and return events).
    pub handle: Option<u64>,
    /// Verdict name (`accept`, `drop`, `continue`, `jump`, …).
    pub verdict: &'static str,
    /// Whether the event is the chain's policy.
    pub policy: bool,
    /// The packet's tag (IPv4 ID / IPv6 flow label), on the first event of a chain.
    pub tag: Option<u16>,
    /// The event is of a probe frame (IPv4 ID 0, ICMP, from the client veth's address).
    pub probe: bool,
}

fn family_name(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

/// `nf_tables` verdict codes (`NF_*`, `NFT_*`).
fn verdict_name(code: i32) -> &'static str {
    match code {
        0 => "drop",
        1 => "accept",
        2 => "stolen",
        3 => "queue",
        4 => "repeat",
        5 => "stop",
        -1 => "continue",
        -2 => "break",
        -3 => "jump",
        -4 => "goto",
        -5 => "return",
        _ if code > 0 && code & 0xff == 3 => "queue",
        _ => "unknown",
    }
}

/// Netlink attributes of a payload: (type, value).
fn attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & ATTRIBUTE_TYPE_MASK;
        if length < 4 || length > bytes.len() {
            break;
        }
        out.push((kind, &bytes[4..length]));
        let aligned = (length + 3) & !3;
        bytes = &bytes[aligned.min(bytes.len())..];
    }
    out
}

fn be32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

fn text(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// (tag, probe?) of a network header: the IPv4 ID or the IPv6 flow label.
fn header_tag(header: &[u8]) -> Option<(u16, bool)> {
    match header.first()? >> 4 {
        4 if header.len() >= 20 => {
            let tag = u16::from_be_bytes([header[4], header[5]]);
            let from_client = header[12..16] == super::topology::CLIENT_ADDR_OCTETS;
            Some((tag, tag == 0 && header[9] == 1 && from_client))
        }
        6 if header.len() >= 4 => {
            let label = u32::from_be_bytes([0, header[1] & 0x0f, header[2], header[3]]);
            Some((u16::try_from(label).unwrap_or(0), false))
        }
        _ => None,
    }
}

/// Parse one `NFT_MSG_TRACE` payload (after the netlink header).
pub fn parse_event(payload: &[u8]) -> Option<TraceEvent> {
    let family = family_name(*payload.first()?);
    let mut event = TraceEvent {
        id: 0,
        family,
        table: String::new(),
        chain: String::new(),
        handle: None,
        verdict: "unknown",
        policy: false,
        tag: None,
        probe: false,
    };
    for (kind, value) in attributes(payload.get(NFGENMSG_LEN..)?) {
        match kind {
            TRACE_ID => event.id = be32(value)?,
            TRACE_TABLE => event.table = text(value),
            TRACE_CHAIN => event.chain = text(value),
            TRACE_RULE_HANDLE => {
                event.handle = Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?));
            }
            TRACE_TYPE => event.policy = be32(value)? == TRACE_TYPE_POLICY,
            TRACE_POLICY => event.verdict = verdict_name(be32(value)? as i32),
            TRACE_VERDICT => {
                let code = attributes(value)
                    .into_iter()
                    .find(|(kind, _)| *kind == VERDICT_CODE)
                    .and_then(|(_, v)| be32(v));
                if let Some(code) = code {
                    event.verdict = verdict_name(code as i32);
                }
            }
            TRACE_NETWORK_HEADER => {
                if let Some((tag, probe)) = header_tag(value) {
                    event.tag = Some(tag);
                    event.probe = probe;
                }
            }
            _ => {}
        }
    }
    Some(event)
}

/// Every trace event of one receive buffer (several netlink messages).
pub fn parse_messages(mut buffer: &[u8]) -> Vec<TraceEvent> {
    let mut events = Vec::new();
    while buffer.len() >= NLMSG_HEADER_LEN {
        let length = u32::from_ne_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
        let kind = u16::from_ne_bytes([buffer[4], buffer[5]]);
        if length < NLMSG_HEADER_LEN || length > buffer.len() {
            break;
        }
        if kind == NFT_TRACE_MESSAGE {
            events.extend(parse_event(&buffer[NLMSG_HEADER_LEN..length]));
        }
        let aligned = (length + 3) & !3;
        buffer = &buffer[aligned.min(buffer.len())..];
    }
    events
}

/// A thread in the LB namespace collecting trace events until stopped.
#[derive(Debug)]
pub struct TraceReader {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<TraceEvent>>>,
    probes: Arc<AtomicUsize>,
    lost: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

fn open_socket() -> anyhow::Result<std::os::fd::OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .context("netlink socket (NETLINK_NETFILTER)")?;
    if setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER_BYTES).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER_BYTES).context("SO_RCVBUF")?;
    }
    // Wake up every 20 ms to see whether to stop.
    let timeout = TimeVal::new(0, 20_000);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).context("SO_RCVTIMEO")?;
    let group = NetlinkAddr::new(0, 1 << (NFNLGRP_NFTRACE - 1));
    bind(fd.as_raw_fd(), &group).context("joining NFNLGRP_NFTRACE")?;
    Ok(fd)
}

impl TraceReader {
    /// Start reading in namespace `ns`; returns once subscribed.
    pub fn start(ns: &str) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let probes = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = (stop.clone(), events.clone(), probes.clone(), lost.clone());
        let ns = ns.to_string();
        let handle = std::thread::spawn(move || {
            let fd = match super::wire::enter_namespace(&ns).and_then(|()| open_socket()) {
                Ok(fd) => fd,
                Err(error) => {
                    let _ = ready_tx.send(Err(format!("{error:#}")));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            read_until_stopped(&fd, &shared);
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                stop,
                events,
                probes,
                lost,
                handle: Some(handle),
            }),
            Ok(Err(message)) => Err(anyhow!(message)),
            Err(_) => Err(anyhow!("trace reader ended before subscribing")),
        }
    }

    /// Probe events seen so far.
    pub fn probes_seen(&self) -> usize {
        self.probes.load(Ordering::Acquire)
    }

    /// Receive-buffer overflows and events beyond capacity so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Take the events read so far.
    pub fn take_events(&self) -> Vec<TraceEvent> {
        std::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

type Shared = (
    Arc<AtomicBool>,
    Arc<Mutex<Vec<TraceEvent>>>,
    Arc<AtomicUsize>,
    Arc<AtomicU64>,
);

fn read_until_stopped(fd: &std::os::fd::OwnedFd, (stop, events, probes, lost): &Shared) {
    let mut buffer = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let received = match recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
            Ok(received) => received,
            Err(Errno::ENOBUFS) => {
                lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(_) => break,
        };
        let parsed = parse_messages(&buffer[..received]);
        let probe_count = parsed.iter().filter(|e| e.probe).count();
        let mut kept = events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = TRACE_EVENTS_CAPACITY.saturating_sub(kept.len());
        lost.fetch_add(parsed.len().saturating_sub(room) as u64, Ordering::Relaxed);
        kept.extend(parsed.into_iter().take(room));
        drop(kept);
        probes.fetch_add(probe_count, Ordering::Release);
    }
}

impl Drop for TraceReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Rule texts by (family, table, chain, handle), from `nft -a list ruleset`, counter
/// values removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleTexts(BTreeMap<(String, String, String, u64), String>);

impl RuleTexts {
    /// Parse `nft -a list ruleset` output.
    pub fn parse(listing: &str) -> Self {
        let mut texts = BTreeMap::new();
        let (mut family, mut table, mut chain) = (String::new(), String::new(), None);
        for line in listing.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["table", f, t, ..] => {
                    (family, table, chain) = (f.to_string(), t.to_string(), None);
                    continue;
                }
                ["chain", c, "{", ..] => {
                    chain = Some(c.to_string());
                    continue;
                }
                ["set" | "map" | "flowtable", ..] | ["}"] => {
                    if words == ["}"] {
                        chain = None;
                    }
                    continue;
                }
                _ => {}
            }
            let (Some(chain), Some((rule, handle))) = (&chain, line.rsplit_once(" # handle "))
            else {
                continue;
            };
            if let Ok(handle) = handle.trim().parse() {
                let key = (family.clone(), table.clone(), chain.clone(), handle);
                texts.insert(key, without_counter_values(rule));
            }
        }
        Self(texts)
    }

    /// The text of a rule.
    pub fn get(&self, family: &str, table: &str, chain: &str, handle: u64) -> Option<&str> {
        let key = (
            family.to_string(),
            table.to_string(),
            chain.to_string(),
            handle,
        );
        self.0.get(&key).map(String::as_str)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let length = u16::try_from(4 + value.len()).unwrap();
        let mut out = [length.to_ne_bytes(), kind.to_ne_bytes()].concat();
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn message(payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(NLMSG_HEADER_LEN + payload.len()).unwrap();
        let mut out = length.to_ne_bytes().to_vec();
        out.extend_from_slice(&NFT_TRACE_MESSAGE.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_rule_event_with_its_network_header_is_parsed() {
        let mut header = vec![0x45, 0, 0, 28, 0x12, 0x34, 0, 0, 64, 17, 0, 0];
        header.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let verdict = attribute(VERDICT_CODE, &0u32.to_be_bytes());
        let mut payload = vec![5, 0, 0, 0];
        for part in [
            attribute(TRACE_TABLE, b"lbsim_shield\0"),
            attribute(TRACE_CHAIN, b"ingress\0"),
            attribute(TRACE_RULE_HANDLE, &7u64.to_be_bytes()),
            attribute(TRACE_TYPE, &1u32.to_be_bytes()),
            attribute(TRACE_VERDICT | 0x8000, &verdict),
            attribute(TRACE_ID, &0xdead_beef_u32.to_be_bytes()),
            attribute(TRACE_NETWORK_HEADER, &header),
        ] {
            payload.extend_from_slice(&part);
        }
        let events = parse_messages(&message(&payload));
        let [event] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(
            (event.family, event.table.as_str(), event.chain.as_str()),
            ("netdev", "lbsim_shield", "ingress")
        );
        assert_eq!(
            (event.handle, event.verdict, event.id),
            (Some(7), "drop", 0xdead_beef)
        );
        assert_eq!(
            (event.tag, event.probe, event.policy),
            (Some(0x1234), false, false)
        );
    }

    #[test]
    fn rule_texts_are_read_from_the_ruleset_listing() {
        let listing = "table netdev lbsim_shield { # handle 3\n\tset deny_0 { # handle 2\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.0/8 }\n\t}\n\tchain ingress { # handle 1\n\t\ttype filter hook ingress device \"lbc\" priority -500; policy accept;\n\t\tip saddr @deny_0 counter packets 4 bytes 240 drop comment \"shield context default: deny\" # handle 7\n\t}\n}\ntable ip mangle { # handle 4\n\tchain rest { # handle 9\n\t\tcounter packets 0 bytes 0 drop # handle 12\n\t}\n}\n";
        let texts = RuleTexts::parse(listing);
        assert_eq!(
            texts.get("netdev", "lbsim_shield", "ingress", 7),
            Some("ip saddr @deny_0 counter drop comment \"shield context default: deny\"")
        );
        assert_eq!(texts.get("ip", "mangle", "rest", 12), Some("counter drop"));
        assert_eq!(texts.get("ip", "mangle", "rest", 1), None);
    }
}
