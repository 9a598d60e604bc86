//! Fuzz target `config`: see `sim::fuzzing::config` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::config(data));
