//! IPv4 fragmentation of a forwarded datagram larger than the egress MTU and without DF,
//! as `ip_do_fragment`'s slow path cuts it (`ip_frag_init` / `ip_frag_next`):
//! - each fragment carries the datagram's whole header (same length, options included)
//!   and at most `MTU − header length` bytes of data, rounded down to a multiple of 8
//!   except the last;
//! - offsets count from the datagram's own offset (a fragment cut again keeps its place),
//!   MF on every fragment but the last (and on the last too when the datagram was itself
//!   a fragment with MF), DF clear, the IP ID, TOS, TTL (already decremented) and addresses
//!   kept, the header checksum recomputed;
//! - options: the first fragment keeps them all; in the others an option whose copied
//!   flag is clear is overwritten with NOOPs (`ip_options_fragment`), the header length
//!   unchanged;
//! - sent in order, first fragment first.
//!
//! The link header (Ethernet, VLAN tags) is repeated on each. IPv6 forwarders never
//! fragment (`ip6_forward` answers packet too big instead, see the IP layer).
//!
//! Not here: the fast path that re-sends a reassembled datagram's own fragments
//! (`Pipeline::reassemble` does that), and an MTU below the header plus 8 bytes
//! (the kernel drops such a datagram; the IP layer's minimum MTU is larger).

use crate::packet::checksum;

const IPOPT_END: u8 = 0;
const IPOPT_NOOP: u8 = 1;
const IPOPT_COPIED: u8 = 0x80;

/// Cut the IPv4 datagram at `l3` in `frame` (`ip_len` bytes of IP, trailing padding
/// ignored) into fragments of at most `mtu` bytes each, link header included on each.
/// `None` when the frame is not such a datagram or the MTU leaves no room for 8 bytes of
/// data.
pub fn fragment_v4(frame: &[u8], l3: usize, ip_len: usize, mtu: usize) -> Option<Vec<Vec<u8>>> {
    let link = frame.get(..l3)?;
    let datagram = frame.get(l3..l3.checked_add(ip_len)?)?;
    if datagram.first()? >> 4 != 4 {
        return None;
    }
    let hlen = usize::from(datagram[0] & 0x0f) * 4;
    let room = mtu.checked_sub(hlen).filter(|r| *r >= 8)?;
    let data = datagram.get(hlen..)?;
    let mut header = datagram.get(..hlen)?.to_vec();
    let field = u16::from_be_bytes([header[6], header[7]]);
    let not_last = field & 0x2000 != 0;
    let mut offset = usize::from(field & 0x1fff) * 8;
    let mut fragments = Vec::with_capacity(data.len() / (room & !7).max(8) + 1);
    let mut rest = data;
    while !rest.is_empty() {
        let mut len = rest.len().min(room);
        if len < rest.len() {
            len &= !7;
        }
        let (piece, after) = rest.split_at(len);
        let more = !after.is_empty() || not_last;
        let mut out = Vec::with_capacity(l3 + hlen + len);
        out.extend_from_slice(link);
        let at = out.len();
        out.extend_from_slice(&header);
        let flags = u16::try_from(offset / 8).ok()? | if more { 0x2000 } else { 0 };
        out[at + 6..at + 8].copy_from_slice(&flags.to_be_bytes());
        let total = u16::try_from(hlen + len).ok()?;
        out[at + 2..at + 4].copy_from_slice(&total.to_be_bytes());
        out[at + 10..at + 12].fill(0);
        let sum = checksum::field_bytes(checksum::partial(&out[at..at + hlen]));
        out[at + 10..at + 12].copy_from_slice(&sum);
        out.extend_from_slice(piece);
        fragments.push(out);
        if offset == usize::from(field & 0x1fff) * 8 {
            options_fragment(&mut header[20..]);
        }
        offset += len;
        rest = after;
    }
    Some(fragments)
}

/// `ip_options_fragment`: options whose copied flag is clear become NOOPs.
fn options_fragment(options: &mut [u8]) {
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            IPOPT_END => return,
            IPOPT_NOOP => {
                at += 1;
                continue;
            }
            kind => {
                let Some(&len) = options.get(at + 1) else {
                    return;
                };
                let len = usize::from(len);
                if len < 2 || at + len > options.len() {
                    return;
                }
                if kind & IPOPT_COPIED == 0 {
                    options[at..at + len].fill(IPOPT_NOOP);
                }
                at += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::PacketBuilder;
    use crate::packet::{LinkType, ParseOptions, parse_with};

    fn udp(payload: usize) -> Vec<u8> {
        PacketBuilder::eth()
            .ipv4(
                "198.51.100.1".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
            )
            .udp(1, 53)
            .payload(&vec![7; payload])
            .build()
    }

    #[test]
    fn fragments_are_multiples_of_eight_with_mf_and_valid_headers() {
        let frame = udp(3000); // 3028 bytes of IP: 3008 of data
        let pieces = fragment_v4(&frame, 14, 3028, 1400).unwrap();
        let opts = ParseOptions::default();
        let shapes: Vec<(u32, u32, bool)> = pieces
            .iter()
            .map(|p| {
                let meta = parse_with(&opts, LinkType::Ethernet, p, p.len() as u32, 0);
                assert_eq!(meta.invalid, None);
                assert!(checksum::is_valid(checksum::partial(&p[14..34])));
                assert_eq!(&p[18..20], &frame[18..20], "IP ID kept");
                (meta.frag.offset, meta.ip_len, meta.frag.more)
            })
            .collect();
        assert_eq!(
            shapes,
            [(0, 1396, true), (1376, 1396, true), (2752, 276, false)]
        );
        let data: Vec<u8> = pieces.iter().flat_map(|p| p[34..].to_vec()).collect();
        assert_eq!(data, frame[34..]);
    }

    #[test]
    fn a_fragment_cut_again_keeps_its_offset_and_mf() {
        let mut frame = udp(2000);
        frame[20..22].copy_from_slice(&(0x2000u16 | 100).to_be_bytes()); // offset 800, MF
        let pieces = fragment_v4(&frame, 14, 2028, 1000).unwrap();
        let fields: Vec<u16> = pieces
            .iter()
            .map(|p| u16::from_be_bytes([p[20], p[21]]))
            .collect();
        assert_eq!(fields, [0x2000 | 100, 0x2000 | 222, 0x2000 | 344]);
        assert_eq!(fragment_v4(&frame, 14, 2028, 27), None);
    }

    #[test]
    fn options_not_copied_become_noops_after_the_first_fragment() {
        let mut options = [0x07, 7, 4, 0, 0, 0, 0, 0x94, 4, 0, 0, IPOPT_END];
        options_fragment(&mut options);
        // Record route (not copied) is blanked; router alert (copied) stays.
        assert_eq!(options, [1, 1, 1, 1, 1, 1, 1, 0x94, 4, 0, 0, IPOPT_END]);
    }
}
