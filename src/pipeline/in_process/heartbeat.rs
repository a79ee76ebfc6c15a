//! Visibility renewal on a paused clock: while a message is worked on, its visibility is
//! renewed every half timeout, counted from its receive; a failed renewal does not stop the
//! next one; renewal stops with the work.

use std::time::Duration;

use tokio::time::Instant;

use crate::pipeline::pool::with_heartbeat;
use crate::sqs::memory::MemoryQueue;
use crate::sqs::{Queue, QueueErrorKind, SqsOperation};

const VISIBILITY: Duration = Duration::from_secs(30);

async fn received(queue: &MemoryQueue) -> crate::sqs::Delivery {
    queue.push("{}", None);
    let mut got = queue
        .receive(1, Duration::ZERO, VISIBILITY)
        .await
        .expect("receive");
    got.pop().expect("one message")
}

#[tokio::test(start_paused = true)]
async fn a_long_task_keeps_its_message_hidden_with_a_renewal_every_half_timeout() {
    let queue = MemoryQueue::new("memory://events");
    let d = received(&queue).await;
    let start = Instant::now();
    let out = with_heartbeat(&queue, VISIBILITY, &d, async {
        tokio::time::sleep(Duration::from_secs(100)).await;
        "done"
    })
    .await;
    assert_eq!(out, "done");
    let renewals = queue.calls_of(SqsOperation::ChangeMessageVisibility);
    let offsets: Vec<u64> = renewals.iter().map(|c| (c.at - start).as_secs()).collect();
    assert_eq!(offsets, [15, 30, 45, 60, 75, 90]);
    // Never visible while the work ran: each renewal came before the last one ran out.
    let hidden_until = queue.visible_at("m-1").expect("still there");
    assert_eq!((hidden_until - start).as_secs(), 90 + VISIBILITY.as_secs());

    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        queue.calls_of(SqsOperation::ChangeMessageVisibility).len(),
        6,
        "renewal ends with the work"
    );
}

#[tokio::test(start_paused = true)]
async fn a_quick_task_renews_nothing() {
    let queue = MemoryQueue::new("memory://events");
    let d = received(&queue).await;
    with_heartbeat(
        &queue,
        VISIBILITY,
        &d,
        tokio::time::sleep(Duration::from_secs(14)),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        queue
            .calls_of(SqsOperation::ChangeMessageVisibility)
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_is_followed_by_the_next_on_time() {
    let queue = MemoryQueue::new("memory://events");
    let d = received(&queue).await;
    queue.fail(
        SqsOperation::ChangeMessageVisibility,
        &[QueueErrorKind::Throttled],
    );
    let start = Instant::now();
    with_heartbeat(
        &queue,
        VISIBILITY,
        &d,
        tokio::time::sleep(Duration::from_secs(40)),
    )
    .await;
    let offsets: Vec<u64> = queue
        .calls_of(SqsOperation::ChangeMessageVisibility)
        .iter()
        .map(|c| (c.at - start).as_secs())
        .collect();
    assert_eq!(offsets, [15, 30]);
    assert_eq!(
        (queue.visible_at("m-1").expect("there") - start).as_secs(),
        30 + VISIBILITY.as_secs(),
        "the second renewal worked"
    );
}
