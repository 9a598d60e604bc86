//! Raw frames in and out of a namespace's veth with AF_PACKET, through `pnet_datalink` (its
//! sockets are opened by a thread that first joins the namespace with `setns`, so they
//! belong to that namespace for their whole life). No `unsafe` here: the socket calls are
//! pnet's.
//!
//! [`Observer`] records every frame a veth receives whose source MAC is the LB's, with the
//! time it was read; [`inject`] sends frames one by one, paced, recording send times.
//!
//! Not here: deciding what a frame means (see `inject`).

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use nix::sched::{CloneFlags, setns};
use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender};

/// How long a receive call waits before checking whether to stop.
const READ_TIMEOUT: Duration = Duration::from_millis(20);
/// At most this many frames are kept per observer (a counted overflow beyond).
pub const OBSERVED_FRAMES_CAPACITY: usize = 1 << 20;

/// Move the calling thread into a named network namespace.
pub(crate) fn enter_namespace(ns: &str) -> anyhow::Result<()> {
    let file = File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening network namespace {ns}"))?;
    setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {ns}"))
}

/// Open an AF_PACKET channel on `iface` from inside `ns` (call from a dedicated thread).
pub(crate) fn open_channel(
    ns: &str,
    iface: &str,
) -> anyhow::Result<(Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>)> {
    enter_namespace(ns)?;
    let interface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .ok_or_else(|| anyhow!("no interface {iface} in namespace {ns}"))?;
    let config = Config {
        read_timeout: Some(READ_TIMEOUT),
        read_buffer_size: 1 << 16,
        write_buffer_size: 1 << 16,
        ..Config::default()
    };
    match pnet_datalink::channel(&interface, config) {
        Ok(Channel::Ethernet(tx, rx)) => Ok((tx, rx)),
        Ok(_) => Err(anyhow!("unexpected channel type on {iface}")),
        Err(error) => Err(anyhow!("AF_PACKET socket on {ns}/{iface}: {error}")),
    }
}

/// A frame read on a veth.
#[derive(Debug, Clone)]
pub struct ObservedFrame {
    /// When it was read.
    pub at: Instant,
    /// The bytes (Ethernet).
    pub frame: Vec<u8>,
}

/// Frames an observer kept, and how many it had to leave out.
#[derive(Debug, Default)]
pub struct Observed {
    /// Frames from the wanted source MAC, in arrival order.
    pub frames: Vec<ObservedFrame>,
    /// Frames beyond [`OBSERVED_FRAMES_CAPACITY`].
    pub overflow: u64,
}

/// A thread reading one veth until stopped.
#[derive(Debug)]
pub struct Observer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<anyhow::Result<Observed>>,
}

impl Observer {
    /// Start observing `iface` in `ns`, keeping frames whose source MAC is `from_mac`.
    /// Returns once the socket is open, so nothing sent afterwards is missed.
    pub fn start(ns: &str, iface: &str, from_mac: [u8; 6]) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, iface, flag) = (ns.to_string(), iface.to_string(), stop.clone());
        let handle = std::thread::spawn(move || {
            let (_tx, mut rx) = match open_channel(&ns, &iface) {
                Ok(channel) => channel,
                Err(error) => {
                    let _ = ready_tx.send(Err(error.to_string()));
                    return Err(error);
                }
            };
            let _ = ready_tx.send(Ok(()));
            Ok(read_until(&mut *rx, &flag, from_mac))
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { stop, handle }),
            Ok(Err(message)) => Err(anyhow!(message)),
            Err(_) => Err(anyhow!("observer thread ended before opening its socket")),
        }
    }

    /// Stop and return what was seen.
    pub fn finish(self) -> anyhow::Result<Observed> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow!("observer thread panicked"))?
    }
}

fn read_until(rx: &mut dyn DataLinkReceiver, stop: &AtomicBool, from_mac: [u8; 6]) -> Observed {
    let mut observed = Observed::default();
    while !stop.load(Ordering::Relaxed) {
        let Ok(frame) = rx.next() else {
            continue;
        };
        let at = Instant::now();
        if frame.get(6..12) != Some(&from_mac[..]) {
            continue;
        }
        if observed.frames.len() >= OBSERVED_FRAMES_CAPACITY {
            observed.overflow += 1;
            continue;
        }
        observed.frames.push(ObservedFrame {
            at,
            frame: frame.to_vec(),
        });
    }
    observed
}

/// Where a frame is sent from: a namespace and its veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The namespace.
    pub ns: String,
    /// The interface inside it.
    pub iface: String,
}

/// Send `frames` (each with the index of the [`Port`] it leaves by), at most one every
/// `gap`, returning each frame's send time (`None` when the kernel refused it, e.g. larger
/// than the MTU). One thread opens every port's socket (joining each namespace in turn:
/// a socket stays in the namespace it was opened in).
pub fn inject(
    ports: &[Port],
    frames: Vec<(usize, Vec<u8>)>,
    gap: Duration,
) -> anyhow::Result<Vec<Option<Instant>>> {
    let ports = ports.to_vec();
    let handle = std::thread::spawn(move || -> anyhow::Result<Vec<Option<Instant>>> {
        let mut senders = Vec::with_capacity(ports.len());
        for port in &ports {
            senders.push(open_channel(&port.ns, &port.iface)?.0);
        }
        let mut sent = Vec::with_capacity(frames.len());
        let mut next = Instant::now();
        for (port, frame) in &frames {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            let at = Instant::now();
            let ok = senders
                .get_mut(*port)
                .is_some_and(|tx| matches!(tx.send_to(frame, None), Some(Ok(()))));
            sent.push(ok.then_some(at));
            next = at + gap;
        }
        Ok(sent)
    });
    handle
        .join()
        .map_err(|_| anyhow!("injection thread panicked"))?
}
