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
