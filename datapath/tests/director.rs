//! Director behaviour through `Directors::process`: NAT round trip, persistence across the
//! ports of a fwmark, bounded table flood, quiescent servers, thresholds, DR/TUN, Maglev
//! properties, listing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;

use datapath::director::config::DirectorConfig;
use datapath::director::connection::Direction;
use datapath::director::dest::{Dests, Forward, RealServer};
use datapath::director::listing::{ListFormat, render};
use datapath::director::scheduler::{SchedulePacket, Scheduler, SchedulerFlags, SchedulerKind};
use datapath::director::{Decision, DirectorOptions, Directors};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, PacketMeta, ip_proto, parse, tcp_flags};
use datapath::verdict::{DropReason, NS_PER_SEC, Verdict};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn directors(toml_text: &str, options: DirectorOptions) -> Directors {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(toml_text).unwrap();
    Directors::build(&file.director, options).unwrap()
}

fn meta_of(frame: &[u8]) -> PacketMeta {
    parse(LinkType::Ethernet, frame, frame.len() as u32, 0)
}

fn send(d: &mut Directors, now_s: u64, frame: &mut Vec<u8>, mark: Option<u32>) -> Option<Decision> {
    let meta = meta_of(frame);
    assert_eq!(meta.invalid, None, "input frame must be valid");
    match d.process(now_s * NS_PER_SEC, frame, &meta, mark) {
        ControlFlow::Break(decision) => Some(decision),
        ControlFlow::Continue(()) => None,
    }
}

fn tcp(src: [u8; 4], sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(Ipv4Addr::from(src), dst)
        .tcp(sport, dport)
        .flags(flags)
        .payload(b"hello")
        .build()
}

const NAT_SERVICE: &str = r#"
[[director]]
name = "web"
vip = "192.0.2.10"
port = 80
proto = "tcp"
scheduler = "rr"
forward = "nat"
real = [{ addr = "10.0.1.2:8080", weight = 1 }, { addr = "10.0.1.3:8080", weight = 1 }]
"#;

#[test]
fn nat_round_trip_rewrites_both_directions_with_valid_checksums() {
    let mut d = directors(NAT_SERVICE, DirectorOptions::default());
    // (packet, expected verdict, expected source, expected destination after rewrite)
    let client: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let vip: SocketAddr = "192.0.2.10:80".parse().unwrap();
    // The kernel list is last-added first: 10.0.1.3 is the head, so rr picks it first.
    let real: SocketAddr = "10.0.1.3:8080".parse().unwrap();
    let mut syn = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::SYN);
    let decision = send(&mut d, 0, &mut syn, None).unwrap();
    assert_eq!(decision.verdict, Verdict::Forward);
    assert!(decision.new_connection);
    assert_eq!(decision.backend, Some(real));
    let out = meta_of(&syn);
    assert_eq!(out.invalid, None, "checksums valid after DNAT");
    assert_eq!(
        (out.src, out.dst, out.dport),
        (Some(client.ip()), Some(real.ip()), Some(8080))
    );

    let mut syn_ack = tcp(
        [10, 0, 1, 3],
        8080,
        Ipv4Addr::new(198, 51, 100, 7),
        40000,
        tcp_flags::SYN | tcp_flags::ACK,
    );
    let decision = send(&mut d, 0, &mut syn_ack, None).unwrap();
    assert_eq!(
        (decision.verdict, decision.direction),
        (Verdict::Forward, Direction::Output)
    );
    let back = meta_of(&syn_ack);
    assert_eq!(back.invalid, None, "checksums valid after un-NAT");
    assert_eq!(
        (back.src, back.sport, back.dst),
        (Some(vip.ip()), Some(80), Some(client.ip()))
    );

    let mut ack = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::ACK);
    send(&mut d, 1, &mut ack, None).unwrap();
    let server = &d.service(0).dests;
    let id = server.find(real).unwrap();
    assert_eq!((server.get(id).active, server.get(id).inactive), (1, 0));

    // A non-SYN for an unknown connection goes to the local stack, untouched.
    let mut stray = tcp([198, 51, 100, 8], 1, VIP, 80, tcp_flags::ACK);
    assert!(send(&mut d, 1, &mut stray, None).is_none());
    // Traffic not for a virtual service continues.
    let mut other = tcp(
        [198, 51, 100, 8],
        1,
        Ipv4Addr::new(192, 0, 2, 99),
        80,
        tcp_flags::SYN,
    );
    assert!(send(&mut d, 1, &mut other, None).is_none());
}

#[test]
fn udp_nat_keeps_checksum_valid_and_counts_inactive() {
    let text = NAT_SERVICE.replace("proto = \"tcp\"", "proto = \"udp\"");
    let mut d = directors(&text, DirectorOptions::default());
    let mut datagram = PacketBuilder::eth()
        .ipv4(Ipv4Addr::new(198, 51, 100, 7), VIP)
        .udp(5000, 80)
        .payload(b"q")
        .build();
    let decision = send(&mut d, 0, &mut datagram, None).unwrap();
    assert_eq!(decision.verdict, Verdict::Forward);
    assert_eq!(meta_of(&datagram).invalid, None);
    let dests = &d.service(0).dests;
    let id = dests.find("10.0.1.3:8080".parse().unwrap()).unwrap();
    assert_eq!((dests.get(id).active, dests.get(id).inactive), (0, 1));
}

const FWMARK_SERVICE: &str = r#"
[[director]]
name = "web"
fwmark = 80
scheduler = "rr"
persistence = "300s"
forward = "nat"
real = [{ addr = "10.0.1.2", weight = 1 }, { addr = "10.0.1.3", weight = 1 }, { addr = "10.0.1.4", weight = 1 }]
"#;

#[test]
fn fwmark_persistence_keeps_http_and_https_on_one_server_until_timeout() {
    let mut d = directors(FWMARK_SERVICE, DirectorOptions::default());
    let client = [198, 51, 100, 7];
    let mut http = tcp(client, 40000, VIP, 80, tcp_flags::SYN);
    let first = send(&mut d, 0, &mut http, Some(80)).unwrap();
    let mut https = tcp(client, 40001, VIP, 443, tcp_flags::SYN);
    let second = send(&mut d, 1, &mut https, Some(80)).unwrap();
    let server = first.backend.unwrap().ip();
    assert_eq!(
        second.backend.unwrap(),
        SocketAddr::new(server, 443),
        "same server, port kept"
    );
    assert_eq!(meta_of(&https).dport, Some(443));
    // Another client takes the next server in rr order.
    let mut other = tcp([203, 0, 113, 5], 1000, VIP, 80, tcp_flags::SYN);
    let other_server = send(&mut d, 2, &mut other, Some(80))
        .unwrap()
        .backend
        .unwrap()
        .ip();
    assert_ne!(other_server, server);
    // Within the persistence timeout (restarted by the second connection at t=1 s) the
    // client still lands on its server.
    let mut again = tcp(client, 40002, VIP, 443, tcp_flags::SYN);
    assert_eq!(
        send(&mut d, 200, &mut again, Some(80))
            .unwrap()
            .backend
            .unwrap()
            .ip(),
        server
    );
    // Connections in SYN_RECV expire after 60 s; the template 300 s after its last use
    // (t=200 s): at t=501 s a new choice is made (rr moved on to the third server).
    let mut later = tcp(client, 40003, VIP, 80, tcp_flags::SYN);
    let third = send(&mut d, 501, &mut later, Some(80))
        .unwrap()
        .backend
        .unwrap()
        .ip();
    assert_ne!(third, server);
    assert_ne!(third, other_server);
}

/// A fwmark service is of its real servers' family (IPVS: `__ip_vs_svc_fwm_find` compares
/// the service's family): an IPv6 packet carrying the mark of an IPv4 service is not the
/// service's (the director lets it pass), an IPv4 one is.
#[test]
fn a_fwmark_service_takes_only_its_real_servers_family() {
    let mut d = directors(FWMARK_SERVICE, DirectorOptions::default());
    let mut v6 = PacketBuilder::eth()
        .ipv6(
            "2001:db8::7".parse().unwrap(),
            "2001:db8:ffff::10".parse().unwrap(),
        )
        .tcp(40000, 80)
        .syn()
        .build();
    assert_eq!(send(&mut d, 0, &mut v6, Some(80)), None);
    let mut v4 = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::SYN);
    assert_eq!(
        send(&mut d, 0, &mut v4, Some(80)).map(|decision| decision.verdict),
        Some(Verdict::Forward)
    );
}

#[test]
fn flood_fills_the_table_then_drops_new_connections_and_counts_them() {
    let options = DirectorOptions {
        connection_capacity: 100,
        ..DirectorOptions::default()
    };
    let mut d = directors(NAT_SERVICE, options);
    let mut verdicts = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..150u32 {
        let source = (0x0a_00_00_00u32 + i).to_be_bytes();
        let mut syn = tcp(source, 1024 + i as u16, VIP, 80, tcp_flags::SYN);
        let decision = send(&mut d, 0, &mut syn, None).unwrap();
        let name = match decision.verdict.drop_reason() {
            Some(reason) => reason.name().into_owned(),
            None => decision.verdict.name().to_string(),
        };
        *verdicts.entry(name).or_default() += 1;
    }
    assert_eq!(verdicts.get("forward"), Some(&100));
    assert_eq!(verdicts.get("conn_table_full"), Some(&50));
    assert_eq!(d.table().connection_count, 100);
    assert_eq!(d.table().counters.connection_overflows, 50);
    assert_eq!(d.counters.table_full, 50);
    // Current kernels count SYN_RECV as active: the flood shows as ActiveConn.
    let total_active: u32 = d.service(0).dests.servers.iter().map(|s| s.active).sum();
    assert_eq!(total_active, 100);
    // SYN_RECV times out after 60 s; the table empties and accepts again.
    d.advance(61 * NS_PER_SEC);
    assert_eq!(d.table().connection_count, 0);
    let mut syn = tcp([10, 9, 9, 9], 1, VIP, 80, tcp_flags::SYN);
    assert_eq!(
        send(&mut d, 61, &mut syn, None).unwrap().verdict,
        Verdict::Forward
    );
}

#[test]
fn quiescent_server_keeps_existing_connections_but_gets_no_new_ones() {
    let mut d = directors(NAT_SERVICE, DirectorOptions::default());
    let mut syn = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::SYN);
    let real = send(&mut d, 0, &mut syn, None).unwrap().backend.unwrap();
    d.set_weight(NS_PER_SEC, "web", real, 0).unwrap();
    let mut data = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::ACK);
    assert_eq!(
        send(&mut d, 2, &mut data, None).unwrap().backend,
        Some(real)
    );
    for port in 1..5 {
        let mut syn = tcp([198, 51, 100, 8], port, VIP, 80, tcp_flags::SYN);
        assert_ne!(send(&mut d, 2, &mut syn, None).unwrap().backend, Some(real));
    }
}

#[test]
fn removed_server_with_expire_nodest_conn_drops_its_connections() {
    let options = DirectorOptions {
        expire_nodest_conn: true,
        ..DirectorOptions::default()
    };
    let mut d = directors(NAT_SERVICE, options);
    let mut syn = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::SYN);
    let real = send(&mut d, 0, &mut syn, None).unwrap().backend.unwrap();
    d.set_down(NS_PER_SEC, "web", real).unwrap();
    let mut data = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::ACK);
    let decision = send(&mut d, 2, &mut data, None).unwrap();
    assert_eq!(decision.verdict, Verdict::Drop(DropReason::NoDestination));
    assert_eq!(d.table().connection_count, 0);
}

#[test]
fn upper_threshold_overloads_a_server_until_connections_drop_below_lower() {
    let text = r#"
[[director]]
name = "web"
vip = "192.0.2.10"
port = 80
scheduler = "rr"
real = [{ addr = "10.0.1.2:80", weight = 1 }, { addr = "10.0.1.3:80", weight = 1, upper_threshold = 1, lower_threshold = 1 }]
"#;
    let mut d = directors(text, DirectorOptions::default());
    let backends: Vec<String> = (0..4u16)
        .map(|port| {
            let mut syn = tcp([198, 51, 100, 7], port + 1, VIP, 80, tcp_flags::SYN);
            send(&mut d, 0, &mut syn, None)
                .unwrap()
                .backend
                .unwrap()
                .to_string()
        })
        .collect();
    // 10.0.1.3 is the list head: one connection, then overloaded and skipped.
    assert_eq!(
        backends,
        ["10.0.1.3:80", "10.0.1.2:80", "10.0.1.2:80", "10.0.1.2:80"]
    );
    d.advance(61 * NS_PER_SEC);
    let mut syn = tcp([198, 51, 100, 7], 99, VIP, 80, tcp_flags::SYN);
    let back = send(&mut d, 61, &mut syn, None).unwrap().backend.unwrap();
    assert_eq!(back.to_string(), "10.0.1.3:80");
}

#[test]
fn direct_routing_rewrites_only_the_destination_mac() {
    let text = NAT_SERVICE.replace("forward = \"nat\"", "forward = \"dr\"");
    let mut d = directors(&text, DirectorOptions::default());
    let original = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::SYN);
    let mut frame = original.clone();
    send(&mut d, 0, &mut frame, None).unwrap();
    assert_eq!(&frame[..6], &[0x02, 0x00, 10, 0, 1, 3]);
    assert_eq!(&frame[6..], &original[6..]);
}

#[test]
fn tunnel_encapsulates_in_ipip_to_the_real_server() {
    let text = NAT_SERVICE.replace("forward = \"nat\"", "forward = \"tun\"");
    let mut d = directors(&text, DirectorOptions::default());
    let original = tcp([198, 51, 100, 7], 40000, VIP, 80, tcp_flags::SYN);
    let mut frame = original.clone();
    send(&mut d, 0, &mut frame, None).unwrap();
    let outer = meta_of(&frame);
    assert_eq!(outer.invalid, None);
    assert_eq!(
        (outer.proto, outer.dst),
        (Some(4), Some(IpAddr::from([10, 0, 1, 3])))
    );
    assert_eq!(&frame[34..], &original[14..], "inner datagram intact");
    assert_eq!(ip_proto::TCP, meta_of(&original).proto.unwrap());
}

fn maglev_dests(weights: &[i32]) -> Dests {
    let mut dests = Dests::default();
    for (i, &w) in weights.iter().enumerate() {
        dests.add(RealServer::new(
            SocketAddr::from(([10, 0, 2, i as u8 + 1], 80)),
            w,
            Forward::Nat,
        ));
    }
    dests
}

#[test]
fn maglev_shares_follow_weights_and_removal_disrupts_little() {
    let weights = [1, 2, 3, 4];
    let dests = maglev_dests(&weights);
    let scheduler = Scheduler::new(SchedulerKind::Mh, SchedulerFlags::default(), 65521, &dests);
    let Scheduler::Mh(table, _) = &scheduler else {
        unreachable!()
    };
    let total: i32 = weights.iter().sum();
    for (id, server) in dests.servers.iter().enumerate() {
        let share = table.slots.iter().filter(|s| **s == Some(id)).count() as f64 / 65521.0;
        let expected = f64::from(server.weight) / f64::from(total);
        assert!(
            (share - expected).abs() < 0.01,
            "server {id}: {share} vs {expected}"
        );
    }
    let equal = maglev_dests(&[1, 1, 1, 1, 1]);
    let before = Scheduler::new(SchedulerKind::Mh, SchedulerFlags::default(), 4093, &equal);
    let mut fewer = equal.clone();
    fewer.unlink(2);
    let after = Scheduler::new(SchedulerKind::Mh, SchedulerFlags::default(), 4093, &fewer);
    let (Scheduler::Mh(a, _), Scheduler::Mh(b, _)) = (&before, &after) else {
        unreachable!()
    };
    let kept: Vec<_> = a
        .slots
        .iter()
        .zip(&b.slots)
        .filter(|(x, _)| **x != Some(2))
        .collect();
    let moved = kept.iter().filter(|(x, y)| x != y).count();
    assert!(
        (moved as f64) < 0.05 * kept.len() as f64,
        "{moved} of {} slots moved",
        kept.len()
    );
}

#[test]
fn lblc_keeps_a_destination_on_its_server_until_it_is_overloaded() {
    let dests = maglev_dests(&[1, 1]);
    let mut scheduler = Scheduler::new(SchedulerKind::Lblc, SchedulerFlags::default(), 0, &dests);
    let packet = |d: [u8; 4]| SchedulePacket {
        source: "10.0.0.1".parse().unwrap(),
        source_port: 1,
        destination: IpAddr::from(d),
    };
    let mut dests = dests;
    let first = scheduler
        .schedule(0, &dests, &packet([1, 1, 1, 1]))
        .unwrap();
    dests.get_mut(first).active = 1; // wlc would now pick the other server
    assert_eq!(
        scheduler.schedule(0, &dests, &packet([1, 1, 1, 1])),
        Some(first),
        "cached"
    );
    assert_ne!(
        scheduler.schedule(0, &dests, &packet([2, 2, 2, 2])),
        Some(first),
        "wlc for a new destination"
    );
    dests.get_mut(first).active = 2; // active > weight while the other is under half: re-pick
    let other = 1 - first;
    dests.get_mut(other).active = 0;
    assert_eq!(
        scheduler.schedule(0, &dests, &packet([1, 1, 1, 1])),
        Some(other)
    );
}

#[test]
fn listing_has_the_ipvsadm_shape() {
    let mut d = directors(
        FWMARK_SERVICE,
        DirectorOptions {
            connection_capacity: 4096,
            ..DirectorOptions::default()
        },
    );
    for port in 0..3u16 {
        let mut syn = tcp(
            [198, 51, 100, 7 + port as u8],
            1000,
            VIP,
            80,
            tcp_flags::SYN,
        );
        send(&mut d, 0, &mut syn, Some(80)).unwrap();
    }
    let listing = format!(
        "{}\n{}\n{}",
        render(&d, ListFormat::Plain),
        render(&d, ListFormat::Stats),
        {
            d.advance(4 * NS_PER_SEC);
            render(&d, ListFormat::Rate)
        }
    );
    insta::assert_snapshot!(listing);
}

/// A service configured as `ipvsadm -A` then `-a` per real (A 4, B 3, C 2) starts where
/// `ip_vs_wrr_dest_changed` leaves wrr after the last add (cw = 1): C B A A B A C B A, as
/// Linux 6.1's IPVS answers (sim/tests/ipvs_guest_oracle.rs), not A B A C B A C B A.
#[test]
fn wrr_starts_where_adding_the_reals_one_by_one_leaves_it() {
    let mut d = directors(
        r#"
[[director]]
name = "web"
vip = "192.0.2.10"
port = 80
scheduler = "wrr"
real = [{ addr = "10.0.1.1:80", weight = 4 }, { addr = "10.0.1.2:80", weight = 3 },
        { addr = "10.0.1.3:80", weight = 2 }]
"#,
        DirectorOptions::default(),
    );
    let names: Vec<&str> = (0..9u8)
        .map(|i| {
            let mut frame = tcp([198, 51, 100, i + 1], 4000, VIP, 80, tcp_flags::SYN);
            let decision = send(&mut d, 1, &mut frame, None).expect("scheduled");
            match decision.backend.expect("backend").ip().to_string().as_str() {
                "10.0.1.1" => "A",
                "10.0.1.2" => "B",
                _ => "C",
            }
        })
        .collect();
    assert_eq!(names.join(" "), "C B A A B A C B A");
}

/// `port = 0` without persistence is refused, as `ipvsadm` refuses it ("Zero port
/// specified for non-persistent service"); with persistence it is a valid service.
#[test]
fn a_non_persistent_port_zero_service_is_refused() {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let text = |persistence: &str| {
        format!(
            "[[director]]\nname = \"any\"\nvip = \"192.0.2.10\"\nport = 0\n{persistence}\
             real = [{{ addr = \"10.0.1.2\" }}]\n"
        )
    };
    let file: File = toml::from_str(&text("")).unwrap();
    let Err(error) = Directors::build(&file.director, DirectorOptions::default()) else {
        panic!("a non-persistent port-0 service must be refused");
    };
    assert!(
        matches!(error, datapath::director::config::ConfigError::ZeroPort(ref name) if name == "any"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("Zero port specified for non-persistent service")
    );
    let file: File = toml::from_str(&text("persistence = \"60s\"\n")).unwrap();
    assert!(Directors::build(&file.director, DirectorOptions::default()).is_ok());
}
