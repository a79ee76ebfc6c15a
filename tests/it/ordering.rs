//! FIFO: one group runs one message at a time, in order, and a failure holds the rest back.
//! Standard queues: two events for one reservation never run at once.

use crate::support;

use std::time::Duration;

use reservation_sim::{GrpcFault, InventoryMethod, SqsFault, SqsOperation};
use support::{Harness, bodies};
use tonic::Code;

#[tokio::test]
async fn a_fifo_group_runs_in_order_one_at_a_time() {
    let h = Harness::start_fifo().await;
    let rids: Vec<String> = (1..=6).map(|i| format!("r{i}")).collect();
    for r in &rids {
        h.peers.hold(r);
    }
    // The first call is slow: were the group run in parallel, later ones would overtake it.
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_millis(800)),
    );
    for (i, r) in rids.iter().enumerate() {
        h.queue
            .send_with(&bodies::expired(&format!("env-{i}"), r), &[], Some("g1"))
            .await;
    }
    // A second group runs beside it.
    h.peers.hold("other");
    h.queue
        .send_with(&bodies::expired("env-other", "other"), &[], Some("g2"))
        .await;
    let _w = support::InProcess::start(&h, &[("WORKER_CONCURRENCY", "10")]).await;
    h.wait_queue_empty().await;
    support::eventually("all expired", || {
        rids.iter().all(|r| {
            h.peers
                .reservations
                .get(r)
                .is_some_and(|x| x.status == "EXPIRED")
        })
    })
    .await;

    let group_calls: Vec<String> = h
        .peers
        .inventory
        .calls()
        .into_iter()
        .filter(|c| c.reservation_id != "other")
        .map(|c| c.reservation_id)
        .collect();
    assert_eq!(group_calls, rids, "inventory saw the group in send order");
    // One at a time: each message's first call comes after the previous message's last call.
    for pair in rids.windows(2) {
        let prev_last = h
            .peers
            .reservations
            .calls_for(&pair[0])
            .last()
            .map(|c| c.at)
            .expect("patch");
        let next_first = h.peers.inventory.calls_for(&pair[1])[0].at;
        assert!(
            next_first >= prev_last,
            "{} started before {} finished",
            pair[1],
            pair[0]
        );
    }
}

#[tokio::test]
async fn a_failure_holds_back_the_rest_of_its_fifo_group() {
    let h = Harness::start_fifo().await;
    h.peers.hold("first");
    h.peers.hold("second");
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Status(Code::Unavailable),
    );
    h.queue
        .send_with(&bodies::expired("env-1", "first"), &[], Some("g"))
        .await;
    h.queue
        .send_with(&bodies::expired("env-2", "second"), &[], Some("g"))
        .await;
    let w = support::InProcess::start(
        &h,
        &[("MAX_RETRIES", "1"), ("REDELIVERY_BACKOFF_BASE_SECS", "1")],
    )
    .await;
    h.wait_queue_empty().await;
    support::eventually("both expired", || {
        ["first", "second"].iter().all(|r| {
            h.peers
                .reservations
                .get(r)
                .is_some_and(|x| x.status == "EXPIRED")
        })
    })
    .await;
    let order: Vec<(String, Option<String>)> = h
        .peers
        .inventory
        .calls()
        .into_iter()
        .map(|c| (c.reservation_id, c.fault))
        .collect();
    assert_eq!(
        order,
        [
            ("first".to_string(), Some("status Unavailable".to_string())),
            ("first".to_string(), None),
            ("second".to_string(), None),
        ],
        "second waited for first, which failed once and was retried on redelivery"
    );
    let outcomes: Vec<String> = w
        .logs_with_message("message finished")
        .iter()
        .map(|l| l["outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        outcomes.starts_with(&["retry_later".to_string()]),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn two_events_for_one_reservation_never_run_at_once() {
    let h = Harness::start().await;
    h.peers.hold("r1");
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_millis(800)),
    );
    let _w = support::InProcess::start(&h, &[]).await;
    h.queue.send(&bodies::expired("env-a", "r1")).await;
    h.queue.send(&bodies::expired("env-b", "r1")).await;
    h.wait_queue_empty().await;
    support::eventually("four calls", || h.peers.total_calls() == 4).await;

    // All calls of whichever envelope went first come before all calls of the other.
    let mut calls: Vec<(std::time::Instant, String)> = h
        .peers
        .inventory
        .calls()
        .into_iter()
        .map(|c| (c.at, c.idempotency_key))
        .chain(h.peers.reservations.calls().into_iter().map(|c| {
            (
                c.at,
                c.headers
                    .get("idempotency-key")
                    .cloned()
                    .unwrap_or_default(),
            )
        }))
        .collect();
    calls.sort_by_key(|(at, _)| *at);
    let keys: Vec<String> = calls.into_iter().map(|(_, k)| k).collect();
    assert_eq!(keys[0], keys[1], "interleaved: {keys:?}");
    assert_eq!(keys[2], keys[3], "interleaved: {keys:?}");
    assert_ne!(keys[0], keys[2]);
}

/// Found by attacking the promise: on a FIFO queue whose visibility renewals were
/// throttled while a peer was slow, the visibility lapsed and SQS handed the message out again
/// and again: one message ran three times at once in one process, and the next message of its
/// group started before the first one's last call ended.
#[tokio::test]
async fn a_lapsed_visibility_runs_no_message_twice_at_once_nor_its_group_out_of_order() {
    let h = Harness::start_fifo().await;
    h.sqs.sim().inject(
        SqsOperation::ChangeMessageVisibilityBatch,
        None,
        SqsFault::Throttle,
        None,
    );
    h.peers.hold("r-head");
    h.peers.hold("r-next");
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_secs(5)),
    );
    let _w = support::InProcess::start(
        &h,
        &[
            ("SQS_VISIBILITY_TIMEOUT", "2"),
            ("INVENTORY_TIMEOUT_MS", "20000"),
            ("WORKER_CONCURRENCY", "10"),
        ],
    )
    .await;
    h.queue
        .send_with(&bodies::expired("env-head", "r-head"), &[], Some("g"))
        .await;
    h.queue
        .send_with(&bodies::expired("env-next", "r-next"), &[], Some("g"))
        .await;
    support::eventually("both expired", || {
        ["r-head", "r-next"].iter().all(|r| {
            h.peers
                .reservations
                .get(r)
                .is_some_and(|x| x.status == "EXPIRED")
        })
    })
    .await;
    h.queue.wait_empty().await;
    assert!(
        h.sqs.sim().stats().messages_received > 3,
        "the visibility really lapsed: {:?}",
        h.sqs.sim().stats()
    );
    let head = h.peers.inventory.calls_for("r-head");
    assert_eq!(
        head.len(),
        1,
        "the head ran once; its other deliveries waited, then were duplicates: {head:?}"
    );
    let head_done = h
        .peers
        .reservations
        .calls_for("r-head")
        .last()
        .map(|c| c.at)
        .expect("PATCH");
    let next_start = h.peers.inventory.calls_for("r-next")[0].at;
    assert!(
        next_start > head_done,
        "the next message of the group started before the head's last call"
    );
}

/// Found by attacking the promise: some emulators hand out the rest of a FIFO group while its
/// head is in flight. When the head is put back for a later retry, the rest of its group is put
/// back with it (hidden until after the head returns), never released at once to overtake it.
#[tokio::test]
async fn a_lax_emulator_cannot_make_a_group_run_out_of_order() {
    let h = Harness::start_fifo().await;
    h.sqs.sim().set_lax_fifo(true);
    let rids = ["r1", "r2", "r3"];
    for r in rids {
        h.peers.hold(r);
    }
    for _ in 0..2 {
        h.peers.inventory.push_fault(
            InventoryMethod::ReleaseHold,
            GrpcFault::Status(Code::Unavailable),
        );
    }
    let w = support::InProcess::start(
        &h,
        &[
            ("MAX_RETRIES", "1"),
            ("REDELIVERY_BACKOFF_BASE_SECS", "1"),
            ("WORKER_CONCURRENCY", "10"),
        ],
    )
    .await;
    for (i, r) in rids.iter().enumerate() {
        h.queue
            .send_with(&bodies::expired(&format!("env-{i}"), r), &[], Some("g"))
            .await;
    }
    support::eventually("all expired", || {
        rids.iter().all(|r| {
            h.peers
                .reservations
                .get(r)
                .is_some_and(|x| x.status == "EXPIRED")
        })
    })
    .await;
    h.queue.wait_empty().await;
    let calls: Vec<(String, bool)> = h
        .peers
        .inventory
        .calls()
        .into_iter()
        .map(|c| (c.reservation_id, c.applied))
        .collect();
    let expected: Vec<(String, bool)> = [
        ("r1", false),
        ("r1", false),
        ("r1", true),
        ("r2", true),
        ("r3", true),
    ]
    .iter()
    .map(|(r, a)| (r.to_string(), *a))
    .collect();
    assert_eq!(
        calls, expected,
        "the group ran in order, its head retried first"
    );
    let released = w
        .logs_with_message("message finished")
        .iter()
        .filter(|l| l["outcome"] == "released")
        .count();
    assert_eq!(released, 0, "nothing was released to overtake the head");
}
