//! Checks every `LeaseStore` must pass, shared by the DynamoDB and local
//! store tests.

use anyhow::{bail, ensure, Context, Result};
use kinesin_aws::LeaseStore;
use kinesin_core::ids::{FencingToken, Owner, ShardId, ShardRef, StreamId};
use kinesin_core::io::ErrorClass;
use kinesin_core::sequence::{Checkpoint, ExtSeq, SeqNum};
use kinesin_core::table::{HeartbeatRow, LeaseRow, LeaseWrite};

/// A realistic 56-digit sequence number.
const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

fn seq() -> SeqNum {
    SeqNum::parse(SEQ).expect("valid test sequence number")
}

fn after() -> Checkpoint {
    Checkpoint::After(seq())
}

fn within() -> Checkpoint {
    Checkpoint::Within(ExtSeq::new(seq(), 2))
}

/// A worker id with a `#` in it, to exercise the owner encoding.
fn a() -> Owner {
    Owner::new("host-a#blue", 1)
}

fn b() -> Owner {
    Owner::new("b", 7)
}

fn c() -> Owner {
    Owner::new("c", 3)
}

pub fn shard(stream: &str, shard: &str) -> ShardRef {
    ShardRef::new(StreamId::new(stream), ShardId::new(shard))
}

fn row(
    sref: &ShardRef,
    owner: Option<Owner>,
    token: u64,
    checkpoint: Option<Checkpoint>,
    pending_owner: Option<Owner>,
) -> LeaseRow {
    LeaseRow {
        owner,
        token: FencingToken(token),
        checkpoint,
        pending_owner,
        ..LeaseRow::new(
            sref.clone(),
            vec![ShardId::new("shardId-p1"), ShardId::new("shardId-p0")],
            1_767_225_600_000,
        )
    }
}

/// Rows a write may find (`None` = no row).
fn befores(s: &ShardRef) -> Vec<(&'static str, Option<LeaseRow>)> {
    vec![
        ("no row", None),
        ("free t0", Some(row(s, None, 0, None, None))),
        (
            "free t5 within",
            Some(row(s, None, 5, Some(within()), None)),
        ),
        (
            "a t3 after",
            Some(row(s, Some(a()), 3, Some(after()), None)),
        ),
        (
            "a t3 within",
            Some(row(s, Some(a()), 3, Some(within()), None)),
        ),
        (
            "a t3 pending b",
            Some(row(s, Some(a()), 3, None, Some(b()))),
        ),
        (
            "a t3 pending c",
            Some(row(s, Some(a()), 3, Some(after()), Some(c()))),
        ),
        ("b t3", Some(row(s, Some(b()), 3, None, None))),
        (
            "a t3 after, checkpoint serial 3",
            Some(LeaseRow {
                checkpoint_serial: 3,
                ..row(s, Some(a()), 3, Some(after()), Some(b()))
            }),
        ),
        (
            "a t4 shard end",
            Some(row(s, Some(a()), 4, Some(Checkpoint::ShardEnd), None)),
        ),
    ]
}

/// Writes to try on each of them.
fn writes(s: &ShardRef) -> Vec<LeaseWrite> {
    let take = |expect_owner: Option<Owner>, expect_token: u64, to: Owner| LeaseWrite::Take {
        shard: s.clone(),
        expect_owner,
        expect_token: FencingToken(expect_token),
        to,
    };
    let request = |owner: Owner, token: u64, pending: Owner| LeaseWrite::RequestHandoff {
        shard: s.clone(),
        owner,
        token: FencingToken(token),
        pending,
    };
    let transfer = |owner: Owner, token: u64, to: Owner, checkpoint| LeaseWrite::Transfer {
        shard: s.clone(),
        owner,
        token: FencingToken(token),
        to,
        checkpoint,
    };
    let checkpoint = |owner: Owner, token: u64, checkpoint| LeaseWrite::Checkpoint {
        shard: s.clone(),
        owner,
        token: FencingToken(token),
        checkpoint,
        serial: 1,
    };
    let numbered = |serial: u64| LeaseWrite::Checkpoint {
        shard: s.clone(),
        owner: a(),
        token: FencingToken(3),
        checkpoint: within(),
        serial,
    };
    let release = |owner: Owner, token: u64, checkpoint| LeaseWrite::Release {
        shard: s.clone(),
        owner,
        token: FencingToken(token),
        checkpoint,
    };
    vec![
        LeaseWrite::Create(LeaseRow::new(s.clone(), vec![], 2_000)),
        LeaseWrite::Create(row(s, Some(a()), 7, Some(within()), Some(c()))),
        take(None, 0, b()),
        take(None, 5, b()),
        take(Some(a()), 3, b()),
        take(Some(a()), 3, a()),
        take(Some(a()), 4, c()),
        take(Some(b()), 3, a()),
        take(Some(c()), 3, b()),
        request(a(), 3, b()),
        request(a(), 3, c()),
        request(a(), 4, b()),
        request(b(), 3, a()),
        transfer(a(), 3, b(), None),
        transfer(a(), 3, b(), Some(Checkpoint::ShardEnd)),
        transfer(a(), 3, c(), Some(after())),
        transfer(a(), 4, b(), None),
        transfer(b(), 3, a(), None),
        checkpoint(a(), 3, after()),
        checkpoint(a(), 3, within()),
        checkpoint(a(), 3, Checkpoint::ShardEnd),
        checkpoint(a(), 4, after()),
        checkpoint(b(), 3, after()),
        numbered(3),
        numbered(4),
        release(a(), 3, None),
        release(a(), 3, Some(within())),
        release(a(), 4, Some(after())),
        release(b(), 3, None),
    ]
}

/// For every (row before, write) pair, on a stream of its own: the store
/// accepts exactly when `LeaseWrite::apply` does, the stored row is then
/// `apply`'s result, and a refused write is ConditionalFailed and changes
/// nothing. Returns (accepted, refused) counts.
pub async fn check_store_matches_apply(
    store: &dyn LeaseStore,
    prefix: &str,
) -> Result<(usize, usize)> {
    let mut failures = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    let probe = shard("probe", "shardId-000000000000");
    let n_writes = writes(&probe).len();
    for (bi, (before_name, _)) in befores(&probe).into_iter().enumerate() {
        for wi in 0..n_writes {
            let stream = format!("{prefix}-{bi}-{wi}");
            let s = shard(&stream, "shardId-000000000000");
            let before = befores(&s).swap_remove(bi).1;
            let write = writes(&s).swap_remove(wi);
            if let Some(row) = &before {
                store
                    .write_lease(&LeaseWrite::Create(row.clone()))
                    .await
                    .with_context(|| format!("setting up {before_name}"))?;
            }
            let expected = write.apply(before.as_ref());
            let got = store.write_lease_returning(&write).await;
            let stored = store.read_leases(&s.stream).await?.rows;
            let case = format!("before [{before_name}], write {write:?}");
            match (&expected, &got) {
                (Ok(next), Ok(returned)) => {
                    accepted += 1;
                    if stored != [next.clone()] {
                        failures.push(format!("{case}: stored {stored:?}, apply gives {next:?}"));
                    }
                    if returned.as_ref().is_some_and(|r| r != next) {
                        failures.push(format!("{case}: answered {returned:?}, stored {next:?}"));
                    }
                }
                (Err(_), Err(e)) if e.class() == ErrorClass::ConditionalFailed => {
                    refused += 1;
                    let unchanged: Vec<LeaseRow> = before.into_iter().collect();
                    if stored != unchanged {
                        failures.push(format!("{case}: refused but changed the row to {stored:?}"));
                    }
                }
                (expected, got) => failures.push(format!(
                    "{case}: apply says {expected:?}, store says {got:?}"
                )),
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} cases differ from LeaseWrite::apply:\n{}",
            failures.len(),
            accepted + refused + failures.len(),
            failures.join("\n")
        );
    }
    ensure!(
        accepted > 20 && refused > 20,
        "the case table lost its spread: {accepted} accepted, {refused} refused"
    );
    Ok((accepted, refused))
}

async fn write_ok(store: &dyn LeaseStore, write: LeaseWrite) -> Result<()> {
    store
        .write_lease(&write)
        .await
        .with_context(|| format!("{write:?} should apply"))
}

async fn write_refused(store: &dyn LeaseStore, write: LeaseWrite) -> Result<()> {
    match store.write_lease(&write).await {
        Err(e) if e.class() == ErrorClass::ConditionalFailed => Ok(()),
        other => bail!("{write:?} should be refused as ConditionalFailed, got {other:?}"),
    }
}

async fn only_row(store: &dyn LeaseStore, s: &ShardRef) -> Result<LeaseRow> {
    let rows = store.read_leases(&s.stream).await?.rows;
    match <[LeaseRow; 1]>::try_from(rows) {
        Ok([row]) => Ok(row),
        Err(rows) => bail!("expected one row for {s}, got {rows:?}"),
    }
}

/// The life of one lease: create, take, checkpoint, hand-off request,
/// transfer with a final checkpoint, release; stale writers refused.
/// `list_streams` names every stream with lease rows once, in order, and
/// never the heartbeat partition.
pub async fn list_streams_names_each_stream_with_leases_once(store: &dyn LeaseStore) -> Result<()> {
    ensure!(
        store.list_streams().await?.is_empty(),
        "a new table lists no stream"
    );
    let streams = [
        "arn:aws:kinesis:us-east-1:000000000000:stream/b",
        "arn:aws:kinesis:us-east-1:000000000000:stream/a",
    ];
    for stream in streams {
        for id in ["shardId-000000000000", "shardId-000000000001"] {
            write_ok(
                store,
                LeaseWrite::Create(LeaseRow::new(shard(stream, id), vec![], 1)),
            )
            .await?;
        }
    }
    store
        .write_heartbeat(&HeartbeatRow {
            owner: a(),
            beat: 1,
            held: 0,
            wants: vec![],
            alive: true,
            streams: vec![StreamId::new(streams[0])],
        })
        .await?;
    let listed: Vec<String> = store
        .list_streams()
        .await?
        .into_iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    ensure!(listed == [streams[1], streams[0]], "listed {listed:?}");
    Ok(())
}

pub async fn lease_life_round_trip(store: &dyn LeaseStore, stream: &str) -> Result<()> {
    let s = shard(stream, "shardId-000000000001");
    let created = LeaseRow::new(s.clone(), vec![ShardId::new("shardId-000000000000")], 1234);
    write_ok(store, LeaseWrite::Create(created.clone())).await?;
    write_refused(store, LeaseWrite::Create(created.clone())).await?;
    ensure!(only_row(store, &s).await? == created);

    write_ok(
        store,
        LeaseWrite::Take {
            shard: s.clone(),
            expect_owner: None,
            expect_token: FencingToken(0),
            to: a(),
        },
    )
    .await?;
    let row = only_row(store, &s).await?;
    ensure!(
        row.owner == Some(a()) && row.token == FencingToken(1),
        "{row:?}"
    );

    write_ok(
        store,
        LeaseWrite::Checkpoint {
            shard: s.clone(),
            owner: a(),
            token: FencingToken(1),
            checkpoint: within(),
            serial: 1,
        },
    )
    .await?;
    ensure!(only_row(store, &s).await?.checkpoint == Some(within()));

    write_ok(
        store,
        LeaseWrite::RequestHandoff {
            shard: s.clone(),
            owner: a(),
            token: FencingToken(1),
            pending: b(),
        },
    )
    .await?;
    ensure!(only_row(store, &s).await?.pending_owner == Some(b()));

    write_ok(
        store,
        LeaseWrite::Transfer {
            shard: s.clone(),
            owner: a(),
            token: FencingToken(1),
            to: b(),
            checkpoint: Some(after()),
        },
    )
    .await?;
    let row = only_row(store, &s).await?;
    ensure!(
        row.owner == Some(b())
            && row.token == FencingToken(2)
            && row.pending_owner.is_none()
            && row.checkpoint == Some(after()),
        "{row:?}"
    );

    // The deposed owner can no longer checkpoint.
    write_refused(
        store,
        LeaseWrite::Checkpoint {
            shard: s.clone(),
            owner: a(),
            token: FencingToken(1),
            checkpoint: Checkpoint::ShardEnd,
            serial: 2,
        },
    )
    .await?;

    write_ok(
        store,
        LeaseWrite::Release {
            shard: s.clone(),
            owner: b(),
            token: FencingToken(2),
            checkpoint: Some(Checkpoint::ShardEnd),
        },
    )
    .await?;
    let row = only_row(store, &s).await?;
    let expected = LeaseRow {
        owner: None,
        token: FencingToken(3),
        checkpoint: Some(Checkpoint::ShardEnd),
        pending_owner: None,
        ..created
    };
    ensure!(row == expected, "{row:?} != {expected:?}");
    Ok(())
}

/// Heartbeat rows: one per worker id, replaced by the next write of that
/// worker (any incarnation), read back in worker-id order with the streams
/// each worker consumes, separate from lease rows.
pub async fn heartbeats_round_trip(store: &dyn LeaseStore, stream: &str) -> Result<()> {
    let beat_a = HeartbeatRow {
        owner: a(),
        beat: 1,
        held: 2,
        wants: vec![
            shard(stream, "shardId-000000000004"),
            shard("other", "shardId-9"),
        ],
        alive: true,
        // Two applications may share the table: each row says which
        // streams its worker consumes.
        streams: vec![StreamId::new(stream), StreamId::new("other")],
    };
    let beat_b = HeartbeatRow {
        owner: b(),
        beat: 40,
        held: 0,
        wants: vec![],
        alive: true,
        streams: vec![StreamId::new(
            "arn:aws:kinesis:us-east-1:000000000000:stream/b",
        )],
    };
    store.write_heartbeat(&beat_b).await?;
    store.write_heartbeat(&beat_a).await?;
    let rows = store.read_heartbeats().await?.rows;
    ensure!(rows == [beat_b.clone(), beat_a.clone()], "{rows:?}");

    // A restarted b (new incarnation) replaces the old row.
    let beat_b2 = HeartbeatRow {
        owner: Owner::new("b", 8),
        beat: 0,
        held: 0,
        wants: vec![shard(stream, "shardId-000000000001")],
        alive: false,
        // No stream list (as an older version wrote it): read back empty.
        streams: vec![],
    };
    store.write_heartbeat(&beat_b2).await?;
    let rows = store.read_heartbeats().await?.rows;
    ensure!(rows == [beat_b2, beat_a], "{rows:?}");
    ensure!(
        store
            .read_leases(&StreamId::new(stream))
            .await?
            .rows
            .is_empty(),
        "heartbeats must not show up as lease rows"
    );
    Ok(())
}

/// The good rows next to which `bad_rows_are_named_and_skipped` expects
/// one bad lease row and one bad heartbeat row (of worker `bad`).
pub async fn add_good_rows(store: &dyn LeaseStore, stream: &str) -> Result<()> {
    write_ok(
        store,
        LeaseWrite::Create(LeaseRow::new(shard(stream, "shardId-0"), vec![], 1)),
    )
    .await?;
    store.write_heartbeat(&good_beat()).await?;
    Ok(())
}

fn good_beat() -> HeartbeatRow {
    HeartbeatRow {
        owner: b(),
        beat: 4,
        held: 0,
        wants: vec![],
        alive: true,
        streams: vec![],
    }
}

/// One row that does not decode stops neither the read of the other rows
/// nor failover: each read returns the good rows and names the bad one
/// (row and field); no lease write replaces the bad lease row (so its
/// shard is never created afresh nor taken blindly); the bad heartbeat
/// row's worker replaces it with its next (unconditional) heartbeat.
pub async fn bad_rows_are_named_and_skipped(
    store: &dyn LeaseStore,
    stream: &str,
    bad_shard: &str,
    (lease_row, lease_field): (&str, &str),
    (beat_row, beat_field): (&str, &str),
) -> Result<()> {
    let leases = store.read_leases(&StreamId::new(stream)).await?;
    let shards: Vec<&str> = leases.rows.iter().map(|r| r.shard.shard.as_str()).collect();
    ensure!(shards == ["shardId-0"], "good rows read: {leases:?}");
    ensure!(
        leases.bad.len() == 1
            && leases.bad[0].row.contains(lease_row)
            && leases.bad[0].field == lease_field,
        "bad lease row named: {:?}",
        leases.bad
    );
    ensure!(
        leases.bad[0].to_string().contains("repair or delete"),
        "says what to do: {}",
        leases.bad[0]
    );
    let bad = shard(stream, bad_shard);
    write_refused(
        store,
        LeaseWrite::Create(LeaseRow::new(bad.clone(), vec![], 2)),
    )
    .await?;
    write_refused(
        store,
        LeaseWrite::Take {
            shard: bad,
            expect_owner: None,
            expect_token: FencingToken(0),
            to: a(),
        },
    )
    .await?;
    ensure!(store.read_leases(&StreamId::new(stream)).await?.bad.len() == 1);

    let beats = store.read_heartbeats().await?;
    ensure!(beats.rows == [good_beat()], "good rows read: {beats:?}");
    ensure!(
        beats.bad.len() == 1
            && beats.bad[0].row.contains(beat_row)
            && beats.bad[0].field == beat_field,
        "bad heartbeat row named: {:?}",
        beats.bad
    );
    let mine = HeartbeatRow {
        owner: Owner::new("bad", 2),
        ..good_beat()
    };
    store.write_heartbeat(&mine).await?;
    let beats = store.read_heartbeats().await?;
    ensure!(beats.bad.is_empty(), "overwritten: {beats:?}");
    ensure!(beats.rows.contains(&mine), "{beats:?}");
    Ok(())
}
