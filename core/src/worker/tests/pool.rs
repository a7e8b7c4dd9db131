//! The pending pool: reading bounded by its budget, an oversized chunk
//! admitted alone, reads in flight reserving room, polling calls in
//! flight bounded.

use std::collections::VecDeque;

use super::*;

#[test]
fn pool_budget_bounds_reading_and_returns_to_zero_after_shutdown() {
    let mut world = World::new(&[("s0", &[], 20, false), ("s1", &[], 20, false)]);
    let mut c = polling_config("a");
    c.pool_records = 5;
    let mut node = Node::new(c, &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(5));
    let (used, _) = node.w.pool_used();
    assert!(used <= 5, "pool used {used} over budget");
    assert!(used > 0);
    assert!(world.get_records_limits.iter().all(|l| *l <= 5));
    // Ack what was delivered; shut down; everything returns.
    for b in node.batches.clone() {
        node.w.ack(world.now, b.id).unwrap();
    }
    // Acks made room: batches delivered since are acked as they come.
    node.auto_ack = true;
    node.settle(&mut world);
    node.w.shutdown(world.now);
    run(&mut world, &mut [&mut node], Duration::from_secs(5));
    assert!(node.events.contains(&Event::ShutdownComplete));
    assert_eq!(node.w.pool_used(), (0, 0));
    for row in world.rows.values() {
        assert_eq!(row.owner, None, "lease {:?} released", row.shard);
    }
    let delivered = node.batches.len() as u64;
    let row0 = world.rows[&sref("s0")].checkpoint.clone();
    let row1 = world.rows[&sref("s1")].checkpoint.clone();
    assert!(delivered > 0 && (row0.is_some() || row1.is_some()));
}

#[test]
fn oversized_chunk_admitted_when_pool_empty() {
    let mut world = World::new(&[("s0", &[], 3, false)]);
    let mut c = polling_config("a");
    c.retrieval = Retrieval::Efo {
        consumer: EfoConsumer::Name("app".into()),
    };
    c.pool_bytes = 10; // every 3-record EFO event (300 bytes) is oversized
    let mut node = Node::new(c, &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(10));
    assert_eq!(delivered_seqs(&node, "s0"), world.shards["s0"].records);
}

#[test]
fn reads_in_flight_reserve_pool_room_whatever_the_shard_count() {
    let shards: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    let spec: Vec<(&str, &[&str], usize, bool)> = shards
        .iter()
        .map(|s| (s.as_str(), &[][..], 30, false))
        .collect();
    let mut world = World::new(&spec);
    let mut c = polling_config("a");
    c.retrieval = Retrieval::Efo {
        consumer: EfoConsumer::Name("app".into()),
    };
    c.pool_records = 12;
    let mut node = Node::new(c, &world);
    // Warm up with a fast sink: the worker learns that events hold 3 records.
    run(&mut world, &mut [&mut node], Duration::from_secs(20));
    assert_eq!(node.w.held_shards().len(), 20);
    // Nothing admitted is left; what the pool holds is reserved for the
    // Pulls waiting on quiet subscriptions (a fair share each).
    for (s, _) in node.w.held_shards() {
        let st = node.w.shard_status(&s).unwrap();
        assert_eq!((st.pending_records, st.queued_records), (0, 0), "{s:?}");
    }
    assert!(node.w.pool_used().0 <= 12);
    // Then the sink stalls while every shard gets 30 more records.
    node.auto_ack = false;
    for s in &shards {
        world.produce(s, 30);
    }
    let before = world.pulled_records;
    run(&mut world, &mut [&mut node], Duration::from_secs(20));
    let read = world.pulled_records - before;
    assert!(read > 0, "the stalled phase read something");
    // Without reservations, 20 shards would each read one event (60
    // records) into a 12-record budget.
    assert!(
        read <= 12 + 3,
        "{read} records read from the network for a 12-record budget"
    );
    assert!(node.w.pool_used().0 <= 12);
}

#[test]
fn a_cold_start_reserves_its_reads_within_the_byte_budget() {
    // Five shards of 1,000 records of 100 bytes against a 10,000-byte
    // budget, with a sink that never acks: no read may bring more than the
    // room it reserved (before reservations, the first GetRecords asked for
    // 10,000 records and admitted 100,000 bytes).
    let spec: Vec<(&str, &[&str], usize, bool)> = ["s0", "s1", "s2", "s3", "s4"]
        .iter()
        .map(|s| (*s, &[][..], 1000, false))
        .collect();
    let mut world = World::new(&spec);
    let mut c = polling_config("a");
    c.pool_bytes = 10_000;
    let mut node = Node::new(c, &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(10));
    let (_, used) = node.w.pool_used();
    assert!(used > 0, "something was read");
    assert!(used <= 10_000, "{used} bytes held for a 10,000-byte budget");
    assert_eq!(node.w.stats().reads_over_reservation, 0);
    // With a sink that acks, every record arrives, and no GetRecords ever
    // asked for more records of the observed size than the budget holds.
    node.auto_ack = true;
    for b in node.batches.clone() {
        node.w.ack(world.now, b.id).unwrap();
    }
    run(&mut world, &mut [&mut node], Duration::from_secs(120));
    for s in ["s0", "s1", "s2", "s3", "s4"] {
        assert_eq!(delivered_seqs(&node, s), world.shards[s].records, "{s}");
    }
    assert!(
        world.get_records_limits.iter().all(|&l| l * 100 <= 10_000),
        "limits {:?}",
        world.get_records_limits
    );
}

#[test]
fn get_records_limit_follows_the_room_left_and_the_observed_record_size() {
    let mut world = World::new(&[("s0", &[], 3000, false)]);
    let mut c = polling_config("a");
    c.pool_bytes = 50_000;
    let mut node = Node::new(c, &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(60));
    assert_eq!(delivered_seqs(&node, "s0"), world.shards["s0"].records);
    let limits = &world.get_records_limits;
    // Before the first answer a record may be 1 MiB: one record. Then as
    // many 100-byte records as the 50,000 bytes hold in flight (each
    // 100 * 6 + 256 = 856 bytes until its answer is decoded: 58).
    assert_eq!(limits[0], 1);
    assert!(limits[1..].iter().all(|&l| l <= 58), "limits {limits:?}");
    assert!(limits.contains(&58), "limits {limits:?}");
}

/// `scripts/bench.sh memory-cold`: with a sink that never acknowledged,
/// the shards whose iterators came first filled the budget (their reads
/// shared the room left between the few asking) and 843 of 1,000 shards
/// never got a read. Shards not read yet count as asking, and the others
/// leave room for a first read while one waits: every shard is read. (This
/// harness answers every GetShardIterator at once, so it passes without
/// the rule too; the benchmark's "every shard read" check is what failed.)
#[test]
fn a_cold_start_with_a_sink_that_never_acks_reads_every_shard() {
    let shards: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
    let spec: Vec<(&str, &[&str], usize, bool)> = shards
        .iter()
        .map(|s| (s.as_str(), &[][..], 300, false))
        .collect();
    let mut world = World::new(&spec);
    let mut c = polling_config("a");
    c.pool_records = 2_000;
    let mut node = Node::new(c, &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(10));
    let (used, _) = node.w.pool_used();
    assert!(used <= 2_000, "pool used {used} over budget");
    let unread: Vec<&String> = shards
        .iter()
        .filter(|s| delivered_seqs(&node, s).is_empty())
        .collect();
    assert!(
        unread.is_empty(),
        "{} shards never delivered: {unread:?}",
        unread.len()
    );
}

/// `scripts/bench.sh memory-cold`: a cold start at 1,000 shards sent 1,000
/// GetShardIterators and then 1,000 GetRecords at once (1,000 keep-alive
/// connections and as many answers decoding: 160-189 MiB against a bound
/// of 128). Here the driver answers one polling call at a time, oldest
/// first, 10 ms apart: never more than `max_read_calls_in_flight` are out,
/// the calls past it wait their turn, and every shard is read to its end.
#[test]
fn a_cold_start_sends_at_most_the_read_call_limit_and_reads_every_shard() {
    let shards: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
    let spec: Vec<(&str, &[&str], usize, bool)> = shards
        .iter()
        .map(|s| (s.as_str(), &[][..], 50, false))
        .collect();
    let mut world = World::new(&spec);
    let mut c = polling_config("a");
    c.max_read_calls_in_flight = 4;
    let mut node = Node::new(c, &world);
    let mut out: VecDeque<Action> = VecDeque::new();
    let mut most_out = 0;
    for _ in 0..6_000 {
        // Everything but polling calls is answered at once.
        loop {
            let mut progress = false;
            while let Some(a) = node.w.poll_action() {
                progress = true;
                match a {
                    Action::GetShardIterator { .. } | Action::GetRecords { .. } => out.push_back(a),
                    a => {
                        if let Some(input) = world.answer(a) {
                            node.w.handle_input(world.now, input);
                        }
                    }
                }
                node.w.check_invariants().unwrap();
            }
            while let Some(e) = node.w.poll_event() {
                progress = true;
                if let Event::Batch(b) = &e {
                    node.batches.push(b.clone());
                    node.w.ack(world.now, b.id).unwrap();
                }
                node.w.check_invariants().unwrap();
            }
            if !progress {
                break;
            }
        }
        most_out = most_out.max(out.len());
        world.now += Duration::from_millis(10);
        node.w.handle_timeout(world.now);
        if let Some(a) = out.pop_front() {
            if let Some(input) = world.answer(a) {
                node.w.handle_input(world.now, input);
            }
        }
    }
    assert_eq!(most_out, 4, "polling calls out at the driver at once");
    assert!(node.w.stats().read_calls_queued > 0, "calls waited");
    for s in &shards {
        assert_eq!(delivered_seqs(&node, s), world.shards[s].records, "{s}");
    }
}
