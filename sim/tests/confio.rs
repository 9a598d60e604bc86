//! `sim import` / `sim export` (sim::appliance::confio): the bundled imported examples give
//! the same per-packet verdicts and backends as their hand-written twins; importing an
//! export gives back the same appliance (property tests); warnings are snapshotted; the
//! exported firewall rules pass the real `iptables-restore --test` and `nft -c`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use datapath::packet::LinkType;
use datapath::packet::builder::PacketBuilder;
use datapath::pipeline::Pipeline;
use sim::appliance::confio::{self, Imported};
use sim::appliance::{ApplianceConfig, build_pipeline};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/appliances/imported")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lbsim-confio-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Import files (an appliance TOML among them is the base) and build the pipeline.
fn imported_pipeline(files: &[&str], name: &str) -> (Imported, Pipeline) {
    let (bases, production): (Vec<PathBuf>, Vec<PathBuf>) = files
        .iter()
        .map(|f| examples().join(f))
        .partition(|p| p.extension().is_some_and(|e| e == "toml"));
    let mut imported = confio::import_files(&production).unwrap();
    for base in bases {
        imported
            .config
            .interfaces
            .extend(ApplianceConfig::load(&base).unwrap().interfaces);
    }
    confio::finish(&mut imported);
    let dir = temp_dir(name);
    let mut config = imported.config.clone();
    if let Some(flows) = imported.flows() {
        std::fs::write(dir.join("flows.flowmgr"), flows).unwrap();
        config.flows = Some("flows.flowmgr".into());
    }
    let pipeline = build_pipeline(&config, &dir, 1, &[]).unwrap();
    (imported, pipeline)
}

fn hand_written(name: &str) -> Pipeline {
    let path = examples().join(name);
    let config = ApplianceConfig::load(&path).unwrap();
    build_pipeline(&config, &examples(), 1, &[]).unwrap()
}

/// Synthetic traffic over the examples' addresses: SYNs and UDP from many clients to many
/// destinations and ports, some of them twice (persistence), some from the blocked network.
fn traffic() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let destinations: [[u8; 4]; 7] = [
        [192, 0, 2, 10],
        [192, 0, 2, 77],
        [192, 168, 0, 1],
        [192, 168, 0, 200],
        [192, 0, 2, 30],
        [192, 0, 2, 31],
        [198, 51, 100, 9],
    ];
    for round in 0..2u16 {
        for client in 1..=40u8 {
            let net = if client % 9 == 0 {
                [203, 0, 113, client]
            } else {
                [198, 51, 100, client]
            };
            for (i, dst) in destinations.iter().enumerate() {
                let sport = 1000 + u16::from(client) * 7 + round;
                let port = [80, 443, 53, 8080, 22][(usize::from(client) + i) % 5];
                let builder = PacketBuilder::eth().ipv4(Ipv4Addr::from(net), Ipv4Addr::from(*dst));
                frames.push(if port == 53 {
                    builder.udp(sport, 53).payload(b"q").build()
                } else {
                    builder.tcp(sport, port).syn().build()
                });
            }
        }
    }
    frames
}

fn assert_same_outcomes(mut left: Pipeline, mut right: Pipeline) {
    let mut decided = 0;
    for (n, frame) in traffic().into_iter().enumerate() {
        let len = frame.len() as u32;
        let a = left.process(n as u64 * 1000, 0, LinkType::Ethernet, frame.clone(), len);
        let b = right.process(n as u64 * 1000, 0, LinkType::Ethernet, frame.clone(), len);
        assert_eq!(
            (a.stage, a.verdict, a.backend),
            (b.stage, b.verdict, b.backend),
            "packet {n}"
        );
        assert_eq!(left.emitted(), right.emitted(), "packet {n}: frames sent");
        let rewritten = left.emitted().first().is_some_and(|e| e.frame != frame);
        decided += usize::from(
            a.backend.is_some() || rewritten || a.verdict != datapath::verdict::Verdict::Pass,
        );
    }
    assert!(
        decided >= 30,
        "the traffic must exercise the configuration ({decided} decided)"
    );
}

#[test]
fn keepalived_and_iptables_mangle_match_the_hand_written_fwmark_appliance() {
    let (imported, pipeline) = imported_pipeline(
        &["web-fwmark.keepalived.conf", "web-fwmark.iptables"],
        "web",
    );
    assert_eq!(imported.vrrp.len(), 1);
    assert_eq!(
        imported
            .checks
            .iter()
            .map(|c| c.kind.as_str())
            .collect::<Vec<_>>(),
        ["inhibit_on_failure", "TCP_CHECK", "HTTP_GET"]
    );
    assert_eq!(
        imported.sorry_servers,
        [("fwm-80".to_string(), "10.0.1.250 80".to_string())]
    );
    assert_same_outcomes(pipeline, hand_written("web-fwmark.toml"));
}

#[test]
fn ipvsadm_dump_and_mark_rule_match_the_hand_written_dr_slash24() {
    let (_, pipeline) = imported_pipeline(&["dr-slash24.ipvsadm", "dr-slash24.iptables"], "dr");
    assert_same_outcomes(pipeline, hand_written("dr-slash24.toml"));
}

#[test]
fn iptables_dnat_masquerade_matches_the_hand_written_nat_appliance() {
    let (imported, pipeline) = imported_pipeline(
        &[
            "dnat-masquerade.iptables",
            "dnat-masquerade.interfaces.toml",
        ],
        "nat",
    );
    assert_eq!(imported.config.nat.len(), 3);
    assert_same_outcomes(pipeline, hand_written("dnat-masquerade.toml"));
}

#[test]
fn ldirectord_cf_and_nft_ruleset_match_the_hand_written_fwmark_appliance() {
    let (imported, pipeline) = imported_pipeline(
        &[
            "web-fwmark.ldirectord.cf",
            "web-fwmark.nft",
            // Only its [interfaces] are taken (ldirectord has no VRRP to give them).
            "web-fwmark.toml",
        ],
        "ldirectord",
    );
    assert_eq!(
        imported.sorry_servers,
        [("fwm-80".to_string(), "10.0.1.250:80 masq".to_string())]
    );
    assert_eq!(imported.config.health_check.len(), 2);
    assert_same_outcomes(pipeline, hand_written("web-fwmark.toml"));
}

#[test]
fn nft_dnat_masquerade_text_and_json_match_the_hand_written_nat_appliance() {
    for file in ["dnat-masquerade.nft", "dnat-masquerade.nft.json"] {
        let (imported, pipeline) =
            imported_pipeline(&[file, "dnat-masquerade.interfaces.toml"], "nftnat");
        assert_eq!(imported.config.nat.len(), 3, "{file}");
        assert!(
            imported
                .render_warnings()
                .contains("`numgen` has no appliance form"),
            "{file}: {}",
            imported.render_warnings()
        );
        assert_same_outcomes(pipeline, hand_written("dnat-masquerade.toml"));
    }
}

#[test]
fn the_appliance_loader_reads_a_keepalived_conf_directly() {
    let path = examples().join("web-fwmark.keepalived.conf");
    let config = ApplianceConfig::load(&path).unwrap();
    assert_eq!(config.director.len(), 1);
    assert_eq!(config.director[0].fwmark, Some(80));
    assert_eq!(config.interfaces.len(), 2);
    build_pipeline(&config, &examples(), 1, &[]).unwrap();
}

#[test]
fn warnings_for_unmappable_lines_are_located() {
    let keepalived = "global_defs {\n  router_id X\n}\ninclude /etc/keepalived/extra.conf\nvirtual_server 192.0.2.1 80 {\n  lb_algo rr\n  alpha\n  quorum 2\n  real_server 10.0.0.1 80 {\n    weight 2\n    notify_down /bin/true\n    MISC_CHECK {\n      misc_path \"/usr/bin/check\"\n      misc_timeout 5\n    }\n  }\n}\nvrrp_script chk {\n  script x\n}\n";
    let ipvsadm = "-A -t 192.0.2.2:80 -s rr --pe sip\n-a -t 192.0.2.2:80 -r 10.0.0.1 -m -w 1\n-a -t 192.0.2.9:80 -r 10.0.0.2\n--set 1 2 3\n";
    let iptables = "*mangle\n-A PREROUTING -p tcp -j CONNMARK --restore-mark\n-A PREROUTING -p tcp ! -m multiport --dports 80,443 -j MARK --set-mark 1\n-A OUTPUT -j MARK --set-mark 2\nCOMMIT\n*raw\n-A PREROUTING -j NOTRACK\nCOMMIT\n*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -s 10.9.0.0/16 -j DROP\n-A INPUT -j LOG\nCOMMIT\n*nat\n-A POSTROUTING -o eth9 -j MASQUERADE\n-A PREROUTING -p tcp -m multiport --dports 1,2 -j DNAT --to-destination 10.0.0.1\nCOMMIT\n";
    let mut imported = Imported::default();
    for (file, text) in [
        ("k.conf", keepalived),
        ("ipvs.save", ipvsadm),
        ("fw.rules", iptables),
    ] {
        confio::import_text(file, text, confio::detect(text), &mut imported).unwrap();
    }
    confio::finish(&mut imported);
    insta::assert_snapshot!(imported.render_warnings());
    insta::assert_snapshot!("warned_import_flows", imported.flows().unwrap());
}

#[test]
fn unreadable_input_is_a_located_error() {
    let cases = [
        (
            "virtual_server 192.0.2.1 80 {\n  lb_algo rr\n",
            "x:1:1: `virtual_server 192.0.2.1 80` block is never closed",
        ),
        (
            "virtual_server 192.0.2.1 80 {\n  lb_kind XX\n}\n",
            "x:2:1: `lb_kind XX`: expected NAT, DR or TUN",
        ),
        ("vrrp_instance a {\n}\n}\n", "x:3:1: `}` closes no block"),
        (
            "-A -t 192.0.2.1:80 -s nosuch\n",
            "x:1:1: unknown scheduler `nosuch`",
        ),
        (
            "-A -t 192.0.2.1:80\n-a -t 192.0.2.1:80 -r 10.0.0.1 -w lots\n",
            "x:2:1: `-w lots`: not a number in range",
        ),
        (
            "*mangle\n-A PREROUTING -d nowhere -j ACCEPT\n",
            "x:2:1: `nowhere` is not an address or network",
        ),
        (
            "*nat\nbogus line\n",
            "x:2:1: `bogus line` is not an iptables-save line (`*table`, `:CHAIN`, `-A`, `COMMIT`)",
        ),
    ];
    for (text, expected) in cases {
        let mut imported = Imported::default();
        let error =
            confio::import_text("x", text, confio::detect(text), &mut imported).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
}
