//! `reservation-testkit`: the test tooling reservation-worker's integration tests and bench
//! share. The fast SQS endpoint (`reservation-sim`'s `SqsSim`: what scenarios run on unless
//! they ask for moto; the worker's conformance suite proves the two agree where the tests rely
//! on it) and a real moto server (Secrets Manager, a second SQS implementation), the
//! two peers (the simulators, which record calls and take scripted faults; the reservation API
//! also over TLS, with a certificate authority made for the run), the real worker
//! binary as a child process, an OTLP trace receiver, the chaos soak's pieces and the
//! documented message bodies.
//!
//! A dev-dependency only (`publish = false`): it is never shipped and never in the image. It
//! does not depend on the worker crate; the worker binary it starts is named by the caller
//! through [`WorkerBinary`] (see there).

#![forbid(unsafe_code)]

pub mod chaos;
pub mod fast_sqs;
pub mod moto;
pub mod otlp;
pub mod peers;
pub mod tls;
pub mod worker;

use std::marker::PhantomData;
use std::time::Duration;

pub use moto::{Moto, Received, TestQueue};
pub use peers::TestPeers;
pub use worker::{LogLines, WorkerBinary, WorkerProcess};

/// Long enough for anything that should happen; tests wait for conditions, never sleep-and-hope.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds or `PATIENCE` runs out (then panics with `what`).
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`eventually`] for a condition that has to ask over the network.
pub async fn eventually_async<F: AsyncFnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond().await {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The SQS server of a scenario: the project's fast endpoint (the default: it starts in
/// microseconds instead of a Python process per test), or a real moto server.
pub enum SqsServer {
    Fast(fast_sqs::FastSqs),
    Moto(Moto),
    /// The process's [`moto::shared`] server, with a client of this test's own.
    SharedMoto {
        moto: &'static Moto,
        client: aws_sdk_sqs::Client,
    },
}

impl SqsServer {
    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        match self {
            SqsServer::Fast(s) => &s.endpoint,
            SqsServer::Moto(m) => &m.endpoint,
            SqsServer::SharedMoto { moto, .. } => &moto.endpoint,
        }
    }

    /// The AWS variables that point the SDK (and the worker) at this server.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        moto::aws_env(self.endpoint())
    }

    /// An SDK client of this server.
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        match self {
            SqsServer::Fast(s) => &s.client,
            SqsServer::Moto(m) => &m.client,
            SqsServer::SharedMoto { client, .. } => client,
        }
    }

    /// AWS settings pointing at this server, for building the worker's own `Queue` in a test.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        moto::sdk_config(self.endpoint()).await
    }

    /// Creates a queue; `redrive` = (DLQ, maxReceiveCount) sets a RedrivePolicy.
    pub async fn create_queue(&self, name: &str, redrive: Option<(&TestQueue, u32)>) -> TestQueue {
        moto::create_queue(self.client(), name, redrive).await
    }

    /// The fast endpoint's simulator, to script faults and read its counters.
    pub fn sim(&self) -> &reservation_sim::SqsSim {
        match self {
            SqsServer::Fast(s) => &s.sim,
            SqsServer::Moto(_) | SqsServer::SharedMoto { .. } => {
                panic!("a scenario that scripts SQS faults runs on the fast endpoint")
            }
        }
    }
}

/// Everything one scenario needs: an SQS server with a source queue and a DLQ (redrive policy
/// set, maxReceiveCount 5), and both peers. Dropping it stops them. `W` names the worker
/// binary [`Harness::worker`] starts.
pub struct Harness<W> {
    pub sqs: SqsServer,
    pub queue: TestQueue,
    pub dlq: TestQueue,
    pub peers: TestPeers,
    worker: PhantomData<fn() -> W>,
}

impl<W: WorkerBinary> Harness<W> {
    /// A standard queue on the fast endpoint.
    pub async fn start() -> Harness<W> {
        Self::with_queue(SqsServer::Fast(fast_sqs::FastSqs::start().await), false).await
    }

    /// A FIFO queue (content-based deduplication) with a FIFO DLQ, on the fast endpoint.
    pub async fn start_fifo() -> Harness<W> {
        Self::with_queue(SqsServer::Fast(fast_sqs::FastSqs::start().await), true).await
    }

    /// A standard queue on a real moto server: for the scenarios where a second, independent
    /// SQS implementation (or Secrets Manager) is the point. The server is the process's
    /// shared one, the queue names are unique (`events-N`, `events-dlq-N`); secrets a test
    /// creates there need names of their own.
    pub async fn on_moto() -> Harness<W> {
        Self::with_queue(Self::shared_moto().await, false).await
    }

    /// A FIFO queue on a real moto server (the shared one, as [`Harness::on_moto`]).
    pub async fn on_moto_fifo() -> Harness<W> {
        Self::with_queue(Self::shared_moto().await, true).await
    }

    async fn shared_moto() -> SqsServer {
        let moto = moto::shared().await;
        SqsServer::SharedMoto {
            moto,
            client: moto::client(&moto.endpoint),
        }
    }

    async fn with_queue(sqs: SqsServer, fifo: bool) -> Harness<W> {
        let suffix = if fifo { ".fifo" } else { "" };
        let name = |stem: &str| {
            let name = format!("{stem}{suffix}");
            match sqs {
                SqsServer::SharedMoto { .. } => moto::unique_name(&name),
                _ => name,
            }
        };
        let dlq = sqs.create_queue(&name("events-dlq"), None).await;
        let queue = sqs.create_queue(&name("events"), Some((&dlq, 5))).await;
        let peers = TestPeers::start().await;
        Harness {
            sqs,
            queue,
            dlq,
            peers,
            worker: PhantomData,
        }
    }

    /// The environment that points a worker at these servers, fast settings for tests.
    pub fn env(&self) -> Vec<(String, String)> {
        worker_env(self.sqs.aws_env(), &self.queue, &self.peers)
    }

    /// Starts the worker with `env()` plus `extra` (later entries win) and waits for `/ready`.
    pub async fn worker(&self, extra: &[(&str, &str)]) -> WorkerProcess<W> {
        start_worker(self.env(), extra).await
    }

    /// Queues `n` expiry events (`env-i` for reservation `ri`, each held) whose inventory call
    /// takes `latency`, so a worker's slots stay busy; returns the reservation ids.
    pub async fn send_slow_events(&self, n: usize, latency: Duration) -> Vec<String> {
        let rids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        for r in &rids {
            self.peers.hold(r);
        }
        self.peers.inventory.set_latency(latency);
        for (i, r) in rids.iter().enumerate() {
            self.queue
                .send(&bodies::expired(&format!("env-{i}"), r))
                .await;
        }
        rids
    }

    /// Waits until the source queue holds nothing, visible or in flight.
    pub async fn wait_queue_empty(&self) {
        self.queue.wait_empty().await;
    }
}

/// The environment of a worker on `queue` with `peers`, behind the SQS endpoint of `aws`, with
/// fast settings for tests.
pub fn worker_env(
    mut aws: Vec<(String, String)>,
    queue: &TestQueue,
    peers: &TestPeers,
) -> Vec<(String, String)> {
    for (k, v) in [
        ("SQS_QUEUE_URL", queue.url.as_str()),
        ("SQS_WAIT_TIME", "1"),
        ("INVENTORY_GRPC_ADDR", peers.inventory_addr.as_str()),
        ("RESERVATION_API_BASE", peers.reservation_base.as_str()),
        ("BACKOFF_BASE_MS", "20"),
        ("BACKOFF_MAX_MS", "200"),
        ("SERVER_PORT", "0"),
        ("GRPC_DEBUG_PORT", "0"),
        ("LOG_LEVEL", "info,reservation_worker=debug"),
    ] {
        aws.push((k.to_string(), v.to_string()));
    }
    aws
}

/// Starts the worker `W` names with `env` plus `extra` (later entries win) and waits for
/// `/ready`.
pub async fn start_worker<W: WorkerBinary>(
    mut env: Vec<(String, String)>,
    extra: &[(&str, &str)],
) -> WorkerProcess<W> {
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let w = WorkerProcess::spawn(&env);
    w.wait_ready().await;
    w
}

/// Message bodies in the documented envelope form.
pub mod bodies {
    use serde_json::{Value, json};

    pub fn documented(id: &str, event_type: &str, detail: Value) -> String {
        json!({"id": id, "type": event_type, "source": "tests", "detail": detail, "time": "2026-11-21T00:00:00Z", "trace_id": "trace-from-body"}).to_string()
    }

    pub fn eventbridge(id: &str, event_type: &str, detail: Value) -> String {
        json!({"version": "0", "id": id, "detail-type": event_type, "source": "tests", "account": "123456789012", "time": "2026-11-21T00:00:00Z", "region": "ap-northeast-2", "resources": [], "detail": detail}).to_string()
    }

    pub fn sns(inner: &str) -> String {
        json!({"Type": "Notification", "MessageId": "sns-msg-1", "TopicArn": "arn:aws:sns:ap-northeast-2:123456789012:t", "Message": inner, "Timestamp": "2026-11-21T00:00:00Z"}).to_string()
    }

    pub fn expired(id: &str, rid: &str) -> String {
        documented(
            id,
            "reservation.expired",
            json!({"reservation_id": rid, "event_id": "evt-1", "qty": 2, "seat_ids": ["A-1", "A-2"]}),
        )
    }

    pub fn approved(id: &str, rid: &str) -> String {
        documented(id, "payment.approved", approved_detail(rid))
    }

    pub fn approved_detail(rid: &str) -> Value {
        json!({"reservation_id": rid, "payment_intent_id": "pi-1", "amount": 50000, "currency": "KRW", "event_id": "evt-1", "user_id": "user-1", "seat_ids": ["A-1", "A-2"], "qty": 2})
    }

    pub fn failed(id: &str, rid: &str) -> String {
        documented(
            id,
            "payment.failed",
            json!({"reservation_id": rid, "payment_intent_id": "pi-2", "amount": 50000, "event_id": "evt-1", "user_id": "user-1", "seat_ids": ["A-1", "A-2"], "qty": 2, "error_code": "card_declined", "error_message": "declined"}),
        )
    }
}
