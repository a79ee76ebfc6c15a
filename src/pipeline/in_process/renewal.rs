//! Visibility renewal on a paused clock: while a message is worked on, its visibility is
//! renewed every half timeout, counted from its receive; messages due close together share a
//! `ChangeMessageVisibilityBatch` of up to ten; a failed renewal is tried again soon, a refused
//! receipt never; renewal stops with the work, but not in the middle of a call.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Span;

use crate::health::{Liveness, WorkerStatus};
use crate::pipeline::renewal::Renewals;
use crate::sqs::memory::MemoryQueue;
use crate::sqs::{Delivery, Queue, QueueErrorKind, SqsOperation};

const VISIBILITY: Duration = Duration::from_secs(30);
const RENEW: SqsOperation = SqsOperation::ChangeMessageVisibilityBatch;

fn setup() -> (Arc<MemoryQueue>, Renewals) {
    let queue = Arc::new(MemoryQueue::new("memory://events"));
    let renewals = Renewals::start(queue.clone(), VISIBILITY, Arc::default());
    (queue, renewals)
}

async fn received(queue: &MemoryQueue, n: usize) -> Vec<Delivery> {
    for _ in 0..n {
        queue.push("{}", None);
    }
    let mut got = Vec::new();
    while got.len() < n {
        got.extend(
            queue
                .receive(10, Duration::ZERO, VISIBILITY)
                .await
                .expect("receive"),
        );
    }
    got
}

/// Works on `d` for `secs`, kept hidden by `renewals`.
async fn work(renewals: &Renewals, d: &Delivery, secs: f64) {
    renewals
        .hidden_while(
            d,
            &Span::none(),
            tokio::time::sleep(Duration::from_secs_f64(secs)),
        )
        .await;
}

/// The renewal calls so far: when (ms after `start`) and how many messages each carried.
fn renewals_since(queue: &MemoryQueue, start: Instant) -> Vec<(u128, usize)> {
    let mut calls: Vec<_> = queue
        .calls_of(RENEW)
        .iter()
        .map(|c| ((c.at - start).as_millis(), c.entries))
        .collect();
    calls.sort_unstable();
    calls
}

#[tokio::test(start_paused = true)]
async fn a_long_task_keeps_its_message_hidden_with_a_renewal_every_half_timeout() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    let d = received(&queue, 1).await.remove(0);
    work(&renewals, &d, 100.0).await;
    let at: Vec<u128> = renewals_since(&queue, start)
        .iter()
        .map(|(ms, n)| {
            assert_eq!(*n, 1);
            ms / 1000
        })
        .collect();
    assert_eq!(at, [15, 30, 45, 60, 75, 90]);
    // Never visible while the work ran: each renewal came before the last one ran out.
    let hidden_until = queue.visible_at("m-1").expect("still there");
    assert_eq!((hidden_until - start).as_secs(), 90 + VISIBILITY.as_secs());

    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(queue.calls_of(RENEW).len(), 6, "renewal ends with the work");
}

#[tokio::test(start_paused = true)]
async fn a_quick_task_renews_nothing() {
    let (queue, renewals) = setup();
    let d = received(&queue, 1).await.remove(0);
    work(&renewals, &d, 14.0).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(queue.calls_of(RENEW).is_empty());
}

#[tokio::test(start_paused = true)]
async fn many_slow_messages_are_renewed_ten_to_a_call() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    let batch = received(&queue, 25).await;
    futures::future::join_all(batch.iter().map(|d| work(&renewals, d, 20.0))).await;
    assert_eq!(
        renewals_since(&queue, start),
        [(15_000, 5), (15_000, 10), (15_000, 10)],
        "25 messages due at once: three calls, not 25"
    );
    for d in &batch {
        let hidden_until = queue.visible_at(&d.message_id).expect("there");
        assert_eq!((hidden_until - start).as_secs(), 45, "{}", d.message_id);
    }
}

#[tokio::test(start_paused = true)]
async fn messages_due_close_together_share_a_call_and_stay_in_step() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    // A at 0 s and B at 1 s are due within a tenth of a period (1.5 s) of each other: B is
    // renewed early, with A. C, at 5 s, is not.
    let a = async {
        let d = received(&queue, 1).await.remove(0);
        work(&renewals, &d, 40.0).await;
    };
    let b = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let d = received(&queue, 1).await.remove(0);
        work(&renewals, &d, 40.0).await;
    };
    let c = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let d = received(&queue, 1).await.remove(0);
        work(&renewals, &d, 40.0).await;
    };
    tokio::join!(a, b, c);
    assert_eq!(
        renewals_since(&queue, start),
        [(15_000, 2), (20_000, 1), (30_000, 2), (35_000, 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_is_tried_again_after_a_quarter_period() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    let d = received(&queue, 1).await.remove(0);
    queue.fail(RENEW, &[QueueErrorKind::Throttled]);
    work(&renewals, &d, 40.0).await;
    assert_eq!(
        renewals_since(&queue, start),
        [(15_000, 1), (18_750, 1), (33_750, 1)],
        "the retry comes 3.75 s after the failure, the next renewal a period after the retry"
    );
    assert_eq!(
        queue.visible_at("m-1").expect("there") - start,
        Duration::from_millis(33_750) + VISIBILITY,
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_entry_is_tried_again_soon_and_the_others_wait_a_period() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    let batch = received(&queue, 2).await;
    queue.refuse_entries(RENEW, 1);
    futures::future::join_all(batch.iter().map(|d| work(&renewals, d, 25.0))).await;
    assert_eq!(renewals_since(&queue, start), [(15_000, 2), (18_750, 1)]);
    // The refused one was the one tried again: one is hidden from 15 s, the other from 18.75 s.
    let mut hidden_until: Vec<u128> = batch
        .iter()
        .map(|d| (queue.visible_at(&d.message_id).expect("there") - start).as_millis())
        .collect();
    hidden_until.sort_unstable();
    assert_eq!(hidden_until, [45_000, 48_750]);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_takes_long_to_fail_is_retried_before_the_last_renewal_runs_out() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    let d = received(&queue, 1).await.remove(0);
    // Answered after 14 s, with a failure: a quarter period later would be 32.75 s, after the
    // receive's visibility ran out at 30 s.
    queue.delay(RENEW, Duration::from_secs(14));
    queue.fail(RENEW, &[QueueErrorKind::Transient]);
    work(&renewals, &d, 31.0).await;
    assert_eq!(renewals_since(&queue, start), [(15_000, 1), (30_000, 1)]);
}

#[tokio::test(start_paused = true)]
async fn the_renewal_task_stops_when_the_renewals_are_dropped_and_health_stays_good() {
    let queue = Arc::new(MemoryQueue::new("memory://events"));
    let status = Arc::new(WorkerStatus::default());
    let renewals = Renewals::start(queue.clone(), VISIBILITY, status.clone());
    assert_eq!(Arc::strong_count(&queue), 2, "the task holds the queue");
    drop(renewals);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(Arc::strong_count(&queue), 1, "and lets go of it");
    assert!(
        !matches!(status.liveness(), Liveness::Stopped { .. }),
        "a stop asked for is not a failure: {:?}",
        status.liveness()
    );
}

#[tokio::test(start_paused = true)]
async fn a_message_whose_receipt_is_no_longer_current_is_not_renewed_again() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    let batch = received(&queue, 2).await;
    // The first message was released and received again: its first receipt is stale.
    queue
        .change_visibility_batch(&[(&batch[0].receipt_handle, Duration::ZERO)])
        .await
        .expect("release");
    let again = queue
        .receive(1, Duration::ZERO, VISIBILITY)
        .await
        .expect("receive");
    assert_eq!(again[0].message_id, batch[0].message_id);
    futures::future::join_all(batch.iter().map(|d| work(&renewals, d, 40.0))).await;
    // The test's own release, at 0 s, left out.
    let renewals: Vec<_> = renewals_since(&queue, start)
        .into_iter()
        .filter(|(ms, _)| *ms > 0)
        .collect();
    assert_eq!(
        renewals,
        [(15_000, 2), (30_000, 1)],
        "the refused receipt is left out from then on"
    );
}

#[tokio::test(start_paused = true)]
async fn work_ending_during_a_renewal_waits_for_its_answer() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    let d = received(&queue, 1).await.remove(0);
    queue.delay(RENEW, Duration::from_secs(2));
    // The renewal goes out at 15 s and is answered at 17 s; the work ends at 16 s. Returning
    // then would let the disposition's write reach SQS before the renewal and be undone by it.
    work(&renewals, &d, 16.0).await;
    assert_eq!(start.elapsed(), Duration::from_secs(17));
    assert_eq!(renewals_since(&queue, start), [(15_000, 1)]);
}

#[tokio::test(start_paused = true)]
async fn work_cut_short_during_a_renewal_stops_its_renewals() {
    let (queue, renewals) = setup();
    let start = Instant::now();
    let d = received(&queue, 1).await.remove(0);
    queue.delay(RENEW, Duration::from_secs(2));
    let cut = tokio::time::timeout(Duration::from_secs(16), work(&renewals, &d, 100.0)).await;
    assert!(cut.is_err());
    assert_eq!(start.elapsed(), Duration::from_secs(16), "not held up");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(renewals_since(&queue, start), [(15_000, 1)]);
}
