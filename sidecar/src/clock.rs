//! The clock the serving path reads: the system's by default, tokio's in tests, so that
//! staleness and ttl tests run on paused time (`tokio::time::pause`, `advance`) without sleeping.
//!
//! Two readings: a monotonic [`Instant`] for cache ages and the change feed, and the wall clock
//! (time since the Unix epoch) for a view's ttl against a row's event time. Under
//! [`Clock::Tokio`] both move together with tokio's clock, from a wall time the test chooses.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// `Instant::now()` and `SystemTime::now()`.
    #[default]
    System,
    /// tokio's clock (which honours `tokio::time::pause`): the wall clock reads `unix_at_start`
    /// at `start` and moves with it.
    Tokio {
        start: Instant,
        unix_at_start: Duration,
    },
}

impl Clock {
    /// tokio's clock, its wall time starting at the system's.
    pub fn tokio() -> Clock {
        Clock::tokio_at(system_unix_now())
    }

    /// tokio's clock, its wall time starting at `unix` (time since the Unix epoch).
    pub fn tokio_at(unix: Duration) -> Clock {
        Clock::Tokio {
            start: tokio::time::Instant::now().into_std(),
            unix_at_start: unix,
        }
    }

    /// Monotonic now.
    #[inline]
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Tokio { .. } => tokio::time::Instant::now().into_std(),
        }
    }

    /// Wall-clock now, as time since the Unix epoch (zero if the system clock is before it).
    pub fn unix_now(&self) -> Duration {
        match self {
            Clock::System => system_unix_now(),
            Clock::Tokio {
                start,
                unix_at_start,
            } => *unix_at_start + self.now().saturating_duration_since(*start),
        }
    }
}

fn system_unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_only_when_tokio_time_does() {
        let clock = Clock::tokio_at(Duration::from_secs(1_000));
        let (mono, wall) = (clock.now(), clock.unix_now());
        assert_eq!(wall, Duration::from_secs(1_000));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now() - mono, Duration::from_secs(90));
        assert_eq!(clock.unix_now(), Duration::from_secs(1_090));
    }
}
