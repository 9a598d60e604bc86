//! The `[[director]]` table of the appliance file, and its validation into a
//! [`ServiceSpec`].
//!
//! Key names follow DESIGN.md §5 exactly: `name`, `vip` + `port` + `proto` **or** `fwmark`,
//! `scheduler`, `flags`, `persistence` (`"300s"`), `persistence_netmask`, `forward`, and
//! `real = [{ addr = "10.0.1.2:80", weight = 4 }]`. Real servers may also carry
//! `forward` (overrides the service's), `upper_threshold`, `lower_threshold` (ipvsadm
//! `-x`/`-y`) and `mac` (used by direct routing). Unknown keys are errors. Validation
//! happens here, once; nothing in this module runs while packets flow.
//!
//! ```toml
//! [[director]]
//! name = "web"
//! vip = "192.0.2.10"
//! port = 80
//! proto = "tcp"
//! scheduler = "wrr"
//! flags = []
//! persistence = "300s"
//! persistence_netmask = "255.255.255.0"
//! forward = "nat"
//! real = [{ addr = "10.0.1.2:80", weight = 4 }, { addr = "10.0.1.3:80", weight = 3 }]
//! ```

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::dest::Forward;
use super::scheduler::{MAGLEV_DEFAULT_TABLE_SIZE, SchedulerFlags, SchedulerKind};
use crate::packet::ip_proto;
use crate::verdict::{NS_PER_SEC, TimeNs};

/// One `[[director]]` table: a virtual service and its real servers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorConfig {
    /// Name; flowmgr's `director <name>` refers to it.
    pub name: String,
    /// Virtual IP (with `port` and `proto`).
    pub vip: Option<IpAddr>,
    /// Virtual port; 0 = every port.
    pub port: Option<u16>,
    /// `tcp` or `udp`.
    pub proto: Option<String>,
    /// Firewall mark, instead of `vip`/`port`/`proto`.
    pub fwmark: Option<u32>,
    /// Scheduler; `wlc` when absent (ipvsadm's default).
    pub scheduler: Option<SchedulerKind>,
    /// Scheduler flags: `sh-port`, `sh-fallback`, `mh-port`, `mh-fallback`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Persistence timeout, e.g. `"300s"`; absent = not persistent.
    pub persistence: Option<String>,
    /// Persistence netmask: a dotted IPv4 mask or a prefix length.
    pub persistence_netmask: Option<String>,
    /// Default forwarding method for the real servers; `nat` when absent.
    pub forward: Option<Forward>,
    /// Real servers, in the order they are added (`ipvsadm -a`).
    #[serde(default)]
    pub real: Vec<RealConfig>,
}

/// One real server of a `[[director]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealConfig {
    /// `"10.0.1.2:80"`, or an address alone (port 0: keep the client's port).
    pub addr: String,
    /// Weight, 0 ..= 2147483647; 1 when absent.
    pub weight: Option<i32>,
    /// Forwarding method for this server (overrides the service's).
    pub forward: Option<Forward>,
    /// Upper connection threshold (0 = none).
    pub upper_threshold: Option<u32>,
    /// Lower connection threshold (0 = none).
    pub lower_threshold: Option<u32>,
    /// MAC address for direct routing, `"02:00:0a:00:01:02"`.
    pub mac: Option<String>,
}

/// How a virtual service is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// `proto VIP:port`; port 0 = every port.
    Tuple {
        /// IP protocol number.
        proto: u8,
        /// Virtual IP.
        vip: IpAddr,
        /// Virtual port.
        port: u16,
    },
    /// A firewall mark.
    Fwmark(u32),
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tuple { proto, vip, port } => {
                let name = if *proto == ip_proto::UDP {
                    "UDP"
                } else {
                    "TCP"
                };
                write!(f, "{name}  {}", SocketAddr::new(*vip, *port))
            }
            Self::Fwmark(mark) => write!(f, "FWM  {mark}"),
        }
    }
}

/// Persistence settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// Template timeout.
    pub timeout: TimeNs,
    /// Prefix length the client address is masked to (32 / 128 = per client).
    pub prefix: u8,
}

/// A validated real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealSpec {
    /// Address and port (0 = keep the client's port).
    pub address: SocketAddr,
    /// Weight.
    pub weight: i32,
    /// Forwarding method.
    pub forward: Forward,
    /// Upper threshold.
    pub upper_threshold: u32,
    /// Lower threshold.
    pub lower_threshold: u32,
    /// MAC for direct routing.
    pub mac: Option<[u8; 6]>,
}

/// A validated virtual service: immutable once built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Name.
    pub name: String,
    /// Key.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Scheduler flags.
    pub flags: SchedulerFlags,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    /// Maglev table size.
    pub maglev_table_size: usize,
    /// Real servers in configuration (= `ipvsadm -a`) order.
    pub reals: Vec<RealSpec>,
}

impl ServiceSpec {
    /// Whether the service is addressed by an IPv6 virtual IP.
    pub fn key_is_ipv6(&self) -> bool {
        matches!(
            self.key,
            ServiceKey::Tuple {
                vip: IpAddr::V6(_),
                ..
            }
        )
    }
}

/// A configuration error, naming the director.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Neither `vip` nor `fwmark`, or both.
    #[error("director {0:?}: give either vip/port/proto or fwmark")]
    Addressing(String),
    /// `proto` is not tcp/udp.
    #[error("director {0:?}: proto {1:?} is not tcp or udp")]
    Protocol(String, String),
    /// An unknown scheduler flag, or one that does not belong to the scheduler.
    #[error("director {0:?}: flag {1:?} does not apply to scheduler {2}")]
    Flag(String, String, &'static str),
    /// A duration that does not parse.
    #[error("director {0:?}: {1:?} is not a duration like \"300s\"")]
    Duration(String, String),
    /// A netmask that does not parse or is not contiguous.
    #[error("director {0:?}: {1:?} is not a netmask or prefix length")]
    Netmask(String, String),
    /// A real server address that does not parse.
    #[error("director {0:?}: real server {1:?} is not an address[:port]")]
    RealAddress(String, String),
    /// A negative weight.
    #[error("director {0:?}: real server {1}: weight {2} is negative")]
    Weight(String, SocketAddr, i32),
    /// Lower threshold above upper (the kernel returns ERANGE).
    #[error("director {0:?}: real server {1}: lower threshold above upper")]
    Thresholds(String, SocketAddr),
    /// A MAC that does not parse.
    #[error("director {0:?}: real server {1}: bad mac {2:?}")]
    Mac(String, SocketAddr, String),
    /// Same real server twice.
    #[error("director {0:?}: real server {1} listed twice")]
    DuplicateReal(String, SocketAddr),
    /// Real server of another address family (allowed only with tun).
    #[error("director {0:?}: real server {1} is of another address family")]
    Family(String, SocketAddr),
    /// Two directors with one name.
    #[error("director {0:?} defined twice")]
    DuplicateName(String),
    /// Two directors with one key.
    #[error("directors {0:?} and {1:?} have the same virtual service {2}")]
    DuplicateService(String, String, ServiceKey),
    /// `port = 0` without persistence: IPVS refuses to create it (`ip_vs_add_service`
    /// returns EINVAL; ipvsadm says "Zero port specified for non-persistent service").
    #[error(
        "director {0:?}: port 0 (every port) needs persistence: IPVS refuses a non-persistent \
         service with port 0 (\"Zero port specified for non-persistent service\")"
    )]
    ZeroPort(String),
}

impl ConfigError {
    /// The key of the `[[director]]` table the error is about, when it is one key (for
    /// locating the error in the file).
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::ZeroPort(_) => Some("port"),
            Self::Protocol(..) => Some("proto"),
            Self::Flag(..) => Some("flags"),
            Self::Duration(..) => Some("persistence"),
            Self::Netmask(..) => Some("persistence_netmask"),
            _ => None,
        }
    }
}

/// Parse `"300s"`, `"5m"`, `"1h"`, `"250ms"`, `"10"` (seconds) into nanoseconds.
pub fn parse_duration(text: &str) -> Option<TimeNs> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => NS_PER_SEC,
        "ms" => 1_000_000,
        "us" => 1_000,
        "ns" => 1,
        "m" | "min" => 60 * NS_PER_SEC,
        "h" => 3600 * NS_PER_SEC,
        _ => return None,
    };
    value.checked_mul(scale)
}

fn parse_prefix(text: &str, ipv6: bool) -> Option<u8> {
    if let Ok(prefix) = text.parse::<u8>() {
        return (prefix <= if ipv6 { 128 } else { 32 }).then_some(prefix);
    }
    let mask: std::net::Ipv4Addr = text.parse().ok()?;
    let bits = u32::from(mask);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(bits.leading_ones() as u8)
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return None;
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

impl DirectorConfig {
    /// Validate into an immutable [`ServiceSpec`].
    pub fn build(&self) -> Result<ServiceSpec, ConfigError> {
        let name = &self.name;
        let key = self.key()?;
        let scheduler = self.scheduler.unwrap_or(SchedulerKind::Wlc);
        let flags = self.flags(scheduler)?;
        // A fwmark service is of its real servers' family (`ipvsadm -f MARK -6`), and its
        // persistence mask defaults to /128 then, as for an IPv6 VIP.
        let ipv6 = match key {
            ServiceKey::Tuple { vip, .. } => vip.is_ipv6(),
            ServiceKey::Fwmark(_) => self.real.first().is_some_and(|r| {
                r.addr.starts_with('[') || r.addr.parse::<std::net::Ipv6Addr>().is_ok()
            }),
        };
        if matches!(key, ServiceKey::Tuple { port: 0, .. }) && self.persistence.is_none() {
            return Err(ConfigError::ZeroPort(name.clone()));
        }
        let persistence = match &self.persistence {
            None => None,
            Some(text) => {
                let timeout = parse_duration(text)
                    .ok_or_else(|| ConfigError::Duration(name.clone(), text.clone()))?;
                let prefix = match &self.persistence_netmask {
                    None => {
                        if ipv6 {
                            128
                        } else {
                            32
                        }
                    }
                    Some(mask) => parse_prefix(mask, ipv6)
                        .ok_or_else(|| ConfigError::Netmask(name.clone(), mask.clone()))?,
                };
                Some(Persistence { timeout, prefix })
            }
        };
        let mut reals: Vec<RealSpec> = Vec::with_capacity(self.real.len());
        for real in &self.real {
            let spec = self.real_spec(real, key)?;
            if reals.iter().any(|r| r.address == spec.address) {
                return Err(ConfigError::DuplicateReal(name.clone(), spec.address));
            }
            reals.push(spec);
        }
        Ok(ServiceSpec {
            name: name.clone(),
            key,
            scheduler,
            flags,
            persistence,
            maglev_table_size: MAGLEV_DEFAULT_TABLE_SIZE,
            reals,
        })
    }

    fn key(&self) -> Result<ServiceKey, ConfigError> {
        let addressing = || ConfigError::Addressing(self.name.clone());
        match (self.vip, self.fwmark) {
            (Some(vip), None) => {
                let proto = match self.proto.as_deref().unwrap_or("tcp") {
                    "tcp" => ip_proto::TCP,
                    "udp" => ip_proto::UDP,
                    other => return Err(ConfigError::Protocol(self.name.clone(), other.into())),
                };
                Ok(ServiceKey::Tuple {
                    proto,
                    vip,
                    port: self.port.unwrap_or(0),
                })
            }
            (None, Some(mark)) if self.port.is_none() && self.proto.is_none() => {
                Ok(ServiceKey::Fwmark(mark))
            }
            _ => Err(addressing()),
        }
    }

    fn flags(&self, scheduler: SchedulerKind) -> Result<SchedulerFlags, ConfigError> {
        let mut flags = SchedulerFlags::default();
        for flag in &self.flags {
            let (family, which) = flag.split_once('-').unwrap_or((flag, ""));
            let matches = matches!(
                (family, scheduler),
                ("sh", SchedulerKind::Sh) | ("mh", SchedulerKind::Mh)
            );
            match which {
                "port" if matches => flags.port = true,
                "fallback" if matches => flags.fallback = true,
                _ => {
                    return Err(ConfigError::Flag(
                        self.name.clone(),
                        flag.clone(),
                        scheduler.name(),
                    ));
                }
            }
        }
        Ok(flags)
    }

    fn real_spec(&self, real: &RealConfig, key: ServiceKey) -> Result<RealSpec, ConfigError> {
        let name = &self.name;
        let address = real
            .addr
            .parse::<SocketAddr>()
            .or_else(|_| real.addr.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
            .map_err(|_| ConfigError::RealAddress(name.clone(), real.addr.clone()))?;
        let weight = real.weight.unwrap_or(1);
        if weight < 0 {
            return Err(ConfigError::Weight(name.clone(), address, weight));
        }
        let upper_threshold = real.upper_threshold.unwrap_or(0);
        let lower_threshold = real.lower_threshold.unwrap_or(0);
        if lower_threshold > upper_threshold {
            return Err(ConfigError::Thresholds(name.clone(), address));
        }
        let forward = real.forward.or(self.forward).unwrap_or(Forward::Nat);
        if let ServiceKey::Tuple { vip, .. } = key
            && vip.is_ipv4() != address.is_ipv4()
            && forward != Forward::Tun
        {
            return Err(ConfigError::Family(name.clone(), address));
        }
        let mac = match &real.mac {
            None => None,
            Some(text) => Some(
                parse_mac(text)
                    .ok_or_else(|| ConfigError::Mac(name.clone(), address, text.clone()))?,
            ),
        };
        Ok(RealSpec {
            address,
            weight,
            forward,
            upper_threshold,
            lower_threshold,
            mac,
        })
    }
}

/// Validate a whole `[[director]]` array: every table, unique names, unique keys.
pub fn build_all(configs: &[DirectorConfig]) -> Result<Vec<ServiceSpec>, ConfigError> {
    let mut specs: Vec<ServiceSpec> = Vec::with_capacity(configs.len());
    for config in configs {
        let spec = config.build()?;
        if let Some(other) = specs.iter().find(|s| s.name == spec.name) {
            return Err(ConfigError::DuplicateName(other.name.clone()));
        }
        if let Some(other) = specs.iter().find(|s| s.key == spec.key) {
            return Err(ConfigError::DuplicateService(
                other.name.clone(),
                spec.name,
                spec.key,
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}
