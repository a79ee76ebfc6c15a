//! A circuit breaker per peer. Retries within a delivery ride out a blip; during an outage
//! every retry spent ends with the message back on the queue, and every redelivery raises its
//! receive count until the queue's `maxReceiveCount` moves a valid event to the DLQ. So after
//! sustained retryable failures the peer's circuit opens: calls to it fail at once without
//! reaching it, the receive loops stop taking messages ([`Circuits::admit`]), and a probe
//! that changes nothing (gRPC health, a GET) tests the peer at growing intervals. When it
//! answers, the circuit is half-open: one message at a time is let through, and its real
//! call closes the circuit (or opens it again).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Applied, CallError, Inventory, ReservationRecord, ReservationStatus, Reservations};
use crate::backoff::Backoff;
use crate::proto::reservation::v1::{CommitReservationRequest, ReleaseHoldRequest};
use crate::telemetry::metrics::metrics;

/// A downstream peer, as the breakers and their metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Inventory,
    ReservationApi,
}

impl Peer {
    /// Both peers, in the order of [`Circuits`].
    pub const ALL: [Peer; 2] = [Peer::Inventory, Peer::ReservationApi];

    /// The `peer` label, the same word as the `target` of the downstream metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Inventory => crate::telemetry::metrics::INVENTORY,
            Peer::ReservationApi => crate::telemetry::metrics::RESERVATION_API,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A circuit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail at once; receiving is paused; a probe runs at growing intervals.
    Open,
    /// A probe answered: one message at a time may test the peer with real calls.
    HalfOpen,
}

impl CircuitState {
    /// Every state, for the one-hot `worker_circuit_state` gauge.
    pub const ALL: [CircuitState; 3] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
    ];

    /// The `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// When a circuit opens and how it is probed (`CIRCUIT_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Retryable failures in a row that open the circuit; 0 turns the breakers off.
    pub failures: u32,
    /// How long those failures must have lasted, so a blip of a second never opens it.
    pub failing_for: Duration,
    /// The first wait before a probe; each failed probe doubles it.
    pub probe_base: Duration,
    /// The longest wait between probes.
    pub probe_max: Duration,
}

impl CircuitSettings {
    /// Breakers that never open.
    pub const OFF: CircuitSettings = CircuitSettings {
        failures: 0,
        failing_for: Duration::ZERO,
        probe_base: Duration::from_secs(1),
        probe_max: Duration::from_secs(1),
    };
}

/// What a circuit knows, behind its lock.
#[derive(Debug)]
struct Inner {
    state: CircuitState,
    /// Retryable failures since the last call that got an answer.
    failures: u32,
    /// When the first of those failed.
    failing_since: Option<Instant>,
    /// The last of those, for the log and `/ready`.
    last_error: String,
    /// Probes that failed since the circuit last closed: each doubles the next wait.
    failed_probes: u32,
    /// Half-open: a message testing the peer is under way.
    trial_taken: bool,
    /// Counts trials, so a trial from an earlier half-open spell cannot end the current one's.
    trial: u64,
    /// Counts openings, so only the probe of the current opening keeps probing.
    opening: u64,
}

/// One peer's breaker.
struct Circuit {
    settings: CircuitSettings,
    inner: Mutex<Inner>,
}

impl Circuit {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// The wait before the next probe, after `failed` failed ones.
    fn probe_wait(&self, failed: u32) -> Duration {
        Backoff {
            base: self.settings.probe_base,
            max: self.settings.probe_max,
        }
        .exact(failed + 1)
    }
}

/// Calls the probe of the peer behind a circuit: a call that changes nothing.
#[derive(Clone)]
enum Target {
    Inventory(Arc<dyn Inventory>),
    ReservationApi(Arc<dyn Reservations>),
}

impl Target {
    async fn probe(&self) -> Result<(), CallError> {
        match self {
            Target::Inventory(i) => i.probe().await,
            Target::ReservationApi(r) => r.probe().await,
        }
    }
}

/// The breakers of both peers. Cheap to clone.
#[derive(Clone)]
pub struct Circuits {
    shared: Arc<Shared>,
}

struct Shared {
    circuits: [Circuit; 2],
    targets: [Target; 2],
    /// Bumped on every change that may let a receive loop go on.
    changes: watch::Sender<u64>,
    /// Held while the states are published, so the last publication reads the last states.
    publishing: Mutex<()>,
    /// Told whether receiving is paused, and why, on every change of state.
    on_change: Box<dyn Fn(Option<String>) + Send + Sync>,
    /// Stops the probes at shutdown.
    stop: CancellationToken,
}

/// Leave to receive, from [`Circuits::admit`].
#[must_use]
pub struct Admission {
    trial: Option<Trial>,
}

impl Admission {
    /// The most messages this receive may take: one while a peer is being tested.
    pub fn limit(&self, batch: usize) -> usize {
        if self.trial.is_some() { 1 } else { batch }
    }

    /// The trial this receive carries, if a half-open peer is being tested: held until the
    /// received message is settled.
    pub fn into_trial(self) -> Option<Trial> {
        self.trial
    }
}

/// The one message at a time a half-open circuit lets through. Dropping it (the message
/// settled without settling the circuit, say it never called that peer) lets the next one in.
pub struct Trial {
    circuits: Circuits,
    /// Each peer tested, with the number of its trial.
    peers: Vec<(Peer, u64)>,
}

impl Drop for Trial {
    fn drop(&mut self) {
        for &(peer, trial) in &self.peers {
            let circuit = self.circuits.circuit(peer);
            let mut inner = circuit.lock();
            if inner.state == CircuitState::HalfOpen && inner.trial == trial {
                inner.trial_taken = false;
            }
        }
        self.circuits.shared.changes.send_modify(|n| *n += 1);
    }
}

impl Circuits {
    /// Breakers for the two peers; `on_change` hears whether receiving is paused (and why)
    /// whenever a circuit changes state. Probes stop when `stop` is cancelled.
    pub fn new(
        settings: CircuitSettings,
        inventory: Arc<dyn Inventory>,
        reservations: Arc<dyn Reservations>,
        on_change: impl Fn(Option<String>) + Send + Sync + 'static,
        stop: CancellationToken,
    ) -> Circuits {
        let circuit = || Circuit {
            settings,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                failing_since: None,
                last_error: String::new(),
                failed_probes: 0,
                trial_taken: false,
                trial: 0,
                opening: 0,
            }),
        };
        for peer in Peer::ALL {
            metrics().circuit_state(peer.as_str(), CircuitState::Closed.as_str());
        }
        Circuits {
            shared: Arc::new(Shared {
                circuits: [circuit(), circuit()],
                targets: [
                    Target::Inventory(inventory),
                    Target::ReservationApi(reservations),
                ],
                changes: watch::Sender::new(0),
                publishing: Mutex::new(()),
                on_change: Box::new(on_change),
                stop,
            }),
        }
    }

    fn circuit(&self, peer: Peer) -> &Circuit {
        &self.shared.circuits[peer.index()]
    }

    /// The state of `peer`'s circuit.
    pub fn state(&self, peer: Peer) -> CircuitState {
        self.circuit(peer).state()
    }

    /// Whether `peer`'s calls fail at once right now.
    pub fn is_open(&self, peer: Peer) -> bool {
        self.state(peer) == CircuitState::Open
    }

    /// Whether every circuit is closed.
    pub fn all_closed(&self) -> bool {
        Peer::ALL
            .iter()
            .all(|&p| self.state(p) == CircuitState::Closed)
    }

    /// Waits until a receive may go ahead: at once while every circuit is closed; while one
    /// is open, until a probe has answered; while one is half-open, until no other message is
    /// testing it (the admission then carries the trial, and a limit of one message).
    pub async fn admit(&self) -> Admission {
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.mark_unchanged();
            if let Some(admission) = self.try_admit() {
                return admission;
            }
            if changes.changed().await.is_err() {
                return Admission { trial: None };
            }
        }
    }

    fn try_admit(&self) -> Option<Admission> {
        let mut guards: Vec<(Peer, MutexGuard<'_, Inner>)> = Peer::ALL
            .iter()
            .map(|&p| (p, self.circuit(p).lock()))
            .collect();
        if guards.iter().any(|(_, g)| {
            g.state == CircuitState::Open || (g.state == CircuitState::HalfOpen && g.trial_taken)
        }) {
            return None;
        }
        let mut testing = Vec::new();
        for (peer, g) in &mut guards {
            if g.state == CircuitState::HalfOpen {
                g.trial_taken = true;
                g.trial += 1;
                testing.push((*peer, g.trial));
            }
        }
        drop(guards);
        Some(Admission {
            trial: (!testing.is_empty()).then(|| Trial {
                circuits: self.clone(),
                peers: testing,
            }),
        })
    }

    /// Resolves once `peer`'s circuit is open (a retry waiting out its backoff stops then).
    pub async fn opened(&self, peer: Peer) {
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.mark_unchanged();
            if self.is_open(peer) {
                return;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Runs `call` to `peer` unless its circuit is open, and counts its result.
    async fn call<T>(
        &self,
        peer: Peer,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        if let Some(refusal) = self.refusal(peer) {
            return Err(refusal);
        }
        let result = call.await;
        match &result {
            Err(CallError::Retryable(e)) => self.failed(peer, e),
            Ok(_) | Err(CallError::Terminal { .. }) => self.answered(peer),
        }
        result
    }

    /// The error a call to an open circuit fails with, without reaching the peer.
    fn refusal(&self, peer: Peer) -> Option<CallError> {
        let inner = self.circuit(peer).lock();
        (inner.state == CircuitState::Open).then(|| {
            CallError::Retryable(format!(
                "not called: the {} circuit is open (last error: {})",
                peer.as_str(),
                inner.last_error
            ))
        })
    }

    /// The peer answered (a success, or a verdict on the request): it is up.
    fn answered(&self, peer: Peer) {
        let circuit = self.circuit(peer);
        let mut inner = circuit.lock();
        inner.failures = 0;
        inner.failing_since = None;
        if inner.state != CircuitState::Closed {
            inner.state = CircuitState::Closed;
            inner.trial_taken = false;
            inner.failed_probes = 0;
            log_change(peer, CircuitState::Closed, "the peer answered a call");
            drop(inner);
            self.publish();
        }
    }

    /// A call to `peer` failed in a way worth retrying.
    fn failed(&self, peer: Peer, error: &str) {
        let circuit = self.circuit(peer);
        let settings = circuit.settings;
        let mut inner = circuit.lock();
        inner.failures = inner.failures.saturating_add(1);
        let since = *inner.failing_since.get_or_insert_with(Instant::now);
        inner.last_error = error.to_string();
        let open = match inner.state {
            CircuitState::Closed => {
                settings.failures > 0
                    && inner.failures >= settings.failures
                    && since.elapsed() >= settings.failing_for
            }
            // The message testing it failed: the peer is not back yet.
            CircuitState::HalfOpen => true,
            CircuitState::Open => false,
        };
        if !open {
            return;
        }
        inner.state = CircuitState::Open;
        inner.trial_taken = false;
        inner.opening += 1;
        let opening = inner.opening;
        let why = format!(
            "{} retryable failures in a row over {} s; last error: {}",
            inner.failures,
            since.elapsed().as_secs(),
            inner.last_error
        );
        log_change(peer, CircuitState::Open, &why);
        drop(inner);
        self.publish();
        tokio::spawn(self.clone().probe(peer, opening));
    }

    /// Probes `peer` at growing intervals while its circuit stays open from this `opening`
    /// (one probe per opening); half-opens it when a probe answers.
    async fn probe(self, peer: Peer, opening: u64) {
        let circuit = self.circuit(peer);
        let current = |inner: &Inner| inner.state == CircuitState::Open && inner.opening == opening;
        loop {
            let wait = circuit.probe_wait(circuit.lock().failed_probes);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shared.stop.cancelled() => return,
            }
            if !current(&circuit.lock()) {
                return;
            }
            let answer = tokio::select! {
                a = self.shared.targets[peer.index()].probe() => a,
                _ = self.shared.stop.cancelled() => return,
            };
            metrics().circuit_probe(peer.as_str(), answer.is_ok());
            let mut inner = circuit.lock();
            if !current(&inner) {
                return;
            }
            match answer {
                Ok(()) => {
                    inner.state = CircuitState::HalfOpen;
                    inner.trial_taken = false;
                    log_change(
                        peer,
                        CircuitState::HalfOpen,
                        "a probe answered; one message at a time tests it",
                    );
                    drop(inner);
                    self.publish();
                    return;
                }
                Err(e) => {
                    inner.failed_probes = inner.failed_probes.saturating_add(1);
                    let next = circuit.probe_wait(inner.failed_probes);
                    tracing::debug!(peer = peer.as_str(), error = %e, next_probe_in_secs = next.as_secs(), "circuit probe failed");
                }
            }
        }
    }

    /// Publishes the circuits' states (metric, readiness) and wakes the waiting receive
    /// loops. Called after every change, outside the circuits' locks; it reads the states
    /// under its own lock, so whichever call comes last publishes the latest states.
    fn publish(&self) {
        {
            let _publishing = self
                .shared
                .publishing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for peer in Peer::ALL {
                metrics().circuit_state(peer.as_str(), self.state(peer).as_str());
            }
            (self.shared.on_change)(self.pause_reason());
        }
        self.shared.changes.send_modify(|n| *n += 1);
    }

    /// Why receiving is paused or limited, if it is.
    pub fn pause_reason(&self) -> Option<String> {
        let reasons: Vec<String> = Peer::ALL
            .iter()
            .filter_map(|&p| {
                let inner = self.circuit(p).lock();
                match inner.state {
                    CircuitState::Closed => None,
                    CircuitState::Open => Some(format!(
                        "the {} circuit is open: receiving is paused until a probe answers (last error: {})",
                        p.as_str(),
                        inner.last_error
                    )),
                    CircuitState::HalfOpen => Some(format!(
                        "the {} circuit is half-open: one message at a time tests it",
                        p.as_str()
                    )),
                }
            })
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// `inventory` behind the inventory breaker.
    pub fn guard_inventory(&self, inventory: Arc<dyn Inventory>) -> Guarded<dyn Inventory> {
        Guarded {
            inner: inventory,
            circuits: self.clone(),
        }
    }

    /// `reservations` behind the reservation API's breaker.
    pub fn guard_reservations(
        &self,
        reservations: Arc<dyn Reservations>,
    ) -> Guarded<dyn Reservations> {
        Guarded {
            inner: reservations,
            circuits: self.clone(),
        }
    }
}

/// Logs a change of state; called under the circuit's lock, so the lines come in the order
/// of the changes.
fn log_change(peer: Peer, state: CircuitState, why: &str) {
    match state {
        CircuitState::Open => tracing::warn!(
            peer = peer.as_str(),
            state = state.as_str(),
            reason = why,
            "circuit opened: calls to the peer stop and receiving pauses until a probe answers"
        ),
        CircuitState::HalfOpen => tracing::info!(
            peer = peer.as_str(),
            state = state.as_str(),
            reason = why,
            "circuit half-open: one message at a time tests the peer"
        ),
        CircuitState::Closed => tracing::info!(
            peer = peer.as_str(),
            state = state.as_str(),
            reason = why,
            "circuit closed: receiving resumes"
        ),
    }
}

/// A peer client behind its circuit: refused at once while it is open, and every answer
/// counted.
pub struct Guarded<T: ?Sized> {
    inner: Arc<T>,
    circuits: Circuits,
}

#[async_trait]
impl Inventory for Guarded<dyn Inventory> {
    async fn release_hold(&self, req: ReleaseHoldRequest) -> Result<Applied, CallError> {
        self.circuits
            .call(Peer::Inventory, self.inner.release_hold(req))
            .await
    }

    async fn commit_reservation(
        &self,
        req: CommitReservationRequest,
    ) -> Result<Applied, CallError> {
        self.circuits
            .call(Peer::Inventory, self.inner.commit_reservation(req))
            .await
    }

    async fn probe(&self) -> Result<(), CallError> {
        self.inner.probe().await
    }
}

#[async_trait]
impl Reservations for Guarded<dyn Reservations> {
    async fn update_status(
        &self,
        reservation_id: &str,
        status: ReservationStatus,
        idempotency_key: &str,
    ) -> Result<Applied, CallError> {
        self.circuits
            .call(
                Peer::ReservationApi,
                self.inner
                    .update_status(reservation_id, status, idempotency_key),
            )
            .await
    }

    async fn fetch(&self, reservation_id: &str) -> Result<ReservationRecord, CallError> {
        self.circuits
            .call(Peer::ReservationApi, self.inner.fetch(reservation_id))
            .await
    }

    async fn probe(&self) -> Result<(), CallError> {
        self.inner.probe().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// A peer whose calls and probes answer as a test says, counting them.
    #[derive(Default)]
    struct Scripted {
        up: AtomicBool,
        calls: AtomicUsize,
        probes: AtomicUsize,
    }

    impl Scripted {
        fn answer(&self) -> Result<(), CallError> {
            if self.up.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(CallError::Retryable("connection refused".into()))
            }
        }
    }

    #[async_trait]
    impl Reservations for Scripted {
        async fn update_status(
            &self,
            _: &str,
            _: ReservationStatus,
            _: &str,
        ) -> Result<Applied, CallError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answer().map(|()| Applied::Done)
        }

        async fn fetch(&self, _: &str) -> Result<ReservationRecord, CallError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(CallError::terminal("HTTP 404"))
        }

        async fn probe(&self) -> Result<(), CallError> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            self.answer()
        }
    }

    #[async_trait]
    impl Inventory for Scripted {
        async fn release_hold(&self, _: ReleaseHoldRequest) -> Result<Applied, CallError> {
            self.answer().map(|()| Applied::Done)
        }

        async fn commit_reservation(
            &self,
            _: CommitReservationRequest,
        ) -> Result<Applied, CallError> {
            self.answer().map(|()| Applied::Done)
        }

        async fn probe(&self) -> Result<(), CallError> {
            self.answer()
        }
    }

    struct Rig {
        circuits: Circuits,
        api: Arc<Scripted>,
        guarded: Guarded<dyn Reservations>,
        paused: Arc<Mutex<Option<String>>>,
    }

    fn rig(failures: u32, failing_for: Duration) -> Rig {
        let api = Arc::new(Scripted::default());
        let paused = Arc::new(Mutex::new(None));
        let circuits = Circuits::new(
            CircuitSettings {
                failures,
                failing_for,
                probe_base: Duration::from_secs(1),
                probe_max: Duration::from_secs(4),
            },
            Arc::new(Scripted {
                up: AtomicBool::new(true),
                ..Scripted::default()
            }),
            api.clone(),
            {
                let paused = paused.clone();
                move |why| *paused.lock().unwrap() = why
            },
            CancellationToken::new(),
        );
        Rig {
            guarded: circuits.guard_reservations(api.clone()),
            circuits,
            api,
            paused,
        }
    }

    impl Rig {
        async fn patch(&self) -> Result<Applied, CallError> {
            self.guarded
                .update_status("r1", ReservationStatus::Expired, "k")
                .await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_only_after_enough_failures_over_enough_time() {
        let r = rig(3, Duration::from_secs(10));
        for _ in 0..5 {
            assert!(r.patch().await.is_err());
        }
        assert_eq!(
            r.circuits.state(Peer::ReservationApi),
            CircuitState::Closed,
            "five failures within a moment are a blip"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        // A terminal answer is an answer: the count starts again.
        assert!(r.guarded.fetch("r1").await.is_err());
        assert!(r.patch().await.is_err());
        assert!(r.patch().await.is_err());
        assert_eq!(r.circuits.state(Peer::ReservationApi), CircuitState::Closed);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(r.patch().await.is_err());
        assert_eq!(r.circuits.state(Peer::ReservationApi), CircuitState::Open);
        assert_eq!(r.circuits.state(Peer::Inventory), CircuitState::Closed);
        let why = r.paused.lock().unwrap().clone().expect("readiness told");
        assert!(
            why.contains("reservation_api circuit is open") && why.contains("connection refused"),
            "{why}"
        );

        let calls = r.api.calls.load(Ordering::SeqCst);
        let refused = r.patch().await;
        assert!(
            matches!(&refused, Err(CallError::Retryable(e)) if e.starts_with("not called")),
            "{refused:?}"
        );
        assert_eq!(
            r.api.calls.load(Ordering::SeqCst),
            calls,
            "the peer is not called"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_pauses_receiving_and_probes_at_growing_intervals() {
        let r = rig(1, Duration::ZERO);
        assert!(r.patch().await.is_err());
        assert!(r.circuits.is_open(Peer::ReservationApi));
        let admit = tokio::spawn({
            let circuits = r.circuits.clone();
            async move { circuits.admit().await }
        });
        let opened_at = tokio::time::Instant::now();
        // Probes after 1, 2, 4, 4, 4 s: five by 15 s.
        tokio::time::sleep(Duration::from_millis(15_500)).await;
        assert_eq!(r.api.probes.load(Ordering::SeqCst), 5);
        assert!(!admit.is_finished(), "nothing is received while open");

        r.api.up.store(true, Ordering::SeqCst);
        let admission = admit.await.unwrap();
        assert_eq!(opened_at.elapsed().as_secs(), 19, "the next probe answered");
        assert_eq!(
            r.circuits.state(Peer::ReservationApi),
            CircuitState::HalfOpen
        );
        assert_eq!(admission.limit(10), 1, "one message tests the peer");
        let trial = admission.into_trial();
        assert!(trial.is_some());
        let second = tokio::spawn({
            let circuits = r.circuits.clone();
            async move { circuits.admit().await.limit(10) }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "one trial at a time");
        // The trial message ended without calling the peer: the next one may test it.
        drop(trial);
        assert_eq!(second.await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_circuit_closes_on_an_answer_and_reopens_on_a_failure() {
        let r = rig(1, Duration::ZERO);
        assert!(r.patch().await.is_err());
        r.api.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(
            r.circuits.state(Peer::ReservationApi),
            CircuitState::HalfOpen
        );

        // The trial's call fails: open again, probing from where it was.
        r.api.up.store(false, Ordering::SeqCst);
        let trial = r.circuits.admit().await.into_trial();
        assert!(r.patch().await.is_err());
        drop(trial);
        assert!(r.circuits.is_open(Peer::ReservationApi));

        r.api.up.store(true, Ordering::SeqCst);
        let trial = r.circuits.admit().await.into_trial();
        assert!(trial.is_some());
        assert_eq!(r.patch().await, Ok(Applied::Done));
        drop(trial);
        assert!(r.circuits.all_closed());
        assert_eq!(*r.paused.lock().unwrap(), None, "ready again");
        assert_eq!(
            r.circuits.admit().await.limit(10),
            10,
            "receiving resumes in full"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_per_opening_and_a_stale_trial_frees_nothing() {
        let r = rig(1, Duration::ZERO);
        assert!(r.patch().await.is_err());
        // A call made before the opening answers after it, and the next failure opens again:
        // the first opening's probe must stop, not probe beside the second's.
        r.circuits.answered(Peer::ReservationApi);
        assert!(r.patch().await.is_err());
        tokio::time::sleep(Duration::from_millis(15_500)).await;
        assert_eq!(
            r.api.probes.load(Ordering::SeqCst),
            5,
            "probes after 1, 2, 4, 4, 4 s, from one probe only"
        );

        // A trial outlives its half-open spell: its end must not free the next spell's trial.
        r.api.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stale = r.circuits.admit().await.into_trial();
        assert!(stale.is_some());
        r.api.up.store(false, Ordering::SeqCst);
        assert!(r.patch().await.is_err());
        r.api.up.store(true, Ordering::SeqCst);
        let current = r.circuits.admit().await.into_trial();
        assert!(current.is_some(), "half-open again, tested again");
        drop(stale);
        let third = tokio::spawn({
            let circuits = r.circuits.clone();
            async move { circuits.admit().await.limit(10) }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "still one trial at a time");
        drop(current);
        assert_eq!(third.await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_threshold_of_zero_never_opens() {
        let r = rig(0, Duration::ZERO);
        for _ in 0..100 {
            assert!(r.patch().await.is_err());
        }
        assert!(r.circuits.all_closed());
        assert_eq!(r.api.calls.load(Ordering::SeqCst), 100);
    }
}
