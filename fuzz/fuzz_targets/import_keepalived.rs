//! Fuzz target `import_keepalived`: see `sim::fuzzing::import_keepalived` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::import_keepalived(data));
