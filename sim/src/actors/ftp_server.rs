//! The FTP server of a backend with `ftp = true`: a smoltcp host listening on the
//! backend's `tcp_ports` (21) that answers `USER`/`PASS` (`230`), `TYPE` (`200`), `PASV`
//! (`227` with its own address and a passive port from [`PASSIVE_PORT_FIRST`]), `EPSV`
//! (`229 (|||port|)`), `PORT` / `EPRT` (`200`), `RETR <n>` (`150`, `n` bytes of
//! [`super::ftp::file_byte`] over the data connection, `226` once they are acknowledged)
//! and `QUIT` (`221`); anything else gets `502`. Active data connections are opened from
//! port 20, as a real server does.
//!
//! Bounded: at most [`SERVER_SESSION_CAPACITY`] sessions (further control connections
//! wait in the listen backlog, counted in `backlog_full`). Not here: the clients
//! ([`super::ftp`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use datapath::TimeNs;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::IpAddress;

use super::ftp::{file_byte, port_argument, read_lines, send_line, socket};
use super::{Actor, ActorStats, BackendStats, Outbox};
use crate::net::stack::Stack;
use crate::net::world::HostId;
use crate::scenario::BackendSpec;

/// First passive port the server hands out (then upwards, wrapping at 60000).
pub const PASSIVE_PORT_FIRST: u16 = 50000;
/// Most FTP sessions a server keeps.
pub const SERVER_SESSION_CAPACITY: usize = 256;
/// Control-connection listeners kept waiting per port.
const CONTROL_LISTENERS: usize = 4;
const PASSIVE_PORT_END: u16 = 60000;
/// The active-mode data port.
const DATA_PORT: u16 = 20;
const CONTROL_BUFFER: usize = 4096;
const DATA_TX_BUFFER: usize = 16 * 1024;
/// Idle time after which a server socket is aborted.
const IDLE_TIMEOUT_MS: u64 = 10_000;

struct Transfer {
    socket: SocketHandle,
    size: u64,
    sent: u64,
    closing: bool,
}

#[derive(Default)]
struct ServerSession {
    accepted: bool,
    greeted: bool,
    pending: Vec<u8>,
    passive: Option<SocketHandle>,
    active: Option<SocketAddr>,
    transfer: Option<Transfer>,
    quitting: bool,
}

/// One FTP backend, as seen by one receive queue.
pub struct FtpServer {
    host: HostId,
    address: IpAddr,
    stack: Stack,
    ports: Vec<u16>,
    sessions: BTreeMap<SocketHandle, ServerSession>,
    closing: Vec<SocketHandle>,
    next_passive: u16,
    backend: BackendStats,
    stats: ActorStats,
}

impl FtpServer {
    /// The backend `spec` as host `host`, its stack seeded with `random_seed`.
    pub fn new(spec: &BackendSpec, host: HostId, random_seed: u64) -> Self {
        let addresses: Vec<IpAddr> = std::iter::once(spec.addr)
            .chain(spec.also.iter().copied())
            .collect();
        let mut server = Self {
            host,
            address: spec.addr,
            stack: Stack::new(&addresses, random_seed, 0),
            ports: spec.tcp_ports.clone(),
            sessions: BTreeMap::new(),
            closing: Vec::new(),
            next_passive: PASSIVE_PORT_FIRST,
            backend: BackendStats::default(),
            stats: ActorStats::new(spec.name.clone(), "backend"),
        };
        server.refill_listeners();
        server
    }

    fn refill_listeners(&mut self) {
        for &port in &self.ports.clone() {
            let waiting = self
                .sessions
                .iter()
                .filter(|(handle, session)| {
                    !session.accepted
                        && self
                            .stack
                            .sockets
                            .get::<tcp::Socket>(**handle)
                            .local_endpoint()
                            .is_none_or(|e| e.port == port)
                })
                .count();
            for _ in waiting..CONTROL_LISTENERS {
                if self.sessions.len() >= SERVER_SESSION_CAPACITY {
                    self.backend.backlog_full += 1;
                    return;
                }
                let mut listener = socket(CONTROL_BUFFER, CONTROL_BUFFER);
                listener.set_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)));
                if listener.listen(port).is_err() {
                    return;
                }
                let handle = self.stack.sockets.add(listener);
                self.sessions.insert(handle, ServerSession::default());
            }
        }
    }

    fn passive_port(&mut self) -> u16 {
        let port = self.next_passive;
        self.next_passive = if port + 1 >= PASSIVE_PORT_END {
            PASSIVE_PORT_FIRST
        } else {
            port + 1
        };
        port
    }

    fn serve(&mut self) {
        let handles: Vec<SocketHandle> = self.sessions.keys().copied().collect();
        for handle in handles {
            let Some(mut session) = self.sessions.remove(&handle) else {
                continue;
            };
            self.serve_one(handle, &mut session);
            let state = self.stack.sockets.get::<tcp::Socket>(handle).state();
            let gone = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            if gone && (session.accepted || state == tcp::State::Closed) {
                for data in [session.passive, session.transfer.map(|t| t.socket)]
                    .into_iter()
                    .flatten()
                {
                    self.stack.sockets.get_mut::<tcp::Socket>(data).abort();
                    self.closing.push(data);
                }
                self.stack.sockets.remove(handle);
            } else {
                self.sessions.insert(handle, session);
            }
        }
        let stack = &mut self.stack;
        self.closing.retain(|&handle| {
            let state = stack.sockets.get::<tcp::Socket>(handle).state();
            let done = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            if done {
                stack.sockets.remove(handle);
            }
            !done
        });
    }

    fn serve_one(&mut self, handle: SocketHandle, session: &mut ServerSession) {
        let control = self.stack.sockets.get_mut::<tcp::Socket>(handle);
        if !session.accepted && control.is_active() && control.state() != tcp::State::SynReceived {
            session.accepted = true;
            self.backend.tcp_accepted += 1;
        }
        if !session.accepted || session.quitting {
            return;
        }
        if !session.greeted && control.can_send() {
            session.greeted = send_line(control, "220 lbsim FTP server ready");
        }
        let Some(lines) = read_lines(control, &mut session.pending) else {
            control.abort();
            return;
        };
        for line in lines {
            let reply = self.command(session, &line);
            let control = self.stack.sockets.get_mut::<tcp::Socket>(handle);
            send_line(control, &reply);
            if session.quitting {
                control.close();
                return;
            }
        }
        self.send_data(handle, session);
    }

    /// One command; the reply line.
    fn command(&mut self, session: &mut ServerSession, line: &str) -> String {
        let (verb, argument) = line.split_once(' ').unwrap_or((line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "USER" | "PASS" => "230 Logged in".into(),
            "TYPE" => "200 Type set".into(),
            "PASV" | "EPSV" => {
                let port = self.passive_port();
                let mut listener = socket(1024, DATA_TX_BUFFER);
                listener.set_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)));
                if listener.listen(port).is_err() {
                    return "425 Cannot open passive connection".into();
                }
                if let Some(old) = session.passive.replace(self.stack.sockets.add(listener)) {
                    self.stack.sockets.get_mut::<tcp::Socket>(old).abort();
                    self.closing.push(old);
                }
                session.active = None;
                match (verb.eq_ignore_ascii_case("PASV"), self.address) {
                    (true, IpAddr::V4(v4)) => {
                        format!("227 Entering Passive Mode ({}).", port_argument(v4, port))
                    }
                    (true, IpAddr::V6(_)) => "502 Use EPSV".into(),
                    (false, _) => format!("229 Entering Extended Passive Mode (|||{port}|)"),
                }
            }
            "PORT" => match parse_port(argument) {
                Some(target) => {
                    session.active = Some(target);
                    "200 PORT command successful".into()
                }
                None => "501 Bad PORT".into(),
            },
            "EPRT" => match parse_eprt(argument) {
                Some(target) => {
                    session.active = Some(target);
                    "200 EPRT command successful".into()
                }
                None => "501 Bad EPRT".into(),
            },
            "RETR" => self.retrieve(session, argument),
            "QUIT" => {
                session.quitting = true;
                "221 Goodbye".into()
            }
            _ => "502 Command not implemented".into(),
        }
    }

    fn retrieve(&mut self, session: &mut ServerSession, argument: &str) -> String {
        let Ok(size) = argument.trim().parse::<u64>() else {
            return "550 No such file".into();
        };
        let socket_handle = if let Some(listener) = session.passive.take() {
            listener
        } else if let Some(target) = session.active.take() {
            let mut data = socket(1024, DATA_TX_BUFFER);
            data.set_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)));
            let remote = (IpAddress::from(target.ip()), target.port());
            if data
                .connect(self.stack.iface.context(), remote, DATA_PORT)
                .is_err()
            {
                return "425 Cannot open data connection".into();
            }
            self.stack.sockets.add(data)
        } else {
            return "425 Use PORT or PASV first".into();
        };
        session.transfer = Some(Transfer {
            socket: socket_handle,
            size,
            sent: 0,
            closing: false,
        });
        "150 Opening BINARY mode data connection".into()
    }

    fn send_data(&mut self, control: SocketHandle, session: &mut ServerSession) {
        let Some(transfer) = session.transfer.as_mut() else {
            return;
        };
        let data = self.stack.sockets.get_mut::<tcp::Socket>(transfer.socket);
        let mut chunk = [0u8; 1024];
        while transfer.sent < transfer.size && data.can_send() {
            let want = (transfer.size - transfer.sent).min(chunk.len() as u64) as usize;
            for (i, byte) in chunk[..want].iter_mut().enumerate() {
                *byte = file_byte(transfer.sent + i as u64);
            }
            match data.send_slice(&chunk[..want]) {
                Ok(0) | Err(_) => break,
                Ok(sent) => transfer.sent += sent as u64,
            }
        }
        if transfer.sent == transfer.size && !transfer.closing {
            data.close();
            transfer.closing = true;
        }
        let acknowledged = transfer.closing && data.send_queue() == 0;
        let reply = if acknowledged {
            Some("226 Transfer complete")
        } else if !data.is_active() && data.state() != tcp::State::Listen {
            Some("426 Connection closed; transfer aborted")
        } else {
            None
        };
        if let Some(reply) = reply {
            let socket = transfer.socket;
            session.transfer = None;
            self.closing.push(socket);
            self.backend.tcp_served += u64::from(acknowledged);
            let control = self.stack.sockets.get_mut::<tcp::Socket>(control);
            send_line(control, reply);
        }
    }
}

/// `h1,h2,h3,h4,p1,p2`.
fn parse_port(argument: &str) -> Option<SocketAddr> {
    let numbers: Vec<u8> = argument
        .trim()
        .split(',')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, high, low] = numbers.try_into().ok()?;
    let address = IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    Some(SocketAddr::new(address, u16::from_be_bytes([high, low])))
}

/// `<d>1|2<d>address<d>port<d>`.
fn parse_eprt(argument: &str) -> Option<SocketAddr> {
    let argument = argument.trim();
    let delimiter = argument.chars().next()?;
    let parts: Vec<&str> = argument.split(delimiter).collect();
    let [_, _, address, port, _] = parts.as_slice() else {
        return None;
    };
    Some(SocketAddr::new(address.parse().ok()?, port.parse().ok()?))
}

impl Actor for FtpServer {
    fn wake(&mut self, now: TimeNs, out: &mut Outbox) -> Option<TimeNs> {
        self.stack.poll(now);
        self.serve();
        self.refill_listeners();
        self.stack.poll(now);
        for frame in self.stack.take_transmitted() {
            self.stats.packets_sent += 1;
            out.push((self.host, frame));
        }
        self.stack.poll_at(now)
    }

    fn deliver(&mut self, now: TimeNs, frame: &[u8], out: &mut Outbox) -> Option<TimeNs> {
        self.stats.packets_received += 1;
        self.stack.receive(frame);
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
