//! Terminal messages go to the dead-letter queue with their reason and leave the source queue;
//! nothing is called for a message that does not parse; with no DLQ, nothing is deleted.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reservation_sim::proto::reservation::v1::CommitStatus;
use reservation_sim::{GrpcFault, HttpFault, HttpRoute, InventoryMethod};
use reservation_worker::{Acker, Settle};
use reservation_worker::{Delivery, SqsQueue};
use reservation_worker::{Disposition, RecentlyCompleted};
use serde_json::json;
use support::{Harness, bodies, moto::Received};

/// Receives `n` dead letters and indexes them by the original message id.
async fn dead_letters(h: &Harness, n: usize) -> HashMap<String, Received> {
    h.dlq
        .receive_n(n)
        .await
        .into_iter()
        .map(|m| {
            (
                m.attributes
                    .get("OriginalMessageId")
                    .cloned()
                    .unwrap_or_default(),
                m,
            )
        })
        .collect()
}

#[tokio::test]
async fn invalid_messages_are_dead_lettered_with_the_reason_and_nothing_is_called() {
    let h = Harness::start().await;
    let w = h.worker(&[]).await;
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "malformed",
            "{not json".into(),
            "malformed_json",
            "malformed JSON",
        ),
        (
            "unknown type",
            bodies::documented("e1", "order.created", json!({"reservation_id": "r"})),
            "unknown_type",
            "order.created",
        ),
        (
            "expired without reservation_id",
            bodies::documented(
                "e2",
                "reservation.expired",
                json!({"event_id": "evt", "qty": 1}),
            ),
            "invalid_field",
            "detail.reservation_id",
        ),
        (
            "expired without event_id",
            bodies::documented(
                "e3",
                "reservation.expired",
                json!({"reservation_id": "r", "qty": 1}),
            ),
            "invalid_field",
            "detail.event_id",
        ),
        (
            "expired without seats or qty",
            bodies::documented(
                "e4",
                "reservation.expired",
                json!({"reservation_id": "r", "event_id": "evt"}),
            ),
            "invalid_field",
            "detail.seat_ids",
        ),
        (
            "approved without payment_intent_id",
            bodies::documented(
                "e5",
                "payment.approved",
                json!({"reservation_id": "r", "amount": 1}),
            ),
            "invalid_field",
            "detail.payment_intent_id",
        ),
        (
            "approved without amount",
            bodies::documented(
                "e6",
                "payment.approved",
                json!({"reservation_id": "r", "payment_intent_id": "pi"}),
            ),
            "invalid_field",
            "detail.amount",
        ),
        (
            "failed without reservation_id",
            bodies::documented(
                "e7",
                "payment.failed",
                json!({"payment_intent_id": "pi", "amount": 1}),
            ),
            "invalid_field",
            "detail.reservation_id",
        ),
        (
            "negative qty",
            bodies::documented(
                "e8",
                "reservation.expired",
                json!({"reservation_id": "r", "event_id": "evt", "qty": -1}),
            ),
            "invalid_field",
            "detail.qty",
        ),
        (
            "no detail",
            json!({"id": "e9", "type": "payment.failed"}).to_string(),
            "invalid_field",
            "detail",
        ),
        (
            "SNS around garbage",
            bodies::sns("garbage"),
            "malformed_json",
            "Message",
        ),
    ];
    let mut ids = Vec::new();
    for (_, body, _, _) in &cases {
        ids.push(h.queue.send(body).await);
    }
    let dlq = dead_letters(&h, cases.len()).await;
    h.wait_queue_empty().await;
    for ((name, body, class, needle), id) in cases.iter().zip(&ids) {
        let m = dlq
            .get(id)
            .unwrap_or_else(|| panic!("{name}: not in the DLQ"));
        assert_eq!(&m.body, body, "{name}: the original body is kept");
        assert_eq!(
            m.attributes.get("ReasonClass").map(String::as_str),
            Some(*class),
            "{name}"
        );
        let error = m
            .attributes
            .get("ErrorMessage")
            .cloned()
            .unwrap_or_default();
        assert!(
            error.contains(needle),
            "{name}: error {error:?} should name {needle:?}"
        );
        assert_eq!(
            m.attributes.get("ReceiveCount").map(String::as_str),
            Some("1"),
            "{name}"
        );
        assert_eq!(
            m.attributes.get("AppliedSteps").map(String::as_str),
            Some("none"),
            "{name}: nothing ran"
        );
        assert_eq!(
            m.attributes.get("SourceQueue"),
            Some(&h.queue.url),
            "{name}"
        );
        assert_eq!(
            m.attributes.get("DeadLetteredBy"),
            Some(&format!("pid-{}", w.pid())),
            "{name}: without POD_NAME the process names itself"
        );
    }
    assert_eq!(
        h.peers.total_calls(),
        0,
        "no downstream call for an invalid message"
    );
}

#[tokio::test]
async fn terminal_downstream_errors_are_dead_lettered() {
    let h = Harness::start().await;
    // Unknown to the reservation API: PATCH answers 404 (terminal) after ReleaseHold succeeded.
    h.peers.hold("r-commit");
    h.peers.hold("r-grpc");
    h.peers.hold("r-409");
    let w = support::InProcess::start(&h, &[]).await;
    let id_404 = h.queue.send(&bodies::expired("env-404", "r-unknown")).await;
    let dl = dead_letters(&h, 1).await;
    assert!(
        dl[&id_404].attributes["ErrorMessage"].contains("HTTP 404"),
        "{:?}",
        dl[&id_404].attributes
    );
    assert_eq!(dl[&id_404].attributes["ReasonClass"], "downstream_rejected");
    assert_eq!(
        dl[&id_404].attributes["AppliedSteps"], "release_hold",
        "the seats went back although the reservation was not marked EXPIRED"
    );

    h.peers.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::CommitStatus(CommitStatus::FailedExpired),
    );
    let id_commit = h
        .queue
        .send(&bodies::approved("env-commit", "r-commit"))
        .await;
    let dl = dead_letters(&h, 1).await;
    assert!(dl[&id_commit].attributes["ErrorMessage"].contains("COMMIT_STATUS_FAILED_EXPIRED"));
    assert_eq!(
        dl[&id_commit].attributes["AppliedSteps"], "status_update",
        "paid and CONFIRMED, seats not committed: the half-applied event"
    );
    let line = w
        .wait_logs("dead-lettered")
        .await
        .into_iter()
        .find(|l| l["message_id"] == id_commit.as_str())
        .expect("the dead-letter line of the half-applied event");
    assert_eq!(line["applied_steps"], "status_update", "{line}");
    assert_eq!(line["reason"], "downstream_rejected", "{line}");

    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Status(tonic::Code::InvalidArgument),
    );
    let id_grpc = h.queue.send(&bodies::expired("env-grpc", "r-grpc")).await;
    let dl = dead_letters(&h, 1).await;
    assert!(dl[&id_grpc].attributes["ErrorMessage"].contains("InvalidArgument"));
    assert_eq!(dl[&id_grpc].attributes["AppliedSteps"], "none");
    assert!(
        h.peers.reservations.calls_for("r-grpc").is_empty(),
        "step 2 never runs after a terminal step 1"
    );

    h.peers
        .reservations
        .push_fault(HttpRoute::Patch, HttpFault::Status(409));
    let id_409 = h.queue.send(&bodies::failed("env-409", "r-409")).await;
    let dl = dead_letters(&h, 1).await;
    assert!(dl[&id_409].attributes["ErrorMessage"].contains("HTTP 409"));
    assert_eq!(dl[&id_409].attributes["AppliedSteps"], "none");
    assert!(h.peers.inventory.calls_for("r-409").is_empty());
    assert_eq!(
        dl[&id_409].attributes.get("EnvelopeId").map(String::as_str),
        Some("env-409"),
        "the copy carries the key it was worked with, for a redrive to keep"
    );

    // A body without an id was worked with its SQS MessageId as the key: the copy keeps it.
    h.peers
        .reservations
        .push_fault(HttpRoute::Patch, HttpFault::Status(409));
    let no_id = json!({"type": "payment.failed", "detail": {"reservation_id": "r-409b", "payment_intent_id": "pi", "amount": 1, "event_id": "evt-1", "qty": 1}}).to_string();
    let id_no_id = h.queue.send(&no_id).await;
    let dl = dead_letters(&h, 1).await;
    assert_eq!(dl[&id_no_id].attributes.get("EnvelopeId"), Some(&id_no_id));
    h.wait_queue_empty().await;
    // Each terminal error was tried once: no retry of a terminal failure.
    assert_eq!(h.peers.reservations.calls_for("r-unknown").len(), 1);
    assert_eq!(h.peers.inventory.calls_for("r-commit").len(), 1);
}

#[tokio::test]
async fn a_lookup_that_cannot_fill_the_fields_is_terminal() {
    let h = Harness::start().await;
    let mut r = reservation_sim::Reservation::demo("r-empty");
    r.event_id = String::new();
    r.seat_ids.clear();
    r.quantity = 0;
    h.peers.reservations.seed(r);
    let _w = support::InProcess::start(&h, &[]).await;
    let body = bodies::documented(
        "env-x",
        "payment.failed",
        json!({"reservation_id": "r-empty", "payment_intent_id": "pi", "amount": 1}),
    );
    let id = h.queue.send(&body).await;
    let dl = dead_letters(&h, 1).await;
    assert_eq!(
        dl[&id].attributes["ReasonClass"],
        "missing_inventory_fields"
    );
    let error = &dl[&id].attributes["ErrorMessage"];
    assert!(
        error.contains("event_id") && error.contains("seat_ids or qty"),
        "{error}"
    );
    assert!(h.peers.inventory.calls().is_empty());
    let http: Vec<String> = h
        .peers
        .reservations
        .calls()
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(
        http,
        ["GET"],
        "nothing was changed: the reservation is not CANCELLED"
    );
    assert_eq!(
        h.peers.reservations.get("r-empty").map(|r| r.status),
        Some("HELD".into())
    );
}

#[tokio::test]
async fn sqs_dlq_url_is_used_when_the_queue_has_no_redrive_policy() {
    let h = Harness::start().await;
    let plain = h.sqs.create_queue("no-redrive", None).await;
    let _w = support::InProcess::start(
        &h,
        &[
            ("SQS_QUEUE_URL", plain.url.as_str()),
            ("SQS_DLQ_URL", h.dlq.url.as_str()),
        ],
    )
    .await;
    let id = plain.send("[1,2,3]").await;
    let dl = dead_letters(&h, 1).await;
    assert_eq!(dl[&id].attributes["ReasonClass"], "malformed_json");
    assert_eq!(dl[&id].attributes["SourceQueue"], plain.url);
    plain.wait_empty().await;
}

#[tokio::test]
async fn sqs_dlq_url_wins_over_the_redrive_policy() {
    let h = Harness::start().await;
    let chosen = h.sqs.create_queue("chosen-dlq", None).await;
    let _w = support::InProcess::start(&h, &[("SQS_DLQ_URL", chosen.url.as_str())]).await;
    let id = h.queue.send("[1,2,3]").await;
    let dl = chosen.receive_n(1).await;
    assert_eq!(dl[0].attributes["OriginalMessageId"], id);
    assert_eq!(dl[0].attributes["ReasonClass"], "malformed_json");
    h.queue.wait_empty().await;
    assert_eq!(
        h.dlq.depth().await,
        (0, 0),
        "the RedrivePolicy's DLQ got nothing"
    );
}

#[tokio::test]
async fn without_any_dlq_a_terminal_message_is_kept_not_deleted() {
    let h = Harness::start().await;
    let plain = h.sqs.create_queue("no-dlq", None).await;
    let w = support::InProcess::start(&h, &[("SQS_QUEUE_URL", plain.url.as_str())]).await;
    // Waiting for the line is the assertion: without it the test times out.
    w.wait_logs("queue reached, but there is no dead-letter queue (set SQS_DLQ_URL or a RedrivePolicy): terminal messages will be kept invisible for 12 h instead of dead-lettered").await;
    plain.send("not json").await;
    support::eventually("the terminal message is decided", || {
        !w.logs_with_message(
            "terminal message but no dead-letter queue: kept invisible for 12 h, not deleted",
        )
        .is_empty()
    })
    .await;
    // Still in the queue, hidden: never deleted.
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let (visible, in_flight) = plain.depth().await;
        assert_eq!(visible, 0);
        if in_flight == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message disappeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.dlq.depth().await, (0, 0));
}

/// SQS delivers at least once: two receives can hand out the same message at the same time
/// (moto does so under concurrent receive loops). Both copies reach the acker; the DLQ gets
/// one copy and both receipts are deleted.
#[tokio::test]
async fn a_message_delivered_twice_is_dead_lettered_once() {
    let h = Harness::start().await;
    let sent_id = h.queue.send("{not json").await;
    // Two receives of one message: the first hides it for 0 s, so the second gets it again.
    let mut copies: Vec<Received> = Vec::new();
    for visibility in [0, 60] {
        let out = h
            .queue
            .client
            .receive_message()
            .queue_url(&h.queue.url)
            .visibility_timeout(visibility)
            .send()
            .await
            .expect("ReceiveMessage");
        copies.extend(out.messages().iter().map(Received::from));
    }
    assert_eq!(copies.len(), 2, "two deliveries of one message");
    assert!(copies.iter().all(|c| c.message_id == sent_id));

    let sdk = h.sqs.sdk_config().await;
    let queue = SqsQueue::new(&sdk, h.queue.url.clone());
    let dlq = queue.sibling(h.dlq.url.clone());
    let acker = Acker::new(
        Arc::new(queue),
        Some(Arc::new(dlq)),
        Duration::from_secs(1),
        RecentlyCompleted::new(100, Duration::from_secs(60)),
    )
    .with_pod_name(Some("pod-a"));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for c in &copies {
        let delivery = Delivery {
            message_id: c.message_id.clone(),
            receipt_handle: c.receipt.clone(),
            body: c.body.clone(),
            receive_count: c.receive_count,
            group_id: None,
            sequence_number: None,
            sent_at: None,
            attributes: HashMap::new(),
            received_at: Instant::now(),
            received_in: None,
        };
        let disposition = Disposition::DeadLetter {
            class: reservation_worker::DeadLetterReason::MalformedJson,
            error: "malformed JSON".into(),
            applied: reservation_worker::AppliedSteps::default(),
        };
        tx.send(Settle {
            delivery,
            disposition,
            span: tracing::Span::none(),
            slot: None,
            envelope_id: None,
            event_type: None,
        })
        .await
        .expect("acker listening");
    }
    drop(tx);
    acker.run(rx).await;

    h.wait_queue_empty().await;
    let dead = h.dlq.receive(60).await;
    assert_eq!(
        dead.len(),
        1,
        "one DLQ copy per message, got {}",
        dead.len()
    );
    assert_eq!(dead[0].attributes.get("OriginalMessageId"), Some(&sent_id));
    assert_eq!(
        dead[0].attributes.get("DeadLetteredBy").map(String::as_str),
        Some("pod-a")
    );
}
