//! Runtime protection-mode overrides: force a mode of some contexts on or off, or hand it
//! back to the measurements, at a virtual time `now` (the control plane's "force SYN cookies
//! on for 192.0.2.10" while traffic flows).
//!
//! A target names instances ([`InstanceScope`]) and a context within each
//! ([`ContextScope`]); [`Shield::override_modes`] applies a [`ModeSetting`] to the chosen
//! mode bits of every matching context and records the bit changes in each context's mode
//! timeline at `now`. This module does not look at packets and does not change the compiled
//! tables: only the per-context mode state.

use std::fmt;
use std::net::IpAddr;

use super::modes::{Mode, ModeSetting};
use super::{ContextId, Shield};
use crate::packet::IfaceId;
use crate::verdict::TimeNs;

/// Which instances an override applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceScope {
    /// Every instance.
    All,
    /// The instance at this index (0 = `[shield]`, 1 = `[[shield.instance]]` 0, ...).
    Instance(usize),
    /// The instance filtering this interface.
    Interface(IfaceId),
}

/// Which context of an instance an override applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextScope {
    /// The default context.
    Default,
    /// The context configured with exactly this selector (`dst`, or `dst` + `vlan`).
    Selector {
        /// Destination address of the context.
        dst: IpAddr,
        /// Its VLAN id, for a `dst + vlan` context.
        vlan: Option<u16>,
    },
    /// Every context configured for this destination, with or without a VLAN.
    Destination(IpAddr),
}

/// Why an override applied to nothing, or could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeOverrideError {
    /// `modes` held no mode bit, or bits above `0x8`.
    BadModeBits(u8),
    /// No instance matches the instance scope.
    NoSuchInstance(InstanceScope),
    /// No context of the chosen instances matches the context scope.
    NoSuchContext(ContextScope),
}

impl fmt::Display for ModeOverrideError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadModeBits(bits) => write!(
                formatter,
                "mode bits {bits:#x} name no mode (0x1 syn cookies, 0x2 ttl filter, 0x4 unmatched drop, 0x8 surge)"
            ),
            Self::NoSuchInstance(scope) => write!(formatter, "no shield instance for {scope:?}"),
            Self::NoSuchContext(ContextScope::Default) => {
                write!(formatter, "no default context")
            }
            Self::NoSuchContext(ContextScope::Selector { dst, vlan: None }) => {
                write!(formatter, "no shield context for {dst}")
            }
            Self::NoSuchContext(ContextScope::Selector {
                dst,
                vlan: Some(vlan),
            }) => write!(formatter, "no shield context for {dst} vlan {vlan}"),
            Self::NoSuchContext(ContextScope::Destination(dst)) => {
                write!(formatter, "no shield context for {dst} (any vlan)")
            }
        }
    }
}

impl std::error::Error for ModeOverrideError {}

impl Shield {
    /// The contexts a target names, in context order.
    pub fn find_contexts(
        &self,
        instances: InstanceScope,
        context: ContextScope,
    ) -> Result<Vec<ContextId>, ModeOverrideError> {
        let chosen: Vec<usize> = match instances {
            InstanceScope::All => (0..self.instances.len()).collect(),
            InstanceScope::Instance(index) => (index < self.instances.len())
                .then_some(index)
                .into_iter()
                .collect(),
            InstanceScope::Interface(iface) => self
                .instance_of(iface)
                .map(usize::from)
                .into_iter()
                .collect(),
        };
        if chosen.is_empty() {
            return Err(ModeOverrideError::NoSuchInstance(instances));
        }
        let mut found = Vec::new();
        for instance in chosen {
            let base = self.context_base[instance];
            let tables = &self.instances[instance];
            found.extend(
                tables
                    .selectors
                    .matching(context)
                    .map(|local| ContextId(base + u32::from(local))),
            );
        }
        if found.is_empty() {
            return Err(ModeOverrideError::NoSuchContext(context));
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Force the modes in `modes` (status bits, e.g. `MODE_SYN_COOKIES | MODE_SURGE`) to
    /// `setting` in every context the target names, at `now`; the contexts changed.
    ///
    /// `On`/`Off` force the bit and keep it forced whatever the measurements say; `Auto`
    /// hands it back to the measurements (see [`super::modes::ModeState::override_setting`]).
    /// Bit changes enter each context's [`Shield::mode_timeline`] at `now`.
    pub fn override_modes(
        &mut self,
        now: TimeNs,
        instances: InstanceScope,
        context: ContextScope,
        modes: u8,
        setting: ModeSetting,
    ) -> Result<Vec<ContextId>, ModeOverrideError> {
        if modes == 0 || modes & !0x0f != 0 {
            return Err(ModeOverrideError::BadModeBits(modes));
        }
        let contexts = self.find_contexts(instances, context)?;
        for id in &contexts {
            self.set_context_modes(now, *id, modes, setting);
        }
        Ok(contexts)
    }

    /// Apply `setting` to the modes in `modes` (status bits) of one context at `now`.
    pub fn set_context_modes(
        &mut self,
        now: TimeNs,
        context: ContextId,
        modes: u8,
        setting: ModeSetting,
    ) {
        let Some(state) = self.state.contexts.get_mut(context.0 as usize) else {
            return;
        };
        for mode in Mode::ALL {
            if modes & mode.bit() != 0 {
                state.modes.override_setting(now, mode, setting);
            }
        }
        state.counters.mode_bits = state.modes.bits();
    }

    /// How a mode of a context is driven now (configuration, or the last override).
    pub fn mode_setting(&self, context: ContextId, mode: Mode) -> ModeSetting {
        self.state.contexts[context.0 as usize].modes.setting(mode)
    }
}
