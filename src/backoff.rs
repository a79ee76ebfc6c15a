//! The one backoff: every wait that grows after a failure (retries within a delivery, the
//! visibility of a message whose retries are spent, receive and start-up retries, the acker's
//! write attempts, circuit probes). A leaf, so the clients and the pipeline share it.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `base·2^(attempt-1)`, capped at `max`; [`Backoff::delay`] adds jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based): `base·2^(attempt-1)`, capped, plus
    /// up to 25 % jitter so a burst of failures does not retry in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exact = self.exact(attempt);
        let jitter_ms = (exact.as_millis() as u64) / 4;
        let jitter = if jitter_ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_ms)
        };
        exact + Duration::from_millis(jitter)
    }

    /// The delay without jitter.
    pub fn exact(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Visibility for a message whose retries are spent: `base·2^(receive_count-1)`, capped.
pub(crate) fn redelivery_delay(base: Duration, max: Duration, receive_count: u32) -> Duration {
    Backoff { base, max }.exact(receive_count.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_and_stops_at_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let got: Vec<u64> = (1..=5).map(|n| b.exact(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
        assert_eq!(b.exact(200), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let b = Backoff {
            base: Duration::from_millis(1000),
            max: Duration::from_secs(60),
        };
        for _ in 0..200 {
            let d = b.delay(2);
            assert!(d >= Duration::from_millis(2000) && d <= Duration::from_millis(2500));
        }
    }

    #[test]
    fn redelivery_grows_with_receive_count() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(900);
        assert_eq!(redelivery_delay(base, max, 1), base);
        assert_eq!(redelivery_delay(base, max, 3), Duration::from_secs(120));
        assert_eq!(redelivery_delay(base, max, 10), max);
    }
}
