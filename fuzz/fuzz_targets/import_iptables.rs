//! Fuzz target `import_iptables`: see `sim::fuzzing::import_iptables` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::import_iptables(data));
