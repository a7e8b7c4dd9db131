//! `--config FILE`: YAML with the field names of Bento's `aws_kinesis`
//! input, plus a few kinesin settings. Unknown fields are an error naming
//! them; every value is checked before any network call.
//!
//! ```yaml
//! streams: [orders]                 # names or ARNs
//! dynamodb:
//!   table: orders-leases            # fleet mode (else a local store)
//!   create: false                   # create the table if missing
//! checkpoint_limit: 1024            # max unacknowledged records per shard
//! commit_period: 5s                 # checkpoint write interval
//! rebalance_period: 30s             # balancing pass interval
//! lease_period: 10s                 # failover time (heartbeat every third)
//! start_from_oldest: true           # false: latest
//! enhanced_fan_out:
//!   enabled: false
//!   consumer_name: ""               # or consumer_arn
//!   consumer_arn: ""
//!   max_pending_records: 50000      # global budget of unacknowledged records
//! batching:
//!   count: 500
//!   byte_size: 0
//!   period: ""
//! region: us-east-1                 # else from the AWS environment
//! # kinesin settings (no Bento equivalent):
//! shard_sync_period: 60s            # ListShards interval (resharding)
//! shutdown_timeout: 10s             # wait for in-flight acks at shutdown
//! max_pending_bytes: 67108864       # global budget in bytes
//! ```

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

/// A command-line usage error (exit code 2, like clap's).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// Where a shard without a checkpoint starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// TRIM_HORIZON.
    Oldest,
    /// LATEST (anchored at lease creation).
    Latest,
    /// AT_TIMESTAMP.
    At(SystemTime),
}

/// `--start` parser: oldest, latest or RFC 3339.
pub fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "oldest" => Ok(Start::Oldest),
        "latest" => Ok(Start::Latest),
        _ => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| Start::At(t.into()))
            .map_err(|e| {
                format!(
                    "expected oldest, latest or an RFC 3339 timestamp such as \
                     2025-11-25T17:00:00Z ({e})"
                )
            }),
    }
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default)]
    pub dynamodb: Option<DynamoSection>,
    pub checkpoint_limit: Option<u32>,
    pub commit_period: Option<String>,
    pub rebalance_period: Option<String>,
    pub lease_period: Option<String>,
    pub start_from_oldest: Option<bool>,
    #[serde(default)]
    pub enhanced_fan_out: Option<EfoSection>,
    #[serde(default)]
    pub batching: Option<BatchingSection>,
    pub region: Option<String>,
    pub shard_sync_period: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub max_pending_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoSection {
    #[serde(default)]
    pub table: String,
    #[serde(default)]
    pub create: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfoSection {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub consumer_name: String,
    #[serde(default)]
    pub consumer_arn: String,
    pub max_pending_records: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSection {
    pub count: Option<u32>,
    pub byte_size: Option<u64>,
    pub period: Option<String>,
}

/// Checked settings, durations parsed.
#[derive(Debug, Default)]
pub struct Settings {
    pub streams: Vec<String>,
    pub table: Option<String>,
    pub create_table: bool,
    pub checkpoint_limit: Option<u32>,
    pub commit_period: Option<Duration>,
    pub rebalance_period: Option<Duration>,
    pub lease_period: Option<Duration>,
    pub start: Option<Start>,
    pub efo_name: Option<String>,
    pub efo_arn: Option<String>,
    pub max_pending_records: Option<u64>,
    pub max_pending_bytes: Option<u64>,
    pub batching: Option<kinesin_tokio::Batching>,
    pub region: Option<String>,
    pub shard_sync_period: Option<Duration>,
    pub shutdown_timeout: Option<Duration>,
}

/// Read and check a config file; errors name the file and the field.
pub fn load(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

/// Parse and check YAML text.
pub fn parse(text: &str) -> Result<Settings> {
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| anyhow!("{e}"))?
    };
    let dur = |field: &str, v: &Option<String>| -> Result<Option<Duration>> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => parse_duration(s)
                .map(Some)
                .map_err(|e| anyhow!("{field}: {e}")),
        }
    };
    let mut s = Settings {
        streams: file.streams,
        checkpoint_limit: file.checkpoint_limit,
        commit_period: dur("commit_period", &file.commit_period)?,
        rebalance_period: dur("rebalance_period", &file.rebalance_period)?,
        lease_period: dur("lease_period", &file.lease_period)?,
        start: file.start_from_oldest.map(
            |oldest| {
                if oldest {
                    Start::Oldest
                } else {
                    Start::Latest
                }
            },
        ),
        region: file.region.filter(|r| !r.is_empty()),
        shard_sync_period: dur("shard_sync_period", &file.shard_sync_period)?,
        shutdown_timeout: dur("shutdown_timeout", &file.shutdown_timeout)?,
        max_pending_bytes: file.max_pending_bytes,
        ..Settings::default()
    };
    if let Some(d) = file.dynamodb {
        if !d.table.trim().is_empty() {
            s.table = Some(d.table);
        } else if d.create {
            return Err(anyhow!("dynamodb.create: true needs dynamodb.table"));
        }
        s.create_table = d.create;
    }
    if let Some(e) = file.enhanced_fan_out {
        s.max_pending_records = e.max_pending_records;
        if e.enabled {
            match (e.consumer_name.is_empty(), e.consumer_arn.is_empty()) {
                (false, false) => {
                    return Err(anyhow!(
                        "enhanced_fan_out.consumer_arn: consumer_name and consumer_arn are both \
                         set; choose one"
                    ))
                }
                (true, true) => {
                    return Err(anyhow!(
                        "enhanced_fan_out.consumer_name: enabled is true but neither \
                         consumer_name nor consumer_arn is set"
                    ))
                }
                (false, true) => s.efo_name = Some(e.consumer_name),
                (true, false) => s.efo_arn = Some(e.consumer_arn),
            }
        }
    }
    if let Some(b) = file.batching {
        // A Bento `batching` block keeps Bento's defaults: one record per
        // batch unless `count` says otherwise; `count: 0` is no count limit.
        let mut batching = kinesin_tokio::Batching::bento();
        if let Some(c) = b.count {
            batching.count = if c == 0 { u32::MAX } else { c };
        }
        if let Some(bs) = b.byte_size {
            batching.byte_size = bs;
        }
        batching.period = dur("batching.period", &b.period)?;
        s.batching = Some(batching);
    }
    Ok(s)
}

/// Go-style durations as Bento writes them: `500ms`, `5s`, `1m30s`, `1.5h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (write e.g. 500ms, 5s, 1m30s)");
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("x5s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse("streams: [a]\nchekpoint_limit: 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("chekpoint_limit"), "{e:#}");
        let e = parse("enhanced_fan_out:\n  enabeld: true\n").unwrap_err();
        assert!(format!("{e:#}").contains("enabeld"), "{e:#}");
    }

    #[test]
    fn bento_fields() {
        let s = parse(
            "streams: [a, b]\ndynamodb:\n  table: t\n  create: true\ncheckpoint_limit: 10\n\
             commit_period: 1s\nlease_period: 3s\nstart_from_oldest: false\n\
             enhanced_fan_out:\n  enabled: true\n  consumer_name: app\n  max_pending_records: 99\n",
        )
        .unwrap();
        assert_eq!(s.streams, ["a", "b"]);
        assert_eq!(s.table.as_deref(), Some("t"));
        assert!(s.create_table);
        assert_eq!(s.checkpoint_limit, Some(10));
        assert_eq!(s.commit_period, Some(Duration::from_secs(1)));
        assert_eq!(s.lease_period, Some(Duration::from_secs(3)));
        assert_eq!(s.start, Some(Start::Latest));
        assert_eq!(s.efo_name.as_deref(), Some("app"));
        assert_eq!(s.max_pending_records, Some(99));
        let e = parse("commit_period: 5x\n").unwrap_err();
        assert!(e.to_string().starts_with("commit_period:"), "{e}");
    }

    #[test]
    fn start_values() {
        assert_eq!(parse_start("oldest"), Ok(Start::Oldest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert!(matches!(
            parse_start("2025-11-25T17:00:00Z"),
            Ok(Start::At(_))
        ));
        assert!(parse_start("yesterday").is_err());
    }
}
