//! `tcp_clients`: real TCP clients on smoltcp. Connection `j` opens at `start + j / rate`
//! from client host `j % clients` (addresses of the source network handed out by the engine) and local
//! port `1024 + j / clients` to `dst` (with `ports`, round `j / clients` goes to port
//! `ports[(j / clients) % len]`: each client uses every port in turn), sends `GET <n>\n` and reads `n` response bytes. Connection
//! setup time (connect → ESTABLISHED) and completion time (connect → last byte) go into
//! HdrHistograms; a connection that is not complete after `timeout` is aborted and fails;
//! one closed or reset early fails too.
//!
//! Each receive queue runs the connections whose client endpoint hashes to it, on its own
//! copies of the client hosts. Not here: the servers (see [`crate::actors::backend`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datapath::TimeNs;
use datapath::verdict::NS_PER_SEC;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::{Actor, ActorStats, Outbox, TcpStats};
use crate::net::rng::derive_u64;
use crate::net::stack::Stack;
use crate::net::world::{HostId, queue_of};
use crate::scenario::TcpClientsSpec;

/// Client receive buffer per connection.
const CLIENT_RX_BUFFER: usize = 64 * 1024;
/// Client transmit buffer per connection.
const CLIENT_TX_BUFFER: usize = 1024;
/// First local port.
const FIRST_PORT: u16 = 1024;
/// Local ports per client address.
const PORTS_PER_CLIENT: u64 = 64_000;

pub use crate::scenario::client_address;

struct Connection {
    id: u64,
    started: TimeNs,
    established: bool,
    request_sent: bool,
    received: u64,
    finished: bool,
}

struct ClientHost {
    stack: Stack,
    connections: BTreeMap<SocketHandle, Connection>,
    next_poll: Option<TimeNs>,
}

/// One `tcp_clients` source, as seen by one receive queue.
pub struct TcpClients {
    spec: TcpClientsSpec,
    host: HostId,
    addresses: Vec<IpAddr>,
    seed_name: String,
    seed: u64,
    total: u64,
    next_connection: u64,
    queue: u16,
    queues: u16,
    hosts: BTreeMap<IpAddr, ClientHost>,
    /// (deadline, address, socket, connection id) of open connections (socket handles are
    /// reused, so the id is checked too).
    deadlines: BTreeSet<(TimeNs, IpAddr, SocketHandle, u64)>,
    tcp: TcpStats,
    stats: ActorStats,
}

impl TcpClients {
    /// The source `name` from `host` (prefix `network`); the run ends at `end`.
    pub fn new(
        name: String,
        spec: &TcpClientsSpec,
        host: HostId,
        addresses: Vec<IpAddr>,
        end: TimeNs,
        (seed, queue, queues): (u64, u16, u16),
    ) -> Self {
        let window = end.saturating_sub(spec.start.0);
        let total = spec.connections.unwrap_or_else(|| {
            (u128::from(spec.rate.0) * u128::from(window) / u128::from(NS_PER_SEC)) as u64
        });
        Self {
            spec: spec.clone(),
            host,
            addresses,
            seed_name: format!("{name}/q{queue}"),
            seed,
            total,
            next_connection: 0,
            queue,
            queues,
            hosts: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            tcp: TcpStats::default(),
            stats: ActorStats::new(name, "tcp_clients"),
        }
    }

    /// Addresses of the client hosts (frames to them are delivered here).
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.addresses.clone()
    }

    fn start_time(&self, id: u64) -> TimeNs {
        self.spec.start.0
            + (u128::from(id) * u128::from(NS_PER_SEC) / u128::from(self.spec.rate.0)) as TimeNs
    }

    fn endpoint(&self, id: u64) -> (IpAddr, u16) {
        let clients = self.addresses.len().max(1) as u64;
        let address = self.addresses[(id % clients) as usize];
        let port = FIRST_PORT + ((id / clients) % PORTS_PER_CLIENT) as u16;
        (address, port)
    }

    /// The destination port of connection `id`: the client's `k`-th connection goes to
    /// `ports[k % len]` (`dst`'s port without `ports`).
    fn destination_port(&self, id: u64) -> u16 {
        let ports = &self.spec.ports;
        if ports.is_empty() {
            return self.spec.dst.port();
        }
        let round = id / self.addresses.len().max(1) as u64;
        ports[(round % ports.len() as u64) as usize]
    }

    /// Open every connection due at `now` that belongs to this queue.
    fn open_due(&mut self, now: TimeNs) {
        while self.next_connection < self.total && self.start_time(self.next_connection) <= now {
            let id = self.next_connection;
            self.next_connection += 1;
            let (address, port) = self.endpoint(id);
            if queue_of(address, port, self.queues) != self.queue {
                continue;
            }
            self.open(now, id, address, port);
        }
    }

    fn open(&mut self, now: TimeNs, id: u64, address: IpAddr, port: u16) {
        let seed = derive_u64(self.seed, &format!("{}/{address}", self.seed_name));
        let dport = self.destination_port(id);
        let client = self.hosts.entry(address).or_insert_with(|| ClientHost {
            stack: Stack::new(&[address], seed, now),
            connections: BTreeMap::new(),
            next_poll: None,
        });
        let rx = tcp::SocketBuffer::new(vec![0; CLIENT_RX_BUFFER]);
        let tx = tcp::SocketBuffer::new(vec![0; CLIENT_TX_BUFFER]);
        let mut socket = tcp::Socket::new(rx, tx);
        let remote = (smoltcp::wire::IpAddress::from(self.spec.dst.ip()), dport);
        self.tcp.attempted += 1;
        if socket
            .connect(client.stack.iface.context(), remote, port)
            .is_err()
        {
            self.tcp.failed_reset += 1;
            return;
        }
        let handle = client.stack.sockets.add(socket);
        client.connections.insert(
            handle,
            Connection {
                id,
                started: now,
                established: false,
                request_sent: false,
                received: 0,
                finished: false,
            },
        );
        client.next_poll = Some(now);
        self.deadlines
            .insert((now + self.spec.timeout.0, address, handle, id));
    }

    /// Abort connections whose deadline passed.
    fn expire(&mut self, now: TimeNs) {
        while let Some(&(deadline, address, handle, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(client) = self.hosts.get_mut(&address) else {
                continue;
            };
            if let Some(connection) = client.connections.get_mut(&handle)
                && connection.id == id
                && !connection.finished
            {
                connection.finished = true;
                self.tcp.failed_timeout += 1;
                client.stack.sockets.get_mut::<tcp::Socket>(handle).abort();
                client.next_poll = Some(now);
            }
        }
    }

    /// Poll one client host, move its connections along, and collect what it sends.
    fn service(&mut self, now: TimeNs, address: IpAddr, out: &mut Outbox) {
        let Some(client) = self.hosts.get_mut(&address) else {
            return;
        };
        client.stack.poll(now);
        let response_bytes = u64::from(self.spec.response_bytes);
        let request = format!("GET {response_bytes}\n");
        let mut finished = Vec::new();
        for (handle, connection) in &mut client.connections {
            let socket = client.stack.sockets.get_mut::<tcp::Socket>(*handle);
            progress(
                now,
                socket,
                connection,
                &request,
                response_bytes,
                &mut self.tcp,
            );
            if connection.finished
                && matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait)
            {
                finished.push((*handle, connection.id));
            }
        }
        for (handle, _) in finished {
            client.connections.remove(&handle);
            client.stack.sockets.remove(handle);
        }
        client.stack.poll(now);
        for frame in client.stack.take_transmitted() {
            self.stats.packets_sent += 1;
            out.push((self.host, frame));
        }
        client.next_poll = client.stack.poll_at(now);
    }

    fn next_wake(&self) -> Option<TimeNs> {
        let next_open =
            (self.next_connection < self.total).then(|| self.start_time(self.next_connection));
        let polls = self.hosts.values().filter_map(|c| c.next_poll);
        let deadline = self.deadlines.first().map(|d| d.0);
        polls.chain(next_open).chain(deadline).min()
    }
}

/// One connection's state machine step after a poll.
fn progress(
    now: TimeNs,
    socket: &mut tcp::Socket,
    connection: &mut Connection,
    request: &str,
    response_bytes: u64,
    stats: &mut TcpStats,
) {
    if connection.finished {
        return;
    }
    if !connection.established && socket.may_send() {
        connection.established = true;
        stats.established += 1;
        let connect_ns = (now - connection.started).max(1);
        let _ = stats.connect_ns.record(connect_ns);
        stats.sample_connect(now, connect_ns);
    }
    if connection.established && !connection.request_sent && socket.can_send() {
        connection.request_sent = socket
            .send_slice(request.as_bytes())
            .is_ok_and(|n| n == request.len());
    }
    let mut buffer = [0u8; 4096];
    while socket.can_recv() {
        match socket.recv_slice(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => connection.received += n as u64,
        }
    }
    if connection.received >= response_bytes {
        connection.finished = true;
        stats.completed += 1;
        let _ = stats.complete_ns.record((now - connection.started).max(1));
        socket.close();
    } else if !socket.is_active() || (connection.established && !socket.may_recv()) {
        connection.finished = true;
        stats.failed_reset += 1;
        socket.abort();
    }
}

impl Actor for TcpClients {
    fn wake(&mut self, now: TimeNs, out: &mut Outbox) -> Option<TimeNs> {
        self.open_due(now);
        self.expire(now);
        let due: Vec<IpAddr> = self
            .hosts
            .iter()
            .filter(|(_, c)| c.next_poll.is_some_and(|t| t <= now))
            .map(|(a, _)| *a)
            .collect();
        for address in due {
            self.service(now, address, out);
        }
        self.next_wake()
    }

    fn deliver(&mut self, now: TimeNs, frame: &[u8], out: &mut Outbox) -> Option<TimeNs> {
        self.stats.packets_received += 1;
        if let Some(destination) = crate::net::world::frame_destination(frame)
            && let Some(client) = self.hosts.get_mut(&destination)
        {
            client.stack.receive(frame);
            client.next_poll = Some(now);
        }
        self.wake(now, out)
    }

    fn stats(&self) -> ActorStats {
        let mut stats = self.stats.clone();
        stats.tcp = Some(self.tcp.clone());
        stats
    }

    fn finish(&mut self, _end: TimeNs) {
        let open = self
            .hosts
            .values()
            .flat_map(|c| c.connections.values())
            .filter(|c| !c.finished)
            .count();
        self.tcp.unfinished += open as u64;
    }
}
