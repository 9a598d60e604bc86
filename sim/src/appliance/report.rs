//! What the appliance's stages saw during a run, for reports: shield contexts and their mode
//! timelines, flow and rule hits, the directors in `ipvsadm -L -n --stats` shape, NAT rules
//! and conntrack, bounded tables that overflowed; and the text rendering of all that.
//!
//! Not here: building the pipeline (see [`crate::appliance`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use datapath::pipeline::{Pipeline, QaTable, SharedStages};

/// What the appliance's stages saw, for reports: per-context shield counters and mode
/// timelines, per-flow and per-rule hits, and the directors in `ipvsadm -L -n --stats`
/// shape. Deterministic: every collection is ordered.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ApplianceReport {
    /// Shield contexts, in configuration order (default context first per instance).
    pub shield: Vec<ShieldContextReport>,
    /// Flows in file order.
    pub flows: Vec<FlowReport>,
    /// IP packets no flow claimed.
    pub unclassified: u64,
    /// Virtual services with their real servers (what `ipvsadm -L -n --stats` shows).
    pub directors: Vec<ServiceReport>,
    /// NAT rules with their hits and the tracking table's counters (absent without NAT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatReport>,
    /// The bounded tables of the configured stages with their occupancy, in
    /// [`QaTable::ALL`] order; the text renderings list those that overflowed or were made
    /// full by `[qa] full_after` ([`TableReport::notable`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableReport>,
    /// The directors' FTP helper (`[ip_vs_ftp]`; absent when it is not loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ftp: Option<FtpReport>,
}

/// The FTP helper: its ports, what it did, its table.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct FtpReport {
    /// Control ports.
    pub ports: Vec<u16>,
    /// Control connections with helper state now.
    pub entries: usize,
    /// Its counters.
    pub counters: datapath::director::ftp::FtpCounters,
}

/// The NAT stage: connections per rule (like `iptables -t nat -L -v`) and conntrack.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct NatReport {
    /// `rule N (kind)` → connections it translated, in rule order.
    pub rules: Vec<(String, u64)>,
    /// Packets translated through tracked connections.
    pub tracked: u64,
    /// Tracking entries created.
    pub created: u64,
    /// New connections refused: table full.
    pub overflows: u64,
    /// New connections refused: no free source port (or a DNAT reply tuple taken).
    pub port_exhausted: u64,
}

impl NatReport {
    fn of(nat: &datapath::nat::Nat) -> Self {
        let rules = nat
            .rules()
            .iter()
            .zip(&nat.counters.rule_hits)
            .enumerate()
            .map(|(index, (rule, hits))| {
                let kind = match rule.action {
                    datapath::nat::NatAction::Dnat { .. } => "dnat",
                    datapath::nat::NatAction::Snat { .. } => "snat",
                    datapath::nat::NatAction::Masquerade { .. } => "masquerade",
                };
                (format!("rule {} ({kind})", index + 1), *hits)
            })
            .collect();
        let conntrack = &nat.conntrack.counters;
        Self {
            rules,
            tracked: nat.counters.tracked,
            created: conntrack.created,
            overflows: conntrack.overflows,
            port_exhausted: conntrack.port_exhausted,
        }
    }

    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.rules.iter_mut().zip(&other.rules) {
            mine.1 += theirs.1;
        }
        self.tracked += other.tracked;
        self.created += other.created;
        self.overflows += other.overflows;
        self.port_exhausted += other.port_exhausted;
    }
}

/// One bounded table's occupancy and overflow.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TableReport {
    /// The table ([`QaTable::name`]).
    pub name: Cow<'static, str>,
    /// Entries now (`None` where the table does not expose it).
    pub entries: Option<usize>,
    /// Capacity (per service for lblc caches): in a sharded run, the sum over the receive
    /// queues that each hold a copy of the table (see `copies`).
    pub capacity: usize,
    /// How many copies of the table the row sums: one per receive queue for the per-queue
    /// tables (shield, fragments), 1 for a table all queues share (director, NAT).
    pub copies: usize,
    /// New entries the overflow policy handled.
    pub overflows: u64,
    /// The overflow policy, in words.
    pub policy: Cow<'static, str>,
    /// `[qa] full_after` setting, in packets.
    pub full_after: Option<u64>,
}

fn table_reports(pipeline: &Pipeline, shared: Option<&SharedStages>) -> Vec<TableReport> {
    let shared_directors = shared.and_then(SharedStages::directors);
    let shared_nat = shared.and_then(SharedStages::nat);
    let mut rows = Vec::new();
    let mut row = |table: QaTable, entries, capacity, overflows, policy: &'static str| {
        rows.push(TableReport {
            name: table.name().into(),
            entries,
            capacity,
            copies: 1,
            overflows,
            policy: policy.into(),
            full_after: None,
        });
    };
    if let Some(directors) = pipeline.directors().or(shared_directors) {
        let table = directors.table();
        let drop_new = "drop new (conn_table_full)";
        row(
            QaTable::Connections,
            Some(table.connection_count),
            table.connection_capacity,
            table.counters.connection_overflows,
            drop_new,
        );
        row(
            QaTable::Persistence,
            Some(table.template_count),
            table.template_capacity,
            table.counters.template_overflows,
            drop_new,
        );
        row(
            QaTable::LocalityCache,
            Some(directors.locality_cache_entries()),
            datapath::director::scheduler::LBLC_CACHE_CAPACITY,
            directors.locality_cache_overflows(),
            "schedule without caching",
        );
    }
    row(
        QaTable::Fragments,
        None,
        datapath::packet::fragments::FRAGMENT_TRACKER_CAPACITY,
        pipeline.counters().fragments.untracked,
        "pass unchecked (untracked)",
    );
    if let Some(shield) = pipeline.shield() {
        let stats = shield.table_stats();
        row(
            QaTable::KnownSessions,
            Some(stats.sessions),
            stats.sessions_capacity,
            stats.sessions_refused,
            "reclaim expired, evict half-open, else drop (table_full)",
        );
        row(
            QaTable::SourceRates,
            Some(stats.sources),
            stats.sources_capacity,
            stats.sources_evicted,
            "evict least recently seen",
        );
    }
    if let Some(nat) = pipeline.nat().or(shared_nat) {
        row(
            QaTable::Conntrack,
            Some(nat.conntrack.len()),
            nat.conntrack.capacity(),
            nat.conntrack.counters.overflows,
            "drop new (table_full)",
        );
    }
    for (table, packets, _) in pipeline.report_full_settings() {
        if let Some(found) = rows.iter_mut().find(|r| r.name == table.name()) {
            found.full_after = Some(packets);
        }
    }
    rows
}

impl TableReport {
    /// Whether the table is worth a line: it overflowed or a `[qa] full_after` is set.
    pub fn notable(&self) -> bool {
        self.overflows > 0 || self.full_after.is_some()
    }
}

fn merge_tables(mine: &mut Vec<TableReport>, theirs: &[TableReport]) {
    for row in theirs {
        match mine.iter_mut().find(|r| r.name == row.name) {
            Some(found) => {
                found.overflows += row.overflows;
                found.capacity += row.capacity;
                found.copies += row.copies;
                found.entries = found.entries.zip(row.entries).map(|(a, b)| a + b);
            }
            None => mine.push(row.clone()),
        }
    }
    let order = |name: &str| QaTable::ALL.iter().position(|t| t.name() == name);
    mine.sort_by_key(|r| order(&r.name));
}

/// One virtual service.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ServiceReport {
    /// Director name.
    pub name: String,
    /// `TCP 192.0.2.10:80` or `FWM 80`.
    pub key: String,
    /// Scheduler.
    pub scheduler: String,
    /// Persistence as `ipvsadm -L -n` prints it (`persistent 60 mask 255.255.255.0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent: Option<String>,
    /// Real servers in list order.
    pub reals: Vec<RealReport>,
}

/// One real server.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RealReport {
    /// Address.
    pub address: String,
    /// `Masq`, `Route` or `Tunnel`.
    pub forward: Cow<'static, str>,
    /// Weight.
    pub weight: i32,
    /// ActiveConn.
    pub active: u64,
    /// InActConn.
    pub inactive: u64,
    /// Connections scheduled.
    pub connections: u64,
    /// Packets client → server.
    pub packets_in: u64,
    /// Packets server → client.
    pub packets_out: u64,
    /// Bytes client → server (`InBytes`).
    pub bytes_in: u64,
    /// Bytes server → client (`OutBytes`, seen only with NAT).
    pub bytes_out: u64,
}

impl ApplianceReport {
    /// Add the report of another shard of the same appliance (same configuration, so the
    /// same contexts, flows and services in the same order). Counters add up; mode
    /// timelines are concatenated in shard order.
    pub fn merge(&mut self, other: &Self) {
        let empty = self.shield.is_empty() && self.flows.is_empty() && self.directors.is_empty();
        if empty && self.nat.is_none() {
            *self = other.clone();
            return;
        }
        match (&mut self.nat, &other.nat) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.nat = Some(theirs.clone()),
            _ => {}
        }
        for (mine, theirs) in self.shield.iter_mut().zip(&other.shield) {
            for (name, value) in &theirs.counters {
                if name != "mode_bits" {
                    *mine.counters.entry(name.clone()).or_default() += value;
                }
            }
            mine.modes.extend(&theirs.modes);
            mine.modes.sort_unstable();
        }
        for (mine, theirs) in self.flows.iter_mut().zip(&other.flows) {
            mine.hits += theirs.hits;
            mine.rule_hits
                .iter_mut()
                .zip(&theirs.rule_hits)
                .for_each(|(a, b)| *a += b);
        }
        self.unclassified += other.unclassified;
        merge_tables(&mut self.tables, &other.tables);
        for (mine, theirs) in self.directors.iter_mut().zip(&other.directors) {
            for (a, b) in mine.reals.iter_mut().zip(&theirs.reals) {
                a.active += b.active;
                a.inactive += b.inactive;
                a.connections += b.connections;
                a.packets_in += b.packets_in;
                a.packets_out += b.packets_out;
                a.bytes_in += b.bytes_in;
                a.bytes_out += b.bytes_out;
            }
        }
    }
}

/// `persistent TIMEOUT [mask M]` as `ipvsadm -L -n` prints it for a service's persistence.
fn persistent_text(spec: &datapath::director::config::ServiceSpec) -> Option<String> {
    let persistence = spec.persistence.as_ref()?;
    let ipv6 = spec.key_is_ipv6() || spec.reals.first().is_some_and(|r| r.address.is_ipv6());
    Some(persistent_words(
        persistence.timeout,
        persistence.prefix,
        ipv6,
    ))
}

/// ipvsadm's words: the timeout in seconds, then the IPv4 mask dotted unless /32, the IPv6
/// prefix length unless /128.
fn persistent_words(timeout_ns: u64, prefix: u8, ipv6: bool) -> String {
    let mut text = format!("persistent {}", timeout_ns / 1_000_000_000);
    if ipv6 && prefix < 128 {
        text += &format!(" mask {prefix}");
    } else if !ipv6 && prefix < 32 {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        text += &format!(" mask {}", std::net::Ipv4Addr::from(mask));
    }
    text
}

fn service_reports(directors: &datapath::director::Directors) -> Vec<ServiceReport> {
    directors
        .services()
        .iter()
        .map(|service| ServiceReport {
            name: service.spec.name.clone(),
            key: service.spec.key.to_string(),
            scheduler: service.spec.scheduler.name().to_string(),
            persistent: persistent_text(&service.spec),
            reals: service
                .dests
                .linked()
                .map(|(_, real)| RealReport {
                    address: real.address.to_string(),
                    forward: real.forward.ipvsadm_name().into(),
                    weight: real.weight,
                    active: u64::from(real.active),
                    inactive: u64::from(real.inactive),
                    connections: real.stats.connections,
                    packets_in: real.stats.packets_in,
                    packets_out: real.stats.packets_out,
                    bytes_in: real.stats.bytes_in,
                    bytes_out: real.stats.bytes_out,
                })
                .collect(),
        })
        .collect()
}

/// Protection-mode status bits of a shield context, with their names.
pub const MODE_BITS: [(u8, &str); 4] = [
    (0x1, "syn cookies"),
    (0x2, "ttl filter"),
    (0x4, "unmatched drop"),
    (0x8, "surge"),
];

/// Names of the protection-mode bits that are set, or `off`.
pub fn mode_names(bits: u8) -> String {
    let names: Vec<&str> = MODE_BITS
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if names.is_empty() {
        "off".into()
    } else {
        names.join(", ")
    }
}

/// A mode change in words: the modes turned on and off between `before` and `after`
/// (`ttl filter on, syn cookies off`).
pub fn mode_change_words(before: u8, after: u8) -> String {
    let mut words = Vec::new();
    for (bit, name) in MODE_BITS {
        match (before & bit != 0, after & bit != 0) {
            (false, true) => words.push(format!("{name} on")),
            (true, false) => words.push(format!("{name} off")),
            _ => {}
        }
    }
    words.join(", ")
}

impl ShieldContextReport {
    /// The context's mode changes as one timeline: in a sharded run each receive queue
    /// changes modes on its own share of the traffic, so a change is kept when it changes
    /// the bits of the timeline so far (the first queue to change shows it). Returns
    /// (virtual ns, bits before, bits after).
    pub fn mode_changes(&self) -> Vec<(u64, u8, u8)> {
        let mut bits = 0u8;
        let mut changes = Vec::new();
        for &(time, after) in &self.modes {
            if after != bits {
                changes.push((time, bits, after));
                bits = after;
            }
        }
        changes
    }
}

/// One shield context.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ShieldContextReport {
    /// Context name, e.g. `shield/192.0.2.10 vlan 100`.
    pub name: String,
    /// Non-zero counters by name.
    pub counters: BTreeMap<String, u64>,
    /// Protection-mode changes: (virtual ns, status bits: 0x1 SYN cookies, 0x2 TTL filter,
    /// 0x4 unmatched drop, 0x8 surge). In a sharded run, the changes of every queue in time
    /// order (each queue measures its own share of the traffic).
    pub modes: Vec<(u64, u8)>,
}

/// One flow's hits.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct FlowReport {
    /// Flow name.
    pub name: String,
    /// Policy as written.
    pub policy: String,
    /// Packets the flow claimed.
    pub hits: u64,
    /// Packets each rule decided (1-based order).
    pub rule_hits: Vec<u64>,
    /// Each rule as written, normalised (`match proto tcp dport 80`).
    pub rules: Vec<String>,
}

/// A rule as written (normalised): its keyword and conditions.
fn rule_text(rule: &datapath::flows::Rule) -> String {
    let mut text = rule.kind.keyword().to_string();
    for condition in &rule.conditions {
        text.push(' ');
        text.push_str(&condition.to_string());
    }
    text
}

/// Collect the report of a pipeline's stages.
pub fn report(pipeline: &Pipeline) -> ApplianceReport {
    report_with(pipeline, None)
}

/// [`report`] of a pipeline whose shared stages (directors, NAT) are in `shared`.
pub fn report_with(pipeline: &Pipeline, shared: Option<&SharedStages>) -> ApplianceReport {
    let mut report = ApplianceReport::default();
    if let Some(shield) = pipeline.shield() {
        for context in shield.contexts() {
            let counters = shield.counters(context).entries();
            let counters = counters.into_iter().filter(|(_, v)| *v > 0).collect();
            let modes = shield
                .mode_timeline(context)
                .iter()
                .map(|m| (m.time_ns, m.bits))
                .collect();
            report.shield.push(ShieldContextReport {
                name: shield.context_name(context),
                counters,
                modes,
            });
        }
    }
    if let Some(flows) = pipeline.flows() {
        for (index, flow) in flows.table.flows().iter().enumerate() {
            let rules = flow.first_rule..flow.first_rule + flow.rule_count;
            report.flows.push(FlowReport {
                name: flow.name.clone(),
                policy: flow.policy.to_string(),
                hits: flows.counters.flow_hits[index],
                rule_hits: flows.counters.rule_hits[rules.clone()].to_vec(),
                rules: flows.table.rules()[rules].iter().map(rule_text).collect(),
            });
        }
        report.unclassified = flows.counters.unclassified;
    }
    let directors = pipeline
        .directors()
        .or(shared.and_then(SharedStages::directors));
    report.directors = directors.map(service_reports).unwrap_or_default();
    report.ftp = directors.and_then(|d| d.ftp()).map(|helper| FtpReport {
        ports: helper.ports().to_vec(),
        entries: helper.len(),
        counters: helper.counters,
    });
    let nat = pipeline.nat().or(shared.and_then(SharedStages::nat));
    report.nat = nat.map(NatReport::of);
    report.tables = table_reports(pipeline, shared);
    report
}

fn render_tables(tables: &[TableReport]) -> String {
    let mut out = String::new();
    let tables: Vec<&TableReport> = tables.iter().filter(|t| t.notable()).collect();
    if tables.is_empty() {
        return out;
    }
    out.push_str("Tables:     table            entries/capacity   overflows  policy\n");
    for table in &tables {
        let entries = table.entries.map_or("-".to_string(), |e| e.to_string());
        let qa = table
            .full_after
            .map_or(String::new(), |n| format!(" [qa: full after {n} packets]"));
        let copies = if table.copies > 1 {
            format!(
                " ({} queues × {})",
                table.copies,
                table.capacity / table.copies
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {:<16} {:>8}/{:<9} {:>9}  {}{copies}{qa}\n",
            table.name, entries, table.capacity, table.overflows, table.policy
        ));
    }
    out
}

/// Render the report as text (after a replay or run summary).
pub fn render_report(report: &ApplianceReport) -> String {
    let mut out = String::new();
    for context in &report.shield {
        let modes: Vec<String> = context
            .mode_changes()
            .iter()
            .map(|&(t, before, after)| {
                format!(
                    "{:.3} s {} ({after:#x})",
                    t as f64 / 1e9,
                    mode_change_words(before, after)
                )
            })
            .collect();
        let modes = if modes.is_empty() {
            "no mode change".to_string()
        } else {
            format!("modes {}", modes.join("; "))
        };
        out.push_str(&format!("Shield {}: {modes}\n", context.name));
        for (name, value) in &context.counters {
            out.push_str(&format!("  {name:<34} {value}\n"));
        }
    }
    if !report.flows.is_empty() {
        out.push_str(
            "Flowmgr:    flow                         policy               hits  rule hits\n",
        );
        for flow in &report.flows {
            let rules: Vec<String> = flow.rule_hits.iter().map(u64::to_string).collect();
            out.push_str(&format!(
                "  {:<28} {:<18} {:>6}  [{}]\n",
                flow.name,
                flow.policy,
                flow.hits,
                rules.join(", ")
            ));
        }
        out.push_str(&format!("  (unclassified: {})\n", report.unclassified));
    }
    if let Some(nat) = &report.nat {
        out.push_str(&format!(
            "NAT: {} tracked packets, conntrack created {} overflows {} port exhausted {}\n",
            nat.tracked, nat.created, nat.overflows, nat.port_exhausted
        ));
        for (rule, hits) in &nat.rules {
            out.push_str(&format!("  {rule:<28} {hits:>8}\n"));
        }
    }
    if let Some(ftp) = &report.ftp {
        let c = &ftp.counters;
        out.push_str(&format!(
            "FTP helper (ip_vs_ftp, ports {:?}): {} control connections ({} without the helper: table full), {} PASV/EPSV, {} PORT/EPRT, {} replies rewritten ({} changed length), {} data connections, {} drops\n",
            ftp.ports,
            c.control_connections,
            c.overflows,
            c.passive_commands,
            c.port_commands,
            c.replies_rewritten,
            c.length_changes,
            c.data_connections,
            c.drops
        ));
    }
    if !report.directors.is_empty() {
        out.push_str(
            "Directors:  (ipvsadm -L -n shape, with --stats counters; totals per service)\n",
        );
        out.push_str("  Prot LocalAddress:Port Scheduler Flags\n    -> RemoteAddress:Port           Forward Weight ActiveConn InActConn    Conns   InPkts  OutPkts    InBytes   OutBytes\n");
    }
    for service in &report.directors {
        let persistent = service
            .persistent
            .as_ref()
            .map_or(String::new(), |p| format!(" {p}"));
        out.push_str(&format!(
            "  {} {}{persistent} ({})\n",
            service.key, service.scheduler, service.name
        ));
        for r in &service.reals {
            out.push_str(&format!(
                "    -> {:<28} {:<7} {:<6} {:<10} {:<9} {:>8} {:>8} {:>8} {:>10} {:>10}\n",
                r.address,
                r.forward,
                r.weight,
                r.active,
                r.inactive,
                r.connections,
                r.packets_in,
                r.packets_out,
                r.bytes_in,
                r.bytes_out
            ));
        }
        let sum = |field: fn(&RealReport) -> u64| service.reals.iter().map(field).sum::<u64>();
        out.push_str(&format!(
            "       {:<28} {:<7} {:<6} {:<10} {:<9} {:>8} {:>8} {:>8} {:>10} {:>10}\n",
            "(service totals)",
            "",
            "",
            sum(|r| r.active),
            sum(|r| r.inactive),
            sum(|r| r.connections),
            sum(|r| r.packets_in),
            sum(|r| r.packets_out),
            sum(|r| r.bytes_in),
            sum(|r| r.bytes_out)
        ));
    }
    out.push_str(&render_tables(&report.tables));
    out
}

#[cfg(test)]
mod tests;
