//! Building a shard: its pipeline, links, traffic sources and backends.

use super::*;

impl<'a> Engine<'a> {
    /// Build shard `queue_index` of `scenario`: its pipeline (from the appliance
    /// configuration), actors and links. All configuration errors surface here.
    pub fn new(
        scenario: &'a Scenario,
        base_dir: &Path,
        world: &'a World,
        queue_index: u16,
        collect: Collect,
    ) -> anyhow::Result<Self> {
        let names: Vec<&str> = scenario
            .topology
            .interfaces
            .iter()
            .map(String::as_str)
            .collect();
        let mut pipeline =
            crate::appliance::build_pipeline(&scenario.appliance, base_dir, scenario.seed, &names)?;
        let pipeline_has_nat = pipeline.nat().is_some();
        let cpu = match &scenario.cpu {
            Some(spec) => {
                let profile = cpu::CostProfile::of_spec(spec, base_dir)
                    .map_err(|e| anyhow::anyhow!("[cpu]: {e}"))?;
                Some(cpu::Cpu::new(&profile, spec.rx_ring))
            }
            None => None,
        };
        // Dropped frames' buffers come back to the sources' pool instead of being freed.
        pipeline.keep_spare_frames(true);
        let links = world
            .hosts
            .iter()
            .map(|host| {
                let stream = |direction: &str| {
                    let name = format!("link/{}/{direction}/q{queue_index}", host.name);
                    crate::net::rng::stream(scenario.seed, &name)
                };
                (
                    Pipe::new(&host.link, scenario.queues, stream("to_appliance")),
                    Pipe::new(&host.link, scenario.queues, stream("from_appliance")),
                )
            })
            .collect();
        let mut engine = Self {
            scenario,
            world,
            queue_index,
            end: scenario.duration.0,
            pipeline,
            queue: EventQueue::default(),
            actors: Vec::new(),
            scheduled: Vec::new(),
            same_instant: Vec::new(),
            links,
            lanes: (0..world.hosts.len() * 2)
                .map(|_| VecDeque::new())
                .collect(),
            in_flight: 0,
            held: Held::default(),
            sending: Vec::new(),
            emitted: Vec::new(),
            backend_actor: vec![None; world.hosts.len()],
            client_actor: HashMap::new(),
            collect,
            outbox: Outbox::default(),
            result: ShardResult {
                counters: PipelineCounters::default(),
                totals: Totals::default(),
                flows: BTreeMap::new(),
                backends: BTreeMap::new(),
                delivered: vec![0; world.hosts.len()],
                timeline: Vec::new(),
                actors: Vec::new(),
                events: Vec::new(),
                records: Vec::new(),
                emitted: Vec::new(),
                appliance: crate::appliance::ApplianceReport::default(),
                cpu: None,
                series: series::Series::new(series::bucket_ns(scenario.duration.0)),
                connections: Vec::new(),
                translated: Vec::new(),
                persistence: Vec::new(),
            },
            observer: None,
            next_sample: 0,
            boundary: TimeNs::MAX,
            cursors: Default::default(),
            sink_cursors: Default::default(),
            has_clients: vec![false; world.hosts.len()],
            shortcuts: true,
            limit: 0,
            reported: 0,
            split: false,
            track_tuples: pipeline_has_nat,
            pending: Vec::new(),
            cpu,
            latency: None,
        };
        engine.build_sources(base_dir)?;
        engine.build_backends();
        for address in engine.client_actor.keys() {
            if let Some(host) = world.route(*address) {
                engine.has_clients[usize::from(host)] = true;
            }
        }
        Ok(engine)
    }

    pub(super) fn add_actor(&mut self, actor: Box<dyn Actor>) -> u16 {
        self.actors.push(actor);
        self.scheduled.push(None);
        self.same_instant.push((0, 0));
        (self.actors.len() - 1) as u16
    }

    pub(super) fn build_sources(&mut self, base_dir: &Path) -> anyhow::Result<()> {
        let (seed, queues, queue, end) = (
            self.scenario.seed,
            self.scenario.queues,
            self.queue_index,
            self.end,
        );
        let mut next_address: BTreeMap<HostId, u32> = BTreeMap::new();
        for (index, traffic) in self.scenario.traffic.iter().enumerate() {
            let spec = traffic.get_ref();
            let host = self.world.network(spec.network()).ok_or_else(|| {
                anyhow::anyhow!(
                    "traffic source {index}: network {:?} is not defined",
                    spec.network()
                )
            })?;
            let HostKind::Network(prefix) = self.world.hosts[usize::from(host)].kind else {
                anyhow::bail!(
                    "traffic source {index}: {:?} is not a network",
                    spec.network()
                );
            };
            let name = source_name(spec, index);
            let stream = crate::net::rng::stream(seed, &format!("traffic/{name}"));
            let flood = |kind, flood_spec| -> Box<dyn Actor> {
                Box::new(FloodSource::new(
                    name.clone(),
                    kind,
                    flood_spec,
                    host,
                    prefix,
                    end,
                    (queue, queues),
                    stream.clone(),
                ))
            };
            let (actor, addresses): (Box<dyn Actor>, Vec<IpAddr>) = match spec {
                TrafficSpec::SynFlood(f) => (flood(FloodKind::Syn, f), Vec::new()),
                TrafficSpec::AckFlood(f) => (flood(FloodKind::Ack, f), Vec::new()),
                TrafficSpec::UdpFlood(f) => (flood(FloodKind::Udp, f), Vec::new()),
                TrafficSpec::IcmpFlood(f) => (flood(FloodKind::Icmp, f), Vec::new()),
                TrafficSpec::Pcap(p) => {
                    let source = PcapSource::new(
                        name.clone(),
                        p,
                        base_dir.join(&p.file),
                        host,
                        (queue, queues),
                    )?;
                    (Box::new(source), Vec::new())
                }
                TrafficSpec::TcpClients(t) => {
                    let addresses =
                        self.client_addresses(host, prefix, t.clients, &mut next_address)?;
                    let clients = TcpClients::new(
                        name.clone(),
                        t,
                        host,
                        addresses,
                        end,
                        (seed, queue, queues),
                    );
                    let addresses = clients.addresses();
                    (Box::new(clients), addresses)
                }
                TrafficSpec::FtpClients(f) => {
                    let addresses =
                        self.client_addresses(host, prefix, f.clients, &mut next_address)?;
                    let clients = crate::actors::ftp::FtpClients::new(
                        name.clone(),
                        f,
                        host,
                        addresses,
                        end,
                        (seed, queue, queues),
                    );
                    let addresses = clients.addresses();
                    (Box::new(clients), addresses)
                }
                TrafficSpec::UdpClients(u) => {
                    let addresses =
                        self.client_addresses(host, prefix, u.clients, &mut next_address)?;
                    let clients =
                        UdpClients::new(name.clone(), u, host, addresses, end, (queue, queues));
                    let addresses = clients.addresses();
                    (Box::new(clients), addresses)
                }
            };
            let id = self.add_actor(actor);
            for address in addresses {
                self.client_actor.entry(address).or_insert(id);
            }
        }
        Ok(())
    }

    /// `count` client addresses of network `host` not used by an earlier source and not
    /// owned by a backend.
    pub(super) fn client_addresses(
        &self,
        host: HostId,
        prefix: ipnet::IpNet,
        count: u32,
        next: &mut BTreeMap<HostId, u32>,
    ) -> anyhow::Result<Vec<IpAddr>> {
        let index = next.entry(host).or_insert(0);
        let mut addresses = Vec::with_capacity(count as usize);
        let mut tries = 0u32;
        while addresses.len() < count as usize && tries < count.saturating_mul(4).max(16) {
            let address = crate::scenario::client_address(&prefix, *index);
            *index = index.wrapping_add(1);
            tries += 1;
            if self.world.route(address) == Some(host) {
                addresses.push(address);
            }
        }
        if addresses.is_empty() {
            anyhow::bail!(
                "no address of network {prefix} is free for a client: the addresses after the network's own belong to backends, more specific networks or earlier sources"
            );
        }
        Ok(addresses)
    }

    pub(super) fn build_backends(&mut self) {
        for (host, spec) in self.world.hosts.clone().iter().enumerate() {
            let HostKind::Backend(index) = spec.kind else {
                continue;
            };
            let backend_spec = &self.scenario.topology.backends[index];
            let name = format!("backend/{}/q{}", backend_spec.name, self.queue_index);
            let seed = crate::net::rng::derive_u64(self.scenario.seed, &name);
            let actor: Box<dyn Actor> = if backend_spec.ftp {
                Box::new(crate::actors::ftp_server::FtpServer::new(
                    backend_spec,
                    host as HostId,
                    seed,
                ))
            } else {
                Box::new(crate::actors::backend::Backend::new(
                    backend_spec,
                    host as HostId,
                    seed,
                ))
            };
            let id = self.add_actor(actor);
            self.backend_actor[host] = Some(id);
        }
    }
}

/// A source's name in reports: its `name`, or `<kind><index>`.
pub fn source_name(spec: &TrafficSpec, index: usize) -> String {
    spec.source_name(index)
}
