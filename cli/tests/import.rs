//! `kinesin leases import` / `rewind` on the emulators, against tables
//! built the way Bento and KCL write them, and the deadlines of `produce`
//! and `leases` against a silent endpoint.
//!
//! The truth of every test is a first full read of the stream (a local
//! store, from the oldest record): after an import, `consume` must print
//! exactly the records after each imported checkpoint, in order, KPL
//! sub-records included; nothing before it, nothing missing.
//! Needs `scripts/emulators.sh start` and `eval "$(scripts/emulators.sh env)"`.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

mod common;
use common::{emulator_env, kinesin, stderr, stdout, unique};

/// One consumed user record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    shard: String,
    seq: String,
    sub: u64,
}

fn records(out: &str) -> Vec<Rec> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            Rec {
                shard: v["shard"].as_str().unwrap().to_owned(),
                seq: v["sequence"].as_str().unwrap().to_owned(),
                sub: v["sub_sequence"].as_u64().unwrap(),
            }
        })
        .collect()
}

/// Sequence numbers are decimal integers of up to 128 digits.
fn seq_after(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

fn by_shard(recs: &[Rec]) -> BTreeMap<String, Vec<Rec>> {
    let mut m: BTreeMap<String, Vec<Rec>> = BTreeMap::new();
    for r in recs {
        m.entry(r.shard.clone()).or_default().push(r.clone());
    }
    m
}

/// A stream of 2 shards with 40 plain records then 40 more in 4 KPL
/// aggregates of 10; returns its name and every record per shard, in order.
fn stream_with_records(prefix: &str) -> (String, BTreeMap<String, Vec<Rec>>) {
    let stream = unique(prefix);
    let o = kinesin(&[
        "produce", "--stream", &stream, "--create", "--shards", "2", "--count", "40", "--keys", "8",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
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
    ]);
    assert!(o.status.success(), "produce --aggregate: {}", stderr(&o));
    let dir = std::env::temp_dir().join(unique("kinesin-import-truth"));
    let o = kinesin(&[
        "consume",
        "--stream",
        &stream,
        "--local-store",
        dir.to_str().unwrap(),
        "--max-records",
        "80",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "consume (truth): {}", stderr(&o));
    let all = records(&stdout(&o));
    assert_eq!(all.len(), 80);
    let shards = by_shard(&all);
    assert_eq!(shards.len(), 2, "records on both shards");
    (stream, shards)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn dynamo(rt: &tokio::runtime::Runtime) -> aws_sdk_dynamodb::Client {
    let sdk = rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
    aws_sdk_dynamodb::Client::new(&sdk)
}

fn create_table(
    rt: &tokio::runtime::Runtime,
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: &[(&str, KeyType)],
) {
    let mut req = db
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind) in keys {
        req = req
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(*name)
                    .key_type(kind.clone())
                    .build()
                    .unwrap(),
            );
    }
    rt.block_on(req.send()).expect("CreateTable");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = rt
            .block_on(db.describe_table().table_name(table).send())
            .unwrap();
        if d.table().and_then(|t| t.table_status()).map(|s| s.as_str()) == Some("ACTIVE") {
            return;
        }
        assert!(Instant::now() < deadline, "table {table} not ACTIVE");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn put(
    rt: &tokio::runtime::Runtime,
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    item: &[(&str, AttributeValue)],
) {
    let item: HashMap<String, AttributeValue> = item
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    rt.block_on(db.put_item().table_name(table).set_item(Some(item)).send())
        .expect("PutItem");
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Consume from the lease table until idle; the records printed.
fn consume_rest(stream: &str, table: &str) -> Vec<Rec> {
    consume_with(stream, table, &[])
}

#[test]
fn a_bento_checkpoint_table_is_imported_and_consume_resumes_right_after_each_checkpoint() {
    emulator_env();
    let rt = runtime();
    let db = dynamo(&rt);
    let (stream, truth) = stream_with_records("kt-imp-bento");
    let source = format!("{stream}-bento");
    let lease = format!("{stream}-kinesin");
    create_table(
        &rt,
        &db,
        &source,
        &[("StreamID", KeyType::Hash), ("ShardID", KeyType::Range)],
    );
    // Bento checkpoints the last acknowledged record; a stopped Bento's
    // final checkpoint has no ClientID / LeaseTimeout. Shard A is
    // checkpointed at its 5th record, shard B at its 12th.
    let mut expect = Vec::new();
    for (i, (shard, recs)) in truth.iter().enumerate() {
        let at = if i == 0 { 4 } else { 11 };
        // Bento does not de-aggregate: its checkpoints are Kinesis records.
        let cp = &recs[at].seq;
        put(
            &rt,
            &db,
            &source,
            &[
                ("StreamID", s(&stream)),
                ("ShardID", s(shard)),
                ("SequenceNumber", s(cp)),
            ],
        );
        expect.extend(recs.iter().filter(|r| seq_after(&r.seq, cp)).cloned());
    }
    // A live Bento lease (LeaseTimeout in the future) is refused.
    let live_shard = truth.keys().next().unwrap().clone();
    let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let first_cp = truth[&live_shard][4].seq.clone();
    put(
        &rt,
        &db,
        &source,
        &[
            ("StreamID", s(&stream)),
            ("ShardID", s(&live_shard)),
            ("SequenceNumber", s(&first_cp)),
            ("ClientID", s("b3c9-client")),
            ("LeaseTimeout", s(&until)),
        ],
    );
    let import = |extra: &[&str]| {
        let mut args = vec![
            "leases",
            "import",
            "--from",
            "bento",
            "--source-table",
            &source,
            "--lease-table",
            &lease,
            "--stream",
            &stream,
            "--create-table",
        ];
        args.extend_from_slice(extra);
        kinesin(&args)
    };
    let o = import(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("live leases") && stderr(&o).contains("b3c9-client"),
        "{}",
        stderr(&o)
    );
    // Bento stopped: its final checkpoint drops ClientID and LeaseTimeout.
    put(
        &rt,
        &db,
        &source,
        &[
            ("StreamID", s(&stream)),
            ("ShardID", s(&live_shard)),
            ("SequenceNumber", s(&first_cp)),
        ],
    );
    let o = import(&["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).matches("would import checkpoint").count(),
        2,
        "{}",
        stdout(&o)
    );
    let o = import(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for shard in truth.keys() {
        assert!(
            out.lines()
                .any(|l| l.starts_with(shard.as_str()) && l.contains("imported")),
            "{shard} not printed: {out}"
        );
    }
    // Idempotent.
    let o = import(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).matches("already imported").count(),
        2,
        "{}",
        stdout(&o)
    );

    let mut got = consume_rest(&stream, &lease);
    got.sort();
    expect.sort();
    assert_eq!(got, expect, "exactly the records after each checkpoint");

    // The kinesin fleet has progressed: importing again is refused.
    let o = import(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));

    // Rewind to oldest: everything again.
    let o = kinesin(&[
        "leases",
        "rewind",
        "--lease-table",
        &lease,
        "--stream",
        &stream,
        "--to",
        "oldest",
    ]);
    assert!(o.status.success(), "rewind: {}", stderr(&o));
    assert_eq!(
        stdout(&o).matches("rewound to oldest").count(),
        2,
        "{}",
        stdout(&o)
    );
    let got = consume_rest(&stream, &lease);
    assert_eq!(got.len(), 80, "every record after a rewind to oldest");
    assert_eq!(by_shard(&got), truth, "in order per shard");
}

/// `consume` on the lease table until idle, with `extra` flags.
fn consume_with(stream: &str, table: &str, extra: &[&str]) -> Vec<Rec> {
    let mut args = vec![
        "consume",
        "--stream",
        stream,
        "--lease-table",
        table,
        "--exit-when-idle",
        "3",
    ];
    args.extend_from_slice(extra);
    let o = kinesin(&args);
    assert!(o.status.success(), "consume {extra:?}: {}", stderr(&o));
    records(&stdout(&o))
}

/// `leases rewind --to TIMESTAMP`: `--dry-run` prints what it would do and
/// writes nothing; then the rewind makes `consume --start latest` print
/// exactly the records that arrived after the timestamp, none before.
#[test]
fn rewind_to_a_timestamp_resumes_at_it_and_its_dry_run_writes_nothing() {
    emulator_env();
    let stream = unique("kt-rewind-ts");
    let table = format!("{stream}-leases");
    let o = kinesin(&[
        "produce", "--stream", &stream, "--create", "--shards", "2", "--count", "20", "--keys", "8",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
    let before_t = consume_with(&stream, &table, &["--create-table", "--start", "oldest"]);
    assert_eq!(before_t.len(), 20, "the first 20 records");

    // The timestamp, well clear of both batches' arrival times.
    std::thread::sleep(Duration::from_millis(1500));
    let t = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let o = kinesin(&[
        "produce", "--stream", &stream, "--count", "10", "--keys", "8",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
    let mut after_t = consume_with(&stream, &table, &[]);
    assert_eq!(after_t.len(), 10, "the 10 records after the timestamp");
    after_t.sort();

    let table_now = || {
        let o = kinesin(&["leases", "--lease-table", &table]);
        assert!(o.status.success(), "leases: {}", stderr(&o));
        stdout(&o)
    };
    let rows = table_now();
    let rewind = |extra: &[&str]| {
        let mut args = vec![
            "leases",
            "rewind",
            "--lease-table",
            &table,
            "--stream",
            &stream,
            "--to",
            &t,
        ];
        args.extend_from_slice(extra);
        let o = kinesin(&args);
        assert!(o.status.success(), "rewind {extra:?}: {}", stderr(&o));
        stdout(&o)
    };

    // Dry run: one line per shard saying what it would do; nothing written.
    let out = rewind(&["--dry-run"]);
    assert_eq!(
        out.matches("would rewind to").count(),
        2,
        "one line per shard: {out}"
    );
    assert!(out.contains("ms since the epoch"), "{out}");
    assert!(!out.contains("rewound"), "{out}");
    assert_eq!(table_now(), rows, "a dry run writes nothing");
    assert!(
        consume_with(&stream, &table, &["--start", "latest"]).is_empty(),
        "after a dry run the checkpoints are where they were"
    );

    // The rewind: exactly the records after the timestamp, again.
    let out = rewind(&[]);
    assert_eq!(out.matches("rewound to").count(), 2, "{out}");
    assert!(
        out.contains("--start latest"),
        "prints the consume flag: {out}"
    );
    assert_ne!(table_now(), rows, "the rows were replaced");
    let mut again = consume_with(&stream, &table, &["--start", "latest"]);
    again.sort();
    assert_eq!(
        again, after_t,
        "rewound to the timestamp: the records after it, none before"
    );
}

#[test]
fn a_kcl_lease_table_is_imported_with_sub_sequences_and_live_leases_are_refused() {
    emulator_env();
    let rt = runtime();
    let db = dynamo(&rt);
    let (stream, truth) = stream_with_records("kt-imp-kcl");
    for multi in [false, true] {
        let source = format!("{stream}-kcl-{multi}");
        let lease = format!("{stream}-kinesin-{multi}");
        create_table(&rt, &db, &source, &[("leaseKey", KeyType::Hash)]);
        let mut expect = Vec::new();
        for (i, (shard, recs)) in truth.iter().enumerate() {
            // Shard A: inside a KPL aggregate (sub-record 3 done); shard
            // B: a plain record (KCL writes sub-sequence 0).
            let at = if i == 0 {
                recs.iter().position(|r| r.sub == 3).expect("an aggregate")
            } else {
                7
            };
            let cp = recs[at].clone();
            let key = if multi {
                format!("000000000000:{stream}:1700000000:{shard}")
            } else {
                shard.clone()
            };
            put(
                &rt,
                &db,
                &source,
                &[
                    ("leaseKey", s(&key)),
                    ("leaseOwner", s("kcl-worker-1")),
                    ("leaseCounter", n(41)),
                    ("ownerSwitchesSinceCheckpoint", n(0)),
                    ("checkpoint", s(&cp.seq)),
                    ("checkpointSubSequenceNumber", n(cp.sub)),
                ],
            );
            expect.extend(recs[at + 1..].iter().cloned());
        }
        if multi {
            // Another application's stream in the same multi-stream table.
            put(
                &rt,
                &db,
                &source,
                &[
                    (
                        "leaseKey",
                        s("000000000000:other:1700000000:shardId-000000000000"),
                    ),
                    ("checkpoint", s("TRIM_HORIZON")),
                ],
            );
        }
        let import = |extra: &[&str]| {
            let mut args = vec![
                "leases",
                "import",
                "--from",
                "kcl",
                "--source-table",
                &source,
                "--lease-table",
                &lease,
                "--stream",
                &stream,
                "--create-table",
                "--liveness-wait",
                "2",
            ];
            args.extend_from_slice(extra);
            kinesin(&args)
        };
        if !multi {
            // A KCL worker still renewing its leases: refused.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let renewer = {
                let source = source.clone();
                let key = truth.keys().next().unwrap().clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    // Its own runtime and client: the test's runtime is
                    // not driven while the import runs.
                    let rt = runtime();
                    let db = dynamo(&rt);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        rt.block_on(
                            db.update_item()
                                .table_name(&source)
                                .key("leaseKey", s(&key))
                                .update_expression("ADD leaseCounter :one")
                                .expression_attribute_values(":one", n(1))
                                .send(),
                        )
                        .expect("renew");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })
            };
            let o = import(&[]);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            renewer.join().unwrap();
            assert_eq!(o.status.code(), Some(1), "{} {}", stdout(&o), stderr(&o));
            assert!(
                stderr(&o).contains("live leases") && stderr(&o).contains("kcl-worker-1"),
                "{}",
                stderr(&o)
            );
        }
        let o = import(&[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            stdout(&o).matches("imported checkpoint").count(),
            2,
            "{}",
            stdout(&o)
        );
        let mut got = consume_rest(&stream, &lease);
        got.sort();
        expect.sort();
        assert_eq!(
            got, expect,
            "multi={multi}: exactly the records after each checkpoint"
        );
    }
}

/// A TCP peer that accepts and never answers.
fn silent_endpoint() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().take(64) {
            match c {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    (url, handle)
}

fn with_endpoint(args: &[&str], var: &str, url: &str) -> (Output, Duration) {
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_kinesin"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", "AKIDSILENT")
        .env("AWS_SECRET_ACCESS_KEY", "silent")
        .env("AWS_REGION", "us-east-1")
        .env(var, url)
        .output()
        .expect("running kinesin");
    (o, started.elapsed())
}

#[test]
fn produce_and_leases_against_a_silent_endpoint_fail_naming_the_call() {
    let (url, _peer) = silent_endpoint();
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &[
                "produce",
                "--stream",
                "s",
                "--count",
                "1",
                "--call-timeout",
                "1",
            ],
            "AWS_ENDPOINT_URL_KINESIS",
            "Kinesis DescribeStreamSummary got no answer within 1s",
        ),
        (
            &[
                "produce",
                "--stream",
                "s",
                "--count",
                "1",
                "--create",
                "--call-timeout",
                "1",
            ],
            "AWS_ENDPOINT_URL_KINESIS",
            "Kinesis CreateStream got no answer within 1s",
        ),
        (
            &["leases", "--lease-table", "t", "--call-timeout", "1"],
            "AWS_ENDPOINT_URL_DYNAMODB",
            "DynamoDB Query (heartbeats) got no answer within 1s",
        ),
        (
            &[
                "leases",
                "rewind",
                "--lease-table",
                "t",
                "--stream",
                "s",
                "--to",
                "oldest",
                "--call-timeout",
                "1",
            ],
            "AWS_ENDPOINT_URL_KINESIS",
            "Kinesis DescribeStreamSummary got no answer within 1s",
        ),
    ];
    for (args, var, message) in cases {
        let (o, took) = with_endpoint(args, var, &url);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
    }
}
