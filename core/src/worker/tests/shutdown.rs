//! Shutdown: waiting for in-flight acks, final checkpoints, the deadline.

use super::*;

#[test]
fn shutdown_waits_for_in_flight_acks_then_writes_final_checkpoint() {
    let mut world = World::new(&[("s0", &[], 3, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(1));
    assert_eq!(node.batches.len(), 3);
    node.w.shutdown(world.now);
    run(&mut world, &mut [&mut node], Duration::from_secs(1));
    assert!(
        !node.events.contains(&Event::ShutdownComplete),
        "waits for acks"
    );
    for b in node.batches.clone() {
        node.w.ack(world.now, b.id).unwrap();
    }
    run(&mut world, &mut [&mut node], Duration::from_secs(1));
    assert!(node.events.contains(&Event::ShutdownComplete));
    let row = &world.rows[&sref("s0")];
    assert_eq!(row.checkpoint, Some(Checkpoint::After(seq(3))));
    assert_eq!(row.owner, None);
    assert_eq!(node.w.pool_used(), (0, 0));
}

#[test]
fn shutdown_deadline_releases_without_unacked_records() {
    let mut world = World::new(&[("s0", &[], 3, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(1));
    node.w.ack(world.now, node.batches[0].id).unwrap();
    node.w.shutdown(world.now);
    run(&mut world, &mut [&mut node], Duration::from_secs(11));
    assert!(node.events.contains(&Event::ShutdownComplete));
    let row = &world.rows[&sref("s0")];
    assert_eq!(row.checkpoint, Some(Checkpoint::After(seq(1))));
    assert_eq!(row.owner, None);
    assert_eq!(node.w.pool_used(), (0, 0));
    assert!(node.w.ack(world.now, node.batches[1].id).is_err());
}

#[test]
fn shutdown_does_not_wait_for_a_nacked_batch_still_in_its_redelivery_backoff() {
    // A nacked batch waiting out its backoff is not in the application's
    // hands: shutdown gives it up (the next reader reads it again from the
    // checkpoint) instead of waiting `shutdown_timeout` for an ack that
    // cannot come.
    let mut world = World::new(&[("s0", &[], 3, false)]);
    let mut c = polling_config("a");
    c.redelivery.backoff = Duration::from_secs(60);
    c.redelivery.backoff_cap = Duration::from_secs(60);
    let mut node = Node::new(c, &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(1));
    assert_eq!(node.batches.len(), 3);
    node.w.ack(world.now, node.batches[0].id).unwrap();
    node.w.ack(world.now, node.batches[2].id).unwrap();
    node.w.nack(world.now, node.batches[1].id).unwrap();
    node.w.shutdown(world.now);
    run(&mut world, &mut [&mut node], Duration::from_secs(1));
    assert!(
        node.events.contains(&Event::ShutdownComplete),
        "shutdown completed without waiting for the nacked batch"
    );
    let row = &world.rows[&sref("s0")];
    assert_eq!(row.checkpoint, Some(Checkpoint::After(seq(1))));
    assert_eq!(row.owner, None);
    assert_eq!(node.w.pool_used(), (0, 0));
}
