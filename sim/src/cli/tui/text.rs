//! The TUI's plain-text side: [`App::summary`] (the panels' tables as text, printed when
//! `sim tui` ends) and the clients panel's text (number formats: `units`).

use std::fmt::Write as _;

use super::app::{App, mode_bits_at};
use super::units::{percentiles_text, rate_text, share};
use crate::appliance::mode_names;

impl App {
    /// Plain-text summary of the current state (the same tables as the panels).
    pub fn summary(&self) -> String {
        let mut text = self.header() + "\n";
        let totals = &self.view.totals;
        let _ = writeln!(
            text,
            "frames: {} processed, {} emitted, {} delivered",
            totals.processed, totals.emitted, totals.delivered
        );
        self.summary_flows(&mut text);
        self.summary_shield(&mut text);
        self.summary_directors(&mut text);
        text += &self.clients_text();
        text
    }

    fn summary_flows(&self, text: &mut String) {
        if self.view.appliance.flows.is_empty() {
            return;
        }
        let _ = writeln!(
            text,
            "\nflows (sort {:?}, filter {:?}):",
            self.flow_sort, self.filter
        );
        let _ = writeln!(
            text,
            "  {:<24} {:<20} {:>10} {:>10} {:>6}",
            "flow", "policy", "hits", "rate/s", "share"
        );
        for line in self.flow_lines() {
            // A rule line's text spans the flow and policy columns.
            let name = if line.is_rule {
                format!("    {:<43}", line.name)
            } else {
                format!("  {:<24} {:<20}", line.name, line.policy)
            };
            let _ = writeln!(
                text,
                "{name} {:>10} {:>10} {:>5.1}%",
                line.hits,
                rate_text(line.rate),
                line.share * 100.0
            );
        }
    }

    fn summary_shield(&self, text: &mut String) {
        let _ = writeln!(text, "\nverdicts (sort {:?}):", self.decision_sort);
        for line in self.decision_lines() {
            let _ = writeln!(
                text,
                "  {:<9} {:<8} {:<28} {:>10} {:>10}",
                line.stage,
                line.verdict,
                line.reason,
                line.packets,
                rate_text(line.rate)
            );
        }
        for (index, context) in self.view.appliance.shield.iter().enumerate() {
            let bits = mode_bits_at(&self.view, index, self.data_ns);
            let _ = writeln!(
                text,
                "  {} mode {bits:#x} ({})",
                context.name,
                mode_names(bits)
            );
        }
    }

    fn summary_directors(&self, text: &mut String) {
        for service in &self.view.appliance.directors {
            let _ = writeln!(
                text,
                "\n{} {} ({})",
                service.key, service.scheduler, service.name
            );
            let total: u64 = service.reals.iter().map(|r| r.packets_in).sum();
            for real in &service.reals {
                let _ = writeln!(
                    text,
                    "  -> {:<22} {:<6} {:>6} {:>10} {:>10} {:>6.1}%",
                    real.address,
                    real.forward,
                    real.weight,
                    real.active,
                    real.inactive,
                    share(real.packets_in, total) * 100.0
                );
            }
        }
    }

    /// Legitimate-client figures: success, failures and latency percentiles per protocol.
    pub fn clients_text(&self) -> String {
        let mut text = String::new();
        if let Some(tcp) = &self.view.clients.tcp {
            let _ = writeln!(
                text,
                "tcp {}/{} completed, success {:.2}%",
                tcp.completed,
                tcp.attempted,
                tcp.success_ratio * 100.0
            );
            let _ = writeln!(
                text,
                "  {} timeout, {} reset, {} still open",
                tcp.failed_timeout, tcp.failed_reset, tcp.unfinished
            );
            if let Some(p) = &tcp.connect_ns {
                let _ = writeln!(text, "  connect ms {}", percentiles_text(p));
            }
        }
        if let Some(udp) = &self.view.clients.udp {
            let _ = writeln!(
                text,
                "udp {}/{} answered, success {:.2}%, {} timeout, {} waiting",
                udp.answered,
                udp.sent,
                udp.success_ratio * 100.0,
                udp.failed_timeout,
                udp.unfinished
            );
            if let Some(p) = &udp.rtt_ns {
                let _ = writeln!(text, "  rtt ms {}", percentiles_text(p));
            }
        }
        if text.is_empty() {
            text.push_str("no legitimate clients in this scenario\n");
        }
        text
    }
}
