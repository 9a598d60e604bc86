//! Payload mangling and TCP sequence adjustment, as netfilter does them for `ip_vs_ftp`
//! (`nf_nat_mangle_tcp_packet`, `nf_ct_seqadj_set`, `nf_ct_seq_adjust`,
//! `nf_ct_sack_adjust` in Linux 6.1).
//!
//! In 6.1 the FTP helper does not use `ip_vs_app`'s own sequence offsets (it leaves its
//! `diff` at 0, "otherwise the sequence would be adjusted twice"): it mangles through
//! conntrack, which records one [`SeqAdjust`] per direction — the position of the last
//! change and the offsets before and after it — and shifts every later segment's
//! sequence number in that direction, the acknowledgement numbers and SACK blocks of the
//! other direction. Only the last change is remembered: a retransmission from before the
//! previous change gets the previous offset, as in the kernel.

use crate::packet::rewrite::checksum_adjust;
use crate::packet::tcp_options::{self, SACK_BLOCK_LEN, kind};
use crate::packet::{L3, PacketMeta, tcp_flags};

/// `struct nf_ct_seqadj`: one direction's sequence offsets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqAdjust {
    /// Sequence number of the segment that carried the last change.
    pub correction_pos: u32,
    /// Offset of segments up to and including `correction_pos`.
    pub offset_before: i32,
    /// Offset of segments after it.
    pub offset_after: i32,
}

/// `after(a, b)`: `a` is later than `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

/// `before(a, b)`.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl SeqAdjust {
    /// `nf_ct_seqadj_set`: the segment starting at `seq` changed length by `offset`.
    pub fn record(&mut self, seq: u32, offset: i32) {
        if offset == 0 {
            return;
        }
        if self.offset_before == self.offset_after || before(self.correction_pos, seq) {
            self.correction_pos = seq;
            self.offset_before = self.offset_after;
            self.offset_after = self.offset_after.wrapping_add(offset);
        }
    }

    /// The sequence number a segment of this direction leaves with.
    pub fn sequence(&self, seq: u32) -> u32 {
        let offset = if after(seq, self.correction_pos) {
            self.offset_after
        } else {
            self.offset_before
        };
        seq.wrapping_add(offset as u32)
    }

    /// An acknowledgement (or SACK edge) of the other direction, translated back.
    pub fn acknowledgement(&self, ack: u32) -> u32 {
        let offset = if after(
            ack.wrapping_sub(self.offset_before as u32),
            self.correction_pos,
        ) {
            self.offset_after
        } else {
            self.offset_before
        };
        ack.wrapping_sub(offset as u32)
    }
}

/// Why a frame could not be mangled or adjusted (the kernel drops the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdjustError {
    /// The frame is not the TCP segment its metadata describes.
    Truncated,
    /// The result would exceed 65535 bytes (`enlarge_skb`).
    TooLong,
    /// A TCP option runs past the header (`nf_ct_sack_adjust`'s "no partial options").
    PartialOption,
}

fn read_u32(frame: &[u8], at: usize) -> Result<u32, AdjustError> {
    let bytes = frame.get(at..at + 4).ok_or(AdjustError::Truncated)?;
    Ok(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
}

/// Replace a 4-byte field at `at` (2-byte aligned within the TCP header) and fix the TCP
/// checksum at `checksum_at` incrementally.
fn replace_u32(frame: &mut [u8], at: usize, value: u32, checksum_at: usize) {
    let old = [frame[at], frame[at + 1], frame[at + 2], frame[at + 3]];
    let new = value.to_be_bytes();
    if old == new {
        return;
    }
    let checksum = u16::from_be_bytes([frame[checksum_at], frame[checksum_at + 1]]);
    let adjusted = checksum_adjust(checksum, &old, &new);
    frame[checksum_at..checksum_at + 2].copy_from_slice(&adjusted.to_be_bytes());
    frame[at..at + 4].copy_from_slice(&new);
}

/// `nf_ct_seq_adjust`: shift the segment's sequence number by `this_way`, its
/// acknowledgement number and SACK blocks by `other_way`.
pub fn adjust(
    frame: &mut [u8],
    meta: &PacketMeta,
    this_way: &SeqAdjust,
    other_way: &SeqAdjust,
) -> Result<(), AdjustError> {
    let l4 = usize::from(meta.l4_offset);
    let checksum_at = l4 + 16;
    if frame.len() < l4 + 20 {
        return Err(AdjustError::Truncated);
    }
    let seq = read_u32(frame, l4 + 4)?;
    replace_u32(frame, l4 + 4, this_way.sequence(seq), checksum_at);
    if frame[l4 + 13] & tcp_flags::ACK == 0 {
        return Ok(());
    }
    let ack = read_u32(frame, l4 + 8)?;
    replace_u32(frame, l4 + 8, other_way.acknowledgement(ack), checksum_at);
    adjust_sack(frame, l4, other_way)
}

/// `nf_ct_sack_adjust` / `nf_ct_sack_block_adjust`: every SACK option of whole blocks
/// (a malformed option list is refused, after the options before it were adjusted).
fn adjust_sack(frame: &mut [u8], l4: usize, other_way: &SeqAdjust) -> Result<(), AdjustError> {
    let header_len = usize::from(frame[l4 + 12] >> 4) * 4;
    let end = l4 + header_len;
    if frame.len() < end {
        return Err(AdjustError::Truncated);
    }
    // One option at a time: the frame is rewritten between steps.
    let mut at = l4 + 20;
    while let Some(option) = tcp_options::walk(frame, at..end).next() {
        let option = option.map_err(|_| AdjustError::PartialOption)?;
        at = option.range().end;
        let data_len = option.len - 2;
        if option.kind == kind::SACK && data_len >= SACK_BLOCK_LEN && data_len % SACK_BLOCK_LEN == 0
        {
            for edge in option.sack_edges() {
                let value = other_way.acknowledgement(read_u32(frame, edge.start)?);
                replace_u32(frame, edge.start, value, l4 + 16);
            }
        }
    }
    Ok(())
}

/// `nf_nat_mangle_tcp_packet`: replace payload bytes `start..end` with `replacement`,
/// fix the IP length (and IPv4 header checksum) and recompute the TCP checksum; returns
/// the length change. Bytes after the IP datagram (link padding) are dropped.
pub fn mangle(
    frame: &mut Vec<u8>,
    meta: &PacketMeta,
    start: usize,
    end: usize,
    replacement: &[u8],
) -> Result<i32, AdjustError> {
    let (l3, payload) = (
        usize::from(meta.l3_offset),
        usize::from(meta.payload_offset),
    );
    let datagram_end = l3 + meta.ip_len as usize;
    if frame.len() < datagram_end || payload + end > datagram_end || start > end {
        return Err(AdjustError::Truncated);
    }
    let difference = replacement.len() as i64 - (end - start) as i64;
    let new_ip_len = meta.ip_len as i64 + difference;
    if new_ip_len > 65535 {
        return Err(AdjustError::TooLong);
    }
    frame.truncate(datagram_end);
    frame.splice(payload + start..payload + end, replacement.iter().copied());
    match meta.l3 {
        L3::Ipv4 => {
            frame[l3 + 2..l3 + 4].copy_from_slice(&(new_ip_len as u16).to_be_bytes());
            frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let header_len = usize::from(frame[l3] & 0x0f) * 4;
            let sum = crate::packet::checksum::partial(&frame[l3..l3 + header_len]);
            frame[l3 + 10..l3 + 12].copy_from_slice(&crate::packet::checksum::field_bytes(sum));
        }
        L3::Ipv6 => {
            let payload_len = (new_ip_len - 40) as u16;
            frame[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
        }
        _ => return Err(AdjustError::Truncated),
    }
    tcp_checksum(frame, meta)?;
    Ok(difference as i32)
}

/// Recompute the TCP checksum of the segment `frame[l4_offset..]`.
fn tcp_checksum(frame: &mut [u8], meta: &PacketMeta) -> Result<(), AdjustError> {
    use crate::packet::{checksum, ip_proto};
    use std::net::IpAddr;
    let l4 = usize::from(meta.l4_offset);
    let length = (frame.len() - l4) as u32;
    let pseudo = match (meta.src, meta.dst) {
        (Some(IpAddr::V4(s)), Some(IpAddr::V4(d))) => {
            checksum::pseudo_header_v4(s, d, ip_proto::TCP, length)
        }
        (Some(IpAddr::V6(s)), Some(IpAddr::V6(d))) => {
            checksum::pseudo_header_v6(s, d, ip_proto::TCP, length)
        }
        _ => return Err(AdjustError::Truncated),
    };
    frame[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let sum = checksum::field_bytes(pseudo + checksum::partial(&frame[l4..]));
    frame[l4 + 16..l4 + 18].copy_from_slice(&sum);
    Ok(())
}
