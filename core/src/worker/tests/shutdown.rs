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
