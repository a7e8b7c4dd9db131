//! The property checks behind every fuzz target, shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`) and the stable corpus replay test
//! (`core/tests/fuzz_corpus.rs`, which includes this file with `#[path]`).
//!
//! Each `check_*` function takes the raw fuzzer input, decodes what it needs
//! from one [`arbitrary::Unstructured`] (operations are generated legal and
//! weighted, as in firezone's model-vs-system harness, so few inputs are
//! wasted) and panics on a violated property. A panic is a crash for
//! libFuzzer and a named failure for the replay test.
//!
//! Every check is deterministic and bounded: at most [`MAX_STEPS`]
//! operations per input, sizes drawn from small ranges.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::Unstructured;
use md5::{Digest, Md5};

use kinesin_core::checkpoint::{CheckpointTracker, Slot, TrackerError};
use kinesin_core::config::{Batching, Config, EfoConsumer, Retrieval, StartFrom};
use kinesin_core::ids::{FencingToken, Owner, ShardId, ShardRef, StreamId};
use kinesin_core::kpl::{self, AggRecord, HashRange, SubRecord};
use kinesin_core::pool::{Permit, Pool, PoolFull};
use kinesin_core::sequence::{Checkpoint, CheckpointError, ExtSeq, SeqNum, SeqNumError};
use kinesin_core::table::{LeaseRow, LeaseWrite};

/// Most operations one input drives through a state machine.
pub const MAX_STEPS: usize = 256;

/// A fuzz check: raw input in, panic on a violated property.
pub type Check = fn(&[u8]);

/// Every target with its check, by the name of its `fuzz/fuzz_targets/*.rs`
/// file and its `fuzz/corpus/<target>/` directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("seqnum", check_seqnum),
    ("kpl_deaggregate", check_kpl_deaggregate),
    ("checkpoint_tracker", check_checkpoint_tracker),
    ("pool", check_pool),
    ("lease_row", check_lease_row),
    ("config", check_config),
    ("worker", check_worker),
];

// The worker target is wired in by un-commenting every line marked WORKER
// here, in fuzz/Cargo.toml and in core/tests/fuzz_corpus.rs once
// core/src/lib.rs has `pub mod worker;` (command in fuzz/README.md).
#[path = "worker_check.rs"]
mod worker_check;
pub use worker_check::check_worker;

// ----- drawing values ------------------------------------------------------

/// An integer in `lo..=hi`; `lo` once the input is used up.
fn int<T>(u: &mut Unstructured<'_>, lo: T, hi: T) -> T
where
    T: arbitrary::unstructured::Int + Copy,
{
    u.int_in_range(lo..=hi).unwrap_or(lo)
}

/// True with roughly `percent`% probability; false once the input is used up.
fn chance(u: &mut Unstructured<'_>, percent: u8) -> bool {
    percent > 0 && u.ratio(percent.min(100), 100u8).unwrap_or(false)
}

fn any<'a, T: arbitrary::Arbitrary<'a> + Default>(u: &mut Unstructured<'a>) -> T {
    u.arbitrary().unwrap_or_default()
}

fn bytes<'a>(u: &mut Unstructured<'a>, max_len: usize) -> &'a [u8] {
    let len = int(u, 0, max_len);
    u.bytes(len).unwrap_or_default()
}

fn text(u: &mut Unstructured<'_>, max_len: usize) -> String {
    String::from_utf8_lossy(bytes(u, max_len)).into_owned()
}

fn seq_of(n: u128) -> SeqNum {
    SeqNum::parse(&n.to_string()).expect("a u128 in decimal is a valid sequence number")
}

/// A valid sequence number: small, u128-sized, or up to the 129-digit limit.
fn arb_seqnum(u: &mut Unstructured<'_>) -> SeqNum {
    match int(u, 0u8, 3) {
        0 => seq_of(u128::from(int(u, 0u8, 20))),
        1 => seq_of(any::<u128>(u)),
        _ => {
            let len = int(u, 1, SeqNum::MAX_DIGITS);
            let mut digits = String::with_capacity(len);
            digits.push(char::from(b'1' + int(u, 0u8, 8)));
            for _ in 1..len {
                digits.push(char::from(b'0' + int(u, 0u8, 9)));
            }
            SeqNum::parse(&digits).expect("generated digits are canonical")
        }
    }
}

fn arb_checkpoint(u: &mut Unstructured<'_>) -> Checkpoint {
    match int(u, 0u8, 2) {
        0 => Checkpoint::After(arb_seqnum(u)),
        1 => Checkpoint::Within(ExtSeq::new(arb_seqnum(u), any(u))),
        _ => Checkpoint::ShardEnd,
    }
}

/// Reference order of canonical decimals: zero-pad to a common width and
/// compare digit strings (independent of `SeqNum`'s length-first order).
fn reference_cmp(a: &str, b: &str) -> Ordering {
    let width = a.len().max(b.len());
    format!("{a:0>width$}").cmp(&format!("{b:0>width$}"))
}

// ----- seqnum --------------------------------------------------------------

/// Sequence numbers: parsing arbitrary text never panics and accepts exactly
/// `0|[1-9][0-9]{0,128}` (every error tells the truth); Display round trips;
/// the order agrees with numeric order for values fitting u128 and with a
/// zero-padding reference beyond, and is a total order; `ExtSeq` orders by
/// (seq, sub); `Checkpoint`'s order agrees with `covers` and with
/// `resume_position().admits`, and its storage form round trips.
pub fn check_seqnum(data: &[u8]) {
    check_seqnum_text(&String::from_utf8_lossy(data));

    let mut u = Unstructured::new(data);
    let (a, b): (u128, u128) = (any(&mut u), any(&mut u));
    let (sa, sb) = (seq_of(a), seq_of(b));
    assert_eq!(sa.cmp(&sb), a.cmp(&b), "{a} vs {b}");
    assert_eq!(sa == sb, a == b, "{a} == {b}");

    let xs = [arb_seqnum(&mut u), arb_seqnum(&mut u), arb_seqnum(&mut u)];
    for x in &xs {
        check_seqnum_text(x.as_str());
        for y in &xs {
            let order = x.cmp(y);
            assert_eq!(order, reference_cmp(x.as_str(), y.as_str()), "{x} vs {y}");
            assert_eq!(order, y.cmp(x).reverse(), "antisymmetry {x} vs {y}");
            assert_eq!(order == Ordering::Equal, x == y, "Eq agrees with Ord");
            assert_eq!(x.partial_cmp(y), Some(order));
            for z in &xs {
                if x <= y && y <= z {
                    assert!(x <= z, "transitivity {x} <= {y} <= {z}");
                }
            }
        }
    }

    let subs: [u32; 3] = [any(&mut u), any(&mut u), any(&mut u)];
    let exts: Vec<ExtSeq> = xs
        .iter()
        .zip(subs)
        .map(|(s, sub)| ExtSeq::new(s.clone(), sub))
        .collect();
    for e in &exts {
        for f in &exts {
            let expected = e.seq.cmp(&f.seq).then(e.sub.cmp(&f.sub));
            assert_eq!(e.cmp(f), expected, "{e} vs {f}");
        }
    }

    let mut cps: Vec<Checkpoint> = vec![Checkpoint::ShardEnd];
    for e in &exts {
        cps.push(Checkpoint::After(e.seq.clone()));
        cps.push(Checkpoint::Within(e.clone()));
    }
    cps.push(arb_checkpoint(&mut u));
    for cp in &cps {
        let (value, sub) = cp.to_parts();
        assert_eq!(Checkpoint::from_parts(&value, sub).as_ref(), Ok(cp));
        for e in &exts {
            let covered = cp.covers(e);
            assert_eq!(
                covered,
                *cp >= Checkpoint::Within(e.clone()),
                "covers agrees with order: {cp:?} at {e}"
            );
            let admitted = cp.resume_position().is_some_and(|p| p.admits(e));
            assert_eq!(
                admitted, !covered,
                "resume admits what is not covered: {cp:?} at {e}"
            );
        }
        for other in &cps {
            assert_eq!(
                cp.cmp(other),
                other.cmp(cp).reverse(),
                "{cp:?} vs {other:?}"
            );
            assert_eq!(cp.cmp(other) == Ordering::Equal, cp == other);
        }
    }
}

/// `SeqNum::parse` on one string: accepted iff canonical, errors truthful.
fn check_seqnum_text(s: &str) {
    let canonical = !s.is_empty()
        && s.len() <= SeqNum::MAX_DIGITS
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    match SeqNum::parse(s) {
        Ok(seq) => {
            assert!(canonical, "accepted non-canonical {s:?}");
            assert_eq!(seq.as_str(), s);
            assert_eq!(seq.to_string(), s, "Display round trip");
            assert_eq!(format!("{seq:?}"), format!("SeqNum({s})"));
            assert_eq!(s.parse::<SeqNum>().as_ref(), Ok(&seq));
            assert_eq!(SeqNum::parse(&seq.to_string()).as_ref(), Ok(&seq));
            if let Ok(n) = s.parse::<u128>() {
                assert_eq!(seq, seq_of(n));
            }
        }
        Err(err) => {
            assert!(!canonical, "rejected canonical {s:?}: {err}");
            match err {
                SeqNumError::Empty => assert!(s.is_empty()),
                SeqNumError::NonDigit { position, found } => {
                    let first = s.bytes().position(|b| !b.is_ascii_digit());
                    assert_eq!(first, Some(position), "{s:?}");
                    assert_eq!(s[position..].chars().next(), Some(found), "{s:?}");
                }
                SeqNumError::TooLong { len } => {
                    assert_eq!(len, s.len());
                    assert!(len > SeqNum::MAX_DIGITS);
                }
                SeqNumError::LeadingZero => assert!(s.len() > 1 && s.starts_with('0')),
            }
            assert!(!err.to_string().is_empty());
        }
    }
}

// ----- kpl_deaggregate -----------------------------------------------------

/// Frame `proto` as a KPL aggregate with a correct MD5, so the protobuf
/// parser is reached (the fuzzer cannot forge digests).
fn frame(proto: &[u8]) -> Vec<u8> {
    let mut out = kpl::MAGIC.to_vec();
    out.extend_from_slice(proto);
    out.extend_from_slice(&Md5::digest(proto));
    out
}

/// Smallest encoding of one sub-record: outer key + length, then
/// partition_key_index (key + varint) and data (key + length).
const MIN_SUB_RECORD_BYTES: usize = 6;

/// `deaggregate` on any bytes: no panic; sub-records borrow from the input,
/// are numbered 0..n and are bounded by its length.
fn deaggregate_checked(input: &[u8]) -> Option<Vec<SubRecord<'_>>> {
    let records = kpl::deaggregate(input)?;
    assert!(
        records.len() * MIN_SUB_RECORD_BYTES <= input.len(),
        "{} sub-records from {} bytes",
        records.len(),
        input.len()
    );
    let bounds = input.as_ptr_range();
    let inside = |part: &[u8]| {
        let range = part.as_ptr_range();
        bounds.start <= range.start && range.end <= bounds.end
    };
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.sub as usize, i, "sub-sequence numbers are 0..n");
        assert!(inside(r.partition_key), "partition key borrows from input");
        assert!(inside(r.data), "data borrows from input");
        assert!(r.explicit_hash_key.is_none_or(inside), "hash key borrows");
    }
    Some(records)
}

fn as_agg<'a>(r: &SubRecord<'a>) -> AggRecord<'a> {
    AggRecord {
        partition_key: r.partition_key,
        explicit_hash_key: r.explicit_hash_key,
        data: r.data,
    }
}

fn same_records(got: &[SubRecord<'_>], want: &[AggRecord<'_>]) {
    assert_eq!(got.len(), want.len(), "record count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.sub as usize, i);
        assert_eq!(as_agg(g), *w, "record {i}");
    }
}

/// Reference for `kpl::hash_key` with an explicit hash key.
fn reference_hash_key(decimal: &[u8]) -> Option<u128> {
    if decimal.is_empty() || !decimal.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(decimal).ok()?.parse().ok()
}

/// `filter_by_range` keeps exactly the records in range (or without a
/// computable key), in order.
fn check_filter(records: &[SubRecord<'_>], range: HashRange) {
    let kept = kpl::filter_by_range(records.to_vec(), range);
    let expected: Vec<SubRecord<'_>> = records
        .iter()
        .filter(|r| {
            let key = kpl::hash_key(r.partition_key, r.explicit_hash_key);
            if let Some(ehk) = r.explicit_hash_key {
                assert_eq!(key, reference_hash_key(ehk), "explicit hash key {ehk:?}");
            }
            key.is_none_or(|k| range.contains(k))
        })
        .cloned()
        .collect();
    assert_eq!(kept, expected, "filter_by_range {range:?}");
}

fn arb_range(u: &mut Unstructured<'_>) -> HashRange {
    if chance(u, 20) {
        return HashRange::FULL;
    }
    let (a, b): (u128, u128) = (any(u), any(u));
    let range = HashRange::parse(&a.min(b).to_string(), &a.max(b).to_string())
        .expect("ordered decimal bounds parse");
    assert_eq!((range.start, range.end), (a.min(b), a.max(b)));
    if a != b {
        assert!(HashRange::parse(&a.max(b).to_string(), &a.min(b).to_string()).is_err());
    }
    range
}

/// KPL de-aggregation: any bytes, raw and framed with a valid MD5, never
/// panic and stay bounded; what decodes re-aggregates to the same records;
/// arbitrary records survive `aggregate` then `deaggregate`.
pub fn check_kpl_deaggregate(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let range = arb_range(&mut u);

    // Any bytes as a Kinesis record.
    if let Some(records) = deaggregate_checked(data) {
        check_filter(&records, range);
    }

    // Any bytes as the protobuf of an aggregate with a correct digest.
    let framed = frame(data);
    if let Some(records) = deaggregate_checked(&framed) {
        check_filter(&records, range);
        let want: Vec<AggRecord<'_>> = records.iter().map(as_agg).collect();
        let again = kpl::aggregate(&want);
        same_records(&deaggregate_checked(&again).expect("re-aggregated"), &want);
    }

    // Round trip of arbitrary records, partition keys often shared.
    let keys: Vec<&[u8]> = (0..int(&mut u, 1usize, 4))
        .map(|_| bytes(&mut u, 24))
        .collect();
    let count = int(&mut u, 0usize, 32);
    let mut want = Vec::with_capacity(count);
    for _ in 0..count {
        let partition_key = if chance(&mut u, 70) {
            keys[int(&mut u, 0, keys.len() - 1)]
        } else {
            bytes(&mut u, 24)
        };
        let explicit_hash_key = chance(&mut u, 30).then(|| bytes(&mut u, 40));
        want.push(AggRecord {
            partition_key,
            explicit_hash_key,
            data: bytes(&mut u, 300),
        });
    }
    let aggregate = kpl::aggregate(&want);
    let got = deaggregate_checked(&aggregate).expect("kpl::aggregate output de-aggregates");
    same_records(&got, &want);
    check_filter(&got, range);
}

// ----- checkpoint_tracker --------------------------------------------------

/// Model position of a checkpoint: (sequence, rank), `After` ranking above
/// every sub-record; `None` for `ShardEnd`. Sequences are small integers.
type Pos = (u64, u64);
const WHOLE: u64 = 1 << 33;

fn pos_of(cp: &Checkpoint) -> Option<Pos> {
    match cp {
        Checkpoint::After(s) => Some((s.as_str().parse().expect("small seq"), WHOLE)),
        Checkpoint::Within(e) => {
            Some((e.seq.as_str().parse().expect("small seq"), u64::from(e.sub)))
        }
        Checkpoint::ShardEnd => None,
    }
}

/// Model: does the position `cp` cover user record (seq, sub)?
fn model_covers(cp: &Checkpoint, record: Pos) -> bool {
    pos_of(cp).is_none_or(|p| record <= p)
}

struct ModelBatch {
    slot: Slot,
    last: ExtSeq,
    end: Checkpoint,
    records: u32,
    acked: bool,
}

/// Checkpoint tracker op sequences against a model: every result is
/// predicted; the watermark is the end of the contiguously acked prefix (or
/// the start, or `ShardEnd` once a marked end is drained), never decreases,
/// never covers an unacked record. The durable checkpoint is the lease
/// side's, not the tracker's: the ops that wrote one are now no-ops (their
/// range keeps the committed corpus meaning the same other ops).
pub fn check_checkpoint_tracker(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let limit: u32 = match int(&mut u, 0u8, 3) {
        0 => any(&mut u),
        _ => int(&mut u, 0, 12),
    };
    let start = match int(&mut u, 0u8, 5) {
        0 | 1 => None,
        2 => Some(Checkpoint::After(seq_of(u128::from(int(&mut u, 0u8, 6))))),
        3 => Some(Checkpoint::Within(ExtSeq::new(
            seq_of(u128::from(int(&mut u, 0u8, 6))),
            int(&mut u, 0, 3),
        ))),
        4 => Some(Checkpoint::After(seq_of(0))),
        _ => Some(Checkpoint::ShardEnd),
    };
    let mut t = CheckpointTracker::new(start.clone(), limit);
    assert_eq!(t.limit(), limit.max(1));

    let mut batches: Vec<ModelBatch> = Vec::new();
    let mut shard_end = start == Some(Checkpoint::ShardEnd);
    let mut last_watermark = start.clone();
    // Position of the last record the model generated, to build legal ones.
    let mut cursor: Pos = start.as_ref().and_then(pos_of).unwrap_or((0, 0));

    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        match int(&mut u, 0u8, 99) {
            0..=34 => {
                // Deliver: mostly a legal next position, sometimes a stale one.
                let (seq, sub) = if chance(&mut u, 85) {
                    let step = int(&mut u, 0u64, 2);
                    let sub = if step == 0 {
                        (cursor.1.min(u64::from(u32::MAX)) as u32).saturating_add(int(&mut u, 0, 2))
                    } else {
                        int(&mut u, 0, 3)
                    };
                    (cursor.0 + step, sub)
                } else {
                    (int(&mut u, 0u64, cursor.0 + 1), int(&mut u, 0, 3))
                };
                let complete = chance(&mut u, 60);
                let records: u32 = match int(&mut u, 0u8, 15) {
                    0 => 0,
                    1 => any(&mut u),
                    _ => int(&mut u, 1, 6),
                };
                let last = ExtSeq::new(seq_of(u128::from(seq)), sub);
                let previous = batches
                    .last()
                    .map(|b| b.end.clone())
                    .or(last_watermark.clone());
                let pending: u64 = batches
                    .iter()
                    .filter(|b| !b.acked)
                    .map(|b| u64::from(b.records))
                    .sum();
                let can = pending == 0 || pending + u64::from(records) <= u64::from(limit.max(1));
                assert_eq!(
                    t.can_deliver(records),
                    can,
                    "can_deliver({records}) pending {pending}"
                );
                let result = t.deliver(last.clone(), complete, records);
                let ended = shard_end || previous == Some(Checkpoint::ShardEnd);
                if ended {
                    assert_eq!(result, Err(TrackerError::ShardEnded));
                } else if previous
                    .as_ref()
                    .is_some_and(|p| model_covers(p, (seq, u64::from(sub))))
                {
                    assert!(
                        matches!(result, Err(TrackerError::NotAfterPrevious { .. })),
                        "{last} after {previous:?}: {result:?}"
                    );
                } else if !can {
                    assert_eq!(
                        result,
                        Err(TrackerError::OverLimit {
                            records,
                            pending: u32::try_from(pending).expect("pending fits u32"),
                            limit: limit.max(1)
                        })
                    );
                } else {
                    let slot = result.unwrap_or_else(|e| panic!("deliver {last}: {e}"));
                    assert!(
                        batches.last().is_none_or(|b| b.slot < slot),
                        "slots increase"
                    );
                    let end = Checkpoint::after_record(last.clone(), complete);
                    cursor = pos_of(&end).expect("not shard end");
                    batches.push(ModelBatch {
                        slot,
                        last,
                        end,
                        records,
                        acked: false,
                    });
                }
            }
            35..=64 => {
                // Ack: mostly an unacked batch, sometimes an acked one.
                if batches.is_empty() {
                    continue;
                }
                let i = pick_batch(&mut u, &batches);
                let b = &mut batches[i];
                let result = t.ack(b.slot);
                if b.acked {
                    assert_eq!(result, Err(TrackerError::AlreadyAcked(b.slot)));
                } else {
                    assert_eq!(result, Ok(b.records));
                    b.acked = true;
                }
            }
            65..=74 => {
                if batches.is_empty() {
                    continue;
                }
                let b = &batches[pick_batch(&mut u, &batches)];
                let result = t.nack(b.slot);
                if b.acked {
                    assert_eq!(result, Err(TrackerError::AlreadyAcked(b.slot)));
                } else {
                    assert_eq!(result, Ok(b.records));
                }
            }
            75..=89 => {
                // Formerly a checkpoint write (now the lease side's): the
                // checks below run on the unchanged state.
            }
            90..=94 => {
                shard_end = true;
                t.mark_shard_end();
            }
            _ => {
                // A spurious double ack of the oldest acked-and-popped batch.
                if let Some(b) = batches.iter().find(|b| b.acked) {
                    assert_eq!(t.ack(b.slot), Err(TrackerError::AlreadyAcked(b.slot)));
                }
            }
        }

        // The model's watermark: end of the contiguously acked prefix.
        let mut watermark = start.clone();
        for b in batches.iter().take_while(|b| b.acked) {
            watermark = Some(b.end.clone());
        }
        if shard_end && batches.iter().all(|b| b.acked) {
            watermark = Some(Checkpoint::ShardEnd);
        }
        assert_eq!(t.watermark(), watermark.as_ref(), "watermark");
        if let (Some(before), Some(now)) = (&last_watermark, &watermark) {
            assert!(now >= before, "watermark moved back: {before:?} -> {now:?}");
        }
        assert!(
            last_watermark.is_none() || watermark.is_some(),
            "watermark lost"
        );
        last_watermark = watermark.clone();
        if let Some(w) = &watermark {
            for b in batches.iter().filter(|b| !b.acked) {
                assert!(
                    !w.covers(&b.last),
                    "watermark {w:?} covers unacked {}",
                    b.last
                );
            }
        }
        let pending: Vec<&ModelBatch> = batches.iter().filter(|b| !b.acked).collect();
        let pending_records: u64 = pending.iter().map(|b| u64::from(b.records)).sum();
        assert_eq!(u64::from(t.pending_records()), pending_records);
        assert_eq!(t.pending_batches(), pending.len());
        let holding = pending.iter().filter(|b| b.records > 0).count();
        assert!(
            pending_records <= u64::from(t.limit()) || holding <= 1,
            "{pending_records} pending over limit {} in {holding} batches",
            t.limit()
        );
        assert_eq!(t.is_drained(), shard_end && pending.is_empty());
    }
}

/// Index of a batch to (n)ack: mostly an unacked one.
fn pick_batch(u: &mut Unstructured<'_>, batches: &[ModelBatch]) -> usize {
    let unacked: Vec<usize> = (0..batches.len()).filter(|&i| !batches[i].acked).collect();
    if !unacked.is_empty() && chance(u, 85) {
        unacked[int(u, 0, unacked.len() - 1)]
    } else {
        int(u, 0, batches.len() - 1)
    }
}

// ----- pool ----------------------------------------------------------------

fn arb_budget(u: &mut Unstructured<'_>) -> u64 {
    match int(u, 0u8, 7) {
        0 => 0,
        1 => u64::MAX,
        2 => any(u),
        _ => int(u, 1, 64),
    }
}

fn arb_amount(u: &mut Unstructured<'_>) -> u64 {
    match int(u, 0u8, 15) {
        0 => 0,
        1 => u64::MAX,
        2 => any(u),
        _ => int(u, 0, 24),
    }
}

/// Pool op sequences (admit, split, release, wait, cancel, poll_wake)
/// against a model: used == sum of live permits, live count exact, usage
/// over budget only from one oversized admission into an empty pool, FIFO
/// wake-ups only with room, and everything returns to 0 at the end.
pub fn check_pool(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (max_records, max_bytes) = (arb_budget(&mut u), arb_budget(&mut u));
    let mut pool: Pool<u8> = Pool::new(max_records, max_bytes);
    let (max_records, max_bytes) = (max_records.max(1), max_bytes.max(1));
    assert_eq!(
        (pool.max_records(), pool.max_bytes()),
        (max_records, max_bytes)
    );

    let mut permits: Vec<Permit> = Vec::new();
    let mut queue: Vec<u8> = Vec::new();
    let mut admits_since_empty = 0u32;

    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let used_records: u64 = permits.iter().map(Permit::records).sum();
        let used_bytes: u64 = permits.iter().map(Permit::bytes).sum();
        match int(&mut u, 0u8, 99) {
            0..=34 => {
                let (records, bytes) = (arb_amount(&mut u), arb_amount(&mut u));
                let empty = used_records == 0 && used_bytes == 0;
                let fits = used_records
                    .checked_add(records)
                    .is_some_and(|r| r <= max_records)
                    && used_bytes
                        .checked_add(bytes)
                        .is_some_and(|b| b <= max_bytes);
                match pool.try_admit(records, bytes) {
                    Ok(permit) => {
                        assert!(
                            fits || empty,
                            "admitted {records}/{bytes} that does not fit"
                        );
                        assert_eq!((permit.records(), permit.bytes()), (records, bytes));
                        if empty {
                            admits_since_empty = 0;
                        }
                        admits_since_empty += 1;
                        permits.push(permit);
                    }
                    Err(full) => {
                        assert!(!fits && !empty, "refused {records}/{bytes} that fits");
                        assert_eq!(
                            full,
                            PoolFull {
                                records,
                                bytes,
                                used_records,
                                used_bytes,
                                max_records,
                                max_bytes
                            }
                        );
                    }
                }
            }
            35..=49 => {
                if permits.is_empty() {
                    continue;
                }
                let i = int(&mut u, 0, permits.len() - 1);
                let (records, bytes) = (arb_amount(&mut u), arb_amount(&mut u));
                let before = (permits[i].records(), permits[i].bytes());
                let part = pool.split(&mut permits[i], records, bytes);
                assert_eq!(
                    (part.records(), part.bytes()),
                    (records.min(before.0), bytes.min(before.1))
                );
                assert_eq!(
                    (
                        part.records() + permits[i].records(),
                        part.bytes() + permits[i].bytes()
                    ),
                    before,
                    "split keeps the total"
                );
                permits.push(part);
            }
            50..=74 => {
                if permits.is_empty() {
                    continue;
                }
                let i = int(&mut u, 0, permits.len() - 1);
                pool.release(permits.swap_remove(i));
            }
            75..=84 => {
                let waiter = int(&mut u, 0u8, 7);
                pool.wait(waiter);
                if !queue.contains(&waiter) {
                    queue.push(waiter);
                }
            }
            85..=89 => {
                let waiter = int(&mut u, 0u8, 7);
                pool.cancel_wait(&waiter);
                queue.retain(|w| *w != waiter);
            }
            _ => {
                let room = used_records < max_records && used_bytes < max_bytes;
                assert_eq!(pool.has_room(), room);
                let expected = if room && !queue.is_empty() {
                    Some(queue.remove(0))
                } else {
                    None
                };
                assert_eq!(pool.poll_wake(), expected, "poll_wake");
            }
        }
        check_pool_state(&pool, &permits, &queue, admits_since_empty);
    }

    // Everything back: the pool returns to 0.
    for permit in permits.drain(..) {
        pool.release(permit);
    }
    check_pool_state(&pool, &permits, &queue, admits_since_empty);
    assert_eq!(
        (pool.used_records(), pool.used_bytes(), pool.live_permits()),
        (0, 0, 0)
    );
    assert!(pool.has_room());
    if let Ok(p) = pool.try_admit(1, 1) {
        pool.release(p);
    } else {
        panic!("an empty pool admits anything");
    }
}

fn check_pool_state(pool: &Pool<u8>, permits: &[Permit], queue: &[u8], admits_since_empty: u32) {
    let used_records: u64 = permits.iter().map(Permit::records).sum();
    let used_bytes: u64 = permits.iter().map(Permit::bytes).sum();
    assert_eq!(
        pool.used_records(),
        used_records,
        "used records == sum of permits"
    );
    assert_eq!(
        pool.used_bytes(),
        used_bytes,
        "used bytes == sum of permits"
    );
    let live = permits.iter().filter(|p| !p.is_empty()).count() as u64;
    assert_eq!(pool.live_permits(), live, "live permits");
    assert_eq!(live == 0, used_records == 0 && used_bytes == 0);
    if used_records > pool.max_records() || used_bytes > pool.max_bytes() {
        assert_eq!(
            admits_since_empty, 1,
            "over budget only from one oversized admission"
        );
    }
    assert_eq!(pool.waiters(), queue.len());
}

// ----- lease_row -----------------------------------------------------------

fn arb_owner(u: &mut Unstructured<'_>) -> Owner {
    const WORKERS: [&str; 4] = ["a", "b", "host-1#2", "ß"];
    let worker = WORKERS[int(u, 0, WORKERS.len() - 1)];
    Owner::new(worker, int(u, 0, 2))
}

fn arb_token(u: &mut Unstructured<'_>) -> FencingToken {
    FencingToken(match int(u, 0u8, 7) {
        0 => u64::MAX - int(u, 0, 2),
        1 => any(u),
        _ => int(u, 0, 5),
    })
}

fn arb_opt_checkpoint(u: &mut Unstructured<'_>) -> Option<Checkpoint> {
    chance(u, 70).then(|| arb_checkpoint(u))
}

/// Lease-row decoding and the reference semantics of lease writes:
/// `Checkpoint::from_parts` and `Owner::decode` never panic and round trip;
/// `LeaseWrite::apply` on arbitrary rows never panics, matches a model of
/// each write's condition and effect, never lowers the fencing token, bumps
/// it by one on every change of owner, and never lets two owners hold the
/// same token.
pub fn check_lease_row(data: &[u8]) {
    let mut u = Unstructured::new(data);

    // Stored checkpoint attributes.
    let value = text(&mut u, 140);
    let sub: Option<u32> = any(&mut u);
    match Checkpoint::from_parts(&value, sub) {
        Ok(cp) => assert_eq!(cp.to_parts(), (value.clone(), sub), "parts round trip"),
        Err(CheckpointError::ShardEndWithSub { sub: s }) => {
            assert_eq!((value.as_str(), sub), (Checkpoint::SHARD_END, Some(s)));
        }
        Err(CheckpointError::KclSentinel { value: v }) => assert_eq!(v, value),
        Err(CheckpointError::Sequence(e)) => assert_eq!(SeqNum::parse(&value), Err(e)),
    }

    // Stored owners.
    let stored = text(&mut u, 40);
    if let Some(owner) = Owner::decode(&stored) {
        assert!(!owner.worker.is_empty());
        assert!(
            stored.starts_with(&*owner.worker),
            "{stored:?} -> {owner:?}"
        );
        assert_eq!(Owner::decode(&owner.encode()), Some(owner.clone()));
    } else {
        let well_formed = stored
            .rsplit_once('#')
            .is_some_and(|(w, i)| !w.is_empty() && i.parse::<u64>().is_ok());
        assert!(
            !well_formed,
            "{stored:?} is worker#number but did not decode"
        );
    }
    let worker = text(&mut u, 20);
    let incarnation: u64 = any(&mut u);
    let owner = Owner::new(&worker, incarnation);
    let decoded = Owner::decode(&owner.encode());
    assert_eq!(decoded.is_some(), !worker.is_empty());
    if let Some(decoded) = decoded {
        assert_eq!(decoded, owner, "encode/decode round trip");
    }

    // Conditional writes on one lease row.
    let shard = ShardRef::new(StreamId::new("s"), ShardId::new("shardId-000000000000"));
    let mut row: Option<LeaseRow> = chance(&mut u, 80).then(|| arb_row(&mut u, &shard));
    let mut holders: BTreeMap<FencingToken, Owner> = BTreeMap::new();
    let mut note_holder = |row: &LeaseRow| {
        if let Some(owner) = &row.owner {
            let first = holders.entry(row.token).or_insert_with(|| owner.clone());
            assert_eq!(first, owner, "two owners with token {:?}", row.token);
        }
    };
    if let Some(r) = &row {
        note_holder(r);
    }
    for _ in 0..MAX_STEPS / 8 {
        if u.is_empty() {
            break;
        }
        let write = arb_write(&mut u, &shard, row.as_ref());
        let result = write.apply(row.as_ref());
        let expected = model_apply(&write, row.as_ref());
        assert_eq!(
            result.is_ok(),
            expected.is_some(),
            "{write:?} on {row:?}: {result:?}"
        );
        if let (Ok(next), Some(want)) = (&result, &expected) {
            assert_eq!(next, want, "{write:?} on {row:?}");
            assert_eq!(next.shard, shard);
            if let Some(before) = &row {
                assert!(next.token >= before.token, "token went down");
                assert_eq!(
                    (&next.parents, next.created_ms),
                    (&before.parents, before.created_ms)
                );
                if next.owner != before.owner {
                    assert_eq!(
                        next.token.0,
                        before.token.0.wrapping_add(1),
                        "a change of owner bumps the token by one"
                    );
                }
            }
            note_holder(next);
        }
        if let Ok(next) = result {
            row = Some(next);
        }
    }
}

fn arb_row(u: &mut Unstructured<'_>, shard: &ShardRef) -> LeaseRow {
    let mut row = LeaseRow::new(shard.clone(), Vec::new(), any(u));
    row.owner = chance(u, 70).then(|| arb_owner(u));
    row.token = arb_token(u);
    row.checkpoint = arb_opt_checkpoint(u);
    row.pending_owner = chance(u, 30).then(|| arb_owner(u));
    if chance(u, 20) {
        row.parents = vec![ShardId::new("shardId-000000000001")];
    }
    if chance(u, 50) {
        row.checkpoint_serial = int(u, 0, 4);
    }
    row
}

/// A write, usually aimed at the current row (observed owner and token) so
/// its condition often holds.
fn arb_write(u: &mut Unstructured<'_>, shard: &ShardRef, row: Option<&LeaseRow>) -> LeaseWrite {
    let aimed = row.is_some() && chance(u, 80);
    let owner = match row.and_then(|r| r.owner.clone()) {
        Some(o) if aimed => o,
        _ => arb_owner(u),
    };
    let token = match row {
        Some(r) if aimed => r.token,
        _ => arb_token(u),
    };
    let shard = shard.clone();
    match int(u, 0u8, 5) {
        0 => LeaseWrite::Create(arb_row(u, &shard)),
        1 => LeaseWrite::Take {
            shard,
            expect_owner: match row {
                Some(r) if aimed => r.owner.clone(),
                _ => chance(u, 50).then(|| arb_owner(u)),
            },
            expect_token: token,
            to: arb_owner(u),
        },
        2 => LeaseWrite::RequestHandoff {
            shard,
            owner,
            token,
            pending: arb_owner(u),
        },
        3 => LeaseWrite::Transfer {
            shard,
            owner,
            token,
            to: match row.and_then(|r| r.pending_owner.clone()) {
                Some(p) if aimed => p,
                _ => arb_owner(u),
            },
            checkpoint: arb_opt_checkpoint(u),
        },
        4 => LeaseWrite::Checkpoint {
            shard,
            owner,
            token,
            checkpoint: arb_checkpoint(u),
            // Usually the holder's next write; sometimes a late one.
            serial: match row {
                Some(r) if aimed && chance(u, 80) => r.checkpoint_serial.saturating_add(1),
                _ => int(u, 0, 5),
            },
        },
        _ => LeaseWrite::Release {
            shard,
            owner,
            token,
            checkpoint: arb_opt_checkpoint(u),
        },
    }
}

/// The documented condition and effect of each lease write.
fn model_apply(write: &LeaseWrite, current: Option<&LeaseRow>) -> Option<LeaseRow> {
    let held = |r: &LeaseRow, owner: &Owner, token: FencingToken| {
        r.owner.as_ref() == Some(owner) && r.token == token
    };
    match (write, current) {
        (LeaseWrite::Create(new), None) => Some(new.clone()),
        (LeaseWrite::Create(_), Some(_)) | (_, None) => None,
        (
            LeaseWrite::Take {
                expect_owner,
                expect_token,
                to,
                ..
            },
            Some(r),
        ) => (r.owner == *expect_owner && r.token == *expect_token && r.token.0 < u64::MAX).then(
            || LeaseRow {
                owner: Some(to.clone()),
                token: r.token.next(),
                pending_owner: None,
                checkpoint_serial: 0,
                ..r.clone()
            },
        ),
        (
            LeaseWrite::RequestHandoff {
                owner,
                token,
                pending,
                ..
            },
            Some(r),
        ) => (held(r, owner, *token) && r.pending_owner.as_ref().is_none_or(|p| p == pending))
            .then(|| LeaseRow {
                pending_owner: Some(pending.clone()),
                ..r.clone()
            }),
        (
            LeaseWrite::Transfer {
                owner,
                token,
                to,
                checkpoint,
                ..
            },
            Some(r),
        ) => {
            (held(r, owner, *token) && r.pending_owner.as_ref() == Some(to) && r.token.0 < u64::MAX)
                .then(|| LeaseRow {
                    owner: Some(to.clone()),
                    token: r.token.next(),
                    pending_owner: None,
                    checkpoint: checkpoint.clone().or(r.checkpoint.clone()),
                    checkpoint_serial: 0,
                    ..r.clone()
                })
        }
        (
            LeaseWrite::Checkpoint {
                owner,
                token,
                checkpoint,
                serial,
                ..
            },
            Some(r),
        ) => (held(r, owner, *token) && r.checkpoint_serial < *serial).then(|| LeaseRow {
            checkpoint: Some(checkpoint.clone()),
            checkpoint_serial: *serial,
            ..r.clone()
        }),
        (
            LeaseWrite::Release {
                owner,
                token,
                checkpoint,
                ..
            },
            Some(r),
        ) => (held(r, owner, *token) && r.token.0 < u64::MAX).then(|| LeaseRow {
            owner: None,
            token: r.token.next(),
            pending_owner: None,
            checkpoint: checkpoint.clone().or(r.checkpoint.clone()),
            checkpoint_serial: 0,
            ..r.clone()
        }),
    }
}

// ----- config --------------------------------------------------------------

fn arb_duration(u: &mut Unstructured<'_>) -> Duration {
    match int(u, 0u8, 9) {
        0 => Duration::ZERO,
        1 => Duration::MAX,
        2 => Duration::new(any(u), int(u, 0, 999_999_999)),
        3 => Duration::from_secs(int(u, 0, 1_000)),
        _ => Duration::from_millis(int(u, 0, 120_000)),
    }
}

fn arb_name(u: &mut Unstructured<'_>) -> String {
    const NAMES: [&str; 6] = ["orders", "app", "", " ", "bad name!", "a.b-c_d"];
    if chance(u, 60) {
        NAMES[int(u, 0, NAMES.len() - 1)].to_owned()
    } else if chance(u, 10) {
        "x".repeat(int(u, 120, 140))
    } else {
        text(u, 40)
    }
}

fn arb_config(u: &mut Unstructured<'_>) -> Config {
    let streams = (0..int(u, 0, 3))
        .map(|_| StreamId::new(arb_name(u)))
        .collect();
    let owner = Owner::new(arb_name(u), any(u));
    let retrieval = match int(u, 0u8, 3) {
        0 => Retrieval::polling(),
        1 => Retrieval::Polling {
            idle_interval: arb_duration(u),
            min_interval: arb_duration(u),
            max_records: if chance(u, 50) {
                int(u, 0, 10_001)
            } else {
                any(u)
            },
        },
        2 => Retrieval::Efo {
            consumer: EfoConsumer::Name(arb_name(u)),
        },
        _ => Retrieval::Efo {
            consumer: EfoConsumer::Arn(arb_name(u)),
        },
    };
    let mut c = Config::new(streams, owner, retrieval);
    if chance(u, 30) {
        c = c.with_failover_time(arb_duration(u));
    }
    c.seed = any(u);
    c.start_from = match int(u, 0u8, 2) {
        0 => StartFrom::Oldest,
        1 => StartFrom::Latest,
        _ => StartFrom::Timestamp { unix_ms: any(u) },
    };
    // Each knob keeps its default or takes an arbitrary value.
    macro_rules! maybe {
        ($field:expr, $value:expr) => {
            if chance(u, 25) {
                $field = $value;
            }
        };
    }
    maybe!(c.checkpoint_limit, if chance(u, 50) { 0 } else { any(u) });
    maybe!(c.commit_period, arb_duration(u));
    maybe!(c.failover_time, arb_duration(u));
    maybe!(c.heartbeat_interval, arb_duration(u));
    maybe!(c.heartbeat_read_interval, arb_duration(u));
    maybe!(c.self_fence_margin, arb_duration(u));
    maybe!(c.rebalance_period, arb_duration(u));
    maybe!(c.shard_sync_period, arb_duration(u));
    maybe!(c.handoff_timeout, arb_duration(u));
    maybe!(c.backpressure_timeout, arb_duration(u));
    maybe!(c.pool_records, arb_budget(u));
    maybe!(c.pool_bytes, arb_budget(u));
    maybe!(
        c.batching,
        Batching {
            count: if chance(u, 50) { int(u, 0, 3) } else { any(u) },
            byte_size: any(u),
            period: chance(u, 50).then(|| arb_duration(u)),
        }
    );
    maybe!(c.shutdown_timeout, arb_duration(u));
    maybe!(c.consumer_active_timeout, arb_duration(u));
    maybe!(c.consumer_describe_interval, arb_duration(u));
    c
}

/// Field names a `ConfigError` may name.
const CONFIG_FIELDS: &[&str] = &[
    "streams",
    "worker_id",
    "checkpoint_limit",
    "commit_period",
    "failover_time",
    "heartbeat_interval",
    "heartbeat_read_interval",
    "rebalance_period",
    "shard_sync_period",
    "handoff_timeout",
    "backpressure_timeout",
    "consumer_describe_interval",
    "enhanced_fan_out.max_pending_records",
    "pool_bytes",
    "batching.count",
    "batching.period",
    "max_records",
    "idle_interval",
    "enhanced_fan_out.consumer_name",
    "enhanced_fan_out.consumer_arn",
];

/// Arbitrary configurations: `validate` never panics; an accepted one
/// satisfies every documented bound; a refusal names a known field.
pub fn check_config(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let c = arb_config(&mut u);
    match c.validate() {
        Ok(()) => check_config_bounds(&c),
        Err(e) => {
            assert!(
                CONFIG_FIELDS.contains(&e.field),
                "unknown field {:?}",
                e.field
            );
            assert!(e.to_string().contains(e.field), "{e}");
        }
    }
}

/// The documented bounds of a validated configuration.
pub fn check_config_bounds(c: &Config) {
    assert!(!c.streams.is_empty());
    assert!(c.streams.iter().all(|s| !s.as_str().trim().is_empty()));
    assert!(!c.owner.worker.is_empty());
    assert!(c.checkpoint_limit >= 1);
    for d in [
        c.commit_period,
        c.failover_time,
        c.heartbeat_interval,
        c.heartbeat_read_interval,
        c.rebalance_period,
        c.shard_sync_period,
        c.handoff_timeout,
        c.backpressure_timeout,
        c.consumer_describe_interval,
    ] {
        assert!(!d.is_zero(), "{c:?}");
    }
    assert!(
        c.heartbeat_interval.as_nanos() + c.self_fence_margin.as_nanos()
            < c.failover_time.as_nanos(),
        "heartbeat + margin < failover: {c:?}"
    );
    assert!(c.heartbeat_read_interval < c.failover_time);
    assert!(c.pool_records >= 1 && c.pool_bytes >= 1);
    assert!(c.batching.count >= 1);
    assert!(c.batching.period.is_none_or(|p| !p.is_zero()));
    match &c.retrieval {
        Retrieval::Polling {
            idle_interval,
            max_records,
            ..
        } => {
            assert!((1..=10_000).contains(max_records));
            assert!(!idle_interval.is_zero());
        }
        Retrieval::Efo { consumer } => {
            match consumer {
                EfoConsumer::Name(n) => {
                    assert!(!n.is_empty() && n.len() <= 128, "{n:?}");
                    assert!(n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
                }
                EfoConsumer::Arn(a) => assert!(!a.trim().is_empty()),
            }
            assert!(c.backpressure_timeout < Duration::from_secs(300));
        }
    }
}
