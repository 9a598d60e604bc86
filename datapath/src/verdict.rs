//! One verdict type for the whole pipeline, and the stages that give it.
//!
//! Every stage returns `ControlFlow<Verdict>`: `Continue(())` hands the packet to the next
//! stage, `Break(verdict)` decides it. The pipeline counts every verdict per stage and reason.

use serde::Serialize;

use crate::packet::InvalidReason;

/// Virtual time in nanoseconds since the start of a run. The datapath never reads a clock:
/// every call that depends on time takes `now: TimeNs`.
pub type TimeNs = u64;

/// One second in [`TimeNs`].
pub const NS_PER_SEC: TimeNs = 1_000_000_000;

/// Pipeline stages in processing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Packet parsing / invalid-packet classification.
    Parse,
    /// PacketShield.
    Shield,
    /// The Linux IP layer: reassembly, routing decision, forwarding checks (see `ip`).
    Ip,
    /// Flow manager.
    Flows,
    /// LVS director.
    Director,
    /// iptables-style NAT (DNAT / SNAT / MASQUERADE).
    Nat,
    /// Routing / forwarding decision after all stages.
    Forward,
}

impl Stage {
    /// Every stage, in processing order.
    pub const ALL: [Stage; 7] = [
        Self::Parse,
        Self::Shield,
        Self::Ip,
        Self::Flows,
        Self::Director,
        Self::Nat,
        Self::Forward,
    ];

    /// Dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable name as in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::Shield => "shield",
            Self::Ip => "ip",
            Self::Flows => "flows",
            Self::Director => "director",
            Self::Nat => "nat",
            Self::Forward => "forward",
        }
    }
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// The packet is invalid (see the reason).
    Invalid(InvalidReason),
    /// Source on the shield denylist.
    Denylist,
    /// ACK carrying a SYN cookie that does not validate.
    BadCookie,
    /// ACK carrying a SYN cookie older than two counter periods.
    StaleCookie,
    /// TTL / hop limit not among the learned values for the source.
    Ttl,
    /// Per-source or per-context rate exceeded (surge).
    Rate,
    /// Unmatched traffic with the "unmatched drop" mode on.
    Unmatched,
    /// A bounded table was full and its overflow policy is "drop new".
    TableFull,
    /// Not a known session and not a SYN on a protected port.
    NoSession,
    /// A flow with policy `deny` matched.
    FlowDeny,
    /// The director had no usable real server.
    NoDestination,
    /// The director's connection table was full.
    ConnTableFull,
    /// Reply traffic with no connection to translate it back.
    NoReverseTranslation,
    /// IP routing: a martian source address (`ip_route_input_slow`, `ip6_forward`).
    MartianSource,
    /// IP routing: a martian destination address (0.0.0.0, loopback, link-local…).
    MartianDestination,
    /// IP routing: a multicast or broadcast destination, not unicast-forwarded.
    NotUnicast,
    /// IP routing: the reverse-path filter refused the source.
    RpFilter,
    /// IP forwarding is off.
    ForwardingOff,
    /// TTL / hop limit expired and the ICMP error was rate-limited.
    TtlExceeded,
    /// Too big for the egress MTU (DF / IPv6) and the ICMP error was rate-limited.
    PacketTooBig,
    /// Reassembly discarded the datagram (overlap, inconsistent end, memory limit).
    ReassemblyFailed,
    /// A duplicate of a fragment already queued for reassembly.
    FragmentDuplicate,
    /// IP routing: no route to the destination and the ICMP error was rate-limited.
    NoRoute,
}

impl DropReason {
    /// The reasons other than `Invalid(_)`, in declaration order.
    pub const OTHERS: [DropReason; 22] = [
        Self::Denylist,
        Self::BadCookie,
        Self::StaleCookie,
        Self::Ttl,
        Self::Rate,
        Self::Unmatched,
        Self::TableFull,
        Self::NoSession,
        Self::FlowDeny,
        Self::NoDestination,
        Self::ConnTableFull,
        Self::NoReverseTranslation,
        Self::MartianSource,
        Self::MartianDestination,
        Self::NotUnicast,
        Self::RpFilter,
        Self::ForwardingOff,
        Self::TtlExceeded,
        Self::PacketTooBig,
        Self::ReassemblyFailed,
        Self::FragmentDuplicate,
        Self::NoRoute,
    ];

    /// Number of distinct reasons (size of a counter array indexed by [`DropReason::index`]).
    pub const COUNT: usize = InvalidReason::COUNT + Self::OTHERS.len();

    /// Dense index: invalid reasons first, then the others in declaration order.
    pub fn index(self) -> usize {
        match self {
            Self::Invalid(r) => r.index(),
            other => {
                let at = Self::OTHERS.iter().position(|r| *r == other).unwrap_or(0);
                InvalidReason::COUNT + at
            }
        }
    }

    /// The reason at a dense index (inverse of [`DropReason::index`]).
    pub fn from_index(index: usize) -> Option<Self> {
        match InvalidReason::ALL.get(index) {
            Some(r) => Some(Self::Invalid(*r)),
            None => Self::OTHERS.get(index - InvalidReason::COUNT).copied(),
        }
    }

    /// Stable name as in reports (`invalid:<reason>` for invalid packets).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Invalid(r) => format!("invalid:{}", r.name()).into(),
            Self::Denylist => "denylist".into(),
            Self::BadCookie => "bad_cookie".into(),
            Self::StaleCookie => "stale_cookie".into(),
            Self::Ttl => "ttl".into(),
            Self::Rate => "rate".into(),
            Self::Unmatched => "unmatched".into(),
            Self::TableFull => "table_full".into(),
            Self::NoSession => "no_session".into(),
            Self::FlowDeny => "flow_deny".into(),
            Self::NoDestination => "no_destination".into(),
            Self::ConnTableFull => "conn_table_full".into(),
            Self::NoReverseTranslation => "no_reverse_translation".into(),
            Self::MartianSource => "martian_source".into(),
            Self::MartianDestination => "martian_destination".into(),
            Self::NotUnicast => "not_unicast".into(),
            Self::RpFilter => "rp_filter".into(),
            Self::ForwardingOff => "forwarding_off".into(),
            Self::TtlExceeded => "ttl_exceeded".into(),
            Self::PacketTooBig => "packet_too_big".into(),
            Self::ReassemblyFailed => "reassembly_failed".into(),
            Self::FragmentDuplicate => "fragment_duplicate".into(),
            Self::NoRoute => "no_route".into(),
        }
    }
}

/// What happened to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Accepted unchanged (to the local stack / routing).
    Pass,
    /// Dropped.
    Drop(DropReason),
    /// Consumed; the datapath answered it itself (SYN cookie SYN-ACK, RST, proxy handshake).
    Reply,
    /// Forwarded, possibly rewritten (director / NAT).
    Forward,
}

impl Verdict {
    /// The verdict names, in the order of [`Verdict::kind_index`].
    pub const KINDS: [&'static str; 4] = ["pass", "drop", "reply", "forward"];

    /// Dense index of the verdict's kind (ignoring the drop reason).
    pub fn kind_index(self) -> usize {
        match self {
            Self::Pass => 0,
            Self::Drop(_) => 1,
            Self::Reply => 2,
            Self::Forward => 3,
        }
    }

    /// `pass`, `drop`, `reply` or `forward`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop(_) => "drop",
            Self::Reply => "reply",
            Self::Forward => "forward",
        }
    }

    /// The drop reason, if dropped.
    pub fn drop_reason(self) -> Option<DropReason> {
        match self {
            Self::Drop(r) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_indexes_are_dense_and_invertible() {
        for index in 0..DropReason::COUNT {
            let reason = DropReason::from_index(index).expect("every index has a reason");
            assert_eq!(reason.index(), index, "{reason:?}");
        }
        assert_eq!(DropReason::from_index(DropReason::COUNT), None);
    }
}
