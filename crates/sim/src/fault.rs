//! Fault and latency plumbing shared by both simulators.
//!
//! Two kinds of misbehaviour exist, for two audiences:
//!
//! * [`FaultScript`]: a per-route FIFO of scripted faults, one consumed per call, so an
//!   integration test can say "the next ReleaseHold answers UNAVAILABLE, the one after is
//!   slow" and then assert exactly what the worker did about it.
//! * [`Chaos`]: a random failure rate and a fixed added latency, so a person running
//!   `reservation-sim` locally can watch the worker cope with a flaky peer. Which
//!   failure a call gets is drawn from a weighted [`FaultMix`] (by default only the peer's
//!   "unavailable" answer), with [`Dice`] that can be seeded so a soak test can be re-run
//!   with the same sequence of draws.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;

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

/// Random misbehaviour for local runs and soak tests: every call is delayed by `latency`,
/// then fails with probability `failure_rate`, in a way drawn from `mix`. The default (0,
/// zero, UNAVAILABLE only) is a well-behaved peer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Chaos {
    /// Probability in `0..=1` that a call fails.
    pub failure_rate: f64,
    /// Added to every call before it is answered.
    pub latency: Duration,
    /// How a failing call fails, by weight.
    pub mix: FaultMix,
    /// How long a stalling failure ([`ChaosFault::StallBeforeApply`],
    /// [`ChaosFault::StallAfterApply`]) holds its answer; set it above the client's timeout.
    pub stall: Duration,
}

impl Chaos {
    /// Rolls the dice for one call: `true` means this call should fail.
    pub fn roll_failure(&self) -> bool {
        self.roll_failure_with(&mut rand::rng())
    }

    /// Rolls for one call with `dice`: `None` is a normal call, else the failure to inject.
    pub fn roll(&self, dice: &Dice) -> Option<ChaosFault> {
        dice.with(|rng| {
            if self.roll_failure_with(rng) {
                Some(self.mix.pick(rng))
            } else {
                None
            }
        })
    }

    fn roll_failure_with<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> bool {
        let p = if self.failure_rate.is_finite() {
            self.failure_rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        p > 0.0 && rng.random_bool(p)
    }
}

/// One way a chaotic peer fails a call. Each simulator maps it onto its own protocol; the
/// "after apply" kinds change state first, which is the case idempotency keys exist for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChaosFault {
    /// The peer's "try again": gRPC UNAVAILABLE, HTTP 503. Nothing is applied.
    Unavailable,
    /// A server-side failure: gRPC DEADLINE_EXCEEDED, HTTP 500. Nothing is applied.
    ServerError,
    /// The answer ("try again") comes only after [`Chaos::stall`]; nothing is applied.
    StallBeforeApply,
    /// The effect is applied, then the answer is held for [`Chaos::stall`]: a client with a
    /// shorter timeout gives up on a call that did its job.
    StallAfterApply,
    /// The effect is applied, then the call is answered with the "try again" error.
    FailAfterApply,
}

/// Weights of the [`ChaosFault`] kinds a failing call is drawn from. The default is
/// UNAVAILABLE only, the simulators' behaviour before there was a mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultMix {
    /// Weight of [`ChaosFault::Unavailable`].
    pub unavailable: u32,
    /// Weight of [`ChaosFault::ServerError`].
    pub server_error: u32,
    /// Weight of [`ChaosFault::StallBeforeApply`].
    pub stall_before_apply: u32,
    /// Weight of [`ChaosFault::StallAfterApply`].
    pub stall_after_apply: u32,
    /// Weight of [`ChaosFault::FailAfterApply`].
    pub fail_after_apply: u32,
}

impl Default for FaultMix {
    fn default() -> Self {
        Self {
            unavailable: 1,
            server_error: 0,
            stall_before_apply: 0,
            stall_after_apply: 0,
            fail_after_apply: 0,
        }
    }
}

impl FaultMix {
    /// Every kind, equally likely.
    pub fn every_kind() -> Self {
        Self {
            unavailable: 1,
            server_error: 1,
            stall_before_apply: 1,
            stall_after_apply: 1,
            fail_after_apply: 1,
        }
    }

    fn weighted(&self) -> [(ChaosFault, u32); 5] {
        [
            (ChaosFault::Unavailable, self.unavailable),
            (ChaosFault::ServerError, self.server_error),
            (ChaosFault::StallBeforeApply, self.stall_before_apply),
            (ChaosFault::StallAfterApply, self.stall_after_apply),
            (ChaosFault::FailAfterApply, self.fail_after_apply),
        ]
    }

    /// Draws one kind by weight; an all-zero mix means UNAVAILABLE.
    fn pick<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> ChaosFault {
        let kinds = self.weighted();
        let total: u64 = kinds.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return ChaosFault::Unavailable;
        }
        let mut ticket = rng.random_range(0..total);
        for (kind, weight) in kinds {
            let weight = u64::from(weight);
            if ticket < weight {
                return kind;
            }
            ticket -= weight;
        }
        ChaosFault::Unavailable
    }
}

/// The random source of a simulator's chaos: the thread RNG unless seeded. Seeding fixes the
/// sequence of draws (not which call gets which draw, since calls race), so a soak run can be
/// repeated with the same amount and mix of failures.
#[derive(Debug, Default)]
pub struct Dice {
    seeded: Mutex<Option<StdRng>>,
}

impl Dice {
    /// Draws from a generator seeded with `seed` from now on.
    pub fn seed(&self, seed: u64) {
        *lock(&self.seeded) = Some(StdRng::seed_from_u64(seed));
    }

    fn with<T>(&self, f: impl FnOnce(&mut dyn rand::RngCore) -> T) -> T {
        match lock(&self.seeded).as_mut() {
            Some(rng) => f(rng),
            None => f(&mut rand::rng()),
        }
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
            ..Chaos::default()
        };
        assert!((0..100).all(|_| !never.roll_failure()));
        assert!((0..100).all(|_| always.roll_failure()));
    }

    #[test]
    fn default_mix_is_unavailable_only_and_weights_are_honoured() {
        let dice = Dice::default();
        let plain = Chaos {
            failure_rate: 1.0,
            ..Chaos::default()
        };
        assert!((0..100).all(|_| plain.roll(&dice) == Some(ChaosFault::Unavailable)));
        assert_eq!(Chaos::default().roll(&dice), None);

        let stalls_only = Chaos {
            mix: FaultMix {
                unavailable: 0,
                stall_after_apply: 3,
                ..FaultMix::default()
            },
            ..plain
        };
        assert!((0..100).all(|_| stalls_only.roll(&dice) == Some(ChaosFault::StallAfterApply)));

        let every = Chaos {
            mix: FaultMix::every_kind(),
            ..plain
        };
        let seen: std::collections::HashSet<_> =
            (0..500).filter_map(|_| every.roll(&dice)).collect();
        assert_eq!(seen.len(), 5, "{seen:?}");
    }

    #[test]
    fn seeded_dice_repeat_their_draws() {
        let chaos = Chaos {
            failure_rate: 0.3,
            mix: FaultMix::every_kind(),
            ..Chaos::default()
        };
        let draws = |seed| {
            let dice = Dice::default();
            dice.seed(seed);
            (0..200).map(|_| chaos.roll(&dice)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let failures = draws(7).iter().filter(|d| d.is_some()).count();
        assert!((30..90).contains(&failures), "{failures} of 200 at 30 %");
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
