//! Kinesis polling calls in flight: at most `max_read_calls_in_flight`
//! GetShardIterator and GetRecords calls are out at the driver at once;
//! past it a call waits in a FIFO queue and goes out as answers return.
//!
//! Models: the driver's concurrency, as the core sees it. Each call in
//! flight holds an HTTP connection and, for GetRecords, an answer of up to
//! 10 MB being decoded; a cold start at 1,000 shards otherwise sent 1,000
//! GetShardIterators and then 1,000 GetRecords at once (1,000 keep-alive
//! connections, about 20 MB, `scripts/bench.sh memory-cold`). AWS has no
//! such limit; the budget is ours.
//!
//! Rules: a call waits only behind the limit or behind calls already
//! waiting (FIFO: every shard's call goes out in the order it was made, so
//! no shard is starved); a waiting call keeps its pool reservation (its
//! reader believes it in flight and asks for nothing else); a shard that
//! stops being read withdraws its waiting calls (never sent, so nothing to
//! free at the driver); an answer to a call still waiting (which a correct
//! driver never sends) withdraws it instead of freeing a slot.
//!
//! Invariants (`Worker::check_invariants`): `sent <= limit`; `sent` plus
//! the calls waiting equals the reader ops awaited (`Worker::reader_ops`,
//! which are exactly these two calls).

use std::collections::VecDeque;

use crate::ids::{OpId, ShardRef};
use crate::io::Action;

/// The polling calls in flight and those waiting for a slot.
#[derive(Debug)]
pub(super) struct ReadCalls {
    limit: usize,
    sent: usize,
    waiting: VecDeque<Action>,
}

impl ReadCalls {
    pub(super) fn new(limit: usize) -> Self {
        ReadCalls {
            limit: limit.max(1),
            sent: 0,
            waiting: VecDeque::new(),
        }
    }

    /// True for the actions this module counts.
    fn counted(action: &Action) -> bool {
        matches!(
            action,
            Action::GetShardIterator { .. } | Action::GetRecords { .. }
        )
    }

    fn op_of(action: &Action) -> Option<(OpId, &ShardRef)> {
        match action {
            Action::GetShardIterator { op, shard, .. } | Action::GetRecords { op, shard, .. } => {
                Some((*op, shard))
            }
            _ => None,
        }
    }

    /// Emit a reader's action: a polling call goes out now when a slot is
    /// free and none waits, else it waits its turn; other actions go out.
    /// Returns true when the call had to wait.
    pub(super) fn send(&mut self, actions: &mut VecDeque<Action>, action: Action) -> bool {
        if !Self::counted(&action) {
            actions.push_back(action);
            return false;
        }
        if self.waiting.is_empty() && self.sent < self.limit {
            self.sent += 1;
            actions.push_back(action);
            false
        } else {
            self.waiting.push_back(action);
            true
        }
    }

    /// The answer to `op` arrived: its slot goes to the oldest waiting
    /// call. An answer to a call still waiting withdraws that call.
    pub(super) fn answered(&mut self, actions: &mut VecDeque<Action>, op: OpId) {
        if let Some(i) = self
            .waiting
            .iter()
            .position(|a| Self::op_of(a).is_some_and(|(o, _)| o == op))
        {
            self.waiting.remove(i);
            return;
        }
        self.sent = self.sent.saturating_sub(1);
        while self.sent < self.limit {
            let Some(action) = self.waiting.pop_front() else {
                break;
            };
            self.sent += 1;
            actions.push_back(action);
        }
    }

    /// `shard` is no longer read: its waiting calls are withdrawn. Returns
    /// their ops (the caller forgets their routes).
    pub(super) fn withdraw(&mut self, shard: &ShardRef) -> Vec<OpId> {
        let mut ops = Vec::new();
        self.waiting.retain(|a| match Self::op_of(a) {
            Some((op, s)) if s == shard => {
                ops.push(op);
                false
            }
            _ => true,
        });
        ops
    }

    /// Calls out at the driver.
    pub(super) fn sent(&self) -> usize {
        self.sent
    }

    /// Calls waiting for a slot.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The limit in force.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChunkId, StreamId};
    use crate::io::ShardIterator;
    use crate::sequence::StartPosition;

    fn shard(id: &str) -> ShardRef {
        ShardRef::new(StreamId::new("s"), crate::ids::ShardId::new(id))
    }

    fn iterator_call(op: u64, s: &str) -> Action {
        Action::GetShardIterator {
            op: OpId::from_raw(op),
            shard: shard(s),
            position: StartPosition::TrimHorizon,
        }
    }

    fn records_call(op: u64, s: &str) -> Action {
        Action::GetRecords {
            op: OpId::from_raw(op),
            shard: shard(s),
            iterator: ShardIterator("it".into()),
            limit: 1,
            chunk: ChunkId::from_raw(op),
            skip_through: None,
            range: crate::kpl::HashRange::FULL,
        }
    }

    fn ops(actions: &VecDeque<Action>) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| ReadCalls::op_of(a).map(|(o, _)| o.raw()))
            .collect()
    }

    #[test]
    fn calls_past_the_limit_wait_and_go_out_in_order_as_answers_return() {
        let mut calls = ReadCalls::new(2);
        let mut out = VecDeque::new();
        assert!(!calls.send(&mut out, iterator_call(1, "a")));
        assert!(!calls.send(&mut out, records_call(2, "b")));
        assert!(calls.send(&mut out, iterator_call(3, "c")));
        assert!(calls.send(&mut out, records_call(4, "d")));
        assert_eq!(ops(&out), vec![1, 2]);
        assert_eq!((calls.sent(), calls.waiting()), (2, 2));
        out.clear();
        calls.answered(&mut out, OpId::from_raw(2));
        assert_eq!(ops(&out), vec![3]);
        calls.answered(&mut out, OpId::from_raw(1));
        assert_eq!(ops(&out), vec![3, 4]);
        assert_eq!((calls.sent(), calls.waiting()), (2, 0));
    }

    #[test]
    fn a_call_made_while_others_wait_queues_behind_them_even_with_a_free_slot() {
        let mut calls = ReadCalls::new(1);
        let mut out = VecDeque::new();
        calls.send(&mut out, iterator_call(1, "a"));
        calls.send(&mut out, iterator_call(2, "b"));
        // The slot frees and goes to b; a call made now waits behind none
        // but the limit.
        out.clear();
        calls.answered(&mut out, OpId::from_raw(1));
        assert!(calls.send(&mut out, iterator_call(3, "c")));
        assert_eq!(ops(&out), vec![2]);
    }

    #[test]
    fn other_actions_are_never_held_back() {
        let mut calls = ReadCalls::new(1);
        let mut out = VecDeque::new();
        calls.send(&mut out, iterator_call(1, "a"));
        calls.send(&mut out, iterator_call(2, "b"));
        assert!(!calls.send(
            &mut out,
            Action::Cancel {
                sub: crate::ids::SubId::from_raw(9)
            }
        ));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_stopped_shard_withdraws_its_waiting_calls_and_frees_no_slot() {
        let mut calls = ReadCalls::new(1);
        let mut out = VecDeque::new();
        calls.send(&mut out, iterator_call(1, "a"));
        calls.send(&mut out, iterator_call(2, "b"));
        calls.send(&mut out, records_call(3, "c"));
        assert_eq!(calls.withdraw(&shard("b")), vec![OpId::from_raw(2)]);
        assert_eq!((calls.sent(), calls.waiting()), (1, 1));
        out.clear();
        calls.answered(&mut out, OpId::from_raw(1));
        assert_eq!(ops(&out), vec![3]);
    }

    #[test]
    fn an_answer_to_a_call_still_waiting_withdraws_it_without_freeing_a_slot() {
        let mut calls = ReadCalls::new(1);
        let mut out = VecDeque::new();
        calls.send(&mut out, iterator_call(1, "a"));
        calls.send(&mut out, iterator_call(2, "b"));
        out.clear();
        calls.answered(&mut out, OpId::from_raw(2));
        assert!(out.is_empty());
        assert_eq!((calls.sent(), calls.waiting()), (1, 0));
    }
}
