//! What the kernel did with each injected packet, read from the frames the LB sent:
//! frames indexed by tag, quoted header and SYN sequence, then each packet's outcome
//! (forwarded, answered, proxied, dropped; see `inject.rs`'s module doc) and, in traced
//! runs, the nft / iptables-nft rule that decided it.
//!
//! Not here: preparing, injecting and observing the packets (`inject.rs`).

use super::*;

/// A frame the LB sent, summarised, with when and where.
pub(super) struct Seen {
    side: Side,
    at: Instant,
    tag: u16,
    quoted: Option<(u16, u8)>,
    summary: FrameSummary,
    shape: Option<FragmentShape>,
    /// The frame's destination MAC.
    mac: [u8; 6],
}

pub(super) fn seen_frames(exchange: &Exchange) -> Vec<Seen> {
    let sides = [
        (Side::Server, &exchange.server.frames),
        (Side::Client, &exchange.client.frames),
    ];
    let mut seen = Vec::new();
    for (side, frames) in sides {
        for ObservedFrame { at, frame } in frames {
            let Some(ip) = tag::ip_at(frame) else {
                continue;
            };
            let meta = datapath::packet::parse(LinkType::Ethernet, frame, frame.len() as u32, 0);
            seen.push(Seen {
                side,
                at: *at,
                tag: tag::read(frame, ip),
                quoted: tag::quoted(frame),
                summary: FrameSummary::of(LinkType::Ethernet, frame),
                shape: FragmentShape::of(&meta, frame),
                mac: frame
                    .get(..6)
                    .and_then(|m| m.try_into().ok())
                    .unwrap_or_default(),
            });
        }
    }
    seen
}

/// Indexes of what the LB sent, for matching packets to frames.
#[derive(Default)]
pub(super) struct Index {
    /// (tag, proto) → frames carrying that tag.
    by_tag: BTreeMap<(u16, String), Vec<usize>>,
    /// Client-side TCP answers: (client, client port, server, server port) → frames.
    answers: BTreeMap<(IpAddr, u16, IpAddr, u16), Vec<usize>>,
    /// Server-side bare SYNs: (client, client port, seq) → frames.
    syns: BTreeMap<(IpAddr, u16, u32), Vec<usize>>,
    /// Client-side ICMP errors: quoted (tag, proto number) → frames.
    icmp_errors: BTreeMap<(u16, u8), Vec<usize>>,
}

pub(super) fn index(seen: &[Seen]) -> Index {
    let mut index = Index::default();
    for (position, frame) in seen.iter().enumerate() {
        if let (Side::Client, Some(quoted)) = (frame.side, frame.quoted) {
            index.icmp_errors.entry(quoted).or_default().push(position);
        }
        let s = &frame.summary;
        index
            .by_tag
            .entry((frame.tag, s.proto.clone()))
            .or_default()
            .push(position);
        let tcp = s.src.zip(s.dst).zip(s.sport.zip(s.dport));
        if let (Some(((src, dst), (sport, dport))), Some((seq, _))) = (tcp, s.seq_ack) {
            if frame.side == Side::Client {
                index
                    .answers
                    .entry((dst, dport, src, sport))
                    .or_default()
                    .push(position);
            } else if s.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
                index
                    .syns
                    .entry((src, sport, seq))
                    .or_default()
                    .push(position);
            }
        }
    }
    index
}

pub(super) fn outcomes(
    prepared: &[Result<Prepared, String>],
    exchange: &Exchange,
    source_nat: bool,
) -> KernelRun {
    let seen = seen_frames(exchange);
    let index = index(&seen);
    let mut run = KernelRun {
        server_frames: exchange.server.frames.len(),
        client_frames: exchange.client.frames.len(),
        inject_sec: exchange.inject_sec,
        ..KernelRun::default()
    };
    let mut sent = exchange.sent_at.iter();
    for (ordinal, packet) in prepared.iter().enumerate() {
        let mut next_hop_mac = None;
        let (outcome, latency_ns) = match packet {
            Err(why) => (Outcome::NotInjected { why: why.clone() }, None),
            Ok(packet) => match sent.next().copied().flatten() {
                None => {
                    run.send_failures += 1;
                    let why = "refused by the AF_PACKET socket".to_string();
                    (Outcome::NotInjected { why }, None)
                }
                Some(at) => {
                    run.injected += 1;
                    next_hop_mac =
                        forwarded_frame(packet, at, &seen, &index, source_nat).map(|s| s.mac);
                    outcome_of(packet, at, &seen, &index, source_nat)
                }
            },
        };
        run.packets.push(KernelPacket {
            ordinal,
            outcome,
            latency_ns,
            rule: None,
            dropped_by_rule: false,
            last_hook: None,
            next_hop_mac,
        });
    }
    run
}

/// Give every injected packet its deciding rule (by tag) and count the rules' hits.
pub(super) fn attribute(
    run: &mut KernelRun,
    prepared: &[Result<Prepared, String>],
    traces: &Traces,
) {
    for (packet, prepared) in run.packets.iter_mut().zip(prepared) {
        let (Ok(prepared), false) = (
            prepared,
            matches!(packet.outcome, Outcome::NotInjected { .. }),
        ) else {
            continue;
        };
        let Some(traced) = traces.packets.get(&prepared.tag) else {
            run.untraced += 1;
            continue;
        };
        packet.rule = traced.decision().cloned();
        packet.dropped_by_rule = traced.drop_rule().is_some();
        packet.last_hook = traced.last_hook().map(str::to_string);
        if let Some(rule) = &packet.rule {
            *run.rule_hits.entry(rule.to_string()).or_default() += 1;
        }
    }
}

pub(super) fn first_after<'s>(
    seen: &'s [Seen],
    positions: Option<&Vec<usize>>,
    sent: Instant,
    wanted: impl Fn(&Seen) -> bool,
) -> Option<&'s Seen> {
    positions?
        .iter()
        .map(|&p| &seen[p])
        .find(|s| s.at >= sent && wanted(s))
}

/// The frame the LB forwarded `packet` as: its tag, protocol and SYN bit, on the other
/// side, with the unchanged end of its tuple (unless sources are translated).
pub(super) fn forwarded_frame<'s>(
    packet: &Prepared,
    sent: Instant,
    seen: &'s [Seen],
    index: &Index,
    source_nat: bool,
) -> Option<&'s Seen> {
    let input = &packet.summary;
    let syn = input.tcp_flags & tcp_flags::SYN;
    let key = (packet.tag, input.proto.clone());
    first_after(seen, index.by_tag.get(&key), sent, |s| {
        let same_end = match packet.side {
            Side::Client => s.side == Side::Server && (source_nat || s.summary.src == input.src),
            Side::Server => s.side == Side::Client && (source_nat || s.summary.dst == input.dst),
        };
        same_end && s.summary.tcp_flags & tcp_flags::SYN == syn
    })
}

pub(super) fn outcome_of(
    packet: &Prepared,
    sent: Instant,
    seen: &[Seen],
    index: &Index,
    source_nat: bool,
) -> (Outcome, Option<u64>) {
    let latency = |frame: &Seen| {
        u64::try_from(frame.at.saturating_duration_since(sent).as_nanos()).unwrap_or(u64::MAX)
    };
    let input = &packet.summary;
    if let Some(frame) = forwarded_frame(packet, sent, seen, index, source_nat) {
        let mut summary = frame.summary.clone();
        if !input.fragment && frame.shape.is_some() {
            // A whole datagram the LB fragmented: every fragment of it that left.
            let key = (packet.tag, input.proto.clone());
            let positions = index.by_tag.get(&key).map_or(&[][..], Vec::as_slice);
            summary.fragments = positions
                .iter()
                .map(|&p| &seen[p])
                .filter(|s| s.at >= sent && s.side == frame.side)
                .filter_map(|s| s.shape)
                .collect();
        }
        let outcome = Outcome::Forward { frame: summary };
        return (outcome, Some(latency(frame)));
    }
    if let Some(frame) = tcp_answer(packet, sent, seen, index) {
        let outcome = Outcome::from_sent(input, frame.summary.clone());
        return (outcome, Some(latency(frame)));
    }
    let quoted = input.proto_number().map(|proto| (packet.tag, proto));
    if let Some(frame) = first_after(
        seen,
        quoted.and_then(|q| index.icmp_errors.get(&q)),
        sent,
        |_| true,
    ) {
        // The error quotes the packet as injected: give it back its own ID / flow label.
        let mut summary = frame.summary.clone();
        summary.edit_quote(|quoted| tag::restore(quoted, packet.untagged));
        let outcome = Outcome::Answer { frame: summary };
        return (outcome, Some(latency(frame)));
    }
    (Outcome::Drop { reason: None }, None)
}

/// A synproxy SYN-ACK (or a RST) toward the client for this packet, or a SYN toward the
/// server made from this ACK.
pub(super) fn tcp_answer<'s>(
    packet: &Prepared,
    sent: Instant,
    seen: &'s [Seen],
    index: &Index,
) -> Option<&'s Seen> {
    let input = &packet.summary;
    let (src, dst) = input.src.zip(input.dst)?;
    let (sport, dport) = input.sport.zip(input.dport)?;
    let (seq, _) = input.seq_ack?;
    if packet.side != Side::Client || input.proto != "tcp" {
        return None;
    }
    let is_syn = input.tcp_flags & tcp_flags::SYN != 0;
    let answers = index.answers.get(&(src, sport, dst, dport));
    let answer = first_after(seen, answers, sent, |s| {
        let flags = s.summary.tcp_flags;
        let ack = s.summary.seq_ack.map(|(_, ack)| ack);
        let syn_ack = flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK;
        (is_syn && syn_ack && ack == Some(seq.wrapping_add(1)))
            || (flags & tcp_flags::RST != 0 && input.tcp_flags & tcp_flags::RST == 0)
    });
    if answer.is_some() || is_syn {
        return answer;
    }
    let syns = index.syns.get(&(src, sport, seq.wrapping_sub(1)));
    first_after(seen, syns, sent, |_| true)
}

impl FrameSummary {
    pub(super) fn proto_number(&self) -> Option<u8> {
        match self.proto.as_str() {
            "tcp" => Some(6),
            "udp" => Some(17),
            "icmp" => Some(1),
            "icmpv6" => Some(58),
            other => other.parse().ok(),
        }
    }
}
