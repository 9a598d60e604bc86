//! SYN cookies computed the way Linux computes them (`net/ipv4/syncookies.c`,
//! `net/ipv6/syncookies.c`), written from the published algorithm, not copied.
//!
//! ```text
//! cookie = H(secret0; 4-tuple, 0) + client_isn + (count << 24)
//!        + ((H(secret1; 4-tuple, count) + mss_index) & COOKIE_MASK)
//! ```
//! `count` is a minute counter ([`COOKIE_PERIOD_NS`]); a cookie is valid while the counter
//! has advanced by less than [`MAX_COOKIE_AGE_PERIODS`]. The MSS is rounded *down* to one of
//! four table values and its index travels in the low 24 bits. Window scale, SACK and ECN are
//! kept only through the TCP timestamp the cookie SYN-ACK carries (the kernel's
//! `cookie_init_timestamp` / `cookie_timestamp_decode`): the low 6 bits of TSval.
//!
//! Differences from the kernel, on purpose: the keyed hash is SipHash-2-4 from the
//! `siphasher` crate with secrets derived from the scenario seed (the kernel draws random
//! secrets once per boot); and secrets rotate every [`SECRET_ROTATION_PERIODS`] counter
//! periods, derived per epoch so no state is kept. A cookie whose counter age is two or more
//! is told apart from a forged one ([`CookieError::Stale`] vs [`CookieError::Bad`]) by
//! checking it against the secrets of the period it claims. This module does no I/O and
//! builds no packets.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

use super::SessionKey;
use crate::verdict::{NS_PER_SEC, TimeNs};

/// Bits of the cookie below the counter.
pub const COOKIE_BITS: u32 = 24;
/// Mask of the bits below the counter.
pub const COOKIE_MASK: u32 = (1 << COOKIE_BITS) - 1;
/// One counter period: a minute, as the kernel's `TCP_SYNCOOKIE_PERIOD`.
pub const COOKIE_PERIOD_NS: TimeNs = 60 * NS_PER_SEC;
/// A cookie is valid while `now_count - cookie_count < MAX_COOKIE_AGE_PERIODS`
/// (the kernel's `MAX_SYNCOOKIE_AGE`).
pub const MAX_COOKIE_AGE_PERIODS: u32 = 2;
/// Secrets are derived afresh every this many counter periods.
pub const SECRET_ROTATION_PERIODS: u64 = 64;
/// MSS values an IPv4 cookie can carry (index 0..=3).
pub const MSS_TABLE_V4: [u16; 4] = [536, 1300, 1440, 1460];
/// MSS values an IPv6 cookie can carry (index 0..=3).
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];

/// Low bits of the cookie timestamp: window-scale shift (15 = none).
pub const TS_OPT_WSCALE_MASK: u32 = 0xf;
/// Cookie timestamp bit: SACK was offered.
pub const TS_OPT_SACK: u32 = 1 << 4;
/// Cookie timestamp bit: ECN was offered.
pub const TS_OPT_ECN: u32 = 1 << 5;
/// Number of option bits at the bottom of the cookie timestamp.
pub const TS_BITS: u32 = 6;

impl SessionKey {
    fn mss_table(&self) -> &'static [u16; 4] {
        if self.src.is_ipv6() {
            &MSS_TABLE_V6
        } else {
            &MSS_TABLE_V4
        }
    }
}

/// Why a cookie ACK was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieError {
    /// The cookie does not decode for this 4-tuple and ISN.
    Bad,
    /// The cookie is well formed but its counter is two or more periods old.
    Stale,
}

/// TCP options a cookie keeps through the timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieOptions {
    /// The client's window-scale shift, if it offered one.
    pub window_scale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// ECN offered. The shield's cookie SYN-ACKs never set it, as nft synproxy (its rule
    /// flags mask the ECN bit off); decoding still reads bit 5.
    pub ecn: bool,
}

/// The SYN cookie generator and checker for one shield.
#[derive(Clone, Debug)]
pub struct SynCookies {
    seed: u64,
    /// (epoch, keys for hash 0 and hash 1) of the last derivation.
    cache: [(u64, [(u64, u64); 2]); 2],
}

impl SynCookies {
    /// Cookies keyed by secrets derived from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut cookies = Self {
            seed,
            cache: [(0, [(0, 0); 2]); 2],
        };
        cookies.cache[0] = (0, cookies.derive(0));
        cookies.cache[1] = (1, cookies.derive(1));
        cookies
    }

    /// The minute counter at `now`.
    pub fn counter(now: TimeNs) -> u64 {
        now / COOKIE_PERIOD_NS
    }

    fn derive(&self, epoch: u64) -> [(u64, u64); 2] {
        let mut keys = [(0, 0); 2];
        for (which, key) in keys.iter_mut().enumerate() {
            let mut half = [0u64; 2];
            for (part, value) in half.iter_mut().enumerate() {
                let mut hasher = SipHasher24::new_with_keys(self.seed, 0x6c62_7369_6d2d_636b);
                hasher.write(b"lbsim syncookie secret");
                hasher.write_u64(epoch);
                hasher.write_u8(which as u8);
                hasher.write_u8(part as u8);
                *value = hasher.finish();
            }
            *key = (half[0], half[1]);
        }
        keys
    }

    fn keys(&mut self, epoch: u64) -> [(u64, u64); 2] {
        let slot = (epoch & 1) as usize;
        if self.cache[slot].0 != epoch {
            self.cache[slot] = (epoch, self.derive(epoch));
        }
        self.cache[slot].1
    }

    /// The keyed hash of the 4-tuple and counter with secret `which` (0 or 1) of the
    /// epoch that `count` belongs to (see [`FlowWords`] for the message).
    fn hash(&mut self, flow: &SessionKey, count: u64, which: usize, epoch_count: u64) -> u32 {
        let (k0, k1) = self.keys(epoch_count / SECRET_ROTATION_PERIODS)[which];
        FlowWords::of(flow).hash(k0, k1, count)
    }

    /// The MSS index and table value for an offered MSS, rounded down (never below the
    /// first entry).
    pub fn mss_index(flow: &SessionKey, offered_mss: u16) -> (u32, u16) {
        let table = flow.mss_table();
        // The last entry not above `offered_mss` (0 when all are): the table ascends, so
        // that is the number of entries after the first that are not above it.
        let index = usize::from(offered_mss >= table[1])
            + usize::from(offered_mss >= table[2])
            + usize::from(offered_mss >= table[3]);
        (index as u32, table[index])
    }

    /// The cookie (our ISN) for a SYN with client ISN `client_isn` and offered MSS, and the
    /// MSS it encodes.
    #[inline]
    pub fn generate(
        &mut self,
        now: TimeNs,
        flow: &SessionKey,
        client_isn: u32,
        offered_mss: u16,
    ) -> (u32, u16) {
        let count = Self::counter(now);
        let (index, mss) = Self::mss_index(flow, offered_mss);
        let cookie = self.cookie_at(count, flow, client_isn, index);
        (cookie, mss)
    }

    #[inline]
    fn cookie_at(&mut self, count: u64, flow: &SessionKey, client_isn: u32, index: u32) -> u32 {
        // Both hashes use the secrets of `count`'s epoch and the same flow words.
        let [(k00, k01), (k10, k11)] = self.keys(count / SECRET_ROTATION_PERIODS);
        let (hash0, hash1) = flow_hash_pair(flow, (k00, k01, 0), (k10, k11, count));
        hash0
            .wrapping_add(client_isn)
            .wrapping_add((count as u32) << COOKIE_BITS)
            .wrapping_add(hash1.wrapping_add(index) & COOKIE_MASK)
    }

    /// Check the cookie ACK of a handshake: `client_isn` is the ACK's sequence number − 1,
    /// `cookie` its acknowledgement number − 1. Returns the MSS the cookie carries.
    pub fn check(
        &mut self,
        now: TimeNs,
        flow: &SessionKey,
        client_isn: u32,
        cookie: u32,
    ) -> Result<u16, CookieError> {
        let count = Self::counter(now);
        let epoch = count / SECRET_ROTATION_PERIODS;
        let mut verdict = Err(CookieError::Bad);
        for candidate in [Some(epoch), epoch.checked_sub(1)].into_iter().flatten() {
            if let Some((age, data)) = self.strip(count, candidate, flow, client_isn, cookie) {
                verdict = if age < u64::from(MAX_COOKIE_AGE_PERIODS) {
                    Ok(flow.mss_table()[data as usize])
                } else {
                    Err(CookieError::Stale)
                };
                break;
            }
        }
        verdict
    }

    /// Strip the cookie with the secrets of `epoch`: if its counter and data bits are
    /// consistent with a cookie issued in that epoch, its counter age (in periods, mod 256
    /// as in the kernel) and its data bits (the MSS index).
    fn strip(
        &mut self,
        count: u64,
        epoch: u64,
        flow: &SessionKey,
        client_isn: u32,
        cookie: u32,
    ) -> Option<(u64, u32)> {
        let hash0 = self.hash(flow, 0, 0, epoch * SECRET_ROTATION_PERIODS);
        let rest = cookie.wrapping_sub(hash0.wrapping_add(client_isn));
        let age = u64::from((count as u32).wrapping_sub(rest >> COOKIE_BITS) & 0xff);
        let issued = count.checked_sub(age)?;
        if issued / SECRET_ROTATION_PERIODS != epoch {
            return None;
        }
        let hash1 = self.hash(flow, issued, 1, issued);
        let data = rest.wrapping_sub(hash1) & COOKIE_MASK;
        (data < 4).then_some((age, data))
    }

    /// The TSval of a cookie SYN-ACK: the millisecond clock with its low 6 bits replaced by
    /// the options, never ahead of the clock.
    pub fn timestamp(now: TimeNs, options: CookieOptions) -> u32 {
        let ts_now = (now / 1_000_000) as u32;
        let mut bits = options.window_scale.map_or(TS_OPT_WSCALE_MASK, |w| {
            u32::from(w.min(14)) & TS_OPT_WSCALE_MASK
        });
        if options.sack_permitted {
            bits |= TS_OPT_SACK;
        }
        if options.ecn {
            bits |= TS_OPT_ECN;
        }
        let mut ts = (ts_now >> TS_BITS) << TS_BITS | bits;
        if ts > ts_now {
            ts = ts.wrapping_sub(1 << TS_BITS);
        }
        ts
    }

    /// The options a cookie timestamp carries back (the ACK's TSecr).
    pub fn decode_timestamp(tsecr: u32) -> CookieOptions {
        let shift = tsecr & TS_OPT_WSCALE_MASK;
        CookieOptions {
            window_scale: (shift != TS_OPT_WSCALE_MASK).then_some(shift as u8),
            sack_permitted: tsecr & TS_OPT_SACK != 0,
            ecn: tsecr & TS_OPT_ECN != 0,
        }
    }
}

/// The message a cookie hash is SipHash-2-4 of: the addresses (IPv4 as 4 bytes each,
/// otherwise both as 16 bytes, IPv4 mapped), then `sport << 16 | dport` and the counter as
/// native-endian `u32`s; as little-endian words, the last one (ports, counter) apart.
struct FlowWords {
    head: [u64; 4],
    head_len: usize,
    /// `sport << 16 | dport` as SipHash reads its native-endian bytes.
    ports: u64,
}

/// Four message bytes (native-endian `u32`, or octets) as SipHash reads them.
#[inline]
fn half_word(bytes: [u8; 4]) -> u64 {
    u64::from(u32::from_le_bytes(bytes))
}

/// `sport << 16 | dport` as SipHash reads its native-endian bytes.
#[inline(always)]
fn ports_word(flow: &SessionKey) -> u64 {
    half_word((u32::from(flow.sport) << 16 | u32::from(flow.dport)).to_ne_bytes())
}

/// Two hashes of the flow, each `(k0, k1, count)`, computed in lockstep: the two SipHash
/// dependency chains interleave instead of running one after the other. Each equals
/// [`FlowWords::hash`] with that key and counter.
#[inline(always)]
fn flow_hash_pair(
    flow: &SessionKey,
    first: (u64, u64, u64),
    second: (u64, u64, u64),
) -> (u32, u32) {
    let ports = ports_word(flow);
    match (&flow.src, &flow.dst) {
        // IPv4: one head word, known at compile time (no loop over the words).
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let head = [half_word(s.octets()) | half_word(d.octets()) << 32];
            hash_pair_words(&head, ports, first, second)
        }
        _ => {
            let words = FlowWords::wide(flow, ports);
            let mut head = [0; 4];
            head.copy_from_slice(&words.head[..4]);
            hash_pair_words(&head, ports, first, second)
        }
    }
}

/// The two hashes of [`flow_hash_pair`] for a head of `N` words known at compile time (the word loop
/// unrolls): the same two hashes.
#[inline(always)]
fn hash_pair_words<const N: usize>(
    head: &[u64; N],
    ports: u64,
    first: (u64, u64, u64),
    second: (u64, u64, u64),
) -> (u32, u32) {
    let tail = |count: u64| ports | half_word((count as u32).to_ne_bytes()) << 32;
    let mut a = sip_init(first.0, first.1);
    let mut b = sip_init(second.0, second.1);
    for &message in head {
        compress(&mut a, message);
        compress(&mut b, message);
    }
    compress(&mut a, tail(first.2));
    compress(&mut b, tail(second.2));
    let last = (((N as u64 + 1) * 8) & 0xff) << 56;
    compress(&mut a, last);
    compress(&mut b, last);
    (sip_finish(a) as u32, sip_finish(b) as u32)
}

impl FlowWords {
    #[inline(always)]
    fn of(flow: &SessionKey) -> Self {
        let ports = ports_word(flow);
        if let (IpAddr::V4(s), IpAddr::V4(d)) = (&flow.src, &flow.dst) {
            return Self {
                head: [half_word(s.octets()) | half_word(d.octets()) << 32, 0, 0, 0],
                head_len: 1,
                ports,
            };
        }
        Self::wide(flow, ports)
    }

    /// IPv6 (or mixed) addresses: both as 16 bytes, IPv4 mapped.
    #[inline(never)]
    fn wide(flow: &SessionKey, ports: u64) -> Self {
        let (s, d) = (ip_bytes(flow.src), ip_bytes(flow.dst));
        let half = |bytes: &[u8; 16], at: usize| {
            let mut eight = [0; 8];
            eight.copy_from_slice(&bytes[at..at + 8]);
            word(eight)
        };
        Self {
            head: [half(&s, 0), half(&s, 8), half(&d, 0), half(&d, 8)],
            head_len: 4,
            ports,
        }
    }

    /// The hash with key `(k0, k1)` and counter `count`, truncated to 32 bits.
    #[inline]
    fn hash(&self, k0: u64, k1: u64, count: u64) -> u32 {
        let tail = self.ports | half_word((count as u32).to_ne_bytes()) << 32;
        siphash24(k0, k1, &self.head[..self.head_len], tail) as u32
    }
}

/// SipHash's initial state for a key.
#[inline(always)]
fn sip_init(k0: u64, k1: u64) -> [u64; 4] {
    [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ]
}

/// SipHash-2-4's finalization (four SipRounds).
#[inline(always)]
fn sip_finish(mut v: [u64; 4]) -> u64 {
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

use crate::hash::siphash::sip_round;

/// Eight message bytes as SipHash reads them (little-endian).
#[inline]
fn word(bytes: [u8; 8]) -> u64 {
    u64::from_le_bytes(bytes)
}

/// Absorb one message word (two SipRounds).
#[inline(always)]
fn compress(v: &mut [u64; 4], message: u64) {
    v[3] ^= message;
    sip_round(v);
    sip_round(v);
    v[0] ^= message;
}

/// SipHash-2-4 (Aumasson & Bernstein) of a message made of whole 8-byte words (`head`,
/// then `last`): the same value `siphasher`'s `SipHasher24` gives for those bytes, without
/// its streaming buffer.
#[inline]
fn siphash24(k0: u64, k1: u64, head: &[u64], last_word: u64) -> u64 {
    let mut v = sip_init(k0, k1);
    for &message in head {
        compress(&mut v, message);
    }
    compress(&mut v, last_word);
    compress(&mut v, (((head.len() as u64 + 1) * 8) & 0xff) << 56);
    sip_finish(v)
}

fn ip_bytes(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> SessionKey {
        SessionKey {
            src: "198.51.100.7".parse().unwrap(),
            dst: "192.0.2.10".parse().unwrap(),
            sport: 40_000,
            dport: 443,
        }
    }

    #[test]
    fn round_trip_and_mss_rounding() {
        let mut cookies = SynCookies::new(7);
        let (cookie, mss) = cookies.generate(5 * NS_PER_SEC, &flow(), 1000, 1400);
        assert_eq!(mss, 1300);
        assert_eq!(
            cookies.check(6 * NS_PER_SEC, &flow(), 1000, cookie),
            Ok(1300)
        );
        assert_eq!(
            cookies.check(6 * NS_PER_SEC, &flow(), 1100, cookie),
            Err(CookieError::Bad)
        );
        assert_eq!(
            cookies.check(125 * NS_PER_SEC, &flow(), 1000, cookie),
            Err(CookieError::Stale)
        );
    }

    /// The word-wise SipHash-2-4 is the streaming one of the `siphasher` crate, fed the
    /// byte stream the cookie hash was first defined with (addresses, then `write_u32`s).
    #[test]
    fn hash_matches_the_streaming_siphasher() {
        let mut cookies = SynCookies::new(0x5eed);
        let flows = [
            flow(),
            SessionKey {
                src: "2001:db8::7".parse().unwrap(),
                dst: "2001:db8:1::10".parse().unwrap(),
                sport: 1,
                dport: 65_535,
            },
            SessionKey {
                src: "2001:db8::7".parse().unwrap(),
                dst: "192.0.2.1".parse().unwrap(),
                sport: 9,
                dport: 80,
            },
        ];
        for flow in flows {
            for (count, which, epoch_count) in [(0, 0, 0), (5, 1, 5), (70, 1, 70), (3, 0, 200)] {
                let (k0, k1) = cookies.keys(epoch_count / SECRET_ROTATION_PERIODS)[which];
                let mut hasher = SipHasher24::new_with_keys(k0, k1);
                match (flow.src, flow.dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        hasher.write(&s.octets());
                        hasher.write(&d.octets());
                    }
                    (s, d) => {
                        hasher.write(&ip_bytes(s));
                        hasher.write(&ip_bytes(d));
                    }
                }
                hasher.write_u32(u32::from(flow.sport) << 16 | u32::from(flow.dport));
                hasher.write_u32(count as u32);
                let expected = hasher.finish() as u32;
                assert_eq!(cookies.hash(&flow, count, which, epoch_count), expected);
                let (other0, other1) =
                    cookies.keys(epoch_count / SECRET_ROTATION_PERIODS)[1 - which];
                let other = cookies.hash(&flow, count + 1, 1 - which, epoch_count);
                assert_eq!(
                    flow_hash_pair(&flow, (k0, k1, count), (other0, other1, count + 1)),
                    (expected, other)
                );
            }
        }
    }

    #[test]
    fn timestamp_keeps_options_and_never_runs_ahead() {
        let options = CookieOptions {
            window_scale: Some(7),
            sack_permitted: true,
            ecn: false,
        };
        let now = 1_234_567 * 1_000_000;
        let ts = SynCookies::timestamp(now, options);
        assert!(ts <= 1_234_567);
        assert_eq!(SynCookies::decode_timestamp(ts), options);
        let none = SynCookies::timestamp(now, CookieOptions::default());
        assert_eq!(SynCookies::decode_timestamp(none), CookieOptions::default());
    }
}
