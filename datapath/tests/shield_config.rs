//! Shield configuration: the key names of DESIGN §5 parse, unknown keys are refused with
//! their position, and every build error renders (snapshots).

mod shield_common;

use datapath::shield::{MAX_CONTEXTS_PER_INSTANCE, ShieldConfig, build};
use shield_common::IFACES;

fn build_error(text: &str) -> String {
    let config: ShieldConfig = toml::from_str(text).expect("parses");
    build(&config, 1, &IFACES)
        .expect_err("must not build")
        .to_string()
}

fn parse_error(text: &str) -> String {
    toml::from_str::<ShieldConfig>(text)
        .expect_err("must not parse")
        .to_string()
}

#[test]
fn design_example_parses_and_builds() {
    let text = r#"
        syn_cookies = "auto"
        deny = ["203.0.113.0/24"]

        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [80, 443]
        allow_src = ["198.51.100.0/24"]
        allow_proto = ["icmp"]
        allow_tcp_ports = [22]
        allow_udp_ports = [53]
    "#;
    let config: ShieldConfig = toml::from_str(text).unwrap();
    let shield = build(&config, 1, &IFACES).unwrap();
    let names: Vec<String> = shield.contexts().map(|c| shield.context_name(c)).collect();
    assert_eq!(names, ["shield/default", "shield/192.0.2.10"]);
}

#[test]
fn parse_errors_have_positions() {
    let errors = [
        parse_error("syn_cookie = \"on\"\n"),
        parse_error("syn_cookies = \"sometimes\"\n"),
        parse_error("deny = [\"203.0.113.0/33\"]\n"),
        parse_error("[[context]]\ndst = \"192.0.2.10\"\nallow_proto = [\"sctpx\"]\n"),
        parse_error("[[context]]\ndst = \"192.0.2.10\"\nprotected_ports = [80]\n"),
        parse_error("[thresholds]\nsyn_rate = 5\n"),
    ];
    insta::assert_snapshot!(errors.join("\n----\n"));
}

#[test]
fn build_errors_render() {
    let mut too_many = String::new();
    for index in 0..=MAX_CONTEXTS_PER_INSTANCE {
        too_many.push_str(&format!(
            "[[context]]\ndst = \"10.0.{}.{}\"\n",
            index / 256,
            index % 256
        ));
    }
    let errors = [
        build_error(&too_many),
        build_error("[[context]]\nprotected_tcp_ports = [80]\n"),
        build_error("[default]\ndst = \"192.0.2.1\"\n"),
        build_error("[[context]]\ndst = \"192.0.2.1\"\n[[context]]\ndst = \"192.0.2.1\"\n"),
        build_error("[[context]]\ndst = \"192.0.2.1\"\nvlan = 4095\n"),
        build_error("interfaces = [\"eth9\"]\n"),
        build_error("interfaces = [\"eth0\"]\n[[instance]]\ninterfaces = [\"eth0\"]\n"),
        build_error("[[instance]]\nsyn_cookies = \"on\"\n"),
        build_error("session_table_capacity = 2\n"),
        build_error("syn_proxy_wscale = 15\n"),
        build_error("[thresholds]\nwindow_ms = 0\n"),
    ];
    insta::assert_snapshot!(errors.join("\n"));
}

#[test]
fn vlan_and_dst_contexts_coexist() {
    let config: ShieldConfig = toml::from_str(
        "[[context]]\ndst = \"192.0.2.1\"\n[[context]]\ndst = \"192.0.2.1\"\nvlan = 7\n",
    )
    .unwrap();
    assert!(build(&config, 1, &IFACES).is_ok());
}
