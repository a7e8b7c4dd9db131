#![no_main]
//! `cargo fuzz run --sanitizer none bento_config`: see fuzz/src/bento_config.rs.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kinesin_fuzz::bento_config::check_bento_config(data));
