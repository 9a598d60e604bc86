//! lbsim's side of the director oracle, and the kernel's final state read from `ipvsadm`.
//!
//! [`simulate`] runs a [`Case`]'s packets through `datapath::director::Directors` in order
//! (virtual time: one millisecond per packet, far from every IPVS timeout), builds each
//! server-side packet from the real server lbsim NATed the connection to, and records what
//! was forwarded ([`CaseRecord`]). [`kernel_state`] turns the guest's `ipvsadm -Lcn`,
//! `-L -n --stats --exact` and `-L -n --persistent-conn` output into the same counters and
//! connection lines; [`simulated_state`] does it for lbsim's tables.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;

use datapath::director::config::ServiceKey;
use datapath::director::connection::{ProtocolState, TemplateTarget};
use datapath::director::{DirectorOptions, Directors};
use datapath::packet::{LinkType, ip_proto, parse};
use datapath::verdict::Verdict;

use super::ipvs;
use super::oracle::{
    Case, CaseRecord, Counters, PacketOutcome, case_directors, event_frame, mark_of, nat_target,
    wire_text,
};

/// Virtual time between two packets.
const PACKET_GAP_NS: u64 = 1_000_000;

/// Run a case through lbsim's directors.
pub fn simulate(case: &Case) -> anyhow::Result<CaseRecord> {
    let configs = case_directors(case)?;
    let options = DirectorOptions {
        ethernet: true,
        ..DirectorOptions::default()
    };
    let mut directors = match Directors::build(&configs, options) {
        Ok(directors) => directors,
        Err(error) => {
            return Ok(CaseRecord {
                setup_error: Some(error.to_string()),
                ..CaseRecord::default()
            });
        }
    };
    let mut targets: Vec<Option<SocketAddr>> = vec![None; case.conns.len()];
    let mut record = CaseRecord::default();
    for (n, event) in case.events.iter().enumerate() {
        let conn = &case.conns[event.conn];
        let Some(mut frame) = event_frame(conn, event, targets[event.conn]) else {
            record.packets.push(PacketOutcome::default());
            continue;
        };
        let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
        let mark = if event.from_client {
            meta.dst
                .and_then(|dst| mark_of(&case.marks, conn.proto, dst))
        } else {
            None
        };
        let now = (n as u64 + 1) * PACKET_GAP_NS;
        let forwarded = match directors.process(now, &mut frame, &meta, mark) {
            ControlFlow::Break(decision) => decision.verdict == Verdict::Forward,
            // Not the director's: client packets go to the local stack, server packets are
            // routed on unchanged.
            ControlFlow::Continue(()) => !event.from_client,
        };
        let mut outcome = PacketOutcome {
            sent: true,
            ..PacketOutcome::default()
        };
        if forwarded {
            outcome.forwarded.push(wire_text(&frame, conn.vip.ip()));
            if event.from_client {
                targets[event.conn] = nat_target(&frame, conn);
            }
        }
        record.packets.push(outcome);
    }
    let (counters, connections) = simulated_state(&directors);
    record.counters = counters;
    record.connections = connections;
    Ok(record)
}

fn service_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Tuple { proto, vip, port } => {
            let proto = if *proto == ip_proto::UDP {
                "UDP"
            } else {
                "TCP"
            };
            format!("{proto} {}", SocketAddr::new(*vip, *port))
        }
        ServiceKey::Fwmark(mark) => format!("FWM {mark}"),
    }
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        ip_proto::TCP => "TCP",
        ip_proto::UDP => "UDP",
        _ => "IP",
    }
}

/// lbsim's final counters and connection lines, in the kernel's vocabulary.
pub fn simulated_state(directors: &Directors) -> (BTreeMap<String, Counters>, Vec<String>) {
    let mut counters = BTreeMap::new();
    for service in directors.services() {
        let name = service_name(&service.spec.key);
        let s = &service.stats;
        counters.insert(
            format!("{name} *"),
            Counters {
                stats: [
                    s.connections,
                    s.packets_in,
                    s.packets_out,
                    s.bytes_in,
                    s.bytes_out,
                ],
                conns: [0; 3],
            },
        );
        for (_, server) in service.dests.linked() {
            let d = &server.stats;
            counters.insert(
                format!("{name} {}", server.address),
                Counters {
                    stats: [
                        d.connections,
                        d.packets_in,
                        d.packets_out,
                        d.bytes_in,
                        d.bytes_out,
                    ],
                    conns: [
                        u64::from(server.active),
                        u64::from(server.inactive),
                        u64::from(server.persistent),
                    ],
                },
            );
        }
    }
    let table = directors.table();
    let mut lines = Vec::new();
    for connection in table.connections.iter().flatten() {
        let state = match connection.state {
            ProtocolState::Tcp(state) => state.name(),
            ProtocolState::Udp => "UDP",
        };
        lines.push(format!(
            "{} {} {} > {} {state}",
            proto_name(connection.key.proto),
            connection.key.client,
            connection.key.virtual_address,
            connection.real
        ));
    }
    for &slot in table.by_template_key.values() {
        let Some(template) = table.templates[slot as usize].as_ref() else {
            continue;
        };
        let real = directors
            .service(template.service)
            .dests
            .get(template.dest)
            .address;
        let client = template.key.client_network;
        let virtual_address = match template.key.target {
            TemplateTarget::Virtual(vip, port) => SocketAddr::new(vip, port),
            TemplateTarget::Fwmark(mark) if client.is_ipv6() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(u128::from(mark))), 0)
            }
            TemplateTarget::Fwmark(mark) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(mark)), 0),
        };
        lines.push(format!(
            "{} {} {virtual_address} > {real} NONE",
            proto_name(template.key.proto),
            SocketAddr::new(client, 0)
        ));
    }
    lines.sort();
    (counters, lines)
}

/// The kernel's final counters and connection lines from the dump (see
/// [`super::oracle::dump_script`]).
pub fn kernel_state(dump: &str) -> anyhow::Result<(BTreeMap<String, Counters>, Vec<String>)> {
    let sections: Vec<&str> = dump.split("#--\n").collect();
    let [connections, stats, plain] = sections[..] else {
        anyhow::bail!(
            "ipvsadm dump has {} sections, not 3:\n{dump}",
            sections.len()
        );
    };
    let mut lines: Vec<String> = ipvs::parse_connections(connections)?
        .into_iter()
        .map(|e| {
            format!(
                "{} {} {} > {} {}",
                e.proto, e.source, e.virtual_address, e.destination, e.state
            )
        })
        .collect();
    lines.sort();
    let mut counters = BTreeMap::new();
    let number = |text: &String| text.parse::<u64>().unwrap_or(u64::MAX);
    for service in ipvs::parse_listing(stats)? {
        let name = listed_name(&service);
        let offset = usize::from(service.columns.first().is_some_and(|c| c == "IPv6"));
        let values: Vec<u64> = service.columns[offset..].iter().map(number).collect();
        counters.insert(
            format!("{name} *"),
            Counters {
                stats: five(&values),
                conns: [0; 3],
            },
        );
        for real in &service.reals {
            let values: Vec<u64> = real.columns.iter().map(number).collect();
            counters.insert(
                format!("{name} {}", real.address),
                Counters {
                    stats: five(&values),
                    conns: [0; 3],
                },
            );
        }
    }
    for service in ipvs::parse_listing(plain)? {
        let name = listed_name(&service);
        for real in &service.reals {
            // Weight PersistConn ActiveConn InActConn
            let entry = counters
                .entry(format!("{name} {}", real.address))
                .or_default();
            let get = |i: usize| real.number(i).unwrap_or(u64::MAX);
            entry.conns = [get(2), get(3), get(1)];
        }
    }
    Ok((counters, lines))
}

fn listed_name(service: &ipvs::ListedService) -> String {
    if service.proto == "FWM" {
        format!("FWM {}", service.address)
    } else {
        format!("{} {}", service.proto, service.address)
    }
}

fn five(values: &[u64]) -> [u64; 5] {
    let mut out = [u64::MAX; 5];
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = *value;
    }
    out
}
