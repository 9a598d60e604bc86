//! Backends: a smoltcp host per backend (per receive queue) listening on its TCP ports, and
//! a UDP responder. The TCP service reads `GET <n>\n`, waits the backend's service time,
//! sends `n` bytes and closes; the UDP service echoes each datagram after the service time.
//!
//! Listening sockets are a bounded pool ([`LISTEN_POOL_PER_PORT`] waiting per port,
//! [`BACKEND_SOCKET_CAPACITY`] in all): a SYN flood that reaches a backend fills it, as it
//! fills a real server's backlog. Not here: the clients.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use datapath::TimeNs;
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ParseOptions, ip_proto, parse_with};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;

use super::{Actor, ActorStats, BackendStats, Outbox};
use crate::net::stack::Stack;
use crate::net::world::HostId;
use crate::scenario::BackendSpec;

/// Listening sockets kept waiting per port.
pub const LISTEN_POOL_PER_PORT: usize = 16;
/// Most TCP sockets per backend (listening and connected).
pub const BACKEND_SOCKET_CAPACITY: usize = 1024;
/// Largest response a request may ask for.
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Longest request line read.
const MAX_REQUEST_LINE: usize = 64;
/// Idle time after which a server connection is aborted (half-open flood connections).
const SERVER_IDLE_TIMEOUT_MS: u64 = 5_000;

struct ServerConnection {
    port: u16,
    accepted: bool,
    request: Vec<u8>,
    respond_at: Option<TimeNs>,
    remaining: u64,
    closed: bool,
}

/// One backend, as seen by one receive queue.
pub struct Backend {
    host: HostId,
    stack: Stack,
    tcp_ports: Vec<u16>,
    udp_ports: Vec<u16>,
    service_time: TimeNs,
    connections: BTreeMap<SocketHandle, ServerConnection>,
    udp_pending: VecDeque<(TimeNs, Vec<u8>)>,
    backend: BackendStats,
    stats: ActorStats,
}

impl Backend {
    /// The backend `spec` as host `host`, its smoltcp stack seeded with `random_seed`.
    pub fn new(spec: &BackendSpec, host: HostId, random_seed: u64) -> Self {
        let addresses: Vec<IpAddr> = std::iter::once(spec.addr)
            .chain(spec.also.iter().copied())
            .collect();
        let mut backend = Self {
            host,
            stack: Stack::new(&addresses, random_seed, 0),
            tcp_ports: spec.tcp_ports.clone(),
            udp_ports: spec.udp_ports.clone(),
            service_time: spec.service_time.0,
            connections: BTreeMap::new(),
            udp_pending: VecDeque::new(),
            backend: BackendStats::default(),
            stats: ActorStats::new(spec.name.clone(), "backend"),
        };
        backend.refill_listeners();
        backend
    }

    /// Keep [`LISTEN_POOL_PER_PORT`] sockets listening on every port, within capacity.
    fn refill_listeners(&mut self) {
        for &port in &self.tcp_ports {
            let listening = self
                .connections
                .iter()
                .filter(|(h, c)| {
                    c.port == port
                        && !c.accepted
                        && self.stack.sockets.get::<tcp::Socket>(**h).state() == tcp::State::Listen
                })
                .count();
            for _ in listening..LISTEN_POOL_PER_PORT {
                if self.connections.len() >= BACKEND_SOCKET_CAPACITY {
                    self.backend.backlog_full += 1;
                    return;
                }
                let rx = tcp::SocketBuffer::new(vec![0; 1024]);
                let tx = tcp::SocketBuffer::new(vec![0; 16 * 1024]);
                let mut socket = tcp::Socket::new(rx, tx);
                socket.set_timeout(Some(Duration::from_millis(SERVER_IDLE_TIMEOUT_MS)));
                if socket.listen(port).is_err() {
                    return;
                }
                let handle = self.stack.sockets.add(socket);
                self.connections.insert(
                    handle,
                    ServerConnection {
                        port,
                        accepted: false,
                        request: Vec::new(),
                        respond_at: None,
                        remaining: 0,
                        closed: false,
                    },
                );
            }
        }
    }

    /// Move every connection along; drop the finished ones.
    fn serve(&mut self, now: TimeNs) {
        let mut finished = Vec::new();
        for (handle, connection) in &mut self.connections {
            let socket = self.stack.sockets.get_mut::<tcp::Socket>(*handle);
            serve_one(
                now,
                self.service_time,
                socket,
                connection,
                &mut self.backend,
            );
            let state = socket.state();
            let done =
                connection.accepted && matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            let died = !connection.accepted && state == tcp::State::Closed;
            if done || died {
                finished.push(*handle);
            }
        }
        for handle in finished {
            self.connections.remove(&handle);
            self.stack.sockets.remove(handle);
        }
    }

    fn answer_udp(&mut self, now: TimeNs, frame: &[u8]) -> bool {
        let meta = parse_with(
            &ParseOptions::default(),
            LinkType::Ethernet,
            frame,
            frame.len() as u32,
            0,
        );
        let (Some(src), Some(dst), Some(sport), Some(dport)) =
            (meta.src, meta.dst, meta.sport, meta.dport)
        else {
            return false;
        };
        if meta.invalid.is_some()
            || meta.proto != Some(ip_proto::UDP)
            || !self.udp_ports.contains(&dport)
        {
            return false;
        }
        let start = usize::from(meta.payload_offset);
        let payload = frame.get(start..).unwrap_or_default();
        let reply = PacketBuilder::eth()
            .ip(dst, src)
            .udp(dport, sport)
            .payload(payload)
            .build();
        self.udp_pending.push_back((now + self.service_time, reply));
        true
    }
}

fn serve_one(
    now: TimeNs,
    service_time: TimeNs,
    socket: &mut tcp::Socket,
    connection: &mut ServerConnection,
    stats: &mut BackendStats,
) {
    if !connection.accepted && socket.is_active() && socket.state() != tcp::State::SynReceived {
        connection.accepted = true;
        stats.tcp_accepted += 1;
    }
    if !connection.accepted || connection.closed {
        return;
    }
    let mut byte = [0u8; 1];
    while connection.respond_at.is_none()
        && socket.can_recv()
        && connection.request.len() < MAX_REQUEST_LINE
    {
        if socket.recv_slice(&mut byte) != Ok(1) {
            break;
        }
        if byte[0] == b'\n' {
            let line = String::from_utf8_lossy(&connection.request);
            let asked = line
                .strip_prefix("GET ")
                .and_then(|n| n.trim().parse::<u64>().ok());
            connection.remaining = asked.unwrap_or(0).min(MAX_RESPONSE_BYTES);
            connection.respond_at = Some(now + service_time);
        } else {
            connection.request.push(byte[0]);
        }
    }
    let due = connection.respond_at.is_some_and(|t| t <= now);
    while due && connection.remaining > 0 && socket.can_send() {
        let chunk = [b'x'; 1024];
        let want = connection.remaining.min(chunk.len() as u64) as usize;
        match socket.send_slice(&chunk[..want]) {
            Ok(0) | Err(_) => break,
            Ok(sent) => connection.remaining -= sent as u64,
        }
    }
    if due && connection.remaining == 0 {
        connection.closed = true;
        stats.tcp_served += 1;
        socket.close();
    } else if connection.respond_at.is_none() && !socket.may_recv() {
        connection.closed = true;
        socket.close();
    }
}

impl Actor for Backend {
    fn wake(&mut self, now: TimeNs, out: &mut Outbox) -> Option<TimeNs> {
        self.stack.poll(now);
        self.serve(now);
        self.refill_listeners();
        self.stack.poll(now);
        for frame in self.stack.take_transmitted() {
            self.stats.packets_sent += 1;
            out.push((self.host, frame));
        }
        while self.udp_pending.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, frame)) = self.udp_pending.pop_front() {
                self.backend.udp_answered += 1;
                self.stats.packets_sent += 1;
                out.push((self.host, frame));
            }
        }
        let respond = self
            .connections
            .values()
            .filter_map(|c| c.respond_at.filter(|t| *t > now && c.remaining > 0))
            .min();
        let udp = self.udp_pending.front().map(|(t, _)| *t);
        [self.stack.poll_at(now), respond, udp]
            .into_iter()
            .flatten()
            .min()
    }

    fn deliver(&mut self, now: TimeNs, frame: &[u8], out: &mut Outbox) -> Option<TimeNs> {
        self.stats.packets_received += 1;
        if !self.answer_udp(now, frame) {
            self.stack.receive(frame);
        }
        self.wake(now, out)
    }

    fn stats(&self) -> ActorStats {
        let mut stats = self.stats.clone();
        let mut backend = self.backend.clone();
        backend.rx_overflow += self.stack.rx_overflow;
        stats.backend = Some(backend);
        stats
    }
}
