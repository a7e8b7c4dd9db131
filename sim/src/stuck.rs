//! The stuck-request oracle: one DynamoDB request that hangs never fences
//! a healthy worker.
//!
//! Models: for each worker incarnation, when its DynamoDB requests were
//! black-holed (sent, never answered, failed only at the driver's call
//! deadline, [`crate::net::CALL_DEADLINE`]) and when any other fault hit it
//! (an injected request fault, a partition, a stall: the world's
//! `request_fault` and `disrupt`).
//!
//! Rule checked ("no self-fence caused by one stuck request", issue 12): a
//! worker that fences itself (`LostReason::SelfFenced`) had, within the
//! horizon of its fence rules before (the longer of the failover time and
//! twice the hand-off timeout: an owner whose heartbeat reads fail fences
//! that long after its last successful one), either a fault other than
//! black-holed requests or at least two black-holed requests hanging in
//! that window. One hung heartbeat write must not
//! fence: the core sends a fresh one a heartbeat interval later and counts
//! the renewal from whichever succeeds.
//!
//! Invariants: it never changes the world and draws nothing; its history
//! per incarnation keeps only what a failover window can still need.
//!
//! Imports: [`crate::sched`]'s time units and [`crate::net::CALL_DEADLINE`].

use std::collections::BTreeMap;

use crate::sched::Micros;

/// History kept: longer than any failover window the sim configures.
const KEEP: Micros = 120 * crate::sched::SEC;

/// Black-holed requests and other faults, per (process, incarnation).
#[derive(Debug, Default)]
pub struct Stuck {
    /// Send instants of black-holed DynamoDB requests.
    holes: BTreeMap<(usize, u64), Vec<Micros>>,
    /// The latest instant any other fault was active.
    other: BTreeMap<(usize, u64), Micros>,
    /// Black-holed requests, all processes (measured).
    pub black_holed: u64,
    /// Of which heartbeat writes (the case the oracle is about).
    pub black_holed_beats: u64,
}

impl Stuck {
    /// A DynamoDB request of `id` sent at `now` hangs until the deadline
    /// (`beat`: a heartbeat write).
    pub fn black_holed(&mut self, id: (usize, u64), now: Micros, beat: bool) {
        self.black_holed += 1;
        self.black_holed_beats += u64::from(beat);
        let v = self.holes.entry(id).or_default();
        v.retain(|&t| t + KEEP > now);
        v.push(now);
    }

    /// Whether a black-holed request of `id` still hangs at `now` (it is
    /// no failover survivor meanwhile: a hung heartbeat read delays its
    /// verdicts until the deadline).
    pub fn hanging(&self, id: (usize, u64), now: Micros) -> bool {
        self.holes
            .get(&id)
            .is_some_and(|v| v.iter().any(|&t| t + crate::net::CALL_DEADLINE > now))
    }

    /// Another fault hits `id` until `until` (`now` for a request fault).
    pub fn fault(&mut self, id: (usize, u64), until: Micros) {
        let at = self.other.entry(id).or_default();
        *at = (*at).max(until);
    }

    /// `id` fenced itself at `now`, its fence rules looking `horizon` back:
    /// `Err` when nothing but one black-holed request can explain it.
    pub fn self_fenced(
        &self,
        id: (usize, u64),
        now: Micros,
        horizon: Micros,
    ) -> Result<(), String> {
        let from = now.saturating_sub(horizon);
        if self.other.get(&id).is_some_and(|&t| t >= from) {
            return Ok(());
        }
        let holes = self.holes.get(&id).map_or(0, |v| {
            v.iter()
                .filter(|&&t| t + crate::net::CALL_DEADLINE >= from)
                .count()
        });
        if holes == 1 {
            return Err(format!(
                "fenced itself with one black-holed DynamoDB request and no other fault in the \
                 last {} ms",
                horizon / crate::sched::MS
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::SEC;

    const F: Micros = 10 * SEC;

    #[test]
    fn a_self_fence_after_one_black_holed_request_and_no_other_fault_is_reported() {
        let mut s = Stuck::default();
        s.black_holed((0, 1), 100 * SEC, true);
        assert!(s.self_fenced((0, 1), 105 * SEC, F).is_err());
        // Another incarnation, or a hole that stopped hanging before the
        // horizon, explains nothing.
        assert!(s.self_fenced((0, 2), 105 * SEC, F).is_ok());
        assert!(s.self_fenced((0, 1), 124 * SEC, F).is_err());
        assert!(s.self_fenced((0, 1), 126 * SEC, F).is_ok());
    }

    #[test]
    fn a_self_fence_with_another_fault_or_two_black_holes_is_excused() {
        let mut s = Stuck::default();
        s.black_holed((0, 1), 100 * SEC, true);
        s.fault((0, 1), 101 * SEC);
        assert!(s.self_fenced((0, 1), 105 * SEC, F).is_ok());
        let mut t = Stuck::default();
        t.black_holed((0, 1), 100 * SEC, true);
        t.black_holed((0, 1), 102 * SEC, false);
        assert!(t.self_fenced((0, 1), 105 * SEC, F).is_ok());
    }

    #[test]
    fn a_process_hangs_until_the_call_deadline_of_its_black_holed_request() {
        let mut s = Stuck::default();
        s.black_holed((0, 1), 100 * SEC, false);
        assert!(s.hanging((0, 1), 100 * SEC + crate::net::CALL_DEADLINE - 1));
        assert!(!s.hanging((0, 1), 100 * SEC + crate::net::CALL_DEADLINE));
    }
}
