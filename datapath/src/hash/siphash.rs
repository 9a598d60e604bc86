//! The SipHash round (Aumasson & Bernstein), shared by the hand-unrolled SipHash variants
//! on hot paths: the shield's SYN cookies (SipHash-2-4 over whole words, as Linux), and
//! [`siphash13`] over a whole message for the shield's table buckets and the simulator's
//! receive-queue hash. Streaming SipHash elsewhere uses the
//! `siphasher` crate; the tests of both users compare against it.

/// One SipRound over the state `v`.
#[inline(always)]
pub fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-1-3 of a whole message under `keys` (one compression round per word, three to
/// finish): what `siphasher`'s `SipHasher13::new_with_keys(keys.0, keys.1)` gives for the
/// message written at once, without the streaming buffer.
#[inline(always)]
pub fn siphash13(keys: (u64, u64), message: &[u8]) -> u64 {
    let (k0, k1) = keys;
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let (words, tail) = message.as_chunks::<8>();
    for word in words {
        let m = u64::from_le_bytes(*word);
        v[3] ^= m;
        sip_round(&mut v);
        v[0] ^= m;
    }
    let mut last = (message.len() as u64) << 56;
    for (index, &byte) in tail.iter().enumerate() {
        last |= u64::from(byte) << (8 * index);
    }
    v[3] ^= last;
    sip_round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}
