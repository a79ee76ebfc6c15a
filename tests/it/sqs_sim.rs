//! The SQS simulator through the real aws-sdk-sqs client, on a loopback port: the wire
//! protocol (requests, answers, error codes as the SDK maps them) and the queue rules. The
//! last tests run the real worker binary against it.

use crate::support;

use std::time::Duration;

use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError;
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

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

    /// Deletes a received message by its receipt handle; SQS accepts an old handle too.
    async fn delete(&self, url: &str, m: &Message) {
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle().expect("receipt"))
            .send()
            .await
            .expect("DeleteMessage");
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

    async fn receive(&self, url: &str, max: i32, visibility: i32, wait: i32) -> Vec<Message> {
        self.client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max)
            .visibility_timeout(visibility)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("ReceiveMessage")
            .messages
            .unwrap_or_default()
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

fn sys(m: &Message, k: MessageSystemAttributeName) -> Option<&str> {
    m.attributes().and_then(|a| a.get(&k)).map(String::as_str)
}

fn receive_count(m: &Message) -> u32 {
    sys(m, MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok())
        .expect("ApproximateReceiveCount")
}

fn string_attr(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("attribute")
}

#[tokio::test]
async fn send_receive_delete_with_attributes() {
    let s = Sim::start().await;
    let url = s.create("orders", &[]).await;
    assert_eq!(
        url,
        format!("{}/000000000000/orders", s.endpoint),
        "URL from the Host header"
    );
    let sent = s
        .client
        .send_message()
        .queue_url(&url)
        .message_body(r#"{"hello":"wörld \"quoted\""}"#)
        .message_attributes("TraceId", string_attr("trace-1"))
        .message_attributes(
            "Blob",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![0, 159, 255]))
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("SendMessage");
    let id = sent.message_id().expect("id").to_owned();

    let got = s.receive(&url, 10, 30, 0).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.message_id(), Some(id.as_str()));
    assert_eq!(m.body(), Some(r#"{"hello":"wörld \"quoted\""}"#));
    assert_eq!(receive_count(m), 1);
    let sent_at: u64 = sys(m, MessageSystemAttributeName::SentTimestamp)
        .and_then(|t| t.parse().ok())
        .expect("SentTimestamp");
    assert!(sent_at > 1_700_000_000_000, "{sent_at}");
    assert!(
        sys(
            m,
            MessageSystemAttributeName::ApproximateFirstReceiveTimestamp
        )
        .is_some()
    );
    let attrs = m.message_attributes().expect("message attributes");
    assert_eq!(attrs["TraceId"].string_value(), Some("trace-1"));
    assert_eq!(
        attrs["Blob"].binary_value().map(|b| b.as_ref().to_vec()),
        Some(vec![0, 159, 255])
    );
    assert_eq!(s.depth(&url).await, (0, 1, 0));

    s.delete(&url, m).await;
    assert_eq!(s.depth(&url).await, (0, 0, 0));
    assert!(s.receive(&url, 10, 30, 0).await.is_empty());

    let stats = s.sim.stats();
    assert_eq!(stats.messages_sent, 1);
    assert_eq!(stats.messages_received, 1);
    assert_eq!(stats.messages_deleted, 1);
    assert_eq!(stats.create_queue, 1);
    assert_eq!(stats.receive_message, 2);
    assert_eq!(stats.empty_receives, 1);
}

#[tokio::test]
async fn receive_returns_only_the_attributes_asked_for() {
    let s = Sim::start().await;
    let url = s.create("q", &[]).await;
    s.client
        .send_message()
        .queue_url(&url)
        .message_body("b")
        .message_attributes("trace.id", string_attr("t"))
        .message_attributes("Other", string_attr("o"))
        .send()
        .await
        .expect("SendMessage");
    let out = s
        .client
        .receive_message()
        .queue_url(&url)
        .message_attribute_names("trace.*")
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .expect("ReceiveMessage");
    let m = &out.messages()[0];
    let names: Vec<&String> = m.message_attributes().expect("attrs").keys().collect();
    assert_eq!(names, ["trace.id"]);
    let sys_names: Vec<&str> = m
        .attributes()
        .expect("system attrs")
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(sys_names, ["SentTimestamp"]);
}

#[tokio::test]
async fn batches_report_failures_per_entry() {
    let s = Sim::start().await;
    let url = s.create("q", &[]).await;
    let entry = |id: &str, body: &str| {
        SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body(body)
            .build()
            .expect("entry")
    };
    let out = s
        .client
        .send_message_batch()
        .queue_url(&url)
        .entries(entry("a", "one"))
        .entries(entry("bad", "control \u{1} char"))
        .entries(entry("c", "three"))
        .send()
        .await
        .expect("SendMessageBatch");
    let ok: Vec<&str> = out.successful().iter().map(|e| e.id()).collect();
    assert_eq!(ok, ["a", "c"]);
    assert_eq!(out.failed().len(), 1);
    assert_eq!(out.failed()[0].id(), "bad");
    assert_eq!(out.failed()[0].code(), "InvalidMessageContents");
    assert!(out.failed()[0].sender_fault());

    let got = s.receive(&url, 10, 30, 0).await;
    assert_eq!(got.len(), 2);
    let del = |id: &str, r: &str| {
        DeleteMessageBatchRequestEntry::builder()
            .id(id)
            .receipt_handle(r)
            .build()
            .expect("entry")
    };
    let out = s
        .client
        .delete_message_batch()
        .queue_url(&url)
        .entries(del("0", got[0].receipt_handle().expect("receipt")))
        .entries(del("1", "not-a-receipt-handle"))
        .send()
        .await
        .expect("DeleteMessageBatch");
    assert_eq!(out.successful().len(), 1);
    assert_eq!(out.failed()[0].id(), "1");
    assert_eq!(out.failed()[0].code(), "ReceiptHandleIsInvalid");
    assert!(out.failed()[0].sender_fault());
    assert_eq!(s.depth(&url).await, (0, 1, 0));

    let vis = |id: &str, r: &str, t: i32| {
        ChangeMessageVisibilityBatchRequestEntry::builder()
            .id(id)
            .receipt_handle(r)
            .visibility_timeout(t)
            .build()
            .expect("entry")
    };
    let second = got[1].receipt_handle().expect("receipt");
    let out = s
        .client
        .change_message_visibility_batch()
        .queue_url(&url)
        .entries(vis("ok", second, 0))
        .entries(vis("deleted", got[0].receipt_handle().expect("receipt"), 0))
        .entries(vis("too-long", second, 43_201))
        .send()
        .await
        .expect("ChangeMessageVisibilityBatch");
    let ok: Vec<&str> = out.successful().iter().map(|e| e.id()).collect();
    assert_eq!(ok, ["ok"]);
    let failed: Vec<(&str, &str)> = out.failed().iter().map(|f| (f.id(), f.code())).collect();
    assert_eq!(
        failed,
        [
            ("deleted", "ReceiptHandleIsInvalid"),
            ("too-long", "InvalidParameterValue")
        ]
    );
    assert_eq!(s.depth(&url).await, (1, 0, 0));

    // Whole-request refusals come back as errors with the SDK's codes.
    let err = s
        .client
        .delete_message_batch()
        .queue_url(&url)
        .entries(del("x", second))
        .entries(del("x", second))
        .send()
        .await
        .expect_err("duplicate ids");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_batch_entry_ids_not_distinct()),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_expired_visibility_redelivers_with_the_count_and_a_fresh_handle() {
    let s = Sim::start().await;
    let url = s.create("q", &[]).await;
    s.send(&url, "again").await;
    let first = s.receive(&url, 1, 1, 0).await.remove(0);
    assert_eq!(receive_count(&first), 1);
    assert!(s.receive(&url, 1, 1, 0).await.is_empty(), "invisible");
    // The long poll ends when the visibility does.
    let second = s.receive(&url, 1, 30, 5).await.remove(0);
    assert_eq!(receive_count(&second), 2);
    assert_eq!(second.message_id(), first.message_id());
    assert_ne!(second.receipt_handle(), first.receipt_handle());

    // Only the latest handle deletes; the old one is accepted and ignored, as SQS documents.
    s.delete(&url, &first).await;
    assert_eq!(s.depth(&url).await, (0, 1, 0));
    let err = s
        .client
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(first.receipt_handle().expect("receipt"))
        .visibility_timeout(0)
        .send()
        .await
        .expect_err("old handle");
    assert!(
        matches!(
            err.as_service_error(),
            Some(ChangeMessageVisibilityError::ReceiptHandleIsInvalid(_))
        ),
        "{err:?}"
    );
    s.delete(&url, &second).await;
    assert_eq!(s.depth(&url).await, (0, 0, 0));
}

#[tokio::test]
async fn visibility_zero_makes_the_message_receivable_at_once() {
    let s = Sim::start().await;
    let url = s.create("q", &[]).await;
    s.send(&url, "b").await;
    let m = s.receive(&url, 1, 600, 0).await.remove(0);
    s.client
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(m.receipt_handle().expect("receipt"))
        .visibility_timeout(0)
        .send()
        .await
        .expect("ChangeMessageVisibility");
    let again = s.receive(&url, 1, 600, 0).await;
    assert_eq!(again.len(), 1);
    assert_eq!(receive_count(&again[0]), 2);
}

#[tokio::test]
async fn a_long_poll_returns_a_message_sent_while_it_waits() {
    let s = Sim::start().await;
    let url = s.create("q", &[]).await;
    let poll = {
        let client = s.client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            client
                .receive_message()
                .queue_url(&url)
                .wait_time_seconds(20)
                .send()
                .await
                .expect("ReceiveMessage")
        })
    };
    // Let the poll start waiting before the send.
    support::eventually("the long poll to be waiting", || {
        s.sim.stats().receive_message == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = s.send(&url, "wake up").await;
    // Woken by the arrival, the poll ends long before its 20 s wait would have (a poll that
    // only looked again when its wait ran out would also return the message, at 20 s).
    let out = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the long poll ended on the arrival, before its wait ran out")
        .expect("task");
    let ids: Vec<&str> = out
        .messages()
        .iter()
        .filter_map(|m| m.message_id())
        .collect();
    assert_eq!(ids, [id.as_str()]);
}

#[tokio::test]
async fn redrive_moves_a_message_to_the_dlq_past_max_receive_count() {
    let s = Sim::start().await;
    let dlq = s.create("events-dlq", &[]).await;
    let dlq_arn = s.arn(&dlq).await;
    let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"});
    let url = s
        .create(
            "events",
            &[(QueueAttributeName::RedrivePolicy, &policy.to_string())],
        )
        .await;
    let id = s.send(&url, "poison").await;
    for n in 1..=2 {
        let got = s.receive(&url, 10, 0, 0).await;
        assert_eq!(got.len(), 1);
        assert_eq!(receive_count(&got[0]), n);
    }
    assert!(s.receive(&url, 10, 0, 0).await.is_empty());
    assert_eq!(s.depth(&url).await, (0, 0, 0));
    let dead = s.receive(&dlq, 10, 30, 0).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id(), Some(id.as_str()));
    assert_eq!(dead[0].body(), Some("poison"));
    let source = s.arn(&url).await;
    assert_eq!(
        sys(
            &dead[0],
            MessageSystemAttributeName::DeadLetterQueueSourceArn
        ),
        Some(source.as_str())
    );
    assert_eq!(s.sim.stats().messages_dead_lettered, 1);
}

#[tokio::test]
async fn fifo_delivers_a_group_in_order_one_run_at_a_time() {
    let s = Sim::start().await;
    let url = s
        .create(
            "orders.fifo",
            &[
                (QueueAttributeName::FifoQueue, "true"),
                (QueueAttributeName::ContentBasedDeduplication, "true"),
            ],
        )
        .await;
    for (body, group) in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A")] {
        let out = s
            .client
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .message_group_id(group)
            .send()
            .await
            .expect("SendMessage");
        assert!(out.sequence_number().is_some());
    }
    // The same body again within 5 minutes is deduplicated (content-based).
    s.client
        .send_message()
        .queue_url(&url)
        .message_body("a1")
        .message_group_id("A")
        .send()
        .await
        .expect("SendMessage");
    let bodies = |ms: &[Message]| -> Vec<String> {
        ms.iter()
            .filter_map(|m| m.body().map(str::to_owned))
            .collect()
    };
    let first = s.receive(&url, 1, 30, 0).await;
    assert_eq!(bodies(&first), ["a1"]);
    assert_eq!(
        sys(&first[0], MessageSystemAttributeName::MessageGroupId),
        Some("A")
    );
    // A is held while a1 is in flight; B is not.
    assert_eq!(bodies(&s.receive(&url, 10, 30, 0).await), ["b1"]);
    assert!(s.receive(&url, 10, 30, 0).await.is_empty());
    s.delete(&url, &first[0]).await;
    assert_eq!(bodies(&s.receive(&url, 10, 30, 0).await), ["a2", "a3"]);
}

#[tokio::test]
async fn errors_carry_the_codes_the_sdk_maps() {
    let s = Sim::start().await;
    let err = s
        .client
        .get_queue_url()
        .queue_name("missing")
        .send()
        .await
        .expect_err("no such queue");
    assert!(
        matches!(
            err.as_service_error(),
            Some(GetQueueUrlError::QueueDoesNotExist(_))
        ),
        "{err:?}"
    );
    let err = s
        .client
        .receive_message()
        .queue_url(format!("{}/000000000000/missing", s.endpoint))
        .send()
        .await
        .expect_err("no such queue");
    assert!(
        matches!(
            err.as_service_error(),
            Some(ReceiveMessageError::QueueDoesNotExist(_))
        ),
        "{err:?}"
    );
    let url = s.create("q", &[]).await;
    let err = s
        .client
        .delete_message()
        .queue_url(&url)
        .receipt_handle("garbage")
        .send()
        .await
        .expect_err("bad handle");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_receipt_handle_is_invalid()),
        "{err:?}"
    );
    let err = s
        .client
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(11)
        .send()
        .await
        .expect_err("too many");
    assert_eq!(
        aws_sdk_sqs::error::ProvideErrorMetadata::code(&err),
        Some("InvalidParameterValue")
    );
    // Same name, different attribute: refused; same attributes: the same URL.
    let err = s
        .client
        .create_queue()
        .queue_name("q")
        .attributes(QueueAttributeName::VisibilityTimeout, "5")
        .send()
        .await
        .expect_err("different attributes");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_queue_name_exists()),
        "{err:?}"
    );
    assert_eq!(s.create("q", &[]).await, url);
    assert!(s.sim.stats().errors >= 5);
}

#[tokio::test]
async fn queue_attributes_count_visible_in_flight_and_delayed() {
    let s = Sim::start().await;
    let url = s
        .create("q", &[(QueueAttributeName::VisibilityTimeout, "45")])
        .await;
    for i in 0..5 {
        s.send(&url, &format!("m{i}")).await;
    }
    s.client
        .send_message()
        .queue_url(&url)
        .message_body("later")
        .delay_seconds(600)
        .send()
        .await
        .expect("SendMessage");
    s.receive(&url, 2, 30, 0).await;
    assert_eq!(s.depth(&url).await, (3, 2, 1));
    let attrs = s
        .client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .expect("GetQueueAttributes");
    let attrs = attrs.attributes().expect("attributes");
    assert_eq!(attrs.len(), 1);
    assert_eq!(attrs[&QueueAttributeName::VisibilityTimeout], "45");

    s.client
        .purge_queue()
        .queue_url(&url)
        .send()
        .await
        .expect("PurgeQueue");
    assert_eq!(s.depth(&url).await, (0, 0, 0));
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
