//! The lab's real-time loop: AF_PACKET sockets (pnet_datalink, opened by a thread that
//! joined the lab namespace) on the two veths, one reader thread per veth, and the shared
//! [`Datapath`]: hop (ARP, routing, Ethernet rewrite) and the lbsim [`Pipeline`], called
//! with `now` = monotonic nanoseconds since the lab started. No `unsafe`: socket calls are
//! pnet's.
//!
//! Not here: what the hop or the pipeline decide (see `hop`, `datapath::pipeline`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use datapath::packet::LinkType;
use datapath::pipeline::Pipeline;
use datapath::verdict::TimeNs;
use hdrhistogram::Histogram;
use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender};

use super::hop::{Hop, Outgoing, Received};
use super::plan::{LabPlan, Side};
use super::server::enter_namespace;

/// How long a receive call waits before checking whether to stop.
const READ_TIMEOUT: Duration = Duration::from_millis(20);
/// Largest lab processing time the histogram tracks (larger values are clamped).
const LATENCY_HIGHEST_NS: u64 = 60_000_000_000;
/// Socket buffer sizes.
const SOCKET_BUFFER: usize = 1 << 16;

type Port = (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>);

/// Open AF_PACKET channels on `ifaces` (client side, backend side) inside `ns`.
pub fn open_ports(ns: &str, ifaces: [&str; 2]) -> anyhow::Result<[Port; 2]> {
    let ns = ns.to_string();
    let names = ifaces.map(str::to_string);
    std::thread::spawn(move || -> anyhow::Result<[Port; 2]> {
        enter_namespace(&ns)?;
        let interfaces = pnet_datalink::interfaces();
        let open = |name: &str| -> anyhow::Result<Port> {
            let interface = (interfaces.iter())
                .find(|i| i.name == name)
                .ok_or_else(|| anyhow!("no interface {name} in namespace {ns}"))?;
            let config = Config {
                read_timeout: Some(READ_TIMEOUT),
                read_buffer_size: SOCKET_BUFFER,
                write_buffer_size: SOCKET_BUFFER,
                ..Config::default()
            };
            match pnet_datalink::channel(interface, config) {
                Ok(Channel::Ethernet(tx, rx)) => Ok((tx, rx)),
                Ok(_) => Err(anyhow!("unexpected channel type on {name}")),
                Err(error) => Err(anyhow!("AF_PACKET socket on {ns}/{name}: {error}")),
            }
        };
        Ok([open(&names[0])?, open(&names[1])?])
    })
    .join()
    .map_err(|_| anyhow!("socket thread panicked"))?
}

/// The hop and the pipeline between the two veths, and the senders.
pub struct Datapath {
    /// The lbsim pipeline.
    pub pipeline: Pipeline,
    /// ARP, routing and Ethernet rewrite.
    pub hop: Hop,
    plan: LabPlan,
    senders: [Box<dyn DataLinkSender>; 2],
    started: Instant,
    /// Frames the kernel refused to send.
    pub send_failures: u64,
    /// Time from a frame's read to its last write, per pipeline frame (ns).
    pub latency: Histogram<u64>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath").field("hop", &self.hop).finish()
    }
}

impl Datapath {
    /// A datapath writing to `senders` (client side, backend side).
    pub fn new(
        pipeline: Pipeline,
        hop: Hop,
        plan: &LabPlan,
        senders: [Box<dyn DataLinkSender>; 2],
    ) -> anyhow::Result<Self> {
        Ok(Self {
            pipeline,
            hop,
            plan: plan.clone(),
            senders,
            started: Instant::now(),
            send_failures: 0,
            latency: Histogram::new_with_bounds(1, LATENCY_HIGHEST_NS, 3)?,
        })
    }

    /// Nanoseconds since the lab started.
    fn now(&self) -> TimeNs {
        TimeNs::try_from(self.started.elapsed().as_nanos()).unwrap_or(TimeNs::MAX)
    }

    /// Resolve the backends' and clients' MACs before traffic needs them.
    pub fn probe_neighbours(&mut self) {
        let now = self.now();
        let backends: Vec<_> = self.plan.backend_addresses().collect();
        let clients: Vec<_> = self.plan.clients.iter().map(|c| c.address.addr()).collect();
        let mut out = Vec::new();
        for address in backends {
            out.extend(self.hop.request(Side::Backend, address, now));
        }
        for address in clients {
            out.extend(self.hop.request(Side::Client, address, now));
        }
        self.transmit(out);
    }

    /// Handle one frame read on `side` at `read_at`.
    pub fn handle(&mut self, side: Side, frame: Vec<u8>, read_at: Instant) {
        let now = self.now();
        match self.hop.receive(side, &frame, now) {
            Received::Ignored => {}
            Received::Handled(out) => self.transmit(out),
            Received::ToPipeline => {
                let length = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                let iface = self.plan.iface_id(side);
                self.pipeline
                    .process(now, iface, LinkType::Ethernet, frame, length);
                let mut out = Vec::new();
                for emitted in self.pipeline.take_emitted() {
                    out.extend(self.hop.send(emitted.frame, now));
                }
                self.transmit(out);
                let spent = u64::try_from(read_at.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.latency.saturating_record(spent);
            }
        }
    }

    fn transmit(&mut self, out: Vec<Outgoing>) {
        for Outgoing { side, frame } in out {
            match self.senders[side.index()].send_to(&frame, None) {
                Some(Ok(())) => self.hop.count_sent(side),
                _ => self.send_failures += 1,
            }
        }
    }
}

/// Lock the shared datapath (a panicked reader leaves it usable for the report).
pub fn lock(datapath: &Mutex<Datapath>) -> MutexGuard<'_, Datapath> {
    datapath
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The reader threads; [`Readers::stop`] ends them.
#[derive(Debug)]
pub struct Readers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Readers {
    /// Start one reader per side feeding `datapath`.
    pub fn start(
        datapath: &Arc<Mutex<Datapath>>,
        receivers: [Box<dyn DataLinkReceiver>; 2],
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = Side::BOTH
            .into_iter()
            .zip(receivers)
            .map(|(side, mut receiver)| {
                let (stop, datapath) = (stop.clone(), datapath.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Errors are read timeouts (or a veth going away at shutdown).
                        let Ok(frame) = receiver.next() else {
                            continue;
                        };
                        let read_at = Instant::now();
                        let frame = frame.to_vec();
                        lock(&datapath).handle(side, frame, read_at);
                    }
                })
            })
            .collect();
        Self { stop, handles }
    }

    /// Stop reading; `Err` when a reader panicked.
    pub fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut panicked = false;
        for handle in self.handles {
            panicked |= handle.join().is_err();
        }
        if panicked {
            return Err(anyhow!("a lab reader thread panicked"));
        }
        Ok(())
    }
}
