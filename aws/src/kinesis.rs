//! The Kinesis Data Streams calls the core asks for, on `aws-sdk-kinesis`.
//!
//! Models: stream ARN resolution (DescribeStreamSummary), ListShards with
//! pagination, polling (GetShardIterator / GetRecords), Enhanced Fan-Out
//! (RegisterStreamConsumer, DescribeStreamConsumer, SubscribeToShard read
//! one event at a time), and the conversion of what they return into the
//! core's metadata ([`Chunk`], [`RecordMeta`]) plus the payloads the runtime
//! keeps ([`Record`]).
//!
//! AWS rules encoded:
//! - ListShards takes the stream only on the first page; later pages carry
//!   `NextToken` alone (AWS rejects both together).
//! - KPL aggregates are expanded with [`kinesin_core::kpl::deaggregate`];
//!   sub-records whose hash key is outside the shard's range (from
//!   ListShards) are dropped ([`kinesin_core::kpl::filter_by_range`]); a
//!   record that is not a valid aggregate is passed through as one user
//!   record.
//! - A read from [`StartPosition::AtSubSequence`] (restart inside an
//!   aggregate) leaves out the sub-records the position does not admit;
//!   GetRecords' `skip_through` does the same for polling.
//! - SubscribeToShard errors may arrive on the first `recv()` of the event
//!   stream rather than from `send()`; both become a [`KinesisError`]. An
//!   empty ContinuationSequenceNumber means the shard ended.
//!
//! Invariants: payloads are never copied (each record's data is one
//! [`Bytes`]; sub-records are slices of it); `Chunk::records[i]` and the
//! `i`-th [`Record`] describe the same user record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ConsumerStatus as SdkConsumerStatus, ShardIteratorType, StartingPosition,
    SubscribeToShardEventStream,
};
use aws_sdk_kinesis::Client;
use bytes::Bytes;
use kinesin_core::ids::{ShardId, ShardRef, StreamId};
use kinesin_core::io::{
    ChildShard, Chunk, ConsumerInfo, ConsumerStatus, ErrorClass, RecordMeta, ShardInfo,
    ShardIterator,
};
use kinesin_core::kpl::{self, HashRange, UserPayload};
use kinesin_core::sequence::{ExtSeq, SeqNum, StartPosition};

use crate::error::KinesisError;

/// One user record as the application sees it (after KPL de-aggregation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    data: Bytes,
    /// The SDK's own string, moved (not copied into a new allocation).
    partition_key: String,
    ext: ExtSeq,
    arrival_ms: u64,
}

impl Record {
    /// Build a record (tests and alternative drivers; the driver builds
    /// them from Kinesis responses).
    pub fn new(data: Bytes, partition_key: &str, ext: ExtSeq, arrival_ms: u64) -> Self {
        Record {
            data,
            partition_key: partition_key.to_owned(),
            ext,
            arrival_ms,
        }
    }
    /// The payload (zero-copy).
    pub fn data(&self) -> &Bytes {
        &self.data
    }
    /// The partition key (the KPL sub-record's own key when aggregated).
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }
    /// The Kinesis sequence number of the (aggregate) record.
    pub fn sequence_number(&self) -> &SeqNum {
        &self.ext.seq
    }
    /// The KPL sub-sequence number (0 when not aggregated).
    pub fn sub_sequence_number(&self) -> u32 {
        self.ext.sub
    }
    /// Sequence and sub-sequence number together (the order within a shard).
    pub fn position(&self) -> &ExtSeq {
        &self.ext
    }
    /// ApproximateArrivalTimestamp, unix milliseconds.
    pub fn arrival_unix_ms(&self) -> u64 {
        self.arrival_ms
    }
    /// ApproximateArrivalTimestamp.
    pub fn arrival(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.arrival_ms)
    }
}

/// The payloads of one chunk, index for index with its [`Chunk::records`].
pub type Payloads = Vec<Record>;

/// The Kinesis calls of the driver, on one SDK client.
#[derive(Clone, Debug)]
pub struct Kinesis {
    client: Client,
    list_page_limit: Option<i32>,
}

impl Kinesis {
    /// Calls through `client` (built by a runtime crate with its HTTP client
    /// and sleep).
    pub fn new(client: Client) -> Self {
        Kinesis {
            client,
            list_page_limit: None,
        }
    }

    /// Ask ListShards for at most `limit` shards per page (tests use it to
    /// exercise pagination; the default is the service's 1,000).
    pub fn with_list_page_limit(mut self, limit: i32) -> Self {
        self.list_page_limit = Some(limit.clamp(1, 10_000));
        self
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The ARN of a stream given by name or ARN (DescribeStreamSummary).
    /// A missing stream is [`ErrorClass::ResourceNotFound`].
    pub async fn resolve_stream(&self, name_or_arn: &str) -> Result<String, KinesisError> {
        self.describe_stream(name_or_arn).await.map(|(arn, _)| arn)
    }

    /// The ARN of a stream given by name or ARN, and its creation time
    /// (unix ms; `None` when the answer has none), from
    /// DescribeStreamSummary. A stream deleted and recreated under the same
    /// name keeps its ARN: only the creation time tells them apart.
    pub async fn describe_stream(
        &self,
        name_or_arn: &str,
    ) -> Result<(String, Option<u64>), KinesisError> {
        const OP: &str = "DescribeStreamSummary";
        let req = self.client.describe_stream_summary();
        let req = if is_arn(name_or_arn) {
            req.stream_arn(name_or_arn)
        } else {
            req.stream_name(name_or_arn)
        };
        let out = req
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk(OP, &e))?;
        out.stream_description_summary
            .map(|s| {
                let created = u64::try_from(s.stream_creation_timestamp.to_millis().unwrap_or(0))
                    .ok()
                    .filter(|ms| *ms > 0);
                (s.stream_arn, created)
            })
            .filter(|(arn, _)| !arn.is_empty())
            .ok_or_else(|| KinesisError::new(ErrorClass::Transient, OP, "no StreamARN in response"))
    }

    /// Every shard of the stream (all pages).
    pub async fn list_shards(&self, stream: &StreamId) -> Result<Vec<ShardInfo>, KinesisError> {
        const OP: &str = "ListShards";
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        // A bound on pages: 10,000 shards per stream at most in practice.
        for _ in 0..100_000 {
            let req = self
                .client
                .list_shards()
                .set_max_results(self.list_page_limit);
            let req = match next_token.take() {
                // NextToken alone: the stream must not be named again.
                Some(token) => req.next_token(token),
                None if is_arn(stream.as_str()) => req.stream_arn(stream.as_str()),
                None => req.stream_name(stream.as_str()),
            };
            let out = req
                .send()
                .await
                .map_err(|e| KinesisError::from_sdk(OP, &e))?;
            for s in out.shards.unwrap_or_default() {
                shards.push(shard_info(OP, s)?);
            }
            match out.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => return Ok(shards),
            }
        }
        Err(KinesisError::new(
            ErrorClass::Transient,
            OP,
            "more than 100,000 pages; giving up this sync",
        ))
    }

    /// GetShardIterator at `position`.
    pub async fn get_shard_iterator(
        &self,
        shard: &ShardRef,
        position: &StartPosition,
    ) -> Result<ShardIterator, KinesisError> {
        const OP: &str = "GetShardIterator";
        let req = self
            .client
            .get_shard_iterator()
            .shard_id(shard.shard.as_str())
            .shard_iterator_type(ShardIteratorType::from(position.aws_type()))
            .set_starting_sequence_number(position.sequence_number().map(|s| s.as_str().to_owned()))
            .set_timestamp(position.timestamp_ms().map(datetime_of_ms));
        let req = if is_arn(shard.stream.as_str()) {
            req.stream_arn(shard.stream.as_str())
        } else {
            req.stream_name(shard.stream.as_str())
        };
        let out = req
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk(OP, &e))?;
        out.shard_iterator
            .map(ShardIterator)
            .ok_or_else(|| KinesisError::new(ErrorClass::Transient, OP, "no ShardIterator"))
    }

    /// GetRecords: the chunk's metadata, its payloads, and the next
    /// iterator (`None` = shard end).
    pub async fn get_records(
        &self,
        shard: &ShardRef,
        iterator: &ShardIterator,
        limit: u32,
        range: HashRange,
        skip_through: Option<&ExtSeq>,
    ) -> Result<(Chunk, Payloads, Option<ShardIterator>), KinesisError> {
        const OP: &str = "GetRecords";
        let req = self
            .client
            .get_records()
            .shard_iterator(iterator.0.as_str())
            .limit(i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000));
        let req = if is_arn(shard.stream.as_str()) {
            req.stream_arn(shard.stream.as_str())
        } else {
            req
        };
        let out = req
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk(OP, &e))?;
        let admits = |ext: &ExtSeq| skip_through.is_none_or(|s| ext > s);
        let kinesis_records = u32::try_from(out.records.len()).unwrap_or(u32::MAX);
        let (records, payloads) = expand(OP, out.records, range, admits)?;
        let child_shards = child_shards(OP, out.child_shards.unwrap_or_default())?;
        let chunk = Chunk {
            records,
            millis_behind: u64::try_from(out.millis_behind_latest.unwrap_or(0)).unwrap_or(0),
            continuation: None,
            child_shards,
            kinesis_records,
        };
        let next = out
            .next_shard_iterator
            .filter(|s| !s.is_empty())
            .map(ShardIterator);
        Ok((chunk, payloads, next))
    }

    /// RegisterStreamConsumer (ResourceInUse when it exists already).
    pub async fn register_consumer(
        &self,
        stream: &StreamId,
        name: &str,
    ) -> Result<ConsumerInfo, KinesisError> {
        const OP: &str = "RegisterStreamConsumer";
        let out = self
            .client
            .register_stream_consumer()
            .stream_arn(stream.as_str())
            .consumer_name(name)
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk(OP, &e))?;
        let c = out
            .consumer
            .ok_or_else(|| KinesisError::new(ErrorClass::Transient, OP, "no Consumer"))?;
        Ok(ConsumerInfo {
            arn: c.consumer_arn,
            status: consumer_status(&c.consumer_status),
        })
    }

    /// DescribeStreamConsumer by ARN, or by stream and name.
    pub async fn describe_consumer(
        &self,
        stream: &StreamId,
        name: &str,
        arn: Option<&str>,
    ) -> Result<ConsumerInfo, KinesisError> {
        const OP: &str = "DescribeStreamConsumer";
        let req = self.client.describe_stream_consumer();
        let req = match arn {
            Some(arn) => req.consumer_arn(arn),
            None => req.stream_arn(stream.as_str()).consumer_name(name),
        };
        let out = req
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk(OP, &e))?;
        let c = out.consumer_description.ok_or_else(|| {
            KinesisError::new(ErrorClass::Transient, OP, "no ConsumerDescription")
        })?;
        Ok(ConsumerInfo {
            arn: c.consumer_arn,
            status: consumer_status(&c.consumer_status),
        })
    }

    /// SubscribeToShard. The subscription is read with
    /// [`Subscription::next_event`], one event per call.
    pub async fn subscribe(
        &self,
        shard: &ShardRef,
        consumer_arn: &str,
        position: &StartPosition,
        range: HashRange,
    ) -> Result<Subscription, KinesisError> {
        const OP: &str = "SubscribeToShard";
        let start = StartingPosition::builder()
            .r#type(ShardIteratorType::from(position.aws_type()))
            .set_sequence_number(position.sequence_number().map(|s| s.as_str().to_owned()))
            .set_timestamp(position.timestamp_ms().map(datetime_of_ms))
            .build()
            .map_err(|e| KinesisError::new(ErrorClass::InvalidArgument, OP, e.to_string()))?;
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard.shard.as_str())
            .starting_position(start)
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk(OP, &e))?;
        Ok(Subscription {
            events: out.event_stream,
            position: position.clone(),
            range,
        })
    }
}

/// An open SubscribeToShard event stream.
#[derive(Debug)]
pub struct Subscription {
    events: EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>,
    position: StartPosition,
    range: HashRange,
}

impl Subscription {
    /// Read exactly one event: `Ok(None)` when the stream ended normally
    /// (the 5-minute end). Errors that the service sends on the stream
    /// (also those of the subscription itself, which arrive on the first
    /// read) are `Err`.
    pub async fn next_event(&mut self) -> Result<Option<(Chunk, Payloads)>, KinesisError> {
        const OP: &str = "SubscribeToShard";
        loop {
            let event = self
                .events
                .recv()
                .await
                .map_err(|e| KinesisError::from_sdk(OP, &e))?;
            let event = match event {
                None => return Ok(None),
                Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) => event,
                // An event type this SDK does not know: not data; read on.
                Some(_) => continue,
            };
            let position = &self.position;
            let kinesis_records = u32::try_from(event.records.len()).unwrap_or(u32::MAX);
            let (records, payloads) =
                expand(OP, event.records, self.range, |ext| position.admits(ext))?;
            let continuation = match event.continuation_sequence_number.as_str() {
                "" => None,
                s => Some(parse_seq(OP, s)?),
            };
            let chunk = Chunk {
                records,
                millis_behind: u64::try_from(event.millis_behind_latest).unwrap_or(0),
                continuation,
                child_shards: child_shards(OP, event.child_shards.unwrap_or_default())?,
                kinesis_records,
            };
            return Ok(Some((chunk, payloads)));
        }
    }
}

/// Expand Kinesis records into user records: KPL de-aggregation, hash-range
/// filtering, position filtering. Returns the core's metadata and the
/// payloads, index for index.
pub fn expand(
    operation: &'static str,
    records: Vec<aws_sdk_kinesis::types::Record>,
    range: HashRange,
    admits: impl Fn(&ExtSeq) -> bool,
) -> Result<(Vec<RecordMeta>, Payloads), KinesisError> {
    let mut metas = Vec::with_capacity(records.len());
    let mut payloads = Vec::with_capacity(records.len());
    for r in records {
        let seq = parse_seq(operation, &r.sequence_number)?;
        let arrival_ms = r
            .approximate_arrival_timestamp
            .and_then(|t| t.to_millis().ok())
            .and_then(|ms| u64::try_from(ms).ok())
            .unwrap_or(0);
        // The SDK's blob is a `Bytes` already: taken as is (`into_inner`
        // made a `Vec` of it, copying, and `Bytes::from` a second header).
        let data = r.data.into_bytes();
        let pk = r.partition_key.unwrap_or_default();
        if !data.starts_with(&kpl::MAGIC) {
            // Not a KPL aggregate (what `kpl::expand` finds without the
            // magic prefix): one user record, built here without the
            // de-aggregation's intermediate metadata; its sequence number
            // is moved into the core's metadata and copied once, into the
            // record.
            let ext = ExtSeq::new(seq, 0);
            if admits(&ext) {
                let bytes = u32::try_from(data.len() + pk.len()).unwrap_or(u32::MAX);
                payloads.push(Record {
                    data,
                    partition_key: pk,
                    ext: ext.clone(),
                    arrival_ms,
                });
                metas.push(RecordMeta {
                    ext,
                    last_sub: true,
                    bytes,
                    arrival_ms,
                });
            }
            continue;
        }
        let mut whole = None;
        let dropped = kpl::expand(
            &seq,
            &data,
            pk.len(),
            arrival_ms,
            range,
            &admits,
            |meta, payload| {
                match payload {
                    // Moved below, not cloned here: a clone of a `Bytes`
                    // made from a Vec allocates its shared header.
                    UserPayload::Whole => whole = Some(meta),
                    UserPayload::Sub(sub) => {
                        payloads.push(Record {
                            data: data.slice_ref(sub.data),
                            partition_key: String::from_utf8_lossy(sub.partition_key).into_owned(),
                            ext: meta.ext.clone(),
                            arrival_ms,
                        });
                        metas.push(meta);
                    }
                }
            },
        );
        if dropped > 0 {
            // KPL sub-records of another shard (an aggregate built with a
            // stale shard map): counted, never silently.
            crate::facade::counter("kinesin_kpl_records_dropped_total").increment(dropped as u64);
        }
        if let Some(meta) = whole {
            payloads.push(Record {
                data,
                partition_key: pk,
                ext: meta.ext.clone(),
                arrival_ms,
            });
            metas.push(meta);
        }
    }
    Ok((metas, payloads))
}

fn is_arn(s: &str) -> bool {
    s.starts_with("arn:")
}

fn parse_seq(operation: &'static str, s: &str) -> Result<SeqNum, KinesisError> {
    SeqNum::parse(s).map_err(|e| {
        KinesisError::new(
            ErrorClass::Transient,
            operation,
            format!("bad sequence number {s:?}: {e}"),
        )
    })
}

fn hash_range(
    operation: &'static str,
    r: Option<aws_sdk_kinesis::types::HashKeyRange>,
) -> Result<HashRange, KinesisError> {
    match r {
        None => Ok(HashRange::FULL),
        Some(r) => HashRange::parse(&r.starting_hash_key, &r.ending_hash_key)
            .map_err(|e| KinesisError::new(ErrorClass::Transient, operation, e.to_string())),
    }
}

fn shard_info(
    operation: &'static str,
    s: aws_sdk_kinesis::types::Shard,
) -> Result<ShardInfo, KinesisError> {
    let parents = s
        .parent_shard_id
        .into_iter()
        .chain(s.adjacent_parent_shard_id)
        .filter(|p| !p.is_empty())
        .map(ShardId::new)
        .collect();
    let (starting, ending) = match s.sequence_number_range {
        Some(r) => (Some(r.starting_sequence_number), r.ending_sequence_number),
        None => (None, None),
    };
    let parse = |v: Option<String>| match v {
        Some(v) if !v.is_empty() => parse_seq(operation, &v).map(Some),
        _ => Ok(None),
    };
    Ok(ShardInfo {
        shard: ShardId::new(s.shard_id),
        parents,
        hash_range: hash_range(operation, s.hash_key_range)?,
        ending_seq: parse(ending)?,
        starting_seq: parse(starting)?,
    })
}

fn child_shards(
    operation: &'static str,
    children: Vec<aws_sdk_kinesis::types::ChildShard>,
) -> Result<Vec<ChildShard>, KinesisError> {
    children
        .into_iter()
        .map(|c| {
            Ok(ChildShard {
                shard: ShardId::new(c.shard_id),
                parents: c.parent_shards.into_iter().map(ShardId::new).collect(),
                hash_range: hash_range(operation, c.hash_key_range)?,
            })
        })
        .collect()
}

fn consumer_status(s: &SdkConsumerStatus) -> ConsumerStatus {
    match s {
        SdkConsumerStatus::Active => ConsumerStatus::Active,
        SdkConsumerStatus::Deleting => ConsumerStatus::Deleting,
        // CREATING, or a status this SDK does not know: wait.
        _ => ConsumerStatus::Creating,
    }
}

fn datetime_of_ms(ms: u64) -> DateTime {
    DateTime::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::primitives::Blob;
    use kinesin_core::kpl::{aggregate, AggRecord};

    fn krecord(seq: &str, pk: &str, data: Vec<u8>) -> aws_sdk_kinesis::types::Record {
        aws_sdk_kinesis::types::Record::builder()
            .sequence_number(seq)
            .partition_key(pk)
            .data(Blob::new(data))
            .build()
            .unwrap()
    }

    fn agg(n: usize) -> Vec<u8> {
        let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        let datas: Vec<Vec<u8>> = (0..n).map(|i| format!("d{i}").into_bytes()).collect();
        let recs: Vec<AggRecord<'_>> = (0..n)
            .map(|i| AggRecord {
                partition_key: keys[i].as_bytes(),
                explicit_hash_key: None,
                data: &datas[i],
            })
            .collect();
        aggregate(&recs)
    }

    #[test]
    fn aggregate_expands_into_sub_records_with_last_flag() {
        let (metas, payloads) = expand(
            "t",
            vec![
                krecord("5", "outer", agg(3)),
                krecord("6", "p", b"x".to_vec()),
            ],
            HashRange::FULL,
            |_| true,
        )
        .unwrap();
        let subs: Vec<(String, u32, bool)> = metas
            .iter()
            .map(|m| (m.ext.seq.to_string(), m.ext.sub, m.last_sub))
            .collect();
        assert_eq!(
            subs,
            vec![
                ("5".into(), 0, false),
                ("5".into(), 1, false),
                ("5".into(), 2, true),
                ("6".into(), 0, true)
            ]
        );
        assert_eq!(&payloads[1].data()[..], b"d1");
        assert_eq!(payloads[1].partition_key(), "k1");
        assert_eq!(&payloads[3].data()[..], b"x");
    }

    /// What `kpl::expand` (the core's rule) makes of one Kinesis record.
    fn core_expansion(
        seq: &str,
        pk: &str,
        data: &[u8],
        admits: impl Fn(&ExtSeq) -> bool,
    ) -> Vec<RecordMeta> {
        let mut out = Vec::new();
        let seq = SeqNum::parse(seq).unwrap();
        kpl::expand(&seq, data, pk.len(), 0, HashRange::FULL, admits, |m, _| {
            out.push(m)
        });
        out
    }

    #[test]
    fn records_without_the_kpl_magic_expand_as_the_core_expands_them() {
        let mut bad_digest = agg(2);
        *bad_digest.last_mut().unwrap() ^= 1;
        let cases: Vec<(&str, &str, Vec<u8>)> = vec![
            ("7", "plain", b"payload".to_vec()),
            ("8", "", Vec::new()),
            // The magic without a valid aggregate: one whole record too.
            ("9", "m", kpl::MAGIC.to_vec()),
            ("10", "bad", bad_digest),
        ];
        for (seq, pk, data) in cases {
            for admit in [true, false] {
                let (metas, payloads) = expand(
                    "t",
                    vec![krecord(seq, pk, data.clone())],
                    HashRange::FULL,
                    |_| admit,
                )
                .unwrap();
                assert_eq!(metas, core_expansion(seq, pk, &data, |_| admit), "{seq}");
                assert_eq!(payloads.len(), metas.len());
                for (p, m) in payloads.iter().zip(&metas) {
                    assert_eq!(p.position(), &m.ext);
                    assert_eq!(&p.data()[..], &data[..]);
                    assert_eq!(p.partition_key(), pk);
                }
            }
        }
    }

    #[test]
    fn at_sub_sequence_skips_delivered_sub_records() {
        let pos = StartPosition::AtSubSequence(ExtSeq::new(SeqNum::parse("5").unwrap(), 1));
        let (metas, payloads) =
            expand("t", vec![krecord("5", "o", agg(4))], HashRange::FULL, |e| {
                pos.admits(e)
            })
            .unwrap();
        assert_eq!(
            metas.iter().map(|m| m.ext.sub).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(metas[1].last_sub);
        assert_eq!(&payloads[0].data()[..], b"d2");
    }

    #[test]
    fn sub_records_outside_the_shard_range_are_dropped() {
        let keys: Vec<u128> = (0..8)
            .map(|i| kpl::hash_key(format!("k{i}").as_bytes(), None).unwrap())
            .collect();
        let half = HashRange {
            start: 0,
            end: u128::MAX / 2,
        };
        let (metas, _) = expand("t", vec![krecord("9", "o", agg(8))], half, |_| true).unwrap();
        let expected: Vec<u32> = (0..8u32)
            .filter(|i| half.contains(keys[*i as usize]))
            .collect();
        assert_eq!(
            metas.iter().map(|m| m.ext.sub).collect::<Vec<_>>(),
            expected
        );
        assert!(metas.last().is_none_or(|m| m.last_sub));
    }
}
