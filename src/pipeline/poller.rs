//! The long-poller. It takes worker permits *before* asking SQS for messages, and asks for no
//! more than it holds, so a received message never waits invisible for a free slot.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Pool;
use crate::backoff::Backoff;
use crate::health::WorkerStatus;
use crate::sqs::{BATCH_LIMIT, Queue};
use crate::telemetry::metrics::metrics;

/// How often the loop beats while it waits for its turn, a free slot or out an error backoff.
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// Waits between failed receives: 0.5 s doubling to 20 s, plus up to 25 % jitter, so the loops
/// of a pod (and the pods of a deployment) do not retry an SQS outage in lockstep.
const RECEIVE_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(500),
    max: Duration::from_secs(20),
};

/// How long the poll loop may go without a heartbeat before `/health` fails: three receive
/// timeouts (`SQS_WAIT_TIME` + 5 s each), at least 30 s. Every other wait of the loop beats
/// once a second, and a receive cannot outlast its timeout, so only a stuck loop stays silent.
pub(crate) fn liveness_limit(wait: Duration) -> Duration {
    (crate::sqs::receive_timeout(wait) * 3).max(Duration::from_secs(30))
}

/// Receives batches and hands them to the pool until `receiving` is cancelled. The worker
/// runs several (`SQS_RECEIVE_LOOPS`): one loop has one ReceiveMessage in flight at a time,
/// which caps it at 10 messages per receive latency.
#[derive(Clone)]
pub struct Poller {
    pub queue: Arc<dyn Queue>,
    pub pool: Pool,
    pub wait: Duration,
    pub visibility: Duration,
    pub status: Arc<WorkerStatus>,
    /// The most slots one receive takes (1–10): `ceil(WORKER_CONCURRENCY / loops)`, so
    /// every loop gets a share of the slots instead of the first one taking them all.
    pub batch: usize,
}

impl Poller {
    /// Polls until `receiving` is cancelled; an in-flight long poll is dropped at once.
    pub async fn run(self, receiving: CancellationToken) {
        let me = self.status.poll_loop_started(liveness_limit(self.wait));
        let mut failures = 0;
        loop {
            // While a peer's circuit is open, nothing is received: a message received now
            // could only go back, one receive count nearer the queue's maxReceiveCount.
            let circuits = self.pool.circuits();
            let Some(admission) = self.beating(me, circuits.admit(), &receiving).await else {
                return;
            };
            let limit = admission.limit(self.batch.clamp(1, BATCH_LIMIT));
            let trial = admission.into_trial();
            let Some(permits) = self.beating(me, self.pool.reserve(limit), &receiving).await else {
                return;
            };
            if trial.is_none() && !circuits.all_closed() {
                // A circuit opened while this loop waited for slots.
                continue;
            }
            self.status.polling(me);
            let received = tokio::select! {
                r = self.queue.receive(permits.len(), self.wait, self.visibility) => r,
                // Dropping the long poll here is what makes shutdown immediate.
                _ = receiving.cancelled() => return,
            };
            match received {
                Ok(batch) => {
                    failures = 0;
                    self.status.polled(me);
                    metrics().received(batch.iter().map(|d| d.sent_at));
                    if !batch.is_empty() {
                        tracing::debug!(count = batch.len(), asked = permits.len(), "received");
                        self.pool.dispatch(batch, permits, trial);
                    }
                }
                Err(e) => {
                    drop(permits);
                    metrics().poll_failed();
                    failures += 1;
                    let delay = RECEIVE_BACKOFF.delay(failures);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "receive failed");
                    if self
                        .beating(me, tokio::time::sleep(delay), &receiving)
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Awaits `work`, beating for loop `me` once a second meanwhile; `None` if `receiving` is
    /// cancelled.
    async fn beating<F: Future>(
        &self,
        me: usize,
        work: F,
        receiving: &CancellationToken,
    ) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tokio::time::sleep(BEAT_EVERY) => self.status.beat(me),
                _ = receiving.cancelled() => return None,
            }
        }
    }
}
