//! Health: whether the worker has been failing for a while with an error
//! that retrying cannot fix, so an application can see it instead of a
//! fleet that stops consuming while looking alive.
//!
//! Models: per service (Kinesis, DynamoDB), the instant since which every
//! answer that said anything about access was [`ErrorClass::AccessDenied`]
//! (expired or missing credentials, AccessDenied, a KMS key the role may
//! not use, a bad signature: the AWS error codes the runtime maps to that
//! class). Those calls are still retried for ever (credentials may be
//! refreshed, a policy fixed), but past `unhealthy_after`
//! ([`crate::config::Config::unhealthy_after`], 60 s by default) the worker
//! is [`Health::Failing`] and says so once with [`crate::io::Event::Health`].
//!
//! Rules: only a successful answer of the same service ends a failing
//! spell (a timeout or a throttle says nothing about access); the state is
//! judged when answers arrive, which a failing worker keeps getting (its
//! retries back off to at most 5 s), so the change is reported within one
//! retry of the deadline.
//!
//! Invariants: a change of state is reported exactly once; no clock is
//! read (instants come from the caller).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::io::{ErrorClass, Input};

/// The AWS service an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    /// Kinesis Data Streams.
    Kinesis,
    /// DynamoDB (the lease table).
    DynamoDb,
}

impl Service {
    /// The service `input` answers for.
    pub fn of(input: &Input) -> Service {
        match input {
            Input::Leases { .. }
            | Input::LeaseWritten { .. }
            | Input::Heartbeats { .. }
            | Input::HeartbeatWritten { .. }
            | Input::LeaseDeleted { .. }
            | Input::HeartbeatDeleted { .. } => Service::DynamoDb,
            _ => Service::Kinesis,
        }
    }
}

/// The worker's health as the application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Nothing has failed for long with an error retrying cannot fix.
    Healthy,
    /// Every call to `service` that got an answer about access since
    /// `since` was refused with `class`, for at least `unhealthy_after`.
    Failing {
        /// Which service.
        service: Service,
        /// How (always [`ErrorClass::AccessDenied`] today).
        class: ErrorClass,
        /// The first refusal of the spell.
        since: Instant,
    },
}

impl Health {
    /// What to tell the operator.
    pub fn message(&self, now: Instant) -> String {
        match self {
            Health::Healthy => "healthy again: calls succeed".to_owned(),
            Health::Failing {
                service,
                class,
                since,
            } => format!(
                "every {service:?} call has been refused ({class:?}) for {} s: check the \
                 credentials, the IAM policy and the KMS key policy (records are not being \
                 consumed; calls are still retried)",
                now.saturating_duration_since(*since).as_secs()
            ),
        }
    }
}

/// The refusal spells per service and the state last reported.
#[derive(Debug)]
pub(crate) struct HealthTracker {
    after: Duration,
    since: BTreeMap<Service, Instant>,
    reported: Health,
}

impl HealthTracker {
    pub(crate) fn new(after: Duration) -> Self {
        HealthTracker {
            after,
            since: BTreeMap::new(),
            reported: Health::Healthy,
        }
    }

    /// The state at `now`.
    pub(crate) fn health(&self, now: Instant) -> Health {
        self.since
            .iter()
            .filter(|(_, &t)| now >= t + self.after)
            .min_by_key(|(_, &t)| t)
            .map_or(Health::Healthy, |(&service, &since)| Health::Failing {
                service,
                class: ErrorClass::AccessDenied,
                since,
            })
    }

    /// An answer arrived at `now`: the new state when it changed since the
    /// last one reported.
    pub(crate) fn observe(&mut self, now: Instant, input: &Input) -> Option<Health> {
        let service = Service::of(input);
        match outcome(input) {
            Some(Ok(())) => {
                self.since.remove(&service);
            }
            Some(Err(ErrorClass::AccessDenied)) => {
                self.since.entry(service).or_insert(now);
            }
            _ => {}
        }
        let state = self.health(now);
        let changed = std::mem::discriminant(&state) != std::mem::discriminant(&self.reported);
        if changed {
            self.reported = state.clone();
            return Some(state);
        }
        None
    }
}

/// Whether an answer succeeded (`Ok`), failed with a class, or is neither
/// (`None`: a subscription's normal end carries no verdict about access).
fn outcome(input: &Input) -> Option<Result<(), ErrorClass>> {
    fn of<T>(r: &Result<T, ErrorClass>) -> Option<Result<(), ErrorClass>> {
        Some(r.as_ref().map(|_| ()).map_err(|c| *c))
    }
    match input {
        Input::Shards { result, .. } => of(result),
        Input::Consumer { result, .. } => of(result),
        Input::SubscriptionEvent { .. } => Some(Ok(())),
        Input::SubscriptionEnded { .. } => None,
        Input::SubscriptionError { class, .. } => Some(Err(*class)),
        Input::Iterator { result, .. } => of(result),
        Input::Records { result, .. } => of(result),
        Input::Leases { result, .. } => of(result),
        Input::LeaseWritten { result, .. } => of(result),
        Input::Heartbeats { result, .. } => of(result),
        Input::HeartbeatWritten { result, .. } => of(result),
        Input::LeaseDeleted { result, .. } => of(result),
        Input::HeartbeatDeleted { result, .. } => of(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OpId;

    fn shards(op: u64, result: Result<(), ErrorClass>) -> Input {
        Input::Shards {
            op: OpId::from_raw(op),
            result: result.map(|()| Vec::new()),
        }
    }

    fn beat(op: u64, result: Result<(), ErrorClass>) -> Input {
        Input::HeartbeatWritten {
            op: OpId::from_raw(op),
            result,
        }
    }

    #[test]
    fn refusals_for_longer_than_the_limit_make_the_worker_failing_once() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs;
        let mut h = HealthTracker::new(s(60));
        let denied = Err(ErrorClass::AccessDenied);
        assert_eq!(h.observe(t0, &shards(1, denied)), None);
        // A timeout says nothing about access: the spell goes on.
        assert_eq!(
            h.observe(t0 + s(30), &shards(2, Err(ErrorClass::Transient))),
            None
        );
        // The other service succeeding does not end it either.
        assert_eq!(h.observe(t0 + s(40), &beat(3, Ok(()))), None);
        assert_eq!(h.health(t0 + s(59)), Health::Healthy);
        let failing = Health::Failing {
            service: Service::Kinesis,
            class: ErrorClass::AccessDenied,
            since: t0,
        };
        assert_eq!(
            h.observe(t0 + s(61), &shards(4, denied)),
            Some(failing.clone())
        );
        assert_eq!(
            h.observe(t0 + s(65), &shards(5, denied)),
            None,
            "reported once"
        );
        assert_eq!(h.health(t0 + s(65)), failing);
        assert!(failing.message(t0 + s(65)).contains("65 s"));
        // A success of the failing service ends it, and says so.
        assert_eq!(
            h.observe(t0 + s(70), &shards(6, Ok(()))),
            Some(Health::Healthy)
        );
        assert_eq!(h.health(t0 + s(70)), Health::Healthy);
    }

    #[test]
    fn refusals_interleaved_with_successes_are_healthy() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs;
        let mut h = HealthTracker::new(s(60));
        for i in 0..100 {
            let r = if i % 2 == 0 {
                Err(ErrorClass::AccessDenied)
            } else {
                Ok(())
            };
            assert_eq!(h.observe(t0 + s(i), &beat(i, r)), None);
        }
        assert_eq!(h.health(t0 + s(100)), Health::Healthy);
    }
}
