//! Fuzz target `flowmgr`: see `sim::fuzzing::flowmgr` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::flowmgr(data));
