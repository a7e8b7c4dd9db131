//! Heartbeats, the self-fence, and expiry judged by observation.

use super::*;

#[test]
fn heartbeat_written_first_then_every_third_of_failover_time() {
    let mut w = World::new();
    w.add_node("a", 1);
    let first = &w.nodes[0].actions[0].1;
    assert!(
        is_hb_write(first),
        "first action is the heartbeat: {first:?}"
    );
    w.run_until(secs(20.0));
    let beats: Vec<(Duration, u64, bool)> = w
        .actions(0, is_hb_write)
        .into_iter()
        .map(|(t, a)| match a {
            Action::WriteHeartbeat { row, .. } => (t, row.beat, row.alive),
            _ => unreachable!(),
        })
        .collect();
    let interval = Duration::from_secs(10) / 3;
    let expect: Vec<(Duration, u64, bool)> = (0..7u32)
        .map(|k| (interval * k, u64::from(k) + 1, true))
        .collect();
    assert_eq!(beats, expect);
    assert_eq!(w.beats["a"].beat, 7);
    assert_eq!(w.nodes[0].mgr.stats().heartbeat_writes, 7);
}

#[test]
fn first_heartbeat_answered_after_first_reads_still_takes_free_leases_at_once() {
    // A slow first heartbeat write (the local store fsyncs every write)
    // answered after the first heartbeat read and the table view: the
    // balancing pass of that view was skipped (not yet renewed), so the
    // renewal itself must start one, not the next rebalance period.
    let mut w = World::with_free_shards(2);
    w.rule(0, is_hb_write, Fault::HoldAnswer, 1);
    let a = w.add_node("a", 1);
    w.run_for(secs(0.5));
    assert_eq!(w.holds(a), 0, "not renewed yet: takes nothing");
    assert!(!w.actions(a, is_read).is_empty(), "the view was read");
    w.deliver(a);
    w.run_for(secs(1.0));
    assert_eq!(w.holds(a), 2, "both free leases taken once renewed");
}

#[test]
fn a_hung_heartbeat_write_is_followed_by_one_fresh_write_per_interval() {
    let mut w = World::new();
    let a = w.add_node("a", 1);
    // First write went through; every later one hangs.
    w.rule(a, is_hb_write, Fault::HoldRequest, usize::MAX);
    w.run_until(secs(30.0));
    // Sent at 0 (ok), then every F/3 (3.33 s): 3.33, 6.67, ..., 30.0. A
    // hung write never blocks the next, and never more than one per
    // interval goes out.
    let sent: Vec<Duration> = w.actions(a, is_hb_write).iter().map(|(t, _)| *t).collect();
    assert_eq!(sent.len(), 10, "{sent:?}");
    for pair in sent.windows(2) {
        assert!(pair[1] - pair[0] >= secs(3.333), "{sent:?}");
    }
    assert!(w.nodes[a].mgr.is_fenced(), "all of them hung: fenced");
}

#[test]
fn self_fence_deadline_counts_from_send_not_reply() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(2.0));
    assert_eq!(w.holds(a), 1);
    // The write sent at 10/3 s answers only at 6 s.
    w.rule(a, is_hb_write, Fault::HoldRequest, 1);
    w.run_until(secs(6.0));
    assert_eq!(w.actions(a, is_hb_write).len(), 2);
    w.rule(a, is_hb_write, Fault::HoldRequest, usize::MAX);
    w.deliver(a);
    let sent = Duration::from_secs(10) / 3;
    let deadline = sent + secs(9.0); // F - margin after the *send*
    w.run_until(deadline - Duration::from_millis(1));
    assert!(!w.nodes[a].mgr.is_fenced());
    assert_eq!(w.holds(a), 1);
    w.run_until(deadline);
    assert!(w.nodes[a].mgr.is_fenced());
    assert_eq!(w.holds(a), 0);
    assert_eq!(w.lost(a), vec![(deadline, sref(0), LostReason::SelfFenced)]);
    assert_eq!(
        w.nodes[a].mgr.poll_timeout().map(|(_, r)| r),
        Some("heartbeat read")
    );
}

#[test]
fn ambiguous_heartbeat_does_not_renew() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    assert_eq!(w.holds(a), 1);
    // Every later heartbeat applies, but its answer is lost.
    w.rule(a, is_hb_write, Fault::Ambiguous, usize::MAX);
    w.run_until(secs(8.999));
    assert_eq!(w.holds(a), 1);
    w.run_until(secs(9.0));
    assert_eq!(
        w.lost(a),
        vec![(secs(9.0), sref(0), LostReason::SelfFenced)]
    );
    // No checkpoint is written while fenced.
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &sref(0), cp(5), mint)
    });
    assert!(w.actions(a, is_checkpoint).is_empty());
}

#[test]
fn self_fences_before_anyone_may_take() {
    let mut w = World::with_free_shards(4);
    let a = w.add_node("a", 1);
    let b = w.add_node("b", 1);
    w.run_until(secs(40.0));
    assert_eq!((w.holds(a), w.holds(b)), (2, 2));
    let a_shards = w.reading(a);
    let last_renew = w.nodes[a].mgr.live.last_renew_sent.unwrap();
    // A loses DynamoDB: every call fails; B keeps observing.
    w.nodes[a].partitioned = true;
    w.run_until(secs(80.0));
    let fenced_at: Vec<Duration> = w
        .lost(a)
        .into_iter()
        .filter(|(_, s, r)| a_shards.contains(s) && *r == LostReason::SelfFenced)
        .map(|(t, _, _)| t)
        .collect();
    assert_eq!(fenced_at.len(), 2);
    let taken_at: Vec<Duration> = w
        .acquired(b)
        .into_iter()
        .filter(|(_, s, _, _)| a_shards.contains(s))
        .map(|(t, _, _, _)| t)
        .collect();
    assert_eq!(taken_at.len(), 2);
    let last_renew_t = last_renew.duration_since(w.epoch + w.nodes[a].offset);
    for f in &fenced_at {
        assert!(*f <= last_renew_t + secs(9.0));
        for t in &taken_at {
            assert!(f < t, "fenced at {f:?}, taken at {t:?}");
        }
    }
    assert_eq!(w.holds(b), 4);
}

#[test]
fn fenced_worker_takes_afresh_with_next_token() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    assert_eq!(w.acquired(a)[0].2, FencingToken(1));
    w.nodes[a].partitioned = true;
    w.run_until(secs(12.0));
    assert!(w.nodes[a].mgr.is_fenced());
    w.nodes[a].partitioned = false;
    w.run_until(secs(20.0));
    assert!(!w.nodes[a].mgr.is_fenced());
    let acq = w.acquired(a);
    assert_eq!(acq.len(), 2);
    // Not resumed with token 1: released (2), then taken afresh (3).
    assert_eq!(acq[1].2, FencingToken(3));
    assert_eq!(w.row(0).token, FencingToken(3));
    let writes: Vec<&LeaseWrite> = w.nodes[a]
        .actions
        .iter()
        .filter_map(|(_, a)| write_of(a))
        .collect();
    assert!(matches!(
        writes.last(),
        Some(LeaseWrite::Take {
            expect_owner: None,
            expect_token: FencingToken(2),
            ..
        })
    ));
}

#[test]
fn expired_lease_judged_on_observer_clock() {
    let mut w = World::with_free_shards(4);
    let a = w.add_node("a", 1);
    w.run_until(secs(5.0));
    let b = w.add_node("b", 1);
    w.run_until(secs(35.0));
    assert_eq!((w.holds(a), w.holds(b)), (2, 2));
    // Clocks have nothing in common: origins a million seconds apart,
    // wall clocks a day apart.
    assert_ne!(w.nodes[a].offset, w.nodes[b].offset);
    let last_beat = w.actions(a, is_hb_write).last().map(|(t, _)| *t).unwrap();
    w.kill(a);
    let killed = w.t;
    w.run_until(secs(80.0));
    let takes: Vec<Duration> = w
        .actions(b, is_take)
        .into_iter()
        .filter(|(t, _)| *t > killed)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(takes.len(), 2);
    for t in takes {
        assert!(
            t >= last_beat + secs(10.0),
            "taken {t:?}, beat {last_beat:?}"
        );
        assert!(t <= killed + secs(12.0), "failover took {:?}", t - killed);
    }
    assert_eq!(w.holds(b), 4);
}

#[test]
fn nobody_judged_expired_before_a_successful_heartbeat_read() {
    let mut w = World::new();
    let ghost = Owner::new("ghost", 1);
    for i in 0..2 {
        let mut row = LeaseRow::new(sref(i), vec![], 1);
        row.owner = Some(ghost.clone());
        row.token = FencingToken(3);
        w.add_row(row);
    }
    w.rule(0, is_hb_read, Fault::Transient, usize::MAX);
    let b = w.add_node("b", 1);
    w.run_until(secs(60.0));
    assert!(w.actions(b, is_take).is_empty());
    assert_eq!(w.nodes[b].mgr.live_workers(), 1);
    w.clear_rules(b);
    let healed = w.t;
    w.run_until(secs(90.0));
    let takes = w.actions(b, is_take);
    assert_eq!(takes.len(), 2);
    // Absent since the first successful read: taken F after it.
    assert!(takes[0].0 >= healed + secs(10.0));
    assert!(takes[0].0 <= healed + secs(12.0));
    assert!(matches!(
        write_of(&takes[0].1),
        Some(LeaseWrite::Take { expect_owner: Some(o), expect_token: FencingToken(3), .. }) if *o == ghost
    ));
    assert_eq!(w.row(0).token, FencingToken(4));
}

#[test]
fn alive_false_heartbeat_expires_at_once() {
    let mut w = World::new();
    let gone = Owner::new("gone", 7);
    w.beats.insert(
        "gone".into(),
        HeartbeatRow {
            owner: gone.clone(),
            beat: 99,
            held: 1,
            wants: vec![],
            alive: false,
            streams: vec![],
        },
    );
    let mut row = LeaseRow::new(sref(0), vec![], 1);
    row.owner = Some(gone);
    row.token = FencingToken(5);
    w.add_row(row);
    let b = w.add_node("b", 1);
    w.run_until(secs(1.0));
    assert_eq!(w.acquired(b).len(), 1);
    assert_eq!(w.acquired(b)[0].0, Duration::ZERO);
    assert_eq!(w.acquired(b)[0].2, FencingToken(6));
}

#[test]
fn absent_heartbeat_counts_from_first_read_that_misses_it() {
    let mut w = World::new();
    let mut row = LeaseRow::new(sref(0), vec![], 1);
    row.owner = Some(Owner::new("ghost", 1));
    row.token = FencingToken(1);
    w.add_row(row);
    w.run_for(secs(100.0)); // the ghost's row is old: irrelevant
    let b = w.add_node("b", 1);
    let start = w.t;
    w.run_until(start + secs(9.9));
    assert!(w.actions(b, is_take).is_empty());
    w.run_until(start + secs(12.0));
    let takes = w.actions(b, is_take);
    assert_eq!(takes.len(), 1);
    assert!(takes[0].0 >= start + secs(10.0));
}

#[test]
fn beat_counts_from_reply_of_first_read_that_shows_it() {
    // An observer whose read answer is delayed must not age the owner
    // by the delay: the beat counts from the reply instant.
    let mut w = World::new();
    let mut row = LeaseRow::new(sref(0), vec![], 1);
    row.owner = Some(Owner::new("x", 1));
    row.token = FencingToken(1);
    w.add_row(row);
    w.beats.insert(
        "x".into(),
        HeartbeatRow {
            owner: Owner::new("x", 1),
            beat: 1,
            held: 1,
            wants: vec![],
            alive: true,
            streams: vec![],
        },
    );
    // b's first heartbeat read is executed now, answered 5 s later.
    w.rule(0, is_hb_read, Fault::HoldAnswer, 1);
    let b = w.add_node("b", 1);
    w.run_until(secs(0.5)); // nothing more (read in flight)
    w.t = secs(5.0);
    w.deliver(b);
    w.run_until(secs(14.9));
    assert!(
        w.actions(b, is_take).is_empty(),
        "x seen at 5 s: not expired before 15 s"
    );
    w.run_until(secs(17.0));
    assert_eq!(w.actions(b, is_take).len(), 1);
    assert!(w.actions(b, is_take)[0].0 >= secs(15.0));
}

#[test]
fn restarted_worker_takes_old_incarnation_leases_after_the_failover_time_with_next_token() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(5.0));
    assert_eq!(w.holds(a), 2);
    let a = w.restart(a);
    assert_eq!(w.nodes[a].me, Owner::new("a", 2));
    let restarted = w.t;
    assert_eq!(w.holds(a), 0, "never silently resumed");
    // The earlier incarnation may still run (a second process with the
    // same id whose reads fail): its leases are taken only when it must
    // have fenced itself, F after its beat was last seen, as any other
    // silent owner's (kinesin-sim seeds 5248, 7198).
    w.run_until(restarted + secs(9.0));
    assert_eq!(w.holds(a), 0, "not before F");
    w.run_until(restarted + secs(13.0));
    assert_eq!(w.holds(a), 2);
    let acquired: Vec<FencingToken> = w
        .acquired(a)
        .into_iter()
        .filter(|(t, ..)| *t >= restarted)
        .map(|(_, _, token, _)| token)
        .collect();
    assert_eq!(acquired, vec![FencingToken(2), FencingToken(2)]);
    for (_, act) in w.actions(a, is_take) {
        assert!(matches!(
            write_of(&act),
            Some(LeaseWrite::Take { expect_owner: Some(o), .. }) if *o == Owner::new("a", 1)
        ));
    }
}

#[test]
fn liveness_costs_one_heartbeat_per_interval_whatever_the_shard_count() {
    let mut costs = Vec::new();
    for shards in [2, 300] {
        let mut w = World::with_free_shards(shards);
        let a = w.add_node("a", 1);
        w.run_until(secs(120.0));
        assert_eq!(w.holds(a), shards);
        let s = w.nodes[a].mgr.stats().clone();
        assert_eq!(
            s.other_lease_writes, shards as u64,
            "one take per lease, nothing else"
        );
        assert_eq!(s.checkpoint_writes, 0, "checkpoints only when asked");
        assert_eq!(s.conditional_failures, 0);
        costs.push((s.heartbeat_writes, s.lease_reads, s.heartbeat_reads));
    }
    assert_eq!(costs[0], costs[1]);
    // 120 s / (10 s / 3) + the first one.
    assert_eq!(costs[0].0, 37);
    // At start, once more after the first heartbeat read, then every 30 s.
    assert_eq!(costs[0].1, 6);
}

#[test]
fn one_hung_heartbeat_write_does_not_fence_a_healthy_worker() {
    // A black-holed DynamoDB connection: one heartbeat write never comes
    // back (the driver gives up only after its 15 s call deadline), the
    // next ones work. A fresh write goes out a heartbeat interval later, so
    // only an outage longer than the fence margin fences.
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    assert_eq!(w.holds(a), 1);
    w.rule(a, is_hb_write, Fault::HoldRequest, 1);
    w.run_until(secs(40.0));
    assert!(w.lost(a).is_empty(), "{:?}", w.lost(a));
    assert_eq!(w.holds(a), 1);
    // The hung write answering late changes nothing.
    w.deliver(a);
    w.run_until(secs(45.0));
    assert!(w.lost(a).is_empty(), "{:?}", w.lost(a));
}

#[test]
fn a_process_superseded_by_a_later_incarnation_of_its_worker_id_stops_at_once() {
    // Two live processes with one worker id: the later one's heartbeat row
    // replaces ours. We must stop delivering before anyone takes our leases
    // (they may, a short grace after seeing the later row), and stop
    // writing our heartbeat over the later process's row.
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(7.0));
    assert_eq!(w.holds(a), 2);
    w.beats.insert(
        "a".into(),
        HeartbeatRow {
            owner: Owner::new("a", 2),
            beat: 1,
            held: 0,
            wants: vec![],
            alive: true,
            streams: vec![],
        },
    );
    w.run_until(secs(8.5));
    assert_eq!(
        w.holds(a),
        0,
        "superseded: fenced at its next heartbeat read"
    );
    assert!(w
        .lost(a)
        .iter()
        .all(|(t, _, r)| *r == LostReason::SelfFenced && *t <= secs(8.1)));
    w.run_until(secs(20.0));
    let late_beats = w
        .actions(a, is_hb_write)
        .into_iter()
        .filter(|(t, _)| *t > secs(7.0))
        .count();
    assert_eq!(late_beats, 0, "no heartbeat over the later process's row");
    assert_eq!(w.beats["a"].owner, Owner::new("a", 2));
    assert_eq!(w.holds(a), 0);
}

fn is_hb_delete(a: &Action) -> bool {
    matches!(a, Action::DeleteHeartbeat { .. })
}

/// Nothing was ever deleted: every worker read the heartbeat row of every
/// worker ever started, each second. A row whose beat stood still for
/// `HEARTBEAT_GC_FAILOVERS` failover periods (a crash, or a clean
/// shutdown's `alive = false`) is deleted, by one worker only (the
/// smallest live owner), conditional on what it read.
#[test]
fn heartbeat_rows_of_workers_gone_ten_failover_periods_are_deleted_by_one_worker() {
    let mut w = World::with_free_shards(4);
    let a = w.add_node("a", 1);
    let b = w.add_node("b", 1);
    let c = w.add_node("c", 1);
    let d = w.add_node("d", 1);
    w.run_until(secs(5.0));
    // c crashes; d shuts down cleanly.
    w.kill(c);
    w.with(d, |m, now, mint| m.shutdown(now, mint));
    w.run_until(secs(30.0));
    assert!(w.beats.contains_key("c") && w.beats.contains_key("d"));
    assert!(w.actions(a, is_hb_delete).is_empty(), "not before 10 F");
    w.run_until(secs(5.0 + 10.0 * 10.0 + 5.0));
    assert!(
        !w.beats.contains_key("c"),
        "the crashed worker's row is gone"
    );
    assert!(
        !w.beats.contains_key("d"),
        "the shut-down worker's row is gone"
    );
    assert!(w.beats.contains_key("a") && w.beats.contains_key("b"));
    let deletes = w.actions(a, is_hb_delete);
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    for (at, _) in &deletes {
        assert!(*at >= secs(100.0), "deleted at {at:?}: before 10 F");
    }
    assert!(
        w.actions(b, is_hb_delete).is_empty(),
        "b is not the collector"
    );
    assert_eq!(w.nodes[a].mgr.stats().heartbeats_deleted, 2);
    // Leases moved as before.
    assert_eq!(w.holds(a) + w.holds(b), 4);
}

#[test]
fn a_heartbeat_delete_applies_only_to_the_row_as_read() {
    let row = HeartbeatRow {
        owner: Owner::new("c", 1),
        beat: 7,
        held: 0,
        wants: vec![],
        alive: true,
        streams: vec![],
    };
    assert!(HeartbeatRow::delete_applies(
        Some(&row),
        &Owner::new("c", 1),
        7
    ));
    assert!(
        !HeartbeatRow::delete_applies(Some(&row), &Owner::new("c", 1), 8),
        "beat again"
    );
    assert!(
        !HeartbeatRow::delete_applies(Some(&row), &Owner::new("c", 2), 7),
        "later incarnation"
    );
    assert!(
        !HeartbeatRow::delete_applies(None, &Owner::new("c", 1), 7),
        "gone"
    );
}

/// Kinesin-sim 20,000-seed sweep (seeds 2031, 5248, 3721: a second
/// process with a running worker's id): the earlier process's heartbeat
/// put landed over the later one's row before the earlier one read it,
/// in phase, so it never saw the later row, and readers mostly saw the
/// earlier row: the later process's hand-off requests were invisible and
/// its forced take hit a live owner still delivering. The table now
/// refuses a put over a later incarnation's row, and the refused process
/// stops at once, before its next heartbeat read.
#[test]
fn a_process_whose_heartbeat_put_is_refused_for_a_later_incarnation_stops_at_once() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(7.0));
    assert_eq!(w.holds(a), 2);
    // The later process wrote its row; every heartbeat read of ours
    // fails, so only the refused put can tell.
    w.beats.insert(
        "a".into(),
        HeartbeatRow {
            owner: Owner::new("a", 2),
            beat: 1,
            held: 0,
            wants: vec![],
            alive: true,
            streams: vec![],
        },
    );
    w.rule(a, is_hb_read, Fault::Transient, 1_000);
    let next_put = w
        .actions(a, is_hb_write)
        .last()
        .map(|(t, _)| *t)
        .expect("a heartbeat was written")
        + secs(10.0 / 3.0);
    w.run_until(next_put + secs(0.1));
    assert_eq!(w.holds(a), 0, "stopped when its put was refused");
    assert!(w
        .lost(a)
        .iter()
        .all(|(t, _, r)| *r == LostReason::SelfFenced && *t <= next_put + secs(0.1)));
    assert_eq!(
        w.beats["a"].owner,
        Owner::new("a", 2),
        "the later row stands"
    );
    w.run_until(secs(30.0));
    assert_eq!(w.holds(a), 0, "for good");
    let refused = w
        .actions(a, is_hb_write)
        .into_iter()
        .filter(|(t, _)| *t > secs(7.0))
        .count();
    assert_eq!(refused, 1, "one refused put, then no more");
}

#[test]
fn live_workers_counts_each_live_worker_once_and_no_expired_one() {
    let mut w = World::with_free_shards(6);
    let nodes: Vec<usize> = ["a", "b", "c"].iter().map(|n| w.add_node(n, 1)).collect();
    w.run_until(secs(20.0));
    for &n in &nodes {
        assert_eq!(w.nodes[n].mgr.live_workers(), 3);
        assert_eq!(w.nodes[n].mgr.view().live_workers(), 3, "the outside view");
    }
    // c dies: still observed (its row is read), no longer counted.
    w.kill(nodes[2]);
    w.run_for(secs(13.0));
    for &n in &nodes[..2] {
        assert_eq!(w.nodes[n].mgr.live_workers(), 2);
        assert_eq!(w.nodes[n].mgr.view().live_workers(), 2);
    }
}

/// A heartbeat row whose owner process is not modelled (its beat fixed
/// unless the test changes it), holding shard 0 and listing `streams`.
fn ghost_row(w: &mut World, streams: Vec<StreamId>) -> Owner {
    let ghost = Owner::new("ghost", 3);
    w.beats.insert(
        "ghost".into(),
        HeartbeatRow {
            owner: ghost.clone(),
            beat: 5,
            held: 1,
            wants: vec![],
            alive: true,
            streams,
        },
    );
    ghost
}

#[test]
fn a_heartbeat_row_turning_alive_false_without_a_new_beat_marks_its_owner_dead_at_once() {
    // The row is the truth, beat moved or not (two processes sharing one
    // worker id and incarnation write the same beats): alive = false is
    // dead now, not F after the beat last moved.
    let mut w = World::new();
    let ghost = ghost_row(&mut w, vec![]);
    let mut row = LeaseRow::new(sref(0), vec![], 1);
    row.owner = Some(ghost);
    row.token = FencingToken(5);
    w.add_row(row);
    let b = w.add_node("b", 1);
    w.run_until(secs(3.0));
    assert!(w.acquired(b).is_empty(), "ghost is live");
    w.beats.get_mut("ghost").expect("row").alive = false;
    w.run_until(secs(7.0));
    let acquired = w.acquired(b);
    assert_eq!(acquired.len(), 1, "taken well before F");
    assert!(acquired[0].0 > secs(3.0));
}

#[test]
fn a_heartbeat_row_whose_stream_list_changes_without_a_new_beat_is_judged_by_the_new_list() {
    // ghost consumes orders: b's target is 2 of 4. Its row then lists
    // payments only (same beat): b's next pass counts b alone.
    let mut w = World::with_free_shards(4);
    ghost_row(&mut w, vec![stream()]);
    let b = w.add_node("b", 1);
    w.run_until(secs(2.0));
    assert_eq!(w.holds(b), 2);
    let payments = StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/payments");
    w.beats.get_mut("ghost").expect("row").streams = vec![payments];
    w.run_until(secs(4.0));
    w.with(b, |m, now, _| m.read_now(&stream(), now));
    w.run_until(secs(5.0));
    assert_eq!(w.holds(b), 4, "ghost (still live) no longer counted");
}
