//! Exponential backoff with jitter, as a pure value.
//!
//! SPEC 6 (Enhanced Fan-Out errors): every retryable failure is retried with
//! exponential backoff starting at 300 ms, multiplied by 1.5 per attempt,
//! with +-50 % jitter and a 5 s cap, and no give-up. The same schedule is
//! used wherever the core retries (polling, lease-table writes).
//!
//! Rules encoded here, for attempt `a` (0-based):
//! - nominal delay `n(a) = min(base * 1.5^a, cap)`, computed exactly in
//!   nanoseconds (300, 450, 675, 1012.5, 1518.75, 2278.125, 3417.1875 ms,
//!   then 5000 ms for ever);
//! - the returned delay is uniform in [`jitter_bounds`]`(n(a))`, that is
//!   `[n/2, 3n/2]`, then clamped to `cap`.
//!
//! Invariants: `nominal() <= cap` at all times; every delay lies in
//! `[nominal / 2, min(nominal * 3 / 2, cap)]`; the nominal sequence never
//! decreases until [`Backoff::reset`]. The value holds no clock and no RNG:
//! the caller adds the delay to its `now`, and passes the seeded [`Rng`], so
//! the schedule is deterministic for a seed.
//!
//! Minimum spacing rules that are not backoff (1 s between SubscribeToShard
//! calls, 5 s after ResourceInUse) belong to the shard machine, which takes
//! the later of its own deadline and the backoff delay.

use std::time::Duration;

use crate::rng::Rng;

/// Retry schedule state: which attempt comes next and its nominal delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    nominal: Duration,
}

impl Backoff {
    /// First nominal delay (SPEC 6).
    pub const BASE: Duration = Duration::from_millis(300);
    /// Growth per attempt, as the exact ratio `(numerator, denominator)`
    /// (x1.5, SPEC 6).
    pub const MULTIPLIER: (u32, u32) = (3, 2);
    /// Largest delay ever returned (SPEC 6).
    pub const CAP: Duration = Duration::from_secs(5);

    /// The SPEC 6 schedule: 300 ms, x1.5, 5 s cap.
    pub fn new() -> Self {
        Self::with(Self::BASE, Self::CAP)
    }

    /// A schedule with another first delay and cap (same x1.5 growth and
    /// +-50 % jitter). A `base` above `cap` starts at `cap`.
    pub fn with(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
            nominal: base.min(cap),
        }
    }

    /// The delay to wait before the next attempt, then advances the
    /// schedule. Uniform in [`jitter_bounds`]`(self.nominal())`, clamped to
    /// the cap.
    pub fn next_delay(&mut self, rng: &mut Rng) -> Duration {
        let (low, high) = jitter_bounds(self.nominal);
        let span = high - low;
        // Delays beyond u64 nanoseconds (584 years) keep their bounds but
        // lose uniformity in the last draw; real schedules are far below.
        let span_nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
        let offset = Duration::from_nanos(rng.below(span_nanos.saturating_add(1)));
        let delay = (low + offset).min(self.cap);

        self.attempt = self.attempt.saturating_add(1);
        let (num, den) = Self::MULTIPLIER;
        self.nominal = self
            .nominal
            .checked_mul(num)
            .map_or(self.cap, |grown| (grown / den).min(self.cap));
        delay
    }

    /// The un-jittered delay the next [`Backoff::next_delay`] is drawn
    /// around.
    pub fn nominal(&self) -> Duration {
        self.nominal
    }

    /// How many delays were handed out since creation or the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (call after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.nominal = self.base.min(self.cap);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// The +-50 % jitter range `[nominal / 2, nominal * 3 / 2]` (the upper bound
/// saturates at `Duration::MAX`).
///
/// A delay `d` drawn by [`Backoff::next_delay`] for nominal `n` and cap `c`
/// satisfies `low <= d <= min(high, c)`; the simulator's oracle checks
/// observed retry delays with this.
pub fn jitter_bounds(nominal: Duration) -> (Duration, Duration) {
    let half = nominal / 2;
    (half, nominal.saturating_add(half))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nominal_sequence_is_exact_and_capped_at_five_seconds() {
        let mut b = Backoff::new();
        let mut rng = Rng::new(1);
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(b.nominal());
            let _ = b.next_delay(&mut rng);
        }
        let want = [
            Duration::from_micros(300_000),
            Duration::from_micros(450_000),
            Duration::from_micros(675_000),
            Duration::from_micros(1_012_500),
            Duration::from_nanos(1_518_750_000),
            Duration::from_nanos(2_278_125_000),
            Duration::from_nanos(3_417_187_500),
            ms(5000),
            ms(5000),
            ms(5000),
        ];
        assert_eq!(got, want);
        assert_eq!(b.attempt(), 10);
    }

    #[test]
    fn backoff_stays_within_jitter_bounds() {
        let mut rng = Rng::new(2024);
        let mut low_half = 0u32;
        let mut draws = 0u32;
        for _ in 0..200 {
            let mut b = Backoff::new();
            for _ in 0..12 {
                let nominal = b.nominal();
                let (low, high) = jitter_bounds(nominal);
                let d = b.next_delay(&mut rng);
                assert!(d >= low, "{d:?} below {low:?} for nominal {nominal:?}");
                assert!(d <= high.min(Backoff::CAP), "{d:?} above bound");
                if d < nominal {
                    low_half += 1;
                }
                draws += 1;
            }
        }
        // The jitter actually spreads both ways (not a constant factor).
        // Capped attempts push mass to the cap, so only bound it loosely.
        assert!(
            low_half > draws / 4 && low_half < draws * 3 / 4,
            "{low_half}/{draws}"
        );
    }

    #[test]
    fn jitter_bounds_are_half_and_one_and_a_half_nominal() {
        assert_eq!(jitter_bounds(ms(300)), (ms(150), ms(450)));
        assert_eq!(jitter_bounds(ms(5000)), (ms(2500), ms(7500)));
        assert_eq!(
            jitter_bounds(Duration::ZERO),
            (Duration::ZERO, Duration::ZERO)
        );
        assert_eq!(jitter_bounds(Duration::MAX).1, Duration::MAX);
    }

    #[test]
    fn delays_are_deterministic_for_a_seed() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut b = Backoff::new();
            (0..20).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn reset_returns_to_base_delay() {
        let mut rng = Rng::new(3);
        let mut b = Backoff::new();
        for _ in 0..5 {
            let _ = b.next_delay(&mut rng);
        }
        assert_ne!(b, Backoff::new());
        b.reset();
        assert_eq!(b, Backoff::new());
        assert_eq!(b.nominal(), Backoff::BASE);
        assert_eq!(b.attempt(), 0);
    }

    #[test]
    fn backoff_never_gives_up() {
        let mut rng = Rng::new(4);
        let mut b = Backoff::new();
        for _ in 0..100_000 {
            let d = b.next_delay(&mut rng);
            assert!(d >= Backoff::CAP / 2 || b.attempt() < 10);
        }
        assert_eq!(b.nominal(), Backoff::CAP);
        assert_eq!(b.attempt(), 100_000);
    }

    #[test]
    fn custom_base_above_cap_starts_at_cap() {
        let mut rng = Rng::new(5);
        let mut b = Backoff::with(ms(10_000), ms(1000));
        assert_eq!(b.nominal(), ms(1000));
        for _ in 0..50 {
            let d = b.next_delay(&mut rng);
            assert!((ms(500)..=ms(1000)).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let mut rng = Rng::new(6);
        let mut b = Backoff::with(Duration::MAX / 2, Duration::MAX);
        for _ in 0..5 {
            let nominal = b.nominal();
            let d = b.next_delay(&mut rng);
            assert!(d >= nominal / 2);
        }
        assert_eq!(b.nominal(), Duration::MAX);
    }
}
