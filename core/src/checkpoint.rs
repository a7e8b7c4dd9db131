//! Per-shard checkpoint tracking: the contiguous-acknowledgement watermark.
//!
//! One [`CheckpointTracker`] per held shard lease records the batches
//! delivered to the application, in delivery order, and their acks, which may
//! arrive in any order. It encodes SPEC 3:
//! - a shard's checkpoint is the end of the longest contiguously acknowledged
//!   prefix of delivered records;
//! - `checkpoint_limit` (SPEC 2) caps the records delivered but not yet
//!   acknowledged; a single batch larger than the limit is still delivered
//!   when nothing is pending, so it never deadlocks;
//! - `SHARD_END` is the watermark once a closed shard is fully
//!   acknowledged.
//!
//! It holds the watermark only: what is durable (stored in the lease
//! table) is the lease side's, the one copy (`LeaseManager::durable`); the
//! worker writes the watermark when the lease side says it is ahead of what
//! is stored, in flight or queued (`Worker::commit`).
//!
//! KPL: a batch may end inside an aggregated Kinesis record; its end is then
//! `Within(ext)` rather than `After(seq)` (see [`Checkpoint::after_record`]).
//!
//! Invariants (checked by the simulator's oracles and the tests below):
//! - the watermark never covers a delivered record that is not acknowledged;
//! - the watermark never moves backwards;
//! - `pending_records <= limit` unless a single batch is pending;
//! - delivered batch ends strictly increase; a violation is an error value.
//!
//! Costs: deliver, ack and nack are O(1) (a `VecDeque` indexed by
//! `slot - base`); an ack pops the acknowledged prefix, amortised O(1).

use std::collections::VecDeque;

use crate::sequence::{Checkpoint, ExtSeq};

/// Index of a delivered batch within one shard's tracker (minted by the
/// tracker, increasing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u64);

/// A tracker refused an operation; its state did not change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The batch does not start after everything delivered before it (or
    /// after the start checkpoint).
    #[error(
        "batch ending at {last} is not after the previous position {previous:?}: \
         deliver a shard's batches once each, in increasing sequence order, \
         starting after the lease's checkpoint"
    )]
    NotAfterPrevious {
        /// Last record of the refused batch (boxed: a sequence number is
        /// kept inline, and every `Result` of the tracker would carry it).
        last: Box<ExtSeq>,
        /// End of the previously delivered batch, or the start checkpoint.
        previous: Box<Checkpoint>,
    },
    /// Delivering the batch would exceed `checkpoint_limit`.
    #[error(
        "delivering {records} records with {pending} unacknowledged would exceed \
         checkpoint_limit {limit}: check can_deliver first and wait for acks"
    )]
    OverLimit {
        /// Records of the refused batch.
        records: u32,
        /// Records delivered and not yet acknowledged.
        pending: u32,
        /// The configured `checkpoint_limit`.
        limit: u32,
    },
    /// The shard end was marked (or the lease started at `SHARD_END`).
    #[error("shard already ended: nothing can be delivered after the shard end")]
    ShardEnded,
    /// The slot was never minted by this tracker.
    #[error("unknown batch {0:?}: ack or nack only slots returned by this shard's deliver")]
    UnknownSlot(Slot),
    /// The slot was already acknowledged.
    #[error("batch {0:?} already acknowledged: ack each batch once, and never nack after an ack")]
    AlreadyAcked(Slot),
}

/// One delivered batch.
#[derive(Clone, Debug)]
struct Batch {
    /// The checkpoint once this batch and all before it are acknowledged.
    end: Checkpoint,
    records: u32,
    acked: bool,
}

/// Contiguous-ack watermark of one shard (see the module docs).
#[derive(Clone, Debug)]
pub struct CheckpointTracker {
    limit: u32,
    /// Slot of `batches.front()`; every lower slot was acknowledged.
    base: u64,
    /// Delivered batches from the first unacknowledged one on.
    batches: VecDeque<Batch>,
    pending_records: u32,
    pending_batches: usize,
    watermark: Option<Checkpoint>,
    shard_end: bool,
}

impl CheckpointTracker {
    /// `start`: checkpoint the lease had when acquired (None = none); it is
    /// the first watermark. `limit`: `checkpoint_limit`
    /// (max unacknowledged records); 0 is raised to 1.
    pub fn new(start: Option<Checkpoint>, limit: u32) -> Self {
        CheckpointTracker {
            limit: limit.max(1),
            base: 0,
            batches: VecDeque::new(),
            pending_records: 0,
            pending_batches: 0,
            shard_end: start == Some(Checkpoint::ShardEnd),
            watermark: start,
        }
    }

    /// A batch of `records` may be delivered when
    /// `pending + records <= limit`, or when nothing is pending (a batch
    /// larger than the limit never deadlocks).
    #[inline]
    pub fn can_deliver(&self, records: u32) -> bool {
        self.pending_records == 0
            || u64::from(self.pending_records) + u64::from(records) <= u64::from(self.limit)
    }

    /// Records that still fit in the limit: `None` when nothing is pending
    /// (a batch of any size may go), else `limit - pending` (0 while a
    /// single batch larger than the limit is pending). For `records >= 1`,
    /// [`Self::can_deliver`] is `room().is_none_or(|room| records <= room)`.
    pub(crate) fn room(&self) -> Option<u32> {
        (self.pending_records > 0).then(|| self.limit.saturating_sub(self.pending_records))
    }

    /// Whether `ext` is at or before the end of the last delivered batch (or
    /// the start checkpoint): such a record was delivered already (a re-read
    /// overlapping what was read) and cannot start a batch.
    pub(crate) fn covers(&self, ext: &ExtSeq) -> bool {
        self.batches
            .back()
            .map(|b| &b.end)
            .or(self.watermark.as_ref())
            .is_some_and(|previous| previous.covers(ext))
    }

    /// Record a delivered batch: `last` = ExtSeq of its last user record,
    /// `complete` = that record ended its Kinesis record.
    ///
    /// Errors (nothing changes): `last` not after the previous batch or the
    /// start checkpoint, the limit would be exceeded ([`Self::can_deliver`]
    /// is false), or the shard end was marked.
    pub fn deliver(
        &mut self,
        last: ExtSeq,
        complete: bool,
        records: u32,
    ) -> Result<Slot, TrackerError> {
        let previous = self
            .batches
            .back()
            .map(|b| &b.end)
            .or(self.watermark.as_ref());
        if self.shard_end || previous == Some(&Checkpoint::ShardEnd) {
            return Err(TrackerError::ShardEnded);
        }
        if let Some(previous) = previous {
            if previous.covers(&last) {
                return Err(TrackerError::NotAfterPrevious {
                    last: Box::new(last),
                    previous: Box::new(previous.clone()),
                });
            }
        }
        if !self.can_deliver(records) {
            return Err(TrackerError::OverLimit {
                records,
                pending: self.pending_records,
                limit: self.limit,
            });
        }
        let slot = Slot(self.base + self.batches.len() as u64);
        self.batches.push_back(Batch {
            end: Checkpoint::after_record(last, complete),
            records,
            acked: false,
        });
        // Cannot overflow: can_deliver bounds it by the limit or by one batch.
        self.pending_records += records;
        self.pending_batches += 1;
        Ok(slot)
    }

    /// Acknowledge a batch (any order). Returns its number of records.
    /// Unknown or already acknowledged slot: error, nothing changes.
    pub fn ack(&mut self, slot: Slot) -> Result<u32, TrackerError> {
        let index = self.unacked_index(slot)?;
        let batch = &mut self.batches[index];
        batch.acked = true;
        let records = batch.records;
        self.pending_records -= records;
        self.pending_batches -= 1;
        if index == 0 {
            self.advance();
        }
        Ok(records)
    }

    /// Negative acknowledgement: the batch stays pending (the caller
    /// redelivers it from its memory, under the same slot) and the watermark
    /// stays put. Returns its number of records. Unknown or already
    /// acknowledged slot: error.
    pub fn nack(&mut self, slot: Slot) -> Result<u32, TrackerError> {
        let index = self.unacked_index(slot)?;
        Ok(self.batches[index].records)
    }

    /// End of the longest contiguously acknowledged prefix (or the start
    /// checkpoint; `ShardEnd` once a marked shard end is drained). Never
    /// moves backwards; never covers an unacknowledged record.
    pub fn watermark(&self) -> Option<&Checkpoint> {
        self.watermark.as_ref()
    }

    /// Records delivered and not yet acknowledged.
    pub fn pending_records(&self) -> u32 {
        self.pending_records
    }

    /// Batches delivered and not yet acknowledged.
    pub fn pending_batches(&self) -> usize {
        self.pending_batches
    }

    /// The configured `checkpoint_limit` (at least 1).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The shard reached its end and everything received was delivered:
    /// once all is acknowledged, the watermark becomes `ShardEnd`. Further deliveries are refused. Idempotent.
    pub fn mark_shard_end(&mut self) {
        self.shard_end = true;
        self.advance();
    }

    /// True when the shard end was marked and nothing is pending (ready for
    /// `SHARD_END`).
    pub fn is_drained(&self) -> bool {
        self.shard_end && self.batches.is_empty()
    }

    /// Index in `batches` of a delivered, unacknowledged slot.
    #[inline]
    fn unacked_index(&self, slot: Slot) -> Result<usize, TrackerError> {
        let Some(offset) = slot.0.checked_sub(self.base) else {
            return Err(TrackerError::AlreadyAcked(slot));
        };
        match usize::try_from(offset)
            .ok()
            .and_then(|i| self.batches.get(i).map(|b| (i, b)))
        {
            Some((_, batch)) if batch.acked => Err(TrackerError::AlreadyAcked(slot)),
            Some((index, _)) => Ok(index),
            None => Err(TrackerError::UnknownSlot(slot)),
        }
    }

    /// Pop the acknowledged prefix into the watermark.
    #[inline]
    fn advance(&mut self) {
        while self.batches.front().is_some_and(|b| b.acked) {
            if let Some(batch) = self.batches.pop_front() {
                self.watermark = Some(batch.end);
                self.base += 1;
            }
        }
        if self.shard_end && self.batches.is_empty() {
            self.watermark = Some(Checkpoint::ShardEnd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::sequence::SeqNum;

    /// A realistic 56-digit sequence number, increasing with `n`.
    fn seq(n: u64) -> SeqNum {
        SeqNum::parse(&format!("4959{n:052}")).unwrap()
    }

    fn ext(n: u64, sub: u32) -> ExtSeq {
        ExtSeq::new(seq(n), sub)
    }

    fn after(n: u64) -> Checkpoint {
        Checkpoint::After(seq(n))
    }

    #[test]
    fn checkpoint_never_covers_unacked_record() {
        let mut t = CheckpointTracker::new(None, 100);
        let s1 = t.deliver(ext(1, 0), true, 1).unwrap();
        let s2 = t.deliver(ext(2, 0), true, 1).unwrap();
        let s3 = t.deliver(ext(3, 0), true, 1).unwrap();
        assert_eq!(t.ack(s3), Ok(1));
        assert_eq!(
            t.watermark(),
            None,
            "3 acked alone must not move the watermark"
        );
        assert_eq!(t.ack(s1), Ok(1));
        assert_eq!(t.watermark(), Some(&after(1)));
        assert!(!t.watermark().unwrap().covers(&ext(2, 0)));
        assert_eq!(t.ack(s2), Ok(1));
        assert_eq!(t.watermark(), Some(&after(3)), "gap filled: jumps to 3");
        assert_eq!((t.pending_records(), t.pending_batches()), (0, 0));
    }

    #[test]
    fn watermark_monotonic_under_random_acks() {
        let mut rng = Rng::new(0x5EED);
        for _ in 0..100 {
            let mut t = CheckpointTracker::new(Some(after(0)), 64);
            let mut next = 1u64;
            let mut unacked: Vec<(Slot, u64)> = Vec::new();
            let mut previous = t.watermark().cloned();
            for _ in 0..300 {
                let records = 1 + rng.below(8) as u32;
                if rng.chance(0.5) && t.can_deliver(records) {
                    let last = next + u64::from(records) - 1;
                    let slot = t.deliver(ext(last, 0), true, records).unwrap();
                    unacked.push((slot, next));
                    next = last + 1;
                } else if !unacked.is_empty() {
                    let i = rng.below(unacked.len() as u64) as usize;
                    let (slot, _) = unacked.swap_remove(i);
                    t.ack(slot).unwrap();
                }
                let w = t.watermark().cloned();
                assert!(w >= previous, "watermark moved back: {previous:?} -> {w:?}");
                for (_, first) in &unacked {
                    assert!(!w.as_ref().unwrap().covers(&ext(*first, 0)));
                }
                assert!(t.pending_records() <= t.limit() || t.pending_batches() == 1);
                previous = w;
            }
        }
    }

    #[test]
    fn oversized_batch_admitted_when_nothing_pending() {
        let mut t = CheckpointTracker::new(None, 10);
        assert!(t.can_deliver(500));
        let big = t.deliver(ext(500, 0), true, 500).unwrap();
        assert_eq!(t.pending_records(), 500);
        assert!(!t.can_deliver(1), "nothing joins an oversized batch");
        t.ack(big).unwrap();
        assert!(t.can_deliver(10));
    }

    #[test]
    fn checkpoint_limit_respected() {
        let mut t = CheckpointTracker::new(None, 10);
        t.deliver(ext(6, 0), true, 6).unwrap();
        assert!(t.can_deliver(4));
        assert!(!t.can_deliver(5));
        assert_eq!(
            t.deliver(ext(11, 0), true, 5),
            Err(TrackerError::OverLimit {
                records: 5,
                pending: 6,
                limit: 10
            })
        );
        assert_eq!((t.pending_records(), t.pending_batches()), (6, 1));
        t.deliver(ext(10, 0), true, 4).unwrap();
        assert!(!t.can_deliver(1));
    }

    #[test]
    fn nack_keeps_watermark_and_batch_pending() {
        let mut t = CheckpointTracker::new(None, 100);
        let s1 = t.deliver(ext(1, 0), true, 2).unwrap();
        let s2 = t.deliver(ext(2, 0), true, 3).unwrap();
        assert_eq!(t.nack(s1), Ok(2));
        t.ack(s2).unwrap();
        assert_eq!(t.watermark(), None);
        assert_eq!((t.pending_records(), t.pending_batches()), (2, 1));
        // Redelivered and acked under the same slot.
        assert_eq!(t.ack(s1), Ok(2));
        assert_eq!(t.watermark(), Some(&after(2)));
    }

    #[test]
    fn start_checkpoint_is_the_first_watermark_until_an_ack_moves_it() {
        let mut t = CheckpointTracker::new(Some(after(0)), 100);
        assert_eq!(t.watermark(), Some(&after(0)));
        let s1 = t.deliver(ext(1, 0), true, 1).unwrap();
        assert_eq!(t.watermark(), Some(&after(0)), "delivered but unacked");
        t.ack(s1).unwrap();
        assert_eq!(t.watermark(), Some(&after(1)));
    }

    #[test]
    fn shard_end_is_the_watermark_after_drain() {
        let mut t = CheckpointTracker::new(None, 100);
        let s1 = t.deliver(ext(1, 0), true, 1).unwrap();
        let s2 = t.deliver(ext(2, 0), true, 1).unwrap();
        t.mark_shard_end();
        assert!(!t.is_drained());
        t.ack(s2).unwrap();
        assert_eq!(t.watermark(), None);
        t.ack(s1).unwrap();
        assert!(t.is_drained());
        assert_eq!(t.watermark(), Some(&Checkpoint::ShardEnd));
        assert_eq!(t.deliver(ext(3, 0), true, 1), Err(TrackerError::ShardEnded));
    }

    /// cargo-mutants survivor (`||` -> `&&` in `deliver`): the shard end
    /// refuses deliveries at once, not only after the pending batches
    /// were acknowledged.
    #[test]
    fn deliver_refused_after_shard_end_while_batches_pending() {
        let mut t = CheckpointTracker::new(None, 100);
        t.deliver(ext(1, 0), true, 1).unwrap();
        t.mark_shard_end();
        assert_eq!(t.deliver(ext(2, 0), true, 1), Err(TrackerError::ShardEnded));
        assert_eq!(t.pending_records(), 1, "nothing changed");
    }

    #[test]
    fn empty_shard_end_is_drained_immediately() {
        let mut t = CheckpointTracker::new(Some(after(5)), 100);
        t.mark_shard_end();
        assert!(t.is_drained());
        assert_eq!(t.watermark(), Some(&Checkpoint::ShardEnd));
    }

    #[test]
    fn lease_starting_at_shard_end_is_drained_and_refuses_delivery() {
        let mut t = CheckpointTracker::new(Some(Checkpoint::ShardEnd), 100);
        assert!(t.is_drained());
        assert_eq!(t.watermark(), Some(&Checkpoint::ShardEnd));
        assert_eq!(t.deliver(ext(1, 0), true, 1), Err(TrackerError::ShardEnded));
    }

    #[test]
    fn kpl_partial_record_checkpoints_within_then_after() {
        let mut t = CheckpointTracker::new(None, 100);
        // Aggregated record 7 with sub-records 0..=4, delivered 3 + 2.
        let a = t.deliver(ext(7, 2), false, 3).unwrap();
        let b = t.deliver(ext(7, 4), true, 2).unwrap();
        t.ack(a).unwrap();
        assert_eq!(t.watermark(), Some(&Checkpoint::Within(ext(7, 2))));
        assert!(!t.watermark().unwrap().covers(&ext(7, 3)));
        t.ack(b).unwrap();
        assert_eq!(t.watermark(), Some(&after(7)));
    }

    #[test]
    fn delivery_not_after_previous_is_error() {
        let mut t = CheckpointTracker::new(Some(Checkpoint::Within(ext(3, 1))), 100);
        // Covered by the start checkpoint.
        assert!(matches!(
            t.deliver(ext(3, 1), false, 1),
            Err(TrackerError::NotAfterPrevious { .. })
        ));
        t.deliver(ext(3, 2), true, 1).unwrap();
        // Same record again, and a sub-record of a record already complete.
        assert!(t.deliver(ext(3, 2), true, 1).is_err());
        assert!(t.deliver(ext(3, 9), true, 1).is_err());
        assert!(t.deliver(ext(2, 0), true, 1).is_err());
        assert_eq!(t.pending_batches(), 1, "refusals change nothing");
        t.deliver(ext(4, 0), true, 1).unwrap();
    }

    #[test]
    fn unknown_or_double_ack_is_error() {
        let mut t = CheckpointTracker::new(None, 100);
        let s1 = t.deliver(ext(1, 0), true, 1).unwrap();
        let s2 = t.deliver(ext(2, 0), true, 1).unwrap();
        let forged = Slot(7);
        assert_eq!(t.ack(forged), Err(TrackerError::UnknownSlot(forged)));
        assert_eq!(t.nack(forged), Err(TrackerError::UnknownSlot(forged)));
        t.ack(s2).unwrap();
        assert_eq!(
            t.ack(s2),
            Err(TrackerError::AlreadyAcked(s2)),
            "acked, not popped"
        );
        t.ack(s1).unwrap();
        assert_eq!(
            t.ack(s1),
            Err(TrackerError::AlreadyAcked(s1)),
            "acked and popped"
        );
        assert_eq!(t.nack(s1), Err(TrackerError::AlreadyAcked(s1)));
        assert_eq!((t.pending_records(), t.pending_batches()), (0, 0));
        assert_eq!(t.watermark(), Some(&after(2)));
    }

    #[test]
    fn slots_increase_across_acks() {
        let mut t = CheckpointTracker::new(None, 100);
        let mut last = None;
        for n in 1..50 {
            let slot = t.deliver(ext(n, 0), true, 1).unwrap();
            assert!(last < Some(slot));
            last = Some(slot);
            t.ack(slot).unwrap();
        }
    }

    #[test]
    fn room_agrees_with_can_deliver() {
        let mut t = CheckpointTracker::new(None, 5);
        let check = |t: &CheckpointTracker| {
            for records in 1..=8 {
                let fits = t.room().is_none_or(|room| records <= room);
                assert_eq!(fits, t.can_deliver(records), "{records} records");
            }
        };
        check(&t);
        let a = t.deliver(ext(1, 0), true, 3).unwrap();
        check(&t);
        t.ack(a).unwrap();
        t.deliver(ext(2, 0), true, 7).unwrap();
        assert_eq!(t.room(), Some(0), "a single oversized batch pending");
        check(&t);
    }
}
