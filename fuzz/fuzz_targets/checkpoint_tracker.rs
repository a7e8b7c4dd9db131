#![no_main]
//! `cargo fuzz run --sanitizer none checkpoint_tracker`: see fuzz/src/checks.rs, `check_checkpoint_tracker`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kinesin_fuzz::checks::check_checkpoint_tracker(data));
