//! The project's fast SQS endpoint (`SqsSim`) served in-process: for tests that need SQS to
//! misbehave on cue (throttle, fail or hang one operation on one queue) or to behave like a lax
//! FIFO emulator. `conformance` runs the same SQS behaviours against it and against moto.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use reservation_sim::{SqsSim, serve_sqs};
use tokio_util::sync::CancellationToken;

use crate::moto::{TestQueue, client, create_queue, create_queue_with};

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
        crate::moto::aws_env(&self.endpoint)
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
