//! Operator changes mid-run as Linux 6.1's IPVS applies them, found by the guest-kernel
//! oracle's edits (`sim/tests/ipvs_guest_random.rs`, seeds 2000–2059 and 3000–3059):
//! `ipvsadm -d` leaves a real's connections in the table but `ip_vs_in` drops their client
//! packets (uncounted; the reply direction is still un-NATed, uncounted), `-a` of the same
//! real counts it again, and `-D` of a family's last service unregisters IPVS's hooks for
//! that family (its packets pass untouched).

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;

use datapath::director::config::DirectorConfig;
use datapath::director::{Decision, DirectorOptions, Directors};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, parse, tcp_flags};
use datapath::verdict::{DropReason, NS_PER_SEC, Verdict};

const CLIENT: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 0, 1), 50000);
const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 200, 0, 1), 80);
const REAL: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 100, 1, 1), 80);

const SERVICE: &str = r#"
[[director]]
name = "web"
scheduler = "rr"
vip = "10.200.0.1"
port = 80
proto = "tcp"
real = [{ addr = "10.100.1.1:80", weight = 1, forward = "nat" }]
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
) -> ControlFlow<Decision, ()> {
    let mut frame = PacketBuilder::eth()
        .ipv4(src.0, dst.0)
        .tcp(src.1, dst.1)
        .flags(flags)
        .payload(b"x")
        .build();
    let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
    d.process(now_s * NS_PER_SEC, &mut frame, &meta, None)
}

fn verdict(flow: ControlFlow<Decision, ()>) -> Option<Verdict> {
    match flow {
        ControlFlow::Break(decision) => Some(decision.verdict),
        ControlFlow::Continue(()) => None,
    }
}

/// The real's (connections, packets in, packets out) and the service's packets in.
fn counted(d: &Directors) -> (u64, u64, u64, u64) {
    let service = d.service(0);
    let real = service
        .dests
        .get(service.dests.find(SocketAddr::from(REAL)).unwrap());
    let s = &real.stats;
    (
        s.connections,
        s.packets_in,
        s.packets_out,
        service.stats.packets_in,
    )
}

/// A connection to the one real, established.
fn established() -> Directors {
    let mut d = directors();
    assert_eq!(
        verdict(send(&mut d, 0, CLIENT, VIP, tcp_flags::SYN)),
        Some(Verdict::Forward)
    );
    let synack = tcp_flags::SYN | tcp_flags::ACK;
    assert_eq!(
        verdict(send(&mut d, 0, REAL, CLIENT, synack)),
        Some(Verdict::Forward)
    );
    assert_eq!(counted(&d), (1, 1, 1, 1));
    d
}

#[test]
fn a_deleted_reals_connections_stay_but_their_client_packets_are_dropped_uncounted() {
    let mut d = established();
    let real = SocketAddr::from(REAL);
    d.set_down(NS_PER_SEC, "web", real).unwrap();
    assert_eq!(
        verdict(send(&mut d, 1, CLIENT, VIP, tcp_flags::ACK)),
        Some(Verdict::Drop(DropReason::NoDestination))
    );
    assert_eq!(d.table().connection_count, 1, "the connection stays");
    // Replies are still un-NATed (ip_vs_out does not look at the server), uncounted.
    assert_eq!(
        verdict(send(&mut d, 1, REAL, CLIENT, tcp_flags::ACK)),
        Some(Verdict::Forward)
    );
    assert_eq!(counted(&d), (1, 1, 1, 1));
    // `ipvsadm -a` of the same real: its connection is forwarded and counted again.
    d.set_up(2 * NS_PER_SEC, "web", real).unwrap();
    assert_eq!(
        verdict(send(&mut d, 2, CLIENT, VIP, tcp_flags::ACK)),
        Some(Verdict::Forward)
    );
    assert_eq!(counted(&d), (1, 2, 1, 2));
}

#[test]
fn deleting_the_last_service_of_a_family_lets_its_packets_pass_untouched() {
    let mut d = established();
    d.remove_service(NS_PER_SEC, "web").unwrap();
    assert!(!d.is_configured(0));
    assert_eq!(d.table().connection_count, 1, "the connection stays listed");
    // No IPv4 service left: IPVS's IPv4 hooks are gone, nothing is un-NATed or dropped.
    assert_eq!(verdict(send(&mut d, 1, REAL, CLIENT, tcp_flags::ACK)), None);
    assert_eq!(verdict(send(&mut d, 1, CLIENT, VIP, tcp_flags::ACK)), None);
    assert_eq!(verdict(send(&mut d, 1, CLIENT, VIP, tcp_flags::SYN)), None);
    assert_eq!(counted(&d), (1, 1, 1, 1));
}
