//! Fuzz target `import_ldirectord`: see `sim::fuzzing::import_ldirectord` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::import_ldirectord(data));
