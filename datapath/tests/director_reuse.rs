//! A SYN that reuses the 5-tuple of a TIME_WAIT connection, as Linux 6.1's IPVS handles it:
//! `ip_vs_in` (conn_reuse_mode 1) schedules a new connection while the old one, only
//! `ip_vs_conn_expire_now`'d, is still counted on its real server. Found by
//! `sim/tests/ipvs_guest_random.rs` (seed 1031) against the guest kernel's IPVS.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;

use datapath::director::config::DirectorConfig;
use datapath::director::{Decision, DirectorOptions, Directors};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, parse, tcp_flags};
use datapath::verdict::{NS_PER_SEC, Verdict};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

/// wlc over a TUN real (weight 3) and a NAT real (weight 1), added in that order, so the
/// NAT real is the head of the kernel's list.
const SERVICE: &str = r#"
[[director]]
name = "d0"
scheduler = "wlc"
vip = "10.200.0.1"
port = 443
proto = "tcp"
real = [
  { addr = "10.100.1.3:443", weight = 3, forward = "tun" },
  { addr = "10.100.1.4:80", weight = 1, forward = "nat" },
]
"#;

fn directors() -> Directors {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(SERVICE).unwrap();
    Directors::build(&file.director, DirectorOptions::default()).unwrap()
}

fn send(
    d: &mut Directors,
    now_s: u64,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
) -> Decision {
    let mut frame = PacketBuilder::eth()
        .ipv4(src.0, dst.0)
        .tcp(src.1, dst.1)
        .flags(flags)
        .payload(b"x")
        .build();
    let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
    match d.process(now_s * NS_PER_SEC, &mut frame, &meta, None) {
        ControlFlow::Break(decision) => decision,
        ControlFlow::Continue(()) => panic!("not the director's: {src:?} > {dst:?}"),
    }
}

/// (active, inactive) of the real server `addr`.
fn counts(d: &Directors, addr: &str) -> (u32, u32) {
    let dests = &d.service(0).dests;
    let server = dests.get(dests.find(addr.parse().unwrap()).unwrap());
    (server.active, server.inactive)
}

#[test]
fn a_syn_on_a_time_wait_connection_is_scheduled_with_the_old_one_still_counted() {
    let (nat, tun) = ("10.100.1.4:80", "10.100.1.3:443");
    let nat_real = (Ipv4Addr::new(10, 100, 1, 4), 80);
    let mut d = directors();
    let first = send(&mut d, 0, (CLIENT, 50000), (VIP, 443), tcp_flags::SYN);
    assert_eq!(first.backend, Some(nat.parse::<SocketAddr>().unwrap()));
    let synack = tcp_flags::SYN | tcp_flags::ACK;
    assert_eq!(
        send(&mut d, 0, nat_real, (CLIENT, 50000), synack).verdict,
        Verdict::Forward
    );
    send(&mut d, 0, (CLIENT, 50000), (VIP, 443), tcp_flags::ACK);
    assert_eq!(counts(&d, nat), (1, 0), "ESTABLISHED is active");
    // Server FIN (output: ESTABLISHED → FIN_WAIT), then client FIN (input: → TIME_WAIT).
    let fin = tcp_flags::FIN | tcp_flags::ACK;
    send(&mut d, 1, nat_real, (CLIENT, 50000), fin);
    assert_eq!(counts(&d, nat), (0, 1), "FIN_WAIT is inactive");
    send(&mut d, 1, (CLIENT, 50000), (VIP, 443), fin);
    assert_eq!(counts(&d, nat), (0, 1), "TIME_WAIT is inactive");

    // The same 5-tuple again: the TIME_WAIT connection still weighs 1 on the NAT real
    // (1 × 3 > 0 × 1), so wlc picks the TUN real, as the guest's IPVS did.
    let again = send(&mut d, 2, (CLIENT, 50000), (VIP, 443), tcp_flags::SYN);
    assert!(again.new_connection);
    assert_eq!(again.backend, Some(tun.parse::<SocketAddr>().unwrap()));
    // Then the old connection is gone: the next client goes to the now idle NAT real.
    assert_eq!((counts(&d, nat), counts(&d, tun)), ((0, 0), (1, 0)));
    let other = (Ipv4Addr::new(198, 18, 2, 2), 40000);
    let next = send(&mut d, 2, other, (VIP, 443), tcp_flags::SYN);
    assert_eq!(next.backend, Some(nat.parse::<SocketAddr>().unwrap()));
    assert_eq!(d.table().connection_count, 2);
}
