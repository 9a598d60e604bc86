//! Operator changes mid-run as Linux 6.1's IPVS applies them, found by the guest-kernel
//! oracle's edits (`sim/tests/ipvs_guest_random.rs`, seeds 2000–2059 and 3000–3059):
//! `ipvsadm -d` leaves a real's connections in the table but `ip_vs_in` drops their client
//! packets (uncounted; the reply direction is still un-NATed, uncounted), `-a` of the same
//! real counts it again, and `-D` of a family's last service unregisters IPVS's hooks for
//! that family (its packets pass untouched).

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;

use datapath::director::config::{DirectorConfig, Persistence};
use datapath::director::scheduler::{SchedulerFlags, SchedulerKind};
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

const THREE: &str = r#"
[[director]]
name = "web"
scheduler = "rr"
vip = "10.200.0.1"
port = 80
proto = "tcp"
persistence = "300s"
real = [{ addr = "10.100.1.1:80" }, { addr = "10.100.1.2:80" }, { addr = "10.100.1.3:80" }]
"#;

fn three() -> Directors {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(THREE).unwrap();
    Directors::build(&file.director, DirectorOptions::default()).unwrap()
}

/// The last octet of the real server a new connection from `client` goes to.
fn new_connection(d: &mut Directors, now_s: u64, client: (Ipv4Addr, u16)) -> u8 {
    match send(d, now_s, client, VIP, tcp_flags::SYN) {
        ControlFlow::Break(Decision {
            backend: Some(real),
            ..
        }) => match real.ip() {
            std::net::IpAddr::V4(v4) => v4.octets()[3],
            other => panic!("{other}"),
        },
        other => panic!("not scheduled: {other:?}"),
    }
}

fn persistence(seconds: u64) -> Option<Persistence> {
    Some(Persistence {
        timeout: seconds * NS_PER_SEC,
        prefix: 32,
    })
}

/// `ipvsadm -E` (`ip_vs_edit_service`) re-binds the scheduler only when it changes: the
/// same scheduler keeps its state (rr's cursor), another one starts at the list head.
#[test]
fn editing_a_service_keeps_the_same_scheduler_and_restarts_another() {
    let mut d = three();
    let flags = SchedulerFlags::default();
    d.edit_service(0, "web", SchedulerKind::Rr, flags, None)
        .unwrap();
    let client = |n: u8| (Ipv4Addr::new(198, 18, 0, n), 50000);
    // The list is 3 2 1 (servers are prepended as they are added).
    assert_eq!(new_connection(&mut d, 1, client(1)), 3);
    assert_eq!(new_connection(&mut d, 1, client(2)), 2);
    d.edit_service(NS_PER_SEC, "web", SchedulerKind::Rr, flags, None)
        .unwrap();
    assert_eq!(
        new_connection(&mut d, 1, client(3)),
        1,
        "rr's cursor is kept"
    );
    d.edit_service(NS_PER_SEC, "web", SchedulerKind::Wrr, flags, None)
        .unwrap();
    assert_eq!(new_connection(&mut d, 1, client(4)), 3, "wrr starts afresh");
    d.edit_service(NS_PER_SEC, "web", SchedulerKind::Rr, flags, None)
        .unwrap();
    assert_eq!(
        new_connection(&mut d, 1, client(5)),
        3,
        "rr starts at the head"
    );
    assert_eq!(d.service(0).scheduler.kind(), SchedulerKind::Rr);
}

/// Persistence edited off: a client's new connections no longer follow its template
/// (which stays in the table); edited on again, the template still holds them.
#[test]
fn persistence_edited_off_and_on_again_finds_the_template_it_left() {
    let mut d = three();
    let flags = SchedulerFlags::default();
    let client = |port: u16| (Ipv4Addr::new(198, 18, 0, 1), port);
    assert_eq!(new_connection(&mut d, 1, client(1000)), 3);
    assert_eq!(new_connection(&mut d, 1, client(1001)), 3, "persistent");
    d.edit_service(2 * NS_PER_SEC, "web", SchedulerKind::Rr, flags, None)
        .unwrap();
    assert_eq!(new_connection(&mut d, 2, client(1002)), 2, "not persistent");
    assert_eq!(new_connection(&mut d, 2, client(1003)), 1);
    d.edit_service(
        3 * NS_PER_SEC,
        "web",
        SchedulerKind::Rr,
        flags,
        persistence(60),
    )
    .unwrap();
    assert_eq!(
        new_connection(&mut d, 3, client(1004)),
        3,
        "the old template"
    );
    assert_eq!(d.table().templates.iter().flatten().count(), 1);
}

/// `ipvsadm -D` then `-A` and `-a` again: Linux 6.1 takes the real servers back from its
/// trash with their connections; their traffic counters and the service's start at zero
/// (`__ip_vs_update_dest`: `old_svc != svc`; the guest oracle, seed 1000 of
/// `ipvs_guest_random.rs`, saw zeros, and once kept counters when the new service reused
/// the old one's memory), and the old connection's packets count for both again.
#[test]
fn a_deleted_service_added_again_takes_its_servers_back_with_their_connections() {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let mut d = established();
    d.remove_service(NS_PER_SEC, "web").unwrap();
    let file: File = toml::from_str(SERVICE).unwrap();
    let spec = file.director[0].build().unwrap();
    d.add_service(NS_PER_SEC, spec.clone()).unwrap();
    assert!(d.is_configured(0));
    assert!(d.add_service(NS_PER_SEC, spec).is_err(), "it exists now");
    assert_eq!(counted(&d), (0, 0, 0, 0), "counters start at zero");
    assert_eq!(d.service(0).dests.get(0).active, 1, "its connection stays");
    assert_eq!(
        verdict(send(&mut d, 2, CLIENT, VIP, tcp_flags::ACK)),
        Some(Verdict::Forward)
    );
    assert_eq!(counted(&d), (0, 1, 0, 1));
}

const OVERLOADED: &str = r#"
[[director]]
name = "web"
scheduler = "ovf"
vip = "10.200.0.1"
port = 80
proto = "tcp"
real = [{ addr = "10.100.1.1:80", weight = 5, upper_threshold = 1 }, { addr = "10.100.1.2:80", weight = 3 }]
"#;

/// A server over its upper threshold stays overloaded when it comes back from IPVS's
/// trash with the same threshold (`__ip_vs_update_dest` clears the flag only when the
/// threshold is removed or raised): after `-D` and `-A`/`-a` of its service (Linux 6.1 in
/// the guest oracle, seed 3048: ovf then sends a client to the lighter server) and after
/// `-d` and `-a` of the server itself.
#[test]
fn an_overloaded_server_stays_overloaded_when_it_comes_back() {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(OVERLOADED).unwrap();
    let mut d = Directors::build(&file.director, DirectorOptions::default()).unwrap();
    let client = |n: u8| (Ipv4Addr::new(198, 18, 0, n), 50000);
    assert_eq!(
        new_connection(&mut d, 1, client(1)),
        1,
        "the heavier server"
    );
    assert_eq!(new_connection(&mut d, 1, client(2)), 2, "1 is overloaded");
    d.remove_service(2 * NS_PER_SEC, "web").unwrap();
    let spec = file.director[0].build().unwrap();
    d.add_service(2 * NS_PER_SEC, spec).unwrap();
    assert_eq!(new_connection(&mut d, 3, client(3)), 2, "still overloaded");
    let first = SocketAddr::from(([10, 100, 1, 1], 80));
    d.set_down(4 * NS_PER_SEC, "web", first).unwrap();
    d.set_up(4 * NS_PER_SEC, "web", first).unwrap();
    assert_eq!(new_connection(&mut d, 4, client(4)), 2, "and after -d / -a");
}
