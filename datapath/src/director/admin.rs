//! Operator changes at run time, as `ipvsadm` makes them: re-weighting a real server
//! (`-e -w`, 0 = quiescent), deleting one (`-d`) and adding it back (`-a`), deleting a
//! virtual service (`-D`). Each first lets time pass to `now`.

use std::net::SocketAddr;

use super::dest::DestId;
use super::scheduler::DestChange;
use super::{Directors, HealthError};
use crate::verdict::TimeNs;

impl Directors {
    fn locate(&self, service: &str, real: SocketAddr) -> Result<(usize, DestId), HealthError> {
        let index = self
            .service_index(service)
            .ok_or_else(|| HealthError::UnknownService(service.into()))?;
        let dest = self.services[index]
            .dests
            .find(real)
            .ok_or_else(|| HealthError::UnknownServer(service.into(), real))?;
        Ok((index, dest))
    }

    /// Re-weight a real server at `now` (`ipvsadm -e -w`); 0 makes it quiescent.
    pub fn set_weight(
        &mut self,
        now: TimeNs,
        service: &str,
        real: SocketAddr,
        weight: i32,
    ) -> Result<(), HealthError> {
        if weight < 0 {
            return Err(HealthError::Weight(weight));
        }
        self.advance(now);
        let (index, dest) = self.locate(service, real)?;
        let svc = &mut self.services[index];
        let server = svc.dests.get_mut(dest);
        if weight != 0 {
            server.last_weight = weight;
        }
        server.weight = weight;
        if server.available {
            svc.scheduler
                .dest_changed(&svc.dests, DestChange::Updated(dest));
        }
        Ok(())
    }

    /// Take a real server out of its service at `now` (`ipvsadm -d`, what a failed health
    /// check does). Its connections continue unless `expire_nodest_conn` is set.
    pub fn set_down(
        &mut self,
        now: TimeNs,
        service: &str,
        real: SocketAddr,
    ) -> Result<(), HealthError> {
        self.advance(now);
        let (index, dest) = self.locate(service, real)?;
        let svc = &mut self.services[index];
        if let Some(position) = svc.dests.unlink(dest) {
            svc.scheduler
                .dest_changed(&svc.dests, DestChange::Removed(dest, position));
        }
        Ok(())
    }

    /// Delete a virtual service at `now` (`ipvsadm -D`): new connections no longer find it
    /// and its real servers leave it, so its connections' client packets are dropped (they
    /// and its templates stay in the table until they expire, as IPVS keeps them); with the
    /// last service of a family, IPVS stops seeing that family's packets at all.
    pub fn remove_service(&mut self, now: TimeNs, service: &str) -> Result<(), HealthError> {
        self.advance(now);
        let index = self
            .service_index(service)
            .ok_or_else(|| HealthError::UnknownService(service.into()))?;
        let key = self.services[index].spec.key;
        if self.by_key.get(&key) == Some(&index) {
            self.by_key.remove(&key);
        }
        let svc = &mut self.services[index];
        while let Some(&dest) = svc.dests.order.first() {
            svc.dests.unlink(dest);
        }
        self.update_hooks();
        Ok(())
    }

    /// Whether service `index` is still configured (not removed by
    /// [`Directors::remove_service`]).
    pub fn is_configured(&self, index: usize) -> bool {
        self.by_key.get(&self.services[index].spec.key) == Some(&index)
    }

    /// Put a real server back at `now` (`ipvsadm -a`: it is prepended to the list).
    pub fn set_up(
        &mut self,
        now: TimeNs,
        service: &str,
        real: SocketAddr,
    ) -> Result<(), HealthError> {
        self.advance(now);
        let (index, dest) = self.locate(service, real)?;
        let svc = &mut self.services[index];
        if !svc.dests.order.contains(&dest) {
            svc.dests.relink(dest);
            svc.scheduler
                .dest_changed(&svc.dests, DestChange::Added(dest));
        }
        Ok(())
    }
}
