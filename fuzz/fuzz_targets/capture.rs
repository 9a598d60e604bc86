//! Fuzz target `capture`: see `sim::fuzzing::read_capture` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::read_capture(data));
