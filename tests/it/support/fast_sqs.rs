//! The project's fast SQS endpoint (`SqsSim`) served in-process: for tests that need SQS to
//! misbehave on cue (throttle, fail or hang one operation on one queue) or to behave like a lax
//! FIFO emulator. `conformance` runs the same SQS behaviours against it and against moto.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use reservation_sim::{SqsSim, serve_sqs};
use tokio_util::sync::CancellationToken;

use super::moto::{REGION, TestQueue, client, create_queue, create_queue_with};
use super::{TestPeers, WorkerProcess};

/// The endpoint on a free loopback port, with an SDK client pointed at it; stopped on drop.
pub(crate) struct FastSqs {
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
    pub(crate) async fn start() -> FastSqs {
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
    pub(crate) fn aws_env(&self) -> Vec<(String, String)> {
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

    /// Creates a queue, as [`super::Moto::create_queue`] does.
    pub(crate) async fn create_queue(
        &self,
        name: &str,
        redrive: Option<(&TestQueue, u32)>,
    ) -> TestQueue {
        create_queue(&self.client, name, redrive).await
    }

    /// Creates a queue with the given attributes (what moto does not model: SQS's 256 KiB
    /// request limit, `RedriveAllowPolicy`).
    pub(crate) async fn create_queue_with(
        &self,
        name: &str,
        attrs: &[(QueueAttributeName, &str)],
    ) -> TestQueue {
        create_queue_with(&self.client, name, None, attrs).await
    }
}

/// [`super::Harness`] on the fast endpoint: a source queue whose RedrivePolicy names a DLQ
/// (maxReceiveCount 5), and both peers.
pub(crate) struct FastHarness {
    pub sqs: FastSqs,
    pub queue: TestQueue,
    pub dlq: TestQueue,
    pub peers: TestPeers,
}

impl FastHarness {
    pub(crate) async fn start() -> FastHarness {
        Self::with_queue("").await
    }

    /// FIFO queues (content-based deduplication).
    pub(crate) async fn start_fifo() -> FastHarness {
        Self::with_queue(".fifo").await
    }

    async fn with_queue(suffix: &str) -> FastHarness {
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
        }
    }

    /// The environment that points a worker at these servers, fast settings for tests.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        super::worker_env(self.sqs.aws_env(), &self.queue, &self.peers)
    }

    /// Starts the worker with `env()` plus `extra` (later entries win) and waits for `/ready`.
    pub(crate) async fn worker(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        super::start_worker(self.env(), extra).await
    }
}
