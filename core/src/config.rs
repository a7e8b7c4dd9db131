//! Configuration of a [`crate::worker::Worker`], with the defaults of
//! SPEC.md section 2 (Bento's `aws_kinesis` names where Bento has the field).
//!
//! Models: every knob of the consumer, and its validation. AWS rules
//! encoded: GetRecords takes at most 10,000 records; SubscribeToShard
//! subscriptions last at most 5 minutes, so the backpressure timeout must be
//! below the service's read timeout; leases need a failover time longer than
//! the heartbeat interval plus the self-fence margin.
//!
//! Invariants: a [`Config`] that passed [`Config::validate`] has non-zero
//! budgets and periods and a consistent lease timing; bad values are a
//! [`ConfigError`] naming the field, never a panic.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::ids::{Owner, ShardRef, StreamId};

/// Where to start a shard that has no checkpoint (`start_from_oldest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// TRIM_HORIZON (Bento `start_from_oldest: true`, the default).
    Oldest,
    /// LATEST, anchored once as AT_TIMESTAMP(lease creation time).
    Latest,
    /// AT_TIMESTAMP of this wall-clock time (unix ms).
    Timestamp {
        /// Unix milliseconds.
        unix_ms: u64,
    },
}

/// Which EFO consumer to read through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EfoConsumer {
    /// `enhanced_fan_out.consumer_name`: registered if missing, waited for
    /// until ACTIVE, never deregistered.
    Name(String),
    /// `enhanced_fan_out.consumer_arn`: an existing consumer (waited for
    /// until ACTIVE). Exclusive with a name.
    Arn(String),
}

/// Polling (GetRecords) or Enhanced Fan-Out (SubscribeToShard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retrieval {
    /// GetRecords.
    Polling {
        /// Wait after an empty GetRecords before the next one (default 1 s).
        idle_interval: Duration,
        /// Minimum time between two GetRecords of one shard (AWS: 5 calls/s
        /// per shard; default 200 ms).
        min_interval: Duration,
        /// GetRecords Limit upper bound (AWS max 10,000).
        max_records: u32,
    },
    /// Enhanced Fan-Out.
    Efo {
        /// The consumer.
        consumer: EfoConsumer,
    },
}

impl Retrieval {
    /// Polling with the default intervals.
    pub fn polling() -> Self {
        Retrieval::Polling {
            idle_interval: Duration::from_secs(1),
            min_interval: Duration::from_millis(200),
            max_records: 10_000,
        }
    }
}

/// Batching policy: a batch closes at `count` records or `byte_size` bytes,
/// or when `period` passed since its first record (on an idle shard too).
///
/// The default is [`Batching::whole_read`]: a batch is what one read
/// brought in (as KCL's `processRecords`), bounded by `checkpoint_limit`,
/// so a library user pays one batch per read, not per record.
/// [`Batching::bento`] is Bento's one-record default, which a Bento config's
/// `batching` block keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Max records per batch (`u32::MAX`: what one read brought in).
    pub count: u32,
    /// Max bytes per batch (0 = no byte limit).
    pub byte_size: u64,
    /// Flush a partial batch after this long (None = deliver what is there
    /// as soon as the chunk arrives).
    pub period: Option<Duration>,
}

impl Batching {
    /// A batch is what one read brought in (bounded by `checkpoint_limit`).
    pub const fn whole_read() -> Self {
        Batching {
            count: u32::MAX,
            byte_size: 0,
            period: None,
        }
    }

    /// Bento's default: one record per batch.
    pub const fn bento() -> Self {
        Batching {
            count: 1,
            byte_size: 0,
            period: None,
        }
    }
}

impl Default for Batching {
    fn default() -> Self {
        Batching::whole_read()
    }
}

/// Poison records: what happens to a batch the application nacks again
/// and again. The default is today's at-least-once rule: redelivered at
/// once, with no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Redelivery {
    /// Delay before a nacked batch is delivered again, doubled at each
    /// further nack of the same batch up to `backoff_cap` (no jitter).
    /// Zero: at once.
    pub backoff: Duration,
    /// Longest redelivery delay.
    pub backoff_cap: Duration,
    /// `max_deliveries`: a batch nacked after this many deliveries goes to
    /// the dead-letter handler ([`crate::io::Event::DeadLetter`]) instead of
    /// being delivered again; its records are checkpointed once the handler
    /// accepts it (ack). `None`: no limit.
    pub max_deliveries: Option<u32>,
}

impl Redelivery {
    /// Delay before the next offer of a batch nacked `nacks` times (1 for
    /// the first nack): `backoff * 2^(nacks-1)`, at most `backoff_cap`.
    pub fn delay(&self, nacks: u32) -> Duration {
        let factor = 1u32
            .checked_shl(nacks.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.backoff_cap)
    }
}

/// Everything a worker needs to know. Build with [`Config::new`], change
/// fields, then [`Config::validate`] (the worker validates too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `streams`: stream ARNs (or names) to consume.
    pub streams: Vec<StreamId>,
    /// Bento's explicit shards (`stream:shard`): when not empty, this
    /// worker takes only these shards' leases, every one that is free or
    /// expired, whatever the number of workers, and asks no hand-off (no
    /// balancing); checkpoints work as usual. Their streams must be in
    /// `streams`. Empty (the default): every shard is balanced.
    pub explicit_shards: BTreeSet<ShardRef>,
    /// This process as a lease owner (worker id + incarnation).
    pub owner: Owner,
    /// Seed of every random choice (backoff jitter).
    pub seed: u64,
    /// Polling or EFO.
    pub retrieval: Retrieval,
    /// `start_from_oldest` and friends.
    pub start_from: StartFrom,
    /// `checkpoint_limit`: max unacknowledged records per shard.
    pub checkpoint_limit: u32,
    /// `commit_period`: how often progressed checkpoints are written.
    pub commit_period: Duration,
    /// Failover time F: a lease whose owner's heartbeat did not change for F
    /// (on the observer's clock) is expired.
    pub failover_time: Duration,
    /// Heartbeat renew interval (default F/3).
    pub heartbeat_interval: Duration,
    /// Heartbeat rows read interval (default 1 s).
    pub heartbeat_read_interval: Duration,
    /// A worker stops delivering and checkpointing once it could not renew
    /// its heartbeat for F minus this margin (clock-rate drift cover).
    pub self_fence_margin: Duration,
    /// `rebalance_period`: balancing pass interval (lease rows read).
    pub rebalance_period: Duration,
    /// ListShards interval (new shards, closed shards).
    pub shard_sync_period: Duration,
    /// How long an owner waits for in-flight acks before a graceful
    /// hand-off; the taker forces the take after twice this.
    pub handoff_timeout: Duration,
    /// EFO: past this long without credit, a subscription is cancelled and
    /// resumed later from the last delivered record.
    pub backpressure_timeout: Duration,
    /// EFO: a subscription with a read outstanding that brings no event for
    /// this long is cancelled and resubscribed from the last continuation,
    /// counting as a transient error (AWS sends an event at least every 5 s,
    /// even an empty one, so silence means a half-open connection).
    pub subscription_idle_timeout: Duration,
    /// At most this many lease writes in flight before a checkpoint write
    /// waits (a waiting shard keeps only its newest checkpoint): a commit
    /// tick at 1,000 shards does not send 1,000 UpdateItems at once.
    /// Takes, creates and final writes are not held back (they change
    /// ownership); heartbeats are never counted.
    pub max_lease_writes_in_flight: usize,
    /// At most this many Kinesis polling calls (GetShardIterator and
    /// GetRecords) in flight; past it, calls wait in the order they were
    /// made (a FIFO queue in the worker) and are sent as answers return.
    /// Each call in flight holds a connection and, for GetRecords, an
    /// answer being decoded: a cold start at 1,000 shards does not open
    /// 1,000 connections at once (`scripts/bench.sh memory-cold`). A call
    /// waiting keeps its pool reservation; the driver's call deadline
    /// starts when it is sent. EFO subscriptions are not counted.
    pub max_read_calls_in_flight: usize,
    /// Past this long with every call to a service refused with an error
    /// retrying cannot fix (credentials, access, KMS), the worker is
    /// [`crate::health::Health::Failing`] and says so with
    /// [`crate::io::Event::Health`] (calls are still retried).
    pub unhealthy_after: Duration,
    /// `max_pending_records`: global budget of received records not yet
    /// acknowledged.
    pub pool_records: u64,
    /// Global byte budget of the same.
    pub pool_bytes: u64,
    /// Batching policy.
    pub batching: Batching,
    /// Redelivery backoff and `max_deliveries` (poison records).
    pub redelivery: Redelivery,
    /// Shutdown: how long to wait for in-flight acks.
    pub shutdown_timeout: Duration,
    /// EFO registration: give up waiting for ACTIVE after this long.
    pub consumer_active_timeout: Duration,
    /// EFO registration: DescribeStreamConsumer interval while CREATING.
    pub consumer_describe_interval: Duration,
}

impl Config {
    /// Defaults of SPEC.md for these streams and this worker.
    pub fn new(streams: Vec<StreamId>, owner: Owner, retrieval: Retrieval) -> Self {
        let failover_time = Duration::from_secs(10);
        Config {
            streams,
            explicit_shards: BTreeSet::new(),
            owner,
            seed: 0,
            retrieval,
            start_from: StartFrom::Oldest,
            checkpoint_limit: 1024,
            commit_period: Duration::from_secs(5),
            failover_time,
            heartbeat_interval: failover_time / 3,
            heartbeat_read_interval: Duration::from_secs(1),
            self_fence_margin: failover_time / 10,
            rebalance_period: Duration::from_secs(30),
            shard_sync_period: Duration::from_secs(60),
            handoff_timeout: Duration::from_secs(10),
            backpressure_timeout: Duration::from_secs(30),
            subscription_idle_timeout: Duration::from_secs(30),
            max_lease_writes_in_flight: 64,
            max_read_calls_in_flight: 64,
            unhealthy_after: Duration::from_secs(60),
            pool_records: 50_000,
            pool_bytes: 64 * 1024 * 1024,
            batching: Batching::default(),
            redelivery: Redelivery::default(),
            shutdown_timeout: Duration::from_secs(10),
            consumer_active_timeout: Duration::from_secs(120),
            consumer_describe_interval: Duration::from_secs(2),
        }
    }

    /// Set the failover time and the values derived from it (heartbeat
    /// interval F/3, self-fence margin F/10).
    pub fn with_failover_time(mut self, failover_time: Duration) -> Self {
        self.failover_time = failover_time;
        self.heartbeat_interval = failover_time / 3;
        self.self_fence_margin = failover_time / 10;
        self
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError { field, reason });
        if self.streams.is_empty() {
            return bad("streams", "at least one stream is required".into());
        }
        if let Some(s) = self.streams.iter().find(|s| s.as_str().trim().is_empty()) {
            return bad("streams", format!("empty stream name {:?}", s.as_str()));
        }
        if let Some(s) = self
            .explicit_shards
            .iter()
            .find(|s| !self.streams.contains(&s.stream))
        {
            return bad(
                "streams",
                format!(
                    "explicit shard {} of stream {} whose stream is not consumed",
                    s.shard, s.stream
                ),
            );
        }
        if self.owner.worker.is_empty() {
            return bad("worker_id", "must not be empty".into());
        }
        if self.checkpoint_limit == 0 {
            return bad("checkpoint_limit", "must be at least 1".into());
        }
        let nonzero = [
            ("commit_period", self.commit_period),
            ("failover_time", self.failover_time),
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_read_interval", self.heartbeat_read_interval),
            ("rebalance_period", self.rebalance_period),
            ("shard_sync_period", self.shard_sync_period),
            ("handoff_timeout", self.handoff_timeout),
            ("backpressure_timeout", self.backpressure_timeout),
            ("subscription_idle_timeout", self.subscription_idle_timeout),
            ("unhealthy_after", self.unhealthy_after),
            (
                "consumer_describe_interval",
                self.consumer_describe_interval,
            ),
        ];
        for (field, d) in nonzero {
            if d.is_zero() {
                return bad(field, "must be greater than zero".into());
            }
        }
        let heartbeat_and_margin = self.heartbeat_interval.checked_add(self.self_fence_margin);
        if heartbeat_and_margin.is_none_or(|sum| sum >= self.failover_time) {
            return bad(
                "heartbeat_interval",
                format!(
                    "heartbeat_interval ({:?}) plus self_fence_margin ({:?}) must be below failover_time ({:?})",
                    self.heartbeat_interval, self.self_fence_margin, self.failover_time
                ),
            );
        }
        if self.heartbeat_read_interval >= self.failover_time {
            return bad(
                "heartbeat_read_interval",
                "must be below failover_time".into(),
            );
        }
        if self.max_lease_writes_in_flight == 0 {
            return bad(
                "max_lease_writes_in_flight",
                "must be at least 1 (checkpoints would never be written)".into(),
            );
        }
        if self.max_read_calls_in_flight == 0 {
            return bad(
                "max_read_calls_in_flight",
                "must be at least 1 (no shard would ever be read)".into(),
            );
        }
        if self.pool_records == 0 {
            return bad(
                "enhanced_fan_out.max_pending_records",
                "must be at least 1".into(),
            );
        }
        if self.pool_bytes == 0 {
            return bad("pool_bytes", "must be at least 1".into());
        }
        if self.batching.count == 0 {
            return bad("batching.count", "must be at least 1".into());
        }
        if self.redelivery.max_deliveries == Some(0) {
            return bad(
                "max_deliveries",
                "must be at least 1 (leave it unset for no limit)".into(),
            );
        }
        if self.redelivery.backoff_cap < self.redelivery.backoff {
            return bad(
                "redelivery_backoff",
                format!(
                    "the cap ({:?}) must not be below the first delay ({:?})",
                    self.redelivery.backoff_cap, self.redelivery.backoff
                ),
            );
        }
        if self.batching.period.is_some_and(|p| p.is_zero()) {
            return bad("batching.period", "must be greater than zero".into());
        }
        match &self.retrieval {
            Retrieval::Polling {
                max_records,
                idle_interval,
                ..
            } => {
                if !(1..=10_000).contains(max_records) {
                    return bad(
                        "max_records",
                        format!("{max_records} is outside 1..=10000 (the GetRecords limit)"),
                    );
                }
                if idle_interval.is_zero() {
                    return bad("idle_interval", "must be greater than zero".into());
                }
            }
            Retrieval::Efo { consumer } => {
                let (field, v) = match consumer {
                    EfoConsumer::Name(n) => ("enhanced_fan_out.consumer_name", n),
                    EfoConsumer::Arn(a) => ("enhanced_fan_out.consumer_arn", a),
                };
                if v.trim().is_empty() {
                    return bad(field, "must not be empty".into());
                }
                if let EfoConsumer::Name(n) = consumer {
                    let ok = n.len() <= 128
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                    if !ok {
                        return bad(
                            field,
                            format!("{n:?}: use 1-128 characters of [a-zA-Z0-9_.-]"),
                        );
                    }
                }
                if self.backpressure_timeout >= Duration::from_secs(300) {
                    return bad(
                        "backpressure_timeout",
                        "must be below the 5-minute subscription lifetime".into(),
                    );
                }
                if self.subscription_idle_timeout < Duration::from_secs(10)
                    || self.subscription_idle_timeout >= Duration::from_secs(300)
                {
                    return bad(
                        "subscription_idle_timeout",
                        "must be at least 10 s (AWS sends an event every 5 s) and below the 5-minute subscription lifetime".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A configuration value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{field}`: {reason}")]
pub struct ConfigError {
    /// The field, with its Bento name where Bento has it.
    pub field: &'static str,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::new(
            vec![StreamId::new("orders")],
            Owner::new("w", 1),
            Retrieval::polling(),
        )
    }

    #[test]
    fn redelivery_delay_doubles_per_nack_up_to_the_cap_and_zero_max_deliveries_is_refused() {
        let r = Redelivery {
            backoff: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(700),
            max_deliveries: Some(3),
        };
        let delays: Vec<u128> = (1..=5).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 700, 700]);
        assert_eq!(r.delay(u32::MAX), Duration::from_millis(700));
        assert_eq!(Redelivery::default().delay(9), Duration::ZERO);
        let mut c = cfg();
        c.redelivery = r;
        c.validate().unwrap();
        c.redelivery.max_deliveries = Some(0);
        assert_eq!(c.validate().unwrap_err().field, "max_deliveries");
        c.redelivery.max_deliveries = None;
        c.redelivery.backoff_cap = Duration::from_millis(50);
        assert_eq!(c.validate().unwrap_err().field, "redelivery_backoff");
    }

    #[test]
    fn defaults_are_valid() {
        cfg().validate().unwrap();
        let mut c = cfg();
        c.retrieval = Retrieval::Efo {
            consumer: EfoConsumer::Name("app".into()),
        };
        c.validate().unwrap();
    }

    #[test]
    fn bad_config_error_names_the_field() {
        let mut c = cfg();
        c.checkpoint_limit = 0;
        assert_eq!(c.validate().unwrap_err().field, "checkpoint_limit");
        let mut c = cfg();
        c.streams.clear();
        assert_eq!(c.validate().unwrap_err().field, "streams");
        let mut c = cfg();
        c.retrieval = Retrieval::Efo {
            consumer: EfoConsumer::Name("bad name!".into()),
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "enhanced_fan_out.consumer_name");
        assert!(e.to_string().contains("enhanced_fan_out.consumer_name"));
    }

    #[test]
    fn heartbeat_must_fit_inside_failover_time() {
        let mut c = cfg();
        c.heartbeat_interval = Duration::from_secs(10);
        assert_eq!(c.validate().unwrap_err().field, "heartbeat_interval");
    }

    #[test]
    fn huge_heartbeat_plus_margin_is_an_error_not_a_panic() {
        // Found by fuzz target `config` (fuzz/regressions/config/
        // validate-duration-add-overflow): the sum overflowed Duration.
        let mut c = cfg();
        c.heartbeat_interval = Duration::MAX;
        c.self_fence_margin = Duration::from_secs(1);
        c.failover_time = Duration::MAX;
        assert_eq!(c.validate().unwrap_err().field, "heartbeat_interval");
    }

    #[test]
    fn failover_time_derives_heartbeat_and_margin() {
        let c = cfg().with_failover_time(Duration::from_secs(30));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.self_fence_margin, Duration::from_secs(3));
    }
}
