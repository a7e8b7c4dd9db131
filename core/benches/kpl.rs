//! KPL de-aggregation throughput next to plain MD5 of the same bytes.
//!
//! De-aggregation must verify the MD5 trailer, so its cost is MD5 plus
//! protobuf parsing. The parser is zero-copy, so de-aggregation should run at
//! no less than 0.8 of MD5's throughput on a realistic aggregate: 100 user
//! records of 100 to 1000 bytes (about 55 KB), 20 distinct partition keys,
//! a few explicit hash keys.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kinesin_core::kpl::{aggregate, deaggregate, AggRecord};
use md5::{Digest, Md5};

/// A deterministic aggregate of `count` user records of 100..=1000 bytes.
fn realistic_aggregate(count: usize) -> Vec<u8> {
    let keys: Vec<String> = (0..20).map(|i| format!("device-{i:04}")).collect();
    let explicit = ["85070591730234615865843651857942052864".to_owned()];
    let payloads: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let len = 100 + (i * 379) % 901;
            (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
        })
        .collect();
    let records: Vec<AggRecord<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, data)| AggRecord {
            partition_key: keys[i % keys.len()].as_bytes(),
            explicit_hash_key: (i % 10 == 0).then(|| explicit[0].as_bytes()),
            data,
        })
        .collect();
    aggregate(&records)
}

fn kpl_vs_md5(c: &mut Criterion) {
    let bytes = realistic_aggregate(100);
    let subs = deaggregate(&bytes).expect("benchmark input is a valid aggregate");
    assert_eq!(subs.len(), 100);

    let mut group = c.benchmark_group("kpl_vs_md5");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("deaggregate", |b| b.iter(|| deaggregate(black_box(&bytes))));
    group.bench_function("md5", |b| b.iter(|| Md5::digest(black_box(&bytes))));
    group.finish();
}

criterion_group!(benches, kpl_vs_md5);
criterion_main!(benches);
