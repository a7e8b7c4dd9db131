//! Shutdown: releases, the final reads and the final heartbeat.

use super::*;

#[test]
fn shutdown_releases_then_writes_final_heartbeat_not_alive() {
    let mut w = World::with_free_shards(3);
    let a = w.add_node("a", 1);
    let b = w.add_node("b", 1);
    w.run_until(secs(40.0));
    assert_eq!(w.holds(a), 2);
    let lost_before = w.lost(a).len();
    w.with(a, |m, now, mint| m.shutdown(now, mint));
    w.run_until(secs(41.0));
    assert!(!w.nodes[a].mgr.is_shut_down());
    assert!(w.beats["a"].alive, "not before every lease is released");
    let held: Vec<ShardRef> = w.reading(a).into_iter().collect();
    for s in &held {
        w.with(a, |m, now, mint| m.release(now, s, Some(cp(50)), mint));
    }
    assert!(w.nodes[a].mgr.is_shut_down());
    assert!(!w.beats["a"].alive);
    assert_eq!(w.nodes[a].mgr.poll_timeout(), None);
    let lost = w.lost(a);
    assert_eq!(lost.len(), lost_before + 2);
    assert!(lost[lost_before..]
        .iter()
        .all(|(_, _, r)| *r == LostReason::Released));
    // B sees alive = false and takes them within about a second.
    let t = w.t;
    w.run_until(t + secs(1.5));
    assert_eq!(w.holds(b), 3);
    assert!(w
        .acquired(b)
        .iter()
        .filter(|(t2, ..)| *t2 > t)
        .all(|(.., c)| *c == Some(cp(50))));
}

/// Kinesin-sim swarm seed 99: a worker that shuts down while a
/// hand-off it asked for completes must not leave the row owned by its
/// dead incarnation.
#[test]
fn shutdown_releases_lease_transferred_during_shutdown() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(10.0));
    assert_eq!(w.holds(a), 2);
    w.nodes[a].auto_transfer = false;
    let b = w.add_node("b", 1);
    w.run_for(secs(2.0));
    let asked: Vec<ShardRef> = w
        .events(a)
        .filter_map(|(_, e)| match e {
            LeaseEvent::HandoffRequested { shard, to } if to.worker.as_ref() == "b" => {
                Some(shard.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "b asked for one lease");
    let shard = asked[0].clone();
    let token = w.rows[&shard].token;
    // The owner transfers; at the same instant b starts shutting down,
    // before any read of b has shown it the transfer.
    w.with(a, |m, now, mint| m.transfer(now, &shard, Some(cp(7)), mint));
    assert_eq!(w.rows[&shard].owner, Some(Owner::new("b", 1)));
    assert_eq!(w.holds(b), 0);
    w.rule(b, is_read, Fault::HoldAnswer, 1);
    w.with(b, |m, now, mint| m.shutdown(now, mint));
    // The final heartbeat waits for that read.
    assert!(!w.nodes[b].mgr.is_shut_down());
    assert!(w.beats["b"].alive);
    w.deliver(b);
    assert!(w.nodes[b].mgr.is_shut_down());
    assert!(!w.beats["b"].alive);
    let row = &w.rows[&shard];
    assert_eq!(row.owner, None, "released, not left to a dead incarnation");
    assert_eq!(row.token, token.next().next(), "transfer then release");
    assert_eq!(row.checkpoint, Some(cp(7)), "the final checkpoint stays");
    let releases = w.actions(b, is_release);
    assert_eq!(releases.len(), 1);
    assert_eq!(
        write_of(&releases[0].1).map(LeaseWrite::shard),
        Some(&shard)
    );
    // Nothing else names b afterwards.
    assert!(w
        .rows
        .values()
        .all(|r| r.owner.as_ref().is_none_or(|o| o.worker.as_ref() != "b")));
}

#[test]
fn shutdown_completes_when_the_final_read_fails() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(10.0));
    w.nodes[a].auto_transfer = false;
    let b = w.add_node("b", 1);
    w.run_for(secs(2.0));
    assert!(!w.nodes[b].mgr.requests.is_empty());
    w.rule(b, is_read, Fault::Transient, 1);
    w.with(b, |m, now, mint| m.shutdown(now, mint));
    assert!(w.nodes[b].mgr.is_shut_down());
    assert!(!w.beats["b"].alive);
}

/// Kinesin-sim swarm seed 2600: a worker cut off from DynamoDB while
/// shutting down self-fenced with its final releases still queued, and
/// finished with the rows owned by its dead incarnation.
#[test]
fn fenced_on_the_way_out_still_releases_its_rows() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(10.0));
    assert_eq!(w.holds(a), 2);
    // Heartbeats stop renewing; the worker is still waiting for its
    // in-flight acks (no release asked yet) when the fence comes.
    w.rule(a, is_hb_write, Fault::Transient, usize::MAX);
    w.with(a, |m, now, mint| m.shutdown(now, mint));
    w.run_for(secs(15.0));
    assert!(w.nodes[a].mgr.is_fenced());
    assert!(w.nodes[a].mgr.is_shut_down());
    assert!(w
        .lost(a)
        .iter()
        .all(|(_, _, r)| *r == LostReason::SelfFenced));
    for i in 0..2 {
        assert_eq!(w.row(i).owner, None, "shard {i} released on the way out");
    }
}

#[test]
fn shutdown_takes_nothing_new() {
    let mut w = World::with_free_shards(2);
    let a = w.add_node("a", 1);
    w.run_until(secs(0.5));
    w.with(a, |m, now, mint| {
        m.shutdown(now, mint);
    });
    for s in w.reading(a) {
        w.with(a, |m, now, mint| m.release(now, &s, None, mint));
    }
    assert!(w.nodes[a].mgr.is_shut_down());
    let takes = w.actions(a, is_take).len();
    w.run_until(secs(100.0));
    assert_eq!(w.actions(a, is_take).len(), takes);
}
