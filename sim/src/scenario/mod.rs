//! Scenario files: one TOML file describing a whole run — name, seed, duration, topology
//! (appliance interfaces, VIPs, client networks, backends and their links), the appliance
//! configuration (`[appliance]`, see [`crate::appliance`]), traffic sources, timed events and
//! `[expect]` checks.
//!
//! Loading rejects unknown keys, bad values (`rate = "abc"`) and dangling references (a
//! network naming an interface that does not exist) with `file:line:col: message`.
//!
//! Not here: running a scenario (see [`crate::engine`]) and building the pipeline (see
//! [`crate::appliance::build_pipeline`]).

pub mod cpu;
mod locate;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::appliance::ApplianceConfig;
use crate::diagnostics::{LocatedError, TomlSpans};
pub use units::{Bandwidth, DurationNs, RangeSet, Rate};

/// The `index`-th host address of `net` (from `.1`; wraps around): where the client sources
/// put their hosts, and what validation checks a client network against.
pub fn client_address(net: &IpNet, index: u32) -> IpAddr {
    match net {
        IpNet::V4(v4) => IpAddr::V4((u32::from(v4.network()).wrapping_add(1 + index)).into()),
        IpNet::V6(v6) => {
            IpAddr::V6((u128::from(v6.network()).wrapping_add(1 + u128::from(index))).into())
        }
    }
}

/// Default number of receive queues (pipeline shards) a scenario runs with.
pub const DEFAULT_QUEUES: u16 = 2;
/// Most receive queues a scenario may ask for.
pub const MAX_QUEUES: u16 = 64;

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (reports go to `reports/<name>/`).
    pub name: String,
    /// The one seed every random stream derives from.
    pub seed: u64,
    /// Virtual run time.
    pub duration: DurationNs,
    /// Receive queues: the appliance's NIC spreads flows over this many pipeline shards by
    /// flow hash. Fixed by the scenario (not by `--threads`) so results do not depend on the
    /// machine.
    #[serde(default = "default_queues")]
    pub queues: u16,
    /// Interfaces, VIPs, networks and backends.
    #[serde(default)]
    pub topology: Topology,
    /// The appliance configuration (same keys as an appliance file).
    #[serde(default)]
    pub appliance: ApplianceConfig,
    /// Traffic sources.
    #[serde(default)]
    pub traffic: Vec<Spanned<TrafficSpec>>,
    /// Timed events.
    #[serde(default)]
    pub events: Vec<Spanned<TimedEvent>>,
    /// Pass/fail checks.
    #[serde(default)]
    pub expect: Expect,
    /// `[cpu]`: the appliance's CPU model (absent: the appliance takes no time).
    #[serde(default)]
    pub cpu: Option<cpu::CpuSpec>,
}

fn default_queues() -> u16 {
    DEFAULT_QUEUES
}

/// The network around the appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Appliance interface names, in index order.
    #[serde(default = "default_interfaces")]
    pub interfaces: Vec<String>,
    /// Virtual IPs the appliance serves (reported; traffic may target others).
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    /// Client networks (`[[topology.network]]`).
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkSpec>,
    /// Backends (`[[topology.backend]]`).
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendSpec>,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            interfaces: default_interfaces(),
            vips: Vec::new(),
            networks: Vec::new(),
            backends: Vec::new(),
        }
    }
}

fn default_interfaces() -> Vec<String> {
    vec!["outside".into(), "inside".into()]
}

/// A host's link to the appliance.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One-way latency.
    #[serde(default)]
    pub latency: DurationNs,
    /// Bandwidth (unlimited when absent). Shared equally by the receive queues.
    pub bandwidth: Option<Bandwidth>,
    /// Loss probability in parts per million.
    #[serde(default, deserialize_with = "loss_ppm")]
    pub loss_ppm: u32,
    /// Probability (ppm) that a frame arrives twice (the copy right after the original).
    #[serde(
        default,
        deserialize_with = "duplicate_ppm",
        skip_serializing_if = "is_zero"
    )]
    pub duplicate_ppm: u32,
    /// Probability (ppm) that a frame is held back by `reorder_delay`, so that frames sent
    /// after it overtake it.
    #[serde(
        default,
        deserialize_with = "reorder_ppm",
        skip_serializing_if = "is_zero"
    )]
    pub reorder_ppm: u32,
    /// Extra delay of a reordered frame (default [`DEFAULT_REORDER_DELAY_NS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder_delay: Option<DurationNs>,
    /// Probability (ppm) that one bit of a frame's IP packet is flipped on the way.
    #[serde(
        default,
        deserialize_with = "corrupt_ppm",
        skip_serializing_if = "is_zero"
    )]
    pub corrupt_ppm: u32,
}

/// Extra delay of a reordered frame when `reorder_delay` is not given.
pub const DEFAULT_REORDER_DELAY_NS: u64 = 1_000_000;

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// A probability in parts per million (at most 1000000), named `key` in errors.
fn ppm<'de, D: serde::Deserializer<'de>>(deserializer: D, key: &str) -> Result<u32, D::Error> {
    check_ppm(u32::deserialize(deserializer)?, key)
}

fn check_ppm<E: serde::de::Error>(value: u32, key: &str) -> Result<u32, E> {
    if value > 1_000_000 {
        return Err(serde::de::Error::custom(format!(
            "{key} {value} is above 1000000 (parts per million)"
        )));
    }
    Ok(value)
}

fn loss_ppm<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    ppm(deserializer, "loss_ppm")
}

fn duplicate_ppm<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    ppm(deserializer, "duplicate_ppm")
}

fn reorder_ppm<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    ppm(deserializer, "reorder_ppm")
}

fn corrupt_ppm<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    ppm(deserializer, "corrupt_ppm")
}

/// An optional ppm value; `null` (how a report writes an absent one) is absent.
fn optional_ppm<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    key: &str,
) -> Result<Option<u32>, D::Error> {
    match Option::<u32>::deserialize(deserializer)? {
        Some(value) => check_ppm(value, key).map(Some),
        None => Ok(None),
    }
}

fn optional_loss_ppm<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    optional_ppm(deserializer, "loss_ppm")
}

fn optional_duplicate_ppm<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    optional_ppm(deserializer, "duplicate_ppm")
}

fn optional_reorder_ppm<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    optional_ppm(deserializer, "reorder_ppm")
}

fn optional_corrupt_ppm<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    optional_ppm(deserializer, "corrupt_ppm")
}

/// A client network: owns an address prefix; clients and floods send from it, and frames to
/// any address in it are delivered over its link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Name that traffic sources refer to.
    pub name: String,
    /// Addresses the network owns.
    pub prefix: IpNet,
    /// Appliance interface it is attached to.
    pub iface: Spanned<String>,
    /// Its link.
    #[serde(default)]
    pub link: LinkSpec,
}

/// A backend (real server): a smoltcp host serving TCP, plus a UDP responder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Name.
    pub name: String,
    /// Its own address.
    pub addr: IpAddr,
    /// Further addresses it answers on (a VIP when no director rewrites, a DR loopback VIP).
    #[serde(default)]
    pub also: Vec<IpAddr>,
    /// Appliance interface it is attached to.
    pub iface: Spanned<String>,
    /// TCP ports it listens on.
    #[serde(default = "default_tcp_ports")]
    pub tcp_ports: Vec<u16>,
    /// UDP ports it answers on.
    #[serde(default)]
    pub udp_ports: Vec<u16>,
    /// Time between a complete request and the response.
    #[serde(default)]
    pub service_time: DurationNs,
    /// Serve FTP on `tcp_ports` instead of `GET <n>` (see [`crate::actors::ftp`]).
    #[serde(default)]
    pub ftp: bool,
    /// Its link.
    #[serde(default)]
    pub link: LinkSpec,
}

fn default_tcp_ports() -> Vec<u16> {
    vec![80]
}

/// A traffic source (`[[traffic]]`, chosen by `kind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrafficSpec {
    /// Replay a capture.
    Pcap(PcapSpec),
    /// TCP SYNs from spoofed sources.
    SynFlood(FloodSpec),
    /// TCP ACKs from spoofed sources.
    AckFlood(FloodSpec),
    /// UDP datagrams from spoofed sources.
    UdpFlood(FloodSpec),
    /// ICMP echo requests from spoofed sources.
    IcmpFlood(FloodSpec),
    /// Real TCP clients (smoltcp).
    TcpClients(TcpClientsSpec),
    /// UDP request/response clients.
    UdpClients(UdpClientsSpec),
    /// FTP sessions (smoltcp): passive, extended passive and active transfers.
    FtpClients(FtpClientsSpec),
}

impl TrafficSpec {
    /// The source's name in reports: its `name`, or `<kind><index>` (`index`: its place
    /// among the scenario's sources).
    pub fn source_name(&self, index: usize) -> String {
        let given = match self {
            TrafficSpec::Pcap(p) => p.name.clone(),
            TrafficSpec::SynFlood(f)
            | TrafficSpec::AckFlood(f)
            | TrafficSpec::UdpFlood(f)
            | TrafficSpec::IcmpFlood(f) => f.name.clone(),
            TrafficSpec::TcpClients(t) => t.name.clone(),
            TrafficSpec::UdpClients(u) => u.name.clone(),
            TrafficSpec::FtpClients(f) => f.name.clone(),
        };
        given.unwrap_or_else(|| format!("{}{index}", self.kind()))
    }

    /// `kind` as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Pcap(_) => "pcap",
            Self::SynFlood(_) => "syn_flood",
            Self::AckFlood(_) => "ack_flood",
            Self::UdpFlood(_) => "udp_flood",
            Self::IcmpFlood(_) => "icmp_flood",
            Self::TcpClients(_) => "tcp_clients",
            Self::UdpClients(_) => "udp_clients",
            Self::FtpClients(_) => "ftp_clients",
        }
    }

    /// The client network the source sends from.
    pub fn network(&self) -> &str {
        match self {
            Self::Pcap(s) => &s.from,
            Self::SynFlood(s) | Self::AckFlood(s) | Self::UdpFlood(s) | Self::IcmpFlood(s) => {
                &s.from
            }
            Self::TcpClients(s) => &s.from,
            Self::UdpClients(s) => &s.from,
            Self::FtpClients(s) => &s.from,
        }
    }
}

/// `kind = "pcap"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcapSpec {
    /// Source name in reports (default `pcap<N>`).
    pub name: Option<String>,
    /// Capture file, relative to the scenario.
    pub file: PathBuf,
    /// Network whose link the packets arrive by.
    pub from: String,
    /// Time multiplier for the capture's own timing (2.0 = twice as fast).
    pub speed: Option<f64>,
    /// Fixed packet rate instead of the capture's timing.
    pub pps: Option<Rate>,
    /// Send every packet at the start time (as fast as possible).
    #[serde(default)]
    pub top_speed: bool,
    /// How many times to play the capture.
    #[serde(default = "one")]
    pub loops: u32,
    /// When to start.
    #[serde(default)]
    pub start: DurationNs,
    /// Address rewriting: capture address → scenario address.
    #[serde(default)]
    pub rewrite: BTreeMap<IpAddr, IpAddr>,
}

fn one() -> u32 {
    1
}

/// On/off burst pattern: send during `on`, pause for `off`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Sending period.
    pub on: DurationNs,
    /// Pause.
    pub off: DurationNs,
}

/// Destinations: `"192.0.2.10:80"`, `"192.0.2.10"` or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Destinations {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// Parse `"192.0.2.10:80"`, `"[2001:db8::1]:80"` or a bare address.
pub fn parse_destination(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Ok((socket.ip(), Some(socket.port())));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    Err(crate::diagnostics::explain_socket_address(text))
}

/// The floods (`syn_flood`, `ack_flood`, `udp_flood`, `icmp_flood`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloodSpec {
    /// Source name in reports (default `<kind><N>`).
    pub name: Option<String>,
    /// Network whose link the flood arrives by.
    pub from: String,
    /// Packets per second.
    pub rate: Rate,
    /// Spoofed source range (default: the network's prefix).
    pub src: Option<IpNet>,
    /// Destination address(es), optionally with port.
    pub dst: Destinations,
    /// Source ports (default 1024-65535).
    pub src_ports: Option<RangeSet>,
    /// Destination ports when `dst` has none (default 80).
    pub dst_ports: Option<RangeSet>,
    /// TTL values, picked uniformly (default 64).
    pub ttl: Option<RangeSet>,
    /// Payload bytes (UDP/ICMP).
    #[serde(default)]
    pub payload: u16,
    /// Burst pattern (default: continuous).
    pub burst: Option<Burst>,
    /// Start time.
    #[serde(default)]
    pub start: DurationNs,
    /// Stop time (default: end of run).
    pub stop: Option<DurationNs>,
}

/// `kind = "tcp_clients"`: smoltcp clients that connect, send `GET <n>\n` and read `n`
/// response bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpClientsSpec {
    /// Source name in reports (default `tcp_clients<N>`).
    pub name: Option<String>,
    /// Network the clients live in (addresses from its prefix, from `.1`).
    pub from: String,
    /// Number of client hosts (distinct addresses).
    #[serde(default = "default_clients")]
    pub clients: u32,
    /// Total connections (default: `rate` for the whole run).
    pub connections: Option<u64>,
    /// Connection opening rate.
    pub rate: Rate,
    /// Where to connect.
    pub dst: SocketAddr,
    /// Destination ports to spread each client's connections over, in turn (a client's
    /// `k`-th connection goes to `ports[k % len]`); absent: `dst`'s port only.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Response bytes each request asks for.
    #[serde(default = "default_response_bytes")]
    pub response_bytes: u32,
    /// A connection not complete after this long fails.
    #[serde(default = "default_timeout")]
    pub timeout: DurationNs,
    /// Start time.
    #[serde(default)]
    pub start: DurationNs,
}

/// How an FTP client opens a data connection.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FtpMode {
    /// `PASV`, connect to the `227` reply's address.
    Passive,
    /// `EPSV`, connect to the control connection's address at the `229` reply's port.
    Extended,
    /// `PORT`: the server connects back from port 20.
    Active,
    /// `EPRT |1|…|`: the server connects back from port 20.
    ExtendedActive,
}

/// Most files one FTP session fetches (`ftp_clients.files`).
pub const FTP_MAX_FILES: usize = 64;

/// `kind = "ftp_clients"`: FTP sessions on smoltcp. Each session logs in, fetches every
/// file of `files` (sizes in bytes, `RETR <n>`), the `k`-th with `modes[k % len]`, checks
/// every byte, and quits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpClientsSpec {
    /// Source name in reports (default `ftp_clients<N>`).
    pub name: Option<String>,
    /// Network the clients live in.
    pub from: String,
    /// Number of client hosts.
    #[serde(default = "default_clients")]
    pub clients: u32,
    /// Total sessions (default: `rate` for the whole run).
    pub sessions: Option<u64>,
    /// Session opening rate.
    pub rate: Rate,
    /// The FTP service (VIP:21).
    pub dst: SocketAddr,
    /// Sizes of the files each session fetches, in order.
    pub files: Vec<u32>,
    /// Data-connection modes, in turn.
    pub modes: Vec<FtpMode>,
    /// A session not complete after this long fails.
    #[serde(default = "default_timeout")]
    pub timeout: DurationNs,
    /// Start time.
    #[serde(default)]
    pub start: DurationNs,
}

/// `kind = "udp_clients"`: request/response over UDP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpClientsSpec {
    /// Source name in reports (default `udp_clients<N>`).
    pub name: Option<String>,
    /// Network the clients live in.
    pub from: String,
    /// Number of client hosts.
    #[serde(default = "default_clients")]
    pub clients: u32,
    /// Total requests (default: `rate` for the whole run).
    pub requests: Option<u64>,
    /// Request rate.
    pub rate: Rate,
    /// Where to send.
    pub dst: SocketAddr,
    /// Request payload bytes (at least 8: the request id).
    #[serde(default = "default_udp_payload")]
    pub payload: u16,
    /// A request without an answer after this long fails.
    #[serde(default = "default_timeout")]
    pub timeout: DurationNs,
    /// Start time.
    #[serde(default)]
    pub start: DurationNs,
}

fn default_clients() -> u32 {
    16
}
fn default_response_bytes() -> u32 {
    1000
}
fn default_timeout() -> DurationNs {
    DurationNs(1_000_000_000)
}
fn default_udp_payload() -> u16 {
    32
}

/// A timed event (`[[events]]`, chosen by `kind`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimedEvent {
    /// A real server stops answering (director marks it down).
    ServerDown {
        /// When.
        at: DurationNs,
        /// Director name (all directors when absent).
        director: Option<String>,
        /// Real server.
        server: SocketAddr,
    },
    /// A real server fails its health check: the appliance's `[[health_check]]` for it says
    /// when the checker notices (`detect`) and what it does (remove it, or weight 0); the
    /// event becomes that `server_down` / `weight` when the scenario loads.
    CheckFail {
        /// When the server starts failing.
        at: DurationNs,
        /// Director name (the check's, or every director with the server, when absent).
        director: Option<String>,
        /// Real server.
        server: SocketAddr,
    },
    /// A real server passes its health check again: after the check's `recover` delay it is
    /// put back (`server_up`, or its configured weight).
    CheckOk {
        /// When the server starts passing.
        at: DurationNs,
        /// Director name (the check's, or every director with the server, when absent).
        director: Option<String>,
        /// Real server.
        server: SocketAddr,
    },
    /// A real server comes back.
    ServerUp {
        /// When.
        at: DurationNs,
        /// Director name (all directors when absent).
        director: Option<String>,
        /// Real server.
        server: SocketAddr,
    },
    /// A real server's weight changes (0 = quiescent).
    Weight {
        /// When.
        at: DurationNs,
        /// Director name (all directors when absent).
        director: Option<String>,
        /// Real server.
        server: SocketAddr,
        /// New weight.
        weight: u32,
    },
    /// Force the shield's SYN-cookie mode.
    Mode {
        /// When.
        at: DurationNs,
        /// Context destination (default context when absent).
        context: Option<IpAddr>,
        /// `on`, `off` or `auto`.
        syn_cookies: String,
    },
    /// A host's link changes (fields present are changed).
    Link {
        /// When.
        at: DurationNs,
        /// Network or backend name.
        host: String,
        /// New latency.
        latency: Option<DurationNs>,
        /// New bandwidth.
        bandwidth: Option<Bandwidth>,
        /// New loss.
        #[serde(default, deserialize_with = "optional_loss_ppm")]
        loss_ppm: Option<u32>,
        /// New duplication probability.
        #[serde(
            default,
            deserialize_with = "optional_duplicate_ppm",
            skip_serializing_if = "Option::is_none"
        )]
        duplicate_ppm: Option<u32>,
        /// New reordering probability.
        #[serde(
            default,
            deserialize_with = "optional_reorder_ppm",
            skip_serializing_if = "Option::is_none"
        )]
        reorder_ppm: Option<u32>,
        /// New extra delay of reordered frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reorder_delay: Option<DurationNs>,
        /// New corruption probability.
        #[serde(
            default,
            deserialize_with = "optional_corrupt_ppm",
            skip_serializing_if = "Option::is_none"
        )]
        corrupt_ppm: Option<u32>,
    },
}

impl TimedEvent {
    /// When it happens.
    pub fn at(&self) -> DurationNs {
        match self {
            Self::ServerDown { at, .. }
            | Self::CheckFail { at, .. }
            | Self::CheckOk { at, .. }
            | Self::ServerUp { at, .. }
            | Self::Weight { at, .. }
            | Self::Mode { at, .. }
            | Self::Link { at, .. } => *at,
        }
    }
}

/// Pass/fail checks; absent ones are not checked.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Completed / (completed + failed) TCP client connections, at least.
    pub legit_success_ratio_min: Option<f64>,
    /// Answered / (answered + failed) UDP client requests, at least.
    pub udp_success_ratio_min: Option<f64>,
    /// Dropped / processed packets, at most.
    pub max_drop_ratio: Option<f64>,
    /// Dropped / processed packets, at least (a flood must be stopped).
    pub min_drop_ratio: Option<f64>,
    /// Packets processed by the pipeline, at least.
    pub min_packets: Option<u64>,
    /// Frames the pipeline emitted that no host owns, at most.
    pub max_unroutable: Option<u64>,
    /// TCP connection setup time p99, at most.
    pub connect_p99_max: Option<DurationNs>,
    /// Clients with two connections to one persistent virtual service, within its
    /// persistence timeout of each other, on different real servers: at most.
    pub persistence_violations_max: Option<u64>,
    /// Translated tuples (source, destination as the appliance sent a NATed SYN) used for
    /// more than one client endpoint during the run: at most.
    pub nat_tuple_reuse_max: Option<u64>,
    /// Per-source checks (`[[expect.source]]`).
    #[serde(default)]
    pub source: Vec<Spanned<SourceExpect>>,
}

/// `[[expect.source]]`: checks on one client source (`tcp_clients` or `udp_clients`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceExpect {
    /// The source's name (its `name`, or `<kind><index>`).
    pub name: String,
    /// Its success ratio (as `legit_success_ratio_min` counts it), at least.
    pub success_ratio_min: Option<f64>,
    /// Its success ratio, at most (a denylisted source must fail).
    pub success_ratio_max: Option<f64>,
}

/// A scenario file problem, located: renders as `file:line:col: message`.
pub type ScenarioError = LocatedError;

/// A loaded, validated scenario and the directory its relative paths resolve from.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    /// The scenario.
    pub scenario: Scenario,
    /// Directory of the scenario file.
    pub base_dir: PathBuf,
    /// The file it came from.
    pub path: PathBuf,
}

/// Read, parse and validate a scenario file.
pub fn load(path: &Path) -> Result<LoadedScenario, ScenarioError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LocatedError::at(path, "", None, format!("cannot read: {e}")))?;
    parse(path, &text)
}

/// Parse and validate scenario text; `path` names it in errors and anchors relative paths.
/// Errors are located at the offending key (inside `[[traffic]]` and `[[events]]` elements
/// too) and name it with its value.
pub fn parse(path: &Path, text: &str) -> Result<LoadedScenario, ScenarioError> {
    let mut scenario: Scenario =
        toml::from_str(text).map_err(|e| locate::deserialize_error(path, text, &e))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let spans = TomlSpans::parse(text);
    // Never nowhere: a check without a place points at the start of the file.
    let locate = |(span, message): (Option<std::ops::Range<usize>>, String)| {
        LocatedError::at(path, text, Some(span.unwrap_or(0..0)), message)
    };
    validate::validate(&scenario, &base_dir, &spans).map_err(locate)?;
    validate::health::expand(&mut scenario, &base_dir, &spans).map_err(locate)?;
    Ok(LoadedScenario {
        scenario,
        base_dir,
        path: path.to_path_buf(),
    })
}
