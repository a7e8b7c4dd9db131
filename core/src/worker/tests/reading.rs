//! Reading: hash ranges carried by every read, EFO registration and
//! subscription, parents read to their end before children.

use super::*;

#[test]
fn every_read_carries_the_shard_hash_range_from_list_shards() {
    let mut world = World::new(&[("s0", &[], 5, false), ("s1", &[], 5, false)]);
    let halves = [
        HashRange {
            start: 0,
            end: u128::MAX / 2,
        },
        HashRange {
            start: u128::MAX / 2 + 1,
            end: u128::MAX,
        },
    ];
    for (id, range) in ["s0", "s1"].into_iter().zip(halves) {
        world.shards.get_mut(id).unwrap().info.hash_range = range;
    }
    let mut c = polling_config("a");
    let mut node = Node::new(c.clone(), &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(5));
    c.retrieval = Retrieval::Efo {
        consumer: EfoConsumer::Name("app".into()),
    };
    let mut efo = Node::new(c, &world);
    world.rows.clear();
    run(&mut world, &mut [&mut efo], Duration::from_secs(5));
    assert!(world.subscribe_calls.len() >= 2, "both shards subscribed");
    assert!(world.get_records_limits.len() >= 2, "both shards polled");
    for (shard, range) in &world.read_ranges {
        let want = world.shards[shard.shard.as_str()].info.hash_range;
        assert_eq!(*range, want, "{shard}");
    }
}

#[test]
fn efo_registers_consumer_then_subscribes_and_reads_with_credit() {
    let mut world = World::new(&[("s0", &[], 7, false)]);
    let mut c = polling_config("a");
    c.retrieval = Retrieval::Efo {
        consumer: EfoConsumer::Name("app".into()),
    };
    c.batching = Batching {
        count: 2,
        ..Batching::default()
    };
    let mut node = Node::new(c, &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(10));
    assert_eq!(world.subscribe_calls.len(), 1);
    let mut got: Vec<SeqNum> = Vec::new();
    for b in &node.batches {
        assert!(b.len() <= 2);
        got.push(b.first.seq.clone());
        got.push(b.last.seq.clone());
    }
    got.dedup();
    assert_eq!(got, world.shards["s0"].records);
}

#[test]
fn child_not_read_before_parent_reaches_shard_end() {
    let mut world = World::new(&[("p", &[], 4, true), ("c", &["p"], 3, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(3));
    assert_eq!(delivered_seqs(&node, "p").len(), 4);
    assert!(
        delivered_seqs(&node, "c").is_empty(),
        "child read before parent acked"
    );
    for b in node.batches.clone() {
        node.w.ack(world.now, b.id).unwrap();
    }
    node.auto_ack = true;
    run(&mut world, &mut [&mut node], Duration::from_secs(5));
    assert_eq!(
        world.rows[&sref("p")].checkpoint,
        Some(Checkpoint::ShardEnd)
    );
    assert_eq!(delivered_seqs(&node, "c"), world.shards["c"].records);
    assert!(node
        .events
        .contains(&Event::ShardEnded { shard: sref("p") }));
}
