//! Logical time, the event queue, per-process clocks and the trace.
//!
//! Models: the simulator's one true timeline (microseconds since the start
//! of a run, [`Micros`]), a discrete-event queue over it, the monotonic
//! clock of each simulated process (offset and rate drift against true
//! time), and the run's trace (a rolling hash of every line plus the last
//! lines for a failure report).
//!
//! Invariants: events pop in (time, insertion order): ties break by the
//! order they were scheduled, never by memory addresses or hashing, so a
//! seed replays byte for byte. A [`Clock`] is strictly monotonic in true
//! time and [`Clock::true_at`] is the first true instant at which the local
//! clock reaches a deadline. Trace lines hold time offsets, never raw
//! `Instant`s, so trace hashes repeat across processes.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

/// True simulated time: microseconds since the start of the run.
pub type Micros = u64;

/// One second in [`Micros`].
pub const SEC: Micros = 1_000_000;
/// One millisecond in [`Micros`].
pub const MS: Micros = 1_000;

struct Entry<E> {
    at: Micros,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Discrete-event queue ordered by (time, scheduling order).
pub struct Queue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E> Queue<E> {
    /// Schedule `event` at `at`.
    pub fn push(&mut self, at: Micros, event: E) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            event,
        });
    }

    /// The earliest event.
    pub fn pop(&mut self) -> Option<(Micros, E)> {
        self.heap.pop().map(|e| (e.at, e.event))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<Micros> {
        self.heap.peek().map(|e| e.at)
    }

    /// Number of scheduled events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A process's monotonic clock: `local = offset + t * (1 + drift_ppm / 1e6)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Local reading at true time 0.
    pub offset_us: Micros,
    /// Rate error in parts per million (e.g. +-10,000 = +-1 %).
    pub drift_ppm: i64,
}

impl Clock {
    const PPM: i128 = 1_000_000;

    /// The local reading at true time `t`.
    pub fn local(&self, t: Micros) -> Micros {
        let scaled = i128::from(t) * (Self::PPM + i128::from(self.drift_ppm)) / Self::PPM;
        self.offset_us + u64::try_from(scaled.max(0)).unwrap_or(u64::MAX)
    }

    /// The first true time at which the local clock reads at least `local`.
    pub fn true_at(&self, local: Micros) -> Micros {
        let Some(span) = local.checked_sub(self.offset_us) else {
            return 0;
        };
        let rate = Self::PPM + i128::from(self.drift_ppm);
        let mut t =
            u64::try_from((i128::from(span) * Self::PPM + rate - 1) / rate).unwrap_or(u64::MAX);
        while t > 0 && self.local(t - 1) >= local {
            t -= 1;
        }
        while self.local(t) < local {
            t += 1;
        }
        t
    }
}

/// How many trace lines a failure report shows.
pub const TRACE_TAIL: usize = 400;

/// The run's trace: a rolling FNV-1a hash of every line and the last
/// [`TRACE_TAIL`] lines.
pub struct Trace {
    hash: u64,
    lines: u64,
    tail: VecDeque<String>,
    buf: String,
    keep: usize,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            lines: 0,
            tail: VecDeque::new(),
            buf: String::new(),
            keep: TRACE_TAIL,
        }
    }
}

impl Trace {
    /// A trace keeping the last `keep` lines.
    pub fn keeping(keep: usize) -> Self {
        Trace {
            keep,
            ..Trace::default()
        }
    }

    /// Record one line at true time `t`.
    pub fn line(&mut self, t: Micros, args: std::fmt::Arguments<'_>) {
        self.buf.clear();
        let _ = write!(self.buf, "{:>6}.{:06} ", t / SEC, t % SEC);
        let _ = self.buf.write_fmt(args);
        for b in self.buf.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.lines += 1;
        if self.keep > 0 {
            // Reuse the oldest line's buffer: no allocation per line.
            let mut line = if self.tail.len() == self.keep {
                self.tail.pop_front().unwrap_or_default()
            } else {
                String::new()
            };
            line.clear();
            line.push_str(&self.buf);
            self.tail.push_back(line);
        }
    }

    /// The hash of every line so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Number of lines so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The last lines.
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_breaks_ties_by_scheduling_order() {
        let mut q = Queue::default();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        assert_eq!(q.pop(), Some((1, "a")));
        assert_eq!(q.pop(), Some((5, "b")));
        assert_eq!(q.pop(), Some((5, "c")));
    }

    #[test]
    fn clock_true_at_is_first_instant_reaching_deadline() {
        for drift in [-10_000, 0, 7_777, 10_000] {
            let c = Clock {
                offset_us: 123_456,
                drift_ppm: drift,
            };
            for local in [123_456, 123_457, 5_000_000, 3_600_000_123] {
                let t = c.true_at(local);
                assert!(c.local(t) >= local);
                assert!(t == 0 || c.local(t - 1) < local);
            }
        }
    }
}
