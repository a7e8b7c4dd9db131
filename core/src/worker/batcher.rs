//! Batch cutting: how many of a shard's admitted records the next batch
//! takes, as one pure function, [`next_batch`], of what is queued, the
//! [`Batching`] policy, the `checkpoint_limit` room and the clock.
//! `Worker::deliver` (in `deliver`) calls it and does everything else
//! (ids, permits, events).
//!
//! Rules encoded (the Bento batching policy, SPEC 2 and 3):
//! - A batch takes at most `count` records of one admitted chunk (a batch
//!   never spans chunks, so a chunk's payload is freed once its last batch
//!   is cut).
//! - With `byte_size > 0` it stops before the record that would take it
//!   past `byte_size`; a single record larger than that goes alone.
//! - With a `period`, a batch that is not full (fewer than `count`
//!   records, nothing more queued behind, shard end not seen) waits until
//!   `period` has passed since its oldest record became deliverable;
//!   without one, what is there goes at once.
//! - It takes at most `checkpoint_limit` records, and fits in what the
//!   limit leaves (records delivered and not acknowledged plus its own).
//!   The default policy ([`Batching::whole_read`]) takes what one read
//!   brought in, within that bound.
//! - Counts and sizes are of user records: with KPL a batch may end inside
//!   an aggregated Kinesis record (its checkpoint is then `Within`).
//!
//! Invariants: the answer is `None` or `Some(n)` with `1 <= n <=` the
//! records of the front chunk; the same arguments give the same answer.
//!
//! Imports: configuration and record types only; no worker state.

use std::time::Instant;

use crate::config::Batching;
use crate::io::RecordMeta;

/// What the batcher sees of one shard.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backlog<'a> {
    /// The undelivered records of the oldest admitted chunk.
    pub(super) front: &'a [RecordMeta],
    /// Another admitted chunk is queued behind it.
    pub(super) more_queued: bool,
    /// The reader saw the end of the shard (nothing more will arrive).
    pub(super) end_seen: bool,
    /// When the oldest undelivered record became deliverable.
    pub(super) open_since: Option<Instant>,
}

/// The number of records of `backlog.front` the next batch takes, or
/// `None` when no batch is due at `now`. `room`: the records that still fit
/// in `checkpoint_limit` (`CheckpointTracker::room`; `None` when nothing is
/// pending).
pub(super) fn next_batch(
    backlog: &Backlog<'_>,
    batching: &Batching,
    limit: u32,
    room: Option<u32>,
    now: Instant,
) -> Option<u32> {
    let front = backlog.front;
    if front.is_empty() {
        // A chunk leaves the queue with its last batch.
        return None;
    }
    let available = front.len() as u32;
    // Never more than `checkpoint_limit`: with the default whole-read
    // batching a read of 10,000 records is cut into batches the limit
    // allows.
    let mut n = available.min(batching.count).min(limit.max(1));
    if batching.byte_size > 0 {
        let mut bytes = 0u64;
        let mut k = 0u32;
        for r in &front[..n as usize] {
            if k > 0 && bytes + u64::from(r.bytes) > batching.byte_size {
                break;
            }
            bytes += u64::from(r.bytes);
            k += 1;
        }
        n = k.max(1);
    }
    let full = n == batching.count || n < available || backlog.more_queued || backlog.end_seen;
    if let (false, Some(period)) = (full, batching.period) {
        if backlog.open_since.is_some_and(|since| now < since + period) {
            return None;
        }
    }
    if n == 0 || room.is_some_and(|room| n > room) {
        return None;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::checkpoint::CheckpointTracker;
    use crate::sequence::{ExtSeq, SeqNum};

    /// Whole Kinesis records `1..=n` of `bytes` each.
    fn records(n: u64, bytes: u32) -> Vec<RecordMeta> {
        (1..=n).map(|i| record(i, 0, true, bytes)).collect()
    }

    fn record(seq: u64, sub: u32, last_sub: bool, bytes: u32) -> RecordMeta {
        RecordMeta {
            ext: ExtSeq::new(SeqNum::parse(&seq.to_string()).unwrap(), sub),
            last_sub,
            bytes,
            arrival_ms: 0,
        }
    }

    fn backlog(front: &[RecordMeta]) -> Backlog<'_> {
        Backlog {
            front,
            more_queued: false,
            end_seen: false,
            open_since: None,
        }
    }

    fn count(count: u32) -> Batching {
        Batching {
            count,
            byte_size: 0,
            period: None,
        }
    }

    #[test]
    fn count_caps_a_batch_and_a_partial_batch_goes_at_once_without_period() {
        let now = crate::test_epoch();
        let recs = records(5, 10);
        assert_eq!(
            next_batch(&backlog(&recs), &count(2), 1000, None, now),
            Some(2)
        );
        assert_eq!(
            next_batch(&backlog(&recs), &count(10), 1000, None, now),
            Some(5)
        );
        assert_eq!(
            next_batch(&backlog(&recs[4..]), &count(2), 1000, None, now),
            Some(1)
        );
    }

    #[test]
    fn byte_size_stops_before_the_record_that_would_exceed_it() {
        let now = crate::test_epoch();
        let recs = records(3, 40);
        let policy = Batching {
            byte_size: 100,
            ..count(10)
        };
        assert_eq!(
            next_batch(&backlog(&recs), &policy, 1000, None, now),
            Some(2)
        );
        let exact = Batching {
            byte_size: 120,
            ..policy
        };
        assert_eq!(
            next_batch(&backlog(&recs), &exact, 1000, None, now),
            Some(3)
        );
    }

    #[test]
    fn a_record_larger_than_byte_size_goes_alone() {
        let now = crate::test_epoch();
        let mut recs = records(2, 10);
        recs[0].bytes = 500;
        let policy = Batching {
            byte_size: 100,
            ..count(10)
        };
        assert_eq!(
            next_batch(&backlog(&recs), &policy, 1000, None, now),
            Some(1)
        );
    }

    #[test]
    fn period_holds_a_partial_batch_until_it_elapses() {
        let t0 = crate::test_epoch();
        let recs = records(3, 10);
        let policy = Batching {
            period: Some(Duration::from_secs(1)),
            ..count(10)
        };
        let open = Backlog {
            open_since: Some(t0),
            ..backlog(&recs)
        };
        let half = t0 + Duration::from_millis(500);
        assert_eq!(next_batch(&open, &policy, 1000, None, half), None);
        let at = t0 + Duration::from_secs(1);
        assert_eq!(next_batch(&open, &policy, 1000, None, at), Some(3));
        // Full batches do not wait: count reached, more queued, shard end.
        let full = Batching { count: 2, ..policy };
        assert_eq!(next_batch(&open, &full, 1000, None, half), Some(2));
        let more = Backlog {
            more_queued: true,
            ..open
        };
        assert_eq!(next_batch(&more, &policy, 1000, None, half), Some(3));
        let ended = Backlog {
            end_seen: true,
            ..open
        };
        assert_eq!(next_batch(&ended, &policy, 1000, None, half), Some(3));
    }

    #[test]
    fn checkpoint_limit_room_holds_a_batch_that_does_not_fit() {
        let now = crate::test_epoch();
        let recs = records(4, 10);
        assert_eq!(
            next_batch(&backlog(&recs), &count(4), 1000, Some(3), now),
            None
        );
        assert_eq!(
            next_batch(&backlog(&recs), &count(4), 1000, Some(4), now),
            Some(4)
        );
        assert_eq!(
            next_batch(&backlog(&recs), &count(4), 1000, Some(0), now),
            None
        );
    }

    #[test]
    fn a_batch_never_takes_more_than_checkpoint_limit() {
        let now = crate::test_epoch();
        let recs = records(50, 10);
        let mut tracker = CheckpointTracker::new(None, 10);
        assert_eq!(tracker.room(), None);
        // The default policy: what one read brought in, within the limit.
        let n = next_batch(
            &backlog(&recs),
            &Batching::default(),
            10,
            tracker.room(),
            now,
        );
        assert_eq!(n, Some(10));
        let last = recs[9].ext.clone();
        tracker.deliver(last, true, 10).unwrap();
        assert_eq!(tracker.room(), Some(0));
        assert_eq!(
            next_batch(&backlog(&recs[10..]), &count(100), 10, tracker.room(), now),
            None
        );
    }

    #[test]
    fn a_batch_may_end_inside_a_kpl_aggregate() {
        let now = crate::test_epoch();
        // One aggregated Kinesis record of four user records.
        let recs: Vec<RecordMeta> = (0..4).map(|sub| record(7, sub, sub == 3, 10)).collect();
        let n = next_batch(&backlog(&recs), &count(3), 1000, None, now);
        assert_eq!(n, Some(3), "counts user records, not Kinesis records");
        assert!(!recs[2].last_sub, "the batch ends inside the aggregate");
        let policy = Batching {
            byte_size: 25,
            ..count(10)
        };
        assert_eq!(
            next_batch(&backlog(&recs), &policy, 1000, None, now),
            Some(2)
        );
    }

    #[test]
    fn nothing_to_cut_from_an_empty_front() {
        let now = crate::test_epoch();
        let policy = Batching {
            byte_size: 100,
            ..count(10)
        };
        assert_eq!(next_batch(&backlog(&[]), &policy, 1000, None, now), None);
        assert_eq!(next_batch(&backlog(&[]), &count(1), 1000, None, now), None);
    }
}
