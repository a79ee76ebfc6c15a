//! A peer outage longer than the whole redelivery schedule loses nothing: each peer's circuit
//! breaker opens after sustained failures, the worker stops receiving (so the receive counts
//! of waiting messages stop growing and the queue's maxReceiveCount never moves a valid event
//! to the DLQ), `/ready` says why while `/health` stays ok, a probe finds the peer again, and
//! every event is then applied once.
//!
//! The outage is real: a TCP proxy in front of the peer closes every connection while it is
//! down. The redelivery schedule is shortened (REDELIVERY_BACKOFF_BASE_SECS=1 up to 2 s,
//! maxReceiveCount 3: the third receive comes about 3 s after the first), and the outage lasts
//! about four times that.

use crate::support;

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use reservation_sim::HoldState;
use support::Harness;
use support::bodies;
use support::chaos::Outage;

/// The source queue's maxReceiveCount: a message received this often goes to the DLQ.
const MAX_RECEIVE_COUNT: u32 = 3;

/// About four times the shortened redelivery schedule (1 + 2 s to the third receive, plus the
/// in-task retries).
const OUTAGE: Duration = Duration::from_secs(12);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Down {
    Inventory,
    ReservationApi,
}

impl Down {
    fn peer(self) -> &'static str {
        match self {
            Down::Inventory => "inventory",
            Down::ReservationApi => "reservation_api",
        }
    }
}

#[tokio::test]
async fn an_inventory_outage_longer_than_the_redelivery_schedule_loses_nothing() {
    outage(Down::Inventory).await;
}

#[tokio::test]
async fn a_reservation_api_outage_longer_than_the_redelivery_schedule_loses_nothing() {
    outage(Down::ReservationApi).await;
}

async fn outage(down: Down) {
    let h = Harness::start().await;
    let policy = serde_json::json!({
        "deadLetterTargetArn": h.dlq.arn,
        "maxReceiveCount": MAX_RECEIVE_COUNT.to_string(),
    });
    h.queue
        .client
        .set_queue_attributes()
        .queue_url(&h.queue.url)
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .send()
        .await
        .expect("SetQueueAttributes");
    let upstream = match down {
        Down::Inventory => h.peers.inventory_addr.clone(),
        Down::ReservationApi => h
            .peers
            .reservation_base
            .trim_start_matches("http://")
            .into(),
    };
    let proxy = Outage::start(upstream.parse().expect("peer address")).await;
    let (inventory, reservations) = match down {
        Down::Inventory => (proxy.addr.to_string(), h.peers.reservation_base.clone()),
        Down::ReservationApi => (
            h.peers.inventory_addr.clone(),
            format!("http://{}", proxy.addr),
        ),
    };
    let w = h
        .worker(&[
            ("INVENTORY_GRPC_ADDR", &inventory),
            ("RESERVATION_API_BASE", &reservations),
            ("WORKER_CONCURRENCY", "4"),
            ("MAX_RETRIES", "3"),
            ("REDELIVERY_BACKOFF_BASE_SECS", "1"),
            ("REDELIVERY_BACKOFF_MAX_SECS", "2"),
            ("CIRCUIT_FAILURE_THRESHOLD", "4"),
            ("CIRCUIT_FAILING_SECS", "1"),
            ("CIRCUIT_PROBE_BASE_SECS", "1"),
            ("CIRCUIT_PROBE_MAX_SECS", "2"),
        ])
        .await;
    proxy.begin();
    let events: Vec<(String, String)> = (0..9)
        .map(|i| {
            let rid = format!("r-{i}");
            let env = format!("env-{i}");
            h.peers.hold(&rid);
            let body = match i % 3 {
                0 => bodies::expired(&env, &rid),
                1 => bodies::approved(&env, &rid),
                _ => bodies::failed(&env, &rid),
            };
            (rid, body)
        })
        .collect();
    for (_, body) in &events {
        h.queue.send(body).await;
    }

    // Open: receiving pauses, readiness says why, liveness does not mind.
    let open = format!(
        "worker_circuit_state{{peer=\"{}\",state=\"open\"}} 1",
        down.peer()
    );
    wait_for("the circuit to open", Duration::from_secs(30), || async {
        let (code, body) = w.get("/ready").await.unwrap_or_default();
        let metrics = w.get("/metrics").await.unwrap_or_default().1;
        code == 503 && body.contains("circuit is open") && metrics.contains(&open)
    })
    .await;
    let received_at_open = metric(&w, "sqs_messages_received_total").await;
    let opened = tokio::time::Instant::now();
    while opened.elapsed() < OUTAGE {
        let (code, body) = w.get("/health").await.expect("health answers");
        assert_eq!(code, 200, "liveness stays ok during the outage: {body}");
        let (code, body) = w.get("/ready").await.expect("ready answers");
        assert_eq!(code, 503, "not ready while the circuit is open: {body}");
        assert!(body.contains(down.peer()), "{body}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let received_in_outage = metric(&w, "sqs_messages_received_total").await - received_at_open;
    assert!(
        received_in_outage <= 2.0,
        "receiving paused while the circuit was open, yet {received_in_outage} messages were received"
    );
    let failed_probes = metric(
        &w,
        &format!(
            "worker_circuit_probes_total{{peer=\"{}\",result=\"failed\"}}",
            down.peer()
        ),
    )
    .await;
    assert!(
        failed_probes >= 5.0,
        "probes went on every 1 s, then 2 s: {failed_probes}"
    );

    proxy.end();
    h.queue.wait_empty().await;
    wait_for(
        "every event to be applied",
        Duration::from_secs(60),
        || async {
            events.iter().all(|(rid, _)| {
                h.peers
                    .reservations
                    .get(rid)
                    .is_some_and(|r| r.status != "HELD")
                    && h.peers.inventory.state_of(rid) != Some(HoldState::Held)
            })
        },
    )
    .await;
    assert_eq!(
        h.dlq.depth().await,
        (0, 0),
        "no valid event was dead-lettered"
    );
    for (rid, _) in &events {
        let inventory = h.peers.inventory.calls_for(rid);
        let reservations = h.peers.reservations.calls_for(rid);
        let effects = (
            inventory.iter().filter(|c| c.applied).count(),
            reservations.iter().filter(|c| c.applied).count(),
        );
        assert_eq!(effects, (1, 1), "{rid}: each effect applied once");
    }
    wait_for("the circuit to close", Duration::from_secs(30), || async {
        w.get("/ready").await.is_some_and(|(code, _)| code == 200)
    })
    .await;
    let logs = w.json_logs();
    let said = |what: &str| {
        logs.iter().any(|l| {
            l["msg"].as_str().is_some_and(|m| m.starts_with(what))
                && l["peer"].as_str() == Some(down.peer())
        })
    };
    assert!(said("circuit opened"), "the opening is logged");
    assert!(said("circuit closed"), "the closing is logged");
}

/// The value of one series (name and labels as exposed) on the worker's `/metrics`.
async fn metric(w: &support::WorkerProcess, series: &str) -> f64 {
    let (_, text) = w.get("/metrics").await.expect("metrics answer");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in /metrics"))
}

/// Polls `cond` every 200 ms until it holds; panics after `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
