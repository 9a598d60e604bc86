//! Fuzz target `pipeline`: see `sim::fuzzing::pipeline` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::pipeline(data));
