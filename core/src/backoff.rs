//! Exponential backoff with full jitter, the one every retry loop in quiver uses: the registry
//! sync client, the Redis store's reconnects and notification subscribers, materialization's
//! write retries and the object-store registry's conditional-write races.
//!
//! Each wait is uniform in `[min, cap]`, and the cap doubles per failure up to `max` ("full
//! jitter", AWS Architecture Blog, "Exponential Backoff And Jitter"): a fleet of sidecars that
//! lost the same server spreads its retries out instead of arriving together when it recovers.
//! The random source is fastrand (seeded per instance from the OS, not from the clock). Pure: it
//! computes waits; the caller sleeps.

use std::time::Duration;

/// Jittered exponential backoff ("full jitter"): each wait is uniform in [min, cap], and the
/// cap doubles per failure up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    cap: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Waits from `min` (at least 1 ms) growing to at most `max` (at least `min`).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            cap: min,
            rng: fastrand::Rng::new(),
        }
    }

    /// The same backoff with a fixed seed: the same waits every run (for tests).
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            rng: fastrand::Rng::with_seed(seed),
            ..Backoff::new(min, max)
        }
    }

    /// The next wait: uniform in [min, cap]; the cap then doubles, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let wait = self.uniform(self.cap);
        self.cap = self.cap.saturating_mul(2).min(self.max);
        wait
    }

    /// The wait after failed attempt `attempt` of a loop that counts its attempts instead of
    /// keeping a `Backoff`: uniform in [min, min·2^attempt], capped at `max`. Leaves this
    /// backoff's own cap alone.
    pub fn delay_for_attempt(&mut self, attempt: u32) -> Duration {
        let cap = self
            .min
            .checked_mul(1 << attempt.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        self.uniform(cap)
    }

    /// Uniform in [min, cap], in whole microseconds.
    fn uniform(&mut self, cap: Duration) -> Duration {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let lo = micros(self.min);
        let hi = micros(cap).max(lo);
        Duration::from_micros(self.rng.u64(lo..=hi))
    }

    /// After a success: start from `min` again.
    pub fn reset(&mut self) {
        self.cap = self.min;
    }

    /// The largest wait [`Backoff::next_delay`] can return now.
    pub fn cap(&self) -> Duration {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    // From registry-sync's client, where this backoff was first written.
    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_millis(100) && *w <= Duration::from_secs(2))
        );
        // The cap reached the maximum; with jitter the waits are not all equal.
        assert_eq!(b.cap, Duration::from_secs(2));
        assert!(waits[6..].iter().any(|w| *w != waits[6]));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn waits_stay_within_min_and_a_doubling_cap() {
        let mut b = Backoff::with_seed(100 * MS, 2000 * MS, 7);
        let mut cap = 100 * MS;
        for _ in 0..20 {
            let w = b.next_delay();
            assert!(w >= 100 * MS && w <= cap, "{w:?} outside [100ms, {cap:?}]");
            cap = (cap * 2).min(2000 * MS);
            assert_eq!(b.cap(), cap);
        }
        assert_eq!(b.cap(), 2000 * MS, "the cap stops at max");
    }

    #[test]
    fn jittered_not_lockstep() {
        let mut b = Backoff::new(100 * MS, 2000 * MS);
        let waits: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(waits[6..].iter().any(|w| *w != waits[6]));
        // Two instances (two sidecars) do not draw the same waits.
        let mut a = Backoff::new(100 * MS, 2000 * MS);
        let mut c = Backoff::new(100 * MS, 2000 * MS);
        let (wa, wc): (Vec<_>, Vec<_>) = (0..8).map(|_| (a.next_delay(), c.next_delay())).unzip();
        assert_ne!(wa, wc);
    }

    #[test]
    fn reset_starts_from_min() {
        let mut b = Backoff::new(100 * MS, 2000 * MS);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.cap(), 100 * MS);
        assert_eq!(
            b.next_delay(),
            100 * MS,
            "the first wait after a reset is min"
        );
    }

    #[test]
    fn degenerate_bounds_are_fixed_up() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(), MS);
        let mut b = Backoff::new(500 * MS, 100 * MS);
        assert_eq!(b.next_delay(), 500 * MS);
        assert_eq!(b.next_delay(), 500 * MS, "max is raised to min");
        let mut b = Backoff::new(Duration::from_secs(1 << 40), Duration::MAX);
        b.next_delay();
        b.next_delay();
        assert!(b.delay_for_attempt(u32::MAX) >= Duration::from_secs(1 << 40));
    }

    #[test]
    fn attempts_double_the_cap_up_to_max() {
        let mut b = Backoff::with_seed(10 * MS, 640 * MS, 3);
        assert_eq!(b.delay_for_attempt(0), 10 * MS);
        for attempt in 0..40 {
            let cap = (10 * MS * (1 << attempt.min(6))).min(640 * MS);
            for _ in 0..20 {
                let w = b.delay_for_attempt(attempt);
                assert!(
                    w >= 10 * MS && w <= cap,
                    "attempt {attempt}: {w:?} > {cap:?}"
                );
            }
        }
        assert_eq!(b.cap(), 10 * MS, "its own cap is untouched");
    }
}
