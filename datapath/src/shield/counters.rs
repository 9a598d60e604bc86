//! Counters per context and per shield: every verdict the shield gives is counted in
//! exactly one "passed"/"dropped"/"replied" slot, plus event counters (cookies, sessions).
//! Plain integers in fixed arrays, so counting never allocates; [`ContextCounters::entries`]
//! renders them as an ordered name → value list for reports and snapshots.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::packet::InvalidReason;
use crate::verdict::DropReason;

/// Drop reasons the shield gives besides `invalid:*`, in report order.
pub const SHIELD_DROP_REASONS: [DropReason; 8] = [
    DropReason::Denylist,
    DropReason::BadCookie,
    DropReason::StaleCookie,
    DropReason::Ttl,
    DropReason::Rate,
    DropReason::Unmatched,
    DropReason::TableFull,
    DropReason::NoSession,
];

/// Counters of one context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextCounters {
    /// Packets passed to the next stage (including allowlisted and proxied ones).
    pub passed: u64,
    /// Packets passed by an allowlist.
    pub allowlisted: u64,
    /// Packets the shield answered instead of passing (cookie SYN-ACKs, proxy, RST).
    pub replied: u64,
    /// Drops per invalid reason, indexed by [`InvalidReason::index`].
    pub dropped_invalid: [u64; InvalidReason::COUNT],
    /// Drops per shield reason, in the order of [`SHIELD_DROP_REASONS`].
    pub dropped: [u64; SHIELD_DROP_REASONS.len()],
    /// Cookie SYN-ACKs sent.
    pub cookies_sent: u64,
    /// Cookie ACKs that validated.
    pub cookies_validated: u64,
    /// RSTs sent for bad or stale cookies.
    pub rst_sent: u64,
    /// Known sessions created (half-open entries and proxied connections).
    pub sessions_created: u64,
    /// Known sessions that timed out (counted when their slot is reclaimed).
    pub sessions_expired: u64,
    /// Half-open sessions evicted to make room.
    pub sessions_evicted: u64,
    /// Connections opened to the server by the SYN proxy.
    pub proxy_connections: u64,
    /// Current mode bits.
    pub mode_bits: u8,
}

impl Default for ContextCounters {
    fn default() -> Self {
        Self {
            passed: 0,
            allowlisted: 0,
            replied: 0,
            dropped_invalid: [0; InvalidReason::COUNT],
            dropped: [0; SHIELD_DROP_REASONS.len()],
            cookies_sent: 0,
            cookies_validated: 0,
            rst_sent: 0,
            sessions_created: 0,
            sessions_expired: 0,
            sessions_evicted: 0,
            proxy_connections: 0,
            mode_bits: 0,
        }
    }
}

impl ContextCounters {
    /// Count a drop.
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        if let DropReason::Invalid(invalid) = reason {
            self.dropped_invalid[invalid.index()] += 1;
        } else if let Some(slot) = SHIELD_DROP_REASONS.iter().position(|r| *r == reason) {
            self.dropped[slot] += 1;
        }
    }

    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Invalid(invalid) => self.dropped_invalid[invalid.index()],
            other => SHIELD_DROP_REASONS
                .iter()
                .position(|r| *r == other)
                .map_or(0, |slot| self.dropped[slot]),
        }
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_invalid.iter().sum::<u64>() + self.dropped.iter().sum::<u64>()
    }

    /// Non-zero counters as `name → value`, ordered by name (`dropped.<reason>` per drop
    /// reason). For reports and snapshots.
    pub fn entries(&self) -> BTreeMap<String, u64> {
        let mut entries = BTreeMap::new();
        let mut put = |name: String, value: u64| {
            if value != 0 {
                entries.insert(name, value);
            }
        };
        put("passed".into(), self.passed);
        put("allowlisted".into(), self.allowlisted);
        put("replied".into(), self.replied);
        for reason in InvalidReason::ALL {
            put(
                format!("dropped.{}", DropReason::Invalid(reason).name()),
                self.dropped_invalid[reason.index()],
            );
        }
        for (slot, reason) in SHIELD_DROP_REASONS.iter().enumerate() {
            put(format!("dropped.{}", reason.name()), self.dropped[slot]);
        }
        put("cookies_sent".into(), self.cookies_sent);
        put("cookies_validated".into(), self.cookies_validated);
        put("rst_sent".into(), self.rst_sent);
        put("sessions_created".into(), self.sessions_created);
        put("sessions_expired".into(), self.sessions_expired);
        put("sessions_evicted".into(), self.sessions_evicted);
        put("proxy_connections".into(), self.proxy_connections);
        put("mode_bits".into(), u64::from(self.mode_bits));
        entries
    }
}

/// Occupancy and overflow of the shield's bounded tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    /// Known sessions now.
    pub sessions: usize,
    /// Session table slots.
    pub sessions_capacity: usize,
    /// Most sessions at once.
    pub sessions_high_water: usize,
    /// New sessions refused because their bucket held only live established sessions.
    pub sessions_refused: u64,
    /// Sources tracked now.
    pub sources: usize,
    /// Source table slots.
    pub sources_capacity: usize,
    /// Most sources at once.
    pub sources_high_water: usize,
    /// Sources evicted (least recently seen first) to make room.
    pub sources_evicted: u64,
    /// Bytes held by the shield's state: both slot arrays (allocated once, at build),
    /// boxed proxy state of live proxied connections, and mode timelines.
    pub state_bytes: usize,
}
