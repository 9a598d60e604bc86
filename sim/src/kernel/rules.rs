//! Kernel rules from the same tables the simulator runs: the shield's deny/allow lists as an
//! nft table in the netdev ingress hook of the LB's client-side veth (`dst + vlan` contexts
//! first, matched with `vlan id N`, then `dst` contexts, then the default; `ip` and, when
//! the lists have IPv6 entries or contexts, `ip6` sets), the flow table as the flowmgr
//! compiler's `iptables-restore` and `ip6tables-restore` output (mangle chains and marks), and directors as
//! nft `dnat to numgen inc mod N map {…}` (no IPVS on this kernel). [`KernelRules::features`]
//! says, per feature, which mechanism was used or that the feature has no kernel counterpart
//! in this runner (those are compared on the simulator side only).
//!
//! Not here: installing anything into the host namespace (rules go into the LB namespace of
//! a [`Topology`]), fwmark or IPv6 directors with tun reals, reals of mixed forwarding
//! methods or of mixed families (direct routing is the kernel's plain forwarding: the IP
//! packet is unchanged) (IPv6 packets are then not injected, see [`KernelRules::refuse_ipv6`]),
//! `[[nat]]` rules mixing address families or naming a second output interface of one
//! family. IPv6 directors, and fwmark directors of IPv6 reals, are an `ip6` table of the
//! same DNAT maps (reals without a port keep the virtual port: see `dnat_statement`);
//! replies of translated connections are accepted before the flows (see
//! `accept_translated_replies`); IPv6 protected ports use the ip6tables `SYNPROXY` target (see
//! `synproxy_ip6tables` for why not nft synproxy). The `[[nat]]` rules become nft `nat`
//! tables, `ip` for IPv4 rules and `ip6` for IPv6 ones (prerouting `dnat`, postrouting
//! `snat` / `masquerade`), see [`KernelRules::add_nat`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use datapath::director::config::{DirectorConfig, RealSpec, ServiceKey, ServiceSpec};
use datapath::director::dest::Forward;
use datapath::director::scheduler::SchedulerKind;
use datapath::flows::Family;
use datapath::flows::FlowTable;
use datapath::nat::NatAction;
use datapath::nat::config::{InterfaceAddress, NatRuleConfig};
use datapath::packet::ip_proto;
use datapath::shield::ShieldConfig;
use datapath::shield::config::ContextConfig;
use datapath::shield::modes::ModeSetting;
use ipnet::IpNet;
use serde::Serialize;

use super::topology::{
    FROM_CLIENT_TABLE, LB_CLIENT_IFACE, LB_SERVER_IFACE, SERVER_MAC, Topology, mac_text,
};

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
}

fn row(feature: impl Into<String>, mechanism: impl Into<String>, compared: bool) -> FeatureRow {
    FeatureRow {
        feature: feature.into(),
        mechanism: mechanism.into(),
        compared,
    }
}

impl KernelRules {
    /// Compile the rules for an appliance: its shield config, its (already built) flow table
    /// and its directors.
    pub fn compile(
        shield: Option<&ShieldConfig>,
        flows: Option<&FlowTable>,
        directors: &[DirectorConfig],
    ) -> anyhow::Result<Self> {
        let mut rules = Self::default();
        if let Some(shield) = shield {
            rules.cookie_auto = cookie_auto_destinations(shield);
            rules.shield_nft = shield_nft(shield, &mut rules.features);
            if let Some((text, destinations)) = synproxy_nft(shield) {
                rules.synproxy_nft = text;
                rules.server_addresses.extend(destinations);
                rules.features.push(row(
                    "shield SYN cookies (protected TCP ports)",
                    "nft synproxy in forward (SYNs notrack in raw prerouting), always on",
                    true,
                ));
            }
            if let Some((text, destinations)) = synproxy_ip6tables(shield) {
                rules.synproxy_ip6tables = text;
                rules.server_addresses.extend(destinations);
                rules.features.push(row(
                    "shield SYN cookies (protected TCP ports, IPv6)",
                    "ip6tables SYNPROXY target in FORWARD (SYNs CT --notrack in raw); nft synproxy checks IPv6 checksums as IPv4 on this kernel",
                    true,
                ));
            }
        }
        if let Some(table) = flows {
            let compiled = |family| {
                accept_translated_replies(&datapath::flows::compile::iptables(table, family))
            };
            rules.flows_iptables = compiled(Family::V4);
            rules.flows_ip6tables = compiled(Family::V6);
            rules.features.push(row(
                "flows",
                "iptables-restore (IPv4) and ip6tables-restore (IPv6): mangle PREROUTING, one chain per flow, MARK",
                true,
            ));
        }
        if !directors.is_empty() {
            rules.director_nft = director_nft(directors, &mut rules)?;
        }
        Ok(rules)
    }

    /// Install the rules in the topology's LB namespace (flows first: marks are set in
    /// mangle before the nat hook's DNAT reads them).
    pub fn install(&self, topology: &Topology) -> anyhow::Result<()> {
        let lb = topology.lb_ns();
        if !self.flows_iptables.is_empty() {
            topology.exec(&lb, &["iptables-restore"], Some(&self.flows_iptables))?;
        }
        self.install_server_interface(topology)?;
        for text in [
            &self.shield_nft,
            &self.director_nft,
            &self.synproxy_nft,
            &self.nat_nft,
        ] {
            if !text.is_empty() {
                topology.exec(&lb, &["nft", "-f", "-"], Some(text))?;
            }
        }
        if !self.synproxy_nft.is_empty() {
            let loose = "net.netfilter.nf_conntrack_tcp_loose=0";
            topology.exec(&lb, &["sysctl", "-qw", loose], None)?;
        }
        for address in &self.server_addresses {
            topology.route_to_server(&address.to_string())?;
        }
        for setting in &self.ip_sysctls {
            topology.exec(&lb, &["sysctl", "-qw", setting], None)?;
        }
        if let Some(mtu) = self.server_mtu {
            let mtu = mtu.to_string();
            let args = ["ip", "link", "set", LB_SERVER_IFACE, "mtu", &mtu];
            topology.exec(&lb, &args, None)?;
        }
        Ok(())
    }

    /// The IP layer's settings, for [`KernelRules::install`]: forwarding, `rp_filter` (all
    /// and both veths: the kernel uses the larger), ICMP rate limits, defragmentation
    /// limits, the server side's MTU.
    pub fn add_ip(&mut self, ip: &datapath::ip::IpConfig) {
        let rp = ip.rp_filter.sysctl();
        let flag = |on: bool| u8::from(on);
        self.ip_sysctls = vec![
            format!("net.ipv4.ip_forward={}", flag(ip.forwarding)),
            format!("net.ipv6.conf.all.forwarding={}", flag(ip.forwarding_v6)),
            format!("net.ipv4.conf.all.rp_filter={rp}"),
            format!("net.ipv4.conf.{LB_CLIENT_IFACE}.rp_filter={rp}"),
            format!("net.ipv4.conf.{LB_SERVER_IFACE}.rp_filter={rp}"),
            format!("net.ipv4.icmp_ratelimit={}", ip.icmp.ratelimit_ms),
            format!("net.ipv4.icmp_ratemask={}", ip.icmp.ratemask),
            format!("net.ipv6.icmp.ratelimit={}", ip.icmp.ratelimit_v6_ms),
            format!("net.ipv4.icmp_msgs_per_sec={}", ip.icmp.msgs_per_sec),
            format!("net.ipv4.icmp_msgs_burst={}", ip.icmp.msgs_burst),
            format!("net.ipv4.ipfrag_high_thresh={}", ip.defrag.high_thresh),
            format!("net.ipv4.ipfrag_low_thresh={}", ip.defrag.low_thresh),
            format!("net.ipv4.ipfrag_time={}", ip.defrag.time_ns / 1_000_000_000),
        ];
        self.server_mtu = Some(ip.mtu);
    }

    /// The IPv6 rules: the flows' `ip6tables-restore` output (the shield's IPv6 sets are
    /// in its nft table). Separate from [`KernelRules::install`] so that a refusal leaves
    /// IPv4 runs possible (IPv6 packets are then not injected).
    pub fn install_ipv6(&self, topology: &Topology) -> anyhow::Result<()> {
        let lb = topology.lb_ns();
        if !self.flows_ip6tables.is_empty() {
            topology.exec(&lb, &["ip6tables-restore"], Some(&self.flows_ip6tables))?;
        }
        if !self.synproxy_ip6tables.is_empty() {
            let args = ["ip6tables-restore", "--noflush"];
            topology.exec(&lb, &args, Some(&self.synproxy_ip6tables))?;
            let loose = "net.netfilter.nf_conntrack_tcp_loose=0";
            topology.exec(&lb, &["sysctl", "-qw", loose], None)?;
        }
        Ok(())
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

    /// Compile the appliance's `[[nat]]` rules as nft `nat` prerouting `dnat` and
    /// postrouting `snat` / `masquerade`, IPv4 rules in an `ip` table and IPv6 rules in an
    /// `ip6` one (per family, the first `out` interface of the source NAT rules becomes an
    /// address on the LB's server-side veth; rules naming another one are not reproduced).
    pub fn add_nat(
        &mut self,
        rules: &[NatRuleConfig],
        interfaces: &BTreeMap<String, InterfaceAddress>,
    ) {
        if rules.is_empty() {
            return;
        }
        for family in [IpFamily::V4, IpFamily::V6] {
            let server = rules
                .iter()
                .filter(|rule| nat_rule_family(rule, interfaces) == Some(family))
                .find_map(|rule| rule.out.as_ref());
            let Some((name, address)) = server.and_then(|n| interfaces.get_key_value(n)) else {
                continue;
            };
            self.server_interfaces.push((name.clone(), address.0));
            self.server_networks.push(address.0.trunc());
            self.features.push(row(
                format!("interface {name} ({})", address.0),
                format!(
                    "address on the LB's server veth {LB_SERVER_IFACE}, its network routed there (MASQUERADE's source)"
                ),
                true,
            ));
        }
        self.nat_nft = nat_nft(rules, interfaces, self);
    }

    fn install_server_interface(&self, topology: &Topology) -> anyhow::Result<()> {
        for (_, address) in &self.server_interfaces {
            install_interface_address(topology, address)?;
        }
        Ok(())
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
enum IpFamily {
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

fn elements(prefixes: impl Iterator<Item = ipnet::IpNet>, family: IpFamily) -> Vec<String> {
    prefixes
        .filter(|net| family.has(net.addr()))
        .map(|net| net.to_string())
        .collect()
}

fn set(out: &mut String, name: &str, family: IpFamily, elements: &[String]) {
    let _ = writeln!(
        out,
        "\tset {name} {{\n\t\ttype {}\n\t\tflags interval\n\t\tauto-merge",
        family.set_type()
    );
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
    }
    out.push_str("\t}\n");
}

/// One context of one family: `allow_src` accepts (they are removed from the denylist),
/// then the instance's and the context's `deny` drop, then the context is done
/// (`accept`), so that later contexts and the default context do not see the packet.
/// Its sets are named `allow_src{6}_{id}` / `deny{6}_{id}`.
fn context_rules(
    out: &mut (String, String),
    id: &str,
    context: &ContextConfig,
    instance_deny: &[String],
    family: IpFamily,
) {
    let (out_sets, out_rules) = out;
    let (ip, suffix) = (family.keyword(), family.suffix());
    let allow = elements(context.allow_src.iter().map(|p| p.0), family);
    let mut deny = instance_deny.to_vec();
    deny.extend(elements(context.deny.iter().map(|p| p.0), family));
    let (allow_set, deny_set) = (
        format!("allow_src{suffix}_{id}"),
        format!("deny{suffix}_{id}"),
    );
    set(out_sets, &allow_set, family, &allow);
    set(out_sets, &deny_set, family, &deny);
    let selector = match (context.vlan, context.dst) {
        (Some(vlan), Some(dst)) => format!("vlan id {vlan} {ip} daddr {dst} "),
        (None, Some(dst)) => format!("{ip} daddr {dst} "),
        (_, None) => String::new(),
    };
    let context_name = match (context.dst, context.vlan) {
        (Some(dst), Some(vlan)) => format!("{dst} vlan {vlan}"),
        (Some(dst), None) => dst.to_string(),
        (None, _) => "default".into(),
    };
    let comment = |what: &str| format!("comment \"shield context {context_name}: {what}\"");
    let _ = writeln!(
        out_rules,
        "\t\t{selector}{ip} saddr @{allow_set} counter accept {}",
        comment("allow_src")
    );
    let _ = writeln!(
        out_rules,
        "\t\t{selector}{ip} saddr @{deny_set} counter drop {}",
        comment("deny")
    );
    if !selector.is_empty() {
        let _ = writeln!(
            out_rules,
            "\t\t{selector}counter accept {}",
            comment("done")
        );
    }
}

/// Whether the shield has anything for IPv6: a list entry or a context.
fn shield_has_ipv6(shield: &ShieldConfig) -> bool {
    let contexts = || {
        shield
            .context
            .iter()
            .chain(std::iter::once(&shield.default))
    };
    let mut prefixes = shield
        .deny
        .iter()
        .chain(contexts().flat_map(|c| c.deny.iter().chain(&c.allow_src)));
    prefixes.any(|p| p.0.addr().is_ipv6()) || contexts().any(|c| c.dst.is_some_and(|d| d.is_ipv6()))
}

/// One family's contexts: `dst + vlan` contexts win over `dst` alone (the shield's
/// selection order), so they come first; within each group, configuration order; the
/// default context last.
fn family_rules(shield: &ShieldConfig, family: IpFamily, out: &mut (String, String)) {
    let instance_deny = elements(shield.deny.iter().map(|p| p.0), family);
    let of_family = |c: &&ContextConfig| c.dst.is_some_and(|d| family.has(d));
    let contexts = shield.context.iter().filter(of_family);
    let tagged = contexts.clone().filter(|c| c.vlan.is_some());
    let untagged = contexts.filter(|c| c.vlan.is_none());
    for (index, context) in tagged.chain(untagged).enumerate() {
        context_rules(out, &index.to_string(), context, &instance_deny, family);
    }
    context_rules(out, "default", &shield.default, &instance_deny, family);
}

fn shield_nft(shield: &ShieldConfig, features: &mut Vec<FeatureRow>) -> String {
    let mut out = (String::new(), String::new());
    family_rules(shield, IpFamily::V4, &mut out);
    let with_ipv6 = shield_has_ipv6(shield);
    if with_ipv6 {
        family_rules(shield, IpFamily::V6, &mut out);
    }
    let (sets, rules) = out;
    let mut text = format!("table netdev {SHIELD_TABLE}\ndelete table netdev {SHIELD_TABLE}\n");
    let _ = writeln!(text, "table netdev {SHIELD_TABLE} {{\n{sets}");
    let _ = writeln!(
        text,
        "\tchain ingress {{\n\t\ttype filter hook ingress device \"{LB_CLIENT_IFACE}\" priority -500; policy accept;\n{rules}\t}}\n}}"
    );
    let families = if with_ipv6 { "IPv4 and IPv6" } else { "IPv4" };
    features.push(row(
        format!("shield deny / allow_src ({families}, per dst or dst + vlan context)"),
        "nft netdev ingress on the LB's client veth, interval sets (`vlan id N` for VLAN contexts)",
        true,
    ));
    let protected_vlan_contexts = shield
        .context
        .iter()
        .filter(|c| c.vlan.is_some() && !c.protected_tcp_ports.is_empty())
        .count();
    if protected_vlan_contexts > 0 {
        features.push(row(
            format!("shield: protected TCP ports of {protected_vlan_contexts} VLAN context(s)"),
            "none (nft synproxy runs after the tag is gone)",
            false,
        ));
    }
    for feature in [
        "shield invalid-packet checks",
        "shield protected TCP ports: sessions, TTL filter, rates, auto mode switching",
        "shield unmatched drop / surge modes",
    ] {
        features.push(row(feature, "none (simulator only in this runner)", false));
    }
    text
}

fn service_match(key: ServiceKey) -> Option<String> {
    match key {
        ServiceKey::Fwmark(mark) => {
            Some(format!("meta mark {mark:#x} meta l4proto {{ tcp, udp }}"))
        }
        ServiceKey::Tuple { vip, proto, port } => {
            let ip = if vip.is_ipv6() { "ip6" } else { "ip" };
            let name = if proto == ip_proto::UDP { "udp" } else { "tcp" };
            Some(match port {
                0 => format!("{ip} daddr {vip} meta l4proto {name}"),
                port => format!("{ip} daddr {vip} {name} dport {port}"),
            })
        }
    }
}

/// The flowmgr compiler's iptables-restore output with a first mangle PREROUTING rule
/// accepting replies of translated connections (`--ctstate SNAT,DNAT --ctdir REPLY`): the
/// appliance un-NATs director and `[[nat]]` replies before its flows and does not
/// classify them (the pipeline's `director_reply` / `nat_reply`), so a flow table ending
/// in `deny` must not drop them here.
fn accept_translated_replies(text: &str) -> String {
    let Some(at) = text.find("\n-A PREROUTING ") else {
        return text.to_string();
    };
    let (head, tail) = text.split_at(at + 1);
    format!(
        "{head}# replies of translated connections: un-NATed before the flows, not classified\n-A PREROUTING -m conntrack --ctstate SNAT,DNAT --ctdir REPLY -j ACCEPT\n{tail}"
    )
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

/// The selector expression and the comparability of a scheduler.
fn scheduler_selector(
    scheduler: SchedulerKind,
    slots: usize,
    ip: &str,
) -> (String, BackendMatch, String) {
    match scheduler {
        SchedulerKind::Rr => (
            format!("numgen inc mod {slots}"),
            BackendMatch::Exact,
            "nft nat prerouting+output: dnat to numgen inc mod N map (rr, IPVS order)".into(),
        ),
        SchedulerKind::Sh | SchedulerKind::Mh => (
            format!("jhash {ip} saddr mod {slots} seed 0x0"),
            BackendMatch::Jhash,
            format!(
                "nft dnat to jhash {ip} saddr mod N map (weights as repeated slots) emulates {}",
                scheduler.name()
            ),
        ),
        SchedulerKind::Dh => (
            format!("jhash {ip} daddr mod {slots} seed 0x0"),
            BackendMatch::Jhash,
            format!(
                "nft dnat to jhash {ip} daddr mod N map (weights as repeated slots) emulates dh"
            ),
        ),
        other => (
            format!("numgen inc mod {slots}"),
            BackendMatch::StandIn,
            format!(
                "nft numgen rr stands in for {} (no kernel counterpart without IPVS: verdict and source compared, backend not)",
                other.name()
            ),
        ),
    }
}

/// The kernel mechanism of direct-routing directors.
const DIRECT_ROUTING: &str = "kernel routing: direct routing leaves the IP packet as it is (the real server's MAC, hence the backend choice, is not compared)";

/// Whether a director is of IPv6: its VIP's family or, for a fwmark service, its real
/// servers' (IPVS: `ipvsadm -A -f N -6`).
fn director_is_ipv6(key: ServiceKey, reals: &[&RealSpec]) -> bool {
    match key {
        ServiceKey::Tuple { vip, .. } => vip.is_ipv6(),
        ServiceKey::Fwmark(_) => reals.first().is_some_and(|r| r.address.is_ipv6()),
    }
}

fn director_nft(directors: &[DirectorConfig], rules: &mut KernelRules) -> anyhow::Result<String> {
    // DNAT lines per family: IPv4 services (and fwmark ones of IPv4 reals) in `table ip`,
    // IPv6 VIPs (and fwmark ones of IPv6 reals) in `table ip6`.
    let (mut lines, mut lines6) = (String::new(), String::new());
    let (mut chains, mut chains6) = (String::new(), String::new());
    for config in directors {
        let spec = config
            .build()
            .map_err(|e| anyhow::anyhow!("[[director]] {}: {e}", config.name))?;
        let feature = format!(
            "director {} ({}, {})",
            spec.name,
            spec.scheduler.name(),
            spec.key
        );
        let reals: Vec<_> = spec.reals.iter().filter(|r| r.weight > 0).collect();
        let v6 = director_is_ipv6(spec.key, &reals);
        let (Some(matcher), false) = (service_match(spec.key), reals.is_empty()) else {
            rules
                .features
                .push(row(feature, "none (no usable real)", false));
            continue;
        };
        let direct = |r: &&RealSpec| r.forward == Forward::Dr && r.address.is_ipv6() == v6;
        if reals.iter().all(direct) {
            rules.features.push(row(feature, DIRECT_ROUTING, true));
            continue;
        }
        if reals
            .iter()
            .any(|r| r.forward != Forward::Nat || r.address.is_ipv6() != v6)
        {
            rules.features.push(row(
                feature,
                "none (tun forwarding, mixed forwarding methods, or reals of another family than the VIP)",
                false,
            ));
            if v6 || matches!(spec.key, ServiceKey::Fwmark(_)) {
                rules.refuse_ipv6("an IPv6 or fwmark director with no kernel counterpart");
            }
            continue;
        }
        let slots = slots(spec.scheduler, &reals);
        let ip = if v6 { "ip6" } else { "ip" };
        let (selector, mut matching, mut mechanism) =
            scheduler_selector(spec.scheduler, slots.len(), ip);
        if spec.persistence.is_some() {
            matching = BackendMatch::StandIn;
            mechanism = format!(
                "{mechanism}; persistence has no kernel counterpart (backend not compared)"
            );
        }
        let (lines, chains) = match v6 {
            false => (&mut lines, &mut chains),
            true => (&mut lines6, &mut chains6),
        };
        let statement = dnat_statement(&spec.name, ip, &selector, &slots, chains);
        let _ = writeln!(lines, "\t\t{matcher} counter {statement}");
        record_director(rules, &spec, &reals, &mechanism, matching);
        rules.features.push(row(feature, mechanism, true));
    }
    let mut out = nat_table("ip", DIRECTOR_TABLE, &lines, &chains);
    if !lines6.is_empty() {
        out.push_str(&nat_table("ip6", DIRECTOR6_TABLE, &lines6, &chains6));
    }
    Ok(out)
}

/// Remember how the kernel reproduces a director: its comparability, its virtual service
/// and its real servers (routed to the server side).
fn record_director(
    rules: &mut KernelRules,
    spec: &ServiceSpec,
    reals: &[&RealSpec],
    mechanism: &str,
    matching: BackendMatch,
) {
    let rule = || BackendRule {
        director: spec.name.clone(),
        mechanism: mechanism.to_string(),
        matching,
    };
    if matching == BackendMatch::Exact {
        rules.comparable_directors.push(spec.name.clone());
    }
    if let ServiceKey::Tuple { vip, port, .. } = spec.key {
        rules.services.insert(SocketAddr::new(vip, port), rule());
    }
    for real in reals {
        rules.server_addresses.insert(real.address.ip());
        rules.backends.insert(real.address, rule());
    }
}

/// The DNAT map's slots, in order. IPVS keeps real servers in a list it adds to at the
/// head (`list_add_rcu`), and rr starts from the head: the last real added is chosen
/// first. numgen counts from 0, so the map lists the reals in that (reverse
/// configuration) order. Hash emulations repeat a real once per unit of weight.
fn slots<'r>(scheduler: SchedulerKind, reals: &[&'r RealSpec]) -> Vec<&'r RealSpec> {
    let hashed = matches!(
        scheduler,
        SchedulerKind::Sh | SchedulerKind::Dh | SchedulerKind::Mh
    );
    reals
        .iter()
        .rev()
        .flat_map(|real| {
            let copies = if hashed {
                real.weight.max(1) as usize
            } else {
                1
            };
            std::iter::repeat_n(*real, copies)
        })
        .collect()
}

/// A director's DNAT statement over its slots. A real without a port (`:0`) keeps the
/// virtual port, as in IPVS, but nft's `dnat to … map` sets the port it maps to (0
/// included), so: every real with a port, a map to `address . port`
/// (`0 : 10.0.2.3 . 25`); none with a port, a map to addresses; a mix, a verdict map to
/// one chain per slot (appended to `chains`) whose `dnat` has a port or not.
fn dnat_statement(
    director: &str,
    ip: &str,
    selector: &str,
    slots: &[&RealSpec],
    chains: &mut String,
) -> String {
    let ports = || slots.iter().map(|real| real.address.port());
    let entries = |entry: &dyn Fn(usize, &RealSpec) -> String| {
        let entries: Vec<String> = (0..slots.len()).map(|i| entry(i, slots[i])).collect();
        entries.join(", ")
    };
    if ports().all(|port| port != 0) {
        let map =
            entries(&|i, real| format!("{i} : {} . {}", real.address.ip(), real.address.port()));
        return format!("dnat {ip} to {selector} map {{ {map} }}");
    }
    if ports().all(|port| port == 0) {
        let map = entries(&|i, real| format!("{i} : {}", real.address.ip()));
        return format!("dnat {ip} to {selector} map {{ {map} }}");
    }
    let identifier: String = director
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let map = entries(&|i, _| format!("{i} : goto real_{identifier}_{i}"));
    for (index, real) in slots.iter().enumerate() {
        let target = match (real.address.port(), real.address.ip()) {
            (0, address) => address.to_string(),
            (port, IpAddr::V6(address)) => format!("[{address}]:{port}"),
            (port, IpAddr::V4(address)) => format!("{address}:{port}"),
        };
        let _ = writeln!(
            chains,
            "\tchain real_{identifier}_{index} {{\n\t\tmeta l4proto {{ tcp, udp }} dnat {ip} to {target}\n\t}}"
        );
    }
    format!("{selector} vmap {{ {map} }}")
}

/// A director table: the DNAT lines in prerouting, and the same in output (synproxy's
/// SYN toward the server is made locally), plus the per-real chains of verdict maps.
fn nat_table(family: &str, name: &str, lines: &str, chains: &str) -> String {
    format!(
        "table {family} {name}\ndelete table {family} {name}\ntable {family} {name} {{\n{chains}\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{lines}\t}}\n\tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{lines}\t}}\n}}\n"
    )
}

/// Destinations with protected TCP ports whose effective `syn_cookies` is `auto`.
fn cookie_auto_destinations(shield: &ShieldConfig) -> BTreeSet<IpAddr> {
    let instance = shield.main_instance();
    shield
        .context
        .iter()
        .filter(|c| !c.protected_tcp_ports.is_empty())
        .filter(|c| c.syn_cookies.or(instance.syn_cookies).unwrap_or_default() == ModeSetting::Auto)
        .filter_map(|c| c.dst)
        .collect()
}

/// nft synproxy for the shield's protected TCP ports (per context destination): SYNs are
/// not tracked (raw prerouting), synproxy answers them with a cookie SYN-ACK and opens the
/// connection to the server for a valid cookie ACK, invalid ACKs are dropped
/// (`nf_conntrack_tcp_loose = 0` makes a cookie ACK `ct state invalid`).
fn synproxy_nft(shield: &ShieldConfig) -> Option<(String, Vec<IpAddr>)> {
    let instance = shield.main_instance();
    let mss = instance.syn_proxy_mss.unwrap_or(1460);
    let wscale = instance.syn_proxy_wscale.unwrap_or(7);
    let mut selectors = Vec::new();
    let mut destinations = Vec::new();
    for context in shield.context.iter().filter(|c| c.vlan.is_none()) {
        let (Some(IpAddr::V4(dst)), false) = (context.dst, context.protected_tcp_ports.is_empty())
        else {
            continue;
        };
        let ports: Vec<String> = context
            .protected_tcp_ports
            .iter()
            .map(u16::to_string)
            .collect();
        selectors.push(format!(
            "ip daddr {dst} tcp dport {{ {} }}",
            ports.join(", ")
        ));
        destinations.push(IpAddr::V4(dst));
    }
    if selectors.is_empty() {
        return None;
    }
    let mut raw = String::new();
    let mut forward = String::new();
    for selector in &selectors {
        let _ = writeln!(
            raw,
            "\t\t{selector} tcp flags syn / fin,syn,rst,ack notrack"
        );
        let _ = writeln!(
            forward,
            "\t\t{selector} ct state invalid,untracked counter synproxy mss {mss} wscale {wscale} timestamp sack-perm\n\t\t{selector} ct state invalid counter drop"
        );
    }
    let text = format!(
        "table ip {SYNPROXY_TABLE}\ndelete table ip {SYNPROXY_TABLE}\ntable ip {SYNPROXY_TABLE} {{\n\tchain prerouting {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n{raw}\t}}\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n{forward}\t}}\n}}\n"
    );
    Some((text, destinations))
}

/// ip6tables-restore input (raw and filter tables, `--noflush`) for the shield's IPv6
/// protected ports: `CT --notrack` for SYNs, the `SYNPROXY` target in FORWARD. Not nft
/// synproxy: this kernel's `nft_synproxy_do_eval` checks TCP checksums with
/// `nf_ip_checksum` (the IPv4 pseudo-header) whatever the family, so it drops every IPv6
/// segment whose checksum is not already verified — every injected one; the ip6tables
/// target checks with `nf_ip6_checksum`.
fn synproxy_ip6tables(shield: &ShieldConfig) -> Option<(String, Vec<IpAddr>)> {
    let instance = shield.main_instance();
    let mss = instance.syn_proxy_mss.unwrap_or(1460);
    let wscale = instance.syn_proxy_wscale.unwrap_or(7);
    let (mut raw, mut filter, mut destinations) = (String::new(), String::new(), Vec::new());
    for context in shield.context.iter().filter(|c| c.vlan.is_none()) {
        let Some(IpAddr::V6(dst)) = context.dst else {
            continue;
        };
        for port in &context.protected_tcp_ports {
            let selector = format!("-d {dst}/128 -p tcp -m tcp --dport {port}");
            let _ = writeln!(
                raw,
                "-A PREROUTING {selector} --tcp-flags FIN,SYN,RST,ACK SYN -j CT --notrack"
            );
            let _ = writeln!(
                filter,
                "-A FORWARD {selector} -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale {wscale} --mss {mss}\n-A FORWARD {selector} -m conntrack --ctstate INVALID -j DROP"
            );
        }
        if !context.protected_tcp_ports.is_empty() {
            destinations.push(IpAddr::V6(dst));
        }
    }
    (!destinations.is_empty()).then(|| {
        let text = format!("*raw\n{raw}COMMIT\n*filter\n{filter}COMMIT\n");
        (text, destinations)
    })
}

/// A gateway address inside `address`'s network other than `address` itself (the last
/// host address, or the one before): only its neighbour entry (the server veth's MAC)
/// matters, so routes to the network have a next hop the interface address matches.
fn gateway_in(address: &IpNet) -> IpAddr {
    let last = address.broadcast();
    let step_back = |ip: IpAddr, by: u128| match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).wrapping_sub(by as u32)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_sub(by)).into()),
    };
    let candidate = if address.prefix_len() + 1 >= address.max_prefix_len() {
        last
    } else {
        step_back(last, 1)
    };
    if candidate == address.addr() {
        step_back(candidate, 1)
    } else {
        candidate
    }
}

/// Add an appliance interface's address to the LB's server-side veth (IPv6 without
/// duplicate address detection: a tentative address is never a source), and route its
/// network there through a gateway inside it, in the main and the from-client tables.
fn install_interface_address(topology: &Topology, address: &IpNet) -> anyhow::Result<()> {
    let lb = topology.lb_ns();
    let gateway = gateway_in(address).to_string();
    let cidr = address.to_string();
    let mut add = vec!["ip", "addr", "add", &cidr, "dev", LB_SERVER_IFACE];
    if address.addr().is_ipv6() {
        add.push("nodad");
    }
    topology.exec(&lb, &add, None)?;
    let server_mac = mac_text(SERVER_MAC);
    let neighbour = [
        "ip",
        "neigh",
        "replace",
        &gateway,
        "lladdr",
        &server_mac,
        "dev",
        LB_SERVER_IFACE,
        "nud",
        "permanent",
    ];
    topology.exec(&lb, &neighbour, None)?;
    let network = address.trunc().to_string();
    for table in ["main".to_string(), FROM_CLIENT_TABLE.to_string()] {
        let route = [
            "ip",
            "route",
            "replace",
            &network,
            "via",
            &gateway,
            "dev",
            LB_SERVER_IFACE,
            "onlink",
            "table",
            &table,
        ];
        topology.exec(&lb, &route, None)?;
    }
    Ok(())
}

/// The address family of a `[[nat]]` rule: that of every address it names (`src`, `dst`,
/// `to`, the `out` interface's address), which is the only family of packets the
/// simulator's rule translates. `None` when they mix families (the simulator matches
/// packets of one family and cannot rewrite them to the other).
fn nat_rule_family(
    rule: &NatRuleConfig,
    interfaces: &BTreeMap<String, InterfaceAddress>,
) -> Option<IpFamily> {
    let out = rule.out.as_ref().and_then(|name| interfaces.get(name));
    let to = match rule.action {
        NatAction::Dnat { address, .. } | NatAction::Snat { address, .. } => Some(address),
        NatAction::Masquerade { .. } => None,
    };
    let addresses = [
        rule.src.map(|n| n.addr()),
        rule.dst.map(|d| d.network.addr()),
        to,
        out.map(|a| a.0.addr()),
    ];
    let mut families = addresses.into_iter().flatten().map(|a| a.is_ipv6());
    let v6 = families.next()?;
    families
        .all(|f| f == v6)
        .then_some(if v6 { IpFamily::V6 } else { IpFamily::V4 })
}

fn nat_selector(rule: &NatRuleConfig, family: IpFamily) -> String {
    let ip = family.keyword();
    let mut parts = Vec::new();
    match rule.proto {
        Some(ip_proto::UDP) => parts.push("meta l4proto udp".to_string()),
        Some(_) => parts.push("meta l4proto tcp".to_string()),
        None => parts.push("meta l4proto { tcp, udp }".to_string()),
    }
    if let Some(src) = rule.src {
        parts.push(format!("{ip} saddr {src}"));
    }
    if let Some(dst) = rule.dst {
        let network = if dst.network.prefix_len() == dst.network.max_prefix_len() {
            dst.network.addr().to_string()
        } else {
            dst.network.to_string()
        };
        parts.push(format!("{ip} daddr {network}"));
        if let Some(port) = dst.port {
            let name = if rule.proto == Some(ip_proto::UDP) {
                "udp"
            } else {
                "tcp"
            };
            parts.push(format!("{name} dport {port}"));
        }
    }
    parts.join(" ")
}

/// The nft statement of an action (`dnat ip to 10.0.3.4:8080`, `snat ip6 to
/// [2001:db8:3::1]:20000-20099`, `masquerade to :1024-2047`).
fn nat_statement(action: &NatAction) -> String {
    let range = |ports: &Option<(u16, u16)>| match ports {
        Some((min, max)) if min == max => format!(":{min}"),
        Some((min, max)) => format!(":{min}-{max}"),
        None => String::new(),
    };
    // An IPv6 address followed by a port is written in brackets.
    let target = |address: &IpAddr, ports: String| match (address, ports.is_empty()) {
        (IpAddr::V6(v6), false) => format!("ip6 to [{v6}]{ports}"),
        (IpAddr::V6(v6), true) => format!("ip6 to {v6}"),
        (IpAddr::V4(v4), _) => format!("ip to {v4}{ports}"),
    };
    match action {
        NatAction::Dnat { address, port } => {
            let port = port.map_or(String::new(), |p| format!(":{p}"));
            format!("dnat {}", target(address, port))
        }
        NatAction::Snat { address, ports } => format!("snat {}", target(address, range(ports))),
        NatAction::Masquerade { ports: None } => "masquerade".into(),
        NatAction::Masquerade { ports } => format!("masquerade to {}", range(ports)),
    }
}

/// The prerouting and postrouting lines of one family's `nat` table.
#[derive(Default)]
struct NatLines {
    prerouting: String,
    postrouting: String,
}

impl NatLines {
    fn table(&self, family: IpFamily, name: &str) -> String {
        let ip = family.keyword();
        format!(
            "table {ip} {name}\ndelete table {ip} {name}\ntable {ip} {name} {{\n\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{}\t}}\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n{}\t}}\n}}\n",
            self.prerouting, self.postrouting
        )
    }
}

/// nft `nat` tables for `[[nat]]` rules, `ip` for IPv4 rules and `ip6` for IPv6 ones
/// (see [`nat_rule_family`]): DNAT in prerouting (dstnat), SNAT / MASQUERADE in
/// postrouting (srcnat) with `oifname` the server veth for rules whose `out` is the
/// family's server-side interface. Rules mixing families and rules on another output
/// interface are skipped.
fn nat_nft(
    rules: &[NatRuleConfig],
    interfaces: &BTreeMap<String, InterfaceAddress>,
    kernel: &mut KernelRules,
) -> String {
    let (mut lines, mut lines6) = (NatLines::default(), NatLines::default());
    for (index, rule) in rules.iter().enumerate() {
        let statement = nat_statement(&rule.action);
        let feature = format!("nat rule {} ({statement})", index + 1);
        let family = nat_rule_family(rule, interfaces);
        let server = family.and_then(|family| {
            let mut servers = kernel.server_interfaces.iter();
            servers.find(|(_, address)| family.has(address.addr()))
        });
        let other_out = rule.out.is_some() && rule.out.as_ref() != server.map(|s| &s.0);
        let Some(family) = family.filter(|_| !other_out) else {
            let why = "none (addresses of both families, or a second output interface)";
            kernel.features.push(row(feature, why, false));
            continue;
        };
        let selector = nat_selector(rule, family);
        let lines = match family {
            IpFamily::V4 => &mut lines,
            IpFamily::V6 => &mut lines6,
        };
        match (&rule.action, &rule.out) {
            (NatAction::Dnat { address, .. }, _) => {
                kernel.server_addresses.insert(*address);
                let _ = writeln!(lines.prerouting, "\t\t{selector} counter {statement}");
            }
            (_, out) => {
                kernel.source_nat = true;
                let device = match out {
                    Some(_) => format!("oifname \"{LB_SERVER_IFACE}\" "),
                    None => String::new(),
                };
                let _ = writeln!(
                    lines.postrouting,
                    "\t\t{device}{selector} counter {statement}"
                );
            }
        }
        let hook = if rule.action.is_source() {
            "postrouting"
        } else {
            "prerouting"
        };
        let table = match family {
            IpFamily::V4 => "nft nat",
            IpFamily::V6 => "nft ip6 nat",
        };
        let mechanism = format!("{table} {hook}: {statement}");
        kernel.features.push(row(feature, mechanism, true));
    }
    let mut text = lines.table(IpFamily::V4, NAT_TABLE);
    if !(lines6.prerouting.is_empty() && lines6.postrouting.is_empty()) {
        text.push_str(&lines6.table(IpFamily::V6, NAT6_TABLE));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(address: &str) -> RealSpec {
        RealSpec {
            address: address.parse().expect("socket address"),
            weight: 1,
            forward: Forward::Nat,
            upper_threshold: 0,
            lower_threshold: 0,
            mac: None,
        }
    }

    #[test]
    fn dnat_statements_keep_the_virtual_port_of_port_less_reals() {
        let (with_port, without_port) = (real("10.0.2.1:25"), real("10.0.2.2:0"));
        let mut chains = String::new();
        let both = [&with_port, &with_port];
        assert_eq!(
            dnat_statement("a", "ip", "numgen inc mod 2", &both, &mut chains),
            "dnat ip to numgen inc mod 2 map { 0 : 10.0.2.1 . 25, 1 : 10.0.2.1 . 25 }"
        );
        let neither = [&without_port];
        assert_eq!(
            dnat_statement("a", "ip", "numgen inc mod 1", &neither, &mut chains),
            "dnat ip to numgen inc mod 1 map { 0 : 10.0.2.2 }"
        );
        assert!(chains.is_empty());
        let v6 = real("[2001:db8::3]:8080");
        let mixed = [&without_port, &v6];
        assert_eq!(
            dnat_statement("web-1", "ip6", "numgen inc mod 2", &mixed, &mut chains),
            "numgen inc mod 2 vmap { 0 : goto real_web_1_0, 1 : goto real_web_1_1 }"
        );
        assert!(chains.contains(
            "chain real_web_1_0 {\n\t\tmeta l4proto { tcp, udp } dnat ip6 to 10.0.2.2\n"
        ));
        assert!(chains.contains("dnat ip6 to [2001:db8::3]:8080"));
    }

    #[test]
    fn a_nat_rule_is_of_the_family_of_every_address_it_names() {
        let interfaces: BTreeMap<String, InterfaceAddress> =
            [("inside", "10.0.3.1/24"), ("inside6", "2001:db8:3::1/64")]
                .into_iter()
                .map(|(name, net)| (name.to_string(), InterfaceAddress(net.parse().unwrap())))
                .collect();
        #[derive(serde::Deserialize)]
        struct File {
            nat: Vec<NatRuleConfig>,
        }
        let rules = toml::from_str::<File>(
            r#"nat = [
            { kind = "masquerade", out = "inside6" },
            { kind = "masquerade", out = "inside", src = "198.51.100.0/24" },
            { kind = "dnat", proto = "tcp", dst = "[2001:db8::1]:80", to = "[2001:db8:3::4]:8080" },
            { kind = "snat", out = "inside", src = "2001:db8:c::/48", to = "10.0.3.1" },
        ]"#,
        )
        .expect("rules")
        .nat;
        let families: Vec<_> = rules
            .iter()
            .map(|rule| nat_rule_family(rule, &interfaces))
            .collect();
        assert_eq!(
            families,
            [
                Some(IpFamily::V6),
                Some(IpFamily::V4),
                Some(IpFamily::V6),
                None
            ]
        );
        assert_eq!(
            nat_statement(&rules[2].action),
            "dnat ip6 to [2001:db8:3::4]:8080"
        );
        assert_eq!(
            nat_selector(&rules[2], IpFamily::V6),
            "meta l4proto tcp ip6 daddr 2001:db8::1 tcp dport 80"
        );
    }

    #[test]
    fn translated_replies_are_accepted_before_the_first_flow() {
        let text = "*mangle\n:PREROUTING ACCEPT [0:0]\n:web - [0:0]\n-A PREROUTING -j web\n-A web -j ACCEPT\nCOMMIT\n";
        let accepted = accept_translated_replies(text);
        let rule = "-A PREROUTING -m conntrack --ctstate SNAT,DNAT --ctdir REPLY -j ACCEPT\n-A PREROUTING -j web\n";
        assert!(accepted.contains(rule), "{accepted}");
        assert_eq!(
            accept_translated_replies("*mangle\nCOMMIT\n"),
            "*mangle\nCOMMIT\n"
        );
    }
}
