//! Per-record delivery bookkeeping: checkpoint limit, pool admission,
//! deliver, ack, pool release and the periodic read of the watermark.
//!
//! This is the work the core does for every record on the hot path, without
//! I/O. Each iteration delivers a window of 16 batches, then acknowledges
//! them either in order or in a shuffled order (out-of-order acks within a
//! window of 16), releasing each batch's permit, and reads the watermark
//! a commit would write every 64 batches. Sequence numbers are realistic 56-digit
//! strings generated before timing. Target: at least 5 million records/s
//! (under 200 ns per record) with batches of 1 record, the default batching.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kinesin_core::checkpoint::{CheckpointTracker, Slot};
use kinesin_core::pool::{Permit, Pool};
use kinesin_core::rng::Rng;
use kinesin_core::sequence::{ExtSeq, SeqNum};

/// Batches delivered before their acks come back.
const WINDOW: usize = 16;
/// A commit's read of the watermark every this many acked batches.
const COMMIT_EVERY: u64 = 64;
/// Bytes per record charged to the pool.
const RECORD_BYTES: u64 = 1024;
/// Pre-generated records; the tracker restarts when they run out.
const RECORDS: usize = 1 << 16;

/// `count` increasing 56-digit sequence numbers, as Kinesis issues them.
fn realistic_seqs(count: usize) -> Vec<ExtSeq> {
    (0..count as u128)
        .map(|i| {
            let digits = format!(
                "49590338271490256608559692{:030}",
                538_361_571_095_921_575_989_136_u128 + i * 1_000_003
            );
            assert_eq!(digits.len(), 56);
            ExtSeq::new(SeqNum::parse(&digits).expect("valid sequence number"), 0)
        })
        .collect()
}

struct Rig {
    seqs: Vec<ExtSeq>,
    cursor: usize,
    batch: usize,
    tracker: CheckpointTracker,
    pool: Pool<u32>,
    /// Ack orders (permutations of 0..WINDOW), used in turn.
    orders: Vec<[usize; WINDOW]>,
    next_order: usize,
    window: Vec<Option<(Slot, Permit)>>,
    acked: u64,
}

impl Rig {
    fn new(seqs: Vec<ExtSeq>, batch: usize, out_of_order: bool) -> Self {
        let identity: [usize; WINDOW] = std::array::from_fn(|i| i);
        let orders = if out_of_order {
            let mut rng = Rng::new(16);
            (0..64)
                .map(|_| {
                    let mut order = identity;
                    for i in (1..WINDOW).rev() {
                        order.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    order
                })
                .collect()
        } else {
            vec![identity]
        };
        Rig {
            seqs,
            cursor: 0,
            batch,
            tracker: Self::tracker(batch),
            pool: Pool::new(50_000, 64 << 20),
            orders,
            next_order: 0,
            window: Vec::with_capacity(WINDOW),
            acked: 0,
        }
    }

    /// The default checkpoint_limit (1024), raised so a whole window of
    /// large batches fits.
    fn tracker(batch: usize) -> CheckpointTracker {
        CheckpointTracker::new(None, 1024.max((WINDOW * batch) as u32))
    }

    /// Deliver one window of batches, then ack them all.
    fn step(&mut self) {
        if self.cursor + WINDOW * self.batch > self.seqs.len() {
            self.tracker = Self::tracker(self.batch);
            self.cursor = 0;
        }
        let records = self.batch as u32;
        for _ in 0..WINDOW {
            assert!(self.tracker.can_deliver(records));
            let permit = self
                .pool
                .try_admit(u64::from(records), u64::from(records) * RECORD_BYTES)
                .expect("pool sized for a window");
            self.cursor += self.batch;
            let last = self.seqs[self.cursor - 1].clone();
            let slot = self.tracker.deliver(last, true, records).expect("in order");
            self.window.push(Some((slot, permit)));
        }
        let order = &self.orders[self.next_order];
        self.next_order = (self.next_order + 1) % self.orders.len();
        for &i in order {
            let (slot, permit) = self.window[i].take().expect("acked once");
            self.tracker.ack(slot).expect("known slot");
            self.pool.release(permit);
            self.acked += 1;
            if self.acked % COMMIT_EVERY == 0 {
                // A commit reads the watermark (the durable copy is the
                // lease side's).
                black_box(self.tracker.watermark().cloned());
            }
        }
        self.window.clear();
        black_box(self.tracker.watermark());
    }
}

fn delivery(c: &mut Criterion) {
    let seqs = realistic_seqs(RECORDS);
    let mut group = c.benchmark_group("delivery");
    for batch in [1usize, 100] {
        group.throughput(Throughput::Elements((WINDOW * batch) as u64));
        for (name, out_of_order) in [("acks_in_order", false), ("acks_out_of_order_16", true)] {
            let mut rig = Rig::new(seqs.clone(), batch, out_of_order);
            group.bench_function(BenchmarkId::new(name, format!("batch_{batch}")), |b| {
                b.iter(|| rig.step());
            });
            assert_eq!(rig.pool.used_records(), 0, "every permit released");
            assert_eq!(rig.tracker.pending_records(), 0, "every batch acked");
        }
    }
    group.finish();
}

/// `SeqNum::parse` of a 56-digit sequence number: the driver validates every
/// record's sequence number once, as it arrives.
fn seqnum_parse(c: &mut Criterion) {
    let strings: Vec<String> = realistic_seqs(1024)
        .into_iter()
        .map(|e| e.seq.as_str().to_owned())
        .collect();
    let mut group = c.benchmark_group("seqnum_parse");
    group.throughput(Throughput::Elements(strings.len() as u64));
    group.bench_function("56_digits", |b| {
        b.iter(|| {
            for s in &strings {
                black_box(SeqNum::parse(black_box(s)).ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, delivery, seqnum_parse);
criterion_main!(benches);
