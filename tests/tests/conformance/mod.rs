//! The conformance suite: every end-to-end scenario, written once against
//! [`Env`] and run on each runtime by [`conformance_suite!`] (one test
//! binary per runtime: `conformance_tokio`, `conformance_async_std`).
//! Real consumers, real SDK calls to the emulators (kinesis-mock and
//! dynalite from `scripts/emulators.sh`), real leases; every scenario uses
//! fresh stream and table names (deleted at the end) and asserts on the
//! delivered records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures_lite::StreamExt;
use kinesin_aws::Error;
use kinesin_core::kpl::{aggregate, AggRecord};

use crate::common::*;

/// One `#[test]` per scenario, on the runtime `$rt` (a [`TestRuntime`]).
/// Adding a scenario here adds it to every runtime.
macro_rules! conformance_suite {
    ($rt:ty) => {
        $crate::conformance::conformance_suite!(@tests $rt;
            polling_delivers_every_record_in_order,
            efo_over_plain_http_delivers_every_record_in_order,
            efo_over_http2_with_tls_delivers_every_record_in_order,
            kpl_aggregated_records_are_deaggregated,
            shutdown_releases_every_lease_and_restart_resumes_from_checkpoints,
            two_workers_share_an_eight_shard_stream_fairly,
            dropped_worker_shards_resume_elsewhere_without_loss,
            dropped_consumer_releases_its_leases,
            startup_against_a_silent_endpoint_fails_within_the_call_timeout,
            split_shard_is_read_parent_first,
            split_shard_is_read_parent_first_over_efo,
            stalled_sink_with_a_small_pool_stays_bounded_and_keeps_leases,
            missing_stream_is_a_clear_error,
            leases_of_an_earlier_stream_of_the_same_name_are_a_clear_error,
            bad_configuration_names_the_field,
            list_shards_follows_next_token_to_the_last_page,
            local_store_consumer_resumes_after_restart,
            poison_record_goes_to_the_dead_letter_handler_and_the_shard_moves_on,
            auto_replay_nacks_false_drops_a_nacked_batch_and_checkpoints_past_it,
            lease_events_report_gains_with_tokens_and_releases_at_shutdown,
            lease_events_report_shard_end_and_hand_off_with_a_larger_token,
            frozen_efo_connection_recovers_within_the_idle_watchdog,
            frozen_dynamodb_connection_costs_no_lease,
        );
    };
    (@tests $rt:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() -> anyhow::Result<()> {
                $crate::common::run::<$rt>($crate::conformance::$name::<$rt>)
            }
        )*
    };
}
pub(crate) use conformance_suite;

const T: Duration = Duration::from_secs(60);

async fn end_to_end<R: TestRuntime>(
    env: &Env<R>,
    efo: Option<aws_sdk_kinesis::Client>,
    shards: i32,
    n: u64,
) -> Result<()> {
    let (stream, _arn) = env.create_stream("e2e", shards).await?;
    env.put(&stream, &numbered(0..n, 16)).await?;
    let mut b = env.builder(&stream, &env.table(), "w1");
    if let Some(client) = efo {
        b = b.enhanced_fan_out(unique("app")).kinesis_client(client);
    }
    let consumer = b.build(&env.sdk).await?;
    let mut batches = consumer.batches();
    let got = env.take(&mut batches, n as usize, T).await?;
    assert_eq!(ids(&got), (0..n).collect::<Vec<_>>());
    assert_ordered_per_key(&got);
    let shards_seen: BTreeSet<&str> = got.iter().map(|g| g.shard.as_str()).collect();
    assert_eq!(shards_seen.len(), shards as usize, "every shard read");
    drop(batches);
    consumer.shutdown().await?;
    Ok(())
}

pub async fn polling_delivers_every_record_in_order<R: TestRuntime>(env: &Env<R>) -> Result<()> {
    end_to_end(env, None, 2, 300).await
}

pub async fn efo_over_plain_http_delivers_every_record_in_order<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    end_to_end(env, Some(env.k.clone()), 2, 300).await
}

/// Every Kinesis call of the consumer (SubscribeToShard included) over
/// TLS with ALPN h2, on the runtime's own HTTPS client.
pub async fn efo_over_http2_with_tls_delivers_every_record_in_order<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    end_to_end(env, Some(env.tls_kinesis()?), 2, 200).await
}

pub async fn kpl_aggregated_records_are_deaggregated<R: TestRuntime>(env: &Env<R>) -> Result<()> {
    let (stream, _arn) = env.create_stream("kpl", 1).await?;
    // 6 aggregates of 10 user records each, plus one plain record.
    let mut items = Vec::new();
    let mut next = 0u64;
    for _ in 0..6 {
        let keys: Vec<String> = (next..next + 10).map(|i| format!("user{i}")).collect();
        let datas: Vec<Vec<u8>> = (next..next + 10)
            .map(|i| format!("id={i}").into_bytes())
            .collect();
        let recs: Vec<AggRecord<'_>> = keys
            .iter()
            .zip(&datas)
            .map(|(pk, data)| AggRecord {
                partition_key: pk.as_bytes(),
                explicit_hash_key: None,
                data,
            })
            .collect();
        items.push(("agg".to_owned(), aggregate(&recs)));
        next += 10;
    }
    items.push(("plain".to_owned(), format!("id={next}").into_bytes()));
    env.put(&stream, &items).await?;
    let consumer = env
        .builder(&stream, &env.table(), "w1")
        .build(&env.sdk)
        .await?;
    let mut batches = consumer.batches();
    let got = env.take(&mut batches, 61, T).await?;
    assert_eq!(ids(&got), (0..61).collect::<Vec<_>>());
    for g in &got {
        if g.id < 60 {
            assert_eq!(
                g.partition_key,
                format!("user{}", g.id),
                "sub-record keeps its key"
            );
            assert_eq!(u64::from(g.sub), g.id % 10, "sub-sequence numbers 0..n");
        } else {
            assert_eq!((g.partition_key.as_str(), g.sub), ("plain", 0));
        }
    }
    let order: Vec<u64> = got.iter().map(|g| g.id).collect();
    assert_eq!(
        order,
        (0..61).collect::<Vec<_>>(),
        "delivered once, in order"
    );
    drop(batches);
    consumer.shutdown().await?;
    Ok(())
}

pub async fn shutdown_releases_every_lease_and_restart_resumes_from_checkpoints<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    let (stream, arn) = env.create_stream("restart", 3).await?;
    let table = env.table();
    env.put(&stream, &numbered(0..120, 12)).await?;

    let consumer = env.builder(&stream, &table, "w1").build(&env.sdk).await?;
    let mut batches = consumer.batches();
    let first = env.take(&mut batches, 120, T).await?;
    assert_eq!(ids(&first), (0..120).collect::<Vec<_>>());
    drop(batches);
    consumer.shutdown().await?;

    let rows = env.leases(&table, &arn).await?;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.owner, None, "{:?} released at shutdown", row.shard);
        assert!(row.checkpoint.is_some(), "{:?} checkpointed", row.shard);
    }

    env.put(&stream, &numbered(120..180, 12)).await?;
    let consumer = env.builder(&stream, &table, "w1").build(&env.sdk).await?;
    let mut batches = consumer.batches();
    let second = env.take(&mut batches, 60, T).await?;
    // Nothing before the checkpoints comes again.
    let more = env.take_for(&mut batches, Duration::from_secs(2)).await?;
    let all: Vec<Got> = second.into_iter().chain(more).collect();
    assert_eq!(ids(&all), (120..180).collect::<Vec<_>>());
    assert_eq!(all.len(), 60, "no duplicates after a graceful restart");
    drop(batches);
    consumer.shutdown().await?;
    Ok(())
}

/// A stream deleted and recreated under the same name keeps its ARN: the
/// lease table's rows of the earlier stream (here one written a day
/// before the stream was created, `SHARD_END` on its first shard) would
/// keep the new stream's shards unread. `build` refuses with an error that
/// says so and what to delete, instead of consuming nothing.
pub async fn leases_of_an_earlier_stream_of_the_same_name_are_a_clear_error<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    use kinesin_aws::LeaseStore;
    use kinesin_core::ids::{ShardId, ShardRef, StreamId};
    use kinesin_core::sequence::Checkpoint;
    use kinesin_core::table::{LeaseRow, LeaseWrite};
    let (stream, arn) = env.create_stream("recreated", 1).await?;
    let table = env.table();
    let store = kinesin_aws::DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(&env.sdk), &table);
    store.create_table_if_missing().await?;
    let day_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        - 86_400_000;
    let mut old = LeaseRow::new(
        ShardRef::new(StreamId::new(&arn), ShardId::new("shardId-000000000000")),
        vec![],
        day_ago,
    );
    old.checkpoint = Some(Checkpoint::ShardEnd);
    store.write_lease(&LeaseWrite::Create(old)).await?;
    match env.builder(&stream, &table, "w1").build(&env.sdk).await {
        Err(e @ Error::StaleLeases { .. }) => {
            let msg = e.to_string();
            ensure!(msg.contains(&arn) && msg.contains("recreated"), "{msg}");
            let Error::StaleLeases { rows, .. } = e else {
                unreachable!()
            };
            ensure!(rows == 1, "{rows} stale rows");
        }
        Err(e) => anyhow::bail!("expected StaleLeases, got: {e}"),
        Ok(_) => anyhow::bail!("built over the rows of an earlier stream"),
    }
    Ok(())
}

/// An endpoint that accepts connections and never answers (a black hole):
/// `build` fails with a timeout naming the call, instead of hanging.
pub async fn startup_against_a_silent_endpoint_fails_within_the_call_timeout<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = silent.local_addr()?;
    let client = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&env.sdk)
            .endpoint_url(format!("http://{addr}"))
            .build(),
    );
    let started = Instant::now();
    let built = env
        .builder("silent", &env.table(), "w1")
        .kinesis_client(client)
        .call_timeout(Duration::from_secs(1))
        .build(&env.sdk)
        .await;
    let took = started.elapsed();
    match built {
        Err(Error::Timeout { operation, after }) => {
            ensure!(after == Duration::from_secs(1), "{after:?}");
            ensure!(operation.contains("Kinesis"), "{operation}");
        }
        Err(e) => anyhow::bail!("expected a timeout, got: {e}"),
        Ok(_) => anyhow::bail!("built against a silent endpoint"),
    }
    ensure!(took < Duration::from_secs(10), "took {took:?}");
    drop(silent);
    Ok(())
}

/// A consumer dropped without `shutdown` (a forgotten handle) stops
/// gracefully: its leases are released at once, not left to expire (nor
/// held for ever by a driver nobody can reach).
pub async fn dropped_consumer_releases_its_leases<R: TestRuntime>(env: &Env<R>) -> Result<()> {
    let (stream, arn) = env.create_stream("dropped", 2).await?;
    let table = env.table();
    env.put(&stream, &numbered(0..20, 4)).await?;
    let consumer = env.builder(&stream, &table, "w1").build(&env.sdk).await?;
    let mut batches = consumer.batches();
    env.take(&mut batches, 20, T).await?;
    drop(batches);
    drop(consumer);
    let dropped = Instant::now();
    loop {
        let rows = env.leases(&table, &arn).await?;
        if rows.len() == 2 && rows.iter().all(|r| r.owner.is_none()) {
            break;
        }
        ensure!(
            dropped.elapsed() < Duration::from_secs(15),
            "leases still held after the consumer was dropped: {rows:?}"
        );
        env.sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

pub async fn two_workers_share_an_eight_shard_stream_fairly<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    let (stream, arn) = env.create_stream("fair", 8).await?;
    let table = env.table();
    env.put(&stream, &numbered(0..400, 64)).await?;

    let a = env.builder(&stream, &table, "a").build(&env.sdk).await?;
    let b = env.builder(&stream, &table, "b").build(&env.sdk).await?;
    let (mut ba, mut bb) = (a.batches(), b.batches());
    let deadline = Instant::now() + T;
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    loop {
        got_a.extend(env.take_for(&mut ba, Duration::from_millis(500)).await?);
        got_b.extend(env.take_for(&mut bb, Duration::from_millis(500)).await?);
        let held = held_by_worker(&env.leases(&table, &arn).await?);
        let all: BTreeSet<u64> = got_a.iter().chain(&got_b).map(|g| g.id).collect();
        if held.get("a") == Some(&4) && held.get("b") == Some(&4) && all.len() == 400 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not fair within {T:?}: held {held:?}, {} of 400 delivered",
            all.len()
        );
    }
    // Balanced: new records are read by both, each shard by one worker.
    env.put(&stream, &numbered(400..600, 64)).await?;
    while ids(&got_a.iter().chain(&got_b).cloned().collect::<Vec<_>>()).len() < 600 {
        got_a.extend(env.take_for(&mut ba, Duration::from_millis(300)).await?);
        got_b.extend(env.take_for(&mut bb, Duration::from_millis(300)).await?);
        ensure!(
            Instant::now() < deadline + T,
            "new records not all delivered"
        );
    }
    let all: Vec<Got> = got_a.iter().chain(&got_b).cloned().collect();
    assert_eq!(ids(&all), (0..600).collect::<Vec<_>>());
    let new_shards = |got: &[Got]| -> BTreeSet<String> {
        got.iter()
            .filter(|g| g.id >= 400)
            .map(|g| g.shard.clone())
            .collect()
    };
    let (sa, sb) = (new_shards(&got_a), new_shards(&got_b));
    assert_eq!((sa.len(), sb.len()), (4, 4), "a read {sa:?}, b read {sb:?}");
    assert!(sa.is_disjoint(&sb), "a shard read by both: {sa:?} {sb:?}");
    drop((ba, bb));
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

pub async fn dropped_worker_shards_resume_elsewhere_without_loss<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    let (stream, arn) = env.create_stream("failover", 4).await?;
    let table = env.table();
    env.put(&stream, &numbered(0..100, 32)).await?;

    let a = env.builder(&stream, &table, "a").build(&env.sdk).await?;
    let b = env.builder(&stream, &table, "b").build(&env.sdk).await?;
    let (mut ba, mut bb) = (a.batches(), b.batches());
    let deadline = Instant::now() + T;
    let mut got_b = Vec::new();
    loop {
        env.take_for(&mut ba, Duration::from_millis(300)).await?;
        got_b.extend(env.take_for(&mut bb, Duration::from_millis(300)).await?);
        let held = held_by_worker(&env.leases(&table, &arn).await?);
        if held.get("a").is_some_and(|n| *n >= 1) && held.get("b").is_some_and(|n| *n >= 1) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "both workers never held leases: {held:?}"
        );
    }
    // Crash a: no shutdown, no release.
    drop(ba);
    a.abort();
    let crashed = Instant::now();
    env.put(&stream, &numbered(100..200, 32)).await?;
    // b takes every shard within the failover bound and reads everything
    // a had not checkpointed, plus the new records.
    let mut took_all = None;
    while took_all.is_none() || ids(&got_b).iter().filter(|i| **i >= 100).count() < 100 {
        got_b.extend(env.take_for(&mut bb, Duration::from_millis(500)).await?);
        if took_all.is_none() {
            let held = held_by_worker(&env.leases(&table, &arn).await?);
            if held.get("b") == Some(&4) {
                took_all = Some(crashed.elapsed());
            }
        }
        ensure!(
            crashed.elapsed() < T,
            "b did not finish within {T:?} (took all: {took_all:?})"
        );
    }
    let took = took_all.expect("loop ends with it");
    assert!(
        took < Duration::from_secs(12),
        "failover took {took:?} (failover time 3 s + rebalance 2 s + reads)"
    );
    // Everything a might have left unacknowledged is read again by b: b
    // alone holds ids 100..200, and a's shards' older records came again
    // or were checkpointed by a.
    let b_ids: BTreeSet<u64> = got_b.iter().map(|g| g.id).collect();
    assert!(
        (100..200).all(|i| b_ids.contains(&i)),
        "nothing written after the crash lost"
    );
    drop(bb);
    b.shutdown().await?;
    Ok(())
}

pub async fn split_shard_is_read_parent_first<R: TestRuntime>(env: &Env<R>) -> Result<()> {
    split_parent_first(env, false).await
}

/// The mock never ends a closed parent's subscription nor sends
/// ChildShards over EFO: shard end comes from ListShards.
pub async fn split_shard_is_read_parent_first_over_efo<R: TestRuntime>(env: &Env<R>) -> Result<()> {
    split_parent_first(env, true).await
}

/// Split a one-shard stream's shard at the middle of the hash range, wait
/// until the stream is active again, and return the parent's shard id.
async fn split_the_one_shard<R: TestRuntime>(env: &Env<R>, stream: &str) -> Result<String> {
    let parent = env
        .k
        .list_shards()
        .stream_name(stream)
        .send()
        .await?
        .shards
        .unwrap_or_default()
        .remove(0)
        .shard_id;
    env.k
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&parent)
        .new_starting_hash_key((u128::MAX / 2).to_string())
        .send()
        .await?;
    env.wait_active(stream).await?;
    Ok(parent)
}

async fn split_parent_first<R: TestRuntime>(env: &Env<R>, efo: bool) -> Result<()> {
    let (stream, _arn) = env.create_stream("split", 1).await?;
    env.put(&stream, &numbered(0..60, 8)).await?;
    let parent = split_the_one_shard(env, &stream).await?;
    env.put(&stream, &numbered(60..120, 8)).await?;

    let mut b = env.builder(&stream, &env.table(), "w1");
    if efo {
        b = b.enhanced_fan_out(unique("app"));
    }
    let consumer = b.build(&env.sdk).await?;
    let mut batches = consumer.batches();
    let got = env.take(&mut batches, 120, T).await?;
    assert_eq!(ids(&got), (0..120).collect::<Vec<_>>());
    let first_child = got.iter().position(|g| g.id >= 60).expect("children read");
    let last_parent = got.iter().rposition(|g| g.id < 60).expect("parent read");
    assert!(
        last_parent < first_child,
        "a child record (at {first_child}) came before the parent's last (at {last_parent})"
    );
    assert!(got[..first_child].iter().all(|g| g.shard == parent));
    assert!(got[first_child..].iter().all(|g| g.shard != parent));
    assert_ordered_per_key(&got);
    drop(batches);
    consumer.shutdown().await?;
    Ok(())
}

pub async fn stalled_sink_with_a_small_pool_stays_bounded_and_keeps_leases<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    let (stream, arn) = env.create_stream("stall", 2).await?;
    let table = env.table();
    env.put(&stream, &numbered(0..200, 16)).await?;
    let consumer = env
        .builder(&stream, &table, "w1")
        .max_pending_records(20)
        .build(&env.sdk)
        .await?;
    let mut batches = consumer.batches();
    // Take batches and hold them without acking: the sink is stalled.
    let mut held = Vec::new();
    let stall = Instant::now() + Duration::from_secs(8);
    while Instant::now() < stall {
        if let Some(Some(b)) = env
            .timeout(Duration::from_millis(200), batches.next())
            .await
        {
            held.push(b?);
        }
    }
    let records: usize = held.iter().map(|b| b.records().len()).sum();
    assert!(records > 0, "something was delivered");
    assert!(records <= 20, "{records} records pending with a pool of 20");
    // 8 s is more than twice the failover time: leases renewed meanwhile.
    let rows = env.leases(&table, &arn).await?;
    assert_eq!(
        held_by_worker(&rows).get("w1"),
        Some(&2),
        "leases held while stalled"
    );
    // Unstall: ack what is held, then everything flows.
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    for b in held.drain(..) {
        seen.extend(b.records().iter().map(|r| id_of(r.data())));
        b.ack();
    }
    let rest = env.take(&mut batches, 200 - seen.len(), T).await?;
    seen.extend(rest.iter().map(|g| g.id));
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    drop(batches);
    consumer.shutdown().await?;
    Ok(())
}

pub async fn missing_stream_is_a_clear_error<R: TestRuntime>(env: &Env<R>) -> Result<()> {
    let name = unique("nosuch");
    let err = env
        .builder(&name, &env.table(), "w1")
        .build(&env.sdk)
        .await
        .expect_err("a missing stream must fail the build");
    assert!(matches!(err, Error::StreamNotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&name) && text.contains("does not exist"),
        "{text}"
    );
    Ok(())
}

pub async fn bad_configuration_names_the_field<R: TestRuntime>(env: &Env<R>) -> Result<()> {
    let sdk = &env.sdk;
    let field_of = |e: Error| match e {
        Error::Config(c) => c.field,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    let e = env
        .builder("s", "t", "w")
        .checkpoint_limit(0)
        .build(sdk)
        .await
        .expect_err("checkpoint_limit 0");
    assert!(e.to_string().contains("checkpoint_limit"), "{e}");
    assert_eq!(field_of(e), "checkpoint_limit");
    let e = env
        .consumer_builder()
        .stream("s")
        .build(sdk)
        .await
        .expect_err("no lease store");
    assert_eq!(field_of(e), "dynamodb.table");
    let e = env
        .builder("s", "t", "w")
        .enhanced_fan_out("bad name!")
        .build(sdk)
        .await
        .expect_err("bad consumer name");
    assert_eq!(field_of(e), "enhanced_fan_out.consumer_name");
    let e = env
        .builder("s", "t", "w")
        .enhanced_fan_out("a")
        .enhanced_fan_out_arn("arn:aws:kinesis:us-east-1:0:stream/s/consumer/a:1")
        .build(sdk)
        .await
        .expect_err("name and arn");
    assert_eq!(field_of(e), "enhanced_fan_out.consumer_arn");
    let e = env
        .consumer_builder()
        .lease_table("t")
        .build(sdk)
        .await
        .expect_err("no stream");
    assert_eq!(field_of(e), "streams");
    Ok(())
}

pub async fn list_shards_follows_next_token_to_the_last_page<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    let (_stream, arn) = env.create_stream("pages", 7).await?;
    let calls = kinesin_aws::Kinesis::new(env.k.clone()).with_list_page_limit(3);
    let shards = calls
        .list_shards(&kinesin_core::ids::StreamId::new(&arn))
        .await?;
    let ids: BTreeSet<String> = shards.iter().map(|s| s.shard.to_string()).collect();
    assert_eq!(ids.len(), 7, "{ids:?}");
    Ok(())
}

pub async fn local_store_consumer_resumes_after_restart<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    let (stream, _arn) = env.create_stream("local", 1).await?;
    env.put(&stream, &numbered(0..40, 4)).await?;
    let dir = env.temp_dir();
    let build = || {
        env.consumer_builder()
            .stream(stream.clone())
            .local_store(dir.clone())
            .failover_time(Duration::from_secs(3))
            .build(&env.sdk)
    };
    let consumer = build().await?;
    let mut batches = consumer.batches();
    assert_eq!(
        ids(&env.take(&mut batches, 40, T).await?),
        (0..40).collect::<Vec<_>>()
    );
    drop(batches);
    consumer.shutdown().await?;
    env.put(&stream, &numbered(40..50, 4)).await?;
    let consumer = build().await?;
    let mut batches = consumer.batches();
    // The released lease is free: taken at start-up, well before the
    // 30 s rebalance period (the bound once hid a skipped first pass).
    let got = env.take(&mut batches, 10, Duration::from_secs(15)).await?;
    assert_eq!(ids(&got), (40..50).collect::<Vec<_>>());
    drop(batches);
    consumer.shutdown().await?;
    Ok(())
}

/// The checkpoint of the only lease row of `arn` in `table`.
async fn only_checkpoint<R: TestRuntime>(
    env: &Env<R>,
    table: &str,
    arn: &str,
) -> Result<Option<kinesin_core::sequence::Checkpoint>> {
    let rows = env.leases(table, arn).await?;
    ensure!(rows.len() == 1, "{} lease rows", rows.len());
    Ok(rows[0].checkpoint.clone())
}

/// One record per batch; record 7 is nacked at every delivery. After 3
/// deliveries (backoff 50 ms, 100 ms) it reaches the dead-letter stream;
/// every other record is delivered and acked meanwhile; the checkpoint
/// stays before record 7 until the handler accepts it (a rejected dead
/// letter is offered again), then covers the whole shard.
pub async fn poison_record_goes_to_the_dead_letter_handler_and_the_shard_moves_on<
    R: TestRuntime,
>(
    env: &Env<R>,
) -> Result<()> {
    use kinesin_core::sequence::Checkpoint;
    let (stream, arn) = env.create_stream("poison", 1).await?;
    let table = env.table();
    env.put(&stream, &numbered(0..20, 4)).await?;
    let consumer = env
        .builder(&stream, &table, "w1")
        .batching(kinesin_aws::Batching::bento())
        .max_deliveries(3)
        .redelivery_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .build(&env.sdk)
        .await?;
    let mut batches = consumer.batches();
    let mut letters = consumer.dead_letters();
    let mut acked = BTreeSet::new();
    let mut seqs = std::collections::BTreeMap::new();
    let mut poison_deliveries = 0;
    let deadline = Instant::now() + T;
    while poison_deliveries < 3 || acked.len() < 19 {
        ensure!(
            Instant::now() < deadline,
            "{poison_deliveries} deliveries of record 7, {} others acked",
            acked.len()
        );
        let Some(next) = env
            .timeout(Duration::from_millis(500), batches.next())
            .await
        else {
            continue;
        };
        let batch = next.ok_or_else(|| anyhow::anyhow!("batch stream ended"))??;
        let got: Vec<u64> = batch.records().iter().map(|r| id_of(r.data())).collect();
        for r in batch.records() {
            seqs.insert(id_of(r.data()), r.sequence_number().clone());
        }
        if got.contains(&7) {
            ensure!(got == [7], "one record per batch: {got:?}");
            poison_deliveries += 1;
            batch.nack();
        } else {
            acked.extend(got);
            batch.ack();
        }
    }
    let letter = env
        .timeout(Duration::from_secs(10), letters.next())
        .await
        .ok_or_else(|| anyhow::anyhow!("no dead letter within 10 s"))?
        .ok_or_else(|| anyhow::anyhow!("dead-letter stream ended"))?;
    ensure!(letter.attempts() == 3, "attempts {}", letter.attempts());
    let ids_in: Vec<u64> = letter.records().iter().map(|r| id_of(r.data())).collect();
    ensure!(ids_in == [7], "dead letter holds {ids_in:?}");
    let (first, last) = letter.sequence_range().expect("not empty");
    ensure!(first.seq == seqs[&7] && last.seq == seqs[&7]);
    // Not accepted: after a few commit periods the checkpoint is record 6's.
    env.sleep(Duration::from_secs(3)).await;
    ensure!(
        only_checkpoint(env, &table, &arn).await? == Some(Checkpoint::After(seqs[&6].clone())),
        "checkpoint before the dead letter"
    );
    // Rejected: offered again (after the 200 ms backoff), never as a batch.
    letter.reject();
    let again = env
        .timeout(Duration::from_secs(10), letters.next())
        .await
        .ok_or_else(|| anyhow::anyhow!("a rejected dead letter is offered again"))?
        .ok_or_else(|| anyhow::anyhow!("dead-letter stream ended"))?;
    ensure!(again.attempts() == 3);
    again.accept();
    let deadline = Instant::now() + T;
    loop {
        if only_checkpoint(env, &table, &arn).await? == Some(Checkpoint::After(seqs[&19].clone())) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "checkpoint never covered the shard"
        );
        env.sleep(Duration::from_millis(300)).await;
    }
    let more = env.take_for(&mut batches, Duration::from_secs(1)).await?;
    ensure!(more.is_empty(), "delivered again: {:?}", ids(&more));
    drop(batches);
    drop(letters);
    consumer.shutdown().await?;
    Ok(())
}

/// Bento's `auto_replay_nacks: false`: a nacked batch is dropped (never
/// delivered again, nothing on the dead-letter stream) and the checkpoint
/// passes it.
pub async fn auto_replay_nacks_false_drops_a_nacked_batch_and_checkpoints_past_it<
    R: TestRuntime,
>(
    env: &Env<R>,
) -> Result<()> {
    use kinesin_core::sequence::Checkpoint;
    let (stream, arn) = env.create_stream("drop", 1).await?;
    let table = env.table();
    env.put(&stream, &numbered(0..5, 2)).await?;
    let consumer = env
        .builder(&stream, &table, "w1")
        .batching(kinesin_aws::Batching::bento())
        .auto_replay_nacks(false)
        .build(&env.sdk)
        .await?;
    let mut batches = consumer.batches();
    let mut letters = consumer.dead_letters();
    let mut seen = Vec::new();
    let mut last_seq = None;
    let deadline = Instant::now() + T;
    while seen.len() < 5 {
        ensure!(Instant::now() < deadline, "got {seen:?}");
        let Some(next) = env
            .timeout(Duration::from_millis(500), batches.next())
            .await
        else {
            continue;
        };
        let batch = next.ok_or_else(|| anyhow::anyhow!("batch stream ended"))??;
        let got: Vec<u64> = batch.records().iter().map(|r| id_of(r.data())).collect();
        last_seq = batch.records().last().map(|r| r.sequence_number().clone());
        seen.extend(got.iter().copied());
        if got.contains(&2) {
            batch.nack();
        } else {
            batch.ack();
        }
    }
    ensure!(seen == [0, 1, 2, 3, 4], "each record once: {seen:?}");
    let more = env.take_for(&mut batches, Duration::from_secs(2)).await?;
    ensure!(
        more.is_empty(),
        "a dropped batch came again: {:?}",
        ids(&more)
    );
    ensure!(
        env.timeout(Duration::from_millis(100), letters.next())
            .await
            .is_none(),
        "dropped, not offered"
    );
    let want = Some(Checkpoint::After(last_seq.expect("records")));
    let deadline = Instant::now() + T;
    while only_checkpoint(env, &table, &arn).await? != want {
        ensure!(
            Instant::now() < deadline,
            "checkpoint never passed the dropped record"
        );
        env.sleep(Duration::from_millis(300)).await;
    }
    drop(batches);
    drop(letters);
    consumer.shutdown().await?;
    Ok(())
}

/// `Consumer::lease_events`: a Gained per shard (token and start position)
/// before its records, the same token on every batch of the lease, a
/// late stream starting with the leases held, and a Lost (released) per
/// shard at shutdown, after which the streams end.
pub async fn lease_events_report_gains_with_tokens_and_releases_at_shutdown<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    use kinesin_aws::{LeaseEvent, LostReason, StartPosition};
    let (stream, _arn) = env.create_stream("events", 2).await?;
    env.put(&stream, &numbered(0..40, 8)).await?;
    let consumer = env
        .builder(&stream, &env.table(), "w1")
        .build(&env.sdk)
        .await?;
    let mut events = consumer.lease_events();
    let mut tokens: BTreeMap<String, u64> = BTreeMap::new();
    while tokens.len() < 2 {
        let Some(Some(e)) = env.timeout(T, events.next()).await else {
            anyhow::bail!("no lease gained within {T:?}: {tokens:?}");
        };
        match e {
            LeaseEvent::Gained {
                shard,
                token,
                start,
            } => {
                ensure!(token >= 1, "token {token}");
                ensure!(
                    start == StartPosition::TrimHorizon,
                    "no checkpoint: {start:?}"
                );
                tokens.insert(shard.shard.as_str().to_owned(), token);
            }
            other => anyhow::bail!("unexpected before both gains: {other:?}"),
        }
    }
    let mut batches = consumer.batches();
    let got = env.take(&mut batches, 40, T).await?;
    for g in &got {
        ensure!(
            tokens.get(&g.shard) == Some(&g.token),
            "batch token {} of {} is not the gained token {:?}",
            g.token,
            g.shard,
            tokens.get(&g.shard)
        );
    }
    // A stream taken now starts with the leases held.
    let mut late = consumer.lease_events();
    let mut late_tokens = BTreeMap::new();
    for _ in 0..2 {
        match env.timeout(Duration::from_secs(5), late.next()).await {
            Some(Some(LeaseEvent::Gained { shard, token, .. })) => {
                late_tokens.insert(shard.shard.as_str().to_owned(), token);
            }
            other => anyhow::bail!("late stream: {other:?}"),
        }
    }
    ensure!(late_tokens == tokens, "{late_tokens:?} != {tokens:?}");
    drop(batches);
    consumer.shutdown().await?;
    for s in [&mut events, &mut late] {
        let mut lost = BTreeMap::new();
        while let Some(Some(e)) = env.timeout(Duration::from_secs(10), s.next()).await {
            match e {
                LeaseEvent::Lost {
                    shard,
                    token,
                    reason,
                } => {
                    ensure!(reason == LostReason::Released, "{reason:?}");
                    lost.insert(shard.shard.as_str().to_owned(), token);
                }
                other => anyhow::bail!("unexpected at shutdown: {other:?}"),
            }
        }
        ensure!(lost == tokens, "released {lost:?}, held {tokens:?}");
    }
    Ok(())
}

/// Reads `events` until `done` says the events seen so far suffice, or the
/// timeout passes (an error naming what was seen).
async fn events_until<R: TestRuntime>(
    env: &Env<R>,
    events: &mut kinesin_aws::LeaseEvents,
    limit: Duration,
    mut done: impl FnMut(&[kinesin_aws::LeaseEvent]) -> bool,
) -> Result<Vec<kinesin_aws::LeaseEvent>> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match env.timeout(left, events.next()).await {
            Some(Some(e)) => seen.push(e),
            Some(None) => anyhow::bail!("event stream ended; seen {seen:?}"),
            None => anyhow::bail!("timed out after {limit:?}; seen {seen:?}"),
        }
    }
    Ok(seen)
}

/// A split stream read by one worker: `ShardEnded` for the parent, then
/// its `Lost` with reason `ShardEnded`, then the children gained. A second
/// worker joins: the first reports `Lost { HandedOff }` for a child and the
/// second `Gained` for it with a larger token, starting after the first's
/// checkpoint.
pub async fn lease_events_report_shard_end_and_hand_off_with_a_larger_token<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    use kinesin_aws::{LeaseEvent, LostReason, StartPosition};
    let (stream, _arn) = env.create_stream("evsplit", 1).await?;
    env.put(&stream, &numbered(0..40, 8)).await?;
    let parent = split_the_one_shard(env, &stream).await?;
    env.put(&stream, &numbered(40..80, 8)).await?;
    let table = env.table();

    let a = env.builder(&stream, &table, "a").build(&env.sdk).await?;
    let mut events_a = a.lease_events();
    let mut batches_a = a.batches();
    let got_a = env.take(&mut batches_a, 80, T).await?;
    let children_gained = |seen: &[LeaseEvent]| {
        seen.iter()
            .filter(
                |e| matches!(e, LeaseEvent::Gained { shard, .. } if shard.shard.as_str() != parent),
            )
            .count()
            == 2
    };
    let seen_a = events_until(env, &mut events_a, T, children_gained).await?;
    let at = |want: &dyn Fn(&LeaseEvent) -> bool| seen_a.iter().position(want);
    let ended =
        at(&|e| matches!(e, LeaseEvent::ShardEnded { shard } if shard.shard.as_str() == parent))
            .ok_or_else(|| anyhow::anyhow!("no ShardEnded for {parent}: {seen_a:?}"))?;
    let lost = at(&|e| {
        matches!(e, LeaseEvent::Lost { shard, reason: LostReason::ShardEnded, .. }
            if shard.shard.as_str() == parent)
    })
    .ok_or_else(|| anyhow::anyhow!("no Lost(ShardEnded) for {parent}: {seen_a:?}"))?;
    ensure!(ended < lost, "ShardEnded after its Lost: {seen_a:?}");
    let child_tokens: BTreeMap<String, u64> = seen_a
        .iter()
        .filter_map(|e| match e {
            LeaseEvent::Gained { shard, token, .. } if shard.shard.as_str() != parent => {
                Some((shard.shard.as_str().to_owned(), *token))
            }
            _ => None,
        })
        .collect();

    // b joins; the fleet rebalances one child to it.
    let b = env.builder(&stream, &table, "b").build(&env.sdk).await?;
    let mut events_b = b.lease_events();
    let batches_b = b.batches();
    let handed = events_until(env, &mut events_a, T, |seen| {
        seen.iter().any(|e| matches!(e, LeaseEvent::Lost { .. }))
    })
    .await?;
    let Some(LeaseEvent::Lost {
        shard: moved,
        token: old,
        reason,
    }) = handed.last().cloned()
    else {
        anyhow::bail!("no Lost on a: {handed:?}");
    };
    ensure!(
        reason == LostReason::HandedOff,
        "a lost {moved} by {reason:?}"
    );
    ensure!(
        child_tokens.get(moved.shard.as_str()) == Some(&old),
        "lost token {old} of {moved} is not the gained {child_tokens:?}"
    );
    // b's gain of it: keep b's stream read while b's batches are drained.
    let seen_b = events_until(env, &mut events_b, T, |seen| {
        seen.iter()
            .any(|e| matches!(e, LeaseEvent::Gained { shard, .. } if *shard == moved))
    })
    .await?;
    let Some(LeaseEvent::Gained { token, start, .. }) = seen_b
        .iter()
        .find(|e| matches!(e, LeaseEvent::Gained { shard, .. } if *shard == moved))
        .cloned()
    else {
        unreachable!("events_until returned on it");
    };
    ensure!(token > old, "b's token {token} not above a's {old}");
    // pk0..pk7 hash to both halves, so a read (and checkpointed) records
    // of either child before handing it off.
    ensure!(
        got_a.iter().any(|g| g.shard == moved.shard.as_str()),
        "a read no record of {moved}"
    );
    ensure!(
        matches!(
            start,
            StartPosition::AfterSequence(_) | StartPosition::AtSubSequence(_)
        ),
        "b starts {moved} at {start:?}, not after a's checkpoint"
    );
    drop((batches_a, batches_b));
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

/// A metric of the consumer's registry (`Metrics::render`), 0 when absent.
fn metric<R: TestRuntime>(consumer: &kinesin_aws::Consumer<R::Runtime>, name: &str) -> u64 {
    let mut text = String::new();
    consumer.metrics().render(&mut text);
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The EFO connection goes half-open (the proxy freezes it: no FIN, no
/// RST, no byte either way) while new connections work: the idle watchdog
/// cancels the silent subscription and resubscribes from the last
/// continuation over a fresh connection, so the records put after the
/// freeze arrive, and only through a new subscription.
///
/// Kinesis (AWS and kinesis-mock alike) refuses a second subscription of
/// one consumer to one shard while the first is open on its side
/// ("Another active subscription exists"), so nobody recovers before the
/// server lets go of the dead connection (AWS: at the latest at the
/// subscription's 5-minute end). The proxy closes the server's side soon
/// after the freeze, as a server does once its writes to a vanished peer
/// fail; the client's side stays silent, and only the watchdog notices it.
pub async fn frozen_efo_connection_recovers_within_the_idle_watchdog<R: TestRuntime>(
    env: &Env<R>,
) -> Result<()> {
    const IDLE: Duration = Duration::from_secs(10);
    const CALL: Duration = Duration::from_secs(5);
    let (stream, _arn) = env.create_stream("frozen-efo", 1).await?;
    let upstream = std::env::var("AWS_ENDPOINT_URL_KINESIS")?;
    let proxy = kinesin_tests::fault_proxy::FaultProxy::start(&upstream)?;
    let client = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&env.sdk)
            .endpoint_url(proxy.url())
            .build(),
    );
    env.put(&stream, &numbered(0..20, 4)).await?;
    let consumer = env
        .builder(&stream, &env.table(), "w1")
        .enhanced_fan_out(unique("app"))
        .kinesis_client(client)
        .call_timeout(CALL)
        .configure(|c| c.subscription_idle_timeout = IDLE)
        .build(&env.sdk)
        .await?;
    let mut batches = consumer.batches();
    let got = env.take(&mut batches, 20, T).await?;
    assert_eq!(ids(&got), (0..20).collect::<Vec<_>>());
    // Let the subscription settle on its next read (an event every few
    // seconds keeps it alive), then cut it.
    env.sleep(Duration::from_secs(2)).await;
    let subscribed = metric::<R>(&consumer, "kinesin_subscriptions_started_total");
    let frozen = proxy.freeze();
    ensure!(frozen > 0, "no connection to freeze");
    let frozen_at = Instant::now();
    env.put(&stream, &numbered(20..40, 4)).await?;
    env.sleep(Duration::from_secs(2)).await;
    proxy.close_frozen_upstreams();
    let mut seen = BTreeSet::new();
    let deadline = IDLE + CALL + Duration::from_secs(20);
    while seen.len() < 20 {
        let left = deadline.saturating_sub(frozen_at.elapsed());
        let batch = match env.timeout(left, batches.next()).await {
            None => {
                let mut text = String::new();
                consumer.metrics().render(&mut text);
                let errors: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("kinesin_call_errors_total{")
                            || l.starts_with("kinesin_calls_total{")
                    })
                    .collect();
                anyhow::bail!(
                    "{} of the 20 records put after the freeze arrived within {deadline:?} \
                     (subscriptions started: {} before, {} now; {errors:#?})",
                    seen.len(),
                    subscribed,
                    metric::<R>(&consumer, "kinesin_subscriptions_started_total")
                )
            }
            Some(None) => anyhow::bail!("the batch stream ended"),
            Some(Some(b)) => b?,
        };
        for r in batch.records() {
            let id = id_of(r.data());
            if id >= 20 {
                let now = metric::<R>(&consumer, "kinesin_subscriptions_started_total");
                ensure!(
                    now > subscribed,
                    "record {id} arrived {:?} after the freeze without a new subscription",
                    frozen_at.elapsed()
                );
                seen.insert(id);
            }
        }
        batch.ack();
    }
    let took = frozen_at.elapsed();
    ensure!(
        took >= IDLE - Duration::from_secs(1),
        "records arrived {took:?} after the freeze, before the watchdog could fire"
    );
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        (20..40).collect::<Vec<_>>()
    );
    ensure!(
        proxy.accepted() > frozen as u64,
        "no fresh connection after the freeze"
    );
    drop(batches);
    consumer.shutdown().await?;
    Ok(())
}

/// The worker's open DynamoDB connections go half-open (frozen: no FIN, no
/// RST) while new ones work: the hung heartbeat is retried on a fresh
/// connection, so the worker keeps every lease, never fences itself, and
/// goes on reading, for several failover times.
pub async fn frozen_dynamodb_connection_costs_no_lease<R: TestRuntime>(env: &Env<R>) -> Result<()> {
    use kinesin_aws::{LeaseEvent, LeaseStore};
    const FAILOVER: Duration = Duration::from_secs(3);
    let (stream, arn) = env.create_stream("frozen-ddb", 2).await?;
    let table = env.table();
    let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")?;
    let proxy = kinesin_tests::fault_proxy::FaultProxy::start(&upstream)?;
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&env.sdk)
            .endpoint_url(proxy.url())
            .build(),
    );
    env.put(&stream, &numbered(0..20, 8)).await?;
    let consumer = env
        .builder(&stream, &table, "w1")
        .failover_time(FAILOVER)
        .dynamodb_client(ddb)
        .build(&env.sdk)
        .await?;
    let mut events = consumer.lease_events();
    let mut batches = consumer.batches();
    env.take(&mut batches, 20, T).await?;
    let rows = env.leases(&table, &arn).await?;
    ensure!(
        held_by_worker(&rows).get("w1") == Some(&2),
        "both leases held before the freeze: {rows:?}"
    );
    let tokens: Vec<_> = rows.iter().map(|r| r.token).collect();
    // A direct store (not through the proxy) to watch the heartbeat row.
    let direct =
        kinesin_aws::DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(&env.sdk), &table);
    let beat = async || -> Result<u64> {
        let rows = direct.read_heartbeats().await?.rows;
        rows.iter()
            .find(|h| &*h.owner.worker == "w1")
            .map(|h| h.beat)
            .context("no heartbeat row of w1")
    };
    let beat_before = beat().await?;
    let accepted = proxy.accepted();
    let frozen = proxy.freeze();
    ensure!(frozen > 0, "no DynamoDB connection to freeze");
    // Records put after the freeze are still delivered: no fence.
    env.put(&stream, &numbered(20..40, 8)).await?;
    let got = env.take(&mut batches, 20, T).await?;
    ensure!(ids(&got).iter().all(|id| *id >= 20), "only the new records");
    // Watch for 4 failover times.
    let watch = Instant::now();
    let mut beats = vec![beat_before];
    while watch.elapsed() < FAILOVER * 4 {
        env.sleep(Duration::from_millis(500)).await;
        beats.push(beat().await?);
        let rows = env.leases(&table, &arn).await?;
        ensure!(
            held_by_worker(&rows).get("w1") == Some(&2)
                && rows.iter().map(|r| r.token).collect::<Vec<_>>() == tokens,
            "a lease changed hands {:?} after the freeze: {rows:?}",
            watch.elapsed()
        );
    }
    let renewed = beats.windows(2).filter(|w| w[1] != w[0]).count();
    ensure!(
        renewed >= 4,
        "the heartbeat was renewed {renewed} times in {:?} after the freeze: {beats:?}",
        FAILOVER * 4
    );
    ensure!(
        proxy.accepted() > accepted,
        "no fresh DynamoDB connection after the freeze"
    );
    while let Some(Some(e)) = env.timeout(Duration::from_millis(100), events.next()).await {
        ensure!(
            !matches!(e, LeaseEvent::Lost { .. }),
            "a lease was lost: {e:?}"
        );
    }
    ensure!(
        !matches!(consumer.metrics().health(), kinesin_aws::Health::Failing(_)),
        "health: {:?}",
        consumer.metrics().health()
    );
    drop(batches);
    drop(events);
    consumer.shutdown().await?;
    Ok(())
}
