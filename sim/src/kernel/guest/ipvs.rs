//! The appliance's directors as real IPVS services, and `ipvsadm`'s listings parsed back.
//!
//! [`service_commands`] gives the commands an operator (or keepalived) types, in order:
//! `ipvsadm -A` for the service first (scheduler, `-b` flags, `-p SECS -M MASK`), then one
//! `ipvsadm -a` per real server in the appliance's order (`-m|-g|-i -w W -x UPPER -y
//! LOWER`). Fwmark services are `-f MARK` (with `-6` when their real servers are IPv6);
//! their packets are marked by the flowmgr compiler's mangle rules loaded with
//! `iptables-legacy-restore` ([`fwmark_rules_script`]), as the guest's nft lacks the
//! module `meta mark set` needs.
//!
//! [`parse_connections`] reads `ipvsadm -Lcn` (one [`ConnEntry`] per connection or
//! persistence template); [`parse_listing`] reads `ipvsadm -L -n` with `--stats`, `--rate`,
//! `--persistent-conn` and `--exact` (one [`ListedService`] per service, numbers per column).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use datapath::director::config::{RealSpec, ServiceKey, ServiceSpec};
use datapath::director::dest::Forward;
use datapath::director::scheduler::SchedulerKind;
use datapath::packet::ip_proto;
use datapath::verdict::NS_PER_SEC;

/// The `ipvsadm` service argument: `-t VIP:PORT`, `-u VIP:PORT` or `-f MARK`.
pub fn service_argument(spec: &ServiceSpec) -> String {
    match spec.key {
        ServiceKey::Tuple { proto, vip, port } => {
            let flag = if proto == ip_proto::UDP { "-u" } else { "-t" };
            format!("{flag} {}", SocketAddr::new(vip, port))
        }
        ServiceKey::Fwmark(mark) => {
            let ipv6 = spec.reals.first().is_some_and(|r| r.address.is_ipv6());
            if ipv6 {
                format!("-f {mark} -6")
            } else {
                format!("-f {mark}")
            }
        }
    }
}

/// Whether the service is IPv6 (by VIP, or for fwmark by its first real server).
pub fn service_is_ipv6(spec: &ServiceSpec) -> bool {
    match spec.key {
        ServiceKey::Tuple { vip, .. } => vip.is_ipv6(),
        ServiceKey::Fwmark(_) => spec.reals.first().is_some_and(|r| r.address.is_ipv6()),
    }
}

fn scheduler_flags(spec: &ServiceSpec) -> Option<String> {
    let prefix = match spec.scheduler {
        SchedulerKind::Sh => "sh",
        SchedulerKind::Mh => "mh",
        _ => return None,
    };
    let mut flags = Vec::new();
    if spec.flags.fallback {
        flags.push(format!("{prefix}-fallback"));
    }
    if spec.flags.port {
        flags.push(format!("{prefix}-port"));
    }
    (!flags.is_empty()).then(|| flags.join(","))
}

fn persistence_netmask(prefix: u8, ipv6: bool) -> String {
    if ipv6 {
        return prefix.to_string();
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    std::net::Ipv4Addr::from(mask).to_string()
}

/// `ipvsadm -A …` for the service.
pub fn add_service_command(spec: &ServiceSpec) -> String {
    let mut command = format!(
        "ipvsadm -A {} -s {}",
        service_argument(spec),
        spec.scheduler.name()
    );
    if let Some(flags) = scheduler_flags(spec) {
        command.push_str(&format!(" -b {flags}"));
    }
    if let Some(persistence) = spec.persistence {
        let seconds = persistence.timeout.div_ceil(NS_PER_SEC).max(1);
        command.push_str(&format!(
            " -p {seconds} -M {}",
            persistence_netmask(persistence.prefix, service_is_ipv6(spec))
        ));
    }
    command
}

fn forward_flag(forward: Forward) -> &'static str {
    match forward {
        Forward::Nat => "-m",
        Forward::Dr => "-g",
        Forward::Tun => "-i",
    }
}

/// The `-r` argument: `ADDR:PORT` (`[V6]:PORT`), or the bare address for port 0 (ipvsadm
/// refuses `[V6]` without a port).
pub fn real_argument(address: SocketAddr) -> String {
    match address.port() {
        0 => address.ip().to_string(),
        _ => address.to_string(),
    }
}

/// A real server's `ipvsadm -a` / `-e` arguments: `-r ADDR FORWARD -w W [-x U] [-y L]`.
pub fn real_server_arguments(real: &RealSpec) -> String {
    let mut arguments = format!(
        "-r {} {} -w {}",
        real_argument(real.address),
        forward_flag(real.forward),
        real.weight
    );
    if real.upper_threshold > 0 {
        arguments.push_str(&format!(" -x {}", real.upper_threshold));
    }
    if real.lower_threshold > 0 {
        arguments.push_str(&format!(" -y {}", real.lower_threshold));
    }
    arguments
}

/// `ipvsadm -a …` per real server, in the appliance's order.
pub fn add_real_commands(spec: &ServiceSpec) -> Vec<String> {
    let service = service_argument(spec);
    spec.reals
        .iter()
        .map(|real| format!("ipvsadm -a {service} {}", real_server_arguments(real)))
        .collect()
}

/// Every command for the services: each service, then its real servers.
pub fn service_commands(specs: &[ServiceSpec]) -> Vec<String> {
    let mut commands = Vec::new();
    for spec in specs {
        commands.push(add_service_command(spec));
        commands.extend(add_real_commands(spec));
    }
    commands
}

/// The kernel modules the services need (`ip_vs` and each scheduler's module).
pub fn modules(specs: &[ServiceSpec]) -> Vec<String> {
    let mut modules = vec!["ip_vs".to_string()];
    for spec in specs {
        let module = format!("ip_vs_{}", spec.scheduler.name());
        if !modules.contains(&module) {
            modules.push(module);
        }
    }
    modules
}

/// Shell lines that load `iptables-restore` text (the flowmgr compiler's mangle rules) into
/// the legacy backend, IPv4 or IPv6, from a here-document.
pub fn fwmark_rules_script(rules: &str, ipv6: bool) -> String {
    if rules.trim().is_empty() {
        return String::new();
    }
    let tool = if ipv6 {
        "ip6tables-legacy-restore"
    } else {
        "iptables-legacy-restore"
    };
    format!("{tool} <<'LBSIM_RULES_END'\n{rules}\nLBSIM_RULES_END\n")
}

/// One line of `ipvsadm -Lcn`: a connection or a persistence template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// `TCP`, `UDP`, `IP` (a fwmark template), …
    pub proto: String,
    /// Seconds until expiry.
    pub expire_secs: u32,
    /// `SYN_RECV`, `ESTABLISHED`, `FIN_WAIT`, `CLOSE`, `UDP`, `NONE` (templates), …
    pub state: String,
    /// Client address and port (a template's masked address and port 0).
    pub source: SocketAddr,
    /// Virtual address and port (for fwmark templates the mark as an address).
    pub virtual_address: SocketAddr,
    /// Real server address and port.
    pub destination: SocketAddr,
}

impl ConnEntry {
    /// Whether this is a persistence template (state `NONE`).
    pub fn is_template(&self) -> bool {
        self.state == "NONE"
    }
}

fn parse_socket(text: &str) -> anyhow::Result<SocketAddr> {
    text.parse()
        .with_context(|| format!("{text:?} is not an address:port"))
}

fn parse_expire(text: &str) -> anyhow::Result<u32> {
    let (minutes, seconds) = text
        .split_once(':')
        .with_context(|| format!("expire {text:?} is not MM:SS"))?;
    Ok(minutes.parse::<u32>()? * 60 + seconds.parse::<u32>()?)
}

/// Parse `ipvsadm -Lcn`.
pub fn parse_connections(text: &str) -> anyhow::Result<Vec<ConnEntry>> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0] == "IPVS" || fields[0] == "pro" {
            continue;
        }
        let [proto, expire, state, source, virt, destination] = fields[..] else {
            bail!("ipvsadm -Lcn line {}: {line:?}", number + 1);
        };
        entries.push(ConnEntry {
            proto: proto.to_string(),
            expire_secs: parse_expire(expire)?,
            state: state.to_string(),
            source: parse_socket(source)?,
            virtual_address: parse_socket(virt)?,
            destination: parse_socket(destination)?,
        });
    }
    Ok(entries)
}

/// A service in `ipvsadm -L -n` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedService {
    /// `TCP`, `UDP` or `FWM`.
    pub proto: String,
    /// `VIP:PORT`, or the mark for `FWM`.
    pub address: String,
    /// The other words of the service line (scheduler, flags, `persistent N`, `mask M`) in
    /// the plain listing; the counters for `--stats` / `--rate`.
    pub columns: Vec<String>,
    /// Real servers as listed (the listing sorts them; not the kernel's list order).
    pub reals: Vec<ListedReal>,
}

/// A real server line (`  -> ADDR:PORT …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedReal {
    /// `ADDR:PORT`.
    pub address: SocketAddr,
    /// The other words: `Masq 4 0 1` (forward, weight, ActiveConn, InActConn), or the
    /// counters for `--stats` / `--rate`, or with `--persistent-conn` forward, weight,
    /// PersistConn, ActiveConn, InActConn.
    pub columns: Vec<String>,
}

impl ListedReal {
    /// Column `index` as a number (`--stats`/`--rate` with `--exact`; the counts of the
    /// plain listing).
    pub fn number(&self, index: usize) -> Option<u64> {
        self.columns.get(index)?.parse().ok()
    }
}

/// Parse `ipvsadm -L -n` (any of `--stats`, `--rate`, `--persistent-conn`; use `--exact`
/// for counters, otherwise they come with K/M suffixes).
pub fn parse_listing(text: &str) -> anyhow::Result<Vec<ListedService>> {
    let mut services: Vec<ListedService> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first().copied() {
            None | Some("IP" | "Prot") => {}
            Some("->") if fields.get(1) == Some(&"RemoteAddress:Port") => {}
            Some("->") => {
                let service = services.last_mut().with_context(|| {
                    format!("ipvsadm -L line {}: real before service", number + 1)
                })?;
                let address = fields
                    .get(1)
                    .with_context(|| format!("ipvsadm -L line {}: {line:?}", number + 1))?;
                service.reals.push(ListedReal {
                    address: parse_socket(address)?,
                    columns: fields[2..].iter().map(|s| s.to_string()).collect(),
                });
            }
            Some(proto @ ("TCP" | "UDP" | "FWM" | "SCTP")) if fields.len() >= 2 => {
                services.push(ListedService {
                    proto: proto.to_string(),
                    address: fields[1].to_string(),
                    columns: fields[2..].iter().map(|s| s.to_string()).collect(),
                    reals: Vec::new(),
                });
            }
            Some(_) => bail!("ipvsadm -L line {}: {line:?}", number + 1),
        }
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::director::config::DirectorConfig;

    fn spec(toml_text: &str) -> ServiceSpec {
        let config: DirectorConfig = toml::from_str(toml_text).unwrap();
        config.build().unwrap()
    }

    #[test]
    fn commands_service_first_then_reals_in_order() {
        let spec = spec(
            r#"name = "web"
vip = "192.0.2.10"
port = 80
scheduler = "sh"
flags = ["sh-port", "sh-fallback"]
persistence = "300s"
persistence_netmask = "255.255.255.0"
real = [{ addr = "10.0.1.2:80", weight = 4, upper_threshold = 10, lower_threshold = 5 },
        { addr = "10.0.1.3", weight = 0, forward = "dr" }]"#,
        );
        assert_eq!(
            service_commands(&[spec]),
            [
                "ipvsadm -A -t 192.0.2.10:80 -s sh -b sh-fallback,sh-port -p 300 -M 255.255.255.0",
                "ipvsadm -a -t 192.0.2.10:80 -r 10.0.1.2:80 -m -w 4 -x 10 -y 5",
                "ipvsadm -a -t 192.0.2.10:80 -r 10.0.1.3:80 -g -w 0",
            ]
        );
    }

    #[test]
    fn fwmark_and_ipv6_services() {
        let fwm = spec(
            r#"name = "f"
fwmark = 7
scheduler = "wlc"
persistence = "60s"
persistence_netmask = "24"
real = [{ addr = "[2001:db8::2]:443" }]"#,
        );
        assert_eq!(
            service_commands(&[fwm]),
            [
                "ipvsadm -A -f 7 -6 -s wlc -p 60 -M 24",
                "ipvsadm -a -f 7 -6 -r [2001:db8::2]:443 -m -w 1",
            ]
        );
        let v6 = spec(
            r#"name = "u"
vip = "2001:db8::10"
port = 53
proto = "udp"
scheduler = "rr"
real = [{ addr = "2001:db8::2" }]"#,
        );
        assert_eq!(
            service_commands(&[v6]),
            [
                "ipvsadm -A -u [2001:db8::10]:53 -s rr",
                "ipvsadm -a -u [2001:db8::10]:53 -r [2001:db8::2]:53 -m -w 1",
            ]
        );
    }

    #[test]
    fn parses_connection_listing() {
        let text = "IPVS connection entries\n\
pro expire state       source             virtual            destination\n\
TCP 00:59  SYN_RECV    198.51.100.1:1000  10.0.0.1:80        10.0.1.2:80\n\
IP  05:00  NONE        198.51.100.0:0     0.0.0.1:0          10.0.1.3:0\n\
UDP 04:58  UDP         [2001:db8::1]:53   [2001:db8::10]:53  [2001:db8::2]:53\n";
        let entries = parse_connections(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].expire_secs, 59);
        assert_eq!(entries[0].state, "SYN_RECV");
        assert_eq!(entries[0].destination, "10.0.1.2:80".parse().unwrap());
        assert!(entries[1].is_template());
        assert_eq!(entries[2].source, "[2001:db8::1]:53".parse().unwrap());
        assert!(parse_connections("TCP 00:59 SYN_RECV x").is_err());
    }

    #[test]
    fn parses_stats_listing() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
  -> RemoteAddress:Port\n\
TCP  10.0.0.1:80                         3        3        0      180        0\n\
  -> 10.0.1.2:80                         1        1        0       60        0\n\
FWM  1                                   0        0        0        0        0\n";
        let services = parse_listing(text).unwrap();
        assert_eq!(services.len(), 2);
        assert_eq!(services[0].columns, ["3", "3", "0", "180", "0"]);
        assert_eq!(services[0].reals[0].number(3), Some(60));
        assert_eq!(services[1].proto, "FWM");
        assert!(parse_listing("garbage here").is_err());
    }
}
