//! The per-shard table: the state of each shard this worker reads
//! ([`ShardState`]), the slot table that keeps it ([`ShardTable`]), and the
//! incremental indexes `Worker::pump` visits instead of walking every
//! shard (touched shards, shards wanting credit, cached deadlines).
//!
//! Rules encoded: none of AWS's; this is the cost model of the worker (an
//! input or timeout visits only the shards it touched, the ones whose
//! deadline it reached and, when pool room appears, the ones waiting for
//! credit, in key order: the same outputs, in the same order, as a walk of
//! every shard).
//!
//! Invariants (checked by `Worker::check_indexes` in debug builds after
//! every step the simulator takes): a shard keeps its slot while read;
//! `ordered` lists the slots in key order; once settled, each shard's
//! cached `deadline` equals `ShardState::next_deadline` and is indexed in
//! `Worker::deadlines`, `holds_credit` matches its reader and sums to
//! `Worker::credit_outstanding`, `listed` matches `wants_credit` and
//! `Worker::wanting`, and nothing is marked touched.
//!
//! Imports: the queued and parked chunk types of `deliver` and the
//! `Phase` of `lifecycle` (fields of a shard's state); no behaviour of
//! the sibling files.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::deliver::{Parked, Queued};
use super::lifecycle::Phase;
use super::Worker;
use crate::checkpoint::CheckpointTracker;
use crate::ids::{BatchId, ChunkId, FencingToken, ShardRef};
use crate::pool::{Permit, Pool};
use crate::shard::ShardReader;

/// What the worker keeps of one shard it reads.
pub(super) struct ShardState {
    pub(super) token: FencingToken,
    pub(super) reader: Option<ShardReader>,
    pub(super) tracker: CheckpointTracker,
    pub(super) queue: VecDeque<Queued>,
    pub(super) parked: Option<Parked>,
    /// Batches delivered and neither acked nor nacked-while-leaving.
    pub(super) inflight: BTreeSet<BatchId>,
    /// Nacked batches to deliver again, oldest first.
    pub(super) redeliver: VecDeque<BatchId>,
    pub(super) phase: Phase,
    /// The reader saw the end of the shard (all chunks received).
    pub(super) end_seen: bool,
    /// SHARD_END requested from the lease manager.
    pub(super) finishing: bool,
    pub(super) millis_behind: u64,
    /// When the oldest undelivered record became deliverable (period batching).
    pub(super) open_since: Option<Instant>,
    /// Cached at the last visit (see [`Worker::settle`]): the shard's next
    /// deadline and why, as indexed in `Worker::deadlines`.
    pub(super) deadline: Option<(Instant, &'static str)>,
    /// Cached at the last visit: the reader holds credit (an outstanding
    /// Pull or GetRecords), counted in `Worker::credit_outstanding`.
    pub(super) holds_credit: bool,
    /// The pool room reserved for the outstanding read (its chunk id and
    /// permit): exchanged for the chunk's real size when it arrives, given
    /// back when the read ends without one or the shard stops being read.
    pub(super) reservation: Option<(ChunkId, Permit)>,
    /// Listed in `Worker::dirty`.
    pub(super) touched: bool,
    /// No answer of its reader arrived yet (counted in `Worker::fresh`):
    /// its first read is sized for an unknown record, and the credit round
    /// keeps room for it (a cold start reads every shard).
    pub(super) fresh: bool,
    /// Listed in `Worker::wanting` (the reader wanted credit at the last
    /// visit).
    pub(super) listed: bool,
}

impl ShardState {
    /// The earliest instant at which something of this shard becomes due
    /// without an input (reader wake-up, hand-off deadline, batch period),
    /// and why. Ties keep the first in that order.
    pub(super) fn next_deadline(
        &self,
        period: Option<Duration>,
    ) -> Option<(Instant, &'static str)> {
        let mut best = self.reader.as_ref().and_then(|r| r.poll_timeout());
        let mut consider = |c: (Instant, &'static str)| {
            if best.is_none_or(|(b, _)| c.0 < b) {
                best = Some(c);
            }
        };
        if let Phase::HandingOff { deadline } = self.phase {
            consider((deadline, "hand-off deadline"));
        }
        if let (Some(since), Some(period)) = (self.open_since, period) {
            consider((since + period, "batch period"));
        }
        best
    }

    /// Whether the credit round may grant this shard's reader one unit now.
    pub(super) fn wants_credit(&self, now: Instant) -> bool {
        self.parked.is_none()
            && self.phase == Phase::Reading
            && self.reader.as_ref().is_some_and(|r| r.wants_credit(now))
    }

    pub(super) fn queued_records(&self) -> u64 {
        self.queue
            .iter()
            .map(|q| (q.records.len() as u64).saturating_sub(u64::from(q.next)))
            .sum()
    }
}

/// Where a shard's state lives in the [`ShardTable`]; stable while the
/// shard is read.
pub(super) type StateSlot = usize;

/// The shards a worker reads: each state stays in one slot while the shard
/// is read, so the pump's indexes (`dirty`, `wanting`, `deadlines`) reach it
/// without a search; `index` keeps lookups by shard and key order.
#[derive(Default)]
pub(super) struct ShardTable {
    index: BTreeMap<ShardRef, StateSlot>,
    /// The slots in key order (walks need no tree: shards come and go
    /// rarely, walks happen after every step).
    ordered: Vec<StateSlot>,
    slots: Vec<Option<(ShardRef, ShardState)>>,
    free: Vec<StateSlot>,
}

impl ShardTable {
    pub(super) fn slot_of(&self, shard: &ShardRef) -> Option<StateSlot> {
        self.index.get(shard).copied()
    }

    pub(super) fn get(&self, shard: &ShardRef) -> Option<&ShardState> {
        self.at(self.slot_of(shard)?).map(|(_, st)| st)
    }

    pub(super) fn get_mut(&mut self, shard: &ShardRef) -> Option<&mut ShardState> {
        let slot = self.slot_of(shard)?;
        self.at_mut(slot).map(|(_, st)| st)
    }

    pub(super) fn contains_key(&self, shard: &ShardRef) -> bool {
        self.index.contains_key(shard)
    }

    pub(super) fn at(&self, slot: StateSlot) -> Option<(&ShardRef, &ShardState)> {
        self.slots.get(slot)?.as_ref().map(|(k, st)| (k, st))
    }

    pub(super) fn at_mut(&mut self, slot: StateSlot) -> Option<(&ShardRef, &mut ShardState)> {
        self.slots.get_mut(slot)?.as_mut().map(|(k, st)| (&*k, st))
    }

    /// Add a shard not read yet (the caller checked); its slot.
    pub(super) fn insert(&mut self, shard: ShardRef, st: ShardState) -> StateSlot {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some((shard.clone(), st));
                slot
            }
            None => {
                self.slots.push(Some((shard.clone(), st)));
                self.slots.len() - 1
            }
        };
        let at = self
            .ordered
            .partition_point(|&s| self.slots[s].as_ref().is_some_and(|(k, _)| *k < shard));
        self.ordered.insert(at, slot);
        self.index.insert(shard, slot);
        slot
    }

    pub(super) fn remove(&mut self, shard: &ShardRef) -> Option<ShardState> {
        let slot = self.index.remove(shard)?;
        self.ordered.retain(|&s| s != slot);
        let (_, st) = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(st)
    }

    /// In key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&ShardRef, &ShardState)> {
        self.ordered.iter().filter_map(|&slot| self.at(slot))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &ShardRef> {
        self.index.keys()
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

impl Worker {
    /// The incremental indexes `pump` relies on agree with a walk of every
    /// shard (debug builds: the simulator's tests run this after every
    /// step).
    pub(super) fn check_indexes(&self) -> Result<(), String> {
        if !self.dirty.is_empty() || self.done {
            return Ok(());
        }
        let period = self.config.batching.period;
        let mut holding = 0u64;
        let mut indexed = 0usize;
        for (shard, &slot) in &self.shards.index {
            let Some((key, st)) = self.shards.at(slot) else {
                return Err(format!("{shard:?}: empty slot {slot}"));
            };
            if key != shard {
                return Err(format!("{shard:?}: slot {slot} holds {key:?}"));
            }
            let holds = st.reader.as_ref().is_some_and(|r| r.holds_credit());
            if holds != st.holds_credit {
                return Err(format!(
                    "{shard:?}: cached holds_credit {} != {holds}",
                    st.holds_credit
                ));
            }
            holding += u64::from(holds);
            if let Some((chunk, _)) = &st.reservation {
                if st.reader.as_ref().and_then(|r| r.read_chunk()) != Some(*chunk) {
                    return Err(format!(
                        "{shard:?}: room reserved for {chunk:?}, which is not its read in flight"
                    ));
                }
            }
            let next = st.next_deadline(period);
            if next != st.deadline {
                return Err(format!(
                    "{shard:?}: cached deadline {:?} != {next:?}",
                    st.deadline
                ));
            }
            if let Some((at, _)) = next {
                indexed += 1;
                if !self.deadlines.contains(&(at, shard.clone(), slot)) {
                    return Err(format!("{shard:?}: deadline {at:?} not indexed"));
                }
            }
            let listed = self.wanting.iter().filter(|&&s| s == slot).count();
            if st.wants_credit(self.now) != st.listed || listed != usize::from(st.listed) {
                return Err(format!(
                    "{shard:?}: wants credit but not listed, or the reverse"
                ));
            }
            if st.touched {
                return Err(format!("{shard:?}: still marked touched"));
            }
        }
        if holding != self.credit_outstanding {
            return Err(format!(
                "{holding} readers hold credit, {} counted",
                self.credit_outstanding
            ));
        }
        if indexed != self.deadlines.len() {
            return Err(format!(
                "{} deadlines indexed for {indexed} shards with one",
                self.deadlines.len()
            ));
        }
        if self.wanting.iter().any(|&s| self.shards.at(s).is_none()) {
            return Err("a shard not read is listed as wanting credit".into());
        }
        let ordered: Vec<StateSlot> = self.shards.index.values().copied().collect();
        if ordered != self.shards.ordered {
            return Err("shard slots out of key order".into());
        }
        let used = self.shards.slots.iter().filter(|s| s.is_some()).count();
        if used != self.shards.len() || used + self.shards.free.len() != self.shards.slots.len() {
            return Err("shard slots and index disagree".into());
        }
        Ok(())
    }

    /// Mark a shard touched: the next passes of `pump` visit it.
    pub(super) fn touch(&mut self, shard: &ShardRef) {
        if let Some(slot) = self.shards.slot_of(shard) {
            self.touch_slot(slot);
        }
    }

    pub(super) fn touch_slot(&mut self, slot: StateSlot) {
        if let Some((_, st)) = self.shards.at_mut(slot) {
            Self::mark_touched(&mut self.dirty, slot, st);
        }
    }

    /// [`Self::touch`] for a caller holding the shard's state.
    pub(super) fn mark_touched(dirty: &mut Vec<StateSlot>, slot: StateSlot, st: &mut ShardState) {
        if !st.touched {
            st.touched = true;
            dirty.push(slot);
        }
    }

    /// `slots` sorted by their shards (key order: the order a walk of every
    /// shard visits them).
    pub(super) fn sort_by_shard(shards: &ShardTable, slots: &mut [StateSlot]) {
        if slots.len() > 1 {
            slots.sort_unstable_by(|a, b| {
                let key = |s: &StateSlot| shards.at(*s).map(|(k, _)| k);
                key(a).cmp(&key(b))
            });
        }
    }

    /// The slots of the touched shards, in key order (give the list back
    /// with `self.sorted = list`). Within one pass of `pump` a visit only
    /// touches the shard visited, so the list taken at the start of a pass
    /// is what the pass must visit.
    pub(super) fn dirty_slots(&mut self) -> Vec<StateSlot> {
        let mut slots = std::mem::take(&mut self.sorted);
        let at = (self.dirty_epoch, self.dirty.len());
        if self.sorted_at != at {
            slots.clear();
            slots.extend_from_slice(&self.dirty);
            Self::sort_by_shard(&self.shards, &mut slots);
            self.sorted_at = at;
        }
        slots
    }

    /// Refresh the cached credit state of a touched shard: whether its
    /// reader holds credit (`credit_outstanding`) and wants some
    /// (`wanting`).
    pub(super) fn recount_credit(
        outstanding: &mut u64,
        wanting: &mut Vec<StateSlot>,
        now: Instant,
        slot: StateSlot,
        st: &mut ShardState,
    ) {
        let holds = st.reader.as_ref().is_some_and(|r| r.holds_credit());
        if holds != st.holds_credit {
            st.holds_credit = holds;
            if holds {
                *outstanding += 1;
            } else {
                *outstanding -= 1;
            }
        }
        let wants = st.wants_credit(now);
        if wants != st.listed {
            st.listed = wants;
            if wants {
                wanting.push(slot);
            } else {
                wanting.retain(|&s| s != slot);
            }
        }
    }

    /// Give back the reservation of a read that ended without a chunk (an
    /// error, a cancelled subscription): the reader no longer holds credit.
    pub(super) fn release_idle_reservation(pool: &mut Pool<ShardRef>, st: &mut ShardState) {
        if !st.holds_credit {
            if let Some((_, permit)) = st.reservation.take() {
                pool.release(permit);
            }
        }
    }

    /// After a pump: re-index the deadlines and credit state of every
    /// touched shard, then forget the touches (kept when the pump stopped
    /// at its iteration bound with work left, so the next one resumes).
    pub(super) fn settle(&mut self, now: Instant, settled: bool) {
        let period = self.config.batching.period;
        for &slot in &self.dirty {
            let Some((shard, st)) = self.shards.at_mut(slot) else {
                continue;
            };
            Self::recount_credit(
                &mut self.credit_outstanding,
                &mut self.wanting,
                now,
                slot,
                st,
            );
            Self::release_idle_reservation(&mut self.pool, st);
            let next = st.next_deadline(period);
            if next != st.deadline {
                if let Some((at, _)) = st.deadline {
                    self.deadlines.remove(&(at, shard.clone(), slot));
                }
                if let Some((at, _)) = next {
                    self.deadlines.insert((at, shard.clone(), slot));
                }
                st.deadline = next;
            }
            if settled {
                st.touched = false;
            }
        }
        if settled {
            self.dirty.clear();
            self.dirty_epoch += 1;
        }
    }

    /// A shard is no longer read: drop it from every index.
    pub(super) fn forget(&mut self, shard: &ShardRef, slot: StateSlot, st: &ShardState) {
        if let Some((at, _)) = st.deadline {
            self.deadlines.remove(&(at, shard.clone(), slot));
        }
        if st.holds_credit {
            self.credit_outstanding -= 1;
        }
        if st.listed {
            self.wanting.retain(|&s| s != slot);
        }
        self.awaiting_arn.remove(shard);
        if st.touched {
            self.dirty.retain(|&s| s != slot);
            self.dirty_epoch += 1;
        }
    }
}
