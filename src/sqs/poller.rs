//! The long-poller. It takes worker permits *before* asking SQS for messages, and asks for no
//! more than it holds, so a received message never waits invisible for a free slot.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Queue;
use crate::worker::{Pool, WorkerStatus};

/// Receives batches and hands them to the pool until `receiving` is cancelled.
pub struct Poller {
    pub queue: Queue,
    pub pool: Pool,
    pub wait: Duration,
    pub visibility: Duration,
    pub status: Arc<WorkerStatus>,
}

impl Poller {
    pub async fn run(self, receiving: CancellationToken) {
        let mut error_backoff = Duration::from_millis(500);
        loop {
            let permits = tokio::select! {
                p = self.pool.reserve(10) => p,
                _ = receiving.cancelled() => return,
            };
            self.status.polling();
            let received = tokio::select! {
                r = self.queue.receive(permits.len(), self.wait, self.visibility) => r,
                // Dropping the long poll here is what makes shutdown immediate.
                _ = receiving.cancelled() => return,
            };
            match received {
                Ok(batch) => {
                    error_backoff = Duration::from_millis(500);
                    self.status.polled();
                    if !batch.is_empty() {
                        tracing::debug!(count = batch.len(), "received");
                        self.pool.dispatch(batch, permits);
                    }
                }
                Err(e) => {
                    drop(permits);
                    tracing::warn!(error = %e, retry_in_ms = error_backoff.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(error_backoff) => {}
                        _ = receiving.cancelled() => return,
                    }
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(20));
                }
            }
        }
    }
}
