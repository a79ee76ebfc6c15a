//! Several receive loops (`SQS_RECEIVE_LOOPS`): each takes its share of the slots before it
//! receives and asks for no more, so together they never hold more than WORKER_CONCURRENCY
//! messages, and every message is still processed once.

use crate::support;

use std::time::Duration;

use support::Harness;

#[tokio::test]
async fn receive_loops_share_the_slots_and_never_hold_more_than_the_concurrency() {
    let h = Harness::start().await;
    h.send_slow_events(12, Duration::from_millis(1500)).await;
    let w = h
        .worker(&[
            ("WORKER_CONCURRENCY", "4"),
            ("SQS_RECEIVE_LOOPS", "2"),
            ("SQS_WAIT_TIME", "1"),
        ])
        .await;

    let started = w.wait_logs("worker started").await;
    assert_eq!(started[0]["receive_loops"], 2, "{started:?}");
    support::eventually("both receive loops started", || {
        w.logs_with_message("receive loop started").len() == 2
    })
    .await;
    let loops = w.logs_with_message("receive loop started");
    let mut indexes: Vec<u64> = loops
        .iter()
        .map(|l| l["receive_loop"].as_u64().expect("index"))
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1]);
    assert!(loops.iter().all(|l| l["batch"] == 2), "{loops:?}");

    // The slots fill up (4 calls in progress at once), yet never more are held.
    support::eventually("pool full", || h.peers.inventory.calls().len() >= 4).await;
    // Measured by the worker itself: the queue's NotVisible count also includes messages that
    // finished but whose delete is still on its way, which says nothing about the slots.
    let mut max_active = 0;
    for _ in 0..20 {
        let (_, metrics) = w.get("/metrics").await.expect("/metrics");
        let active = metrics
            .lines()
            .find_map(|l| l.strip_prefix("worker_active_count "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("worker_active_count");
        max_active = max_active.max(active as u64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        max_active, 4,
        "the slots fill up, and never more than WORKER_CONCURRENCY messages are worked on"
    );

    h.wait_queue_empty().await;
    assert_eq!(
        h.peers.inventory.calls().len(),
        12,
        "each processed once, none dropped"
    );
    // Each receive asked for at most its loop's share of the slots.
    let received = w.logs_with_message("received");
    assert!(!received.is_empty());
    for r in &received {
        let (count, asked) = (r["count"].as_u64(), r["asked"].as_u64());
        assert!(
            matches!((count, asked), (Some(c), Some(a)) if c <= a && a <= 2),
            "{r}"
        );
    }
}
