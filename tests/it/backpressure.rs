//! A full pool receives nothing: in-flight messages never exceed WORKER_CONCURRENCY, the rest
//! stay visible on the queue for other consumers. Nothing is dropped.

use crate::support;

use std::time::Duration;

use support::Harness;

#[tokio::test]
async fn a_full_pool_leaves_the_rest_on_the_queue() {
    let h = Harness::start().await;
    let rids = h.send_slow_events(8, Duration::from_millis(1500)).await;
    let w =
        support::InProcess::start(&h, &[("WORKER_CONCURRENCY", "2"), ("SQS_WAIT_TIME", "1")]).await;
    support::eventually("pool busy", || h.peers.inventory.calls().len() >= 2).await;
    // While the two slots are busy, the queue holds exactly two messages in flight.
    let mut max_in_flight = 0;
    for _ in 0..10 {
        let (visible, in_flight) = h.queue.depth().await;
        max_in_flight = max_in_flight.max(in_flight);
        assert!(visible + in_flight > 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        max_in_flight <= 2,
        "at most WORKER_CONCURRENCY messages held, saw {max_in_flight}"
    );
    h.wait_queue_empty().await;
    support::eventually("all processed", || {
        rids.iter().all(|r| {
            h.peers
                .reservations
                .get(r)
                .is_some_and(|x| x.status == "EXPIRED")
        })
    })
    .await;
    assert_eq!(
        h.peers.inventory.calls().len(),
        8,
        "each processed once, none dropped"
    );
    w.stop().await;
}
