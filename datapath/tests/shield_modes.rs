//! Protection modes (forced and automatic, with hysteresis), known sessions, bad/stale
//! cookies and the bounded session table, as sequences of fixture packets.

mod shield_common;

use std::net::Ipv4Addr;

use datapath::packet::builder::PacketBuilder;
use datapath::shield::{
    MODE_SURGE, MODE_SYN_COOKIES, MODE_TTL_FILTER, MODE_UNMATCHED_DROP, ModeChange, Shield,
};
use datapath::verdict::{DropReason, NS_PER_SEC};
use shield_common::*;

const MS: u64 = 1_000_000;

fn syn_from(source: u32, ttl: u8) -> PacketBuilder {
    PacketBuilder::eth()
        .ipv4(Ipv4Addr::from(source), Ipv4Addr::new(192, 0, 2, 10))
        .ttl(ttl)
        .tcp(40_000, 443)
        .syn()
        .seq_ack(1000, 0)
        .mss(1460)
}

fn context(shield: &Shield) -> datapath::shield::ContextId {
    shield.contexts().nth(1).expect("the 192.0.2.10 context")
}

fn with_context(extra: &str) -> Shield {
    shield(&format!(
        "{extra}\n[[context]]\ndst = \"192.0.2.10\"\nprotected_tcp_ports = [443]\n"
    ))
}

#[test]
fn syn_cookies_switch_on_at_the_syn_rate_and_off_after_hold() {
    let mut shield = with_context("[thresholds]\nsyn_rate_on = 100\nsyn_rate_off = 50\n");
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    for n in 0..100 {
        let outcome = run(
            &mut shield,
            n * MS,
            &syn_from(base + n as u32, 64).build(),
            0,
        );
        assert_eq!(outcome.flow, PASS, "SYN {n} below the rate passes");
    }
    let outcome = run(&mut shield, 100 * MS, &syn_from(base + 100, 64).build(), 0);
    assert_eq!(
        outcome.flow, REPLY,
        "the 101st SYN in the window gets a cookie"
    );
    let id = context(&shield);
    assert_eq!(shield.mode_bits(id), MODE_SYN_COOKIES);
    // Quiet: still on during the hold time, off at the first quiet window after it.
    run(
        &mut shield,
        5 * NS_PER_SEC,
        &udp("10.9.9.9", 1, "192.0.2.10", 9).build(),
        0,
    );
    assert_eq!(shield.mode_bits(id), MODE_SYN_COOKIES);
    run(
        &mut shield,
        11 * NS_PER_SEC,
        &udp("10.9.9.9", 1, "192.0.2.10", 9).build(),
        0,
    );
    assert_eq!(shield.mode_bits(id), 0);
    assert_eq!(
        shield.mode_timeline(id),
        &[
            ModeChange {
                time_ns: 100 * MS,
                bits: MODE_SYN_COOKIES
            },
            ModeChange {
                time_ns: 11 * NS_PER_SEC,
                bits: 0
            }
        ]
    );
    assert_eq!(shield.counters(id).sessions_created, 100);
}

#[test]
fn syn_cookies_switch_on_when_half_open_sessions_never_complete() {
    let mut shield = with_context("[thresholds]\nhalf_open_min = 10\n");
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    for n in 0..20 {
        run(
            &mut shield,
            n * MS,
            &syn_from(base + n as u32, 64).build(),
            0,
        );
    }
    let id = context(&shield);
    assert_eq!(shield.mode_bits(id), 0, "judged when the window closes");
    let outcome = run(&mut shield, 1001 * MS, &syn_from(base + 99, 64).build(), 0);
    assert_eq!(outcome.flow, REPLY);
    assert_eq!(shield.mode_bits(id), MODE_SYN_COOKIES);
}

#[test]
fn known_sessions_without_cookies() {
    let mut shield = with_context("syn_cookies = \"off\"");
    let client = |builder: PacketBuilder| builder.build();
    let table = [
        (
            "stray ACK without session",
            client(tcp("10.0.0.1", 40_000, "192.0.2.10", 443).seq_ack(5, 5)),
            dropped(DropReason::NoSession),
        ),
        (
            "SYN passes, half-open",
            client(
                tcp("10.0.0.1", 40_000, "192.0.2.10", 443)
                    .syn()
                    .seq_ack(9, 0),
            ),
            PASS,
        ),
        (
            "ACK completes",
            client(tcp("10.0.0.1", 40_000, "192.0.2.10", 443).seq_ack(10, 501)),
            PASS,
        ),
        (
            "data passes",
            client(
                tcp("10.0.0.1", 40_000, "192.0.2.10", 443)
                    .seq_ack(10, 501)
                    .payload(b"GET /"),
            ),
            PASS,
        ),
        (
            "RST passes and closes",
            client(tcp("10.0.0.1", 40_000, "192.0.2.10", 443).rst()),
            PASS,
        ),
    ];
    for (name, frame, verdict) in table {
        assert_eq!(run(&mut shield, MS, &frame, 0).flow, verdict, "{name}");
    }
    let counters = shield.counters(context(&shield));
    assert_eq!(counters.sessions_created, 1);
    assert_eq!(shield.table_stats().sessions, 1);
    // The closed session expires and is reclaimed by the next lookup.
    let late = tcp("10.0.0.1", 40_000, "192.0.2.10", 443).seq_ack(10, 501);
    let outcome = run(&mut shield, 20 * NS_PER_SEC, &late.build(), 0);
    assert_eq!(outcome.flow, dropped(DropReason::NoSession));
    assert_eq!(shield.counters(context(&shield)).sessions_expired, 1);
    assert_eq!(shield.table_stats().sessions, 0);
}

fn complete_handshake(shield: &mut Shield, source: &str, ttl: u8) {
    let syn = tcp(source, 40_000, "192.0.2.10", 443)
        .ttl(ttl)
        .syn()
        .seq_ack(9, 0);
    assert_eq!(run(shield, MS, &syn.build(), 0).flow, PASS);
    let ack = tcp(source, 40_000, "192.0.2.10", 443)
        .ttl(ttl)
        .seq_ack(10, 1);
    assert_eq!(run(shield, MS, &ack.build(), 0).flow, PASS);
}

#[test]
fn ttl_filter_forced_on_drops_unknown_ttls_once_one_is_learned() {
    let mut shield = with_context("syn_cookies = \"off\"\nttl_filter = \"on\"");
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    assert_eq!(
        run(&mut shield, MS, &syn_from(base + 1, 50).build(), 0).flow,
        PASS
    );
    complete_handshake(&mut shield, "10.1.1.1", 64);
    let table = [
        (syn_from(base + 2, 64), PASS),
        (syn_from(base + 3, 50), dropped(DropReason::Ttl)),
    ];
    for (frame, verdict) in table {
        assert_eq!(run(&mut shield, 2 * MS, &frame.build(), 0).flow, verdict);
    }
    assert_eq!(shield.mode_bits(context(&shield)), MODE_TTL_FILTER);
}

#[test]
fn ttl_filter_auto_switches_on_at_the_unknown_ttl_rate() {
    let mut shield = with_context("syn_cookies = \"off\"\n[thresholds]\nunknown_ttl_rate_on = 3\n");
    complete_handshake(&mut shield, "10.1.1.1", 64);
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let verdicts: Vec<_> = (0..5)
        .map(|n| run(&mut shield, 2 * MS, &syn_from(base + n, 99).build(), 0).flow)
        .collect();
    let ttl = dropped(DropReason::Ttl);
    assert_eq!(verdicts, [PASS, PASS, PASS, ttl, ttl]);
    assert_eq!(shield.mode_bits(context(&shield)), MODE_TTL_FILTER);
}

#[test]
fn surge_drops_a_source_above_its_rate() {
    let mut shield = with_context("syn_cookies = \"on\"\n[thresholds]\nsource_syn_rate_max = 3\n");
    let source = u32::from(Ipv4Addr::new(10, 0, 0, 1));
    let verdicts: Vec<_> = (0..5)
        .map(|n| run(&mut shield, n * MS, &syn_from(source, 64).build(), 0).flow)
        .collect();
    let rate = dropped(DropReason::Rate);
    assert_eq!(verdicts, [REPLY, REPLY, REPLY, rate, rate]);
    let other = run(&mut shield, 6 * MS, &syn_from(source + 1, 64).build(), 0);
    assert_eq!(other.flow, REPLY, "other sources are not limited");
    let id = context(&shield);
    assert_eq!(shield.mode_bits(id), MODE_SYN_COOKIES | MODE_SURGE);
    // The next window the source may send again.
    let later = run(&mut shield, 1500 * MS, &syn_from(source, 64).build(), 0);
    assert_eq!(later.flow, REPLY);
}

#[test]
fn surge_forced_off_never_limits() {
    let mut shield = with_context(
        "syn_cookies = \"on\"\nsurge = \"off\"\n[thresholds]\nsource_syn_rate_max = 1\n",
    );
    for n in 0..5 {
        let outcome = run(&mut shield, n * MS, &syn_from(167_772_161, 64).build(), 0);
        assert_eq!(outcome.flow, REPLY);
    }
    assert_eq!(shield.table_stats().sources, 0);
}

#[test]
fn unmatched_drop_auto() {
    let mut shield =
        with_context("unmatched_drop = \"auto\"\n[thresholds]\nunmatched_rate_on = 2\n");
    let frame = udp("10.0.0.1", 1, "192.0.2.10", 9).build();
    let verdicts: Vec<_> = (0..4)
        .map(|n| run(&mut shield, n * MS, &frame, 0).flow)
        .collect();
    let unmatched = dropped(DropReason::Unmatched);
    assert_eq!(verdicts, [PASS, PASS, unmatched, unmatched]);
    assert_eq!(shield.mode_bits(context(&shield)), MODE_UNMATCHED_DROP);
}

#[test]
fn bad_cookie_rst_and_stale_cookie() {
    let mut shield = with_context("syn_cookies = \"on\"\nbad_cookie = \"rst\"");
    let forged = tcp("10.0.0.1", 40_000, "192.0.2.10", 443).seq_ack(1001, 0xdead_beef);
    let outcome = run(&mut shield, MS, &forged.build(), 0);
    assert_eq!(outcome.flow, dropped(DropReason::BadCookie));
    let rst = meta_of(&outcome.emitted[0].bytes);
    assert_eq!(rst.tcp_flags, datapath::packet::tcp_flags::RST);
    assert_eq!(rst.tcp.unwrap().seq, 0xdead_beef);
    assert_eq!((rst.sport, rst.dport), (Some(443), Some(40_000)));

    let syn = run(&mut shield, MS, &syn_from(167_772_161, 64).build(), 0);
    let cookie = meta_of(&syn.emitted[0].bytes).tcp.unwrap().seq;
    let ack = tcp("10.0.0.1", 40_000, "192.0.2.10", 443).seq_ack(1001, cookie.wrapping_add(1));
    let stale = run(&mut shield, 130 * NS_PER_SEC, &ack.build(), 0);
    assert_eq!(stale.flow, dropped(DropReason::StaleCookie));
    let counters = shield.counters(context(&shield));
    assert_eq!(counters.rst_sent, 2);
    assert_eq!(counters.drops(DropReason::StaleCookie), 1);
}

#[test]
fn full_session_table_evicts_half_open_then_refuses() {
    let mut shield = with_context("syn_cookies = \"off\"\nsession_table_capacity = 8");
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    for n in 0..9 {
        let outcome = run(
            &mut shield,
            n * MS,
            &syn_from(base + n as u32, 64).build(),
            0,
        );
        assert_eq!(outcome.flow, PASS);
    }
    let id = context(&shield);
    assert_eq!(shield.counters(id).sessions_evicted, 1);
    // Complete 8 handshakes: established sessions are never evicted.
    for n in 1..9 {
        let ack = PacketBuilder::eth()
            .ipv4(Ipv4Addr::from(base + n), Ipv4Addr::new(192, 0, 2, 10))
            .tcp(40_000, 443)
            .seq_ack(1001, 1);
        assert_eq!(run(&mut shield, 20 * MS, &ack.build(), 0).flow, PASS);
    }
    let refused = run(&mut shield, 30 * MS, &syn_from(base + 100, 64).build(), 0);
    assert_eq!(refused.flow, dropped(DropReason::TableFull));
    let stats = shield.table_stats();
    assert_eq!((stats.sessions, stats.sessions_capacity), (8, 8));
    assert_eq!(stats.sessions_refused, 1);
}
