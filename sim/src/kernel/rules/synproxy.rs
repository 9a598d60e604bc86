//! The shield's SYN cookies: nft synproxy for IPv4 protected ports, the ip6tables
//! `SYNPROXY` target for IPv6 ones (host backend: the guest's 6.1 kernel has no
//! `nft_synproxy` module).
//!
//! Not here: the shield's lists (see `shield`).

use std::fmt::Write as _;
use std::net::IpAddr;

use std::collections::BTreeSet;

use datapath::shield::ShieldConfig;
use datapath::shield::modes::ModeSetting;

use super::SYNPROXY_TABLE;

/// nft synproxy for the shield's protected TCP ports (per context destination): SYNs are
/// not tracked (raw prerouting), synproxy answers them with a cookie SYN-ACK and opens the
/// connection to the server for a valid cookie ACK, invalid ACKs are dropped
/// (`nf_conntrack_tcp_loose = 0` makes a cookie ACK `ct state invalid`).
pub(super) fn synproxy_nft(shield: &ShieldConfig) -> Option<(String, Vec<IpAddr>)> {
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
pub(super) fn synproxy_ip6tables(shield: &ShieldConfig) -> Option<(String, Vec<IpAddr>)> {
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

/// Destinations with protected TCP ports whose effective `syn_cookies` is `auto`.
pub(super) fn cookie_auto_destinations(shield: &ShieldConfig) -> BTreeSet<IpAddr> {
    let instance = shield.main_instance();
    shield
        .context
        .iter()
        .filter(|c| !c.protected_tcp_ports.is_empty())
        .filter(|c| c.syn_cookies.or(instance.syn_cookies).unwrap_or_default() == ModeSetting::Auto)
        .filter_map(|c| c.dst)
        .collect()
}
