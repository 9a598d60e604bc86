//! Fuzz target `scenario`: see `sim::fuzzing::scenario` for what it checks. Its custom
//! mutator (`sim::fuzzing::mutate_scenario`) edits the input as a TOML document, so most
//! inputs stay scenarios that reach the engine.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};

fuzz_target!(|data: &[u8]| sim::fuzzing::scenario(data));

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    sim::fuzzing::mutate_scenario(data, size, max_size, seed, fuzzer_mutate)
});
