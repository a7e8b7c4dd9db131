//! The lease table: its rows and the one reference semantics of a
//! conditional write on them.
//!
//! Models: a shard's lease row ([`LeaseRow`]), a worker's heartbeat row
//! ([`HeartbeatRow`]) and every conditional write on a lease row
//! ([`LeaseWrite`]). [`LeaseWrite::apply`] is the contract the DynamoDB
//! store, the local store, the simulator and the fuzz target share: a store
//! must accept exactly the writes `apply` accepts and leave exactly the row
//! it returns.
//!
//! AWS rule encoded: DynamoDB conditional writes (`ConditionExpression`) are
//! atomic per item; a refused condition changes nothing and still costs a
//! write unit. An owner change bumps the fencing token, and a token at
//! `u64::MAX` refuses an owner change rather than hand two owners one token.
//!
//! Shared tables: a heartbeat row lists the streams its worker consumes
//! ([`HeartbeatRow::streams`]); workers of applications on other streams
//! are neither counted nor designated for ours ([`consumes_all`]). A row
//! without the list (an older version) counts as consuming every stream.
//!
//! Invariants: `apply` is pure (no clock, no I/O) and total (it never
//! panics, whatever the row); every write but `Create` needs a row; every
//! write on a held lease is conditional on `(owner, token)`.
//!
//! May import: `ids` and `sequence` only (a leaf of the core).

use crate::ids::{FencingToken, Owner, ShardId, ShardRef, StreamId};
use crate::sequence::Checkpoint;

/// One shard lease row of the lease table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// Which shard.
    pub shard: ShardRef,
    /// Who holds it; `None` = free.
    pub owner: Option<Owner>,
    /// Fencing counter, incremented on every change of owner.
    pub token: FencingToken,
    /// Progress; `None` = never checkpointed.
    pub checkpoint: Option<Checkpoint>,
    /// A worker that asked for a graceful hand-off.
    pub pending_owner: Option<Owner>,
    /// Parent shards that must reach SHARD_END before this one is read.
    pub parents: Vec<ShardId>,
    /// Wall-clock creation time (unix ms): LATEST is anchored once as
    /// AT_TIMESTAMP(created_ms), so a retry never skips records.
    pub created_ms: u64,
    /// The number of the holder's last checkpoint write (0: none since the
    /// owner last changed). A checkpoint write numbered no higher than
    /// this is refused, so a write that reaches the table after its caller
    /// gave up on it (and sent a newer one) never moves the checkpoint
    /// back. Every change of owner resets it.
    pub checkpoint_serial: u64,
}

impl LeaseRow {
    /// A new free row.
    pub fn new(shard: ShardRef, parents: Vec<ShardId>, created_ms: u64) -> Self {
        LeaseRow {
            shard,
            owner: None,
            token: FencingToken(0),
            checkpoint: None,
            pending_owner: None,
            parents,
            created_ms,
            checkpoint_serial: 0,
        }
    }
}

/// One worker's heartbeat row (liveness costs O(workers), not O(shards)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRow {
    /// The worker incarnation that writes it.
    pub owner: Owner,
    /// Bumped on every renew; observers judge liveness by seeing it change
    /// on their own monotonic clock.
    pub beat: u64,
    /// Leases it holds (balancing).
    pub held: u32,
    /// Shards for which it is the pending owner of a graceful hand-off: the
    /// owner reads heartbeats every second, so the request reaches it fast.
    pub wants: Vec<ShardRef>,
    /// False once the worker shut down gracefully (its leases are released).
    pub alive: bool,
    /// The streams this worker consumes (its configured stream ids, ARNs
    /// as configured). One lease table may serve applications on
    /// different streams: a worker balances the leases of its streams only
    /// among the workers that can read them ([`consumes_all`]).
    /// Empty = written by a version without this field: counts as
    /// consuming every stream, so a fleet of old and new versions balances
    /// as before.
    pub streams: Vec<StreamId>,
}

/// Whether a worker whose heartbeat lists `consumed` can read every one
/// of `streams`. An empty list (a row of an older version) reads anything.
pub fn consumes_all<'a>(
    consumed: &[StreamId],
    streams: impl IntoIterator<Item = &'a StreamId>,
) -> bool {
    consumed.is_empty() || streams.into_iter().all(|s| consumed.contains(s))
}

/// A conditional write on a lease row. Every variant states its condition;
/// [`LeaseWrite::apply`] is the reference semantics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseWrite {
    /// Create the row if no row exists for this shard.
    Create(LeaseRow),
    /// Take the lease: condition `token == expect_token` and
    /// `owner == expect_owner`. Sets `owner = to`, `token + 1`, clears
    /// `pending_owner`.
    Take {
        /// Which lease.
        shard: ShardRef,
        /// Owner observed (None = free).
        expect_owner: Option<Owner>,
        /// Token observed.
        expect_token: FencingToken,
        /// The new owner.
        to: Owner,
    },
    /// Ask for a graceful hand-off: condition `owner == owner`, `token ==
    /// token`, no other pending owner. Sets `pending_owner = pending`.
    RequestHandoff {
        /// Which lease.
        shard: ShardRef,
        /// Current owner.
        owner: Owner,
        /// Current token.
        token: FencingToken,
        /// The taker.
        pending: Owner,
    },
    /// Owner hands over after its final checkpoint: condition `owner`,
    /// `token`, `pending_owner == to`. Sets `owner = to`, `token + 1`,
    /// `checkpoint` (if Some), clears `pending_owner`.
    Transfer {
        /// Which lease.
        shard: ShardRef,
        /// Current owner (the writer).
        owner: Owner,
        /// Current token.
        token: FencingToken,
        /// The pending owner.
        to: Owner,
        /// Final checkpoint.
        checkpoint: Option<Checkpoint>,
    },
    /// Checkpoint: condition `owner`, `token`, `checkpoint_serial <
    /// serial`. Sets `checkpoint` and `checkpoint_serial = serial`.
    Checkpoint {
        /// Which lease.
        shard: ShardRef,
        /// Owner (the writer).
        owner: Owner,
        /// Its token.
        token: FencingToken,
        /// New checkpoint.
        checkpoint: Checkpoint,
        /// Numbers the holder's checkpoint writes, increasing: a late one
        /// never overwrites a newer one.
        serial: u64,
    },
    /// Release: condition `owner`, `token`. Sets `owner = None`, `token + 1`,
    /// `checkpoint` (if Some), clears `pending_owner`.
    Release {
        /// Which lease.
        shard: ShardRef,
        /// Owner (the writer).
        owner: Owner,
        /// Its token.
        token: FencingToken,
        /// Final checkpoint.
        checkpoint: Option<Checkpoint>,
    },
}

/// Why a [`LeaseWrite`] did not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lease write refused: {0}")]
pub struct ConditionFailed(pub &'static str);

impl LeaseWrite {
    /// The lease this write is about.
    pub fn shard(&self) -> &ShardRef {
        match self {
            LeaseWrite::Create(row) => &row.shard,
            LeaseWrite::Take { shard, .. }
            | LeaseWrite::RequestHandoff { shard, .. }
            | LeaseWrite::Transfer { shard, .. }
            | LeaseWrite::Checkpoint { shard, .. }
            | LeaseWrite::Release { shard, .. } => shard,
        }
    }

    /// Reference semantics: the row after this write, given the row before
    /// (None = no row), or why the condition failed. Stores (DynamoDB,
    /// local, simulated) must behave exactly like this.
    pub fn apply(&self, current: Option<&LeaseRow>) -> Result<LeaseRow, ConditionFailed> {
        // An owner change must produce a new token: at u64::MAX there is
        // none, so refuse rather than hand two owners one token.
        let changeable = |row: &LeaseRow| {
            if row.token.0 == u64::MAX {
                Err(ConditionFailed("fencing token exhausted"))
            } else {
                Ok(())
            }
        };
        let held_by = |row: &LeaseRow, owner: &Owner, token: FencingToken| {
            row.owner.as_ref() == Some(owner) && row.token == token
        };
        match self {
            LeaseWrite::Create(row) => match current {
                None => Ok(row.clone()),
                Some(_) => Err(ConditionFailed("row exists")),
            },
            LeaseWrite::Take {
                expect_owner,
                expect_token,
                to,
                ..
            } => {
                let row = current.ok_or(ConditionFailed("no row"))?;
                changeable(row)?;
                if row.owner != *expect_owner || row.token != *expect_token {
                    return Err(ConditionFailed("owner or token changed"));
                }
                let mut next = row.clone();
                next.owner = Some(to.clone());
                next.token = row.token.next();
                next.pending_owner = None;
                next.checkpoint_serial = 0;
                Ok(next)
            }
            LeaseWrite::RequestHandoff {
                owner,
                token,
                pending,
                ..
            } => {
                let row = current.ok_or(ConditionFailed("no row"))?;
                if !held_by(row, owner, *token) {
                    return Err(ConditionFailed("owner or token changed"));
                }
                if row.pending_owner.as_ref().is_some_and(|p| p != pending) {
                    return Err(ConditionFailed("another hand-off is pending"));
                }
                let mut next = row.clone();
                next.pending_owner = Some(pending.clone());
                Ok(next)
            }
            LeaseWrite::Transfer {
                owner,
                token,
                to,
                checkpoint,
                ..
            } => {
                let row = current.ok_or(ConditionFailed("no row"))?;
                changeable(row)?;
                if !held_by(row, owner, *token) {
                    return Err(ConditionFailed("owner or token changed"));
                }
                if row.pending_owner.as_ref() != Some(to) {
                    return Err(ConditionFailed("pending owner changed"));
                }
                let mut next = row.clone();
                next.owner = Some(to.clone());
                next.token = row.token.next();
                next.pending_owner = None;
                next.checkpoint_serial = 0;
                if let Some(cp) = checkpoint {
                    next.checkpoint = Some(cp.clone());
                }
                Ok(next)
            }
            LeaseWrite::Checkpoint {
                owner,
                token,
                checkpoint,
                serial,
                ..
            } => {
                let row = current.ok_or(ConditionFailed("no row"))?;
                if !held_by(row, owner, *token) {
                    return Err(ConditionFailed("owner or token changed"));
                }
                if row.checkpoint_serial >= *serial {
                    return Err(ConditionFailed("a newer checkpoint write applied"));
                }
                let mut next = row.clone();
                next.checkpoint = Some(checkpoint.clone());
                next.checkpoint_serial = *serial;
                Ok(next)
            }
            LeaseWrite::Release {
                owner,
                token,
                checkpoint,
                ..
            } => {
                let row = current.ok_or(ConditionFailed("no row"))?;
                changeable(row)?;
                if !held_by(row, owner, *token) {
                    return Err(ConditionFailed("owner or token changed"));
                }
                let mut next = row.clone();
                next.owner = None;
                next.token = row.token.next();
                next.pending_owner = None;
                next.checkpoint_serial = 0;
                if let Some(cp) = checkpoint {
                    next.checkpoint = Some(cp.clone());
                }
                Ok(next)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sref() -> ShardRef {
        ShardRef::new(StreamId::new("s"), ShardId::new("shardId-0"))
    }

    #[test]
    fn take_bumps_token_and_requires_observed_token() {
        let row = LeaseRow::new(sref(), vec![], 0);
        let a = Owner::new("a", 1);
        let w = LeaseWrite::Take {
            shard: sref(),
            expect_owner: None,
            expect_token: FencingToken(0),
            to: a.clone(),
        };
        let next = w.apply(Some(&row)).unwrap();
        assert_eq!(next.owner, Some(a));
        assert_eq!(next.token, FencingToken(1));
        assert!(w.apply(Some(&next)).is_err(), "stale take must fail");
        // Owner as expected but the token moved on (released and taken
        // again meanwhile), or the reverse: refused either way
        // (cargo-mutants survivor: `||` -> `&&`).
        let mut released = next.clone();
        released.owner = None;
        released.token = FencingToken(2);
        assert!(w.apply(Some(&released)).is_err(), "same owner, newer token");
        let mut other = row.clone();
        other.owner = Some(Owner::new("b", 1));
        assert!(w.apply(Some(&other)).is_err(), "same token, other owner");
    }

    #[test]
    fn checkpoint_write_fails_for_deposed_owner() {
        let a = Owner::new("a", 1);
        let b = Owner::new("b", 1);
        let mut row = LeaseRow::new(sref(), vec![], 0);
        row.owner = Some(b);
        row.token = FencingToken(3);
        let w = LeaseWrite::Checkpoint {
            shard: sref(),
            owner: a,
            token: FencingToken(2),
            checkpoint: Checkpoint::ShardEnd,
            serial: 1,
        };
        assert!(w.apply(Some(&row)).is_err());
    }

    #[test]
    fn a_checkpoint_write_applied_after_a_newer_one_is_refused() {
        let a = Owner::new("a", 1);
        let mut row = LeaseRow::new(sref(), vec![], 0);
        row.owner = Some(a.clone());
        row.token = FencingToken(1);
        let write = |n: u64, serial: u64| LeaseWrite::Checkpoint {
            shard: sref(),
            owner: a.clone(),
            token: FencingToken(1),
            checkpoint: Checkpoint::After(crate::sequence::SeqNum::parse(&n.to_string()).unwrap()),
            serial,
        };
        // Serial 2 (the newer checkpoint) lands first; serial 1, sent
        // earlier and given up on, lands late.
        let newer = write(200, 2).apply(Some(&row)).unwrap();
        assert_eq!(newer.checkpoint_serial, 2);
        assert!(write(100, 1).apply(Some(&newer)).is_err());
        assert!(write(300, 2).apply(Some(&newer)).is_err(), "equal serial");
        assert!(write(300, 3).apply(Some(&newer)).is_ok());
        // A new owner starts counting again.
        let taken = LeaseWrite::Take {
            shard: sref(),
            expect_owner: Some(a.clone()),
            expect_token: FencingToken(1),
            to: Owner::new("b", 1),
        }
        .apply(Some(&newer))
        .unwrap();
        assert_eq!(taken.checkpoint_serial, 0);
    }

    #[test]
    fn transfer_needs_matching_pending_owner() {
        let a = Owner::new("a", 1);
        let b = Owner::new("b", 1);
        let c = Owner::new("c", 1);
        let mut row = LeaseRow::new(sref(), vec![], 0);
        row.owner = Some(a.clone());
        row.token = FencingToken(1);
        let req = LeaseWrite::RequestHandoff {
            shard: sref(),
            owner: a.clone(),
            token: FencingToken(1),
            pending: b.clone(),
        };
        let row = req.apply(Some(&row)).unwrap();
        let other = LeaseWrite::RequestHandoff {
            shard: sref(),
            owner: a.clone(),
            token: FencingToken(1),
            pending: c.clone(),
        };
        assert!(other.apply(Some(&row)).is_err(), "second taker refused");
        let bad = LeaseWrite::Transfer {
            shard: sref(),
            owner: a.clone(),
            token: FencingToken(1),
            to: c,
            checkpoint: None,
        };
        assert!(bad.apply(Some(&row)).is_err());
        let good = LeaseWrite::Transfer {
            shard: sref(),
            owner: a,
            token: FencingToken(1),
            to: b.clone(),
            checkpoint: Some(Checkpoint::ShardEnd),
        };
        let row = good.apply(Some(&row)).unwrap();
        assert_eq!(row.owner, Some(b));
        assert_eq!(row.token, FencingToken(2));
        assert_eq!(row.pending_owner, None);
        assert_eq!(row.checkpoint, Some(Checkpoint::ShardEnd));
    }

    #[test]
    fn create_refused_when_row_exists() {
        let row = LeaseRow::new(sref(), vec![], 0);
        let w = LeaseWrite::Create(row.clone());
        assert!(w.apply(None).is_ok());
        assert!(w.apply(Some(&row)).is_err());
    }

    #[test]
    fn owner_change_at_max_token_is_refused() {
        let a = Owner::new("a", 1);
        let mut row = LeaseRow::new(sref(), vec![], 0);
        row.owner = Some(a.clone());
        row.token = FencingToken(u64::MAX);
        let take = LeaseWrite::Take {
            shard: sref(),
            expect_owner: Some(a.clone()),
            expect_token: FencingToken(u64::MAX),
            to: Owner::new("b", 1),
        };
        assert!(take.apply(Some(&row)).is_err());
        let release = LeaseWrite::Release {
            shard: sref(),
            owner: a,
            token: FencingToken(u64::MAX),
            checkpoint: None,
        };
        assert!(release.apply(Some(&row)).is_err());
    }

    #[test]
    fn release_frees_and_bumps_token() {
        let a = Owner::new("a", 1);
        let mut row = LeaseRow::new(sref(), vec![], 0);
        row.owner = Some(a.clone());
        row.token = FencingToken(4);
        let w = LeaseWrite::Release {
            shard: sref(),
            owner: a,
            token: FencingToken(4),
            checkpoint: None,
        };
        let next = w.apply(Some(&row)).unwrap();
        assert_eq!(next.owner, None);
        assert_eq!(next.token, FencingToken(5));
    }
}
