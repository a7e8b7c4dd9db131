#![no_main]
//! `cargo fuzz run --sanitizer none config`: see fuzz/src/checks.rs, `check_config`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kinesin_fuzz::checks::check_config(data));
