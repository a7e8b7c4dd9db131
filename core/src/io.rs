//! The messages between the core and the outside world.
//!
//! Models: every request the core asks a runtime to perform ([`Action`]),
//! every answer and stream event a runtime feeds back ([`Input`]), and every
//! notification for the application ([`Event`]). The lease-table rows the
//! lease actions carry live in [`crate::table`].
//!
//! AWS rules encoded: SDK errors reach the core only as an [`ErrorClass`];
//! no SDK type crosses this boundary. Payload bytes never cross it either:
//! the runtime keeps them under a [`ChunkId`] and the core speaks of record
//! indices and metadata only.
//!
//! Invariants: each request carries an id minted by the core and echoed in
//! its answer; a runtime answers each [`OpId`] exactly once (an answer that
//! never comes is a bug in the runtime, except for a lost DynamoDB response,
//! which it must report as [`ErrorClass::Ambiguous`]).

use std::ops::Range;

use crate::ids::{BatchId, ChunkId, FencingToken, OpId, Owner, ShardId, ShardRef, StreamId, SubId};
use crate::kpl::HashRange;
use crate::sequence::{ExtSeq, SeqNum, StartPosition};
use crate::table::{HeartbeatRow, LeaseRow, LeaseWrite};

/// How a failed AWS call failed, as far as the core's decisions go. The
/// runtime maps every SDK error to one of these in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    /// ProvisionedThroughputExceeded, ThrottlingException, KMSThrottling.
    Throttled,
    /// ResourceInUseException (e.g. a SubscribeToShard within 5 s of another).
    ResourceInUse,
    /// ResourceNotFoundException (stream, shard, consumer or table missing).
    ResourceNotFound,
    /// InvalidArgumentException (e.g. a position past retention).
    InvalidArgument,
    /// LimitExceededException.
    LimitExceeded,
    /// ExpiredIteratorException.
    ExpiredIterator,
    /// ConditionalCheckFailedException: the row was not as expected.
    ConditionalFailed,
    /// The request may or may not have been applied (timeout after send,
    /// connection lost before the response).
    Ambiguous,
    /// AccessDenied, bad credentials: retried, and reported.
    AccessDenied,
    /// Anything else that may succeed when retried (5xx, network error).
    Transient,
}

impl ErrorClass {
    /// The class of a call whose outcome the caller cannot know (no answer
    /// before its deadline, a lost connection, an unreadable response, a
    /// 5xx): a write may have applied ([`ErrorClass::Ambiguous`], resolved
    /// by reading the row), a read is simply [`ErrorClass::Transient`].
    pub fn unknown_outcome(write: bool) -> ErrorClass {
        if write {
            ErrorClass::Ambiguous
        } else {
            ErrorClass::Transient
        }
    }
}

/// A shard as ListShards describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id.
    pub shard: ShardId,
    /// ParentShardId and AdjacentParentShardId (merge), if any.
    pub parents: Vec<ShardId>,
    /// HashKeyRange.
    pub hash_range: HashRange,
    /// SequenceNumberRange.EndingSequenceNumber: present once the shard is closed.
    pub ending_seq: Option<SeqNum>,
    /// SequenceNumberRange.StartingSequenceNumber: no record of the shard,
    /// and so no checkpoint of its row, is below it (`None`: not given).
    pub starting_seq: Option<SeqNum>,
}

/// A child shard announced at shard end (SubscribeToShard event or
/// GetRecords response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildShard {
    /// The child's id.
    pub shard: ShardId,
    /// All of its parents.
    pub parents: Vec<ShardId>,
    /// Its hash key range.
    pub hash_range: HashRange,
}

/// Metadata of one user record (after KPL de-aggregation and hash-range
/// filtering, which the runtime does with [`crate::kpl`]). The payload stays
/// in the runtime, at the same index of the same chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// Sequence number and KPL sub-sequence number (0 when not aggregated).
    pub ext: ExtSeq,
    /// True when this is the last user record kept from its Kinesis record.
    pub last_sub: bool,
    /// Payload size in bytes (data plus partition key).
    pub bytes: u32,
    /// ApproximateArrivalTimestamp in unix ms.
    pub arrival_ms: u64,
}

/// What one read returned: an EFO event or a GetRecords response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// The user records, in shard order. Records the read position does not
    /// admit (see [`StartPosition::admits`]) are already left out.
    pub records: Vec<RecordMeta>,
    /// MillisBehindLatest.
    pub millis_behind: u64,
    /// ContinuationSequenceNumber of an EFO event (`None` with EFO means the
    /// shard ended). Unused for polling.
    pub continuation: Option<SeqNum>,
    /// ChildShards, present at shard end.
    pub child_shards: Vec<ChildShard>,
    /// Kinesis records the read returned, before KPL de-aggregation and
    /// filtering: an event whose records were all filtered out (KPL
    /// sub-records of another shard, positions already read) is not an
    /// empty event, and never evidence of a shard's end.
    pub kinesis_records: u32,
}

impl Chunk {
    /// Total payload bytes.
    pub fn bytes(&self) -> u64 {
        self.records.iter().map(|r| u64::from(r.bytes)).sum()
    }
}

/// An opaque GetShardIterator result, handed back in GetRecords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardIterator(pub String);

/// Status of an EFO consumer (DescribeStreamConsumer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerStatus {
    /// Being registered; wait.
    Creating,
    /// Ready for SubscribeToShard.
    Active,
    /// Being deleted: fatal.
    Deleting,
}

/// A registered EFO consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// ConsumerARN.
    pub arn: String,
    /// ConsumerStatus.
    pub status: ConsumerStatus,
}

/// I/O the core asks the runtime to perform. Each answer comes back as the
/// [`Input`] named in the variant's doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// ListShards (all pages) -> [`Input::Shards`].
    ListShards {
        /// Echo in the answer.
        op: OpId,
        /// Which stream.
        stream: StreamId,
    },
    /// RegisterStreamConsumer -> [`Input::Consumer`] (ResourceInUse when it
    /// exists already).
    RegisterConsumer {
        /// Echo in the answer.
        op: OpId,
        /// Stream ARN.
        stream: StreamId,
        /// Consumer name.
        name: String,
    },
    /// DescribeStreamConsumer -> [`Input::Consumer`].
    DescribeConsumer {
        /// Echo in the answer.
        op: OpId,
        /// Stream ARN.
        stream: StreamId,
        /// Consumer name (used when `arn` is None).
        name: String,
        /// Consumer ARN, when known.
        arn: Option<String>,
    },
    /// SubscribeToShard. Failures arrive as [`Input::SubscriptionError`]
    /// (on the call or on the first read); events only in answer to
    /// [`Action::Pull`].
    Subscribe {
        /// The subscription; echoed by every input about it.
        sub: SubId,
        /// Which shard.
        shard: ShardRef,
        /// ConsumerARN.
        consumer_arn: String,
        /// StartingPosition. For [`StartPosition::AtSubSequence`] the runtime
        /// leaves out user records the position does not admit, in every
        /// event of the subscription (the aggregate holding the position
        /// may arrive after an empty first event).
        position: StartPosition,
        /// The shard's hash range: KPL sub-records outside it belong to
        /// another shard and are dropped ([`crate::kpl::expand`]).
        range: HashRange,
    },
    /// Credit: read exactly one event from the subscription's stream ->
    /// [`Input::SubscriptionEvent`], [`Input::SubscriptionEnded`] or
    /// [`Input::SubscriptionError`]. At most one Pull per subscription is
    /// outstanding.
    Pull {
        /// The subscription.
        sub: SubId,
        /// Id under which to keep the event's payload.
        chunk: ChunkId,
    },
    /// Drop the subscription (no answer). Pulls still outstanding are
    /// answered with nothing.
    Cancel {
        /// The subscription.
        sub: SubId,
    },
    /// GetShardIterator -> [`Input::Iterator`].
    GetShardIterator {
        /// Echo in the answer.
        op: OpId,
        /// Which shard.
        shard: ShardRef,
        /// Where.
        position: StartPosition,
    },
    /// GetRecords -> [`Input::Records`].
    GetRecords {
        /// Echo in the answer.
        op: OpId,
        /// Which shard.
        shard: ShardRef,
        /// The iterator.
        iterator: ShardIterator,
        /// Limit (records), from the free pool budget; 1..=10,000.
        limit: u32,
        /// Id under which to keep the payload.
        chunk: ChunkId,
        /// For a restart inside a KPL aggregate: leave out user records at
        /// or before this position.
        skip_through: Option<ExtSeq>,
        /// The shard's hash range: KPL sub-records outside it belong to
        /// another shard and are dropped ([`crate::kpl::expand`]).
        range: HashRange,
    },
    /// Query every lease row of a stream (all pages, consistent read) ->
    /// [`Input::Leases`].
    ReadLeases {
        /// Echo in the answer.
        op: OpId,
        /// Which stream.
        stream: StreamId,
    },
    /// Conditional write of a lease row -> [`Input::LeaseWritten`].
    WriteLease {
        /// Echo in the answer.
        op: OpId,
        /// The write and its condition.
        write: LeaseWrite,
    },
    /// Query all heartbeat rows, consistent read -> [`Input::Heartbeats`].
    ReadHeartbeats {
        /// Echo in the answer.
        op: OpId,
    },
    /// Put this worker's heartbeat row -> [`Input::HeartbeatWritten`].
    WriteHeartbeat {
        /// Echo in the answer.
        op: OpId,
        /// The row.
        row: HeartbeatRow,
    },
    /// Delete the lease row of a drained shard whose children have all
    /// checkpointed (KCL's clean-up), on condition that it is still free,
    /// at `SHARD_END` and on `token` -> [`Input::LeaseDeleted`].
    DeleteLease {
        /// Echo in the answer.
        op: OpId,
        /// Which lease.
        shard: ShardRef,
        /// The row's token as read.
        token: FencingToken,
    },
    /// Delete the heartbeat row of a worker gone for many failover
    /// periods, on condition that the row still names `owner` with `beat`
    /// (a worker that beat again keeps its row) -> [`Input::HeartbeatDeleted`].
    DeleteHeartbeat {
        /// Echo in the answer.
        op: OpId,
        /// The row's owner as read.
        owner: Owner,
        /// The row's beat as read.
        beat: u64,
    },
}

impl Action {
    /// The class of a call of this action that got no answer before its
    /// deadline (or whose answer was lost): a write may have applied, so it
    /// is [`ErrorClass::Ambiguous`] and the core resolves it by reading the
    /// row; anything else is [`ErrorClass::Transient`]. The one rule the aws
    /// driver and the simulator share.
    pub fn timeout_class(&self) -> ErrorClass {
        ErrorClass::unknown_outcome(matches!(
            self,
            Action::WriteLease { .. }
                | Action::WriteHeartbeat { .. }
                | Action::DeleteHeartbeat { .. }
                | Action::DeleteLease { .. }
        ))
    }

    /// The answer that reports this action as failed with `class`: a
    /// failed [`Action::Pull`] (its connection broke) fails its
    /// subscription; `None` for [`Action::Cancel`], which has no answer.
    pub fn failed(&self, class: ErrorClass) -> Option<Input> {
        Some(match self {
            Action::ListShards { op, .. } => Input::Shards {
                op: *op,
                result: Err(class),
            },
            Action::RegisterConsumer { op, .. } | Action::DescribeConsumer { op, .. } => {
                Input::Consumer {
                    op: *op,
                    result: Err(class),
                }
            }
            Action::Subscribe { sub, .. } | Action::Pull { sub, .. } => {
                Input::SubscriptionError { sub: *sub, class }
            }
            Action::GetShardIterator { op, .. } => Input::Iterator {
                op: *op,
                result: Err(class),
            },
            Action::GetRecords { op, .. } => Input::Records {
                op: *op,
                result: Err(class),
            },
            Action::ReadLeases { op, .. } => Input::Leases {
                op: *op,
                result: Err(class),
            },
            Action::WriteLease { op, .. } => Input::LeaseWritten {
                op: *op,
                result: Err(class),
                row: None,
            },
            Action::ReadHeartbeats { op } => Input::Heartbeats {
                op: *op,
                result: Err(class),
            },
            Action::WriteHeartbeat { op, .. } => Input::HeartbeatWritten {
                op: *op,
                result: Err(class),
            },
            Action::DeleteHeartbeat { op, .. } => Input::HeartbeatDeleted {
                op: *op,
                result: Err(class),
            },
            Action::DeleteLease { op, .. } => Input::LeaseDeleted {
                op: *op,
                result: Err(class),
            },
            Action::Cancel { .. } => return None,
        })
    }

    /// [`Action::failed`] with [`Action::timeout_class`]: the answer to a
    /// call that timed out.
    pub fn timed_out(&self) -> Option<Input> {
        self.failed(self.timeout_class())
    }
}

/// Results and stream events the runtime feeds back with
/// [`crate::worker::Worker::handle_input`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Answer to [`Action::ListShards`].
    Shards {
        /// From the action.
        op: OpId,
        /// The shards.
        result: Result<Vec<ShardInfo>, ErrorClass>,
    },
    /// Answer to Register/DescribeConsumer.
    Consumer {
        /// From the action.
        op: OpId,
        /// The consumer.
        result: Result<ConsumerInfo, ErrorClass>,
    },
    /// One event read in answer to [`Action::Pull`].
    SubscriptionEvent {
        /// From the action.
        sub: SubId,
        /// From the Pull.
        chunk: ChunkId,
        /// Its contents.
        data: Chunk,
    },
    /// The subscription's stream ended normally (the 5-minute end).
    SubscriptionEnded {
        /// From the action.
        sub: SubId,
    },
    /// SubscribeToShard failed, on the call or while reading.
    SubscriptionError {
        /// From the action.
        sub: SubId,
        /// How.
        class: ErrorClass,
    },
    /// Answer to [`Action::GetShardIterator`].
    Iterator {
        /// From the action.
        op: OpId,
        /// The iterator.
        result: Result<ShardIterator, ErrorClass>,
    },
    /// Answer to [`Action::GetRecords`].
    Records {
        /// From the action.
        op: OpId,
        /// Chunk and NextShardIterator (None = shard end).
        result: Result<(Chunk, Option<ShardIterator>), ErrorClass>,
    },
    /// Answer to [`Action::ReadLeases`].
    Leases {
        /// From the action.
        op: OpId,
        /// Rows of the stream.
        result: Result<Vec<LeaseRow>, ErrorClass>,
    },
    /// Answer to [`Action::WriteLease`].
    LeaseWritten {
        /// From the action.
        op: OpId,
        /// Ok, ConditionalFailed, Ambiguous, ...
        result: Result<(), ErrorClass>,
        /// The row as the write left it, when the store returns it
        /// (DynamoDB's `ReturnValues: ALL_NEW`): a take learns the
        /// checkpoint the old owner wrote after the taker's last read.
        /// `None`: the manager applies the write to its view's row.
        /// Boxed: most inputs are small.
        row: Option<Box<LeaseRow>>,
    },
    /// Answer to [`Action::ReadHeartbeats`].
    Heartbeats {
        /// From the action.
        op: OpId,
        /// All heartbeat rows.
        result: Result<Vec<HeartbeatRow>, ErrorClass>,
    },
    /// Answer to [`Action::WriteHeartbeat`].
    HeartbeatWritten {
        /// From the action.
        op: OpId,
        /// Ok or how it failed.
        result: Result<(), ErrorClass>,
    },
    /// Answer to [`Action::DeleteLease`] (`ConditionalFailed`: the row
    /// changed or is gone).
    LeaseDeleted {
        /// From the action.
        op: OpId,
        /// Ok or how it failed.
        result: Result<(), ErrorClass>,
    },
    /// Answer to [`Action::DeleteHeartbeat`] (`ConditionalFailed`: the row
    /// changed or is gone).
    HeartbeatDeleted {
        /// From the action.
        op: OpId,
        /// Ok or how it failed.
        result: Result<(), ErrorClass>,
    },
}

impl Input {
    /// The same answer as a failure of `class` (a response that met a
    /// broken connection, or a fault a test injects): the answer to the
    /// same operation, or a subscription error for any subscription input.
    pub fn failed(self, class: ErrorClass) -> Input {
        let result = Err(class);
        match self {
            Input::Shards { op, .. } => Input::Shards { op, result },
            Input::Consumer { op, .. } => Input::Consumer {
                op,
                result: Err(class),
            },
            Input::SubscriptionEvent { sub, .. }
            | Input::SubscriptionEnded { sub }
            | Input::SubscriptionError { sub, .. } => Input::SubscriptionError { sub, class },
            Input::Iterator { op, .. } => Input::Iterator {
                op,
                result: Err(class),
            },
            Input::Records { op, .. } => Input::Records {
                op,
                result: Err(class),
            },
            Input::Leases { op, .. } => Input::Leases {
                op,
                result: Err(class),
            },
            Input::LeaseWritten { op, .. } => Input::LeaseWritten {
                op,
                result: Err(class),
                row: None,
            },
            Input::Heartbeats { op, .. } => Input::Heartbeats {
                op,
                result: Err(class),
            },
            Input::HeartbeatWritten { op, .. } => Input::HeartbeatWritten {
                op,
                result: Err(class),
            },
            Input::HeartbeatDeleted { op, .. } => Input::HeartbeatDeleted {
                op,
                result: Err(class),
            },
            Input::LeaseDeleted { op, .. } => Input::LeaseDeleted {
                op,
                result: Err(class),
            },
        }
    }
}

/// What the core says of a batch it delivers: a record range of a chunk,
/// its positions and fencing token. The runtime turns it into the
/// application's batch (the payloads it keeps under the chunk), so the two
/// do not share a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    /// Ack or nack by this id.
    pub id: BatchId,
    /// Where the records come from.
    pub shard: ShardRef,
    /// The lease's fencing token at delivery.
    pub token: FencingToken,
    /// The payloads: records `range` of chunk `chunk`.
    pub chunk: ChunkId,
    /// Record indices within the chunk.
    pub range: Range<u32>,
    /// First user record.
    pub first: ExtSeq,
    /// Last user record.
    pub last: ExtSeq,
    /// Payload bytes.
    pub bytes: u64,
    /// MillisBehindLatest of the chunk.
    pub millis_behind: u64,
    /// True when this batch was delivered before and nacked.
    pub redelivery: bool,
}

impl BatchMeta {
    /// Number of user records.
    pub fn len(&self) -> u32 {
        self.range.end.saturating_sub(self.range.start)
    }
    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a lease was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// A conditional write found another owner or token.
    Taken,
    /// The worker could not renew its heartbeat in time and fenced itself.
    SelfFenced,
    /// Handed to another worker gracefully.
    HandedOff,
    /// Released at shutdown or after a fatal shard error.
    Released,
    /// The shard ended and SHARD_END was written.
    ShardEnded,
}

/// Notifications for the application (and for the runtime's bookkeeping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Records to process; ack or nack by id.
    Batch(BatchMeta),
    /// A batch nacked after `max_deliveries` deliveries (a poison record):
    /// hand it to the dead-letter handler, then ack it by id once the
    /// handler accepted it (its records may then be checkpointed), or nack
    /// it to have it offered again after the redelivery backoff. The shard
    /// goes on meanwhile; its checkpoint stays before these records.
    DeadLetter {
        /// The batch, as last delivered (`redelivery` is true).
        batch: BatchMeta,
        /// How many times it was delivered to the application.
        attempts: u32,
    },
    /// The runtime may free the payload of this chunk: no batch will be cut
    /// from it any more (records not yet delivered are dropped and will be
    /// read again by whoever reads the shard next).
    ChunkDone {
        /// The chunk.
        chunk: ChunkId,
    },
    /// A lease was taken.
    LeaseAcquired {
        /// Which shard.
        shard: ShardRef,
        /// Its new fencing token.
        token: FencingToken,
        /// Where reading starts: after the checkpoint, or the configured
        /// initial position when the shard has none.
        start: StartPosition,
    },
    /// A lease was lost or given up.
    LeaseLost {
        /// Which shard.
        shard: ShardRef,
        /// Token it was held with.
        token: FencingToken,
        /// Why.
        reason: LostReason,
    },
    /// A shard was read to its end and SHARD_END written.
    ShardEnded {
        /// Which shard.
        shard: ShardRef,
    },
    /// A shard cannot be read (ResourceNotFound, InvalidArgument): its lease
    /// was released.
    ShardFailed {
        /// Which shard.
        shard: ShardRef,
        /// Why.
        class: ErrorClass,
    },
    /// Something the operator should know (e.g. a checkpoint past
    /// retention fell back to TRIM_HORIZON).
    Warning {
        /// The shard concerned, if any.
        shard: Option<ShardRef>,
        /// What happened and what to do.
        message: String,
    },
    /// The worker cannot go on (e.g. the EFO consumer is DELETING); it
    /// stops as after shutdown.
    Fatal {
        /// What happened and what to do.
        message: String,
    },
    /// The worker's health changed ([`crate::health`]): every call to a
    /// service refused (credentials, access, KMS) for `unhealthy_after`,
    /// or a success after that. Also [`crate::Worker::health`].
    Health(crate::health::Health),
    /// Shutdown finished: final checkpoints written, leases released, pool
    /// empty. Nothing else will be emitted.
    ShutdownComplete,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sref() -> ShardRef {
        ShardRef::new(StreamId::new("s"), ShardId::new("shardId-0"))
    }

    #[test]
    fn chunk_bytes_sums_record_sizes_for_the_byte_budget() {
        let rec = |n: u64, bytes: u32| RecordMeta {
            ext: ExtSeq::new(SeqNum::parse(&n.to_string()).unwrap(), 0),
            last_sub: true,
            bytes,
            arrival_ms: 0,
        };
        let chunk = Chunk {
            records: vec![rec(1, 100), rec(2, 250), rec(3, 7)],
            ..Chunk::default()
        };
        assert_eq!(chunk.bytes(), 357);
        assert_eq!(Chunk::default().bytes(), 0);
    }

    #[test]
    fn batch_length_counts_its_record_range() {
        let ext = ExtSeq::new(SeqNum::parse("1").unwrap(), 0);
        let mut b = BatchMeta {
            id: BatchId::from_raw(1),
            shard: sref(),
            token: FencingToken(1),
            chunk: ChunkId::from_raw(2),
            range: 3..7,
            first: ext.clone(),
            last: ext,
            bytes: 0,
            millis_behind: 0,
            redelivery: false,
        };
        assert_eq!(b.len(), 4);
        assert!(!b.is_empty());
        b.range = 5..5;
        assert!(b.is_empty());
    }

    #[test]
    fn a_timed_out_write_is_ambiguous_and_a_timed_out_read_transient() {
        let op = OpId::from_raw(7);
        let write = Action::WriteHeartbeat {
            op,
            row: HeartbeatRow {
                owner: crate::ids::Owner::new("w", 1),
                beat: 1,
                held: 0,
                wants: vec![],
                alive: true,
                streams: vec![],
            },
        };
        assert_eq!(
            write.timed_out(),
            Some(Input::HeartbeatWritten {
                op,
                result: Err(ErrorClass::Ambiguous)
            })
        );
        let read = Action::ReadLeases {
            op,
            stream: StreamId::new("s"),
        };
        assert_eq!(
            read.timed_out(),
            Some(Input::Leases {
                op,
                result: Err(ErrorClass::Transient)
            })
        );
        let pull = Action::Pull {
            sub: SubId::from_raw(1),
            chunk: ChunkId::from_raw(1),
        };
        assert_eq!(
            pull.failed(ErrorClass::Throttled),
            Some(Input::SubscriptionError {
                sub: SubId::from_raw(1),
                class: ErrorClass::Throttled
            })
        );
        let cancel = Action::Cancel {
            sub: SubId::from_raw(1),
        };
        assert_eq!(cancel.timed_out(), None);
    }
}
