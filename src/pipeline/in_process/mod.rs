//! In-process tests of the pipeline against [`MemoryQueue`]: the acker, the poller, the pool,
//! visibility renewal and the workflows, without a process or an SQS server. Where timing is the
//! point the clock is paused; where the peers are, they are the real simulators on loopback
//! (whose sockets need the real clock).

mod acker;
mod pipeline;
mod poller;
mod renewal;

use std::sync::Arc;
use std::time::Duration;

use reservation_sim::{InventorySim, ReservationSim, serve_inventory, serve_reservation};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::acker::DeadLetterQueue;
use super::{PipelineSettings, PoolSettings, Queues};
use crate::backoff::Backoff;
use crate::client::circuit::CircuitSettings;
use crate::client::inventory::GrpcInventory;
use crate::client::reservation::RestReservations;
use crate::health::WorkerStatus;
use crate::sqs::Queue as _;
use crate::sqs::memory::MemoryQueue;
use crate::workflow::Peers;

/// Long enough for anything that should happen; tests wait for conditions, never sleep-and-hope.
const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds or [`PATIENCE`] runs out (then panics with `what`).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The two peers as real servers on loopback, stopped on drop.
struct Sims {
    inventory: InventorySim,
    reservations: ReservationSim,
    inventory_uri: String,
    reservation_base: String,
    stop: CancellationToken,
}

impl Sims {
    async fn start() -> Sims {
        let inventory = InventorySim::new();
        let reservations = ReservationSim::new();
        reservations.set_auto_create(false);
        let stop = CancellationToken::new();
        let inv = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let res = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let inventory_uri = format!("http://{}", inv.local_addr().expect("addr"));
        let reservation_base = format!("http://{}", res.local_addr().expect("addr"));
        tokio::spawn(serve_inventory(inv, inventory.clone(), stop.clone()));
        tokio::spawn(serve_reservation(res, reservations.clone(), stop.clone()));
        Sims {
            inventory,
            reservations,
            inventory_uri,
            reservation_base,
            stop,
        }
    }

    fn hold(&self, reservation_id: &str) {
        self.reservations
            .seed(reservation_sim::Reservation::held(reservation_id));
    }

    /// The worker's clients of these servers, circuits off.
    fn peers(&self) -> Peers {
        peers_at(&self.inventory_uri, &self.reservation_base)
    }

    fn status_of(&self, reservation_id: &str) -> Option<String> {
        self.reservations.get(reservation_id).map(|r| r.status)
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Clients of peers at these addresses (nothing need listen there for a test that never
/// reaches a workflow).
fn peers_at(inventory_uri: &str, reservation_base: &str) -> Peers {
    Peers::new(
        Arc::new(GrpcInventory::new(inventory_uri, Duration::from_secs(5)).expect("inventory")),
        Arc::new(
            RestReservations::new(
                reservation_base,
                None,
                Duration::from_secs(5),
                crate::config::Http2::Alpn,
            )
            .expect("reservations"),
        ),
        CircuitSettings::OFF,
        |_| {},
        CancellationToken::new(),
    )
}

/// Peers nothing listens for.
fn unreachable_peers() -> Peers {
    peers_at("http://127.0.0.1:1", "http://127.0.0.1:1")
}

/// Small, quick settings: 4 slots, one loop, 3 attempts 10 ms apart, 1 s long polls.
fn settings(fifo: bool) -> PipelineSettings {
    PipelineSettings {
        pool: PoolSettings {
            concurrency: 4,
            max_retries: 3,
            backoff: Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(10),
            },
            redelivery_base: Duration::from_secs(30),
            redelivery_max: Duration::from_secs(600),
            visibility: Duration::from_secs(30),
            fifo,
            dedupe_capacity: 1000,
            dedupe_ttl: Duration::from_secs(600),
        },
        receive_loops: 1,
        wait: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(5),
        pod_name: Some("pod-test".into()),
    }
}

/// A pipeline running in this process on a source queue and a DLQ in memory.
struct Running {
    queue: Arc<MemoryQueue>,
    dlq: Arc<MemoryQueue>,
    status: Arc<WorkerStatus>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts the pipeline on `queue` (a FIFO queue when its URL ends in `.fifo`).
    fn start(queue: Arc<MemoryQueue>, peers: Peers, settings: PipelineSettings) -> Running {
        let dlq_url = if queue.url().ends_with(".fifo") {
            "memory://dlq.fifo"
        } else {
            "memory://dlq"
        };
        let dlq = Arc::new(MemoryQueue::new(dlq_url));
        let status = Arc::new(WorkerStatus::default());
        let shutdown = CancellationToken::new();
        let queues = Queues {
            source: queue.clone(),
            writes: queue.clone(),
            dlq: Some(DeadLetterQueue {
                queue: dlq.clone(),
                max_message_size: 262_144,
            }),
        };
        let task = tokio::spawn(super::run(
            settings,
            queues,
            peers,
            status.clone(),
            shutdown.clone(),
        ));
        Running {
            queue,
            dlq,
            status,
            shutdown,
            task,
        }
    }

    /// Waits until the source queue is empty (every message deleted or dead-lettered).
    async fn drained(&self) {
        eventually("the source queue to empty", || self.queue.len() == 0).await;
    }

    /// Shuts down as SIGTERM does and waits for the drain to end.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the pipeline stops")
            .expect("the pipeline does not panic");
    }
}

/// Event bodies as producers send them.
mod bodies {
    use serde_json::json;

    fn documented(id: &str, event_type: &str, detail: serde_json::Value) -> String {
        json!({"id": id, "type": event_type, "source": "tests", "detail": detail, "time": "2026-11-21T00:00:00Z"}).to_string()
    }

    pub(super) fn expired(id: &str, rid: &str) -> String {
        documented(
            id,
            "reservation.expired",
            json!({"reservation_id": rid, "event_id": "evt-1", "qty": 2, "seat_ids": ["A-1", "A-2"]}),
        )
    }

    pub(super) fn approved(id: &str, rid: &str) -> String {
        documented(
            id,
            "payment.approved",
            json!({"reservation_id": rid, "payment_intent_id": "pi-1", "amount": 50000, "currency": "KRW", "event_id": "evt-1", "user_id": "user-1", "seat_ids": ["A-1", "A-2"], "qty": 2}),
        )
    }

    pub(super) fn failed(id: &str, rid: &str) -> String {
        documented(
            id,
            "payment.failed",
            json!({"reservation_id": rid, "payment_intent_id": "pi-2", "amount": 50000, "event_id": "evt-1", "user_id": "user-1", "seat_ids": ["A-1", "A-2"], "qty": 2, "error_code": "card_declined", "error_message": "declined"}),
        )
    }
}
