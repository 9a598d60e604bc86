//! Link types (pcap `LINKTYPE_*` numbers) and how each one's header is skipped.

/// The link types the parser understands, with their pcap LINKTYPE numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// BSD loopback / NULL (0): 4-byte address family in the capturing host's byte order.
    Null,
    /// Ethernet (1).
    Ethernet,
    /// Raw IP (101, and 12/14 on some platforms): version nibble decides.
    RawIp,
    /// Linux cooked capture v1 (113).
    LinuxSll,
    /// Raw IPv4 (228).
    Ipv4,
    /// Raw IPv6 (229).
    Ipv6,
    /// Linux cooked capture v2 (276).
    LinuxSll2,
    /// OpenBSD loopback (108): address family in network byte order.
    Loop,
    /// Anything else: every packet is counted as `unsupported_link`.
    Unsupported(u32),
}

impl LinkType {
    /// Map a pcap / pcapng LINKTYPE number.
    pub fn from_linktype(value: u32) -> Self {
        match value {
            0 => Self::Null,
            1 => Self::Ethernet,
            12 | 14 | 101 => Self::RawIp,
            108 => Self::Loop,
            113 => Self::LinuxSll,
            228 => Self::Ipv4,
            229 => Self::Ipv6,
            276 => Self::LinuxSll2,
            other => Self::Unsupported(other),
        }
    }

    /// Short name as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Ethernet => "ethernet",
            Self::RawIp => "raw",
            Self::Loop => "loop",
            Self::LinuxSll => "linux_sll",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::LinuxSll2 => "linux_sll2",
            Self::Unsupported(_) => "unsupported",
        }
    }

    /// The pcap LINKTYPE number.
    pub fn linktype(self) -> u32 {
        match self {
            Self::Null => 0,
            Self::Ethernet => 1,
            Self::RawIp => 101,
            Self::Loop => 108,
            Self::LinuxSll => 113,
            Self::Ipv4 => 228,
            Self::Ipv6 => 229,
            Self::LinuxSll2 => 276,
            Self::Unsupported(v) => v,
        }
    }
}
