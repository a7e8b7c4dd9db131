//! The `kinesin` binary as a user runs it: usage errors, configuration
//! errors, help; and `produce` then `consume` against the local emulators
//! (`scripts/emulators.sh start` and `eval "$(scripts/emulators.sh env)"`).

use std::collections::BTreeSet;
use std::io::Write;

use std::time::{SystemTime, UNIX_EPOCH};

mod common;
use common::{b64_decode, emulator_env, kinesin, stderr};

#[test]
fn help_lists_the_subcommands() {
    let o = kinesin(&["--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for cmd in ["consume", "produce", "leases"] {
        assert!(out.contains(cmd), "--help does not list {cmd}:\n{out}");
    }
    assert!(!out.contains("admin"), "admin is hidden:\n{out}");
    let o = kinesin(&["consume", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--stream",
        "--efo",
        "--lease-table",
        "--create-table",
        "--local-store",
        "--worker-id",
        "--start",
        "--exit-when-idle",
        "--max-records",
        "--config",
        "--exec",
        "--max-deliveries",
        "--dead-letter",
    ] {
        assert!(
            out.contains(flag),
            "consume --help does not list {flag}:\n{out}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["consume", "--no-such-flag"][..],
        &[
            "consume",
            "--stream",
            "s",
            "--lease-table",
            "t",
            "--local-store",
            "p",
        ],
        &["consume", "--stream", "s", "--start", "yesterday"],
        &["consume", "--stream", "s", "--max-records", "many"],
        &["consume"],
        // Dead letters need a source of nacks (--exec) and a target.
        &["consume", "--stream", "s", "--max-deliveries", "3"],
        &[
            "consume",
            "--stream",
            "s",
            "--exec",
            "true",
            "--max-deliveries",
            "3",
        ],
        &["consume", "--stream", "s", "--dead-letter", "dl.jsonl"],
        &[
            "consume",
            "--stream",
            "s",
            "--exec",
            "true",
            "--max-deliveries",
            "0",
            "--dead-letter",
            "d",
        ],
        &[
            "consume",
            "--stream",
            "s",
            "--exec",
            "true",
            "--dead-letter",
            "kinesis:",
            "--max-deliveries",
            "2",
        ],
        &["consume", "--stream", "s", "--redelivery-backoff", "1"],
        &["produce", "--stream", "s"],
        &["leases"],
        &["frobnicate"],
    ] {
        let o = kinesin(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("error"), "{args:?}: {}", stderr(&o));
    }
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "kinesin-cli-test-{}-{}-{name}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("writing a temp file");
    path
}

#[test]
fn a_bad_config_names_the_field() {
    for (yaml, field) in [
        ("streams: [a]\nchekpoint_limit: 5\n", "chekpoint_limit"),
        (
            "streams: [a]\nenhanced_fan_out:\n  enabeld: true\n",
            "enabeld",
        ),
        ("streams: [a]\ndynamodb:\n  tabel: x\n", "tabel"),
        ("streams: [a]\ncommit_period: soon\n", "commit_period"),
        (
            "streams: [a]\nbatching:\n  count: 5\n  check: this.end\n",
            "batching.check",
        ),
    ] {
        let path = temp_file("bad.yaml", yaml);
        let o = kinesin(&["consume", "--config", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert!(!o.status.success(), "{yaml:?} was accepted");
        let err = stderr(&o);
        assert!(
            err.contains(field),
            "{yaml:?}: error does not name {field}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let o = kinesin(&["consume", "--config", "/nonexistent/kinesin.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/kinesin.yaml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn produce_then_consume_json_lines() {
    emulator_env();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stream = format!("kt-cli-{}-{nanos}", std::process::id());
    let table = format!("{stream}-leases");
    let o = kinesin(&[
        "produce", "--stream", &stream, "--create", "--shards", "2", "--count", "60", "--keys", "4",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
    assert!(stderr(&o).contains("produced 60 records"), "{}", stderr(&o));
    let o = kinesin(&[
        "produce",
        "--stream",
        &stream,
        "--count",
        "40",
        "--keys",
        "4",
        "--aggregate",
        "10",
        "--size",
        "32",
    ]);
    assert!(o.status.success(), "produce --aggregate: {}", stderr(&o));
    assert!(stderr(&o).contains("4 Kinesis records"), "{}", stderr(&o));

    let o = kinesin(&[
        "consume",
        "--stream",
        &stream,
        "--lease-table",
        &table,
        "--create-table",
        "--worker-id",
        "cli-test",
        "--max-records",
        "100",
    ]);
    assert!(o.status.success(), "consume: {}", stderr(&o));
    let out = String::from_utf8(o.stdout).expect("utf-8 output");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 100, "--max-records 100 gives 100 lines");
    let mut ids = BTreeSet::new();
    let mut subs = 0;
    for v in &lines {
        let obj = v.as_object().expect("an object");
        let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "stream",
                "shard",
                "sequence",
                "sub_sequence",
                "partition_key",
                "data",
                "arrival_ms",
                "fencing_token"
            ]),
            "{v}"
        );
        assert_eq!(v["stream"], stream.as_str());
        assert!(v["shard"].as_str().unwrap().starts_with("shardId-"), "{v}");
        assert!(
            v["sequence"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_digit()),
            "{v}"
        );
        assert!(
            v["partition_key"].as_str().unwrap().starts_with("key-"),
            "{v}"
        );
        assert!(v["arrival_ms"].as_u64().unwrap() > 1_600_000_000_000, "{v}");
        assert!(v["fencing_token"].as_u64().unwrap() >= 1, "{v}");
        if v["sub_sequence"].as_u64().unwrap() > 0 {
            subs += 1;
        }
        let data = b64_decode(v["data"].as_str().unwrap());
        let id = String::from_utf8_lossy(data.split(|b| *b == b' ').next().unwrap()).into_owned();
        ids.insert(id);
    }
    assert_eq!(
        ids.len(),
        100,
        "100 distinct records (60 plain, 40 de-aggregated)"
    );
    assert_eq!(subs, 36, "4 aggregates of 10: sub-sequences 1..9 each");

    // The lease table lists both shards, released after the graceful stop.
    let o = kinesin(&["leases", "--lease-table", &table, "--stream", &stream]);
    assert!(o.status.success(), "leases: {}", stderr(&o));
    let table_out = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = table_out.lines().collect();
    assert!(rows[0].starts_with("STREAM"), "{table_out}");
    assert_eq!(rows.len(), 3, "header and 2 shards:\n{table_out}");
    assert!(rows[1..].iter().all(|r| r.contains(" free")), "{table_out}");

    // Everything was checkpointed: a second run finds nothing new.
    let o = kinesin(&[
        "consume",
        "--stream",
        &stream,
        "--lease-table",
        &table,
        "--exit-when-idle",
        "3",
    ]);
    assert!(o.status.success(), "consume again: {}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "", "no record twice");
}
