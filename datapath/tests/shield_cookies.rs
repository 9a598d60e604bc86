//! Property tests of the SYN cookies: valid for every counter age below two periods and
//! rejected from two on; a wrong 4-tuple, a wrong ISN or a tampered ACK is rejected; the MSS
//! rounds down to a table value.
//!
//! As in Linux, the cookie is linear in the ISN and the MSS index sits in its low bits, so
//! an ISN or ACK off by at most 3 (mod 2^24) can still decode to a *smaller* MSS index; the
//! properties exclude exactly those deltas.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::shield::SessionKey;
use datapath::shield::cookie::{
    COOKIE_MASK, COOKIE_PERIOD_NS, CookieError, MSS_TABLE_V4, MSS_TABLE_V6,
    SECRET_ROTATION_PERIODS, SynCookies,
};
use proptest::prelude::*;

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn flow() -> impl Strategy<Value = SessionKey> {
    (address(), any::<[u8; 16]>(), any::<u16>(), any::<u16>()).prop_map(
        |(src, other, sport, dport)| {
            let dst = match src {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(other[0], other[1], other[2], 1)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(other)),
            };
            SessionKey {
                src,
                dst,
                sport,
                dport,
            }
        },
    )
}

/// A time: counter period `period`, `offset` ns into it.
fn at(period: u64, offset: u64) -> u64 {
    period * COOKIE_PERIOD_NS + offset % COOKIE_PERIOD_NS
}

/// A delta whose low 24 bits are not within ±3 (the linear slack of the MSS index).
fn far_delta() -> impl Strategy<Value = u32> {
    any::<u32>().prop_filter("outside the ±3 slack", |d| {
        let low = d & COOKIE_MASK;
        (4..=COOKIE_MASK - 3).contains(&low)
    })
}

fn expected_mss(flow: &SessionKey, offered: u16) -> u16 {
    let table = if flow.src.is_ipv6() {
        MSS_TABLE_V6
    } else {
        MSS_TABLE_V4
    };
    table
        .iter()
        .rev()
        .find(|&&m| offered >= m)
        .copied()
        .unwrap_or(table[0])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_below_two_periods(
        seed in any::<u64>(), flow in flow(), isn in any::<u32>(), mss in any::<u16>(),
        period in 0u64..1_000_000, age in 0u64..2, issue_offset in any::<u64>(),
        check_offset in any::<u64>(),
    ) {
        let mut cookies = SynCookies::new(seed);
        let (cookie, encoded) = cookies.generate(at(period, issue_offset), &flow, isn, mss);
        prop_assert_eq!(encoded, expected_mss(&flow, mss));
        let checked = cookies.check(at(period + age, check_offset), &flow, isn, cookie);
        prop_assert_eq!(checked, Ok(encoded));
    }

    #[test]
    fn rejected_from_two_periods(
        seed in any::<u64>(), flow in flow(), isn in any::<u32>(), mss in any::<u16>(),
        period in 0u64..1_000_000, age in 2u64..300, offset in any::<u64>(),
    ) {
        let mut cookies = SynCookies::new(seed);
        let (cookie, _) = cookies.generate(at(period, offset), &flow, isn, mss);
        let checked = cookies.check(at(period + age, offset), &flow, isn, cookie);
        prop_assert!(checked.is_err(), "age {} accepted", age);
        let same_epoch = (period + age) / SECRET_ROTATION_PERIODS == period / SECRET_ROTATION_PERIODS;
        if same_epoch {
            prop_assert_eq!(checked, Err(CookieError::Stale));
        }
    }

    #[test]
    fn wrong_four_tuple_rejected(
        seed in any::<u64>(), flow in flow(), other in flow(), isn in any::<u32>(),
        mss in any::<u16>(), period in 0u64..1_000_000, which in 0usize..4,
    ) {
        let mut cookies = SynCookies::new(seed);
        let now = at(period, 0);
        let (cookie, _) = cookies.generate(now, &flow, isn, mss);
        let mut wrong = flow;
        match which {
            0 => wrong.src = other.src,
            1 => wrong.dst = other.dst,
            2 => wrong.sport = other.sport,
            _ => wrong.dport = other.dport,
        }
        prop_assume!(wrong != flow);
        prop_assert!(cookies.check(now, &wrong, isn, cookie).is_err());
    }

    #[test]
    fn wrong_isn_rejected(
        seed in any::<u64>(), flow in flow(), isn in any::<u32>(), mss in any::<u16>(),
        period in 0u64..1_000_000, delta in far_delta(),
    ) {
        let mut cookies = SynCookies::new(seed);
        let now = at(period, 0);
        let (cookie, _) = cookies.generate(now, &flow, isn, mss);
        prop_assert!(cookies.check(now, &flow, isn.wrapping_add(delta), cookie).is_err());
    }

    #[test]
    fn tampered_ack_rejected(
        seed in any::<u64>(), flow in flow(), isn in any::<u32>(), mss in any::<u16>(),
        period in 0u64..1_000_000, delta in far_delta(),
    ) {
        let mut cookies = SynCookies::new(seed);
        let now = at(period, 0);
        let (cookie, _) = cookies.generate(now, &flow, isn, mss);
        prop_assert!(cookies.check(now, &flow, isn, cookie.wrapping_add(delta)).is_err());
    }

    #[test]
    fn mss_rounds_down_to_a_table_value(flow in flow(), mss in any::<u16>()) {
        let (index, rounded) = SynCookies::mss_index(&flow, mss);
        let table = if flow.src.is_ipv6() { MSS_TABLE_V6 } else { MSS_TABLE_V4 };
        prop_assert_eq!(table[index as usize], rounded);
        prop_assert!(rounded <= mss || rounded == table[0]);
        prop_assert!(table.iter().all(|&m| m > mss || m <= rounded));
    }
}

#[test]
fn seeds_give_different_cookies_and_runs_repeat() {
    let flow = SessionKey {
        src: "198.51.100.7".parse().unwrap(),
        dst: "192.0.2.10".parse().unwrap(),
        sport: 40_000,
        dport: 443,
    };
    let first = SynCookies::new(1).generate(0, &flow, 5, 1460).0;
    assert_eq!(first, SynCookies::new(1).generate(0, &flow, 5, 1460).0);
    assert_ne!(first, SynCookies::new(2).generate(0, &flow, 5, 1460).0);
}

#[test]
fn secrets_rotate_but_cookies_survive_the_boundary() {
    let flow = SessionKey {
        src: "2001:db8::7".parse().unwrap(),
        dst: "2001:db8::10".parse().unwrap(),
        sport: 40_000,
        dport: 443,
    };
    let mut cookies = SynCookies::new(9);
    let last_period = SECRET_ROTATION_PERIODS - 1;
    let (cookie, mss) = cookies.generate(at(last_period, 5), &flow, 77, 9000);
    assert_eq!(mss, 8940);
    assert_eq!(
        cookies.check(at(last_period + 1, 5), &flow, 77, cookie),
        Ok(8940)
    );
    // The same 4-tuple, ISN and counter byte 256 periods later do not validate.
    let (old, _) = cookies.generate(at(3, 0), &flow, 77, 9000);
    assert!(cookies.check(at(3 + 256, 0), &flow, 77, old).is_err());
}
