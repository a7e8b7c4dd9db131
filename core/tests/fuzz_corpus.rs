//! Replays every committed fuzz input through the same checks the cargo-fuzz
//! targets run (`fuzz/src/checks.rs`), on the stable toolchain and without
//! cargo-fuzz: `fuzz/corpus/<target>/*` (the minimised corpus) and
//! `fuzz/regressions/<target>/*` (inputs that once crashed). A failure names
//! the file; reproduce it with
//! `cd fuzz && cargo fuzz run --sanitizer none <target> <file>`.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input of `target` through its check; returns the failures.
fn replay(target: &str, check: checks::Check) -> (usize, Vec<String>) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut failures = Vec::new();
    let mut count = 0;
    for kind in ["corpus", "regressions"] {
        for file in inputs(&fuzz.join(kind).join(target)) {
            let data = std::fs::read(&file).expect("readable fuzz input");
            count += 1;
            if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(format!("{target}: {}", file.display()));
            }
        }
    }
    (count, failures)
}

fn replay_target(target: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let (count, failures) = replay(target, *check);
    assert!(
        failures.is_empty(),
        "{} of {count} inputs failed (panic message above):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fuzz_corpus_seqnum() {
    replay_target("seqnum");
}

#[test]
fn fuzz_corpus_kpl_deaggregate() {
    replay_target("kpl_deaggregate");
}

#[test]
fn fuzz_corpus_checkpoint_tracker() {
    replay_target("checkpoint_tracker");
}

#[test]
fn fuzz_corpus_pool() {
    replay_target("pool");
}

#[test]
fn fuzz_corpus_lease_row() {
    replay_target("lease_row");
}

#[test]
fn fuzz_corpus_config() {
    replay_target("config");
}

#[test]
fn fuzz_corpus_worker() {
    replay_target("worker");
}

/// Every target has a committed corpus (a renamed or new target would
/// otherwise silently replay nothing).
#[test]
fn fuzz_corpus_covers_every_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, _) in checks::TARGETS {
        assert!(
            !inputs(&corpus.join(target)).is_empty(),
            "fuzz/corpus/{target} is empty: run the target and `cargo fuzz cmin`"
        );
    }
}
