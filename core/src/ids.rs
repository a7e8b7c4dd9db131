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

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A stream the worker consumes: the stream ARN (or the name when the
/// runtime works with names). Cheap to clone.
///
/// Equality and order are those of the string (so maps iterate in string
/// order, deterministically); two clones of one id compare by pointer
/// first, which is what keeps `BTreeMap<ShardRef, _>` lookups from
/// comparing the long ARN byte by byte (the lease manager interns the
/// stream of every row it reads).
#[derive(Clone)]
pub struct StreamId {
    id: Arc<str>,
    /// Where the stream name starts (after the last `:stream/` of an ARN),
    /// found once: traces and logs print the name all the time.
    name_at: usize,
}

impl StreamId {
    /// Wrap a stream ARN or name.
    pub fn new(s: impl AsRef<str>) -> Self {
        let s = s.as_ref();
        let name_at = s.rfind(":stream/").map_or(0, |i| i + ":stream/".len());
        StreamId {
            id: Arc::from(s),
            name_at,
        }
    }
    /// The ARN or name as given.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

/// A shard id such as `shardId-000000000001`. Cheap to clone; ordered and
/// compared as the string, with the same pointer fast path as [`StreamId`]
/// and, for Kinesis's canonical form (`shardId-` and 12 digits), the
/// number in it: two canonical ids have one length and one prefix, so their
/// string order is the order of their numbers, and no bytes are compared.
#[derive(Clone)]
pub struct ShardId {
    id: Arc<str>,
    /// The number of a canonical id, else [`ShardId::NOT_CANONICAL`].
    number: u64,
}

impl PartialEq for StreamId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.id, &other.id) || *self.id == *other.id
    }
}
impl Eq for StreamId {}
impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.id, &other.id) {
            Ordering::Equal
        } else {
            self.id.cmp(&other.id)
        }
    }
}
impl Hash for StreamId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl PartialEq for ShardId {
    fn eq(&self, other: &Self) -> bool {
        if self.number != Self::NOT_CANONICAL || other.number != Self::NOT_CANONICAL {
            return self.number == other.number;
        }
        Arc::ptr_eq(&self.id, &other.id) || *self.id == *other.id
    }
}
impl Eq for ShardId {}
impl PartialOrd for ShardId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ShardId {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.number != Self::NOT_CANONICAL && other.number != Self::NOT_CANONICAL {
            self.number.cmp(&other.number)
        } else if Arc::ptr_eq(&self.id, &other.id) {
            Ordering::Equal
        } else {
            self.id.cmp(&other.id)
        }
    }
}
impl Hash for ShardId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl ShardId {
    const NOT_CANONICAL: u64 = u64::MAX;

    /// Wrap a shard id.
    pub fn new(s: impl AsRef<str>) -> Self {
        let s = s.as_ref();
        let number = s
            .strip_prefix("shardId-")
            .filter(|d| d.len() == 12 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .unwrap_or(Self::NOT_CANONICAL);
        ShardId {
            id: Arc::from(s),
            number,
        }
    }
    /// The shard id as AWS spells it.
    pub fn as_str(&self) -> &str {
        &self.id
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
/// resumes leases its previous process held (SPEC section 4). Ordered by
/// (worker string, incarnation), with a pointer fast path on the worker id.
#[derive(Clone)]
pub struct Owner {
    /// Worker id from the configuration (e.g. hostname-pid).
    pub worker: Arc<str>,
    /// Grows with every process start of the same worker id (the runtime
    /// uses the start time in ms; the simulator counts restarts). A later
    /// incarnation's heartbeat tells observers the earlier one is dead.
    pub incarnation: u64,
}

impl PartialEq for Owner {
    fn eq(&self, other: &Self) -> bool {
        self.incarnation == other.incarnation
            && (Arc::ptr_eq(&self.worker, &other.worker) || *self.worker == *other.worker)
    }
}
impl Eq for Owner {}
impl PartialOrd for Owner {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Owner {
    fn cmp(&self, other: &Self) -> Ordering {
        let worker = if Arc::ptr_eq(&self.worker, &other.worker) {
            Ordering::Equal
        } else {
            self.worker.cmp(&other.worker)
        };
        worker.then(self.incarnation.cmp(&other.incarnation))
    }
}
impl Hash for Owner {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.worker.hash(state);
        self.incarnation.hash(state);
    }
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
                f.write_str($prefix)?;
                write_decimal(f, self.0)
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
        f.write_str(&self.id)
    }
}
impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}
impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}
impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}
impl fmt::Debug for ShardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(stream_short(&self.stream))?;
        f.write_str(":")?;
        f.write_str(self.shard.as_str())
    }
}
impl fmt::Display for ShardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.worker)?;
        f.write_str("#")?;
        write_decimal(f, self.incarnation)
    }
}

/// `n` in decimal, as `{}` prints it, without the padding machinery (ids
/// are printed on every trace line of the simulator).
fn write_decimal(f: &mut fmt::Formatter<'_>, mut n: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    f.write_str(std::str::from_utf8(&digits[at..]).map_err(|_| fmt::Error)?)
}
impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The stream name out of an ARN (`arn:aws:kinesis:r:a:stream/NAME`), or
/// the string itself.
pub fn stream_short(stream: &StreamId) -> &str {
    stream.id.get(stream.name_at..).unwrap_or(&stream.id)
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
    fn ids_order_as_their_strings_whether_shared_or_not() {
        let a = StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/a");
        let b = StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/b");
        let a2 = StreamId::new(a.as_str());
        assert_eq!(a, a.clone());
        assert_eq!(a, a2);
        assert!(a < b);
        assert!(a2 < b);
        assert_eq!(b.cmp(&a), Ordering::Greater);
        assert_eq!(a.cmp(&a2), Ordering::Equal);
        let s1 = ShardRef::new(a.clone(), ShardId::new("shardId-000000000002"));
        let s2 = ShardRef::new(a2, ShardId::new("shardId-000000000010"));
        assert!(s1 < s2);
        let hash = |x: &StreamId| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            x.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&StreamId::new(a.as_str())));
        assert_ne!(a, b);
        assert_ne!(hash(&a), hash(&b));
    }

    /// cargo-mutants survivors: the ids go into users' HashMaps, so equal
    /// ids (shared or not) hash alike and different ones apart.
    #[test]
    fn ids_hash_agrees_with_eq() {
        fn hash<T: Hash>(x: &T) -> u64 {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            x.hash(&mut h);
            h.finish()
        }
        for (x, y) in [("shardId-000000000001", "shardId-000000000002"), ("a", "b")] {
            assert_eq!(hash(&ShardId::new(x)), hash(&ShardId::new(x)));
            assert_ne!(hash(&ShardId::new(x)), hash(&ShardId::new(y)));
        }
        let (o1, o2) = (Owner::new("w", 1), Owner::new("w", 2));
        assert_eq!(hash(&o1), hash(&Owner::new("w", 1)));
        assert_ne!(hash(&o1), hash(&o2));
        assert_ne!(hash(&o1), hash(&Owner::new("v", 1)));
    }

    #[test]
    fn shard_ids_order_as_their_strings_canonical_or_not() {
        let ids = [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000010",
            "shardId-999999999999",
            "shardId-00000000001",
            "shardId-0000000000010",
            "shardId-00000000000a",
            "shardId-",
            "shardid-000000000001",
            "",
            "a",
            "shardId-000000000002-x",
        ];
        for a in ids {
            for b in ids {
                let (x, y) = (ShardId::new(a), ShardId::new(b));
                assert_eq!(x.cmp(&y), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(x == y, a == b, "{a:?} == {b:?}");
                assert_eq!(x.cmp(&x.clone()), Ordering::Equal);
            }
        }
    }

    #[test]
    fn ids_print_as_before() {
        let o = Owner::new("w3", 1_234_567_890_123);
        assert_eq!(format!("{o}"), format!("{}#{}", o.worker, o.incarnation));
        assert_eq!(format!("{:?}", Owner::new("w", 0)), "w#0");
        assert_eq!(format!("{:?}", OpId(0)), "op0");
        assert_eq!(
            format!("{:?}", BatchId(u64::MAX)),
            format!("batch{}", u64::MAX)
        );
        let s = ShardRef::new(
            StreamId::new("arn:aws:kinesis:r:1:stream/x:stream/orders"),
            ShardId::new("shardId-000000000007"),
        );
        assert_eq!(format!("{s}"), "orders:shardId-000000000007");
    }

    #[test]
    fn fencing_token_next_increments() {
        assert_eq!(FencingToken(7).next(), FencingToken(8));
    }
}
