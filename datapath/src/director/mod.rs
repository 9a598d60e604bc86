//! LVS/IPVS director: virtual services, schedulers, persistence, connection table and
//! NAT/DR/TUN forwarding, reproducing the Linux IPVS code (`net/netfilter/ipvs/`).
//!
//! - [`config`] — the `[[director]]` appliance-file table and its validation.
//! - [`dest`] — real servers, connection counting, the kernel list order.
//! - [`scheduler`] — rr wrr lc wlc sed nq sh dh mh lblc lblcr fo ovf.
//! - [`connection`] — the bounded connection / template table and the TCP state machine.
//! - [`hash`] — `hash_32` and `hsiphash`, bit-exact.
//! - [`timers`] — the connection table's expiry timers (a heap in the set's order).
//! - [`listing`] — `ipvsadm -L -n [--stats|--rate]`.
//! - [`ftp`] — the FTP helper (`ip_vs_ftp`): PASV/EPSV replies rewritten, data
//!   connections tied to the control connection's real server, sequence adjustment.
//!
//! [`Directors::process`] is the datapath entry: a pure function of (tables, state, `now`,
//! packet). It returns `Continue` for packets that are not for a virtual service (or that
//! IPVS hands to the local stack: a TCP non-SYN with no connection) and `Break(Decision)`
//! otherwise; the [`Decision`] carries the verdict, the real server and the rewritten flow.
//! Expiry of connections and templates, lblc garbage collection and the rate estimators run
//! on the virtual time passed in; nothing reads a clock. Health changes
//! ([`Directors::set_weight`], [`Directors::set_down`], [`Directors::set_up`]) also take
//! `now`. This module does not parse packets and does not route.

mod admin;
pub mod config;
pub mod connection;
pub mod dest;
mod forward;
pub mod ftp;
pub mod hash;
mod lifecycle;
pub mod listing;
mod persistence;
pub mod scheduler;
pub mod timers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;

use self::config::{ConfigError, DirectorConfig, ServiceKey, ServiceSpec};
use self::connection::{
    ClientKey, Connection, ConnectionTable, Direction, ProtocolState, RealKey, TcpState,
    TimerEntry, UDP_TIMEOUT, next_tcp_state,
};
use self::dest::{BindKind, DestId, DestStats, Dests, Forward, RealServer};
use self::listing::RateEstimator;
use self::scheduler::{SchedulePacket, Scheduler};
use crate::hash::fast::FastBuild;
use crate::packet::flow::FlowKey;
use crate::packet::{PacketMeta, ip_proto, tcp_flags};
use crate::verdict::{DropReason, NS_PER_SEC, TimeNs, Verdict};

pub use self::connection::{CONNECTION_TABLE_CAPACITY, TEMPLATE_TABLE_CAPACITY};

/// Rate-estimator intervals replayed at most when time jumps forward: each halves-ish the
/// averages (×3/4), so 256 take any 64-bit value to zero.
pub const MAX_ESTIMATOR_CATCH_UP: u32 = 256;

/// Timeout a new connection has before its first state transition (`ip_vs_conn_new`).
const INITIAL_TIMEOUT: TimeNs = 3 * NS_PER_SEC;

/// Global IPVS settings (sysctls) and table sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectorOptions {
    /// `net.ipv4.vs.expire_nodest_conn`: drop packets of (and expire) connections whose
    /// server was removed. Kernel default off.
    pub expire_nodest_conn: bool,
    /// `net.ipv4.vs.expire_quiescent_template`: a template whose server has weight 0 is
    /// not used for new connections. Kernel default off.
    pub expire_quiescent_template: bool,
    /// Connection table capacity.
    pub connection_capacity: usize,
    /// Template table capacity.
    pub template_capacity: usize,
    /// Frames start with an Ethernet header (DR rewrites the destination MAC).
    pub ethernet: bool,
    /// Seed of the keyed hash of the connection and template indexes (the run's seed;
    /// [`crate::hash::keyed::DEFAULT_SEED`] by default). Never changes a result.
    pub hash_seed: u64,
}

impl Default for DirectorOptions {
    fn default() -> Self {
        Self {
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            connection_capacity: CONNECTION_TABLE_CAPACITY,
            template_capacity: TEMPLATE_TABLE_CAPACITY,
            ethernet: true,
            hash_seed: crate::hash::keyed::DEFAULT_SEED,
        }
    }
}

/// A virtual service at run time.
#[derive(Clone, Debug)]
pub struct Service {
    /// The validated configuration.
    pub spec: ServiceSpec,
    /// Real servers.
    pub dests: Dests,
    /// Scheduler state.
    pub scheduler: Scheduler,
    /// Service counters.
    pub stats: DestStats,
    /// Rate estimators: index 0 the service, then one per server id.
    pub rates: Vec<RateEstimator>,
}

impl Service {
    fn new(spec: ServiceSpec, hash_seed: u64) -> Self {
        let mut dests = Dests::default();
        for real in &spec.reals {
            let mut server = RealServer::new(real.address, real.weight, real.forward);
            server.upper_threshold = real.upper_threshold;
            server.lower_threshold = real.lower_threshold;
            if let Some(mac) = real.mac {
                server.mac = mac;
            }
            dests.add(server);
        }
        let scheduler = Scheduler::configured_keyed(
            spec.scheduler,
            spec.flags,
            spec.maglev_table_size,
            &dests,
            hash_seed,
        );
        let rates = vec![RateEstimator::default(); dests.servers.len() + 1];
        Self {
            spec,
            dests,
            scheduler,
            stats: DestStats::default(),
            rates,
        }
    }

    /// Whether the service takes packets of this family (IPv6 when `ipv6`). A fwmark service
    /// is of its real servers' family, as IPVS looks fwmark services up per family
    /// (`__ip_vs_svc_fwm_find` compares `svc->af`): a packet of the other family carrying
    /// the mark is not the service's. Services without real servers, or with both families,
    /// take both.
    pub fn serves_family(&self, ipv6: bool) -> bool {
        let mut families = self.spec.reals.iter().map(|r| r.address.is_ipv6());
        match families.next() {
            Some(first) if families.all(|f| f == first) => first == ipv6,
            _ => true,
        }
    }

    /// The service's virtual port (0 for fwmark and port-zero services).
    pub fn port(&self) -> u16 {
        match self.spec.key {
            ServiceKey::Tuple { port, .. } => port,
            ServiceKey::Fwmark(_) => 0,
        }
    }
}

/// What the director decided about a packet it handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// Index of the virtual service ([`Directors::service`]).
    pub service: usize,
    /// The real server, when one was chosen or the packet belongs to a connection.
    pub backend: Option<SocketAddr>,
    /// The flow as it leaves (NAT: rewritten; DR/TUN: the inner flow, unchanged).
    pub rewritten: Option<FlowKey>,
    /// Client → server or server → client.
    pub direction: Direction,
    /// This packet created the connection.
    pub new_connection: bool,
}

/// Director-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirectorCounters {
    /// Packets forwarded.
    pub forwarded: u64,
    /// Packets dropped: no usable real server.
    pub no_destination: u64,
    /// Packets dropped: connection or template table full.
    pub table_full: u64,
    /// Packets to a virtual service with no connection that IPVS leaves to the local
    /// stack (TCP without SYN).
    pub not_scheduled: u64,
    /// Packets dropped because their connection's server left the service (`ipvsadm -d`).
    pub nodest_dropped: u64,
    /// Packets that could not be rewritten.
    pub rewrite_failed: u64,
}

/// Why a health operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// No such director.
    #[error("no director named {0:?}")]
    UnknownService(String),
    /// No such real server in the director.
    #[error("director {0:?} has no real server {1}")]
    UnknownServer(String, SocketAddr),
    /// Negative weight.
    #[error("weight {0} is negative")]
    Weight(i32),
    /// `ipvsadm -A` of a service that exists.
    #[error("director {0:?} already exists")]
    ServiceExists(String),
    /// A deleted service added back with other real servers than it had.
    #[error("director {0:?} comes back with other real servers than it had (not modelled)")]
    OtherReals(String),
}

/// All virtual services of an appliance and their shared connection table.
#[derive(Clone, Debug)]
pub struct Directors {
    services: Vec<Service>,
    /// Services by key: keys come from the configuration (not from packets), lookups come
    /// with every new connection and no result depends on the map's order (only `any` runs
    /// over it), so it is hashed with the cheap unkeyed [`FastBuild`].
    by_key: HashMap<ServiceKey, usize, FastBuild>,
    table: ConnectionTable,
    options: DirectorOptions,
    next_estimate: TimeNs,
    /// Whether IPVS's netfilter hooks are registered for IPv4, IPv6: while a service of
    /// the family exists (Linux 6.1 registers them per family with the first service and
    /// unregisters them with the last, `ip_vs_register_hooks`).
    hooked: [bool; 2],
    /// The FTP helper (`ip_vs_ftp`), when loaded.
    ftp: Option<ftp::FtpHelper>,
    /// Counters.
    pub counters: DirectorCounters,
}

impl Directors {
    /// Validate a `[[director]]` array and build the run-time state.
    pub fn build(
        configs: &[DirectorConfig],
        options: DirectorOptions,
    ) -> Result<Self, ConfigError> {
        Ok(Self::from_specs(config::build_all(configs)?, options))
    }

    /// Build from already validated services.
    pub fn from_specs(specs: Vec<ServiceSpec>, options: DirectorOptions) -> Self {
        let services: Vec<Service> = specs
            .into_iter()
            .map(|spec| Service::new(spec, options.hash_seed))
            .collect();
        let by_key = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.spec.key, i))
            .collect();
        let mut directors = Self {
            services,
            by_key,
            hooked: [false; 2],
            table: ConnectionTable::new(
                options.connection_capacity,
                options.template_capacity,
                options.hash_seed,
            ),
            options,
            next_estimate: listing::ESTIMATOR_INTERVAL,
            ftp: None,
            counters: DirectorCounters::default(),
        };
        directors.update_hooks();
        directors
    }

    /// Recompute [`Directors::hooked`] from the configured services (a tuple service is of
    /// its virtual address's family, a fwmark service of its real servers').
    fn update_hooks(&mut self) {
        self.hooked = [false, true].map(|ipv6| {
            self.by_key.iter().any(|(key, &index)| match key {
                ServiceKey::Tuple { vip, .. } => vip.is_ipv6() == ipv6,
                ServiceKey::Fwmark(_) => self.services[index].serves_family(ipv6),
            })
        });
    }

    /// The flow of a packet IPVS sees: valid, with a 5-tuple, of a family it is hooked for.
    fn hooked_flow(&self, meta: &PacketMeta) -> Option<FlowKey> {
        Self::flow_of(meta).filter(|flow| self.hooked[usize::from(flow.source.is_ipv6())])
    }

    /// Services in configuration order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// A service by index.
    pub fn service(&self, index: usize) -> &Service {
        &self.services[index]
    }

    /// A service index by name.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.spec.name == name)
    }

    /// The connection table (read-only).
    pub fn table(&self) -> &ConnectionTable {
        &self.table
    }

    /// QA: make the connection or template table refuse new entries as if at capacity
    /// (drop new, `DropReason::ConnTableFull`, counted in `table_full` and the table's
    /// overflow counter), or stop doing so.
    pub fn report_table_full(&mut self, table: connection::TableKind, full: bool) {
        self.table.report_full(table, full);
    }

    /// QA: make every lblc/lblcr cache refuse new entries as if at capacity (the connection
    /// is still scheduled; the destination is not cached; `overflows` counts it).
    pub fn report_locality_caches_full(&mut self, full: bool) {
        for service in &mut self.services {
            if let Some(cache) = service.scheduler.locality_cache_mut() {
                cache.report_full = full;
            }
        }
    }

    /// Entries not stored because an lblc/lblcr cache was full, summed over services.
    pub fn locality_cache_overflows(&self) -> u64 {
        self.services
            .iter()
            .filter_map(|s| s.scheduler.locality_cache())
            .map(|cache| cache.overflows)
            .sum()
    }

    /// Entries in lblc/lblcr caches, summed over services.
    pub fn locality_cache_entries(&self) -> usize {
        self.services
            .iter()
            .filter_map(|s| s.scheduler.locality_cache())
            .map(|cache| cache.entries.len())
            .sum()
    }

    /// The options in force.
    pub fn options(&self) -> &DirectorOptions {
        &self.options
    }

    /// `ip_vs_service_find`: fwmark first, then `proto VIP:port`, then (TCP to port 20 or
    /// ≥ 1024) the VIP's FTP service on port 21, then port zero.
    pub fn find_service(
        &self,
        proto: u8,
        destination: SocketAddr,
        fwmark: Option<u32>,
    ) -> Option<usize> {
        if let Some(mark) = fwmark.filter(|&m| m != 0)
            && let Some(&index) = self.by_key.get(&ServiceKey::Fwmark(mark))
            && self.services[index].serves_family(destination.is_ipv6())
        {
            return Some(index);
        }
        let tuple = |port| ServiceKey::Tuple {
            proto,
            vip: destination.ip(),
            port,
        };
        // A TCP packet to port 20 or an unprivileged port (>= 1024,
        // `ip_unprivileged_port_start`) of a VIP with an FTP service on port 21 may be an
        // FTP data connection: that service takes it before a port-zero service.
        let port = destination.port();
        let ftp_data = proto == ip_proto::TCP && (port == ftp::FTP_DATA_PORT || port >= 1024);
        self.by_key
            .get(&tuple(port))
            .or_else(|| {
                ftp_data
                    .then(|| self.by_key.get(&tuple(ftp::FTP_CONTROL_PORT)))
                    .flatten()
            })
            .or_else(|| self.by_key.get(&tuple(0)))
            .copied()
    }

    /// The flow of a packet the director can handle (valid, with a 5-tuple).
    fn flow_of(meta: &PacketMeta) -> Option<FlowKey> {
        if meta.invalid.is_some() {
            return None;
        }
        FlowKey::from_meta(meta)
    }

    /// Handle a packet only if it is a reply of one of the director's connections (real
    /// server → client): un-NAT it in place and return the decision; anything else is
    /// `Continue(())` and untouched. Timers are advanced to `now` either way. The pipeline
    /// calls this before the shield, so that the shield sees replies as the client will
    /// (from the virtual address), and later [`Directors::process_input`].
    pub fn process_reply(
        &mut self,
        now: TimeNs,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
    ) -> ControlFlow<Decision, ()> {
        self.advance(now);
        let Some(flow) = self.hooked_flow(meta) else {
            return ControlFlow::Continue(());
        };
        let key = RealKey {
            proto: flow.proto,
            real: flow.source,
            client: flow.destination,
        };
        match self.table.by_real.get(&key) {
            Some(&slot) => ControlFlow::Break(self.reply(now, slot, frame, meta, &flow)),
            None => ControlFlow::Continue(()),
        }
    }

    /// Handle one packet. `fwmark` is the packet's firewall mark (set by flows).
    ///
    /// `Continue(())`: not for the director. `Break(decision)`: decided; a forwarded frame
    /// has been rewritten in place (TUN makes it longer) — `meta` then describes the
    /// original frame, `decision.rewritten` the new flow. The same as
    /// [`Directors::process_reply`] followed by [`Directors::process_input`].
    pub fn process(
        &mut self,
        now: TimeNs,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
        fwmark: Option<u32>,
    ) -> ControlFlow<Decision, ()> {
        self.process_reply(now, frame, meta)?;
        self.process_input(now, frame, meta, fwmark)
    }

    /// The client → server half of [`Directors::process`]: packets of existing connections,
    /// then new connections to a virtual service. For callers that already ran
    /// [`Directors::process_reply`] on this packet at the same `now` (timers are not
    /// advanced again, replies not looked up twice).
    pub fn process_input(
        &mut self,
        now: TimeNs,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
        fwmark: Option<u32>,
    ) -> ControlFlow<Decision, ()> {
        let Some(flow) = self.hooked_flow(meta) else {
            return ControlFlow::Continue(());
        };
        let client_key = ClientKey {
            proto: flow.proto,
            client: flow.source,
            virtual_address: flow.destination,
        };
        let mut reused = None;
        let found = match self.table.by_client.get(&client_key) {
            Some(&slot) => Some(slot),
            None => self.ftp_no_client_port(&client_key),
        };
        if let Some(slot) = found {
            match self.existing_input(now, slot, frame, meta, &flow) {
                Some(decision) => return ControlFlow::Break(decision),
                None => reused = Some(slot),
            }
        }
        let result = self.schedule_input(now, frame, meta, fwmark, &flow);
        // `ip_vs_conn_expire_now` only fires the old connection's timer: the scheduler has
        // just seen it still counted on its real server, and it goes before the next packet.
        if let Some(slot) = reused {
            self.expire_connection(slot);
        }
        result
    }

    /// A packet no connection claims: a new connection if it is for a virtual service.
    fn schedule_input(
        &mut self,
        now: TimeNs,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
        fwmark: Option<u32>,
        flow: &FlowKey,
    ) -> ControlFlow<Decision, ()> {
        let flow = *flow;
        let Some(service) = self.find_service(flow.proto, flow.destination, fwmark) else {
            return ControlFlow::Continue(());
        };
        let syn = meta.tcp_flags & (tcp_flags::SYN | tcp_flags::RST) == tcp_flags::SYN;
        if flow.proto == ip_proto::TCP && !syn {
            self.counters.not_scheduled += 1;
            return ControlFlow::Continue(());
        }
        ControlFlow::Break(self.new_connection(now, service, frame, meta, &flow))
    }

    fn decision(&mut self, verdict: Verdict, service: usize, direction: Direction) -> Decision {
        match verdict {
            Verdict::Drop(DropReason::NoDestination) => self.counters.no_destination += 1,
            Verdict::Drop(DropReason::ConnTableFull) => self.counters.table_full += 1,
            Verdict::Forward => self.counters.forwarded += 1,
            _ => {}
        }
        Decision {
            verdict,
            service,
            backend: None,
            rewritten: None,
            direction,
            new_connection: false,
        }
    }

    fn existing_input(
        &mut self,
        now: TimeNs,
        slot: u32,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
        flow: &FlowKey,
    ) -> Option<Decision> {
        let connection = self.table.connections[slot as usize].as_ref()?;
        let (service, dest) = (connection.service, connection.dest);
        let reusable = matches!(
            connection.state,
            ProtocolState::Tcp(TcpState::TimeWait | TcpState::Close)
        );
        if meta.tcp_flags & tcp_flags::SYN != 0 && connection.template.is_none() && reusable {
            // `ip_vs_in` (conn_reuse_mode 1, `is_new_conn_expected`): a SYN on a TIME_WAIT /
            // CLOSE connection schedules a new one; the caller expires this one afterwards.
            return None;
        }
        if !self.services[service].dests.get(dest).available {
            // `ip_vs_in` (Linux 6.1): a packet of a connection whose real server left the
            // service (`ipvsadm -d`, `-D`) is dropped, uncounted, its state unchanged; with
            // `expire_nodest_conn` the connection goes too.
            if self.options.expire_nodest_conn {
                self.expire_connection(slot);
            }
            self.counters.nodest_dropped += 1;
            return Some(self.decision(
                Verdict::Drop(DropReason::NoDestination),
                service,
                Direction::Input,
            ));
        }
        self.transition(now, slot, Direction::Input, meta.tcp_flags);
        if self.ftp_input(now, slot, frame, meta).is_err() {
            return Some(self.decision(
                Verdict::Drop(DropReason::ConnTableFull),
                service,
                Direction::Input,
            ));
        }
        let decision = self.forward_connection(slot, frame, meta, flow, false);
        Some(self.after_ftp_adjust(slot, frame, meta, false, decision))
    }

    /// The FTP helper's sequence adjustment of a forwarded control-connection segment;
    /// a segment it cannot adjust is dropped.
    fn after_ftp_adjust(
        &mut self,
        slot: u32,
        frame: &mut [u8],
        meta: &PacketMeta,
        reply: bool,
        decision: Decision,
    ) -> Decision {
        if decision.verdict != Verdict::Forward || self.ftp_adjust(slot, frame, meta, reply).is_ok()
        {
            return decision;
        }
        self.counters.forwarded -= 1;
        self.counters.rewrite_failed += 1;
        Decision {
            verdict: Verdict::Drop(DropReason::Invalid(
                crate::packet::InvalidReason::TruncatedIpv4,
            )),
            ..decision
        }
    }

    fn forward_connection(
        &mut self,
        slot: u32,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
        flow: &FlowKey,
        new_connection: bool,
    ) -> Decision {
        let connection = self.table.connections[slot as usize]
            .as_ref()
            .expect("live connection");
        let (service, dest, real, forward) = (
            connection.service,
            connection.dest,
            connection.real,
            connection.forward,
        );
        let mac = self.services[service].dests.get(dest).mac;
        self.account(service, dest, u64::from(meta.ip_len), true);
        let result =
            forward::forward_input(frame, meta, flow, forward, real, mac, self.options.ethernet);
        self.finish(service, real, Direction::Input, new_connection, result)
    }

    fn finish(
        &mut self,
        service: usize,
        real: SocketAddr,
        direction: Direction,
        new_connection: bool,
        result: Result<FlowKey, crate::packet::rewrite::RewriteError>,
    ) -> Decision {
        let verdict = match result {
            Ok(_) => Verdict::Forward,
            Err(_) => {
                self.counters.rewrite_failed += 1;
                Verdict::Drop(DropReason::Invalid(
                    crate::packet::InvalidReason::TruncatedIpv4,
                ))
            }
        };
        Decision {
            backend: Some(real),
            rewritten: result.ok(),
            new_connection,
            ..self.decision(verdict, service, direction)
        }
    }

    fn reply(
        &mut self,
        now: TimeNs,
        slot: u32,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
        flow: &FlowKey,
    ) -> Decision {
        // `handle_response`: the helper sees the state before this packet's transition.
        let helper = self.ftp_output(now, slot, frame, meta);
        self.transition(now, slot, Direction::Output, meta.tcp_flags);
        let connection = self.table.connections[slot as usize]
            .as_ref()
            .expect("live connection");
        let (service, dest, real, virtual_address) = (
            connection.service,
            connection.dest,
            connection.real,
            connection.key.virtual_address,
        );
        self.account(service, dest, u64::from(meta.ip_len), false);
        if helper.is_err() {
            let verdict = Verdict::Drop(DropReason::ConnTableFull);
            return Decision {
                backend: Some(real),
                ..self.decision(verdict, service, Direction::Output)
            };
        }
        let result = forward::forward_reply(frame, meta, flow, virtual_address);
        let decision = self.finish(service, real, Direction::Output, false, result);
        self.after_ftp_adjust(slot, frame, meta, true, decision)
    }

    /// `ip_vs_in_stats` / `ip_vs_out_stats`: a packet counts for its real server and service
    /// only while the server is in the service (`IP_VS_DEST_F_AVAILABLE`); the packets of a
    /// deleted server's remaining connections are forwarded uncounted.
    fn account(&mut self, service: usize, dest: DestId, bytes: u64, inbound: bool) {
        let svc = &mut self.services[service];
        let server = svc.dests.get_mut(dest);
        if server.available {
            account(&mut server.stats, bytes, inbound);
            account(&mut svc.stats, bytes, inbound);
        }
    }

    fn new_connection(
        &mut self,
        now: TimeNs,
        service: usize,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
        flow: &FlowKey,
    ) -> Decision {
        if !self.table.reserve_connection() {
            return self.decision(
                Verdict::Drop(DropReason::ConnTableFull),
                service,
                Direction::Input,
            );
        }
        let packet = SchedulePacket {
            source: flow.source.ip(),
            source_port: flow.source.port(),
            destination: flow.destination.ip(),
        };
        let scheduled = if self.services[service].spec.persistence.is_some() {
            self.schedule_persistent(now, service, &packet, flow)
        } else {
            let svc = &mut self.services[service];
            let dest = svc.scheduler.schedule(now, &svc.dests, &packet);
            dest.map(|d| (d, None)).ok_or(DropReason::NoDestination)
        };
        let (dest, template) = match scheduled {
            Ok(found) => found,
            Err(reason) => return self.decision(Verdict::Drop(reason), service, Direction::Input),
        };
        let slot = self.create_connection(now, service, dest, template, flow);
        self.transition(now, slot, Direction::Input, meta.tcp_flags);
        self.forward_connection(slot, frame, meta, flow, true)
    }

    fn create_connection(
        &mut self,
        now: TimeNs,
        service: usize,
        dest: DestId,
        template: Option<u32>,
        flow: &FlowKey,
    ) -> u32 {
        let svc = &mut self.services[service];
        let persistent = template.is_some();
        let server = svc.dests.get_mut(dest);
        let (virtual_port, service_port) = (
            flow.destination.port(),
            match svc.spec.key {
                ServiceKey::Tuple { port, .. } => port,
                ServiceKey::Fwmark(_) => 0,
            },
        );
        let port = match (persistent, server.address.port()) {
            (false, 0) => virtual_port,
            (false, port) => port,
            (true, port) if virtual_port == service_port && port != 0 => port,
            (true, _) => virtual_port,
        };
        server.bind(BindKind::Inactive);
        server.stats.connections += 1;
        svc.stats.connections += 1;
        let connection = Connection {
            key: ClientKey {
                proto: flow.proto,
                client: flow.source,
                virtual_address: flow.destination,
            },
            service,
            dest,
            real: SocketAddr::new(server.address.ip(), port),
            forward: server.forward,
            state: if flow.proto == ip_proto::TCP {
                ProtocolState::Tcp(TcpState::None)
            } else {
                ProtocolState::Udp
            },
            inactive: true,
            no_output: server.forward != Forward::Nat,
            template,
            timeout: INITIAL_TIMEOUT,
            expires: now + INITIAL_TIMEOUT,
            controller: None,
            controlled: 0,
        };
        if let Some(template_slot) = template
            && let Some(t) = self.table.templates[template_slot as usize].as_mut()
        {
            t.controlled += 1;
            t.expires = now + t.timeout;
        }
        let slot = self.table.insert_connection(connection);
        self.ftp_bind(slot);
        slot
    }
}

fn account(stats: &mut DestStats, bytes: u64, inbound: bool) {
    if inbound {
        stats.packets_in += 1;
        stats.bytes_in += bytes;
    } else {
        stats.packets_out += 1;
        stats.bytes_out += bytes;
    }
}
