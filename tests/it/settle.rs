//! Settling messages when SQS misbehaves: a hanging dead-letter queue holds up no delete (that
//! it fails liveness once it lasts is proved in-process, on a paused clock:
//! `pipeline::in_process::pipeline`), a dead letter always fits the DLQ with its reason, and
//! shutdown ends on time even when SQS never answers. SQS here is the project's fast endpoint,
//! which hangs, throttles or fails one operation on one queue on cue.

use crate::support;

use std::time::{Duration, Instant};

use reservation_sim::{SqsFault, SqsOperation};
use support::Harness;
use support::bodies;

/// Found by attacking the promise: the single acker awaited the DLQ send inline (3 attempts
/// of 30 s), so while the DLQ hung no message of the pod was deleted, dozens were redelivered,
/// and `/health` said ok.
#[tokio::test]
async fn a_hanging_dead_letter_queue_holds_up_no_delete() {
    let h = Harness::start().await;
    h.sqs.sim().inject(
        SqsOperation::SendMessage,
        Some("events-dlq"),
        SqsFault::Delay(Duration::from_secs(120)),
        None,
    );
    let rids: Vec<String> = (0..20).map(|i| format!("r-{i}")).collect();
    for r in &rids {
        h.peers.hold(r);
    }
    let w = h.worker(&[("REDELIVERY_BACKOFF_BASE_SECS", "1")]).await;
    h.queue.send("{poison").await;
    support::eventually("the DLQ send hangs", || h.sqs.sim().stats().faulted >= 1).await;

    for (i, r) in rids.iter().enumerate() {
        h.queue.send(&bodies::expired(&format!("env-{i}"), r)).await;
    }
    // Within the first DLQ attempt's hang: the old acker deleted nothing for 30 s and more.
    let t = Instant::now();
    support::eventually("every valid event deleted", || {
        h.sqs.sim().stats().messages_deleted == rids.len() as u64
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "deletes waited for the DLQ: {:?}",
        t.elapsed()
    );
    // Each valid event done once, and delivered again only after a delivery that handed it
    // back on purpose (a peer slower than its deadline on a loaded machine): never because a
    // finished message was not deleted.
    let finished = w.logs_with_message("message finished");
    for i in 0..rids.len() {
        let env = format!("env-{i}");
        let done = finished
            .iter()
            .filter(|l| l["envelope_id"] == env.as_str() && l["outcome"] == "success")
            .count();
        assert_eq!(done, 1, "{env} finished {done} times: {finished:?}");
    }
    let handed_back = finished
        .iter()
        .filter(|l| l["outcome"] == "retry_later" || l["outcome"] == "released")
        .count() as u64;
    let stats = h.sqs.sim().stats();
    assert_eq!(
        stats.messages_received,
        rids.len() as u64 + 1 + handed_back,
        "no finished event was delivered again: {stats:?}"
    );

    // Once the DLQ answers, the poison gets there with its reason, and health is ok.
    h.sqs.sim().clear_faults();
    let letters = h.dlq.receive_n(1).await;
    assert_eq!(
        letters[0].attributes.get("ReasonClass").map(String::as_str),
        Some("malformed_json")
    );
    let (code, body) = w.get("/health").await.expect("health");
    assert_eq!(code, 200, "{body}");
}

/// Found by attacking the promise: a legal 262,104-byte malformed body plus the reason
/// attributes was too large for SQS, every DLQ send failed (and was retried, though SQS blamed
/// the request), and the message reached the DLQ only through the RedrivePolicy, without its
/// reason.
#[tokio::test]
async fn a_dead_letter_near_the_size_limit_fits_and_keeps_its_reason() {
    let h = Harness::start().await;
    let body = format!("{{{}", "x".repeat(262_103));
    assert_eq!(body.len(), 262_104);
    let _w = h.worker(&[]).await;
    h.queue.send(&body).await;
    let letters = h.dlq.receive_n(1).await;
    let letter = &letters[0];
    assert_eq!(letter.body, body, "the body is never cut");
    assert_eq!(
        letter.attributes.get("ReasonClass").map(String::as_str),
        Some("malformed_json"),
        "{:?}",
        letter.attributes
    );
    assert_eq!(letter.receive_count, 1);
    h.queue.wait_empty().await;
    let stats = h.sqs.sim().stats();
    assert_eq!(
        stats.send_message, 2,
        "the test's send and one DLQ send, none refused: {stats:?}"
    );
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert_eq!(
        stats.messages_received, 2,
        "dead-lettered on its first delivery (the other receive is this test's, of the copy)"
    );
}

/// Found by attacking the promise: with SQS hanging, the final flush took 92 s against a 5 s
/// SHUTDOWN_TIMEOUT_SECS, so Kubernetes would SIGKILL the pod mid-flush. The whole drain must
/// end within the timeout plus the documented 5 s margin.
#[tokio::test]
async fn shutdown_ends_on_time_when_sqs_never_answers() {
    let h = Harness::start().await;
    for r in ["r-1", "r-2", "r-3"] {
        h.peers.hold(r);
    }
    let mut w = h.worker(&[("SHUTDOWN_TIMEOUT_SECS", "2")]).await;
    for op in [
        SqsOperation::DeleteMessageBatch,
        SqsOperation::ChangeMessageVisibilityBatch,
        SqsOperation::ChangeMessageVisibility,
    ] {
        h.sqs
            .sim()
            .inject(op, None, SqsFault::Delay(Duration::from_secs(300)), None);
    }
    for (i, r) in ["r-1", "r-2", "r-3"].iter().enumerate() {
        h.queue.send(&bodies::expired(&format!("env-{i}"), r)).await;
    }
    support::eventually("all three applied", || h.peers.total_calls() == 6).await;
    support::eventually("their deletes hang", || h.sqs.sim().stats().faulted >= 1).await;

    let t = Instant::now();
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(20)).await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2 + 5 + 1),
        "shutdown took {took:?} (SHUTDOWN_TIMEOUT_SECS 2 + 5 s margin)"
    );
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        !w.logs_with_message("stopped").is_empty(),
        "the orderly path finished, not the watchdog"
    );
}

/// Found by attacking the promise: SIGHUP (a closed terminal, a supervisor's reload) killed
/// the worker without draining. It now drains like SIGTERM.
#[tokio::test]
async fn sighup_drains_like_sigterm() {
    let h = Harness::start().await;
    h.peers.hold("r-hup");
    h.peers.inventory.set_latency(Duration::from_millis(1500));
    let mut w = h.worker(&[("SHUTDOWN_TIMEOUT_SECS", "10")]).await;
    h.queue.send(&bodies::expired("env-hup", "r-hup")).await;
    support::eventually("in flight", || !h.peers.inventory.calls().is_empty()).await;
    w.signal("HUP");
    let status = w.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(
        h.peers
            .reservations
            .get("r-hup")
            .map(|r| r.status)
            .as_deref(),
        Some("EXPIRED"),
        "the message in flight was finished"
    );
    h.queue.wait_empty().await;
}
