//! Snapshots of the compiled rule sets (iptables, ip6tables, nft, ip rules) for the
//! documentation's examples and the every-keyword file.

use datapath::flows::{Family, FlowTable, TableConfig, compile};

const DOC_EXAMPLES: &str = include_str!("../../scenarios/flows/doc-examples.flowmgr");
const EVERY_KEYWORD: &str = include_str!("../../scenarios/flows/every-keyword.flowmgr");

fn doc_table() -> FlowTable {
    FlowTable::from_source(DOC_EXAMPLES, &TableConfig::default()).expect("valid")
}

fn keyword_table() -> FlowTable {
    let config = TableConfig {
        iface_names: Some(vec!["eth0".into(), "eth1".into()]),
        director_marks: Some([("web-farm".to_owned(), 80)].into_iter().collect()),
    };
    FlowTable::from_source(EVERY_KEYWORD, &config).expect("valid")
}

#[test]
fn doc_examples_iptables() {
    insta::assert_snapshot!(compile::iptables(&doc_table(), Family::V4));
}

#[test]
fn doc_examples_nft() {
    insta::assert_snapshot!(compile::nft(&doc_table()));
}

#[test]
fn every_keyword_iptables() {
    insta::assert_snapshot!(compile::iptables(&keyword_table(), Family::V4));
}

#[test]
fn every_keyword_ip6tables() {
    insta::assert_snapshot!(compile::iptables(&keyword_table(), Family::V6));
}

#[test]
fn every_keyword_nft() {
    insta::assert_snapshot!(compile::nft(&keyword_table()));
}

#[test]
fn every_keyword_ip_rules() {
    insta::assert_snapshot!(compile::ip_rules(&keyword_table()).join("\n"), @r"
    ip rule add fwmark 0x10064 lookup 100
    ip -6 rule add fwmark 0x10064 lookup 100
    ");
}
