//! Storage forms shared by both lease stores: owners, checkpoints and shard
//! references as strings. Decoding never panics; every failure is a
//! [`RowError`] naming the row and the field.

use kinesin_core::ids::{Owner, ShardId, ShardRef, StreamId};
use kinesin_core::sequence::{Checkpoint, CheckpointError};

use crate::lease_store::RowError;

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
