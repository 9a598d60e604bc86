//! Runtime mode overrides (`Shield::override_modes`): forcing a mode on or off, handing it
//! back to the measurements, the contexts a target selects, the mode timeline, and the
//! errors of targets that name nothing.

mod shield_common;

use datapath::shield::{
    ContextId, ContextScope, InstanceScope, MODE_SURGE, MODE_SYN_COOKIES, MODE_UNMATCHED_DROP,
    Mode, ModeChange, ModeOverrideError, ModeSetting, Shield,
};
use datapath::verdict::DropReason;
use shield_common::*;

const MS: u64 = 1_000_000;

/// Instance 0 on eth0 with a `dst` and a `dst + vlan` context for 192.0.2.10; instance 1 on
/// eth1 with a `dst` context for the same address. SYN cookies go on above 5 SYNs/s.
fn two_instances() -> Shield {
    shield(
        r#"
        interfaces = ["eth0"]
        [thresholds]
        syn_rate_on = 5
        syn_rate_off = 1
        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [443]
        [[context]]
        dst = "192.0.2.10"
        vlan = 100
        protected_tcp_ports = [443]
        [[instance]]
        interfaces = ["eth1"]
        [[instance.context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [443]
        "#,
    )
}

fn syn(sport: u16) -> Vec<u8> {
    tcp("198.51.100.7", sport, "192.0.2.10", 443)
        .syn()
        .seq_ack(1000, 0)
        .mss(1460)
        .build()
}

fn named(shield: &Shield, ids: &[ContextId]) -> Vec<String> {
    ids.iter().map(|id| shield.context_name(*id)).collect()
}

#[test]
fn scopes_select_contexts() {
    let shield = two_instances();
    let dst = ip("192.0.2.10");
    let cases = [
        (
            InstanceScope::All,
            ContextScope::Default,
            vec!["shield/default", "shield.instance[0]/default"],
        ),
        (
            InstanceScope::All,
            ContextScope::Destination(dst),
            vec![
                "shield/192.0.2.10",
                "shield/192.0.2.10 vlan 100",
                "shield.instance[0]/192.0.2.10",
            ],
        ),
        (
            InstanceScope::Interface(0),
            ContextScope::Selector { dst, vlan: None },
            vec!["shield/192.0.2.10"],
        ),
        (
            InstanceScope::Instance(0),
            ContextScope::Selector {
                dst,
                vlan: Some(100),
            },
            vec!["shield/192.0.2.10 vlan 100"],
        ),
        (
            InstanceScope::Interface(1),
            ContextScope::Destination(dst),
            vec!["shield.instance[0]/192.0.2.10"],
        ),
    ];
    for (instances, context, expected) in cases {
        let found = shield.find_contexts(instances, context).expect("found");
        assert_eq!(
            named(&shield, &found),
            expected,
            "{instances:?} {context:?}"
        );
    }
}

#[test]
fn targets_that_name_nothing_are_errors() {
    let mut shield = two_instances();
    let other = ContextScope::Destination(ip("192.0.2.99"));
    let vlan = ContextScope::Selector {
        dst: ip("192.0.2.10"),
        vlan: Some(7),
    };
    let cases = [
        (InstanceScope::All, other, MODE_SYN_COOKIES),
        (InstanceScope::Interface(1), vlan, MODE_SYN_COOKIES),
        (
            InstanceScope::Instance(2),
            ContextScope::Default,
            MODE_SURGE,
        ),
        (
            InstanceScope::Interface(9),
            ContextScope::Default,
            MODE_SURGE,
        ),
        (InstanceScope::All, ContextScope::Default, 0),
        (InstanceScope::All, ContextScope::Default, 0x10),
    ];
    let mut rendered = Vec::new();
    for (instances, context, bits) in cases {
        let error = shield
            .override_modes(1, instances, context, bits, ModeSetting::On)
            .expect_err("names nothing");
        rendered.push(error.to_string());
    }
    assert_eq!(
        rendered,
        [
            "no shield context for 192.0.2.99 (any vlan)",
            "no shield context for 192.0.2.10 vlan 7",
            "no shield instance for Instance(2)",
            "no shield instance for Interface(9)",
            "mode bits 0x0 name no mode (0x1 syn cookies, 0x2 ttl filter, 0x4 unmatched drop, 0x8 surge)",
            "mode bits 0x10 name no mode (0x1 syn cookies, 0x2 ttl filter, 0x4 unmatched drop, 0x8 surge)",
        ]
    );
    assert_eq!(
        shield.override_modes(
            1,
            InstanceScope::All,
            other,
            MODE_SYN_COOKIES,
            ModeSetting::On
        ),
        Err(ModeOverrideError::NoSuchContext(other))
    );
    for id in shield.contexts().collect::<Vec<_>>() {
        assert_eq!(shield.mode_bits(id), 0, "no error changed a context");
        assert!(shield.mode_timeline(id).is_empty());
    }
}

#[test]
fn forced_cookies_on_then_off_then_auto() {
    let mut shield = two_instances();
    let target = ContextScope::Selector {
        dst: ip("192.0.2.10"),
        vlan: None,
    };
    let id = shield
        .find_contexts(InstanceScope::Interface(0), target)
        .unwrap()[0];
    let other = shield
        .find_contexts(InstanceScope::Interface(1), target)
        .unwrap()[0];
    assert_eq!(
        run(&mut shield, 0, &syn(1), 0).flow,
        PASS,
        "auto, below the rate"
    );
    let changed = shield
        .override_modes(
            10 * MS,
            InstanceScope::Interface(0),
            target,
            MODE_SYN_COOKIES,
            ModeSetting::On,
        )
        .unwrap();
    assert_eq!(changed, [id]);
    assert_eq!(shield.mode_setting(id, Mode::SynCookies), ModeSetting::On);
    assert_eq!(shield.counters(id).mode_bits, MODE_SYN_COOKIES);
    let answered = run(&mut shield, 20 * MS, &syn(2), 0);
    assert_eq!(answered.flow, REPLY, "forced on: a cookie SYN-ACK");
    assert_eq!(answered.emitted.len(), 1);
    assert_eq!(
        run(&mut shield, 20 * MS, &syn(2), 1).flow,
        PASS,
        "eth1 untouched"
    );
    assert_eq!(shield.mode_bits(other), 0);

    shield
        .override_modes(
            30 * MS,
            InstanceScope::Interface(0),
            target,
            MODE_SYN_COOKIES,
            ModeSetting::Off,
        )
        .unwrap();
    // Forced off: even a flood far above `syn_rate_on` does not switch cookies on.
    for sport in 100..120 {
        assert_eq!(run(&mut shield, 40 * MS, &syn(sport), 0).flow, PASS);
    }
    assert_eq!(shield.mode_bits(id), 0);

    shield
        .override_modes(
            50 * MS,
            InstanceScope::Interface(0),
            target,
            MODE_SYN_COOKIES,
            ModeSetting::Auto,
        )
        .unwrap();
    // Auto again: the window's count is past the rate, so the next SYN triggers cookies.
    assert_eq!(run(&mut shield, 60 * MS, &syn(200), 0).flow, REPLY);
    assert_eq!(
        shield.mode_timeline(id),
        &[
            ModeChange {
                time_ns: 10 * MS,
                bits: MODE_SYN_COOKIES,
            },
            ModeChange {
                time_ns: 30 * MS,
                bits: 0,
            },
            ModeChange {
                time_ns: 60 * MS,
                bits: MODE_SYN_COOKIES,
            },
        ]
    );
}

#[test]
fn forced_on_then_auto_holds_then_goes_off_when_quiet() {
    let mut shield = two_instances();
    let all = InstanceScope::All;
    let default = ContextScope::Default;
    shield
        .override_modes(0, all, default, MODE_UNMATCHED_DROP, ModeSetting::On)
        .unwrap();
    let id = shield.contexts().next().unwrap();
    let stray = udp("198.51.100.7", 1, "203.0.113.1", 53).build();
    assert_eq!(
        run(&mut shield, MS, &stray, 0).flow,
        dropped(DropReason::Unmatched)
    );
    shield
        .override_modes(2 * MS, all, default, MODE_UNMATCHED_DROP, ModeSetting::Auto)
        .unwrap();
    // Still on during the hold time (10 s by default) counted from the override.
    assert_eq!(
        run(&mut shield, 9_000 * MS, &stray, 0).flow,
        dropped(DropReason::Unmatched)
    );
    // A quiet window after the hold: off.
    assert_eq!(run(&mut shield, 12_500 * MS, &stray, 0).flow, PASS);
    assert_eq!(
        shield.mode_timeline(id),
        &[
            ModeChange {
                time_ns: 0,
                bits: MODE_UNMATCHED_DROP,
            },
            ModeChange {
                time_ns: 12_500 * MS,
                bits: 0,
            },
        ]
    );
}

#[test]
fn surge_forced_off_stops_per_source_drops() {
    let mut shield = shield(
        r#"
        syn_cookies = "off"
        [thresholds]
        source_syn_rate_max = 2
        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [443]
        "#,
    );
    let dst = ContextScope::Destination(ip("192.0.2.10"));
    let flows: Vec<_> = (0..5)
        .map(|n| run(&mut shield, MS, &syn(n), 0).flow)
        .collect();
    assert_eq!(
        flows[4],
        dropped(DropReason::Rate),
        "surging source dropped"
    );
    shield
        .override_modes(
            2 * MS,
            InstanceScope::All,
            dst,
            MODE_SURGE,
            ModeSetting::Off,
        )
        .unwrap();
    assert_eq!(run(&mut shield, 3 * MS, &syn(9), 0).flow, PASS);
}
