//! The receive loop against the in-memory queue, on a paused clock: it asks for no more than
//! the free slots (backpressure), backs off after failed receives and recovers, and drops its
//! long poll at once on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{settings, unreachable_peers};
use crate::health::WorkerStatus;
use crate::pipeline::Pool;
use crate::pipeline::acker::Settle;
use crate::pipeline::poller::Poller;
use crate::sqs::memory::MemoryQueue;
use crate::sqs::{QueueErrorKind, SqsOperation};

/// A poller on `queue` with a pool of `concurrency` slots whose dispositions go to the
/// returned receiver. Bodies that do not parse are dead-lettered without calling a peer.
fn poller(queue: &Arc<MemoryQueue>, concurrency: usize) -> (Poller, mpsc::Receiver<Settle>) {
    let mut s = settings(false);
    s.pool.concurrency = concurrency;
    let (acks, rx) = mpsc::channel(100);
    let status = Arc::new(WorkerStatus::default());
    let pool = Pool::new(
        s.pool,
        queue.clone(),
        unreachable_peers(),
        acks,
        status.clone(),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    let poller = Poller {
        queue: queue.clone(),
        pool,
        wait: Duration::from_secs(20),
        visibility: Duration::from_secs(30),
        status,
        batch: 10,
    };
    (poller, rx)
}

#[tokio::test(start_paused = true)]
async fn a_receive_asks_for_no_more_than_the_free_slots() {
    let queue = Arc::new(MemoryQueue::new("memory://events"));
    for _ in 0..20 {
        queue.push("{not json", None);
    }
    let (poller, mut rx) = poller(&queue, 4);
    let mut held = poller.pool.reserve(4).await;
    assert_eq!(held.len(), 4);
    let stop = CancellationToken::new();
    let polling = tokio::spawn(poller.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        queue.calls_of(SqsOperation::ReceiveMessage).is_empty(),
        "no slot, no receive: a received message never waits invisible for one"
    );
    held.truncate(3);
    let first = rx.recv().await.expect("one message settled");
    assert_eq!(first.delivery.body, "{not json");
    let receives = queue.calls_of(SqsOperation::ReceiveMessage);
    assert_eq!(
        receives[0].entries, 1,
        "one slot free, one message asked for"
    );
    assert_eq!(
        queue.visible(),
        19,
        "the rest stays on the queue for other pods"
    );
    stop.cancel();
    polling.await.expect("loop ends");
}

#[tokio::test(start_paused = true)]
async fn failed_receives_back_off_doubling_and_the_loop_recovers() {
    let queue = Arc::new(MemoryQueue::new("memory://events"));
    queue.fail(
        SqsOperation::ReceiveMessage,
        &[
            QueueErrorKind::Transient,
            QueueErrorKind::Throttled,
            QueueErrorKind::AccessDenied,
        ],
    );
    queue.push("{not json", None);
    let (poller, mut rx) = poller(&queue, 4);
    let stop = CancellationToken::new();
    let polling = tokio::spawn(poller.run(stop.clone()));
    rx.recv().await.expect("received once SQS answers");
    let at: Vec<Instant> = queue
        .calls_of(SqsOperation::ReceiveMessage)
        .iter()
        .map(|c| c.at)
        .collect();
    assert_eq!(at.len(), 4, "three failures, then the message");
    for (i, base_ms) in [500u64, 1000, 2000].into_iter().enumerate() {
        let gap = at[i + 1] - at[i];
        let (least, most) = (
            Duration::from_millis(base_ms),
            Duration::from_millis(base_ms * 5 / 4),
        );
        assert!(
            gap >= least && gap <= most,
            "wait {i}: {gap:?} not in {least:?}..={most:?}"
        );
    }
    stop.cancel();
    polling.await.expect("loop ends");
}

#[tokio::test(start_paused = true)]
async fn shutdown_drops_the_long_poll_at_once() {
    let queue = Arc::new(MemoryQueue::new("memory://events"));
    let (poller, _rx) = poller(&queue, 4);
    let stop = CancellationToken::new();
    let start = Instant::now();
    let polling = tokio::spawn(poller.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(queue.calls_of(SqsOperation::ReceiveMessage).len(), 1);
    stop.cancel();
    polling.await.expect("loop ends");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "not the 20 s long poll"
    );
}
