//! An independent TCP stack through the shield: a smoltcp client connects to a smoltcp
//! server whose port is protected with SYN cookies forced on. The shield answers the SYN
//! with a cookie, opens the connection to the server itself on the cookie ACK (SYN proxy),
//! and translates sequence numbers (and timestamps) both ways while the two exchange data.
//! Virtual time only; smoltcp's ISNs come from seeded interface configs.

mod shield_common;

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use datapath::packet::{LinkType, parse};
use datapath::shield::{EmitBuffer, Shield, ShieldConfig, Toward, build};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

/// Frames in and out of one smoltcp interface.
#[derive(Default)]
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push_back(frame);
        result
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = 1514;
        capabilities
    }
}

struct Host {
    device: QueueDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    socket: SocketHandle,
}

static TSVAL: AtomicU32 = AtomicU32::new(1000);

fn tsval() -> u32 {
    TSVAL.fetch_add(3, Ordering::Relaxed)
}

fn host(mac: u8, address: Ipv4Addr, seed: u64, timestamps: bool) -> Host {
    let mut device = QueueDevice::default();
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress([
        2, 0, 0, 0, 0, mac,
    ])));
    config.random_seed = seed;
    let mut iface = Interface::new(config, &mut device, Instant::from_millis(0));
    iface.update_ip_addrs(|addresses| {
        addresses
            .push(IpCidr::new(IpAddress::Ipv4(address), 24))
            .expect("address");
    });
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 8192]),
        tcp::SocketBuffer::new(vec![0; 8192]),
    );
    if timestamps {
        socket.set_tsval_generator(Some(tsval));
    }
    let mut sockets = SocketSet::new(Vec::new());
    let socket = sockets.add(socket);
    Host {
        device,
        iface,
        sockets,
        socket,
    }
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// What the wire saw.
#[derive(Default, Debug)]
struct WireLog {
    cookie_isn: Option<u32>,
    server_isn: Option<u32>,
    shield_frames: usize,
    cookie_timestamps: bool,
    translated_with_timestamps: usize,
}

/// Carry one direction's frames through the shield.
fn carry(
    shield: &mut Shield,
    now_ns: u64,
    from_client: bool,
    hosts: &mut [Host; 2],
    log: &mut WireLog,
) {
    let (source, iface) = if from_client { (0, 0) } else { (1, 1) };
    let mut emit = EmitBuffer::new();
    while let Some(mut frame) = hosts[source].device.tx.pop_front() {
        let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, iface);
        if !from_client && meta.tcp_flags & 0x12 == 0x12 {
            log.server_isn = meta.tcp.map(|t| t.seq);
        }
        let flow = shield.process(now_ns, &mut frame, &meta, &mut emit);
        if flow.is_continue() {
            let after = parse(LinkType::Ethernet, &frame, frame.len() as u32, iface);
            assert_eq!(after.invalid, None, "rewritten frames keep valid checksums");
            if after.tcp.is_some_and(|t| t.options.timestamps.is_some()) {
                log.translated_with_timestamps += 1;
            }
            hosts[1 - source].device.rx.push_back(frame);
        }
        for emitted in emit.frames() {
            log.shield_frames += 1;
            let out = parse(
                LinkType::Ethernet,
                &emitted.bytes,
                emitted.bytes.len() as u32,
                0,
            );
            assert_eq!(out.invalid, None, "shield frames are valid");
            if out.tcp_flags & 0x12 == 0x12 {
                log.cookie_isn = out.tcp.map(|t| t.seq);
                log.cookie_timestamps = out.tcp.is_some_and(|t| t.options.timestamps.is_some());
            }
            let to = match emitted.toward {
                Toward::Client => 0,
                Toward::Server => 1,
            };
            hosts[to].device.rx.push_back(emitted.bytes.clone());
        }
    }
}

fn exchange(timestamps: bool) -> (Shield, WireLog) {
    let config: ShieldConfig = toml::from_str(
        r#"
        interfaces = ["client"]
        syn_cookies = "on"
        syn_proxy_wscale = 0
        [[context]]
        dst = "10.0.0.2"
        protected_tcp_ports = [80]
        "#,
    )
    .unwrap();
    let mut shield = build(&config, 11, &["client", "server"]).unwrap();
    let mut hosts = [
        host(1, CLIENT, 1, timestamps),
        host(2, SERVER, 2, timestamps),
    ];
    let server_socket = hosts[1].socket;
    hosts[1]
        .sockets
        .get_mut::<tcp::Socket>(server_socket)
        .listen(80)
        .unwrap();
    let client_socket = hosts[0].socket;
    {
        let Host { iface, sockets, .. } = &mut hosts[0];
        sockets
            .get_mut::<tcp::Socket>(client_socket)
            .connect(iface.context(), (IpAddress::Ipv4(SERVER), 80), 49_152)
            .unwrap();
    }
    let mut log = WireLog::default();
    let request = b"GET / HTTP/1.0\r\n\r\n".repeat(200);
    let response = b"HTTP/1.0 200 OK\r\n\r\nhello through the shield".repeat(100);
    let (mut sent, mut received_request, mut received_response) = (0, Vec::new(), Vec::new());
    let mut response_sent = 0;
    for step in 0..5_000u64 {
        let now = Instant::from_millis(step as i64);
        for host in hosts.iter_mut() {
            host.iface.poll(now, &mut host.device, &mut host.sockets);
        }
        carry(&mut shield, step * 1_000_000, true, &mut hosts, &mut log);
        carry(&mut shield, step * 1_000_000, false, &mut hosts, &mut log);
        let client = hosts[0].sockets.get_mut::<tcp::Socket>(client_socket);
        if client.may_send() && sent < request.len() {
            sent += client.send_slice(&request[sent..]).unwrap();
        }
        if client.can_recv() {
            client
                .recv(|data| {
                    received_response.extend_from_slice(data);
                    (data.len(), ())
                })
                .unwrap();
        }
        let server = hosts[1].sockets.get_mut::<tcp::Socket>(server_socket);
        if server.can_recv() {
            server
                .recv(|data| {
                    received_request.extend_from_slice(data);
                    (data.len(), ())
                })
                .unwrap();
        }
        if received_request.len() == request.len() && response_sent < response.len() {
            response_sent += server.send_slice(&response[response_sent..]).unwrap();
        }
        if received_response.len() == response.len() {
            break;
        }
    }
    assert_eq!(received_request, request, "server got the request");
    assert_eq!(received_response, response, "client got the response");
    (shield, log)
}

fn check(shield: &Shield, log: &WireLog) {
    let context = shield.contexts().nth(1).unwrap();
    let counters = shield.counters(context);
    assert_eq!(counters.cookies_sent, 1);
    assert_eq!(counters.cookies_validated, 1);
    assert_eq!(counters.proxy_connections, 1);
    assert_eq!(counters.dropped_total(), 0, "{:?}", counters.entries());
    // Cookie SYN-ACK, SYN to the server, ACK to the server, window update to the client.
    assert_eq!(log.shield_frames, 4);
    let (cookie, server) = (log.cookie_isn.unwrap(), log.server_isn.unwrap());
    assert_ne!(
        cookie, server,
        "sequence spaces differ, so translation was needed"
    );
    assert_eq!(shield.table_stats().sessions, 1);
}

#[test]
fn smoltcp_client_and_server_talk_through_the_syn_proxy() {
    let (shield, log) = exchange(false);
    check(&shield, &log);
    assert!(!log.cookie_timestamps);
}

#[test]
fn smoltcp_with_timestamps_through_the_syn_proxy() {
    let (shield, log) = exchange(true);
    check(&shield, &log);
    assert!(log.cookie_timestamps);
    assert!(log.translated_with_timestamps >= 8);
}
