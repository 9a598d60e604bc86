//! Property tests: the indexed evaluator (`classify`) agrees with the straightforward
//! interpreter (`trace`) on random valid files and packets, and so do the counters; every
//! generated file parses, and re-parses identically from its own rendering.

mod common;

use datapath::flows::{FlowTable, StepOutcome, TableConfig};
use datapath::packet::PacketMeta;
use proptest::prelude::*;

/// A second, independent reading of the language over the table's rules: walk flows and
/// rules in order, one condition at a time.
fn reference(table: &FlowTable, meta: &PacketMeta) -> Option<(usize, u32)> {
    for (flow_index, flow) in table.flows().iter().enumerate() {
        for rule in table.flow_rules(flow_index) {
            let family_ok = match (rule.family, meta.src) {
                (None, Some(_)) => true,
                (Some(datapath::flows::Family::V4), Some(address)) => address.is_ipv4(),
                (Some(datapath::flows::Family::V6), Some(address)) => address.is_ipv6(),
                (_, None) => false,
            };
            let holds = family_ok
                && (0..rule.conditions.len()).all(|index| rule.condition_holds(index, meta));
            if !holds {
                continue;
            }
            match (rule.kind, flow.action) {
                (datapath::flows::RuleKind::Match, datapath::flows::FlowAction::Skip)
                | (datapath::flows::RuleKind::Ignore, _) => break,
                (datapath::flows::RuleKind::Match, _) => return Some((flow_index, rule.number)),
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn classify_agrees_with_reference(
        text in common::flow_file(12),
        packets in proptest::collection::vec(common::packet(), 1..40),
        with_directors in any::<bool>(),
    ) {
        let table = FlowTable::from_source(&text, &common::config(with_directors))
            .unwrap_or_else(|errors| panic!("generated file rejected: {errors:?}\n{text}"));
        let mut counters = table.counters();
        for meta in &packets {
            let verdict = table.classify(meta);
            let trace = table.trace(meta);
            prop_assert_eq!(verdict, trace.verdict, "trace\n{}\n{:?}", text, meta);
            prop_assert_eq!(verdict.map(|v| (v.flow, v.rule)), reference(&table, meta));
            let before = counters.rule_hits.clone();
            prop_assert_eq!(table.classify_counted(meta, &mut counters), verdict);
            let decided: Vec<usize> = trace
                .steps
                .iter()
                .filter(|step| step.outcome == StepOutcome::Held)
                .map(|step| step.rule)
                .collect();
            let counted: Vec<usize> = (0..before.len())
                .filter(|rule| counters.rule_hits[*rule] != before[*rule])
                .collect();
            prop_assert_eq!(decided, counted);
        }
    }

    #[test]
    fn rendering_reparses_to_the_same_rules(text in common::flow_file(8)) {
        let file = datapath::flows::parse(&text).expect("valid");
        let mut rendered = String::new();
        for flow in &file.flows {
            rendered.push_str(&format!("flow {} {}\n", flow.name, flow.policy));
            for rule in &flow.rules {
                rendered.push_str(&format!("  {rule}\n"));
            }
        }
        let again = datapath::flows::parse(&rendered).expect("rendering is valid");
        prop_assert_eq!(file.flows.len(), again.flows.len());
        for (first, second) in file.flows.iter().zip(&again.flows) {
            prop_assert_eq!(&first.policy, &second.policy);
            let tests = |flow: &datapath::flows::FlowDef| -> Vec<String> {
                flow.rules.iter().map(ToString::to_string).collect()
            };
            prop_assert_eq!(tests(first), tests(second));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(flow|match|ignore|not|src|dst|proto|tcp|[0-9./:]{1,12}|#| |\n){0,40}") {
        let _ = FlowTable::from_source(&text, &TableConfig::default());
    }
}
