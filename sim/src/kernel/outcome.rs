//! One vocabulary for both sides of a diff: what a frame looks like on the wire
//! ([`FrameSummary`]: protocol, 5-tuple, TCP flags and the handshake options) and what
//! happened to a packet ([`Outcome`]: dropped, forwarded with a rewritten 5-tuple, answered
//! with a SYN-ACK / RST / ICMP error, or turned into a proxy SYN toward the server).
//!
//! Both the simulator's emitted frames and the frames the kernel sent are summarised with
//! the same parser (`datapath::packet::parse`), so a difference in text is a difference on
//! the wire. Not here: deciding whether two outcomes agree (see `diff`).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use datapath::packet::{LinkType, PacketMeta, parse, proto_name, tcp_flags};
use serde::Serialize;

/// The wire-visible facts of one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FrameSummary {
    /// Protocol name (`tcp`, `udp`, `icmp`, number).
    pub proto: String,
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Source port (TCP/UDP).
    pub sport: Option<u16>,
    /// Destination port (TCP/UDP).
    pub dport: Option<u16>,
    /// TCP flags.
    pub tcp_flags: u8,
    /// TCP sequence and acknowledgement numbers.
    pub seq_ack: Option<(u32, u32)>,
    /// Handshake options (`mss 1460 ws sack ts`) of SYN / SYN-ACK segments.
    pub options: Option<String>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// An IP fragment (first or later).
    pub fragment: bool,
    /// IPv4 TTL or IPv6 hop limit (0 without IP).
    #[serde(skip)]
    pub ttl: u8,
    /// Whether the TCP/UDP checksum is right, computed here from the bytes (not the
    /// parser's verdict); `None` when it cannot be checked (other protocols, fragments,
    /// truncated captures).
    #[serde(skip)]
    pub l4_checksum_ok: Option<bool>,
    /// IPv4 only: whether the header passes `ip_rcv_core`'s checks (IHL >= 5, total
    /// length >= header length, header checksum), computed here from the bytes.
    #[serde(skip)]
    pub ipv4_header_ok: Option<bool>,
    /// An ICMP / ICMPv6 error's quote: the offending datagram's IP header and as many of
    /// the following bytes as the sender quoted, in hex (`None` for other frames). The
    /// kernel side's is given back the injected packet's own ID / flow label (see
    /// `tag::restore`), so both sides quote the same packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// A forwarded datagram that left as IP fragments: each fragment's offset, total
    /// length and flags, in the order sent (empty: it left whole).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fragments: Vec<FragmentShape>,
}

/// One IP fragment as it left: what `ip_do_fragment` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FragmentShape {
    /// Offset of its data in the datagram, bytes.
    pub offset: u32,
    /// Its IP length (IPv4 total length; IPv6 payload length + 40).
    pub length: u32,
    /// More fragments follow.
    pub more: bool,
    /// IPv4 DF.
    pub df: bool,
}

impl FragmentShape {
    /// The shape of a fragment (`None` for a whole datagram or a frame without IP).
    pub fn of(meta: &PacketMeta, frame: &[u8]) -> Option<Self> {
        if !meta.frag.is_fragment {
            return None;
        }
        let df = match frame.get(usize::from(meta.l3_offset)..) {
            Some(ip) if ip.first().is_some_and(|b| b >> 4 == 4) => {
                ip.get(6).is_some_and(|b| b & 0x40 != 0)
            }
            _ => false,
        };
        Some(Self {
            offset: meta.frag.offset,
            length: meta.ip_len,
            more: meta.frag.more,
            df,
        })
    }
}

impl std::fmt::Display for FragmentShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.offset, self.length)?;
        if self.more {
            f.write_str(" MF")?;
        }
        if self.df {
            f.write_str(" DF")?;
        }
        Ok(())
    }
}

/// The quoted bytes of an ICMP / ICMPv6 error (types 3, 4, 5, 11, 12; ICMPv6 1-4).
fn icmp_quote(meta: &PacketMeta, frame: &[u8]) -> Option<String> {
    let (icmp_type, _) = meta.icmp_type.zip(meta.icmp_code)?;
    let error = match meta.proto? {
        1 => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        58 => (1..=4).contains(&icmp_type),
        _ => false,
    };
    if !error || meta.l4_offset == 0 || meta.frag.is_fragment {
        return None;
    }
    let end = (usize::from(meta.l3_offset) + meta.ip_len as usize).min(frame.len());
    let quoted = frame.get(usize::from(meta.l4_offset) + 8..end)?;
    Some(quoted.iter().map(|b| format!("{b:02x}")).collect())
}

/// `ip_rcv_core`'s IPv4 header checks on the bytes at the packet's L3 offset.
fn ipv4_header_ok(meta: &PacketMeta, frame: &[u8]) -> Option<bool> {
    use datapath::packet::checksum::{is_valid, partial};
    let header = frame.get(usize::from(meta.l3_offset)..)?;
    if header.first()? >> 4 != 4 {
        return None;
    }
    let length = usize::from(header[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*header.get(2)?, *header.get(3)?]));
    Some(length >= 20 && total >= length && is_valid(partial(header.get(..length)?)))
}

/// The TCP/UDP checksum of a whole, unfragmented datagram: right or wrong (`None` when it
/// cannot be checked). A UDP/IPv4 checksum of 0 means "none" and is right.
fn l4_checksum_ok(meta: &PacketMeta, frame: &[u8]) -> Option<bool> {
    use datapath::packet::checksum::{is_valid, partial, pseudo_header_v4, pseudo_header_v6};
    let proto = meta.proto.filter(|p| matches!(p, 6 | 17))?;
    if meta.frag.is_fragment || meta.l4_offset == 0 {
        return None;
    }
    let end = usize::from(meta.l3_offset) + meta.ip_len as usize;
    let l4 = frame.get(usize::from(meta.l4_offset)..end)?;
    let length = u32::try_from(l4.len()).ok()?;
    let pseudo = match (meta.src?, meta.dst?) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            if proto == 17 && l4.get(6..8) == Some(&[0, 0]) {
                return Some(true);
            }
            pseudo_header_v4(src, dst, proto, length)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => pseudo_header_v6(src, dst, proto, length),
        _ => return None,
    };
    Some(is_valid(pseudo + partial(l4)))
}

fn endpoint(addr: Option<IpAddr>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(addr), Some(port)) => SocketAddr::new(addr, port).to_string(),
        (Some(addr), None) => addr.to_string(),
        (None, _) => "?".into(),
    }
}

/// The handshake options of a TCP segment: `mss N`, `ws` (window scale offered), `sack`,
/// `ts` — the values a SYN cookie keeps; the window-scale shift itself is the proxy's choice.
pub fn options_text(meta: &PacketMeta) -> Option<String> {
    let tcp = meta.tcp?;
    let mut parts = Vec::new();
    if let Some(mss) = tcp.options.mss {
        parts.push(format!("mss {mss}"));
    }
    if tcp.options.window_scale.is_some() {
        parts.push("ws".to_string());
    }
    if tcp.options.sack_permitted {
        parts.push("sack".to_string());
    }
    if tcp.options.timestamps.is_some() {
        parts.push("ts".to_string());
    }
    Some(parts.join(" "))
}

impl FrameSummary {
    /// Summarise an Ethernet (or other link) frame.
    pub fn of(link: LinkType, frame: &[u8]) -> Self {
        let meta = parse(link, frame, frame.len() as u32, 0);
        Self {
            l4_checksum_ok: l4_checksum_ok(&meta, frame),
            ipv4_header_ok: ipv4_header_ok(&meta, frame),
            quote: icmp_quote(&meta, frame),
            ..Self::of_meta(&meta)
        }
    }

    /// Summarise an already parsed frame.
    pub fn of_meta(meta: &PacketMeta) -> Self {
        let syn = meta.tcp_flags & tcp_flags::SYN != 0;
        Self {
            proto: meta
                .proto
                .map_or_else(|| "?".to_string(), |p| proto_name(p).into_owned()),
            src: meta.src,
            dst: meta.dst,
            sport: meta.sport,
            dport: meta.dport,
            tcp_flags: meta.tcp_flags,
            seq_ack: meta.tcp.map(|tcp| (tcp.seq, tcp.ack)),
            options: if syn { options_text(meta) } else { None },
            icmp: meta.icmp_type.zip(meta.icmp_code),
            fragment: meta.frag.is_fragment,
            ttl: meta.ttl,
            l4_checksum_ok: None,
            ipv4_header_ok: None,
            quote: None,
            fragments: Vec::new(),
        }
    }

    /// Change the quoted bytes of an ICMP error in place.
    pub fn edit_quote(&mut self, edit: impl FnOnce(&mut [u8])) {
        let Some(hex) = &self.quote else { return };
        let mut bytes: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        edit(&mut bytes);
        self.quote = Some(bytes.iter().map(|b| format!("{b:02x}")).collect());
    }

    /// `tcp 10.0.0.1:1234 > 192.168.0.1:22`.
    pub fn tuple(&self) -> String {
        format!(
            "{} {} > {}",
            self.proto,
            endpoint(self.src, self.sport),
            endpoint(self.dst, self.dport)
        )
    }

    /// The tuple plus TCP flags: `tcp 10.0.0.1:1234 > 192.168.0.1:22 [S]`.
    pub fn decode(&self) -> String {
        let mut line = self.tuple();
        if self.proto == "tcp" {
            let names: String = [
                (tcp_flags::SYN, 'S'),
                (tcp_flags::ACK, '.'),
                (tcp_flags::FIN, 'F'),
                (tcp_flags::RST, 'R'),
                (tcp_flags::PSH, 'P'),
            ]
            .iter()
            .filter(|(bit, _)| self.tcp_flags & bit != 0)
            .map(|(_, c)| c)
            .collect();
            let _ = write!(line, " [{names}]");
        }
        line
    }

    /// Whether the TCP flags named by letters (`S` SYN, `A` ACK, `F` FIN, `R` RST, `P`
    /// PSH, `U` URG) are all set (`want = true`) or all clear.
    pub fn tcp_flags_are(&self, letters: &str, want: bool) -> bool {
        letters.chars().all(|letter| {
            let bit = match letter {
                'S' => tcp_flags::SYN,
                'A' => tcp_flags::ACK,
                'F' => tcp_flags::FIN,
                'R' => tcp_flags::RST,
                'P' => tcp_flags::PSH,
                'U' => 0x20,
                _ => return false,
            };
            (self.tcp_flags & bit != 0) == want
        })
    }

    fn is_syn_ack(&self) -> bool {
        self.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK
    }

    fn is_bare_syn(&self) -> bool {
        self.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }
}

/// What happened to one packet, on either side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Dropped (with the simulator's reason; the kernel has none).
    Drop {
        /// Drop reason (simulator side).
        reason: Option<String>,
    },
    /// Sent on, as this frame (after any rewrite).
    Forward {
        /// The frame as it left.
        frame: FrameSummary,
    },
    /// Answered toward the client (SYN-ACK cookie, RST, ICMP error).
    Answer {
        /// The answer.
        frame: FrameSummary,
    },
    /// A SYN toward the server opened on the client's behalf (a validated cookie ACK).
    Proxy {
        /// The SYN as it left.
        frame: FrameSummary,
    },
    /// Not injected into the kernel (why); not compared.
    NotInjected {
        /// The reason.
        why: String,
    },
}

impl Outcome {
    /// Classify a frame a side sent because of a packet: a SYN-ACK or RST or ICMP error
    /// toward the client is an answer, a bare SYN made from a non-SYN packet is a proxy SYN,
    /// anything else a forward.
    pub fn from_sent(input: &FrameSummary, sent: FrameSummary) -> Self {
        let input_syn = input.tcp_flags & tcp_flags::SYN != 0;
        let answer = (sent.is_syn_ack() && !input.is_syn_ack())
            || (sent.tcp_flags & tcp_flags::RST != 0 && input.tcp_flags & tcp_flags::RST == 0)
            || (sent.icmp.is_some_and(|(t, _)| {
                // ICMPv6 errors are types 1-127; ICMP's are these.
                if sent.proto == "icmpv6" {
                    t < 128
                } else {
                    matches!(t, 3 | 4 | 5 | 11 | 12)
                }
            }) && input.icmp.is_none());
        if answer {
            Self::Answer { frame: sent }
        } else if sent.is_bare_syn() && !input_syn {
            Self::Proxy { frame: sent }
        } else {
            Self::Forward { frame: sent }
        }
    }

    /// The outcome kind: `drop`, `forward`, `answer`, `proxy`, `not_injected`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Drop { .. } => "drop",
            Self::Forward { .. } => "forward",
            Self::Answer { .. } => "answer",
            Self::Proxy { .. } => "proxy",
            Self::NotInjected { .. } => "not_injected",
        }
    }

    /// One line: `drop bad_cookie`, `forward tcp A:p > B:q`, `answer syn-ack [mss 1460 ws
    /// sack ts]`, `answer icmp 11/0`, `answer rst`, `proxy syn [mss 1440] tcp A:p > B:q`.
    pub fn text(&self) -> String {
        match self {
            Self::Drop { reason: Some(r) } => format!("drop {r}"),
            Self::Drop { reason: None } => "drop".into(),
            Self::Forward { frame } => format!("forward {}", frame.tuple()),
            Self::Answer { frame } => answer_text(frame),
            Self::Proxy { frame } => format!(
                "proxy syn [{}] {}",
                frame.options.as_deref().unwrap_or(""),
                frame.tuple()
            ),
            Self::NotInjected { why } => format!("not injected: {why}"),
        }
    }
}

fn answer_text(frame: &FrameSummary) -> String {
    if let Some((icmp_type, icmp_code)) = frame.icmp {
        return format!("answer icmp {icmp_type}/{icmp_code}");
    }
    if frame.is_syn_ack() {
        return format!(
            "answer syn-ack [{}]",
            frame.options.as_deref().unwrap_or("")
        );
    }
    "answer rst".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::packet::builder::PacketBuilder;
    use std::net::Ipv4Addr;

    fn syn() -> FrameSummary {
        let frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .tcp(1234, 80)
            .syn()
            .mss(1460)
            .build();
        FrameSummary::of(LinkType::Ethernet, &frame)
    }

    #[test]
    fn a_syn_is_summarised_with_its_options() {
        let summary = syn();
        assert_eq!(summary.decode(), "tcp 10.0.0.1:1234 > 10.0.0.2:80 [S]");
        assert_eq!(summary.options.as_deref(), Some("mss 1460"));
    }

    #[test]
    fn a_syn_ack_sent_for_a_syn_is_an_answer_and_a_syn_for_an_ack_a_proxy() {
        let input = syn();
        let mut answer = syn();
        answer.tcp_flags |= tcp_flags::ACK;
        let outcome = Outcome::from_sent(&input, answer);
        assert_eq!(outcome.text(), "answer syn-ack [mss 1460]");
        let mut ack = syn();
        ack.tcp_flags = tcp_flags::ACK;
        let outcome = Outcome::from_sent(&ack, syn());
        assert_eq!(outcome.kind(), "proxy");
        assert_eq!(
            Outcome::from_sent(&input, syn()).text(),
            "forward tcp 10.0.0.1:1234 > 10.0.0.2:80"
        );
    }
}
