//! A call slower than the visibility timeout does not let SQS hand the message to anyone else:
//! the heartbeat keeps extending it.

use crate::support;

use std::time::Duration;

use reservation_sim::{GrpcFault, InventoryMethod};
use support::{Harness, bodies};

#[tokio::test]
async fn a_slow_call_keeps_its_message_invisible() {
    let h = Harness::start().await;
    h.peers.hold("r-slow");
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_secs(7)),
    );
    let w = support::InProcess::start(
        &h,
        &[
            ("SQS_VISIBILITY_TIMEOUT", "2"),
            ("INVENTORY_TIMEOUT_MS", "15000"),
            ("SQS_WAIT_TIME", "1"),
        ],
    )
    .await;
    h.queue.send(&bodies::expired("env-slow", "r-slow")).await;
    support::eventually("expired", || {
        h.peers
            .reservations
            .get("r-slow")
            .is_some_and(|r| r.status == "EXPIRED")
    })
    .await;
    h.wait_queue_empty().await;
    assert_eq!(
        h.peers.inventory.calls_for("r-slow").len(),
        1,
        "no second delivery"
    );
    assert_eq!(h.peers.reservations.calls_for("r-slow").len(), 1);
    w.wait_logs("message finished").await;
    let extended = w.logs_with_message("visibility extended").len();
    assert!(
        extended >= 3,
        "7 s at a 2 s visibility needs several extensions, saw {extended}"
    );
    assert_eq!(w.logs_with_message("message finished").len(), 1);
}
