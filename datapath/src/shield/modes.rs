//! Protection modes: the status bits, their settings (`on | off | auto`), the thresholds
//! with hysteresis that switch `auto` modes, and the per-context measurement windows and
//! mode timeline.
//!
//! Measurement is in fixed windows of virtual time ([`Thresholds::window_ms`]). A mode in
//! `auto` switches **on** as soon as the count in the current window passes its "on" rate
//! (so a flood is caught within the window it starts in) and switches **off** at the end of
//! a window whose rate is below its "off" rate, once [`Thresholds::hold_ms`] have passed
//! since it was last triggered. Defaults (per context):
//!
//! | mode | on when | off when |
//! |---|---|---|
//! | SYN cookies `0x1` | SYNs to protected ports > 1000/s, or ≥ 64 half-open sessions created in a window of which > 50 % never completed | SYNs < 500/s and half-open ratio < 25 % |
//! | unknown-TTL filter `0x2` | SYNs whose TTL was never seen in a completed handshake > 100/s (only once a TTL has been learned) | < 20/s |
//! | unmatched drop `0x4` | packets reaching the unmatched stage > 100 000/s | < 50 000/s |
//! | surge `0x8` | a source sends > 100 SYNs/s to protected ports | no source above it |
//!
//! This module does not see packets; the context calls it with counts.

use serde::{Deserialize, Serialize};

use crate::verdict::TimeNs;

/// Status bit: SYN cookies.
pub const MODE_SYN_COOKIES: u8 = 0x1;
/// Status bit: unknown-TTL filter.
pub const MODE_TTL_FILTER: u8 = 0x2;
/// Status bit: unmatched traffic dropped.
pub const MODE_UNMATCHED_DROP: u8 = 0x4;
/// Status bit: per-source surge limiting.
pub const MODE_SURGE: u8 = 0x8;
/// All mode bits, in the order of [`Mode`].
pub const MODE_BITS: [u8; 4] = [
    MODE_SYN_COOKIES,
    MODE_TTL_FILTER,
    MODE_UNMATCHED_DROP,
    MODE_SURGE,
];
/// At most this many mode changes are kept per context; later ones are counted only.
pub const MODE_TIMELINE_CAPACITY: usize = 4096;

/// One protection mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SYN cookies (0x1).
    SynCookies = 0,
    /// Unknown-TTL filter (0x2).
    TtlFilter = 1,
    /// Unmatched drop (0x4).
    UnmatchedDrop = 2,
    /// Surge (0x8).
    Surge = 3,
}

impl Mode {
    /// Every mode, in status-bit order.
    pub const ALL: [Mode; 4] = [
        Mode::SynCookies,
        Mode::TtlFilter,
        Mode::UnmatchedDrop,
        Mode::Surge,
    ];

    /// The status bit.
    #[inline]
    pub fn bit(self) -> u8 {
        MODE_BITS[self as usize]
    }

    /// The mode of a single status bit (`0x1`, `0x2`, `0x4` or `0x8`).
    pub fn from_bit(bit: u8) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| mode.bit() == bit)
    }

    /// The configuration key of the mode (`syn_cookies`, `ttl_filter`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Mode::SynCookies => "syn_cookies",
            Mode::TtlFilter => "ttl_filter",
            Mode::UnmatchedDrop => "unmatched_drop",
            Mode::Surge => "surge",
        }
    }
}

/// How a mode is driven.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeSetting {
    /// Forced on.
    On,
    /// Forced off.
    Off,
    /// Switched by the measured rates.
    #[default]
    Auto,
}

/// Thresholds of the automatic modes (`[shield.thresholds]`); rates are per second.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Measurement window, ms.
    pub window_ms: u64,
    /// A mode stays on at least this long after it was last triggered, ms.
    pub hold_ms: u64,
    /// SYN cookies on above this many SYNs/s to protected ports of a context.
    pub syn_rate_on: u64,
    /// SYN cookies may go off below this many SYNs/s.
    pub syn_rate_off: u64,
    /// Half-open sessions created per window before the ratio is judged.
    pub half_open_min: u64,
    /// SYN cookies on when more than this percentage of half-open sessions never complete.
    pub half_open_ratio_on_percent: u64,
    /// SYN cookies may go off below this percentage.
    pub half_open_ratio_off_percent: u64,
    /// Unknown-TTL filter on above this many unknown-TTL SYNs/s.
    pub unknown_ttl_rate_on: u64,
    /// Unknown-TTL filter may go off below this rate.
    pub unknown_ttl_rate_off: u64,
    /// Unmatched drop on above this many unmatched packets/s.
    pub unmatched_rate_on: u64,
    /// Unmatched drop may go off below this rate.
    pub unmatched_rate_off: u64,
    /// A source sending more SYNs/s than this to protected ports surges; while the surge
    /// mode is on, its SYNs beyond this rate are dropped (`rate`).
    pub source_syn_rate_max: u64,
    /// Cookie SYN-ACKs per second per context at most; beyond, SYNs are dropped (`rate`).
    pub cookie_rate_max: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            window_ms: 1000,
            hold_ms: 10_000,
            syn_rate_on: 1000,
            syn_rate_off: 500,
            half_open_min: 64,
            half_open_ratio_on_percent: 50,
            half_open_ratio_off_percent: 25,
            unknown_ttl_rate_on: 100,
            unknown_ttl_rate_off: 20,
            unmatched_rate_on: 100_000,
            unmatched_rate_off: 50_000,
            source_syn_rate_max: 100,
            cookie_rate_max: 10_000_000,
        }
    }
}

impl Thresholds {
    /// A per-second rate as a count per window (at least 1).
    #[inline]
    pub fn per_window(&self, per_second: u64) -> u64 {
        (per_second.saturating_mul(self.window_ms) / 1000).max(1)
    }

    #[inline]
    fn window_ns(&self) -> TimeNs {
        self.window_ms.max(1) * 1_000_000
    }
}

/// Counts of the current window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// SYNs to protected ports.
    pub syns: u64,
    /// Half-open sessions created.
    pub half_open_created: u64,
    /// Handshakes completed (half-open → established).
    pub handshakes_completed: u64,
    /// SYNs with a TTL never seen in a completed handshake.
    pub unknown_ttl: u64,
    /// Packets that reached the unmatched stage.
    pub unmatched: u64,
    /// SYNs from sources above their rate.
    pub surging: u64,
    /// Cookie SYN-ACKs sent.
    pub cookies: u64,
}

/// One entry of the mode timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ModeChange {
    /// When (virtual ns).
    pub time_ns: TimeNs,
    /// The mode bits from then on.
    pub bits: u8,
}

/// Mode state of one context.
#[derive(Clone, Debug)]
pub struct ModeState {
    settings: [ModeSetting; 4],
    bits: u8,
    last_trigger_ns: [TimeNs; 4],
    window_start_ns: TimeNs,
    /// `window_start_ns` + the window length once known (0 before the first packet): the
    /// per-packet check of [`ModeState::roll`] is one comparison.
    window_end_ns: TimeNs,
    /// Counts of the current window.
    pub counts: WindowCounts,
    timeline: Vec<ModeChange>,
    timeline_overflow: u64,
}

impl ModeState {
    /// Modes with these settings, forced ones applied from time 0.
    pub fn new(settings: [ModeSetting; 4]) -> Self {
        let bits = settings
            .iter()
            .zip(MODE_BITS)
            .filter(|(setting, _)| **setting == ModeSetting::On)
            .fold(0, |bits, (_, bit)| bits | bit);
        let timeline = if bits == 0 {
            Vec::new()
        } else {
            vec![ModeChange { time_ns: 0, bits }]
        };
        Self {
            settings,
            bits,
            last_trigger_ns: [0; 4],
            window_start_ns: 0,
            window_end_ns: 0,
            counts: WindowCounts::default(),
            timeline,
            timeline_overflow: 0,
        }
    }

    /// Current bits.
    #[inline]
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// True when the mode is on.
    #[inline]
    pub fn is_on(&self, mode: Mode) -> bool {
        self.bits & mode.bit() != 0
    }

    /// The mode changes so far.
    pub fn timeline(&self) -> &[ModeChange] {
        &self.timeline
    }

    /// Mode changes not kept because the timeline was full.
    pub fn timeline_overflow(&self) -> u64 {
        self.timeline_overflow
    }

    fn set(&mut self, now: TimeNs, mode: Mode, on: bool) {
        let bits = if on {
            self.bits | mode.bit()
        } else {
            self.bits & !mode.bit()
        };
        if bits == self.bits {
            return;
        }
        self.bits = bits;
        if self.timeline.len() < MODE_TIMELINE_CAPACITY {
            self.timeline.push(ModeChange { time_ns: now, bits });
        } else {
            self.timeline_overflow += 1;
        }
    }

    /// How `mode` is driven now.
    #[inline]
    pub fn setting(&self, mode: Mode) -> ModeSetting {
        self.settings[mode as usize]
    }

    /// Change how `mode` is driven at `now` (a runtime override): `On`/`Off` force the bit
    /// (recorded in the timeline at `now` when it changes); `Auto` hands it back to the
    /// measurements, the bit unchanged, a bit that is on counted as triggered at `now` (so
    /// it goes off only after [`Thresholds::hold_ms`] of quiet windows).
    pub fn override_setting(&mut self, now: TimeNs, mode: Mode, setting: ModeSetting) {
        self.settings[mode as usize] = setting;
        match setting {
            ModeSetting::On => self.set(now, mode, true),
            ModeSetting::Off => self.set(now, mode, false),
            ModeSetting::Auto => {
                if self.is_on(mode) {
                    self.last_trigger_ns[mode as usize] = now;
                }
            }
        }
    }

    /// A condition for `mode` held at `now`: switch it on if it is automatic.
    #[inline]
    pub fn trigger(&mut self, now: TimeNs, mode: Mode) {
        if self.settings[mode as usize] == ModeSetting::Auto {
            self.last_trigger_ns[mode as usize] = now;
            self.set(now, mode, true);
        }
    }

    /// Close the window if `now` is past it: judge the "off" conditions, start a new window.
    #[inline]
    pub fn roll(&mut self, now: TimeNs, thresholds: &Thresholds) {
        if now >= self.window_end_ns {
            self.roll_window(now, thresholds);
        }
    }

    #[inline(never)]
    fn roll_window(&mut self, now: TimeNs, thresholds: &Thresholds) {
        let window = thresholds.window_ns();
        self.window_end_ns = self.window_start_ns + window;
        if now < self.window_end_ns {
            return;
        }
        let counts = std::mem::take(&mut self.counts);
        let elapsed_windows = (now - self.window_start_ns) / window;
        // An idle gap of several windows counts as quiet windows.
        let quiet = if elapsed_windows > 1 {
            WindowCounts::default()
        } else {
            counts
        };
        // The window that just closed is judged as of its end.
        let closed_end_ns = self.window_start_ns + window;
        self.window_start_ns += elapsed_windows * window;
        if counts.half_open_created >= thresholds.half_open_min
            && half_open_percent(&counts) > thresholds.half_open_ratio_on_percent
        {
            self.trigger(closed_end_ns, Mode::SynCookies);
        }
        for mode in Mode::ALL {
            if self.is_on(mode)
                && self.settings[mode as usize] == ModeSetting::Auto
                && now >= self.last_trigger_ns[mode as usize] + thresholds.hold_ms * 1_000_000
                && below_off(mode, &quiet, thresholds)
            {
                self.set(now, mode, false);
            }
        }
        self.window_end_ns = self.window_start_ns + window;
    }
}

fn below_off(mode: Mode, counts: &WindowCounts, thresholds: &Thresholds) -> bool {
    let limit = |rate| thresholds.per_window(rate);
    match mode {
        Mode::SynCookies => {
            counts.syns < limit(thresholds.syn_rate_off)
                && half_open_percent(counts) < thresholds.half_open_ratio_off_percent
        }
        Mode::TtlFilter => counts.unknown_ttl < limit(thresholds.unknown_ttl_rate_off),
        Mode::UnmatchedDrop => counts.unmatched < limit(thresholds.unmatched_rate_off),
        Mode::Surge => counts.surging == 0,
    }
}

/// Percentage of half-open sessions created in the window that did not complete.
pub fn half_open_percent(counts: &WindowCounts) -> u64 {
    let created = counts.half_open_created;
    if created == 0 {
        return 0;
    }
    created.saturating_sub(counts.handshakes_completed) * 100 / created
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_mode_goes_on_at_once_and_off_after_hold() {
        let thresholds = Thresholds::default();
        let mut modes = ModeState::new([ModeSetting::Auto; 4]);
        modes.trigger(500_000_000, Mode::SynCookies);
        assert_eq!(modes.bits(), MODE_SYN_COOKIES);
        // Quiet windows, but the hold time has not passed.
        modes.roll(5_000_000_000, &thresholds);
        assert_eq!(modes.bits(), MODE_SYN_COOKIES);
        modes.roll(11_000_000_000, &thresholds);
        assert_eq!(modes.bits(), 0);
        assert_eq!(
            modes.timeline(),
            &[
                ModeChange {
                    time_ns: 500_000_000,
                    bits: 1
                },
                ModeChange {
                    time_ns: 11_000_000_000,
                    bits: 0
                }
            ]
        );
    }

    #[test]
    fn forced_modes_ignore_measurements() {
        let thresholds = Thresholds::default();
        let mut modes = ModeState::new([
            ModeSetting::On,
            ModeSetting::Off,
            ModeSetting::Auto,
            ModeSetting::Auto,
        ]);
        modes.trigger(1, Mode::TtlFilter);
        modes.roll(100_000_000_000, &thresholds);
        assert_eq!(modes.bits(), MODE_SYN_COOKIES);
    }
}
