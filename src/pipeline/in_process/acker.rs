//! The acker against the in-memory queue, on a paused clock: batching, per-entry failures,
//! retries of failed writes, dead letters, and the flush when its senders are gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::labels::{AppliedSteps, DeadLetterReason, StepName};
use crate::pipeline::RecentlyCompleted;
use crate::pipeline::acker::{Acker, Settle};
use crate::pipeline::disposition::{Deleted, Disposition};
use crate::sqs::memory::MemoryQueue;
use crate::sqs::{Delivery, Queue, QueueErrorKind, SqsOperation};

/// A source queue holding `n` received messages, a DLQ, and an acker running on them.
struct Setup {
    queue: Arc<MemoryQueue>,
    dlq: Arc<MemoryQueue>,
    deliveries: Vec<Delivery>,
    tx: mpsc::Sender<Settle>,
    acker: JoinHandle<()>,
}

async fn setup(n: usize) -> Setup {
    let queue = Arc::new(MemoryQueue::new("memory://events"));
    let dlq = Arc::new(MemoryQueue::new("memory://events-dlq"));
    for i in 0..n {
        queue.push(&format!("body {i}"), None);
    }
    let mut deliveries = Vec::new();
    while deliveries.len() < n {
        let got = queue
            .receive(10, Duration::ZERO, Duration::from_secs(30))
            .await
            .expect("receive");
        deliveries.extend(got);
    }
    let acker = Acker::new(
        queue.clone(),
        Some(dlq.clone()),
        Duration::from_secs(1),
        RecentlyCompleted::new(100, Duration::from_secs(60)),
    )
    .with_pod_name(Some("pod-a"));
    let (tx, rx) = mpsc::channel(64);
    let acker = tokio::spawn(acker.run(rx));
    Setup {
        queue,
        dlq,
        deliveries,
        tx,
        acker,
    }
}

impl Setup {
    async fn settle(&self, i: usize, disposition: Disposition) {
        self.tx
            .send(Settle {
                delivery: self.deliveries[i].clone(),
                disposition,
                span: tracing::Span::none(),
                slot: None,
                envelope_id: None,
                event_type: None,
            })
            .await
            .expect("acker running");
    }

    /// Drops the sender, so the acker flushes and ends, and waits for that.
    async fn finish(self) -> (Arc<MemoryQueue>, Arc<MemoryQueue>) {
        drop(self.tx);
        self.acker.await.expect("acker ends");
        (self.queue, self.dlq)
    }
}

fn entries(calls: &[crate::sqs::memory::Call]) -> Vec<usize> {
    calls.iter().map(|c| c.entries).collect()
}

const DELETE: Disposition = Disposition::Delete(Deleted::Applied);

#[tokio::test(start_paused = true)]
async fn deletes_go_out_ten_per_call() {
    let s = setup(25).await;
    for i in 0..25 {
        s.settle(i, DELETE).await;
    }
    let (queue, _) = s.finish().await;
    assert_eq!(
        entries(&queue.calls_of(SqsOperation::DeleteMessageBatch)),
        [10, 10, 5]
    );
    assert_eq!(queue.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lone_delete_waits_ten_milliseconds_for_company_and_no_longer() {
    let s = setup(3).await;
    let at = Instant::now();
    s.settle(0, DELETE).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.settle(1, DELETE).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let calls = s.queue.calls_of(SqsOperation::DeleteMessageBatch);
    assert_eq!(entries(&calls), [2], "the second joined the first's batch");
    assert_eq!(calls[0].at - at, Duration::from_millis(10));
    let (queue, _) = s.finish().await;
    assert_eq!(queue.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn entries_sqs_refused_on_its_side_are_sent_again_alone() {
    let s = setup(5).await;
    s.queue.refuse_entries(SqsOperation::DeleteMessageBatch, 2);
    for i in 0..5 {
        s.settle(i, DELETE).await;
    }
    let (queue, _) = s.finish().await;
    let calls = queue.calls_of(SqsOperation::DeleteMessageBatch);
    assert_eq!(entries(&calls), [5, 2]);
    assert_eq!(calls[1].at - calls[0].at, Duration::from_millis(100));
    assert_eq!(queue.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_entry_refused_as_the_senders_fault_is_not_sent_again() {
    let s = setup(2).await;
    // The message was received again: the first receipt is stale.
    s.queue
        .change_visibility_batch(&[(&s.deliveries[0].receipt_handle, Duration::ZERO)])
        .await
        .expect("release");
    let again = s
        .queue
        .receive(1, Duration::ZERO, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(again.len(), 1);
    s.settle(0, DELETE).await;
    s.settle(1, DELETE).await;
    let (queue, _) = s.finish().await;
    assert_eq!(
        entries(&queue.calls_of(SqsOperation::DeleteMessageBatch)),
        [2],
        "a stale receipt cannot become valid"
    );
    assert_eq!(queue.len(), 1, "the redelivered copy is still there");
}

#[tokio::test(start_paused = true)]
async fn a_failed_delete_call_is_retried_and_a_refused_one_is_not() {
    let s = setup(1).await;
    s.queue.fail(
        SqsOperation::DeleteMessageBatch,
        &[QueueErrorKind::Transient, QueueErrorKind::Throttled],
    );
    s.settle(0, DELETE).await;
    let (queue, _) = s.finish().await;
    let calls = queue.calls_of(SqsOperation::DeleteMessageBatch);
    assert_eq!(calls.len(), 3, "two failures, then success");
    assert_eq!(calls[1].at - calls[0].at, Duration::from_millis(100));
    assert_eq!(calls[2].at - calls[1].at, Duration::from_millis(200));
    assert_eq!(queue.len(), 0);

    let s = setup(1).await;
    s.queue.fail(
        SqsOperation::DeleteMessageBatch,
        &[QueueErrorKind::AccessDenied],
    );
    s.settle(0, DELETE).await;
    let (queue, _) = s.finish().await;
    assert_eq!(queue.calls_of(SqsOperation::DeleteMessageBatch).len(), 1);
    assert_eq!(queue.len(), 1, "kept: it reappears and is recognised then");
}

#[tokio::test(start_paused = true)]
async fn retries_and_releases_change_visibility_in_batches() {
    let s = setup(3).await;
    let at = Instant::now();
    s.settle(
        0,
        Disposition::RetryLater {
            after: Duration::from_secs(40),
            error: "status_update: 503".into(),
        },
    )
    .await;
    s.settle(1, Disposition::Release).await;
    s.settle(2, Disposition::Release).await;
    let (queue, _) = s.finish().await;
    assert_eq!(
        entries(&queue.calls_of(SqsOperation::ChangeMessageVisibilityBatch)),
        [3]
    );
    let hidden = queue.visible_at("m-1").expect("kept");
    assert!(
        hidden >= at + Duration::from_secs(40),
        "hidden for the retry delay"
    );
    assert_eq!(queue.visible(), 2, "released at once");
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_reaches_the_dlq_with_its_reason_before_it_leaves_the_queue() {
    let s = setup(1).await;
    s.settle(
        0,
        Disposition::DeadLetter {
            class: DeadLetterReason::DownstreamRejected,
            error: "CommitReservation: COMMIT_STATUS_FAILED_EXPIRED".into(),
            applied: AppliedSteps::new([StepName::StatusUpdate]),
        },
    )
    .await;
    let (queue, dlq) = s.finish().await;
    let copies = dlq.messages();
    assert_eq!(copies.len(), 1);
    let a = &copies[0].attributes;
    assert_eq!(copies[0].body, "body 0");
    assert_eq!(
        a.get("ReasonClass").map(String::as_str),
        Some("downstream_rejected")
    );
    assert_eq!(
        a.get("AppliedSteps").map(String::as_str),
        Some("status_update")
    );
    assert_eq!(
        a.get("ErrorMessage").map(String::as_str),
        Some("CommitReservation: COMMIT_STATUS_FAILED_EXPIRED")
    );
    assert_eq!(
        a.get("SourceQueue").map(String::as_str),
        Some("memory://events")
    );
    assert_eq!(a.get("DeadLetteredBy").map(String::as_str), Some("pod-a"));
    assert_eq!(a.get("OriginalMessageId").map(String::as_str), Some("m-1"));
    assert_eq!(queue.len(), 0, "deleted once the DLQ has it");
    let order: Vec<SqsOperation> = queue
        .calls()
        .into_iter()
        .map(|c| c.operation)
        .filter(|o| *o != SqsOperation::ReceiveMessage)
        .collect();
    assert_eq!(order, [SqsOperation::DeleteMessageBatch]);
    assert!(dlq.calls()[0].at <= queue.calls_of(SqsOperation::DeleteMessageBatch)[0].at);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_the_dlq_will_not_take_is_kept_for_a_later_attempt() {
    let s = setup(1).await;
    s.dlq
        .fail(SqsOperation::SendMessage, &[QueueErrorKind::Transient; 3]);
    let at = Instant::now();
    s.settle(
        0,
        Disposition::DeadLetter {
            class: DeadLetterReason::MalformedJson,
            error: "malformed JSON".into(),
            applied: AppliedSteps::default(),
        },
    )
    .await;
    let (queue, dlq) = s.finish().await;
    assert_eq!(dlq.calls_of(SqsOperation::SendMessage).len(), 3);
    assert_eq!(dlq.len(), 0);
    assert_eq!(queue.len(), 1, "never deleted without its copy");
    let hidden = queue.visible_at("m-1").expect("kept");
    assert!(
        hidden >= at + Duration::from_secs(1),
        "hidden for the retry delay"
    );
    assert!(queue.calls_of(SqsOperation::DeleteMessageBatch).is_empty());
}

#[tokio::test(start_paused = true)]
async fn what_was_decided_is_written_when_the_senders_are_gone() {
    let s = setup(12).await;
    for i in 0..6 {
        s.settle(i, DELETE).await;
    }
    for i in 6..12 {
        s.settle(i, Disposition::Release).await;
    }
    // Closed at once: nothing waits for the flush interval, and nothing is left behind.
    let (queue, _) = s.finish().await;
    assert_eq!(queue.len(), 6);
    assert_eq!(queue.visible(), 6);
}

#[tokio::test(start_paused = true)]
#[expect(
    clippy::await_holding_lock,
    reason = "the lock only keeps other tests off the process's kept-back lines meanwhile"
)]
async fn a_delete_waits_for_the_log_lines_kept_back_to_be_written() {
    use crate::telemetry::logging::{keep_back, one_test_at_a_time, pending_lines};
    let _one_at_a_time = one_test_at_a_time();
    keep_back("{\"msg\":\"acker test: kept back\"}\n");
    assert!(pending_lines().contains("acker test: kept back"));
    let s = setup(1).await;
    s.settle(0, Disposition::Delete(Deleted::Applied)).await;
    let (queue, _) = s.finish().await;
    assert_eq!(queue.calls_of(SqsOperation::DeleteMessageBatch).len(), 1);
    assert!(
        !pending_lines().contains("acker test: kept back"),
        "the line kept back is written before a delete is sent"
    );
}
