#![no_main]
//! `cargo fuzz run --sanitizer none pool`: see fuzz/src/checks.rs, `check_pool`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kinesin_fuzz::checks::check_pool(data));
