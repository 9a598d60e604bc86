//! The IP layer's fixture table (`datapath::ip::fixtures`: martian classes, TTL / hop
//! limit 0-1-2, DF + MTU, fragment sets complete / reordered / incomplete / overlapping)
//! through the Linux kernel: every packet must agree, with nothing explained away. The
//! datapath's own test (datapath/tests/ip_layer.rs) checks the simulator's side against
//! the table's expected outcomes, so agreement pins the kernel to them too.

mod kernel_support;

use std::time::Duration;

use datapath::ip::fixtures::{Expect, cases};
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::run_diff;

#[test]
fn the_ip_layer_fixtures_agree_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _serial = lock();
    let frames: Vec<(Vec<u8>, Expect)> = cases().into_iter().flat_map(|c| c.frames).collect();
    let pcap = write_pcap(
        "ip-layer.pcap",
        &frames.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
    );
    let before = own_namespaces();
    let gap = Duration::from_micros(300);
    let report = run_diff(&data("ip-layer.toml"), &[pcap], &[], gap, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let rendered = sim::kernel::diff::render(&report);
    assert!(report.disagreements.is_empty(), "{rendered}");
    assert!(report.not_injected.is_empty(), "{rendered}");
    let total = frames.len() as u64;
    assert_eq!(report.totals(), (total, total), "{rendered}");
}
