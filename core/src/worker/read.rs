//! Reading: starting and stopping a shard's reader, draining what readers
//! and EFO registrations emit, and routing answers back to the reader that
//! asked. Routing is one rule: after every action a reader emits, what it
//! now awaits (`ShardReader::awaits`) is recorded for its shard
//! (`Worker::route_awaited`); an answer goes to the shard recorded for its
//! op or subscription (`route_input`). The worker never looks inside the
//! actions.
//!
//! Rules encoded: a reader starts at the lease's checkpoint, else at
//! `start_from` (LATEST anchored at the lease row's creation time, so a
//! shard is read from the same point whoever takes it first); a stopped
//! reader's SubscribeToShard spacing is carried to the next reader of the
//! same shard (AWS: 1 s between calls, 5 s after ResourceInUse); what was
//! received but not delivered is dropped at stop (the next reader reads it
//! again from the checkpoint, SPEC 3); a reader that fails fatally gives
//! its lease up and the shard is quarantined for `QUARANTINE` (SPEC 5),
//! except a ResourceNotFound on a shard that a ListShards sent after it
//! no longer lists: that shard is gone (trimmed past retention, or of a
//! deleted stream) and ends like a shard read to its end (KCL does the
//! same), so its row reaches SHARD_END and its children start;
//! rows of an earlier stream of the same name (the lease view judges them
//! against each listing, `StreamView::earlier_stream`) stop the worker
//! with an error saying which rows to delete (`Event::Fatal`) instead of
//! applying them to the new stream;
//! an EFO reader started before its consumer ARN is known gets it as soon
//! as the registration has it.
//!
//! Invariants: every reader op and subscription in flight is routed to the
//! shard that sent it, and an answer nobody takes frees its chunk
//! ([`Event::ChunkDone`]); a stopped shard waits for no pool room and has
//! no subscription routed to it.
//!
//! Imports: the table (`shards`), `Phase` (a failed reader leaves); chunks
//! go to `deliver` through `Worker::arrived`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::lifecycle::Phase;
use super::shards::{ShardState, ShardTable, StateSlot};
use super::Worker;
use crate::checkpoint::CheckpointTracker;
use crate::config::{Retrieval, StartFrom};
use crate::ids::{ChunkId, FencingToken, OpId, ShardRef, StreamId, SubId};
use crate::io::{Action, ErrorClass, Event, Input, ShardInfo};
use crate::sequence::{Checkpoint, StartPosition};
use crate::shard::{Asked, ReaderEvent, ReaderMode, ShardReader};
use crate::timer::Timer;

/// How long a shard that failed fatally is not taken again by this worker.
const QUARANTINE: Duration = Duration::from_secs(300);

/// How long a stopped reader's subscription is remembered for its answer:
/// past the call deadline (15 s) an answer can no longer come.
pub(super) const STOPPED_SUB_MEMORY: Duration = Duration::from_secs(30);

impl Worker {
    /// Free the payload of an input nobody will use.
    pub(super) fn free_stale_chunk(&mut self, input: &Input) {
        match input {
            Input::SubscriptionEvent { chunk, .. } => {
                self.events.push_back(Event::ChunkDone { chunk: *chunk })
            }
            Input::Iterator { op, .. } | Input::Records { op, .. } => {
                if let Some((_, Some(chunk))) = self.op_answered(*op) {
                    self.events.push_back(Event::ChunkDone { chunk });
                }
            }
            _ => {}
        }
    }

    /// The answer to reader op `op` arrived: its route is forgotten (and
    /// returned) and its call's slot goes to the next waiting call.
    pub(super) fn op_answered(&mut self, op: OpId) -> Option<(ShardRef, Option<ChunkId>)> {
        let routed = self.reader_ops.remove(&op);
        if routed.is_some() {
            self.read_calls.answered(&mut self.actions, op);
        }
        routed
    }

    /// Route a reader input to its shard; touched when the reader took it.
    pub(super) fn route_input(
        shards: &mut ShardTable,
        dirty: &mut Vec<StateSlot>,
        now: Instant,
        shard: &ShardRef,
        input: &mut Input,
    ) -> bool {
        let Some(slot) = shards.slot_of(shard) else {
            return false;
        };
        let Some((_, st)) = shards.at_mut(slot) else {
            return false;
        };
        let consumed = st
            .reader
            .as_mut()
            .is_some_and(|r| r.handle_input(now, input));
        if consumed {
            Self::mark_touched(dirty, slot, st);
        }
        consumed
    }

    pub(super) fn start_reading(
        &mut self,
        now: Instant,
        shard: ShardRef,
        token: FencingToken,
        checkpoint: Option<Checkpoint>,
        created_ms: u64,
    ) {
        if self.shutting_down {
            // Taken while we were shutting down: give it back at once.
            self.lease.release(now, &shard, checkpoint, &mut self.mint);
            return;
        }
        if let Some(old) = self.shards.get(&shard) {
            // A re-acquisition while we still read it would be two readers.
            debug_assert!(
                false,
                "{shard:?} acquired while read (token {:?})",
                old.token
            );
            return;
        }
        let start = match checkpoint.as_ref().and_then(|c| c.resume_position()) {
            Some(p) => p,
            None => match self.config.start_from {
                StartFrom::Oldest => StartPosition::TrimHorizon,
                StartFrom::Latest => StartPosition::AtTimestamp {
                    unix_ms: created_ms,
                },
                StartFrom::Timestamp { unix_ms } => StartPosition::AtTimestamp { unix_ms },
            },
        };
        let consumer_arn = self
            .registrations
            .get(&shard.stream)
            .and_then(|r| r.arn().map(str::to_owned));
        let mode = ReaderMode::from_config(&self.config, consumer_arn);
        let seed = self.rng.next_u64();
        let start_event = start.clone();
        let mut reader = ShardReader::new(shard.clone(), start, mode, seed, now);
        if let Some((last, riu)) = self.spacing.remove(&shard) {
            reader.carry_subscribe_spacing(now, last, riu);
        }
        if let Some(ending) = self.closed.get(&shard) {
            reader.mark_closed(ending.clone());
        }
        if let Some(range) = self.ranges.get(&shard) {
            reader.set_range(*range);
        }
        let ended = matches!(checkpoint, Some(Checkpoint::ShardEnd));
        let tracker = CheckpointTracker::new(checkpoint, self.config.checkpoint_limit);
        self.events.push_back(Event::LeaseAcquired {
            shard: shard.clone(),
            token,
            start: start_event,
        });
        let slot = self.shards.insert(
            shard.clone(),
            ShardState {
                token,
                reader: Some(reader),
                tracker,
                queue: VecDeque::new(),
                parked: None,
                inflight: BTreeSet::new(),
                redeliver: VecDeque::new(),
                phase: Phase::Reading,
                end_seen: ended,
                finishing: false,
                millis_behind: 0,
                open_since: None,
                deadline: None,
                holds_credit: false,
                reservation: None,
                touched: false,
                fresh: true,
                listed: false,
            },
        );
        self.fresh += 1;
        if matches!(self.config.retrieval, Retrieval::Efo { .. })
            && self
                .shards
                .get(&shard)
                .and_then(|s| s.reader.as_ref())
                .is_some_and(|r| r.consumer_arn().is_none())
        {
            self.awaiting_arn.insert(shard.clone());
        }
        self.touch_slot(slot);
        if ended {
            self.stop_reading(&shard);
        }
    }

    /// Stop the reader of a shard and drop what was received but not
    /// delivered (the next reader reads it again from the checkpoint).
    pub(super) fn stop_reading(&mut self, shard: &ShardRef) {
        let Some(slot) = self.shards.slot_of(shard) else {
            return;
        };
        let Some((_, st)) = self.shards.at_mut(slot) else {
            return;
        };
        Self::mark_touched(&mut self.dirty, slot, st);
        if std::mem::take(&mut st.fresh) {
            self.fresh -= 1;
        }
        if let Some(mut reader) = st.reader.take() {
            if let Some(a) = reader.stop() {
                self.actions.push_back(a);
            }
            let (last, riu) = reader.subscribe_spacing();
            if last.is_some() || riu.is_some() {
                // Only spacing that can still matter is kept (bounded map).
                let now = self.now;
                self.spacing.retain(|_, (l, r)| {
                    l.is_some_and(|t| now < t + Duration::from_secs(1))
                        || r.is_some_and(|t| now < t + Duration::from_secs(5))
                });
                self.spacing.insert(shard.clone(), (last, riu));
            }
        }
        if let Some((_, permit)) = st.reservation.take() {
            // The read in flight is abandoned: a late answer is freed at once.
            self.pool.release(permit);
        }
        // Calls still waiting for a slot are never sent.
        for op in self.read_calls.withdraw(shard) {
            self.reader_ops.remove(&op);
        }
        for q in st.queue.drain(..) {
            self.pool.release(q.permit);
            self.events.push_back(Event::ChunkDone { chunk: q.chunk });
        }
        if let Some(p) = st.parked.take() {
            self.events.push_back(Event::ChunkDone { chunk: p.chunk });
        }
        st.open_since = None;
        self.pool.cancel_wait(shard);
        let now = self.now;
        self.stopped_subs
            .retain(|_, (_, at)| now < *at + STOPPED_SUB_MEMORY);
        let stopped = &mut self.stopped_subs;
        self.reader_subs.retain(|sub, s| {
            if s == shard {
                stopped.insert(*sub, (s.clone(), now));
            }
            s != shard
        });
    }

    pub(super) fn drain_registrations(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let mut fatal = None;
        for (stream, reg) in self.registrations.iter_mut() {
            while let Some(a) = reg.poll_action(now, &mut self.mint) {
                self.actions.push_back(a);
                progress = true;
            }
            if let Some(arn) = reg.arn() {
                // Readers started before the ARN was known (the only ones
                // without it), in key order.
                for shard in self.awaiting_arn.iter().filter(|s| &s.stream == stream) {
                    let Some(slot) = self.shards.slot_of(shard) else {
                        continue;
                    };
                    let Some((_, st)) = self.shards.at_mut(slot) else {
                        continue;
                    };
                    if let Some(r) = st.reader.as_mut() {
                        if r.consumer_arn().is_none() {
                            r.set_consumer_arn(arn.to_owned());
                            Self::mark_touched(&mut self.dirty, slot, st);
                            progress = true;
                        }
                    }
                }
                self.awaiting_arn.retain(|s| &s.stream != stream);
            }
            if let Some(err) = reg.error() {
                if fatal.is_none() && !self.shutting_down {
                    fatal = Some(format!("{stream}: {err}"));
                }
            }
        }
        if let Some(message) = fatal {
            self.events.push_back(Event::Fatal { message });
            self.shutdown(now);
            progress = true;
        }
        progress
    }

    pub(super) fn drain_readers(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let slots = self.dirty_slots();
        for &slot in &slots {
            while let Some((shard, st)) = self.shards.at_mut(slot) {
                let Some(reader) = st.reader.as_mut() else {
                    break;
                };
                while let Some(action) = reader.poll_action(now, &mut self.mint) {
                    progress = true;
                    Self::route_awaited(
                        &mut self.reader_ops,
                        &mut self.reader_subs,
                        shard,
                        reader.awaits(),
                    );
                    if self.read_calls.send(&mut self.actions, action) {
                        self.stats.read_calls_queued += 1;
                    }
                }
                let Some(ev) = reader.poll_event() else {
                    break;
                };
                let shard = shard.clone();
                progress = true;
                match ev {
                    ReaderEvent::Chunk { chunk, data } => self.arrived(now, &shard, chunk, data),
                    ReaderEvent::End { children } => {
                        if let Some(st) = self.shards.get_mut(&shard) {
                            st.end_seen = true;
                        }
                        for child in &children {
                            self.ranges
                                .entry(ShardRef::new(shard.stream.clone(), child.shard.clone()))
                                .or_insert(child.hash_range);
                        }
                        if !children.is_empty() {
                            self.lease.handle_child_shards(
                                now,
                                &shard.stream,
                                &children,
                                &mut self.mint,
                            );
                            // A child may name a parent the last ListShards
                            // did not know (a merge newer than it): it
                            // waits for that parent, so list again now
                            // rather than a shard sync period later.
                            if !self.shutting_down {
                                self.timers.set(Timer::ShardSync, now);
                            }
                        }
                    }
                    ReaderEvent::Failed {
                        class: ErrorClass::ResourceNotFound,
                    } if !self.shutting_down => self.check_gone(&shard),
                    ReaderEvent::Failed { class } => self.fail_shard(now, &shard, class),
                    ReaderEvent::Warning(message) => self.events.push_back(Event::Warning {
                        shard: Some(shard),
                        message,
                    }),
                }
            }
        }
        self.sorted = slots;
        progress
    }

    /// A read of `shard` failed with ResourceNotFound: stop reading it and
    /// list its stream now. The answer decides (`settle_gone_checks`): a
    /// shard the listing lacks no longer exists and ends like a shard read
    /// to its end (SHARD_END once its delivered records are acknowledged,
    /// so its children start), as KCL does; a listed one failed
    /// (`fail_shard`). Without this a parent trimmed past retention with an
    /// unfinished row, or a row of a deleted stream's shard that the new
    /// stream lacks, was failed, quarantined and taken again every
    /// `QUARANTINE`, for ever, and its children never started.
    fn check_gone(&mut self, shard: &ShardRef) {
        self.stop_reading(shard);
        if self.gone_checks.contains_key(shard) {
            return;
        }
        let op = self.mint.op();
        self.list_ops.insert(op, shard.stream.clone());
        self.actions.push_back(Action::ListShards {
            op,
            stream: shard.stream.clone(),
        });
        self.gone_checks.insert(shard.clone(), op);
    }

    /// A ListShards of `stream` (op `op`) answered: settle the gone checks
    /// it was sent after (`listed`: the shard ids it reported; `None`: it
    /// failed).
    fn settle_gone_checks(
        &mut self,
        now: Instant,
        stream: &StreamId,
        op: OpId,
        listed: Option<&[ShardInfo]>,
    ) {
        let due: Vec<ShardRef> = self
            .gone_checks
            .iter()
            .filter(|(s, after)| &s.stream == stream && **after <= op)
            .map(|(s, _)| s.clone())
            .collect();
        for shard in due {
            self.gone_checks.remove(&shard);
            if !self.shards.contains_key(&shard) {
                continue;
            }
            let gone = listed.is_some_and(|l| l.iter().all(|i| i.shard != shard.shard));
            if !gone {
                self.fail_shard(now, &shard, ErrorClass::ResourceNotFound);
                continue;
            }
            self.events.push_back(Event::Warning {
                shard: Some(shard.clone()),
                message: format!(
                    "{shard} does not exist any more (ResourceNotFound, and ListShards does not \
                     list it: trimmed past retention, or its stream was deleted and recreated): \
                     ending it once its delivered records are acknowledged"
                ),
            });
            if let Some(st) = self.shards.get_mut(&shard) {
                st.end_seen = true;
            }
            self.touch(&shard);
        }
    }

    /// The shard cannot be read: stop, quarantine it here, and release its
    /// lease with the checkpoint of what was acknowledged (another worker,
    /// or this one after the quarantine, reads it again from there).
    pub(super) fn fail_shard(&mut self, now: Instant, shard: &ShardRef, class: ErrorClass) {
        self.stop_reading(shard);
        self.lease.quarantine(shard, now + QUARANTINE);
        let cp = self
            .shards
            .get(shard)
            .and_then(|s| s.tracker.watermark().cloned());
        self.events.push_back(Event::ShardFailed {
            shard: shard.clone(),
            class,
        });
        if let Some(st) = self.shards.get_mut(shard) {
            st.phase = Phase::Leaving;
        }
        self.lease.release(now, shard, cp, &mut self.mint);
    }

    /// An answer for a subscription whose reader was stopped: AWS counts
    /// SubscribeToShard spacing per (consumer, shard), so a ResourceInUse
    /// still holds the shard's next subscribe off for 5 s, whichever reader
    /// makes it.
    pub(super) fn stopped_sub_answered(&mut self, now: Instant, input: &Input) {
        let (Input::SubscriptionEvent { sub, .. }
        | Input::SubscriptionEnded { sub }
        | Input::SubscriptionError { sub, .. }) = input
        else {
            return;
        };
        let resource_in_use = matches!(
            input,
            Input::SubscriptionError {
                class: ErrorClass::ResourceInUse,
                ..
            }
        );
        let Some((shard, _)) = (if matches!(input, Input::SubscriptionEvent { .. }) {
            self.stopped_subs.get(sub).cloned()
        } else {
            self.stopped_subs.remove(sub)
        }) else {
            return;
        };
        if !resource_in_use {
            return;
        }
        match self.shards.get_mut(&shard).and_then(|s| s.reader.as_mut()) {
            Some(reader) => {
                reader.carry_subscribe_spacing(now, None, Some(now));
                self.touch(&shard);
            }
            None => {
                let entry = self.spacing.entry(shard).or_insert((None, None));
                entry.1 = entry.1.max(Some(now));
            }
        }
    }

    /// The routing rule: the answers of what a shard's reader awaits
    /// (read after every action it emits) go to that shard. An op stays
    /// until its answer arrives (its chunk is freed if the reader no longer
    /// takes it); a subscription until the shard stops being read.
    pub(super) fn route_awaited(
        reader_ops: &mut BTreeMap<OpId, (ShardRef, Option<ChunkId>)>,
        reader_subs: &mut BTreeMap<SubId, ShardRef>,
        shard: &ShardRef,
        awaited: Option<Asked>,
    ) {
        match awaited {
            Some(Asked::Sub(sub)) => {
                reader_subs.insert(sub, shard.clone());
            }
            Some(Asked::Op { op, chunk }) => {
                reader_ops.insert(op, (shard.clone(), chunk));
            }
            None => {}
        }
    }

    /// A ListShards answer: the stream's hash ranges are replaced (readers
    /// get theirs), closed shards are marked, and the lease manager learns
    /// the shard list (unless shutting down); a failure waits for the next
    /// shard sync.
    pub(super) fn on_shards(
        &mut self,
        now: Instant,
        op: OpId,
        result: &Result<Vec<ShardInfo>, ErrorClass>,
    ) {
        if let Some(stream) = self.list_ops.remove(&op) {
            match result {
                Ok(list) => {
                    self.ranges.retain(|r, _| r.stream != stream);
                    for info in list {
                        let r = ShardRef::new(stream.clone(), info.shard.clone());
                        if let Some(reader) =
                            self.shards.get_mut(&r).and_then(|s| s.reader.as_mut())
                        {
                            reader.set_range(info.hash_range);
                        }
                        self.ranges.insert(r.clone(), info.hash_range);
                        if info.ending_seq.is_none() && self.closed.remove(&r).is_some() {
                            // Listed open after a listing said closed: the
                            // stream was deleted and recreated under its
                            // name (shard ids are reused); the old ending
                            // is no evidence for the new shard.
                            if let Some(reader) =
                                self.shards.get_mut(&r).and_then(|s| s.reader.as_mut())
                            {
                                reader.unmark_closed();
                            }
                        }
                        if let Some(ending) = &info.ending_seq {
                            if let Some(reader) =
                                self.shards.get_mut(&r).and_then(|s| s.reader.as_mut())
                            {
                                reader.mark_closed(ending.clone());
                                self.touch(&r);
                            }
                            self.closed.insert(r, ending.clone());
                        }
                    }
                    if !self.shutting_down {
                        self.lease.handle_shards(now, &stream, list, &mut self.mint);
                    }
                    self.settle_gone_checks(now, &stream, op, Some(list));
                }
                Err(class) => {
                    self.events.push_back(Event::Warning {
                        shard: None,
                        message: format!(
                            "ListShards on {stream} failed ({class:?}); retrying at the next \
                             shard sync"
                        ),
                    });
                    self.settle_gone_checks(now, &stream, op, None);
                }
            }
        }
    }
}
