//! The per-connection director oracle: one [`Case`] (an appliance's directors, firewall-mark
//! rules and a sequence of connection events) run through lbsim's `Directors` (see
//! [`super::oracle_sim`]) and through a real IPVS in the guest kernel (see
//! [`super::driver`]), then compared packet by packet and by the final IPVS tables
//! ([`compare`]).
//!
//! Every case gets fresh network namespaces in the guest, so IPVS starts empty as lbsim
//! does: `lb` holds the services; in the ends' namespace `e`, `c0` faces the LB's `vc` (the
//! client side) and `s0` the LB's `vs` (the server side). The ends' namespace owns neither the client or
//! real-server addresses, so nothing answers on its own: every packet is injected with
//! AF_PACKET and every packet the LB sends is read back. Real servers are on-link behind
//! `vs` with static neighbours (the MAC lbsim's direct routing uses), virtual addresses are
//! local to the LB (an address on `lo`, or a `local` route for a fwmark network). After each
//! packet, a marker datagram is forwarded through the LB in each direction; what the LB sent
//! before a marker is that packet's outcome.
//!
//! Server-side events (the SYN-ACK, a reply, the server's FIN or RST) are sent from the real
//! server the connection was forwarded to (as each side saw it); they only exist for NAT
//! (direct routing and tunnelling send replies around the director).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ip_proto, parse, tcp_flags};
use serde::{Deserialize, Serialize};

/// MAC of the LB's client-facing veth.
pub const LB_CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// MAC of the client namespace's veth.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// MAC of the LB's server-facing veth.
pub const LB_SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 3];
/// MAC of the server namespace's veth.
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 4];
/// The marker's server-side address (on-link behind `vs`).
pub const MARKER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 100, 255, 1);
/// IP-in-IP (tunnel forwarding of IPv4).
const IPIP: u8 = 4;
/// IPv6-in-IP (tunnel forwarding of IPv6).
const IPV6_IN_IP: u8 = 41;
/// The marker's client-side address (the client namespace's own address).
pub const MARKER_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);

/// A firewall-mark rule: packets of `proto` to `network` get `mark` (mangle PREROUTING).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkRule {
    /// `tcp` or `udp`.
    pub proto: String,
    /// `10.201.3.0/24`.
    pub network: String,
    /// The mark.
    pub mark: u32,
}

/// A connection: protocol, client address and port, virtual address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conn {
    /// `6` (TCP) or `17` (UDP).
    pub proto: u8,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual address and port.
    pub vip: SocketAddr,
}

/// What a packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// TCP SYN (a new connection, or a repeat of the 5-tuple).
    Syn,
    /// TCP SYN-ACK (server side).
    SynAck,
    /// TCP ACK with a few bytes, or a UDP datagram.
    Data,
    /// TCP FIN-ACK.
    Fin,
    /// TCP RST.
    Rst,
}

/// One packet of the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Index into [`Case::conns`].
    pub conn: usize,
    /// From the client (else from the real server the connection went to).
    pub from_client: bool,
    /// What it is.
    pub kind: Kind,
}

/// One comparison case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// `[[director]]` tables (TOML).
    pub appliance: String,
    /// Firewall-mark rules (in order; the first match marks).
    pub marks: Vec<MarkRule>,
    /// Connections.
    pub conns: Vec<Conn>,
    /// The packets, in order.
    pub events: Vec<Event>,
    /// Operator changes between packets, in order.
    #[serde(default)]
    pub edits: Vec<Edit>,
}

/// An operator change made before a packet, as `ipvsadm` makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// Made before event number `before` (the number of events: after the last).
    pub before: usize,
    /// The director, by its index in the appliance.
    pub director: usize,
    /// What changes.
    pub change: Change,
}

/// What an [`Edit`] changes (`real` indexes the director's `real` list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// `ipvsadm -e … -w weight` (forwarding method and thresholds given again, unchanged);
    /// 0 makes the server quiescent.
    Weight {
        /// The real server.
        real: usize,
        /// Its new weight.
        weight: u32,
    },
    /// `ipvsadm -d`: the server leaves the service; its connections continue.
    Delete {
        /// The real server.
        real: usize,
    },
    /// `ipvsadm -a` of a deleted server, with its weight at deletion.
    Add {
        /// The real server.
        real: usize,
    },
    /// `ipvsadm -D`: the whole service goes; its connections continue.
    DeleteService,
    /// `ipvsadm -A` of a deleted service, then `-a` of each of its real servers as
    /// configured.
    AddService,
    /// `ipvsadm -E`: the service's scheduler, scheduler flags and persistence change
    /// (what `-E` does not name is reset: no `-b` clears the flags, no `-p` persistence).
    EditService {
        /// The scheduler.
        scheduler: datapath::director::scheduler::SchedulerKind,
        /// sh / mh: hash the source port too (`-b …-port`).
        port: bool,
        /// sh / mh: look further when the hashed server is unusable (`-b …-fallback`).
        fallback: bool,
        /// Persistence: timeout in seconds and netmask prefix length; `None`: off.
        persistence: Option<(u32, u8)>,
    },
}

/// A director's spec with an [`Change::EditService`]'s settings.
pub fn edited_spec(
    spec: &datapath::director::config::ServiceSpec,
    change: &Change,
) -> datapath::director::config::ServiceSpec {
    let mut edited = spec.clone();
    if let Change::EditService {
        scheduler,
        port,
        fallback,
        persistence,
    } = *change
    {
        edited.scheduler = scheduler;
        edited.flags = datapath::director::scheduler::SchedulerFlags { fallback, port };
        edited.persistence =
            persistence.map(
                |(seconds, prefix)| datapath::director::config::Persistence {
                    timeout: u64::from(seconds) * datapath::verdict::NS_PER_SEC,
                    prefix,
                },
            );
    }
    edited
}

/// The `ipvsadm -R` line of each edit of `case` (in order), `None` for an edit of a
/// director or real server the case does not have.
pub fn edit_commands(case: &Case) -> anyhow::Result<Vec<Option<String>>> {
    let specs: Vec<_> = case_directors(case)?
        .iter()
        .map(|c| lenient_spec(c).ok())
        .collect();
    let mut weights: Vec<Vec<i32>> = specs
        .iter()
        .map(|s| s.iter().flat_map(|s| &s.reals).map(|r| r.weight).collect())
        .collect();
    let commands = case.edits.iter().map(|edit| {
        let spec = specs.get(edit.director)?.as_ref()?;
        let service = super::ipvs::service_argument(spec);
        let real_of = |real: usize| spec.reals.get(real);
        Some(match edit.change {
            Change::DeleteService => format!("-D {service}"),
            Change::AddService => {
                weights[edit.director] = spec.reals.iter().map(|r| r.weight).collect();
                let mut lines = vec![super::ipvs::add_service_command(spec)];
                lines.extend(super::ipvs::add_real_commands(spec));
                let lines: Vec<&str> = lines
                    .iter()
                    .map(|l| l.trim_start_matches("ipvsadm "))
                    .collect();
                lines.join("\n")
            }
            Change::EditService { .. } => {
                let command = super::ipvs::add_service_command(&edited_spec(spec, &edit.change));
                command.replacen("ipvsadm -A ", "-E ", 1)
            }
            Change::Delete { real } => format!(
                "-d {service} -r {}",
                super::ipvs::real_argument(real_of(real)?.address)
            ),
            Change::Weight { real, weight } => {
                *weights[edit.director].get_mut(real)? = weight as i32;
                real_line("-e", &service, real_of(real)?, weight as i32)
            }
            Change::Add { real } => {
                real_line("-a", &service, real_of(real)?, weights[edit.director][real])
            }
        })
    });
    Ok(commands.collect())
}

fn real_line(
    verb: &str,
    service: &str,
    real: &datapath::director::config::RealSpec,
    weight: i32,
) -> String {
    let mut spec = real.clone();
    spec.weight = weight;
    let mut line = super::ipvs::real_server_arguments(&spec);
    line.insert_str(0, &format!("{verb} {service} "));
    line
}

/// What one side did with one packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketOutcome {
    /// False when the packet could not be sent (a server-side event of a connection that
    /// was not NATed to a real server).
    pub sent: bool,
    /// Frames the LB sent on the far side ([`wire_text`]).
    pub forwarded: Vec<String>,
    /// Frames the LB sent back on the side the packet came from (RST, ICMP): reported,
    /// not compared (lbsim has no local stack).
    pub answered: Vec<String>,
}

/// One side's record of a case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Why the services could not be created (ipvsadm's or lbsim's message).
    pub setup_error: Option<String>,
    /// Per packet.
    pub packets: Vec<PacketOutcome>,
    /// Final state: `(service, real)` → counters (see [`Counters`]).
    pub counters: BTreeMap<String, Counters>,
    /// Final connection entries (`proto client → real state`), templates included.
    pub connections: Vec<String>,
}

/// Final counters of a real server (or of a service, with real `*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Conns, InPkts, OutPkts, InBytes, OutBytes (`--stats --exact`).
    pub stats: [u64; 5],
    /// ActiveConn, InActConn, PersistConn (reals only).
    pub conns: [u64; 3],
}

/// The classifier both sides use for fwmark: the first rule matching proto and network.
pub fn mark_of(marks: &[MarkRule], proto: u8, destination: IpAddr) -> Option<u32> {
    marks.iter().find_map(|rule| {
        let wanted = if rule.proto == "udp" {
            ip_proto::UDP
        } else {
            ip_proto::TCP
        };
        (wanted == proto && in_network(&rule.network, destination)).then_some(rule.mark)
    })
}

fn in_network(network: &str, address: IpAddr) -> bool {
    let Some((base, prefix)) = network.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(prefix)) = (base.parse::<IpAddr>(), prefix.parse::<u32>()) else {
        return false;
    };
    match (base, address) {
        (IpAddr::V4(b), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(b) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(b), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(b) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn flags_of(kind: Kind) -> u8 {
    match kind {
        Kind::Syn => tcp_flags::SYN,
        Kind::SynAck => tcp_flags::SYN | tcp_flags::ACK,
        Kind::Data => tcp_flags::ACK | tcp_flags::PSH,
        Kind::Fin => tcp_flags::FIN | tcp_flags::ACK,
        Kind::Rst => tcp_flags::RST,
    }
}

fn ip_frame(builder: PacketBuilder, src: IpAddr, dst: IpAddr) -> PacketBuilder {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => builder.ipv4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => builder.ipv6(s, d),
        (s, d) => builder.ip(s, d),
    }
}

/// The frame of an event. Client side: client → VIP. Server side: `real` → client (the
/// address the connection was NATed to). The payload names the event, so the byte counts
/// are the same on both sides.
pub fn event_frame(conn: &Conn, event: &Event, real: Option<SocketAddr>) -> Option<Vec<u8>> {
    let (src, dst, macs) = if event.from_client {
        (conn.client, conn.vip, (CLIENT_MAC, LB_CLIENT_MAC))
    } else {
        (real?, conn.client, (SERVER_MAC, LB_SERVER_MAC))
    };
    let payload: &[u8] = match event.kind {
        Kind::Data => b"lbsim oracle data",
        _ => b"",
    };
    let builder = ip_frame(
        PacketBuilder::eth().macs(macs.0, macs.1),
        src.ip(),
        dst.ip(),
    );
    let builder = if conn.proto == ip_proto::UDP {
        builder.udp(src.port(), dst.port())
    } else {
        builder
            .tcp(src.port(), dst.port())
            .flags(flags_of(event.kind))
            .seq_ack(1000, if event.kind == Kind::Syn { 0 } else { 2000 })
    };
    Some(builder.payload(payload).build())
}

/// Whether event `n` is a client SYN of a connection that had packets before (a repeat of
/// its 5-tuple): IPVS may schedule it as a new connection and expire the old one on the
/// next timer tick, so the guest driver waits a tick after it.
pub fn reuses_tuple(case: &Case, n: usize) -> bool {
    let event = &case.events[n];
    event.from_client
        && event.kind == Kind::Syn
        && case.events[..n].iter().any(|e| e.conn == event.conn)
}

/// The marker datagram number `n` from the client side (true) or the server side.
pub fn marker_frame(n: usize, from_client: bool) -> Vec<u8> {
    let payload = format!("lbsim-marker-{n}");
    let (src, dst, macs) = if from_client {
        (MARKER_CLIENT, MARKER_SERVER, (CLIENT_MAC, LB_CLIENT_MAC))
    } else {
        (MARKER_SERVER, MARKER_CLIENT, (SERVER_MAC, LB_SERVER_MAC))
    };
    PacketBuilder::eth()
        .macs(macs.0, macs.1)
        .ipv4(src, dst)
        .udp(9, 9)
        .payload(payload.as_bytes())
        .build()
}

/// Whether `frame` is marker `n`.
pub fn is_marker(frame: &[u8], n: usize) -> bool {
    let wanted = format!("lbsim-marker-{n}");
    frame.ends_with(wanted.as_bytes())
}

/// Frames both sides ignore: ARP, IPv6 neighbour discovery / MLD, markers.
pub fn is_noise(frame: &[u8]) -> bool {
    let meta = parse(LinkType::Ethernet, frame, frame.len() as u32, 0);
    if meta.src.is_none() {
        return true;
    }
    let icmp6_info =
        meta.proto == Some(ip_proto::ICMPV6) && meta.icmp_type.is_some_and(|t| t >= 128);
    icmp6_info || frame.windows(13).any(|w| w == b"lbsim-marker-")
}

/// A frame as compared: protocol, addresses, ports, TCP flags; the destination MAC when the
/// destination address is still the virtual one (direct routing); the inner packet of an
/// IP-in-IP tunnel.
pub fn wire_text(frame: &[u8], vip: IpAddr) -> String {
    wire_text_of(LinkType::Ethernet, frame, vip, true)
}

fn wire_text_of(link: LinkType, frame: &[u8], vip: IpAddr, with_mac: bool) -> String {
    let meta = parse(link, frame, frame.len() as u32, 0);
    let (Some(src), Some(dst), Some(proto)) = (meta.src, meta.dst, meta.proto) else {
        return format!("non-ip ({} bytes)", frame.len());
    };
    let mut text = String::new();
    if proto == IPIP || proto == IPV6_IN_IP {
        let inner = &frame[meta.l4_offset as usize..];
        let _ = write!(
            text,
            "tunnel {src} > {dst} [{}]",
            wire_text_of(LinkType::RawIp, inner, vip, false)
        );
        return text;
    }
    let port = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
    let _ = write!(
        text,
        "{} {src}{} > {dst}{}",
        datapath::packet::proto_name(proto),
        port(meta.sport),
        port(meta.dport)
    );
    if proto == ip_proto::TCP {
        let _ = write!(text, " flags 0x{:02x}", meta.tcp_flags);
    }
    if let (Some(t), Some(c)) = (meta.icmp_type, meta.icmp_code) {
        let _ = write!(text, " icmp {t}/{c}");
    }
    let _ = write!(text, " len {}", frame.len() - meta.l3_offset as usize);
    if with_mac && dst == vip {
        let mac = &frame[0..6];
        let _ = write!(
            text,
            " to {}",
            mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        );
    }
    text
}

/// The real server address a connection's packets were NATed to, from the frames forwarded
/// for the connection's client-side packets (the last one wins); `None` for direct routing
/// and tunnels (replies do not come back through the LB) or when nothing was forwarded.
pub fn nat_target(forwarded: &[u8], conn: &Conn) -> Option<SocketAddr> {
    let meta = parse(LinkType::Ethernet, forwarded, forwarded.len() as u32, 0);
    let dst = meta.dst?;
    if meta.proto != Some(conn.proto) || dst == conn.vip.ip() {
        return None;
    }
    Some(SocketAddr::new(dst, meta.dport?))
}

/// The `[[director]]` tables of a case, parsed.
pub fn case_directors(
    case: &Case,
) -> anyhow::Result<Vec<datapath::director::config::DirectorConfig>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        director: Vec<datapath::director::config::DirectorConfig>,
    }
    let file: File = toml::from_str(&case.appliance)?;
    Ok(file.director)
}

/// What builds case `index`'s namespaces (`lb<index>`, and `e<index>` with both ends), IPVS
/// services and mark rules in the guest: inputs of `ip -batch -` (in the root namespace,
/// then in the LB's), of `ipvsadm -R` and of `iptables-legacy-restore` /
/// `ip6tables-legacy-restore` (in the LB's). Few processes: each costs a lot in the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// `ip -batch` in the root namespace: namespaces and veths.
    pub root_batch: String,
    /// `ip -n lb<index> -batch`: addresses, routes, neighbours.
    pub lb_batch: String,
    /// `ip -n e<index> -batch`: the client-side and server-side ends up.
    pub ends_batch: String,
    /// `ipvsadm -R`: the services, then their real servers.
    pub ipvsadm: String,
    /// `iptables-legacy-restore` (empty: none).
    pub iptables: String,
    /// `ip6tables-legacy-restore` (empty: none).
    pub ip6tables: String,
    /// `ipvsadm -R` lines run before event number `.0` (the case's [`Edit`]s).
    #[serde(default)]
    pub edits: Vec<(usize, String)>,
}

/// Sysctls of the LB namespace: forwarding on (replies of NAT connections are forwarded),
/// reverse-path filtering off.
pub const LB_SYSCTLS: [(&str, &str); 6] = [
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv4/conf/vc/rp_filter", "0"),
    ("net/ipv4/conf/vs/rp_filter", "0"),
];

/// The [`Setup`] of case `index`. The directors lbsim refuses are still given to
/// `ipvsadm` when they parse, so that the kernel's refusal is recorded too.
pub fn setup_script(case: &Case, index: usize) -> anyhow::Result<Setup> {
    use datapath::director::config::{ServiceKey, build_all};
    use datapath::director::dest::default_mac;
    let configs = case_directors(case)?;
    let specs = build_all(&configs).unwrap_or_else(|_| {
        configs
            .iter()
            .filter_map(|c| lenient_spec(c).ok())
            .collect()
    });
    let (lb, ends) = (format!("lb{index}"), format!("e{index}"));
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut root = format!("netns add {lb}\nnetns add {ends}\n");
    let _ = writeln!(
        root,
        "link add vc netns {lb} address {} type veth peer name c0 netns {ends} address {}",
        mac(LB_CLIENT_MAC),
        mac(CLIENT_MAC)
    );
    let _ = writeln!(
        root,
        "link add vs netns {lb} address {} type veth peer name s0 netns {ends} address {}",
        mac(LB_SERVER_MAC),
        mac(SERVER_MAC)
    );
    let mut lb_batch = String::from(
        "link set lo up\nlink set vc up\nlink set vs up\n\
         addr add 10.98.0.1/24 dev vc\naddr add fd00:98::1/64 dev vc nodad\n\
         addr add 10.100.255.254/16 dev vs\naddr add fd00:100::ffff/64 dev vs nodad\n",
    );
    let _ = writeln!(
        lb_batch,
        "neigh add 10.98.0.2 lladdr {} dev vc nud permanent",
        mac(CLIENT_MAC)
    );
    let _ = writeln!(
        lb_batch,
        "neigh add fd00:98::2 lladdr {} dev vc nud permanent",
        mac(CLIENT_MAC)
    );
    let _ = writeln!(
        lb_batch,
        "neigh add {MARKER_SERVER} lladdr {} dev vs nud permanent",
        mac(SERVER_MAC)
    );
    lb_batch.push_str(
        "route add default via 10.98.0.2 dev vc\nroute add default via fd00:98::2 dev vc\n",
    );
    let mut locals = std::collections::BTreeSet::new();
    let mut reals = std::collections::BTreeSet::new();
    for spec in &specs {
        if let ServiceKey::Tuple { vip, .. } = spec.key {
            locals.insert(vip);
        }
        for real in &spec.reals {
            reals.insert(real.address.ip());
        }
    }
    for vip in &locals {
        let (bits, nodad) = if vip.is_ipv6() {
            (128, " nodad")
        } else {
            (32, "")
        };
        let _ = writeln!(lb_batch, "addr add {vip}/{bits} dev lo{nodad}");
    }
    for rule in &case.marks {
        let _ = writeln!(lb_batch, "route replace local {} dev lo", rule.network);
    }
    for real in &reals {
        let mac = mac(default_mac(SocketAddr::new(*real, 0)));
        let _ = writeln!(lb_batch, "route replace {real} dev vs");
        let _ = writeln!(
            lb_batch,
            "neigh replace {real} lladdr {mac} dev vs nud permanent"
        );
    }
    let (iptables, ip6tables) = mark_rules(&case.marks);
    Ok(Setup {
        root_batch: root,
        lb_batch,
        ends_batch: "link set c0 up\nlink set s0 up\n".into(),
        ipvsadm: ipvs_commands_lenient(&configs).join("\n") + "\n",
        iptables,
        ip6tables,
        edits: case
            .edits
            .iter()
            .zip(edit_commands(case)?)
            .filter_map(|(edit, line)| Some((edit.before, line?)))
            .collect(),
    })
}

/// A director's spec even when lbsim refuses it for a reason the kernel may not share
/// (used only to give the guest the same addresses and commands).
fn lenient_spec(
    config: &datapath::director::config::DirectorConfig,
) -> Result<datapath::director::config::ServiceSpec, datapath::director::config::ConfigError> {
    let mut relaxed = config.clone();
    if relaxed.persistence.is_none() && relaxed.port == Some(0) && relaxed.vip.is_some() {
        relaxed.persistence = Some("1s".into());
    }
    relaxed.build().map(|mut spec| {
        if config.persistence.is_none() {
            spec.persistence = None;
        }
        spec
    })
}

/// The `ipvsadm -R` lines for the directors (without the leading `ipvsadm`).
fn ipvs_commands_lenient(configs: &[datapath::director::config::DirectorConfig]) -> Vec<String> {
    let specs: Vec<_> = configs
        .iter()
        .filter_map(|c| lenient_spec(c).ok())
        .collect();
    super::ipvs::service_commands(&specs)
        .into_iter()
        .map(|c| c.trim_start_matches("ipvsadm ").to_string())
        .collect()
}

/// `iptables-restore` input (IPv4, IPv6) for the case's mark rules: the first matching
/// rule marks (later rules only touch unmarked packets).
fn mark_rules(marks: &[MarkRule]) -> (String, String) {
    let text = |ipv6: bool| {
        let rules: Vec<&MarkRule> = marks
            .iter()
            .filter(|r| r.network.contains(':') == ipv6)
            .collect();
        if rules.is_empty() {
            return String::new();
        }
        let mut text = String::from("*mangle\n:PREROUTING ACCEPT [0:0]\n");
        for rule in rules {
            let _ = writeln!(
                text,
                "-A PREROUTING -p {} -d {} -m mark --mark 0 -j MARK --set-mark {}",
                rule.proto, rule.network, rule.mark
            );
        }
        text.push_str("COMMIT\n");
        text
    };
    (text(false), text(true))
}

/// The `ipvsadm` listings taken right after a case's packets (connections, and their
/// counts with `--persistent-conn`), before CLOSE connections (10 s) expire.
pub const CONNECTION_LISTINGS: [&[&str]; 2] = [&["-Lcn"], &["-L", "-n", "--persistent-conn"]];

/// The `ipvsadm` listing taken once IPVS's estimator has folded the counters in (IPVS 6.1
/// updates what `--stats` shows every 2 s).
pub const STATS_LISTING: &[&str] = &["-L", "-n", "--stats", "--exact"];

/// `ip -batch` input that removes a case's namespaces.
pub fn teardown_batch(index: usize) -> String {
    format!("netns del lb{index}\nnetns del e{index}\n")
}
