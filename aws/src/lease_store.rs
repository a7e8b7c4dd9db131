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
//! - a stored row that does not decode is an error naming the row and the
//!   field ([`StoreError::is_bad_row`]), never a panic and never a silently
//!   skipped row (a skipped row could hide a lease that someone holds).
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

/// Where lease rows and heartbeat rows live. See the module doc for the
/// invariants every implementation keeps.
pub trait LeaseStore: Send + Sync {
    /// Every lease row of `stream`, in shard-id order, strongly consistent.
    fn read_leases<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Vec<LeaseRow>>;

    /// Apply one conditional write with exactly the semantics of
    /// [`LeaseWrite::apply`]; a failed condition is
    /// [`ErrorClass::ConditionalFailed`].
    fn write_lease<'a>(&'a self, write: &'a LeaseWrite) -> StoreFuture<'a, ()>;

    /// Every worker's heartbeat row, strongly consistent, in worker-id order.
    fn read_heartbeats(&self) -> StoreFuture<'_, Vec<HeartbeatRow>>;

    /// Store this worker's heartbeat row, replacing the row of the same
    /// worker id (whatever incarnation wrote it). Unconditional.
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
    bad_row: bool,
    source: Option<BoxError>,
}

impl StoreError {
    /// An error of `class` during `operation` (e.g. "UpdateItem").
    pub fn new(class: ErrorClass, operation: &'static str, message: impl Into<String>) -> Self {
        StoreError {
            class,
            operation,
            message: message.into(),
            bad_row: false,
            source: None,
        }
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A stored row that does not decode. Its class is
    /// [`ErrorClass::InvalidArgument`]: retrying will not help until the row
    /// is repaired or removed, which the message says how to do.
    pub fn bad_row(operation: &'static str, err: RowError) -> Self {
        StoreError {
            class: ErrorClass::InvalidArgument,
            operation,
            message: err.to_string(),
            bad_row: true,
            source: Some(Box::new(err)),
        }
    }

    /// How the operation failed, for the core.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The store operation that failed (e.g. "Query", "UpdateItem", "rename").
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// True when a stored row could not be decoded (see [`RowError`]).
    pub fn is_bad_row(&self) -> bool {
        self.bad_row
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
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
