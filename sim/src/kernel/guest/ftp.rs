//! FTP through a NAT director, compared with the real `ip_vs_ftp`: one scripted FTP
//! exchange ([`script`]: two clients, control connections on port 21, passive `PASV` /
//! `EPSV` and active `PORT` / `EPRT` data connections, `227` replies that grow when the
//! virtual address is written over the server's) is played through a [`Wire`] — lbsim's
//! `Directors` with the FTP helper ([`SimWire`]), or the guest kernel's IPVS with
//! `ip_vs_ftp` (see [`super::ftp_run`]) — and every frame the director forwards is
//! recorded as text: addresses, ports, flags, sequence and acknowledgement numbers and the
//! payload bytes ([`frame_text`]). Two services ([`Service`]): a NAT service on port 21,
//! and the seeds' fwmark service with persistence.
//!
//! Both ends behave like TCP peers of what they *received*: each acknowledges the
//! sequence numbers the director delivered to it (so the client acknowledges the grown
//! reply and the director must adjust the acknowledgement back), a passive data
//! connection goes to the address and port the client read in the (rewritten) `227` /
//! `229` reply, and an active data connection is opened by the real server the control
//! connection went to, from port 20 to the address of the `PORT` / `EPRT` command. So a
//! different rewrite, adjustment or choice of real server on one side shows as different
//! text from that step on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;

use datapath::director::{DirectorOptions, Directors};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ip_proto, parse, tcp_flags};
use serde::{Deserialize, Serialize};

use super::oracle::{CLIENT_MAC, LB_CLIENT_MAC, LB_SERVER_MAC, SERVER_MAC};

/// The virtual address: 13 characters in a `227` reply (`203,0,113,121`) where the real
/// servers' take 10 (`10,100,0,2`), so every rewrite grows the reply by 3 bytes.
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 121);
/// The FTP control port (`ip_vs_ftp ports=21`).
pub const CONTROL_PORT: u16 = 21;

/// The director: a NAT service on the control port, round robin over two real servers.
pub const APPLIANCE: &str = r#"
[[director]]
name = "ftp"
vip = "203.0.113.121"
port = 21
scheduler = "rr"
real = [{ addr = "10.100.0.2:21" }, { addr = "10.100.0.3:21" }]
"#;

/// The seeds' form of an FTP service: one firewall mark for every TCP port of the virtual
/// address (control, active data port 20, passive range), persistence 300 s, real servers
/// without a port.
pub const FWMARK_APPLIANCE: &str = r#"
[[director]]
name = "ftp"
fwmark = 21
scheduler = "rr"
persistence = "300s"
real = [{ addr = "10.100.0.2:0" }, { addr = "10.100.0.3:0" }]
"#;

/// Which service the script goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Service {
    /// [`APPLIANCE`]: the virtual address's port 21.
    Port,
    /// [`FWMARK_APPLIANCE`] and its mark rule.
    Fwmark,
}

impl Service {
    /// The `[[director]]` table.
    pub fn appliance(self) -> &'static str {
        match self {
            Self::Port => APPLIANCE,
            Self::Fwmark => FWMARK_APPLIANCE,
        }
    }

    /// The mark rules (mangle PREROUTING in the guest; the same classifier in lbsim).
    pub fn marks(self) -> Vec<super::oracle::MarkRule> {
        match self {
            Self::Port => Vec::new(),
            Self::Fwmark => vec![super::oracle::MarkRule {
                proto: "tcp".into(),
                network: format!("{VIP}/32"),
                mark: 21,
            }],
        }
    }
}

/// What a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnKind {
    /// A control connection from a client to the virtual service.
    Control,
    /// A passive data connection of control connection `.0`: the client connects to the
    /// address of the last `227` / `229` reply it received.
    Passive(usize),
    /// An active data connection of control connection `.0`: its real server connects from
    /// port 20 to the client's port.
    Active(usize),
}

/// A connection of the script: its kind and the client's own address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSpec {
    /// What it is.
    pub kind: ConnKind,
    /// The client's address and port.
    pub client: SocketAddr,
}

/// The payload of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// These bytes.
    Text(String),
    /// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).` with the sending real server's
    /// own address and this port.
    Pasv(u16),
    /// `229 Entering Extended Passive Mode (|||port|)`.
    Epsv(u16),
    /// `PORT h1,h2,h3,h4,p1,p2` with the client's address and this port.
    Port(u16),
    /// `EPRT |1|address|port|` with the client's address and this port.
    Eprt(u16),
}

/// One segment of the script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The opening end's SYN (the client's; the real server's for an active data connection).
    Syn(usize),
    /// The other end's SYN-ACK.
    SynAck(usize),
    /// A segment from the client (true) or the server with the payload (an empty text is a
    /// pure acknowledgement).
    Send(usize, bool, Payload),
    /// A FIN from the client (true) or the server.
    Fin(usize, bool),
}

/// A whole exchange: connections and segments in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// The connections.
    pub conns: Vec<ConnSpec>,
    /// The segments.
    pub steps: Vec<Step>,
}

fn text(s: &str) -> Payload {
    Payload::Text(s.to_string())
}

/// The exchange both sides play. Client 1 (to the first real server rr picks) fetches
/// through `PASV`, `EPSV`, `PORT`, `PASV` again (a second length change: the offsets
/// accumulate) and `EPRT`; client 2 through `PASV` and `PORT`; both control connections
/// carry commands after every rewrite and end with `QUIT` and FINs.
pub fn script() -> Script {
    let client = |n: u8, port| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)), port);
    let mut conns = vec![
        ConnSpec {
            kind: ConnKind::Control,
            client: client(1, 40_021),
        },
        ConnSpec {
            kind: ConnKind::Control,
            client: client(2, 40_021),
        },
    ];
    let mut steps = Vec::new();
    for control in 0..2 {
        steps.extend([
            Step::Syn(control),
            Step::SynAck(control),
            Step::Send(control, true, text("")),
            Step::Send(control, false, text("220 lbsim FTP server ready\r\n")),
            Step::Send(control, true, text("USER anonymous\r\n")),
            Step::Send(control, false, text("230 Logged in\r\n")),
        ]);
    }
    // (passive, extended, port): PASV, EPSV, PORT, PASV, EPRT; PASV, PORT.
    let transfers: [&[(bool, bool, u16)]; 2] = [
        &[
            (true, false, 50_001),
            (true, true, 50_002),
            (false, false, 40_101),
            (true, false, 50_003),
            (false, true, 40_102),
        ],
        &[(true, false, 50_011), (false, false, 40_111)],
    ];
    for (control, list) in transfers.into_iter().enumerate() {
        for (n, &(passive, extended, port)) in list.iter().enumerate() {
            let data = conns.len();
            let client_ip = conns[control].client.ip();
            let (kind, client_port) = if passive {
                (ConnKind::Passive(control), 41_000 + data as u16)
            } else {
                (ConnKind::Active(control), port)
            };
            conns.push(ConnSpec {
                kind,
                client: SocketAddr::new(client_ip, client_port),
            });
            steps.extend(transfer([control, data], passive, extended, port, n));
        }
        steps.extend([
            Step::Send(control, true, text("QUIT\r\n")),
            Step::Send(control, false, text("221 Goodbye\r\n")),
            Step::Fin(control, false),
            Step::Fin(control, true),
            Step::Send(control, false, text("")),
        ]);
    }
    Script { conns, steps }
}

/// One file through data connection `data` of `control`: the mode command and its reply,
/// `RETR`, the data connection's handshake, the file, its close and the `226` reply.
fn transfer(conns: [usize; 2], passive: bool, extended: bool, port: u16, n: usize) -> Vec<Step> {
    let [control, data] = conns;
    let (command, reply) = match (passive, extended) {
        (true, false) => (text("PASV\r\n"), Payload::Pasv(port)),
        (true, true) => (text("EPSV\r\n"), Payload::Epsv(port)),
        (false, false) => (Payload::Port(port), text("200 PORT command successful\r\n")),
        (false, true) => (Payload::Eprt(port), text("200 EPRT command successful\r\n")),
    };
    vec![
        Step::Send(control, true, command),
        Step::Send(control, false, reply),
        Step::Send(control, true, text(&format!("RETR file{n}.txt\r\n"))),
        Step::Syn(data),
        Step::SynAck(data),
        Step::Send(data, !passive, text("")),
        Step::Send(
            control,
            false,
            text("150 Opening BINARY mode data connection\r\n"),
        ),
        Step::Send(data, false, text(&format!("contents of file {n}\n"))),
        Step::Send(data, true, text("")),
        Step::Fin(data, false),
        Step::Fin(data, true),
        Step::Send(data, false, text("")),
        Step::Send(control, false, text("226 Transfer complete\r\n")),
        Step::Send(control, true, text("")),
    ]
}

/// How the director under test is reached: inject a frame from one side, get the frames
/// the director sent out on the other side.
pub trait Wire {
    /// Send `frame` from the client side (true) or the server side; the frames forwarded.
    fn exchange(&mut self, frame: Vec<u8>, from_client: bool) -> anyhow::Result<Vec<Vec<u8>>>;
}

/// What happened to one step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The segment sent ([`frame_text`]), or why it could not be.
    pub sent: String,
    /// The frames forwarded to the other side.
    pub forwarded: Vec<String>,
}

/// One side's record of the whole script.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FtpRecord {
    /// Per step.
    pub steps: Vec<StepRecord>,
    /// Per connection: the real server (address and port) its first forwarded segment
    /// reached, or (active data connections) the one whose SYN the director translated to
    /// come from the virtual address.
    pub reals: Vec<Option<SocketAddr>>,
}

/// An end's view of a connection.
#[derive(Clone, Copy, Debug, Default)]
struct End {
    /// Its own address (a real server's: learned from what the director forwarded).
    own: Option<SocketAddr>,
    /// Where it sends.
    peer: Option<SocketAddr>,
    /// Next sequence number to send.
    seq: u32,
    /// Next sequence number expected (what it acknowledges).
    rcv: u32,
}

#[derive(Clone, Debug, Default)]
struct ConnState {
    client: End,
    server: End,
    /// The passive address of the last `227` / `229` the client received (control
    /// connections).
    passive: Option<SocketAddr>,
}

/// Play `script` through `wire`.
pub fn play(script: &Script, wire: &mut dyn Wire) -> anyhow::Result<FtpRecord> {
    let mut conns: Vec<ConnState> = script
        .conns
        .iter()
        .enumerate()
        .map(|(n, spec)| {
            let iss = 1_000_000 * (n as u32 + 1);
            let mut state = ConnState::default();
            state.client.own = Some(spec.client);
            state.client.seq = iss;
            state.server.seq = iss + 500_000;
            if spec.kind == ConnKind::Control {
                state.client.peer = Some(SocketAddr::new(IpAddr::V4(VIP), CONTROL_PORT));
            }
            state
        })
        .collect();
    let mut record = FtpRecord {
        reals: vec![None; script.conns.len()],
        ..FtpRecord::default()
    };
    for step in &script.steps {
        let (conn, from_client) = match *step {
            Step::Syn(c) => (c, !matches!(script.conns[c].kind, ConnKind::Active(_))),
            Step::SynAck(c) => (c, matches!(script.conns[c].kind, ConnKind::Active(_))),
            Step::Send(c, from_client, _) | Step::Fin(c, from_client) => (c, from_client),
        };
        prepare(script, &mut conns, conn);
        let Some(frame) = segment(script, &mut conns[conn], conn, step, from_client) else {
            record.steps.push(StepRecord {
                sent: "not sent: the end does not know its peer".into(),
                forwarded: Vec::new(),
            });
            continue;
        };
        let sent = frame_text(&frame);
        let forwarded = wire.exchange(frame, from_client)?;
        for out in &forwarded {
            deliver(script, &mut conns, &mut record.reals, out, !from_client);
        }
        record.steps.push(StepRecord {
            sent,
            forwarded: forwarded.iter().map(|f| frame_text(f)).collect(),
        });
    }
    Ok(record)
}

/// Data connections learn their far ends from their control connection when they open.
fn prepare(script: &Script, conns: &mut [ConnState], conn: usize) {
    match script.conns[conn].kind {
        ConnKind::Control => {}
        ConnKind::Passive(control) => {
            if conns[conn].client.peer.is_none() {
                conns[conn].client.peer = conns[control].passive;
            }
        }
        ConnKind::Active(control) => {
            if conns[conn].server.own.is_none() {
                let real = conns[control]
                    .server
                    .own
                    .map(|r| SocketAddr::new(r.ip(), 20));
                conns[conn].server.own = real;
                conns[conn].server.peer = Some(script.conns[conn].client);
            }
        }
    }
}

/// The frame of a step from the given end (advancing its sequence number), or `None`
/// when that end does not know its addresses yet.
fn segment(
    script: &Script,
    state: &mut ConnState,
    conn: usize,
    step: &Step,
    from_client: bool,
) -> Option<Vec<u8>> {
    let end = if from_client {
        &mut state.client
    } else {
        &mut state.server
    };
    let (own, peer) = (end.own?, end.peer?);
    let client_ip = script.conns[conn].client.ip();
    let (flags, payload): (u8, Vec<u8>) = match step {
        Step::Syn(_) => (tcp_flags::SYN, Vec::new()),
        Step::SynAck(_) => (tcp_flags::SYN | tcp_flags::ACK, Vec::new()),
        Step::Fin(..) => (tcp_flags::FIN | tcp_flags::ACK, Vec::new()),
        Step::Send(_, _, payload) => {
            let bytes = payload_bytes(payload, own.ip(), client_ip);
            let flags = if bytes.is_empty() {
                tcp_flags::ACK
            } else {
                tcp_flags::ACK | tcp_flags::PSH
            };
            (flags, bytes)
        }
    };
    let ack = if flags & tcp_flags::ACK != 0 {
        end.rcv
    } else {
        0
    };
    let macs = if from_client {
        (CLIENT_MAC, LB_CLIENT_MAC)
    } else {
        (SERVER_MAC, LB_SERVER_MAC)
    };
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (own.ip(), peer.ip()) else {
        return None;
    };
    let frame = PacketBuilder::eth()
        .macs(macs.0, macs.1)
        .ipv4(src, dst)
        .tcp(own.port(), peer.port())
        .flags(flags)
        .seq_ack(end.seq, ack)
        .window(65_000)
        .payload(&payload)
        .build();
    end.seq = end.seq.wrapping_add(sequence_length(flags, payload.len()));
    Some(frame)
}

fn sequence_length(flags: u8, payload: usize) -> u32 {
    let control = u32::from(flags & (tcp_flags::SYN | tcp_flags::FIN) != 0);
    payload as u32 + control
}

fn payload_bytes(payload: &Payload, own: IpAddr, client: IpAddr) -> Vec<u8> {
    let commas = |ip: IpAddr| ip.to_string().replace('.', ",");
    let split = |port: u16| format!("{},{}", port >> 8, port & 0xff);
    match payload {
        Payload::Text(text) => text.clone().into_bytes(),
        Payload::Pasv(port) => format!(
            "227 Entering Passive Mode ({},{}).\r\n",
            commas(own),
            split(*port)
        )
        .into_bytes(),
        Payload::Epsv(port) => {
            format!("229 Entering Extended Passive Mode (|||{port}|)\r\n").into_bytes()
        }
        Payload::Port(port) => format!("PORT {},{}\r\n", commas(client), split(*port)).into_bytes(),
        Payload::Eprt(port) => format!("EPRT |1|{client}|{port}|\r\n").into_bytes(),
    }
}

/// A frame the director sent reaches an end: the client (true) or the server side.
fn deliver(
    script: &Script,
    conns: &mut [ConnState],
    reals: &mut [Option<SocketAddr>],
    frame: &[u8],
    to_client: bool,
) {
    let meta = parse(LinkType::Ethernet, frame, frame.len() as u32, 0);
    let (Some(src), Some(dst), Some(sport), Some(dport), Some(tcp)) = (
        meta.src,
        meta.dst,
        meta.sport,
        meta.dport,
        meta.tcp.as_ref(),
    ) else {
        return;
    };
    if meta.proto != Some(ip_proto::TCP) {
        return;
    }
    let (client, far) = if to_client {
        (SocketAddr::new(dst, dport), SocketAddr::new(src, sport))
    } else {
        (SocketAddr::new(src, sport), SocketAddr::new(dst, dport))
    };
    let Some(conn) = script.conns.iter().position(|c| c.client == client) else {
        return;
    };
    let payload = tcp_payload(frame, &meta);
    let state = &mut conns[conn];
    let end = if to_client {
        state.client.peer.get_or_insert(far);
        &mut state.client
    } else {
        state.server.own.get_or_insert(far);
        state.server.peer.get_or_insert(client);
        reals[conn].get_or_insert(far);
        &mut state.server
    };
    let next = tcp
        .seq
        .wrapping_add(sequence_length(meta.tcp_flags, payload.len()));
    end.rcv = next;
    if to_client {
        // An active data connection's real server is the one whose packets the director
        // translated to come from the virtual address.
        if matches!(script.conns[conn].kind, ConnKind::Active(_))
            && far.ip() == IpAddr::V4(VIP)
            && let Some(own) = state.server.own
        {
            reals[conn].get_or_insert(own);
        }
        if let Some(passive) = passive_address(payload, far.ip()) {
            state.passive = Some(passive);
        }
    }
}

fn tcp_payload<'a>(frame: &'a [u8], meta: &datapath::packet::PacketMeta) -> &'a [u8] {
    let start = usize::from(meta.payload_offset);
    let end = usize::from(meta.l3_offset) + meta.ip_len as usize;
    if start == 0 || start >= end {
        return &[];
    }
    frame.get(start..end).unwrap_or(&[])
}

/// The address a `227` (`(h1,h2,h3,h4,p1,p2)`) or `229` (`(|||port|)`, on the control
/// connection's peer address) reply tells the client to connect to.
pub fn passive_address(payload: &[u8], control_peer: IpAddr) -> Option<SocketAddr> {
    let text = std::str::from_utf8(payload).ok()?;
    let inner = text.split_once('(')?.1.split_once(')')?.0;
    if text.starts_with("229") {
        let port = inner.trim_matches('|').parse().ok()?;
        return Some(SocketAddr::new(control_peer, port));
    }
    if !text.starts_with("227") {
        return None;
    }
    let numbers: Vec<u8> = inner
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, p1, p2] = numbers[..] else {
        return None;
    };
    let ip = IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    Some(SocketAddr::new(ip, u16::from(p1) << 8 | u16::from(p2)))
}

/// A forwarded frame as compared: addresses and ports, TCP flags, sequence and
/// acknowledgement numbers, and the payload (printable ASCII as is, other bytes escaped).
pub fn frame_text(frame: &[u8]) -> String {
    let meta = parse(LinkType::Ethernet, frame, frame.len() as u32, 0);
    let (Some(src), Some(dst), Some(tcp)) = (meta.src, meta.dst, meta.tcp.as_ref()) else {
        return format!("non-tcp ({} bytes)", frame.len());
    };
    let payload = tcp_payload(frame, &meta);
    format!(
        "{src}:{} > {dst}:{} flags 0x{:02x} seq {} ack {} {:?}",
        meta.sport.unwrap_or(0),
        meta.dport.unwrap_or(0),
        meta.tcp_flags,
        tcp.seq,
        tcp.ack,
        String::from_utf8_lossy(payload)
    )
}

/// lbsim's side: the script's director with the FTP helper on port 21, one millisecond of
/// virtual time per packet. Client packets the director does not take are for the local
/// stack (not forwarded); server packets it does not take are routed on unchanged.
pub struct SimWire {
    directors: Directors,
    now: u64,
    marks: Vec<super::oracle::MarkRule>,
}

impl SimWire {
    /// The director of `service` with the helper on `ports`.
    pub fn new(service: Service, ports: &[u16]) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct File {
            director: Vec<datapath::director::config::DirectorConfig>,
        }
        let file: File = toml::from_str(service.appliance())?;
        let options = DirectorOptions {
            ethernet: true,
            ..DirectorOptions::default()
        };
        let directors = Directors::build(&file.director, options)?.with_ftp(ports);
        Ok(Self {
            directors,
            now: 0,
            marks: service.marks(),
        })
    }

    /// The helper's counters.
    pub fn counters(&self) -> Option<datapath::director::ftp::FtpCounters> {
        self.directors.ftp().map(|h| h.counters)
    }
}

impl Wire for SimWire {
    fn exchange(&mut self, frame: Vec<u8>, from_client: bool) -> anyhow::Result<Vec<Vec<u8>>> {
        self.now += 1_000_000;
        let mut frame = frame;
        let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
        let mark = meta
            .dst
            .filter(|_| from_client)
            .and_then(|dst| super::oracle::mark_of(&self.marks, ip_proto::TCP, dst));
        let forwarded = match self.directors.process(self.now, &mut frame, &meta, mark) {
            ControlFlow::Break(decision) => decision.verdict == datapath::verdict::Verdict::Forward,
            ControlFlow::Continue(()) => !from_client,
        };
        Ok(if forwarded { vec![frame] } else { Vec::new() })
    }
}
