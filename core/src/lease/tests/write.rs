//! The write pipeline: ambiguous and refused takes, checkpoints, final
//! writes and their retries.

use super::*;

#[test]
fn ambiguous_take_adopted_at_next_table_read() {
    let mut w = World::with_free_shards(1);
    w.rule(0, is_take, Fault::Ambiguous, 1);
    let a = w.add_node("a", 1);
    w.run_until(secs(0.5));
    // Applied, answer lost: adopted after an immediate re-read.
    assert_eq!(w.acquired(a).len(), 1);
    assert_eq!(w.acquired(a)[0].2, FencingToken(1));
    assert_eq!(w.actions(a, is_take).len(), 1);
    assert!(w.actions(a, is_release).is_empty());
}

#[test]
fn lost_take_request_is_not_adopted_and_retaken() {
    let mut w = World::with_free_shards(1);
    w.rule(0, is_take, Fault::LostRequest, 1);
    let a = w.add_node("a", 1);
    w.run_until(secs(0.5));
    // Not applied: the re-read shows a free row, taken again.
    assert_eq!(w.actions(a, is_take).len(), 2);
    assert_eq!(w.acquired(a).len(), 1);
    assert_eq!(w.acquired(a)[0].2, FencingToken(1));
}

/// Kinesin-sim (swarm seeds 78, 116, 138, 245; perf64 seed 0): a take
/// or create refused by its condition was sent again at once, because
/// a table read sent before the refusal still showed the old row; the
/// second write was refused too, and a refused write costs a write unit.
#[test]
fn refused_write_is_not_repeated_on_a_read_sent_before_the_refusal() {
    let mut w = World::with_free_shards(1);
    // The first take waits in the network; a read sent meanwhile sees
    // the row free but is answered only after the take.
    w.rule(0, is_take, Fault::HoldRequest, 1);
    let a = w.add_node("a", 1);
    assert_eq!(w.actions(a, is_take).len(), 1);
    w.rule(a, is_read, Fault::HoldAnswer, 1);
    w.with(a, |m, now, _| m.read_now(&stream(), now));
    w.fire(a);
    // Someone else takes the lease before our take lands.
    {
        let row = w.rows.get_mut(&sref(0)).unwrap();
        row.owner = Some(Owner::new("z", 1));
        row.token = FencingToken(1);
    }
    w.deliver(a);
    assert_eq!(w.nodes[a].mgr.stats().conditional_failures, 1);
    assert_eq!(
        w.actions(a, is_take).len(),
        1,
        "no second take on the stale read"
    );
    // A read sent after the refusal shows the new owner: nothing to do.
    w.run_for(secs(40.0));
    assert_eq!(w.nodes[a].mgr.stats().conditional_failures, 1);
}

#[test]
fn take_refused_means_someone_else_won() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    let b = w.add_node("b", 1);
    w.run_until(secs(3.0));
    // Both raced for the free row; exactly one holds it.
    assert_eq!(w.holds(a) + w.holds(b), 1);
    assert_eq!(w.row(0).token, FencingToken(1));
}

#[test]
fn checkpoint_write_is_conditional_on_owner_and_token() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(42), mint)
    });
    let writes = w.actions(a, is_checkpoint);
    assert_eq!(
        write_of(&writes[0].1),
        Some(&LeaseWrite::Checkpoint {
            shard: sref(0),
            owner: Owner::new("a", 1),
            token: FencingToken(1),
            checkpoint: cp(42),
            serial: 1,
        })
    );
    assert_eq!(w.row(0).checkpoint, Some(cp(42)));
    assert!(w.events(a).any(|(_, e)| *e
        == LeaseEvent::CheckpointWritten {
            shard: sref(0),
            checkpoint: cp(42)
        }));
    assert_eq!(w.nodes[a].mgr.stats().checkpoint_writes, 1);
}

#[test]
fn one_checkpoint_write_in_flight_newest_sent_next() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    w.rule(a, is_checkpoint, Fault::HoldRequest, 1);
    for n in [1, 2, 3, 2] {
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(n), mint)
        });
    }
    assert_eq!(w.actions(a, is_checkpoint).len(), 1);
    w.deliver(a);
    let sent: Vec<Checkpoint> = w
        .actions(a, is_checkpoint)
        .into_iter()
        .filter_map(|(_, x)| match write_of(&x) {
            Some(LeaseWrite::Checkpoint { checkpoint, .. }) => Some(checkpoint.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![cp(1), cp(3)]);
    assert_eq!(w.row(0).checkpoint, Some(cp(3)));
    // Backwards or equal: ignored.
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(3), mint)
    });
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(2), mint)
    });
    assert_eq!(w.actions(a, is_checkpoint).len(), 2);
}

/// The worker asks before it writes (`Worker::commit`): a checkpoint is
/// wanted only ahead of what is stored, in flight and queued; `durable`
/// is the highest stored, the one copy of it.
#[test]
fn checkpoint_wanted_only_ahead_of_stored_sent_and_queued() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    let wanted = |w: &World, n| w.nodes[a].mgr.checkpoint_wanted(&sref(0), &cp(n));
    assert_eq!(w.nodes[a].mgr.durable(&sref(0)), None);
    assert!(wanted(&w, 1));
    w.rule(a, is_checkpoint, Fault::HoldRequest, 1);
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(2), mint)
    });
    assert!(!wanted(&w, 2), "in flight");
    assert!(wanted(&w, 3));
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(3), mint)
    });
    assert!(!wanted(&w, 3), "queued");
    assert_eq!(w.nodes[a].mgr.durable(&sref(0)), None, "nothing stored yet");
    w.deliver(a);
    assert_eq!(w.nodes[a].mgr.durable(&sref(0)), Some(&cp(3)));
    assert!(!wanted(&w, 3), "stored");
    assert!(wanted(&w, 4));
    assert!(
        !w.nodes[a].mgr.checkpoint_wanted(&sref(1), &cp(4)),
        "not held"
    );
}

#[test]
fn failed_checkpoint_is_written_when_asked_again() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    w.rule(a, is_checkpoint, Fault::Transient, 1);
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(5), mint)
    });
    assert!(!w
        .events(a)
        .any(|(_, e)| matches!(e, LeaseEvent::CheckpointWritten { .. })));
    assert_eq!(w.holds(a), 1);
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(5), mint)
    });
    assert_eq!(w.row(0).checkpoint, Some(cp(5)));
}

#[test]
fn checkpoint_refused_means_lease_taken() {
    let mut w = World::with_free_shards(1);
    w.strict = false;
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    let row = w.rows.get_mut(&sref(0)).unwrap();
    row.owner = Some(Owner::new("z", 1));
    row.token = FencingToken(2);
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(5), mint)
    });
    assert_eq!(w.lost(a), vec![(secs(1.0), sref(0), LostReason::Taken)]);
    assert_eq!(w.nodes[a].mgr.stats().conditional_failures, 1);
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(6), mint)
    });
    assert_eq!(
        w.actions(a, is_checkpoint).len(),
        1,
        "nothing for a lost lease"
    );
}

#[test]
fn checkpoint_asked_during_handoff_rides_on_the_transfer() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(5.0));
    w.nodes[a].auto_transfer = false;
    let b = w.add_node("b", 1);
    w.run_until(secs(7.0));
    let shard = w
        .events(a)
        .find_map(|(_, e)| match e {
            LeaseEvent::HandoffRequested { shard, .. } => Some(shard.clone()),
            _ => None,
        })
        .unwrap();
    w.rule(a, is_checkpoint, Fault::HoldRequest, 1);
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &shard, cp(10), mint)
    });
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &shard, cp(20), mint)
    });
    w.with(a, |m, now, mint| m.transfer(now, &shard, None, mint));
    // Serialized: nothing more while the checkpoint is in flight.
    assert_eq!(w.nodes[a].mgr.writes.busy.len(), 1);
    w.deliver(a);
    assert_eq!(w.rows[&shard].owner, Some(Owner::new("b", 1)));
    assert_eq!(w.rows[&shard].checkpoint, Some(cp(20)));
    w.run_until(secs(9.0));
    assert_eq!(w.nodes[b].mgr.token(&shard), Some(FencingToken(2)));
    assert_eq!(w.acquired(b)[0].3, Some(cp(20)));
}

#[test]
fn ambiguous_release_resolved_by_table_read() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    w.rule(a, is_release, Fault::Ambiguous, 1);
    w.rule(a, is_release, Fault::LostRequest, 1);
    w.quarantine_all(a);
    w.with(a, |m, now, mint| {
        m.release(now, &sref(0), Some(cp(4)), mint)
    });
    w.with(a, |m, now, mint| {
        m.release(now, &sref(1), Some(cp(8)), mint)
    });
    w.run_until(secs(3.0));
    let lost = w.lost(a);
    assert_eq!(lost.len(), 2);
    assert!(lost.iter().all(|(_, _, r)| *r == LostReason::Released));
    // Applied once, never twice: tokens 1 -> 2.
    assert_eq!(
        (w.row(0).token, w.row(1).token),
        (FencingToken(2), FencingToken(2))
    );
    assert_eq!(
        (w.row(0).checkpoint.clone(), w.row(1).checkpoint.clone()),
        (Some(cp(4)), Some(cp(8)))
    );
    assert_eq!(
        w.actions(a, is_release).len(),
        3,
        "only the unapplied one is sent again"
    );
}

impl World {
    fn quarantine_all(&mut self, i: usize) {
        let until = self.now(i) + Duration::from_secs(3600);
        for s in self.rows.keys().cloned().collect::<Vec<_>>() {
            self.nodes[i].mgr.quarantine(&s, until);
        }
    }
}

#[test]
fn transient_final_write_is_retried() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    w.rule(a, is_release, Fault::Transient, 2);
    w.with(a, |m, now, mint| m.finish_shard(now, &sref(0), mint));
    assert_eq!(w.holds(a), 1);
    w.run_until(secs(4.0));
    assert_eq!(
        w.lost(a),
        vec![(secs(3.0), sref(0), LostReason::ShardEnded)]
    );
    assert_eq!(w.row(0).checkpoint, Some(Checkpoint::ShardEnd));
}

/// A take conditions on owner and token only, so a checkpoint the old
/// owner wrote after the taker's last table read is in the row the take
/// wins. The taker must start from the row as written (the store returns
/// it), not from its older view: starting from the view re-reads records
/// and its first checkpoint moves the table's backwards.
#[test]
fn a_take_starts_from_the_checkpoint_in_the_row_it_won_not_from_its_view() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    assert_eq!(w.holds(a), 1);
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(10), mint)
    });
    assert_eq!(w.row(0).checkpoint, Some(cp(10)));
    // b's take request is held on the way; a dies.
    let b = w.nodes.len();
    w.rule(b, is_take, Fault::HoldRequest, 1);
    let b = w.add_node("b", 1);
    w.kill(a);
    w.run_until(secs(30.0));
    assert_eq!(w.actions(b, is_take).len(), 1, "b sent its take");
    // a's last checkpoint write lands before b's take does.
    let row = w.rows.get_mut(&sref(0)).unwrap();
    row.checkpoint = Some(cp(20));
    row.checkpoint_serial += 1;
    w.deliver(b);
    assert_eq!(w.row(0).owner, Some(Owner::new("b", 1)));
    let acquired: Vec<_> = w
        .events(b)
        .filter_map(|(_, e)| match e {
            LeaseEvent::Acquired { checkpoint, .. } => Some(checkpoint.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(acquired, vec![Some(cp(20))]);
}
