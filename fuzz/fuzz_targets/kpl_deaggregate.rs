#![no_main]
//! `cargo fuzz run --sanitizer none kpl_deaggregate`: see fuzz/src/checks.rs, `check_kpl_deaggregate`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kinesin_fuzz::checks::check_kpl_deaggregate(data));
