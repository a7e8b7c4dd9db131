#![no_main]
//! `cargo fuzz run --sanitizer none seqnum`: see fuzz/src/checks.rs, `check_seqnum`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kinesin_fuzz::checks::check_seqnum(data));
