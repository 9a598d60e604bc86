//! The SipHash round (Aumasson & Bernstein), shared by the hand-unrolled SipHash variants
//! on hot paths: the shield's SYN cookies (SipHash-2-4 over whole words, as Linux) and the
//! simulator's receive-queue hash (SipHash-1-3). Streaming SipHash elsewhere uses the
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
