#![no_main]
//! `cargo fuzz run --sanitizer none lease_row`: see fuzz/src/checks.rs, `check_lease_row`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kinesin_fuzz::checks::check_lease_row(data));
