//! Identifiers that cross the boundary between the core and its runtime.
//!
//! Models: names of streams, shards and workers, the fencing token of a
//! lease, and the opaque ids that tie an [`crate::io::Action`] to the
//! [`crate::io::Input`] that answers it.
//!
//! Invariants: [`OpId`], [`SubId`], [`ChunkId`] and [`BatchId`] can only be
//! minted inside this crate (their constructors are crate-private); a runtime
//! can copy and echo them, never forge them. Every id is ordered, so maps
//! keyed by them iterate deterministically.

use std::fmt;
use std::sync::Arc;

/// A stream the worker consumes: the stream ARN (or the name when the
/// runtime works with names). Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Wrap a stream ARN or name.
    pub fn new(s: impl AsRef<str>) -> Self {
        StreamId(Arc::from(s.as_ref()))
    }
    /// The ARN or name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A shard id such as `shardId-000000000001`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(Arc<str>);

impl ShardId {
    /// Wrap a shard id.
    pub fn new(s: impl AsRef<str>) -> Self {
        ShardId(Arc::from(s.as_ref()))
    }
    /// The shard id as AWS spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One shard of one stream: the unit of leasing and reading.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardRef {
    /// The stream.
    pub stream: StreamId,
    /// The shard within it.
    pub shard: ShardId,
}

impl ShardRef {
    /// Build a shard reference.
    pub fn new(stream: StreamId, shard: ShardId) -> Self {
        ShardRef { stream, shard }
    }
}

/// A lease owner: the configured worker id plus the incarnation of this
/// process. A restarted worker is a new incarnation, so it never silently
/// resumes leases its previous process held (SPEC section 4).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// Worker id from the configuration (e.g. hostname-pid).
    pub worker: Arc<str>,
    /// Grows with every process start of the same worker id (the runtime
    /// uses the start time in ms; the simulator counts restarts). A later
    /// incarnation's heartbeat tells observers the earlier one is dead.
    pub incarnation: u64,
}

impl Owner {
    /// Build an owner.
    pub fn new(worker: impl AsRef<str>, incarnation: u64) -> Self {
        Owner {
            worker: Arc::from(worker.as_ref()),
            incarnation,
        }
    }
    /// Storage form `worker#incarnation`.
    pub fn encode(&self) -> String {
        format!("{}#{}", self.worker, self.incarnation)
    }
    /// Parse the storage form; `None` when it is not `worker#number`.
    pub fn decode(s: &str) -> Option<Owner> {
        let (worker, inc) = s.rsplit_once('#')?;
        if worker.is_empty() {
            return None;
        }
        Some(Owner::new(worker, inc.parse().ok()?))
    }
}

/// The fencing token of a lease: a counter incremented on every change of
/// owner. Every checkpoint write is conditional on (owner, token), and every
/// delivered batch carries it so a sink can reject a deposed worker.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// The token after one more change of owner.
    pub fn next(self) -> FencingToken {
        FencingToken(self.0.saturating_add(1))
    }
}

macro_rules! minted_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            #[allow(dead_code)]
            pub(crate) fn from_raw(raw: u64) -> Self {
                $name(raw)
            }
            /// The number inside, for logs, traces and maps in the runtime.
            pub fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

minted_id!(
    /// Ties one request [`crate::io::Action`] to its answering [`crate::io::Input`].
    OpId,
    "op"
);
minted_id!(
    /// One SubscribeToShard subscription (EFO); echoed by every input about it.
    SubId,
    "sub"
);
minted_id!(
    /// One chunk of records read from the network (an EFO event or a
    /// GetRecords response). The runtime keeps the payload under this id and
    /// cuts batches out of it by record index.
    ChunkId,
    "chunk"
);
minted_id!(
    /// One batch delivered to the application; acked or nacked by this id.
    BatchId,
    "batch"
);

/// Mints ids in increasing order. One per [`crate::worker::Worker`], so ids
/// are unique for the life of the worker and deterministic.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdMint {
    next: u64,
}

impl IdMint {
    fn bump(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
    pub(crate) fn op(&mut self) -> OpId {
        OpId(self.bump())
    }
    pub(crate) fn sub(&mut self) -> SubId {
        SubId(self.bump())
    }
    pub(crate) fn chunk(&mut self) -> ChunkId {
        ChunkId(self.bump())
    }
    pub(crate) fn batch(&mut self) -> BatchId {
        BatchId(self.bump())
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for ShardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", stream_short(&self.stream), self.shard)
    }
}
impl fmt::Display for ShardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.worker, self.incarnation)
    }
}
impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The stream name out of an ARN (`arn:aws:kinesis:r:a:stream/NAME`), or
/// the string itself.
pub fn stream_short(stream: &StreamId) -> &str {
    let s = stream.as_str();
    s.rsplit_once(":stream/").map(|(_, n)| n).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_through_storage_form() {
        let o = Owner::new("host-1#a", 42);
        assert_eq!(o.encode(), "host-1#a#42");
        assert_eq!(Owner::decode(&o.encode()), Some(o));
        assert_eq!(Owner::decode("nohash"), None);
        assert_eq!(Owner::decode("#5"), None);
        assert_eq!(Owner::decode("w#x"), None);
    }

    #[test]
    fn minted_ids_are_unique_and_increasing() {
        let mut m = IdMint::default();
        let a = m.op();
        let b = m.batch();
        let c = m.op();
        assert!(a.raw() < b.raw() && b.raw() < c.raw());
    }

    #[test]
    fn stream_short_takes_name_from_arn() {
        let s = StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/orders");
        assert_eq!(stream_short(&s), "orders");
        assert_eq!(stream_short(&StreamId::new("plain")), "plain");
    }

    #[test]
    fn fencing_token_next_increments() {
        assert_eq!(FencingToken(7).next(), FencingToken(8));
    }
}
