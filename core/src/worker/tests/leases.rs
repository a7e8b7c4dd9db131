//! Leases: lost behind our back, self-fenced, shared fairly between two
//! workers.

use super::*;

#[test]
fn lease_taken_behind_our_back_stops_reading_and_frees_pool() {
    let mut world = World::new(&[("s0", &[], 5, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(1));
    let row = world.rows[&sref("s0")].clone();
    let stolen = LeaseWrite::Take {
        shard: sref("s0"),
        expect_owner: row.owner.clone(),
        expect_token: row.token,
        to: Owner::new("thief", 1),
    }
    .apply(Some(&row))
    .unwrap();
    world.rows.insert(sref("s0"), stolen);
    node.w.ack(world.now, node.batches[0].id).unwrap();
    run(&mut world, &mut [&mut node], Duration::from_secs(6));
    assert!(node
        .events
        .iter()
        .any(|e| matches!(e, Event::LeaseLost { shard, .. } if *shard == sref("s0"))));
    assert_eq!(node.w.pool_used(), (0, 0));
    assert!(node.w.held_shards().is_empty());
    let last = node.batches.last().unwrap().id;
    assert!(
        node.w.ack(world.now, last).is_err(),
        "stale ack is an error value"
    );
    assert_eq!(world.rows[&sref("s0")].owner, Some(Owner::new("thief", 1)));
}

#[test]
fn worker_that_cannot_renew_heartbeat_stops_delivering() {
    let mut world = World::new(&[("s0", &[], 0, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    assert_eq!(node.w.held_shards().len(), 1);
    world.ddb_down = true;
    run(&mut world, &mut [&mut node], Duration::from_secs(10));
    assert!(node.w.held_shards().is_empty(), "self-fenced");
    assert!(node.events.iter().any(|e| matches!(
        e,
        Event::LeaseLost {
            reason: LostReason::SelfFenced,
            ..
        }
    )));
}

#[test]
fn two_workers_share_shards_fairly_without_duplicates() {
    let mut world = World::new(&[
        ("s0", &[], 3, false),
        ("s1", &[], 3, false),
        ("s2", &[], 3, false),
        ("s3", &[], 3, false),
    ]);
    let mut a = Node::new(polling_config("a"), &world);
    run(&mut world, &mut [&mut a], Duration::from_secs(5));
    assert_eq!(a.w.held_shards().len(), 4);
    let mut b = Node::new(polling_config("b"), &world);
    run(&mut world, &mut [&mut a, &mut b], Duration::from_secs(70));
    assert_eq!(a.w.held_shards().len(), 2);
    assert_eq!(b.w.held_shards().len(), 2);
    // Everything was acked before the graceful hand-off: no duplicates.
    let total = a.batches.len() + b.batches.len();
    assert_eq!(total, 12, "each record delivered exactly once");
}
