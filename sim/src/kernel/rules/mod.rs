//! Kernel rules from the same tables the simulator runs, one module per stage: the shield's
//! lists ([`shield`]: nft netdev ingress), its SYN cookies ([`synproxy`]: nft synproxy /
//! ip6tables `SYNPROXY`), the flows ([`flows`]: the flowmgr compiler's iptables-restore
//! output), the directors ([`director`]: nft DNAT maps on the host backend; real IPVS
//! services in the guest, see `crate::kernel::guest`), the `[[nat]]` rules ([`nat`]: nft
//! `nat` tables), the routing tables ([`routes`]: `ip route … table <id>`), and their
//! installation in a topology ([`install`]).
//! [`KernelRules::features`] says, per feature, which kernel and mechanism reproduces it or
//! that it has no kernel counterpart in this runner (those are compared on the simulator
//! side only).
//!
//! The backend ([`Backend`]) is chosen once, at compile time: it decides the directors'
//! mechanism and how the flows are installed; everything else is the same text.
//!
//! Not here: installing anything into the host namespace (rules go into the LB namespace of
//! a [`Topology`](crate::kernel::topology::Topology)), fwmark or IPv6 directors with tun
//! reals, reals of mixed forwarding methods or of mixed families on the host backend
//! (IPv6 packets are then not injected, see [`KernelRules::refuse_ipv6`]), `[[nat]]` rules
//! mixing address families or naming a second output interface of one family.

pub mod director;
pub mod flows;
pub mod install;
pub mod ipvs;
pub mod nat;
pub mod routes;
pub mod shield;
pub mod synproxy;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use datapath::director::config::DirectorConfig;
use datapath::flows::FlowTable;
use datapath::shield::ShieldConfig;
use ipnet::IpNet;
use serde::Serialize;

pub use super::backend::Backend;

/// Name of the shield's nft table (family netdev).
pub const SHIELD_TABLE: &str = "lbsim_shield";
/// Name of the directors' nft table (family ip).
pub const DIRECTOR_TABLE: &str = "lbsim_director";
/// Name of the IPv6 directors' nft table (family ip6).
pub const DIRECTOR6_TABLE: &str = "lbsim_director6";
/// Name of the synproxy nft table (family ip).
pub const SYNPROXY_TABLE: &str = "lbsim_synproxy";
/// Name of the NAT rules' nft table (family ip).
pub const NAT_TABLE: &str = "lbsim_nat";
/// Name of the IPv6 NAT rules' nft table (family ip6).
pub const NAT6_TABLE: &str = "lbsim_nat6";

/// How one feature is (or is not) reproduced in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureRow {
    /// The feature (`shield deny/allow_src`, `director web`, …).
    pub feature: String,
    /// The kernel mechanism, or `none` when there is no kernel counterpart here.
    pub mechanism: String,
    /// Whether the kernel's per-packet outcome is comparable for this feature.
    pub compared: bool,
}

/// Everything installed in the LB namespace, as text, plus the feature map.
#[derive(Debug, Clone, Default)]
pub struct KernelRules {
    /// `nft -f` input for the shield (empty: no shield).
    pub shield_nft: String,
    /// `iptables-restore` input for the flows (empty: no flows).
    pub flows_iptables: String,
    /// `ip6tables-restore` input for the flows (empty: no flows).
    pub flows_ip6tables: String,
    /// Why IPv6 packets cannot be compared (a feature with no IPv6 counterpart here).
    pub ipv6_refused: Option<String>,
    /// `nft -f` input for the directors (empty: no directors).
    pub director_nft: String,
    /// Per-feature mechanisms.
    pub features: Vec<FeatureRow>,
    /// Directors whose backend choice the kernel reproduces (rr), by name.
    pub comparable_directors: Vec<String>,
    /// `nft -f` input for synproxy (empty: no protected ports).
    pub synproxy_nft: String,
    /// `ip6tables-restore --noflush` input for the IPv6 protected ports (empty: none).
    pub synproxy_ip6tables: String,
    /// Addresses routed to the server side from the LB itself: real servers and protected
    /// destinations (synproxy's own SYNs). Packets from a real server are injected from
    /// the server side.
    pub server_addresses: BTreeSet<IpAddr>,
    /// Destinations with protected TCP ports whose context's `syn_cookies` is `auto` (the
    /// shield answers with cookies only once its SYN rate switched the mode on).
    pub cookie_auto: BTreeSet<IpAddr>,
    /// Per real server: its director and how its choice compares (the last director
    /// naming it, when several do; see `services`).
    pub backends: BTreeMap<SocketAddr, BackendRule>,
    /// Per virtual service address (VIP:port of directors declared by address).
    pub services: BTreeMap<SocketAddr, BackendRule>,
    /// `nft -f` input for the `[[nat]]` rules (empty: none).
    pub nat_nft: String,
    /// The appliance's `[ip]` settings as the LB namespace's sysctls (`key=value`).
    pub ip_sysctls: Vec<String>,
    /// The egress MTU of the LB's server-side veth (`[ip] mtu`; the client-side veth keeps
    /// its jumbo MTU so that any captured frame can enter).
    pub server_mtu: Option<u32>,
    /// With the main table written out (`[[ip.table]] id = 254`): its destinations, the
    /// only ones the LB routes (toward the server side) for packets from the client side;
    /// any other gets ICMP net unreachable / ICMPv6 no route, as in the simulator. `None`:
    /// everything from the client side is routed to the server side.
    pub routed_destinations: Option<Vec<IpNet>>,
    /// The appliance interfaces placed on the LB's server-side veth (per address family,
    /// the first `out` of that family's source NAT rules), with their addresses: added to
    /// that veth, their networks routed there through a gateway inside them (so MASQUERADE
    /// picks this address, as on the appliance).
    pub server_interfaces: Vec<(String, IpNet)>,
    /// Networks on the server side: packets from them are injected from the server side.
    pub server_networks: Vec<IpNet>,
    /// Some rule rewrites sources (SNAT / MASQUERADE): a forwarded frame is matched by
    /// its tag without requiring an unchanged source (nor, for replies, destination).
    pub source_nat: bool,
    /// The kernel these rules are for.
    pub backend: Backend,
    /// The guest backend's IPVS services (empty on the host backend).
    pub ipvs: ipvs::IpvsSetup,
    /// Features of the appliance the guest kernel cannot reproduce (it lacks the modules):
    /// a guest diff runs them on the host kernel (see `crate::kernel::guest_run`).
    pub host_only: Vec<String>,
    /// The appliance's routing tables and fwmark rules in the LB namespace (host backend;
    /// empty without `[[ip.table]]`).
    pub routes: routes::RunnerRoutes,
}

pub(crate) fn row(
    feature: impl Into<String>,
    mechanism: impl Into<String>,
    compared: bool,
) -> FeatureRow {
    FeatureRow {
        feature: feature.into(),
        mechanism: mechanism.into(),
        compared,
    }
}

impl KernelRules {
    /// Compile the rules for an appliance on the host backend: its shield config, its
    /// (already built) flow table and its directors.
    pub fn compile(
        shield: Option<&ShieldConfig>,
        flows: Option<&FlowTable>,
        directors: &[DirectorConfig],
    ) -> anyhow::Result<Self> {
        Self::compile_on(Backend::Host, shield, flows, directors)
    }

    /// [`KernelRules::compile`] for a backend: on the guest, directors are IPVS services and
    /// the shield (nft: the guest's nf_tables has no netdev, ip or ip6 family) is left to
    /// the host kernel ([`KernelRules::host_only`]).
    pub fn compile_on(
        backend: Backend,
        shield: Option<&ShieldConfig>,
        flows: Option<&FlowTable>,
        directors: &[DirectorConfig],
    ) -> anyhow::Result<Self> {
        let mut rules = Self {
            backend,
            ..Self::default()
        };
        if let Some(shield) = shield {
            if backend == Backend::Guest {
                rules
                    .host_only
                    .push("shield lists and SYN cookies (nft)".into());
                return rules.compile_rest(flows, directors);
            }
            rules.cookie_auto = synproxy::cookie_auto_destinations(shield);
            rules.shield_nft = shield::shield_nft(shield, &mut rules.features);
            if let Some((text, destinations)) = synproxy::synproxy_nft(shield) {
                rules.synproxy_nft = text;
                rules.server_addresses.extend(destinations);
                rules.features.push(row(
                    "shield SYN cookies (protected TCP ports)",
                    "nft synproxy in forward (SYNs notrack in raw prerouting), always on",
                    true,
                ));
            }
            if let Some((text, destinations)) = synproxy::synproxy_ip6tables(shield) {
                rules.synproxy_ip6tables = text;
                rules.server_addresses.extend(destinations);
                rules.features.push(row(
                    "shield SYN cookies (protected TCP ports, IPv6)",
                    "ip6tables SYNPROXY target in FORWARD (SYNs CT --notrack in raw); nft synproxy checks IPv6 checksums as IPv4 on this kernel",
                    true,
                ));
            }
        }
        rules.compile_rest(flows, directors)
    }

    /// The flows and directors (after the shield).
    fn compile_rest(
        mut self,
        flows: Option<&FlowTable>,
        directors: &[DirectorConfig],
    ) -> anyhow::Result<Self> {
        let rules = &mut self;
        if let Some(table) = flows {
            (rules.flows_iptables, rules.flows_ip6tables) =
                flows::flows_restore(table, rules.backend);
            let mechanism = match rules.backend {
                Backend::Host => {
                    "iptables-restore (IPv4) and ip6tables-restore (IPv6): mangle PREROUTING, one chain per flow, MARK"
                }
                Backend::Guest => {
                    "iptables-legacy-restore (IPv4) and ip6tables-legacy-restore (IPv6) in the guest: mangle PREROUTING, one chain per flow, MARK (fwmark services' marks); IPVS replies accepted first (-m ipvs --vdir REPLY)"
                }
            };
            rules.features.push(row("flows", mechanism, true));
        }
        match rules.backend {
            Backend::Host if !directors.is_empty() => {
                rules.director_nft = director::director_nft(directors, rules)?;
            }
            Backend::Host => {}
            Backend::Guest => ipvs::ipvs_directors(directors, rules)?,
        }
        Ok(self)
    }

    /// Mark IPv6 packets as not comparable (the first reason is kept), with a feature row.
    pub fn refuse_ipv6(&mut self, why: &str) {
        if self.ipv6_refused.is_none() {
            self.ipv6_refused = Some(why.to_string());
            self.features
                .push(row("IPv6 packets", format!("not injected: {why}"), false));
        }
    }

    /// The rule of the real server a connection went to: by address and port, or, for a
    /// real configured without a port (it keeps the virtual port), by address.
    pub fn backend_rule(&self, backend: SocketAddr) -> Option<&BackendRule> {
        let portless = SocketAddr::new(backend.ip(), 0);
        self.backends
            .get(&backend)
            .or_else(|| self.backends.get(&portless))
    }

    /// Whether a packet from `address` enters from the server side.
    pub fn is_server(&self, address: IpAddr) -> bool {
        self.server_addresses.contains(&address)
            || self.server_networks.iter().any(|n| n.contains(&address))
    }

    /// The feature map as a table.
    pub fn render_features(&self) -> String {
        let mut out = String::from("feature | kernel mechanism | compared\n");
        for feature in &self.features {
            let compared = if feature.compared { "yes" } else { "no" };
            let _ = writeln!(
                out,
                "{} | {} | {compared}",
                feature.feature, feature.mechanism
            );
        }
        out
    }
}

/// An address family of the shield's nft sets and rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    fn has(self, address: IpAddr) -> bool {
        matches!(
            (self, address),
            (Self::V4, IpAddr::V4(_)) | (Self::V6, IpAddr::V6(_))
        )
    }

    /// nft payload keyword (`ip`, `ip6`).
    fn keyword(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// Set name suffix: `deny_0` (IPv4), `deny6_0` (IPv6).
    fn suffix(self) -> &'static str {
        match self {
            Self::V4 => "",
            Self::V6 => "6",
        }
    }

    fn set_type(self) -> &'static str {
        match self {
            Self::V4 => "ipv4_addr",
            Self::V6 => "ipv6_addr",
        }
    }
}

/// How a director's backend choice is reproduced in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendMatch {
    /// Same choice as the simulator (rr through numgen, IPVS order).
    Exact,
    /// A hash scheduler emulated with jhash: compared; a different backend is an explained
    /// difference (the hash functions differ).
    Jhash,
    /// A stand-in (numgen rr) for a scheduler with no kernel counterpart: the backend is
    /// not compared, the verdict and the source end are.
    StandIn,
}

/// What the kernel does for one real server, by address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendRule {
    /// The director.
    pub director: String,
    /// Its kernel mechanism.
    pub mechanism: String,
    /// How its choice compares.
    pub matching: BackendMatch,
}
