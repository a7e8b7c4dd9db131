//! The balancing rule: free and expired takes, the deficit asked from the
//! most loaded workers, quarantine.

use super::*;

#[test]
fn never_takes_lease_from_itself() {
    let mut w = World::new();
    let me = Owner::new("a", 1);
    for i in 0..2 {
        let mut row = LeaseRow::new(sref(i), vec![], 1);
        row.owner = Some(me.clone());
        row.token = FencingToken(4);
        w.add_row(row);
    }
    let a = w.add_node("a", 1);
    w.run_until(secs(3.0));
    // Rows naming us that we do not hold (no ambiguous take to adopt)
    // are released, then taken like any free row.
    let writes: Vec<LeaseWrite> = w.nodes[a]
        .actions
        .iter()
        .filter_map(|(_, x)| write_of(x).cloned())
        .collect();
    assert!(matches!(
        &writes[0],
        LeaseWrite::Release {
            token: FencingToken(4),
            checkpoint: None,
            ..
        }
    ));
    assert!(matches!(
        &writes[1],
        LeaseWrite::Release {
            token: FencingToken(4),
            ..
        }
    ));
    assert!(writes[2..].iter().all(|x| matches!(
        x,
        LeaseWrite::Take {
            expect_owner: None,
            expect_token: FencingToken(5),
            ..
        }
    )));
    assert_eq!(w.holds(a), 2);
    assert_eq!(w.row(0).token, FencingToken(6));
}

#[test]
fn two_workers_balance_evenly_by_graceful_handoff() {
    let mut w = World::with_free_shards(10);
    let a = w.add_node("a", 1);
    w.run_until(secs(20.0));
    assert_eq!(w.holds(a), 10);
    let b = w.add_node("b", 1);
    let joined = w.t;
    w.run_until(joined + secs(5.0));
    assert_eq!((w.holds(a), w.holds(b)), (5, 5));
    let handed: Vec<ShardRef> = w
        .lost(a)
        .into_iter()
        .filter(|(_, _, r)| *r == LostReason::HandedOff)
        .map(|(_, s, _)| s)
        .collect();
    assert_eq!(handed.len(), 5);
    for (_, shard, token, checkpoint) in w.acquired(b) {
        assert!(handed.contains(&shard));
        // Token: A's token + 1 (the transfer), checkpoint: A's final one.
        assert_eq!(token, FencingToken(2));
        assert_eq!(token, w.rows[&shard].token);
        assert_eq!(checkpoint, Some(cp(100)));
    }
    assert!(w.actions(b, is_take).is_empty(), "no force needed");
    // Stable afterwards.
    w.run_until(joined + secs(200.0));
    assert_eq!((w.holds(a), w.holds(b)), (5, 5));
    assert!(w.nodes[b].mgr.requests.is_empty());
    assert!(w.beats["b"].wants.is_empty());
}

#[test]
fn balancing_takes_whole_deficit_in_one_pass() {
    let mut w = World::with_free_shards(8);
    let a = w.add_node("a", 1);
    w.run_until(secs(10.0));
    assert_eq!(w.holds(a), 8);
    let b = w.add_node("b", 1);
    w.run_until(secs(10.0));
    // All four requests at the same instant, in one pass.
    let reqs = w.actions(b, |x| {
        matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
    });
    assert_eq!(reqs.len(), 4);
    assert!(reqs.iter().all(|(t, _)| *t == secs(10.0)));
    let mut shards = BTreeSet::new();
    for (_, x) in &reqs {
        let Some(LeaseWrite::RequestHandoff {
            shard,
            owner,
            token,
            pending,
        }) = write_of(x)
        else {
            unreachable!()
        };
        assert_eq!(owner, &Owner::new("a", 1));
        assert_eq!(pending, &Owner::new("b", 1));
        assert_eq!(*token, FencingToken(1));
        assert!(shards.insert(shard.clone()), "two requests for one shard");
    }
    w.run_until(secs(14.0));
    assert_eq!((w.holds(a), w.holds(b)), (4, 4));
}

#[test]
fn asks_most_loaded_workers_first() {
    let mut w = World::new();
    for i in 0..12 {
        let mut row = LeaseRow::new(sref(i), vec![], 1);
        row.owner = Some(Owner::new(if i < 7 { "a" } else { "b" }, 1));
        row.token = FencingToken(1);
        w.add_row(row);
    }
    let rows: Vec<LeaseRow> = w.rows.values().cloned().collect();
    let holding = |name: &'static str| {
        let rows = rows.clone();
        move |m: &mut LeaseManager| {
            for r in &rows {
                if r.owner == Some(Owner::new(name, 1)) {
                    m.acquire(r);
                } else {
                    // Keep a and b from balancing among themselves.
                    m.quarantine(&r.shard, m.start + Duration::from_secs(3600));
                }
            }
        }
    };
    let a = w.add_node_with("a", 1, holding("a"));
    let b = w.add_node_with("b", 1, holding("b"));
    w.run_until(secs(5.0));
    assert_eq!((w.holds(a), w.holds(b)), (7, 5));
    let c = w.add_node("c", 1);
    w.run_until(secs(5.0));
    let owners: Vec<Owner> = w
        .actions(c, |x| {
            matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
        })
        .into_iter()
        .map(|(_, x)| match write_of(&x) {
            Some(LeaseWrite::RequestHandoff { owner, .. }) => owner.clone(),
            _ => unreachable!(),
        })
        .collect();
    // target = ceil(12 / 3) = 4: a (7) gives 3, b (5) gives 1; most
    // loaded first, ties in owner order.
    let (oa, ob) = (Owner::new("a", 1), Owner::new("b", 1));
    assert_eq!(owners, vec![oa.clone(), oa.clone(), oa, ob]);
    w.run_until(secs(10.0));
    assert_eq!((w.holds(a), w.holds(b), w.holds(c)), (4, 4, 4));
}

#[test]
fn killed_worker_leases_taken_after_failover_time() {
    let mut w = World::with_free_shards(6);
    let a = w.add_node("a", 1);
    let b = w.add_node("b", 1);
    w.run_until(secs(40.0));
    assert_eq!((w.holds(a), w.holds(b)), (3, 3));
    w.kill(a);
    let killed = w.t;
    w.run_until(killed + secs(9.0));
    assert_eq!(w.holds(b), 3);
    w.run_until(killed + secs(12.0));
    assert_eq!(w.holds(b), 6, "failover within F + 2 s");
    for (t, shard, token, _) in w.acquired(b).into_iter().filter(|(t, ..)| *t > killed) {
        assert!(t >= killed + secs(10.0) - Duration::from_secs(10) / 3);
        assert_eq!(token, w.rows[&shard].token);
    }
}

#[test]
fn quarantined_shard_not_taken_until_expiry() {
    let mut w = World::with_free_shards(1);
    let a = w.add_node("a", 1);
    w.run_until(secs(1.0));
    let until = w.now(a) + Duration::from_secs(45);
    w.with(a, |m, now, mint| {
        m.quarantine(&sref(0), until);
        m.release(now, &sref(0), Some(cp(2)), mint);
    });
    assert_eq!(w.lost(a), vec![(secs(1.0), sref(0), LostReason::Released)]);
    w.run_until(secs(45.0));
    assert_eq!(w.holds(a), 0);
    w.run_until(secs(61.0));
    let acq = w.acquired(a);
    assert_eq!(acq.len(), 2);
    assert_eq!(
        acq[1].0,
        secs(60.0),
        "at the first table read after the quarantine"
    );
    assert_eq!(acq[1].3, Some(cp(2)));
}

#[test]
fn joining_worker_gets_its_floor_share_when_leases_do_not_divide_evenly() {
    // 9 leases on 3 workers is {3,3,3}; a 4th must end with 2 (floor 9/4),
    // the fleet within one lease of itself, and stay so.
    let mut w = World::with_free_shards(9);
    let nodes: Vec<usize> = ["a", "b", "c"].iter().map(|n| w.add_node(n, 1)).collect();
    w.run_until(secs(120.0));
    let held: Vec<usize> = nodes.iter().map(|&n| w.holds(n)).collect();
    assert_eq!(held, [3, 3, 3]);
    let d = w.add_node("d", 1);
    let joined = w.t;
    w.run_until(joined + secs(40.0));
    let mut held: Vec<usize> = nodes.iter().chain([&d]).map(|&n| w.holds(n)).collect();
    assert_eq!(w.holds(d), 2, "{held:?}");
    held.sort_unstable();
    assert_eq!(held, [2, 2, 2, 3]);
    w.run_until(joined + secs(300.0));
    let mut later: Vec<usize> = nodes.iter().chain([&d]).map(|&n| w.holds(n)).collect();
    later.sort_unstable();
    assert_eq!(later, held, "no churn once within one lease");
}

/// The lease rows of `n` free shards of another stream.
fn other_stream_rows(w: &mut World, other: &StreamId, n: usize) -> Vec<ShardRef> {
    (0..n)
        .map(|i| {
            let s = ShardRef::new(other.clone(), ShardId::new(format!("shardId-{i:012}")));
            w.add_row(LeaseRow::new(s.clone(), vec![], 1));
            s
        })
        .collect()
}

#[test]
fn applications_on_different_streams_sharing_a_table_each_read_all_their_shards() {
    // Two single-worker applications, each on its own 4-shard stream, with
    // one lease table (Bento's schema makes this natural): the other
    // application's heartbeat row must not lower our target.
    let mut w = World::with_free_shards(4);
    let payments = StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/payments");
    let theirs = other_stream_rows(&mut w, &payments, 4);
    let a = w.add_node("a", 1);
    let b = w.add_node_config(
        Config::new(
            vec![payments.clone()],
            Owner::new("b", 1),
            Retrieval::polling(),
        ),
        |_| {},
    );
    w.run_until(secs(30.0));
    assert_eq!(w.reading(a), (0..4).map(sref).collect::<BTreeSet<_>>());
    assert_eq!(w.reading(b), theirs.into_iter().collect::<BTreeSet<_>>());
    // Each still sees the other alive (one table, one heartbeat partition).
    assert_eq!(w.nodes[a].mgr.live_workers(), 2);
}

#[test]
fn worker_on_a_subset_of_our_streams_leaves_no_shard_unread() {
    // `a` reads orders (8 shards) and payments (2), `b` payments only: `b`
    // cannot take orders rows, so `a` does not count it for its target
    // and every shard of both streams is read.
    let mut w = World::with_free_shards(8);
    let payments = StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/payments");
    let theirs = other_stream_rows(&mut w, &payments, 2);
    let a = w.add_node_config(
        Config::new(
            vec![stream(), payments.clone()],
            Owner::new("a", 1),
            Retrieval::polling(),
        ),
        |_| {},
    );
    let b = w.add_node_config(
        Config::new(vec![payments], Owner::new("b", 1), Retrieval::polling()),
        |_| {},
    );
    w.run_until(secs(60.0));
    let mut read = w.reading(a);
    read.extend(w.reading(b));
    let all: BTreeSet<ShardRef> = (0..8).map(sref).chain(theirs).collect();
    assert_eq!(read, all);
    assert_eq!(
        w.reading(a).len() + w.reading(b).len(),
        10,
        "no shard read twice"
    );
}

#[test]
fn hand_off_requests_are_capped_so_the_heartbeat_row_stays_small() {
    // 2,400 leases on one worker; a joiner's deficit is 1,200, but it asks
    // for at most MAX_REQUESTS at once (each is listed in its heartbeat row,
    // and a DynamoDB item holds at most 400 KB).
    let mut w = World::with_free_shards(2_400);
    let a = w.add_node("a", 1);
    w.run_until(secs(20.0));
    assert_eq!(w.holds(a), 2_400);
    w.nodes[a].auto_transfer = false;
    let b = w.add_node("b", 1);
    w.run_until(secs(25.0));
    let asked = w
        .actions(b, |x| {
            matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
        })
        .len();
    assert_eq!(asked, super::super::balance::MAX_REQUESTS);
    let widest = w
        .actions(b, is_hb_write)
        .iter()
        .filter_map(|(_, x)| match x {
            Action::WriteHeartbeat { row, .. } => Some(row.wants.len()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert!(widest <= super::super::balance::MAX_REQUESTS, "{widest}");
}

#[test]
fn explicit_shards_are_taken_whatever_the_target_and_nothing_else_is_taken_or_asked() {
    let mut w = World::with_free_shards(6);
    let explicit = |name: &str, shards: &[usize]| {
        let mut c = config(&Owner::new(name, 1));
        c.explicit_shards = shards.iter().map(|i| sref(*i)).collect();
        c
    };
    let a = w.add_node_config(explicit("a", &[0, 1, 2, 3]), |_| {});
    let b = w.add_node_config(explicit("b", &[4]), |_| {});
    w.run_until(secs(60.0));
    // Four leases on a (the balanced target of two workers is three), one
    // on b, and shard 5 read by nobody: no balancing in either direction.
    let held = |w: &World, i: usize| -> BTreeSet<ShardRef> {
        w.nodes[i].mgr.held().map(|(s, _)| s.clone()).collect()
    };
    assert_eq!(held(&w, a), (0..4).map(sref).collect());
    assert_eq!(held(&w, b), [sref(4)].into_iter().collect());
    assert_eq!(w.row(5).owner, None);
    let asks = |x: &Action| matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }));
    assert!(w.actions(a, asks).is_empty() && w.actions(b, asks).is_empty());
    // A listed shard whose owner dies is taken after the failover time.
    w.kill(b);
    let a2 = w.add_node_config(explicit("c", &[4]), |_| {});
    w.run_until(secs(120.0));
    assert_eq!(held(&w, a2), [sref(4)].into_iter().collect());
}
