//! The whole pipeline on one connection: SYN cookie, SYN proxy, flows and director NAT,
//! both directions, checksums verified by re-parsing every emitted frame.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use datapath::director::config::DirectorConfig;
use datapath::director::{DirectorOptions, Directors};
use datapath::flows::{FlowTable, TableConfig};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, PacketMeta, parse, tcp_flags};
use datapath::pipeline::{EmittedFrame, PacketOutcome, Pipeline};
use datapath::shield::ShieldConfig;
use datapath::{DropReason, Stage, Verdict};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUTSIDE: u16 = 0;
const INSIDE: u16 = 1;

fn pipeline() -> Pipeline {
    let shield: ShieldConfig = toml::from_str(
        r#"
        syn_cookies = "on"
        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [80]
        "#,
    )
    .unwrap();
    #[derive(serde::Deserialize)]
    struct Directors_ {
        director: Vec<DirectorConfig>,
    }
    let directors: Directors_ = toml::from_str(
        r#"
        [[director]]
        name = "web"
        vip = "192.0.2.10"
        port = 80
        proto = "tcp"
        scheduler = "rr"
        forward = "nat"
        real = [{ addr = "10.0.1.2:80", weight = 1 }, { addr = "10.0.1.3:80", weight = 1 }]
        "#,
    )
    .unwrap();
    let flows = "flow web director web\n  match proto tcp dst 192.0.2.10 dstport 80\n\
                 flow telnet deny\n  match proto tcp dstport 23\n";
    let marks = [("web".to_string(), 0xf000)].into_iter().collect();
    let table_config = TableConfig {
        iface_names: Some(vec!["outside".into(), "inside".into()]),
        director_marks: Some(marks),
    };
    Pipeline::default()
        .with_shield(datapath::shield::build(&shield, 7, &["outside", "inside"]).unwrap())
        .with_flows(FlowTable::from_source(flows, &table_config).unwrap())
        .with_directors(Directors::build(&directors.director, DirectorOptions::default()).unwrap())
}

fn send(
    p: &mut Pipeline,
    now: u64,
    iface: u16,
    frame: Vec<u8>,
) -> (PacketOutcome, Vec<EmittedFrame>) {
    let len = frame.len() as u32;
    let outcome = p.process(now, iface, LinkType::Ethernet, frame, len);
    (outcome, p.take_emitted())
}

fn meta(frame: &[u8]) -> PacketMeta {
    let meta = parse(LinkType::Ethernet, frame, frame.len() as u32, 0);
    assert_eq!(meta.invalid, None, "emitted frame is invalid: {meta:?}");
    meta
}

fn describe(frames: &[EmittedFrame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            let m = meta(&f.frame);
            let t = m.tcp.unwrap();
            format!(
                "if{} {}:{} > {}:{} flags={:#x} seq={} ack={} len={}",
                f.iface,
                m.src.unwrap(),
                m.sport.unwrap(),
                m.dst.unwrap(),
                m.dport.unwrap(),
                m.tcp_flags,
                t.seq,
                t.ack,
                m.payload_len
            )
        })
        .collect()
}

fn tcp(frame: &EmittedFrame) -> (PacketMeta, u32, u32) {
    let m = meta(&frame.frame);
    let t = m.tcp.expect("tcp");
    (m, t.seq, t.ack)
}

fn endpoint(m: &PacketMeta) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(m.src.unwrap(), m.sport.unwrap()),
        SocketAddr::new(m.dst.unwrap(), m.dport.unwrap()),
    )
}

#[test]
fn a_client_connects_through_cookie_proxy_flows_and_nat() {
    let mut p = pipeline();
    let client = SocketAddr::from((CLIENT, 40000));
    let vip = SocketAddr::from((VIP, 80));
    let client_isn = 1000;

    // 1. SYN: answered by the shield with a cookie SYN-ACK, nothing reaches a server.
    let syn = PacketBuilder::eth()
        .ipv4(CLIENT, VIP)
        .tcp(40000, 80)
        .syn()
        .seq_ack(client_isn, 0)
        .mss(1460)
        .build();
    let (outcome, sent) = send(&mut p, 0, OUTSIDE, syn);
    assert_eq!(
        (outcome.stage, outcome.verdict),
        (Stage::Shield, Verdict::Reply)
    );
    assert_eq!(sent.len(), 1);
    let (synack, cookie, ack) = tcp(&sent[0]);
    assert_eq!(endpoint(&synack), (vip, client));
    assert_eq!(
        (synack.tcp_flags, ack),
        (tcp_flags::SYN | tcp_flags::ACK, client_isn + 1)
    );

    // 2. The cookie ACK: the proxy opens the connection; flows mark it for director `web`,
    //    which NATs the proxy's SYN (client's ISN) to a real server.
    let ack = PacketBuilder::eth()
        .ipv4(CLIENT, VIP)
        .tcp(40000, 80)
        .seq_ack(client_isn + 1, cookie.wrapping_add(1))
        .build();
    let (outcome, sent) = send(&mut p, 1_000_000, OUTSIDE, ack);
    assert_eq!(
        (outcome.stage, outcome.verdict),
        (Stage::Shield, Verdict::Reply)
    );
    assert_eq!(sent.len(), 1);
    let (proxy_syn, proxy_isn, _) = tcp(&sent[0]);
    let (source, backend) = endpoint(&proxy_syn);
    assert_eq!(source, client);
    assert!(
        ["10.0.1.2:80", "10.0.1.3:80"].contains(&backend.to_string().as_str()),
        "{backend}"
    );
    assert_eq!(
        (proxy_syn.tcp_flags, proxy_isn),
        (tcp_flags::SYN, client_isn)
    );

    // 3. The server's SYN-ACK: un-NATed, consumed by the proxy, which ACKs the server
    //    (through the NAT again) and updates the client.
    let server_isn = 777_000;
    let synack = PacketBuilder::eth()
        .ip(backend.ip(), IpAddr::V4(CLIENT))
        .tcp(80, 40000)
        .syn_ack()
        .seq_ack(server_isn, proxy_isn + 1)
        .mss(1460)
        .build();
    let (outcome, sent) = send(&mut p, 2_000_000, INSIDE, synack);
    assert_eq!(
        (outcome.stage, outcome.verdict),
        (Stage::Shield, Verdict::Reply)
    );
    let to_server: Vec<_> = sent
        .iter()
        .map(tcp)
        .filter(|(m, ..)| endpoint(m).1 == backend)
        .collect();
    let to_client: Vec<_> = sent
        .iter()
        .map(tcp)
        .filter(|(m, ..)| endpoint(m) == (vip, client))
        .collect();
    assert_eq!(to_server.len(), 1, "{:?}", describe(&sent));
    assert_eq!(
        (to_server[0].1, to_server[0].2),
        (client_isn + 1, server_isn + 1)
    );
    assert_eq!(to_client.len() + to_server.len(), sent.len());

    // 4. Client data: acknowledgement translated from cookie space to the server's.
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let data = PacketBuilder::eth()
        .ipv4(CLIENT, VIP)
        .tcp(40000, 80)
        .flags(tcp_flags::ACK | tcp_flags::PSH)
        .seq_ack(client_isn + 1, cookie.wrapping_add(1))
        .payload(request)
        .build();
    let (outcome, sent) = send(&mut p, 3_000_000, OUTSIDE, data);
    assert_eq!(
        (outcome.stage, outcome.verdict, outcome.backend),
        (Stage::Director, Verdict::Forward, Some(backend))
    );
    assert_eq!((outcome.flow, outcome.flow_rule), (Some(0), Some(1)));
    let (forwarded, seq, ack) = tcp(&sent[0]);
    assert_eq!(endpoint(&forwarded), (client, backend));
    assert_eq!(
        (seq, ack, forwarded.payload_len),
        (client_isn + 1, server_isn + 1, request.len() as u32)
    );

    // 5. Server response: un-NATed to the VIP and translated into cookie space.
    let body = b"HTTP/1.0 200 OK\r\n\r\n";
    let response = PacketBuilder::eth()
        .ip(backend.ip(), IpAddr::V4(CLIENT))
        .tcp(80, 40000)
        .flags(tcp_flags::ACK | tcp_flags::PSH)
        .seq_ack(server_isn + 1, client_isn + 1 + request.len() as u32)
        .payload(body)
        .build();
    let (outcome, sent) = send(&mut p, 4_000_000, INSIDE, response);
    assert_eq!(
        (outcome.stage, outcome.verdict),
        (Stage::Director, Verdict::Forward)
    );
    let (delivered, seq, ack) = tcp(&sent[0]);
    assert_eq!(endpoint(&delivered), (vip, client));
    assert_eq!(
        (seq, ack),
        (
            cookie.wrapping_add(1),
            client_isn + 1 + request.len() as u32
        )
    );
}

#[test]
fn flows_drop_before_the_director_and_invalid_packets_stop_at_the_shield() {
    let mut p = pipeline();
    let telnet = PacketBuilder::eth()
        .ipv4(CLIENT, VIP)
        .tcp(40001, 23)
        .syn()
        .build();
    let (outcome, sent) = send(&mut p, 0, OUTSIDE, telnet);
    assert_eq!(
        (outcome.stage, outcome.verdict),
        (Stage::Flows, Verdict::Drop(DropReason::FlowDeny))
    );
    assert_eq!((outcome.flow, sent.len()), (Some(1), 0));
    let xmas = PacketBuilder::eth()
        .ipv4(CLIENT, VIP)
        .tcp(40002, 80)
        .flags(tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG)
        .build();
    let (outcome, sent) = send(&mut p, 1, OUTSIDE, xmas);
    assert_eq!(outcome.stage, Stage::Shield);
    assert!(matches!(
        outcome.verdict,
        Verdict::Drop(DropReason::Invalid(_))
    ));
    assert!(sent.is_empty());
    let rows = p.counters().rows();
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 2);
}

#[test]
fn a_bare_ack_for_no_connection_is_not_forwarded_to_a_server() {
    let mut p = pipeline();
    let stray = PacketBuilder::eth()
        .ipv4(CLIENT, VIP)
        .tcp(40003, 80)
        .seq_ack(5, 6)
        .build();
    let (outcome, sent) = send(&mut p, 0, OUTSIDE, stray);
    assert_eq!(outcome.stage, Stage::Shield);
    assert!(matches!(outcome.verdict, Verdict::Drop(_)), "{outcome:?}");
    assert!(
        sent.iter()
            .all(|f| meta(&f.frame).dst != Some(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2))))
    );
}

/// The frames the pipeline sends for a packet the shield decides (cookie SYN-ACK, RST of a
/// bad cookie) are the shield's own, whatever buffer the packet came in: the pipeline
/// copies a reply into the consumed packet's buffer when it fits, else into a new one.
#[test]
fn shield_replies_are_the_same_whatever_the_packet_buffer() {
    let text = r#"
        syn_cookies = "on"
        bad_cookie = "rst"
        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [80]
        "#;
    let config: ShieldConfig = toml::from_str(text).unwrap();
    let ifaces = ["outside", "inside"];
    let mut alone = datapath::shield::build(&config, 7, &ifaces).unwrap();
    let mut exact =
        Pipeline::default().with_shield(datapath::shield::build(&config, 7, &ifaces).unwrap());
    let mut roomy =
        Pipeline::default().with_shield(datapath::shield::build(&config, 7, &ifaces).unwrap());
    let base = || PacketBuilder::eth().ipv4(CLIENT, VIP);
    let frames = [
        base().tcp(40000, 80).syn().seq_ack(1, 0).build(),
        base().tcp(40001, 80).syn().seq_ack(2, 0).mss(1460).build(),
        base()
            .tcp(40002, 80)
            .syn()
            .mss(1400)
            .window_scale(7)
            .sack_permitted()
            .timestamps(5, 0)
            .build(),
        PacketBuilder::eth()
            .vlan(42)
            .ipv4(CLIENT, VIP)
            .tcp(40003, 80)
            .syn()
            .timestamps(9, 0)
            .build(),
        base().tcp(40004, 80).seq_ack(7, 12345).build(),
    ];
    for (index, frame) in frames.iter().enumerate() {
        let now = 1_000_000 * index as u64;
        let mut emit = datapath::shield::EmitBuffer::new();
        let meta = parse(LinkType::Ethernet, frame, frame.len() as u32, OUTSIDE);
        let flow = alone.process(now, &mut frame.clone(), &meta, &mut emit);
        assert!(flow.is_break(), "frame {index}: {flow:?}");
        let expected: Vec<Vec<u8>> = emit.frames().iter().map(|f| f.bytes.clone()).collect();
        assert_eq!(expected.len(), 1, "frame {index}");
        let mut small = frame.clone();
        small.shrink_to_fit();
        let mut large = Vec::with_capacity(2048);
        large.extend_from_slice(frame);
        for (pipeline, buffer) in [(&mut exact, small), (&mut roomy, large)] {
            let address = buffer.as_ptr();
            let (outcome, sent) = send(pipeline, now, OUTSIDE, buffer);
            assert_eq!(outcome.stage, Stage::Shield, "frame {index}");
            // The reply fits in the packet's buffer: it is sent in it.
            assert_eq!(sent[0].frame.as_ptr(), address, "frame {index}");
            let sent: Vec<Vec<u8>> = sent.into_iter().map(|f| f.frame).collect();
            assert_eq!(sent, expected, "frame {index}");
        }
    }
}

/// With `keep_spare_frames`, the buffer of a frame the shield dropped comes back from
/// `take_spare_frame` (once); a forwarded frame's buffer does not (it was sent on), a
/// cookie answered in the SYN's own buffer does not (it is the answer), and without
/// opting in nothing is kept.
#[test]
fn dropped_frames_buffers_come_back_only_when_asked() {
    let xmas = || {
        PacketBuilder::eth()
            .ipv4(CLIENT, VIP)
            .tcp(40003, 80)
            .flags(tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG)
            .build()
    };
    let mut p = pipeline();
    send(&mut p, 0, OUTSIDE, xmas());
    assert_eq!(p.take_spare_frame(), None, "off by default");
    p.keep_spare_frames(true);
    let frame = xmas();
    let capacity = frame.capacity();
    let (outcome, _) = send(&mut p, 1, OUTSIDE, frame);
    assert!(matches!(outcome.verdict, Verdict::Drop(_)));
    let spare = p.take_spare_frame().expect("the dropped frame's buffer");
    assert_eq!(spare.capacity(), capacity);
    assert_eq!(p.take_spare_frame(), None, "taken once");
    let syn = PacketBuilder::eth()
        .ipv4(CLIENT, VIP)
        .tcp(40004, 80)
        .syn()
        .mss(1460)
        .build();
    let (outcome, sent) = send(&mut p, 2, OUTSIDE, syn);
    assert_eq!(outcome.verdict, Verdict::Reply);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        p.take_spare_frame(),
        None,
        "the SYN's buffer carries the answer"
    );
    let other = PacketBuilder::eth()
        .ipv4(CLIENT, Ipv4Addr::new(203, 0, 113, 9))
        .udp(5000, 53)
        .build();
    let (_, sent) = send(&mut p, 3, OUTSIDE, other);
    assert_eq!(sent.len(), 1);
    assert_eq!(p.take_spare_frame(), None, "a forwarded frame is sent on");
}
