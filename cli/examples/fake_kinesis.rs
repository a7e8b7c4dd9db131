//! A fake Kinesis endpoint for the cold-start memory benchmark
//! (`scripts/bench.sh memory-cold`): every shard of its one stream holds an
//! endless backlog, and every GetRecords is answered with as many records
//! as its `Limit` asks, up to what AWS allows in one answer (10,000 records
//! or 10 MiB of data), so a consumer that asks for full pages gets 10 MiB
//! per shard read. kinesis-mock cannot serve such answers (it slows down
//! linearly with the records in a shard), so the consumer's reads in
//! flight were never tested at full size against it.
//!
//! ```text
//! cargo run --release -p kinesin-cli --example fake_kinesis -- \
//!     --shards 1000 [--record-size 1000] [--port 0]
//! ```
//!
//! Prints `listening on http://127.0.0.1:PORT` on stdout once it accepts
//! connections, then serves until killed. Point a consumer at it with
//! `AWS_ENDPOINT_URL_KINESIS` and a local lease store (no DynamoDB here).
//!
//! What it answers (awsJson1.1 over plain HTTP/1.1, keep-alive, one thread
//! per connection, std sockets only): DescribeStreamSummary, ListShards (one
//! page, shards `shardId-000000000000`.. with equal hash ranges),
//! GetShardIterator (any type; `AFTER_SEQUENCE_NUMBER` and
//! `AT_SEQUENCE_NUMBER` resume after / at that record, the others start at
//! the first record) and GetRecords. Anything else is a 400
//! `InvalidArgumentException` naming the operation. Records are synthetic:
//! `--record-size` bytes of the same data, partition key `pk<n>`,
//! sequence numbers increasing per shard; `MillisBehindLatest` is always
//! one hour (the backlog never ends). Requests are not authenticated.
//! Every 5 s it prints on stderr what it served (GetRecords answered,
//! records, the largest `Limit` asked and answer sent, connections open);
//! `FAKE_KINESIS_TRACE=1` also prints every GetRecords' shard, position and
//! `Limit`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

/// AWS's ceiling on one GetRecords answer.
const MAX_RECORDS: u64 = 10_000;
const MAX_BYTES: u64 = 10 * 1024 * 1024;
const STREAM: &str = "bench";
const ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/bench";

/// GetRecords answered, records and bytes of data served, the largest
/// Limit asked, the largest answer sent (bytes of JSON), connections open.
static CALLS: AtomicU64 = AtomicU64::new(0);
static RECORDS: AtomicU64 = AtomicU64::new(0);
static MAX_LIMIT: AtomicU64 = AtomicU64::new(0);
static MAX_ANSWER: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicU64 = AtomicU64::new(0);

struct Stream {
    shards: u32,
    record_size: u64,
    /// The JSON string (quoted, base64) every record's Data is.
    data_json: String,
}

fn main() -> Result<()> {
    let (mut shards, mut record_size, mut port) = (200u32, 1000u64, 0u16);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--shards" => shards = val()?.parse().context("--shards: a number")?,
            "--record-size" => record_size = val()?.parse().context("--record-size: a number")?,
            "--port" => port = val()?.parse().context("--port: a number")?,
            other => bail!("unknown argument {other} (--shards N --record-size BYTES --port P)"),
        }
    }
    if shards == 0 || record_size == 0 || record_size > 1024 * 1024 {
        bail!("--shards must be > 0 and --record-size 1..=1048576");
    }
    let data = vec![b'x'; record_size as usize];
    let stream = Arc::new(Stream {
        shards,
        record_size,
        data_json: format!(
            "\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(&data)
        ),
    });
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    // What was served, on stderr every 5 s.
    std::thread::spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        eprintln!(
            "fake_kinesis: {} GetRecords, {} records served, largest Limit asked {}, largest answer {} bytes, {} connections open",
            CALLS.load(Ordering::Relaxed),
            RECORDS.load(Ordering::Relaxed),
            MAX_LIMIT.load(Ordering::Relaxed),
            MAX_ANSWER.load(Ordering::Relaxed),
            OPEN.load(Ordering::Relaxed),
        );
    });
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let stream = stream.clone();
        std::thread::spawn(move || {
            OPEN.fetch_add(1, Ordering::Relaxed);
            let _ = serve(conn, &stream);
            OPEN.fetch_sub(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

/// Answer requests on one connection until the client closes it.
fn serve(conn: TcpStream, stream: &Stream) -> Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut length, mut target) = (0usize, String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().context("content-length")?,
                    "x-amz-target" => target = value.to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let op = target.rsplit('.').next().unwrap_or("");
        let (status, answer) = match answer(op, &request, stream) {
            Ok(a) => (200, a),
            Err(e) => (
                400,
                json!({"__type": "InvalidArgumentException", "message": e.to_string()}).to_string(),
            ),
        };
        write!(
            out,
            "HTTP/1.1 {status} {}\r\ncontent-type: application/x-amz-json-1.1\r\n\
             content-length: {}\r\nx-amzn-requestid: fake\r\n\r\n",
            if status == 200 { "OK" } else { "Bad Request" },
            answer.len()
        )?;
        out.write_all(answer.as_bytes())?;
        out.flush()?;
    }
}

fn answer(op: &str, req: &Value, s: &Stream) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(match op {
        "DescribeStreamSummary" => json!({"StreamDescriptionSummary": {
            "StreamName": STREAM, "StreamARN": ARN, "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "RetentionPeriodHours": 24, "StreamCreationTimestamp": now - 3600,
            "EnhancedMonitoring": [], "EncryptionType": "NONE",
            "OpenShardCount": s.shards, "ConsumerCount": 0}})
        .to_string(),
        "ListShards" => {
            let width = u128::MAX / u128::from(s.shards);
            let shards: Vec<Value> = (0..s.shards)
                .map(|i| {
                    let start = width * u128::from(i);
                    let end = if i + 1 == s.shards {
                        u128::MAX
                    } else {
                        start + width - 1
                    };
                    json!({"ShardId": shard_id(i),
                        "HashKeyRange": {"StartingHashKey": start.to_string(),
                                         "EndingHashKey": end.to_string()},
                        "SequenceNumberRange": {"StartingSequenceNumber": seq(i, 0)}})
                })
                .collect();
            json!({"Shards": shards}).to_string()
        }
        "GetShardIterator" => {
            let shard = req["ShardId"]
                .as_str()
                .and_then(|id| id.strip_prefix("shardId-"))
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n < s.shards)
                .context("ShardId: no such shard")?;
            let at = |v: &Value| v.as_str().and_then(position_of);
            let pos = match req["ShardIteratorType"].as_str() {
                Some("AFTER_SEQUENCE_NUMBER") => {
                    at(&req["StartingSequenceNumber"]).context("StartingSequenceNumber")? + 1
                }
                Some("AT_SEQUENCE_NUMBER") => {
                    at(&req["StartingSequenceNumber"]).context("StartingSequenceNumber")?
                }
                _ => 0,
            };
            json!({"ShardIterator": format!("it-{shard}-{pos}")}).to_string()
        }
        "GetRecords" => {
            let iterator = req["ShardIterator"].as_str().context("ShardIterator")?;
            let (shard, pos) = iterator
                .strip_prefix("it-")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u64>().ok()?)))
                .context("ShardIterator: not one of ours")?;
            let limit = req["Limit"]
                .as_u64()
                .unwrap_or(MAX_RECORDS)
                .min(MAX_RECORDS);
            MAX_LIMIT.fetch_max(limit, Ordering::Relaxed);
            if std::env::var_os("FAKE_KINESIS_TRACE").is_some() {
                eprintln!(
                    "GetRecords shard {shard} at {pos}, Limit {:?}",
                    req["Limit"]
                );
            }
            let n = limit.min(MAX_BYTES / s.record_size).max(1);
            let mut out = String::with_capacity((n as usize) * (s.data_json.len() + 90) + 100);
            out.push_str("{\"Records\":[");
            for k in 0..n {
                if k > 0 {
                    out.push(',');
                }
                let p = pos + k;
                out.push_str(&format!(
                    "{{\"SequenceNumber\":\"{}\",\"ApproximateArrivalTimestamp\":{},\"PartitionKey\":\"pk{}\",\"Data\":{}}}",
                    seq(shard, p),
                    now - 3600,
                    p % 1000,
                    s.data_json
                ));
            }
            out.push_str(&format!(
                "],\"NextShardIterator\":\"it-{shard}-{}\",\"MillisBehindLatest\":3600000}}",
                pos + n
            ));
            CALLS.fetch_add(1, Ordering::Relaxed);
            RECORDS.fetch_add(n, Ordering::Relaxed);
            MAX_ANSWER.fetch_max(out.len() as u64, Ordering::Relaxed);
            out
        }
        other => bail!("the fake endpoint does not serve {other:?}"),
    })
}

fn shard_id(i: u32) -> String {
    format!("shardId-{i:012}")
}

/// Sequence number of record `pos` of shard `shard`: fixed width, so the
/// numeric and the text order agree.
fn seq(shard: u32, pos: u64) -> String {
    format!("49{shard:08}{pos:020}")
}

fn position_of(seq: &str) -> Option<u64> {
    seq.get(10..)?.parse().ok()
}
