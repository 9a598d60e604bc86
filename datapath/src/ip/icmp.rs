//! ICMP / ICMPv6 errors the IP layer sends (time exceeded, fragmentation needed / packet
//! too big), and the kernel's rate limits on them.
//!
//! An error goes back out of the ingress interface: the Ethernet addresses swapped and the
//! VLAN tags kept, the IP source the appliance's address on that interface (unspecified
//! when the appliance file names none), TTL / hop limit 64, and as much of the offending
//! datagram as fits in 576 bytes (IPv4, `__icmp_send`) or 1280 bytes (IPv6,
//! `icmp6_send`), as received.
//!
//! Destination unreachable for a packet without a route (`ip_error`: net unreachable 3/0;
//! `ip6_pkt_discard`: ICMPv6 no route 1/0) is limited first by `ip_error`'s own bucket on
//! the same per-peer tokens (IPv4 only; see [`IcmpLimiter::route_error_allow`]).
//!
//! Rate limits (`icmpv4_xrlim_allow`, `icmpv6_xrlim_allow`, `inet_peer_xrlim_allow`): per
//! destination a token bucket of `icmp_ratelimit` ms per message and a burst of
//! `XRLIM_BURST_FACTOR` (6) messages, a new peer starting full; IPv4 types in
//! `icmp_ratemask` only, fragmentation-needed never (PMTU discovery); IPv6 errors except
//! packet-too-big, with the interval shifted right by (128 − prefix length) / 32 of the
//! route to the destination (4 for a default route). Then the global bucket
//! (`icmp_global_allow`: `icmp_msgs_per_sec`, burst `icmp_msgs_burst`) without the kernel's
//! random jitter, so that runs are reproducible.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::packet::{PacketMeta, checksum, ip_proto};
use crate::verdict::TimeNs;

/// Burst factor of the per-peer bucket (`XRLIM_BURST_FACTOR`).
pub const XRLIM_BURST_FACTOR: u64 = 6;
/// Peers remembered at once; a full table forgets peers idle for a minute, and a peer that
/// still finds no room is not limited per peer (as `inet_getpeer` failing).
pub const PEER_CAPACITY: usize = 4_096;
const PEER_IDLE_MS: u64 = 60_000;
/// `ip_rt_error_cost` (`net.ipv4.route.error_cost`, HZ): ms of tokens per unreachable.
pub const ROUTE_ERROR_COST_MS: u64 = 1_000;
/// `ip_rt_error_burst` (`net.ipv4.route.error_burst`, 5 × HZ).
pub const ROUTE_ERROR_BURST_MS: u64 = 5_000;

/// Rate-limit settings (the kernel's sysctls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpLimits {
    /// `net.ipv4.icmp_ratelimit`, ms per message per destination (0: no per-peer limit).
    pub ratelimit_ms: u64,
    /// `net.ipv4.icmp_ratemask`: IPv4 types limited (bit per type).
    pub ratemask: u32,
    /// `net.ipv6.icmp.ratelimit`, ms (kernel default 100).
    pub ratelimit_v6_ms: u64,
    /// `net.ipv4.icmp_msgs_per_sec` (global; 0: no global limit).
    pub msgs_per_sec: u64,
    /// `net.ipv4.icmp_msgs_burst`.
    pub msgs_burst: u64,
}

impl Default for IcmpLimits {
    fn default() -> Self {
        Self {
            ratelimit_ms: 1000,
            ratemask: 6168,
            ratelimit_v6_ms: 100,
            msgs_per_sec: 1000,
            msgs_burst: 50,
        }
    }
}

/// Per-peer and global token buckets.
#[derive(Debug, Default)]
pub struct IcmpLimiter {
    peers: HashMap<IpAddr, (u64, u64)>,
    /// When a full peer table was last swept (ms): at most one sweep a second, so that a
    /// flood of errors to new (spoofed) peers does not scan the table for each.
    last_sweep_ms: Option<u64>,
    global_credit: u64,
    global_stamp: Option<u64>,
}

impl IcmpLimiter {
    /// May an error of `icmp_type`/`code` go to `dest` at `now`? `v6_prefix` is the prefix
    /// length of the route to an IPv6 destination.
    pub fn allow(
        &mut self,
        limits: &IcmpLimits,
        now: TimeNs,
        dest: IpAddr,
        icmp_type: u8,
        code: u8,
        v6_prefix: u8,
    ) -> bool {
        let ms = now / 1_000_000;
        let timeout = match dest {
            IpAddr::V4(_) => {
                let limited = icmp_type < 32 && limits.ratemask & (1 << icmp_type) != 0;
                if !limited || (icmp_type == 3 && code == 4) {
                    return true;
                }
                limits.ratelimit_ms
            }
            IpAddr::V6(_) => {
                if icmp_type >= 128 || icmp_type == 2 {
                    return true;
                }
                limits.ratelimit_v6_ms >> ((128 - u32::from(v6_prefix.min(128))) >> 5)
            }
        };
        self.global_allow(limits, ms) && self.peer_allow(dest, timeout, ms)
    }

    /// `icmp_global_allow`: credit refilled by `msgs_per_sec` per elapsed second (at most
    /// one second's worth, only after more than 20 ms), capped at `msgs_burst`.
    fn global_allow(&mut self, limits: &IcmpLimits, ms: u64) -> bool {
        if limits.msgs_per_sec == 0 {
            return true;
        }
        let Some(stamp) = self.global_stamp else {
            // Long since boot: the bucket starts full.
            self.global_stamp = Some(ms);
            self.global_credit = limits.msgs_burst.saturating_sub(1);
            return limits.msgs_burst > 0;
        };
        let delta = ms.saturating_sub(stamp).min(1000);
        let mut incr = 0;
        if delta > 20 {
            incr = limits.msgs_per_sec * delta / 1000;
            if incr > 0 {
                self.global_stamp = Some(ms);
            }
        }
        let credit = (self.global_credit + incr).min(limits.msgs_burst);
        self.global_credit = credit.saturating_sub(1);
        credit > 0
    }

    fn peer_allow(&mut self, dest: IpAddr, timeout: u64, ms: u64) -> bool {
        if timeout == 0 {
            return true;
        }
        self.take_tokens(dest, ms, timeout, XRLIM_BURST_FACTOR * timeout)
    }

    /// `ip_error`'s own limit on ICMP destination unreachable for packets without a route
    /// (`net.ipv4.route.error_cost` 1 s per message, `error_burst` 5 s), on the same
    /// per-peer tokens as the ICMP limit (`inet_peer.rate_tokens`), before it.
    pub fn route_error_allow(&mut self, dest: IpAddr, now: TimeNs) -> bool {
        self.take_tokens(
            dest,
            now / 1_000_000,
            ROUTE_ERROR_COST_MS,
            ROUTE_ERROR_BURST_MS,
        )
    }

    /// Refill `dest`'s tokens (ms elapsed, at most `cap`), then take `cost` if there are
    /// that many. A new peer starts as the kernel's, last refilled a minute ago; a peer
    /// that finds no room in a full table is not limited.
    fn take_tokens(&mut self, dest: IpAddr, ms: u64, cost: u64, cap: u64) -> bool {
        if !self.peers.contains_key(&dest) && self.peers.len() >= PEER_CAPACITY {
            if self
                .last_sweep_ms
                .is_none_or(|at| ms.saturating_sub(at) >= 1000)
            {
                self.last_sweep_ms = Some(ms);
                self.peers
                    .retain(|_, (_, last)| ms.saturating_sub(*last) < PEER_IDLE_MS);
            }
            if self.peers.len() >= PEER_CAPACITY {
                return true;
            }
        }
        let (tokens, last) = self.peers.entry(dest).or_insert((PEER_IDLE_MS, ms));
        let mut token = (*tokens + ms.saturating_sub(*last)).min(cap);
        *last = ms;
        let allowed = token >= cost;
        if allowed {
            token -= cost;
        }
        *tokens = token;
        allowed
    }
}

/// Whether an ICMP error may answer the packet at all (`__icmp_send`, `icmp6_send`'s
/// `is_ineligible`): never a non-first IPv4 fragment, nor an ICMP error (IPv4 types 3, 4,
/// 5, 11, 12 and unknown types above 18; ICMPv6 types below 128). Checked before the rate
/// limits, which it does not draw on.
pub fn may_answer(meta: &PacketMeta) -> bool {
    let first = !meta.frag.is_fragment || meta.frag.offset == 0;
    let error = match (meta.proto, meta.icmp_type) {
        (Some(ip_proto::ICMP), Some(t)) => matches!(t, 3 | 4 | 5 | 11 | 12) || t > 18,
        (Some(ip_proto::ICMPV6), Some(t)) => t < 128,
        _ => false,
    };
    (first || meta.dst.is_some_and(|d| d.is_ipv6())) && !error
}

/// Build the error `icmp_type`/`code` (`info`: the next-hop MTU of fragmentation needed /
/// packet too big) for the packet in `frame`, from `source` (the appliance's address on
/// the ingress interface, if known). `None` when the packet is not IP.
pub fn error_frame(
    frame: &[u8],
    meta: &PacketMeta,
    source: Option<IpAddr>,
    icmp_type: u8,
    code: u8,
    info: u32,
) -> Option<Vec<u8>> {
    let l3 = usize::from(meta.l3_offset);
    let dest = meta.src?;
    let datagram = frame.get(l3..)?;
    let datagram = &datagram[..datagram.len().min(meta.ip_len as usize)];
    let mut out = Vec::with_capacity(l3 + 576);
    out.extend_from_slice(frame.get(..l3)?);
    if l3 >= 14 {
        // Ethernet: back to the sender (tags and EtherType kept in place).
        out.copy_within(6..12, 0);
        out[6..12].copy_from_slice(&frame[0..6]);
    }
    append_error(&mut out, datagram, dest, source, (icmp_type, code, info))?;
    Some(out)
}

/// The error `answer` (made by [`error_frame`], IP header at `l3`) quoting `datagram`
/// instead of the packet it was made for: the same link header, addresses, type, code
/// and rest-of-header word.
pub fn requote(answer: &[u8], l3: usize, datagram: &[u8]) -> Option<Vec<u8>> {
    let ip = answer.get(l3..)?;
    let (source, dest, icmp): (IpAddr, IpAddr, &[u8]) = match ip.first()? >> 4 {
        4 => {
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (src.into(), dst.into(), ip.get(20..28)?)
        }
        6 => {
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (src.into(), dst.into(), ip.get(40..48)?)
        }
        _ => return None,
    };
    let source = (!source.is_unspecified()).then_some(source);
    let info = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]);
    let mut out = answer[..l3].to_vec();
    append_error(&mut out, datagram, dest, source, (icmp[0], icmp[1], info))?;
    Some(out)
}

/// Append the IP header and ICMP / ICMPv6 error (type, code, rest-of-header word)
/// quoting as much of `datagram` as fits, from `source` to `dest`.
fn append_error(
    out: &mut Vec<u8>,
    datagram: &[u8],
    dest: IpAddr,
    source: Option<IpAddr>,
    (icmp_type, code, info): (u8, u8, u32),
) -> Option<()> {
    match dest {
        IpAddr::V4(dest) => {
            let tos = datagram.get(1).copied().unwrap_or(0) & 0x1e | 0xc0;
            let quoted = &datagram[..datagram.len().min(576 - 28)];
            let total = (28 + quoted.len()) as u16;
            let src = match source {
                Some(IpAddr::V4(a)) => a,
                _ => std::net::Ipv4Addr::UNSPECIFIED,
            };
            let start = out.len();
            out.extend_from_slice(&[0x45, tos]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 64, ip_proto::ICMP, 0, 0]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dest.octets());
            let header: &[u8; 20] = out[start..start + 20].try_into().ok()?;
            let sum = checksum::field_bytes(checksum::ipv4_header(header));
            out[start + 10..start + 12].copy_from_slice(&sum);
            let icmp = out.len();
            out.extend_from_slice(&[icmp_type, code, 0, 0]);
            out.extend_from_slice(&info.to_be_bytes());
            out.extend_from_slice(quoted);
            let sum = checksum::field_bytes(checksum::partial(&out[icmp..]));
            out[icmp + 2..icmp + 4].copy_from_slice(&sum);
        }
        IpAddr::V6(dest) => {
            let quoted = &datagram[..datagram.len().min(1280 - 48)];
            let length = (8 + quoted.len()) as u32;
            let src = match source {
                Some(IpAddr::V6(a)) => a,
                _ => std::net::Ipv6Addr::UNSPECIFIED,
            };
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(length as u16).to_be_bytes());
            out.extend_from_slice(&[ip_proto::ICMPV6, 64]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dest.octets());
            let icmp = out.len();
            out.extend_from_slice(&[icmp_type, code, 0, 0]);
            out.extend_from_slice(&info.to_be_bytes());
            out.extend_from_slice(quoted);
            let pseudo = checksum::pseudo_header_v6(src, dest, ip_proto::ICMPV6, length);
            let sum = checksum::field_bytes(pseudo + checksum::partial(&out[icmp..]));
            out[icmp + 2..icmp + 4].copy_from_slice(&sum);
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_a_burst_of_six_then_one_per_interval() {
        let mut limiter = IcmpLimiter::default();
        let limits = IcmpLimits::default();
        let dest: IpAddr = "192.0.2.1".parse().unwrap();
        let sent = (0..10)
            .filter(|_| limiter.allow(&limits, 0, dest, 11, 0, 32))
            .count();
        assert_eq!(sent, 6);
        assert!(!limiter.allow(&limits, 999_000_000, dest, 11, 0, 32));
        assert!(limiter.allow(&limits, 1_000_000_000, dest, 11, 0, 32));
        // Fragmentation needed is never limited; nor are types outside the mask.
        assert!(limiter.allow(&limits, 1_000_000_000, dest, 3, 4, 32));
        assert!(limiter.allow(&limits, 1_000_000_000, dest, 0, 0, 32));
    }

    #[test]
    fn unreachables_draw_on_the_route_error_bucket_then_the_icmp_one() {
        let mut limiter = IcmpLimiter::default();
        let limits = IcmpLimits::default();
        let dest: IpAddr = "192.0.2.1".parse().unwrap();
        let mut send = |at: u64| {
            limiter.route_error_allow(dest, at) && limiter.allow(&limits, at, dest, 3, 0, 32)
        };
        // 5 s of burst, 2 s per message (1 s each bucket): two at once, then one every 2 s.
        let at_once = (0..6).filter(|_| send(0)).count();
        assert_eq!(at_once, 2);
        assert!(!send(1_500_000_000));
        assert!(send(4_000_000_000));
    }

    #[test]
    fn the_global_bucket_caps_errors_to_many_peers() {
        let mut limiter = IcmpLimiter::default();
        let limits = IcmpLimits::default();
        let sent = (0..200u32)
            .filter(|i| {
                let dest = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                limiter.allow(&limits, 0, dest, 11, 0, 32)
            })
            .count();
        assert_eq!(sent, 50);
    }

    #[test]
    fn ipv6_intervals_shrink_with_the_route_prefix() {
        let mut limiter = IcmpLimiter::default();
        let limits = IcmpLimits::default();
        let dest: IpAddr = "2001:db8::1".parse().unwrap();
        // Default route (prefix 0): 100 ms >> 4 = 6 ms per message, burst 6.
        for _ in 0..6 {
            assert!(limiter.allow(&limits, 0, dest, 3, 0, 0));
        }
        assert!(!limiter.allow(&limits, 5_000_000, dest, 3, 0, 0));
        assert!(limiter.allow(&limits, 11_000_000, dest, 3, 0, 0));
        assert!(limiter.allow(&limits, 11_000_000, dest, 2, 0, 0), "PTB");
    }
}
