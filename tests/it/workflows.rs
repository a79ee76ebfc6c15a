//! Each event type and envelope form reaches the peers as the contract says: the two calls in
//! order, with every field and the envelope id as idempotency key; then the message is deleted.
//! The worker runs in-process (`support::InProcess`); the three workflows on moto, so it is
//! proved against a second SQS implementation too, the rest on the fast endpoint.

use crate::support;

use reservation_sim::{HoldState, InventoryMethod};
use serde_json::json;
use support::{Harness, bodies, eventually};

/// The order of calls as "grpc:Method" / "http:VERB" across both peers.
fn call_order(h: &Harness, rid: &str) -> Vec<String> {
    let mut calls: Vec<(std::time::Instant, String)> = h
        .peers
        .inventory
        .calls_for(rid)
        .into_iter()
        .map(|c| (c.at, format!("grpc:{}", c.method.as_str())))
        .chain(
            h.peers
                .reservations
                .calls_for(rid)
                .into_iter()
                .map(|c| (c.at, format!("http:{}", c.method))),
        )
        .collect();
    calls.sort_by_key(|(at, _)| *at);
    calls.into_iter().map(|(_, c)| c).collect()
}

#[tokio::test]
async fn reservation_expired_releases_the_hold_then_marks_expired() {
    let h = Harness::on_moto().await;
    h.peers.hold("r-exp");
    let _w = support::InProcess::start(&h, &[("RESERVATION_API_TOKEN", "tok-123")]).await;
    h.queue.send(&bodies::expired("env-exp", "r-exp")).await;
    eventually("both calls", || h.peers.total_calls() == 2).await;
    h.wait_queue_empty().await;

    assert_eq!(call_order(&h, "r-exp"), ["grpc:ReleaseHold", "http:PATCH"]);
    let inv = &h.peers.inventory.calls()[0];
    assert_eq!(inv.method, InventoryMethod::ReleaseHold);
    assert_eq!(inv.reservation_id, "r-exp");
    assert_eq!(inv.event_id, "evt-1");
    assert_eq!(inv.seat_ids, ["A-1", "A-2"]);
    assert_eq!(inv.quantity, 2);
    assert_eq!(inv.reason, "expired");
    assert_eq!(inv.idempotency_key, "env-exp");
    let http = &h.peers.reservations.calls()[0];
    assert_eq!(http.method, "PATCH");
    assert_eq!(http.path, "/internal/reservations/r-exp");
    assert_eq!(http.body, Some(json!({"status": "EXPIRED"})));
    assert_eq!(
        http.headers.get("idempotency-key").map(String::as_str),
        Some("env-exp")
    );
    assert_eq!(
        http.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        http.headers.get("authorization").map(String::as_str),
        Some("Bearer tok-123")
    );
    assert_eq!(http.status, 200);
    assert_eq!(
        h.peers.inventory.state_of("r-exp"),
        Some(HoldState::Released)
    );
    assert_eq!(
        h.peers.reservations.get("r-exp").map(|r| r.status),
        Some("EXPIRED".into())
    );
    assert_eq!(h.dlq.depth().await, (0, 0));
}

#[tokio::test]
async fn payment_approved_confirms_then_commits() {
    let h = Harness::on_moto().await;
    h.peers.hold("r-ok");
    let _w = support::InProcess::start(&h, &[]).await;
    h.queue.send(&bodies::approved("env-ok", "r-ok")).await;
    eventually("both calls", || h.peers.total_calls() == 2).await;
    h.wait_queue_empty().await;

    assert_eq!(
        call_order(&h, "r-ok"),
        ["http:PATCH", "grpc:CommitReservation"]
    );
    let http = &h.peers.reservations.calls()[0];
    assert_eq!(http.body, Some(json!({"status": "CONFIRMED"})));
    assert!(
        !http.headers.contains_key("authorization"),
        "no token configured, no header"
    );
    let inv = &h.peers.inventory.calls()[0];
    assert_eq!(inv.method, InventoryMethod::CommitReservation);
    assert_eq!(inv.payment_intent_id, "pi-1");
    assert_eq!(inv.user_id, "user-1");
    assert_eq!(inv.event_id, "evt-1");
    assert_eq!(inv.seat_ids, ["A-1", "A-2"]);
    assert_eq!(inv.quantity, 2);
    assert_eq!(inv.idempotency_key, "env-ok");
    assert!(matches!(
        h.peers.inventory.state_of("r-ok"),
        Some(HoldState::Committed { .. })
    ));
    assert_eq!(
        h.peers.reservations.get("r-ok").map(|r| r.status),
        Some("CONFIRMED".into())
    );
}

#[tokio::test]
async fn payment_failed_cancels_then_releases() {
    let h = Harness::on_moto().await;
    h.peers.hold("r-fail");
    let _w = support::InProcess::start(&h, &[]).await;
    h.queue.send(&bodies::failed("env-fail", "r-fail")).await;
    eventually("both calls", || h.peers.total_calls() == 2).await;
    h.wait_queue_empty().await;

    assert_eq!(call_order(&h, "r-fail"), ["http:PATCH", "grpc:ReleaseHold"]);
    assert_eq!(
        h.peers.reservations.calls()[0].body,
        Some(json!({"status": "CANCELLED"}))
    );
    let inv = &h.peers.inventory.calls()[0];
    assert_eq!(inv.reason, "payment_failed");
    assert_eq!(inv.idempotency_key, "env-fail");
    assert_eq!(
        h.peers.reservations.get("r-fail").map(|r| r.status),
        Some("CANCELLED".into())
    );
}

#[tokio::test]
async fn payment_without_inventory_fields_looks_the_reservation_up_first() {
    let h = Harness::start().await;
    h.peers.hold("r-look");
    let _w = support::InProcess::start(&h, &[]).await;
    let body = bodies::documented(
        "env-look",
        "payment.approved",
        json!({"reservation_id": "r-look", "payment_intent_id": "pi-9", "amount": 1000}),
    );
    h.queue.send(&body).await;
    eventually("three calls", || h.peers.total_calls() == 3).await;
    h.wait_queue_empty().await;

    // The lookup comes first, so an event that cannot be completed changes nothing.
    assert_eq!(
        call_order(&h, "r-look"),
        ["http:GET", "http:PATCH", "grpc:CommitReservation"]
    );
    let inv = &h.peers.inventory.calls()[0];
    // Filled from GET /internal/reservations/r-look (seeded by `hold`).
    assert_eq!(inv.event_id, "evt-1");
    assert_eq!(inv.seat_ids, ["A-1", "A-2"]);
    assert_eq!(inv.quantity, 2);
    assert_eq!(inv.user_id, "user-1");
    assert_eq!(inv.payment_intent_id, "pi-9");
}

#[tokio::test]
async fn every_envelope_form_is_accepted() {
    let h = Harness::start().await;
    for rid in [
        "r-eb",
        "r-sns",
        "r-sns-eb",
        "r-paysim",
        "r-paysim-fail",
        "r-legacy",
    ] {
        h.peers.hold(rid);
    }
    let _w = support::InProcess::start(&h, &[]).await;
    h.queue
        .send(&bodies::eventbridge(
            "env-eb",
            "payment.approved",
            bodies::approved_detail("r-eb"),
        ))
        .await;
    h.queue
        .send(&bodies::sns(&bodies::expired("env-sns", "r-sns")))
        .await;
    h.queue
        .send(&bodies::sns(&bodies::eventbridge(
            "env-sns-eb",
            "payment.approved",
            bodies::approved_detail("r-sns-eb"),
        )))
        .await;
    let paysim = |id: &str, rid: &str, status: &str| {
        json!({"version": "0", "id": id, "detail-type": "Payment Status Updated", "source": "payment-sim-api",
               "time": "2026-11-21T00:00:00Z", "detail": {"payment_id": "pay-77", "reservation_id": rid,
               "user_id": "user-1", "status": status, "amount": 120.5, "currency": "USD", "method": "card"}})
        .to_string()
    };
    h.queue
        .send(&paysim(
            "env-paysim",
            "r-paysim",
            "PAYMENT_STATUS_COMPLETED",
        ))
        .await;
    h.queue
        .send(&paysim(
            "env-paysim-fail",
            "r-paysim-fail",
            "PAYMENT_STATUS_FAILED",
        ))
        .await;
    h.queue
        .send(&bodies::documented(
            "env-legacy",
            "reservation.hold.expired",
            json!({"reservation_id": "r-legacy", "event_id": "evt-1", "qty": 1}),
        ))
        .await;
    h.wait_queue_empty().await;
    eventually("all reservations updated", || {
        [
            "r-eb",
            "r-sns",
            "r-sns-eb",
            "r-paysim",
            "r-paysim-fail",
            "r-legacy",
        ]
        .iter()
        .all(|r| {
            h.peers
                .reservations
                .get(r)
                .is_some_and(|x| x.status != "HELD")
        })
    })
    .await;

    let status = |r: &str| {
        h.peers
            .reservations
            .get(r)
            .map(|x| x.status)
            .unwrap_or_default()
    };
    assert_eq!(status("r-eb"), "CONFIRMED");
    assert_eq!(status("r-sns"), "EXPIRED");
    assert_eq!(status("r-sns-eb"), "CONFIRMED");
    assert_eq!(status("r-paysim"), "CONFIRMED");
    assert_eq!(status("r-paysim-fail"), "CANCELLED");
    assert_eq!(status("r-legacy"), "EXPIRED");
    let commit = h.peers.inventory.calls_for("r-paysim");
    assert_eq!(commit.len(), 1);
    assert_eq!(
        commit[0].payment_intent_id, "pay-77",
        "payment_id is the payment intent id"
    );
    assert_eq!(commit[0].idempotency_key, "env-paysim");
    assert_eq!(
        h.peers.inventory.calls_for("r-sns")[0].idempotency_key,
        "env-sns"
    );
    assert_eq!(h.peers.inventory.calls_for("r-legacy")[0].reason, "expired");
    assert_eq!(h.dlq.depth().await, (0, 0));
}

#[tokio::test]
async fn a_body_without_id_uses_the_sqs_message_id_and_ids_are_percent_encoded() {
    let h = Harness::start().await;
    h.peers.hold("r/with space");
    let _w = support::InProcess::start(&h, &[]).await;
    let body = json!({"type": "reservation.expired", "detail": {"reservation_id": "r/with space", "event_id": "evt-1", "qty": 1}}).to_string();
    let message_id = h.queue.send(&body).await;
    eventually("both calls", || h.peers.total_calls() == 2).await;
    let http = &h.peers.reservations.calls()[0];
    assert_eq!(http.path, "/internal/reservations/r%2Fwith%20space");
    assert_eq!(http.reservation_id, "r/with space");
    assert_eq!(http.headers.get("idempotency-key"), Some(&message_id));
    assert_eq!(h.peers.inventory.calls()[0].idempotency_key, message_id);
}

/// On an `https://` reservation API the default (`alpn`) takes HTTP/2 when TLS offers it, and
/// `off` keeps HTTP/1.1. The worker runs as its own process, so the test's certificate
/// authority reaches its trust store through `SSL_CERT_FILE` and nothing else's.
#[tokio::test]
async fn an_https_reservation_api_gets_http2_by_alpn_unless_it_is_off() {
    let h = Harness::start().await;
    let api = h.peers.reservations_over_https().await;
    let ca_file = api.ca_file.path().to_str().expect("a UTF-8 temp path");
    for (setting, version) in [(None, "HTTP/2.0"), (Some("off"), "HTTP/1.1")] {
        let rid = format!("r-tls-{}", setting.unwrap_or("alpn"));
        h.peers.hold(&rid);
        let mut env = vec![
            ("RESERVATION_API_BASE", api.base.as_str()),
            ("SSL_CERT_FILE", ca_file),
        ];
        env.extend(setting.map(|v| ("RESERVATION_API_HTTP2", v)));
        let _w = h.worker(&env).await;
        h.queue
            .send(&bodies::approved(&format!("env-{rid}"), &rid))
            .await;
        eventually("confirmed over https", || {
            h.peers
                .reservations
                .get(&rid)
                .is_some_and(|r| r.status == "CONFIRMED")
        })
        .await;
        let versions: Vec<String> = h
            .peers
            .reservations
            .calls_for(&rid)
            .into_iter()
            .map(|c| c.version)
            .collect();
        assert_eq!(versions, [version], "RESERVATION_API_HTTP2={setting:?}");
    }
}

/// `RESERVATION_API_HTTP2=prior-knowledge` speaks cleartext HTTP/2 (h2c) to the reservation
/// API, so requests in flight share a connection; by default an `http://` API gets HTTP/1.1.
#[tokio::test]
async fn the_reservation_api_gets_h2c_only_when_asked() {
    for (setting, version) in [(None, "HTTP/1.1"), (Some("prior-knowledge"), "HTTP/2.0")] {
        let h = Harness::start().await;
        h.peers.hold("r-h2");
        let env: Vec<(&str, &str)> = setting
            .map(|v| ("RESERVATION_API_HTTP2", v))
            .into_iter()
            .collect();
        let _w = support::InProcess::start(&h, &env).await;
        h.queue.send(&bodies::approved("env-h2", "r-h2")).await;
        eventually("confirmed", || {
            h.peers
                .reservations
                .get("r-h2")
                .is_some_and(|r| r.status == "CONFIRMED")
        })
        .await;
        let versions: Vec<String> = h
            .peers
            .reservations
            .calls_for("r-h2")
            .into_iter()
            .map(|c| c.version)
            .collect();
        assert_eq!(versions, [version], "RESERVATION_API_HTTP2={setting:?}");
    }
}
