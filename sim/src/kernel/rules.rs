//! Kernel rules from the same tables the simulator runs: the shield's deny/allow lists as an
//! nft table in the netdev ingress hook of the LB's client-side veth, the flow table as the
//! flowmgr compiler's `iptables-restore` output (mangle chains and marks), and directors as
//! nft `dnat to numgen inc mod N map {…}` (no IPVS on this kernel). [`KernelRules::features`]
//! says, per feature, which mechanism was used or that the feature has no kernel counterpart
//! in this runner (those are compared on the simulator side only).
//!
//! Not here: installing anything into the host namespace (rules go into the LB namespace of
//! a [`Topology`]), synproxy (SYN cookies), NAT/MASQUERADE rules, IPv6 lists.

use std::fmt::Write as _;
use std::net::IpAddr;

use datapath::director::config::{DirectorConfig, ServiceKey};
use datapath::director::dest::Forward;
use datapath::director::scheduler::SchedulerKind;
use datapath::flows::Family;
use datapath::flows::FlowTable;
use datapath::packet::ip_proto;
use datapath::shield::ShieldConfig;
use datapath::shield::config::ContextConfig;
use serde::Serialize;

use super::topology::{LB_CLIENT_IFACE, Topology};

/// Name of the shield's nft table (family netdev).
pub const SHIELD_TABLE: &str = "lbsim_shield";
/// Name of the directors' nft table (family ip).
pub const DIRECTOR_TABLE: &str = "lbsim_director";

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
    /// `nft -f` input for the directors (empty: no directors).
    pub director_nft: String,
    /// Per-feature mechanisms.
    pub features: Vec<FeatureRow>,
    /// Directors whose backend choice the kernel reproduces (rr), by name.
    pub comparable_directors: Vec<String>,
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
            rules.shield_nft = shield_nft(shield, &mut rules.features);
        }
        if let Some(table) = flows {
            rules.flows_iptables = datapath::flows::compile::iptables(table, Family::V4);
            rules.features.push(row(
                "flows",
                "iptables-restore: mangle PREROUTING, one chain per flow, MARK",
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
        for text in [&self.shield_nft, &self.director_nft] {
            if !text.is_empty() {
                topology.exec(&lb, &["nft", "-f", "-"], Some(text))?;
            }
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

fn v4_elements(prefixes: impl Iterator<Item = ipnet::IpNet>) -> Vec<String> {
    prefixes
        .filter(|net| matches!(net.addr(), IpAddr::V4(_)))
        .map(|net| net.to_string())
        .collect()
}

fn set(out: &mut String, name: &str, elements: &[String]) {
    let _ = writeln!(
        out,
        "\tset {name} {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge"
    );
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
    }
    out.push_str("\t}\n");
}

/// One context: `allow_src` accepts (they are removed from the denylist), then the
/// instance's and the context's `deny` drop, then the context is done (`accept`), so that
/// later contexts and the default context do not see the packet.
fn context_rules(
    out_sets: &mut String,
    out_rules: &mut String,
    index: usize,
    context: &ContextConfig,
    instance_deny: &[String],
) {
    let allow = v4_elements(context.allow_src.iter().map(|p| p.0));
    let mut deny = instance_deny.to_vec();
    deny.extend(v4_elements(context.deny.iter().map(|p| p.0)));
    set(out_sets, &format!("allow_src_{index}"), &allow);
    set(out_sets, &format!("deny_{index}"), &deny);
    let selector = match context.dst {
        Some(dst) => format!("ip daddr {dst} "),
        None => String::new(),
    };
    let _ = writeln!(
        out_rules,
        "\t\t{selector}ip saddr @allow_src_{index} counter accept"
    );
    let _ = writeln!(
        out_rules,
        "\t\t{selector}ip saddr @deny_{index} counter drop"
    );
    if !selector.is_empty() {
        let _ = writeln!(out_rules, "\t\t{selector}counter accept");
    }
}

fn shield_nft(shield: &ShieldConfig, features: &mut Vec<FeatureRow>) -> String {
    let instance_deny = v4_elements(shield.deny.iter().map(|p| p.0));
    let (mut sets, mut rules) = (String::new(), String::new());
    let contexts = shield
        .context
        .iter()
        .filter(|c| c.vlan.is_none() && matches!(c.dst, Some(IpAddr::V4(_))));
    for (index, context) in contexts.enumerate() {
        context_rules(&mut sets, &mut rules, index, context, &instance_deny);
    }
    context_rules(
        &mut sets,
        &mut rules,
        usize::MAX,
        &shield.default,
        &instance_deny,
    );
    let mut out = format!("table netdev {SHIELD_TABLE}\ndelete table netdev {SHIELD_TABLE}\n");
    let _ = writeln!(out, "table netdev {SHIELD_TABLE} {{\n{sets}");
    let _ = writeln!(
        out,
        "\tchain ingress {{\n\t\ttype filter hook ingress device \"{LB_CLIENT_IFACE}\" priority -500; policy accept;\n{rules}\t}}\n}}"
    );
    features.push(row(
        "shield deny / allow_src (IPv4, per dst context)",
        "nft netdev ingress on the LB's client veth, interval sets",
        true,
    ));
    let skipped_contexts = shield
        .context
        .iter()
        .filter(|c| c.vlan.is_some() || !matches!(c.dst, Some(IpAddr::V4(_))))
        .count();
    if skipped_contexts > 0 {
        features.push(row(
            format!("shield: {skipped_contexts} VLAN/IPv6 context(s)"),
            "none",
            false,
        ));
    }
    for feature in [
        "shield invalid-packet checks",
        "shield protected TCP ports (sessions, SYN cookies, TTL, rates)",
        "shield unmatched drop / surge modes",
    ] {
        features.push(row(feature, "none (simulator only in this runner)", false));
    }
    out.replace(&format!("allow_src_{}", usize::MAX), "allow_src_default")
        .replace(&format!("deny_{}", usize::MAX), "deny_default")
}

fn service_match(key: ServiceKey) -> Option<String> {
    match key {
        ServiceKey::Fwmark(mark) => {
            Some(format!("meta mark {mark:#x} meta l4proto {{ tcp, udp }}"))
        }
        ServiceKey::Tuple {
            vip: IpAddr::V4(vip),
            proto,
            port,
        } => {
            let name = if proto == ip_proto::UDP { "udp" } else { "tcp" };
            Some(match port {
                0 => format!("ip daddr {vip} meta l4proto {name}"),
                port => format!("ip daddr {vip} {name} dport {port}"),
            })
        }
        ServiceKey::Tuple { .. } => None,
    }
}

fn director_nft(directors: &[DirectorConfig], rules: &mut KernelRules) -> anyhow::Result<String> {
    let mut lines = String::new();
    for config in directors {
        let spec = config
            .build()
            .map_err(|e| anyhow::anyhow!("[[director]] {}: {e}", config.name))?;
        let feature = format!(
            "director {} ({:?}, {})",
            spec.name, spec.scheduler, spec.key
        );
        let reals: Vec<_> = spec.reals.iter().filter(|r| r.weight > 0).collect();
        let (Some(matcher), false) = (service_match(spec.key), reals.is_empty()) else {
            rules
                .features
                .push(row(feature, "none (IPv6 VIP or no usable real)", false));
            continue;
        };
        if reals
            .iter()
            .any(|r| r.forward != Forward::Nat || !r.address.is_ipv4())
        {
            rules
                .features
                .push(row(feature, "none (dr/tun forwarding or IPv6 real)", false));
            continue;
        }
        // IPVS keeps real servers in a list it adds to at the head (`list_add_rcu`), and
        // rr starts from the head: the last real added is chosen first. numgen counts from
        // 0, so the map lists the reals in that (reverse configuration) order.
        let map: Vec<String> = reals
            .iter()
            .rev()
            .enumerate()
            .map(|(index, real)| {
                format!("{index} : {} . {}", real.address.ip(), real.address.port())
            })
            .collect();
        let _ = writeln!(
            lines,
            "\t\t{matcher} counter dnat ip to numgen inc mod {} map {{ {} }}",
            reals.len(),
            map.join(", ")
        );
        let exact = spec.scheduler == SchedulerKind::Rr && spec.persistence.is_none();
        if exact {
            rules.comparable_directors.push(spec.name.clone());
        }
        let mechanism = if exact {
            "nft nat prerouting: dnat to numgen inc mod N map (rr)"
        } else {
            "nft numgen rr stands in (scheduler/persistence has no kernel counterpart: verdict compared, backend not)"
        };
        rules.features.push(row(feature, mechanism, true));
    }
    let mut out = format!("table ip {DIRECTOR_TABLE}\ndelete table ip {DIRECTOR_TABLE}\n");
    let _ = writeln!(
        out,
        "table ip {DIRECTOR_TABLE} {{\n\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{lines}\t}}\n}}"
    );
    Ok(out)
}
