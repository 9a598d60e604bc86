//! Persistence templates (`ip_vs_sched_persist`, `ip_vs_check_template`).
//!
//! A persistent service first looks for a template keyed on the client address masked by
//! the persistence netmask: `<proto, net, vaddr, vport>` for a service on a port,
//! `<proto, net, vaddr, 0>` for a port-zero service or FTP (port 21), and
//! `<IPPROTO_IP, net, fwmark, 0>` for a fwmark service — so every port of a mark shares
//! one template. A template whose server is gone (or quiescent, with
//! `expire_quiescent_template`) is invalidated: unhashed, left to expire, and a new one is
//! scheduled. Each new connection through a template restarts the template's timer.

use std::net::IpAddr;

use super::Directors;
use super::config::ServiceKey;
use super::connection::{Template, TemplateKey, TemplateTarget};
use super::dest::{BindKind, DestId};
use super::scheduler::SchedulePacket;
use crate::packet::flow::FlowKey;
use crate::verdict::{DropReason, TimeNs};

const FTP_PORT: u16 = 21;

/// The client address masked to `prefix` bits.
pub(super) fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & bits).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & bits).into())
        }
    }
}

impl Directors {
    fn template_key(&self, service: usize, flow: &FlowKey, prefix: u8) -> TemplateKey {
        let client_network = mask(flow.source.ip(), prefix);
        let (vip, vport) = (flow.destination.ip(), flow.destination.port());
        let (proto, target) = match self.services[service].spec.key {
            ServiceKey::Tuple { port, .. } if port == vport && port != FTP_PORT => {
                (flow.proto, TemplateTarget::Virtual(vip, vport))
            }
            ServiceKey::Tuple { .. } => (flow.proto, TemplateTarget::Virtual(vip, 0)),
            ServiceKey::Fwmark(mark) => (0, TemplateTarget::Fwmark(mark)),
        };
        TemplateKey {
            proto,
            client_network,
            target,
        }
    }

    /// `ip_vs_check_template`: false (and the template unhashed) when its server is gone.
    fn check_template(&mut self, slot: u32) -> bool {
        let Some(template) = self.table.templates[slot as usize].as_ref() else {
            return false;
        };
        let server = self.services[template.service].dests.get(template.dest);
        let quiescent = self.options.expire_quiescent_template && server.weight == 0;
        if !server.available || quiescent {
            self.table.unhash_template(slot);
            return false;
        }
        true
    }

    /// Pick the server through the client's template, creating the template if needed.
    pub(super) fn schedule_persistent(
        &mut self,
        now: TimeNs,
        service: usize,
        packet: &SchedulePacket,
        flow: &FlowKey,
    ) -> Result<(DestId, Option<u32>), DropReason> {
        let persistence = self.services[service]
            .spec
            .persistence
            .expect("persistent service");
        let key = self.template_key(service, flow, persistence.prefix);
        if let Some(&slot) = self.table.by_template_key.get(&key)
            && self.check_template(slot)
        {
            let dest = self.table.templates[slot as usize].as_ref().map(|t| t.dest);
            return Ok((dest.expect("live template"), Some(slot)));
        }
        if !self.table.reserve_template() {
            return Err(DropReason::ConnTableFull);
        }
        let svc = &mut self.services[service];
        let dest = svc
            .scheduler
            .schedule(now, &svc.dests, packet)
            .ok_or(DropReason::NoDestination)?;
        svc.dests.get_mut(dest).bind(BindKind::Template);
        let slot = self.table.insert_template(Template {
            key,
            service,
            dest,
            timeout: persistence.timeout,
            expires: now + persistence.timeout,
            controlled: 0,
            hashed: true,
        });
        Ok((dest, Some(slot)))
    }
}
