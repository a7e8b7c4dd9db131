//! Lease events for the application: which shards this worker reads now,
//! with which fencing token and from where, and when and why it stops.
//!
//! Models: the core's `Event::LeaseAcquired` / `LeaseLost` / `ShardEnded`
//! as a public [`LeaseEvent`], fanned out to every [`LeaseEvents`] stream
//! taken with `Consumer::lease_events`, so a sink can open and close
//! per-shard resources (a file, a transaction, a partition writer) and use
//! the fencing token to refuse writes from a worker that lost the shard.
//!
//! Invariants: a stream taken at any time first yields a
//! [`LeaseEvent::Gained`] for every lease held at that moment (its token and
//! the position reading started from), then every later event in the order
//! the core emitted it, with no gap and no duplicate (the snapshot and the
//! registration happen under one lock that the driver also takes to
//! publish). For one shard, `Gained` and `Lost` alternate, starting with
//! `Gained`; `ShardEnded` comes before the `Lost` with reason
//! [`LostReason::ShardEnded`]. A dropped stream is forgotten at the next
//! event. Each stream buffers what it was not polled for; lease changes are
//! rare (a few per shard per hand-off), so the buffer stays small.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_core::Stream;
use kinesin_core::ids::ShardRef;
pub use kinesin_core::io::LostReason;
pub use kinesin_core::sequence::StartPosition;

/// A change of the leases this worker holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// The worker took the lease of `shard` and starts reading it.
    Gained {
        /// The shard.
        shard: ShardRef,
        /// Its fencing token: every batch of this lease carries it; a
        /// later owner's token is larger.
        token: u64,
        /// Where reading starts (after the checkpoint, or the configured
        /// initial position for a shard without one).
        start: StartPosition,
    },
    /// The worker no longer holds the lease of `shard`: batches of `token`
    /// that are not acknowledged yet will be read again by the next owner.
    Lost {
        /// The shard.
        shard: ShardRef,
        /// The token it was held with.
        token: u64,
        /// Why: handed off to another worker, taken by one (after this
        /// worker looked expired), self-fenced (heartbeat not renewed in
        /// time), released (shutdown, or the shard cannot be read), shard
        /// ended.
        reason: LostReason,
    },
    /// The shard was read to its end and `SHARD_END` was written: its
    /// children can be read now (a `Lost` with `ShardEnded` follows).
    ShardEnded {
        /// The shard.
        shard: ShardRef,
    },
}

#[derive(Debug, Default)]
struct Hub {
    held: BTreeMap<ShardRef, (u64, StartPosition)>,
    subscribers: Vec<async_channel::Sender<LeaseEvent>>,
}

/// The shared fan-out between a driver and its [`LeaseEvents`] streams.
#[derive(Clone, Debug, Default)]
pub struct EventHub(Arc<Mutex<Hub>>);

impl EventHub {
    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish one event (the driver calls this).
    pub fn publish(&self, event: LeaseEvent) {
        let mut hub = self.lock();
        match &event {
            LeaseEvent::Gained {
                shard,
                token,
                start,
            } => {
                hub.held.insert(shard.clone(), (*token, start.clone()));
            }
            LeaseEvent::Lost { shard, .. } => {
                hub.held.remove(shard);
            }
            LeaseEvent::ShardEnded { .. } => {}
        }
        if hub.subscribers.is_empty() {
            return;
        }
        hub.subscribers
            .retain(|tx| tx.try_send(event.clone()).is_ok());
    }

    /// A new stream: the leases held now, then every later event.
    pub fn subscribe(&self) -> LeaseEvents {
        let (tx, rx) = async_channel::unbounded();
        let mut hub = self.lock();
        for (shard, (token, start)) in &hub.held {
            let _ = tx.try_send(LeaseEvent::Gained {
                shard: shard.clone(),
                token: *token,
                start: start.clone(),
            });
        }
        hub.subscribers.push(tx);
        LeaseEvents { rx: Box::pin(rx) }
    }

    /// Close every stream (the driver stopped): they end after what they
    /// buffered.
    pub fn close(&self) {
        self.lock().subscribers.clear();
    }
}

/// A `futures::Stream` of [`LeaseEvent`]s (see the module doc); ends when
/// the consumer stopped.
///
/// ```
/// use std::collections::BTreeMap;
/// use futures_lite::StreamExt;
/// use kinesin_aws::{LeaseEvent, LeaseEvents};
///
/// /// Keep one open "file" per held shard, named after its fencing token.
/// async fn files(mut events: LeaseEvents) -> BTreeMap<String, String> {
///     let mut open = BTreeMap::new();
///     while let Some(event) = events.next().await {
///         match event {
///             LeaseEvent::Gained { shard, token, start } => {
///                 open.insert(shard.to_string(), format!("{}.{token}", shard.shard));
///                 println!("{shard}: reading from {start:?}");
///             }
///             LeaseEvent::Lost { shard, reason, .. } => {
///                 open.remove(&shard.to_string());
///                 println!("{shard}: lost ({reason:?})");
///             }
///             LeaseEvent::ShardEnded { shard } => println!("{shard}: ended"),
///         }
///     }
///     open // empty once the consumer has shut down
/// }
/// ```
#[derive(Debug)]
pub struct LeaseEvents {
    rx: Pin<Box<async_channel::Receiver<LeaseEvent>>>,
}

impl Stream for LeaseEvents {
    type Item = LeaseEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LeaseEvent>> {
        self.rx.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::StreamExt;
    use kinesin_core::ids::{ShardId, StreamId};

    fn shard(n: u32) -> ShardRef {
        ShardRef::new(StreamId::new("s"), ShardId::new(format!("shardId-{n}")))
    }

    fn gained(n: u32, token: u64) -> LeaseEvent {
        LeaseEvent::Gained {
            shard: shard(n),
            token,
            start: StartPosition::TrimHorizon,
        }
    }

    #[test]
    fn a_late_subscriber_first_sees_the_leases_held_then_later_events() {
        futures_lite::future::block_on(async {
            let hub = EventHub::default();
            hub.publish(gained(0, 1));
            hub.publish(gained(1, 2));
            hub.publish(LeaseEvent::Lost {
                shard: shard(0),
                token: 1,
                reason: LostReason::HandedOff,
            });
            let mut early_dropped = hub.subscribe();
            let mut s = hub.subscribe();
            assert_eq!(s.next().await, Some(gained(1, 2)));
            assert_eq!(early_dropped.next().await, Some(gained(1, 2)));
            drop(early_dropped);
            hub.publish(LeaseEvent::ShardEnded { shard: shard(1) });
            assert_eq!(
                s.next().await,
                Some(LeaseEvent::ShardEnded { shard: shard(1) })
            );
            assert_eq!(hub.lock().subscribers.len(), 1, "dropped stream forgotten");
            hub.close();
            assert_eq!(s.next().await, None);
        });
    }
}
