//! Random director-oracle cases from a seed: 1–3 directors (every scheduler and its flags;
//! IPv4 and IPv6 virtual services; fwmark services over several networks mixing TCP and
//! UDP; 1–8 real servers with weights 0–5, thresholds, NAT / direct routing / tunnels;
//! persistence with a per-client or per-network mask) and about 30 packets: new
//! connections, handshakes, data, FIN and RST closes from either side, repeats of a 5-tuple
//! after it closed, and a few packets for no service; in about half the cases, operator
//! changes between packets (`ipvsadm -e` weights including 0, `-d` and `-a` of real servers,
//! `-E` of a service's scheduler, flags and persistence, `-D` of a service and `-A` of it
//! again with its real servers).
//!
//! Direct-routing and tunnel servers get the service's port (ipvsadm forces it), and
//! port-0 services are persistent (the other kind is refused); everything else is drawn.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use super::oracle::{Case, Change, Conn, Edit, Event, Kind, MarkRule};

const SCHEDULERS: [&str; 13] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh", "lblc", "lblcr", "fo", "ovf",
];

struct Draw(ChaCha8Rng);

impl Draw {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Where a director's packets go: its virtual addresses (one, or a fwmark's networks),
/// ports and protocols.
struct Target {
    ipv6: bool,
    addresses: Vec<IpAddr>,
    ports: Vec<u16>,
    protos: Vec<u8>,
    /// How many real servers.
    reals: usize,
    /// A port-0 virtual service (it must stay persistent: `ipvsadm` refuses it otherwise).
    port_zero: bool,
}

fn real_address(ipv6: bool, director: usize, real: usize) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0x100,
            0,
            0,
            0,
            0,
            director as u16 + 1,
            real as u16 + 1,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 100, director as u8 + 1, real as u8 + 1))
    }
}

fn director_toml(draw: &mut Draw, index: usize, marks: &mut Vec<MarkRule>) -> (String, Target) {
    let ipv6 = draw.chance(25);
    let fwmark = draw.chance(25);
    let scheduler = *draw.pick(&SCHEDULERS);
    let persistent = draw.chance(35);
    let mut text = format!("[[director]]\nname = \"d{index}\"\nscheduler = \"{scheduler}\"\n");
    let mut target = Target {
        ipv6,
        addresses: Vec::new(),
        ports: vec![80, 443],
        protos: Vec::new(),
        reals: 0,
        port_zero: false,
    };
    let mut service_port = 0;
    if fwmark {
        let mark = index as u32 + 1;
        let _ = writeln!(text, "fwmark = {mark}");
        for network in 0..=draw.below(3) {
            let third = (index * 4 + network as usize) as u8;
            let (net, address) = if ipv6 {
                let prefix = Ipv6Addr::new(0xfd00, 0x201, 0, third.into(), 0, 0, 0, 0);
                (
                    format!("{prefix}/64"),
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x201, 0, third.into(), 0, 0, 0, 7)),
                )
            } else {
                (
                    format!("10.201.{third}.0/24"),
                    IpAddr::V4(Ipv4Addr::new(10, 201, third, 7)),
                )
            };
            target.addresses.push(address);
            for proto in ["tcp", "udp"] {
                if draw.chance(70) || network == 0 {
                    marks.push(MarkRule {
                        proto: proto.into(),
                        network: net.clone(),
                        mark,
                    });
                }
            }
        }
        target.protos = vec![6, 17];
    } else {
        let vip = if ipv6 {
            IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0x200,
                0,
                0,
                0,
                0,
                0,
                index as u16 + 1,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 200, 0, index as u8 + 1))
        };
        let udp = draw.chance(30);
        service_port = if persistent && draw.chance(25) {
            0
        } else {
            *draw.pick(&[80u16, 443])
        };
        let _ = writeln!(
            text,
            "vip = \"{vip}\"\nport = {service_port}\nproto = \"{}\"",
            if udp { "udp" } else { "tcp" }
        );
        target.addresses.push(vip);
        target.port_zero = service_port == 0;
        target.protos = vec![if udp { 17 } else { 6 }];
        if service_port != 0 {
            target.ports = vec![service_port];
        }
    }
    let (port_flag, fallback) = scheduler_flags(draw, scheduler);
    let flags: Vec<String> = [(port_flag, "port"), (fallback, "fallback")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, flag)| format!("\"{scheduler}-{flag}\""))
        .collect();
    let _ = writeln!(text, "flags = [{}]", flags.join(", "));
    if persistent {
        let mask = match (ipv6, draw.chance(50)) {
            (false, true) => "255.255.255.255",
            (false, false) => "255.255.255.0",
            (true, true) => "128",
            (true, false) => "64",
        };
        let _ = writeln!(
            text,
            "persistence = \"300s\"\npersistence_netmask = \"{mask}\""
        );
    }
    text.push_str("real = [\n");
    for real in 0..=draw.below(8) as usize {
        let address = real_address(ipv6, index, real);
        let forward = *draw.pick(&["nat", "nat", "nat", "nat", "dr", "tun"]);
        let port = match (forward, service_port, fwmark) {
            ("nat", 0, false) => 0,
            ("nat", _, _) => *draw.pick(&[0u16, 8080, 80]),
            (_, port, false) => port,
            (_, _, true) => 0,
        };
        let addr = match (port, address) {
            (0, IpAddr::V6(v6)) => format!("[{v6}]"),
            (0, v4) => v4.to_string(),
            (port, ip) => SocketAddr::new(ip, port).to_string(),
        };
        let weight = if draw.chance(15) {
            0
        } else {
            1 + draw.below(5)
        };
        let _ = write!(
            text,
            "  {{ addr = \"{addr}\", weight = {weight}, forward = \"{forward}\""
        );
        if draw.chance(20) {
            let upper = 1 + draw.below(4);
            let lower = draw.below(upper + 1);
            let _ = write!(
                text,
                ", upper_threshold = {upper}, lower_threshold = {lower}"
            );
        }
        text.push_str(" },\n");
        target.reals += 1;
    }
    text.push_str("]\n");
    (text, target)
}

/// sh / mh flags drawn for `scheduler`: (hash the port, fall back).
fn scheduler_flags(draw: &mut Draw, scheduler: &str) -> (bool, bool) {
    match scheduler {
        "sh" | "mh" => (draw.chance(50), draw.chance(50)),
        _ => (false, false),
    }
}

/// An `ipvsadm -E` of `target`'s service: any scheduler (and its flags), persistence on or
/// off (a port-0 service stays persistent), another timeout and netmask.
fn edit_service(draw: &mut Draw, target: &Target) -> Change {
    use datapath::director::scheduler::SchedulerKind as K;
    const KINDS: [K; 13] = [
        K::Rr,
        K::Wrr,
        K::Lc,
        K::Wlc,
        K::Sed,
        K::Nq,
        K::Sh,
        K::Dh,
        K::Mh,
        K::Lblc,
        K::Lblcr,
        K::Fo,
        K::Ovf,
    ];
    let scheduler = *draw.pick(&KINDS);
    let (port, fallback) = scheduler_flags(draw, scheduler.name());
    let persistence = (target.port_zero || draw.chance(50)).then(|| {
        let timeout = *draw.pick(&[60u32, 300, 900]);
        let prefix = match (target.ipv6, draw.chance(50)) {
            (false, true) => 32,
            (false, false) => 24,
            (true, true) => 128,
            (true, false) => 64,
        };
        (timeout, prefix)
    });
    Change::EditService {
        scheduler,
        port,
        fallback,
        persistence,
    }
}

fn client_address(draw: &mut Draw, ipv6: bool) -> IpAddr {
    let network = draw.below(3) as u8;
    let host = 1 + draw.below(4) as u8;
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0xc,
            0,
            network.into(),
            0,
            0,
            0,
            host.into(),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, network, host))
    }
}

fn connection_events(draw: &mut Draw, conn: usize, udp: bool) -> Vec<Event> {
    let event = |from_client, kind| Event {
        conn,
        from_client,
        kind,
    };
    let mut events = Vec::new();
    if udp {
        for _ in 0..=draw.below(3) {
            events.push(event(draw.chance(70), Kind::Data));
        }
        events[0].from_client = true;
        return events;
    }
    events.push(event(true, Kind::Syn));
    if draw.chance(80) {
        events.push(event(false, Kind::SynAck));
        if draw.chance(80) {
            events.push(event(true, Kind::Data));
        }
    }
    match draw.below(4) {
        0 => events.push(event(draw.chance(50), Kind::Rst)),
        1 => {
            let first = draw.chance(50);
            events.push(event(first, Kind::Fin));
            events.push(event(!first, Kind::Fin));
        }
        2 => events.push(event(true, Kind::Fin)),
        _ => {}
    }
    if draw.chance(10) {
        events.push(event(true, Kind::Syn));
    }
    events
}

/// The case for `seed`.
pub fn random_case(seed: u64) -> Case {
    let mut draw = Draw(ChaCha8Rng::seed_from_u64(seed));
    let mut appliance = String::new();
    let mut marks = Vec::new();
    let mut targets = Vec::new();
    for index in 0..=draw.below(3) as usize {
        let (text, target) = director_toml(&mut draw, index, &mut marks);
        appliance.push_str(&text);
        targets.push(target);
    }
    let mut conns = Vec::new();
    let mut per_conn: Vec<Vec<Event>> = Vec::new();
    while per_conn.iter().map(Vec::len).sum::<usize>() < 30 {
        let target = draw.pick(&targets);
        let proto = *draw.pick(&target.protos);
        let mut port = *draw.pick(&target.ports);
        if draw.chance(5) {
            port = 9999;
        }
        let vip = SocketAddr::new(*draw.pick(&target.addresses), port);
        let client = SocketAddr::new(
            client_address(&mut draw, target.ipv6),
            *draw.pick(&[1000u16, 2000, 3000, 40000, 50000]),
        );
        let conn = Conn { proto, client, vip };
        let index = conns.iter().position(|c| *c == conn).unwrap_or_else(|| {
            conns.push(conn);
            conns.len() - 1
        });
        per_conn.push(connection_events(&mut draw, index, proto == 17));
    }
    let mut events = Vec::new();
    let mut cursors = vec![0; per_conn.len()];
    while let Some(open) = {
        let open: Vec<usize> = (0..per_conn.len())
            .filter(|&i| cursors[i] < per_conn[i].len())
            .collect();
        (!open.is_empty()).then_some(open)
    } {
        // Connections start in order; the next packet comes from one of the two
        // earliest unfinished ones, so connections overlap a little.
        let window = &open[..open.len().min(2)];
        let chosen = *draw.pick(window);
        events.push(per_conn[chosen][cursors[chosen]]);
        cursors[chosen] += 1;
    }
    let edits = random_edits(&mut draw, &targets, events.len());
    Case {
        appliance,
        marks,
        conns,
        events,
        edits,
    }
}

/// Operator changes for about half the cases: up to three, at random points, each valid
/// when made (no edit of a deleted server or service): re-weighting (0 = quiescent),
/// deleting a real server, adding a deleted one back, changing the service (`-E`),
/// deleting a service, adding a deleted service back with its real servers.
fn random_edits(draw: &mut Draw, targets: &[Target], events: usize) -> Vec<Edit> {
    if events == 0 || draw.chance(50) {
        return Vec::new();
    }
    let mut points: Vec<usize> = (0..=draw.below(4))
        .map(|_| 1 + draw.below(events as u64) as usize)
        .collect();
    points.sort_unstable();
    let mut service_gone = vec![false; targets.len()];
    let mut real_gone: Vec<Vec<bool>> = targets.iter().map(|t| vec![false; t.reals]).collect();
    let mut edits = Vec::new();
    for before in points {
        let director = draw.below(targets.len() as u64) as usize;
        if service_gone[director] {
            if draw.chance(60) {
                service_gone[director] = false;
                real_gone[director].fill(false);
                edits.push(Edit {
                    before,
                    director,
                    change: Change::AddService,
                });
            }
            continue;
        }
        let gone: Vec<usize> = (0..targets[director].reals)
            .filter(|&r| real_gone[director][r])
            .collect();
        let present: Vec<usize> = (0..targets[director].reals)
            .filter(|&r| !real_gone[director][r])
            .collect();
        let change = if draw.chance(15) {
            service_gone[director] = true;
            Change::DeleteService
        } else if draw.chance(20) {
            edit_service(draw, &targets[director])
        } else if !gone.is_empty() && (present.is_empty() || draw.chance(40)) {
            let real = *draw.pick(&gone);
            real_gone[director][real] = false;
            Change::Add { real }
        } else if present.is_empty() {
            continue;
        } else if draw.chance(55) {
            let weight = if draw.chance(30) {
                0
            } else {
                1 + draw.below(5) as u32
            };
            Change::Weight {
                real: *draw.pick(&present),
                weight,
            }
        } else {
            let real = *draw.pick(&present);
            real_gone[director][real] = true;
            Change::Delete { real }
        };
        edits.push(Edit {
            before,
            director,
            change,
        });
    }
    edits
}
