//! Importing an export gives back the same appliance: random `[[director]]` sets through
//! `--to ipvsadm` and `--to keepalived`, random `[[nat]]` rules through `--to iptables`,
//! random `[[health_check]]` sets through `--to keepalived` and `--to ldirectord`, and the
//! bundled flowmgr files through `--to iptables` (compiled again: the same rules).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use datapath::director::config::{DirectorConfig, RealConfig};
use datapath::director::dest::Forward;
use datapath::director::scheduler::SchedulerKind;
use datapath::nat::NatAction;
use datapath::nat::config::{NatKind, NatRuleConfig, Target};
use ipnet::{IpNet, Ipv4Net};
use proptest::prelude::*;
use sim::appliance::ApplianceConfig;
use sim::appliance::confio::export::{ExportFormat, export};
use sim::appliance::confio::health::{HealthCheckConfig, OnFailure};
use sim::appliance::confio::{self, Imported};

const SCHEDULERS: [SchedulerKind; 13] = {
    use SchedulerKind::*;
    [Rr, Wrr, Lc, Wlc, Sed, Nq, Sh, Dh, Mh, Lblc, Lblcr, Fo, Ovf]
};
const FORWARDS: [Forward; 3] = [Forward::Nat, Forward::Dr, Forward::Tun];

fn real(v6: bool, port: Option<u16>, index: u8) -> impl Strategy<Value = RealConfig> {
    (
        0..1000i32,
        0..3usize,
        prop::option::of((1..500u32, 0..500u32)),
        any::<u16>(),
    )
        .prop_map(move |(weight, forward, thresholds, p)| {
            let ip: IpAddr = if v6 {
                Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(index) + 2).into()
            } else {
                Ipv4Addr::new(10, 0, 1, index + 2).into()
            };
            RealConfig {
                addr: SocketAddr::new(ip, port.unwrap_or(p.max(1))).to_string(),
                weight: Some(weight),
                forward: (forward < 3).then(|| FORWARDS[forward]),
                upper_threshold: thresholds.map(|(u, _)| u),
                lower_threshold: thresholds.map(|(u, l)| l.min(u)).filter(|&l| l != 0),
                mac: None,
            }
        })
}

fn director(index: u8) -> impl Strategy<Value = DirectorConfig> {
    let key = prop_oneof![
        (1..100_000u32).prop_map(move |m| (Some(m * 256 + u32::from(index)), false, None, None)),
        (any::<bool>(), any::<bool>(), 1..=65535u16).prop_map(move |(v6, udp, port)| (
            None,
            v6,
            Some(port),
            Some(if udp { "udp" } else { "tcp" })
        )),
    ];
    (
        key,
        0..13usize,
        0..3usize,
        prop::option::of(1..100_000u32),
        any::<bool>(),
        prop::option::of(0..=32u8),
        1..5usize,
    )
        .prop_flat_map(
            move |((mark, v6, port, proto), sched, forward, persistence, flag, mask, reals)| {
                let real_port = if mark.is_some() { Some(0) } else { None };
                let reals: Vec<_> = (0..reals as u8).map(|i| real(v6, real_port, i)).collect();
                (
                    Just((
                        mark,
                        v6,
                        port,
                        proto,
                        sched,
                        forward,
                        persistence,
                        flag,
                        mask,
                    )),
                    reals,
                )
            },
        )
        .prop_map(
            move |((mark, v6, port, proto, sched, forward, persistence, flag, mask), mut real)| {
                let scheduler = SCHEDULERS[sched];
                let flags = match (scheduler, flag) {
                    (SchedulerKind::Sh, true) => vec!["sh-port".to_string()],
                    (SchedulerKind::Mh, true) => vec!["mh-fallback".to_string()],
                    _ => vec![],
                };
                let service = FORWARDS[forward];
                real[0].forward = None;
                for r in &mut real {
                    r.forward = r.forward.filter(|f| *f != service);
                    // The kernel gives DR and tunnelled real servers the service's port.
                    if let Some(port) =
                        port.filter(|_| r.forward.unwrap_or(service) != Forward::Nat)
                    {
                        let addr: SocketAddr = r.addr.parse().unwrap();
                        r.addr = SocketAddr::new(addr.ip(), port).to_string();
                    }
                }
                let vip: Option<IpAddr> = port.map(|_| {
                    if v6 {
                        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(index) + 1).into()
                    } else {
                        Ipv4Addr::new(192, 0, 2, index + 1).into()
                    }
                });
                let netmask = (persistence.is_some() && !v6)
                    .then_some(mask)
                    .flatten()
                    .map(|m| {
                        let bits = if m == 0 { 0 } else { u32::MAX << (32 - m) };
                        Ipv4Addr::from(bits).to_string()
                    });
                let mut d = DirectorConfig {
                    name: String::new(),
                    vip,
                    port,
                    proto: proto.map(str::to_string),
                    fwmark: mark,
                    scheduler: Some(scheduler),
                    flags,
                    persistence: persistence.map(|p| format!("{p}s")),
                    persistence_netmask: netmask,
                    forward: Some(service),
                    real,
                };
                d.name = confio::director_name(&d);
                d
            },
        )
}

fn directors() -> impl Strategy<Value = Vec<DirectorConfig>> {
    (1..5u8).prop_flat_map(|n| (0..n).map(director).collect::<Vec<_>>())
}

fn round_trip(directors: &[DirectorConfig], to: ExportFormat) -> Vec<DirectorConfig> {
    let config = ApplianceConfig {
        director: directors.to_vec(),
        ..Default::default()
    };
    let exported = export(&config, Path::new("."), to).unwrap();
    assert!(exported.notes.is_empty(), "{:?}", exported.notes);
    let mut imported = Imported::default();
    let format = confio::detect(&exported.text);
    confio::import_text("exported", &exported.text, format, &mut imported)
        .unwrap_or_else(|e| panic!("{e}\n{}", exported.text));
    assert!(
        imported.warnings.is_empty(),
        "{}",
        imported.render_warnings()
    );
    imported.config.director
}

/// A duration as the importers write it: whole seconds as `"6s"`, others in milliseconds.
fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A check with its settings: of a keepalived kind, or (`ldirectord`) of an ldirectord
/// checktype with its timing in whole seconds (ldirectord reads only those).
fn check(ldirectord: bool) -> impl Strategy<Value = HealthCheckConfig> {
    let kinds: [(&str, &[&str]); 3] = if ldirectord {
        [
            ("ldirectord connect", &["checkport 8080"]),
            (
                "ldirectord negotiate",
                &["service http", "request health check", "receive OK"],
            ),
            (
                "ldirectord external",
                &["checkcommand /usr/local/bin/check-web"],
            ),
        ]
    } else {
        [
            ("TCP_CHECK", &["connect_port 8080"]),
            (
                "HTTP_GET",
                &[
                    "url.path /health",
                    "url.status_code 200",
                    "url.path /ready",
                    "connect_port 80",
                ],
            ),
            ("MISC_CHECK", &["misc_path /usr/local/bin/check-web"]),
        ]
    };
    let unit = if ldirectord { 1000 } else { 1 };
    (0..3usize, any::<bool>(), 1..60_000u64, 1..30_000u64).prop_map(
        move |(kind, quiesce, recover, timeout)| {
            let (recover, timeout) = (recover / unit * unit, timeout / unit * unit);
            let (recover, timeout) = (recover.max(unit), timeout.max(unit));
            HealthCheckConfig {
                director: None,
                server: "0.0.0.0:0".parse().unwrap(),
                kind: kinds[kind].0.to_string(),
                on_failure: if quiesce {
                    OnFailure::Quiesce
                } else {
                    OnFailure::Remove
                },
                detect: duration(recover + timeout),
                recover: duration(recover),
                settings: kinds[kind].1.iter().map(|s| s.to_string()).collect(),
            }
        },
    )
}

/// Directors and checks for them: keepalived checks each real server on its own (some
/// have none); ldirectord checks every real server of a service alike, or none.
fn checked_directors(ldirectord: bool) -> impl Strategy<Value = ApplianceConfig> {
    (
        directors(),
        prop::collection::vec((any::<bool>(), check(ldirectord)), 20),
    )
        .prop_map(move |(director, picks)| {
            let mut health_check = Vec::new();
            let mut picks = picks.into_iter().cycle();
            for d in &director {
                let (service_has, service_check) = picks.next().unwrap();
                for real in &d.real {
                    let (has, mut check) = if ldirectord {
                        (service_has, service_check.clone())
                    } else {
                        picks.next().unwrap()
                    };
                    if has {
                        check.director = Some(d.name.clone());
                        check.server = real.addr.parse().unwrap();
                        health_check.push(check);
                    }
                }
            }
            ApplianceConfig {
                director,
                health_check,
                ..Default::default()
            }
        })
}

fn check_round_trip(config: &ApplianceConfig, to: ExportFormat) -> Imported {
    let exported = export(config, Path::new("."), to).unwrap();
    assert!(exported.notes.is_empty(), "{:?}", exported.notes);
    let mut imported = Imported::default();
    let format = confio::detect(&exported.text);
    confio::import_text("exported", &exported.text, format, &mut imported)
        .unwrap_or_else(|e| panic!("{e}\n{}", exported.text));
    confio::finish(&mut imported);
    assert!(
        imported.warnings.is_empty(),
        "{}\n{}",
        imported.render_warnings(),
        exported.text
    );
    imported
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn keepalived_export_keeps_the_health_checks(config in checked_directors(false)) {
        let back = check_round_trip(&config, ExportFormat::Keepalived);
        prop_assert_eq!(back.config.director, config.director);
        prop_assert_eq!(back.config.health_check, config.health_check);
    }

    #[test]
    fn ldirectord_export_keeps_the_health_checks(config in checked_directors(true)) {
        let back = check_round_trip(&config, ExportFormat::Ldirectord);
        prop_assert_eq!(back.config.director, config.director);
        prop_assert_eq!(back.config.health_check, config.health_check);
    }

    #[test]
    fn ipvsadm_export_imports_back_to_the_same_directors(directors in directors()) {
        prop_assert_eq!(round_trip(&directors, ExportFormat::Ipvsadm), directors);
    }

    #[test]
    fn keepalived_export_imports_back_to_the_same_directors(directors in directors()) {
        prop_assert_eq!(round_trip(&directors, ExportFormat::Keepalived), directors);
    }

    #[test]
    fn ldirectord_export_imports_back_to_the_same_directors(directors in directors()) {
        prop_assert_eq!(round_trip(&directors, ExportFormat::Ldirectord), directors);
    }

    #[test]
    fn iptables_export_imports_back_to_the_same_nat_rules(rules in prop::collection::vec(nat_rule(), 1..6)) {
        let config = ApplianceConfig { nat: rules.clone(), ..Default::default() };
        let exported = export(&config, Path::new("."), ExportFormat::Iptables).unwrap();
        let mut imported = Imported::default();
        confio::import_text("exported", &exported.text, confio::detect(&exported.text), &mut imported).unwrap();
        prop_assert!(imported.warnings.is_empty(), "{}\n{}", imported.render_warnings(), exported.text);
        prop_assert_eq!(imported.config.nat, rules);
    }
}

fn nat_rule() -> impl Strategy<Value = NatRuleConfig> {
    let net = (any::<u32>(), 8..=32u8)
        .prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc()));
    (
        0..3usize,
        0..3usize,
        prop::option::of(net),
        prop::option::of((any::<u32>(), prop::option::of(1..=65535u16))),
        any::<u32>(),
        prop::option::of((1..30000u16, 0..30000u16)),
    )
        .prop_map(|(kind, proto, src, dst, to, ports)| {
            let proto = [None, Some(6u8), Some(17u8)][proto];
            let dst = dst.map(|(a, port)| Target {
                network: IpNet::from(IpAddr::from(Ipv4Addr::from(a))),
                port: port.filter(|_| proto.is_some()),
            });
            let ports = ports.map(|(a, b)| (a, a + b)).filter(|_| proto.is_some());
            let to = IpAddr::from(Ipv4Addr::from(to));
            let (kind, out, action) = match kind {
                0 => (
                    NatKind::Dnat,
                    None,
                    NatAction::Dnat {
                        address: to,
                        port: ports.map(|p| p.0),
                    },
                ),
                1 => (
                    NatKind::Snat,
                    Some("eth1".to_string()),
                    NatAction::Snat { address: to, ports },
                ),
                _ => (
                    NatKind::Masquerade,
                    Some("inside".to_string()),
                    NatAction::Masquerade { ports },
                ),
            };
            NatRuleConfig {
                kind,
                proto,
                src,
                dst,
                out,
                action,
            }
        })
}

/// The bundled flowmgr files: exported to iptables, imported, exported again: the same
/// mangle rules (flowmgr's own compiler writes both).
#[test]
fn bundled_flows_survive_an_iptables_round_trip() {
    let flows_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/flows");
    for (flows, directors) in [
        ("web-fwmark.flowmgr", vec![("web", 80)]),
        ("game.flowmgr", vec![("game", 7)]),
        ("every-keyword.flowmgr", vec![("web-farm", 1)]),
    ] {
        let director: Vec<DirectorConfig> = directors
            .iter()
            .map(|(name, mark)| DirectorConfig {
                name: name.to_string(),
                vip: None,
                port: None,
                proto: None,
                fwmark: Some(*mark),
                scheduler: None,
                flags: vec![],
                persistence: None,
                persistence_netmask: None,
                forward: None,
                real: vec![],
            })
            .collect();
        let config = ApplianceConfig {
            flows: Some(flows.into()),
            director: director.clone(),
            ..Default::default()
        };
        let first = export(&config, &flows_dir, ExportFormat::Iptables)
            .unwrap()
            .text;
        let mut imported = Imported {
            config: ApplianceConfig {
                director: director.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        confio::import_text("exported", &first, confio::detect(&first), &mut imported).unwrap();
        assert!(
            imported.warnings.is_empty(),
            "{flows}: {}",
            imported.render_warnings()
        );
        let dir = std::env::temp_dir().join(format!("lbsim-roundtrip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(flows), imported.flows().unwrap()).unwrap();
        let second = export(&config, &dir, ExportFormat::Iptables).unwrap().text;
        let rules = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(rules(&second), rules(&first), "{flows}");
    }
}
