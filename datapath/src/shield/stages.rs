//! The stages of one context, in order, for one client-side packet: invalid → denylist →
//! allowlists → protected TCP ports → unmatched. Each returns `ControlFlow`; the first
//! `Break` ends processing. Counting of the final verdict is done by the caller; this module
//! counts only events (allowlisted, cookies, sessions). The server side of proxied
//! connections is in [`super::proxy`].

use std::ops::ControlFlow::{self, Break, Continue};

use super::config::BadCookieAction;
use super::cookie::{CookieError, CookieOptions, SynCookies};
use super::emit::{
    EmitBuffer, LinkHeader, Segment, SegmentOptions, SynAckFields, Toward, write_segment,
};
use super::modes::{Mode, ModeSetting};
use super::run::Run;
use super::table::{Placed, Victim};
use super::{Session, SessionKey, SessionState, SourceEntry, SourceKey, State, proxy};
use crate::packet::{PacketMeta, ip_proto, tcp_flags};
use crate::verdict::{DropReason, TimeNs, Verdict};

type Flow = ControlFlow<Verdict>;

fn drop(reason: DropReason) -> Flow {
    Break(Verdict::Drop(reason))
}

impl Run<'_> {
    /// All stages.
    pub fn stages(&mut self, frame: &mut [u8], meta: &PacketMeta, emit: &mut EmitBuffer) -> Flow {
        let (now, thresholds) = (self.now, &self.instance.thresholds);
        self.state.contexts[self.id.0 as usize]
            .modes
            .roll(now, thresholds);
        if let Some(reason) = meta.invalid {
            return drop(DropReason::Invalid(reason));
        }
        if let Some(src) = meta.src {
            if self.context.has_lists {
                if self.context.deny.contains(src) && !self.context.allow_src.contains(src) {
                    return drop(DropReason::Denylist);
                }
                if self.allowlisted(meta, src) {
                    self.context_state().counters.allowlisted += 1;
                    return Continue(());
                }
            }
            if self.protected(meta) {
                return self.protect(frame, meta, emit);
            }
        }
        self.unmatched()
    }

    fn allowlisted(&self, meta: &PacketMeta, src: std::net::IpAddr) -> bool {
        let context = self.context;
        context.allow_src.contains(src)
            || meta
                .proto
                .is_some_and(|proto| context.allow_proto.contains(u16::from(proto)))
            || match (meta.proto, meta.dport) {
                (Some(ip_proto::TCP), Some(port)) => context.allow_tcp_ports.contains(port),
                (Some(ip_proto::UDP), Some(port)) => context.allow_udp_ports.contains(port),
                _ => false,
            }
    }

    fn protected(&self, meta: &PacketMeta) -> bool {
        meta.is_tcp()
            && meta
                .dport
                .is_some_and(|port| self.context.protected_tcp_ports.contains(port))
    }

    fn unmatched(&mut self) -> Flow {
        let (now, limit) = (self.now, self.instance.limits.unmatched);
        let modes = &mut self.context_state().modes;
        modes.counts.unmatched += 1;
        if modes.counts.unmatched > limit {
            modes.trigger(now, Mode::UnmatchedDrop);
        }
        if modes.is_on(Mode::UnmatchedDrop) {
            drop(DropReason::Unmatched)
        } else {
            Continue(())
        }
    }

    /// Stage 4: a TCP packet to a protected port.
    fn protect(&mut self, frame: &mut [u8], meta: &PacketMeta, emit: &mut EmitBuffer) -> Flow {
        let Some(key) = SessionKey::of(meta) else {
            return drop(DropReason::NoSession);
        };
        if let Some(index) = self.state.sessions.find(&key) {
            let expired = self
                .state
                .sessions
                .get(index)
                .is_none_or(|session| session.expired(self.now));
            if !expired {
                return self.known_session(index, frame, meta);
            }
            if let Some(old) = self.state.sessions.remove(index) {
                self.state.forget(old, false);
            }
        }
        if meta.is_syn() {
            return self.new_syn(key, frame, meta, emit);
        }
        let flags = meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST);
        if flags == tcp_flags::ACK {
            return self.cookie_ack(key, frame, meta, emit);
        }
        drop(DropReason::NoSession)
    }

    fn known_session(&mut self, index: usize, frame: &mut [u8], meta: &PacketMeta) -> Flow {
        let now = self.now;
        let Some(session) = self.state.sessions.get_mut(index) else {
            return drop(DropReason::NoSession);
        };
        session.last_seen_ns = now;
        let flags = meta.tcp_flags;
        if let Some(proxy) = session.proxy.as_deref_mut() {
            if session.state == SessionState::ProxySynSent {
                return drop(DropReason::NoSession);
            }
            proxy.client_to_server(frame, meta);
        } else if session.state == SessionState::HalfOpen
            && flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::ACK
        {
            session.state = SessionState::Established;
            let context = self.context_state();
            context.modes.counts.handshakes_completed += 1;
            context.learn_ttl(meta.ttl);
        }
        if flags & (tcp_flags::FIN | tcp_flags::RST) != 0
            && let Some(session) = self.state.sessions.get_mut(index)
        {
            session.state = SessionState::Closing;
        }
        Continue(())
    }

    /// A SYN without a session: surge limit, TTL filter, then cookie or half-open entry.
    fn new_syn(
        &mut self,
        key: SessionKey,
        frame: &mut [u8],
        meta: &PacketMeta,
        emit: &mut EmitBuffer,
    ) -> Flow {
        let (now, syn_limit) = (self.now, self.instance.limits.syns);
        let modes = &mut self.state.contexts[self.id.0 as usize].modes;
        modes.counts.syns += 1;
        if modes.counts.syns > syn_limit {
            modes.trigger(now, Mode::SynCookies);
        }
        if let Some(flow) = self.surge(key) {
            return flow;
        }
        if let Some(flow) = self.ttl_filter(meta) {
            return flow;
        }
        if self.context_state().modes.is_on(Mode::SynCookies) {
            return self.send_cookie(key, frame, meta, emit);
        }
        self.half_open(key)
    }

    fn surge(&mut self, key: SessionKey) -> Option<Flow> {
        if self.state.contexts[self.id.0 as usize]
            .modes
            .setting(Mode::Surge)
            == ModeSetting::Off
        {
            return None;
        }
        let (now, limits) = (self.now, self.instance.limits);
        let window = limits.window_ns;
        let source_key = SourceKey {
            context: self.id,
            src: key.src,
        };
        let syns = self.state.source_syn(source_key, now, window);
        if syns <= limits.source_syns {
            return None;
        }
        let modes = &mut self.context_state().modes;
        modes.counts.surging += 1;
        modes.trigger(now, Mode::Surge);
        modes.is_on(Mode::Surge).then(|| drop(DropReason::Rate))
    }

    fn ttl_filter(&mut self, meta: &PacketMeta) -> Option<Flow> {
        let (now, limit) = (self.now, self.instance.limits.unknown_ttl);
        let context = self.context_state();
        if !context.any_ttl_known() || context.ttl_known(meta.ttl) {
            return None;
        }
        context.modes.counts.unknown_ttl += 1;
        if context.modes.counts.unknown_ttl > limit {
            context.modes.trigger(now, Mode::TtlFilter);
        }
        context
            .modes
            .is_on(Mode::TtlFilter)
            .then(|| drop(DropReason::Ttl))
    }

    fn half_open(&mut self, key: SessionKey) -> Flow {
        let session = Session {
            context: self.id,
            state: SessionState::HalfOpen,
            last_seen_ns: self.now,
            proxy: None,
        };
        if !self.state.insert_session(key, session, self.now) {
            return drop(DropReason::TableFull);
        }
        let context = self.context_state();
        context.modes.counts.half_open_created += 1;
        context.counters.sessions_created += 1;
        Continue(())
    }

    fn send_cookie(
        &mut self,
        key: SessionKey,
        frame: &[u8],
        meta: &PacketMeta,
        emit: &mut EmitBuffer,
    ) -> Flow {
        let cookie_limit = self.instance.limits.cookies;
        if self.context_state().modes.counts.cookies >= cookie_limit {
            return drop(DropReason::Rate);
        }
        let Some(tcp) = meta.tcp else {
            return drop(DropReason::NoSession);
        };
        let flow = key;
        // As nft synproxy: no MSS option encodes index 0 (536, IPv6 1220), the kernel's
        // `__cookie_v4_init_sequence` with MSS 0.
        let offered_mss = tcp.options.mss.unwrap_or(0);
        let (cookie, _) = self
            .state
            .cookies
            .generate(self.now, &flow, tcp.seq, offered_mss);
        let mut fields = SynAckFields {
            src: key.dst,
            dst: key.src,
            sport: key.dport,
            dport: key.sport,
            seq: cookie,
            ack: tcp.seq.wrapping_add(1),
            mss: tcp.options.mss.is_some(),
            timestamps: None,
            sack_permitted: false,
            window_scale: false,
        };
        // Window scale and SACK only through the timestamp; ECN never: nft synproxy sets
        // its ECN bit from ECE+CWR, then masks it off with the rule's flags, which cannot
        // hold it (`NF_SYNPROXY_OPT_MASK`), so no ECE and no timestamp bit 5.
        if let Some((tsval, _)) = tcp.options.timestamps {
            let kept = CookieOptions {
                window_scale: tcp.options.window_scale,
                sack_permitted: tcp.options.sack_permitted,
                ecn: false,
            };
            fields.timestamps = Some((SynCookies::timestamp(self.now, kept), tsval));
            fields.sack_permitted = kept.sack_permitted;
            fields.window_scale = kept.window_scale.is_some();
        }
        let link = self.reply_link(frame, meta);
        let out = emit.next(meta.iface, Toward::Client);
        self.instance.syn_ack.write(out, link, &fields);
        let context = self.context_state();
        context.modes.counts.cookies += 1;
        context.counters.cookies_sent += 1;
        Break(Verdict::Reply)
    }

    fn reply_link<'f>(&self, frame: &'f [u8], meta: &PacketMeta) -> LinkHeader<'f> {
        let end = usize::from(meta.l3_offset).min(frame.len());
        LinkHeader {
            bytes: &frame[..end],
            swap_macs: true,
            ethernet: self.ethernet,
        }
    }

    /// A pure ACK without a session: the third packet of a cookie handshake, or not.
    fn cookie_ack(
        &mut self,
        key: SessionKey,
        frame: &[u8],
        meta: &PacketMeta,
        emit: &mut EmitBuffer,
    ) -> Flow {
        let Some(tcp) = meta.tcp else {
            return drop(DropReason::NoSession);
        };
        let client_isn = tcp.seq.wrapping_sub(1);
        let cookie = tcp.ack.wrapping_sub(1);
        let checked = self.state.cookies.check(self.now, &key, client_isn, cookie);
        match checked {
            Ok(mss) => {
                self.context_state().counters.cookies_validated += 1;
                proxy::open(self, key, mss, frame, meta, emit)
            }
            Err(_) if !self.context_state().modes.is_on(Mode::SynCookies) => {
                drop(DropReason::NoSession)
            }
            Err(error) => self.refuse_cookie(error, key, frame, meta, emit),
        }
    }

    fn refuse_cookie(
        &mut self,
        error: CookieError,
        key: SessionKey,
        frame: &[u8],
        meta: &PacketMeta,
        emit: &mut EmitBuffer,
    ) -> Flow {
        if self.instance.bad_cookie == BadCookieAction::Rst
            && let Some(tcp) = meta.tcp
        {
            let segment = Segment {
                src: key.dst,
                dst: key.src,
                sport: key.dport,
                dport: key.sport,
                seq: tcp.ack,
                ack: 0,
                flags: tcp_flags::RST,
                window: 0,
                ttl: 64,
                options: SegmentOptions::default(),
            };
            let link = self.reply_link(frame, meta);
            write_segment(emit.next(meta.iface, Toward::Client), link, &segment);
            self.context_state().counters.rst_sent += 1;
        }
        drop(match error {
            CookieError::Bad => DropReason::BadCookie,
            CookieError::Stale => DropReason::StaleCookie,
        })
    }
}

impl State {
    /// Count a SYN from a source; its SYNs in the current window.
    fn source_syn(&mut self, key: SourceKey, now: TimeNs, window_ns: TimeNs) -> u64 {
        let bucket = self.sources.bucket_of(&key);
        if let Some(index) = self.sources.find_in(bucket, &key)
            && let Some(entry) = self.sources.get_mut(index)
        {
            if now >= entry.window_start_ns + window_ns {
                entry.window_start_ns = now;
                entry.syns = 0;
            }
            entry.syns += 1;
            entry.last_seen_ns = now;
            return entry.syns;
        }
        if self.qa_full.1 {
            self.sources_evicted += 1;
            return 1;
        }
        let entry = SourceEntry {
            window_start_ns: now,
            syns: 1,
            last_seen_ns: now,
        };
        let policy = |old: &SourceEntry| {
            if now >= old.last_seen_ns + window_ns {
                Victim::Reclaim
            } else {
                Victim::Evict(old.last_seen_ns)
            }
        };
        if let Ok(Placed::Evicted(..)) = self.sources.insert_in(bucket, key, entry, policy) {
            self.sources_evicted += 1;
        }
        1
    }

    /// Insert a session: reclaim an expired slot, else evict the oldest half-open one,
    /// else refuse (false).
    pub(crate) fn insert_session(
        &mut self,
        key: SessionKey,
        session: Session,
        now: TimeNs,
    ) -> bool {
        if self.qa_full.0 {
            self.sessions_refused += 1;
            return false;
        }
        let policy = |old: &Session| {
            if old.expired(now) {
                Victim::Reclaim
            } else if matches!(
                old.state,
                SessionState::HalfOpen | SessionState::ProxySynSent
            ) {
                Victim::Evict(old.last_seen_ns)
            } else {
                Victim::Keep
            }
        };
        match self.sessions.insert(key, session, policy) {
            Ok(Placed::Empty(_)) => true,
            Ok(Placed::Reclaimed(_, old)) => {
                self.forget(old, false);
                true
            }
            Ok(Placed::Evicted(_, old)) => {
                self.forget(old, true);
                true
            }
            Err(_) => {
                self.sessions_refused += 1;
                false
            }
        }
    }

    /// Account for a session leaving the table.
    pub(crate) fn forget(&mut self, old: Session, evicted: bool) {
        if old.proxy.is_some() {
            self.proxied = self.proxied.saturating_sub(1);
        }
        let counters = &mut self.contexts[old.context.0 as usize].counters;
        if evicted {
            counters.sessions_evicted += 1;
        } else {
            counters.sessions_expired += 1;
        }
    }
}
