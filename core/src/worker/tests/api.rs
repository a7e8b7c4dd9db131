//! The public API itself: determinism, configuration errors, the
//! invariant checker and the getters.

use super::*;

#[test]
fn same_seed_same_outputs() {
    let trace = || {
        let mut world = World::new(&[("s0", &[], 5, false), ("s1", &[], 5, false)]);
        let mut a = Node::new(polling_config("a"), &world);
        let mut b = Node::new(polling_config("b"), &world);
        run(&mut world, &mut [&mut a, &mut b], Duration::from_secs(40));
        (a.trace, b.trace)
    };
    let (a1, b1) = trace();
    let (a2, b2) = trace();
    assert!(!a1.is_empty());
    assert_eq!(a1, a2);
    assert_eq!(b1, b2);
}

#[test]
fn invalid_config_is_an_error_naming_the_field() {
    let mut c = polling_config("a");
    c.pool_records = 0;
    let err = Worker::new(c, crate::test_epoch(), 0).err().unwrap();
    assert_eq!(err.field, "enhanced_fan_out.max_pending_records");
}

/// The worker's own checker does fail: each corruption of a healthy,
/// reading worker is reported (cargo-mutants showed
/// `Worker::check_invariants -> Ok(())` surviving the core tests).
#[test]
fn check_invariants_reports_each_corruption() {
    let healthy = || {
        let mut world = World::new(&[("s0", &[], 5, false)]);
        let mut node = Node::new(polling_config("a"), &world);
        node.auto_ack = false;
        run(&mut world, &mut [&mut node], Duration::from_secs(2));
        assert_eq!(node.batches.len(), 5);
        assert_eq!(node.w.check_invariants(), Ok(()));
        node
    };
    type Corrupt = fn(&mut Worker);
    let corruptions: Vec<(&str, Corrupt)> = vec![
        ("token differs from the lease's", |w| {
            let slot = w.shards.slot_of(&sref("s0")).unwrap();
            w.shards.at_mut(slot).unwrap().1.token = FencingToken(99);
        }),
        ("batches in flight forgotten", |w| w.batches.clear()),
        ("pool used by no live permit", |w| {
            // A permit is plain data: dropping it does not give the room back.
            assert!(w.pool.try_admit(1, 10).is_ok());
        }),
    ];
    for (what, corrupt) in corruptions {
        let mut node = healthy();
        corrupt(&mut node.w);
        assert!(node.w.check_invariants().is_err(), "{what}: not reported");
    }
}

/// What an application sees of a shard it reads: token, progress, clock
/// (cargo-mutants survivors: `shard_status -> None`, `unix_ms -> 0`).
#[test]
fn shard_status_and_wall_clock_report_the_shard_read() {
    let mut world = World::new(&[("s0", &[], 5, false)]);
    let mut node = Node::new(polling_config("a"), &world);
    node.auto_ack = false;
    run(&mut world, &mut [&mut node], Duration::from_secs(2));
    let status = node.w.shard_status(&sref("s0")).expect("s0 is read");
    assert_eq!(status.token, world.rows[&sref("s0")].token);
    assert_eq!(status.pending_records, 5, "five batches unacknowledged");
    assert_eq!(node.w.shard_status(&sref("nope")), None);
    assert_eq!(
        node.w.unix_ms(world.now + Duration::from_secs(3)) - node.w.unix_ms(world.now),
        3_000
    );
    assert!(node.w.unix_ms(world.now) >= 1_764_000_000_000);
}

/// A worker whose Kinesis calls are all refused (expired credentials, a
/// KMS key it may not use) says so once `unhealthy_after` has passed,
/// instead of looking alive while it consumes nothing (issue 12), and says
/// when calls succeed again.
#[test]
fn refused_kinesis_calls_make_the_worker_failing_after_unhealthy_after() {
    let mut world = World::new(&[("s0", &[], 5, false)]);
    world.kinesis_denied = true;
    let mut node = Node::new(polling_config("a"), &world);
    let start = world.now;
    run(&mut world, &mut [&mut node], Duration::from_secs(50));
    assert_eq!(node.w.health(), Health::Healthy);
    run(&mut world, &mut [&mut node], Duration::from_secs(20));
    let Health::Failing {
        service,
        class,
        since,
    } = node.w.health()
    else {
        panic!("not failing after 70 s of refusals: {:?}", node.w.health());
    };
    assert_eq!(
        (service, class, since),
        (Service::Kinesis, ErrorClass::AccessDenied, start)
    );
    let reports = |n: &Node| -> Vec<Health> {
        n.events
            .iter()
            .filter_map(|e| match e {
                Event::Health(h) => Some(h.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(reports(&node).len(), 1);
    assert!(node.batches.is_empty());
    world.kinesis_denied = false;
    // The next ListShards (every shard_sync_period) succeeds.
    run(&mut world, &mut [&mut node], Duration::from_secs(70));
    assert_eq!(node.w.health(), Health::Healthy);
    assert_eq!(reports(&node).last(), Some(&Health::Healthy));
    assert_eq!(node.batches.len(), 5);
}
