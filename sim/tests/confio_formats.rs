//! ldirectord.cf and nft rulesets in and out, and health checks that scenario events use.
//!
//! - ldirectord's own parser is the oracle: the real `ldirectord -d` (it runs `./ipvsadm`
//!   from its working directory in debug mode) is given a fake ipvsadm that logs its
//!   arguments; the services and real servers it adds, read back by the ipvsadm importer,
//!   must equal what the ldirectord.cf importer gives.
//! - nft: the text and the JSON (`nft -j list ruleset`, produced by the real nft in a fresh
//!   netns) of one ruleset import to the same flows and NAT rules; warnings are located.
//! - `check_fail` / `check_ok` events become the server_down / weight events the checker
//!   causes, after its detection delay.

mod kernel_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datapath::director::config::DirectorConfig;
use sim::appliance::ApplianceConfig;
use sim::appliance::confio::export::{ExportFormat, export};
use sim::appliance::confio::health::{HealthCheckConfig, OnFailure};
use sim::appliance::confio::{self, Format, Imported};
use sim::scenario::TimedEvent;

fn seeds(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/appliances/imported")
}

fn import(name: &str, text: &str) -> Imported {
    import_with(name, text, &ApplianceConfig::default())
}

/// Import with the appliance's directors (their marks name the flows) and interfaces
/// (MASQUERADE's addresses) already known.
fn import_with(name: &str, text: &str, base: &ApplianceConfig) -> Imported {
    let mut imported = Imported::default();
    imported.config.director = base.director.clone();
    imported.config.interfaces = base.interfaces.clone();
    confio::import_text(name, text, confio::detect(text), &mut imported)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    confio::finish(&mut imported);
    imported
}

/// Reals in address order, zero thresholds as none (ldirectord always passes `-x 0 -y 0`).
fn normalised(mut directors: Vec<DirectorConfig>) -> Vec<DirectorConfig> {
    for d in &mut directors {
        d.real.sort_by(|a, b| a.addr.cmp(&b.addr));
    }
    directors.sort_by(|a, b| a.name.cmp(&b.name));
    directors
}

const FAKE_IPVSADM: &str = "#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/commands.log\"\ncase \"$*\" in\n  *-L*) echo 'IP Virtual Server version 1.2.1 (size=4096)'; echo 'Prot LocalAddress:Port Scheduler Flags'; echo '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn';;\nesac\nexit 0\n";

/// What the real ldirectord adds for `config` (every check forced `on`, so every real
/// server goes in with its weight), as an ipvsadm script; the fallback servers it adds
/// while no real server is up are left out.
fn ldirectord_commands(name: &str, config: &str, fallbacks: &[&str]) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("lbsim-ldirectord-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("ipvsadm");
    std::fs::write(&fake, FAKE_IPVSADM).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let forced: String = config
        .lines()
        .filter(|l| !l.trim_start().starts_with("checktype"))
        .map(|l| {
            if l.starts_with("virtual") {
                format!("{l}\n\tchecktype=on\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let cf = dir.join(format!("lbsim-{}-{name}.cf", std::process::id()));
    std::fs::write(&cf, forced).unwrap();
    let mut child = Command::new("/usr/sbin/ldirectord")
        .arg("-d")
        .arg(&cf)
        .arg("start")
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ldirectord runs (apt-get install ldirectord)");
    let log = dir.join("commands.log");
    let start = Instant::now();
    let mut last = (0, Instant::now());
    while start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("{name}: ldirectord exited ({status}): {err}");
        }
        let len = std::fs::metadata(&log).map_or(0, |m| m.len());
        if len != last.0 {
            last = (len, Instant::now());
        } else if len > 0 && last.1.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut seen = Vec::new();
    for line in text.lines() {
        let keep = line.starts_with("-A ") || line.starts_with("-a ");
        let fallback = fallbacks.iter().any(|f| line.contains(&format!("-r {f} ")));
        if keep && !fallback && !seen.iter().any(|s: &String| s == line) {
            seen.push(line.to_string());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    seen.join("\n") + "\n"
}

fn check_against_ldirectord(name: &str, config: &str, fallbacks: &[&str]) {
    let commands = ldirectord_commands(name, config, fallbacks);
    assert!(commands.contains("-A "), "{name}: ldirectord added nothing");
    let mut oracle = Imported::default();
    confio::import_text("ldirectord", &commands, Format::Ipvsadm, &mut oracle)
        .unwrap_or_else(|e| panic!("{e}\n{commands}"));
    let ours = import(name, config);
    assert_eq!(
        normalised(ours.config.director),
        normalised(oracle.config.director),
        "{name}: ldirectord ran\n{commands}"
    );
}

#[test]
fn ldirectord_cf_imports_as_ldirectord_itself_reads_it() {
    for (name, fallbacks) in [
        ("nat-range", vec![]),
        ("fwmark-quiescent", vec!["127.0.0.1:0"]),
    ] {
        let text = std::fs::read_to_string(seeds("import_ldirectord").join(name)).unwrap();
        check_against_ldirectord(name, &text, &fallbacks);
    }
    let text = std::fs::read_to_string(examples().join("web-fwmark.ldirectord.cf")).unwrap();
    check_against_ldirectord("web-fwmark", &text, &["10.0.1.250:80"]);
}

#[test]
fn exported_ldirectord_cf_is_read_by_ldirectord_as_the_appliance() {
    let mut directors = Vec::new();
    for name in ["web-fwmark.toml", "dr-slash24.toml"] {
        directors.extend(
            ApplianceConfig::load(&examples().join(name))
                .unwrap()
                .director,
        );
    }
    let game = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/appliances/game.toml");
    directors.extend(ApplianceConfig::load(&game).unwrap().director);
    // The first service checked the ldirectord way, the second by a keepalived HTTP_GET
    // (translated), the rest unchecked (`checktype = on`).
    let checks: [(&str, &[&str]); 2] = [
        (
            "ldirectord negotiate",
            &[
                "service http",
                "request health",
                "receive OK",
                "checkport 80",
            ],
        ),
        ("HTTP_GET", &["url.path /health", "connect_port 8080"]),
    ];
    let mut health_check = Vec::new();
    for (d, (kind, settings)) in directors.iter().zip(checks) {
        for real in &d.real {
            health_check.push(HealthCheckConfig {
                director: Some(d.name.clone()),
                server: real.addr.parse().unwrap(),
                kind: kind.to_string(),
                on_failure: OnFailure::Quiesce,
                detect: "9s".into(),
                recover: "6s".into(),
                settings: settings.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    let config = ApplianceConfig {
        director: directors,
        health_check: health_check.clone(),
        ..Default::default()
    };
    let exported = export(&config, Path::new("."), ExportFormat::Ldirectord).unwrap();
    assert!(exported.notes.is_empty(), "{:?}", exported.notes);
    let commands = ldirectord_commands("exported", &exported.text, &[]);
    let mut oracle = Imported::default();
    confio::import_text("ldirectord", &commands, Format::Ipvsadm, &mut oracle).unwrap();
    let back = import("exported", &exported.text);
    assert!(back.warnings.is_empty(), "{}", back.render_warnings());
    assert_eq!(
        normalised(back.config.director.clone()),
        normalised(oracle.config.director),
        "{}\n{commands}",
        exported.text
    );
    // Checks read back (under the imported directors' names): the ldirectord one as
    // written (values unquoted, as ldirectord reads them), the HTTP_GET as ldirectord's
    // negotiate check of the same path and port, with the same timing.
    assert_eq!(back.config.health_check.len(), health_check.len());
    for (h, written) in back.config.health_check.iter().zip(&health_check) {
        let settings: &[&str] = if written.kind == "HTTP_GET" {
            &["service http", "request /health", "checkport 8080"]
        } else {
            &[
                "service http",
                "request health",
                "receive OK",
                "checkport 80",
            ]
        };
        assert_eq!(h.server, written.server);
        assert_eq!(h.kind, "ldirectord negotiate");
        assert_eq!(h.settings, settings);
        assert_eq!((h.detect.as_str(), h.recover.as_str()), ("9s", "6s"));
        assert_eq!(h.on_failure, OnFailure::Quiesce);
    }
}

#[test]
fn ldirectord_warnings_and_errors_are_located() {
    let text = std::fs::read_to_string(seeds("import_ldirectord").join("errors")).unwrap();
    let mut imported = Imported::default();
    let error =
        confio::import_text("errors.cf", &text, Format::Ldirectord, &mut imported).unwrap_err();
    assert_eq!(
        error.to_string().lines().next().unwrap(),
        "errors.cf:2:1: `real=10.0.1.2:80 bridge`: forward method must be gate, masq or ipip"
    );
    let text = text.replace("bridge", "gate");
    let imported = import("errors.cf", &text);
    insta::assert_snapshot!(imported.render_warnings());
    let thresholds = "virtual=192.0.2.10:80\n\treal=10.0.1.8:80 masq 2 \"/h\", \"OK\" l:10 u:100\n";
    let imported = import("quirk.cf", thresholds);
    assert_eq!(imported.config.director[0].real[0].upper_threshold, None);
    assert!(
        imported
            .render_warnings()
            .contains("quirk.cf:2: warning: ldirectord ignores")
    );
}

/// `nft -f` the ruleset in a fresh netns and list it back: (text, JSON).
fn nft_listing(ruleset: &str) -> Option<(String, String)> {
    if !kernel_support::kernel_tests_enabled() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("lbsim-nft-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("ruleset-{}.nft", ruleset.len()));
    std::fs::write(&file, ruleset).unwrap();
    let script = format!(
        "nft -f {} && nft list ruleset && echo ==== && nft -j list ruleset",
        file.display()
    );
    let output = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "nft: {}\n{ruleset}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (listed, json) = text.split_once("====\n").unwrap();
    Some((listed.to_string(), json.to_string()))
}

/// The flows (as iptables rules) and NAT rules an import gives.
fn flows_and_nat(imported: &Imported, directors: &[DirectorConfig]) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("lbsim-nftflows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = ApplianceConfig {
        nat: imported.config.nat.clone(),
        director: directors.to_vec(),
        ..Default::default()
    };
    if let Some(flows) = imported.flows() {
        std::fs::write(dir.join("f.flowmgr"), flows).unwrap();
        config.flows = Some("f.flowmgr".into());
    }
    let text = export(&config, &dir, ExportFormat::Iptables).unwrap().text;
    let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("-A")).collect();
    (rules.join("\n"), format!("{:?}", imported.config.nat))
}

#[test]
fn nft_export_listed_by_the_real_nft_imports_back_to_the_same_rules() {
    for name in ["web-fwmark.toml", "dnat-masquerade.toml"] {
        let config = ApplianceConfig::load(&examples().join(name)).unwrap();
        let exported = export(&config, &examples(), ExportFormat::Nft)
            .unwrap()
            .text;
        let iptables = export(&config, &examples(), ExportFormat::Iptables)
            .unwrap()
            .text;
        let original = import_with("original", &iptables, &config);
        let from_export = import_with("exported.nft", &exported, &config);
        assert!(
            from_export.warnings.is_empty(),
            "{name}: {}",
            from_export.render_warnings()
        );
        let want = flows_and_nat(&original, &config.director);
        assert_eq!(
            flows_and_nat(&from_export, &config.director),
            want,
            "{name}\n{exported}"
        );
        let Some((listed, json)) = nft_listing(&exported) else {
            continue;
        };
        for (form, text) in [("list ruleset", &listed), ("nft -j", &json)] {
            let back = import_with(form, text, &config);
            assert!(
                back.warnings.is_empty(),
                "{name} {form}: {}",
                back.render_warnings()
            );
            assert_eq!(
                flows_and_nat(&back, &config.director),
                want,
                "{name} {form}\n{text}"
            );
        }
    }
}

#[test]
fn hand_written_nft_text_and_its_json_listing_import_alike() {
    let text = std::fs::read_to_string(seeds("import_nft").join("handwritten")).unwrap();
    let imported = import("handwritten.nft", &text);
    insta::assert_snapshot!("nft_handwritten_warnings", imported.render_warnings());
    let json = std::fs::read_to_string(seeds("import_nft").join("json-handwritten")).unwrap();
    let listed = std::fs::read_to_string(seeds("import_nft").join("listed-handwritten")).unwrap();
    let from_json = import("handwritten.json", &json);
    let from_listing = import("listed.nft", &listed);
    // Flows are named after their first line, which differs between the two forms.
    let unnamed = |imported: &Imported| {
        let (flows, nat) = flows_and_nat(imported, &[]);
        let flows: Vec<String> = flows
            .split(['\n', ' '])
            .map(|w| match w.rsplit_once("-L") {
                Some((head, n)) if n.parse::<u32>().is_ok() => format!("{head}-L"),
                _ => w.to_string(),
            })
            .collect();
        (flows.join(" "), nat)
    };
    assert_eq!(unnamed(&from_json), unnamed(&from_listing));
    assert_eq!(from_json.config.nat, from_listing.config.nat);
    // The source resolves nothing more than the listing (`$WEB` is warned in both).
    assert_eq!(from_listing.config.nat, imported.config.nat);
    assert_eq!(
        from_json.warnings.len(),
        from_listing.warnings.len(),
        "{}\n{}",
        from_json.render_warnings(),
        from_listing.render_warnings()
    );
    insta::assert_snapshot!("nft_json_warnings", from_json.render_warnings());
}

#[test]
fn unreadable_nft_is_a_located_error() {
    for (text, want) in [
        (
            "table ip x {\n  chain y {\n",
            "x.nft:2:1: chain is never closed",
        ),
        ("{\"nftables\": [}", "x.nft:1:15: not nft JSON"),
        (
            "{\"other\": 1, \"nftables\": 2}",
            "x.nft:1:1: nft JSON must be an object",
        ),
    ] {
        let mut imported = Imported::default();
        let error = confio::import_text("x.nft", text, Format::Nft, &mut imported).unwrap_err();
        assert!(error.to_string().starts_with(want), "{error}");
    }
}

fn scenario_events(appliance: &str) -> Vec<TimedEvent> {
    let text = format!(
        r#"
name = "checks"
duration = "30s"
seed = 1

[topology]
interfaces = ["outside", "inside"]
vips = ["192.0.2.10"]

[[topology.network]]
name = "clients"
prefix = "198.51.100.0/24"
iface = "outside"

[[topology.backend]]
name = "a"
addr = "10.0.1.2"
iface = "inside"

[[topology.backend]]
name = "b"
addr = "10.0.1.3"
iface = "inside"

{appliance}

[[events]]
kind = "check_fail"
at = "2s"
server = "10.0.1.2:0"

[[events]]
kind = "check_ok"
at = "20s"
server = "10.0.1.2:0"
"#
    );
    let path = examples().join("checks-scenario.toml");
    let loaded = sim::scenario::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    loaded
        .scenario
        .events
        .iter()
        .map(|e| e.get_ref().clone())
        .collect()
}

#[test]
fn check_events_act_as_the_imported_checker_does() {
    use sim::scenario::units::DurationNs;
    let s = 1_000_000_000;
    let server = "10.0.1.2:0".parse().unwrap();
    // ldirectord, quiescent = yes: weight 0 after failurecount × (checkinterval + timeout)
    // = 2 × (6 + 3) s, weight 3 back after one checkinterval.
    let events = scenario_events("[appliance]\nappliance = \"web-fwmark.ldirectord.cf\"\n");
    let director = Some("fwm-80".to_string());
    assert_eq!(
        events,
        [
            TimedEvent::Weight {
                at: DurationNs(20 * s),
                director: director.clone(),
                server,
                weight: 0
            },
            TimedEvent::Weight {
                at: DurationNs(26 * s),
                director: director.clone(),
                server,
                weight: 3
            },
        ]
    );
    // keepalived, inhibit_on_failure: weight 0 after delay_loop + (retry + 1) ×
    // connect_timeout + retry × delay_before_retry = 6 + 4 × 3 + 3 × 2 s.
    let events = scenario_events("[appliance]\nappliance = \"web-fwmark.keepalived.conf\"\n");
    assert_eq!(
        events[0],
        TimedEvent::Weight {
            at: DurationNs(26 * s),
            director: director.clone(),
            server,
            weight: 0
        }
    );
    // A hand-written check that removes the server.
    let inline = "[appliance]\n[[appliance.director]]\nname = \"web\"\nvip = \"192.0.2.10\"\nport = 80\nreal = [{ addr = \"10.0.1.2:0\" }]\n[[appliance.health_check]]\nserver = \"10.0.1.2:0\"\ndetect = \"1500ms\"\nrecover = \"5s\"\n";
    let events = scenario_events(inline);
    assert_eq!(
        events,
        [
            TimedEvent::ServerDown {
                at: DurationNs(3 * s + s / 2),
                director: None,
                server
            },
            TimedEvent::ServerUp {
                at: DurationNs(25 * s),
                director: None,
                server
            },
        ]
    );
}

#[test]
fn a_check_event_without_a_health_check_is_a_located_error() {
    let inline = "[appliance]\n[[appliance.director]]\nname = \"web\"\nvip = \"192.0.2.10\"\nport = 80\nreal = [{ addr = \"10.0.1.2:0\" }]\n";
    let result = std::panic::catch_unwind(|| scenario_events(inline));
    let message = match result {
        Ok(events) => panic!("no error: {events:?}"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains("events[0].server: `10.0.1.2:0`: no [[health_check]]"),
        "{message}"
    );
}

#[test]
fn flows_eval_reads_an_nft_ruleset_and_an_iptables_save_file() {
    for file in ["web-fwmark.nft", "web-fwmark.iptables"] {
        let output = Command::new(env!("CARGO_BIN_EXE_sim"))
            .args(["flows", "eval"])
            .arg(examples().join(file))
            .args(["--director", "web=80"])
            .args(["--packet", "tcp 198.51.100.7:1000 > 192.0.2.10:443"])
            .args(["--packet", "tcp 203.0.113.5:1000 > 192.0.2.10:80"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{file}: {output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let verdicts: Vec<&str> = stdout
            .lines()
            .map(|l| l.rsplit(", ").next().unwrap())
            .collect();
        assert_eq!(verdicts, ["director web", "deny"], "{file}: {stdout}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains("is not modelled by the appliance: rule not translated"),
            "{file}: {stderr}"
        );
    }
}
