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
use std::fmt;

use kinesin_core::rng::Rng;

/// True simulated time: microseconds since the start of the run.
pub type Micros = u64;

/// One second in [`Micros`].
pub const SEC: Micros = 1_000_000;
/// One millisecond in [`Micros`].
pub const MS: Micros = 1_000;

/// A heap entry: the event itself waits in the queue's slab, so sifting
/// moves 24 bytes, not whole events (actions and inputs are large).
#[derive(PartialEq, Eq)]
struct Entry {
    at: Micros,
    seq: u64,
    slot: usize,
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        // `seq` is unique, so `slot` never decides.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Discrete-event queue ordered by (time, scheduling order).
pub struct Queue<E> {
    heap: BinaryHeap<Entry>,
    events: Vec<Option<E>>,
    free: Vec<usize>,
    seq: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<E> Queue<E> {
    /// Schedule `event` at `at`.
    pub fn push(&mut self, at: Micros, event: E) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.heap.push(Entry {
            at,
            seq: self.seq,
            slot,
        });
    }

    /// The earliest event.
    pub fn pop(&mut self) -> Option<(Micros, E)> {
        let e = self.heap.pop()?;
        let event = self.events[e.slot].take()?;
        self.free.push(e.slot);
        Some((e.at, event))
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

/// A duration in `[lo, hi)` microseconds, drawn from `rng` (one draw).
pub fn between(rng: &mut Rng, lo: Micros, hi: Micros) -> Micros {
    lo + rng.below((hi - lo).max(1))
}

/// An exponentially distributed duration with this mean (one draw).
pub fn exp(rng: &mut Rng, mean: Micros) -> Micros {
    let u = rng.unit_f64().max(1e-12);
    (-(u.ln()) * mean as f64) as Micros
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
        // u64 arithmetic while it cannot overflow (any run: hours, not
        // centuries); i128 (slow division) otherwise. Same result.
        let rate = Self::PPM + i128::from(self.drift_ppm);
        if let (Ok(rate), true) = (u64::try_from(rate), t < 1 << 40) {
            return self.offset_us + t * rate / Self::PPM as u64;
        }
        let scaled = i128::from(t) * rate / Self::PPM;
        self.offset_us + u64::try_from(scaled.max(0)).unwrap_or(u64::MAX)
    }

    /// The first true time at which the local clock reads at least `local`.
    pub fn true_at(&self, local: Micros) -> Micros {
        let Some(span) = local.checked_sub(self.offset_us) else {
            return 0;
        };
        let rate = Self::PPM + i128::from(self.drift_ppm);
        let mut t = match u64::try_from(rate) {
            Ok(r) if r > 0 && span < 1 << 40 => (span * Self::PPM as u64).div_ceil(r),
            _ => {
                u64::try_from((i128::from(span) * Self::PPM + rate - 1) / rate).unwrap_or(u64::MAX)
            }
        };
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

/// "00" to "99": two digits per division when printing numbers.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// One trace line being written: bytes (ASCII in practice), pushed
/// directly by the hot call sites or formatted through [`fmt::Write`].
#[derive(Default)]
pub struct TraceLine {
    bytes: Vec<u8>,
}

impl TraceLine {
    /// Append text.
    pub fn push_str(&mut self, s: &str) {
        self.bytes.extend_from_slice(s.as_bytes());
    }

    /// Append one character.
    pub fn push(&mut self, c: char) {
        let mut utf8 = [0u8; 4];
        self.push_str(c.encode_utf8(&mut utf8));
    }

    /// Append `n` as `{}` prints it, without the formatting machinery.
    pub fn push_u64(&mut self, mut n: u64) {
        if n < 10 {
            self.bytes.push(b'0' + n as u8);
            return;
        }
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            at -= 2;
            digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            at -= 2;
            digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        } else {
            at -= 1;
            digits[at] = b'0' + n as u8;
        }
        self.bytes.extend_from_slice(&digits[at..]);
    }

    /// Append `{:>6}.{:06} ` of (seconds, microseconds) of `t`: the prefix
    /// of every line.
    fn push_time(&mut self, t: Micros) {
        let mut digits = [b' '; 32];
        let mut end = digits.len();
        let mut put = |d: u8| {
            end -= 1;
            digits[end] = d;
        };
        put(b' ');
        let mut us = t % SEC;
        for _ in 0..6 {
            put(b'0' + (us % 10) as u8);
            us /= 10;
        }
        put(b'.');
        let mut secs = t / SEC;
        let mut width = 0;
        loop {
            put(b'0' + (secs % 10) as u8);
            secs /= 10;
            width += 1;
            if secs == 0 {
                break;
            }
        }
        while width < 6 {
            put(b' ');
            width += 1;
        }
        self.bytes.extend_from_slice(&digits[end..]);
    }
}

impl fmt::Write for TraceLine {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// Fold one line into the rolling trace hash: its bytes as little-endian
/// 8-byte words (the last one zero-padded), then its length, each mixed
/// in FxHash style. Word at a time: the simulator hashes every line.
fn mix_line(mut hash: u64, line: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut mix = |w: u64| hash = (hash.rotate_left(5) ^ w).wrapping_mul(K);
    let mut words = line.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        mix(u64::from_le_bytes(b));
    }
    let rest = words.remainder();
    let mut b = [0u8; 8];
    b[..rest.len()].copy_from_slice(rest);
    mix(u64::from_le_bytes(b));
    mix(line.len() as u64);
    hash
}

/// A trace line kept as numbers: hashed as words, turned into text only
/// when a failure report shows it (the simulator's most frequent lines).
/// What `kind` and `words` mean is the writer's business: it renders them
/// ([`Trace::tail_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packed {
    /// Which line.
    pub kind: u8,
    /// Its fields.
    pub words: [u64; 6],
}

/// Drop the oldest kept line once `keep` are kept, returning it.
trait Ring<T> {
    fn pop_front_if_full(&mut self, keep: usize) -> Option<T>;
}

impl<T> Ring<T> for VecDeque<T> {
    fn pop_front_if_full(&mut self, keep: usize) -> Option<T> {
        if self.len() >= keep {
            self.pop_front()
        } else {
            None
        }
    }
}

/// A kept line: text, or numbers rendered when shown.
enum Kept {
    Text(Vec<u8>),
    Packed(Micros, Packed),
}

/// The run's trace: a rolling hash of every line (`mix_line`) and the
/// last [`TRACE_TAIL`] lines.
pub struct Trace {
    hash: u64,
    lines: u64,
    tail: VecDeque<Kept>,
    buf: TraceLine,
    keep: usize,
    /// The time of the last line and its prefix (most events write
    /// several lines at one instant).
    last_time: Option<Micros>,
    prefix: Vec<u8>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            lines: 0,
            tail: VecDeque::new(),
            buf: TraceLine::default(),
            keep: TRACE_TAIL,
            last_time: None,
            prefix: Vec::new(),
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
    pub fn line(&mut self, t: Micros, args: fmt::Arguments<'_>) {
        self.line_with(t, |buf| {
            let _ = fmt::Write::write_fmt(buf, args);
        });
    }

    /// Record one line at true time `t`, its text appended by `write` (the
    /// hot lines push their text directly: see `trace_fmt::brief_action`).
    pub fn line_with(&mut self, t: Micros, write: impl FnOnce(&mut TraceLine)) {
        self.buf.bytes.clear();
        if self.last_time == Some(t) {
            self.buf.bytes.extend_from_slice(&self.prefix);
        } else {
            self.buf.push_time(t);
            self.prefix.clear();
            self.prefix.extend_from_slice(&self.buf.bytes);
            self.last_time = Some(t);
        }
        write(&mut self.buf);
        self.hash = mix_line(self.hash, &self.buf.bytes);
        self.lines += 1;
        if self.keep > 0 {
            // Reuse the oldest line's buffer: no allocation per line.
            let mut line = match self.tail.pop_front_if_full(self.keep) {
                Some(Kept::Text(line)) => line,
                _ => Vec::new(),
            };
            line.clear();
            line.extend_from_slice(&self.buf.bytes);
            self.tail.push_back(Kept::Text(line));
        }
    }

    /// Record one [`Packed`] line at true time `t`.
    pub fn packed(&mut self, t: Micros, line: Packed) {
        let mut words = [0u64; 8];
        words[0] = t;
        words[1] = u64::from(line.kind) | 1 << 63;
        words[2..].copy_from_slice(&line.words);
        let mut bytes = [0u8; 64];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        self.hash = mix_line(self.hash, &bytes);
        self.lines += 1;
        if self.keep > 0 {
            let _ = self.tail.pop_front_if_full(self.keep);
            self.tail.push_back(Kept::Packed(t, line));
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

    /// The last lines, [`Packed`] ones rendered by `render` (their text
    /// after the time prefix).
    pub fn tail_with<'a>(
        &'a self,
        render: impl Fn(&Packed) -> String + 'a,
    ) -> impl Iterator<Item = String> + 'a {
        self.tail.iter().map(move |l| match l {
            Kept::Text(l) => String::from_utf8_lossy(l).into_owned(),
            Kept::Packed(t, p) => {
                let mut line = TraceLine::default();
                line.push_time(*t);
                line.push_str(&render(p));
                String::from_utf8_lossy(&line.bytes).into_owned()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_time_prefix_matches_padded_format() {
        for t in [
            0,
            1,
            999_999,
            SEC,
            12 * SEC + 345,
            999_999 * SEC + 1,
            1_234_567 * SEC + 7,
        ] {
            let mut line = TraceLine::default();
            line.push_time(t);
            line.push_u64(t);
            for n in [0, 9, 10, 99, 100, 101, 1_000_000, u64::MAX] {
                let mut l = TraceLine::default();
                l.push_u64(n);
                assert_eq!(String::from_utf8(l.bytes).unwrap(), n.to_string());
            }
            assert_eq!(
                String::from_utf8(line.bytes).unwrap(),
                format!("{:>6}.{:06} {t}", t / SEC, t % SEC)
            );
        }
    }

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
    fn clock_fast_path_matches_wide_arithmetic() {
        for drift in [-10_000i64, -1, 0, 7_777, 10_000] {
            let c = Clock {
                offset_us: 42,
                drift_ppm: drift,
            };
            for t in [
                0u64,
                1,
                999_999,
                3_600_000_000,
                (1 << 40) - 1,
                1 << 40,
                1 << 50,
            ] {
                let wide = i128::from(t) * (1_000_000 + i128::from(drift)) / 1_000_000;
                assert_eq!(c.local(t), 42 + u64::try_from(wide).unwrap(), "{drift} {t}");
            }
        }
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
