//! The whole pipeline in-process (receive loops, pool, heartbeat, acker) on the in-memory queue,
//! with the real peer simulators on loopback: the three workflows, retries, dead letters,
//! duplicates, FIFO chains, release on shutdown, and two pipelines in one process.

use std::sync::Arc;
use std::time::Duration;

use reservation_sim::proto::reservation::v1::CommitStatus;
use reservation_sim::{GrpcFault, HttpFault, HttpRoute, InventoryMethod};

use super::{PATIENCE, Running, Sims, bodies, eventually, settings};
use crate::sqs::memory::MemoryQueue;
use crate::sqs::{QueueErrorKind, SqsOperation};

fn queue(url: &str) -> Arc<MemoryQueue> {
    Arc::new(MemoryQueue::new(url))
}

fn methods(sims: &Sims, rid: &str) -> Vec<InventoryMethod> {
    sims.inventory
        .calls_for(rid)
        .iter()
        .map(|c| c.method)
        .collect()
}

#[tokio::test]
async fn each_event_type_applies_its_two_steps_in_order_and_leaves_the_queue() {
    let sims = Sims::start().await;
    let q = queue("memory://events");
    for (body, rid) in [
        (bodies::expired("e1", "r-exp"), "r-exp"),
        (bodies::approved("e2", "r-app"), "r-app"),
        (bodies::failed("e3", "r-fail"), "r-fail"),
    ] {
        sims.hold(rid);
        q.push(&body, None);
    }
    let p = Running::start(q, sims.peers(), settings(false));
    p.drained().await;
    assert_eq!(sims.status_of("r-exp").as_deref(), Some("EXPIRED"));
    assert_eq!(sims.status_of("r-app").as_deref(), Some("CONFIRMED"));
    assert_eq!(sims.status_of("r-fail").as_deref(), Some("CANCELLED"));
    assert_eq!(methods(&sims, "r-exp"), [InventoryMethod::ReleaseHold]);
    assert_eq!(
        methods(&sims, "r-app"),
        [InventoryMethod::CommitReservation]
    );
    assert_eq!(methods(&sims, "r-fail"), [InventoryMethod::ReleaseHold]);
    // reservation.expired releases first; the payments set the status first.
    let first_is_grpc =
        |rid: &str| sims.inventory.calls_for(rid)[0].at < sims.reservations.calls_for(rid)[0].at;
    assert!(first_is_grpc("r-exp"));
    assert!(!first_is_grpc("r-app"));
    assert!(!first_is_grpc("r-fail"));
    let dlq = p.dlq.clone();
    p.stop().await;
    assert_eq!(dlq.len(), 0);
}

#[tokio::test]
async fn a_retryable_failure_is_retried_in_the_task_and_each_step_runs_once() {
    let sims = Sims::start().await;
    sims.hold("r-1");
    sims.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::Status(tonic::Code::Unavailable),
    );
    let q = queue("memory://events");
    q.push(&bodies::approved("e1", "r-1"), None);
    let p = Running::start(q, sims.peers(), settings(false));
    p.drained().await;
    assert_eq!(
        methods(&sims, "r-1"),
        [
            InventoryMethod::CommitReservation,
            InventoryMethod::CommitReservation
        ]
    );
    assert_eq!(
        sims.reservations.calls_for("r-1").len(),
        1,
        "the applied PATCH is not repeated"
    );
    p.stop().await;
}

#[tokio::test]
async fn retries_spent_send_the_message_back_for_later_with_backoff() {
    let sims = Sims::start().await;
    sims.hold("r-1");
    for _ in 0..3 {
        sims.reservations
            .push_fault(HttpRoute::Patch, HttpFault::Status(503));
    }
    let q = queue("memory://events");
    let id = q.push(&bodies::expired("e1", "r-1"), None);
    let p = Running::start(q.clone(), sims.peers(), settings(false));
    eventually("the message to be handed back", || {
        !q.calls_of(SqsOperation::ChangeMessageVisibilityBatch)
            .is_empty()
    })
    .await;
    assert_eq!(sims.reservations.calls_for("r-1").len(), 3, "max_retries");
    let hidden_for = q.visible_at(&id).expect("kept") - tokio::time::Instant::now();
    assert!(
        hidden_for > Duration::from_secs(25) && hidden_for <= Duration::from_secs(30),
        "redelivery base for a first receive: {hidden_for:?}"
    );
    assert_eq!(q.len(), 1);
    p.stop().await;
}

#[tokio::test]
async fn a_rejected_commit_is_dead_lettered_with_its_reason_and_nothing_else_runs() {
    let sims = Sims::start().await;
    sims.hold("r-1");
    sims.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::CommitStatus(CommitStatus::FailedExpired),
    );
    let q = queue("memory://events");
    q.push(&bodies::approved("e1", "r-1"), None);
    q.push("{not json", None);
    let p = Running::start(q, sims.peers(), settings(false));
    p.drained().await;
    let dlq = p.dlq.clone();
    p.stop().await;
    let mut copies = dlq.messages();
    copies.sort_by_key(|m| m.body.len());
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].body, "{not json");
    assert_eq!(copies[0].attributes["ReasonClass"], "malformed_json");
    assert_eq!(copies[1].attributes["ReasonClass"], "downstream_rejected");
    assert!(
        copies[1].attributes["ErrorMessage"].contains("COMMIT_STATUS_FAILED_EXPIRED"),
        "{:?}",
        copies[1].attributes
    );
    assert_eq!(copies[1].attributes["EnvelopeId"], "e1");
    assert_eq!(methods(&sims, "r-1"), [InventoryMethod::CommitReservation]);
}

#[tokio::test]
async fn a_second_delivery_of_a_finished_event_is_deleted_without_a_call() {
    let sims = Sims::start().await;
    sims.hold("r-1");
    let q = queue("memory://events");
    q.push(&bodies::expired("e1", "r-1"), None);
    let p = Running::start(q.clone(), sims.peers(), settings(false));
    p.drained().await;
    let calls = sims.inventory.calls().len() + sims.reservations.calls().len();
    // The producer sent it twice (same envelope id): the second copy arrives later.
    q.push(&bodies::expired("e1", "r-1"), None);
    p.drained().await;
    assert_eq!(
        sims.inventory.calls().len() + sims.reservations.calls().len(),
        calls
    );
    p.stop().await;
}

#[tokio::test]
async fn a_fifo_group_runs_in_order_one_at_a_time() {
    let sims = Sims::start().await;
    let q = queue("memory://events.fifo");
    for i in 0..5 {
        let rid = format!("r-{i}");
        sims.hold(&rid);
        q.push(&bodies::expired(&format!("e{i}"), &rid), Some("event-7"));
    }
    // The first is slow: the others must wait for it, not overtake it.
    sims.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_millis(300)),
    );
    let mut s = settings(true);
    s.pool.concurrency = 10;
    let p = Running::start(q, sims.peers(), s);
    p.drained().await;
    let order: Vec<String> = sims
        .inventory
        .calls()
        .iter()
        .map(|c| c.reservation_id.clone())
        .collect();
    assert_eq!(order, ["r-0", "r-1", "r-2", "r-3", "r-4"]);
    let ends: Vec<_> = (0..5)
        .map(|i| sims.reservations.calls_for(&format!("r-{i}"))[0].at)
        .collect();
    let starts: Vec<_> = (0..5)
        .map(|i| sims.inventory.calls_for(&format!("r-{i}"))[0].at)
        .collect();
    for i in 1..5 {
        assert!(
            starts[i] >= ends[i - 1],
            "r-{i} started before r-{} ended",
            i - 1
        );
    }
    p.stop().await;
}

#[tokio::test]
async fn a_fifo_message_sent_back_holds_back_the_rest_of_its_group() {
    let sims = Sims::start().await;
    let q = queue("memory://events.fifo");
    for i in 0..3 {
        let rid = format!("r-{i}");
        sims.hold(&rid);
        q.push(&bodies::expired(&format!("e{i}"), &rid), Some("event-7"));
    }
    for _ in 0..3 {
        sims.inventory.push_fault(
            InventoryMethod::ReleaseHold,
            GrpcFault::Status(tonic::Code::Unavailable),
        );
    }
    let p = Running::start(q.clone(), sims.peers(), settings(true));
    eventually("the first to be handed back", || {
        !q.calls_of(SqsOperation::ChangeMessageVisibilityBatch)
            .is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(methods(&sims, "r-0").len(), 3, "its attempts");
    for rid in ["r-1", "r-2"] {
        assert!(
            sims.inventory.calls_for(rid).is_empty(),
            "{rid} ran before r-0 finished"
        );
    }
    assert_eq!(q.len(), 3, "the group's three wait on the queue");
    assert_eq!(q.visible(), 0, "each hidden until its retry");
    p.stop().await;
}

#[tokio::test]
async fn at_shutdown_unfinished_work_is_released_for_another_consumer() {
    let sims = Sims::start().await;
    sims.hold("r-1");
    sims.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_secs(4)),
    );
    let q = queue("memory://events");
    let id = q.push(&bodies::expired("e1", "r-1"), None);
    let mut s = settings(false);
    s.shutdown_timeout = Duration::from_millis(300);
    let p = Running::start(q.clone(), sims.peers(), s);
    eventually("the work to start", || !sims.inventory.calls().is_empty()).await;
    let status = p.status.clone();
    p.stop().await;
    assert!(status.is_draining());
    assert_eq!(q.len(), 1, "not deleted: its work did not finish");
    assert_eq!(q.visible(), 1, "released, not left invisible for 30 s");
    assert_eq!(q.receive_count(&id), Some(1));
    let releases = q.calls_of(SqsOperation::ChangeMessageVisibilityBatch);
    assert_eq!(releases.len(), 1);
}

#[tokio::test]
async fn two_pipelines_run_side_by_side_in_one_process() {
    let sims = Sims::start().await;
    let (a, b) = (queue("memory://a"), queue("memory://b"));
    for i in 0..20 {
        let (ra, rb) = (format!("a-{i}"), format!("b-{i}"));
        sims.hold(&ra);
        sims.hold(&rb);
        a.push(&bodies::expired(&format!("ea{i}"), &ra), None);
        b.push(&bodies::failed(&format!("eb{i}"), &rb), None);
    }
    let pa = Running::start(a, sims.peers(), settings(false));
    let pb = Running::start(b, sims.peers(), settings(false));
    tokio::time::timeout(PATIENCE, async { tokio::join!(pa.drained(), pb.drained()) })
        .await
        .expect("both drain");
    for i in 0..20 {
        assert_eq!(
            sims.status_of(&format!("a-{i}")).as_deref(),
            Some("EXPIRED")
        );
        assert_eq!(
            sims.status_of(&format!("b-{i}")).as_deref(),
            Some("CANCELLED")
        );
    }
    assert_eq!(pa.status.in_flight() + pb.status.in_flight(), 0);
    pa.stop().await;
    pb.stop().await;
}

/// A DLQ that keeps refusing is a pod that cannot settle: liveness fails once every dead-letter
/// send has failed for longer than the limit (30 s), and recovers when the DLQ answers and the
/// letter gets there with its reason.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_queue_that_keeps_failing_fails_liveness_until_it_answers() {
    let failures_before = settle_failures("dead_letter");
    let q = queue("memory://events");
    let p = Running::start(q.clone(), super::unreachable_peers(), settings(false));
    p.dlq
        .fail(SqsOperation::SendMessage, &[QueueErrorKind::Transient; 30]);
    q.push("{poison", None);

    let started = tokio::time::Instant::now();
    let mut failed_after = None;
    while p.dlq.len() == 0 {
        let liveness = p.status.liveness();
        if failed_after.is_none() && !liveness.is_alive() {
            let reason = liveness.reason();
            assert!(
                reason.contains("SendMessage") && reason.contains("limit 30 s"),
                "{reason}"
            );
            failed_after = Some(started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "the DLQ never got the letter"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let failed_after = failed_after.expect("liveness failed while the DLQ refused");
    assert!(
        failed_after > Duration::from_secs(30),
        "failed after {failed_after:?}, before the limit"
    );
    assert!(settle_failures("dead_letter") >= failures_before + 2);

    let letter = &p.dlq.messages()[0];
    assert_eq!(letter.body, "{poison");
    assert_eq!(letter.attributes["ReasonClass"], "malformed_json");
    eventually("liveness recovers", || p.status.liveness().is_alive()).await;
    p.drained().await;
    p.stop().await;
}

/// `worker_settle_failures_total{write}` as exported (process-wide: only ever grows).
fn settle_failures(write: &str) -> u64 {
    let series = format!("worker_settle_failures_total{{write=\"{write}\"}} ");
    crate::telemetry::metrics::metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
        .unwrap_or(0)
}
