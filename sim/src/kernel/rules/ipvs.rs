//! Directors on the guest backend: real IPVS services, configured with the `ipvsadm`
//! commands an operator types (`crate::kernel::guest::ipvs::service_commands`: the service
//! first, then its real servers in the appliance's order), every scheduler compared
//! packet by packet. The LB sees a service's packets as local, as on an appliance: a
//! tuple service's VIP is a `local` route on `lo`; a fwmark service's marked packets
//! (marked by the flows' mangle rules) are looked up in a table whose default route is
//! `local` (`ip rule add fwmark M lookup 101`).
//!
//! Not here: the host backend's nft stand-ins (see `director`), booting the guest (see
//! `crate::kernel::guest`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use datapath::director::config::{DirectorConfig, ServiceKey, ServiceSpec};
use serde::{Deserialize, Serialize};

use super::director::record_director;
use super::{BackendMatch, KernelRules, row};
use crate::kernel::guest::ipvs;
use crate::kernel::topology::Topology;

/// Routing table of fwmark services' `local` default routes.
pub const FWMARK_LOCAL_TABLE: u32 = 101;

/// What the guest needs for the directors: modules, local addresses, marks, commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsSetup {
    /// `ip_vs` and the schedulers' modules.
    pub modules: Vec<String>,
    /// Tuple services' VIPs (a `local` route each).
    pub local_vips: BTreeSet<IpAddr>,
    /// Fwmark services' marks, with whether they are IPv6 services.
    pub fwmarks: BTreeSet<(u32, bool)>,
    /// The `ipvsadm` commands, in order.
    pub commands: Vec<String>,
}

/// The mechanism text of an IPVS director (what the report shows).
fn mechanism(spec: &ServiceSpec, commands: &[String]) -> String {
    let service = commands
        .first()
        .map_or("", |c| c.trim_start_matches("ipvsadm "));
    format!(
        "IPVS (guest Linux 6.1, ipvsadm {service}; {} real(s) added in order)",
        spec.reals.len()
    )
}

/// Compile the directors as IPVS services (every scheduler, flag, persistence, threshold,
/// forwarding method and weight as configured: weight-0 reals are added, quiescent).
pub(super) fn ipvs_directors(
    directors: &[DirectorConfig],
    rules: &mut KernelRules,
) -> anyhow::Result<()> {
    let mut specs = Vec::new();
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
        let mut commands = vec![ipvs::add_service_command(&spec)];
        commands.extend(ipvs::add_real_commands(&spec));
        let mechanism = mechanism(&spec, &commands);
        match spec.key {
            ServiceKey::Tuple { vip, .. } => {
                rules.ipvs.local_vips.insert(vip);
            }
            ServiceKey::Fwmark(mark) => {
                rules
                    .ipvs
                    .fwmarks
                    .insert((mark, ipvs::service_is_ipv6(&spec)));
            }
        }
        rules.ipvs.commands.extend(commands);
        let reals: Vec<_> = spec.reals.iter().collect();
        record_director(rules, &spec, &reals, &mechanism, BackendMatch::Exact);
        rules.features.push(row(feature, mechanism, true));
        specs.push(spec);
    }
    rules.ipvs.modules = ipvs::modules(&specs);
    Ok(())
}

impl IpvsSetup {
    /// Make the services' packets local to the LB, then run the `ipvsadm` commands in its
    /// namespace (real servers are routed to the server side before: IPVS refuses a real
    /// whose address is not unicast in the LB's routing table).
    pub fn install(&self, topology: &Topology) -> anyhow::Result<()> {
        let lb = topology.lb_ns();
        for vip in &self.local_vips {
            let family = if vip.is_ipv6() { "-6" } else { "-4" };
            let vip = vip.to_string();
            let args = ["ip", family, "route", "add", "local", &vip, "dev", "lo"];
            topology.exec(&lb, &args, None)?;
        }
        let table = FWMARK_LOCAL_TABLE.to_string();
        for (ipv6, everything) in [(false, "0.0.0.0/0"), (true, "::/0")] {
            let marks: Vec<u32> = self
                .fwmarks
                .iter()
                .filter(|(_, v6)| *v6 == ipv6)
                .map(|(mark, _)| *mark)
                .collect();
            if marks.is_empty() {
                continue;
            }
            let family = if ipv6 { "-6" } else { "-4" };
            let route = [
                "ip", family, "route", "add", "local", everything, "dev", "lo",
            ];
            let mut route = route.to_vec();
            route.extend(["table", &table]);
            topology.exec(&lb, &route, None)?;
            for mark in marks {
                let mark = mark.to_string();
                let rule = [
                    "ip", family, "rule", "add", "fwmark", &mark, "lookup", &table, "pref", "50",
                ];
                topology.exec(&lb, &rule, None)?;
            }
        }
        for command in &self.commands {
            topology.exec(&lb, &["sh", "-c", command], None)?;
        }
        Ok(())
    }
}
