//! Fuzz target `import_ipvsadm`: see `sim::fuzzing::import_ipvsadm` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::import_ipvsadm(data));
