//! Helpers every CLI test binary shares: running the `kinesin` binary,
//! its output as text, the emulator check, unique names. Each test binary
//! uses only some of them.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// Run `kinesin` with `args` (logs at warn) and wait for it.
pub fn kinesin(args: &[&str]) -> Output {
    kinesin_logged(args, "warn")
}

/// Run `kinesin` with `args` and `RUST_LOG=rust_log`, and wait for it.
pub fn kinesin_logged(args: &[&str], rust_log: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kinesin"))
        .args(args)
        .env("RUST_LOG", rust_log)
        .output()
        .expect("running kinesin")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Panic with what to do when the emulators' endpoints are not set.
pub fn emulator_env() {
    for var in ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: this test needs the local emulators. Run `scripts/emulators.sh \
             start` and `eval \"$(scripts/emulators.sh env)\"`, then run the tests again from \
             that shell."
        );
    }
}

/// `prefix`-pid-nanos: a name no other run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("data is base64")
}
