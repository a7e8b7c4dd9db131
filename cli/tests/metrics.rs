//! `kinesin consume --metrics-addr` scraped while it runs on the local
//! emulators (`scripts/emulators.sh start` and `eval "$(scripts/emulators.sh
//! env)"`): `/metrics` has a per-shard lag series for every held shard, the
//! series of a shard handed to a second worker disappears, and `/healthz`
//! turns failing (naming the lease table) once the lease table has been
//! unreachable for longer than the failover time. The worker reaches
//! DynamoDB through a TCP proxy in this test, which is cut to make the table
//! unreachable.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::{emulator_env, kinesin};

/// A TCP proxy to DynamoDB that can be cut: open connections are shut
/// down and new ones refused.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, cs) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            while !c.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((down, _)) => {
                        down.set_nonblocking(false).unwrap();
                        let Ok(up) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        let mut list = cs.lock().unwrap();
                        list.push(down.try_clone().unwrap());
                        list.push(up.try_clone().unwrap());
                        drop(list);
                        pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
                        pipe(up, down);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // The listener drops here: new connections are refused.
        });
        Proxy { port, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A `kinesin consume` worker, stopped with SIGTERM on drop.
struct Worker(Child);

impl Worker {
    fn start(stream: &str, table: &str, id: &str, extra: &[&str], dynamo: Option<&str>) -> Worker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kinesin"));
        cmd.args([
            "consume",
            "--stream",
            stream,
            "--lease-table",
            table,
            "--create-table",
            "--worker-id",
            id,
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        if let Some(url) = dynamo {
            cmd.env("AWS_ENDPOINT_URL_DYNAMODB", url);
        }
        Worker(cmd.spawn().expect("starting kinesin consume"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path`: (status code, body), or None if the server does not answer.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// The shard labels of the lag series in a scrape.
fn lag_shards(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| l.starts_with("kinesin_shard_millis_behind_latest{"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("shard=\"")?;
            Some(rest.split('"').next()?.to_owned())
        })
        .collect()
}

/// The value of the sample line starting with `prefix` (name and labels).
fn sample(body: &str, prefix: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix}in\n{body}"))
        .parse()
        .unwrap_or_else(|e| panic!("{prefix}: {e}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn metrics_show_lag_per_held_shard_drop_handed_off_series_and_health_fails_without_the_table() {
    emulator_env();
    let dynamo = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stream = format!("kt-metrics-{}-{nanos}", std::process::id());
    let table = format!("{stream}-leases");
    let o = kinesin(&[
        "produce", "--stream", &stream, "--create", "--shards", "2", "--count", "40",
    ]);
    assert!(
        o.status.success(),
        "produce: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let proxy = Proxy::start(&dynamo);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _a = Worker::start(
        &stream,
        &table,
        "metrics-a",
        &["--metrics-addr", &addr],
        Some(&format!("http://127.0.0.1:{}", proxy.port)),
    );

    // Alone, worker a holds both shards: a lag series for each.
    let body = wait_for("a lag series for both shards", 90, || {
        let (code, body) = get(port, "/metrics")?;
        assert_eq!(code, 200, "{body}");
        (lag_shards(&body).len() == 2).then_some(body)
    });
    assert!(body.contains("kinesin_leases_held 2"), "{body}");
    assert!(
        body.contains("stream=\"arn:aws:kinesis:"),
        "series carry the stream label: {body}"
    );
    let both = lag_shards(&body);
    // Ages and latencies of a working worker: a recent heartbeat, a
    // checkpoint age per held shard, lease-table calls timed.
    let heartbeat: f64 = sample(&body, "kinesin_heartbeat_age_seconds ");
    assert!((0.0..10.0).contains(&heartbeat), "{body}");
    assert_eq!(
        body.lines()
            .filter(|l| l.starts_with("kinesin_shard_checkpoint_age_seconds{"))
            .count(),
        2,
        "{body}"
    );
    assert!(
        sample(
            &body,
            "kinesin_call_duration_seconds_count{api=\"ReadLeases\"} "
        ) >= 1.0
    );
    let (code, health) = get(port, "/healthz").expect("/healthz answers");
    assert_eq!((code, health.as_str()), (200, "ready\n"));

    // A second worker joins: one shard is handed to it, and its series
    // leaves a's scrape.
    let _b = Worker::start(&stream, &table, "metrics-b", &[], None);
    let body = wait_for("one shard handed off to worker b", 120, || {
        let (_, body) = get(port, "/metrics")?;
        (lag_shards(&body).len() == 1).then_some(body)
    });
    let kept = lag_shards(&body);
    let gone: Vec<&String> = both.difference(&kept).collect();
    assert_eq!(gone.len(), 1, "{body}");
    assert!(
        !body.contains(gone[0].as_str()),
        "no series of {} left: {body}",
        gone[0]
    );
    assert!(body.contains("kinesin_leases_held 1"), "{body}");
    // By now `kinesin consume` has flushed and acked batches.
    assert!(
        sample(&body, "kinesin_batch_ack_seconds_count ") >= 1.0,
        "{body}"
    );
    assert!(
        body.contains("kinesin_leases_lost_total{reason=\"handed_off\"} 1"),
        "{body}"
    );
    let (code, _) = get(port, "/healthz").unwrap();
    assert_eq!(code, 200);

    // The lease table becomes unreachable for worker a: /healthz fails,
    // naming it, once the failover time (10 s) has passed.
    let cut_at = Instant::now();
    proxy.cut();
    let why = wait_for(
        "/healthz failing with the lease table unreachable",
        60,
        || {
            let (code, body) = get(port, "/healthz")?;
            (code == 503 && body.contains("lease table unreachable")).then_some(body)
        },
    );
    assert!(
        cut_at.elapsed() >= Duration::from_secs(9),
        "failing only after the failover time: {why}"
    );
    assert!(why.starts_with("failing: "), "{why}");
}
