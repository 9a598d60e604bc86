//! `ipvsadm -L -n`, `--stats` and `--rate` renderings, and the rate estimator behind
//! `--rate` (`ip_vs_est.c`: every 2 s, an exponentially weighted average with weight 1/4,
//! kept in fixed point exactly as the kernel keeps it).
//!
//! Services are listed in configuration order; real servers in kernel list order (last
//! added first, as `ipvsadm` shows them). Only servers linked to the service are listed.

use std::fmt::Write as _;

use super::config::ServiceKey;
use super::dest::DestStats;
use super::{Directors, Service};
use crate::verdict::{NS_PER_SEC, TimeNs};

/// The estimator period.
pub const ESTIMATOR_INTERVAL: TimeNs = 2 * NS_PER_SEC;

/// Which listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    /// `ipvsadm -L -n`.
    Plain,
    /// `ipvsadm -L -n --stats`.
    Stats,
    /// `ipvsadm -L -n --rate`.
    Rate,
}

/// One estimator (`struct ip_vs_estimator`): last counters and scaled averages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateEstimator {
    last: [u64; 5],
    scaled: [i64; 5],
}

/// Rates as `ipvsadm --rate` prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets per second in.
    pub in_pps: u64,
    /// Packets per second out.
    pub out_pps: u64,
    /// Bytes per second in.
    pub in_bps: u64,
    /// Bytes per second out.
    pub out_bps: u64,
}

impl RateEstimator {
    fn update(&mut self, stats: &DestStats) {
        let now = [
            stats.connections,
            stats.packets_in,
            stats.packets_out,
            stats.bytes_in,
            stats.bytes_out,
        ];
        for (index, value) in now.into_iter().enumerate() {
            let shift = if index < 3 { 9 } else { 4 };
            let rate = (value.wrapping_sub(self.last[index]) << shift) as i64;
            self.last[index] = value;
            self.scaled[index] += (rate - self.scaled[index]) >> 2;
        }
    }

    /// The rates (`ip_vs_read_estimator`).
    pub fn rates(&self) -> Rates {
        let packets = |v: i64| ((v + 0x1ff) >> 10).max(0) as u64;
        let bytes = |v: i64| ((v + 0xf) >> 5).max(0) as u64;
        Rates {
            cps: packets(self.scaled[0]),
            in_pps: packets(self.scaled[1]),
            out_pps: packets(self.scaled[2]),
            in_bps: bytes(self.scaled[3]),
            out_bps: bytes(self.scaled[4]),
        }
    }
}

/// One estimator tick for a service and its servers.
pub(super) fn estimate(service: &mut Service) {
    service.rates[0].update(&service.stats);
    for (id, server) in service.dests.servers.iter().enumerate() {
        service.rates[id + 1].update(&server.stats);
    }
}

fn service_name(service: &Service) -> String {
    match service.spec.key {
        ServiceKey::Fwmark(mark) => format!("FWM  {mark}"),
        key => key.to_string(),
    }
}

fn service_flags(service: &Service) -> String {
    let mut text = String::new();
    let flags = service.spec.flags;
    let family = service.spec.scheduler.name();
    let names: Vec<String> = [(flags.fallback, "fallback"), (flags.port, "port")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| format!("{family}-{name}"))
        .collect();
    if !names.is_empty() {
        let _ = write!(text, " ({})", names.join(","));
    }
    if let Some(persistence) = service.spec.persistence {
        let _ = write!(text, " persistent {}", persistence.timeout / NS_PER_SEC);
        let full = if service.spec.key_is_ipv6() { 128 } else { 32 };
        if persistence.prefix != full {
            let _ = write!(text, " mask {}", prefix_text(persistence.prefix, full));
        }
    }
    text
}

fn prefix_text(prefix: u8, full: u8) -> String {
    if full == 32 {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        std::net::Ipv4Addr::from(mask).to_string()
    } else {
        prefix.to_string()
    }
}

/// `print_largenum`: 8 columns, scaled to K/M/G/T when longer.
fn large_number(value: u64) -> String {
    if value < 100_000_000 {
        return format!("{value:>8}");
    }
    let mut scaled = value;
    for unit in ['K', 'M', 'G', 'T'] {
        scaled /= 1000;
        if scaled < 10_000_000 {
            return format!("{scaled:>7}{unit}");
        }
    }
    format!("{scaled:>7}P")
}

fn numbers(values: [u64; 5]) -> String {
    values
        .iter()
        .map(|&v| format!(" {}", large_number(v)))
        .collect()
}

fn stats_values(stats: &DestStats) -> [u64; 5] {
    [
        stats.connections,
        stats.packets_in,
        stats.packets_out,
        stats.bytes_in,
        stats.bytes_out,
    ]
}

fn rate_values(rates: Rates) -> [u64; 5] {
    [
        rates.cps,
        rates.in_pps,
        rates.out_pps,
        rates.in_bps,
        rates.out_bps,
    ]
}

fn header(format: ListFormat, capacity: usize) -> String {
    let mut text = format!("IP Virtual Server version 1.2.1 (size={capacity})\n");
    let columns = match format {
        ListFormat::Plain => {
            text.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            text.push_str(
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
            );
            return text;
        }
        ListFormat::Stats => ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"],
        ListFormat::Rate => ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
    };
    let _ = write!(text, "{:<33}", "Prot LocalAddress:Port");
    for column in columns {
        let _ = write!(text, " {column:>8}");
    }
    text.push_str("\n  -> RemoteAddress:Port\n");
    text
}

/// Render the listing of every service.
pub fn render(directors: &Directors, format: ListFormat) -> String {
    let mut text = header(format, directors.options().connection_capacity);
    for service in directors.services() {
        let name = service_name(service);
        let _ = match format {
            ListFormat::Plain => {
                let sched = service.spec.scheduler.name();
                writeln!(text, "{name} {sched}{}", service_flags(service))
            }
            ListFormat::Stats => {
                writeln!(text, "{name:<33}{}", numbers(stats_values(&service.stats)))
            }
            ListFormat::Rate => writeln!(
                text,
                "{name:<33}{}",
                numbers(rate_values(service.rates[0].rates()))
            ),
        };
        for (id, server) in service.dests.linked() {
            let address = server.address.to_string();
            let _ = match format {
                ListFormat::Plain => writeln!(
                    text,
                    "  -> {address:<28} {:<7} {:<6} {:<10} {:<10}",
                    server.forward.ipvsadm_name(),
                    server.weight,
                    server.active,
                    server.inactive
                ),
                ListFormat::Stats => {
                    writeln!(
                        text,
                        "  -> {address:<28}{}",
                        numbers(stats_values(&server.stats))
                    )
                }
                ListFormat::Rate => {
                    let rates = service.rates[id + 1].rates();
                    writeln!(text, "  -> {address:<28}{}", numbers(rate_values(rates)))
                }
            };
        }
    }
    text
}
