//! Delivery and checkpoints: every record once and in order, the fencing
//! token on every batch, acks, nacks and `checkpoint_limit`.

use super::*;

#[test]
fn delivers_every_record_in_order_and_checkpoints_after_commit_period() {
    let mut world = World::new(&[("s0", &[], 10, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(8));
    let got = delivered_seqs(&node, "s0");
    let want: Vec<SeqNum> = world.shards["s0"].records.clone();
    assert_eq!(got, want, "every record once, in shard order");
    let row = &world.rows[&sref("s0")];
    assert_eq!(row.owner.as_ref(), Some(node.w.owner()));
    assert_eq!(row.checkpoint, Some(Checkpoint::After(seq(10))));
}

#[test]
fn batches_carry_the_lease_fencing_token() {
    let mut world = World::new(&[("s0", &[], 3, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    let token = world.rows[&sref("s0")].token;
    assert!(!node.batches.is_empty());
    assert!(node.batches.iter().all(|b| b.token == token));
}

#[test]
fn checkpoint_never_covers_unacked_record() {
    let mut world = World::new(&[("s0", &[], 5, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    assert_eq!(node.batches.len(), 5);
    // Ack everything but the second record.
    for b in node.batches.clone() {
        if b.first.seq != seq(2) {
            node.w.ack(world.now, b.id).unwrap();
        }
    }
    run(&mut world, &mut [&mut node], Duration::from_secs(6));
    assert_eq!(
        world.rows[&sref("s0")].checkpoint,
        Some(Checkpoint::After(seq(1)))
    );
    let second = node
        .batches
        .iter()
        .find(|b| b.first.seq == seq(2))
        .unwrap()
        .id;
    node.w.ack(world.now, second).unwrap();
    run(&mut world, &mut [&mut node], Duration::from_secs(6));
    assert_eq!(
        world.rows[&sref("s0")].checkpoint,
        Some(Checkpoint::After(seq(5)))
    );
}

#[test]
fn acks_applied_at_once_checkpoint_like_acks_one_by_one_and_report_unknown_ids() {
    let mut world = World::new(&[("s0", &[], 5, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    assert_eq!(node.batches.len(), 5);
    let second = node
        .batches
        .iter()
        .find(|b| b.first.seq == seq(2))
        .unwrap()
        .id;
    let others: Vec<BatchId> = node
        .batches
        .iter()
        .map(|b| b.id)
        .filter(|id| *id != second)
        .collect();
    // Every batch but the second, one of them twice: the repeat is
    // rejected, the rest acked.
    let mut rejected = Vec::new();
    let ids = others.iter().copied().chain([others[0]]);
    node.w.ack_many(world.now, ids, |e| rejected.push(e));
    assert_eq!(rejected, vec![AckError::UnknownBatch(others[0])]);
    assert_eq!(node.w.pool_used().0, 1, "only the second record pending");
    run(&mut world, &mut [&mut node], Duration::from_secs(6));
    assert_eq!(
        world.rows[&sref("s0")].checkpoint,
        Some(Checkpoint::After(seq(1))),
        "never past the unacked second record"
    );
    node.w.ack_many(world.now, [second], |e| panic!("{e}"));
    run(&mut world, &mut [&mut node], Duration::from_secs(6));
    assert_eq!(
        world.rows[&sref("s0")].checkpoint,
        Some(Checkpoint::After(seq(5)))
    );
    assert_eq!(node.w.pool_used(), (0, 0));
    assert!(node.w.check_invariants().is_ok());
}

#[test]
fn nacked_batch_is_redelivered_and_checkpoint_waits_for_it() {
    let mut world = World::new(&[("s0", &[], 2, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    let first = node.batches[0].clone();
    node.w.nack(world.now, first.id).unwrap();
    node.settle(&mut world);
    let again = node.batches.last().unwrap();
    assert!(again.redelivery);
    assert_eq!(again.id, first.id);
    assert_eq!(again.first, first.first);
    node.w.ack(world.now, node.batches[1].id).unwrap();
    run(&mut world, &mut [&mut node], Duration::from_secs(6));
    assert_eq!(world.rows[&sref("s0")].checkpoint, None);
    node.w.ack(world.now, first.id).unwrap();
    run(&mut world, &mut [&mut node], Duration::from_secs(6));
    assert_eq!(
        world.rows[&sref("s0")].checkpoint,
        Some(Checkpoint::After(seq(2)))
    );
}

/// The records of `node`'s dead-letter events, in order: (first seq, attempts).
fn dead_letters(node: &Node) -> Vec<(SeqNum, u32)> {
    node.events
        .iter()
        .filter_map(|e| match e {
            Event::DeadLetter { batch, attempts } => Some((batch.first.seq.clone(), *attempts)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_poison_batch_nacked_max_deliveries_times_becomes_a_dead_letter_and_the_shard_moves_on() {
    let mut world = World::new(&[("s0", &[], 3, false)]);
    let mut c = polling_config("a");
    c.redelivery = crate::config::Redelivery {
        backoff: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(4),
        max_deliveries: Some(3),
    };
    let mut node = Node::new(c, &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    assert_eq!(node.batches.len(), 3, "the whole shard is delivered");
    let poison = node.batches[0].clone();
    assert_eq!(poison.first.seq, seq(1));
    for b in &node.batches[1..] {
        node.w.ack(world.now, b.id).unwrap();
    }
    // Nack 1: redelivered after 1 s, not before.
    node.w.nack(world.now, poison.id).unwrap();
    node.settle(&mut world);
    assert_eq!(node.batches.len(), 3, "no redelivery before the backoff");
    run(&mut world, &mut [&mut node], Duration::from_millis(999));
    assert_eq!(node.batches.len(), 3, "no redelivery before the backoff");
    run(&mut world, &mut [&mut node], Duration::from_millis(1));
    assert_eq!(node.batches.len(), 4);
    assert!(node.batches[3].redelivery && node.batches[3].id == poison.id);
    // Nack 2: the backoff doubles (2 s).
    node.w.nack(world.now, poison.id).unwrap();
    run(&mut world, &mut [&mut node], Duration::from_millis(1999));
    assert_eq!(node.batches.len(), 4, "the second backoff is 2 s");
    run(&mut world, &mut [&mut node], Duration::from_millis(1));
    assert_eq!(node.batches.len(), 5, "third delivery");
    assert!(dead_letters(&node).is_empty());
    // Nack 3 after 3 deliveries: a dead letter at once, never a batch again.
    node.w.nack(world.now, poison.id).unwrap();
    node.settle(&mut world);
    assert_eq!(dead_letters(&node), vec![(seq(1), 3)]);
    assert_eq!(node.w.stats().dead_letters, 1);
    // The handler has not accepted it: the checkpoint stays before it.
    run(&mut world, &mut [&mut node], Duration::from_secs(12));
    assert_eq!(
        node.batches.len(),
        5,
        "a dead letter is not delivered again"
    );
    assert_eq!(world.rows[&sref("s0")].checkpoint, None);
    // The handler refuses it (nack): offered again after the backoff (4 s).
    node.w.nack(world.now, poison.id).unwrap();
    run(&mut world, &mut [&mut node], Duration::from_millis(3999));
    assert_eq!(dead_letters(&node).len(), 1);
    run(&mut world, &mut [&mut node], Duration::from_millis(1));
    assert_eq!(dead_letters(&node), vec![(seq(1), 3), (seq(1), 3)]);
    assert_eq!(node.w.stats().dead_letters, 1, "one batch, counted once");
    // Accepted (ack): the checkpoint covers it and everything after it.
    node.w.ack(world.now, poison.id).unwrap();
    run(&mut world, &mut [&mut node], Duration::from_secs(6));
    assert_eq!(
        world.rows[&sref("s0")].checkpoint,
        Some(Checkpoint::After(seq(3)))
    );
}

#[test]
fn without_max_deliveries_a_nacked_batch_is_redelivered_for_ever() {
    let mut world = World::new(&[("s0", &[], 1, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    let id = node.batches[0].id;
    for n in 1..=50 {
        node.w.nack(world.now, id).unwrap();
        node.settle(&mut world);
        assert_eq!(node.batches.len(), n + 1, "redelivered at once");
    }
    assert!(dead_letters(&node).is_empty());
}

#[test]
fn checkpoint_limit_stops_delivery_until_acks() {
    let mut world = World::new(&[("s0", &[], 10, false)]);
    let mut c = polling_config("a");
    c.checkpoint_limit = 3;
    let mut node = Node::new(c, &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(3));
    assert_eq!(
        node.batches.len(),
        3,
        "no more than checkpoint_limit pending"
    );
    let id = node.batches[0].id;
    node.w.ack(world.now, id).unwrap();
    node.settle(&mut world);
    assert_eq!(node.batches.len(), 4);
}

#[test]
fn a_re_read_overlapping_delivered_records_skips_them_and_delivers_the_rest() {
    // Every GetRecords answer starts two records before its iterator: the
    // records delivered already are skipped one by one; none after them is
    // dropped (the reader has moved past the chunk, so a dropped record
    // would be lost and later checkpoints would cover it).
    let mut world = World::new(&[("s0", &[], 4, false)]);
    world.overlap = 2;
    let mut node = Node::new(polling_config("a"), &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(3));
    world.produce("s0", 5);
    run(&mut world, &mut [&mut node], Duration::from_secs(3));
    world.produce("s0", 5);
    run(&mut world, &mut [&mut node], Duration::from_secs(8));
    let got = delivered_seqs(&node, "s0");
    assert_eq!(
        got, world.shards["s0"].records,
        "every record once, in order"
    );
    assert_eq!(
        world.rows[&sref("s0")].checkpoint,
        Some(Checkpoint::After(seq(14)))
    );
    assert!(node.w.check_invariants().is_ok());
    assert_eq!(
        node.w.pool_used(),
        (0, 0),
        "skipped records' permits returned"
    );
}

#[test]
fn by_default_a_batch_is_what_one_read_brought_in_bounded_by_checkpoint_limit() {
    let mut world = World::new(&[("s0", &[], 10, false)]);
    let mut c = polling_config("a");
    c.batching = Batching::default();
    c.checkpoint_limit = 4;
    let mut node = Node::new(c, &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    // One read brought all 10; checkpoint_limit 4 bounds the first batch.
    assert_eq!(node.batches.len(), 1);
    assert_eq!(node.batches[0].len(), 4);
    for b in node.batches.clone() {
        node.w.ack(world.now, b.id).unwrap();
    }
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    let sizes: Vec<u32> = node.batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes[1], 4, "{sizes:?}");
}
