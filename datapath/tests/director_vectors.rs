//! Golden-vector tests for every scheduler (data in `tests/vectors/`).

use std::net::{IpAddr, SocketAddr};

use datapath::director::dest::{Dests, Forward, RealServer};
use datapath::director::scheduler::{
    BucketTable, DestChange, SchedulePacket, Scheduler, SchedulerFlags, SchedulerKind,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Sequences {
    case: Vec<SequenceCase>,
}

#[derive(Deserialize)]
struct SequenceCase {
    name: String,
    scheduler: SchedulerKind,
    servers: Vec<(String, i32)>,
    #[allow(dead_code)]
    how: Option<String>,
    /// The service was configured by `ipvsadm -A` then one `ipvsadm -a` per server (last
    /// in the list first), not created with every server present.
    #[serde(default)]
    configured: bool,
    steps: String,
}

/// Build the list so that `order` is exactly the given list order.
fn dests_in_list_order(servers: &[(String, SocketAddr, i32)]) -> (Dests, Vec<String>) {
    let mut dests = Dests::default();
    let mut names = vec![String::new(); servers.len()];
    for (name, address, weight) in servers.iter().rev() {
        let id = dests.add(RealServer::new(*address, *weight, Forward::Nat));
        names[id] = name.clone();
    }
    (dests, names)
}

fn packet() -> SchedulePacket {
    SchedulePacket {
        source: "10.9.9.9".parse().unwrap(),
        source_port: 1234,
        destination: "192.0.2.10".parse().unwrap(),
    }
}

fn apply_command(command: &str, dests: &mut Dests, names: &[String], scheduler: &mut Scheduler) {
    let parts: Vec<&str> = command.split(':').collect();
    let id = names
        .iter()
        .position(|n| n == parts[1])
        .expect("server name");
    match parts[0] {
        "w" => {
            let weight: i32 = parts[2].parse().unwrap();
            let server = dests.get_mut(id);
            server.weight = weight;
            if weight != 0 {
                server.last_weight = weight;
            }
            scheduler.dest_changed(dests, DestChange::Updated(id));
        }
        "c" => {
            let server = dests.get_mut(id);
            server.active = parts[2].parse().unwrap();
            server.inactive = parts[3].parse().unwrap();
        }
        "o" => dests.get_mut(id).overloaded = true,
        "u" => dests.get_mut(id).overloaded = false,
        "del" => {
            let position = dests.unlink(id).expect("linked");
            scheduler.dest_changed(dests, DestChange::Removed(id, position));
        }
        "add" => {
            dests.relink(id);
            scheduler.dest_changed(dests, DestChange::Added(id));
        }
        other => panic!("unknown command {other}"),
    }
}

#[test]
fn sequence_vectors() {
    let text = include_str!("vectors/sequences.toml");
    let vectors: Sequences = toml::from_str(text).expect("sequences.toml parses");
    for case in &vectors.case {
        let servers: Vec<(String, SocketAddr, i32)> = case
            .servers
            .iter()
            .enumerate()
            .map(|(i, (name, weight))| {
                (
                    name.clone(),
                    SocketAddr::from(([10, 0, 1, 2 + i as u8], 80)),
                    *weight,
                )
            })
            .collect();
        let (mut dests, names) = dests_in_list_order(&servers);
        let mut scheduler = if case.configured {
            Scheduler::configured(case.scheduler, SchedulerFlags::default(), 4093, &dests)
        } else {
            Scheduler::new(case.scheduler, SchedulerFlags::default(), 4093, &dests)
        };
        let mut got = Vec::new();
        for step in case.steps.split_whitespace() {
            if step.contains(':') {
                apply_command(step, &mut dests, &names, &mut scheduler);
                got.push(step.to_string());
            } else {
                let chosen = scheduler.schedule(0, &dests, &packet());
                got.push(chosen.map_or("-".to_string(), |id| names[id].clone()));
            }
        }
        assert_eq!(got.join(" "), case.steps, "case {:?}", case.name);
    }
}

#[derive(Deserialize)]
struct Hashing {
    sh: Vec<BucketCase>,
    dh: Vec<BucketCase>,
    mh: Vec<MaglevCase>,
}

#[derive(Deserialize)]
struct NamedWeight {
    name: String,
    weight: i32,
}

#[derive(Deserialize)]
struct BucketLookup {
    source: Option<IpAddr>,
    destination: Option<IpAddr>,
    port: Option<u16>,
    bucket: usize,
}

#[derive(Deserialize)]
struct BucketCase {
    name: String,
    servers: Vec<NamedWeight>,
    buckets: String,
    lookups: Vec<BucketLookup>,
}

#[derive(Deserialize)]
struct MaglevServer {
    name: String,
    addr: SocketAddr,
    weight: i32,
}

#[derive(Deserialize)]
struct MaglevLookup {
    source: IpAddr,
    server: String,
}

#[derive(Deserialize)]
struct MaglevCase {
    name: String,
    servers: Vec<MaglevServer>,
    size: usize,
    first_slots: String,
    counts: std::collections::BTreeMap<String, usize>,
    lookups: Vec<MaglevLookup>,
}

fn named(servers: &[NamedWeight]) -> (Dests, Vec<String>) {
    let list: Vec<(String, SocketAddr, i32)> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.name.clone(),
                SocketAddr::from(([10, 0, 1, 2 + i as u8], 80)),
                s.weight,
            )
        })
        .collect();
    dests_in_list_order(&list)
}

fn table_string(table: &BucketTable, names: &[String]) -> String {
    table
        .buckets
        .iter()
        .map(|b| names[b.unwrap()].as_str())
        .collect()
}

#[test]
fn source_and_destination_hashing_vectors() {
    let vectors: Hashing = toml::from_str(include_str!("vectors/hashing.toml")).unwrap();
    for case in &vectors.sh {
        let (dests, names) = named(&case.servers);
        let table = BucketTable::source_hashing(&dests);
        assert_eq!(
            table_string(&table, &names),
            case.buckets,
            "sh {:?}",
            case.name
        );
        for lookup in &case.lookups {
            let bucket =
                BucketTable::source_bucket(lookup.source.unwrap(), lookup.port.unwrap(), 0);
            assert_eq!(bucket, lookup.bucket, "sh {:?}", case.name);
        }
    }
    for case in &vectors.dh {
        let (dests, names) = named(&case.servers);
        let table = BucketTable::destination_hashing(&dests);
        assert_eq!(
            table_string(&table, &names),
            case.buckets,
            "dh {:?}",
            case.name
        );
        for lookup in &case.lookups {
            let bucket = BucketTable::destination_bucket(lookup.destination.unwrap());
            assert_eq!(bucket, lookup.bucket, "dh {:?}", case.name);
        }
    }
}

#[test]
fn maglev_vectors() {
    let vectors: Hashing = toml::from_str(include_str!("vectors/hashing.toml")).unwrap();
    for case in &vectors.mh {
        let list: Vec<(String, SocketAddr, i32)> = case
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.addr, s.weight))
            .collect();
        let (dests, names) = dests_in_list_order(&list);
        let mut scheduler = Scheduler::new(
            SchedulerKind::Mh,
            SchedulerFlags::default(),
            case.size,
            &dests,
        );
        let Scheduler::Mh(table, _) = &scheduler else {
            unreachable!()
        };
        let slots: String = table.slots[..128]
            .iter()
            .map(|s| names[s.unwrap()].as_str())
            .collect();
        assert_eq!(slots, case.first_slots, "mh {:?}", case.name);
        for (name, count) in &case.counts {
            let id = names.iter().position(|n| n == name).unwrap();
            let got = table.slots.iter().filter(|s| **s == Some(id)).count();
            assert_eq!(got, *count, "mh {:?} count of {name}", case.name);
        }
        for lookup in &case.lookups {
            let packet = SchedulePacket {
                source: lookup.source,
                source_port: 0,
                destination: lookup.source,
            };
            let chosen = scheduler.schedule(0, &dests, &packet).unwrap();
            assert_eq!(
                names[chosen], lookup.server,
                "mh {:?} {}",
                case.name, lookup.source
            );
        }
    }
}

/// The sh / dh / mh vectors are the output of their independent generator, byte for byte:
/// the generator (written from the kernel sources) and the committed file cannot drift
/// apart.
#[test]
fn the_hashing_vectors_are_what_their_generator_prints() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let output = std::process::Command::new("python3")
        .arg(dir.join("generate_hashing.py"))
        .output()
        .expect("python3 runs tests/vectors/generate_hashing.py");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed = std::fs::read(dir.join("hashing.toml")).expect("hashing.toml");
    assert!(
        output.stdout == committed,
        "tests/vectors/hashing.toml differs from `python3 generate_hashing.py` output: regenerate it"
    );
}

#[derive(Deserialize)]
struct Localities {
    case: Vec<LocalityCase>,
}

#[derive(Deserialize)]
struct LocalityCase {
    name: String,
    scheduler: SchedulerKind,
    /// Names and weights in kernel list order.
    servers: Vec<(String, i32)>,
    #[allow(dead_code)]
    how: String,
    steps: String,
}

/// The locality vectors' service: fwmark 1, its servers added last first (so that the
/// kernel's list, newest first, is `servers`' order), NAT to port 8080.
fn locality_appliance(case: &LocalityCase) -> Vec<datapath::director::config::DirectorConfig> {
    #[derive(Deserialize)]
    struct File {
        director: Vec<datapath::director::config::DirectorConfig>,
    }
    let reals: Vec<String> = (0..case.servers.len())
        .rev()
        .map(|i| {
            format!(
                "{{ addr = \"{}\", weight = {}, forward = \"nat\" }}",
                locality_server(i),
                case.servers[i].1
            )
        })
        .collect();
    let text = format!(
        "[[director]]\nname = \"cache\"\nfwmark = 1\nscheduler = \"{}\"\nreal = [{}]\n",
        case.scheduler.name(),
        reals.join(", ")
    );
    toml::from_str::<File>(&text).unwrap().director
}

fn locality_server(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 100, 0, 1 + index as u8], 8080))
}

/// One TCP packet through the directors (client packets carry the service's mark 1);
/// the real server of the decision, if any.
fn locality_packet(
    directors: &mut datapath::director::Directors,
    now: &mut u64,
    from: SocketAddr,
    to: SocketAddr,
    flags: u8,
) -> Option<SocketAddr> {
    use datapath::packet::{LinkType, parse};
    *now += 1_000_000;
    let mut frame = datapath::packet::builder::PacketBuilder::eth()
        .ip(from.ip(), to.ip())
        .tcp(from.port(), to.port())
        .flags(flags)
        .seq_ack(1000, 2000)
        .payload(if flags & 0x08 != 0 { b"data" } else { b"" })
        .build();
    let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
    let mark = (to.port() == 80).then_some(1);
    match directors.process(*now, &mut frame, &meta, mark) {
        std::ops::ControlFlow::Break(decision)
            if decision.verdict == datapath::verdict::Verdict::Forward =>
        {
            decision.backend
        }
        _ => None,
    }
}

/// Replay one locality case's steps through lbsim's director, in the vectors' notation.
fn replay_locality(case: &LocalityCase) -> String {
    use datapath::director::{DirectorOptions, Directors};
    let options = DirectorOptions {
        ethernet: true,
        ..DirectorOptions::default()
    };
    let mut directors = Directors::build(&locality_appliance(case), options).unwrap();
    let address = |name: &str| {
        let index = case.servers.iter().position(|(n, _)| n == name);
        locality_server(index.expect("server name"))
    };
    let name_of = |real: SocketAddr| {
        let index = (0..case.servers.len()).find(|&i| locality_server(i) == real);
        index.map_or("?", |i| case.servers[i].0.as_str())
    };
    let (syn, ack, psh, rst) = (0x02, 0x10, 0x08, 0x04);
    let mut clients: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut now = 0;
    let mut got = Vec::new();
    for step in case.steps.split_whitespace() {
        let parts: Vec<&str> = step.split(':').collect();
        match parts[..] {
            ["w", name, weight] => directors
                .set_weight(now, "cache", address(name), weight.parse().unwrap())
                .unwrap(),
            ["del", name] => directors.set_down(now, "cache", address(name)).unwrap(),
            ["add", name] => directors.set_up(now, "cache", address(name)).unwrap(),
            ["rst", k] => {
                let (client, vip) = clients[k.parse::<usize>().unwrap() - 1];
                locality_packet(&mut directors, &mut now, client, vip, rst);
            }
            _ => {
                let (n, expected) = step.split_once('>').expect("N>S token");
                let establish = expected.ends_with('+');
                let client = SocketAddr::from(([198, 18, 0, 1 + clients.len() as u8], 4000));
                let vip = SocketAddr::from(([10, 201, 0, n.parse::<u8>().unwrap()], 80));
                clients.push((client, vip));
                let real = locality_packet(&mut directors, &mut now, client, vip, syn);
                if establish && let Some(real) = real {
                    locality_packet(&mut directors, &mut now, real, client, syn | ack);
                    locality_packet(&mut directors, &mut now, client, vip, ack | psh);
                }
                let plus = if establish { "+" } else { "" };
                got.push(format!("{n}>{}{plus}", real.map_or("-", name_of)));
                continue;
            }
        }
        got.push(step.to_string());
    }
    got.join(" ")
}

/// lblc / lblcr: each hand-derived locality vector, replayed through lbsim's director
/// with real packets (the guest kernel replays the same vectors:
/// `sim/tests/ipvs_guest_oracle.rs`).
#[test]
fn locality_vectors() {
    let vectors: Localities = toml::from_str(include_str!("vectors/locality.toml")).unwrap();
    assert!(vectors.case.len() >= 8);
    for case in &vectors.case {
        assert_eq!(replay_locality(case), case.steps, "case {:?}", case.name);
    }
}
