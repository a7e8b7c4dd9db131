//! A lease's life in the worker: lease events (acquired, lost, hand-off
//! asked, checkpoint written), the phases of a shard being given up
//! (hand-off, closing, leaving), periodic commits and shutdown completion.
//!
//! Rules encoded: checkpoints every `commit_period` when progressed (the
//! tracker's watermark, written when the lease side, which keeps the one
//! copy of the durable checkpoint, says it is ahead of what is stored, in
//! flight or queued: `LeaseManager::checkpoint_wanted`), final
//! checkpoints at hand-off and shutdown, SHARD_END once a shard end is
//! drained and fully acknowledged (SPEC 3, 5); a graceful hand-off stops
//! reading and waits for in-flight acks up to `handoff_timeout` before the
//! transfer (SPEC 4); shutdown waits for in-flight acks, then releases
//! (SPEC 9); a lost lease stops the shard at once and drops its in-flight
//! batches (its records are redelivered by the next reader).
//!
//! Invariants: a shard leaves the table only on `LeaseEvent::Lost`, and
//! then leaves every index (`Worker::forget`); the final checkpoint never
//! covers an unacknowledged record (it is the tracker's watermark); no
//! checkpoint is written for a shard that is leaving or finishing.
//!
//! Imports: `read` (start and stop readers) and the table (`shards`).

use std::collections::BTreeMap;
use std::time::Instant;

use super::deliver::Inflight;
use super::shards::ShardState;
use super::Worker;
use crate::ids::{BatchId, FencingToken, ShardRef};
use crate::io::{Event, LostReason};
use crate::lease::LeaseEvent;
use crate::pool::Pool;
use crate::sequence::Checkpoint;
use crate::timer::{Timer, TimerTable};

/// Where a shard read under a held lease is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Reading and delivering.
    Reading,
    /// A taker asked: not reading, waiting for in-flight acks, then transfer.
    HandingOff { deadline: Instant },
    /// Shutdown: waiting for in-flight acks, then release.
    Closing,
    /// Transfer / release / SHARD_END write sent; waiting for the lease
    /// manager to report the lease lost.
    Leaving,
}

impl Worker {
    pub(super) fn drain_lease_events(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while let Some(ev) = self.lease.poll_event() {
            progress = true;
            match ev {
                LeaseEvent::Acquired {
                    shard,
                    token,
                    checkpoint,
                    created_ms,
                } => self.start_reading(now, shard, token, checkpoint, created_ms),
                LeaseEvent::Superseded { by } => {
                    self.events.push_back(Event::Fatal {
                        message: format!(
                            "worker id {:?} is in use by a later process ({by}): this one ({}) \
                             stopped reading and holds no lease; give each process its own \
                             worker id, or stop the other one",
                            by.worker, self.config.owner
                        ),
                    });
                }
                LeaseEvent::EarlierStream { message, .. } => {
                    self.events.push_back(Event::Fatal { message });
                    self.shutdown(now);
                }
                LeaseEvent::Lost {
                    shard,
                    token,
                    reason,
                } => self.lost(&shard, token, reason),
                LeaseEvent::HandoffRequested { shard, .. } => {
                    let deadline = now + self.config.handoff_timeout;
                    let reading = self
                        .shards
                        .get(&shard)
                        .is_some_and(|s| s.phase == Phase::Reading && !s.finishing);
                    if reading {
                        self.stop_reading(&shard);
                        if let Some(st) = self.shards.get_mut(&shard) {
                            st.phase = Phase::HandingOff { deadline };
                        }
                    }
                }
                LeaseEvent::CheckpointWritten { shard, .. } => {
                    // The lease side keeps the durable checkpoint; the shard
                    // is only visited again.
                    if self.shards.contains_key(&shard) {
                        self.touch(&shard);
                    }
                }
            }
        }
        progress
    }

    /// The lease is gone: stop at once; in-flight batches can no longer be
    /// checkpointed by us.
    pub(super) fn lost(&mut self, shard: &ShardRef, token: FencingToken, reason: LostReason) {
        if !self.shards.contains_key(shard) {
            return;
        }
        self.stop_reading(shard);
        let Some(slot) = self.shards.slot_of(shard) else {
            return;
        };
        let Some(st) = self.shards.remove(shard) else {
            return;
        };
        self.forget(shard, slot, &st);
        for id in st.inflight.iter().chain(st.redeliver.iter()) {
            if let Some((_, inf)) = self.batches.remove(id) {
                self.pool.release(inf.permit);
            }
        }
        if reason == LostReason::ShardEnded {
            self.events.push_back(Event::ShardEnded {
                shard: shard.clone(),
            });
        }
        self.events.push_back(Event::LeaseLost {
            shard: shard.clone(),
            token,
            reason,
        });
    }

    /// Shard end, hand-off and shutdown completion.
    pub(super) fn advance_phases(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let slots = self.dirty_slots();
        for &slot in &slots {
            let Some((shard, st)) = self.shards.at_mut(slot) else {
                continue;
            };
            match st.phase {
                Phase::Reading => {
                    let received_all = st.end_seen && st.queue.is_empty() && st.parked.is_none();
                    if received_all && !st.finishing {
                        st.tracker.mark_shard_end();
                        if st.tracker.is_drained() && st.redeliver.is_empty() {
                            st.finishing = true;
                            if let Some(a) = st.reader.take().and_then(|mut r| r.stop()) {
                                self.actions.push_back(a);
                            }
                            self.lease.finish_shard(now, shard, &mut self.mint);
                            progress = true;
                        }
                    }
                }
                Phase::HandingOff { deadline } => {
                    Self::drop_queued_redeliveries(&mut self.batches, &mut self.pool, st);
                    if st.inflight.is_empty() || now >= deadline {
                        let shard = shard.clone();
                        self.leave(now, &shard);
                        progress = true;
                    }
                }
                Phase::Closing => {
                    Self::drop_queued_redeliveries(&mut self.batches, &mut self.pool, st);
                    if st.inflight.is_empty() {
                        let shard = shard.clone();
                        self.leave(now, &shard);
                        progress = true;
                    }
                }
                Phase::Leaving => {
                    // Acks after the final checkpoint was fixed ride on a
                    // retry of the final write.
                    if let Some(cp) = st.tracker.watermark().cloned() {
                        let shard = shard.clone();
                        self.lease.fold_final_checkpoint(&shard, cp);
                    }
                }
            }
        }
        self.sorted = slots;
        progress
    }

    /// Final checkpoint, then transfer (hand-off) or release (shutdown).
    pub(super) fn leave(&mut self, now: Instant, shard: &ShardRef) {
        self.stop_reading(shard);
        let Some(st) = self.shards.get_mut(shard) else {
            return;
        };
        let final_cp = st.tracker.watermark().cloned();
        let phase = std::mem::replace(&mut st.phase, Phase::Leaving);
        match phase {
            Phase::HandingOff { .. } => self.lease.transfer(now, shard, final_cp, &mut self.mint),
            Phase::Leaving => {}
            Phase::Reading | Phase::Closing => {
                if st.finishing {
                    // SHARD_END already on its way.
                    st.phase = Phase::Leaving;
                } else {
                    self.lease.release(now, shard, final_cp, &mut self.mint)
                }
            }
        }
    }

    pub(super) fn maybe_complete_shutdown(&mut self) {
        if self.shutting_down && !self.done && self.shards.is_empty() && self.lease.is_shut_down() {
            self.done = true;
            self.timers = TimerTable::default();
            self.events.push_back(Event::ShutdownComplete);
        }
    }

    /// Write each shard's watermark when the lease side wants it (ahead of
    /// what is stored, in flight or queued). `SHARD_END` is never written
    /// here: it goes with the release (`LeaseManager::finish_shard`).
    pub(super) fn commit(&mut self, now: Instant) {
        for (shard, st) in self.shards.iter() {
            if st.phase == Phase::Leaving || st.finishing {
                continue;
            }
            let Some(cp) = st.tracker.watermark() else {
                continue;
            };
            if *cp != Checkpoint::ShardEnd && self.lease.checkpoint_wanted(shard, cp) {
                self.lease
                    .write_checkpoint(now, shard, cp.clone(), &mut self.mint);
            }
        }
    }

    /// Shutdown begins: no more shard syncs, EFO registrations cancelled,
    /// the lease manager told, every reader stopped and every shard
    /// closing (it leaves once its in-flight batches are acknowledged, or
    /// at the shutdown deadline).
    pub(super) fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        self.timers.stop(Timer::ShardSync);
        self.timers
            .set(Timer::ShutdownDeadline, now + self.config.shutdown_timeout);
        for reg in self.registrations.values_mut() {
            reg.cancel();
        }
        self.lease.shutdown(now, &mut self.mint);
        let shards: Vec<ShardRef> = self.shards.keys().cloned().collect();
        for shard in shards {
            self.stop_reading(&shard);
            if let Some(st) = self.shards.get_mut(&shard) {
                if st.phase == Phase::Reading || matches!(st.phase, Phase::HandingOff { .. }) {
                    st.phase = Phase::Closing;
                }
            }
        }
    }

    /// A shard leaving: nacked batches queued for redelivery (waiting out
    /// their backoff) will not be delivered here; they leave the in-flight
    /// set and give their pool room back, as a nack while leaving does, so
    /// hand-off and shutdown wait only for batches the application holds.
    /// The checkpoint stays before them: the next reader reads them again.
    fn drop_queued_redeliveries(
        batches: &mut BTreeMap<BatchId, (ShardRef, Box<Inflight>)>,
        pool: &mut Pool<ShardRef>,
        st: &mut ShardState,
    ) {
        for id in std::mem::take(&mut st.redeliver) {
            st.inflight.remove(&id);
            if let Some((_, inf)) = batches.remove(&id) {
                pool.release(inf.permit);
            }
        }
    }
}
