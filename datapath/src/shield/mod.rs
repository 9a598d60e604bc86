//! PacketShield: the first stage of the pipeline, run on every packet of an interface that
//! has a shield instance.
//!
//! ## Model
//! - **Instances** belong to interfaces ([`config::ShieldConfig`] `interfaces`); each has a
//!   **default context** and up to [`MAX_CONTEXTS_PER_INSTANCE`] contexts selected by
//!   destination IP, or destination IP + innermost VLAN id ([`PacketMeta::inner_vlan`]).
//!   `dst + vlan` wins over `dst` alone, which wins over the default context. A context
//!   does not inherit the default context's lists or ports.
//! - **Stages**, first match ends (see [`Shield::process`]):
//!   1. invalid packets → drop `invalid:<reason>`;
//!   2. source denylist → drop `denylist` (a source also on the allowlist is not denied);
//!   3. allowlists (source prefix, protocol, destination TCP port, destination UDP port)
//!      → pass;
//!   4. protected TCP ports: known sessions pass; a SYN is checked against the surge limit
//!      and the unknown-TTL filter (when those modes are on), then answered with a SYN
//!      cookie (when that mode is on) or passed and remembered as half-open; an ACK that
//!      completes a cookie handshake starts the **SYN proxy** ([`proxy`]); anything else
//!      without a session → drop `no_session`;
//!   5. everything else → pass, or drop `unmatched` when that mode is on.
//! - **Modes** ([`modes`]) switch automatically on measured rates, or are forced (in the
//!   configuration, or at run time with [`Shield::override_modes`], see [`overrides`]).
//! - **Tables**: the known-session and per-source tables are bounded ([`table`]); their
//!   overflow policies are documented on [`SESSION_TABLE_CAPACITY`] and
//!   [`SOURCE_TABLE_CAPACITY`].
//!
//! The shield is a pure function of (tables, state, `now`, frame): no clock, no ambient
//! randomness (cookie secrets and table hash keys come from the seed given to [`build`]).
//! It does not route, does not reassemble fragments, and does not parse packets itself:
//! it reads the [`PacketMeta`] the parser produced.

pub mod config;
pub mod cookie;
pub mod counters;
pub mod emit;
pub mod lists;
pub mod modes;
pub mod overrides;
mod proxy;
mod run;
mod stages;
pub mod table;

use std::net::IpAddr;
use std::ops::ControlFlow;

use crate::packet::{IfaceId, PacketMeta};
use crate::verdict::{TimeNs, Verdict};

pub use config::{
    BadCookieAction, ContextConfig, InstanceConfig, MAX_CONTEXTS_PER_INSTANCE,
    SESSION_TABLE_CAPACITY, SOURCE_TABLE_CAPACITY, ShieldConfig, ShieldConfigError,
};
pub use counters::{ContextCounters, TableStats};
pub use emit::{EmitBuffer, EmittedFrame, Toward};
pub use modes::{
    MODE_SURGE, MODE_SYN_COOKIES, MODE_TTL_FILTER, MODE_UNMATCHED_DROP, Mode, ModeChange,
    ModeSetting, Thresholds,
};
pub use overrides::{ContextScope, InstanceScope, ModeOverrideError};

use config::InstanceTables;
use cookie::SynCookies;
use modes::ModeState;
use table::BoundedTable;

/// A half-open session (SYN passed, handshake not completed) is forgotten after this long.
pub const HALF_OPEN_TIMEOUT_NS: TimeNs = 30_000_000_000;
/// An established session idle this long is forgotten.
pub const ESTABLISHED_TIMEOUT_NS: TimeNs = 300_000_000_000;
/// A session that saw FIN or RST is forgotten after this long.
pub const CLOSING_TIMEOUT_NS: TimeNs = 10_000_000_000;
/// A proxied connection whose server did not answer the proxy's SYN is forgotten after this.
pub const PROXY_SYN_TIMEOUT_NS: TimeNs = 5_000_000_000;

/// A context: flat index over all instances (see [`Shield::contexts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContextId(pub u32);

/// The 4-tuple of a TCP connection in the client → server direction: the key of the
/// shield's known-session table and what a SYN cookie is bound to (see [`cookie`]).
///
/// Not [`crate::packet::flow::FlowKey`], on purpose: the shield sees TCP only (no protocol
/// field), the key is always oriented client → server (a server's segment is looked up
/// [`reversed`](Self::reversed)), and its derived `Hash` bytes (addresses, then ports) place
/// sessions in the keyed [`BoundedTable`], whose buckets decide which session an overflow
/// evicts, and feed the cookie hash: a different byte layout would change both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// Client address.
    pub src: IpAddr,
    /// Server (protected) address.
    pub dst: IpAddr,
    /// Client port.
    pub sport: u16,
    /// Server port.
    pub dport: u16,
}

impl SessionKey {
    /// The key of a parsed TCP segment as it travels (client → server for a client's).
    #[inline]
    pub fn of(meta: &PacketMeta) -> Option<Self> {
        Some(Self {
            src: meta.src?,
            dst: meta.dst?,
            sport: meta.sport?,
            dport: meta.dport?,
        })
    }

    /// The same connection seen from the other end.
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// Per-source key of the source table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SourceKey {
    pub context: ContextId,
    pub src: IpAddr,
}

/// Per-source SYN rate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SourceEntry {
    pub window_start_ns: TimeNs,
    pub syns: u64,
    pub last_seen_ns: TimeNs,
}

/// Where a known session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionState {
    HalfOpen,
    Established,
    Closing,
    ProxySynSent,
    Proxied,
}

/// A known session.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub context: ContextId,
    pub state: SessionState,
    pub last_seen_ns: TimeNs,
    pub proxy: Option<Box<proxy::ProxyState>>,
}

impl Session {
    pub fn expired(&self, now: TimeNs) -> bool {
        let timeout = match self.state {
            SessionState::HalfOpen => HALF_OPEN_TIMEOUT_NS,
            SessionState::Established | SessionState::Proxied => ESTABLISHED_TIMEOUT_NS,
            SessionState::Closing => CLOSING_TIMEOUT_NS,
            SessionState::ProxySynSent => PROXY_SYN_TIMEOUT_NS,
        };
        now.saturating_sub(self.last_seen_ns) > timeout
    }
}

/// Mutable state of one context.
#[derive(Clone, Debug)]
pub(crate) struct ContextState {
    pub counters: ContextCounters,
    pub modes: ModeState,
    /// TTL values seen in completed handshakes (a 256-bit set).
    pub ttl_seen: [u64; 4],
    /// True once `ttl_seen` holds a value (checked on every SYN).
    pub ttl_any: bool,
}

impl ContextState {
    pub fn ttl_known(&self, ttl: u8) -> bool {
        self.ttl_seen[usize::from(ttl / 64)] & (1 << (ttl % 64)) != 0
    }

    pub fn learn_ttl(&mut self, ttl: u8) {
        self.ttl_seen[usize::from(ttl / 64)] |= 1 << (ttl % 64);
        self.ttl_any = true;
    }

    #[inline]
    pub fn any_ttl_known(&self) -> bool {
        self.ttl_any
    }
}

/// Everything mutable.
#[derive(Clone, Debug)]
pub(crate) struct State {
    pub contexts: Vec<ContextState>,
    pub cookies: SynCookies,
    pub sessions: BoundedTable<SessionKey, Session>,
    pub sources: BoundedTable<SourceKey, SourceEntry>,
    pub sessions_refused: u64,
    pub sources_evicted: u64,
    /// QA: the session / source tables refuse new entries as if full.
    pub qa_full: (bool, bool),
    /// Live sessions with proxy state (server-side lookups are skipped while zero).
    pub proxied: usize,
}

/// The shield: compiled tables of every instance and their state.
#[derive(Clone, Debug)]
pub struct Shield {
    instances: Vec<InstanceTables>,
    /// First flat context index of each instance.
    context_base: Vec<u32>,
    /// Instance of each interface index.
    iface_instance: Vec<Option<u16>>,
    /// Without interface names, the first instance filters every interface.
    every_iface: bool,
    ethernet: bool,
    state: State,
}

/// Build a shield from its configuration. `seed` keys the SYN cookies and table hashes;
/// `iface_names[i]` is the name of interface `i` ([`PacketMeta::iface`]). With no names,
/// the first instance filters every interface.
pub fn build(
    config: &ShieldConfig,
    seed: u64,
    iface_names: &[&str],
) -> Result<Shield, ShieldConfigError> {
    let session_capacity = table_capacity(
        config.session_table_capacity,
        SESSION_TABLE_CAPACITY,
        "session",
    )?;
    let source_capacity = table_capacity(
        config.source_table_capacity,
        SOURCE_TABLE_CAPACITY,
        "source",
    )?;
    let main = config.main_instance();
    let mut named = vec![("shield".to_string(), &main)];
    for (index, instance) in config.instance.iter().enumerate() {
        named.push((format!("shield.instance[{index}]"), instance));
    }
    let iface_instance = config::assign_interfaces(&named, iface_names)?;
    let mut instances = Vec::new();
    let mut contexts = Vec::new();
    let mut context_base = Vec::new();
    for (name, instance) in &named {
        let tables = config::compile_instance(instance, name.clone())?;
        context_base.push(contexts.len() as u32);
        for context in &tables.contexts {
            contexts.push(ContextState {
                counters: ContextCounters::default(),
                modes: ModeState::new(context.settings),
                ttl_seen: [0; 4],
                ttl_any: false,
            });
        }
        instances.push(tables);
    }
    for context in &mut contexts {
        context.counters.mode_bits = context.modes.bits();
    }
    Ok(Shield {
        instances,
        context_base,
        iface_instance,
        every_iface: iface_names.is_empty(),
        ethernet: true,
        state: State {
            contexts,
            cookies: SynCookies::new(seed),
            sessions: BoundedTable::new(session_capacity, seed ^ 0x5e55_1095),
            sources: BoundedTable::new(source_capacity, seed ^ 0x0501_7ce5),
            sessions_refused: 0,
            sources_evicted: 0,
            qa_full: (false, false),
            proxied: 0,
        },
    })
}

fn table_capacity(
    configured: Option<usize>,
    default: usize,
    which: &'static str,
) -> Result<usize, ShieldConfigError> {
    let capacity = configured.unwrap_or(default);
    if !(config::MIN_TABLE_CAPACITY..=config::MAX_TABLE_CAPACITY).contains(&capacity) {
        return Err(ShieldConfigError::OutOfRange {
            at: "shield".into(),
            key: if which == "session" {
                "session_table_capacity"
            } else {
                "source_table_capacity"
            },
            value: capacity as u64,
            range: format!(
                "{}..={}",
                config::MIN_TABLE_CAPACITY,
                config::MAX_TABLE_CAPACITY
            ),
        });
    }
    Ok(capacity)
}

impl Shield {
    /// Run the shield on one frame.
    ///
    /// `frame` is the whole frame `meta` was parsed from; segments of proxied connections
    /// are rewritten in place (sequence numbers, timestamps, checksum). `emit` is cleared,
    /// then receives the frames the shield sends itself (cookie SYN-ACK, RST, the proxy's
    /// SYN and ACKs), each with its interface and direction; reuse one buffer across calls.
    ///
    /// Returns `Continue(())` when the packet passes on to the next stage (passed,
    /// allowlisted, known or proxied session, unmatched pass), `Break(Verdict::Drop(_))`
    /// when dropped (frames may still have been emitted: the RST of `bad_cookie = "rst"`),
    /// and `Break(Verdict::Reply)` when the shield consumed it and answered. Frames on
    /// interfaces without a shield instance pass untouched. The drop path does not
    /// allocate.
    pub fn process(
        &mut self,
        now: TimeNs,
        frame: &mut [u8],
        meta: &PacketMeta,
        emit: &mut EmitBuffer,
    ) -> ControlFlow<Verdict> {
        emit.clear();
        if self.state.proxied > 0
            && meta.invalid.is_none()
            && meta.is_tcp()
            && let Some((context, flow)) = self.server_side(now, frame, meta, emit)
        {
            self.state.count(context, flow);
            return flow;
        }
        let Some(instance) = self.instance_of(meta.iface) else {
            return ControlFlow::Continue(());
        };
        let context = self.select_in(instance, meta);
        let tables = &self.instances[usize::from(instance)];
        let local = (context.0 - self.context_base[usize::from(instance)]) as usize;
        let mut run = run::Run {
            now,
            id: context,
            instance: tables,
            context: &tables.contexts[local],
            state: &mut self.state,
            ethernet: self.ethernet,
        };
        let flow = run.stages(frame, meta, emit);
        self.state.count(context, flow);
        flow
    }

    fn server_side(
        &mut self,
        now: TimeNs,
        frame: &mut [u8],
        meta: &PacketMeta,
        emit: &mut EmitBuffer,
    ) -> Option<(ContextId, ControlFlow<Verdict>)> {
        let key = SessionKey::of(meta)?.reversed();
        let index = self.state.sessions.find(&key)?;
        let session = self.state.sessions.get(index)?;
        session.proxy.as_ref()?;
        let context = session.context;
        let flow = proxy::server_segment(
            &mut self.state,
            index,
            now,
            frame,
            meta,
            emit,
            self.ethernet,
        );
        Some((context, flow))
    }

    /// Frames are Ethernet (default) or not (raw IP, cooked captures: replies then copy
    /// the link header unchanged, or have none for raw IP).
    pub fn set_ethernet(&mut self, ethernet: bool) {
        self.ethernet = ethernet;
    }

    #[inline]
    fn instance_of(&self, iface: IfaceId) -> Option<u16> {
        match self.iface_instance.get(usize::from(iface)) {
            Some(owner) => *owner,
            None if self.every_iface => Some(0),
            None => None,
        }
    }

    fn instance_of_context(&self, context: ContextId) -> usize {
        self.context_base
            .iter()
            .rposition(|base| *base <= context.0)
            .unwrap_or(0)
    }

    #[inline(always)]
    fn select_in(&self, instance: u16, meta: &PacketMeta) -> ContextId {
        let tables = &self.instances[usize::from(instance)];
        let base = self.context_base[usize::from(instance)];
        if tables.selectors.is_empty() {
            return ContextId(base);
        }
        let local = meta
            .dst
            .and_then(|dst| tables.selectors.select(dst, meta.inner_vlan()));
        ContextId(base + u32::from(local.unwrap_or(0)))
    }

    /// The context a packet is processed in, or `None` on an interface without a shield.
    pub fn select(&self, meta: &PacketMeta) -> Option<ContextId> {
        self.instance_of(meta.iface)
            .map(|instance| self.select_in(instance, meta))
    }

    /// Every context, in instance order, each instance's default context first.
    pub fn contexts(&self) -> impl Iterator<Item = ContextId> + '_ {
        (0..self.state.contexts.len() as u32).map(ContextId)
    }

    /// `<instance>/<context label>`, e.g. `shield/default` or `shield/192.0.2.10 vlan 100`.
    pub fn context_name(&self, context: ContextId) -> String {
        let instance = self.instance_of_context(context);
        let local = (context.0 - self.context_base[instance]) as usize;
        let tables = &self.instances[instance];
        format!("{}/{}", tables.name, tables.contexts[local].label)
    }

    /// Counters of a context.
    pub fn counters(&self, context: ContextId) -> &ContextCounters {
        &self.state.contexts[context.0 as usize].counters
    }

    /// Current mode bits of a context.
    pub fn mode_bits(&self, context: ContextId) -> u8 {
        self.state.contexts[context.0 as usize].modes.bits()
    }

    /// Mode changes of a context: `(time, bits)` from the start (forced modes at time 0).
    pub fn mode_timeline(&self, context: ContextId) -> &[ModeChange] {
        self.state.contexts[context.0 as usize].modes.timeline()
    }

    /// QA: make the known-session table (`sessions`) and the per-source table (`sources`)
    /// behave as if full with nothing to reclaim: a new session is refused
    /// (`sessions_refused`), a new source is not kept (counted in `sources_evicted`).
    pub fn set_tables_report_full(&mut self, sessions: bool, sources: bool) {
        self.state.qa_full = (sessions, sources);
    }

    /// Occupancy and overflow of the bounded tables.
    pub fn table_stats(&self) -> TableStats {
        TableStats {
            sessions: self.state.sessions.len(),
            sessions_capacity: self.state.sessions.capacity(),
            sessions_high_water: self.state.sessions.high_water(),
            sessions_refused: self.state.sessions_refused,
            sources: self.state.sources.len(),
            sources_capacity: self.state.sources.capacity(),
            sources_high_water: self.state.sources.high_water(),
            sources_evicted: self.state.sources_evicted,
            state_bytes: self.state.sessions.slot_bytes()
                + self.state.sources.slot_bytes()
                + self.state.proxied * std::mem::size_of::<proxy::ProxyState>()
                + self
                    .state
                    .contexts
                    .iter()
                    .map(|c| {
                        std::mem::size_of::<ContextState>()
                            + std::mem::size_of_val(c.modes.timeline())
                    })
                    .sum::<usize>(),
        }
    }
}

impl State {
    #[inline]
    fn count(&mut self, context: ContextId, flow: ControlFlow<Verdict>) {
        let state = &mut self.contexts[context.0 as usize];
        let counters = &mut state.counters;
        match flow {
            ControlFlow::Continue(()) | ControlFlow::Break(Verdict::Pass) => counters.passed += 1,
            ControlFlow::Break(Verdict::Drop(reason)) => counters.count_drop(reason),
            ControlFlow::Break(Verdict::Reply | Verdict::Forward) => counters.replied += 1,
        }
        counters.mode_bits = state.modes.bits();
    }
}
