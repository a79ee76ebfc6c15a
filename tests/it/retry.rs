//! Retryable failures are retried within a delivery without repeating a step that already
//! succeeded; when retries are spent the message is kept and comes back later.

use crate::support;

use reservation_sim::proto::reservation::v1::ReleaseStatus;
use reservation_sim::{GrpcFault, HttpFault, HttpRoute, InventoryMethod};
use support::{Harness, bodies};
use tonic::Code;

#[tokio::test]
async fn a_retryable_first_step_recovers() {
    let h = Harness::start().await;
    h.peers.hold("r1");
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Status(Code::Unavailable),
    );
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Status(Code::DeadlineExceeded),
    );
    let _w = support::InProcess::start(&h, &[]).await;
    h.queue.send(&bodies::expired("env-1", "r1")).await;
    h.wait_queue_empty().await;
    support::eventually("status set", || {
        h.peers
            .reservations
            .get("r1")
            .is_some_and(|r| r.status == "EXPIRED")
    })
    .await;
    let inv = h.peers.inventory.calls_for("r1");
    assert_eq!(inv.len(), 3, "two failures then success");
    assert!(inv.iter().all(|c| c.idempotency_key == "env-1"));
    assert_eq!(h.peers.reservations.calls_for("r1").len(), 1);
    assert_eq!(h.dlq.depth().await, (0, 0));
}

#[tokio::test]
async fn a_retryable_second_step_does_not_repeat_the_first() {
    let h = Harness::start().await;
    h.peers.hold("r-exp");
    h.peers.hold("r-ok");
    for status in [503, 500, 429] {
        h.peers
            .reservations
            .push_fault(HttpRoute::Patch, HttpFault::Status(status));
    }
    let _w = support::InProcess::start(&h, &[]).await;
    h.queue.send(&bodies::expired("env-exp", "r-exp")).await;
    h.wait_queue_empty().await;
    support::eventually("expired", || {
        h.peers
            .reservations
            .get("r-exp")
            .is_some_and(|r| r.status == "EXPIRED")
    })
    .await;
    assert_eq!(
        h.peers.inventory.calls_for("r-exp").len(),
        1,
        "ReleaseHold is not repeated"
    );
    assert_eq!(h.peers.reservations.calls_for("r-exp").len(), 4);

    h.peers.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::Status(Code::ResourceExhausted),
    );
    h.peers.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::Status(Code::Internal),
    );
    h.queue.send(&bodies::approved("env-ok", "r-ok")).await;
    h.wait_queue_empty().await;
    support::eventually("committed", || {
        h.peers.inventory.calls_for("r-ok").len() == 3
    })
    .await;
    assert_eq!(
        h.peers.reservations.calls_for("r-ok").len(),
        1,
        "PATCH CONFIRMED is not repeated"
    );
}

#[tokio::test]
async fn spent_retries_leave_the_message_for_a_later_delivery() {
    let h = Harness::start().await;
    h.peers.hold("r1");
    // Five failures, two attempts per delivery: deliveries 1 and 2 give up, the third wins.
    for _ in 0..5 {
        h.peers.inventory.push_fault(
            InventoryMethod::ReleaseHold,
            GrpcFault::Status(Code::Unavailable),
        );
    }
    let w = support::InProcess::start(
        &h,
        &[
            ("MAX_RETRIES", "2"),
            ("REDELIVERY_BACKOFF_BASE_SECS", "1"),
            ("REDELIVERY_BACKOFF_MAX_SECS", "8"),
        ],
    )
    .await;
    h.queue.send(&bodies::expired("env-1", "r1")).await;
    support::eventually("completed on the third delivery", || {
        h.peers
            .reservations
            .get("r1")
            .is_some_and(|r| r.status == "EXPIRED")
    })
    .await;
    // Never deleted before that: hidden for a growing backoff, then delivered again.
    h.wait_queue_empty().await;
    support::eventually("three deliveries finished", || {
        w.logs_with_message("message finished").len() == 3
    })
    .await;
    let finished: Vec<(String, u64, u64)> = w
        .logs_with_message("message finished")
        .iter()
        .map(|l| {
            let count = l["receive_count"].as_u64().unwrap_or(0);
            let outcome = l["outcome"].as_str().unwrap_or("").to_string();
            (outcome, count, l["retry_in_secs"].as_u64().unwrap_or(0))
        })
        .collect();
    assert_eq!(
        finished,
        [
            ("retry_later".to_string(), 1, 1),
            ("retry_later".to_string(), 2, 2),
            ("success".to_string(), 3, 0)
        ],
        "the redelivery delay doubles with the receive count"
    );
    assert_eq!(h.peers.inventory.calls_for("r1").len(), 6);
    assert_eq!(h.dlq.depth().await, (0, 0));
}

#[tokio::test]
async fn already_applied_answers_count_as_success() {
    let h = Harness::start().await;
    h.peers.hold("r-commit");
    h.peers.hold("r-release");
    h.peers.hold("r-gone");
    let w = support::InProcess::start(&h, &[]).await;
    h.peers.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::Status(Code::AlreadyExists),
    );
    h.queue.send(&bodies::approved("env-1", "r-commit")).await;
    h.wait_queue_empty().await;
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::ReleaseStatus(ReleaseStatus::AlreadyReleased),
    );
    h.queue.send(&bodies::expired("env-2", "r-release")).await;
    h.wait_queue_empty().await;
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::ReleaseStatus(ReleaseStatus::NotFound),
    );
    h.queue.send(&bodies::expired("env-3", "r-gone")).await;
    h.wait_queue_empty().await;
    support::eventually("three finished", || {
        w.logs_with_message("message finished").len() == 3
    })
    .await;
    let outcomes: Vec<String> = w
        .logs_with_message("message finished")
        .iter()
        .map(|l| l["outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(outcomes, ["success", "success", "success"]);
    // Each step ran once: an already-applied answer is not retried.
    assert_eq!(h.peers.inventory.calls().len(), 3);
    assert_eq!(
        h.peers.reservations.get("r-release").map(|r| r.status),
        Some("EXPIRED".into())
    );
    assert_eq!(
        h.peers.reservations.get("r-gone").map(|r| r.status),
        Some("EXPIRED".into())
    );
    assert_eq!(h.dlq.depth().await, (0, 0));
}
