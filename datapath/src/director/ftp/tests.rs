//! The FTP helper against the kernel's behaviour, byte for byte: parsers, sequence
//! adjustment, and whole control/data sessions through a NAT director.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;

use super::parse::{self, Found, InputCommand, Mode};
use super::seqadj::SeqAdjust;
use crate::director::config::DirectorConfig;
use crate::director::{Decision, DirectorOptions, Directors};
use crate::packet::builder::PacketBuilder;
use crate::packet::tcp_flags::{ACK, PSH, SYN};
use crate::packet::{LinkType, parse as parse_frame};
use crate::verdict::Verdict;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn pasv_and_epsv_are_found_anywhere_in_the_segment() {
    assert_eq!(parse::scan_input(b"PASV\r\n", false), InputCommand::Pasv);
    assert_eq!(
        parse::scan_input(b"NOOP\r\npasv\r\n", false),
        InputCommand::Pasv
    );
    assert_eq!(parse::scan_input(b"PASV\r", false), InputCommand::None);
    assert_eq!(parse::scan_input(b"PASV\r\n", true), InputCommand::None);
    assert_eq!(parse::scan_input(b"EPSV\r\n", false), InputCommand::Epsv);
    assert_eq!(parse::scan_input(b"EPSV 1\r\n", false), InputCommand::Epsv);
    assert_eq!(parse::scan_input(b"EPSV 2\r\n", false), InputCommand::None);
    assert_eq!(parse::scan_input(b"EPSV 2\r\n", true), InputCommand::Epsv);
    // "EPSV ALL" stops the scan: not even a PORT after it counts.
    assert_eq!(
        parse::scan_input(b"EPSV ALL\r\n", false),
        InputCommand::None
    );
}

#[test]
fn port_and_eprt_are_parsed_at_the_start_only() {
    let port = |text: &[u8]| parse::scan_input(text, false);
    assert_eq!(
        port(b"PORT 198,51,100,7,200,10\r\n"),
        InputCommand::Port(v4(198, 51, 100, 7), 51210)
    );
    assert_eq!(
        port(b"port   198,51,100,7,0,21\r\n"),
        InputCommand::Port(v4(198, 51, 100, 7), 21)
    );
    assert_eq!(port(b"NOOP\r\nPORT 1,2,3,4,5,6\r\n"), InputCommand::None);
    assert_eq!(port(b"PORT 1,2,3,256,5,6\r\n"), InputCommand::None);
    assert_eq!(port(b"PORT 1,2,3,4,5\r\n"), InputCommand::None);
    // Cut short by the end of the segment: no match.
    assert_eq!(port(b"PORT 1,2,3,4,5,6"), InputCommand::None);
    assert_eq!(
        port(b"EPRT |1|198.51.100.7|6446|\r\n"),
        InputCommand::Port(v4(198, 51, 100, 7), 6446)
    );
    assert_eq!(
        port(b"EPRT !1!10.0.0.01!80!\r\n"),
        InputCommand::Port(v4(10, 0, 0, 1), 80)
    );
    assert_eq!(port(b"EPRT |2|::1|6446|\r\n"), InputCommand::None);
    assert_eq!(port(b"EPRT |1|1.2.3|6446|\r\n"), InputCommand::None);
    assert_eq!(port(b"EPRT |1|1.2.3.4|0|\r\n"), InputCommand::None);
    assert_eq!(port(b"EPRT |1|1.2.3.4|65536|\r\n"), InputCommand::None);
    assert_eq!(port(b"EPRT |||6446|\r\n"), InputCommand::None);
    assert_eq!(
        parse::scan_input(b"EPRT |2|2001:db8::7|6446|\r\n", true),
        InputCommand::Port("2001:db8::7".parse().unwrap(), 6446)
    );
}

#[test]
fn replies_are_found_with_the_range_the_kernel_replaces() {
    let server = v4(10, 0, 1, 2);
    let text = b"227 Entering Passive Mode (10,0,1,2,195,80).\r\n";
    assert_eq!(
        parse::parse_reply(text, Mode::Pasv, server),
        Some(Found {
            address: server,
            port: 50000,
            start: 27,
            end: 42
        })
    );
    assert_eq!(&text[27..42], b"10,0,1,2,195,80");
    // Without the parenthesis the first digit starts the address.
    let bare = b"227 =10,0,1,2,4,1\r\n";
    let found = parse::parse_reply(bare, Mode::Pasv, server).unwrap();
    assert_eq!((found.start, found.end, found.port), (5, 17, 1025));
    assert_eq!(parse::parse_reply(text, Mode::Epsv, server), None);
    assert_eq!(parse::parse_reply(text, Mode::Active, server), None);
    let epsv = b"229 Entering Extended Passive Mode (|||6446|)\r\n";
    assert_eq!(
        parse::parse_reply(epsv, Mode::Epsv, server),
        Some(Found {
            address: server,
            port: 6446,
            start: 36,
            end: 44
        })
    );
    let with_address = b"229 ok (|1|10.0.1.9|6446|)\r\n";
    let found = parse::parse_reply(with_address, Mode::Epsv, server).unwrap();
    assert_eq!(
        (found.address, found.start, found.end),
        (v4(10, 0, 1, 9), 8, 25)
    );
    assert_eq!(
        parse::replacement(Mode::Pasv, v4(192, 0, 2, 10), 50000),
        b"192,0,2,10,195,80".to_vec()
    );
    assert_eq!(
        parse::replacement(Mode::Epsv, v4(192, 0, 2, 10), 6446),
        b"|||6446|".to_vec()
    );
}

#[test]
fn sequence_offsets_remember_the_last_change_only() {
    let mut way = SeqAdjust::default();
    way.record(1000, 2);
    assert_eq!((way.sequence(1000), way.sequence(1001)), (1000, 1003));
    assert_eq!(way.acknowledgement(1050), 1048);
    assert_eq!(way.acknowledgement(1000), 1000);
    // `after(ack - offset_before, correction_pos)`: 1001 is past the change already.
    assert_eq!(way.acknowledgement(1001), 999);
    // A second change later in the stream: offsets 2 → 5.
    way.record(2000, 3);
    assert_eq!(
        way,
        SeqAdjust {
            correction_pos: 2000,
            offset_before: 2,
            offset_after: 5
        }
    );
    assert_eq!(way.sequence(2000), 2002);
    assert_eq!(way.sequence(2001), 2006);
    // A retransmission from before the first change gets the previous offset (2), as in
    // the kernel, which keeps no older history.
    assert_eq!(way.sequence(900), 902);
    // A change recorded at an older position than the last one is ignored.
    way.record(1500, 7);
    assert_eq!(way.offset_after, 5);
    // Wrap-around.
    let mut wrap = SeqAdjust::default();
    wrap.record(u32::MAX - 1, -3);
    assert_eq!(wrap.sequence(2), (2u32).wrapping_sub(3));
}

struct Session {
    directors: Directors,
}

fn ftp_directors(config: &str, ports: &[u16]) -> Directors {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(config).unwrap();
    let directors = Directors::build(&file.director, DirectorOptions::default()).unwrap();
    directors.with_ftp(ports)
}

const TWO_REALS: &str = r#"
    [[director]]
    name = "ftp"
    vip = "192.0.2.10"
    port = 21
    proto = "tcp"
    scheduler = "rr"
    forward = "nat"
    real = [{ addr = "10.0.1.2:21", weight = 1 }, { addr = "10.0.1.3:21", weight = 1 }]
"#;

/// A segment as it leaves the director: its bytes and the decision.
struct Out {
    frame: Vec<u8>,
    decision: Decision,
}

impl Out {
    fn meta(&self) -> crate::packet::PacketMeta {
        parse_frame(LinkType::Ethernet, &self.frame, self.frame.len() as u32, 0)
    }
    fn payload(&self) -> Vec<u8> {
        let meta = self.meta();
        assert!(meta.invalid.is_none(), "{:?}", meta.invalid);
        self.frame[usize::from(meta.payload_offset)..].to_vec()
    }
    fn seq_ack(&self) -> (u32, u32) {
        let tcp = self.meta().tcp.unwrap();
        (tcp.seq, tcp.ack)
    }
}

#[allow(clippy::too_many_arguments)]
fn segment(
    source: SocketAddr,
    destination: SocketAddr,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut builder = PacketBuilder::eth()
        .ip(source.ip(), destination.ip())
        .tcp(source.port(), destination.port())
        .flags(flags)
        .seq_ack(seq, ack)
        .payload(payload);
    if flags & SYN != 0 {
        builder = builder.mss(1460);
    }
    builder.build()
}

impl Session {
    fn send(&mut self, now: u64, frame: Vec<u8>) -> Out {
        let mut frame = frame;
        let meta = parse_frame(LinkType::Ethernet, &frame, frame.len() as u32, 0);
        let decision = match self.directors.process(now, &mut frame, &meta, None) {
            ControlFlow::Break(decision) => decision,
            ControlFlow::Continue(()) => panic!("not for the director"),
        };
        Out { frame, decision }
    }

    /// SYN, SYN-ACK, ACK of a control connection; returns its real server.
    fn handshake(&mut self, client: SocketAddr, vip: SocketAddr) -> SocketAddr {
        let syn = self.send(0, segment(client, vip, SYN, 999, 0, b""));
        let real = syn.decision.backend.unwrap();
        self.send(1, segment(real, client, SYN | ACK, 4999, 1000, b""));
        self.send(2, segment(client, vip, ACK, 1000, 5000, b""));
        real
    }
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[test]
fn pasv_reply_is_rewritten_and_later_segments_shifted() {
    let mut session = Session {
        directors: ftp_directors(TWO_REALS, &[21]),
    };
    let (client, vip) = (addr(CLIENT, 40000), addr(VIP, 21));
    let real = session.handshake(client, vip);
    let pasv = session.send(3, segment(client, vip, ACK | PSH, 1000, 5000, b"PASV\r\n"));
    assert_eq!(pasv.payload(), b"PASV\r\n");
    let server = real.ip().to_string().replace('.', ",");
    let reply = format!("227 Entering Passive Mode ({server},195,80).\r\n");
    let out = session.send(
        4,
        segment(real, client, ACK | PSH, 5000, 1006, reply.as_bytes()),
    );
    assert_eq!(out.decision.verdict, Verdict::Forward);
    assert_eq!(
        out.payload(),
        b"227 Entering Passive Mode (192,0,2,10,195,80).\r\n"
    );
    let growth = (out.payload().len() - reply.len()) as u32;
    assert_eq!(growth, 2);
    // The changed segment keeps its own sequence number.
    assert_eq!(out.seq_ack(), (5000, 1006));
    // The client acknowledges the longer reply; the server sees its own numbering.
    let ack = session.send(5, segment(client, vip, ACK, 1006, 5000 + 48, b""));
    assert_eq!(ack.seq_ack(), (1006, 5000 + 46));
    // The server's next segment is shifted by the growth.
    let next = session.send(
        6,
        segment(real, client, ACK | PSH, 5046, 1006, b"150 ok\r\n"),
    );
    assert_eq!(next.seq_ack(), (5048, 1006));
    assert_eq!(next.payload(), b"150 ok\r\n");
    let helper = session.directors.ftp().unwrap();
    assert_eq!(
        (
            helper.counters.replies_rewritten,
            helper.counters.length_changes,
            helper.counters.data_connections
        ),
        (1, 1, 1)
    );
    // The passive data connection goes to the control connection's server, although rr
    // would give a new connection the other one.
    let data_client = addr(CLIENT, 50123);
    let data = session.send(7, segment(data_client, addr(VIP, 50000), SYN, 7, 0, b""));
    assert_eq!(
        data.decision.backend,
        Some(SocketAddr::new(real.ip(), 50000))
    );
    assert!(!data.decision.new_connection);
    let other = session.send(8, segment(addr(CLIENT, 40001), vip, SYN, 1, 0, b""));
    assert_ne!(other.decision.backend.unwrap().ip(), real.ip());
}

#[test]
fn without_the_helper_the_data_connection_is_scheduled_like_any_other() {
    let mut session = Session {
        directors: ftp_directors(TWO_REALS, &[]),
    };
    let (client, vip) = (addr(CLIENT, 40000), addr(VIP, 21));
    let real = session.handshake(client, vip);
    session.send(3, segment(client, vip, ACK | PSH, 1000, 5000, b"PASV\r\n"));
    let reply = b"227 Entering Passive Mode (10,0,1,2,195,80).\r\n";
    let out = session.send(4, segment(real, client, ACK | PSH, 5000, 1006, reply));
    assert_eq!(out.payload(), reply.to_vec());
    // `ip_vs_service_find`: a port >= 1024 on the VIP of a port-21 service is that
    // service (ftpsvc_counter), scheduled afresh by rr to the other server, port 21.
    let data = session.send(
        5,
        segment(addr(CLIENT, 50123), addr(VIP, 50000), SYN, 7, 0, b""),
    );
    assert!(data.decision.new_connection);
    assert_ne!(data.decision.backend.unwrap().ip(), real.ip());
}

#[test]
fn port_creates_the_active_data_connection_from_port_20() {
    let mut session = Session {
        directors: ftp_directors(TWO_REALS, &[21]),
    };
    let (client, vip) = (addr(CLIENT, 40000), addr(VIP, 21));
    let real = session.handshake(client, vip);
    let command = b"PORT 198,51,100,7,200,10\r\n";
    let out = session.send(3, segment(client, vip, ACK | PSH, 1000, 5000, command));
    assert_eq!(out.payload(), command.to_vec(), "PORT is not rewritten");
    // The server connects from port 20 to the client's port: un-NATed to VIP:20.
    let server_data = addr(
        match real.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => unreachable!(),
        },
        20,
    );
    let syn = session.send(
        4,
        segment(server_data, addr(CLIENT, 51210), SYN, 70, 0, b""),
    );
    assert_eq!(syn.decision.verdict, Verdict::Forward);
    let meta = syn.meta();
    assert_eq!((meta.src, meta.sport), (Some(IpAddr::V4(VIP)), Some(20)));
    let answer = session.send(
        5,
        segment(addr(CLIENT, 51210), addr(VIP, 20), SYN | ACK, 9, 71, b""),
    );
    assert_eq!(answer.decision.backend, Some(server_data));
    let connection = session
        .directors
        .table()
        .connections
        .iter()
        .flatten()
        .find(|c| c.key.virtual_address == addr(VIP, 20))
        .unwrap();
    assert!(connection.controller.is_some());
}

#[test]
fn sack_blocks_and_acks_of_the_client_are_translated() {
    let mut session = Session {
        directors: ftp_directors(TWO_REALS, &[21]),
    };
    let (client, vip) = (addr(CLIENT, 40000), addr(VIP, 21));
    let real = session.handshake(client, vip);
    session.send(3, segment(client, vip, ACK | PSH, 1000, 5000, b"PASV\r\n"));
    let reply = format!(
        "227 Entering Passive Mode ({},4,1)\r\n",
        real.ip().to_string().replace('.', ",")
    );
    session.send(
        4,
        segment(real, client, ACK | PSH, 5000, 1006, reply.as_bytes()),
    );
    // Client ACK with one SACK block past the change: both edges lose the 2-byte growth.
    let mut sack = vec![1u8, 1, 5, 10];
    sack.extend_from_slice(&6000u32.to_be_bytes());
    sack.extend_from_slice(&6100u32.to_be_bytes());
    let frame = PacketBuilder::eth()
        .ip(client.ip(), vip.ip())
        .tcp(client.port(), vip.port())
        .flags(ACK)
        .seq_ack(1006, 5040)
        .tcp_option(&sack)
        .build();
    let out = session.send(5, frame);
    let meta = out.meta();
    assert!(meta.invalid.is_none());
    let l4 = usize::from(meta.l4_offset);
    let options = &out.frame[l4 + 20..l4 + 32];
    let mut expected = vec![1u8, 1, 5, 10];
    expected.extend_from_slice(&5998u32.to_be_bytes());
    expected.extend_from_slice(&6098u32.to_be_bytes());
    assert_eq!(options, expected.as_slice());
    assert_eq!(out.seq_ack(), (1006, 5038));
}

#[test]
fn direct_routing_is_never_inspected() {
    let config = TWO_REALS.replace("\"nat\"", "\"dr\"");
    let mut session = Session {
        directors: ftp_directors(&config, &[21]),
    };
    let (client, vip) = (addr(CLIENT, 40000), addr(VIP, 21));
    session.send(0, segment(client, vip, SYN, 999, 0, b""));
    session.send(1, segment(client, vip, ACK, 1000, 5000, b""));
    let command = b"PORT 198,51,100,7,200,10\r\n";
    session.send(2, segment(client, vip, ACK | PSH, 1000, 5000, command));
    let helper = session.directors.ftp().unwrap();
    assert_eq!(helper.counters.port_commands, 0);
    assert_eq!(helper.counters.data_connections, 0);
}

#[test]
fn a_full_helper_table_leaves_new_control_connections_without_the_helper() {
    let mut session = Session {
        directors: ftp_directors(TWO_REALS, &[21]),
    };
    session.directors.ftp_mut().unwrap().report_full = true;
    let (client, vip) = (addr(CLIENT, 40000), addr(VIP, 21));
    let real = session.handshake(client, vip);
    session.send(3, segment(client, vip, ACK | PSH, 1000, 5000, b"PASV\r\n"));
    let reply = b"227 Entering Passive Mode (10,0,1,2,195,80).\r\n";
    let out = session.send(4, segment(real, client, ACK | PSH, 5000, 1006, reply));
    assert_eq!(out.payload(), reply.to_vec());
    let helper = session.directors.ftp().unwrap();
    assert_eq!((helper.counters.overflows, helper.len()), (1, 0));
}

#[test]
fn a_control_connection_lives_while_it_controls_a_data_connection() {
    let mut session = Session {
        directors: ftp_directors(TWO_REALS, &[21]),
    };
    let (client, vip) = (addr(CLIENT, 40000), addr(VIP, 21));
    let real = session.handshake(client, vip);
    session.send(3, segment(client, vip, ACK | PSH, 1000, 5000, b"PASV\r\n"));
    let reply = b"227 Entering Passive Mode (10,0,1,2,195,80).\r\n";
    session.send(4, segment(real, client, ACK | PSH, 5000, 1006, reply));
    assert_eq!(session.directors.table().connection_count, 2);
    let second = 1_000_000_000;
    // The control connection is ESTABLISHED (15 min); its data connection is LISTEN
    // (2 min) and never used. At 16 min the data connection is gone, the control
    // connection was kept for 60 s more once and then goes too.
    session.directors.advance(4 + 121 * second);
    assert_eq!(session.directors.table().connection_count, 1);
    session.directors.advance(4 + 901 * second);
    assert_eq!(session.directors.table().connection_count, 0);
}

#[test]
fn every_prefix_of_tricky_payloads_parses_without_panicking() {
    let server = v4(10, 0, 1, 2);
    let samples: [&[u8]; 8] = [
        b"227 Entering Passive Mode (10,0,1,2,195,80).\r\n",
        b"229 Entering Extended Passive Mode (|1|10.0.1.9|6446|)\r\n",
        b"229 (|||65536|)\r\n",
        b"EPRT |1|1.2.3.4.5|80|\r\n",
        b"EPRT \x7f1\x7f1.2.3.4\x7f80\x7f\r\n",
        b"EPSV 1",
        b"PORT 999,1,1,1,1,1\r\n",
        b"227 (((((((((((",
    ];
    for sample in samples {
        for end in 0..=sample.len() {
            let data = &sample[..end];
            let _ = parse::scan_input(data, false);
            let _ = parse::scan_input(data, true);
            for mode in [Mode::Pasv, Mode::Epsv, Mode::Active] {
                if let Some(found) = parse::parse_reply(data, mode, server) {
                    assert!(found.start <= found.end && found.end <= data.len());
                }
            }
        }
    }
}
