//! Every error kind of the flowmgr language, rendered rustc-style (one snapshot each), and
//! a file with many errors to show that all are reported.

use datapath::flows::{FlowTable, MAX_FLOWS, TableConfig};
use sim::diagnostics::render_errors;

fn render(source: &str, config: &TableConfig) -> String {
    match FlowTable::from_source(source, config) {
        Ok(_) => panic!("accepted:\n{source}"),
        Err(errors) => render_errors("test.flowmgr", source, &errors),
    }
}

fn kinds(source: &str, config: &TableConfig) -> Vec<&'static str> {
    match FlowTable::from_source(source, config) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|error| error.kind.name()).collect(),
    }
}

/// (snapshot name = error kind, source) with the default configuration.
const CASES: &[(&str, &str)] = &[
    ("unknown_keyword", "flow ssh permit\n  mtach proto tcp\n"),
    (
        "rule_outside_flow",
        "# rules first\n  match proto tcp\nflow ssh permit\n",
    ),
    ("missing_flow_name", "flow   # nameless\n  match\n"),
    ("bad_flow_name", "flow web.server permit\n"),
    ("bad_flow_name_dash", "flow -web permit\n"),
    (
        "flow_name_too_long",
        "flow a_very_long_flow_name_of_28c permit\n",
    ),
    (
        "duplicate_flow_name",
        "flow web permit\n  match\n\nflow web deny\n  match\n",
    ),
    ("reserved_flow_name", "flow ACCEPT permit\n"),
    (
        "unknown_policy",
        "flow ssh allow\n  match proto tcp dstport 22\n",
    ),
    ("missing_argument_director", "flow web director\n"),
    (
        "missing_argument_condition",
        "flow web permit\n  match proto tcp dst\n",
    ),
    ("bad_director_name", "flow web director farm/1\n"),
    ("bad_table_id", "flow web table 0\n"),
    ("bad_table_id_text", "flow web table main\n"),
    ("unexpected_token", "flow web permit now\n"),
    (
        "unknown_condition",
        "flow web permit\n  match proto tcp port 80\n",
    ),
    ("dangling_not", "flow web permit\n  match proto tcp not\n"),
    (
        "dangling_not_twice",
        "flow web permit\n  match not not src 10.0.0.0/8\n",
    ),
    (
        "duplicate_condition",
        "flow web permit\n  match src 10.0.0.1 src 10.0.0.2\n",
    ),
    ("unknown_protocol", "flow web permit\n  match proto sctp\n"),
    (
        "bad_address",
        "flow web permit\n  match dst 192.168.0.300\n",
    ),
    (
        "bad_mask_length",
        "flow web permit\n  match dst 192.168.0.0/33\n",
    ),
    (
        "bad_mask_dotted",
        "flow web permit\n  match dst 192.168.0.0/255.0.255.0\n",
    ),
    (
        "port_out_of_range",
        "flow web permit\n  match proto tcp dstport 65536\n",
    ),
    (
        "port_not_a_number",
        "flow web permit\n  match proto tcp dstport http\n",
    ),
    (
        "reversed_port_range",
        "flow web permit\n  match proto tcp dstport 1024:80\n",
    ),
    (
        "port_without_tcp_udp",
        "flow web permit\n  match dst 10.0.0.1 dstport 80\n",
    ),
    (
        "port_with_negated_proto",
        "flow web permit\n  match not proto tcp srcport 80\n",
    ),
    (
        "icmptype_without_icmp",
        "flow ping permit\n  match proto udp icmptype 8\n",
    ),
    (
        "bad_icmp_type",
        "flow ping permit\n  match proto icmp icmptype 256\n",
    ),
    (
        "mixed_address_families",
        "flow web permit\n  match src 10.0.0.1 dst 2001:db8::1\n",
    ),
    (
        "mixed_icmptype_ipv6",
        "flow ping permit\n  match proto icmp icmptype 8 dst 2001:db8::1\n",
    ),
    (
        "bad_interface_name",
        "flow web permit\n  match iface eth+\n",
    ),
];

#[test]
fn every_error_kind_renders() {
    for (name, source) in CASES {
        insta::assert_snapshot!(*name, render(source, &TableConfig::default()));
    }
}

fn context() -> TableConfig {
    TableConfig {
        iface_names: Some(vec!["eth0".into(), "eth1".into()]),
        director_marks: Some(
            [("web".to_owned(), 80), ("mail".to_owned(), 0x10000)]
                .into_iter()
                .collect(),
        ),
    }
}

#[test]
fn context_errors_render() {
    let cases = [
        ("unknown_interface", "flow web permit\n  match iface eth9\n"),
        ("undefined_director", "flow web director webfarm\n  match\n"),
        ("bad_mark", "flow mail director mail\n  match\n"),
    ];
    for (name, source) in cases {
        insta::assert_snapshot!(name, render(source, &context()));
    }
}

#[test]
fn too_many_flows_is_an_error() {
    let source: String = (0..=MAX_FLOWS)
        .map(|index| format!("flow f{index} permit\n"))
        .collect();
    insta::assert_snapshot!("too_large", render(&source, &TableConfig::default()));
}

#[test]
fn all_errors_of_a_file_are_reported() {
    let source = "\
flow ssh allow             # unknown policy
   match proto tcp dstport 22
   match proto tcp dstport 99999
flow ssh permit            # duplicate
   match src 10.0.0.0/40 not
\tignore proto sctp iface eth9
match dst 1.2.3.4
";
    let rendered = render(source, &context());
    insta::assert_snapshot!("many_errors", rendered);
    assert_eq!(
        kinds(source, &context()),
        [
            "unknown_policy",
            "port_out_of_range",
            "duplicate_flow_name",
            "bad_mask",
            "dangling_not",
            "unknown_protocol",
            "unknown_interface",
        ]
    );
}

#[test]
fn every_kind_has_a_case() {
    let mut covered: Vec<&str> = CASES
        .iter()
        .flat_map(|(_, source)| kinds(source, &TableConfig::default()))
        .collect();
    covered.extend([
        "unknown_interface",
        "undefined_director",
        "bad_mark",
        "too_large",
    ]);
    use datapath::flows::FlowErrorKind as K;
    let all = [
        K::UnknownKeyword,
        K::RuleOutsideFlow,
        K::MissingFlowName,
        K::BadFlowName,
        K::FlowNameTooLong,
        K::DuplicateFlowName,
        K::ReservedFlowName,
        K::UnknownPolicy,
        K::MissingArgument,
        K::BadDirectorName,
        K::BadTableId,
        K::UnexpectedToken,
        K::UnknownCondition,
        K::DanglingNot,
        K::DuplicateCondition,
        K::UnknownProtocol,
        K::BadAddress,
        K::BadMask,
        K::PortOutOfRange,
        K::ReversedPortRange,
        K::PortWithoutTcpUdp,
        K::IcmpTypeWithoutIcmp,
        K::BadIcmpType,
        K::MixedAddressFamilies,
        K::BadInterfaceName,
        K::UnknownInterface,
        K::UndefinedDirector,
        K::BadMark,
        K::TooLarge,
    ];
    for kind in all {
        assert!(
            covered.contains(&kind.name()),
            "no case for {}",
            kind.name()
        );
    }
}
