//! The kernel rules compiled from the test appliances, as snapshots (no root needed).

use std::path::Path;

fn rules_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kernel")
        .join(name);
    let rules = sim::kernel::rules_for(&path).expect("rules compile");
    format!(
        "## shield\n{}\n## flows\n{}\n## directors\n{}\n## features\n{}",
        rules.shield_nft,
        rules.flows_iptables,
        rules.director_nft,
        rules.render_features()
    )
}

#[test]
fn shield_lists_compile_to_a_netdev_ingress_table() {
    insta::assert_snapshot!(rules_text("shield-lists.toml"));
}

#[test]
fn vlan_contexts_compile_to_vlan_id_rules_before_the_dst_contexts() {
    insta::assert_snapshot!(rules_text("shield-vlan.toml"));
}

#[test]
fn doc_examples_compile_to_mangle_chains_and_an_rr_numgen_map() {
    insta::assert_snapshot!(rules_text("doc-examples.toml"));
}
