//! Enhanced Fan-Out consumer registration: one [`Registration`] per stream
//! read in EFO mode, from RegisterStreamConsumer to an ACTIVE consumer ARN.
//!
//! AWS rules encoded (SPEC sections 1 and 6):
//! - RegisterStreamConsumer answers ResourceInUse when the consumer exists
//!   (another worker registered it): then DescribeStreamConsumer.
//! - A consumer is usable once ACTIVE: check at once, then every
//!   `consumer_describe_interval` (2 s; DescribeStreamConsumer allows 20
//!   calls/s, so the fleet stays far below), for at most
//!   `consumer_active_timeout` (2 min) counted from [`Registration::new`].
//! - DELETING is fatal (someone deregistered the consumer); so are a missing
//!   stream, access denied and an invalid argument, each with a message that
//!   says what to do. Throttling, LimitExceeded (at most 5 consumers CREATING
//!   per stream) and transient errors are retried with the [`Backoff`]
//!   schedule until the timeout.
//! - With `enhanced_fan_out.consumer_arn` nothing is registered: the ARN is
//!   described until ACTIVE.
//! - Consumers are never deregistered (other workers share them); this
//!   machine has no action that could.
//!
//! Invariants: at most one request is in flight; [`Registration::arn`] is
//! `Some` exactly when the consumer was seen ACTIVE; once ACTIVE or failed
//! the machine emits nothing more; cancellation ([`Registration::cancel`])
//! and timeout are distinct errors; answers to requests it no longer waits
//! for are not its own and change nothing.

use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::{Config, EfoConsumer};
use crate::ids::{IdMint, OpId, StreamId};
use crate::io::{Action, ConsumerInfo, ConsumerStatus, ErrorClass, Input};
use crate::rng::Rng;
use crate::shard::at;

/// Why no ACTIVE consumer could be obtained.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// The consumer is being deleted.
    #[error(
        "EFO consumer {consumer} is DELETING (it was deregistered): wait until the deletion \
         finished and restart to register it again, or configure another \
         enhanced_fan_out.consumer_name"
    )]
    Deleting {
        /// Consumer name or ARN.
        consumer: String,
    },
    /// The consumer did not become ACTIVE in time.
    #[error(
        "EFO consumer {consumer} was not ACTIVE after {waited:?}: check it with `aws kinesis \
         describe-stream-consumer` (a stream allows 20 consumers and 5 CREATING at once), or \
         raise consumer_active_timeout"
    )]
    TimedOut {
        /// Consumer name or ARN.
        consumer: String,
        /// How long the registration waited.
        waited: Duration,
    },
    /// The worker stopped waiting (shutdown).
    #[error("waiting for EFO consumer {consumer} to become ACTIVE was cancelled by shutdown")]
    Cancelled {
        /// Consumer name or ARN.
        consumer: String,
    },
    /// A fatal answer from Kinesis.
    #[error("{message}")]
    Failed {
        /// How the call failed.
        class: ErrorClass,
        /// What failed and what to do about it.
        message: String,
    },
}

/// Where the registration is.
#[derive(Clone, Debug)]
enum Step {
    /// RegisterStreamConsumer once `due`.
    Register { due: Instant },
    /// RegisterStreamConsumer in flight.
    Registering { op: OpId },
    /// DescribeStreamConsumer once `due`.
    Describe { due: Instant },
    /// DescribeStreamConsumer in flight.
    Describing { op: OpId },
    /// Seen ACTIVE.
    Active,
    /// Failed, timed out or cancelled (see `error`).
    Done,
}

/// Registration of one stream's EFO consumer. See the module doc.
///
/// Methods by kind: getters ([`arn`](Self::arn), [`error`](Self::error),
/// [`stream`](Self::stream), [`consumer`](Self::consumer),
/// [`state_name`](Self::state_name)); inputs (`handle_input`,
/// `handle_timeout`); command ([`cancel`](Self::cancel)); outputs
/// (`poll_action`, [`poll_timeout`](Self::poll_timeout)).
#[derive(Clone, Debug)]
pub struct Registration {
    stream: StreamId,
    consumer: EfoConsumer,
    describe_interval: Duration,
    started_at: Instant,
    deadline: Instant,
    rng: Rng,
    backoff: Backoff,
    step: Step,
    /// The consumer's ARN once known (configured, or from an answer).
    known_arn: Option<String>,
    error: Option<RegistrationError>,
}

impl Registration {
    /// Start registering (or, with [`EfoConsumer::Arn`], describing) the
    /// consumer of `stream`, with the describe interval and ACTIVE timeout
    /// of `config`.
    pub fn new(
        stream: StreamId,
        consumer: EfoConsumer,
        config: &Config,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        let (step, known_arn) = match &consumer {
            EfoConsumer::Name(_) => (Step::Register { due: now }, None),
            EfoConsumer::Arn(arn) => (Step::Describe { due: now }, Some(arn.clone())),
        };
        Registration {
            stream,
            consumer,
            describe_interval: config.consumer_describe_interval,
            started_at: now,
            deadline: at(now, config.consumer_active_timeout),
            rng: Rng::new(rng_seed),
            backoff: Backoff::new(),
            step,
            known_arn,
            error: None,
        }
    }

    // ----- getters ---------------------------------------------------------

    /// The consumer ARN, once the consumer was seen ACTIVE.
    pub fn arn(&self) -> Option<&str> {
        match self.step {
            Step::Active => self.known_arn.as_deref(),
            _ => None,
        }
    }

    /// Why registration gave up, if it did.
    pub fn error(&self) -> Option<&RegistrationError> {
        self.error.as_ref()
    }

    /// A short name of the state, for traces.
    #[cfg(test)]
    pub fn state_name(&self) -> &'static str {
        match self.step {
            Step::Register { .. } => "register-wait",
            Step::Registering { .. } => "registering",
            Step::Describe { .. } => "describe-wait",
            Step::Describing { .. } => "describing",
            Step::Active => "active",
            Step::Done => "failed",
        }
    }

    // ----- outputs ---------------------------------------------------------

    /// The next request, when due: RegisterConsumer or DescribeConsumer.
    pub(crate) fn poll_action(&mut self, now: Instant, mint: &mut IdMint) -> Option<Action> {
        match self.step {
            Step::Register { due } if due <= now => {
                let name = self.consumer_name();
                let op = mint.op();
                self.step = Step::Registering { op };
                Some(Action::RegisterConsumer {
                    op,
                    stream: self.stream.clone(),
                    name,
                })
            }
            Step::Describe { due } if due <= now => {
                let name = self.consumer_name();
                let op = mint.op();
                self.step = Step::Describing { op };
                Some(Action::DescribeConsumer {
                    op,
                    stream: self.stream.clone(),
                    name,
                    arn: self.known_arn.clone(),
                })
            }
            _ => None,
        }
    }

    /// The next deadline and why: a request becoming due, or the ACTIVE
    /// timeout.
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        let timeout = (self.deadline, "consumer active timeout");
        let request = match self.step {
            Step::Register { due } => (due, "register consumer"),
            Step::Describe { due } => (due, "describe consumer"),
            Step::Registering { .. } | Step::Describing { .. } => timeout,
            Step::Active | Step::Done => return None,
        };
        Some(if request.0 < timeout.0 {
            request
        } else {
            timeout
        })
    }

    // ----- inputs ----------------------------------------------------------

    /// Give up at the ACTIVE timeout. A spurious call is a no-op.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.check_deadline(now);
    }

    /// The answer to our Register/DescribeConsumer in flight. Returns false
    /// for any other input (nothing changes).
    pub(crate) fn handle_input(&mut self, now: Instant, input: &Input) -> bool {
        let Input::Consumer { op, result } = input else {
            return false;
        };
        match self.step {
            Step::Registering { op: mine } if mine == *op => self.on_register(now, result),
            Step::Describing { op: mine } if mine == *op => self.on_describe(now, result),
            _ => return false,
        }
        self.check_deadline(now);
        true
    }

    // ----- commands --------------------------------------------------------

    /// Stop waiting (worker shutdown): [`RegistrationError::Cancelled`],
    /// unless the consumer is already ACTIVE or registration already failed.
    pub fn cancel(&mut self) {
        if matches!(self.step, Step::Active | Step::Done) {
            return;
        }
        self.give_up(RegistrationError::Cancelled {
            consumer: self.consumer_label(),
        });
    }

    // ----- internals -------------------------------------------------------

    fn on_register(&mut self, now: Instant, result: &Result<ConsumerInfo, ErrorClass>) {
        match result {
            Ok(info) => self.on_info(now, info),
            // It exists already (another worker registered it): look at it now.
            Err(ErrorClass::ResourceInUse) => self.step = Step::Describe { due: now },
            Err(class @ ErrorClass::ResourceNotFound) => self.fail(
                *class,
                format!(
                    "stream {} not found when registering EFO consumer {}: create the stream \
                     or fix `streams` (RegisterStreamConsumer needs the ARN of an existing stream)",
                    self.stream,
                    self.consumer_label()
                ),
            ),
            Err(class @ (ErrorClass::AccessDenied | ErrorClass::InvalidArgument)) => {
                self.fatal_call(*class, "RegisterStreamConsumer")
            }
            Err(_) => {
                self.step = Step::Register {
                    due: self.retry_at(now),
                }
            }
        }
    }

    fn on_describe(&mut self, now: Instant, result: &Result<ConsumerInfo, ErrorClass>) {
        match result {
            Ok(info) => self.on_info(now, info),
            Err(class @ ErrorClass::ResourceNotFound) => match &self.consumer {
                // Deregistered since it answered ResourceInUse: register it again.
                EfoConsumer::Name(_) => {
                    self.known_arn = None;
                    self.step = Step::Register {
                        due: self.retry_at(now),
                    };
                }
                EfoConsumer::Arn(arn) => {
                    let message = format!(
                        "EFO consumer {arn} not found on stream {}: fix \
                         enhanced_fan_out.consumer_arn, or set enhanced_fan_out.consumer_name \
                         to have the consumer registered",
                        self.stream
                    );
                    self.fail(*class, message);
                }
            },
            Err(class @ (ErrorClass::AccessDenied | ErrorClass::InvalidArgument)) => {
                self.fatal_call(*class, "DescribeStreamConsumer")
            }
            Err(_) => {
                self.step = Step::Describe {
                    due: self.retry_at(now),
                }
            }
        }
    }

    fn on_info(&mut self, now: Instant, info: &ConsumerInfo) {
        if !info.arn.is_empty() {
            self.known_arn = Some(info.arn.clone());
        }
        match info.status {
            ConsumerStatus::Active if self.known_arn.is_some() => {
                self.backoff.reset();
                self.step = Step::Active;
            }
            // ACTIVE without an ARN cannot be used: describe again.
            ConsumerStatus::Active | ConsumerStatus::Creating => {
                self.step = Step::Describe {
                    due: at(now, self.describe_interval),
                }
            }
            ConsumerStatus::Deleting => self.give_up(RegistrationError::Deleting {
                consumer: self.consumer_label(),
            }),
        }
    }

    fn check_deadline(&mut self, now: Instant) {
        if matches!(self.step, Step::Active | Step::Done) || now < self.deadline {
            return;
        }
        self.give_up(RegistrationError::TimedOut {
            consumer: self.consumer_label(),
            waited: now.saturating_duration_since(self.started_at),
        });
    }

    fn fatal_call(&mut self, class: ErrorClass, call: &str) {
        let advice = match class {
            ErrorClass::AccessDenied => "grant kinesis:RegisterStreamConsumer, \
                 kinesis:DescribeStreamConsumer and kinesis:SubscribeToShard on the stream, or \
                 register the consumer yourself and set enhanced_fan_out.consumer_arn"
                .to_owned(),
            _ => format!(
                "check that {} is a stream ARN and that the consumer name or ARN is valid",
                self.stream
            ),
        };
        self.fail(
            class,
            format!(
                "{call} for EFO consumer {} failed ({class:?}): {advice}",
                self.consumer_label()
            ),
        );
    }

    fn fail(&mut self, class: ErrorClass, message: String) {
        self.give_up(RegistrationError::Failed { class, message });
    }

    fn give_up(&mut self, error: RegistrationError) {
        self.step = Step::Done;
        self.error = Some(error);
    }

    fn retry_at(&mut self, now: Instant) -> Instant {
        at(now, self.backoff.next_delay(&mut self.rng))
    }

    /// The name to send (for an ARN, the name inside it).
    fn consumer_name(&self) -> String {
        match &self.consumer {
            EfoConsumer::Name(name) => name.clone(),
            EfoConsumer::Arn(arn) => consumer_name_of(arn).to_owned(),
        }
    }

    fn consumer_label(&self) -> String {
        match &self.consumer {
            EfoConsumer::Name(name) => format!("{name:?}"),
            EfoConsumer::Arn(arn) => arn.clone(),
        }
    }
}

/// The consumer name inside a consumer ARN
/// (`arn:aws:kinesis:REGION:ACCOUNT:stream/STREAM/consumer/NAME:CREATED`),
/// or the whole string when it has no such shape.
fn consumer_name_of(arn: &str) -> &str {
    arn.rsplit_once("/consumer/")
        .map(|(_, rest)| rest.split(':').next().unwrap_or(rest))
        .unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Retrieval;
    use crate::ids::Owner;

    const SEED: u64 = 11;
    const ARN: &str = "arn:aws:kinesis:us-east-1:1:stream/orders/consumer/app:1700000000";

    fn secs(v: u64) -> Duration {
        Duration::from_secs(v)
    }
    fn config() -> Config {
        Config::new(
            vec![StreamId::new("orders")],
            Owner::new("w", 1),
            Retrieval::Efo {
                consumer: EfoConsumer::Name("app".into()),
            },
        )
    }
    fn info(status: ConsumerStatus) -> Result<ConsumerInfo, ErrorClass> {
        Ok(ConsumerInfo {
            arn: ARN.into(),
            status,
        })
    }

    struct H {
        reg: Registration,
        mint: IdMint,
    }

    impl H {
        fn new(consumer: EfoConsumer, now: Instant) -> H {
            H {
                reg: Registration::new(StreamId::new("orders"), consumer, &config(), SEED, now),
                mint: IdMint::default(),
            }
        }
        fn name(now: Instant) -> H {
            H::new(EfoConsumer::Name("app".into()), now)
        }
        fn actions(&mut self, now: Instant) -> Vec<Action> {
            std::iter::from_fn(|| self.reg.poll_action(now, &mut self.mint)).collect()
        }
        /// Expect one RegisterConsumer at `now`; its op.
        fn register(&mut self, now: Instant) -> OpId {
            let acts = self.actions(now);
            let [Action::RegisterConsumer { op, .. }] = acts.as_slice() else {
                panic!("expected one RegisterConsumer, got {acts:?}");
            };
            let op = *op;
            assert_eq!(
                acts,
                vec![Action::RegisterConsumer {
                    op,
                    stream: StreamId::new("orders"),
                    name: "app".into()
                }]
            );
            op
        }
        /// Expect one DescribeConsumer at `now` (by `arn` when given); its op.
        fn describe(&mut self, now: Instant, arn: Option<&str>) -> OpId {
            let acts = self.actions(now);
            let [Action::DescribeConsumer { op, .. }] = acts.as_slice() else {
                panic!("expected one DescribeConsumer, got {acts:?}");
            };
            let op = *op;
            assert_eq!(
                acts,
                vec![Action::DescribeConsumer {
                    op,
                    stream: StreamId::new("orders"),
                    name: "app".into(),
                    arn: arn.map(str::to_owned),
                }]
            );
            op
        }
        fn answer(&mut self, now: Instant, op: OpId, result: Result<ConsumerInfo, ErrorClass>) {
            assert!(self.reg.handle_input(now, &Input::Consumer { op, result }));
        }
    }

    #[test]
    fn registration_describes_when_consumer_exists() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        assert_eq!(h.actions(t0), vec![], "one request in flight");
        h.answer(t0 + secs(1), op, Err(ErrorClass::ResourceInUse));
        // Checked at once, by name (the ARN is not known yet).
        let op = h.describe(t0 + secs(1), None);
        assert_eq!(h.reg.arn(), None);
        h.answer(t0 + secs(1), op, info(ConsumerStatus::Active));
        assert_eq!(h.reg.arn(), Some(ARN));
        assert_eq!(h.reg.error(), None);
        assert_eq!(h.reg.poll_timeout(), None);
        assert_eq!(h.actions(t0 + secs(60)), vec![]);
        assert_eq!(h.reg.state_name(), "active");
    }

    #[test]
    fn new_consumer_is_described_every_two_seconds_until_active() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.answer(
            t0 + Duration::from_millis(100),
            op,
            info(ConsumerStatus::Creating),
        );
        let first = t0 + Duration::from_millis(2100);
        assert_eq!(h.reg.poll_timeout(), Some((first, "describe consumer")));
        assert_eq!(h.actions(first - Duration::from_millis(1)), vec![]);
        let op = h.describe(first, Some(ARN));
        assert_eq!(
            h.reg.poll_timeout(),
            Some((t0 + secs(120), "consumer active timeout"))
        );
        h.answer(first, op, info(ConsumerStatus::Creating));
        let op = h.describe(first + secs(2), Some(ARN));
        h.answer(first + secs(2), op, info(ConsumerStatus::Active));
        assert_eq!(h.reg.arn(), Some(ARN));
    }

    #[test]
    fn configured_arn_skips_registration_and_is_described_now() {
        let t0 = crate::test_epoch();
        let mut h = H::new(EfoConsumer::Arn(ARN.into()), t0);
        let op = h.describe(t0, Some(ARN));
        h.answer(t0, op, info(ConsumerStatus::Active));
        assert_eq!(h.reg.arn(), Some(ARN));
    }

    #[test]
    fn configured_arn_not_found_is_fatal_with_advice() {
        let t0 = crate::test_epoch();
        let mut h = H::new(EfoConsumer::Arn(ARN.into()), t0);
        let op = h.describe(t0, Some(ARN));
        h.answer(t0, op, Err(ErrorClass::ResourceNotFound));
        let err = h.reg.error().expect("fatal");
        assert!(matches!(
            err,
            RegistrationError::Failed {
                class: ErrorClass::ResourceNotFound,
                ..
            }
        ));
        assert!(
            err.to_string().contains("enhanced_fan_out.consumer_arn"),
            "{err}"
        );
        assert_eq!(h.actions(t0 + secs(10)), vec![]);
    }

    #[test]
    fn consumer_deleting_is_fatal() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.answer(t0, op, Err(ErrorClass::ResourceInUse));
        let op = h.describe(t0, None);
        h.answer(t0 + secs(1), op, info(ConsumerStatus::Deleting));
        let err = h.reg.error().expect("fatal");
        assert_eq!(
            err,
            &RegistrationError::Deleting {
                consumer: "\"app\"".into()
            }
        );
        assert!(err.to_string().contains("DELETING"));
        assert_eq!(h.reg.arn(), None);
        assert_eq!(h.reg.poll_timeout(), None);
        assert_eq!(h.actions(t0 + secs(10)), vec![]);
    }

    #[test]
    fn consumer_wait_times_out_after_two_minutes() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.answer(t0, op, info(ConsumerStatus::Creating));
        let mut describes = 0;
        let mut now = t0 + secs(2);
        while now < t0 + secs(120) {
            let op = h.describe(now, Some(ARN));
            h.answer(now, op, info(ConsumerStatus::Creating));
            describes += 1;
            now += secs(2);
        }
        assert_eq!(describes, 59);
        let deadline = t0 + secs(120);
        assert_eq!(
            h.reg.poll_timeout(),
            Some((deadline, "consumer active timeout"))
        );
        h.reg.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(h.reg.error(), None);
        h.reg.handle_timeout(deadline);
        assert_eq!(
            h.reg.error(),
            Some(&RegistrationError::TimedOut {
                consumer: "\"app\"".into(),
                waited: secs(120)
            })
        );
        assert_eq!(h.actions(deadline), vec![]);
        assert_eq!(h.reg.poll_timeout(), None);
    }

    #[test]
    fn answer_after_timeout_is_not_ours() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.reg.handle_timeout(t0 + secs(120));
        assert!(matches!(
            h.reg.error(),
            Some(RegistrationError::TimedOut { .. })
        ));
        let late = Input::Consumer {
            op,
            result: info(ConsumerStatus::Active),
        };
        assert!(!h.reg.handle_input(t0 + secs(121), &late));
        assert_eq!(h.reg.arn(), None);
    }

    #[test]
    fn cancel_is_distinct_from_timeout() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.reg.cancel();
        assert_eq!(
            h.reg.error(),
            Some(&RegistrationError::Cancelled {
                consumer: "\"app\"".into()
            })
        );
        h.reg.handle_timeout(t0 + secs(500));
        assert!(matches!(
            h.reg.error(),
            Some(RegistrationError::Cancelled { .. })
        ));
        assert!(!h.reg.handle_input(
            t0,
            &Input::Consumer {
                op,
                result: info(ConsumerStatus::Active)
            }
        ));
        // Cancelling an ACTIVE registration changes nothing.
        let mut h = H::new(EfoConsumer::Arn(ARN.into()), t0);
        let op = h.describe(t0, Some(ARN));
        h.answer(t0, op, info(ConsumerStatus::Active));
        h.reg.cancel();
        assert_eq!(h.reg.error(), None);
        assert_eq!(h.reg.arn(), Some(ARN));
    }

    #[test]
    fn throttled_and_limit_exceeded_retry_with_backoff() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let mut rng = Rng::new(SEED);
        let mut b = Backoff::new();
        let op = h.register(t0);
        h.answer(t0, op, Err(ErrorClass::LimitExceeded));
        let due = t0 + b.next_delay(&mut rng);
        assert_eq!(h.reg.poll_timeout(), Some((due, "register consumer")));
        assert_eq!(h.actions(due - Duration::from_nanos(1)), vec![]);
        let op = h.register(due);
        h.answer(due, op, Err(ErrorClass::ResourceInUse));
        let op = h.describe(due, None);
        h.answer(due, op, Err(ErrorClass::Throttled));
        let due2 = due + b.next_delay(&mut rng);
        assert_eq!(h.reg.poll_timeout(), Some((due2, "describe consumer")));
        let op = h.describe(due2, None);
        h.answer(due2, op, info(ConsumerStatus::Active));
        assert_eq!(h.reg.arn(), Some(ARN));
    }

    #[test]
    fn missing_stream_is_fatal_with_advice() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.answer(t0, op, Err(ErrorClass::ResourceNotFound));
        let err = h.reg.error().expect("fatal");
        assert!(matches!(
            err,
            RegistrationError::Failed {
                class: ErrorClass::ResourceNotFound,
                ..
            }
        ));
        assert!(err.to_string().contains("stream orders not found"), "{err}");
    }

    #[test]
    fn access_denied_is_fatal_with_advice() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.answer(t0, op, Err(ErrorClass::AccessDenied));
        let err = h.reg.error().expect("fatal");
        assert!(
            err.to_string().contains("kinesis:RegisterStreamConsumer"),
            "{err}"
        );
        assert!(err.to_string().contains("consumer_arn"), "{err}");
    }

    #[test]
    fn consumer_deregistered_while_waiting_is_registered_again() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.answer(t0, op, Err(ErrorClass::ResourceInUse));
        let op = h.describe(t0, None);
        h.answer(t0, op, Err(ErrorClass::ResourceNotFound));
        assert_eq!(h.reg.error(), None);
        let mut rng = Rng::new(SEED);
        let due = t0 + Backoff::new().next_delay(&mut rng);
        h.register(due);
    }

    #[test]
    fn other_inputs_are_not_ours() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        let other = OpId::from_raw(op.raw() + 100);
        assert!(!h.reg.handle_input(
            t0,
            &Input::Consumer {
                op: other,
                result: info(ConsumerStatus::Active)
            }
        ));
        assert!(!h.reg.handle_input(
            t0,
            &Input::SubscriptionEnded {
                sub: crate::ids::SubId::from_raw(op.raw())
            }
        ));
        assert_eq!(h.reg.arn(), None);
        assert_eq!(h.reg.state_name(), "registering");
    }

    /// cargo-mutants survivor: the op check while describing, too.
    #[test]
    fn describe_answer_with_another_op_is_not_ours() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.answer(t0, op, Err(ErrorClass::ResourceInUse));
        let op = h.describe(t0, None);
        let other = OpId::from_raw(op.raw() + 100);
        assert!(!h.reg.handle_input(
            t0,
            &Input::Consumer {
                op: other,
                result: info(ConsumerStatus::Active)
            }
        ));
        assert_eq!(h.reg.arn(), None);
        assert_eq!(h.reg.state_name(), "describing");
        h.answer(t0, op, info(ConsumerStatus::Active));
        assert_eq!(h.reg.arn(), Some(ARN));
    }

    /// cargo-mutants survivor: ACTIVE with no ARN cannot be subscribed
    /// with; the consumer is described again instead of used.
    #[test]
    fn active_without_arn_is_described_again() {
        let t0 = crate::test_epoch();
        let mut h = H::name(t0);
        let op = h.register(t0);
        h.answer(
            t0,
            op,
            Ok(ConsumerInfo {
                arn: String::new(),
                status: ConsumerStatus::Active,
            }),
        );
        assert_eq!(h.reg.arn(), None);
        assert_ne!(h.reg.state_name(), "active");
        let op = h.describe(t0 + secs(2), None);
        h.answer(t0 + secs(2), op, info(ConsumerStatus::Active));
        assert_eq!(h.reg.state_name(), "active");
        assert_eq!(h.reg.arn(), Some(ARN));
    }

    #[test]
    fn consumer_name_is_read_from_an_arn() {
        assert_eq!(consumer_name_of(ARN), "app");
        assert_eq!(consumer_name_of("not-an-arn"), "not-an-arn");
    }
}
