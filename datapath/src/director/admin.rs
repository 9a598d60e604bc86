//! Operator changes at run time, as `ipvsadm` makes them: re-weighting a real server
//! (`-e -w`, 0 = quiescent), deleting one (`-d`) and adding it back (`-a`), deleting a
//! virtual service (`-D`), changing a service's scheduler and persistence (`-E`), adding a
//! service (`-A`, with its real servers), also one deleted before. Each first lets time
//! pass to `now`.

use std::net::SocketAddr;

use super::config::{Persistence, ServiceSpec};
use super::dest::DestId;
use super::scheduler::{DestChange, Scheduler, SchedulerFlags, SchedulerKind};
use super::{Directors, HealthError, Service};
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

    /// Change a service's scheduler, its flags and its persistence at `now` (`ipvsadm -E`,
    /// `ip_vs_edit_service`). Another scheduler starts afresh over the current list
    /// (`init_service` with every server present); the same one keeps its state (lblc's
    /// cache, rr's cursor, wrr's current weight) and only takes the new flags. Persistence
    /// (on, off, timeout, netmask) applies from the next new connection; templates stay.
    pub fn edit_service(
        &mut self,
        now: TimeNs,
        service: &str,
        scheduler: SchedulerKind,
        flags: SchedulerFlags,
        persistence: Option<Persistence>,
    ) -> Result<(), HealthError> {
        self.advance(now);
        let index = self
            .service_index(service)
            .ok_or_else(|| HealthError::UnknownService(service.into()))?;
        let seed = self.options.hash_seed;
        let svc = &mut self.services[index];
        if svc.scheduler.kind() != scheduler {
            let size = svc.spec.maglev_table_size;
            svc.scheduler = Scheduler::new_keyed(scheduler, flags, size, &svc.dests, seed);
        }
        svc.scheduler.set_flags(flags);
        svc.spec.scheduler = scheduler;
        svc.spec.flags = flags;
        svc.spec.persistence = persistence;
        Ok(())
    }

    /// Add a virtual service at `now` (`ipvsadm -A`, then `-a` for each real server in
    /// order). A service deleted before ([`Directors::remove_service`]) under the same name
    /// comes back in its old place with a fresh scheduler and counters; its real servers
    /// are the same ones (IPVS takes them back from its trash), so their connections and
    /// templates still in the table count for them again. Their traffic counters restart
    /// at zero: `__ip_vs_update_dest` zeroes them when the server's old service is not the
    /// new one (`old_svc != svc`, a pointer comparison: when the new service struct
    /// happens to reuse the old one's memory, Linux keeps them; the guest oracle saw both).
    pub fn add_service(&mut self, now: TimeNs, spec: ServiceSpec) -> Result<(), HealthError> {
        self.advance(now);
        let name = spec.name.clone();
        let key = spec.key;
        if self.by_key.contains_key(&key) {
            return Err(HealthError::ServiceExists(name));
        }
        let mut fresh = Service::new(spec, self.options.hash_seed);
        let index = match self.service_index(&name) {
            Some(index) if self.is_configured(index) => {
                return Err(HealthError::ServiceExists(name));
            }
            Some(index) => {
                let old = &self.services[index].dests.servers;
                let same = old.len() == fresh.dests.servers.len()
                    && old
                        .iter()
                        .zip(&fresh.dests.servers)
                        .all(|(a, b)| a.address == b.address);
                if !same || self.services[index].spec.key != key {
                    return Err(HealthError::OtherReals(name));
                }
                for (server, old) in fresh.dests.servers.iter_mut().zip(old) {
                    server.active = old.active;
                    server.inactive = old.inactive;
                    server.persistent = old.persistent;
                    // `__ip_vs_update_dest`: the overload flag goes only with the threshold
                    // removed or raised (seed 3048 of the guest oracle).
                    server.overloaded = old.overloaded
                        && server.upper_threshold != 0
                        && server.upper_threshold <= old.upper_threshold;
                }
                self.services[index] = fresh;
                index
            }
            None => {
                self.services.push(fresh);
                self.services.len() - 1
            }
        };
        self.by_key.insert(key, index);
        self.update_hooks();
        Ok(())
    }
}
