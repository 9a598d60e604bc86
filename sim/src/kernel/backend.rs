//! Which kernel answers: the host's own kernel (network namespaces and veths on this
//! machine; nft `numgen` / `jhash` DNAT maps stand in for directors, as this kernel has no
//! IPVS) or a guest kernel (the same topology, without nft: its nf_tables has no ip, ip6, inet or netdev family, inside user-mode Linux 6.1, directors as
//! real IPVS services configured with `ipvsadm` as an operator would, fwmark services
//! marked with the flowmgr compiler's iptables mangle `MARK` rules through
//! iptables-legacy). See `crate::kernel::guest` for the guest's boot and run.
//!
//! Not here: the rules each backend installs (see `rules`).

use serde::{Deserialize, Serialize};

/// A kernel the runner installs rules in and injects packets into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The host's kernel (no IPVS: directors are nft stand-ins).
    #[default]
    Host,
    /// User-mode Linux 6.1 with IPVS (directors are real IPVS services).
    Guest,
}

impl Backend {
    /// `host` / `guest`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Guest => "guest",
        }
    }

    /// The kernel, for the report: `host Linux 6.18.0` / `guest Linux 6.1.176 (user-mode)`.
    pub fn kernel_text(self) -> String {
        match self {
            Self::Host => {
                let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "?".into());
                format!("host Linux {release}")
            }
            Self::Guest => "guest Linux 6.1 (user-mode)".into(),
        }
    }

    /// The iptables-restore program installing the flows: the guest's 6.1 kernel marks
    /// packets through the legacy backend (its nft `meta mark set` is refused).
    pub fn iptables_restore(self, ipv6: bool) -> &'static str {
        match (self, ipv6) {
            (Self::Host, false) => "iptables-restore",
            (Self::Host, true) => "ip6tables-restore",
            (Self::Guest, false) => "iptables-legacy-restore",
            (Self::Guest, true) => "ip6tables-legacy-restore",
        }
    }
}
