//! `kinesin status` against a running fleet on the local emulators
//! (`scripts/emulators.sh start` and `eval "$(scripts/emulators.sh env)"`):
//! two `kinesin consume` workers share a lease table; `status --json` must
//! show every shard of the stream with its owner (one of the two workers),
//! its checkpoint and its lag, and every worker with its heartbeat age and
//! the leases it owns; the text view shows the same owners. Then a shard is
//! split (as the demo does): the parent shows as ended (`SHARD_END`) with
//! its children, and each child owned by a worker with a checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::{emulator_env, kinesin, stderr};

/// A `kinesin consume` worker, stopped with SIGTERM on drop.
struct Worker(Child);

impl Worker {
    fn start(stream: &str, table: &str, id: &str) -> Worker {
        let child = Command::new(env!("CARGO_BIN_EXE_kinesin"))
            .args([
                "consume",
                "--stream",
                stream,
                "--lease-table",
                table,
                "--create-table",
                "--worker-id",
                id,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting kinesin consume");
        Worker(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_json(table: &str, stream: &str, extra: &[&str]) -> Option<serde_json::Value> {
    let mut args = vec![
        "status",
        "--lease-table",
        table,
        "--stream",
        stream,
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = kinesin(&args);
    if !o.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&o.stdout).expect("status --json prints one JSON document"))
}

/// (shard -> (owner, checkpoint)) of the first stream.
fn shards(v: &serde_json::Value) -> BTreeMap<String, (Option<String>, Option<String>)> {
    v["streams"][0]["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            (
                s["shard"].as_str().unwrap().to_owned(),
                (
                    s["owner"].as_str().map(str::to_owned),
                    s["checkpoint"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect()
}

#[test]
fn status_json_shows_every_shards_owner_and_checkpoint_of_a_running_fleet() {
    emulator_env();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stream = format!("kt-status-{}-{nanos}", std::process::id());
    let table = format!("{stream}-leases");
    let o = kinesin(&[
        "produce", "--stream", &stream, "--create", "--shards", "3", "--count", "90",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));

    let _w1 = Worker::start(&stream, &table, "status-w1");
    // The first worker creates the table; the second joins once it exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status_json(&table, &stream, &["--sample", "0", "--no-lag"]).is_none() {
        assert!(Instant::now() < deadline, "the lease table never appeared");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _w2 = Worker::start(&stream, &table, "status-w2");
    let workers = BTreeSet::from(["status-w1".to_owned(), "status-w2".to_owned()]);

    // Wait until every shard is held by one of the two and checkpointed
    // (the commit period is 5 s), and both heartbeats are in the table.
    let deadline = Instant::now() + Duration::from_secs(90);
    let v = loop {
        let v = status_json(&table, &stream, &["--sample", "0", "--no-lag"]);
        if let Some(v) = v {
            let sh = shards(&v);
            let seen: BTreeSet<String> = v["workers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["worker"].as_str().unwrap().to_owned())
                .collect();
            if sh.len() == 3
                && sh
                    .values()
                    .all(|(o, c)| o.as_ref().is_some_and(|o| workers.contains(o)) && c.is_some())
                && seen == workers
            {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet never held and checkpointed every shard: {v:#}"
            );
        }
        assert!(Instant::now() < deadline, "status kept failing");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(v["lease_table"], table.as_str());
    assert!(v["streams"][0]["stream"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":stream/{stream}")));

    // The full view: heartbeat age from two reads 4 s apart (workers beat
    // every 3.3 s), lag of every checkpointed shard, leases per worker
    // matching the owners.
    let v = status_json(&table, &stream, &["--sample", "4"]).expect("status --json");
    let sh = shards(&v);
    let mut owned: BTreeMap<String, u64> = BTreeMap::new();
    for (shard, (owner, checkpoint)) in &sh {
        let owner = owner
            .as_ref()
            .unwrap_or_else(|| panic!("{shard} has no owner: {v:#}"));
        assert!(workers.contains(owner), "{shard} owned by {owner}");
        assert!(checkpoint.is_some(), "{shard} has no checkpoint: {v:#}");
        *owned.entry(owner.clone()).or_default() += 1;
    }
    for s in v["streams"][0]["shards"].as_array().unwrap() {
        assert_eq!(s["has_lease"], true, "{s}");
        assert_eq!(s["in_stream"], true, "{s}");
        assert!(s["token"].as_u64().unwrap() >= 1, "{s}");
        assert!(
            s["state"].as_str().unwrap().starts_with("held")
                || s["state"].as_str().unwrap().starts_with("handing off"),
            "{s}"
        );
        assert!(
            s["millis_behind_latest"].is_u64(),
            "lag of a checkpointed shard is known: {s}"
        );
    }
    for w in v["workers"].as_array().unwrap() {
        let id = w["worker"].as_str().unwrap();
        assert_eq!(w["alive"], true, "{w}");
        assert_eq!(
            w["leases"].as_u64().unwrap(),
            owned.get(id).copied().unwrap_or(0),
            "{w}"
        );
        let age = w["heartbeat_age_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("a live worker beats within 4 s: {w}"));
        assert!(age <= 10_000, "{w}");
    }
    assert_eq!(v["bad_rows"].as_array().unwrap().len(), 0, "{v:#}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 0, "{v:#}");

    // The text view names the same owners, one line per shard.
    let o = kinesin(&[
        "status",
        "--lease-table",
        &table,
        "--stream",
        &stream,
        "--sample",
        "0",
    ]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("STREAM"), "{text}");
    for shard in sh.keys() {
        let line = text
            .lines()
            .find(|l| l.contains(shard.as_str()))
            .unwrap_or_else(|| panic!("no line for {shard}:\n{text}"));
        assert!(workers.iter().any(|w| line.contains(w.as_str())), "{line}");
    }

    // Split a shard, as the demo does, and produce records on every child
    // (64 keys: each child's half of the hash range gets some).
    let parent = "shardId-000000000000";
    let o = kinesin(&["admin", "split", "--stream", &stream, "--shard", parent]);
    assert!(o.status.success(), "admin split: {}", stderr(&o));
    let children: BTreeSet<String> = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(children.len(), 2, "two children: {children:?}");
    let o = kinesin(&[
        "produce", "--stream", &stream, "--count", "90", "--keys", "64",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));

    // The parent is read to its end: its row is checkpointed SHARD_END,
    // and it names its children. (Once every child has a checkpoint, a
    // worker deletes that row, so it is watched for from the split on.)
    let by_shard = |v: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        v["streams"][0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["shard"].as_str().unwrap().to_owned(), s.clone()))
            .collect()
    };
    let names = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (ended, text) = loop {
        if let Some(v) = status_json(&table, &stream, &["--sample", "0", "--no-lag"]) {
            let p = by_shard(&v).remove(parent);
            if let Some(p) = p.filter(|p| p["checkpoint"] == "SHARD_END") {
                // The text view of the same moment.
                let o = kinesin(&[
                    "status",
                    "--lease-table",
                    &table,
                    "--stream",
                    &stream,
                    "--sample",
                    "0",
                    "--no-lag",
                ]);
                assert!(o.status.success(), "status: {}", stderr(&o));
                break (p, String::from_utf8_lossy(&o.stdout).into_owned());
            }
            assert!(
                by_shard(&v)
                    .get(parent)
                    .is_some_and(|p| p["has_lease"] == true),
                "the parent's row went before it was seen ended: {v:#}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the parent never showed SHARD_END"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(ended["state"], "ended", "{ended}");
    assert_eq!(ended["closed"], true, "{ended}");
    assert_eq!(
        names(&ended["children"]),
        children,
        "the parent names its children: {ended}"
    );
    let line = text
        .lines()
        .find(|l| l.contains(parent))
        .unwrap_or_else(|| panic!("no line for {parent}:\n{text}"));
    // Unless the row was collected between the two reads.
    assert!(
        (line.contains("SHARD_END") && line.contains("ended")) || line.contains("no lease"),
        "{line}"
    );

    // Each child held by one of the two workers and checkpointed; the
    // parent still ended, or its row collected (then `no lease`, closed,
    // still naming its children).
    let deadline = Instant::now() + Duration::from_secs(120);
    let v = loop {
        if let Some(v) = status_json(&table, &stream, &["--sample", "0", "--no-lag"]) {
            let sh = shards(&v);
            let children_held = children.iter().all(|c| {
                sh.get(c).is_some_and(|(o, cp)| {
                    o.as_ref().is_some_and(|o| workers.contains(o))
                        && cp.as_ref().is_some_and(|cp| cp != "SHARD_END")
                })
            });
            if sh.len() == 5 && children_held {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "the children were never held and checkpointed: {v:#}"
            );
        }
        assert!(Instant::now() < deadline, "status kept failing");
        std::thread::sleep(Duration::from_secs(1));
    };
    let all = by_shard(&v);
    let p = &all[parent];
    assert_eq!(p["closed"], true, "{p}");
    assert_eq!(names(&p["children"]), children, "{p}");
    let state = p["state"].as_str().unwrap();
    if p["has_lease"] == true {
        assert_eq!(p["checkpoint"], "SHARD_END", "{p}");
        assert_eq!(state, "ended", "{p}");
    } else {
        assert!(state.starts_with("no lease"), "{p}");
    }
    for c in &children {
        let s = &all[c.as_str()];
        assert_eq!(s["parents"], serde_json::json!([parent]), "{s}");
        assert!(s["state"].as_str().unwrap().starts_with("held"), "{s}");
        assert!(s["token"].as_u64().unwrap() >= 1, "{s}");
        assert_eq!(s["in_stream"], true, "{s}");
    }
}
