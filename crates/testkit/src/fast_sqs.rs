//! The project's fast SQS endpoint (`SqsSim`) served in-process: for tests that need SQS to
//! misbehave on cue (throttle, fail or hang one operation on one queue) or to behave like a lax
//! FIFO emulator. The worker's `tests/it/sqs_sim.rs` checks it against what moto and SQS do.

use std::marker::PhantomData;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use reservation_sim::{SqsSim, serve_sqs};
use tokio_util::sync::CancellationToken;

use crate::moto::{REGION, TestQueue, client, create_queue, create_queue_with};
use crate::{TestPeers, WorkerBinary, WorkerProcess};

/// The endpoint on a free loopback port, with an SDK client pointed at it; stopped on drop.
pub struct FastSqs {
    pub sim: SqsSim,
    pub endpoint: String,
    pub client: Client,
    stop: CancellationToken,
}

impl Drop for FastSqs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FastSqs {
    pub async fn start() -> FastSqs {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let sim = SqsSim::new();
        let stop = CancellationToken::new();
        tokio::spawn(serve_sqs(listener, sim.clone(), stop.clone()));
        FastSqs {
            sim,
            client: client(&endpoint),
            endpoint,
            stop,
        }
    }

    /// The AWS variables that point the SDK (and the worker) at this endpoint.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Creates a queue, as [`crate::Moto::create_queue`] does.
    pub async fn create_queue(&self, name: &str, redrive: Option<(&TestQueue, u32)>) -> TestQueue {
        create_queue(&self.client, name, redrive).await
    }

    /// Creates a queue with the given attributes (what moto does not model: SQS's 256 KiB
    /// request limit, `RedriveAllowPolicy`).
    pub async fn create_queue_with(
        &self,
        name: &str,
        attrs: &[(QueueAttributeName, &str)],
    ) -> TestQueue {
        create_queue_with(&self.client, name, None, attrs).await
    }
}

/// [`crate::Harness`] on the fast endpoint: a source queue whose RedrivePolicy names a DLQ
/// (maxReceiveCount 5), and both peers. `W` names the worker binary [`FastHarness::worker`]
/// starts.
pub struct FastHarness<W> {
    pub sqs: FastSqs,
    pub queue: TestQueue,
    pub dlq: TestQueue,
    pub peers: TestPeers,
    worker: PhantomData<fn() -> W>,
}

impl<W: WorkerBinary> FastHarness<W> {
    pub async fn start() -> FastHarness<W> {
        Self::with_queue("").await
    }

    /// FIFO queues (content-based deduplication).
    pub async fn start_fifo() -> FastHarness<W> {
        Self::with_queue(".fifo").await
    }

    async fn with_queue(suffix: &str) -> FastHarness<W> {
        let sqs = FastSqs::start().await;
        let dlq = sqs.create_queue(&format!("events-dlq{suffix}"), None).await;
        let queue = sqs
            .create_queue(&format!("events{suffix}"), Some((&dlq, 5)))
            .await;
        FastHarness {
            sqs,
            queue,
            dlq,
            peers: TestPeers::start().await,
            worker: PhantomData,
        }
    }

    /// The environment that points a worker at these servers, fast settings for tests.
    pub fn env(&self) -> Vec<(String, String)> {
        crate::worker_env(self.sqs.aws_env(), &self.queue, &self.peers)
    }

    /// Starts the worker with `env()` plus `extra` (later entries win) and waits for `/ready`.
    pub async fn worker(&self, extra: &[(&str, &str)]) -> WorkerProcess<W> {
        crate::start_worker(self.env(), extra).await
    }
}
