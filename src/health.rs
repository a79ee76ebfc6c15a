//! The worker's health state: what `/health`, `/ready` and the debug service report. Written
//! by the pipeline (receive loops, pool, acker), read by the servers; a leaf, so the servers
//! need nothing from the pipeline to answer.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::labels::SettleWrite;
use crate::telemetry::metrics::metrics;

/// What the health endpoints and the debug service report. Written by the poller and the pool,
/// read by the servers; plain atomics, no locks on the hot path.
#[derive(Debug)]
pub struct WorkerStatus {
    /// On tokio's clock, so tests that pause time can age the state.
    started: Instant,
    queue_reached: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds since the epoch of the last receive call that returned (0 = never).
    last_poll_ms: AtomicU64,
    /// Each receive loop's last heartbeat, in ms since `started` plus one, by loop index (a
    /// loop adds its slot when it starts). One slot per loop, so a single stuck loop is seen
    /// even while the others beat. Monotonic, so a wall-clock jump cannot fail liveness.
    beats: RwLock<Vec<AtomicU64>>,
    /// How long a receive loop may be silent before liveness fails, in ms.
    beat_limit_ms: AtomicU64,
    /// The first long-lived part (poll loop, acker) that ended before shutdown.
    stopped: OnceLock<&'static str>,
    ready: tokio::sync::watch::Sender<bool>,
    /// Why receiving is paused (a peer's circuit is open or half-open), if it is.
    paused: Mutex<Option<String>>,
    /// Per kind of settling write: since when (ms since `started`, plus one) every call of that
    /// kind has failed; 0 while the last one worked.
    settle_failing_since: [AtomicU64; SettleWrite::ALL.len()],
    /// Per kind: when a call last failed (same clock), so a failure long past does not count.
    settle_failed_at: [AtomicU64; SettleWrite::ALL.len()],
    /// The last failure of each kind, for the health body.
    settle_errors: Mutex<[Option<String>; SettleWrite::ALL.len()]>,
}

/// What `GET /health` answers: whether restarting the process could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The poll loop has not started: the queue is still being reached (readiness says so).
    Starting,
    /// Every receive loop beat recently; `silent_for` is the longest silence among them.
    Alive { silent_for: Duration },
    /// Shutting down on purpose; the loop stopped receiving.
    Draining,
    /// A receive loop has not beaten for longer than its limit: it is stuck, holding its
    /// share of the slots.
    Wedged {
        receive_loop: usize,
        silent_for: Duration,
        limit: Duration,
    },
    /// A long-lived part ended (returned or panicked) while the worker was not shutting down.
    Stopped { part: &'static str },
    /// Every write of one kind has failed for longer than the limit: messages are decided but
    /// cannot be settled, and come back to be worked on again.
    Unsettled {
        write: SettleWrite,
        failing_for: Duration,
        limit: Duration,
        error: String,
    },
}

impl Liveness {
    /// Whether the process is worth keeping (200) rather than restarting (503).
    pub fn is_alive(&self) -> bool {
        !matches!(
            self,
            Liveness::Wedged { .. } | Liveness::Stopped { .. } | Liveness::Unsettled { .. }
        )
    }

    /// A short word for the state, for the health body and the debug service.
    pub fn as_str(&self) -> &'static str {
        match self {
            Liveness::Starting => "starting",
            Liveness::Alive { .. } => "ok",
            Liveness::Draining => "draining",
            Liveness::Wedged { .. } => "wedged",
            Liveness::Stopped { .. } => "stopped",
            Liveness::Unsettled { .. } => "unsettled",
        }
    }

    /// One sentence saying why, for people.
    pub fn reason(&self) -> String {
        match self {
            Liveness::Starting => "the poll loop starts once the queue has been reached".into(),
            Liveness::Alive { silent_for } => {
                format!("the poll loop beat {} ms ago", silent_for.as_millis())
            }
            Liveness::Draining => "shutting down".into(),
            Liveness::Wedged {
                receive_loop,
                silent_for,
                limit,
            } => format!(
                "receive loop {receive_loop} has not beaten for {} s (limit {} s)",
                silent_for.as_secs(),
                limit.as_secs()
            ),
            Liveness::Stopped { part } => format!("the {part} stopped unexpectedly"),
            Liveness::Unsettled {
                write,
                failing_for,
                limit,
                error,
            } => format!(
                "every {} call ({}) has failed for {} s (limit {} s); last error: {error}",
                write.operation(),
                write.as_str(),
                failing_for.as_secs(),
                limit.as_secs()
            ),
        }
    }
}

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            started: Instant::now(),
            queue_reached: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_poll_ms: AtomicU64::new(0),
            beats: RwLock::new(Vec::new()),
            beat_limit_ms: AtomicU64::new(30_000),
            stopped: OnceLock::new(),
            ready: tokio::sync::watch::Sender::new(false),
            paused: Mutex::new(None),
            settle_failing_since: Default::default(),
            settle_failed_at: Default::default(),
            settle_errors: Mutex::default(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl WorkerStatus {
    /// The queue answered: the worker can be ready.
    pub fn queue_reached(&self) {
        self.queue_reached.store(true, Ordering::SeqCst);
        self.update_ready();
    }

    /// Shutdown began: not ready from this moment on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.update_ready();
    }

    /// Receiving is paused, or limited, because of `why` (a peer's circuit); `None` when it
    /// no longer is. Not ready meanwhile: liveness is unaffected, since a restart cannot bring
    /// a peer back.
    pub fn set_paused(&self, why: Option<String>) {
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = why;
        self.update_ready();
    }

    fn update_ready(&self) {
        let ready = self.is_ready();
        self.ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// Ready: the queue has been reached, shutdown has not begun, and receiving is not paused.
    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why the worker is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            Some("draining: shutting down".into())
        } else if !self.queue_reached.load(Ordering::SeqCst) {
            Some("the queue has not been reached yet".into())
        } else {
            self.paused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Follows readiness changes (the gRPC health service mirrors them).
    pub fn watch_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// A receive is about to start: receive loop `me` is alive.
    pub(crate) fn polling(&self, me: usize) {
        self.beat(me);
    }

    pub(crate) fn polled(&self, me: usize) {
        self.beat(me);
        self.last_poll_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A receive loop starts: from now on it must beat at least once per `limit`. Returns the
    /// loop's index, for its beats.
    pub fn poll_loop_started(&self, limit: Duration) -> usize {
        self.set_beat_limit(limit);
        let mut beats = self.beats.write().unwrap_or_else(PoisonError::into_inner);
        beats.push(AtomicU64::new(self.mono_ms() + 1));
        beats.len() - 1
    }

    /// The longest silence a receive loop is allowed before liveness fails.
    pub fn set_beat_limit(&self, limit: Duration) {
        self.beat_limit_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// Receive loop `me` is alive (it is waiting, receiving or handing out work).
    pub fn beat(&self, me: usize) {
        let beats = self.beats.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(beat) = beats.get(me) {
            beat.store(self.mono_ms() + 1, Ordering::Relaxed);
        }
    }

    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether restarting the process could help, judged now.
    pub fn liveness(&self) -> Liveness {
        self.liveness_at(self.mono_ms())
    }

    /// The liveness rule, at `now` ms after start.
    fn liveness_at(&self, now: u64) -> Liveness {
        if let Some(part) = self.stopped.get() {
            return Liveness::Stopped { part };
        }
        if self.is_draining() {
            return Liveness::Draining;
        }
        let limit = Duration::from_millis(self.beat_limit_ms.load(Ordering::Relaxed));
        if let Some(unsettled) = self.unsettled_at(now, limit) {
            return unsettled;
        }
        let oldest = {
            let beats = self.beats.read().unwrap_or_else(PoisonError::into_inner);
            beats
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .enumerate()
                .min_by_key(|&(_, beat)| beat)
        };
        let Some((receive_loop, beat)) = oldest else {
            return Liveness::Starting;
        };
        let silent_for = Duration::from_millis(now.saturating_sub(beat - 1));
        if silent_for > limit {
            Liveness::Wedged {
                receive_loop,
                silent_for,
                limit,
            }
        } else {
            Liveness::Alive { silent_for }
        }
    }

    /// Runs a long-lived part of the worker (the poll loop, the acker). If it ends, or panics,
    /// before `shutdown` is cancelled, liveness fails at once: such a worker holds its pod
    /// without doing anything, and a restart is the fix.
    pub async fn supervise<F: Future>(
        self: Arc<Self>,
        part: &'static str,
        shutdown: CancellationToken,
        work: F,
    ) -> F::Output {
        let _guard = PartGuard {
            status: self,
            part,
            shutdown,
        };
        work.await
    }

    /// A settling call of kind `write` worked.
    pub fn settled(&self, write: SettleWrite) {
        self.settle_failing_since[write.index()].store(0, Ordering::Relaxed);
    }

    /// A settling call of kind `write` failed with `error`.
    pub fn settle_failed(&self, write: SettleWrite, error: &str) {
        self.settle_failed_at_ms(write, error, self.mono_ms());
    }

    /// [`WorkerStatus::settle_failed`] at `now` ms after start.
    fn settle_failed_at_ms(&self, write: SettleWrite, error: &str, now: u64) {
        let now = now + 1;
        let _ = self.settle_failing_since[write.index()].compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.settle_failed_at[write.index()].store(now, Ordering::Relaxed);
        if let Ok(mut errors) = self.settle_errors.lock() {
            errors[write.index()] = Some(error.to_string());
        }
    }

    /// The kind of write that has failed longest without a success in between, if one has
    /// failed for more than `limit` at `now` and is still failing (its last failure within the
    /// limit: a kind of write no longer tried, say no dead letter came along since, proves
    /// nothing either way).
    fn unsettled_at(&self, now: u64, limit: Duration) -> Option<Liveness> {
        let limit_ms = limit.as_millis() as u64;
        let still_failing = |w: &SettleWrite| {
            let last = self.settle_failed_at[w.index()].load(Ordering::Relaxed);
            last > 0 && now.saturating_sub(last - 1) <= limit_ms
        };
        let (write, since) = SettleWrite::ALL
            .iter()
            .filter(|w| still_failing(w))
            .map(|w| {
                (
                    *w,
                    self.settle_failing_since[w.index()].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, since)| *since > 0)
            .min_by_key(|(_, since)| *since)?;
        let failing_for = Duration::from_millis(now.saturating_sub(since - 1));
        (failing_for > limit).then(|| Liveness::Unsettled {
            write,
            failing_for,
            limit,
            error: self
                .settle_errors
                .lock()
                .ok()
                .and_then(|e| e[write.index()].clone())
                .unwrap_or_default(),
        })
    }

    /// The last time a receive call returned, in ms since the epoch (0 if never).
    pub fn last_poll_ms(&self) -> u64 {
        self.last_poll_ms.load(Ordering::Relaxed)
    }

    /// Messages being worked on right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Time since start, for health and the debug service.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        metrics().task_started();
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics().task_finished();
    }
}

/// Marks its part stopped when dropped (a return or a panic's unwinding) before shutdown.
struct PartGuard {
    status: Arc<WorkerStatus>,
    part: &'static str,
    shutdown: CancellationToken,
}

impl Drop for PartGuard {
    fn drop(&mut self) {
        if !self.shutdown.is_cancelled() && self.status.stopped.set(self.part).is_ok() {
            tracing::error!(
                part = self.part,
                "{} stopped unexpectedly: /health now answers 503 so the pod is restarted",
                self.part
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `worker_health_status` exports a series for every state `/health` can answer.
    #[test]
    fn every_liveness_state_has_its_series() {
        let states = [
            Liveness::Starting,
            Liveness::Alive {
                silent_for: Duration::ZERO,
            },
            Liveness::Draining,
            Liveness::Wedged {
                receive_loop: 0,
                silent_for: Duration::ZERO,
                limit: Duration::ZERO,
            },
            Liveness::Stopped { part: "x" },
            Liveness::Unsettled {
                write: SettleWrite::Delete,
                failing_for: Duration::ZERO,
                limit: Duration::ZERO,
                error: String::new(),
            },
        ];
        assert_eq!(
            states.map(|s| s.as_str()),
            crate::telemetry::metrics::HEALTH_STATES
        );
    }

    #[test]
    fn starting_until_the_poll_loop_beats() {
        let s = WorkerStatus::default();
        assert_eq!(s.liveness_at(100_000), Liveness::Starting);
        assert!(s.liveness_at(100_000).is_alive());
    }

    #[test]
    fn wedged_when_silent_longer_than_the_limit() {
        let s = WorkerStatus::default();
        s.poll_loop_started(Duration::from_secs(30));
        let beat = s.mono_ms();
        let at = |ms: u64| s.liveness_at(beat + ms);
        assert_eq!(
            at(30_000),
            Liveness::Alive {
                silent_for: Duration::from_secs(30)
            }
        );
        let wedged = at(30_001);
        assert_eq!(
            wedged,
            Liveness::Wedged {
                receive_loop: 0,
                silent_for: Duration::from_millis(30_001),
                limit: Duration::from_secs(30)
            }
        );
        assert!(!wedged.is_alive());
        assert!(
            wedged.reason().contains("limit 30 s"),
            "{}",
            wedged.reason()
        );
    }

    #[test]
    fn one_silent_receive_loop_is_wedged_while_the_others_beat() {
        let s = WorkerStatus::default();
        let limit = Duration::from_secs(30);
        let first = s.poll_loop_started(limit);
        let second = s.poll_loop_started(limit);
        assert_eq!((first, second), (0, 1));
        let start = s.mono_ms();
        // Loop 1 keeps beating (simulated by moving its beat forward); loop 0 goes silent.
        s.beats.read().unwrap()[second].store(start + 40_000 + 1, Ordering::Relaxed);
        match s.liveness_at(start + 40_000) {
            Liveness::Wedged { receive_loop, .. } => assert_eq!(receive_loop, first),
            other => panic!("expected loop 0 wedged, got {other:?}"),
        }
        assert!(
            s.liveness_at(start + 40_000)
                .reason()
                .contains("receive loop 0"),
        );
        s.beat(first);
        assert!(s.liveness_at(s.mono_ms() + 1_000).is_alive());
    }

    #[test]
    fn draining_is_alive_and_a_stopped_part_is_not() {
        let s = WorkerStatus::default();
        s.poll_loop_started(Duration::from_secs(30));
        s.start_draining();
        assert_eq!(s.liveness_at(u64::MAX / 2), Liveness::Draining);
        let s = WorkerStatus::default();
        s.poll_loop_started(Duration::from_secs(30));
        assert!(s.stopped.set("poll loop").is_ok());
        assert_eq!(s.liveness(), Liveness::Stopped { part: "poll loop" });
        assert!(!s.liveness().is_alive());
    }

    #[test]
    fn writes_that_keep_failing_past_the_limit_fail_liveness() {
        let s = WorkerStatus::default();
        s.poll_loop_started(Duration::from_secs(30));
        let start = s.mono_ms();
        s.settle_failed(SettleWrite::DeadLetter, "SendMessage: timed out");
        s.beat(0);
        assert!(s.liveness_at(start + 30_000).is_alive(), "within the limit");
        s.settle_failed_at_ms(
            SettleWrite::DeadLetter,
            "SendMessage: timed out again",
            start + 29_000,
        );
        s.beat(0);
        let at = s.liveness_at(start + 31_000);
        assert!(!at.is_alive(), "{at:?}");
        assert!(
            at.reason()
                .contains("every SendMessage call (dead_letter) has failed")
                && at.reason().contains("timed out again"),
            "{}",
            at.reason()
        );
        let limit = Duration::from_secs(30);
        assert_eq!(
            s.unsettled_at(start + 62_000, limit),
            None,
            "no failure within the limit: nothing is being tried"
        );
        s.settled(SettleWrite::DeadLetter);
        assert_eq!(
            s.unsettled_at(start + 31_000, limit),
            None,
            "one success clears it"
        );
        s.settle_failed(SettleWrite::Delete, "DeleteMessageBatch: 500");
        assert_eq!(
            s.unsettled_at(start + 1_000, limit),
            None,
            "the delete failure is recent"
        );
    }

    #[tokio::test]
    async fn a_supervised_part_that_ends_early_fails_liveness() {
        let shutdown = CancellationToken::new();
        let s = Arc::new(WorkerStatus::default());
        s.clone()
            .supervise("acker", shutdown.clone(), async {})
            .await;
        assert_eq!(s.liveness(), Liveness::Stopped { part: "acker" });

        let s = Arc::new(WorkerStatus::default());
        shutdown.cancel();
        s.clone()
            .supervise("acker", shutdown.clone(), async {})
            .await;
        assert_eq!(
            s.liveness(),
            Liveness::Starting,
            "ending at shutdown is fine"
        );
    }
}
