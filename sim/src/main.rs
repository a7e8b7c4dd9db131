//! `kinesin-sim`: sweep seeds of a scenario and print the summary line.
//!
//! `cargo run -p kinesin-sim --release -- --seeds N [--seed S] [--scenario NAME] [--threads T] [--keep-going] [--trace]`
//!
//! Runs seeds S..S+N (S defaults to 0) of the scenario (default `swarm`;
//! `cost` runs `cost100` and `cost1000`), on T threads (default: available
//! cores). `--trace` prints every trace line of every seed run (use it with
//! one seed: `--seed S --trace`); `SIM_TRACE_TAIL=n` keeps n lines for a
//! failure report instead of the default. Prints the trace hash of the seed (or one hash folded over every
//! seed of the sweep, in seed order), so a change meant to alter no
//! behaviour can be checked by comparing it. Exits 1 on a violation, printing `SIM_SEED=<n>`, the command that
//! replays it and the shortened event trace.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use kinesin_sim::summary::Summary;
use kinesin_sim::{replay_command, run, Params, RunReport};

struct Args {
    seeds: u64,
    seed: u64,
    scenario: String,
    threads: usize,
    keep_going: bool,
    trace: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 1,
        seed: 0,
        scenario: "swarm".into(),
        keep_going: false,
        trace: false,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => a.seeds = val()?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--seed" => a.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--scenario" => a.scenario = val()?,
            "--threads" => a.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--keep-going" => a.keep_going = true,
            "--trace" => a.trace = true,
            "-h" | "--help" => {
                return Err("usage: kinesin-sim [--seeds N] [--seed S] [--scenario swarm|quiet|poison|perf64|cost|cost100|cost1000] [--threads T] [--keep-going] [--trace]".into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn sweep(scenario: &str, a: &Args) -> Result<bool, String> {
    if Params::named(scenario, 0).is_none() {
        return Err(format!("unknown scenario {scenario}"));
    }
    let next = AtomicU64::new(a.seed);
    let end = a.seed + a.seeds;
    let summary = Mutex::new(Summary::default());
    let failures: Mutex<Vec<RunReport>> = Mutex::new(Vec::new());
    let hashes: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());
    let traces: Mutex<Vec<(u64, Vec<String>)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..a.threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end || (!a.keep_going && !failures.lock().expect("lock").is_empty()) {
                    break;
                }
                let mut params = Params::named(scenario, seed).expect("checked");
                if let Some(n) = std::env::var("SIM_TRACE_TAIL")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    params.trace_tail = n;
                }
                if a.trace {
                    params.trace_tail = usize::MAX;
                }
                let report = run(params);
                summary.lock().expect("lock").add(&report);
                hashes
                    .lock()
                    .expect("lock")
                    .insert(report.seed, report.trace_hash);
                if a.trace {
                    traces
                        .lock()
                        .expect("lock")
                        .push((report.seed, report.trace_tail.clone()));
                }
                if report.violation.is_some() {
                    failures.lock().expect("lock").push(report);
                }
            });
        }
    });
    let mut summary = summary.into_inner().expect("lock");
    summary.wall = started.elapsed();
    let mut failures = failures.into_inner().expect("lock");
    failures.sort_by_key(|r| r.seed);
    if a.trace {
        let mut traces = traces.into_inner().expect("lock");
        traces.sort_by_key(|r| r.0);
        for (seed, lines) in traces {
            println!("# trace of {scenario} seed {seed} ({} lines)", lines.len());
            for line in lines {
                println!("{line}");
            }
        }
    }
    println!("[{scenario}] {summary}");
    let hashes = hashes.into_inner().expect("lock");
    if let [(_, h)] = hashes.iter().collect::<Vec<_>>()[..] {
        println!("trace hash={h:016x}");
    } else {
        // One figure for the whole sweep, independent of thread scheduling:
        // the per-seed hashes folded in seed order.
        let all = hashes.values().fold(0xcbf2_9ce4_8422_2325_u64, |acc, h| {
            (acc ^ h).wrapping_mul(0x0100_0000_01b3).rotate_left(17)
        });
        println!("trace hash={all:016x} (all {} seeds)", hashes.len());
    }
    if failures.is_empty() {
        return Ok(true);
    }
    let mut by_oracle: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in &failures {
        if let Some(v) = &r.violation {
            by_oracle.entry(v.oracle).or_default().push(r.seed);
        }
    }
    for (oracle, seeds) in &by_oracle {
        println!(
            "  {oracle}: {} seeds, first {:?}",
            seeds.len(),
            &seeds[..seeds.len().min(10)]
        );
    }
    let r = &failures[0];
    if !a.trace {
        println!(
            "  (last {} trace lines of seed {})",
            r.trace_tail.len(),
            r.seed
        );
        for line in &r.trace_tail {
            println!("  {line}");
        }
    }
    if let Some(v) = &r.violation {
        println!("VIOLATION {v}");
    }
    println!("SIM_SEED={}", r.seed);
    println!("replay: {}", replay_command(r));
    println!("whole trace: {} --trace", replay_command(r));
    Ok(false)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let scenarios: Vec<&str> = if a.scenario == "cost" {
        vec!["cost100", "cost1000"]
    } else {
        vec![a.scenario.as_str()]
    };
    for s in scenarios {
        match sweep(s, &a) {
            Ok(true) => {}
            Ok(false) => return ExitCode::from(1),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
