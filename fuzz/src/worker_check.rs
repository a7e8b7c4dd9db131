//! The `worker` fuzz target: whole-[`Worker`] operation sequences against a
//! tiny Kinesis + DynamoDB model (a child module of `checks`, so it shares
//! its helpers). See [`check_worker`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::Unstructured;

use kinesin_core::config::{Batching, Config, EfoConsumer, Retrieval};
use kinesin_core::ids::{
    BatchId, ChunkId, FencingToken, Owner, ShardId, ShardRef, StreamId, SubId,
};
use kinesin_core::io::{
    Action, BatchMeta, ChildShard, Chunk, ConsumerInfo, ConsumerStatus, ErrorClass, Event, Input,
    RecordMeta, ShardInfo, ShardIterator,
};
use kinesin_core::kpl::HashRange;
use kinesin_core::sequence::{Checkpoint, ExtSeq, StartPosition};
use kinesin_core::table::{HeartbeatRow, LeaseRow, LeaseWrite};
use kinesin_core::worker::Worker;

use super::{any, chance, check_config_bounds, int, seq_of, MAX_STEPS};

/// One shard of the harness's Kinesis model.
struct ModelShard {
    id: ShardId,
    parents: Vec<ShardId>,
    /// Kinesis records; each holds one user record, or several (KPL).
    records: Vec<Vec<RecordMeta>>,
    closed: bool,
    children: Vec<ChildShard>,
}

impl ModelShard {
    fn info(&self) -> ShardInfo {
        ShardInfo {
            shard: self.id.clone(),
            parents: self.parents.clone(),
            hash_range: HashRange::FULL,
            ending_seq: self.closed.then(|| {
                self.records
                    .last()
                    .map_or_else(|| seq_of(1), |r| r[0].ext.seq.clone())
            }),
            // No sequence number is below zero: never flags a row.
            starting_seq: Some(seq_of(0)),
        }
    }

    /// Index of the first Kinesis record a read from `position` returns.
    fn start_index(&self, position: &StartPosition) -> usize {
        let first = |pred: &dyn Fn(&RecordMeta) -> bool| {
            self.records
                .iter()
                .position(|r| pred(&r[0]))
                .unwrap_or(self.records.len())
        };
        match position {
            StartPosition::TrimHorizon => 0,
            StartPosition::Latest => self.records.len(),
            StartPosition::AtTimestamp { unix_ms } => first(&|r| r.arrival_ms >= *unix_ms),
            StartPosition::AtSequence(s) => first(&|r| r.ext.seq >= *s),
            StartPosition::AtSubSequence(e) => first(&|r| r.ext.seq >= e.seq),
            StartPosition::AfterSequence(s) => first(&|r| r.ext.seq > *s),
        }
    }

    /// Index of user record `ext` in the shard's flattened order.
    fn user_index(&self, ext: &ExtSeq) -> Option<usize> {
        self.records.iter().flatten().position(|r| r.ext == *ext)
    }

    /// Index of the first user record `cp` does not cover.
    fn first_uncovered(&self, cp: Option<&Checkpoint>) -> usize {
        self.records
            .iter()
            .flatten()
            .position(|r| cp.is_none_or(|c| !c.covers(&r.ext)))
            .unwrap_or_else(|| self.records.iter().map(Vec::len).sum())
    }
}

/// An open read position (shard iterator or subscription) of the model.
#[derive(Clone)]
struct Cursor {
    shard: ShardRef,
    next: usize,
    /// Leave out user records this position does not admit (first read).
    filter: Option<StartPosition>,
}

/// One delivered batch as the application saw it.
struct Seen {
    batch: BatchMeta,
    acked: bool,
}

/// The harness: a tiny Kinesis + DynamoDB + rival worker + application
/// around one [`Worker`], all driven from one `Unstructured`.
struct WorkerHarness {
    now: Instant,
    base: Instant,
    unix_ms: u64,
    me: Owner,
    rival: Owner,
    rival_beat: u64,
    fault_percent: u8,
    streams: BTreeMap<StreamId, Vec<ModelShard>>,
    next_seq: u128,
    table: BTreeMap<ShardRef, LeaseRow>,
    heartbeats: BTreeMap<Owner, HeartbeatRow>,
    consumers: BTreeMap<StreamId, bool>,
    iterators: Vec<Cursor>,
    subs: BTreeMap<SubId, Option<Cursor>>,
    pending: Vec<Action>,
    answered: Vec<Input>,
    chunks: BTreeMap<ChunkId, Vec<RecordMeta>>,
    done_chunks: BTreeSet<ChunkId>,
    seen: BTreeMap<BatchId, Seen>,
    unacked: Vec<BatchId>,
    held: BTreeMap<ShardRef, FencingToken>,
    /// Per held lease: index of the next user record a new batch must start at.
    expect_next: BTreeMap<ShardRef, Option<usize>>,
    shutdown: bool,
    complete: bool,
    trace: std::hash::DefaultHasher,
}

impl WorkerHarness {
    fn shard(&self, r: &ShardRef) -> Option<&ModelShard> {
        self.streams
            .get(&r.stream)?
            .iter()
            .find(|s| s.id == r.shard)
    }

    fn record(&mut self, what: &dyn std::fmt::Debug) {
        use std::hash::Hash;
        let line = format!("{what:?}");
        if trace_enabled() {
            let at = self.now.duration_since(self.base).as_millis();
            eprintln!("[{at:>7} ms] {line}");
        }
        line.hash(&mut self.trace);
    }

    /// Append `n` Kinesis records (some of them KPL aggregates) to a shard.
    fn produce(&mut self, u: &mut Unstructured<'_>) {
        let keys: Vec<(StreamId, usize)> = self
            .streams
            .iter()
            .flat_map(|(s, shards)| {
                shards
                    .iter()
                    .enumerate()
                    .filter(|(_, sh)| !sh.closed)
                    .map(move |(i, _)| (s.clone(), i))
            })
            .collect();
        if keys.is_empty() {
            return;
        }
        let (stream, i) = keys[int(u, 0, keys.len() - 1)].clone();
        for _ in 0..int(u, 1, 3) {
            self.next_seq += u128::from(int(u, 1u8, 40));
            let seq = seq_of(self.next_seq);
            let subs = if chance(u, 20) { int(u, 2u32, 4) } else { 1 };
            let arrival_ms = self.unix_ms + self.now.duration_since(self.base).as_millis() as u64;
            let record: Vec<RecordMeta> = (0..subs)
                .map(|sub| RecordMeta {
                    ext: ExtSeq::new(seq.clone(), sub),
                    last_sub: sub + 1 == subs,
                    bytes: int(u, 1, 300),
                    arrival_ms,
                })
                .collect();
            if let Some(shards) = self.streams.get_mut(&stream) {
                shards[i].records.push(record);
            }
        }
    }

    /// Records a read returns from `cursor`: up to `limit` Kinesis records.
    fn read(&self, cursor: &Cursor, limit: usize) -> (Vec<RecordMeta>, usize, bool) {
        let Some(shard) = self.shard(&cursor.shard) else {
            return (Vec::new(), cursor.next, true);
        };
        let end = (cursor.next + limit).min(shard.records.len());
        let records: Vec<RecordMeta> = shard.records[cursor.next.min(end)..end]
            .iter()
            .flatten()
            .filter(|r| cursor.filter.as_ref().is_none_or(|p| p.admits(&r.ext)))
            .cloned()
            .collect();
        let at_end = shard.closed && end == shard.records.len();
        (records, end, at_end)
    }

    fn behind(&self, cursor: &Cursor) -> u64 {
        self.shard(&cursor.shard).map_or(0, |s| {
            s.records.len().saturating_sub(cursor.next) as u64 * 1000
        })
    }

    fn children(&self, shard: &ShardRef) -> Vec<ChildShard> {
        self.shard(shard)
            .map_or_else(Vec::new, |s| s.children.clone())
    }

    fn fault(&self, u: &mut Unstructured<'_>, classes: &[ErrorClass]) -> Option<ErrorClass> {
        chance(u, self.fault_percent).then(|| classes[int(u, 0, classes.len() - 1)])
    }

    /// Answer pending action `i` as the services would (or with a fault).
    /// Returns the input to feed, if the action has an answer.
    fn answer(&mut self, u: &mut Unstructured<'_>, i: usize, faults: bool) -> Option<Input> {
        use ErrorClass::*;
        let action = self.pending.remove(i);
        let fault = |h: &Self, u: &mut Unstructured<'_>, classes: &[ErrorClass]| {
            if faults {
                h.fault(u, classes)
            } else {
                None
            }
        };
        Some(match action {
            Action::ListShards { op, stream } => Input::Shards {
                op,
                result: match fault(self, u, &[Throttled, Transient, LimitExceeded]) {
                    Some(class) => Err(class),
                    None => Ok(self
                        .streams
                        .get(&stream)
                        .map_or_else(Vec::new, |s| s.iter().map(ModelShard::info).collect())),
                },
            },
            Action::RegisterConsumer { op, stream, name } => {
                let result = match fault(self, u, &[Throttled, Transient, LimitExceeded]) {
                    Some(class) => Err(class),
                    None if self.consumers.contains_key(&stream) => Err(ResourceInUse),
                    None => {
                        let active = chance(u, 50);
                        self.consumers.insert(stream.clone(), active);
                        Ok(ConsumerInfo {
                            arn: format!("{stream}/consumer/{name}"),
                            status: if active {
                                ConsumerStatus::Active
                            } else {
                                ConsumerStatus::Creating
                            },
                        })
                    }
                };
                Input::Consumer { op, result }
            }
            Action::DescribeConsumer {
                op, stream, name, ..
            } => {
                let result = match fault(self, u, &[Throttled, Transient]) {
                    Some(class) => Err(class),
                    None => match self.consumers.get(&stream).copied() {
                        None => Err(ResourceNotFound),
                        Some(active) => {
                            let active = active || chance(u, 60);
                            self.consumers.insert(stream.clone(), active);
                            Ok(ConsumerInfo {
                                arn: format!("{stream}/consumer/{name}"),
                                status: if active {
                                    ConsumerStatus::Active
                                } else {
                                    ConsumerStatus::Creating
                                },
                            })
                        }
                    },
                };
                Input::Consumer { op, result }
            }
            Action::Subscribe {
                sub,
                shard,
                position,
                ..
            } => {
                if let Some(class) = fault(
                    self,
                    u,
                    &[ResourceInUse, Throttled, Transient, LimitExceeded],
                ) {
                    self.subs.insert(sub, None);
                    Input::SubscriptionError { sub, class }
                } else {
                    let next = self.shard(&shard).map_or(0, |s| s.start_index(&position));
                    self.subs.insert(
                        sub,
                        Some(Cursor {
                            shard,
                            next,
                            filter: Some(position),
                        }),
                    );
                    return None;
                }
            }
            Action::Pull { sub, chunk } => {
                let cursor = self.subs.get(&sub).cloned().flatten();
                let Some(mut cursor) = cursor else {
                    // Failed or unknown subscription: the stream is closed.
                    return Some(Input::SubscriptionError {
                        sub,
                        class: Transient,
                    });
                };
                if let Some(class) = fault(self, u, &[Transient, ResourceInUse, Throttled]) {
                    self.subs.insert(sub, None);
                    return Some(Input::SubscriptionError { sub, class });
                }
                if chance(u, 5) {
                    self.subs.insert(sub, None);
                    return Some(Input::SubscriptionEnded { sub });
                }
                let (records, next, at_end) = self.read(&cursor, int(u, 0, 3));
                let continuation = (!at_end).then(|| {
                    let shard = self.shard(&cursor.shard);
                    shard
                        .and_then(|s| next.checked_sub(1).and_then(|i| s.records.get(i)))
                        .map_or_else(|| seq_of(0), |r| r[0].ext.seq.clone())
                });
                let child_shards = if at_end {
                    self.children(&cursor.shard)
                } else {
                    Vec::new()
                };
                // The filter stays for the whole subscription, as in the
                // runtime (kinesin-aws `Subscription::next_event`): the first
                // event may be empty and the aggregate holding the position
                // arrive in a later one.
                cursor.next = next;
                let millis_behind = self.behind(&cursor);
                self.subs.insert(sub, (!at_end).then_some(cursor));
                self.chunks.insert(chunk, records.clone());
                Input::SubscriptionEvent {
                    sub,
                    chunk,
                    data: Chunk {
                        kinesis_records: records.len() as u32,
                        records,
                        millis_behind,
                        continuation,
                        child_shards,
                    },
                }
            }
            Action::Cancel { sub } => {
                self.subs.insert(sub, None);
                self.pending
                    .retain(|a| !matches!(a, Action::Pull { sub: s, .. } if *s == sub));
                return None;
            }
            Action::GetShardIterator {
                op,
                shard,
                position,
            } => {
                let result = match fault(
                    self,
                    u,
                    &[Throttled, Transient, ResourceNotFound, InvalidArgument],
                ) {
                    Some(class) => Err(class),
                    None => {
                        let next = self.shard(&shard).map_or(0, |s| s.start_index(&position));
                        self.iterators.push(Cursor {
                            shard,
                            next,
                            filter: Some(position),
                        });
                        Ok(ShardIterator(format!(
                            "iterator-{}",
                            self.iterators.len() - 1
                        )))
                    }
                };
                Input::Iterator { op, result }
            }
            Action::GetRecords {
                op,
                iterator,
                limit,
                chunk,
                skip_through,
                ..
            } => {
                let cursor = iterator
                    .0
                    .strip_prefix("iterator-")
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| self.iterators.get(n).cloned());
                let result = match (
                    cursor,
                    fault(self, u, &[Throttled, Transient, ExpiredIterator]),
                ) {
                    (_, Some(class)) => Err(class),
                    (None, None) => Err(ExpiredIterator),
                    (Some(cursor), None) => {
                        let max = (limit as usize).min(int(u, 0, 4));
                        let (mut records, next, at_end) = self.read(&cursor, max);
                        if let Some(skip) = &skip_through {
                            records.retain(|r| r.ext > *skip);
                        }
                        let moved = Cursor {
                            next,
                            filter: None,
                            ..cursor.clone()
                        };
                        let data = Chunk {
                            kinesis_records: records.len() as u32,
                            records: records.clone(),
                            millis_behind: self.behind(&moved),
                            continuation: None,
                            child_shards: if at_end {
                                self.children(&cursor.shard)
                            } else {
                                Vec::new()
                            },
                        };
                        self.chunks.insert(chunk, records);
                        let next_iterator = (!at_end).then(|| {
                            self.iterators.push(moved);
                            ShardIterator(format!("iterator-{}", self.iterators.len() - 1))
                        });
                        Ok((data, next_iterator))
                    }
                };
                Input::Records { op, result }
            }
            Action::ReadLeases { op, stream } => Input::Leases {
                op,
                result: match fault(self, u, &[Throttled, Transient]) {
                    Some(class) => Err(class),
                    None => Ok(self
                        .table
                        .values()
                        .filter(|r| r.shard.stream == stream)
                        .cloned()
                        .collect()),
                },
            },
            Action::WriteLease { op, write } => {
                self.check_lease_write(&write);
                let result = match fault(self, u, &[Throttled, Transient, Ambiguous]) {
                    Some(Ambiguous) => {
                        if chance(u, 50) {
                            let _ = self.apply(&write);
                        }
                        Err(Ambiguous)
                    }
                    Some(class) => Err(class),
                    None => self.apply(&write).map_err(|()| ConditionalFailed),
                };
                // Like DynamoDB (ALL_NEW), or like a store that returns
                // nothing.
                let row = match result {
                    Ok(()) if chance(u, 50) => self.table.get(write.shard()).cloned().map(Box::new),
                    _ => None,
                };
                Input::LeaseWritten { op, result, row }
            }
            Action::ReadHeartbeats { op } => Input::Heartbeats {
                op,
                result: match fault(self, u, &[Throttled, Transient]) {
                    Some(class) => Err(class),
                    None => Ok(self.heartbeats.values().cloned().collect()),
                },
            },
            Action::WriteHeartbeat { op, row } => {
                let result = match fault(self, u, &[Throttled, Transient, Ambiguous]) {
                    Some(class) => Err(class),
                    None => {
                        assert_eq!(row.owner, self.me, "heartbeat of another owner");
                        self.heartbeats.insert(row.owner.clone(), row);
                        Ok(())
                    }
                };
                Input::HeartbeatWritten { op, result }
            }
            Action::DeleteLease { op, shard, token } => {
                let result = match fault(self, u, &[Throttled, Transient, Ambiguous]) {
                    Some(class) => Err(class),
                    None if LeaseRow::delete_applies(self.table.get(&shard), token) => {
                        self.table.remove(&shard);
                        Ok(())
                    }
                    None => Err(ConditionalFailed),
                };
                Input::LeaseDeleted { op, result }
            }
            Action::DeleteHeartbeat { op, owner, beat } => {
                assert_ne!(owner, self.me, "deletes its own heartbeat row");
                let result = match fault(self, u, &[Throttled, Transient, Ambiguous]) {
                    Some(class) => Err(class),
                    None if HeartbeatRow::delete_applies(
                        self.heartbeats.get(&owner),
                        &owner,
                        beat,
                    ) =>
                    {
                        self.heartbeats.remove(&owner);
                        Ok(())
                    }
                    None => Err(ConditionalFailed),
                };
                Input::HeartbeatDeleted { op, result }
            }
        })
    }

    /// Apply a lease write to the table with its reference semantics.
    fn apply(&mut self, write: &LeaseWrite) -> Result<(), ()> {
        let shard = write.shard().clone();
        let next = write.apply(self.table.get(&shard)).map_err(|_| ())?;
        if let (Some(before), Some(cp)) = (
            self.table.get(&shard).and_then(|r| r.checkpoint.clone()),
            &next.checkpoint,
        ) {
            assert!(
                *cp >= before,
                "checkpoint of {shard:?} moved back: {before:?} -> {cp:?}"
            );
        }
        self.table.insert(shard, next);
        Ok(())
    }

    /// SPEC 3: a checkpoint written under a token never covers a record of
    /// a batch delivered under that token and not acknowledged.
    fn check_lease_write(&self, write: &LeaseWrite) {
        let (shard, token, cp) = match write {
            LeaseWrite::Checkpoint {
                shard,
                token,
                checkpoint,
                ..
            } => (shard, token, Some(checkpoint)),
            LeaseWrite::Transfer {
                shard,
                token,
                checkpoint,
                ..
            }
            | LeaseWrite::Release {
                shard,
                token,
                checkpoint,
                ..
            } => (shard, token, checkpoint.as_ref()),
            LeaseWrite::Create(_) | LeaseWrite::Take { .. } | LeaseWrite::RequestHandoff { .. } => {
                return
            }
        };
        let Some(cp) = cp else { return };
        for s in self.seen.values() {
            if s.batch.shard == *shard && s.batch.token == *token && !s.acked {
                assert!(
                    !cp.covers(&s.batch.first),
                    "{write:?} covers unacked batch {:?} ({}..={})",
                    s.batch.id,
                    s.batch.first,
                    s.batch.last
                );
            }
        }
    }

    /// What the rival worker does to the table behind our worker's back.
    fn rival(&mut self, u: &mut Unstructured<'_>) {
        let rows: Vec<ShardRef> = self.table.keys().cloned().collect();
        match int(u, 0u8, 4) {
            0 | 1 => {
                self.rival_beat += 1;
                let row = HeartbeatRow {
                    owner: self.rival.clone(),
                    beat: self.rival_beat,
                    held: self
                        .table
                        .values()
                        .filter(|r| r.owner.as_ref() == Some(&self.rival))
                        .count() as u32,
                    wants: Vec::new(),
                    alive: true,
                    streams: Vec::new(),
                };
                self.heartbeats.insert(self.rival.clone(), row);
            }
            _ if rows.is_empty() => {}
            2 => {
                let row = self.table[&rows[int(u, 0, rows.len() - 1)]].clone();
                let _ = self.apply(&LeaseWrite::Take {
                    shard: row.shard.clone(),
                    expect_owner: row.owner.clone(),
                    expect_token: row.token,
                    to: self.rival.clone(),
                });
            }
            3 => {
                let row = self.table[&rows[int(u, 0, rows.len() - 1)]].clone();
                if row.owner.as_ref() == Some(&self.rival) {
                    let _ = self.apply(&LeaseWrite::Release {
                        shard: row.shard.clone(),
                        owner: self.rival.clone(),
                        token: row.token,
                        checkpoint: None,
                    });
                }
            }
            _ => {
                let row = self.table[&rows[int(u, 0, rows.len() - 1)]].clone();
                if let Some(owner) = row.owner.clone() {
                    let _ = self.apply(&LeaseWrite::RequestHandoff {
                        shard: row.shard.clone(),
                        owner,
                        token: row.token,
                        pending: self.rival.clone(),
                    });
                }
            }
        }
    }

    /// Drain the worker's outputs, checking each, then its invariants.
    fn drain(&mut self, w: &mut Worker) {
        while let Some(action) = w.poll_action() {
            self.record(&action);
            self.pending.push(action);
        }
        while let Some(event) = w.poll_event() {
            self.record(&event);
            assert!(
                !self.complete || matches!(event, Event::ChunkDone { .. }),
                "{event:?} after ShutdownComplete"
            );
            match event {
                Event::Batch(b) => self.on_batch(b),
                Event::DeadLetter { batch, attempts } => {
                    assert!(attempts >= 1, "dead letter never delivered: {batch:?}");
                    assert!(batch.redelivery, "a dead letter was delivered before");
                    assert_eq!(
                        self.held.get(&batch.shard),
                        Some(&batch.token),
                        "dead letter without its lease: {batch:?}"
                    );
                    let seen = self
                        .seen
                        .get(&batch.id)
                        .expect("dead letter of a delivered batch");
                    assert!(!seen.acked, "dead letter after its ack");
                    assert_eq!(
                        seen.batch,
                        BatchMeta {
                            redelivery: seen.batch.redelivery,
                            ..batch.clone()
                        }
                    );
                    if !self.unacked.contains(&batch.id) {
                        self.unacked.push(batch.id);
                    }
                }
                Event::ChunkDone { chunk } => {
                    self.done_chunks.insert(chunk);
                }
                Event::LeaseAcquired { shard, token, .. } => {
                    assert!(!self.held.contains_key(&shard), "{shard:?} acquired twice");
                    for parent in self.shard(&shard).map_or(&[][..], |s| &s.parents[..]) {
                        let parent = ShardRef::new(shard.stream.clone(), parent.clone());
                        let ended = self.table.get(&parent).and_then(|r| r.checkpoint.as_ref());
                        // A parent's row is collected once every child has
                        // a checkpoint: such a child is active without it.
                        let collected = !self.table.contains_key(&parent)
                            && self
                                .table
                                .get(&shard)
                                .is_some_and(|r| r.checkpoint.is_some());
                        assert!(
                            collected || ended == Some(&Checkpoint::ShardEnd),
                            "{shard:?} taken before its parent ended ({ended:?})"
                        );
                    }
                    let row = self.table.get(&shard);
                    assert_eq!(
                        row.map(|r| r.token),
                        Some(token),
                        "acquired with the row's token"
                    );
                    assert_eq!(row.and_then(|r| r.owner.as_ref()), Some(&self.me));
                    let cp = row.and_then(|r| r.checkpoint.clone());
                    let start = self.shard(&shard).map(|s| s.first_uncovered(cp.as_ref()));
                    self.held.insert(shard.clone(), token);
                    self.expect_next.insert(shard, start);
                }
                Event::LeaseLost { shard, token, .. } => {
                    assert_eq!(
                        self.held.remove(&shard),
                        Some(token),
                        "lost a lease not held"
                    );
                    self.expect_next.remove(&shard);
                }
                Event::ShardFailed { shard, .. } => {
                    self.expect_next.insert(shard, None);
                }
                Event::Warning {
                    shard: Some(shard), ..
                } => {
                    // E.g. a checkpoint past retention fell back to TRIM_HORIZON.
                    if self.expect_next.contains_key(&shard) {
                        self.expect_next.insert(shard, None);
                    }
                }
                Event::ShutdownComplete => {
                    assert!(
                        self.shutdown,
                        "ShutdownComplete without shutdown (or Fatal)"
                    );
                    self.complete = true;
                }
                Event::Fatal { .. } => self.shutdown = true,
                Event::ShardEnded { .. }
                | Event::Warning { shard: None, .. }
                | Event::Health(_) => {}
            }
        }
        self.record(&w.poll_timeout());
        if let Err(broken) = w.check_invariants() {
            panic!("Worker::check_invariants: {broken}");
        }
        assert!(self.complete == w.is_done());
    }

    fn on_batch(&mut self, b: BatchMeta) {
        assert!(!b.is_empty(), "empty batch {b:?}");
        assert_eq!(
            self.held.get(&b.shard),
            Some(&b.token),
            "batch without its lease: {b:?}"
        );
        let records = self
            .chunks
            .get(&b.chunk)
            .expect("batch of a chunk the runtime filled");
        let recs = &records[b.range.start as usize..b.range.end as usize];
        assert_eq!(recs.first().map(|r| &r.ext), Some(&b.first), "{b:?}");
        assert_eq!(recs.last().map(|r| &r.ext), Some(&b.last), "{b:?}");
        assert_eq!(
            recs.iter().map(|r| u64::from(r.bytes)).sum::<u64>(),
            b.bytes
        );
        if b.redelivery {
            let before = &self
                .seen
                .get(&b.id)
                .expect("redelivery of a delivered batch")
                .batch;
            assert_eq!(
                *before,
                BatchMeta {
                    redelivery: before.redelivery,
                    ..b.clone()
                }
            );
            assert!(!self.seen[&b.id].acked, "redelivered after its ack");
            if !self.unacked.contains(&b.id) {
                self.unacked.push(b.id);
            }
            return;
        }
        assert!(
            !self.done_chunks.contains(&b.chunk),
            "batch cut from a finished chunk: {b:?}"
        );
        assert!(!self.seen.contains_key(&b.id), "batch id reused");
        // At least once, in order, no gaps: a tenure's batches follow the
        // start checkpoint and each other.
        let shard = self.shard(&b.shard).expect("known shard");
        let first = shard.user_index(&b.first).expect("first record exists");
        let last = shard.user_index(&b.last).expect("last record exists");
        assert_eq!(
            last - first + 1,
            b.len() as usize,
            "batch records are contiguous: {b:?}"
        );
        if let Some(Some(expected)) = self.expect_next.get(&b.shard) {
            assert_eq!(
                first, *expected,
                "batch {b:?} does not start where the previous ended"
            );
        }
        self.expect_next.insert(b.shard.clone(), Some(last + 1));
        self.unacked.push(b.id);
        self.seen.insert(
            b.id,
            Seen {
                batch: b,
                acked: false,
            },
        );
    }
}

/// `KINESIN_FUZZ_TRACE=1` prints every action, input and event of the
/// worker target (to read a crash: see fuzz/README.md).
fn trace_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KINESIN_FUZZ_TRACE").is_some())
}

/// Kinds of step, with their weights.
const WORKER_STEPS: &[(u32, &str)] = &[
    (40, "answer"),
    (16, "ack"),
    (4, "nack"),
    (14, "time"),
    (8, "produce"),
    (5, "rival"),
    (2, "stale"),
    (1, "shutdown"),
];

fn arb_worker_config(u: &mut Unstructured<'_>, me: &Owner) -> Config {
    let streams = (0..int(u, 1, 2))
        .map(|i| StreamId::new(format!("stream-{i}")))
        .collect();
    let retrieval = if chance(u, 50) {
        Retrieval::Polling {
            idle_interval: Duration::from_millis(int(u, 1, 1000)),
            min_interval: Duration::from_millis(int(u, 0, 200)),
            max_records: int(u, 1, 10),
        }
    } else {
        Retrieval::Efo {
            consumer: EfoConsumer::Name("app".into()),
        }
    };
    let mut c = Config::new(streams, me.clone(), retrieval)
        .with_failover_time(Duration::from_millis(int(u, 1_000, 10_000)));
    c.heartbeat_read_interval = c.failover_time / int(u, 2, 10);
    c.seed = any(u);
    c.checkpoint_limit = int(u, 1, 8);
    c.commit_period = Duration::from_millis(int(u, 50, 2_000));
    c.rebalance_period = Duration::from_millis(int(u, 100, 5_000));
    c.shard_sync_period = Duration::from_millis(int(u, 100, 10_000));
    c.handoff_timeout = Duration::from_millis(int(u, 100, 5_000));
    c.backpressure_timeout = Duration::from_millis(int(u, 100, 10_000));
    c.shutdown_timeout = Duration::from_millis(int(u, 100, 10_000));
    c.pool_records = int(u, 1, 24);
    c.pool_bytes = int(u, 1, 4_000);
    c.batching = Batching {
        count: int(u, 1, 4),
        byte_size: if chance(u, 30) { int(u, 1, 600) } else { 0 },
        period: chance(u, 30).then(|| Duration::from_millis(int(u, 10, 500))),
    };
    if chance(u, 30) {
        let backoff = Duration::from_millis(int(u, 0, 500));
        c.redelivery = kinesin_core::config::Redelivery {
            backoff,
            backoff_cap: backoff + Duration::from_millis(int(u, 0, 2_000)),
            max_deliveries: Some(int(u, 1, 4) as u32),
        };
    }
    c
}

fn arb_streams(
    u: &mut Unstructured<'_>,
    c: &Config,
    next_seq: &mut u128,
) -> BTreeMap<StreamId, Vec<ModelShard>> {
    let mut streams = BTreeMap::new();
    for stream in &c.streams {
        let shard_id = |i: usize| ShardId::new(format!("shardId-{i:012}"));
        let mut shards: Vec<ModelShard> = (0..int(u, 1usize, 3))
            .map(|i| ModelShard {
                id: shard_id(i),
                parents: Vec::new(),
                records: Vec::new(),
                closed: false,
                children: Vec::new(),
            })
            .collect();
        for shard in &mut shards {
            for _ in 0..int(u, 0, 6) {
                *next_seq += u128::from(int(u, 1u8, 40));
                let subs = if chance(u, 20) { int(u, 2u32, 4) } else { 1 };
                shard.records.push(
                    (0..subs)
                        .map(|sub| RecordMeta {
                            ext: ExtSeq::new(seq_of(*next_seq), sub),
                            last_sub: sub + 1 == subs,
                            bytes: int(u, 1, 300),
                            arrival_ms: 1_600_000_000_000,
                        })
                        .collect(),
                );
            }
        }
        // Resharded: shard 0 closed, with a child that is read after it.
        if chance(u, 40) {
            let child = ModelShard {
                id: shard_id(shards.len()),
                parents: vec![shard_id(0)],
                records: Vec::new(),
                closed: false,
                children: Vec::new(),
            };
            shards[0].closed = true;
            shards[0].children = vec![ChildShard {
                shard: child.id.clone(),
                parents: child.parents.clone(),
                hash_range: HashRange::FULL,
            }];
            shards.push(child);
        }
        streams.insert(stream.clone(), shards);
    }
    streams
}

/// Runs one whole-worker scenario; returns the trace hash.
fn run_worker(data: &[u8], base: Instant) -> u64 {
    use std::hash::Hasher;
    let mut u = Unstructured::new(data);
    let me = Owner::new("me", 1);
    let c = arb_worker_config(&mut u, &me);
    c.validate()
        .expect("the harness generates valid configurations");
    check_config_bounds(&c);
    let mut next_seq = 49_590_000_000_000_000_000;
    let streams = arb_streams(&mut u, &c, &mut next_seq);
    let unix_ms = 1_700_000_000_000;
    let mut h = WorkerHarness {
        now: base,
        base,
        unix_ms,
        me: me.clone(),
        rival: Owner::new("rival", 7),
        rival_beat: 0,
        fault_percent: int(&mut u, 0, 30),
        streams,
        next_seq,
        table: BTreeMap::new(),
        heartbeats: BTreeMap::new(),
        consumers: BTreeMap::new(),
        iterators: Vec::new(),
        subs: BTreeMap::new(),
        pending: Vec::new(),
        answered: Vec::new(),
        chunks: BTreeMap::new(),
        done_chunks: BTreeSet::new(),
        seen: BTreeMap::new(),
        unacked: Vec::new(),
        held: BTreeMap::new(),
        expect_next: BTreeMap::new(),
        shutdown: false,
        complete: false,
        trace: Default::default(),
    };
    if chance(&mut u, 50) {
        h.rival(&mut u);
    }
    let mut w = Worker::new(c, base, unix_ms).expect("valid config");
    h.drain(&mut w);

    let weights: Vec<u32> = WORKER_STEPS.iter().map(|(w, _)| *w).collect();
    let total: u32 = weights.iter().sum();
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let mut pick = int(&mut u, 0, total - 1);
        let step = WORKER_STEPS
            .iter()
            .find(|(weight, _)| {
                if pick < *weight {
                    true
                } else {
                    pick -= weight;
                    false
                }
            })
            .map_or("time", |(_, s)| *s);
        match step {
            "answer" if !h.pending.is_empty() => {
                let i = int(&mut u, 0, h.pending.len() - 1);
                if let Some(input) = h.answer(&mut u, i, true) {
                    h.record(&input);
                    h.answered.push(input.clone());
                    w.handle_input(h.now, input);
                }
            }
            "ack" | "nack" if !h.unacked.is_empty() => {
                let i = int(&mut u, 0, h.unacked.len() - 1);
                let id = h.unacked.remove(i);
                if step == "ack" {
                    let result = w.ack(h.now, id);
                    h.record(&result);
                    if result.is_ok() {
                        if let Some(s) = h.seen.get_mut(&id) {
                            s.acked = true;
                        }
                    }
                } else {
                    let result = w.nack(h.now, id);
                    h.record(&result);
                }
            }
            "produce" => h.produce(&mut u),
            "rival" => h.rival(&mut u),
            "stale" if !h.answered.is_empty() => {
                // An answer delivered twice: the worker must ignore it.
                let i = int(&mut u, 0, h.answered.len() - 1);
                let input = h.answered[i].clone();
                let one_shot = !matches!(
                    input,
                    Input::SubscriptionEvent { .. }
                        | Input::SubscriptionEnded { .. }
                        | Input::SubscriptionError { .. }
                );
                if one_shot {
                    w.handle_input(h.now, input);
                }
            }
            "shutdown" if !h.shutdown => {
                h.shutdown = true;
                w.shutdown(h.now);
            }
            _ => {
                // Advance time: to the next deadline, or a little.
                let to = match w.poll_timeout() {
                    Some((at, _)) if chance(&mut u, 70) => at.max(h.now),
                    _ => h.now + Duration::from_millis(int(&mut u, 0, 3_000)),
                };
                h.now = to;
                w.handle_timeout(h.now);
            }
        }
        h.drain(&mut w);
    }

    // Liveness: shut down with healthy services and a prompt application;
    // the worker must finish within a bound.
    if !h.shutdown {
        h.shutdown = true;
        w.shutdown(h.now);
        h.drain(&mut w);
    }
    for _ in 0..2_000 {
        if h.complete {
            break;
        }
        if !h.pending.is_empty() {
            if let Some(input) = h.answer(&mut u, 0, false) {
                h.record(&input);
                w.handle_input(h.now, input);
            }
        } else if let Some(id) = h.unacked.pop() {
            if w.ack(h.now, id).is_ok() {
                if let Some(s) = h.seen.get_mut(&id) {
                    s.acked = true;
                }
            }
        } else {
            let at = w.poll_timeout().map(|(at, _)| at);
            let at = at.expect("not done, nothing pending and no timeout: stuck");
            h.now = at.max(h.now + Duration::from_millis(1));
            w.handle_timeout(h.now);
        }
        h.drain(&mut w);
    }
    assert!(h.complete, "shutdown did not complete");
    // Requests already sent still complete (a lease released after a
    // self-fence, say); the worker ignores their answers.
    while !h.pending.is_empty() {
        if let Some(input) = h.answer(&mut u, 0, false) {
            h.record(&input);
            w.handle_input(h.now, input);
        }
        h.drain(&mut w);
    }
    assert_eq!(w.pool_used(), (0, 0), "pool empty after shutdown");
    assert!(w.held_shards().is_empty());
    let leaked: Vec<&ChunkId> = h
        .chunks
        .keys()
        .filter(|c| !h.done_chunks.contains(c))
        .collect();
    assert!(leaked.is_empty(), "chunks never finished: {leaked:?}");
    // Rows may still name this worker after shutdown (a release lost to an
    // ambiguous write, a self-fence): others take them once the heartbeat
    // stops changing, so there is nothing to check in the table here.
    h.trace.finish()
}

/// Whole-worker op sequences: legal transitions generated with weights
/// (answer a pending action from the Kinesis/DynamoDB model or with a
/// fault, ack, nack, advance time, produce records, a rival worker steals
/// or asks for leases, stale answers, shutdown), `check_invariants` and the
/// harness's own checks after every step, a shutdown that must complete,
/// and the same input replayed twice gives the same trace.
pub fn check_worker(data: &[u8]) {
    let base = Instant::now();
    let first = run_worker(data, base);
    let second = run_worker(data, base);
    assert_eq!(
        first, second,
        "same input, different trace: not deterministic"
    );
}
