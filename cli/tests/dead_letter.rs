//! Poison records in the CLI, on the local emulators (`scripts/emulators.sh
//! start` and `eval "$(scripts/emulators.sh env)"`): `kinesin consume
//! --exec CMD` nacks a batch whose command fails; past `--max-deliveries`
//! the batch goes to `--dead-letter` (a file or a Kinesis stream) and the
//! shard moves on; its checkpoint covers the dead-lettered records only
//! once they are stored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;

mod common;
use common::{b64_decode, emulator_env, stderr, unique};

/// `kinesin` with its own logs at info (the tests read what it says about
/// dead letters).
fn kinesin(args: &[&str]) -> std::process::Output {
    common::kinesin_logged(args, "warn,kinesin=info")
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `kinesin produce`'s data of record `n`: `<run>-<n> ` padded to `size`.
fn payload(run: &str, n: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{run}-{n} ").into_bytes();
    while v.len() < size {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v
}

/// Produce `count` 64-byte records; returns the run id of their data.
fn produce(stream: &str, shards: &str, count: &str) -> String {
    let o = kinesin(&[
        "produce", "--stream", stream, "--create", "--shards", shards, "--count", count, "--keys",
        "8",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
    let err = stderr(&o);
    let ids = err
        .split("ids ")
        .nth(1)
        .unwrap_or_else(|| panic!("no ids in {err}"));
    ids.split("-0..").next().unwrap().trim().to_owned()
}

/// The record ids (`<run>-<n>`) in JSON Lines, with their shard.
fn ids_of(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            let data = b64_decode(v["data"].as_str().unwrap());
            let id =
                String::from_utf8_lossy(data.split(|b| *b == b' ').next().unwrap()).into_owned();
            (id, v["shard"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// A command that appends its batch to `out` unless the batch holds the
/// record whose base64 data is `poison` (then it fails: a nack), and
/// counts its runs in `runs`.
fn exec_line(out: &Path, runs: &Path, poison: &str) -> String {
    format!(
        "f=$(mktemp) && cat > \"$f\" && echo \"$KINESIN_SHARD\" >> '{runs}' && \
         if grep -qF '\"data\":\"{poison}\"' \"$f\"; then rm -f \"$f\"; exit 1; fi; \
         cat \"$f\" >> '{out}'; rm -f \"$f\"",
        runs = runs.display(),
        out = out.display(),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique(name))
}

#[test]
fn a_poison_record_is_dead_lettered_once_and_checkpointed_only_after_it_is_written() {
    emulator_env();
    let stream = unique("kt-dlq");
    let table = format!("{stream}-leases");
    let run = produce(&stream, "2", "30");
    let poison_id = format!("{run}-7");
    let poison = b64(&payload(&run, 7, 64));
    let out = temp("exec-out.jsonl");
    let runs = temp("exec-runs.txt");
    let dead = temp("dead.jsonl");
    // One record per batch (Bento's batching), so the poisoned batch is the
    // poison record alone.
    let config = temp("config.yaml");
    std::fs::write(
        &config,
        format!("streams: [ {stream} ]\ndynamodb:\n  table: {table}\n  create: true\nbatching:\n  count: 1\n"),
    )
    .unwrap();
    let exec = exec_line(&out, &runs, &poison);
    let consume = |dead_letter: &str| {
        kinesin(&[
            "consume",
            "--config",
            config.to_str().unwrap(),
            "--worker-id",
            "dlq-test",
            "--exec",
            &exec,
            "--max-deliveries",
            "3",
            "--redelivery-backoff",
            "0.05",
            "--redelivery-backoff-max",
            "0.2",
            "--dead-letter",
            dead_letter,
            "--exit-when-idle",
            "4",
        ])
    };

    // 1. The dead letter cannot be written (/dev/full: every write fails
    // with ENOSPC, as on a full disk): every other record of both shards
    // is delivered, the poison never, and its shard's checkpoint stays
    // before it.
    let o = consume("/dev/full");
    assert!(o.status.success(), "run 1: {}", stderr(&o));
    assert!(
        stderr(&o).contains("not stored"),
        "run 1 names the failed dead letter: {}",
        stderr(&o)
    );
    let delivered = ids_of(&read(&out));
    let ids: BTreeSet<&str> = delivered.iter().map(|(id, _)| id.as_str()).collect();
    let want: BTreeSet<String> = (0..30)
        .filter(|n| *n != 7)
        .map(|n| format!("{run}-{n}"))
        .collect();
    assert_eq!(
        ids,
        want.iter().map(String::as_str).collect(),
        "run 1 delivers every record but the poison"
    );
    let shards: BTreeSet<&str> = delivered.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(shards.len(), 2, "both shards delivered: {shards:?}");
    let poison_runs_1 = read(&runs).lines().count() - delivered.len();
    assert_eq!(
        poison_runs_1, 3,
        "the poison batch is delivered --max-deliveries times in run 1"
    );

    // 2. The dead letter can be written: the poison is delivered again
    // (the checkpoint had stayed before it), 3 times, then written once.
    let before = read(&runs).lines().count();
    let delivered_before = delivered.len();
    let o = consume(dead.to_str().unwrap());
    assert!(o.status.success(), "run 2: {}", stderr(&o));
    let runs_2 = read(&runs).lines().count() - before;
    let delivered_2 = ids_of(&read(&out)).len() - delivered_before;
    assert_eq!(
        runs_2 - delivered_2,
        3,
        "run 2 delivers the poison 3 times again (checkpoint before it)"
    );
    let letters: Vec<serde_json::Value> = read(&dead)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert_eq!(letter["stream"], stream.as_str(), "{letter}");
    let recs = letter["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1, "{letter}");
    assert_eq!(recs[0]["data"], poison.as_str(), "{letter}");
    assert_eq!(
        ids_of(&format!("{}\n", recs[0]))[0].0,
        poison_id,
        "the dead letter holds the poison record"
    );
    assert_eq!(letter["first_sequence"], recs[0]["sequence"], "{letter}");
    assert_eq!(letter["last_sequence"], recs[0]["sequence"], "{letter}");
    assert_eq!(letter["shard"], recs[0]["shard"], "{letter}");

    // 3. Everything is checkpointed, the dead letter included: nothing is
    // delivered again, nothing dead-lettered twice.
    let before = read(&runs).lines().count();
    let o = consume(dead.to_str().unwrap());
    assert!(o.status.success(), "run 3: {}", stderr(&o));
    assert_eq!(
        read(&runs).lines().count(),
        before,
        "run 3 delivers nothing: {}",
        stderr(&o)
    );
    assert_eq!(read(&dead).lines().count(), 1, "still one dead letter");

    // Each record was delivered at least once, the poison only to the
    // dead letter.
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for (id, _) in ids_of(&read(&out)) {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 29);
    assert!(!counts.contains_key(&poison_id));
    for p in [&out, &runs, &dead, &config] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_dead_letter_goes_to_a_kinesis_stream_with_its_attempts() {
    emulator_env();
    let stream = unique("kt-dlqk");
    let dlq = format!("{stream}-dlq");
    let run = produce(&stream, "1", "10");
    // The dead-letter stream.
    let o = kinesin(&[
        "produce", "--stream", &dlq, "--create", "--shards", "1", "--count", "1",
    ]);
    assert!(o.status.success(), "dlq: {}", stderr(&o));
    let poison = b64(&payload(&run, 4, 64));
    let out = temp("exec-out.jsonl");
    let runs = temp("exec-runs.txt");
    let store = temp("store");
    let dlq_store = temp("store-dlq");
    let config = temp("config.yaml");
    std::fs::write(&config, "batching:\n  count: 1\n").unwrap();
    let o = kinesin(&[
        "consume",
        "--stream",
        &stream,
        "--config",
        config.to_str().unwrap(),
        "--local-store",
        store.to_str().unwrap(),
        "--exec",
        &exec_line(&out, &runs, &poison),
        "--max-deliveries",
        "2",
        "--redelivery-backoff",
        "0",
        "--dead-letter",
        &format!("kinesis:{dlq}"),
        "--exit-when-idle",
        "3",
    ]);
    assert!(o.status.success(), "consume: {}", stderr(&o));
    assert_eq!(ids_of(&read(&out)).len(), 9, "9 records delivered");
    // The dead-letter stream: the produced filler record, then the poison.
    let o = kinesin(&[
        "consume",
        "--stream",
        &dlq,
        "--local-store",
        dlq_store.to_str().unwrap(),
        "--max-records",
        "2",
    ]);
    assert!(o.status.success(), "consume dlq: {}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let envelope: serde_json::Value =
        serde_json::from_slice(&b64_decode(lines[1]["data"].as_str().unwrap()))
            .expect("the dead letter is a JSON envelope");
    assert_eq!(envelope["data"], poison.as_str(), "{envelope}");
    assert_eq!(envelope["attempts"], 2, "{envelope}");
    assert_eq!(envelope["stream"], stream.as_str(), "{envelope}");
    assert_eq!(
        lines[1]["partition_key"], envelope["partition_key"],
        "original partition key"
    );
    for p in [&out, &runs, &config] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&store);
    let _ = std::fs::remove_dir_all(&dlq_store);
}

/// GET `path` on 127.0.0.1:`port`: (status code, body), or None if nothing
/// answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// The value of the unlabelled sample `name` in a scrape.
fn sample(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Bento's `auto_replay_nacks: false`: the batch its command fails on is
/// dropped (never delivered again) and counted on `/metrics` (kinesin's own
/// registry, the one the CLI serves), not only on the `metrics` facade.
#[test]
fn auto_replay_nacks_false_drops_the_failed_batch_and_counts_it_on_metrics() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    emulator_env();
    let stream = unique("kt-drop");
    let table = format!("{stream}-leases");
    let run = produce(&stream, "1", "10");
    let poison_id = format!("{run}-3");
    let poison = b64(&payload(&run, 3, 64));
    let out = temp("drop-out.jsonl");
    let runs = temp("drop-runs.txt");
    let config = temp("drop-config.yaml");
    std::fs::write(
        &config,
        format!(
            "streams: [ {stream} ]\ndynamodb:\n  table: {table}\n  create: true\nbatching:\n  \
             count: 1\nauto_replay_nacks: false\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kinesin"))
        .args([
            "consume",
            "--config",
            config.to_str().unwrap(),
            "--worker-id",
            "drop-test",
            "--exec",
            &exec_line(&out, &runs, &poison),
            "--metrics-addr",
            &addr,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting kinesin consume");
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let scraped = http_get(port, "/metrics").map(|(_, b)| b);
        let done = scraped.as_deref().is_some_and(|b| {
            sample(b, "kinesin_dead_letters_dropped_total").is_some_and(|n| n >= 1)
                && ids_of(&read(&out)).len() >= 9
        });
        if done {
            // Time for a wrong redelivery (or a second drop) to show.
            std::thread::sleep(Duration::from_secs(2));
            break http_get(port, "/metrics").expect("scrape").1;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "no dropped dead letter counted within 60 s; delivered {:?}; last scrape:\n{}",
                ids_of(&read(&out)),
                scraped.unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "kinesin consume: {status}");
    assert_eq!(
        sample(&body, "kinesin_dead_letters_dropped_total"),
        Some(1),
        "{body}"
    );
    assert_eq!(
        sample(&body, "kinesin_dead_letters_total"),
        Some(1),
        "{body}"
    );
    assert_eq!(
        sample(&body, "kinesin_redeliveries_total"),
        Some(0),
        "{body}"
    );
    let delivered: BTreeSet<String> = ids_of(&read(&out)).into_iter().map(|(id, _)| id).collect();
    let want: BTreeSet<String> = (0..10)
        .filter(|n| *n != 3)
        .map(|n| format!("{run}-{n}"))
        .collect();
    assert_eq!(delivered, want, "every record but the dropped one");
    // The poison was run once: dropped, not delivered again.
    assert_eq!(read(&runs).lines().count(), 10, "one run per record");
    assert!(!delivered.contains(&poison_id));
    for p in [&out, &runs, &config] {
        let _ = std::fs::remove_file(p);
    }
}
