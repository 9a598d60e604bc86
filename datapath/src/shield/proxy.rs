//! The SYN proxy, after the kernel's SYNPROXY target (`nf_synproxy_core.c`), rewritten from
//! its behaviour:
//!
//! 1. The client's SYN was answered with a cookie SYN-ACK with window 0 (stages).
//! 2. A valid cookie ACK: the shield sends the server a SYN with the client's ISN, window,
//!    the MSS from the cookie and — when timestamps are in use — the window scale and SACK
//!    from the cookie timestamp, and the client's TSval. The ACK itself is consumed.
//! 3. The server's SYN-ACK is consumed: the shield ACKs it towards the server and sends the
//!    client a window update (the server's window, shifted by the scale the cookie SYN-ACK
//!    advertised), since the client only saw window 0.
//! 4. From then on every segment is rewritten in place: server → client sequence numbers
//!    (and TSval) shifted by `cookie − server ISN` (and `server TSval − cookie TSval`),
//!    client → server acknowledgement numbers (and TSecr) shifted back; checksums refreshed.
//!
//! SACK blocks the client sends acknowledge the server's data and are shifted like the
//! acknowledgement number; the server's SACK blocks are in the client's (unshifted) space
//! and pass unchanged — as `nf_conntrack_seqadj`'s `nf_ct_sack_adjust` does for SYNPROXY.
//! Like the kernel, the proxy cannot change the server's window scale: the scale the cookie
//! SYN-ACK advertises (`syn_proxy_wscale`) must be the server's. Segments the client sends before the server has answered are dropped
//! (`no_session`); the client retransmits.

use std::ops::ControlFlow::{self, Break, Continue};

use super::cookie::SynCookies;
use super::emit::{
    EmitBuffer, LinkHeader, Segment, SegmentOptions, Toward, refresh_tcp_checksum,
    shift_sack_blocks, tcp_segment_range, timestamps_offset, write_segment,
};
use super::run::Run;
use super::{Session, SessionKey, SessionState, State};
use crate::packet::rewrite::{read_u32, write_u32};
use crate::packet::{IfaceId, PacketMeta, tcp_flags};
use crate::verdict::{DropReason, TimeNs, Verdict};

type Flow = ControlFlow<Verdict>;

/// Longest link header kept for replies to the client (Ethernet + 4 VLAN tags).
const LINK_HEADER_MAX: usize = 32;

/// The proxy's view of one connection.
#[derive(Clone, Debug)]
pub(crate) struct ProxyState {
    client_iface: IfaceId,
    client_link: [u8; LINK_HEADER_MAX],
    client_link_len: u8,
    client_isn: u32,
    cookie: u32,
    /// Added to server → client sequence numbers.
    seq_delta: u32,
    /// Subtracted from server → client TSval.
    ts_offset: u32,
    /// TSval of the cookie SYN-ACK (echoed by the client's ACK).
    our_tsval: u32,
    client_tsval: u32,
    timestamps: bool,
    client_window: u16,
    /// Shift applied to the server's SYN-ACK window in the client's window update.
    window_shift: u8,
}

/// A cookie ACK validated with `mss`: open the connection to the server.
pub(crate) fn open(
    run: &mut Run<'_>,
    key: SessionKey,
    mss: u16,
    frame: &[u8],
    meta: &PacketMeta,
    emit: &mut EmitBuffer,
) -> Flow {
    let Some(tcp) = meta.tcp else {
        return Break(Verdict::Drop(DropReason::NoSession));
    };
    let link_len = usize::from(meta.l3_offset)
        .min(LINK_HEADER_MAX)
        .min(frame.len());
    let mut client_link = [0; LINK_HEADER_MAX];
    client_link[..link_len].copy_from_slice(&frame[..link_len]);
    let kept = tcp
        .options
        .timestamps
        .map(|(_, tsecr)| SynCookies::decode_timestamp(tsecr));
    let proxy = ProxyState {
        client_iface: meta.iface,
        client_link,
        client_link_len: link_len as u8,
        client_isn: tcp.seq.wrapping_sub(1),
        cookie: tcp.ack.wrapping_sub(1),
        seq_delta: 0,
        ts_offset: 0,
        our_tsval: tcp.options.timestamps.map_or(0, |(_, tsecr)| tsecr),
        client_tsval: tcp.options.timestamps.map_or(0, |(tsval, _)| tsval),
        timestamps: kept.is_some(),
        client_window: tcp.window,
        window_shift: match kept {
            Some(options) if options.window_scale.is_some() => run.instance.syn_proxy_wscale,
            _ => 0,
        },
    };
    let session = Session {
        context: run.id,
        state: SessionState::ProxySynSent,
        last_seen_ns: run.now,
        proxy: Some(Box::new(proxy)),
    };
    if !run.state.insert_session(key, session, run.now) {
        return Break(Verdict::Drop(DropReason::TableFull));
    }
    run.state.proxied += 1;
    let context = &mut run.state.contexts[run.id.0 as usize];
    context.counters.sessions_created += 1;
    context.counters.proxy_connections += 1;
    context.modes.counts.handshakes_completed += 1;
    context.learn_ttl(meta.ttl);
    let options = kept.unwrap_or_default();
    let segment = Segment {
        src: key.src,
        dst: key.dst,
        sport: key.sport,
        dport: key.dport,
        seq: tcp.seq.wrapping_sub(1),
        ack: 0,
        flags: tcp_flags::SYN,
        window: tcp.window,
        ttl: meta.ttl,
        options: SegmentOptions {
            mss: Some(mss),
            window_scale: options.window_scale,
            sack_permitted: options.sack_permitted,
            timestamps: tcp.options.timestamps.map(|(tsval, _)| (tsval, 0)),
        },
    };
    let link = LinkHeader {
        bytes: &frame[..link_len],
        swap_macs: false,
        ethernet: run.ethernet,
    };
    write_segment(emit.next(meta.iface, Toward::Server), link, &segment);
    Break(Verdict::Reply)
}

/// A segment from the server of the proxied connection in session slot `index`.
pub(crate) fn server_segment(
    state: &mut State,
    index: usize,
    now: TimeNs,
    frame: &mut [u8],
    meta: &PacketMeta,
    emit: &mut EmitBuffer,
    ethernet: bool,
) -> Flow {
    let Some(session) = state.sessions.get_mut(index) else {
        return Continue(());
    };
    session.last_seen_ns = now;
    let waiting = session.state == SessionState::ProxySynSent;
    let Some(proxy) = session.proxy.as_deref_mut() else {
        return Continue(());
    };
    let flags = meta.tcp_flags;
    if !waiting {
        proxy.server_to_client(frame, meta);
        if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            session.state = SessionState::Closing;
        }
        return Continue(());
    }
    let syn_ack = flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST)
        == tcp_flags::SYN | tcp_flags::ACK;
    let acked = meta
        .tcp
        .is_some_and(|tcp| tcp.ack == proxy.client_isn.wrapping_add(1));
    if syn_ack && acked {
        proxy.complete(frame, meta, emit, ethernet);
        session.state = SessionState::Proxied;
        return Break(Verdict::Reply);
    }
    if flags & tcp_flags::RST != 0 {
        // The server refused: pass the RST on, in the client's sequence space.
        proxy.rewrite_seq(frame, meta, proxy.cookie.wrapping_add(1));
        if let Some(old) = state.sessions.remove(index) {
            state.forget(old, false);
        }
        return Continue(());
    }
    Break(Verdict::Drop(DropReason::NoSession))
}

impl ProxyState {
    /// The server's SYN-ACK: ACK it, and open the client's window.
    fn complete(&mut self, frame: &[u8], meta: &PacketMeta, emit: &mut EmitBuffer, ethernet: bool) {
        let (Some(tcp), Some(server), Some(client)) = (meta.tcp, meta.src, meta.dst) else {
            return;
        };
        let (Some(server_port), Some(client_port)) = (meta.sport, meta.dport) else {
            return;
        };
        let server_isn = tcp.seq;
        self.seq_delta = self.cookie.wrapping_sub(server_isn);
        let server_tsval = tcp.options.timestamps.map(|(tsval, _)| tsval);
        if let (true, Some(tsval)) = (self.timestamps, server_tsval) {
            self.ts_offset = tsval.wrapping_sub(self.our_tsval);
        }
        let to_server = Segment {
            src: client,
            dst: server,
            sport: client_port,
            dport: server_port,
            seq: self.client_isn.wrapping_add(1),
            ack: server_isn.wrapping_add(1),
            flags: tcp_flags::ACK,
            window: self.client_window,
            ttl: 64,
            options: SegmentOptions {
                timestamps: server_tsval
                    .filter(|_| self.timestamps)
                    .map(|tsval| (self.client_tsval, tsval)),
                ..SegmentOptions::default()
            },
        };
        let end = usize::from(meta.l3_offset).min(frame.len());
        let back = LinkHeader {
            bytes: &frame[..end],
            swap_macs: true,
            ethernet,
        };
        write_segment(emit.next(meta.iface, Toward::Server), back, &to_server);
        let to_client = Segment {
            src: server,
            dst: client,
            sport: server_port,
            dport: client_port,
            seq: self.cookie.wrapping_add(1),
            ack: self.client_isn.wrapping_add(1),
            flags: tcp_flags::ACK,
            window: tcp.window >> self.window_shift,
            ttl: 64,
            options: SegmentOptions {
                timestamps: self
                    .timestamps
                    .then_some((self.our_tsval, self.client_tsval)),
                ..SegmentOptions::default()
            },
        };
        let client_link = LinkHeader {
            bytes: &self.client_link[..usize::from(self.client_link_len)],
            swap_macs: true,
            ethernet,
        };
        write_segment(
            emit.next(self.client_iface, Toward::Client),
            client_link,
            &to_client,
        );
    }

    /// Client → server: acknowledgement (and TSecr) back into the server's space.
    pub(crate) fn client_to_server(&mut self, frame: &mut [u8], meta: &PacketMeta) {
        let Some(range) = tcp_segment_range(meta, frame.len()) else {
            return;
        };
        if meta.tcp_flags & tcp_flags::ACK != 0 {
            let ack = read_u32(frame, range.start + 8).wrapping_sub(self.seq_delta);
            write_u32(frame, range.start + 8, ack);
        }
        // SACK blocks acknowledge the server's data: into its space like the ACK number
        // (`nf_ct_sack_adjust`).
        let delta = self.seq_delta;
        shift_sack_blocks(frame, meta, |edge| edge.wrapping_sub(delta));
        if self.timestamps
            && let Some(at) = timestamps_offset(frame, meta)
        {
            self.client_tsval = read_u32(frame, at);
            let tsecr = read_u32(frame, at + 4).wrapping_add(self.ts_offset);
            write_u32(frame, at + 4, tsecr);
        }
        refresh_tcp_checksum(frame, meta);
    }

    /// Server → client: sequence number (and TSval) into the client's space. SACK blocks
    /// of the server acknowledge the client's data, whose sequence numbers the proxy does
    /// not shift (its SYN to the server carried the client's ISN): they pass unchanged, as
    /// the kernel's seqadj leaves them with the client direction's offset of zero.
    fn server_to_client(&mut self, frame: &mut [u8], meta: &PacketMeta) {
        let Some(range) = tcp_segment_range(meta, frame.len()) else {
            return;
        };
        let seq = read_u32(frame, range.start + 4).wrapping_add(self.seq_delta);
        write_u32(frame, range.start + 4, seq);
        if self.timestamps
            && let Some(at) = timestamps_offset(frame, meta)
        {
            let tsval = read_u32(frame, at).wrapping_sub(self.ts_offset);
            write_u32(frame, at, tsval);
        }
        refresh_tcp_checksum(frame, meta);
    }

    fn rewrite_seq(&self, frame: &mut [u8], meta: &PacketMeta, seq: u32) {
        if let Some(range) = tcp_segment_range(meta, frame.len()) {
            write_u32(frame, range.start + 4, seq);
            refresh_tcp_checksum(frame, meta);
        }
    }
}
