//! Simulated DynamoDB lease table: shard lease rows and worker heartbeat
//! rows, with the conditional-write semantics of [`LeaseWrite::apply`].
//!
//! AWS rules encoded: every lease write is conditional and applied
//! atomically in arrival order; a failed condition still costs a write unit
//! (it is counted); reads are strongly consistent (the core asks for
//! ConsistentRead). Heartbeat rows are keyed by worker id (a new incarnation
//! overwrites its predecessor's row) and written unconditionally.
//!
//! Latency, throttling, errors, partitions and ambiguous outcomes (applied,
//! response lost) are injected around these calls by [`crate::net`]; this
//! module is the table itself and the write accounting.
//!
//! Invariants: a row changes only through [`LeaseWrite::apply`]; the
//! fencing token of a row never decreases.

use std::collections::BTreeMap;
use std::sync::Arc;

use kinesin_core::ids::{ShardRef, StreamId};
use kinesin_core::table::{ConditionFailed, HeartbeatRow, LeaseRow, LeaseWrite};

/// DynamoDB requests that reached the table, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Heartbeat puts (liveness).
    pub heartbeat: u64,
    /// Checkpoint writes.
    pub checkpoint: u64,
    /// Takes (free, expired or forced).
    pub take: u64,
    /// Hand-off requests.
    pub request_handoff: u64,
    /// Graceful transfers.
    pub transfer: u64,
    /// Releases (shutdown, fatal shard error, SHARD_END).
    pub release: u64,
    /// Row creations.
    pub create: u64,
    /// Lease writes whose condition failed (billed all the same).
    pub conditional_failed: u64,
    /// Lease-row queries.
    pub lease_reads: u64,
    /// Heartbeat-row queries.
    pub heartbeat_reads: u64,
}

impl WriteCounts {
    /// Writes spent on lease ownership and progress (not liveness).
    pub fn lease_writes(&self) -> u64 {
        self.checkpoint
            + self.take
            + self.request_handoff
            + self.transfer
            + self.release
            + self.create
    }

    /// Add another count.
    pub fn add(&mut self, o: &WriteCounts) {
        self.heartbeat += o.heartbeat;
        self.checkpoint += o.checkpoint;
        self.take += o.take;
        self.request_handoff += o.request_handoff;
        self.transfer += o.transfer;
        self.release += o.release;
        self.create += o.create;
        self.conditional_failed += o.conditional_failed;
        self.lease_reads += o.lease_reads;
        self.heartbeat_reads += o.heartbeat_reads;
    }
}

/// The lease table.
#[derive(Default)]
pub struct Dynamo {
    /// Shard lease rows.
    pub leases: BTreeMap<ShardRef, LeaseRow>,
    /// Heartbeat rows by worker id.
    pub beats: BTreeMap<Arc<str>, HeartbeatRow>,
    /// Request accounting.
    pub counts: WriteCounts,
}

impl Dynamo {
    /// Apply a conditional lease write. Returns the row before and after.
    pub fn write_lease(
        &mut self,
        write: &LeaseWrite,
    ) -> Result<(Option<LeaseRow>, LeaseRow), ConditionFailed> {
        let c = &mut self.counts;
        match write {
            LeaseWrite::Create(_) => c.create += 1,
            LeaseWrite::Take { .. } => c.take += 1,
            LeaseWrite::RequestHandoff { .. } => c.request_handoff += 1,
            LeaseWrite::Transfer { .. } => c.transfer += 1,
            LeaseWrite::Checkpoint { .. } => c.checkpoint += 1,
            LeaseWrite::Release { .. } => c.release += 1,
        }
        let before = self.leases.get(write.shard()).cloned();
        match write.apply(before.as_ref()) {
            Ok(after) => {
                self.leases.insert(write.shard().clone(), after.clone());
                Ok((before, after))
            }
            Err(e) => {
                self.counts.conditional_failed += 1;
                Err(e)
            }
        }
    }

    /// Put a heartbeat row.
    pub fn put_beat(&mut self, row: HeartbeatRow) {
        self.counts.heartbeat += 1;
        self.beats.insert(row.owner.worker.clone(), row);
    }

    /// Query the lease rows of a stream.
    pub fn read_leases(&mut self, stream: &StreamId) -> Vec<LeaseRow> {
        self.counts.lease_reads += 1;
        self.leases
            .values()
            .filter(|r| &r.shard.stream == stream)
            .cloned()
            .collect()
    }

    /// Query every heartbeat row.
    pub fn read_beats(&mut self) -> Vec<HeartbeatRow> {
        self.counts.heartbeat_reads += 1;
        self.beats.values().cloned().collect()
    }
}
