//! The network between the worker processes and the services, as a value:
//! a fault injector in the manner of str0m's netem, a sans-IO machine that
//! the world asks what becomes of each request and response.
//!
//! Models: per-process partitions from DynamoDB and from Kinesis (a
//! process cut off from a service until an instant), request and response
//! latency (DynamoDB 2-12 ms with rare 0.3-1.5 s spikes, split evenly
//! between the two legs; Kinesis per call kind), DynamoDB throttling and
//! transient errors (not applied), DynamoDB writes that applied but whose
//! response was lost, errors and throttling of Kinesis control-plane calls
//! and of GetRecords, and EFO subscriptions that break mid-stream. The
//! rates come from the run's [`Faults`] (drawn per seed by the swarm
//! scenario); [`Net::heal`] ends every fault at once.
//!
//! AWS rules encoded: a request to an unreachable endpoint, or whose
//! response is lost, fails after the SDK timeout ([`REQUEST_TIMEOUT`]); a
//! throttled or failed DynamoDB request was not applied; a response lost on
//! its way back leaves a write ambiguous (it may have applied) and any
//! other call a plain transient failure; throttling and transient errors
//! are retryable classes ([`ErrorClass::Throttled`],
//! [`ErrorClass::Transient`]).
//!
//! Invariants: [`Net`] holds no random stream of its own: every draw comes
//! from the run's one [`Rng`], passed in per call, in the order the world
//! used to make it inline (moving the draws here changed no trace hash;
//! a forked stream would change them all). A fault is drawn only while
//! faults are on (no draw at all after [`Net::heal`]), so the heal phase's
//! draws do not depend on the fault rates. A partition only ever extends
//! ([`Net::cut`] keeps the later end).
//!
//! Imports: `kinesin_core::io` (the actions and inputs it routes) and
//! `kinesin_core::rng`, [`crate::scenario::Faults`] and [`crate::sched`]'s
//! time units. It knows nothing of the world, the services' state or the
//! processes beyond their index.

use kinesin_core::io::{Action, ErrorClass, Input};
use kinesin_core::rng::Rng;

use crate::scenario::Faults;
use crate::sched::{between, Micros, MS, SEC};

/// SDK timeout: how long a request to an unreachable service or a lost
/// response takes to fail.
pub const REQUEST_TIMEOUT: Micros = 2 * SEC;

/// Which service a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// The DynamoDB lease table.
    Dynamo,
    /// Kinesis Data Streams.
    Kinesis,
}

impl Service {
    /// The service `input` answers for.
    pub fn of_input(input: &Input) -> Self {
        match input {
            Input::Leases { .. }
            | Input::LeaseWritten { .. }
            | Input::Heartbeats { .. }
            | Input::HeartbeatWritten { .. } => Service::Dynamo,
            _ => Service::Kinesis,
        }
    }
}

/// What a request is, as far as the network cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// A DynamoDB heartbeat write.
    Dynamo,
    /// A DynamoDB read (lease rows or heartbeats).
    DynamoRead,
    /// A conditional lease write (may also arrive late:
    /// [`Delivery::Late`]).
    DynamoLeaseWrite,
    /// A Kinesis control-plane call (ListShards, RegisterStreamConsumer,
    /// DescribeStreamConsumer, GetShardIterator, SubscribeToShard): may be
    /// throttled or fail.
    Control,
    /// A read on an open EFO subscription (the runtime's, not an API call).
    Pull,
    /// GetRecords (its throttling is drawn where it arrives:
    /// [`Net::throttles_get_records`]).
    GetRecords,
    /// Closing a subscription (local; the world never routes it).
    Cancel,
}

impl Call {
    /// The kind of `a`.
    pub fn of(a: &Action) -> Self {
        match a {
            Action::WriteLease { .. } => Call::DynamoLeaseWrite,
            Action::ReadLeases { .. } | Action::ReadHeartbeats { .. } => Call::DynamoRead,
            Action::WriteHeartbeat { .. } => Call::Dynamo,
            Action::ListShards { .. }
            | Action::RegisterConsumer { .. }
            | Action::DescribeConsumer { .. }
            | Action::GetShardIterator { .. }
            | Action::Subscribe { .. } => Call::Control,
            Action::Pull { .. } => Call::Pull,
            Action::GetRecords { .. } => Call::GetRecords,
            Action::Cancel { .. } => Call::Cancel,
        }
    }

    /// The service it goes to.
    pub fn service(self) -> Service {
        match self {
            Call::Dynamo | Call::DynamoRead | Call::DynamoLeaseWrite => Service::Dynamo,
            _ => Service::Kinesis,
        }
    }
}

/// What becomes of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Delivery {
    /// It arrives after `latency`.
    Deliver {
        /// Time on the wire.
        latency: Micros,
    },
    /// The request does not reach (or is refused by) the service: the
    /// caller gets `class` after `after`.
    Fail {
        /// The error the caller sees.
        class: ErrorClass,
        /// When it sees it.
        after: Micros,
    },
    /// The request applied but its response is lost: the caller gets
    /// [`ErrorClass::Ambiguous`] after `after` (the SDK timeout).
    Lose {
        /// When the caller gives up.
        after: Micros,
    },
    /// A lease write held up on the way: the caller gives up after
    /// `after` (the SDK timeout, outcome unknown), and the write reaches
    /// the table `apply_after` (later than that); its answer goes nowhere.
    Late {
        /// When it applies.
        apply_after: Micros,
        /// When the caller gives up.
        after: Micros,
    },
}

/// A response leg, for its latency ([`Net::reply_latency`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Any DynamoDB response (half a round trip, spikes included).
    Dynamo,
    /// A Kinesis control-plane answer (ListShards, DescribeStreamConsumer,
    /// GetShardIterator, a refused SubscribeToShard): 10-40 ms.
    Control,
    /// RegisterStreamConsumer's answer: 20-80 ms.
    Register,
    /// A GetRecords response: 30-150 ms.
    Records,
    /// An EFO subscription event (or its end or error): 40-100 ms.
    Event,
}

/// The partitions of one process: cut off from each service until then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cuts {
    dynamo_until: Micros,
    kinesis_until: Micros,
    /// DynamoDB reads fail (writes pass) until then.
    dynamo_reads_until: Micros,
    /// DynamoDB writes fail (reads pass) until then.
    dynamo_writes_until: Micros,
}

impl Cuts {
    fn until(&mut self, service: Service) -> &mut Micros {
        match service {
            Service::Dynamo => &mut self.dynamo_until,
            Service::Kinesis => &mut self.kinesis_until,
        }
    }
}

/// The fault injector: partitions per process, and the per-request fault
/// rates while faults are on.
#[derive(Clone, Debug)]
pub struct Net {
    on: bool,
    dynamo_throttle: f64,
    dynamo_error: f64,
    dynamo_ambiguous: f64,
    dynamo_late: f64,
    dynamo_spike: f64,
    kinesis_error: f64,
    efo_stream_error: f64,
    /// By process index (grown on the first cut).
    cuts: Vec<Cuts>,
}

impl Net {
    /// A network with these fault rates, faults on, no partition.
    pub fn new(faults: &Faults) -> Self {
        Net {
            on: true,
            dynamo_throttle: faults.dynamo_throttle,
            dynamo_error: faults.dynamo_error,
            dynamo_ambiguous: faults.dynamo_ambiguous,
            dynamo_late: faults.dynamo_late,
            dynamo_spike: faults.dynamo_spike,
            kinesis_error: faults.kinesis_error,
            efo_stream_error: faults.efo_stream_error,
            cuts: Vec::new(),
        }
    }

    /// Cut process `p` off from `service` until at least `until`.
    pub fn cut(&mut self, p: usize, service: Service, until: Micros) {
        if self.cuts.len() <= p {
            self.cuts.resize(p + 1, Cuts::default());
        }
        let end = self.cuts[p].until(service);
        *end = (*end).max(until);
    }

    /// Fail process `p`'s DynamoDB reads (`reads`) or writes until at
    /// least `until`; the other direction still works.
    pub fn cut_one_way(&mut self, p: usize, reads: bool, until: Micros) {
        if self.cuts.len() <= p {
            self.cuts.resize(p + 1, Cuts::default());
        }
        let c = &mut self.cuts[p];
        let end = if reads {
            &mut c.dynamo_reads_until
        } else {
            &mut c.dynamo_writes_until
        };
        *end = (*end).max(until);
    }

    /// Whether one direction of DynamoDB fails for `call` of process `p`.
    fn is_cut_one_way(&self, now: Micros, p: usize, call: Call) -> bool {
        self.cuts.get(p).is_some_and(|c| match call {
            Call::DynamoRead => now < c.dynamo_reads_until,
            Call::Dynamo | Call::DynamoLeaseWrite => now < c.dynamo_writes_until,
            _ => false,
        })
    }

    /// Whether process `p` cannot reach `service` at `now`.
    pub fn is_cut(&self, now: Micros, p: usize, service: Service) -> bool {
        self.cuts.get(p).is_some_and(|c| {
            now < match service {
                Service::Dynamo => c.dynamo_until,
                Service::Kinesis => c.kinesis_until,
            }
        })
    }

    /// End every partition and stop drawing faults (the heal phase).
    pub fn heal(&mut self) {
        self.on = false;
        self.cuts.clear();
    }

    /// What becomes of a request of kind `call` that process `p` sends at
    /// `now`.
    ///
    /// Draws, in order: nothing across a partition; for DynamoDB the
    /// throttle, then the error (each with its latency when it hits), then
    /// half a round trip; for a Kinesis control-plane call the error, its
    /// class and latency, else the request latency of its kind.
    pub fn route(&self, rng: &mut Rng, now: Micros, p: usize, call: Call) -> Delivery {
        if self.is_cut(now, p, call.service()) || self.is_cut_one_way(now, p, call) {
            return Delivery::Fail {
                class: ErrorClass::Transient,
                after: REQUEST_TIMEOUT,
            };
        }
        if call.service() == Service::Dynamo {
            if self.on && rng.chance(self.dynamo_throttle) {
                return Delivery::Fail {
                    class: ErrorClass::Throttled,
                    after: self.dynamo_latency(rng),
                };
            }
            if self.on && rng.chance(self.dynamo_error) {
                return Delivery::Fail {
                    class: ErrorClass::Transient,
                    after: self.dynamo_latency(rng),
                };
            }
            if call == Call::DynamoLeaseWrite
                && self.on
                && self.dynamo_late > 0.0
                && rng.chance(self.dynamo_late)
            {
                return Delivery::Late {
                    apply_after: between(rng, REQUEST_TIMEOUT + SEC / 2, 20 * SEC),
                    after: REQUEST_TIMEOUT,
                };
            }
            return Delivery::Deliver {
                latency: self.dynamo_latency(rng) / 2,
            };
        }
        if call == Call::Control && self.on && rng.chance(self.kinesis_error) {
            let class = if rng.chance(0.5) {
                ErrorClass::Throttled
            } else {
                ErrorClass::Transient
            };
            return Delivery::Fail {
                class,
                after: between(rng, 10 * MS, 60 * MS),
            };
        }
        let latency = match call {
            Call::Pull => between(rng, MS, 5 * MS),
            Call::GetRecords => between(rng, 20 * MS, 120 * MS),
            Call::Dynamo
            | Call::DynamoRead
            | Call::DynamoLeaseWrite
            | Call::Control
            | Call::Cancel => between(rng, 10 * MS, 40 * MS),
        };
        Delivery::Deliver { latency }
    }

    /// What becomes of the response to a DynamoDB write that applied:
    /// lost (the caller sees Ambiguous after the timeout) or delivered.
    pub fn write_reply(&self, rng: &mut Rng) -> Delivery {
        if self.on && rng.chance(self.dynamo_ambiguous) {
            Delivery::Lose {
                after: REQUEST_TIMEOUT,
            }
        } else {
            Delivery::Deliver {
                latency: self.reply_latency(rng, Reply::Dynamo),
            }
        }
    }

    /// The latency of a response leg.
    pub fn reply_latency(&self, rng: &mut Rng, reply: Reply) -> Micros {
        match reply {
            Reply::Dynamo => self.dynamo_latency(rng) / 2,
            Reply::Control => between(rng, 10 * MS, 40 * MS),
            Reply::Register => between(rng, 20 * MS, 80 * MS),
            Reply::Records => between(rng, 30 * MS, 150 * MS),
            Reply::Event => between(rng, 40 * MS, 100 * MS),
        }
    }

    /// Whether Kinesis throttles a GetRecords that reached it (on top of
    /// the per-shard rate limit the service itself enforces).
    pub fn throttles_get_records(&self, rng: &mut Rng) -> bool {
        self.on && rng.chance(self.kinesis_error)
    }

    /// Whether an EFO subscription breaks instead of answering a read, and
    /// with which class.
    pub fn breaks_stream(&self, rng: &mut Rng) -> Option<ErrorClass> {
        if !(self.on && rng.chance(self.efo_stream_error)) {
            return None;
        }
        Some(if rng.chance(0.5) {
            ErrorClass::Transient
        } else {
            ErrorClass::Throttled
        })
    }

    /// A response reaches process `p` at `now`: across a partition it
    /// degrades ([`degrade`]). Returns the input and whether it arrived
    /// intact (a degraded one has lost its payload).
    pub fn receive(&self, now: Micros, p: usize, input: Input) -> (Input, bool) {
        if self.is_cut(now, p, Service::of_input(&input)) {
            (degrade(input), false)
        } else {
            (input, true)
        }
    }

    /// A DynamoDB round trip: 2-12 ms, plus a 0.3-1.5 s spike at the spike
    /// rate.
    fn dynamo_latency(&self, rng: &mut Rng) -> Micros {
        let spike = self.on && rng.chance(self.dynamo_spike);
        between(rng, 2 * MS, 12 * MS)
            + if spike {
                between(rng, 300 * MS, 1500 * MS)
            } else {
                0
            }
    }
}

/// A response that met a broken connection: writes may have applied.
pub fn degrade(input: Input) -> Input {
    let write = matches!(
        input,
        Input::LeaseWritten { .. } | Input::HeartbeatWritten { .. }
    );
    input.failed(ErrorClass::unknown_outcome(write))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use kinesin_core::config::{Config, Retrieval};
    use kinesin_core::ids::{OpId, Owner, StreamId};
    use kinesin_core::worker::Worker;

    use super::*;

    fn faults(f: impl FnOnce(&mut Faults)) -> Faults {
        let mut faults = Faults::none();
        f(&mut faults);
        faults
    }

    /// An `OpId` minted by a real worker (the sim cannot forge one).
    fn some_op() -> OpId {
        let stream = StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/t");
        let config = Config::new(vec![stream], Owner::new("w", 1), Retrieval::polling());
        let mut w = Worker::new(config, Instant::now(), 1_700_000_000_000).expect("config");
        while let Some(a) = w.poll_action() {
            if let Action::ReadLeases { op, .. } | Action::ListShards { op, .. } = a {
                return op;
            }
        }
        panic!("a new worker reads the table or lists shards")
    }

    #[test]
    fn a_partition_fails_requests_after_the_request_timeout_and_draws_nothing() {
        let mut net = Net::new(&faults(|f| f.dynamo_error = 1.0));
        net.cut(1, Service::Dynamo, 10 * SEC);
        let mut rng = Rng::new(7);
        let mut untouched = rng.clone();
        let d = net.route(&mut rng, 3 * SEC, 1, Call::Dynamo);
        assert_eq!(
            d,
            Delivery::Fail {
                class: ErrorClass::Transient,
                after: REQUEST_TIMEOUT
            }
        );
        assert_eq!(rng.next_u64(), untouched.next_u64());
    }

    #[test]
    fn a_partition_cuts_one_process_from_one_service_until_its_end() {
        let mut net = Net::new(&Faults::none());
        net.cut(1, Service::Kinesis, 10 * SEC);
        assert!(net.is_cut(0, 1, Service::Kinesis));
        assert!(net.is_cut(10 * SEC - 1, 1, Service::Kinesis));
        assert!(!net.is_cut(10 * SEC, 1, Service::Kinesis));
        assert!(!net.is_cut(0, 1, Service::Dynamo));
        assert!(!net.is_cut(0, 0, Service::Kinesis));
        assert!(!net.is_cut(0, 2, Service::Kinesis));
    }

    #[test]
    fn a_shorter_cut_never_ends_a_longer_one() {
        let mut net = Net::new(&Faults::none());
        net.cut(0, Service::Dynamo, 30 * SEC);
        net.cut(0, Service::Dynamo, 5 * SEC);
        assert!(net.is_cut(29 * SEC, 0, Service::Dynamo));
    }

    #[test]
    fn heal_ends_every_partition_and_every_fault() {
        let mut net = Net::new(&faults(|f| {
            f.dynamo_throttle = 1.0;
            f.dynamo_error = 1.0;
            f.dynamo_ambiguous = 1.0;
            f.kinesis_error = 1.0;
            f.efo_stream_error = 1.0;
        }));
        net.cut(0, Service::Dynamo, 60 * SEC);
        net.heal();
        let mut rng = Rng::new(1);
        assert!(!net.is_cut(0, 0, Service::Dynamo));
        for call in [Call::Dynamo, Call::Control, Call::Pull, Call::GetRecords] {
            let d = net.route(&mut rng, 0, 0, call);
            assert!(matches!(d, Delivery::Deliver { .. }), "{call:?}: {d:?}");
        }
        assert!(matches!(
            net.write_reply(&mut rng),
            Delivery::Deliver { .. }
        ));
        assert!(!net.throttles_get_records(&mut rng));
        assert_eq!(net.breaks_stream(&mut rng), None);
    }

    #[test]
    fn throttled_dynamo_requests_fail_within_a_round_trip() {
        let net = Net::new(&faults(|f| f.dynamo_throttle = 1.0));
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            match net.route(&mut rng, 0, 0, Call::Dynamo) {
                Delivery::Fail {
                    class: ErrorClass::Throttled,
                    after,
                } => assert!((2 * MS..12 * MS).contains(&after)),
                d => panic!("{d:?}"),
            }
        }
    }

    #[test]
    fn failing_control_calls_are_throttled_or_transient() {
        let net = Net::new(&faults(|f| f.kinesis_error = 1.0));
        let mut rng = Rng::new(5);
        let mut seen = [false; 2];
        for _ in 0..100 {
            match net.route(&mut rng, 0, 0, Call::Control) {
                Delivery::Fail { class, after } => {
                    assert!((10 * MS..60 * MS).contains(&after));
                    seen[usize::from(class == ErrorClass::Throttled)] = true;
                    assert!(matches!(
                        class,
                        ErrorClass::Throttled | ErrorClass::Transient
                    ));
                }
                d => panic!("{d:?}"),
            }
            // Data-plane calls are not failed on the way out.
            assert!(matches!(
                net.route(&mut rng, 0, 0, Call::GetRecords),
                Delivery::Deliver { .. }
            ));
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn a_lost_write_response_is_ambiguous_after_the_request_timeout() {
        let net = Net::new(&faults(|f| f.dynamo_ambiguous = 1.0));
        let mut rng = Rng::new(9);
        assert_eq!(
            net.write_reply(&mut rng),
            Delivery::Lose {
                after: REQUEST_TIMEOUT
            }
        );
    }

    #[test]
    fn latencies_stay_in_their_ranges() {
        let net = Net::new(&Faults::none());
        let mut rng = Rng::new(11);
        for _ in 0..1000 {
            let lat = |d: Delivery| match d {
                Delivery::Deliver { latency } => latency,
                d => panic!("{d:?}"),
            };
            assert!((MS..6 * MS).contains(&lat(net.route(&mut rng, 0, 0, Call::Dynamo))));
            assert!((MS..5 * MS).contains(&lat(net.route(&mut rng, 0, 0, Call::Pull))));
            let get = lat(net.route(&mut rng, 0, 0, Call::GetRecords));
            assert!((20 * MS..120 * MS).contains(&get));
            let reply = net.reply_latency(&mut rng, Reply::Records);
            assert!((30 * MS..150 * MS).contains(&reply));
            let event = net.reply_latency(&mut rng, Reply::Event);
            assert!((40 * MS..100 * MS).contains(&event));
        }
    }

    /// The injector draws exactly what the world drew inline before it
    /// existed: one value per fault chance (even at rate 0), then the
    /// latency. Trace hashes depend on this order.
    #[test]
    fn route_draws_in_the_order_the_world_made_them() {
        let net = Net::new(&Faults::none());
        let mut rng = Rng::new(42);
        let mut reference = Rng::new(42);
        let d = net.route(&mut rng, 0, 0, Call::Dynamo);
        let _throttle = reference.chance(0.0);
        let _error = reference.chance(0.0);
        let _spike = reference.chance(0.0);
        let latency = between(&mut reference, 2 * MS, 12 * MS) / 2;
        assert_eq!(d, Delivery::Deliver { latency });
        let d = net.route(&mut rng, 0, 0, Call::Control);
        let _error = reference.chance(0.0);
        let latency = between(&mut reference, 10 * MS, 40 * MS);
        assert_eq!(d, Delivery::Deliver { latency });
        assert_eq!(rng.next_u64(), reference.next_u64());
    }

    #[test]
    fn a_response_across_a_partition_leaves_a_write_ambiguous_and_a_read_failed() {
        let mut net = Net::new(&Faults::none());
        net.cut(0, Service::Dynamo, 10 * SEC);
        let op = some_op();
        let (written, intact) = net.receive(
            SEC,
            0,
            Input::LeaseWritten {
                op,
                result: Ok(()),
                row: None,
            },
        );
        assert!(!intact);
        assert!(matches!(
            written,
            Input::LeaseWritten {
                result: Err(ErrorClass::Ambiguous),
                ..
            }
        ));
        let (read, _) = net.receive(
            SEC,
            0,
            Input::Leases {
                op,
                result: Ok(Vec::new()),
            },
        );
        assert!(matches!(
            read,
            Input::Leases {
                result: Err(ErrorClass::Transient),
                ..
            }
        ));
        // Kinesis is reachable: its answers arrive intact.
        let (shards, intact) = net.receive(
            SEC,
            0,
            Input::Shards {
                op,
                result: Ok(Vec::new()),
            },
        );
        assert!(intact);
        assert!(matches!(shards, Input::Shards { result: Ok(_), .. }));
    }
}
