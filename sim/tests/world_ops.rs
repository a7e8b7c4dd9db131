//! The proptest state-machine suite: random sequences of fleet operations
//! and faults (crash, restart, stall, partitions, sink stalls, shutdown,
//! join, split, merge) at random times, applied to a small world; every
//! oracle must hold after every step and the heal phase must catch up.
//! Failing cases shrink to a minimal op sequence; their seeds are kept in
//! `proptest-regressions/world_ops.txt` (commit that file).

use kinesin_sim::scenario::{Faults, Op, Params};
use kinesin_sim::sched::SEC;
use kinesin_sim::{replay_command, run};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn op() -> impl Strategy<Value = Op> {
    let w = 0usize..4;
    let d = (1u64..40).prop_map(|s| s * SEC);
    prop_oneof![
        w.clone().prop_map(Op::Crash),
        w.clone().prop_map(Op::Restart),
        (w.clone(), d.clone()).prop_map(|(w, d)| Op::Stall(w, d)),
        (w.clone(), d.clone()).prop_map(|(w, d)| Op::CutDynamo(w, d)),
        (w.clone(), d.clone()).prop_map(|(w, d)| Op::CutKinesis(w, d)),
        (w.clone(), d.clone()).prop_map(|(w, d)| Op::SinkStall(w, d)),
        (w.clone(), d, proptest::bool::ANY).prop_map(|(w, d, r)| Op::CutDynamoOneWay(w, d, r)),
        w.prop_map(Op::Shutdown),
        Just(Op::Join),
        (0usize..8).prop_map(Op::Split),
        (0usize..8).prop_map(Op::Merge),
    ]
}

fn world() -> impl Strategy<Value = Params> {
    (
        any::<u64>(),
        1usize..5,
        1usize..4,
        any::<bool>(),
        proptest::collection::vec((0u64..240, op()), 0..10),
        (0.0f64..0.1, 0.0f64..0.1, 0.0f64..0.2),
    )
        .prop_map(|(seed, shards, workers, efo, ops, (amb, err, nack))| {
            let mut p = Params::quiet("proptest", seed, shards, workers);
            p.efo = efo;
            p.fault_us = 240 * SEC;
            p.faults = Faults {
                restart_prob: 0.0,
                dynamo_ambiguous: amb,
                dynamo_error: err,
                kinesis_error: err,
                efo_stream_error: err / 2.0,
                sink_nack: nack,
                ..Faults::none()
            };
            p.script = ops.into_iter().map(|(t, op)| (t * SEC, op)).collect();
            p
        })
}

proptest! {
    #![proptest_config(Config {
        cases: 24,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/world_ops.txt"))),
        ..Config::default()
    })]

    #[test]
    fn every_oracle_holds_for_any_sequence_of_faults(p in world()) {
        let r = run(p.clone());
        if let Some(v) = &r.violation {
            let tail: Vec<&str> = r.trace_tail.iter().rev().take(40).rev().map(String::as_str).collect();
            prop_assert!(false, "{v}\nops: {:?}\n{}\n(seed {}; {})", p.script, tail.join("\n"), p.seed, replay_command(&r));
        }
    }
}
