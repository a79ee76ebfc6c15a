//! The crate's in-process SQS endpoint ([`SqsSim`]) on a free loopback port, for tests that need
//! what moto does not model: SQS's 256 KiB request limit and `RedriveAllowPolicy`.

use aws_sdk_sqs::types::QueueAttributeName;
use reservation_worker::sim::{SqsSim, serve_sqs};
use tokio_util::sync::CancellationToken;

use super::TestQueue;
use super::moto::{REGION, client};

/// A running simulator; stopped on drop.
pub struct SimSqs {
    pub sim: SqsSim,
    pub endpoint: String,
    pub client: aws_sdk_sqs::Client,
    stop: CancellationToken,
}

impl SimSqs {
    pub async fn start() -> SimSqs {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SQS simulator");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let sim = SqsSim::new();
        let stop = CancellationToken::new();
        tokio::spawn(serve_sqs(listener, sim.clone(), stop.clone()));
        SimSqs {
            sim,
            client: client(&endpoint),
            endpoint,
            stop,
        }
    }

    /// The AWS variables that point the SDK (and the binary) at this endpoint.
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

    /// Creates a queue with the given attributes.
    pub async fn create_queue(
        &self,
        name: &str,
        attrs: &[(QueueAttributeName, &str)],
    ) -> TestQueue {
        let mut req = self.client.create_queue().queue_name(name);
        for (k, v) in attrs {
            req = req.attributes(k.clone(), *v);
        }
        let url = req
            .send()
            .await
            .expect("CreateQueue")
            .queue_url()
            .expect("queue url")
            .to_string();
        let arn = self
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .expect("QueueArn");
        TestQueue {
            client: self.client.clone(),
            url,
            arn,
        }
    }
}

impl Drop for SimSqs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
