//! The oracles: every "must" of SPEC.md, checked as the world runs.
//!
//! The world tells the oracles what happened (records written, batches
//! delivered, acks, lease-table writes applied, actions sent, leases
//! gained and lost); each hook checks its rules at once and returns a
//! [`Violation`] that stops the run. What is checked (SPEC section):
//!
//! - `delivery-requires-lease` (4): a batch is delivered only while the lease
//!   table holds (this worker, this token) for its shard; so a zombie never
//!   delivers after a takeover, and no two workers deliver a shard with one
//!   token.
//! - `batch-metadata` (3): a batch's first/last positions are those of the
//!   records it carries, and it is cut from a chunk not yet freed.
//! - `checkpoint-monotonic` (3): a lease row's checkpoint never decreases.
//! - `checkpoint-covers-unacked` (3): a written checkpoint never covers a
//!   record that no worker acknowledged; SHARD_END only for a closed shard
//!   whose records were all acknowledged.
//! - `single-holder` (4): no two live workers hold one shard with one token;
//!   a worker never takes a lease from itself nor acquires a shard it reads.
//! - `parent-first` (5): no record of a child shard is delivered before
//!   every record of its parents was.
//! - `subscribe-rate` (1, 6): a worker never calls SubscribeToShard for a
//!   shard sooner than 1 s after its previous call nor 5 s after a
//!   ResourceInUse, nor sooner than the smallest backoff after an error
//!   (all on its own clock).
//! - `one-reader` (4): at most one subscription or GetRecords per shard per
//!   worker.
//! - `graceful-no-duplicates` (4): after a graceful hand-off (the owner's
//!   deliveries all acknowledged when it transferred), the taker delivers
//!   none of the owner's records again.
//! - `no-loss` (3): every record is delivered before it leaves retention,
//!   and after the heal phase every record was acknowledged. A fleet that
//!   starts at LATEST is excused the records that arrived before the
//!   anchor of their shard's lineage (the earliest `created_ms` of the
//!   shard's row and of its parents' rows when it was created), never a
//!   record after it. A sub-record of a misrouted KPL aggregate whose hash
//!   key lies outside the range of the shard it landed on is excused (every
//!   consumer drops it, as KCL's deaggregate does); every other sub-record
//!   of the aggregate is not.
//! - `kpl-range` (8): such a sub-record is never delivered.
//! - pool accounting and shutdown (7, 9) are checked by the world through
//!   `Worker::check_invariants` and `pool_used`.
//!
//! Invariants of this module: it never changes the world; a record's first
//! delivery time, once set, never changes.

use std::collections::BTreeMap;
use std::time::Duration;

use kinesin_core::backoff::{jitter_bounds, Backoff};
use kinesin_core::ids::{FencingToken, Owner, ShardRef};
use kinesin_core::io::BatchMeta;
use kinesin_core::sequence::{Checkpoint, ExtSeq};
use kinesin_core::table::{LeaseRow, LeaseWrite};

use crate::sched::{Micros, SEC};

/// A broken rule: which oracle, when, and what happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("[{oracle}] at {}.{:06}s: {message}", at / SEC, at % SEC)]
pub struct Violation {
    /// True time of the step that broke it.
    pub at: Micros,
    /// Oracle name.
    pub oracle: &'static str,
    /// What happened.
    pub message: String,
}

/// Result of an oracle hook.
pub type Check = Result<(), Violation>;

fn fail(at: Micros, oracle: &'static str, message: String) -> Check {
    Err(Violation {
        at,
        oracle,
        message,
    })
}

/// One user record as the oracles track it.
#[derive(Clone, Debug)]
pub struct UserRecord {
    /// Kinesis shard index.
    pub shard: usize,
    /// Position.
    pub ext: ExtSeq,
    /// When first delivered.
    pub first_delivery: Option<Micros>,
    /// Acknowledged to a worker that held it.
    pub acked: bool,
    /// Left retention.
    pub trimmed: bool,
    /// The last (owner, token) that delivered it.
    pub holder: Option<(Owner, FencingToken)>,
    /// ApproximateArrivalTimestamp (unix ms).
    pub arrival_ms: u64,
    /// Excused from delivery: the fleet starts at LATEST and the record
    /// arrived before its shard's anchor, or it is `foreign`.
    pub excused: bool,
    /// A KPL sub-record whose hash key lies outside its shard's range
    /// (a misrouted aggregate): every consumer drops it.
    pub foreign: bool,
}

/// Per-shard bookkeeping.
#[derive(Clone, Debug, Default)]
pub struct ShardBook {
    /// Parent shard indices.
    pub parents: Vec<usize>,
    /// Closed for writes.
    pub closed: bool,
    /// User record ids in shard order.
    pub users: Vec<u64>,
    /// users index where each Kinesis record's user records start.
    pub krec_start: Vec<usize>,
    /// First record (index into `users`) not yet acknowledged or trimmed.
    pub first_unsettled: usize,
    /// Records delivered at least once (or trimmed, or excused).
    pub delivered: usize,
    /// LATEST only: records that arrived before this instant (unix ms) need
    /// not be delivered. The anchor of the shard's lineage: the earliest
    /// `created_ms` of its row and of its parents' rows that existed when
    /// its own was created (a child's records after its parents' anchor are
    /// newer than the anchor, so none may be skipped).
    pub anchor_ms: Option<u64>,
    /// The `created_ms` of the shard's lease row, once created.
    pub row_created_ms: Option<u64>,
}

/// Tokens whose lease came by a graceful transfer.
type GracefulKey = (ShardRef, FencingToken);

/// Per-worker subscribe bookkeeping (local microseconds).
#[derive(Clone, Debug, Default)]
struct SubscribeBook {
    last_call: Option<Micros>,
    resource_in_use: Option<Micros>,
    error: Option<Micros>,
}

/// Counters for the summary.
#[derive(Clone, Debug, Default)]
pub struct OracleStats {
    /// User records written.
    pub records: u64,
    /// Deliveries of a record under an (owner, token) other than its previous one.
    pub duplicates: u64,
    /// Checkpoint writes that did not move the row's checkpoint.
    pub idle_checkpoints: u64,
    /// User records outside their shard's hash range (`foreign`).
    pub foreign: u64,
}

/// Every oracle's state.
#[derive(Default)]
pub struct Oracles {
    /// All user records by id.
    pub records: Vec<UserRecord>,
    /// Per shard.
    pub shards: Vec<ShardBook>,
    graceful: BTreeMap<GracefulKey, Owner>,
    subscribe: BTreeMap<(Owner, ShardRef), SubscribeBook>,
    /// Live holders per shard, from LeaseAcquired / LeaseLost: (owner, token).
    holders: BTreeMap<ShardRef, Vec<(Owner, FencingToken)>>,
    /// Counters.
    pub stats: OracleStats,
    /// The fleet starts shards without a checkpoint at LATEST: records
    /// before a shard's anchor are excused (`no-loss` still holds for every
    /// record after it).
    pub latest: bool,
    /// The fleet starts shards without a checkpoint AT_TIMESTAMP of this
    /// unix time: every shard's anchor, whenever its row was created.
    pub start_at_ms: Option<u64>,
}

impl Oracles {
    /// A new shard.
    pub fn add_shard(&mut self, parents: Vec<usize>) {
        self.shards.push(ShardBook {
            parents,
            ..ShardBook::default()
        });
    }

    /// A Kinesis record with these user records (in sub order) was written.
    pub fn written(
        &mut self,
        shard: usize,
        arrival_ms: u64,
        exts: impl IntoIterator<Item = ExtSeq>,
    ) -> Vec<u64> {
        self.written_kpl(shard, arrival_ms, exts, &[])
    }

    /// A KPL aggregate was written: `foreign[i]` says whether its `i`th
    /// sub-record's hash key lies outside the shard's range (missing:
    /// inside). Those are excused from `no-loss` and must never be
    /// delivered; every other one must.
    pub fn written_kpl(
        &mut self,
        shard: usize,
        arrival_ms: u64,
        exts: impl IntoIterator<Item = ExtSeq>,
        foreign: &[bool],
    ) -> Vec<u64> {
        let book = &mut self.shards[shard];
        book.krec_start.push(book.users.len());
        let before_anchor = book.anchor_ms.is_some_and(|a| arrival_ms < a);
        let mut ids = Vec::new();
        let mut any_excused = false;
        for (i, ext) in exts.into_iter().enumerate() {
            let foreign = foreign.get(i).copied().unwrap_or(false);
            let excused = before_anchor || foreign;
            any_excused |= excused;
            self.stats.foreign += u64::from(foreign);
            let id = self.records.len() as u64;
            self.records.push(UserRecord {
                shard,
                ext,
                first_delivery: None,
                acked: false,
                trimmed: false,
                holder: None,
                arrival_ms,
                excused,
                foreign,
            });
            book.delivered += usize::from(excused);
            book.users.push(id);
            ids.push(id);
        }
        self.stats.records += ids.len() as u64;
        if any_excused {
            // Settled from the start: a checkpoint may cover them.
            self.advance(shard);
        }
        ids
    }

    /// A shard's lease row was created (LATEST: its anchor is set once).
    /// An operator deleted the lease row of `shard` (its stream was
    /// recreated and the core stopped with an error naming the old rows):
    /// the row created next is the shard's new start, anchored again
    /// (a LATEST start then begins at it, as the configuration says).
    pub fn row_deleted(&mut self, shard: usize) {
        self.shards[shard].row_created_ms = None;
    }

    /// A row without a checkpoint, created for a stream since deleted and
    /// recreated under the same name, names `shard` (the new stream's
    /// shard of the same id): nothing in it proves it older than the
    /// stream, so it starts the shard as if created for it (LATEST: at its
    /// `created_ms`, which a writer's clock ahead of ours puts after the
    /// new stream's first records).
    pub fn row_inherited(&mut self, shard: usize, created_ms: u64) {
        self.anchored(shard, created_ms);
    }

    fn anchored(&mut self, shard: usize, created_ms: u64) {
        if self.shards[shard].row_created_ms.is_some() {
            return;
        }
        self.shards[shard].row_created_ms = Some(created_ms);
        let anchor = match self.start_at_ms {
            Some(t) => t,
            None if self.latest => self.shards[shard]
                .parents
                .iter()
                .filter_map(|&p| self.shards[p].row_created_ms)
                .fold(created_ms, u64::min),
            None => return,
        };
        let book = &mut self.shards[shard];
        book.anchor_ms = Some(anchor);
        for &id in &book.users {
            let r = &mut self.records[id as usize];
            if r.arrival_ms < anchor && !r.excused {
                r.excused = true;
                if r.first_delivery.is_none() {
                    book.delivered += 1;
                }
            }
        }
        self.advance(shard);
    }

    /// The shard's stream was deleted: its records not yet delivered are
    /// gone with it (excused), and it is closed.
    pub fn deleted(&mut self, shard: usize) {
        let book = &mut self.shards[shard];
        book.closed = true;
        for &id in &book.users {
            let r = &mut self.records[id as usize];
            if !r.excused && r.first_delivery.is_none() {
                r.excused = true;
                book.delivered += 1;
            } else {
                r.excused = true;
            }
        }
        self.advance(shard);
    }

    /// Kinesis records `krecs` of a shard left retention.
    pub fn trimmed(&mut self, now: Micros, shard: usize, krecs: std::ops::Range<usize>) -> Check {
        let book = &self.shards[shard];
        let from = book.krec_start[krecs.start];
        let to = book
            .krec_start
            .get(krecs.end)
            .copied()
            .unwrap_or(book.users.len());
        for i in from..to {
            let id = book.users[i];
            let r = &mut self.records[id as usize];
            if r.first_delivery.is_none() && !r.excused {
                return fail(
                    now,
                    "no-loss",
                    format!(
                        "record {id} ({}) of shard {shard} left retention undelivered",
                        r.ext
                    ),
                );
            }
            r.trimmed = true;
        }
        self.advance(shard);
        Ok(())
    }

    fn advance(&mut self, shard: usize) {
        let book = &mut self.shards[shard];
        while let Some(&id) = book.users.get(book.first_unsettled) {
            let r = &self.records[id as usize];
            if !(r.acked || r.trimmed || r.excused) {
                break;
            }
            book.first_unsettled += 1;
        }
    }

    /// A batch was delivered by `owner`; `row` is the lease row now.
    #[allow(clippy::too_many_arguments)]
    pub fn delivered(
        &mut self,
        now: Micros,
        owner: &Owner,
        shard: usize,
        batch: &BatchMeta,
        ids: &[u64],
        row: Option<&LeaseRow>,
    ) -> Check {
        let held = row.is_some_and(|r| r.owner.as_ref() == Some(owner) && r.token == batch.token);
        if !held {
            return fail(
                now,
                "delivery-requires-lease",
                format!(
                    "{owner} delivered {:?} of {} with token {:?} but the table says owner {:?} token {:?}",
                    batch.id,
                    batch.shard,
                    batch.token,
                    row.and_then(|r| r.owner.clone()),
                    row.map(|r| r.token)
                ),
            );
        }
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return fail(
                now,
                "batch-metadata",
                format!("{:?} carries no record", batch.id),
            );
        };
        if self.records[first as usize].ext != batch.first
            || self.records[last as usize].ext != batch.last
        {
            return fail(
                now,
                "batch-metadata",
                format!(
                    "{:?} says {}..{} but carries {}..{}",
                    batch.id,
                    batch.first,
                    batch.last,
                    self.records[first as usize].ext,
                    self.records[last as usize].ext
                ),
            );
        }
        let holder = (owner.clone(), batch.token);
        for &id in ids {
            let r = &self.records[id as usize];
            if r.foreign {
                return fail(
                    now,
                    "kpl-range",
                    format!(
                        "{owner} delivered {} of shard {shard}, a KPL sub-record whose hash key is outside the shard's range",
                        r.ext
                    ),
                );
            }
            if r.shard != shard {
                return fail(
                    now,
                    "batch-metadata",
                    format!(
                        "{:?} of shard {shard} carries record {id} of shard {}",
                        batch.id, r.shard
                    ),
                );
            }
            if r.first_delivery.is_none() {
                for &p in &self.shards[shard].parents {
                    let pb = &self.shards[p];
                    if !pb.closed || pb.delivered < pb.users.len() {
                        return fail(
                            now,
                            "parent-first",
                            format!(
                                "record {} of child shard {shard} delivered while parent {p} has {} of {} records delivered",
                                r.ext,
                                pb.delivered,
                                pb.users.len()
                            ),
                        );
                    }
                }
            }
            if let Some(prev) = &r.holder {
                if *prev != holder {
                    self.stats.duplicates += 1;
                    if self.graceful.get(&(batch.shard.clone(), batch.token)) == Some(&prev.0)
                        && prev.1.next() == batch.token
                    {
                        return fail(
                            now,
                            "graceful-no-duplicates",
                            format!(
                                "{owner} redelivered {} of {} that {} delivered before a graceful hand-off",
                                r.ext, batch.shard, prev.0
                            ),
                        );
                    }
                }
            }
            let r = &mut self.records[id as usize];
            if r.first_delivery.is_none() {
                r.first_delivery = Some(now);
                if !r.excused {
                    self.shards[shard].delivered += 1;
                }
            }
            r.holder = Some(holder.clone());
        }
        Ok(())
    }

    /// A worker that held the batch's lease acknowledged these records.
    pub fn acked(&mut self, shard: usize, ids: &[u64]) {
        for &id in ids {
            self.records[id as usize].acked = true;
        }
        self.advance(shard);
    }

    /// A lease write was applied (`graceful`: for a Transfer, whether the
    /// owner's deliveries under its token were all acknowledged).
    pub fn lease_written(
        &mut self,
        now: Micros,
        shard: usize,
        write: &LeaseWrite,
        before: Option<&LeaseRow>,
        after: &LeaseRow,
        graceful: bool,
    ) -> Check {
        if let LeaseWrite::Take {
            expect_owner: Some(o),
            to,
            ..
        } = write
        {
            if o == to {
                return fail(
                    now,
                    "single-holder",
                    format!("{to} took {} from itself", write.shard()),
                );
            }
        }
        if let Some(b) = before {
            if after.token < b.token {
                return fail(
                    now,
                    "single-holder",
                    format!(
                        "token of {} went from {:?} to {:?}",
                        b.shard, b.token, after.token
                    ),
                );
            }
            if let (Some(old), Some(new)) = (&b.checkpoint, &after.checkpoint) {
                if new < old {
                    return fail(
                        now,
                        "checkpoint-monotonic",
                        format!(
                            "{} checkpoint moved back from {old:?} to {new:?} by {write:?}",
                            b.shard
                        ),
                    );
                }
            }
            if matches!(write, LeaseWrite::Checkpoint { .. }) && b.checkpoint == after.checkpoint {
                self.stats.idle_checkpoints += 1;
            }
        }
        if after.checkpoint != before.and_then(|b| b.checkpoint.clone()) {
            if let Some(cp) = &after.checkpoint {
                self.check_checkpoint(now, shard, cp)?;
            }
        }
        if let LeaseWrite::Create(row) = write {
            self.anchored(shard, row.created_ms);
        }
        if let LeaseWrite::Transfer { owner, .. } = write {
            if graceful {
                self.graceful
                    .insert((write.shard().clone(), after.token), owner.clone());
            }
        }
        Ok(())
    }

    fn check_checkpoint(&self, now: Micros, shard: usize, cp: &Checkpoint) -> Check {
        let book = &self.shards[shard];
        match book.users.get(book.first_unsettled) {
            None => {
                if *cp == Checkpoint::ShardEnd && !book.closed {
                    return fail(
                        now,
                        "checkpoint-covers-unacked",
                        format!("SHARD_END written for open shard {shard}"),
                    );
                }
                Ok(())
            }
            Some(&id) => {
                let r = &self.records[id as usize];
                if cp.covers(&r.ext) {
                    return fail(
                        now,
                        "checkpoint-covers-unacked",
                        format!(
                            "checkpoint {cp:?} of shard {shard} covers record {} (arrived {} ms, anchor {:?}) which nobody acknowledged",
                            r.ext, r.arrival_ms, book.anchor_ms
                        ),
                    );
                }
                Ok(())
            }
        }
    }

    /// A worker acquired a lease.
    pub fn acquired(
        &mut self,
        now: Micros,
        owner: &Owner,
        shard: &ShardRef,
        token: FencingToken,
    ) -> Check {
        let list = self.holders.entry(shard.clone()).or_default();
        if let Some((o, t)) = list.iter().find(|(o, t)| o == owner || *t == token) {
            return fail(
                now,
                "single-holder",
                format!("{owner} acquired {shard} with {token:?} while {o} holds it with {t:?}"),
            );
        }
        list.push((owner.clone(), token));
        Ok(())
    }

    /// A worker lost a lease (or died).
    pub fn lost(&mut self, owner: &Owner, shard: &ShardRef) {
        if let Some(list) = self.holders.get_mut(shard) {
            list.retain(|(o, _)| o != owner);
        }
        // Backoff paces retries of one reading; a later lease starts afresh
        // (the 1 s and 5 s rules, which are AWS's, still apply).
        if let Some(book) = self.subscribe.get_mut(&(owner.clone(), shard.clone())) {
            book.error = None;
        }
    }

    /// A worker process died: it holds nothing any more.
    pub fn died(&mut self, owner: &Owner) {
        for list in self.holders.values_mut() {
            list.retain(|(o, _)| o != owner);
        }
        self.subscribe.retain(|(o, _), _| o != owner);
    }

    /// Shards held per owner (from the events).
    pub fn held_by(&self, owner: &Owner) -> usize {
        self.holders
            .values()
            .filter(|l| l.iter().any(|(o, _)| o == owner))
            .count()
    }

    /// Whether `owner` acquired `shard` (per its events) and still holds it.
    pub fn holds(&self, owner: &Owner, shard: &ShardRef) -> bool {
        self.holders
            .get(shard)
            .is_some_and(|l| l.iter().any(|(o, _)| o == owner))
    }

    /// A worker sent SubscribeToShard at its local time `local`.
    pub fn subscribe_sent(
        &mut self,
        now: Micros,
        owner: &Owner,
        shard: &ShardRef,
        local: Micros,
    ) -> Check {
        let book = self
            .subscribe
            .entry((owner.clone(), shard.clone()))
            .or_default();
        if let Some(prev) = book.last_call {
            if local < prev + SEC {
                return fail(
                    now,
                    "subscribe-rate",
                    format!(
                        "{owner} subscribed {shard} {}ms after its previous call",
                        (local - prev) / 1000
                    ),
                );
            }
        }
        if let Some(riu) = book.resource_in_use {
            if local < riu + 5 * SEC {
                return fail(
                    now,
                    "subscribe-rate",
                    format!(
                        "{owner} subscribed {shard} {}ms after a ResourceInUse",
                        (local - riu) / 1000
                    ),
                );
            }
        }
        if let Some(err) = book.error.take() {
            let min = jitter_bounds(Backoff::BASE).0;
            if Duration::from_micros(local - err) < min {
                return fail(
                    now,
                    "backoff-bounds",
                    format!(
                        "{owner} resubscribed {shard} {}us after an error (minimum {min:?})",
                        local - err
                    ),
                );
            }
        }
        book.last_call = Some(local);
        Ok(())
    }

    /// A subscription error reached a worker at its local time `local`.
    pub fn subscribe_failed(
        &mut self,
        owner: &Owner,
        shard: &ShardRef,
        local: Micros,
        resource_in_use: bool,
    ) {
        let book = self
            .subscribe
            .entry((owner.clone(), shard.clone()))
            .or_default();
        if resource_in_use {
            book.resource_in_use = Some(local);
        }
        book.error = Some(local);
    }

    /// Records of shards not yet acknowledged (retained ones).
    pub fn unsettled(&self) -> Vec<(usize, u64)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = (b.first_unsettled..b.users.len())
                    .filter(|&k| {
                        let r = &self.records[b.users[k] as usize];
                        !r.acked && !r.trimmed && !r.excused
                    })
                    .count();
                (n > 0).then_some((i, n as u64))
            })
            .collect()
    }
}
