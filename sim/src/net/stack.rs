//! A smoltcp host inside the simulator: one `Interface` on an in-memory IP device whose
//! receive queue the engine fills and whose transmit queue the engine drains, polled with
//! virtual time (`smoltcp::time::Instant` from the engine's nanoseconds). Frames cross the
//! simulated wire as Ethernet; the Ethernet header is added and removed here.
//!
//! Not here: what the sockets do (clients in [`crate::actors::tcp_clients`], servers in
//! [`crate::actors::backend`]).

use std::collections::VecDeque;
use std::net::IpAddr;

use datapath::TimeNs;
use datapath::packet::builder::{DST_MAC, SRC_MAC};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv6Address};

/// Most frames waiting in a stack's receive queue; more are dropped and counted.
pub const STACK_RX_QUEUE_CAPACITY: usize = 4096;

/// Virtual nanoseconds to smoltcp's microsecond instant.
pub fn instant(now: TimeNs) -> Instant {
    Instant::from_micros((now / 1_000) as i64)
}

/// smoltcp's instant back to nanoseconds (rounded up so a timer never fires early).
pub fn nanos(instant: Instant) -> TimeNs {
    (instant.total_micros().max(0) as TimeNs) * 1_000
}

/// The in-memory device.
#[derive(Debug, Default)]
pub struct SimDevice {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

/// Receive token: one IP packet.
pub struct SimRxToken(Vec<u8>);
/// Transmit token: appends to the device's transmit queue.
pub struct SimTxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for SimRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for SimTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buffer = vec![0; len];
        let result = f(&mut buffer);
        self.0.push(buffer);
        result
    }
}

impl Device for SimDevice {
    type RxToken<'a> = SimRxToken;
    type TxToken<'a> = SimTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(SimRxToken, SimTxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((SimRxToken(packet), SimTxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<SimTxToken<'_>> {
        Some(SimTxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = 1500;
        capabilities
    }
}

/// A smoltcp host: interface, device and sockets.
pub struct Stack {
    /// The interface.
    pub iface: Interface,
    /// The device.
    pub device: SimDevice,
    /// Its sockets.
    pub sockets: SocketSet<'static>,
    /// Frames dropped because the receive queue was full.
    pub rx_overflow: u64,
}

impl Stack {
    /// A host owning `addrs`, with default routes out of its one link. `random_seed` seeds
    /// smoltcp's initial sequence numbers and ports.
    pub fn new(addrs: &[IpAddr], random_seed: u64, now: TimeNs) -> Self {
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = random_seed;
        let mut device = SimDevice::default();
        let mut iface = Interface::new(config, &mut device, instant(now));
        iface.update_ip_addrs(|list| {
            for addr in addrs {
                let cidr = match addr {
                    IpAddr::V4(v4) => IpCidr::new(IpAddress::Ipv4(*v4), 32),
                    IpAddr::V6(v6) => IpCidr::new(IpAddress::Ipv6(*v6), 128),
                };
                // The list holds a handful of addresses; extra ones are ignored.
                let _ = list.push(cidr);
            }
        });
        // Medium::Ip has no neighbours: any gateway address routes everything out.
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(0, 0, 0, 1));
        let _ = iface
            .routes_mut()
            .add_default_ipv6_route(Ipv6Address::new(0, 0, 0, 0, 0, 0, 0, 1));
        Self {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            rx_overflow: 0,
        }
    }

    /// Queue an Ethernet frame for the stack (the Ethernet header is stripped).
    pub fn receive(&mut self, frame: &[u8]) {
        let Some((offset, _)) = crate::net::world::ip_offset(frame) else {
            return;
        };
        if self.device.rx.len() >= STACK_RX_QUEUE_CAPACITY {
            self.rx_overflow += 1;
            return;
        }
        self.device.rx.push_back(frame[offset..].to_vec());
    }

    /// Let the stack process received packets and timers at `now`.
    pub fn poll(&mut self, now: TimeNs) {
        self.iface
            .poll(instant(now), &mut self.device, &mut self.sockets);
    }

    /// When the stack next needs polling (`None`: only when a packet arrives).
    pub fn poll_at(&mut self, now: TimeNs) -> Option<TimeNs> {
        if !self.device.rx.is_empty() {
            return Some(now);
        }
        self.iface
            .poll_at(instant(now), &self.sockets)
            .map(|at| nanos(at).max(now))
    }

    /// Take the frames the stack sent, as Ethernet frames.
    pub fn take_transmitted(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.device.tx)
            .into_iter()
            .map(|packet| {
                let ethertype: u16 = if packet.first().is_some_and(|b| b >> 4 == 6) {
                    0x86dd
                } else {
                    0x0800
                };
                let mut frame = Vec::with_capacity(14 + packet.len());
                frame.extend_from_slice(&DST_MAC);
                frame.extend_from_slice(&SRC_MAC);
                frame.extend_from_slice(&ethertype.to_be_bytes());
                frame.extend_from_slice(&packet);
                frame
            })
            .collect()
    }
}
