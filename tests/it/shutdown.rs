//! SIGTERM: stop receiving at once, let in-flight work finish within the timeout, release what
//! is unfinished so another consumer gets it immediately, exit 0. A second signal exits at once.

use crate::support;

use std::time::{Duration, Instant};

use reservation_sim::{GrpcFault, InventoryMethod};
use support::{Harness, bodies};

#[tokio::test]
async fn in_flight_work_finishes_and_unfinished_work_is_released() {
    let h = Harness::start().await;
    h.peers.hold("r-a");
    h.peers.hold("r-b");
    // Whichever call arrives first is quick enough to finish in the drain; the other is not.
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_millis(1500)),
    );
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_secs(60)),
    );
    let mut w = h
        .worker(&[
            ("SHUTDOWN_TIMEOUT_SECS", "4"),
            ("INVENTORY_TIMEOUT_MS", "120000"),
            ("SQS_WAIT_TIME", "20"),
        ])
        .await;
    h.queue.send(&bodies::expired("env-a", "r-a")).await;
    h.queue.send(&bodies::expired("env-b", "r-b")).await;
    support::eventually("both in flight", || h.peers.inventory.calls().len() == 2).await;
    let quick = h.peers.inventory.calls()[0].reservation_id.clone();
    let slow = h.peers.inventory.calls()[1].reservation_id.clone();

    let t = Instant::now();
    w.signal("TERM");
    // Not ready from the first moment of shutdown, while the drain is still going on.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (code, body) = w
            .get("/ready")
            .await
            .expect("the HTTP port stays up while draining");
        if code == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready after SIGTERM: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = w.wait_exit(Duration::from_secs(15)).await;
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "clean exit");
    assert!(
        took < Duration::from_secs(10),
        "drain bounded by SHUTDOWN_TIMEOUT_SECS, took {took:?}"
    );

    // The quick one finished both steps and was deleted.
    assert_eq!(
        h.peers.reservations.get(&quick).map(|r| r.status),
        Some("EXPIRED".into())
    );
    // The slow one was released: visible again at once, not after its 30 s visibility.
    assert_eq!(
        h.peers.reservations.get(&slow).map(|r| r.status),
        Some("HELD".into())
    );
    let (visible, in_flight) = h.queue.depth().await;
    assert_eq!(
        (visible, in_flight),
        (1, 0),
        "the unfinished message is back on the queue"
    );
    let again = h.queue.receive(30).await;
    assert_eq!(again.len(), 1);
    assert!(again[0].body.contains(&slow));
    assert!(
        w.logs_with_message("shutdown timeout reached: unfinished messages released")
            .len()
            == 1
    );
}

#[tokio::test]
async fn an_idle_worker_stops_without_waiting_out_the_long_poll() {
    let h = Harness::start().await;
    let mut w = h.worker(&[("SQS_WAIT_TIME", "20")]).await;
    // Let it settle into a long poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    w.signal("INT");
    let status = w.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exit took {:?}, the 20 s poll was waited out",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let h = Harness::start().await;
    h.peers.hold("r1");
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_secs(60)),
    );
    let mut w = h
        .worker(&[
            ("SHUTDOWN_TIMEOUT_SECS", "60"),
            ("INVENTORY_TIMEOUT_MS", "120000"),
        ])
        .await;
    h.queue.send(&bodies::expired("env-1", "r1")).await;
    support::eventually("in flight", || h.peers.inventory.calls().len() == 1).await;
    w.signal("TERM");
    support::eventually("draining logged", || {
        !w.logs_with_message("shutting down: receiving stopped, draining")
            .is_empty()
    })
    .await;
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn sigterm_during_a_retry_backoff_releases_at_once() {
    let h = Harness::start().await;
    h.peers.hold("r1");
    for _ in 0..5 {
        h.peers.inventory.push_fault(
            InventoryMethod::ReleaseHold,
            GrpcFault::Status(tonic::Code::Unavailable),
        );
    }
    let mut w = h
        .worker(&[
            ("BACKOFF_BASE_MS", "10000"),
            ("BACKOFF_MAX_MS", "10000"),
            ("SHUTDOWN_TIMEOUT_SECS", "30"),
        ])
        .await;
    h.queue.send(&bodies::expired("env-1", "r1")).await;
    // The failure is logged just before the 10 s backoff sleep starts.
    support::eventually("first attempt failed", || {
        !w.logs_with_message("step failed, retryable").is_empty()
    })
    .await;
    let t = Instant::now();
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(40)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the backoff sleep was waited out: {:?}",
        t.elapsed()
    );
    assert_eq!(
        h.peers.inventory.calls_for("r1").len(),
        1,
        "no attempt after SIGTERM"
    );
    assert_eq!(
        h.queue.depth().await,
        (1, 0),
        "released: visible again at once"
    );
    let outcomes: Vec<String> = w
        .logs_with_message("message finished")
        .iter()
        .map(|l| l["outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(outcomes, ["released"]);
}

#[tokio::test]
async fn a_client_watching_grpc_health_does_not_hold_up_the_exit() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let h = Harness::start().await;
    let mut w = h.worker(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://127.0.0.1:{}",
        w.grpc_port().await
    ))
    .expect("uri")
    .connect()
    .await
    .expect("connect");
    // A mesh or an operator watching health keeps this stream open indefinitely.
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health/Watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("a status");
    assert_eq!(first.status, 1, "SERVING");

    let t = Instant::now();
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "an open Watch stream held the exit for {:?}",
        t.elapsed()
    );
    // The watcher was told before the end: NOT_SERVING from the first moment of shutdown.
    let mut saw_not_serving = false;
    while let Ok(Some(m)) = watch.message().await {
        saw_not_serving |= m.status == 2;
    }
    assert!(saw_not_serving, "the watcher never saw NOT_SERVING");
}
