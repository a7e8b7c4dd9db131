#![no_main]
//! `cargo fuzz run --sanitizer none worker`: see fuzz/src/checks.rs, `check_worker`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kinesin_fuzz::checks::check_worker(data));
