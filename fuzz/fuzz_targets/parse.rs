//! Fuzz target `parse`: see `sim::fuzzing::parse_frame` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::parse_frame(data));
