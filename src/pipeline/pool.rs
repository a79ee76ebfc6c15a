//! The pool: permits bound the work in flight, and every received message gets a task that
//! carries its permit from dispatch until its disposition is handed to the acker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::disposition::{Deleted, Disposition};
use super::groups::{FifoGroups, Place};
use super::renewal::Renewals;
use super::span::SpanNames;
use super::{KeyedLocks, RecentlyCompleted};
use crate::backoff::{Backoff, redelivery_delay};
use crate::client::CallError;
use crate::client::circuit::{Circuits, Trial};
use crate::event::{self, Event, EventType, MessageContext};
use crate::health::WorkerStatus;
use crate::labels::AppliedSteps;
use crate::pipeline::acker::Settle;
use crate::sqs::{Delivery, Queue};
use crate::telemetry::metrics::metrics;
use crate::workflow::{self, Peers, Progress};

/// The pool's settings, taken from the config.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub concurrency: usize,
    pub max_retries: u32,
    pub backoff: Backoff,
    pub redelivery_base: Duration,
    pub redelivery_max: Duration,
    pub visibility: Duration,
    pub fifo: bool,
    pub dedupe_capacity: usize,
    pub dedupe_ttl: Duration,
}

/// Everything a task needs, shared by all tasks.
struct Shared {
    settings: PoolSettings,
    /// Keeps the messages being worked on hidden.
    renewals: Renewals,
    span_names: SpanNames,
    peers: Peers,
    acks: mpsc::Sender<Settle>,
    /// Reservations being worked on: one reservation's events never run at once.
    locks: KeyedLocks,
    /// Messages being worked on: a second delivery of one (its visibility lapsed) waits for
    /// the first to end instead of running beside it.
    running: KeyedLocks,
    groups: FifoGroups,
    recent: RecentlyCompleted,
    status: Arc<WorkerStatus>,
    /// Cancelled at SIGTERM: no new backoff sleeps; unfinished retries are released.
    draining: CancellationToken,
    /// Cancelled when the shutdown timeout is up: whatever is still running is released.
    hard_stop: CancellationToken,
}

/// How long a reserve on a saturated pool waits for a full batch of slots before it receives
/// with fewer. Each receive costs a whole request's CPU (and SQS charges) however few messages
/// it asks for; waiting lets the slots of messages that started together, and so finish
/// together, go out in one receive. An idle pool never waits: its slots are free already.
pub(crate) const FILL_WAIT: Duration = Duration::from_millis(5);

/// A bounded set of message tasks. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    permits: Arc<Semaphore>,
    /// Held by the receive loop that is reserving slots.
    turn: Arc<tokio::sync::Mutex<()>>,
    tracker: TaskTracker,
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool of `settings.concurrency` slots writing dispositions to `acks`. Starts the
    /// visibility renewal task, so it must be made inside a tokio runtime.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: PoolSettings,
        queue: Arc<dyn Queue>,
        peers: Peers,
        acks: mpsc::Sender<Settle>,
        status: Arc<WorkerStatus>,
        draining: CancellationToken,
        hard_stop: CancellationToken,
    ) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            tracker: TaskTracker::new(),
            shared: Arc::new(Shared {
                recent: RecentlyCompleted::new(settings.dedupe_capacity, settings.dedupe_ttl),
                renewals: Renewals::start(queue.clone(), settings.visibility, status.clone()),
                settings,
                span_names: SpanNames::new(queue.url()),
                peers,
                acks,
                locks: KeyedLocks::default(),
                running: KeyedLocks::default(),
                groups: FifoGroups::default(),
                status,
                draining,
                hard_stop,
            }),
        }
    }

    /// Takes up to `max` slots for one receive: waits for its turn (one receive loop reserves
    /// at a time), then for one free slot, then takes what is free. When that is not `max`,
    /// every slot is busy, and it waits up to [`FILL_WAIT`] for more to free. The turn keeps
    /// freed slots together: every loop waiting on the semaphore at once would get one slot
    /// each.
    pub async fn reserve(&self, max: usize) -> Vec<OwnedSemaphorePermit> {
        // More than the pool has would never come: the fill wait would always run out.
        let max = max.min(self.shared.settings.concurrency);
        let _turn = self.turn.lock().await;
        let Ok(first) = self.permits.clone().acquire_owned().await else {
            return Vec::new();
        };
        let mut permits = vec![first];
        self.take_free(&mut permits, max);
        let until = tokio::time::Instant::now() + FILL_WAIT;
        while permits.len() < max {
            match tokio::time::timeout_at(until, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => {
                    permits.push(permit);
                    self.take_free(&mut permits, max);
                }
                _ => break,
            }
        }
        permits
    }

    fn take_free(&self, permits: &mut Vec<OwnedSemaphorePermit>, max: usize) {
        while permits.len() < max {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
    }

    /// The peers' circuit breakers, which the receive loops ask before each receive.
    pub fn circuits(&self) -> &Circuits {
        &self.shared.peers.circuits
    }

    /// Starts a task per delivery. On FIFO queues each message takes its place in its
    /// group's line (across batches), so it starts only after the one before it has finished.
    /// A `trial` (a half-open circuit's test, for a batch of one) is held until its message
    /// is settled.
    pub fn dispatch(
        &self,
        batch: Vec<Delivery>,
        permits: Vec<OwnedSemaphorePermit>,
        mut trial: Option<Trial>,
    ) {
        let batch_id = self
            .shared
            .settings
            .fifo
            .then(|| self.shared.groups.batch());
        for (delivery, permit) in batch.into_iter().zip(permits) {
            let place = match (&delivery.group_id, batch_id) {
                (Some(group), Some(batch_id)) => Some(self.shared.groups.join(
                    group,
                    &delivery.message_id,
                    delivery.sequence_number,
                    batch_id,
                )),
                _ => None,
            };
            // Boxed: the task's future is a few KiB, and spawning moves it through several
            // layers by value; a box moves as a pointer.
            self.tracker.spawn(Box::pin(settle(
                self.shared.clone(),
                delivery,
                permit,
                place,
                trial.take(),
            )));
        }
    }

    /// Stops accepting tasks and waits for the running ones until `finish_by`; then cuts them
    /// short (each hands its message back) and waits for that until `give_up_by`. Whether all
    /// finished in time.
    pub async fn drain(
        &self,
        finish_by: tokio::time::Instant,
        give_up_by: tokio::time::Instant,
    ) -> bool {
        self.tracker.close();
        if tokio::time::timeout_at(finish_by, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.shared.hard_stop.cancel();
        let _ = tokio::time::timeout_at(give_up_by, self.tracker.wait()).await;
        false
    }
}

/// One message, start to finish: decide its disposition, hand it to the acker, free the slot.
/// A `trial` is held until then.
///
/// A function returning an `async` block rather than an `async fn`: an `async fn` keeps its
/// arguments twice in its future (as passed, and moved into its body), and this future is
/// held for every message in flight.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
fn settle(
    shared: Arc<Shared>,
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
    mut place: Option<Place>,
    trial: Option<Trial>,
) -> impl Future<Output = ()> {
    async move {
        shared.status.begin();
        // Parsed first: the message's span takes its log fields and trace parent from the event.
        let parsed = event::parse(
            &delivery.body,
            &MessageContext {
                message_id: &delivery.message_id,
                attributes: &delivery.attributes,
            },
        );
        let span = super::span::process_span(&shared.span_names, &delivery, parsed.as_ref().ok());
        // Known even for a message released before its workflow started, and for a body that
        // named its type but failed on a field.
        let event_type = match &parsed {
            Ok(e) => Some(e.event_type()),
            Err(e) => e.event_type(),
        };
        let envelope_id = parsed.as_ref().ok().map(|e| e.envelope_id.clone());
        let work = async {
            if let Some(place) = &mut place {
                place.wait_turn().await;
                if let Some(after) = shared.groups.held_for(place) {
                    let error = HELD_BACK.into();
                    return Disposition::RetryLater { after, error };
                }
            }
            let _running = shared.running.lock(&delivery.message_id).await;
            decide(&shared, &delivery, &parsed).await
        };
        let disposition = {
            // Pinned here and borrowed below: an async layer that took it by value would hold a
            // copy of its state (most of the task's size).
            let mut work = std::pin::pin!(work);
            tokio::select! {
                d = shared.renewals.hidden_while(&delivery, &span, &mut work).instrument(span.clone()) => d,
                // Out of time: neither the work nor a renewal under way is waited for (the message
                // reappears a visibility later at the latest).
                _ = shared.hard_stop.cancelled() => Disposition::Release,
            }
        };
        if let Some(place) = place {
            shared
                .groups
                .finish(place, &delivery.message_id, &disposition);
        }
        let latency = delivery.received_at.elapsed();
        super::span::finish_process(&span, &disposition);
        let type_label = event_type.map(EventType::as_str);
        metrics().event_finished(type_label, disposition.outcome(), latency);
        span.in_scope(|| log_finished(&disposition, latency, type_label));
        // A dead letter keeps its slot until the DLQ has it; every other disposition frees it now.
        let slot = matches!(disposition, Disposition::DeadLetter { .. }).then_some(permit);
        // The acker outlives every task (it stops only when all senders are gone).
        if shared
            .acks
            .send(Settle {
                delivery,
                disposition,
                span: span.clone(),
                slot,
                envelope_id,
                event_type,
            })
            .await
            .is_err()
        {
            tracing::error!(
                "acker is gone; the message will reappear after its visibility timeout"
            );
        }
        shared.status.end();
        drop(trial);
    }
}

/// The error of a FIFO message held back behind an earlier one of its group.
const HELD_BACK: &str = "held back: an earlier message of its FIFO group is waiting to be retried";

/// The message's last line: a warning for a dead letter or a retry, with why.
fn log_finished(disposition: &Disposition, latency: Duration, event_type: Option<&str>) {
    let outcome = disposition.outcome().as_str();
    let latency_ms = latency.as_millis() as u64;
    match disposition {
        Disposition::DeadLetter {
            class,
            error,
            applied,
        } => tracing::warn!(
            outcome,
            latency_ms,
            reason = class.as_str(),
            error = %error,
            applied_steps = %applied,
            event_type,
            "message finished"
        ),
        Disposition::RetryLater { after, error } => tracing::warn!(
            outcome,
            latency_ms,
            retry_in_secs = after.as_secs(),
            error = %error,
            event_type,
            "message finished"
        ),
        _ => tracing::info!(outcome, latency_ms, event_type, "message finished"),
    }
}

/// Dead-letter what did not parse, serialize by key, skip duplicates, run the workflow with
/// retries. The parse result is borrowed: moved in, each layer of the task's future would hold
/// a copy of it.
async fn decide(
    shared: &Shared,
    delivery: &Delivery,
    parsed: &Result<Event, event::EventError>,
) -> Disposition {
    let event = match parsed {
        Ok(e) => e,
        Err(e) => {
            return Disposition::DeadLetter {
                class: e.class(),
                error: e.to_string(),
                applied: AppliedSteps::default(),
            };
        }
    };

    // Also on FIFO queues: two groups may carry events of one reservation.
    let _guard = shared.locks.lock(event.reservation_id()).await;
    if shared.recent.contains(&event.envelope_id) {
        return Disposition::Delete(Deleted::Duplicate);
    }
    let d = run_workflow(shared, event, delivery).await;
    if matches!(d, Disposition::Delete(Deleted::Applied)) {
        shared.recent.insert(&event.envelope_id);
    }
    d
}

/// Up to `max_retries` attempts with backoff; steps done in one attempt are not repeated.
async fn run_workflow(shared: &Shared, event: &Event, delivery: &Delivery) -> Disposition {
    let s = &shared.settings;
    let mut progress = Progress::default();
    let mut last_error = String::new();
    let mut failed_step: workflow::Step;
    for attempt in 1..=s.max_retries {
        // On the message's span, so every later line of this message carries it.
        tracing::Span::current().record("attempt", attempt);
        match workflow::attempt(event, &mut progress, &shared.peers).await {
            Ok(()) => return Disposition::Delete(Deleted::Applied),
            Err(e) => match e.error {
                CallError::Terminal { class, ref reason } => {
                    return Disposition::DeadLetter {
                        class,
                        error: format!("{}: {reason}", e.step),
                        applied: progress.applied(event),
                    };
                }
                CallError::Retryable(ref reason) => {
                    last_error = format!("{}: {reason}", e.step);
                    failed_step = e.step;
                    tracing::warn!(attempt, step = e.step.name().as_str(), error = %reason, "step failed, retryable");
                }
            },
        }
        if attempt == s.max_retries {
            break;
        }
        if shared.draining.is_cancelled() {
            return Disposition::Release;
        }
        // An open circuit fails every call at once: back to the queue with the backoff
        // instead of spending the remaining attempts.
        let circuits = &shared.peers.circuits;
        if circuits.is_open(failed_step.peer()) {
            break;
        }
        metrics().retry(failed_step.name());
        tokio::select! {
            _ = tokio::time::sleep(s.backoff.delay(attempt)) => {}
            _ = circuits.opened(failed_step.peer()) => break,
            _ = shared.draining.cancelled() => return Disposition::Release,
        }
    }
    Disposition::RetryLater {
        after: redelivery_delay(s.redelivery_base, s.redelivery_max, delivery.receive_count),
        error: last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::circuit::CircuitSettings;
    use crate::client::inventory::GrpcInventory;
    use crate::client::reservation::RestReservations;
    use tokio::sync::oneshot;

    fn pool(concurrency: usize) -> Pool {
        let sdk = aws_config::SdkConfig::builder().build();
        let (acks, _) = mpsc::channel(1);
        Pool::new(
            PoolSettings {
                concurrency,
                max_retries: 1,
                backoff: Backoff {
                    base: Duration::from_millis(1),
                    max: Duration::from_millis(1),
                },
                redelivery_base: Duration::from_secs(1),
                redelivery_max: Duration::from_secs(1),
                visibility: Duration::from_secs(30),
                fifo: false,
                dedupe_capacity: 0,
                dedupe_ttl: Duration::from_secs(1),
            },
            Arc::new(crate::sqs::SqsQueue::new(
                &sdk,
                "http://127.0.0.1:1/000000000000/q",
            )),
            Peers::new(
                Arc::new(GrpcInventory::new("http://127.0.0.1:1", Duration::from_secs(1)).unwrap()),
                Arc::new(
                    RestReservations::new(
                        "http://127.0.0.1:1",
                        None,
                        Duration::from_secs(1),
                        crate::config::Http2::Alpn,
                    )
                    .unwrap(),
                ),
                CircuitSettings::OFF,
                |_| {},
                CancellationToken::new(),
            ),
            acks,
            Arc::new(WorkerStatus::default()),
            CancellationToken::new(),
            CancellationToken::new(),
        )
    }

    /// Holds all 4 slots of `pool` in tasks. Firing the returned trigger frees one slot, and
    /// the freeing task then tells two more to free theirs: those two run after the reserve
    /// woken by the first slot was polled, as tasks finishing in the same moment do. The
    /// second trigger frees the fourth slot.
    async fn busy_four(pool: &Pool) -> (oneshot::Sender<()>, oneshot::Sender<()>) {
        let mut permits = pool.reserve(4).await;
        assert_eq!(permits.len(), 4);
        let holder = |permit: OwnedSemaphorePermit| {
            let (tx, rx) = oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = rx.await;
                drop(permit);
            });
            tx
        };
        let (second, third, fourth) = (
            holder(permits.pop().unwrap()),
            holder(permits.pop().unwrap()),
            holder(permits.pop().unwrap()),
        );
        let first = permits.pop().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = rx.await;
            drop(first);
            let _ = second.send(());
            let _ = third.send(());
        });
        (tx, fourth)
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_pool_waits_a_little_for_a_full_batch() {
        let pool = pool(4);
        let (three, fourth) = busy_four(&pool).await;
        let gathering = tokio::spawn({
            let pool = pool.clone();
            async move { pool.reserve(4).await.len() }
        });
        let _ = three.send(());
        tokio::time::sleep(FILL_WAIT / 2).await;
        let _ = fourth.send(());
        assert_eq!(
            gathering.await.unwrap(),
            4,
            "the slot freed inside the wait joins"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_goes_short_once_the_fill_wait_is_up() {
        let pool = pool(4);
        let (three, _fourth) = busy_four(&pool).await;
        let gathering = tokio::spawn({
            let pool = pool.clone();
            async move {
                let n = pool.reserve(4).await.len();
                (n, tokio::time::Instant::now())
            }
        });
        tokio::task::yield_now().await;
        let freed = tokio::time::Instant::now();
        let _ = three.send(());
        let (n, at) = gathering.await.unwrap();
        assert_eq!(n, 3);
        assert_eq!(at - freed, FILL_WAIT, "no longer than the fill wait");
    }

    #[tokio::test(start_paused = true)]
    async fn one_loop_reserves_at_a_time_so_freed_slots_are_not_spread_thin() {
        let pool = pool(4);
        let (three, fourth) = busy_four(&pool).await;
        let reserving = |pool: &Pool| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.reserve(4).await })
        };
        let (first, second) = (reserving(&pool), reserving(&pool));
        tokio::task::yield_now().await;
        let _ = three.send(());
        let gathered = first.await.unwrap();
        assert_eq!(gathered.len(), 3, "the loop whose turn it is gathers");
        assert!(
            !second.is_finished(),
            "the other waits for the next free slot"
        );
        let _ = fourth.send(());
        assert_eq!(second.await.unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn asking_for_more_slots_than_the_pool_has_takes_them_all_at_once() {
        let pool = pool(4);
        let at = tokio::time::Instant::now();
        assert_eq!(pool.reserve(10).await.len(), 4);
        assert_eq!(
            at.elapsed(),
            Duration::ZERO,
            "no fill wait for slots that do not exist"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pool_hands_out_what_is_free_at_once() {
        let pool = pool(5);
        let mut busy = pool.reserve(5).await;
        assert_eq!(busy.len(), 5);
        busy.truncate(1);
        let at = tokio::time::Instant::now();
        assert_eq!(pool.reserve(4).await.len(), 4);
        assert_eq!(at.elapsed(), Duration::ZERO, "no timed wait for more slots");
    }
}
