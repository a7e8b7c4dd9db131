//! The global pending pool: a budget in records and bytes shared by all
//! shards, handed out as [`Permit`]s (SPEC 7).
//!
//! Records received from Kinesis but not yet finished (acknowledged, or
//! dropped on hand-off, shard end, error or shutdown) hold capacity here.
//! Readers only take the next event from the network while the pool has
//! room, so memory is bounded by the budget whatever the shard count.
//!
//! Rules encoded here (SPEC 7, fixing the failures of Bento's first pool):
//! - the budget counts records *and* bytes; either one being full stops
//!   reading;
//! - a chunk larger than the whole budget is admitted when the pool is empty
//!   (never livelocks), and then alone;
//! - waiting is wake-up driven and fair: readers that found no room queue in
//!   FIFO order and [`Pool::poll_wake`] names the next one when room
//!   appears; nobody polls.
//!
//! Invariants:
//! - `used == sum of live permits` (records and bytes): capacity changes
//!   only through [`Pool::try_admit`] and [`Pool::release`], and
//!   [`Pool::split`] moves it between permits without changing the total;
//! - `used <= max` except for the single oversized admission into an empty
//!   pool, and for a read whose answer brought more than its reservation
//!   ([`Pool::exchange`]: the bytes are already in memory); while over,
//!   nothing more is admitted nor reserved;
//! - [`Pool::live_permits`] counts the non-empty permits outstanding, so it
//!   is 0 exactly when `used` is 0; empty permits hold nothing and may be
//!   released or dropped.
//!
//! Reads are paid for before they are sent: the worker reserves a read's
//! expected size with [`Pool::try_admit`] and, when the answer comes,
//! [`Pool::exchange`]s the reservation for the chunk's real size. Usage
//! therefore counts reads in flight (at what their answers hold until
//! decoded: `shard::in_flight_bytes`), and the budget bounds what is
//! admitted plus what the network may still bring.

use std::collections::BTreeMap;

/// Capacity taken by admitted-but-not-yet-finished records.
///
/// Only a [`Pool`] mints permits. Not `Clone`: give it back with
/// [`Pool::release`] (or divide it with [`Pool::split`]). Dropping a
/// non-empty permit leaks its capacity.
#[must_use = "a Permit holds pool capacity: give it back with Pool::release"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    records: u64,
    bytes: u64,
}

impl Permit {
    /// Records this permit holds.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when it holds no records and no bytes (releasing or dropping it
    /// changes nothing).
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.bytes == 0
    }
}

/// [`Pool::try_admit`] refused a chunk: it does not fit next to what is
/// already admitted. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "pending pool full: {records} records / {bytes} bytes do not fit \
     (used {used_records}/{max_records} records, {used_bytes}/{max_bytes} bytes); \
     keep the chunk, call Pool::wait and retry when Pool::poll_wake names this reader"
)]
pub struct PoolFull {
    /// Records asked for.
    pub records: u64,
    /// Bytes asked for.
    pub bytes: u64,
    /// Records in use when refused.
    pub used_records: u64,
    /// Bytes in use when refused.
    pub used_bytes: u64,
    /// Record budget.
    pub max_records: u64,
    /// Byte budget.
    pub max_bytes: u64,
}

/// Global records+bytes budget with a fair FIFO of waiting readers.
///
/// `W` identifies a waiter (the worker uses a shard key).
#[derive(Clone, Debug)]
pub struct Pool<W: Ord + Clone> {
    max_records: u64,
    max_bytes: u64,
    used_records: u64,
    used_bytes: u64,
    live_permits: u64,
    /// Waiters by arrival ticket (FIFO order).
    queue: BTreeMap<u64, W>,
    /// Ticket of each waiter (dedupe and cancel).
    tickets: BTreeMap<W, u64>,
    next_ticket: u64,
}

impl<W: Ord + Clone> Pool<W> {
    /// A pool with these budgets. A budget of 0 is raised to 1 (config
    /// validation rejects it earlier; the pool never divides by it).
    pub fn new(max_records: u64, max_bytes: u64) -> Self {
        Pool {
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1),
            used_records: 0,
            used_bytes: 0,
            live_permits: 0,
            queue: BTreeMap::new(),
            tickets: BTreeMap::new(),
            next_ticket: 0,
        }
    }

    /// Room for more reading: both budgets have at least one unit free.
    #[inline]
    pub fn has_room(&self) -> bool {
        self.used_records < self.max_records && self.used_bytes < self.max_bytes
    }

    /// Admit an arrived chunk of `records` records and `bytes` bytes.
    ///
    /// Admitted when it fits both budgets next to what is used, or when the
    /// pool is empty (a chunk larger than the whole budget is admitted alone:
    /// never livelocks). Otherwise `Err(PoolFull)` and nothing changes.
    #[inline]
    pub fn try_admit(&mut self, records: u64, bytes: u64) -> Result<Permit, PoolFull> {
        let fits = match (
            self.used_records.checked_add(records),
            self.used_bytes.checked_add(bytes),
        ) {
            (Some(r), Some(b)) => r <= self.max_records && b <= self.max_bytes,
            _ => false,
        };
        let empty = self.used_records == 0 && self.used_bytes == 0;
        if !fits && !empty {
            return Err(PoolFull {
                records,
                bytes,
                used_records: self.used_records,
                used_bytes: self.used_bytes,
                max_records: self.max_records,
                max_bytes: self.max_bytes,
            });
        }
        // In an empty pool the sums cannot overflow.
        self.used_records += records;
        self.used_bytes += bytes;
        let permit = Permit { records, bytes };
        if !permit.is_empty() {
            self.live_permits += 1;
        }
        Ok(permit)
    }

    /// Turn a read's reservation into the admission of what the read brought
    /// (`records`, `bytes`): the permit shrinks, giving the rest back, or
    /// grows past the budget when the answer was larger than reserved (it is
    /// already in memory; `has_room` stays false until usage is back under
    /// the budget). Never refuses.
    pub fn exchange(&mut self, reservation: Permit, records: u64, bytes: u64) -> Permit {
        let was_empty = reservation.is_empty();
        self.used_records = self
            .used_records
            .saturating_sub(reservation.records)
            .saturating_add(records);
        self.used_bytes = self
            .used_bytes
            .saturating_sub(reservation.bytes)
            .saturating_add(bytes);
        let permit = Permit { records, bytes };
        match (was_empty, permit.is_empty()) {
            (true, false) => self.live_permits += 1,
            (false, true) => self.live_permits = self.live_permits.saturating_sub(1),
            _ => {}
        }
        permit
    }

    /// Give capacity back. Releasing an empty permit is a no-op.
    #[inline]
    pub fn release(&mut self, permit: Permit) {
        if permit.is_empty() {
            return;
        }
        // Permits are only minted by a pool, so these cannot underflow unless
        // a permit of another pool is released here; saturate rather than
        // panic (the simulator's `used == sum of live permits` oracle flags
        // it).
        self.used_records = self.used_records.saturating_sub(permit.records);
        self.used_bytes = self.used_bytes.saturating_sub(permit.bytes);
        self.live_permits = self.live_permits.saturating_sub(1);
    }

    /// Split part of `permit` off into a new permit (for one delivered batch
    /// of a larger admitted chunk). Asking for more than it holds takes what
    /// it holds. Total usage is unchanged; the live count grows by one only
    /// when both parts hold something.
    #[inline]
    pub fn split(&mut self, permit: &mut Permit, records: u64, bytes: u64) -> Permit {
        let part = Permit {
            records: records.min(permit.records),
            bytes: bytes.min(permit.bytes),
        };
        permit.records -= part.records;
        permit.bytes -= part.bytes;
        if !part.is_empty() && !permit.is_empty() {
            self.live_permits += 1;
        }
        part
    }

    /// Records held by live permits.
    pub fn used_records(&self) -> u64 {
        self.used_records
    }

    /// Bytes held by live permits.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// Non-empty permits outstanding (admitted or split off, not released).
    pub fn live_permits(&self) -> u64 {
        self.live_permits
    }

    /// Record budget.
    pub fn max_records(&self) -> u64 {
        self.max_records
    }

    /// Byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Queue `waiter` for a wake-up (it found no room, or its chunk did not
    /// fit). FIFO; queueing a waiter that already waits keeps its first
    /// place.
    pub fn wait(&mut self, waiter: W) {
        if self.tickets.contains_key(&waiter) {
            return;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.insert(ticket, waiter.clone());
        self.tickets.insert(waiter, ticket);
    }

    /// Remove `waiter` from the queue (its lease was lost, its shard ended,
    /// shutdown). Unknown waiters are ignored.
    pub fn cancel_wait(&mut self, waiter: &W) {
        if let Some(ticket) = self.tickets.remove(waiter) {
            self.queue.remove(&ticket);
        }
    }

    /// The next waiter to wake, in FIFO order, when the pool has room; `None`
    /// when it is full or nobody waits. The returned waiter leaves the queue.
    pub fn poll_wake(&mut self) -> Option<W> {
        if !self.has_room() {
            return None;
        }
        let (_, waiter) = self.queue.pop_first()?;
        self.tickets.remove(&waiter);
        Some(waiter)
    }

    /// How many readers wait.
    pub fn waiters(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn pool(records: u64, bytes: u64) -> Pool<u32> {
        Pool::new(records, bytes)
    }

    #[test]
    fn oversized_event_admitted_when_pool_empty() {
        let mut p = pool(10, 1000);
        let big = p.try_admit(50, 5000).expect("empty pool admits anything");
        assert_eq!((p.used_records(), p.used_bytes()), (50, 5000));
        assert!(!p.has_room());
        // Alone: nothing else gets in, not even a tiny chunk.
        assert!(p.try_admit(1, 1).is_err());
        p.release(big);
        assert!(p.has_room());
        assert!(p.try_admit(1, 1).is_ok());
    }

    #[test]
    fn full_pool_refuses_then_admits_after_release() {
        let mut p = pool(10, 1000);
        let a = p.try_admit(6, 100).unwrap();
        let err = p.try_admit(5, 100).unwrap_err();
        assert_eq!(
            err,
            PoolFull {
                records: 5,
                bytes: 100,
                used_records: 6,
                used_bytes: 100,
                max_records: 10,
                max_bytes: 1000
            }
        );
        // Refusal changed nothing.
        assert_eq!(
            (p.used_records(), p.used_bytes(), p.live_permits()),
            (6, 100, 1)
        );
        let b = p.try_admit(4, 100).unwrap();
        assert_eq!(p.used_records(), 10);
        assert!(!p.has_room());
        p.release(a);
        let c = p.try_admit(5, 100).unwrap();
        assert_eq!(p.used_records(), 9);
        p.release(b);
        p.release(c);
        assert_eq!(
            (p.used_records(), p.used_bytes(), p.live_permits()),
            (0, 0, 0)
        );
    }

    #[test]
    fn byte_budget_enforced_independently_of_record_budget() {
        let mut p = pool(1000, 100);
        let a = p.try_admit(1, 80).unwrap();
        assert!(p.has_room());
        assert!(
            p.try_admit(1, 21).is_err(),
            "bytes over budget with records to spare"
        );
        let b = p.try_admit(1, 20).unwrap();
        assert!(!p.has_room(), "byte budget exhausted stops reading");
        assert!(p.try_admit(0, 1).is_err());
        p.release(a);
        p.release(b);

        let mut p = pool(2, 1_000_000);
        let a = p.try_admit(2, 1).unwrap();
        assert!(!p.has_room(), "record budget exhausted stops reading");
        assert!(p.try_admit(1, 1).is_err());
        p.release(a);
    }

    #[test]
    fn zero_sized_permit_is_harmless() {
        let mut p = pool(10, 10);
        let z = p.try_admit(0, 0).unwrap();
        assert!(z.is_empty());
        assert_eq!(p.live_permits(), 0);
        p.release(z);
        assert_eq!(
            (p.used_records(), p.used_bytes(), p.live_permits()),
            (0, 0, 0)
        );
    }

    #[test]
    fn overflowing_request_is_refused_not_panicking() {
        let mut p = pool(10, 10);
        let a = p.try_admit(1, 1).unwrap();
        assert!(p.try_admit(u64::MAX, u64::MAX).is_err());
        p.release(a);
        let huge = p.try_admit(u64::MAX, u64::MAX).unwrap();
        assert!(p.try_admit(1, 0).is_err());
        p.release(huge);
        assert_eq!(p.used_records(), 0);
    }

    #[test]
    fn split_moves_capacity_without_changing_usage() {
        let mut p = pool(100, 1000);
        let mut chunk = p.try_admit(10, 500).unwrap();
        let part = p.split(&mut chunk, 3, 100);
        assert_eq!((part.records(), part.bytes()), (3, 100));
        assert_eq!((chunk.records(), chunk.bytes()), (7, 400));
        assert_eq!(
            (p.used_records(), p.used_bytes(), p.live_permits()),
            (10, 500, 2)
        );
        // Asking for more than it holds takes what it holds.
        let rest = p.split(&mut chunk, 99, 9999);
        assert_eq!((rest.records(), rest.bytes()), (7, 400));
        assert!(chunk.is_empty());
        assert_eq!(
            p.live_permits(),
            2,
            "emptied parent hands its place to the part"
        );
        p.release(chunk);
        p.release(part);
        assert_eq!(p.live_permits(), 1);
        p.release(rest);
        assert_eq!(
            (p.used_records(), p.used_bytes(), p.live_permits()),
            (0, 0, 0)
        );
    }

    #[test]
    fn used_returns_to_zero_after_all_permits_released() {
        let mut rng = Rng::new(0xC0FFEE);
        for _ in 0..200 {
            let mut p = pool(1 + rng.below(200), 1 + rng.below(20_000));
            // (admission that minted it, permit)
            let mut live: Vec<(u32, Permit)> = Vec::new();
            for admission in 0..100 {
                match rng.below(3) {
                    0 => {
                        if let Ok(permit) = p.try_admit(rng.below(50), rng.below(5000)) {
                            live.push((admission, permit));
                        }
                    }
                    1 if !live.is_empty() => {
                        let i = rng.below(live.len() as u64) as usize;
                        let (r, b) = (rng.below(30), rng.below(3000));
                        let part = p.split(&mut live[i].1, r, b);
                        live.push((live[i].0, part));
                    }
                    _ if !live.is_empty() => {
                        let i = rng.below(live.len() as u64) as usize;
                        p.release(live.swap_remove(i).1);
                    }
                    _ => {}
                }
                let sum_r: u64 = live.iter().map(|(_, q)| q.records()).sum();
                let sum_b: u64 = live.iter().map(|(_, q)| q.bytes()).sum();
                let non_empty = live.iter().filter(|(_, q)| !q.is_empty()).count() as u64;
                assert_eq!((p.used_records(), p.used_bytes()), (sum_r, sum_b));
                assert_eq!(p.live_permits(), non_empty);
                // Over budget only through one oversized admission.
                if p.used_records() > p.max_records() || p.used_bytes() > p.max_bytes() {
                    let mut origins = live.iter().filter(|(_, q)| !q.is_empty()).map(|(o, _)| o);
                    let first = origins.next().expect("over budget with no live permit");
                    assert!(origins.all(|o| o == first), "two admissions over budget");
                }
            }
            while let Some((_, permit)) = live.pop() {
                p.release(permit);
            }
            assert_eq!(
                (p.used_records(), p.used_bytes(), p.live_permits()),
                (0, 0, 0)
            );
        }
    }

    #[test]
    fn waiters_woken_in_fifo_order() {
        let mut p = pool(1, 100);
        let a = p.try_admit(1, 1).unwrap();
        for w in [3, 1, 2] {
            p.wait(w);
        }
        p.wait(3); // already waiting: keeps its first place
        assert_eq!(p.waiters(), 3);
        assert_eq!(p.poll_wake(), None, "no wake-up while full");
        p.release(a);
        assert_eq!(p.poll_wake(), Some(3));
        assert_eq!(p.poll_wake(), Some(1));
        p.wait(3); // a woken reader that waits again goes to the back
        assert_eq!(p.poll_wake(), Some(2));
        assert_eq!(p.poll_wake(), Some(3));
        assert_eq!(p.poll_wake(), None);
        assert_eq!(p.waiters(), 0);
    }

    #[test]
    fn cancelled_waiter_is_not_woken() {
        let mut p = pool(10, 100);
        p.wait(1);
        p.wait(2);
        p.wait(3);
        p.cancel_wait(&2);
        p.cancel_wait(&42); // unknown: ignored
        assert_eq!(p.waiters(), 2);
        assert_eq!(p.poll_wake(), Some(1));
        assert_eq!(p.poll_wake(), Some(3));
        assert_eq!(p.poll_wake(), None);
    }

    #[test]
    fn exchange_shrinks_a_reservation_or_grows_it_past_the_budget() {
        let mut p = pool(100, 1000);
        let other = p.try_admit(10, 100).unwrap();
        let res = p.try_admit(50, 800).unwrap();
        assert!(p.try_admit(50, 1).is_err(), "the reservation holds room");
        let got = p.exchange(res, 5, 300);
        assert_eq!((got.records(), got.bytes()), (5, 300));
        assert_eq!(
            (p.used_records(), p.used_bytes(), p.live_permits()),
            (15, 400, 2)
        );
        // An answer larger than its reservation is admitted over budget,
        // and nothing else gets in until usage is back under it.
        let res = p.try_admit(10, 500).unwrap();
        let big = p.exchange(res, 10, 2000);
        assert_eq!(p.used_bytes(), 2400);
        assert!(!p.has_room());
        assert!(p.try_admit(1, 1).is_err());
        p.release(big);
        assert!(p.has_room());
        // An answer without records frees its whole reservation.
        let res = p.try_admit(10, 500).unwrap();
        let none = p.exchange(res, 0, 0);
        assert!(none.is_empty());
        assert_eq!(p.live_permits(), 2);
        p.release(none);
        p.release(got);
        p.release(other);
        assert_eq!(
            (p.used_records(), p.used_bytes(), p.live_permits()),
            (0, 0, 0)
        );
    }

    #[test]
    fn zero_budgets_are_raised_to_one() {
        let mut p = pool(0, 0);
        assert_eq!((p.max_records(), p.max_bytes()), (1, 1));
        assert!(p.has_room());
        let a = p.try_admit(1, 1).unwrap();
        assert!(!p.has_room());
        p.release(a);
    }
}
