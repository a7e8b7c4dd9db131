//! The memory oracle: what a worker process holds stays within its pool
//! budget (SPEC 7), counting reads in flight.
//!
//! Models: the pool usage of each process (admitted records plus the room
//! reserved for the reads it has sent), read off the real worker after
//! every step, against its budgets; and, for each read the world sees sent,
//! the room the worker reserved for it, so that an answer larger than its
//! reservation is told apart from room never reserved.
//!
//! Rules checked ("bytes held <= budget"):
//! - every Pull and GetRecords leaves with room reserved for it
//!   (`Worker::read_reservation`), so what the network may still bring is
//!   counted before it comes;
//! - an answer is held at its wire charge until it is decoded: its JSON
//!   (base64 data, 4/3 of the payload, and [`JSON_FIELDS_PER_RECORD`] per
//!   Kinesis record) and the records it decodes into (payload and
//!   [`DECODED_PER_RECORD`] per user record) are in memory at once
//!   ([`decoding_bytes`]); that peak, not the decoded size, is what its
//!   reservation must cover (kinesin charged the decoded size: 2.4 times
//!   the budget in flight, `scripts/bench.sh memory-cold`);
//! - usage above a budget never grows, except by the part of one answer's
//!   peak that exceeded its reservation (records larger than the shard had
//!   shown: they are already in memory); in particular no read is reserved
//!   while over budget, and nothing else is admitted; the largest peak
//!   above the byte budget (what else was held plus the answer while
//!   decoded) is measured (`max_decoding_over_bytes`);
//! - no chunk ever waits outside the pool (`WorkerStats::chunks_parked`
//!   stays 0): a reserved read's answer is admitted at once.
//!
//! Invariants: state per (process, incarnation, chunk), forgotten when the
//! answer is fed (a read whose answer never comes, because its process
//! died or its subscription was cancelled, stays: bounded by the reads in
//! flight at that moment); no draw from the run's random
//! stream (it changes no trace).
//!
//! Imports: `kinesin_core` (the worker's getters, the chunk type) only.

use std::collections::BTreeMap;

use kinesin_core::ids::ChunkId;
use kinesin_core::io::Chunk;
use kinesin_core::worker::Worker;

/// JSON of one Kinesis record besides its data, in a GetRecords answer or
/// an EFO event: `SequenceNumber` (56 digits), `ApproximateArrivalTimestamp`,
/// the field names and punctuation.
pub const JSON_FIELDS_PER_RECORD: u64 = 130;

/// What one decoded user record holds besides its payload (its sequence
/// number and the structure around its data and key).
pub const DECODED_PER_RECORD: u64 = 100;

/// Bytes in memory while an answer is decoded: its JSON and its records.
pub fn decoding_bytes(data: &Chunk) -> u64 {
    let payload = data.bytes();
    let json = payload.div_ceil(3) * 4 + u64::from(data.kinesis_records) * JSON_FIELDS_PER_RECORD;
    let decoded = payload + data.records.len() as u64 * DECODED_PER_RECORD;
    json + decoded
}

/// Reads sent and their reservations, and the excess of the answer being
/// fed.
#[derive(Debug, Default)]
pub struct Memory {
    /// (process, incarnation, chunk) -> (records, bytes) reserved when sent.
    sent: BTreeMap<(usize, u64, ChunkId), (u64, u64)>,
    /// What the answer fed in the current step brought beyond its
    /// reservation (records, bytes).
    excess: (u64, u64),
    /// Answers larger than their reservation (measured, not asserted).
    pub over_reservation: u64,
    /// The largest usage seen above the byte budget, in bytes.
    pub max_over_bytes: u64,
    /// The largest peak above the byte budget while an answer was decoded
    /// (usage before it, less its reservation, plus [`decoding_bytes`]).
    pub max_decoding_over_bytes: u64,
}

impl Memory {
    /// A read of `chunk` leaves process `p`: its room must be reserved.
    pub fn read_sent(
        &mut self,
        p: usize,
        inc: u64,
        chunk: ChunkId,
        w: &Worker,
    ) -> Result<(), String> {
        match w.read_reservation(chunk) {
            Some(r) => {
                self.sent.insert((p, inc, chunk), r);
                Ok(())
            }
            None => Err(format!(
                "a read of {chunk:?} was sent with no pool room reserved for it"
            )),
        }
    }

    /// The answer of `chunk` is about to be fed to process `p`, whose
    /// worker is `w`.
    pub fn answer(&mut self, p: usize, inc: u64, chunk: ChunkId, data: &Chunk, w: &Worker) {
        let Some((r, b)) = self.sent.remove(&(p, inc, chunk)) else {
            return;
        };
        let (records, bytes) = (data.records.len() as u64, decoding_bytes(data));
        self.excess = (records.saturating_sub(r), bytes.saturating_sub(b));
        if self.excess != (0, 0) {
            self.over_reservation += 1;
        }
        // Still reserved: the reservation is part of the usage.
        let peak = w.pool_used().1.saturating_sub(b).saturating_add(bytes);
        self.max_decoding_over_bytes = self
            .max_decoding_over_bytes
            .max(peak.saturating_sub(w.config().pool_bytes));
    }

    /// After one step of a worker whose pool usage was `before`: usage over
    /// a budget grew by no more than the excess of the answer fed in it.
    pub fn check_step(&mut self, before: (u64, u64), w: &Worker) -> Result<(), String> {
        let excess = std::mem::take(&mut self.excess);
        let after = w.pool_used();
        let max = (w.config().pool_records, w.config().pool_bytes);
        if w.stats().chunks_parked != 0 {
            return Err(format!(
                "{} chunks waited outside the pool (a read answered without its room)",
                w.stats().chunks_parked
            ));
        }
        let dims = [
            ("records", before.0, after.0, max.0, excess.0),
            ("bytes", before.1, after.1, max.1, excess.1),
        ];
        for (what, before, after, max, excess) in dims {
            if after > max && after > before.max(max).saturating_add(excess) {
                return Err(format!(
                    "pool {what} {after} over the budget {max} (before the step {before}, \
                     answer beyond its reservation {excess})"
                ));
            }
        }
        self.max_over_bytes = self.max_over_bytes.max(after.1.saturating_sub(max.1));
        Ok(())
    }
}
