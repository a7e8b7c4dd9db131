//! Worker-level tests: one or two real [`Worker`]s against a tiny
//! synchronous model of Kinesis (polling and EFO) and of the lease table
//! (rows changed only through [`LeaseWrite::apply`]). Every step checks
//! [`Worker::check_invariants`].
//!
//! This file is the harness (`World`, `Node`, `run`); one file per
//! behaviour family uses it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{Batching, EfoConsumer};
use crate::health::Service;
use crate::io::{
    BatchMeta, Chunk, ConsumerInfo, ConsumerStatus, ErrorClass, LostReason, RecordMeta, ShardInfo,
    ShardIterator,
};
use crate::kpl::HashRange;
use crate::sequence::{ExtSeq, SeqNum};
use crate::table::{HeartbeatRow, LeaseRow, LeaseWrite};

mod api;
mod delivery;
mod leases;
mod pool;
mod reading;
mod shutdown;

fn seq(n: u64) -> SeqNum {
    SeqNum::parse(&format!("4959{n:020}")).unwrap()
}

fn stream() -> StreamId {
    StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/orders")
}

fn sref(id: &str) -> ShardRef {
    ShardRef::new(stream(), crate::ids::ShardId::new(id))
}

struct ModelShard {
    info: ShardInfo,
    records: Vec<SeqNum>,
}

/// The outside world of one or more workers, answering synchronously.
struct World {
    epoch: Instant,
    now: Instant,
    shards: BTreeMap<String, ModelShard>,
    rows: BTreeMap<ShardRef, LeaseRow>,
    beats: BTreeMap<String, HeartbeatRow>,
    /// EFO subscriptions: sub -> (shard, next record index).
    subs: BTreeMap<SubId, (String, usize)>,
    subscribe_calls: Vec<(Instant, ShardRef)>,
    get_records_limits: Vec<u32>,
    pulled_records: usize,
    /// Pulls waiting for records (a quiet subscription).
    held_pulls: Vec<(SubId, ChunkId)>,
    lease_writes: Vec<LeaseWrite>,
    /// The hash range every GetRecords and SubscribeToShard carried.
    read_ranges: Vec<(ShardRef, HashRange)>,
    /// Heartbeat writes fail while set (a partition from DynamoDB).
    ddb_down: bool,
    /// Every Kinesis call is refused while set (AccessDenied: expired
    /// credentials, a KMS key the role may not use).
    kinesis_denied: bool,
    /// GetRecords answers start this many records before the iterator (a
    /// re-read overlapping what was already delivered).
    pub(super) overlap: usize,
    /// Listed shards whose iterator requests answer ResourceNotFound.
    not_found: std::collections::BTreeSet<String>,
}

impl World {
    fn new(shards: &[(&str, &[&str], usize, bool)]) -> Self {
        let epoch = crate::test_epoch();
        let mut n = 0u64;
        let mut map = BTreeMap::new();
        for (id, parents, count, closed) in shards {
            // A shard's records, and so its rows' checkpoints, start at or
            // after its StartingSequenceNumber.
            let starting = seq(n + 1);
            let records: Vec<SeqNum> = (0..*count)
                .map(|_| {
                    n += 1;
                    seq(n)
                })
                .collect();
            let info = ShardInfo {
                shard: crate::ids::ShardId::new(id),
                parents: parents.iter().map(crate::ids::ShardId::new).collect(),
                hash_range: HashRange::FULL,
                ending_seq: closed.then(|| records.last().cloned().unwrap_or_else(|| seq(0))),
                starting_seq: Some(starting),
            };
            map.insert(id.to_string(), ModelShard { info, records });
        }
        World {
            epoch,
            now: epoch,
            shards: map,
            rows: BTreeMap::new(),
            beats: BTreeMap::new(),
            subs: BTreeMap::new(),
            subscribe_calls: Vec::new(),
            get_records_limits: Vec::new(),
            pulled_records: 0,
            held_pulls: Vec::new(),
            lease_writes: Vec::new(),
            read_ranges: Vec::new(),
            ddb_down: false,
            kinesis_denied: false,
            overlap: 0,
            not_found: Default::default(),
        }
    }

    /// Append `n` records to a shard (a producer).
    fn produce(&mut self, shard: &str, n: usize) {
        let last = self
            .shards
            .values()
            .flat_map(|s| s.records.iter())
            .max()
            .cloned();
        let mut next: u64 = last.map_or(0, |s| s.as_str()[4..].parse().unwrap());
        let recs = &mut self.shards.get_mut(shard).unwrap().records;
        for _ in 0..n {
            next += 1;
            recs.push(seq(next));
        }
    }

    fn records_after(&self, shard: &str, pos: &StartPosition) -> usize {
        let recs = &self.shards[shard].records;
        match pos {
            StartPosition::TrimHorizon | StartPosition::AtTimestamp { .. } => 0,
            StartPosition::Latest => recs.len(),
            StartPosition::AtSequence(s) => recs.iter().position(|r| r >= s).unwrap_or(recs.len()),
            StartPosition::AfterSequence(s) => {
                recs.iter().position(|r| r > s).unwrap_or(recs.len())
            }
            StartPosition::AtSubSequence(e) => {
                recs.iter().position(|r| *r > e.seq).unwrap_or(recs.len())
            }
        }
    }

    fn chunk(&self, shard: &str, from: usize, n: usize) -> Chunk {
        let recs = &self.shards[shard].records;
        let to = (from + n).min(recs.len());
        Chunk {
            kinesis_records: (to - from) as u32,
            records: recs[from..to]
                .iter()
                .map(|s| RecordMeta {
                    ext: ExtSeq::new(s.clone(), 0),
                    last_sub: true,
                    bytes: 100,
                    arrival_ms: 0,
                })
                .collect(),
            millis_behind: 0,
            continuation: recs[..to].last().cloned().or_else(|| Some(seq(0))),
            child_shards: vec![],
        }
    }

    fn children_of(&self, shard: &str) -> Vec<crate::io::ChildShard> {
        self.shards
            .values()
            .filter(|s| s.info.parents.iter().any(|p| p.as_str() == shard))
            .map(|s| crate::io::ChildShard {
                shard: s.info.shard.clone(),
                parents: s.info.parents.clone(),
                hash_range: s.info.hash_range,
            })
            .collect()
    }

    /// Answer one action; returns the input (if any).
    fn answer(&mut self, action: Action) -> Option<Input> {
        let dynamo = matches!(
            action,
            Action::ReadLeases { .. }
                | Action::WriteLease { .. }
                | Action::ReadHeartbeats { .. }
                | Action::WriteHeartbeat { .. }
                | Action::DeleteLease { .. }
                | Action::DeleteHeartbeat { .. }
        );
        if self.kinesis_denied && !dynamo {
            return action.failed(ErrorClass::AccessDenied);
        }
        match action {
            Action::ListShards { op, .. } => Some(Input::Shards {
                op,
                result: Ok(self.shards.values().map(|s| s.info.clone()).collect()),
            }),
            Action::ReadLeases { op, stream: s } => Some(Input::Leases {
                op,
                result: Ok(self
                    .rows
                    .values()
                    .filter(|r| r.shard.stream == s)
                    .cloned()
                    .collect()),
            }),
            Action::WriteLease { op, write } => {
                self.lease_writes.push(write.clone());
                let (result, row) = match write.apply(self.rows.get(write.shard())) {
                    Ok(row) => {
                        self.rows.insert(row.shard.clone(), row.clone());
                        (Ok(()), Some(Box::new(row)))
                    }
                    Err(_) => (Err(ErrorClass::ConditionalFailed), None),
                };
                Some(Input::LeaseWritten { op, result, row })
            }
            Action::ReadHeartbeats { op } => Some(Input::Heartbeats {
                op,
                result: Ok(self.beats.values().cloned().collect()),
            }),
            Action::WriteHeartbeat { op, row } => {
                if self.ddb_down {
                    return Some(Input::HeartbeatWritten {
                        op,
                        result: Err(ErrorClass::Transient),
                    });
                }
                let key = row.owner.worker.to_string();
                if !HeartbeatRow::put_applies(self.beats.get(&key), &row) {
                    return Some(Input::HeartbeatWritten {
                        op,
                        result: Err(ErrorClass::ConditionalFailed),
                    });
                }
                self.beats.insert(key, row);
                Some(Input::HeartbeatWritten { op, result: Ok(()) })
            }
            Action::DeleteLease { op, shard, token } => {
                let result = if LeaseRow::delete_applies(self.rows.get(&shard), token) {
                    self.rows.remove(&shard);
                    Ok(())
                } else {
                    Err(ErrorClass::ConditionalFailed)
                };
                Some(Input::LeaseDeleted { op, result })
            }
            Action::DeleteHeartbeat { op, owner, beat } => {
                let key = owner.worker.to_string();
                let result = if HeartbeatRow::delete_applies(self.beats.get(&key), &owner, beat) {
                    self.beats.remove(&key);
                    Ok(())
                } else {
                    Err(ErrorClass::ConditionalFailed)
                };
                Some(Input::HeartbeatDeleted { op, result })
            }
            Action::GetShardIterator { op, shard, .. }
                if !self.shards.contains_key(shard.shard.as_str())
                    || self.not_found.contains(shard.shard.as_str()) =>
            {
                Some(Input::Iterator {
                    op,
                    result: Err(ErrorClass::ResourceNotFound),
                })
            }
            Action::GetShardIterator {
                op,
                shard,
                position,
            } => {
                let idx = self.records_after(shard.shard.as_str(), &position);
                Some(Input::Iterator {
                    op,
                    result: Ok(ShardIterator(format!("{}|{idx}", shard.shard))),
                })
            }
            Action::GetRecords {
                op,
                shard,
                iterator,
                limit,
                range,
                ..
            } => {
                self.read_ranges.push((shard, range));
                self.get_records_limits.push(limit);
                let (shard, idx) = iterator.0.split_once('|').unwrap();
                let idx: usize = idx.parse().unwrap();
                let (shard, idx) = (shard.to_string(), idx);
                let from = idx.saturating_sub(self.overlap);
                let chunk = self.chunk(&shard, from, limit as usize + (idx - from));
                let next = from + chunk.records.len();
                let ms = &self.shards[&shard];
                let at_end = ms.info.ending_seq.is_some() && next >= ms.records.len();
                let mut chunk = chunk;
                chunk.continuation = None;
                if at_end {
                    chunk.child_shards = self.children_of(&shard);
                }
                let next_it = (!at_end).then(|| ShardIterator(format!("{shard}|{next}")));
                Some(Input::Records {
                    op,
                    result: Ok((chunk, next_it)),
                })
            }
            Action::RegisterConsumer { op, .. } => Some(Input::Consumer {
                op,
                result: Ok(ConsumerInfo {
                    arn: "arn:consumer/app".into(),
                    status: ConsumerStatus::Creating,
                }),
            }),
            Action::DescribeConsumer { op, .. } => Some(Input::Consumer {
                op,
                result: Ok(ConsumerInfo {
                    arn: "arn:consumer/app".into(),
                    status: ConsumerStatus::Active,
                }),
            }),
            Action::Subscribe {
                sub,
                shard,
                position,
                range,
                ..
            } => {
                self.read_ranges.push((shard.clone(), range));
                self.subscribe_calls.push((self.now, shard.clone()));
                let idx = self.records_after(shard.shard.as_str(), &position);
                self.subs.insert(sub, (shard.shard.to_string(), idx));
                None
            }
            Action::Pull { sub, chunk } => {
                let (shard, idx) = self.subs.get(&sub).cloned()?;
                if idx >= self.shards[&shard].records.len() {
                    // Nothing new: the event stream stays quiet (the Pull
                    // stays outstanding, as on a caught-up subscription).
                    self.held_pulls.push((sub, chunk));
                    return None;
                }
                let data = self.chunk(&shard, idx, 3);
                let n = data.records.len();
                self.pulled_records += n;
                self.subs.insert(sub, (shard, idx + n));
                Some(Input::SubscriptionEvent { sub, chunk, data })
            }
            Action::Cancel { sub } => {
                self.subs.remove(&sub);
                None
            }
        }
    }
}

/// One worker in the world, with everything it emitted.
struct Node {
    w: Worker,
    batches: Vec<BatchMeta>,
    events: Vec<Event>,
    trace: Vec<String>,
    auto_ack: bool,
}

impl Node {
    fn new(config: Config, world: &World) -> Node {
        let w = Worker::new(config, world.now, 1_764_000_000_000).unwrap();
        Node {
            w,
            batches: Vec::new(),
            events: Vec::new(),
            trace: Vec::new(),
            auto_ack: true,
        }
    }

    /// Drain outputs, answering actions from the world, until quiet.
    fn settle(&mut self, world: &mut World) {
        for _ in 0..10_000 {
            let mut progress = false;
            for (sub, chunk) in std::mem::take(&mut world.held_pulls) {
                if let Some(input) = world.answer(Action::Pull { sub, chunk }) {
                    progress = true;
                    self.w.handle_input(world.now, input);
                }
            }
            while let Some(a) = self.w.poll_action() {
                progress = true;
                self.trace.push(format!(
                    "{:?} A {a:?}",
                    world.now.duration_since(world.epoch)
                ));
                if let Some(input) = world.answer(a) {
                    self.w.handle_input(world.now, input);
                }
                self.w.check_invariants().unwrap();
            }
            while let Some(e) = self.w.poll_event() {
                progress = true;
                self.trace.push(format!(
                    "{:?} E {e:?}",
                    world.now.duration_since(world.epoch)
                ));
                if let Event::Batch(b) = &e {
                    self.batches.push(b.clone());
                    if self.auto_ack {
                        self.w.ack(world.now, b.id).unwrap();
                    }
                }
                self.events.push(e);
                self.w.check_invariants().unwrap();
            }
            if !progress {
                return;
            }
        }
        panic!("worker never settled");
    }
}

/// Advance time to each deadline of any node up to `until`.
fn run(world: &mut World, nodes: &mut [&mut Node], d: Duration) {
    let until = world.now + d;
    for n in nodes.iter_mut() {
        n.settle(world);
    }
    loop {
        let next = nodes
            .iter()
            .filter_map(|n| n.w.poll_timeout().map(|(t, _)| t))
            .min();
        let Some(t) = next.filter(|t| *t <= until) else {
            world.now = until;
            for n in nodes.iter_mut() {
                n.w.handle_timeout(until);
                n.settle(world);
            }
            return;
        };
        world.now = world.now.max(t);
        for n in nodes.iter_mut() {
            n.w.handle_timeout(world.now);
            n.settle(world);
        }
    }
}

fn polling_config(worker: &str) -> Config {
    let mut c = Config::new(vec![stream()], Owner::new(worker, 1), Retrieval::polling());
    c.seed = 7;
    // The tests count batches of one record each (Bento's default).
    c.batching = Batching::bento();
    c
}

fn delivered_seqs(node: &Node, shard: &str) -> Vec<SeqNum> {
    node.batches
        .iter()
        .filter(|b| b.shard.shard.as_str() == shard && !b.redelivery)
        .map(|b| b.first.seq.clone())
        .collect()
}
