//! The fast SQS endpoint's own concerns, through the real aws-sdk-sqs client: queue listing
//! on a server of its own, and the real worker binary run against it. The SQS behaviours the
//! tests rely on are checked against moto and this endpoint alike in `conformance`.

use crate::support;

use aws_sdk_sqs::types::QueueAttributeName;

use support::fast_sqs::FastSqs;

/// The endpoint under test (testkit's `FastSqs`, fields reached through `Deref`), with helpers
/// of its own for the calls checked here.
struct Sim(FastSqs);

impl std::ops::Deref for Sim {
    type Target = FastSqs;

    fn deref(&self) -> &FastSqs {
        &self.0
    }
}

impl Sim {
    async fn start() -> Sim {
        Sim(FastSqs::start().await)
    }

    async fn create(&self, name: &str, attrs: &[(QueueAttributeName, &str)]) -> String {
        let mut req = self.client.create_queue().queue_name(name);
        for (k, v) in attrs {
            req = req.attributes(k.clone(), *v);
        }
        req.send()
            .await
            .expect("CreateQueue")
            .queue_url()
            .expect("url")
            .to_owned()
    }

    async fn send(&self, url: &str, body: &str) -> String {
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .expect("SendMessage")
            .message_id()
            .expect("id")
            .to_owned()
    }

    /// (visible, in flight, delayed).
    async fn depth(&self, url: &str) -> (u64, u64, u64) {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("GetQueueAttributes");
        let get = |k: QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse().ok())
                .expect("count attribute")
        };
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        )
    }

    async fn arn(&self, url: &str) -> String {
        self.client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .expect("QueueArn")
    }
}

#[tokio::test]
async fn queues_are_listed_and_deleted() {
    let s = Sim::start().await;
    let a = s.create("alpha", &[]).await;
    s.create("beta", &[]).await;
    let out = s
        .client
        .list_queues()
        .queue_name_prefix("al")
        .send()
        .await
        .expect("ListQueues");
    assert_eq!(out.queue_urls(), std::slice::from_ref(&a));
    s.client
        .delete_queue()
        .queue_url(&a)
        .send()
        .await
        .expect("DeleteQueue");
    let out = s.client.list_queues().send().await.expect("ListQueues");
    assert_eq!(out.queue_urls().len(), 1);
    // Pages: a token past the end is an empty last page, not an overflow.
    let out = s
        .client
        .list_queues()
        .max_results(1)
        .next_token(u64::MAX.to_string())
        .send()
        .await
        .expect("ListQueues with a huge NextToken");
    assert!(out.queue_urls().is_empty() && out.next_token().is_none());
}

/// The real worker binary against the simulator: it finds the DLQ through the redrive policy,
/// long-polls, runs each event's workflow against the peers and deletes the messages.
#[tokio::test]
async fn the_real_worker_drains_events_from_the_simulator() {
    use support::{TestPeers, WorkerProcess, bodies};

    let s = Sim::start().await;
    let dlq = s.create("events-dlq", &[]).await;
    let policy =
        serde_json::json!({"deadLetterTargetArn": s.arn(&dlq).await, "maxReceiveCount": "5"});
    let url = s
        .create(
            "events",
            &[(QueueAttributeName::RedrivePolicy, &policy.to_string())],
        )
        .await;
    let peers = TestPeers::start().await;
    for r in ["r-1", "r-2", "r-3"] {
        peers.hold(r);
    }
    let mut env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", s.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", support::moto::REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("SQS_QUEUE_URL", url.as_str()),
        ("SQS_WAIT_TIME", "1"),
        ("INVENTORY_GRPC_ADDR", peers.inventory_addr.as_str()),
        ("RESERVATION_API_BASE", peers.reservation_base.as_str()),
        ("SERVER_PORT", "0"),
        ("GRPC_DEBUG_PORT", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.push(("LOG_LEVEL".into(), "info".into()));
    let worker = WorkerProcess::spawn(&env);
    worker.wait_ready().await;

    for body in [
        bodies::expired("env-1", "r-1"),
        bodies::approved("env-2", "r-2"),
        bodies::failed("env-3", "r-3"),
    ] {
        s.send(&url, &body).await;
    }
    support::eventually("two downstream calls per event", || {
        peers.total_calls() == 6
    })
    .await;
    support::eventually("all three deleted", || s.sim.stats().messages_deleted == 3).await;
    assert_eq!(s.depth(&url).await, (0, 0, 0));
    assert_eq!(s.depth(&dlq).await, (0, 0, 0));
    let stats = s.sim.stats();
    assert!(
        stats.get_queue_url >= 1,
        "the DLQ found by its ARN: {stats:?}"
    );
    assert!(stats.receive_message >= 1, "{stats:?}");
    assert_eq!(stats.errors, 0, "{stats:?}");
}
