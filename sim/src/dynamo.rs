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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kinesin_core::ids::{FencingToken, Owner, ShardRef, StreamId};
use kinesin_core::io::ErrorClass;
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
    /// Heartbeat rows of gone workers deleted.
    pub heartbeat_deletes: u64,
    /// Lease rows of drained shards deleted.
    pub lease_deletes: u64,
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
        self.heartbeat_deletes += o.heartbeat_deletes;
        self.lease_deletes += o.lease_deletes;
    }
}

/// The lease table.
#[derive(Default)]
pub struct Dynamo {
    /// Shard lease rows.
    pub leases: BTreeMap<ShardRef, LeaseRow>,
    /// Heartbeat rows by worker id.
    pub beats: BTreeMap<Arc<str>, HeartbeatRow>,
    /// Lease rows deleted (drained shards whose children checkpointed).
    pub deleted: BTreeSet<ShardRef>,
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

    /// Put a heartbeat row, unless a later incarnation wrote the row of
    /// its worker id ([`HeartbeatRow::put_applies`]).
    pub fn put_beat(&mut self, row: HeartbeatRow) -> Result<(), ErrorClass> {
        self.counts.heartbeat += 1;
        if !HeartbeatRow::put_applies(self.beats.get(&row.owner.worker), &row) {
            return Err(ErrorClass::ConditionalFailed);
        }
        self.beats.insert(row.owner.worker.clone(), row);
        Ok(())
    }

    /// Delete a lease row with the reference semantics
    /// ([`LeaseRow::delete_applies`]); remembered in `deleted`.
    pub fn delete_lease(
        &mut self,
        shard: &ShardRef,
        token: FencingToken,
    ) -> Result<(), ErrorClass> {
        if LeaseRow::delete_applies(self.leases.get(shard), token) {
            self.leases.remove(shard);
            self.deleted.insert(shard.clone());
            self.counts.lease_deletes += 1;
            Ok(())
        } else {
            Err(ErrorClass::ConditionalFailed)
        }
    }

    /// Delete a heartbeat row with the reference semantics
    /// ([`HeartbeatRow::delete_applies`]).
    pub fn delete_beat(&mut self, owner: &Owner, beat: u64) -> Result<(), ErrorClass> {
        let key: &str = &owner.worker;
        if HeartbeatRow::delete_applies(self.beats.get(key), owner, beat) {
            self.beats.remove(key);
            self.counts.heartbeat_deletes += 1;
            Ok(())
        } else {
            Err(ErrorClass::ConditionalFailed)
        }
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
