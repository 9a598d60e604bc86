//! Rewriting packet bytes in place: the one incremental-checksum implementation (RFC 1624)
//! and the address/port rewrite of an IPv4/IPv6 TCP/UDP packet used by NAT and the
//! director, plus big-endian field access for the other in-place editors (the SYN proxy).
//!
//! The rewrite primitives touch only the bytes that change (addresses, ports, the IPv4
//! header checksum, the TCP/UDP checksum); they never re-checksum whole packets and never
//! panic on any frame: a frame they cannot rewrite gets a [`RewriteError`]. They do not
//! change packet length; tunnelling lives in the director.

use std::net::{IpAddr, SocketAddr};

use super::flow::FlowKey;
use super::{L3, PacketMeta, ip_proto};

/// Why a frame could not be rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// Not an IPv4/IPv6 packet with a TCP/UDP header we can reach.
    #[error("not a rewritable TCP/UDP packet")]
    NotTransport,
    /// The new address is of another family than the packet.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// The frame is shorter than its headers claim.
    #[error("truncated frame")]
    Truncated,
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
}

/// RFC 1624 eqn. 3: the checksum after the 16-bit-aligned field `old` became `new`.
pub fn checksum_adjust(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!checksum);
    sum += words(old).map(|w| !w & 0xffff).sum::<u32>();
    sum += words(new).sum::<u32>();
    !fold(sum)
}

/// The one's-complement sum that turns a checksum over 16-bit-aligned `old` into one over
/// `new` (old words complemented, new words added; both of even length).
#[inline]
fn change_sum(old: &[u8], new: &[u8]) -> u32 {
    let (old_words, _) = old.as_chunks::<2>();
    let (new_words, _) = new.as_chunks::<2>();
    let removed: u32 = old_words
        .iter()
        .map(|word| u32::from(!u16::from_be_bytes(*word)))
        .sum();
    let added: u32 = new_words
        .iter()
        .map(|word| u32::from(u16::from_be_bytes(*word)))
        .sum();
    removed + added
}

/// RFC 1624 eqn. 3 with a precomputed [`change_sum`] (plus port changes).
#[inline]
fn apply_change(checksum: u16, change: u32) -> u16 {
    !fold(u32::from(!checksum) + change)
}

fn read_u16(frame: &[u8], at: usize) -> Result<u16, RewriteError> {
    let bytes = frame.get(at..at + 2).ok_or(RewriteError::Truncated)?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn write_u16(frame: &mut [u8], at: usize, value: u16) -> Result<(), RewriteError> {
    let bytes = frame.get_mut(at..at + 2).ok_or(RewriteError::Truncated)?;
    bytes.copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Which end of the packet to rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Source address and port.
    Source,
    /// Destination address and port.
    Destination,
}

struct Layout {
    address_at: usize,
    address_len: usize,
    ip_checksum_at: Option<usize>,
    port_at: Option<usize>,
    l4_checksum_at: Option<usize>,
    udp: bool,
}

fn layout(meta: &PacketMeta, end: End) -> Result<Layout, RewriteError> {
    let l3 = usize::from(meta.l3_offset);
    let (address_at, address_len, ip_checksum_at) = match (meta.l3, end) {
        (L3::Ipv4, End::Source) => (l3 + 12, 4, Some(l3 + 10)),
        (L3::Ipv4, End::Destination) => (l3 + 16, 4, Some(l3 + 10)),
        (L3::Ipv6, End::Source) => (l3 + 8, 16, None),
        (L3::Ipv6, End::Destination) => (l3 + 24, 16, None),
        _ => return Err(RewriteError::NotTransport),
    };
    let l4 = usize::from(meta.l4_offset);
    let has_l4 = l4 != 0 && meta.sport.is_some();
    let (port_at, l4_checksum_at, udp) = match meta.proto {
        Some(ip_proto::TCP) if has_l4 => (Some(l4 + port_offset(end)), Some(l4 + 16), false),
        Some(ip_proto::UDP) if has_l4 => (Some(l4 + port_offset(end)), Some(l4 + 6), true),
        _ if meta.frag.is_fragment => (None, None, false),
        _ => return Err(RewriteError::NotTransport),
    };
    Ok(Layout {
        address_at,
        address_len,
        ip_checksum_at,
        port_at,
        l4_checksum_at,
        udp,
    })
}

fn port_offset(end: End) -> usize {
    match end {
        End::Source => 0,
        End::Destination => 2,
    }
}

/// Rewrite the source or destination address and port of a TCP/UDP packet in place,
/// updating the IPv4 header checksum and the TCP/UDP checksum incrementally.
pub fn rewrite(
    frame: &mut [u8],
    meta: &PacketMeta,
    end: End,
    to: SocketAddr,
) -> Result<(), RewriteError> {
    let layout = layout(meta, end)?;
    let mut new_buffer = [0u8; 16];
    match (to.ip(), layout.address_len) {
        (IpAddr::V4(v4), 4) => new_buffer[..4].copy_from_slice(&v4.octets()),
        (IpAddr::V6(v6), 16) => new_buffer.copy_from_slice(&v6.octets()),
        _ => return Err(RewriteError::FamilyMismatch),
    }
    let new_address = &new_buffer[..layout.address_len];
    let range = layout.address_at..layout.address_at + layout.address_len;
    let current = frame.get(range.clone()).ok_or(RewriteError::Truncated)?;
    // The address change, summed once for both checksums (RFC 1624 eqn. 3 applied to
    // several fields at once gives what applying it field by field gives).
    let address_change = change_sum(current, new_address);
    let l4_checksum = match layout.l4_checksum_at {
        Some(at) => Some(read_u16(frame, at)?),
        None => None,
    };
    let udp_without_checksum = layout.udp && l4_checksum == Some(0) && meta.l3 == L3::Ipv4;
    let mut l4_change = address_change;
    if let Some(at) = layout.port_at {
        let old_port = read_u16(frame, at)?;
        write_u16(frame, at, to.port())?;
        l4_change += u32::from(!old_port) + u32::from(to.port());
    }
    frame[range].copy_from_slice(new_address);
    if let Some(at) = layout.ip_checksum_at {
        let checksum = read_u16(frame, at)?;
        write_u16(frame, at, apply_change(checksum, address_change))?;
    }
    if let (Some(at), Some(checksum)) = (layout.l4_checksum_at, l4_checksum) {
        let adjusted = apply_change(checksum, l4_change);
        let value = match (udp_without_checksum, layout.udp, adjusted) {
            (true, _, _) => 0,
            (false, true, 0) => 0xffff,
            (_, _, value) => value,
        };
        write_u16(frame, at, value)?;
    }
    Ok(())
}

/// A parsed description of a frame after NAT rewrote it to `flow` (rewrites keep every
/// offset and length; only addresses and ports change).
pub fn rewritten_meta(meta: &PacketMeta, flow: &FlowKey) -> PacketMeta {
    let mut rewritten = meta.clone();
    rewritten.src = Some(flow.source.ip());
    rewritten.dst = Some(flow.destination.ip());
    rewritten.sport = Some(flow.source.port());
    rewritten.dport = Some(flow.destination.port());
    rewritten
}

/// The flow of `frame` as it is now, read at the offsets `meta` found (after a director
/// rewrote addresses in place); `None` when the frame is not the one `meta` describes
/// any more (tunnelled) or not TCP/UDP.
pub fn current_flow(frame: &[u8], meta: &PacketMeta) -> Option<FlowKey> {
    let flow = FlowKey::from_meta(meta)?;
    if frame.len() != meta.cap_len as usize {
        return None;
    }
    let read = |end: End| -> Option<SocketAddr> {
        let layout = layout(meta, end).ok()?;
        let bytes = frame.get(layout.address_at..layout.address_at + layout.address_len)?;
        let address = match layout.address_len {
            4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
            _ => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        };
        Some(SocketAddr::new(
            address,
            read_u16(frame, layout.port_at?).ok()?,
        ))
    };
    Some(FlowKey {
        proto: flow.proto,
        source: read(End::Source)?,
        destination: read(End::Destination)?,
    })
}

/// Rewrite `frame` (whose flow is `from`) so that its flow becomes `to`.
pub fn apply(
    frame: &mut [u8],
    meta: &PacketMeta,
    from: &FlowKey,
    to: &FlowKey,
) -> Result<(), RewriteError> {
    if from.destination != to.destination {
        rewrite(frame, meta, End::Destination, to.destination)?;
    }
    if from.source != to.source {
        rewrite(frame, meta, End::Source, to.source)?;
    }
    Ok(())
}

/// The big-endian `u32` at `at` (the caller has checked the range).
#[inline]
pub fn read_u32(frame: &[u8], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&frame[at..at + 4]);
    u32::from_be_bytes(bytes)
}

/// Write `value` big-endian at `at` (the caller has checked the range).
#[inline]
pub fn write_u32(frame: &mut [u8], at: usize, value: u32) {
    frame[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::PacketBuilder;
    use crate::packet::{LinkType, parse};
    use std::net::Ipv4Addr;

    fn meta(frame: &[u8]) -> PacketMeta {
        parse(LinkType::Ethernet, frame, frame.len() as u32, 0)
    }

    /// The reference: each changed field adjusted in turn with [`checksum_adjust`] (the
    /// port, then the address), as `rewrite` did before it summed the changes once.
    fn rewrite_field_by_field(frame: &mut [u8], meta: &PacketMeta, end: End, to: SocketAddr) {
        let layout = layout(meta, end).unwrap();
        let new: Vec<u8> = match to.ip() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let range = layout.address_at..layout.address_at + layout.address_len;
        let old = frame[range.clone()].to_vec();
        let mut l4_checksum = layout.l4_checksum_at.map(|at| read_u16(frame, at).unwrap());
        let udp_without_checksum = layout.udp && l4_checksum == Some(0) && meta.l3 == L3::Ipv4;
        if let Some(at) = layout.port_at {
            let old_port = read_u16(frame, at).unwrap();
            write_u16(frame, at, to.port()).unwrap();
            l4_checksum = l4_checksum
                .map(|c| checksum_adjust(c, &old_port.to_be_bytes(), &to.port().to_be_bytes()));
        }
        frame[range].copy_from_slice(&new);
        if let Some(at) = layout.ip_checksum_at {
            let checksum = checksum_adjust(read_u16(frame, at).unwrap(), &old, &new);
            write_u16(frame, at, checksum).unwrap();
        }
        if let (Some(at), Some(checksum)) = (layout.l4_checksum_at, l4_checksum) {
            let value = match (
                udp_without_checksum,
                layout.udp,
                checksum_adjust(checksum, &old, &new),
            ) {
                (true, _, _) => 0,
                (false, true, 0) => 0xffff,
                (_, _, value) => value,
            };
            write_u16(frame, at, value).unwrap();
        }
    }

    proptest::proptest! {
        #[test]
        fn rewrite_equals_the_field_by_field_adjustment(
            v6 in proptest::bool::ANY,
            udp in proptest::bool::ANY,
            zero_udp_checksum in proptest::bool::ANY,
            destination in proptest::bool::ANY,
            addresses in proptest::array::uniform3(proptest::num::u128::ANY),
            ports in proptest::array::uniform3(1u16..),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        ) {
            let v4 = |bits: u128| Ipv4Addr::from(bits as u32);
            let builder = if v6 {
                PacketBuilder::eth().ipv6(addresses[0].into(), addresses[1].into())
            } else {
                PacketBuilder::eth().ipv4(v4(addresses[0]), v4(addresses[1]))
            };
            let builder = if udp {
                builder.udp(ports[0], ports[1])
            } else {
                builder.tcp(ports[0], ports[1]).flags(crate::packet::tcp_flags::ACK)
            };
            let mut frame = builder.payload(&payload).build();
            let before = meta(&frame);
            proptest::prop_assume!(before.invalid.is_none());
            if udp && !v6 && zero_udp_checksum {
                let at = usize::from(before.l4_offset) + 6;
                frame[at..at + 2].fill(0);
            }
            let to = if v6 {
                SocketAddr::new(IpAddr::V6(addresses[2].into()), ports[2])
            } else {
                SocketAddr::new(IpAddr::V4(v4(addresses[2])), ports[2])
            };
            let end = if destination { End::Destination } else { End::Source };
            let mut expected = frame.clone();
            rewrite_field_by_field(&mut expected, &before, end, to);
            rewrite(&mut frame, &before, end, to).unwrap();
            proptest::prop_assert_eq!(&frame, &expected);
            proptest::prop_assert_eq!(meta(&frame).invalid, None);
        }
    }
}
