//! FTP on smoltcp: `ftp_clients` sessions and the FTP server a backend runs with
//! `ftp = true`.
//!
//! A session connects to `dst` (the FTP virtual service), waits for `220`, logs in
//! (`USER` → `230`), then fetches every file of the source's `files` list with `RETR <n>`,
//! the `k`-th through mode `modes[k % len]`:
//! - `passive`: `PASV`, then a data connection to the address and port of the `227`
//!   reply. The reply must name the address the control connection went to (the VIP):
//!   a client outside cannot reach the real server's own address, so a reply that was not
//!   rewritten fails the session, as it would fail a real client behind the director.
//! - `extended`: `EPSV`, then a data connection to the control address at the `229` port.
//! - `active` / `extended_active`: the client listens on a port of its own and sends
//!   `PORT h1,h2,h3,h4,p1,p2` / `EPRT |1|a.b.c.d|port|`; the server connects from port 20.
//!
//! Every data byte is checked (byte `i` of every file is `i mod 251`), the `226` reply
//! must follow the transfer, then `QUIT` → `221`. A session counts as completed only when
//! every file arrived whole; one not done after `timeout` fails. Sessions are spread over
//! the receive queues by their control endpoint; a session's data ports are chosen among
//! the ports of its client address that hash to the same queue, so one queue runs the
//! whole session (as one CPU would with RSS-aware port choice).
//!
//! The server answers `USER`, `PASS`, `TYPE`, `PASV` (its own address, passive ports from
//! [`super::ftp_server::PASSIVE_PORT_FIRST`]), `EPSV`, `PORT`, `EPRT`, `RETR <n>` (n bytes of the pattern) and
//! `QUIT`; anything else gets `502` ([`super::ftp_server`]). Not here: the director's FTP helper
//! (`datapath::director::ftp`), which makes this work through a NAT director.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use datapath::TimeNs;
use datapath::verdict::NS_PER_SEC;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;

use super::{Actor, ActorStats, Outbox, TcpStats};
use crate::net::rng::derive_u64;
use crate::net::stack::Stack;
use crate::net::world::{HostId, queue_of};
use crate::scenario::{FtpClientsSpec, FtpMode};

pub use crate::scenario::FTP_MAX_FILES as MAX_FILES;
const FIRST_CONTROL_PORT: u16 = 1024;
const FIRST_DATA_PORT: u16 = 20000;
const CONTROL_BUFFER: usize = 4096;
const DATA_RX_BUFFER: usize = 64 * 1024;
const MAX_LINE: usize = 512;

/// Byte `offset` of every file.
pub fn file_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

pub(super) fn socket(rx: usize, tx: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(vec![0; tx]),
    )
}

/// Complete CRLF-ended lines readable on `socket` (partial ones stay in `pending`);
/// `None` when a line grows past [`MAX_LINE`].
pub(super) fn read_lines(socket: &mut tcp::Socket, pending: &mut Vec<u8>) -> Option<Vec<String>> {
    let mut buffer = [0u8; 1024];
    while socket.can_recv() {
        match socket.recv_slice(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
        }
    }
    let mut lines = Vec::new();
    while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
        lines.push(String::from_utf8_lossy(&pending[..end]).into_owned());
        pending.drain(..end + 2);
    }
    (pending.len() <= MAX_LINE).then_some(lines)
}

pub(super) fn send_line(socket: &mut tcp::Socket, line: &str) -> bool {
    let text = format!("{line}\r\n");
    socket.send_slice(text.as_bytes()) == Ok(text.len())
}

/// `h1,h2,h3,h4,p1,p2`.
pub fn port_argument(address: Ipv4Addr, port: u16) -> String {
    let [a, b, c, d] = address.octets();
    format!("{a},{b},{c},{d},{},{}", port >> 8, port & 0xff)
}

/// The address and port of a `227` reply (between the parentheses).
pub fn parse_227(line: &str) -> Option<SocketAddr> {
    let inner = line.split_once('(')?.1.split_once(')')?.0;
    let numbers: Vec<u8> = inner
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, high, low] = numbers.try_into().ok()?;
    let address = IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    Some(SocketAddr::new(address, u16::from_be_bytes([high, low])))
}

/// The port of a `229` reply (`(|||port|)`).
pub fn parse_229(line: &str) -> Option<u16> {
    let inner = line.split_once('(')?.1.split_once(')')?.0;
    inner.trim_matches('|').rsplit('|').next()?.parse().ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Greeting,
    Login,
    /// Waiting for the reply to PASV / EPSV / PORT / EPRT of file `k`.
    Setup,
    /// RETR sent: data and `226` outstanding.
    Transfer,
    Quit,
}

struct Session {
    id: u64,
    started: TimeNs,
    control: SocketHandle,
    step: Step,
    file: usize,
    pending: Vec<u8>,
    data: Option<SocketHandle>,
    received: u64,
    data_done: bool,
    transfer_done: bool,
    established: bool,
    finished: bool,
}

struct ClientHost {
    stack: Stack,
    sessions: BTreeMap<SocketHandle, Session>,
    closing: Vec<SocketHandle>,
    next_port: u16,
    next_poll: Option<TimeNs>,
}

/// FTP results beyond the TCP ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FtpStats {
    /// Files received whole.
    pub files: u64,
    /// Data bytes received and checked.
    pub bytes: u64,
    /// Sessions failed by a passive reply naming another address than the VIP.
    pub wrong_address: u64,
    /// Sessions failed by a data byte that is not the file's.
    pub corrupt: u64,
}

impl FtpStats {
    /// Add another shard's results.
    pub fn merge(&mut self, other: &Self) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.wrong_address += other.wrong_address;
        self.corrupt += other.corrupt;
    }
}

/// One `ftp_clients` source, as seen by one receive queue.
pub struct FtpClients {
    spec: FtpClientsSpec,
    host: HostId,
    addresses: Vec<IpAddr>,
    seed_name: String,
    seed: u64,
    total: u64,
    next_session: u64,
    queue: u16,
    queues: u16,
    hosts: BTreeMap<IpAddr, ClientHost>,
    deadlines: std::collections::BTreeSet<(TimeNs, IpAddr, SocketHandle, u64)>,
    tcp: TcpStats,
    ftp: FtpStats,
    stats: ActorStats,
}

impl FtpClients {
    /// The source `name` from `host`; the run ends at `end`.
    pub fn new(
        name: String,
        spec: &FtpClientsSpec,
        host: HostId,
        addresses: Vec<IpAddr>,
        end: TimeNs,
        (seed, queue, queues): (u64, u16, u16),
    ) -> Self {
        let window = end.saturating_sub(spec.start.0);
        let total = spec.sessions.unwrap_or_else(|| {
            (u128::from(spec.rate.0) * u128::from(window) / u128::from(NS_PER_SEC)) as u64
        });
        Self {
            spec: spec.clone(),
            host,
            addresses,
            seed_name: format!("{name}/q{queue}"),
            seed,
            total,
            next_session: 0,
            queue,
            queues,
            hosts: BTreeMap::new(),
            deadlines: std::collections::BTreeSet::new(),
            tcp: TcpStats::default(),
            ftp: FtpStats::default(),
            stats: ActorStats::new(name, "ftp_clients"),
        }
    }

    /// Addresses of the client hosts.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.addresses.clone()
    }

    fn start_time(&self, id: u64) -> TimeNs {
        self.spec.start.0
            + (u128::from(id) * u128::from(NS_PER_SEC) / u128::from(self.spec.rate.0)) as TimeNs
    }

    fn open_due(&mut self, now: TimeNs) {
        while self.next_session < self.total && self.start_time(self.next_session) <= now {
            let id = self.next_session;
            self.next_session += 1;
            let clients = self.addresses.len().max(1) as u64;
            let address = self.addresses[(id % clients) as usize];
            let port = FIRST_CONTROL_PORT + ((id / clients) % 18_000) as u16;
            if queue_of(address, port, self.queues) == self.queue {
                self.open(now, id, address, port);
            }
        }
    }

    fn open(&mut self, now: TimeNs, id: u64, address: IpAddr, port: u16) {
        let seed = derive_u64(self.seed, &format!("{}/{address}", self.seed_name));
        let client = self.hosts.entry(address).or_insert_with(|| ClientHost {
            stack: Stack::new(&[address], seed, now),
            sessions: BTreeMap::new(),
            closing: Vec::new(),
            next_port: FIRST_DATA_PORT,
            next_poll: None,
        });
        let mut control = socket(CONTROL_BUFFER, CONTROL_BUFFER);
        let remote = (IpAddress::from(self.spec.dst.ip()), self.spec.dst.port());
        self.tcp.attempted += 1;
        if control
            .connect(client.stack.iface.context(), remote, port)
            .is_err()
        {
            self.tcp.failed_reset += 1;
            return;
        }
        let handle = client.stack.sockets.add(control);
        client.sessions.insert(
            handle,
            Session {
                id,
                started: now,
                control: handle,
                step: Step::Greeting,
                file: 0,
                pending: Vec::new(),
                data: None,
                received: 0,
                data_done: false,
                transfer_done: false,
                established: false,
                finished: false,
            },
        );
        client.next_poll = Some(now);
        self.deadlines
            .insert((now + self.spec.timeout.0, address, handle, id));
    }

    fn expire(&mut self, now: TimeNs) {
        while let Some(&(deadline, address, handle, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(client) = self.hosts.get_mut(&address) else {
                continue;
            };
            if let Some(session) = client.sessions.get_mut(&handle)
                && session.id == id
                && !session.finished
            {
                session.finished = true;
                self.tcp.failed_timeout += 1;
                abort_session(client, handle);
                client.next_poll = Some(now);
            }
        }
    }

    fn service(&mut self, now: TimeNs, address: IpAddr, out: &mut Outbox) {
        let Some(mut client) = self.hosts.remove(&address) else {
            return;
        };
        client.stack.poll(now);
        let handles: Vec<SocketHandle> = client.sessions.keys().copied().collect();
        for handle in handles {
            self.progress(now, address, &mut client, handle);
        }
        let stack = &mut client.stack;
        client.closing.retain(|&handle| {
            let state = stack.sockets.get::<tcp::Socket>(handle).state();
            let done = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            if done {
                stack.sockets.remove(handle);
            }
            !done
        });
        client.stack.poll(now);
        for frame in client.stack.take_transmitted() {
            self.stats.packets_sent += 1;
            out.push((self.host, frame));
        }
        client.next_poll = client.stack.poll_at(now);
        self.hosts.insert(address, client);
    }

    /// One session's step after a poll.
    fn progress(
        &mut self,
        now: TimeNs,
        address: IpAddr,
        client: &mut ClientHost,
        handle: SocketHandle,
    ) {
        let Some(mut session) = client.sessions.remove(&handle) else {
            return;
        };
        if !session.finished {
            let result = self.step(now, address, client, &mut session);
            if let Err(failure) = result {
                session.finished = true;
                match failure {
                    Failure::WrongAddress => self.ftp.wrong_address += 1,
                    Failure::Corrupt => self.ftp.corrupt += 1,
                    Failure::Reset => {}
                }
                self.tcp.failed_reset += 1;
                abort_session_parts(client, &session);
            }
        }
        let control = client.stack.sockets.get::<tcp::Socket>(session.control);
        let closed = matches!(control.state(), tcp::State::Closed | tcp::State::TimeWait);
        if session.finished && closed {
            if let Some(data) = session.data {
                client.closing.push(data);
            }
            client.stack.sockets.remove(session.control);
        } else {
            client.sessions.insert(handle, session);
        }
    }

    fn step(
        &mut self,
        now: TimeNs,
        address: IpAddr,
        client: &mut ClientHost,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let control = client.stack.sockets.get_mut::<tcp::Socket>(session.control);
        if !session.established && control.may_send() {
            session.established = true;
            self.tcp.established += 1;
            let connect_ns = (now - session.started).max(1);
            let _ = self.tcp.connect_ns.record(connect_ns);
            self.tcp.sample_connect(now, connect_ns);
        }
        let lines = read_lines(control, &mut session.pending).ok_or(Failure::Reset)?;
        if !control.is_active() {
            return Err(Failure::Reset);
        }
        for line in lines {
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            self.reply(now, address, client, session, &line)?;
            if session.finished {
                return Ok(());
            }
        }
        if session.step == Step::Transfer {
            self.receive_data(client, session)?;
            if session.data_done && session.transfer_done {
                self.ftp.files += 1;
                if let Some(data) = session.data.take() {
                    client.closing.push(data);
                }
                session.file += 1;
                self.next_file(address, client, session)?;
            }
        }
        Ok(())
    }

    fn reply(
        &mut self,
        now: TimeNs,
        address: IpAddr,
        client: &mut ClientHost,
        session: &mut Session,
        line: &str,
    ) -> Result<(), Failure> {
        let code = line.get(..3).unwrap_or("");
        match (session.step, code) {
            (Step::Greeting, "220") => {
                session.step = Step::Login;
                self.command(client, session, "USER anonymous")
            }
            (Step::Login, "230") => self.next_file(address, client, session),
            (Step::Setup, "227" | "229" | "200") => self.retrieve(address, client, session, line),
            (Step::Transfer, "150" | "125") => Ok(()),
            (Step::Transfer, "226") => {
                session.transfer_done = true;
                Ok(())
            }
            (Step::Quit, "221") => {
                session.finished = true;
                self.tcp.completed += 1;
                let _ = self.tcp.complete_ns.record((now - session.started).max(1));
                client
                    .stack
                    .sockets
                    .get_mut::<tcp::Socket>(session.control)
                    .close();
                Ok(())
            }
            _ => Err(Failure::Reset),
        }
    }

    fn command(
        &self,
        client: &mut ClientHost,
        session: &Session,
        line: &str,
    ) -> Result<(), Failure> {
        let control = client.stack.sockets.get_mut::<tcp::Socket>(session.control);
        send_line(control, line).then_some(()).ok_or(Failure::Reset)
    }

    fn mode(&self, file: usize) -> FtpMode {
        self.spec.modes[file % self.spec.modes.len()]
    }

    /// Ask for the next file's data connection, or quit after the last.
    fn next_file(
        &mut self,
        address: IpAddr,
        client: &mut ClientHost,
        session: &mut Session,
    ) -> Result<(), Failure> {
        if session.file >= self.spec.files.len() {
            session.step = Step::Quit;
            return self.command(client, session, "QUIT");
        }
        session.step = Step::Setup;
        (session.received, session.data_done, session.transfer_done) = (0, false, false);
        let command = match self.mode(session.file) {
            FtpMode::Passive => "PASV".to_string(),
            FtpMode::Extended => "EPSV".to_string(),
            mode @ (FtpMode::Active | FtpMode::ExtendedActive) => {
                let port = self.data_port(address, client);
                let mut listener = socket(DATA_RX_BUFFER, 1024);
                listener.listen(port).map_err(|_| Failure::Reset)?;
                session.data = Some(client.stack.sockets.add(listener));
                match (mode, address) {
                    (FtpMode::Active, IpAddr::V4(v4)) => {
                        format!("PORT {}", port_argument(v4, port))
                    }
                    (_, IpAddr::V4(v4)) => format!("EPRT |1|{v4}|{port}|"),
                    (_, IpAddr::V6(v6)) => format!("EPRT |2|{v6}|{port}|"),
                }
            }
        };
        self.command(client, session, &command)
    }

    /// A local port of `address` on this queue, not used recently.
    fn data_port(&self, address: IpAddr, client: &mut ClientHost) -> u16 {
        loop {
            let port = client.next_port;
            client.next_port = if port >= 60_000 {
                FIRST_DATA_PORT
            } else {
                port + 1
            };
            if queue_of(address, port, self.queues) == self.queue {
                return port;
            }
        }
    }

    /// The setup reply arrived: open the passive data connection, send `RETR`.
    fn retrieve(
        &mut self,
        address: IpAddr,
        client: &mut ClientHost,
        session: &mut Session,
        line: &str,
    ) -> Result<(), Failure> {
        let vip = self.spec.dst.ip();
        let target = match self.mode(session.file) {
            FtpMode::Passive => {
                let target = parse_227(line).ok_or(Failure::Reset)?;
                if target.ip() != vip {
                    return Err(Failure::WrongAddress);
                }
                Some(target)
            }
            FtpMode::Extended => Some(SocketAddr::new(vip, parse_229(line).ok_or(Failure::Reset)?)),
            FtpMode::Active | FtpMode::ExtendedActive => None,
        };
        if let Some(target) = target {
            let port = self.data_port(address, client);
            let mut data = socket(DATA_RX_BUFFER, 1024);
            let remote = (IpAddress::from(target.ip()), target.port());
            data.connect(client.stack.iface.context(), remote, port)
                .map_err(|_| Failure::Reset)?;
            session.data = Some(client.stack.sockets.add(data));
        }
        session.step = Step::Transfer;
        let size = self.spec.files[session.file];
        self.command(client, session, &format!("RETR {size}"))
    }

    fn receive_data(
        &mut self,
        client: &mut ClientHost,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let Some(handle) = session.data else {
            return Ok(());
        };
        let data = client.stack.sockets.get_mut::<tcp::Socket>(handle);
        let mut buffer = [0u8; 4096];
        while data.can_recv() {
            let n = match data.recv_slice(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let start = session.received;
            if (0..n).any(|i| buffer[i] != file_byte(start + i as u64)) {
                return Err(Failure::Corrupt);
            }
            session.received += n as u64;
            self.ftp.bytes += n as u64;
        }
        let size = u64::from(self.spec.files[session.file]);
        let peer_closed = matches!(
            data.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
                | tcp::State::Closed
        );
        if peer_closed && !session.data_done {
            if session.received != size {
                return Err(Failure::Corrupt);
            }
            session.data_done = true;
            data.close();
        }
        Ok(())
    }

    fn next_wake(&self) -> Option<TimeNs> {
        let next_open =
            (self.next_session < self.total).then(|| self.start_time(self.next_session));
        let polls = self.hosts.values().filter_map(|c| c.next_poll);
        let deadline = self.deadlines.first().map(|d| d.0);
        polls.chain(next_open).chain(deadline).min()
    }
}

/// Why a session failed.
enum Failure {
    Reset,
    WrongAddress,
    Corrupt,
}

fn abort_session_parts(client: &mut ClientHost, session: &Session) {
    client
        .stack
        .sockets
        .get_mut::<tcp::Socket>(session.control)
        .abort();
    if let Some(data) = session.data {
        client.stack.sockets.get_mut::<tcp::Socket>(data).abort();
    }
}

fn abort_session(client: &mut ClientHost, handle: SocketHandle) {
    if let Some(session) = client.sessions.remove(&handle) {
        abort_session_parts(client, &session);
        client.sessions.insert(handle, session);
    }
}

impl Actor for FtpClients {
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
        stats.ftp = Some(self.ftp.clone());
        stats
    }

    fn finish(&mut self, _end: TimeNs) {
        let open = self
            .hosts
            .values()
            .flat_map(|c| c.sessions.values())
            .filter(|s| !s.finished)
            .count();
        self.tcp.unfinished += open as u64;
    }
}
