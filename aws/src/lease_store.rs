//! The lease-store seam: where lease rows and heartbeat rows live.
//!
//! Models: the four lease-table operations the core asks for
//! ([`kinesin_core::io::Action::ReadLeases`], `WriteLease`, `ReadHeartbeats`,
//! `WriteHeartbeat`) as one trait, [`LeaseStore`], with two implementations:
//! [`crate::DynamoLeaseStore`] (a fleet of workers) and
//! [`crate::LocalLeaseStore`] (one process, a file).
//!
//! Invariants every implementation keeps:
//! - a [`LeaseWrite`] is accepted exactly when [`LeaseWrite::apply`] accepts
//!   it on the row as stored, and then the stored row becomes what `apply`
//!   returned; a refusal is [`ErrorClass::ConditionalFailed`] and changes
//!   nothing;
//! - reads are strongly consistent: a read that starts after a write was
//!   acknowledged sees it (SPEC section 4: a stale read must never make a
//!   live owner look dead);
//! - a write whose outcome is unknown (timeout or connection lost after the
//!   request was sent, a 5xx on a write) is [`ErrorClass::Ambiguous`], never
//!   a guess;
//! - a stored row that does not decode never fails a read and never
//!   panics: the read returns the rows that decode and names each one that
//!   does not ([`Rows::bad`], a [`RowError`] naming the row and the field),
//!   so one bad row stops neither failover (heartbeats) nor the balancing
//!   of the stream's other shards (leases). A bad row is never silently
//!   dropped either: it stays in the table (a Create of its shard is
//!   refused: the row exists; the core, which does not see the row, takes
//!   it never), and the driver reports it once; the unconditional
//!   heartbeat write replaces a worker's own bad row.
//!
//! The trait is object-safe: methods return a boxed `Send` future
//! ([`StoreFuture`]), so a driver can hold an `Arc<dyn LeaseStore>` and move
//! calls into spawned tasks on any executor. The futures use no executor
//! facilities of their own (no tokio types): the DynamoDB store runs on
//! whatever HTTP client and sleep the SDK client was built with.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use kinesin_core::ids::StreamId;
use kinesin_core::io::ErrorClass;
use kinesin_core::table::{HeartbeatRow, LeaseRow, LeaseWrite};

/// The future a [`LeaseStore`] method returns: boxed so the trait is
/// object-safe, `Send` so it can run in a spawned task.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What a read found: the rows that decode, and the rows that do not (each
/// naming the row, the field and what is wrong), which the reader reports
/// and otherwise skips.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rows<T> {
    /// The rows that decode, in key order.
    pub rows: Vec<T>,
    /// The rows that do not.
    pub bad: Vec<RowError>,
}

/// Where lease rows and heartbeat rows live. See the module doc for the
/// invariants every implementation keeps.
pub trait LeaseStore: Send + Sync {
    /// Every lease row of `stream`, in shard-id order, strongly consistent;
    /// rows that do not decode in [`Rows::bad`].
    fn read_leases<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Rows<LeaseRow>>;

    /// Apply one conditional write with exactly the semantics of
    /// [`LeaseWrite::apply`]; a failed condition is
    /// [`ErrorClass::ConditionalFailed`].
    fn write_lease<'a>(&'a self, write: &'a LeaseWrite) -> StoreFuture<'a, ()>;

    /// As [`Self::write_lease`], answering with the row as the write left
    /// it when the store can return it atomically with the write
    /// (DynamoDB: `ReturnValues: ALL_NEW`). A take then starts from the
    /// checkpoint the previous owner wrote after the taker's last read,
    /// not from that read. The default answers `None` (the worker applies
    /// the write to the row it last read).
    fn write_lease_returning<'a>(
        &'a self,
        write: &'a LeaseWrite,
    ) -> StoreFuture<'a, Option<LeaseRow>> {
        Box::pin(async move { self.write_lease(write).await.map(|()| None) })
    }

    /// Every worker's heartbeat row, strongly consistent, in worker-id
    /// order; rows that do not decode in [`Rows::bad`].
    fn read_heartbeats(&self) -> StoreFuture<'_, Rows<HeartbeatRow>>;

    /// Store this worker's heartbeat row, replacing the row of the same
    /// worker id (whatever incarnation wrote it, and whether it decodes or
    /// not). Unconditional.
    fn write_heartbeat<'a>(&'a self, row: &'a HeartbeatRow) -> StoreFuture<'a, ()>;

    /// Every stream that has lease rows, in order. For operators' tools
    /// (`kinesin leases`, status views): a DynamoDB store answers it with a
    /// Scan of the key only (workers never scan), so it needs
    /// `dynamodb:Scan`.
    fn list_streams(&self) -> StoreFuture<'_, Vec<StreamId>>;
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a lease-store operation failed.
///
/// [`StoreError::class`] is what the core needs ([`ErrorClass`]); the
/// message and the source chain are for logs and operators.
#[derive(Debug)]
pub struct StoreError {
    class: ErrorClass,
    operation: &'static str,
    message: String,
    source: Option<BoxError>,
}

impl StoreError {
    /// An error of `class` during `operation` (e.g. "UpdateItem").
    pub fn new(class: ErrorClass, operation: &'static str, message: impl Into<String>) -> Self {
        StoreError {
            class,
            operation,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// How the operation failed, for the core.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The store operation that failed (e.g. "Query", "UpdateItem", "rename").
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lease store {} failed ({:?}): {}",
            self.operation, self.class, self.message
        )
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A stored row that does not decode: which row, which field, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("row {row}: field `{field}` {problem}; repair or delete this row")]
pub struct RowError {
    /// The row, as `<partition>/<sort key>` (DynamoDB) or its position in
    /// the local file.
    pub row: String,
    /// The attribute or JSON field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl RowError {
    /// Build a row error.
    pub fn new(row: impl Into<String>, field: &'static str, problem: impl Into<String>) -> Self {
        RowError {
            row: row.into(),
            field,
            problem: problem.into(),
        }
    }
}
