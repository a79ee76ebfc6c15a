//! Fault and latency plumbing shared by both simulators.
//!
//! Two kinds of misbehaviour exist, for two audiences:
//!
//! * [`FaultScript`]: a per-route FIFO of scripted faults, one consumed per call, so an
//!   integration test can say "the next ReleaseHold answers UNAVAILABLE, the one after is
//!   slow" and then assert exactly what the worker did about it.
//! * [`Chaos`]: a random failure rate and a fixed added latency, so a person running
//!   `reservation-worker sim` locally can watch the worker cope with a flaky peer.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Per-key FIFO queues of scripted faults. Exists so tests can script a peer's next answers
/// per route/method; each call pops at most one fault from its own queue.
#[derive(Debug)]
pub struct FaultScript<K, F> {
    queues: Mutex<HashMap<K, VecDeque<F>>>,
}

impl<K, F> Default for FaultScript<K, F> {
    fn default() -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, F> FaultScript<K, F> {
    /// An empty script: every call is answered normally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `fault` to `key`'s queue; it applies to the first call after the ones
    /// already queued.
    pub fn push(&self, key: K, fault: F) {
        lock(&self.queues).entry(key).or_default().push_back(fault);
    }

    /// Takes the next fault for `key`, if any. Called once per incoming call.
    pub fn pop(&self, key: &K) -> Option<F> {
        lock(&self.queues)
            .get_mut(key)
            .and_then(VecDeque::pop_front)
    }

    /// How many faults are still queued for `key`, so a test can assert that all of its
    /// script was consumed.
    pub fn pending(&self, key: &K) -> usize {
        lock(&self.queues).get(key).map_or(0, VecDeque::len)
    }

    /// Drops every queued fault.
    pub fn clear(&self) {
        lock(&self.queues).clear();
    }
}

/// Random misbehaviour for local runs: every call is delayed by `latency`, then fails with
/// probability `failure_rate`. The default (0, zero) is a well-behaved peer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Chaos {
    /// Probability in `0..=1` that a call fails with the peer's "unavailable" answer.
    pub failure_rate: f64,
    /// Added to every call before it is answered.
    pub latency: Duration,
}

impl Chaos {
    /// Rolls the dice for one call: `true` means this call should fail.
    pub fn roll_failure(&self) -> bool {
        let p = if self.failure_rate.is_finite() {
            self.failure_rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        p > 0.0 && rand::random_bool(p)
    }
}

/// Checks a failure rate given by a person, with an error that says what is wrong.
pub fn validate_failure_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "failure rate must be a probability between 0 and 1 (inclusive), got {rate}"
        ))
    }
}

/// Sleeps for `duration` unless it is zero (a zero sleep still yields, which is noise).
pub(crate) async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// Locks a mutex, ignoring poisoning: the simulators' state stays usable after a panicking
/// test thread, which keeps one failed assertion from cascading into unrelated ones.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_fifo_per_key() {
        let script = FaultScript::new();
        script.push("a", 1);
        script.push("b", 10);
        script.push("a", 2);
        assert_eq!(script.pending(&"a"), 2);
        assert_eq!(script.pop(&"a"), Some(1));
        assert_eq!(script.pop(&"b"), Some(10));
        assert_eq!(script.pop(&"a"), Some(2));
        assert_eq!(script.pop(&"a"), None);
        assert_eq!(script.pending(&"c"), 0);
    }

    #[test]
    fn chaos_extremes() {
        let never = Chaos::default();
        let always = Chaos {
            failure_rate: 1.0,
            latency: Duration::ZERO,
        };
        assert!((0..100).all(|_| !never.roll_failure()));
        assert!((0..100).all(|_| always.roll_failure()));
    }

    #[test]
    fn failure_rate_validation() {
        assert_eq!(validate_failure_rate(0.0), Ok(0.0));
        assert_eq!(validate_failure_rate(1.0), Ok(1.0));
        assert!(
            validate_failure_rate(1.5)
                .unwrap_err()
                .contains("between 0 and 1")
        );
        assert!(validate_failure_rate(-0.1).is_err());
        assert!(validate_failure_rate(f64::NAN).is_err());
    }
}
