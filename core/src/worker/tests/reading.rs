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

/// The messages of the node's `Event::Fatal`s, in order.
fn fatal_messages(node: &Node) -> Vec<&String> {
    node.events
        .iter()
        .filter_map(|e| match e {
            Event::Fatal { message } => Some(message),
            _ => None,
        })
        .collect()
}

/// Issue 11 (found by the simulator, `a_recreated_stream_is_read_from_its_
/// creation_and_inherits_no_old_row`): a stream deleted and recreated under
/// the same name keeps its ARN, and its first shard is `shardId-...0` again.
/// The old stream's row for that id is at SHARD_END (an old split parent):
/// applied to the new stream, the new shard would never be read. A shard
/// ListShards reports open cannot have ended, so the worker stops with an
/// error naming the stream and what to delete, and reads nothing of it.
#[test]
fn an_open_shard_whose_row_is_at_shard_end_stops_the_worker_as_a_recreated_stream() {
    // The old split parent's row at SHARD_END; or the parent's row
    // collected and its child's row (a shard the new stream lacks) left.
    let mut ended = LeaseRow::new(sref("s0"), Vec::new(), 1_700_000_000_000);
    ended.checkpoint = Some(Checkpoint::ShardEnd);
    ended.token = FencingToken(3);
    let mut child = LeaseRow::new(
        sref("s9"),
        vec![crate::ids::ShardId::new("s0")],
        1_700_000_000_000,
    );
    child.checkpoint = Some(Checkpoint::After(seq(90)));
    for old in [ended, child] {
        let mut world = World::new(&[("s0", &[], 5, false)]);
        let key = old.shard.clone();
        world.rows.insert(key.clone(), old.clone());
        let mut node = Node::new(polling_config("a"), &world);
        run(&mut world, &mut [&mut node], Duration::from_secs(70));
        let fatal = fatal_messages(&node);
        assert_eq!(fatal.len(), 1, "{key}: {:?}", node.events);
        assert!(
            fatal[0].contains("recreated") && fatal[0].contains(stream().as_str()),
            "{}",
            fatal[0]
        );
        assert!(node.batches.is_empty(), "{key}: {:?}", node.batches);
        assert_eq!(world.rows[&key].checkpoint, old.checkpoint, "{key}");
    }
}

/// Swarm seed 15419 of the final 20,000-seed sweep (parent-first): a
/// stream recreated under its name and resharded the same way (the same
/// two parents merged into the same child id) leaves no row the listing
/// contradicts by shape. The old child's row, checkpointed, made the
/// collector delete the old parents' rows and the worker read the new
/// child before its new parents. A row checkpointed below its shard's
/// StartingSequenceNumber cannot be of this shard: the worker stops as for
/// any row of an earlier stream, and reads and deletes nothing.
#[test]
fn a_row_checkpointed_below_its_shards_first_sequence_number_stops_the_worker() {
    let mut world = World::new(&[
        ("p1", &[], 3, true),
        ("p2", &[], 3, true),
        ("c", &["p1", "p2"], 3, false),
    ]);
    // The earlier stream's rows: both parents ended, the child read.
    for p in ["p1", "p2"] {
        let mut ended = LeaseRow::new(sref(p), Vec::new(), 1_700_000_000_000);
        ended.checkpoint = Some(Checkpoint::ShardEnd);
        world.rows.insert(sref(p), ended);
    }
    let mut child = LeaseRow::new(
        sref("c"),
        vec![
            crate::ids::ShardId::new("p1"),
            crate::ids::ShardId::new("p2"),
        ],
        1_700_000_000_000,
    );
    // Below c's first sequence number (seq(7)): of another shard.
    child.checkpoint = Some(Checkpoint::After(seq(2)));
    world.rows.insert(sref("c"), child.clone());
    let before = world.rows.clone();
    let mut node = Node::new(polling_config("a"), &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(70));
    let fatal = fatal_messages(&node);
    assert_eq!(fatal.len(), 1, "{:?}", node.events);
    assert!(
        fatal[0].contains("recreated") && fatal[0].contains("below its first sequence number"),
        "{}",
        fatal[0]
    );
    assert!(node.batches.is_empty(), "{:?}", node.batches);
    assert_eq!(world.rows.len(), before.len(), "no row deleted");
    for (key, row) in &before {
        assert_eq!(world.rows[key].checkpoint, row.checkpoint, "{key}");
    }
}

/// A fleet down for longer than the retention period after a split: the
/// parent's row has a checkpoint short of SHARD_END, but the parent is
/// gone (ListShards no longer lists it; reading it answers
/// ResourceNotFound). Its data is lost either way; its child must still be
/// read. Before, the parent was failed, quarantined and taken again every
/// `QUARANTINE` for ever, and the child waited for it for ever. KCL ends a
/// shard that ResourceNotFound and the listing both say is gone; so does
/// kinesin, once a ListShards sent after the failure lacks it.
#[test]
fn a_parent_trimmed_past_retention_ends_and_its_child_is_read() {
    let mut world = World::new(&[("c", &["p"], 4, false)]);
    let mut parent = LeaseRow::new(sref("p"), Vec::new(), 1_700_000_000_000);
    parent.checkpoint = Some(Checkpoint::After(seq(1)));
    parent.token = FencingToken(2);
    world.rows.insert(sref("p"), parent);
    let mut node = Node::new(polling_config("a"), &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(30));
    assert_eq!(
        world.rows[&sref("p")].checkpoint,
        Some(Checkpoint::ShardEnd),
        "{:?}",
        node.events
    );
    assert_eq!(delivered_seqs(&node, "c"), world.shards["c"].records);
    assert!(
        !node
            .events
            .iter()
            .any(|e| matches!(e, Event::ShardFailed { .. })),
        "{:?}",
        node.events
    );
}

/// The same ResourceNotFound on a shard ListShards still lists (an access
/// rule, a race with a deletion): the shard is not ended, only failed and
/// quarantined as before, its row left as it was.
#[test]
fn a_listed_shard_answering_not_found_fails_without_ending() {
    let mut world = World::new(&[("p", &[], 3, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    // Listed, but every iterator request answers ResourceNotFound.
    world.not_found.insert("p".to_owned());
    run(&mut world, &mut [&mut node], Duration::from_secs(10));
    assert!(
        node.events
            .iter()
            .any(|e| matches!(e, Event::ShardFailed { .. })),
        "{:?}",
        node.events
    );
    assert_ne!(
        world.rows[&sref("p")].checkpoint,
        Some(Checkpoint::ShardEnd)
    );
}
