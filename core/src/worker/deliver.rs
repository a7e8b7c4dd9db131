//! Admission and delivery: chunks arrive into the global pending pool or
//! park until it has room, readers get credit to fetch more, batches are
//! cut from admitted chunks, and acks and nacks give pool room back.
//!
//! Rules encoded: a reader takes the next event from the network only with
//! credit from the pool (SPEC 7): each read reserves its expected size in
//! the pool before it is sent (`ShardReader::read_plan`: the GetRecords
//! `Limit` from the room left and the shard's observed record size, a Pull
//! the shard's largest recent event), the reservation is exchanged for the
//! chunk's real size when it arrives (a read in flight is charged what its
//! answer holds until decoded, `shard::in_flight_bytes`), and credit is
//! given round robin; shards not read yet count as asking when the room
//! left is shared, and while one waits for its first answer the others
//! leave room for its first read (up to half the budget); an oversized chunk is
//! admitted alone into an empty pool; batches are cut by the pure rule of
//! `batcher` within `checkpoint_limit` (SPEC 2, 3) and delivered with the
//! lease's fencing token; a nacked batch is redelivered, with the same
//! checkpoint slot, while the shard is read, once its redelivery backoff
//! (`Config::redelivery`, doubled per nack of the batch) has passed; a
//! batch nacked after `max_deliveries` deliveries is offered as a dead
//! letter instead, and stays unacknowledged in the tracker (so the
//! checkpoint stays before it) until the handler's ack; the shard's other
//! batches are delivered meanwhile; `ChunkDone` follows the last batch cut
//! from a chunk.
//!
//! Invariants: pool usage equals the permits of queued chunks plus those
//! of delivered, unacked batches (`Worker::check_invariants`); a parked
//! chunk holds no permit; a shard with a parked chunk wants no credit.
//!
//! Imports: the table (`shards`) and `Phase` (only a reading shard
//! delivers); `read` for routing what a reader awaits after a grant.

use std::time::Instant;

use super::batcher::{self, Backlog};
use super::lifecycle::Phase;
use super::{AckError, Worker};
use crate::checkpoint::Slot;
use crate::config::Retrieval;
use crate::ids::{BatchId, ChunkId, ShardRef};
use crate::io::{BatchMeta, Chunk, ErrorClass, Event, RecordMeta};
use crate::pool::Permit;
use crate::shard::{self, PoolRoom};

/// An admitted chunk whose records are not all delivered yet.
pub(super) struct Queued {
    pub(super) chunk: ChunkId,
    pub(super) records: Vec<RecordMeta>,
    pub(super) next: u32,
    pub(super) permit: Permit,
    pub(super) millis_behind: u64,
}

/// A chunk that arrived while the pool had no room for it.
pub(super) struct Parked {
    pub(super) chunk: ChunkId,
    pub(super) data: Chunk,
}

/// A delivered batch awaiting ack.
pub(super) struct Inflight {
    pub(super) slot: Slot,
    pub(super) permit: Permit,
    pub(super) batch: BatchMeta,
    /// Nacked and not yet redelivered.
    pub(super) nacked: bool,
    /// Deliveries to the application so far (dead-letter offers excluded).
    pub(super) deliveries: u32,
    /// Nacks so far (the redelivery backoff doubles with each).
    pub(super) nacks: u32,
    /// Handed to the dead-letter handler: offered as a dead letter, never
    /// again as a batch.
    pub(super) dead: bool,
    /// When a nacked batch may be offered again.
    pub(super) due: Instant,
}

impl Worker {
    /// A chunk arrived for a shard: admit it into the pool or park it.
    pub(super) fn arrived(&mut self, now: Instant, shard: &ShardRef, chunk: ChunkId, data: Chunk) {
        let Some(slot) = self.shards.slot_of(shard) else {
            self.events.push_back(Event::ChunkDone { chunk });
            return;
        };
        let Some((_, st)) = self.shards.at_mut(slot) else {
            self.events.push_back(Event::ChunkDone { chunk });
            return;
        };
        Self::mark_touched(&mut self.dirty, slot, st);
        if std::mem::take(&mut st.fresh) {
            self.fresh -= 1;
        }
        st.millis_behind = data.millis_behind;
        let (records, bytes) = (data.records.len() as u64, data.bytes());
        let reserved = match &st.reservation {
            Some((c, _)) if *c == chunk => st.reservation.take().map(|(_, p)| p),
            _ => None,
        };
        let admitted = match reserved {
            // The read paid for its room before it was sent: exchange it
            // for what came (over the budget only when more came than
            // reserved: it is already in memory).
            Some(res) => {
                if records > res.records() || bytes > res.bytes() {
                    self.stats.reads_over_reservation += 1;
                }
                Ok(self.pool.exchange(res, records, bytes))
            }
            None => self.pool.try_admit(records, bytes),
        };
        match admitted {
            Ok(permit) => {
                if let Some(r) = st.reader.as_mut() {
                    r.admitted(chunk);
                }
                if data.records.is_empty() {
                    self.pool.release(permit);
                    self.events.push_back(Event::ChunkDone { chunk });
                } else {
                    if st.open_since.is_none() {
                        st.open_since = Some(now);
                    }
                    st.queue.push_back(Queued {
                        chunk,
                        records: data.records,
                        next: 0,
                        permit,
                        millis_behind: data.millis_behind,
                    });
                }
            }
            Err(_) => {
                self.stats.chunks_parked += 1;
                st.parked = Some(Parked { chunk, data });
                self.pool.wait(shard.clone());
            }
        }
    }

    /// Admit parked chunks in FIFO order as room frees up.
    pub(super) fn admit_parked(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while self.pool.has_room() {
            let Some(shard) = self.pool.poll_wake() else {
                break;
            };
            let Some(p) = self.shards.get_mut(&shard).and_then(|s| s.parked.take()) else {
                continue;
            };
            progress = true;
            let before = self.stats.chunks_parked;
            self.arrived(now, &shard, p.chunk, p.data);
            if self.stats.chunks_parked != before {
                // Still does not fit: it waits again (it fits once the pool
                // is empty at the latest).
                self.stats.chunks_parked = before;
                break;
            }
        }
        progress
    }

    /// Give one unit of credit to each reader that wants one, while the pool
    /// has room, starting after the last served shard (round robin). Only
    /// `wanting` shards can take credit; touched shards are re-judged first.
    pub(super) fn grant_credit(&mut self, now: Instant) -> bool {
        for &slot in &self.dirty {
            if let Some((_, st)) = self.shards.at_mut(slot) {
                Self::recount_credit(
                    &mut self.credit_outstanding,
                    &mut self.wanting,
                    now,
                    slot,
                    st,
                );
                Self::release_idle_reservation(&mut self.pool, st);
            }
        }
        if self.wanting.is_empty() {
            self.credit_blocked = false;
            return false;
        }
        if !self.pool.has_room() {
            self.credit_blocked = true;
            return false;
        }
        self.credit_blocked = false;
        let mut order = std::mem::take(&mut self.scratch);
        order.clear();
        order.extend_from_slice(&self.wanting);
        Self::sort_by_shard(&self.shards, &mut order);
        if let Some(c) = &self.credit_cursor {
            // Round robin: the shards after the last one served first.
            let after = order.partition_point(|&s| self.shards.at(s).is_some_and(|(k, _)| k <= c));
            order.rotate_left(after);
        }
        let max = (self.pool.max_records(), self.pool.max_bytes());
        let held = (self.shards.len() as u64).max(1);
        // Shards not read yet count as asking: at a cold start they get
        // their iterators one by one, and the first few asking must not
        // share the whole budget between them.
        let wanting = (order.len() as u64).saturating_add(self.fresh).max(1);
        // While a shard waits for its first answer, the others leave room
        // for its first read (up to half the budget): with a sink that
        // never acknowledges, the shards read first filled the budget and
        // 843 of 1,000 shards never got a read (scripts/bench.sh
        // memory-cold).
        let reserve = if self.fresh > 0 {
            let efo = matches!(self.config.retrieval, Retrieval::Efo { .. });
            (
                u64::from(max.0 >= 2),
                shard::first_read_bytes(efo).min(max.1 / 2),
            )
        } else {
            (0, 0)
        };
        let mut progress = false;
        for &slot in &order {
            if !self.pool.has_room() {
                self.credit_blocked = true;
                break;
            }
            let free = (
                max.0.saturating_sub(self.pool.used_records()),
                max.1.saturating_sub(self.pool.used_bytes()),
            );
            // A fair share of the budget, or of the room left among the
            // readers asking now when that is more (a busy shard among
            // quiet ones reads at the pool's pace, not at its share).
            let share = (
                (max.0 / held).max(free.0 / wanting).max(1),
                (max.1 / held).max(free.1 / wanting).max(1),
            );
            let fair = ((max.0 / held).max(1), (max.1 / held).max(1));
            let mut room = PoolRoom {
                free,
                max,
                share,
                fair,
            };
            let Some((shard, st)) = self.shards.at_mut(slot) else {
                continue;
            };
            if !st.wants_credit(now) {
                continue;
            }
            let Some(reader) = st.reader.as_mut() else {
                continue;
            };
            if !st.fresh {
                room.free = (
                    free.0.saturating_sub(reserve.0),
                    free.1.saturating_sub(reserve.1),
                );
            }
            // A read that does not fit keeps its turn: the round stops here
            // and starts with it when room appears (no starvation of a
            // shard with large reads by shards with small ones). One that
            // only misses the room kept for first reads lets them pass.
            let Some(plan) = reader.read_plan(room) else {
                if room.free != free && reader.read_plan(PoolRoom { free, ..room }).is_some() {
                    self.credit_blocked = true;
                    continue;
                }
                self.credit_blocked = true;
                break;
            };
            let Ok(permit) = self.pool.try_admit(plan.records, plan.bytes) else {
                self.credit_blocked = true;
                break;
            };
            let Some(action) = reader.grant(now, plan.limit, &mut self.mint) else {
                self.pool.release(permit);
                continue;
            };
            let awaited = reader.awaits();
            match reader.read_chunk() {
                Some(chunk) => st.reservation = Some((chunk, permit)),
                None => self.pool.release(permit),
            }
            Self::recount_credit(
                &mut self.credit_outstanding,
                &mut self.wanting,
                now,
                slot,
                st,
            );
            Self::mark_touched(&mut self.dirty, slot, st);
            Self::route_awaited(&mut self.reader_ops, &mut self.reader_subs, shard, awaited);
            if self.read_calls.send(&mut self.actions, action) {
                self.stats.read_calls_queued += 1;
            }
            self.credit_cursor = Some(shard.clone());
            progress = true;
        }
        self.scratch = order;
        progress
    }

    /// Cut batches out of admitted chunks and redeliver nacked ones.
    pub(super) fn deliver(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let mut out_of_order: Vec<ShardRef> = Vec::new();
        let batching = self.config.batching;
        let slots = self.dirty_slots();
        for &slot in &slots {
            let Some((shard, st)) = self.shards.at_mut(slot) else {
                continue;
            };
            if st.phase != Phase::Reading {
                continue;
            }
            // Nacked batches whose backoff has passed, in nack order; the
            // others wait (`redeliver_at` wakes the shard up).
            let mut i = 0;
            while let Some(&id) = st.redeliver.get(i) {
                let Some((_, inf)) = self.batches.get_mut(&id) else {
                    st.redeliver.remove(i);
                    continue;
                };
                if inf.due > now {
                    i += 1;
                    continue;
                }
                st.redeliver.remove(i);
                inf.nacked = false;
                let mut batch = inf.batch.clone();
                batch.redelivery = true;
                if inf.dead {
                    self.events.push_back(Event::DeadLetter {
                        batch,
                        attempts: inf.deliveries,
                    });
                } else {
                    inf.deliveries = inf.deliveries.saturating_add(1);
                    self.stats.batches_delivered += 1;
                    self.stats.redeliveries += 1;
                    self.stats.records_delivered += u64::from(batch.len());
                    self.events.push_back(Event::Batch(batch));
                }
                progress = true;
            }
            while let Some(q) = st.queue.front_mut() {
                // Records a re-read brought again (already delivered) are
                // skipped one by one, never the rest of the chunk: the reader
                // has moved past it, so a dropped record would be lost.
                let skip = q.records[q.next as usize..]
                    .iter()
                    .take_while(|r| st.tracker.covers(&r.ext))
                    .count();
                if skip > 0 {
                    let skipped = &q.records[q.next as usize..q.next as usize + skip];
                    let bytes: u64 = skipped.iter().map(|r| u64::from(r.bytes)).sum();
                    let part = self.pool.split(&mut q.permit, skip as u64, bytes);
                    self.pool.release(part);
                    q.next += skip as u32;
                    if q.next as usize >= q.records.len() {
                        let q = st.queue.pop_front().expect("checked");
                        self.pool.release(q.permit);
                        self.events.push_back(Event::ChunkDone { chunk: q.chunk });
                        progress = true;
                        continue;
                    }
                }
                let Some(q) = st.queue.front() else {
                    break;
                };
                let backlog = Backlog {
                    front: &q.records[q.next as usize..],
                    more_queued: st.queue.len() > 1,
                    end_seen: st.end_seen,
                    open_since: st.open_since,
                };
                let Some(n) = batcher::next_batch(
                    &backlog,
                    &batching,
                    st.tracker.limit(),
                    st.tracker.room(),
                    now,
                ) else {
                    break;
                };
                let q = st.queue.front_mut().expect("checked");
                let range = q.next..q.next + n;
                let recs = &q.records[range.start as usize..range.end as usize];
                let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
                    break;
                };
                let bytes: u64 = recs.iter().map(|r| u64::from(r.bytes)).sum();
                let Ok(slot) = st.tracker.deliver(last.ext.clone(), last.last_sub, n) else {
                    // Records out of sequence order inside a chunk (a runtime
                    // bug): neither deliver them out of order nor drop them
                    // (the reader is past them). Give the shard up with the
                    // checkpoint of what was acknowledged; it is read again
                    // from there.
                    out_of_order.push(shard.clone());
                    break;
                };
                let id = self.mint.batch();
                let batch = BatchMeta {
                    id,
                    shard: shard.clone(),
                    token: st.token,
                    chunk: q.chunk,
                    range: range.clone(),
                    first: first.ext.clone(),
                    last: last.ext.clone(),
                    bytes,
                    millis_behind: q.millis_behind,
                    redelivery: false,
                };
                let permit = self.pool.split(&mut q.permit, u64::from(n), bytes);
                q.next += n;
                // ChunkDone goes out after this batch: a runtime frees the
                // payload on ChunkDone, and this batch still needs it.
                let mut chunk_done = None;
                if q.next as usize >= q.records.len() {
                    let q = st.queue.pop_front().expect("checked");
                    // Rounding leftovers of the chunk's permit.
                    self.pool.release(q.permit);
                    chunk_done = Some(q.chunk);
                }
                st.open_since = if st.queue.is_empty() { None } else { Some(now) };
                st.inflight.insert(id);
                self.stats.batches_delivered += 1;
                self.stats.records_delivered += u64::from(n);
                self.batches.insert(
                    id,
                    (
                        shard.clone(),
                        Box::new(Inflight {
                            slot,
                            permit,
                            batch: batch.clone(),
                            nacked: false,
                            deliveries: 1,
                            nacks: 0,
                            dead: false,
                            due: now,
                        }),
                    ),
                );
                self.events.push_back(Event::Batch(batch));
                if let Some(chunk) = chunk_done {
                    self.events.push_back(Event::ChunkDone { chunk });
                }
                progress = true;
            }
        }
        self.sorted = slots;
        for shard in out_of_order {
            self.fail_shard(now, &shard, ErrorClass::InvalidArgument);
            progress = true;
        }
        progress
    }

    /// Acknowledge several batches at once: the same bookkeeping as
    /// [`Worker::ack`] for each in turn, then one pass over the worker
    /// instead of one per batch (a runtime that gathered the acks its
    /// application sent meanwhile applies them here). Each batch that
    /// cannot be acked (unknown, already acked) is reported to `rejected`
    /// and skipped; the others are acked all the same.
    pub fn ack_many(
        &mut self,
        now: Instant,
        batches: impl IntoIterator<Item = BatchId>,
        mut rejected: impl FnMut(AckError),
    ) {
        self.set_now(now);
        for batch in batches {
            if let Err(e) = self.apply_ack(batch) {
                rejected(e);
            }
        }
        self.pump(now);
    }

    /// The bookkeeping of an ack: the batch leaves the shard's in-flight
    /// set, its slot is acknowledged in the tracker and its permit gives
    /// the pool room back.
    pub(super) fn apply_ack(&mut self, batch: BatchId) -> Result<(), AckError> {
        let (shard, inf) = self
            .batches
            .remove(&batch)
            .ok_or(AckError::UnknownBatch(batch))?;
        // The shard is looked up once (its slot serves the touch too).
        let slot = self
            .shards
            .slot_of(&shard)
            .ok_or(AckError::UnknownBatch(batch))?;
        let (_, st) = self
            .shards
            .at_mut(slot)
            .ok_or(AckError::UnknownBatch(batch))?;
        st.inflight.remove(&batch);
        st.redeliver.retain(|b| *b != batch);
        let _ = st.tracker.ack(inf.slot);
        self.pool.release(inf.permit);
        Self::mark_touched(&mut self.dirty, slot, st);
        self.stats.acks += 1;
        Ok(())
    }

    /// The bookkeeping of a nack: the batch is queued for redelivery after
    /// its backoff while the shard is read, or, delivered `max_deliveries`
    /// times, offered at once as a dead letter (it stays in flight: the
    /// handler's ack releases it); a shard leaving drops it (the next
    /// reader reads it again from the checkpoint, counting anew).
    pub(super) fn apply_nack(&mut self, now: Instant, batch: BatchId) -> Result<(), AckError> {
        let (shard, inf) = self
            .batches
            .get_mut(&batch)
            .ok_or(AckError::UnknownBatch(batch))?;
        if inf.nacked {
            return Err(AckError::UnknownBatch(batch));
        }
        let st = self
            .shards
            .get_mut(shard)
            .ok_or(AckError::UnknownBatch(batch))?;
        let _ = st.tracker.nack(inf.slot);
        if let Some(slot) = self.shards.slot_of(shard) {
            if let Some((_, st)) = self.shards.at_mut(slot) {
                Self::mark_touched(&mut self.dirty, slot, st);
            }
        }
        let Some(st) = self.shards.get_mut(shard) else {
            return Err(AckError::UnknownBatch(batch));
        };
        if st.phase == Phase::Reading {
            let limit = self.config.redelivery.max_deliveries;
            if !inf.dead && limit.is_some_and(|m| inf.deliveries >= m) {
                inf.dead = true;
                self.stats.dead_letters += 1;
                let mut meta = inf.batch.clone();
                meta.redelivery = true;
                self.events.push_back(Event::DeadLetter {
                    batch: meta,
                    attempts: inf.deliveries,
                });
                return Ok(());
            }
            inf.nacks = inf.nacks.saturating_add(1);
            let delay = self.config.redelivery.delay(inf.nacks);
            inf.due = now + delay;
            if !delay.is_zero() {
                self.redeliver_at.insert((inf.due, batch));
            }
            inf.nacked = true;
            st.redeliver.push_back(batch);
        } else {
            // Leaving: nobody will redeliver it here; the next reader reads
            // it again from the checkpoint, which stays before it.
            st.inflight.remove(&batch);
            let (_, inf) = self.batches.remove(&batch).expect("present above");
            self.pool.release(inf.permit);
        }
        Ok(())
    }

    /// Wake the shards of nacked batches whose redelivery backoff has
    /// passed (`deliver` offers them).
    pub(super) fn redeliveries_due(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.redeliver_at.first() {
            if at > now {
                break;
            }
            self.redeliver_at.pop_first();
            if let Some((shard, _)) = self.batches.get(&id) {
                if let Some(slot) = self.shards.slot_of(shard) {
                    if let Some((_, st)) = self.shards.at_mut(slot) {
                        Self::mark_touched(&mut self.dirty, slot, st);
                    }
                }
            }
        }
    }
}
