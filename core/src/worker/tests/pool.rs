//! The pending pool: reading bounded by its budget, an oversized chunk
//! admitted alone, reads in flight reserving room.

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
    assert_eq!(node.w.pool_used(), (0, 0));
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
