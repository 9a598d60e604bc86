//! Fuzz target `import_nft`: see `sim::fuzzing::import_nft` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::import_nft(data));
