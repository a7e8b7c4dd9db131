//! The row codec shared by both lease stores (DynamoDB items and the local
//! store's JSON objects): one decoder of a lease row and one of a heartbeat
//! row over [`RowFields`], the typed attribute access each store provides,
//! and the storage forms of owners, checkpoints and shard references as
//! strings.
//!
//! Rules encoded: the attribute names of the README's table schema
//! (`owner`, `token`, `checkpoint`, `sub_sequence`, `checkpoint_serial`,
//! `pending_owner`, `parents`, `created_ms`; `owner`, `beat`, `held`, `wants`, `alive`,
//! `streams`); a Java KCL sentinel checkpoint reads as "no checkpoint"; a
//! heartbeat row without `streams` (written by an older version) reads as
//! an empty list, which counts as consuming every stream.
//!
//! Invariants: decoding never panics; every failure is a [`RowError`]
//! naming the row and the field; missing optional attributes read as
//! absent, missing required ones are an error.
//!
//! May import: `kinesin_core` (ids, sequence, table) and the store errors.

use kinesin_core::ids::{FencingToken, Owner, ShardId, ShardRef, StreamId};
use kinesin_core::sequence::{Checkpoint, CheckpointError};
use kinesin_core::table::{HeartbeatRow, LeaseRow};

use crate::lease_store::RowError;

/// Typed access to one stored row's attributes, the one thing each store
/// implements for the shared decoders. A missing attribute (or a null) is
/// `None`; an attribute of the wrong type is an error naming it.
pub(crate) trait RowFields<'a> {
    /// The row's name in error messages (table, stream and key).
    fn row(&self) -> &str;
    /// A string attribute.
    fn opt_str(&self, field: &'static str) -> Result<Option<&'a str>, RowError>;
    /// An unsigned integer attribute.
    fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, RowError>;
    /// A boolean attribute.
    fn opt_bool(&self, field: &'static str) -> Result<Option<bool>, RowError>;
    /// A list of strings; missing = empty.
    fn strings(&self, field: &'static str) -> Result<Vec<&'a str>, RowError>;

    /// An error naming this row and `field`.
    fn err(&self, field: &'static str, problem: impl Into<String>) -> RowError {
        RowError::new(self.row(), field, problem)
    }

    /// A required unsigned integer.
    fn u64(&self, field: &'static str) -> Result<u64, RowError> {
        self.opt_u64(field)?
            .ok_or_else(|| self.err(field, "is missing"))
    }

    /// An unsigned integer that must fit a u32.
    fn opt_u32(&self, field: &'static str) -> Result<Option<u32>, RowError> {
        self.opt_u64(field)?
            .map(|v| {
                u32::try_from(v).map_err(|_| self.err(field, format!("is {v}, more than a u32")))
            })
            .transpose()
    }

    /// An owner (`<worker id>#<incarnation>`).
    fn opt_owner(&self, field: &'static str) -> Result<Option<Owner>, RowError> {
        self.opt_str(field)?
            .map(|v| decode_owner(self.row(), field, v))
            .transpose()
    }
}

/// The lease row of `shard` (the key, which each store spells its own way)
/// from its attributes.
pub(crate) fn decode_lease_row<'a>(
    f: &impl RowFields<'a>,
    shard: ShardRef,
) -> Result<LeaseRow, RowError> {
    let checkpoint = decode_checkpoint(
        f.row(),
        f.opt_str("checkpoint")?,
        f.opt_u32("sub_sequence")?,
    )?;
    Ok(LeaseRow {
        shard,
        owner: f.opt_owner("owner")?,
        token: FencingToken(f.u64("token")?),
        checkpoint,
        pending_owner: f.opt_owner("pending_owner")?,
        parents: f
            .strings("parents")?
            .into_iter()
            .map(ShardId::new)
            .collect(),
        created_ms: f.u64("created_ms")?,
        // Absent on rows of older versions and after a change of owner.
        checkpoint_serial: f.opt_u64("checkpoint_serial")?.unwrap_or(0),
    })
}

/// A heartbeat row from its attributes.
pub(crate) fn decode_heartbeat_row<'a>(f: &impl RowFields<'a>) -> Result<HeartbeatRow, RowError> {
    let owner = f
        .opt_owner("owner")?
        .ok_or_else(|| f.err("owner", "is missing"))?;
    let alive = f
        .opt_bool("alive")?
        .ok_or_else(|| f.err("alive", "is missing"))?;
    let wants = f
        .strings("wants")?
        .into_iter()
        .map(|w| decode_shard_ref(f.row(), "wants", w))
        .collect::<Result<_, _>>()?;
    Ok(HeartbeatRow {
        owner,
        beat: f.u64("beat")?,
        held: f
            .opt_u32("held")?
            .ok_or_else(|| f.err("held", "is missing"))?,
        wants,
        alive,
        streams: f
            .strings("streams")?
            .into_iter()
            .map(StreamId::new)
            .collect(),
    })
}

/// `Owner::decode`, or an error naming the field.
pub(crate) fn decode_owner(row: &str, field: &'static str, s: &str) -> Result<Owner, RowError> {
    Owner::decode(s).ok_or_else(|| {
        RowError::new(
            row,
            field,
            format!("is {s:?}, not `<worker id>#<incarnation number>`"),
        )
    })
}

/// `Checkpoint::from_parts`. A Java KCL sentinel (`TRIM_HORIZON`, `LATEST`,
/// `AT_TIMESTAMP`) is no position: it reads as "no checkpoint", as
/// [`CheckpointError::KclSentinel`] prescribes. Every other failure is an
/// error naming the field.
pub(crate) fn decode_checkpoint(
    row: &str,
    value: Option<&str>,
    sub: Option<u32>,
) -> Result<Option<Checkpoint>, RowError> {
    let Some(value) = value else {
        return match sub {
            None => Ok(None),
            Some(sub) => Err(RowError::new(
                row,
                "sub_sequence",
                format!("is {sub} but the row has no checkpoint"),
            )),
        };
    };
    match Checkpoint::from_parts(value, sub) {
        Ok(cp) => Ok(Some(cp)),
        Err(CheckpointError::KclSentinel { .. }) => Ok(None),
        Err(err @ CheckpointError::ShardEndWithSub { .. }) => {
            Err(RowError::new(row, "sub_sequence", err.to_string()))
        }
        Err(err) => Err(RowError::new(row, "checkpoint", err.to_string())),
    }
}

/// A shard reference as one string, `<stream>|<shard id>` (the `wants` list
/// of heartbeat rows). Neither stream names/ARNs nor shard ids contain `|`.
pub(crate) fn encode_shard_ref(shard: &ShardRef) -> String {
    format!("{}|{}", shard.stream.as_str(), shard.shard.as_str())
}

/// Inverse of [`encode_shard_ref`].
pub(crate) fn decode_shard_ref(
    row: &str,
    field: &'static str,
    s: &str,
) -> Result<ShardRef, RowError> {
    match s.rsplit_once('|') {
        Some((stream, shard)) if !stream.is_empty() && !shard.is_empty() => {
            Ok(ShardRef::new(StreamId::new(stream), ShardId::new(shard)))
        }
        _ => Err(RowError::new(
            row,
            field,
            format!("has {s:?}, not `<stream>|<shard id>`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcl_sentinel_reads_as_no_checkpoint() {
        assert_eq!(decode_checkpoint("r", Some("TRIM_HORIZON"), None), Ok(None));
    }

    #[test]
    fn bad_checkpoint_names_the_field() {
        let err = decode_checkpoint("s/shard#1", Some("12x"), None).unwrap_err();
        assert_eq!(err.field, "checkpoint");
        let err = decode_checkpoint("s/shard#1", Some("SHARD_END"), Some(1)).unwrap_err();
        assert_eq!(err.field, "sub_sequence");
        let err = decode_checkpoint("s/shard#1", None, Some(1)).unwrap_err();
        assert_eq!(err.field, "sub_sequence");
    }

    #[test]
    fn shard_ref_round_trips_through_storage_form() {
        let r = ShardRef::new(
            StreamId::new("arn:aws:kinesis:us-east-1:1:stream/a"),
            ShardId::new("shardId-000000000007"),
        );
        assert_eq!(decode_shard_ref("r", "wants", &encode_shard_ref(&r)), Ok(r));
        assert!(decode_shard_ref("r", "wants", "no-bar").is_err());
        assert!(decode_shard_ref("r", "wants", "|x").is_err());
    }

    #[test]
    fn bad_owner_names_the_field() {
        let err = decode_owner("s/shard#1", "pending_owner", "w#x").unwrap_err();
        assert_eq!(err.field, "pending_owner");
        assert!(err.to_string().contains("s/shard#1"));
    }
}
