//! The `[shield]` table of the appliance file, and its compilation into immutable tables.
//!
//! ```toml
//! [shield]
//! syn_cookies = "auto"          # on | off | auto — every context unless it overrides
//! ttl_filter = "auto"           # on | off | auto (default auto)
//! unmatched_drop = "off"        # on | off | auto (default off)
//! surge = "auto"                # on | off | auto (default auto)
//! deny = ["203.0.113.0/24"]     # every context of this instance
//! interfaces = ["eth0"]         # default: every interface no [[shield.instance]] names
//! bad_cookie = "drop"           # drop | rst
//! syn_proxy_mss = 1460          # MSS the cookie SYN-ACK advertises (if the SYN had one)
//! syn_proxy_wscale = 7          # window scale it advertises (must match the servers')
//! session_table_capacity = 65536
//! source_table_capacity = 65536
//!
//! [shield.thresholds]           # see `modes::Thresholds` for every key and default
//! syn_rate_on = 1000
//!
//! [shield.default]              # the default context: same keys as a context, no dst/vlan
//! protected_tcp_ports = [22]
//!
//! [[shield.context]]
//! dst = "192.0.2.10"            # optional: vlan = 100
//! protected_tcp_ports = [80, 443]
//! allow_src = ["198.51.100.0/24"]
//! allow_proto = ["icmp"]        # names (tcp udp icmp icmpv6) or numbers
//! allow_tcp_ports = [22]
//! allow_udp_ports = [53]
//! deny = []                     # in addition to the instance's
//! syn_cookies = "on"            # overrides; also ttl_filter, unmatched_drop, surge
//!
//! [[shield.instance]]           # more instances, each on its own interfaces,
//! interfaces = ["eth1"]         # with the same keys as [shield] (except the capacities)
//! ```
//!
//! A context does not inherit the default context's lists or ports; instance-wide keys
//! (`deny`, mode settings, thresholds) apply to all contexts of the instance. Errors are
//! reported when the tables are built ([`build`]), never while packets flow. Parsing TOML
//! is the caller's job (the appliance loader embeds [`ShieldConfig`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

use super::emit::SynAckTemplates;
use super::lists::{PortSet, PrefixList, SourcePrefix};
use super::modes::{ModeSetting, Thresholds};
use crate::hash::fast::FastBuild;
use crate::packet::ip_proto;

/// At most this many configured contexts per instance (plus the default context).
pub const MAX_CONTEXTS_PER_INSTANCE: usize = 512;
/// Default number of known-session slots (shared by all instances).
pub const SESSION_TABLE_CAPACITY: usize = 65_536;
/// Default number of per-source slots (shared by all instances).
pub const SOURCE_TABLE_CAPACITY: usize = 65_536;
/// Largest capacity either table may be configured with.
pub const MAX_TABLE_CAPACITY: usize = 1 << 22;
/// Smallest capacity either table may be configured with.
pub const MIN_TABLE_CAPACITY: usize = 8;

/// What to do with an ACK whose cookie does not validate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BadCookieAction {
    /// Drop it (counted as `bad_cookie` / `stale_cookie`).
    #[default]
    Drop,
    /// Drop it and answer with a RST (counted as the drop reason and `rst_sent`).
    Rst,
}

/// An IP protocol by name (`tcp`, `udp`, `icmp`, `icmpv6`) or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u8),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(number) => Ok(Self(number)),
            Raw::Name(name) => match name.to_ascii_lowercase().as_str() {
                "tcp" => Ok(Self(ip_proto::TCP)),
                "udp" => Ok(Self(ip_proto::UDP)),
                "icmp" => Ok(Self(ip_proto::ICMP)),
                "icmpv6" | "ipv6-icmp" => Ok(Self(ip_proto::ICMPV6)),
                _ => Err(serde::de::Error::custom(format!(
                    "unknown protocol `{name}` (expected tcp, udp, icmp, icmpv6 or a number)"
                ))),
            },
        }
    }
}

/// One context (`[[shield.context]]`, or `[shield.default]` without `dst`/`vlan`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Destination address the context applies to.
    pub dst: Option<IpAddr>,
    /// VLAN id (innermost tag) it applies to, with `dst`.
    pub vlan: Option<u16>,
    /// Destination TCP ports under SYN protection.
    pub protected_tcp_ports: Vec<u16>,
    /// Sources that pass (and are removed from the denylist).
    pub allow_src: Vec<SourcePrefix>,
    /// Protocols that pass.
    pub allow_proto: Vec<Protocol>,
    /// Destination TCP ports that pass.
    pub allow_tcp_ports: Vec<u16>,
    /// Destination UDP ports that pass.
    pub allow_udp_ports: Vec<u16>,
    /// Sources dropped, in addition to the instance's `deny`.
    pub deny: Vec<SourcePrefix>,
    /// SYN cookie mode override.
    pub syn_cookies: Option<ModeSetting>,
    /// Unknown-TTL filter override.
    pub ttl_filter: Option<ModeSetting>,
    /// Unmatched-drop override.
    pub unmatched_drop: Option<ModeSetting>,
    /// Surge mode override.
    pub surge: Option<ModeSetting>,
}

/// One shield instance (`[[shield.instance]]`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceConfig {
    /// Interfaces (names) the instance filters.
    pub interfaces: Vec<String>,
    /// SYN cookies (default `auto`).
    pub syn_cookies: Option<ModeSetting>,
    /// Unknown-TTL filter (default `auto`).
    pub ttl_filter: Option<ModeSetting>,
    /// Unmatched drop (default `off`).
    pub unmatched_drop: Option<ModeSetting>,
    /// Surge (default `auto`).
    pub surge: Option<ModeSetting>,
    /// Sources dropped in every context.
    pub deny: Vec<SourcePrefix>,
    /// Bad/stale cookie action.
    pub bad_cookie: BadCookieAction,
    /// MSS advertised in cookie SYN-ACKs to SYNs that carry an MSS option (default 1460).
    pub syn_proxy_mss: Option<u16>,
    /// Window scale advertised in cookie SYN-ACKs when the client offers one (default 7).
    pub syn_proxy_wscale: Option<u8>,
    /// Mode thresholds.
    pub thresholds: Thresholds,
    /// The default context.
    pub default: ContextConfig,
    /// The contexts.
    pub context: Vec<ContextConfig>,
}

/// The `[shield]` table: the first instance's keys, the table capacities, more instances.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShieldConfig {
    /// Interfaces of the first instance (default: all not named by another instance).
    pub interfaces: Vec<String>,
    /// SYN cookies (default `auto`).
    pub syn_cookies: Option<ModeSetting>,
    /// Unknown-TTL filter (default `auto`).
    pub ttl_filter: Option<ModeSetting>,
    /// Unmatched drop (default `off`).
    pub unmatched_drop: Option<ModeSetting>,
    /// Surge (default `auto`).
    pub surge: Option<ModeSetting>,
    /// Sources dropped in every context.
    pub deny: Vec<SourcePrefix>,
    /// Bad/stale cookie action.
    pub bad_cookie: BadCookieAction,
    /// MSS advertised in cookie SYN-ACKs to SYNs that carry an MSS option (default 1460).
    pub syn_proxy_mss: Option<u16>,
    /// Window scale advertised in cookie SYN-ACKs (default 7).
    pub syn_proxy_wscale: Option<u8>,
    /// Mode thresholds.
    pub thresholds: Thresholds,
    /// The default context.
    pub default: ContextConfig,
    /// The contexts.
    pub context: Vec<ContextConfig>,
    /// Known-session slots (default [`SESSION_TABLE_CAPACITY`]).
    pub session_table_capacity: Option<usize>,
    /// Per-source slots (default [`SOURCE_TABLE_CAPACITY`]).
    pub source_table_capacity: Option<usize>,
    /// More instances.
    pub instance: Vec<InstanceConfig>,
}

impl ShieldConfig {
    /// The first instance as an [`InstanceConfig`].
    pub fn main_instance(&self) -> InstanceConfig {
        InstanceConfig {
            interfaces: self.interfaces.clone(),
            syn_cookies: self.syn_cookies,
            ttl_filter: self.ttl_filter,
            unmatched_drop: self.unmatched_drop,
            surge: self.surge,
            deny: self.deny.clone(),
            bad_cookie: self.bad_cookie,
            syn_proxy_mss: self.syn_proxy_mss,
            syn_proxy_wscale: self.syn_proxy_wscale,
            thresholds: self.thresholds.clone(),
            default: self.default.clone(),
            context: self.context.clone(),
        }
    }
}

/// A configuration the shield cannot be built from. `at` names the table, e.g.
/// `shield.context[3]` or `shield.instance[0].context[1]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShieldConfigError {
    /// More contexts than [`MAX_CONTEXTS_PER_INSTANCE`].
    #[error("{at}: {count} contexts, at most {MAX_CONTEXTS_PER_INSTANCE} per instance")]
    TooManyContexts {
        /// Where.
        at: String,
        /// How many were given.
        count: usize,
    },
    /// A context without `dst` (only the default context has none).
    #[error("{at}: a context needs `dst` (only [shield.default] has none)")]
    MissingDst {
        /// Where.
        at: String,
    },
    /// The default context with `dst` or `vlan`.
    #[error("{at}: the default context takes no `dst` or `vlan`")]
    DefaultWithSelector {
        /// Where.
        at: String,
    },
    /// Two contexts with the same `dst` and `vlan`.
    #[error("{at}: another context already selects {selector}")]
    DuplicateContext {
        /// Where.
        at: String,
        /// `dst` or `dst vlan N`.
        selector: String,
    },
    /// A VLAN id outside 1..=4094.
    #[error("{at}: vlan {vlan} is outside 1..=4094")]
    VlanOutOfRange {
        /// Where.
        at: String,
        /// The id.
        vlan: u16,
    },
    /// An interface name the appliance does not have.
    #[error("{at}: unknown interface `{name}` (known: {known})")]
    UnknownInterface {
        /// Where.
        at: String,
        /// The name.
        name: String,
        /// The known names.
        known: String,
    },
    /// An interface named by two instances.
    #[error("{at}: interface `{name}` already belongs to another shield instance")]
    InterfaceTwice {
        /// Where.
        at: String,
        /// The name.
        name: String,
    },
    /// An instance in `[[shield.instance]]` without interfaces.
    #[error("{at}: an instance needs `interfaces`")]
    NoInterfaces {
        /// Where.
        at: String,
    },
    /// A value outside its range.
    #[error("{at}: `{key}` = {value} is outside {range}")]
    OutOfRange {
        /// Where.
        at: String,
        /// The key.
        key: &'static str,
        /// The value.
        value: u64,
        /// The allowed range.
        range: String,
    },
}

/// Which mode settings apply, in [`super::modes::Mode`] order.
pub(crate) fn mode_settings(
    instance: &InstanceConfig,
    context: &ContextConfig,
) -> [ModeSetting; 4] {
    [
        context
            .syn_cookies
            .or(instance.syn_cookies)
            .unwrap_or_default(),
        context
            .ttl_filter
            .or(instance.ttl_filter)
            .unwrap_or_default(),
        context
            .unmatched_drop
            .or(instance.unmatched_drop)
            .unwrap_or(ModeSetting::Off),
        context.surge.or(instance.surge).unwrap_or_default(),
    ]
}

/// A context compiled: lists and ports as lookup structures, mode settings resolved.
#[derive(Clone, Debug)]
pub struct ContextTables {
    /// `default`, `192.0.2.10` or `192.0.2.10 vlan 100`.
    pub label: String,
    /// Denied sources (instance + context, minus exact allowlisted prefixes).
    pub deny: PrefixList,
    /// Allowlisted sources.
    pub allow_src: PrefixList,
    /// Allowlisted protocols.
    pub allow_proto: PortSet,
    /// Allowlisted destination TCP ports.
    pub allow_tcp_ports: PortSet,
    /// Allowlisted destination UDP ports.
    pub allow_udp_ports: PortSet,
    /// Protected destination TCP ports.
    pub protected_tcp_ports: PortSet,
    /// Mode settings.
    pub settings: [ModeSetting; 4],
    /// True when any of the deny/allow lists above is non-empty (else stages 2 and 3 are
    /// skipped without looking at them).
    pub has_lists: bool,
}

/// An instance compiled.
#[derive(Clone, Debug)]
pub struct InstanceTables {
    /// `shield` or `shield.instance[N]`.
    pub name: String,
    /// Contexts; index 0 is the default context.
    pub contexts: Vec<ContextTables>,
    /// `(dst, vlan)` → context index; `vlan = None` matches any VLAN.
    pub(crate) selectors: ContextSelectors,
    /// Bad cookie action.
    pub bad_cookie: BadCookieAction,
    /// MSS advertised by cookie SYN-ACKs.
    pub syn_proxy_mss: u16,
    /// Window scale advertised by cookie SYN-ACKs.
    pub syn_proxy_wscale: u8,
    /// Mode thresholds.
    pub thresholds: Thresholds,
    /// The thresholds as counts per measurement window.
    pub limits: WindowLimits,
    /// Prebuilt cookie SYN-ACKs (this instance's MSS and window scale).
    pub syn_ack: SynAckTemplates,
}

/// The per-second thresholds as counts per window ([`Thresholds::per_window`]), computed
/// once when the tables are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowLimits {
    /// Window length, ns.
    pub window_ns: u64,
    /// SYNs per window above which SYN cookies go on.
    pub syns: u64,
    /// Unknown-TTL SYNs per window above which the TTL filter goes on.
    pub unknown_ttl: u64,
    /// Unmatched packets per window above which unmatched drop goes on.
    pub unmatched: u64,
    /// SYNs per source per window above which the source surges.
    pub source_syns: u64,
    /// Cookie SYN-ACKs per window at most.
    pub cookies: u64,
}

impl WindowLimits {
    /// The limits of `thresholds`.
    pub fn new(thresholds: &Thresholds) -> Self {
        Self {
            window_ns: thresholds.window_ms.max(1) * 1_000_000,
            syns: thresholds.per_window(thresholds.syn_rate_on),
            unknown_ttl: thresholds.per_window(thresholds.unknown_ttl_rate_on),
            unmatched: thresholds.per_window(thresholds.unmatched_rate_on),
            source_syns: thresholds.per_window(thresholds.source_syn_rate_max),
            cookies: thresholds.per_window(thresholds.cookie_rate_max),
        }
    }
}

/// Selectors scanned linearly at most (a few comparisons beat hashing the key).
const SELECTOR_SCAN_MAX: usize = 8;

/// Context selection: `(dst, vlan)` → context index within the instance, `vlan = None`
/// matching any VLAN; `dst + vlan` wins over `dst` alone. Up to [`SELECTOR_SCAN_MAX`]
/// selectors are scanned; more are looked up in a map with a deterministic fast hasher.
#[derive(Clone, Debug, Default)]
pub(crate) struct ContextSelectors {
    list: Vec<(IpAddr, Option<u16>, u16)>,
    map: HashMap<(IpAddr, Option<u16>), u16, FastBuild>,
}

impl ContextSelectors {
    /// Add a selector; false (and unchanged) when it is already there.
    pub(crate) fn insert(&mut self, dst: IpAddr, vlan: Option<u16>, slot: u16) -> bool {
        if self.map.contains_key(&(dst, vlan)) {
            return false;
        }
        self.map.insert((dst, vlan), slot);
        self.list.push((dst, vlan, slot));
        true
    }

    /// The context index for a packet to `dst` whose innermost VLAN id is `vlan`.
    #[inline(always)]
    pub(crate) fn select(&self, dst: IpAddr, vlan: Option<u16>) -> Option<u16> {
        if self.list.len() <= SELECTOR_SCAN_MAX {
            let mut any_vlan = None;
            for &(selector_dst, selector_vlan, slot) in &self.list {
                if selector_dst != dst {
                    continue;
                }
                match selector_vlan {
                    None => any_vlan = Some(slot),
                    Some(_) if selector_vlan == vlan => return Some(slot),
                    Some(_) => {}
                }
            }
            return any_vlan;
        }
        vlan.and_then(|vlan| self.map.get(&(dst, Some(vlan))))
            .or_else(|| self.map.get(&(dst, None)))
            .copied()
    }

    /// Context indexes an override scope names (see [`super::overrides::ContextScope`]).
    pub(crate) fn matching(
        &self,
        scope: super::overrides::ContextScope,
    ) -> impl Iterator<Item = u16> + '_ {
        use super::overrides::ContextScope;
        let default = (scope == ContextScope::Default).then_some(0);
        let listed = self.list.iter().filter_map(move |&(dst, vlan, slot)| {
            let hit = match scope {
                ContextScope::Default => false,
                ContextScope::Selector {
                    dst: wanted,
                    vlan: wanted_vlan,
                } => dst == wanted && vlan == wanted_vlan,
                ContextScope::Destination(wanted) => dst == wanted,
            };
            hit.then_some(slot)
        });
        default.into_iter().chain(listed)
    }

    /// True without selectors (every packet goes to the default context).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

fn compile_context(
    instance: &InstanceConfig,
    context: &ContextConfig,
    label: String,
) -> ContextTables {
    let allow_src = PrefixList::new(&context.allow_src);
    let mut deny = PrefixList::new(instance.deny.iter().chain(&context.deny));
    deny.remove_all(&context.allow_src);
    let allow_proto = PortSet::new(context.allow_proto.iter().map(|p| u16::from(p.0)));
    let allow_tcp_ports = PortSet::new(context.allow_tcp_ports.iter().copied());
    let allow_udp_ports = PortSet::new(context.allow_udp_ports.iter().copied());
    let has_lists = !(deny.is_empty()
        && allow_src.is_empty()
        && allow_proto.values().is_empty()
        && allow_tcp_ports.values().is_empty()
        && allow_udp_ports.values().is_empty());
    ContextTables {
        label,
        deny,
        allow_src,
        allow_proto,
        allow_tcp_ports,
        allow_udp_ports,
        protected_tcp_ports: PortSet::new(context.protected_tcp_ports.iter().copied()),
        settings: mode_settings(instance, context),
        has_lists,
    }
}

fn selector_label(dst: IpAddr, vlan: Option<u16>) -> String {
    match vlan {
        Some(vlan) => format!("{dst} vlan {vlan}"),
        None => dst.to_string(),
    }
}

/// Compile one instance.
pub(crate) fn compile_instance(
    config: &InstanceConfig,
    name: String,
) -> Result<InstanceTables, ShieldConfigError> {
    if config.context.len() > MAX_CONTEXTS_PER_INSTANCE {
        return Err(ShieldConfigError::TooManyContexts {
            at: name,
            count: config.context.len(),
        });
    }
    if config.default.dst.is_some() || config.default.vlan.is_some() {
        return Err(ShieldConfigError::DefaultWithSelector {
            at: format!("{name}.default"),
        });
    }
    check_thresholds(&config.thresholds, &name)?;
    let mut contexts = vec![compile_context(config, &config.default, "default".into())];
    let mut selectors = ContextSelectors::default();
    for (index, context) in config.context.iter().enumerate() {
        let at = format!("{name}.context[{index}]");
        let dst = context
            .dst
            .ok_or(ShieldConfigError::MissingDst { at: at.clone() })?;
        if let Some(vlan) = context.vlan.filter(|v| !(1..=4094).contains(v)) {
            return Err(ShieldConfigError::VlanOutOfRange { at, vlan });
        }
        let selector = selector_label(dst, context.vlan);
        let slot = contexts.len() as u16;
        if !selectors.insert(dst, context.vlan, slot) {
            return Err(ShieldConfigError::DuplicateContext { at, selector });
        }
        contexts.push(compile_context(config, context, selector));
    }
    Ok(InstanceTables {
        name,
        contexts,
        selectors,
        bad_cookie: config.bad_cookie,
        syn_proxy_mss: config.syn_proxy_mss.unwrap_or(1460),
        syn_proxy_wscale: config.syn_proxy_wscale.unwrap_or(7),
        thresholds: config.thresholds.clone(),
        limits: WindowLimits::new(&config.thresholds),
        syn_ack: SynAckTemplates::new(
            config.syn_proxy_mss.unwrap_or(1460),
            config.syn_proxy_wscale.unwrap_or(7),
        ),
    })
    .and_then(|tables| check_proxy(tables, config))
}

fn check_proxy(
    tables: InstanceTables,
    config: &InstanceConfig,
) -> Result<InstanceTables, ShieldConfigError> {
    if tables.syn_proxy_wscale > 14 {
        return Err(ShieldConfigError::OutOfRange {
            at: tables.name.clone(),
            key: "syn_proxy_wscale",
            value: u64::from(tables.syn_proxy_wscale),
            range: "0..=14".into(),
        });
    }
    if config.syn_proxy_mss.is_some_and(|mss| mss < 536) {
        return Err(ShieldConfigError::OutOfRange {
            at: tables.name.clone(),
            key: "syn_proxy_mss",
            value: u64::from(tables.syn_proxy_mss),
            range: "536..=65535".into(),
        });
    }
    Ok(tables)
}

fn check_thresholds(thresholds: &Thresholds, at: &str) -> Result<(), ShieldConfigError> {
    let out_of_range = |key, value, range: &str| ShieldConfigError::OutOfRange {
        at: format!("{at}.thresholds"),
        key,
        value,
        range: range.into(),
    };
    if !(1..=3_600_000).contains(&thresholds.window_ms) {
        return Err(out_of_range(
            "window_ms",
            thresholds.window_ms,
            "1..=3600000",
        ));
    }
    for (key, value) in [
        (
            "half_open_ratio_on_percent",
            thresholds.half_open_ratio_on_percent,
        ),
        (
            "half_open_ratio_off_percent",
            thresholds.half_open_ratio_off_percent,
        ),
    ] {
        if value > 100 {
            return Err(out_of_range(key, value, "0..=100"));
        }
    }
    Ok(())
}

/// Assign interfaces to instances: returns, per interface index, the instance index.
pub(crate) fn assign_interfaces(
    configs: &[(String, &InstanceConfig)],
    iface_names: &[&str],
) -> Result<Vec<Option<u16>>, ShieldConfigError> {
    let mut owner: Vec<Option<u16>> = vec![None; iface_names.len()];
    let known = iface_names.join(", ");
    let position = |name: &str, at: &str| {
        iface_names.iter().position(|n| *n == name).ok_or_else(|| {
            ShieldConfigError::UnknownInterface {
                at: at.to_string(),
                name: name.to_string(),
                known: known.clone(),
            }
        })
    };
    // Named interfaces first (instances 1.. and the first instance if it names any).
    for (index, (at, config)) in configs.iter().enumerate() {
        if index > 0 && config.interfaces.is_empty() {
            return Err(ShieldConfigError::NoInterfaces { at: at.clone() });
        }
        let names: BTreeSet<&String> = config.interfaces.iter().collect();
        for name in names {
            let slot = position(name, at)?;
            if owner[slot].is_some() {
                return Err(ShieldConfigError::InterfaceTwice {
                    at: at.clone(),
                    name: name.clone(),
                });
            }
            owner[slot] = Some(index as u16);
        }
    }
    if configs
        .first()
        .is_some_and(|(_, c)| c.interfaces.is_empty())
    {
        for slot in owner.iter_mut().filter(|slot| slot.is_none()) {
            *slot = Some(0);
        }
    }
    Ok(owner)
}

impl fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&crate::packet::proto_name(self.0))
    }
}
