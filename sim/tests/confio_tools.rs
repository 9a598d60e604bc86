//! The exported firewall rules are accepted by the real tools: `sim export --to iptables`
//! passes `iptables-restore --test` and `--to nft` passes `nft -c -f`, each in a fresh
//! network namespace (`unshare -n`, so nothing of the host is touched). Root; skipped with
//! LBSIM_SKIP_KERNEL_TESTS=1 outside CI like the other kernel tests.

mod kernel_support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sim::appliance::ApplianceConfig;
use sim::appliance::confio::export::{ExportFormat, export};

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// The appliances exported: flows with marks and a deny, NAT rules of every kind, and the
/// flowmgr file with every keyword (tables, ifaces, negations, ICMP).
fn appliances() -> Vec<(String, ApplianceConfig, PathBuf)> {
    let imported = scenarios().join("appliances/imported");
    let mut out = Vec::new();
    for name in ["web-fwmark.toml", "dnat-masquerade.toml", "dr-slash24.toml"] {
        out.push((
            name.to_string(),
            ApplianceConfig::load(&imported.join(name)).unwrap(),
            imported.clone(),
        ));
    }
    let mut every = ApplianceConfig::load(&scenarios().join("appliances/game.toml")).unwrap();
    every.shield = None;
    every.flows = Some("every-keyword.flowmgr".into());
    every.director[0].name = "web-farm".into();
    every.nat = out[1].1.nat.clone();
    every.interfaces = out[1].1.interfaces.clone();
    out.push(("every-keyword".into(), every, scenarios().join("flows")));
    out
}

fn run_in_fresh_netns(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new("unshare")
        .arg("-n")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn exported_iptables_passes_iptables_restore_test() {
    if !kernel_support::kernel_tests_enabled() {
        return;
    }
    for (name, config, base) in appliances() {
        let text = export(&config, &base, ExportFormat::Iptables).unwrap().text;
        assert!(text.contains("COMMIT"), "{name}: nothing exported");
        let output = run_in_fresh_netns(&["iptables-restore", "--test"], &text);
        assert!(
            output.status.success(),
            "{name}: iptables-restore --test: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn exported_nft_passes_nft_check() {
    if !kernel_support::kernel_tests_enabled() {
        return;
    }
    for (name, config, base) in appliances() {
        let text = export(&config, &base, ExportFormat::Nft).unwrap().text;
        assert!(text.contains("table"), "{name}: nothing exported");
        let output = run_in_fresh_netns(&["nft", "-c", "-f", "-"], &text);
        assert!(
            output.status.success(),
            "{name}: nft -c: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
