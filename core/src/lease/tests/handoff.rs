//! Graceful hand-offs: requests through heartbeat `wants`, transfers,
//! forced takes, requests dropped or cleared.

use super::*;

#[test]
fn handoff_request_reaches_owner_through_heartbeat_wants() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(10.0));
    w.nodes[a].auto_transfer = false;
    let b = w.add_node("b", 1);
    w.run_until(secs(10.0));
    let req_at = w
        .actions(b, |x| {
            matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
        })
        .into_iter()
        .map(|(t, _)| t)
        .collect::<Vec<_>>();
    assert_eq!(req_at, vec![secs(10.0)]);
    // The heartbeat carrying `wants` was written at once.
    let wants_beat = w
        .actions(b, is_hb_write)
        .into_iter()
        .find(|(_, x)| matches!(x, Action::WriteHeartbeat { row, .. } if !row.wants.is_empty()))
        .unwrap();
    assert_eq!(wants_beat.0, secs(10.0));
    w.run_until(secs(11.5));
    let asked: Vec<(Duration, ShardRef, Owner)> = w
        .events(a)
        .filter_map(|(t, e)| match e {
            LeaseEvent::HandoffRequested { shard, to } => Some((*t, shard.clone(), to.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].0 <= secs(11.0), "within one heartbeat read");
    assert_eq!(asked[0].2, Owner::new("b", 1));
    // Emitted once, however many reads still show the request.
    w.run_until(secs(15.0));
    assert_eq!(
        w.events(a)
            .filter(|(_, e)| matches!(e, LeaseEvent::HandoffRequested { .. }))
            .count(),
        1
    );
}

#[test]
fn forced_take_after_handoff_timeout_is_conditional_on_observed_token() {
    let mut w = World::with_free_shards(2);
    w.strict = false; // the owner keeps reading until it learns
    let a = w.add_node("a", 1);
    w.run_until(secs(5.0));
    w.nodes[a].auto_transfer = false; // a stuck sink: never hands over
    let b = w.add_node("b", 1);
    w.run_until(secs(5.0));
    let req = w.actions(b, |x| {
        matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
    });
    let Some(LeaseWrite::RequestHandoff { shard, token, .. }) = write_of(&req[0].1).cloned() else {
        unreachable!()
    };
    w.run_until(secs(24.9));
    assert!(
        w.actions(b, is_take).is_empty(),
        "not before 2 x handoff_timeout"
    );
    w.run_until(secs(26.5));
    let takes = w.actions(b, is_take);
    assert_eq!(takes.len(), 1);
    assert!(takes[0].0 >= secs(25.0));
    assert_eq!(
        write_of(&takes[0].1),
        Some(&LeaseWrite::Take {
            shard: shard.clone(),
            expect_owner: Some(Owner::new("a", 1)),
            expect_token: token,
            to: Owner::new("b", 1),
        })
    );
    assert_eq!(w.nodes[b].mgr.token(&shard), Some(token.next()));
    assert!(w.nodes[b].mgr.requests.is_empty());
    // The deposed owner learns at its next conditional write.
    w.with(a, |m, now, mint| {
        m.write_checkpoint(now, &shard, cp(7), mint)
    });
    assert_eq!(
        w.lost(a).last().map(|(_, s, r)| (s.clone(), *r)),
        Some((shard.clone(), LostReason::Taken))
    );
    assert_ne!(w.rows[&shard].checkpoint, Some(cp(7)));
}

#[test]
fn taker_drops_request_when_row_changes_otherwise() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(5.0));
    w.nodes[a].auto_transfer = false;
    let b = w.add_node("b", 1);
    w.run_until(secs(5.0));
    let shard = w.nodes[b].mgr.requests.keys().next().cloned().unwrap();
    w.run_until(secs(6.5));
    assert_eq!(w.beats["b"].wants, vec![shard.clone()]);
    // The owner releases instead (e.g. a fatal shard error).
    w.with(a, |m, now, mint| m.release(now, &shard, Some(cp(3)), mint));
    w.run_until(secs(8.0));
    assert!(w.nodes[b].mgr.requests.is_empty());
    // Free now: taken the plain way, no force.
    assert_eq!(w.nodes[b].mgr.token(&shard), Some(FencingToken(3)));
    assert!(matches!(
        write_of(&w.actions(b, is_take)[0].1),
        Some(LeaseWrite::Take {
            expect_owner: None,
            ..
        })
    ));
    assert_eq!(w.acquired(b)[0].3, Some(cp(3)));
    assert!(w.beats["b"].wants.is_empty());
}

#[test]
fn transfer_refused_reports_taken() {
    let mut w = World::with_free_shards(2);
    w.strict = false;
    let a = w.add_node("a", 1);
    w.run_until(secs(5.0));
    w.nodes[a].auto_transfer = false;
    let _b = w.add_node("b", 1);
    w.run_until(secs(7.0));
    let (shard, to) = w
        .events(a)
        .find_map(|(_, e)| match e {
            LeaseEvent::HandoffRequested { shard, to } => Some((shard.clone(), to.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(to, Owner::new("b", 1));
    // Someone else moved the row meanwhile.
    let row = w.rows.get_mut(&shard).unwrap();
    row.owner = Some(Owner::new("z", 1));
    row.token = row.token.next();
    row.pending_owner = None;
    w.with(a, |m, now, mint| m.transfer(now, &shard, Some(cp(9)), mint));
    assert_eq!(
        w.lost(a).last().map(|(_, s, r)| (s.clone(), *r)),
        Some((shard, LostReason::Taken))
    );
}

/// Kinesin-sim (a joiner shut down within half a second of asking for
/// hand-offs): the rows kept `pending_owner` = the departed taker, which
/// blocks every later request for them. The owner gives such a lease
/// up gracefully (a release: no row is handed to a dead worker) and
/// takes it back, which clears the mark.
#[test]
fn request_of_a_departed_taker_is_cleared_by_the_owner() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(10.0));
    assert_eq!(w.holds(a), 2);
    let b = w.add_node("b", 1);
    let asked: Vec<ShardRef> = w
        .rows
        .values()
        .filter(|r| r.pending_owner == Some(Owner::new("b", 1)))
        .map(|r| r.shard.clone())
        .collect();
    assert_eq!(asked.len(), 1, "b asked at once");
    let shard = asked[0].clone();
    let token = w.rows[&shard].token;
    // b leaves before a has seen the request.
    w.with(b, |m, now, mint| m.shutdown(now, mint));
    assert!(w.nodes[b].mgr.is_shut_down());
    assert_eq!(w.rows[&shard].pending_owner, Some(Owner::new("b", 1)));
    w.run_for(secs(40.0));
    let row = &w.rows[&shard];
    assert_eq!(row.pending_owner, None, "the stale request is cleared");
    assert_eq!(
        row.owner,
        Some(Owner::new("a", 1)),
        "and the lease taken back"
    );
    assert_eq!(row.token, token.next().next());
    assert!(w
        .lost(a)
        .iter()
        .any(|(_, s, r)| *s == shard && *r == LostReason::Released));
    assert!(
        w.actions(a, |x| matches!(
            write_of(x),
            Some(LeaseWrite::Transfer { .. })
        ))
        .is_empty(),
        "nothing handed to the departed worker"
    );
    assert_eq!(w.holds(a), 2);
}

/// Kinesin-sim seed 938 (a second process took the taker's worker id
/// right after it asked): the taker's heartbeat row now belongs to the
/// later incarnation, so the owner forgot the taker, judged it neither
/// live nor expired, and the row kept `pending_owner` = the superseded
/// taker for good, blocking every later hand-off of the lease.
#[test]
fn request_of_a_superseded_taker_is_cleared_by_the_owner() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(10.0));
    assert_eq!(w.holds(a), 2);
    let b = w.add_node("b", 1);
    let shard = w
        .rows
        .values()
        .find(|r| r.pending_owner == Some(Owner::new("b", 1)))
        .map(|r| r.shard.clone())
        .expect("b asked at once");
    // b stops; a later process with its id writes its heartbeat row.
    w.kill(b);
    w.beats.insert(
        "b".into(),
        HeartbeatRow {
            owner: Owner::new("b", 2),
            beat: 1,
            held: 0,
            wants: vec![],
            alive: true,
            streams: vec![],
        },
    );
    w.run_for(secs(40.0));
    let row = &w.rows[&shard];
    assert_eq!(row.pending_owner, None, "the superseded request is cleared");
    assert_eq!(row.owner, Some(Owner::new("a", 1)));
    assert!(
        w.actions(a, |x| matches!(
            write_of(x),
            Some(LeaseWrite::Transfer { .. })
        ))
        .is_empty(),
        "nothing handed to the superseded worker"
    );
}

#[test]
fn a_stale_want_for_a_lease_just_taken_starts_no_handoff() {
    // A taker's heartbeat still lists a shard it asked of the previous
    // owner; we took the lease since (the take cleared `pending_owner`).
    // Acting on the stale want would stop reading, have the transfer
    // refused, read that as "taken" and leave the shard unread.
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(2.0));
    assert_eq!(w.holds(a), 1);
    assert_eq!(w.row(0).pending_owner, None);
    w.beats.insert(
        "b".into(),
        HeartbeatRow {
            owner: Owner::new("b", 1),
            beat: 1,
            held: 0,
            wants: vec![sref(0)],
            alive: true,
            streams: vec![],
        },
    );
    w.run_until(secs(8.0));
    let asked = w
        .events(a)
        .filter(|(_, e)| matches!(e, LeaseEvent::HandoffRequested { .. }))
        .count();
    assert_eq!(
        asked, 0,
        "the row names no pending owner: the want is stale"
    );
    assert!(w.lost(a).is_empty(), "{:?}", w.lost(a));
    assert_eq!(w.holds(a), 1);
}

/// A fault on the actions a predicate matches.
type Handicap = (fn(&Action) -> bool, Fault);

/// Owner `a` holds both of two leases, each fault of `faults` is put on
/// its actions, and `b` joins: after 90 s, what `b` took and when.
fn join_against_a_handicapped_owner(
    faults: &[Handicap],
) -> (World, usize, usize, Vec<(Duration, ShardRef)>) {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(2.0));
    assert_eq!(w.holds(a), 2);
    for (pred, fault) in faults {
        w.rule(a, *pred, *fault, usize::MAX);
    }
    let b = w.add_node("b", 1);
    w.run_until(secs(90.0));
    let takes = w
        .actions(b, is_take)
        .into_iter()
        .filter_map(|(t, a)| write_of(&a).map(|wr| (t, wr.shard().clone())))
        .collect();
    (w, a, b, takes)
}

/// Every take of `takes` came after `a` stopped reading that shard (lost
/// it, or began handing it off).
fn assert_a_stopped_before_each_take(w: &World, a: usize, takes: &[(Duration, ShardRef)]) {
    for (t_take, shard) in takes {
        let stopped = w.events(a).any(|(t, e)| {
            matches!(e, LeaseEvent::Lost { shard: s, .. } | LeaseEvent::HandoffRequested { shard: s, .. } if s == shard)
                && t <= t_take
        });
        assert!(
            stopped,
            "a still read {shard:?} when b took it at {t_take:?}: {:?}",
            w.events(a).collect::<Vec<_>>()
        );
    }
}

/// A live owner whose DynamoDB reads fail while its writes succeed keeps
/// renewing its heartbeat, but cannot see a hand-off request: the taker
/// forces the take `2 * handoff_timeout` after publishing it. The owner
/// must have stopped (fenced) before that, not learn it at its next
/// checkpoint write while both deliver the shard.
#[test]
fn an_owner_blind_to_requests_stops_before_the_forced_take() {
    // From b's start a's reads fail; its heartbeat and lease writes succeed.
    let (w, a, _, takes) = join_against_a_handicapped_owner(&[
        (is_hb_read, Fault::Transient),
        (is_read, Fault::Transient),
    ]);
    assert!(!takes.is_empty(), "b takes its share by force");
    assert_a_stopped_before_each_take(&w, a, &takes);
}

/// The owner sees the taker's want in its heartbeat row, but the lease
/// table read that would confirm it (the row naming the taker pending on
/// the owner's token) hangs: kinesin-sim seed 1621 (a 20,000-seed sweep
/// with stream recreation drawn), a lease read unanswered for 15 s. The
/// taker forces the take `2 * handoff_timeout` after publishing the want;
/// the owner must have stopped reading the shard by then.
#[test]
fn an_owner_whose_confirming_read_hangs_stops_before_the_forced_take() {
    // From b's start a's lease table reads hang; heartbeats work both ways.
    let (w, a, b, takes) = join_against_a_handicapped_owner(&[(is_read, Fault::HoldRequest)]);
    // b gets its share (handed off unconfirmed, or forced), and the
    // harness's strict check found no instant where both read one shard.
    assert_eq!(w.holds(b), 1, "b holds its share");
    assert_a_stopped_before_each_take(&w, a, &takes);
}

/// Kinesin-sim seed 9676 (20,000-seed sweep): the owner's sink was
/// stalled past the hand-off timeout, so the transfer was decided with the
/// checkpoint it had; its first attempt was lost, and the acks that came
/// in before the retry were not carried: the taker redelivered records
/// the application had acknowledged before the lease moved.
#[test]
fn a_retried_transfer_carries_the_acks_that_came_in_before_it() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(10.0));
    assert_eq!(w.holds(a), 2);
    w.rule(
        a,
        |x| matches!(write_of(x), Some(LeaseWrite::Transfer { .. })),
        Fault::Transient,
        1,
    );
    let _b = w.add_node("b", 1);
    // Until a decided the transfer (with cp 100, the harness's) and its
    // first attempt failed (sent again after a retry delay).
    let mut shard = None;
    for _ in 0..400 {
        w.run_for(secs(0.05));
        shard = w
            .actions(a, |x| {
                matches!(write_of(x), Some(LeaseWrite::Transfer { .. }))
            })
            .first()
            .and_then(|(_, x)| write_of(x).map(|wr| wr.shard().clone()));
        if shard.is_some() {
            break;
        }
    }
    let shard = shard.expect("a transfer was sent");
    // The application acknowledges more before the retry.
    w.with(a, |m, _, _| m.fold_final_checkpoint(&shard, cp(150)));
    w.run_for(secs(30.0));
    let row = &w.rows[&shard];
    assert_eq!(row.owner, Some(Owner::new("b", 1)), "handed off");
    assert_eq!(row.checkpoint, Some(cp(150)), "with the acks of meanwhile");
}
