//! The flow table as the flowmgr compiler's `iptables-restore` / `ip6tables-restore`
//! output (mangle PREROUTING, one chain per flow, MARK), with replies of translated
//! connections accepted first. Installed with iptables-nft on the host backend and with
//! iptables-legacy in the guest (see `install`).
//!
//! Not here: installing them (see `install`).

use datapath::flows::{Family, FlowTable};

use super::Backend;

/// The flows' IPv4 and IPv6 restore inputs for a backend.
pub(super) fn flows_restore(table: &FlowTable, backend: Backend) -> (String, String) {
    let compiled = |family| {
        let text = accept_translated_replies(&datapath::flows::compile::iptables(table, family));
        match backend {
            Backend::Host => text,
            Backend::Guest => accept_ipvs_replies(&text),
        }
    };
    (compiled(Family::V4), compiled(Family::V6))
}

/// The guest's flows: IPVS un-NATs its replies in the forward hook and conntrack does not
/// mark them `DNAT`, so the first mangle PREROUTING rule accepts packets of IPVS
/// connections in the reply direction (`xt_ipvs`), as the appliance does not classify
/// director replies.
fn accept_ipvs_replies(text: &str) -> String {
    let Some(at) = text.find("\n-A PREROUTING ") else {
        return text.to_string();
    };
    let (head, tail) = text.split_at(at + 1);
    format!(
        "{head}# replies of IPVS connections: un-NATed by IPVS, not classified\n-A PREROUTING -m ipvs --ipvs --vdir REPLY -j ACCEPT\n{tail}"
    )
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

#[cfg(test)]
mod tests {
    use super::*;

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
