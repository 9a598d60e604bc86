//! QA: making a bounded table report full after a number of packets
//! ([`Pipeline::report_full_after`]), so overflow policies and counters can be tested
//! without filling the table. Settings for the shared stages' tables that fire while a
//! split pipeline has given them away are applied when they are lent back.

use serde::Serialize;

use super::Pipeline;

/// A bounded table the QA option can make report full ([`Pipeline::report_full_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QaTable {
    /// The director's connection table (drop new: `conn_table_full`).
    Connections,
    /// The director's persistence templates (drop new: `conn_table_full`).
    Persistence,
    /// lblc/lblcr destination caches (not cached; the connection is still scheduled).
    LocalityCache,
    /// The fragment-overlap tracker (new datagrams untracked).
    Fragments,
    /// The shield's known sessions (new sessions refused).
    KnownSessions,
    /// The shield's per-source rate table (new sources not kept).
    SourceRates,
    /// The NAT stage's connection tracking (drop new: `table_full`).
    Conntrack,
}

impl QaTable {
    /// Every table, in report order.
    pub const ALL: [QaTable; 7] = [
        Self::Connections,
        Self::Persistence,
        Self::LocalityCache,
        Self::Fragments,
        Self::KnownSessions,
        Self::SourceRates,
        Self::Conntrack,
    ];

    /// The stable name (appliance-file key, report row).
    pub fn name(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Persistence => "persistence",
            Self::LocalityCache => "lblc_cache",
            Self::Fragments => "fragments",
            Self::KnownSessions => "known_sessions",
            Self::SourceRates => "source_rates",
            Self::Conntrack => "conntrack",
        }
    }
}

impl Pipeline {
    /// QA: once `packets` packets have been processed, `table` refuses every new entry
    /// exactly as if it were at capacity, so its overflow policy and counter fire from the
    /// next packet that needs a new entry on. Tables of stages the pipeline does not have
    /// are ignored. Deterministic: counted in packets, not time.
    pub fn report_full_after(&mut self, table: QaTable, packets: u64) {
        self.qa_full_after.retain(|(pending, _)| *pending != table);
        self.qa_full_after.push((table, packets));
    }

    /// QA: every `full after` setting, pending or applied, in [`QaTable::ALL`] order, and
    /// whether it has been applied yet.
    pub fn report_full_settings(&self) -> Vec<(QaTable, u64, bool)> {
        let pending = self.qa_full_after.iter().map(|&(t, n)| (t, n, false));
        let applied = self.qa_full.iter().map(|&(t, n)| (t, n, true));
        let mut settings: Vec<_> = pending.chain(applied).collect();
        settings.sort_unstable();
        settings
    }

    /// Make full the tables whose packet count has been reached (one comparison per packet
    /// when nothing is pending).
    pub(super) fn apply_qa_full_after(&mut self) {
        if self.qa_full_after.is_empty() {
            return;
        }
        let processed = self.counters.packets;
        let mut index = 0;
        while index < self.qa_full_after.len() {
            let (table, packets) = self.qa_full_after[index];
            if packets > processed {
                index += 1;
                continue;
            }
            self.qa_full_after.swap_remove(index);
            self.qa_full.push((table, packets));
            self.set_table_full(table);
        }
    }

    pub(super) fn set_table_full(&mut self, table: QaTable) {
        use crate::director::connection::TableKind;
        let full = |t: QaTable| self.qa_full.iter().any(|(applied, _)| *applied == t);
        let shield_tables = (full(QaTable::KnownSessions), full(QaTable::SourceRates));
        match table {
            QaTable::Connections
            | QaTable::Persistence
            | QaTable::LocalityCache
            | QaTable::Conntrack
                if self.lent =>
            {
                self.shared_full_pending.push(table);
            }
            QaTable::Connections | QaTable::Persistence | QaTable::LocalityCache => {
                let Some(directors) = self.directors.as_mut() else {
                    return;
                };
                match table {
                    QaTable::Connections => {
                        directors.report_table_full(TableKind::Connections, true)
                    }
                    QaTable::Persistence => directors.report_table_full(TableKind::Templates, true),
                    _ => directors.report_locality_caches_full(true),
                }
            }
            QaTable::Fragments => self.fragments.set_report_full(true),
            QaTable::Conntrack => {
                if let Some(nat) = self.nat.as_mut() {
                    nat.conntrack.set_report_full(true);
                }
            }
            QaTable::KnownSessions | QaTable::SourceRates => {
                if let Some(shield) = self.shield.as_mut() {
                    shield.set_tables_report_full(shield_tables.0, shield_tables.1);
                }
            }
        }
    }
}
