//! The pipeline wired together: receive loops feeding the pool, the pool handing dispositions
//! to the acker, and the drain at shutdown. The binary runs it against SQS; tests run the same
//! wiring in-process against the in-memory queue.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::acker::{Acker, DeadLetterQueue};
use super::poller::Poller;
use super::{Pool, PoolSettings, RecentlyCompleted};
use crate::health::WorkerStatus;
use crate::sqs::Queue;
use crate::workflow::Peers;

/// The part of the shutdown margin the acker has for the writes still under way.
pub(crate) const SETTLE_MARGIN: Duration = Duration::from_secs(3);

/// The pipeline's settings beyond the pool's, taken from the config.
#[derive(Debug, Clone)]
pub(crate) struct PipelineSettings {
    pub pool: PoolSettings,
    /// Receive loops (`SQS_RECEIVE_LOOPS`).
    pub receive_loops: usize,
    /// The long-poll wait of each receive.
    pub wait: Duration,
    /// How long in-flight work may take to finish after shutdown begins.
    pub shutdown_timeout: Duration,
    /// Written on each dead-letter copy; the process id without it.
    pub pod_name: Option<String>,
}

/// The queues the pipeline uses.
#[derive(Debug, Clone)]
pub(crate) struct Queues {
    /// Where messages are received from.
    pub source: Arc<dyn Queue>,
    /// The same queue for writes (deletes, visibility changes), each call bounded by
    /// [`super::acker::WRITE_TIMEOUT`].
    pub writes: Arc<dyn Queue>,
    /// The dead-letter queue, when there is one.
    pub dlq: Option<DeadLetterQueue>,
}

/// Runs the pipeline until `shutdown` is cancelled, then drains: stop receiving at once, let
/// in-flight work finish within the shutdown timeout, release the rest, flush the acker.
pub(crate) async fn run(
    settings: PipelineSettings,
    queues: Queues,
    peers: Peers,
    status: Arc<WorkerStatus>,
    shutdown: CancellationToken,
) {
    let pool_settings = &settings.pool;
    let (ack_tx, ack_rx) = mpsc::channel(pool_settings.concurrency * 2 + 20);
    let dlq_limit = queues.dlq.as_ref().map(|d| d.max_message_size);
    let mut acker = Acker::new(
        queues.writes.clone(),
        queues.dlq.map(|d| d.queue),
        pool_settings.redelivery_base,
        RecentlyCompleted::new(pool_settings.dedupe_capacity, pool_settings.dedupe_ttl),
    )
    .with_pod_name(settings.pod_name.as_deref())
    .with_status(status.clone());
    if let Some(limit) = dlq_limit {
        acker = acker.with_dlq_limit(limit);
    }
    let mut acker = tokio::spawn(status.clone().supervise(
        "acker",
        shutdown.clone(),
        acker.run(ack_rx),
    ));
    let pool = Pool::new(
        pool_settings.clone(),
        queues.writes,
        peers,
        ack_tx,
        status.clone(),
        shutdown.clone(),
        CancellationToken::new(),
    );
    let poller = Poller {
        queue: queues.source,
        pool: pool.clone(),
        wait: settings.wait,
        visibility: pool_settings.visibility,
        status: status.clone(),
        batch: pool_settings.concurrency.div_ceil(settings.receive_loops),
    };
    tracing::info!(
        queue_url = %poller.queue.url(),
        concurrency = pool_settings.concurrency,
        receive_loops = settings.receive_loops,
        runtime_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        fifo = pool_settings.fifo,
        "worker started"
    );
    // Each loop is its own task, so receives and their parsing run on every core.
    let polling: Vec<_> = (0..settings.receive_loops)
        .map(|index| {
            let poller = poller.clone();
            let receiving = shutdown.clone();
            tokio::spawn(
                status
                    .clone()
                    .supervise("poll loop", shutdown.clone(), async move {
                        tracing::info!(
                            receive_loop = index,
                            batch = poller.batch,
                            "receive loop started"
                        );
                        poller.run(receiving).await;
                    }),
            )
        })
        .collect();
    // Each loop holds a clone of the pool (and so of the acker's sender): keeping this one
    // would keep the acker waiting for more work after shutdown.
    drop(poller);

    shutdown.cancelled().await;
    let drained_by = tokio::time::Instant::now() + settings.shutdown_timeout;
    status.start_draining();
    tracing::info!(
        in_flight = status.in_flight(),
        timeout_secs = settings.shutdown_timeout.as_secs(),
        "shutting down: receiving stopped, draining"
    );
    for loop_task in polling {
        let _ = loop_task.await;
    }
    let finished = pool.drain(drained_by, drained_by + SETTLE_MARGIN).await;
    if !finished {
        tracing::warn!("shutdown timeout reached: unfinished messages released");
    }
    // The pool held the last sender: dropping it lets the acker flush and stop.
    drop(pool);
    if tokio::time::timeout_at(drained_by + SETTLE_MARGIN, &mut acker)
        .await
        .is_err()
    {
        acker.abort();
        tracing::warn!(
            margin_secs = SETTLE_MARGIN.as_secs(),
            "writes to SQS still unfinished at the shutdown deadline were cut: their messages reappear when their visibility ends"
        );
    }
}
