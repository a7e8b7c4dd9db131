//! KPL aggregated records: de-aggregation, aggregation and hash-key routing.
//!
//! The Kinesis Producer Library packs many user records into one Kinesis
//! record (SPEC section 8):
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5(protobuf), 16 bytes
//!
//! message AggregatedRecord { repeated string partition_key_table = 1;
//!                            repeated string explicit_hash_key_table = 2;
//!                            repeated Record records = 3; }
//! message Record { required uint64 partition_key_index = 1;
//!                  optional uint64 explicit_hash_key_index = 2;
//!                  required bytes data = 3; repeated Tag tags = 4; }
//! message Tag { required string key = 1; optional string value = 2; }
//! ```
//!
//! Rules encoded here:
//! - A record with a bad magic, a bad MD5 or a malformed protobuf (including
//!   an index outside its table or a missing required field) is not an
//!   aggregate: [`deaggregate`] returns `None` and the caller passes it
//!   through unchanged as one user record (what the Java KCL does).
//! - Sub-records get sub-sequence numbers `0..n` in protobuf order.
//! - Kinesis routes by a 128-bit hash key: the explicit hash key if given,
//!   else MD5 of the partition key read big-endian ([`hash_key`]). After a
//!   reshard an aggregate may hold keys of a sibling shard; those sub-records
//!   are dropped ([`filter_by_range`]).
//! - [`expand`] is the one place that turns a Kinesis record into the user
//!   records a runtime delivers (de-aggregation, range and position
//!   filtering, sizes, the last-sub-record flag); the aws driver and the
//!   simulator both call it.
//!
//! Protobuf reading follows the protobuf rules: fields may come in any order,
//! a later value of a non-repeated field wins, unknown fields (and known field
//! numbers with an unexpected wire type) of wire types 0, 1, 2 and 5 are
//! skipped; groups (3, 4), wire types 6 and 7, field number 0, varints longer
//! than 10 bytes and lengths past the end are malformed.
//!
//! Invariants: no function here panics on any input; results borrow from the
//! input (zero-copy) and every allocation is bounded by the input length
//! (a declared length is checked against the remaining bytes before use and
//! never used to reserve memory).

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use crate::io::RecordMeta;
use crate::sequence::{ExtSeq, SeqNum};

/// The four bytes every KPL aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 trailer of an aggregate.
const DIGEST_LEN: usize = 16;

/// One user record inside a KPL aggregate, borrowing from the Kinesis record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRecord<'a> {
    /// Sub-sequence number: the index of this user record in the aggregate.
    pub sub: u32,
    /// Partition key the producer gave this user record.
    pub partition_key: &'a [u8],
    /// Explicit hash key (decimal), if the producer gave one.
    pub explicit_hash_key: Option<&'a [u8]>,
    /// The user record's payload.
    pub data: &'a [u8],
}

/// Some(sub-records, zero-copy slices of `data`) if `data` is a valid aggregate; None if it is not one
/// (no magic, too short, bad MD5, malformed protobuf, index out of range, missing required field):
/// the caller then passes the record through unchanged as one user record. Never panics; allocation bounded by data.len().
///
/// A valid aggregate with no records gives `Some` of an empty vector: the
/// Kinesis record holds no user records, yet it still counts as read.
pub fn deaggregate(data: &[u8]) -> Option<Vec<SubRecord<'_>>> {
    let body = data.strip_prefix(&MAGIC)?;
    let proto_len = body.len().checked_sub(DIGEST_LEN)?;
    let (proto, digest) = body.split_at(proto_len);
    if Md5::digest(proto).as_slice() != digest {
        return None;
    }
    parse_aggregate(proto).ok()
}

/// Parses the protobuf `AggregatedRecord` in two passes over the top level:
/// the first collects the key tables (which may come after the records) and
/// counts records, the second resolves each record against the tables.
fn parse_aggregate(proto: &[u8]) -> Result<Vec<SubRecord<'_>>, Malformed> {
    let mut partition_keys: Vec<&[u8]> = Vec::new();
    let mut explicit_hash_keys: Vec<&[u8]> = Vec::new();
    let mut record_count: usize = 0;
    for field in Fields::new(proto) {
        match field? {
            (1, Value::Bytes(key)) => partition_keys.push(key),
            (2, Value::Bytes(key)) => explicit_hash_keys.push(key),
            (3, Value::Bytes(_)) => record_count = record_count.saturating_add(1),
            _ => {}
        }
    }

    // Each counted record consumed at least two input bytes: bounded by input.
    let mut records = Vec::with_capacity(record_count);
    for field in Fields::new(proto) {
        if let (3, Value::Bytes(record)) = field? {
            let sub = u32::try_from(records.len()).map_err(|_| Malformed)?;
            records.push(parse_record(
                record,
                sub,
                &partition_keys,
                &explicit_hash_keys,
            )?);
        }
    }
    Ok(records)
}

/// Parses one protobuf `Record` and resolves its table indices.
fn parse_record<'a>(
    record: &'a [u8],
    sub: u32,
    partition_keys: &[&'a [u8]],
    explicit_hash_keys: &[&'a [u8]],
) -> Result<SubRecord<'a>, Malformed> {
    let mut partition_key_index = None;
    let mut explicit_hash_key_index = None;
    let mut data = None;
    for field in Fields::new(record) {
        match field? {
            (1, Value::Varint(index)) => partition_key_index = Some(index),
            (2, Value::Varint(index)) => explicit_hash_key_index = Some(index),
            (3, Value::Bytes(bytes)) => data = Some(bytes),
            (4, Value::Bytes(tag)) => check_tag(tag)?,
            _ => {}
        }
    }
    let partition_key = table_entry(partition_keys, partition_key_index.ok_or(Malformed)?)?;
    let explicit_hash_key = match explicit_hash_key_index {
        Some(index) => Some(table_entry(explicit_hash_keys, index)?),
        None => None,
    };
    Ok(SubRecord {
        sub,
        partition_key,
        explicit_hash_key,
        data: data.ok_or(Malformed)?,
    })
}

/// Entry `index` of a key table; an index outside the table is malformed.
fn table_entry<'a>(table: &[&'a [u8]], index: u64) -> Result<&'a [u8], Malformed> {
    let index = usize::try_from(index).map_err(|_| Malformed)?;
    table.get(index).copied().ok_or(Malformed)
}

/// Tags are not surfaced, but a `Tag` must be well formed and have its
/// required `key`, as in the protobuf runtimes the KCL uses.
fn check_tag(tag: &[u8]) -> Result<(), Malformed> {
    let mut has_key = false;
    for field in Fields::new(tag) {
        if let (1, Value::Bytes(_)) = field? {
            has_key = true;
        }
    }
    if has_key {
        Ok(())
    } else {
        Err(Malformed)
    }
}

/// The protobuf bytes are not a well-formed message of the expected shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Malformed;

/// A decoded protobuf field value. Fixed-width values are skipped, so their
/// contents are not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 or 5.
    Fixed,
    /// Wire type 2: a sub-slice of the input.
    Bytes(&'a [u8]),
}

/// Iterator over the `(field number, value)` pairs of one protobuf message.
/// Yields `Err(Malformed)` once and then stops.
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Fields {
            rest: message,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value: u64 = 0;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            // The tenth byte may only carry bit 63.
            if i == 9 && byte > 1 {
                return Err(Malformed);
            }
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = self.rest.get(i + 1..).ok_or(Malformed)?;
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        if len > self.rest.len() {
            return Err(Malformed);
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), Malformed> {
        let key = u32::try_from(self.varint()?).map_err(|_| Malformed)?;
        let number = key >> 3;
        if number == 0 {
            return Err(Malformed);
        }
        let value = match key & 0x7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                // Compared against the remaining bytes before any use.
                let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            _ => return Err(Malformed),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

/// One user record to put into an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggRecord<'a> {
    /// Partition key of the user record.
    pub partition_key: &'a [u8],
    /// Explicit hash key (decimal), if any.
    pub explicit_hash_key: Option<&'a [u8]>,
    /// The user record's payload.
    pub data: &'a [u8],
}

/// Encode an aggregate (used by producers, tests and the CLI's `produce --aggregate`): dedups partition keys / explicit hash keys into the tables.
///
/// The result is not checked against the Kinesis record size limit (1 MiB of
/// data plus partition key); the caller sizes its batches.
pub fn aggregate(records: &[AggRecord<'_>]) -> Vec<u8> {
    let mut partition_keys = KeyTable::default();
    let mut explicit_hash_keys = KeyTable::default();
    let indices: Vec<(u64, Option<u64>)> = records
        .iter()
        .map(|r| {
            (
                partition_keys.index_of(r.partition_key),
                r.explicit_hash_key.map(|k| explicit_hash_keys.index_of(k)),
            )
        })
        .collect();

    let payload: usize = records.iter().map(|r| r.data.len() + 16).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + payload + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    for key in &partition_keys.keys {
        put_bytes(&mut out, 1, key);
    }
    for key in &explicit_hash_keys.keys {
        put_bytes(&mut out, 2, key);
    }
    for (record, (pk_index, ehk_index)) in records.iter().zip(indices) {
        let mut len = 1 + varint_len(pk_index);
        if let Some(index) = ehk_index {
            len += 1 + varint_len(index);
        }
        len += 1 + varint_len(record.data.len() as u64) + record.data.len();
        put_varint(&mut out, key(3, 2));
        put_varint(&mut out, len as u64);
        put_varint(&mut out, key(1, 0));
        put_varint(&mut out, pk_index);
        if let Some(index) = ehk_index {
            put_varint(&mut out, key(2, 0));
            put_varint(&mut out, index);
        }
        put_bytes(&mut out, 3, record.data);
    }
    let digest = Md5::digest(&out[MAGIC.len()..]);
    out.extend_from_slice(&digest);
    out
}

/// A deduplicating key table in first-seen order.
#[derive(Default)]
struct KeyTable<'a> {
    keys: Vec<&'a [u8]>,
    index: BTreeMap<&'a [u8], u64>,
}

impl<'a> KeyTable<'a> {
    fn index_of(&mut self, key: &'a [u8]) -> u64 {
        let next = self.keys.len() as u64;
        *self.index.entry(key).or_insert_with(|| {
            self.keys.push(key);
            next
        })
    }
}

fn key(number: u64, wire_type: u64) -> u64 {
    (number << 3) | wire_type
}

fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 still takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, key(number, 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// 128-bit hash key Kinesis routes by: explicit hash key parsed as decimal (must be <= 2^128-1, digits only) or MD5(partition key) read big-endian. None if explicit key is invalid.
///
/// Leading zeros in an explicit hash key are accepted (the Java KCL parses it
/// with `BigInteger`); an empty one is invalid.
pub fn hash_key(partition_key: &[u8], explicit_hash_key: Option<&[u8]>) -> Option<u128> {
    match explicit_hash_key {
        Some(decimal) => parse_u128(decimal),
        None => Some(u128::from_be_bytes(Md5::digest(partition_key).into())),
    }
}

/// Parses a non-empty string of ASCII digits that fits a u128.
fn parse_u128(decimal: &[u8]) -> Option<u128> {
    if decimal.is_empty() {
        return None;
    }
    decimal.iter().try_fold(0u128, |acc, &byte| {
        let digit = match byte {
            b'0'..=b'9' => u128::from(byte - b'0'),
            _ => return None,
        };
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// Inclusive hash key range of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HashRange {
    /// First hash key of the shard (StartingHashKey).
    pub start: u128,
    /// Last hash key of the shard (EndingHashKey), inclusive.
    pub end: u128,
}

impl HashRange {
    /// The whole key space, `0..=2^128-1`: the range of a stream's only shard.
    pub const FULL: HashRange = HashRange {
        start: 0,
        end: u128::MAX,
    };

    /// Whether `key` routes to this shard.
    pub fn contains(&self, key: u128) -> bool {
        self.start <= key && key <= self.end
    }

    /// Parses a shard's StartingHashKey and EndingHashKey as ListShards returns them.
    pub fn parse(start: &str, end: &str) -> Result<HashRange, KplError> {
        let parse = |value: &str| {
            parse_u128(value.as_bytes()).ok_or_else(|| KplError::InvalidHashKey {
                value: value.chars().take(64).collect(),
            })
        };
        let range = HashRange {
            start: parse(start)?,
            end: parse(end)?,
        };
        if range.start > range.end {
            return Err(KplError::InvertedHashRange {
                start: range.start,
                end: range.end,
            });
        }
        Ok(range)
    }
}

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    /// A hash key is not a decimal number in `0..=2^128-1`.
    #[error(
        "hash key {value:?} is not a decimal number in 0..=2^128-1: pass StartingHashKey and \
         EndingHashKey exactly as ListShards returned them"
    )]
    InvalidHashKey {
        /// The offending value (at most its first 64 characters).
        value: String,
    },
    /// The range's start is after its end.
    #[error(
        "hash key range starts at {start} after it ends at {end}: pass StartingHashKey first \
         and EndingHashKey second"
    )]
    InvertedHashRange {
        /// The parsed start.
        start: u128,
        /// The parsed end.
        end: u128,
    },
}

/// Keep only sub-records whose hash key is inside `range` (a resharded parent's aggregate may hold keys of a sibling); sub numbers are kept as they were.
///
/// A sub-record whose explicit hash key is invalid cannot belong to any other
/// shard, so it is kept: dropping it would lose it everywhere.
pub fn filter_by_range<'a>(
    mut records: Vec<SubRecord<'a>>,
    range: HashRange,
) -> Vec<SubRecord<'a>> {
    if range == HashRange::FULL {
        return records;
    }
    records.retain(|r| {
        hash_key(r.partition_key, r.explicit_hash_key).is_none_or(|key| range.contains(key))
    });
    records
}

/// Where a user record's payload lies in its Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserPayload<'a> {
    /// The whole Kinesis record (it is not an aggregate): its own data and
    /// partition key, sub-sequence 0.
    Whole,
    /// One sub-record of a KPL aggregate.
    Sub(SubRecord<'a>),
}

/// Expand one Kinesis record into the user records the application
/// receives, the one rule the aws driver and the simulator share: KPL
/// de-aggregation ([`deaggregate`]), hash-range filtering (sub-records of
/// another shard after a reshard are dropped, [`filter_by_range`]) and
/// position filtering (`admits`, e.g. `StartPosition::admits` after an
/// AT_SUB_SEQUENCE resume). Calls `emit` once per user record kept, in
/// order, with its [`RecordMeta`] (size = payload + partition key; the last
/// record kept of the Kinesis record has `last_sub`) and where its payload
/// lies. `partition_key_len` is the Kinesis record's own partition key
/// length (the size of a [`UserPayload::Whole`]).
///
/// Returns how many sub-records were dropped for lying outside `range`.
pub fn expand<'a>(
    seq: &SeqNum,
    data: &'a [u8],
    partition_key_len: usize,
    arrival_ms: u64,
    range: HashRange,
    admits: impl Fn(&ExtSeq) -> bool,
    mut emit: impl FnMut(RecordMeta, UserPayload<'a>),
) -> usize {
    let meta = |sub: u32, last_sub: bool, bytes: usize| RecordMeta {
        ext: ExtSeq::new(seq.clone(), sub),
        last_sub,
        bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        arrival_ms,
    };
    match deaggregate(data) {
        Some(subs) => {
            let all = subs.len();
            let kept = filter_by_range(subs, range);
            let dropped = all - kept.len();
            let n = kept.len();
            for (i, sub) in kept.into_iter().enumerate() {
                let m = meta(
                    sub.sub,
                    i + 1 == n,
                    sub.data.len() + sub.partition_key.len(),
                );
                // Positions only cut a prefix of one record's sub-records, so
                // the last one kept is the last one admitted.
                if admits(&m.ext) {
                    emit(m, UserPayload::Sub(sub));
                }
            }
            dropped
        }
        None => {
            let m = meta(0, true, data.len() + partition_key_len);
            if admits(&m.ext) {
                emit(m, UserPayload::Whole);
            }
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames protobuf bytes as an aggregate: magic, bytes, MD5 trailer.
    fn frame(proto: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(proto);
        out.extend_from_slice(&Md5::digest(proto));
        out
    }

    fn proto_of(aggregate: &[u8]) -> &[u8] {
        &aggregate[MAGIC.len()..aggregate.len() - DIGEST_LEN]
    }

    fn rec<'a>(pk: &'a str, ehk: Option<&'a str>, data: &'a [u8]) -> AggRecord<'a> {
        AggRecord {
            partition_key: pk.as_bytes(),
            explicit_hash_key: ehk.map(str::as_bytes),
            data,
        }
    }

    fn sample() -> Vec<AggRecord<'static>> {
        vec![
            rec("user-1", None, b"first"),
            rec("user-2", Some("42"), b""),
            rec("user-1", None, b"third payload"),
            rec("user-3", Some("42"), &[0u8, 255, 7]),
            rec(
                "user-2",
                Some("340282366920938463463374607431768211455"),
                b"x",
            ),
        ]
    }

    /// Deterministic xorshift for generated inputs.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn kpl_round_trip_keeps_keys_data_and_sub_numbers() {
        let input = sample();
        let bytes = aggregate(&input);
        assert_eq!(bytes[..4], MAGIC);
        let subs = deaggregate(&bytes).expect("aggregate round trips");
        assert_eq!(subs.len(), input.len());
        for (i, (sub, original)) in subs.iter().zip(&input).enumerate() {
            assert_eq!(sub.sub as usize, i);
            assert_eq!(sub.partition_key, original.partition_key);
            assert_eq!(sub.explicit_hash_key, original.explicit_hash_key);
            assert_eq!(sub.data, original.data);
        }
    }

    /// Past 127 partition keys the key index takes two varint bytes: the
    /// record length must still count the explicit hash key index right
    /// (cargo-mutants survivor in `aggregate`).
    #[test]
    fn kpl_round_trip_with_many_keys_and_explicit_hash_keys() {
        let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
        let ehks: Vec<String> = (0..300).map(|i| (i * 7).to_string()).collect();
        let input: Vec<AggRecord<'_>> = keys
            .iter()
            .zip(&ehks)
            .enumerate()
            .map(|(i, (k, e))| AggRecord {
                partition_key: k.as_bytes(),
                explicit_hash_key: (i % 3 != 0).then_some(e.as_bytes()),
                data: k.as_bytes(),
            })
            .collect();
        let bytes = aggregate(&input);
        let subs = deaggregate(&bytes).expect("aggregate round trips");
        assert_eq!(subs.len(), input.len());
        for (sub, original) in subs.iter().zip(&input) {
            assert_eq!(sub.partition_key, original.partition_key);
            assert_eq!(sub.explicit_hash_key, original.explicit_hash_key);
            assert_eq!(sub.data, original.data);
        }
    }

    #[test]
    fn kpl_sub_records_borrow_from_input() {
        let bytes = aggregate(&sample());
        let range = bytes.as_ptr_range();
        for sub in deaggregate(&bytes).expect("valid") {
            assert!(range.contains(&sub.data.as_ptr()) || sub.data.is_empty());
            assert!(range.contains(&sub.partition_key.as_ptr()));
        }
    }

    #[test]
    fn kpl_aggregate_dedups_key_tables() {
        let bytes = aggregate(&sample());
        let mut pks = Vec::new();
        let mut ehks = Vec::new();
        for field in Fields::new(proto_of(&bytes)) {
            match field.expect("well formed") {
                (1, Value::Bytes(k)) => pks.push(k),
                (2, Value::Bytes(k)) => ehks.push(k),
                _ => {}
            }
        }
        assert_eq!(pks, [&b"user-1"[..], b"user-2", b"user-3"]);
        assert_eq!(
            ehks,
            [&b"42"[..], b"340282366920938463463374607431768211455"]
        );
    }

    #[test]
    fn kpl_empty_aggregate_has_no_sub_records() {
        let bytes = aggregate(&[]);
        assert_eq!(bytes.len(), MAGIC.len() + DIGEST_LEN);
        assert_eq!(deaggregate(&bytes), Some(vec![]));
    }

    #[test]
    fn kpl_bad_md5_passes_through() {
        let mut bytes = aggregate(&sample());
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert_eq!(deaggregate(&bytes), None);

        // A flipped payload byte breaks the digest too.
        let mut bytes = aggregate(&sample());
        bytes[10] ^= 0x80;
        assert_eq!(deaggregate(&bytes), None);
    }

    #[test]
    fn kpl_bad_magic_passes_through() {
        let mut bytes = aggregate(&sample());
        bytes[0] = 0xF2;
        assert_eq!(deaggregate(&bytes), None);
        assert_eq!(deaggregate(b"plain json {\"a\":1}"), None);
        assert_eq!(deaggregate(b""), None);
        assert_eq!(deaggregate(&MAGIC), None);
    }

    #[test]
    fn kpl_truncated_input_at_every_length_passes_through() {
        let bytes = aggregate(&sample());
        for len in 0..bytes.len() {
            assert_eq!(deaggregate(&bytes[..len]), None, "length {len}");
        }
        assert!(deaggregate(&bytes).is_some());
    }

    #[test]
    fn kpl_truncated_protobuf_with_valid_md5_never_panics_or_invents_records() {
        let input = sample();
        let original = deaggregate_owned(&aggregate(&input));
        let bytes = aggregate(&input);
        let proto = proto_of(&bytes);
        let mut parsed_some = 0;
        for len in 0..proto.len() {
            let framed = frame(&proto[..len]);
            if let Some(subs) = deaggregate(&framed) {
                parsed_some += 1;
                // Cut at a field boundary: a prefix of the real records.
                let subs: Vec<_> = subs.iter().map(owned).collect();
                assert!(original.starts_with(&subs), "length {len}");
            }
        }
        // Table-only prefixes and record boundaries parse; most cuts do not.
        assert!(parsed_some > 0 && parsed_some < proto.len() / 2);
    }

    type Owned = (u32, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

    fn owned(s: &SubRecord<'_>) -> Owned {
        (
            s.sub,
            s.partition_key.to_vec(),
            s.explicit_hash_key.map(<[u8]>::to_vec),
            s.data.to_vec(),
        )
    }

    fn deaggregate_owned(bytes: &[u8]) -> Vec<Owned> {
        deaggregate(bytes)
            .expect("valid")
            .iter()
            .map(owned)
            .collect()
    }

    #[test]
    fn kpl_partition_key_index_out_of_range_passes_through() {
        // table: ["k"]; record { pk_index: 1, data: "d" }
        let proto = [0x0A, 1, b'k', 0x1A, 5, 0x08, 1, 0x1A, 1, b'd'];
        assert_eq!(deaggregate(&frame(&proto)), None);
        let ok = [0x0A, 1, b'k', 0x1A, 5, 0x08, 0, 0x1A, 1, b'd'];
        assert_eq!(
            deaggregate(&frame(&ok)),
            Some(vec![SubRecord {
                sub: 0,
                partition_key: b"k",
                explicit_hash_key: None,
                data: b"d",
            }])
        );
    }

    #[test]
    fn kpl_explicit_hash_key_index_out_of_range_passes_through() {
        // table: ["k"], no explicit keys; record { pk 0, ehk 0, data "d" }
        let proto = [0x0A, 1, b'k', 0x1A, 7, 0x08, 0, 0x10, 0, 0x1A, 1, b'd'];
        assert_eq!(deaggregate(&frame(&proto)), None);
    }

    #[test]
    fn kpl_missing_required_field_passes_through() {
        // record without data
        let no_data = [0x0A, 1, b'k', 0x1A, 2, 0x08, 0];
        assert_eq!(deaggregate(&frame(&no_data)), None);
        // record without partition key index
        let no_pk = [0x0A, 1, b'k', 0x1A, 3, 0x1A, 1, b'd'];
        assert_eq!(deaggregate(&frame(&no_pk)), None);
        // tag without its required key
        let bad_tag = [
            0x0A, 1, b'k', 0x1A, 9, 0x08, 0, 0x1A, 1, b'd', 0x22, 2, 0x12, 0,
        ];
        assert_eq!(deaggregate(&frame(&bad_tag)), None);
    }

    #[test]
    fn kpl_unknown_fields_are_skipped() {
        // Unknown fields of wire types 0, 1, 2, 5 at both levels, a tag with
        // key and value, a known field number with the wrong wire type, and
        // the tables after the record.
        let proto = [
            0x1A, 33, // record, 33 bytes:
            0x08, 0, // pk index 0
            0x1A, 2, b'h', b'i', // data "hi"
            0x22, 6, 0x0A, 1, b't', 0x12, 1, b'v', // tag t=v
            0x28, 0x96, 0x01, // field 5 varint
            0x31, 1, 2, 3, 4, 5, 6, 7, 8, // field 6 fixed64
            0x3D, 1, 2, 3, 4, // field 7 fixed32
            0x12, 0, // field 2 (ehk index) as bytes: unknown, ignored
            0x0A, 3, b'p', b'k', b'1', // partition key table, after the record
            0x78, 0x7F, // field 15 varint
            0x82, 0x01, 2, 0xFF, 0xFE, // field 16 bytes
            0x4D, 9, 9, 9, 9, // field 9 fixed32
        ];
        assert_eq!(
            deaggregate(&frame(&proto)),
            Some(vec![SubRecord {
                sub: 0,
                partition_key: b"pk1",
                explicit_hash_key: None,
                data: b"hi",
            }])
        );
    }

    #[test]
    fn kpl_groups_and_invalid_wire_types_pass_through() {
        let base = [0x0A, 1, b'k', 0x1A, 4, 0x08, 0, 0x1A, 0];
        assert!(deaggregate(&frame(&base)).is_some());
        for bad in [
            &[0x2B, 0x2C][..], // field 5 start group / end group
            &[0x2C],           // end group alone
            &[0x2E, 0],        // wire type 6
            &[0x2F, 0],        // wire type 7
            &[0x00, 0],        // field number 0
            &[0x28],           // varint value missing
            &[0x28, 0x80],     // varint cut short
            &[0x29, 1, 2, 3],  // fixed64 cut short
            &[0x2D, 1],        // fixed32 cut short
            &[
                0x28, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
            ], // varint over 64 bits
            &[
                0x28, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ], // 11-byte varint
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0], // key over 32 bits
        ] {
            let mut proto = base.to_vec();
            proto.extend_from_slice(bad);
            assert_eq!(deaggregate(&frame(&proto)), None, "{bad:02X?}");
        }
        // A ten-byte varint that fits 64 bits is fine.
        let mut proto = base.to_vec();
        proto.extend_from_slice(&[
            0x28, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
        ]);
        assert!(deaggregate(&frame(&proto)).is_some());
    }

    #[test]
    fn kpl_huge_declared_length_is_rejected_without_allocating() {
        // A record field declaring 2^62 bytes, and one declaring u64::MAX.
        let mut proto = vec![0x0A, 1, b'k', 0x1A];
        proto.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        proto.extend_from_slice(&[0x08, 0, 0x1A, 1, b'd']);
        assert_eq!(deaggregate(&frame(&proto)), None);
        let mut proto = vec![0x1A];
        proto.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert_eq!(deaggregate(&frame(&proto)), None);
        // A declared length one past the end.
        let proto = [0x0A, 1, b'k', 0x1A, 5, 0x08, 0, 0x1A, 1];
        assert_eq!(deaggregate(&frame(&proto)), None);
    }

    #[test]
    fn kpl_many_tiny_records_stay_bounded_by_input() {
        // 10,000 records of the smallest legal form: 6 bytes each.
        let mut proto = vec![0x0A, 0];
        for _ in 0..10_000 {
            proto.extend_from_slice(&[0x1A, 4, 0x08, 0, 0x1A, 0]);
        }
        let framed = frame(&proto);
        let subs = deaggregate(&framed).expect("valid");
        assert_eq!(subs.len(), 10_000);
        assert_eq!(subs.last().map(|s| s.sub), Some(9_999));
        assert!(subs
            .iter()
            .all(|s| s.partition_key.is_empty() && s.data.is_empty()));
    }

    #[test]
    fn kpl_generated_garbage_with_valid_md5_never_panics() {
        let valid = aggregate(&sample());
        let proto = proto_of(&valid).to_vec();
        let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for round in 0..4_000 {
            let mut mutated = proto.clone();
            // Random bytes, or a few bit flips / overwrites of a valid message.
            if round % 4 == 0 {
                let len = (rng.next() % 64) as usize;
                mutated = (0..len).map(|_| rng.next() as u8).collect();
            } else {
                for _ in 0..=(rng.next() % 3) {
                    let at = (rng.next() as usize) % mutated.len();
                    mutated[at] = rng.next() as u8;
                }
            }
            if let Some(subs) = deaggregate(&frame(&mutated)) {
                parsed += 1;
                for (i, s) in subs.iter().enumerate() {
                    assert_eq!(s.sub as usize, i);
                }
            }
        }
        // Some mutations hit payload bytes and still parse.
        assert!(parsed > 0);
    }

    #[test]
    fn kpl_hash_key_of_partition_key_is_md5_big_endian() {
        // RFC 1321 test vectors: MD5("abc"), MD5("").
        assert_eq!(
            hash_key(b"abc", None),
            Some(0x9001_5098_3cd2_4fb0_d696_3f7d_28e1_7f72)
        );
        assert_eq!(
            hash_key(b"", None),
            Some(0xd41d_8cd9_8f00_b204_e980_0998_ecf8_427e)
        );
    }

    #[test]
    fn kpl_explicit_hash_key_is_used_over_partition_key_md5() {
        assert_eq!(hash_key(b"abc", Some(b"0")), Some(0));
        assert_eq!(hash_key(b"abc", Some(b"12345")), Some(12_345));
        assert_eq!(
            hash_key(b"abc", Some(b"340282366920938463463374607431768211455")),
            Some(u128::MAX)
        );
        assert_eq!(hash_key(b"abc", Some(b"007")), Some(7));
    }

    #[test]
    fn kpl_invalid_explicit_hash_key_has_no_hash_key() {
        for bad in [
            &b""[..],
            b"340282366920938463463374607431768211456", // 2^128
            b"99999999999999999999999999999999999999999",
            b"-1",
            b"+1",
            b"12 ",
            b"1e9",
        ] {
            assert_eq!(hash_key(b"abc", Some(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn kpl_hash_range_parse_and_contains() {
        let full = HashRange::parse("0", "340282366920938463463374607431768211455").expect("valid");
        assert_eq!(full, HashRange::FULL);
        let half = HashRange::parse("0", "170141183460469231731687303715884105727").expect("valid");
        assert!(half.contains(0));
        assert!(half.contains(u128::MAX / 2));
        assert!(!half.contains(u128::MAX / 2 + 1));
        assert!(HashRange { start: 5, end: 5 }.contains(5));
        assert!(!HashRange { start: 5, end: 5 }.contains(4));
    }

    #[test]
    fn kpl_hash_range_parse_rejects_bad_keys() {
        assert_eq!(
            HashRange::parse("x", "1"),
            Err(KplError::InvalidHashKey { value: "x".into() })
        );
        assert_eq!(
            HashRange::parse("0", "340282366920938463463374607431768211456"),
            Err(KplError::InvalidHashKey {
                value: "340282366920938463463374607431768211456".into()
            })
        );
        assert_eq!(
            HashRange::parse("9", "8"),
            Err(KplError::InvertedHashRange { start: 9, end: 8 })
        );
        let long = "1".repeat(1_000);
        match HashRange::parse(&long, "1") {
            Err(KplError::InvalidHashKey { value }) => assert_eq!(value.len(), 64),
            other => panic!("expected InvalidHashKey, got {other:?}"),
        }
        let msg = HashRange::parse("", "1").unwrap_err().to_string();
        assert!(msg.contains("ListShards"), "{msg}");
    }

    #[test]
    fn kpl_filter_by_range_drops_out_of_range_subs() {
        let abc = 0x9001_5098_3cd2_4fb0_d696_3f7d_28e1_7f72_u128;
        let input = [
            rec("abc", None, b"0"),              // MD5 high half
            rec("abc", Some("10"), b"1"),        // explicit, low
            rec("abc", Some("not-a-key"), b"2"), // invalid: kept
            rec("", None, b"3"),                 // MD5("") = 0xd41d..., high
        ];
        let bytes = aggregate(&input);
        let subs = deaggregate(&bytes).expect("valid");

        let low = HashRange {
            start: 0,
            end: u128::MAX / 2,
        };
        let kept: Vec<u32> = filter_by_range(subs.clone(), low)
            .iter()
            .map(|s| s.sub)
            .collect();
        assert_eq!(kept, [1, 2]);

        let high = HashRange {
            start: u128::MAX / 2 + 1,
            end: u128::MAX,
        };
        let kept: Vec<u32> = filter_by_range(subs.clone(), high)
            .iter()
            .map(|s| s.sub)
            .collect();
        assert_eq!(kept, [0, 2, 3]);

        let exact = HashRange {
            start: abc,
            end: abc,
        };
        let kept: Vec<u32> = filter_by_range(subs.clone(), exact)
            .iter()
            .map(|s| s.sub)
            .collect();
        assert_eq!(kept, [0, 2]);

        assert_eq!(filter_by_range(subs.clone(), HashRange::FULL), subs);
    }

    #[test]
    fn kpl_varint_len_matches_encoding() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(varint_len(value), out.len(), "{value}");
            let mut fields = Fields::new(&out);
            assert_eq!(fields.varint(), Ok(value));
            assert!(fields.rest.is_empty());
        }
    }
}
