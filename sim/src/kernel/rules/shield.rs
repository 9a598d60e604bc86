//! The shield's deny / allow lists as an nft table in the netdev ingress hook of the LB's
//! client-side veth: `dst + vlan` contexts first (matched with `vlan id N`), then `dst`
//! contexts, then the default; `ip` and, when the lists have IPv6 entries or contexts,
//! `ip6` interval sets. The same text on both backends (nf_tables netdev is in the guest
//! kernel too).
//!
//! Not here: the shield's SYN cookies (see `synproxy`).

use std::fmt::Write as _;

use datapath::shield::ShieldConfig;
use datapath::shield::config::ContextConfig;

use super::{FeatureRow, IpFamily, SHIELD_TABLE, row};
use crate::kernel::topology::LB_CLIENT_IFACE;

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

pub(super) fn shield_nft(shield: &ShieldConfig, features: &mut Vec<FeatureRow>) -> String {
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
