//! A redelivered envelope (same id) is deleted without calling downstream again.

use crate::support;

use support::{Harness, bodies};

#[tokio::test]
async fn the_same_envelope_twice_calls_downstream_once() {
    let h = Harness::start().await;
    h.peers.hold("r1");
    let w = support::InProcess::start(&h, &[]).await;
    let body = bodies::approved("env-dup", "r1");
    h.queue.send(&body).await;
    h.queue.send(&body).await;
    h.wait_queue_empty().await;
    support::eventually("both finished", || {
        w.logs_with_message("message finished").len() == 2
    })
    .await;
    assert_eq!(h.peers.reservations.calls_for("r1").len(), 1);
    assert_eq!(h.peers.inventory.calls_for("r1").len(), 1);
    let outcomes: Vec<String> = w
        .logs_with_message("message finished")
        .iter()
        .map(|l| l["outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        outcomes.contains(&"success".to_string()) && outcomes.contains(&"duplicate".to_string()),
        "{outcomes:?}"
    );

    // Later, again: still remembered.
    h.queue.send(&body).await;
    h.wait_queue_empty().await;
    support::eventually("third finished", || {
        w.logs_with_message("message finished").len() == 3
    })
    .await;
    assert_eq!(h.peers.total_calls(), 2);
}
