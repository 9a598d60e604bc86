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
    Case, CaseRecord, Change, Counters, PacketOutcome, case_directors, edited_spec, event_frame,
    mark_of, nat_target, wire_text,
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
        let now = (n as u64 + 1) * PACKET_GAP_NS;
        apply_edits(&mut directors, case, n, now - PACKET_GAP_NS / 2)?;
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
    let end = (case.events.len() as u64 + 1) * PACKET_GAP_NS;
    apply_edits(&mut directors, case, case.events.len(), end)?;
    let (counters, connections) = simulated_state(&directors);
    record.counters = counters;
    record.connections = connections;
    Ok(record)
}

/// Make the case's edits due before event `n` (those of a director or real server the
/// case does not have are skipped, as the guest skips them).
fn apply_edits(directors: &mut Directors, case: &Case, n: usize, now: u64) -> anyhow::Result<()> {
    for edit in case.edits.iter().filter(|e| e.before == n) {
        let Some(spec) = directors
            .services()
            .get(edit.director)
            .map(|s| s.spec.clone())
        else {
            continue;
        };
        let real = |real: usize| spec.reals.get(real).map(|r| r.address);
        let done = match edit.change {
            Change::DeleteService => Some(directors.remove_service(now, &spec.name)),
            Change::AddService => {
                let config = &case_directors(case)?[edit.director];
                Some(directors.add_service(now, config.build()?))
            }
            Change::EditService { .. } => {
                let edited = edited_spec(&spec, &edit.change);
                Some(directors.edit_service(
                    now,
                    &spec.name,
                    edited.scheduler,
                    edited.flags,
                    edited.persistence,
                ))
            }
            Change::Delete { real: r } => real(r).map(|a| directors.set_down(now, &spec.name, a)),
            Change::Add { real: r } => real(r).map(|a| directors.set_up(now, &spec.name, a)),
            Change::Weight { real: r, weight } => {
                real(r).map(|a| directors.set_weight(now, &spec.name, a, weight as i32))
            }
        };
        if let Some(result) = done {
            result?;
        }
    }
    Ok(())
}

/// A service as `ipvsadm -L -n` names it (`TCP 10.0.0.1:80`, `FWM 3`).
pub fn service_name(key: &ServiceKey) -> String {
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
    for (index, service) in directors.services().iter().enumerate() {
        if !directors.is_configured(index) {
            continue;
        }
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
    for template in table.templates.iter().flatten() {
        let mut real = directors
            .service(template.service)
            .dests
            .get(template.dest)
            .address;
        if let TemplateTarget::Fwmark(_) = template.key.target {
            // `ip_vs_sched_persist` creates fwmark templates with destination port 0.
            real.set_port(0);
        }
        let client = template.key.client_network;
        let mut virtual_address = match template.key.target {
            TemplateTarget::Virtual(vip, port) => SocketAddr::new(vip, port),
            TemplateTarget::Fwmark(mark) if client.is_ipv6() => {
                // The mark in network order in the address's first 32 bits.
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(u128::from(mark) << 96)), 0)
            }
            TemplateTarget::Fwmark(mark) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(mark)), 0),
        };
        if !template.hashed {
            // `ip_vs_check_template` invalidates a template whose server left: rehashed
            // with both ports 0xffff, it stays until it expires.
            virtual_address.set_port(0xffff);
            real.set_port(0xffff);
        }
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
    let [connections, plain, stats] = sections[..] else {
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
