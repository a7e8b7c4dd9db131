//! The CLI's `--config` parser (`cli/src/config.rs`, included as it is)
//! on any bytes: Bento configs, YAML of any shape, huge durations.
//!
//! Checks: parsing never panics (a bad file is an error naming the field);
//! an accepted config has sane values (durations at most Go's ~292 years,
//! explicit shards in `shardId-<digits>` form whose streams are listed, no
//! batching count of 0, PROVISIONED capacity above 0); `parse_duration`
//! never panics and what it accepts is at most the same bound; the
//! interpolation of a text without `${` is the identity.

#[path = "../../cli/src/config.rs"]
#[allow(dead_code)]
pub mod config;

use std::time::Duration;

/// Go's `time.Duration` limit, the bound the parser enforces.
const MAX: Duration = Duration::from_secs(9_200_000_000);

pub fn check_bento_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "SET").then(|| "value: ${SET}".to_owned());
    if let Ok(d) = config::parse_duration(text) {
        assert!(d <= MAX, "{text:?} gave {d:?}");
    }
    if !text.contains("${") {
        assert_eq!(config::interpolate(text, &env).0, text);
    }
    let Ok(s) = config::parse_with_env(text, &env) else {
        return;
    };
    for d in [
        s.commit_period,
        s.rebalance_period,
        s.lease_period,
        s.shard_sync_period,
        s.shutdown_timeout,
    ]
    .into_iter()
    .flatten()
    {
        assert!(d <= MAX, "{d:?}");
    }
    for (stream, shard) in &s.explicit_shards {
        assert!(s.streams.contains(stream), "{stream} not in {:?}", s.streams);
        let digits = shard.strip_prefix("shardId-").expect("shardId- prefix");
        assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    }
    if let Some(b) = &s.batching {
        assert!(b.count >= 1);
        assert!(b.period.is_none_or(|p| !p.is_zero() && p <= MAX));
    }
    if let Some(c) = s.table_capacity {
        assert!(c.read > 0 && c.write > 0);
    }
    assert!(s.checkpoint_limit != Some(0));
}
