//! The egress route of a diff's packets, when the kernel runner installed the appliance's
//! routing tables (see `rules::routes::runner_routes`): the simulator's table route against
//! the one the kernel's forwarded frame names by its next hop's MAC, tallied per table.

use super::{DiffReport, KernelRules, Outcome, SimPacket};
use crate::kernel::inject::KernelPacket;

/// With the appliance's routing tables installed (see `rules::routes::runner_routes`), a
/// packet both sides forwarded left by a route on each side: the simulator's table route
/// (`None`: the main table) and the one the kernel's frame names by its next hop's MAC
/// (`None`: the runner's own routes, standing for main).
pub(super) fn egress_routes(
    sim: &SimPacket,
    kernel: &KernelPacket,
    rules: &KernelRules,
) -> Option<RoutePair> {
    if rules.routes.next_hops.is_empty() {
        return None;
    }
    let (Outcome::Forward { .. }, Outcome::Forward { .. }) = (&sim.outcome, &kernel.outcome) else {
        return None;
    };
    let theirs = kernel
        .next_hop_mac
        .and_then(|mac| rules.routes.next_hops.get(&mac).copied());
    Some((sim.route, theirs))
}

pub(super) type RoutePair = (
    Option<datapath::ip::route::RouteRef>,
    Option<datapath::ip::route::RouteRef>,
);

/// Count a packet whose egress route was compared under its table (both tables when the
/// sides differ).
pub(super) fn tally_routes(report: &mut DiffReport, routes: Option<RoutePair>) {
    let Some((ours, theirs)) = routes else {
        return;
    };
    for table in [ours, theirs].into_iter().flatten().map(|r| r.table) {
        let entry = report
            .by_feature
            .entry(format!("routing table {table} (egress route)"))
            .or_default();
        entry.compared += 1;
        entry.agreed += u64::from(ours == theirs);
        if ours == theirs {
            break;
        }
    }
}

/// ` by table T route #i` for a disagreement's text (empty when routes are not compared).
pub(super) fn route_text(route: Option<Option<datapath::ip::route::RouteRef>>) -> String {
    match route {
        Some(Some(r)) => format!(" by table {} route #{}", r.table, r.route),
        Some(None) => " by no table route".to_string(),
        None => String::new(),
    }
}
