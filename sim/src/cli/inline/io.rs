//! The lab's real-time loop: one AF_PACKET socket per veth (opened by a thread that joined
//! the lab namespace), one reader thread per veth, and the shared [`Datapath`]: hop (ARP,
//! routing, Ethernet rewrite) and the lbsim [`Pipeline`], called with `now` = monotonic
//! nanoseconds since the lab started.
//!
//! The sockets are the lab's own (`nix`), with large kernel buffers forced with
//! `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE`: with the default `net.core.rmem_default` (208 KiB,
//! about 90 full-size frames) a TCP burst of a bulk transfer overflowed the socket while
//! the pipeline worked, and every dropped frame came back as a retransmit. pnet only binds
//! them to their veth and sets promiscuous mode (a duplicate of the descriptor is handed to
//! it and closed right after). A reader waits with `poll`, then drains up to
//! [`READ_BATCH`] frames with non-blocking `recv` and runs them under one lock of the
//! datapath; writes are plain `send` on the bound socket. No `unsafe`.
//!
//! Not here: what the hop or the pipeline decide (see `hop`, `datapath::pipeline`).

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use datapath::packet::LinkType;
use datapath::pipeline::Pipeline;
use datapath::verdict::TimeNs;
use hdrhistogram::Histogram;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, setsockopt, socket,
    sockopt,
};
use pnet_datalink::{Channel, Config};

use super::hop::{Hop, Outgoing, Received};
use super::plan::{LabPlan, Side};
use super::server::enter_namespace;

/// How long a reader waits for a frame before checking whether to stop.
const READ_TIMEOUT: Duration = Duration::from_millis(20);
/// How long a write waits for room in a full send buffer before the frame is counted lost.
const WRITE_TIMEOUT: Duration = Duration::from_millis(20);
/// Largest lab processing time the histogram tracks (larger values are clamped).
const LATENCY_HIGHEST_NS: u64 = 60_000_000_000;
/// Kernel receive buffer of each lab socket (`SO_RCVBUFFORCE`; the kernel doubles it).
pub const RECEIVE_BUFFER: usize = 8 << 20;
/// Kernel send buffer of each lab socket (`SO_SNDBUFFORCE`).
pub const SEND_BUFFER: usize = 4 << 20;
/// Largest frame read (larger ones are truncated by the kernel; the veths' MTU is 1500).
const FRAME_CAPACITY: usize = 1 << 16;
/// Frames a reader takes from its socket per lock of the datapath.
pub const READ_BATCH: usize = 64;

/// One veth's AF_PACKET socket, bound to it, promiscuous and non-blocking.
#[derive(Debug)]
pub struct Port {
    socket: OwnedFd,
}

impl Port {
    /// Open the socket on `iface` (call from a thread inside the veth's namespace).
    fn open(interface: &pnet_datalink::NetworkInterface) -> anyhow::Result<Self> {
        let name = &interface.name;
        let socket = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .with_context(|| format!("AF_PACKET socket for {name}"))?;
        setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER)
            .with_context(|| format!("SO_RCVBUFFORCE on {name}"))?;
        setsockopt(&socket, sockopt::SndBufForce, &SEND_BUFFER)
            .with_context(|| format!("SO_SNDBUFFORCE on {name}"))?;
        // pnet binds the socket to the veth, joins promiscuous mode and sets O_NONBLOCK
        // (all on the socket, shared by both descriptors); then its descriptor is closed.
        let handed = nix::unistd::dup(&socket)?.into_raw_fd();
        let config = Config {
            socket_fd: Some(handed),
            ..Config::default()
        };
        match pnet_datalink::channel(interface, config) {
            Ok(Channel::Ethernet(..)) => Ok(Self { socket }),
            Ok(_) => Err(anyhow!("unexpected channel type on {name}")),
            Err(error) => Err(anyhow!("binding the AF_PACKET socket to {name}: {error}")),
        }
    }

    /// The kernel's receive buffer size (twice what was asked, as the kernel reports it).
    pub fn receive_buffer(&self) -> anyhow::Result<usize> {
        Ok(nix::sys::socket::getsockopt(&self.socket, sockopt::RcvBuf)?)
    }

    /// Wait up to [`READ_TIMEOUT`] for frames, then read up to [`READ_BATCH`] of them.
    /// Errors other than "nothing to read" are returned.
    fn read_batch(&self, buffer: &mut [u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut frames = Vec::new();
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(READ_TIMEOUT).unwrap_or(PollTimeout::NONE);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => return Ok(frames),
            Ok(_) => {}
            Err(error) => return Err(error.into()),
        }
        while frames.len() < READ_BATCH {
            match recv(self.socket.as_raw_fd(), buffer, MsgFlags::MSG_DONTWAIT) {
                Ok(length) => frames.push(buffer[..length.min(buffer.len())].to_vec()),
                Err(Errno::EAGAIN | Errno::EINTR) => break,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(frames)
    }

    /// Write one frame, waiting up to [`WRITE_TIMEOUT`] when the send buffer is full.
    fn write(&self, frame: &[u8]) -> bool {
        for attempt in 0..2 {
            match send(self.socket.as_raw_fd(), frame, MsgFlags::empty()) {
                Ok(_) => return true,
                Err(Errno::EAGAIN | Errno::ENOBUFS) if attempt == 0 => {
                    let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLOUT)];
                    let timeout = PollTimeout::try_from(WRITE_TIMEOUT).unwrap_or(PollTimeout::NONE);
                    let _ = poll(&mut fds, timeout);
                }
                Err(_) => return false,
            }
        }
        false
    }
}

/// Open the lab's sockets on `ifaces` (client side, backend side) inside `ns`.
pub fn open_ports(ns: &str, ifaces: [&str; 2]) -> anyhow::Result<[Arc<Port>; 2]> {
    let ns = ns.to_string();
    let names = ifaces.map(str::to_string);
    std::thread::spawn(move || -> anyhow::Result<[Arc<Port>; 2]> {
        enter_namespace(&ns)?;
        let interfaces = pnet_datalink::interfaces();
        let open = |name: &str| -> anyhow::Result<Arc<Port>> {
            let interface = (interfaces.iter())
                .find(|i| i.name == name)
                .ok_or_else(|| anyhow!("no interface {name} in namespace {ns}"))?;
            Ok(Arc::new(Port::open(interface)?))
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
    senders: [Arc<Port>; 2],
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
        senders: [Arc<Port>; 2],
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
            if self.senders[side.index()].write(&frame) {
                self.hop.count_sent(side);
            } else {
                self.send_failures += 1;
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
    /// Start one reader per side (`ports`: client side, backend side) feeding `datapath`.
    pub fn start(datapath: &Arc<Mutex<Datapath>>, ports: [Arc<Port>; 2]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = Side::BOTH
            .into_iter()
            .zip(ports)
            .map(|(side, port)| {
                let (stop, datapath) = (stop.clone(), datapath.clone());
                std::thread::spawn(move || read_side(side, &port, &datapath, &stop))
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

/// A reader thread: batches of frames from `port` through the datapath until `stop`.
fn read_side(side: Side, port: &Port, datapath: &Mutex<Datapath>, stop: &AtomicBool) {
    let mut buffer = vec![0; FRAME_CAPACITY];
    while !stop.load(Ordering::Relaxed) {
        // Errors: a veth going away at shutdown; wait for `stop` without spinning.
        let frames = port.read_batch(&mut buffer).unwrap_or_else(|_| {
            std::thread::sleep(READ_TIMEOUT);
            Vec::new()
        });
        if frames.is_empty() {
            continue;
        }
        let mut datapath = lock(datapath);
        for frame in frames {
            datapath.handle(side, frame, Instant::now());
        }
    }
}
