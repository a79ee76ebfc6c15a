//! reservation-worker: applies reservation and payment events from SQS to the inventory
//! service (gRPC) and the reservation API (REST), without losing or repeating an event.
//!
//! The pipeline reads top to bottom, one way: [`config`] → `aws` (SDK configuration) →
//! `sqs` (the [`Queue`] seam and its AWS adapter, [`SqsQueue`]) → `pipeline` (receive loops,
//! [`Pool`], visibility renewal, [`Acker`]) → `workflow` (the three workflows) → `client`
//! (inventory gRPC, reservation REST). [`event`] (envelope to typed event), `labels` (the
//! bounded vocabularies of logs and metrics), `health` and `telemetry` are leaves that import
//! no pipeline type; `server` answers on the health and debug ports and [`cli`] holds the
//! operator commands. The simulators of the two peers and of SQS live in their own crate
//! (`crates/sim`), which only tests, benches and `make dev` use.
//!
//! Public is what the binary, the integration tests, the bench and the fuzz target use: the
//! contracts ([`event`], [`proto`], [`config`]), [`run`]/[`serve`], the operator commands, and
//! the pipeline parts the tests drive directly (re-exported below). The rest is private.

#![forbid(unsafe_code)]

mod aws;
mod backoff;
pub mod cli;
mod client;
pub mod config;
pub mod event;
mod health;
mod labels;
mod pipeline;
pub mod proto;
mod redact;
mod server;
mod sqs;
mod telemetry;
mod text;
mod workflow;

// The surface the binary, the integration tests and the bench use; everything else is private
// to the crate.
pub use backoff::Backoff;
pub use client::circuit::CircuitSettings;
pub use client::inventory::GrpcInventory;
pub use client::reservation::RestReservations;
pub use health::WorkerStatus;
pub use labels::{AppliedSteps, DeadLetterReason, StepName};
pub use pipeline::acker::{ALREADY_DEAD_LETTERED, Acker, Settle};
pub use pipeline::disposition::Disposition;
pub use pipeline::poller::Poller;
pub use pipeline::{Pool, PoolSettings, RecentlyCompleted};
pub use server::http::serve as serve_http;
pub use sqs::{Delivery, Queue, SqsQueue};
pub use telemetry::{batch_log_lines, write_pending_log_lines};
pub use workflow::Peers;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::client::Measured;
use crate::config::Config;
use crate::pipeline::acker::{DEFAULT_MAX_MESSAGE_SIZE, DeadLetterQueue, WRITE_TIMEOUT};
use crate::pipeline::{PipelineSettings, Queues};
use crate::telemetry::metrics::metrics;

/// How long the health and debug servers may take to close their connections at shutdown.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(1);

/// How long after `SHUTDOWN_TIMEOUT_SECS` the process may take to stop: settling what was
/// decided (3 s), closing the servers (1 s) and flushing traces share it, and a watchdog ends
/// the process when it runs out, whatever still hangs (an SQS endpoint that never answers).
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// How long the binary's allocator keeps freed memory before it returns it to the OS.
/// mimalloc 3 waits a second; a burst (a full pool starting at once, a backlog after an
/// outage) frees much in that second, and all of it stays resident until the purge
/// (docs/performance.md, "Memory the allocator keeps"). Returned sooner, it is not counted
/// against the pod's memory; a shorter wait costs madvise calls and page faults. The bench's
/// contract floor runs with the same setting, so the two are compared like for like.
pub const ALLOCATOR_PURGE_DELAY: Duration = Duration::from_millis(100);

/// Why the worker could not run. Each names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {var}={port}: {source}")]
    Bind {
        var: &'static str,
        port: u16,
        source: std::io::Error,
    },
    #[error("INVENTORY_GRPC_ADDR: {0}")]
    Inventory(#[from] tonic::transport::Error),
    #[error("reservation API client: {0}")]
    Reservations(#[from] client::reservation::ReservationClientError),
}

/// Sends the worker's JSON log lines (as `LOG_FORMAT=json` writes them, filtered by `level`)
/// to `writer`, from this thread only, until the guard drops: a test running the worker
/// in-process on a current-thread runtime reads its logs this way while other tests run on
/// other threads.
pub fn log_to_writer<W>(level: &str, writer: W) -> tracing::subscriber::DefaultGuard
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    tracing::subscriber::set_default(
        tracing_subscriber::registry().with(telemetry::logging::json_layer(level, writer)),
    )
}

/// The worker's two ports: health, readiness and metrics (HTTP), and the gRPC debug service.
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
}

/// Runs the worker until `shutdown` is cancelled, then drains: stop receiving at once, let
/// in-flight work finish within the shutdown timeout, release the rest, flush the acker.
/// Binds the configured ports and reaches SQS the SDK's usual way, then [`serve`]s.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let listeners = Listeners {
        http: bind("SERVER_PORT", config.server_port).await?,
        grpc: bind("GRPC_DEBUG_PORT", config.grpc_debug_port).await?,
    };
    let queue = SqsQueue::from_config(&config).await;
    serve(config, listeners, queue, shutdown).await
}

/// [`run`] on listeners and a queue the caller made: a test starts the whole worker in its own
/// process this way, on loopback ports of its choosing and an SQS endpoint of its own.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    queue: SqsQueue,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let status = Arc::new(WorkerStatus::default());
    let servers_stop = CancellationToken::new();
    metrics().set_pool_capacity(config.concurrency);
    let peers = Peers::new(
        Arc::new(Measured(GrpcInventory::new(
            &config.inventory_uri,
            config.inventory_timeout,
        )?)),
        Arc::new(Measured(RestReservations::new(
            &config.reservation_api_base,
            config.reservation_api_token.clone(),
            config.reservation_api_timeout,
            config.reservation_api_http2,
        )?)),
        CircuitSettings {
            failures: config.circuit_failures,
            failing_for: config.circuit_failing_for,
            probe_base: config.circuit_probe_base,
            probe_max: config.circuit_probe_max,
        },
        {
            let status = status.clone();
            move |paused| status.set_paused(paused)
        },
        shutdown.clone(),
    );

    log_listening("http server listening", &listeners.http);
    log_listening("grpc debug server listening", &listeners.grpc);
    let http = tokio::spawn(server::http::serve(
        listeners.http,
        status.clone(),
        servers_stop.clone(),
    ));
    let grpc = tokio::spawn(server::grpc::serve(
        listeners.grpc,
        server::grpc::Debug::new(&config, status.clone(), peers.clone()),
        servers_stop.clone(),
    ));

    if let Some(dlq) = reach_queue(&queue, &config, &status, &shutdown).await {
        let settings = PipelineSettings {
            pool: PoolSettings {
                concurrency: config.concurrency,
                max_retries: config.max_retries,
                backoff: Backoff {
                    base: config.backoff_base,
                    max: config.backoff_max,
                },
                redelivery_base: config.redelivery_base,
                redelivery_max: config.redelivery_max,
                visibility: config.visibility_timeout,
                fifo: config.is_fifo(),
                dedupe_capacity: config.dedupe_capacity,
                dedupe_ttl: config.dedupe_ttl,
            },
            receive_loops: config.receive_loops,
            wait: config.wait_time,
            shutdown_timeout: config.shutdown_timeout,
            pod_name: config.pod_name.clone(),
        };
        let queues = Queues {
            // The acker's writes and the heartbeat's renewals give up quickly.
            writes: Arc::new(queue.with_timeout(WRITE_TIMEOUT)),
            source: Arc::new(queue),
            dlq,
        };
        pipeline::run(settings, queues, peers, status.clone(), shutdown.clone()).await;
    }
    status.start_draining();
    servers_stop.cancel();
    // Every disposition is written by now. A client holding a stream open (a gRPC health
    // Watch) would keep a graceful server waiting forever: give them a moment, no more.
    let _ = tokio::join!(
        tokio::time::timeout(SERVER_STOP_GRACE, http),
        tokio::time::timeout(SERVER_STOP_GRACE, grpc)
    );
    tracing::info!("stopped");
    Ok(())
}

/// The DLQ's `MaximumMessageSize`, which every dead-letter copy must fit; SQS's default when
/// it cannot be read (the copy is then fitted to that, and SQS says if it is still too large).
async fn dead_letter_limit(dlq: &SqsQueue) -> usize {
    match dlq.attributes().await {
        Ok(attrs) => attrs
            .get("MaximumMessageSize")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
        Err(e) => {
            tracing::warn!(error = %e, default = DEFAULT_MAX_MESSAGE_SIZE, "cannot read the dead-letter queue's MaximumMessageSize; assuming SQS's default");
            DEFAULT_MAX_MESSAGE_SIZE
        }
    }
}

async fn bind(var: &'static str, port: u16) -> Result<TcpListener, RunError> {
    TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|source| RunError::Bind { var, port, source })
}

fn log_listening(what: &str, listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, port = addr.port(), "{what}");
    }
}

/// Reaches the queue (retrying until it answers or shutdown), marks the worker ready, and
/// finds the dead-letter queue and its size limit. Returns `None` if shutdown came first;
/// `Some(None)` when there is no DLQ, which is warned about: terminal messages are then kept,
/// never deleted.
async fn reach_queue(
    queue: &SqsQueue,
    config: &Config,
    status: &WorkerStatus,
    shutdown: &CancellationToken,
) -> Option<Option<DeadLetterQueue>> {
    // 0.5 s, doubling up to 15 s.
    let backoff = Backoff {
        base: Duration::from_millis(500),
        max: Duration::from_secs(15),
    };
    let mut failures = 0u32;
    loop {
        failures = failures.saturating_add(1);
        let delay = backoff.exact(failures);
        let attempt = async {
            let attrs = queue.attributes().await?;
            let dlq = queue
                .dead_letter_url(config.dlq_url.as_deref(), Some(&attrs))
                .await?;
            Ok::<_, sqs::QueueError>(dlq.map(|(url, _)| url))
        };
        let result = tokio::select! {
            r = attempt => r,
            _ = shutdown.cancelled() => return None,
        };
        match result {
            Ok(dlq) => {
                status.queue_reached();
                match &dlq {
                    Some(url) => {
                        tracing::info!(dlq_url = %url, "queue reached; dead-letter queue known");
                    }
                    None => tracing::warn!(
                        "queue reached, but there is no dead-letter queue (set SQS_DLQ_URL or a RedrivePolicy): terminal messages will be kept invisible for 12 h instead of dead-lettered"
                    ),
                }
                let Some(url) = dlq else {
                    return Some(None);
                };
                let dlq = queue.sibling(url);
                return Some(Some(DeadLetterQueue {
                    max_message_size: dead_letter_limit(&dlq).await,
                    queue: Arc::new(dlq.with_timeout(WRITE_TIMEOUT)),
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "queue not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}
