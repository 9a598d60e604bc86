//! The `[[nat]]` rules and `[interfaces]` addresses of an appliance file, in the iptables
//! vocabulary: `dnat` (nat PREROUTING `-j DNAT --to-destination`), `snat` (nat POSTROUTING
//! `-j SNAT --to-source`) and `masquerade` (nat POSTROUTING `-o IFACE -j MASQUERADE`).
//!
//! ```toml
//! [interfaces]
//! inside = "10.0.3.1/24"        # address/prefix: MASQUERADE's source, and the network
//!                               # whose destinations leave by this interface
//! [[nat]]
//! kind = "dnat"                 # proto, dst (addr[:port] or net), src (net), to (addr[:port])
//! proto = "tcp"
//! dst = "192.0.2.30:80"
//! to = "10.0.3.4:8080"
//! [[nat]]
//! kind = "masquerade"           # out (required), src, dst, proto, ports ("min-max")
//! out = "inside"
//! src = "198.51.100.0/24"
//! ```
//!
//! Each rule is checked while it is read, so a bad rule is reported at its own line and
//! column. Only TCP and UDP are translated. Not here: the translation (see [`super::Nat`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::conntrack::{CONNTRACK_CAPACITY, ConnTrack};
use super::{Nat, NatAction, NatInterface, NatMatch, NatRule};
use crate::packet::ip_proto;

/// The rule kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatKind {
    /// Destination NAT (PREROUTING).
    Dnat,
    /// Source NAT to a fixed address (POSTROUTING).
    Snat,
    /// Source NAT to the output interface's address (POSTROUTING).
    Masquerade,
}

/// `addr`, `addr:port`, `net/len` — parsed from a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The network (an address is /32 or /128).
    pub network: IpNet,
    /// The port, if written.
    pub port: Option<u16>,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(network) = text.parse::<IpNet>() {
            return Ok(Self {
                network,
                port: None,
            });
        }
        if let Ok(address) = text.parse::<IpAddr>() {
            return Ok(Self {
                network: IpNet::from(address),
                port: None,
            });
        }
        if let Ok(socket) = text.parse::<SocketAddr>() {
            return Ok(Self {
                network: IpNet::from(socket.ip()),
                port: Some(socket.port()),
            });
        }
        Err(format!(
            "`{text}` is not an address, `address:port` or `network/prefix`"
        ))
    }
}

/// A port range `min-max` (or one port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl FromStr for PortRange {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a port range `min-max`");
        let (min, max) = text.split_once('-').unwrap_or((text, text));
        let min: u16 = min.trim().parse().map_err(|_| bad())?;
        let max: u16 = max.trim().parse().map_err(|_| bad())?;
        if min == 0 || max < min {
            return Err(bad());
        }
        Ok(Self(min, max))
    }
}

fn from_text<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// The fields of one `[[nat]]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NatRuleFields {
    kind: NatKind,
    #[serde(default)]
    proto: Option<String>,
    #[serde(default, deserialize_with = "from_text")]
    src: Option<Target>,
    #[serde(default, deserialize_with = "from_text")]
    dst: Option<Target>,
    #[serde(default)]
    out: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default, deserialize_with = "from_text")]
    ports: Option<PortRange>,
}

/// One `[[nat]]` rule, checked.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "NatRuleFields")]
pub struct NatRuleConfig {
    /// Kind.
    pub kind: NatKind,
    /// `tcp` / `udp` (`None`: both).
    pub proto: Option<u8>,
    /// Source network.
    pub src: Option<IpNet>,
    /// Destination network and port.
    pub dst: Option<Target>,
    /// Output interface name (snat / masquerade).
    pub out: Option<String>,
    /// The action.
    pub action: NatAction,
}

fn proto_number(name: &str) -> Result<u8, String> {
    match name {
        "tcp" => Ok(ip_proto::TCP),
        "udp" => Ok(ip_proto::UDP),
        other => Err(format!(
            "proto `{other}`: NAT rules translate `tcp` or `udp`"
        )),
    }
}

fn single_address(target: Option<&Target>, what: &str) -> Result<(), String> {
    match target {
        Some(t) if t.network.prefix_len() == t.network.max_prefix_len() => Ok(()),
        Some(_) => Err(format!("{what}: one address, not a network")),
        None => Ok(()),
    }
}

fn dnat_action(to: &str) -> Result<NatAction, String> {
    let target: Target = to.parse()?;
    single_address(Some(&target), "`to`")?;
    Ok(NatAction::Dnat {
        address: target.network.addr(),
        port: target.port,
    })
}

fn snat_action(to: &str) -> Result<NatAction, String> {
    let (address, ports) = match to.parse::<IpAddr>() {
        Ok(address) => (address, None),
        Err(_) => {
            let (address, range) = to
                .rsplit_once(':')
                .ok_or_else(|| format!("`to = \"{to}\"`: expected `address[:min-max]`"))?;
            let address = address.trim_matches(['[', ']']);
            let address = address
                .parse()
                .map_err(|_| format!("`{address}` is not an address"))?;
            let PortRange(min, max) = range.parse()?;
            (address, Some((min, max)))
        }
    };
    Ok(NatAction::Snat { address, ports })
}

impl TryFrom<NatRuleFields> for NatRuleConfig {
    type Error = String;
    fn try_from(fields: NatRuleFields) -> Result<Self, String> {
        let proto = fields.proto.as_deref().map(proto_number).transpose()?;
        let any_port = fields.dst.is_some_and(|d| d.port.is_some()) || fields.ports.is_some();
        if any_port && proto.is_none() {
            return Err("a rule with ports needs `proto = \"tcp\"` or `\"udp\"`".into());
        }
        if fields.dst.is_some_and(|d| d.port.is_some()) {
            single_address(fields.dst.as_ref(), "`dst` with a port")?;
        }
        if fields.src.is_some_and(|s| s.port.is_some()) {
            return Err("`src` is a network, without port".into());
        }
        let action = match (fields.kind, fields.to.as_deref()) {
            (NatKind::Dnat, Some(to)) => dnat_action(to)?,
            (NatKind::Snat, Some(to)) => snat_action(to)?,
            (NatKind::Masquerade, None) => NatAction::Masquerade {
                ports: fields.ports.map(|PortRange(a, b)| (a, b)),
            },
            (NatKind::Masquerade, Some(_)) => {
                return Err("masquerade takes the output interface's address: no `to`".into());
            }
            (_, None) => return Err("dnat and snat need `to`".into()),
        };
        if fields.ports.is_some() && fields.kind != NatKind::Masquerade {
            return Err("`ports` is for masquerade (snat: `to = \"addr:min-max\"`)".into());
        }
        match (fields.kind, &fields.out) {
            (NatKind::Dnat, Some(_)) => {
                return Err("dnat happens before routing: no `out` (use `dst`)".into());
            }
            (NatKind::Masquerade, None) => {
                return Err("masquerade needs `out = \"<interface>\"`".into());
            }
            _ => {}
        }
        Ok(Self {
            kind: fields.kind,
            proto,
            src: fields.src.map(|s| s.network),
            dst: fields.dst,
            out: fields.out,
            action,
        })
    }
}

/// An interface address `10.0.3.1/24` (or `10.0.3.1`, a /32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddress(pub IpNet);

impl<'de> Deserialize<'de> for InterfaceAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{text}` is not an interface address `address/prefix`"
                ))
            })?;
        Ok(Self(parsed))
    }
}

/// Build the NAT table of an appliance: its rules and its interfaces' addresses
/// (interface names in `out` must be declared there). `hash_seed` (the run's seed) keys
/// the connection tracking's indexes.
pub fn build(
    rules: &[NatRuleConfig],
    interfaces: &BTreeMap<String, InterfaceAddress>,
    hash_seed: u64,
) -> Result<Nat, String> {
    let declared: Vec<NatInterface> = interfaces
        .iter()
        .map(|(name, address)| NatInterface {
            name: name.clone(),
            address: address.0,
        })
        .collect();
    let mut compiled = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let out =
            match &rule.out {
                Some(name) => Some(declared.iter().position(|i| &i.name == name).ok_or_else(
                    || {
                        format!(
                            "rule {}: interface `{name}` has no address in [interfaces]",
                            index + 1
                        )
                    },
                )?),
                None => None,
            };
        compiled.push(NatRule {
            matcher: NatMatch {
                proto: rule.proto,
                source: rule.src,
                destination: rule.dst.map(|d| d.network),
                destination_port: rule.dst.and_then(|d| d.port),
                out,
            },
            action: rule.action,
        });
    }
    Ok(Nat::new(
        compiled,
        declared,
        ConnTrack::keyed(CONNTRACK_CAPACITY, hash_seed),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        nat: Vec<NatRuleConfig>,
    }

    fn parse(text: &str) -> Result<Vec<NatRuleConfig>, String> {
        toml::from_str::<File>(text)
            .map(|f| f.nat)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn rules_are_read_in_iptables_vocabulary() {
        let rules = parse(
            r#"nat = [
            { kind = "dnat", proto = "tcp", dst = "192.0.2.30:80", to = "10.0.3.4:8080" },
            { kind = "snat", out = "inside", src = "198.51.100.0/24", to = "10.0.3.1:20000-20099" },
            { kind = "masquerade", out = "inside", src = "198.51.100.0/24" },
        ]"#,
        )
        .unwrap();
        assert_eq!(
            rules[0].action,
            NatAction::Dnat {
                address: "10.0.3.4".parse().unwrap(),
                port: Some(8080)
            }
        );
        assert_eq!(
            rules[1].action,
            NatAction::Snat {
                address: "10.0.3.1".parse().unwrap(),
                ports: Some((20000, 20099))
            }
        );
        assert_eq!(rules[2].action, NatAction::Masquerade { ports: None });
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let cases = [
            (
                r#"nat = [{ kind = "masquerade", src = "1.2.3.0/24" }]"#,
                "needs `out",
            ),
            (
                r#"nat = [{ kind = "dnat", dst = "1.2.3.4:80", to = "10.0.0.1" }]"#,
                "needs `proto",
            ),
            (
                r#"nat = [{ kind = "dnat", proto = "icmp", to = "10.0.0.1" }]"#,
                "tcp` or `udp",
            ),
            (
                r#"nat = [{ kind = "snat", to = "10.0.0.1", oif = "x" }]"#,
                "unknown field `oif`",
            ),
            (
                r#"nat = [{ kind = "dnat", proto = "tcp", to = "10.0.0.0/24" }]"#,
                "one address",
            ),
            (
                r#"nat = [{ kind = "snat", to = "10.0.0.1:9-1" }]"#,
                "port range",
            ),
        ];
        for (text, wanted) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(wanted), "{text}: {error}");
        }
    }
}
