//! Peers as real deployments put them: behind ingresses, auth proxies and maintenance pages
//! that answer in their place. None of their answers may count as the peer's: a redirect is not
//! a success, a proxy's plain HTTP status is not the inventory service's verdict, and a
//! reservation id must reach the API as exactly one path segment.

use crate::support;

use reservation_sim::{HttpFault, HttpRoute, InventoryMethod, ProxyAnswer};
use serde_json::json;
use support::{Harness, bodies};

/// Found by attacking the promise: reqwest followed a 303 (turning the PATCH into a GET of the
/// resource, answered 200), the worker logged success, committed the seats and deleted the
/// message, and the reservation never became CONFIRMED. Every redirect, a 2xx HTML page and a
/// headers-only 401/503 must leave the event to be retried until the API itself applies it.
#[tokio::test]
async fn redirects_and_pages_in_front_of_the_api_are_retried_not_taken_for_success() {
    let h = Harness::start().await;
    let faults = [
        HttpFault::Redirect {
            status: 303,
            location: "/internal/reservations/r-see-other".into(),
        },
        HttpFault::Redirect {
            status: 302,
            location: "/sso/login?state=abc".into(),
        },
        HttpFault::Redirect {
            status: 307,
            location: "http://maintenance.invalid/".into(),
        },
        HttpFault::Html(200),
        HttpFault::Bare(401),
        HttpFault::Bare(503),
    ];
    let rids: Vec<String> = (0..faults.len()).map(|i| format!("r-front-{i}")).collect();
    let mut all = rids.clone();
    all.push("r-see-other".into());
    for r in &all {
        h.peers.hold(r);
    }
    for f in faults {
        h.peers.reservations.push_fault(HttpRoute::Patch, f);
    }
    let _w = support::InProcess::start(&h, &[("MAX_RETRIES", "10")]).await;
    h.queue
        .send(&bodies::approved("env-see-other", "r-see-other"))
        .await;
    for (i, r) in rids.iter().enumerate() {
        h.queue
            .send(&bodies::approved(&format!("env-{i}"), r))
            .await;
    }
    h.wait_queue_empty().await;

    assert_eq!(h.peers.reservations.pending_faults(HttpRoute::Patch), 0);
    for r in &all {
        let status = h.peers.reservations.get(r).map(|r| r.status);
        assert_eq!(status.as_deref(), Some("CONFIRMED"), "{r}");
        let calls = h.peers.reservations.calls_for(r);
        assert!(
            calls.iter().all(|c| c.method == "PATCH"),
            "{r}: a redirect was followed: {calls:?}"
        );
        assert_eq!(calls.iter().filter(|c| c.applied).count(), 1, "{r}");
        // The seats are sold only after the status change really applied.
        let applied_at = calls.iter().find(|c| c.applied).map(|c| c.at);
        let commits = h.peers.inventory.calls_for(r);
        assert!(
            !commits.is_empty() && commits.iter().all(|c| Some(c.at) > applied_at),
            "{r}: CommitReservation before the PATCH applied"
        );
    }
    let stray: Vec<_> = h
        .peers
        .reservations
        .calls()
        .into_iter()
        .filter(|c| c.reservation_id.is_empty())
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(stray.is_empty(), "requests outside the API: {stray:?}");
    assert_eq!(h.dlq.depth().await, (0, 0));
}

/// Found by attacking the promise: an ingress or auth sidecar in front of the inventory service
/// that answers 401/403/404 with headers only made tonic report UNAUTHENTICATED /
/// PERMISSION_DENIED / UNIMPLEMENTED, which were terminal, so valid events went to the DLQ
/// (with a body the same answers were retried).
#[tokio::test]
async fn plain_http_answers_in_front_of_the_inventory_service_are_retried() {
    let h = Harness::start().await;
    let answers = [
        (401, false),
        (403, false),
        (404, false),
        (401, true),
        (403, true),
        (502, false),
    ];
    for (status, with_body) in answers {
        h.peers.inventory.push_proxy_answer(
            InventoryMethod::ReleaseHold,
            ProxyAnswer { status, with_body },
        );
    }
    let rids: Vec<String> = (0..3).map(|i| format!("r-ingress-{i}")).collect();
    for r in &rids {
        h.peers.hold(r);
    }
    let _w = support::InProcess::start(&h, &[("MAX_RETRIES", "10")]).await;
    for (i, r) in rids.iter().enumerate() {
        h.queue.send(&bodies::expired(&format!("env-{i}"), r)).await;
    }
    h.wait_queue_empty().await;
    assert_eq!(h.peers.inventory.proxy_answered(), answers.len());
    for r in &rids {
        assert_eq!(
            h.peers.reservations.get(r).map(|r| r.status).as_deref(),
            Some("EXPIRED"),
            "{r}"
        );
        let released = h.peers.inventory.calls_for(r);
        assert_eq!(released.iter().filter(|c| c.applied).count(), 1, "{r}");
    }
    assert_eq!(h.dlq.depth().await, (0, 0), "valid events dead-lettered");
}

/// Found by attacking the promise: the ids `.` and `..` passed validation and the URL library
/// dropped them as dot segments, so the PATCH went to the collection and counted as success.
/// Every reservation id either reaches the API as exactly one path segment, intact, or is
/// dead-lettered with the field named and nothing called.
#[tokio::test]
async fn every_reservation_id_is_one_path_segment_or_refused() {
    let h = Harness::start().await;
    let accepted = [
        "...",
        "%2e%2e%2e",
        ".hidden",
        "a?b=c",
        "a#frag",
        "a;b",
        "a b",
        "%2F",
        "r/with/parts",
        "a\\b",
        "예약-1",
        "ｒｅｓ．１",
        "r\u{301}",
    ];
    let refused = [
        ".", "..", "%2e", "%2E%2e", ".%2e", "../x", "r1/../r2", "a/./b", "..\\..", "/", "\\",
        "a//b", "a/",
    ];
    for r in accepted {
        h.peers.hold(r);
    }
    let _w = support::InProcess::start(&h, &[]).await;
    for (i, r) in accepted.iter().chain(refused.iter()).enumerate() {
        let body = bodies::documented(
            &format!("env-{i}"),
            "reservation.expired",
            json!({"reservation_id": r, "event_id": "evt-1", "qty": 2, "seat_ids": ["A-1", "A-2"]}),
        );
        h.queue.send(&body).await;
    }
    h.wait_queue_empty().await;

    for r in accepted {
        let calls = h.peers.reservations.calls_for(r);
        assert_eq!(calls.len(), 1, "{r:?}: {calls:?}");
        let path = &calls[0].path;
        let segment = path
            .strip_prefix("/internal/reservations/")
            .unwrap_or_else(|| panic!("{r:?} went to {path}"));
        assert!(
            !segment.contains(['/', '\\', '?', '#']),
            "{r:?} became {path}"
        );
        assert_eq!(
            h.peers.reservations.get(r).map(|r| r.status).as_deref(),
            Some("EXPIRED"),
            "{r:?}"
        );
    }
    let stray: Vec<_> = h
        .peers
        .reservations
        .calls()
        .into_iter()
        .filter(|c| c.reservation_id.is_empty())
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(stray.is_empty(), "requests outside the API: {stray:?}");

    let letters = h.dlq.receive_n(refused.len()).await;
    assert_eq!(letters.len(), refused.len());
    for m in &letters {
        assert_eq!(
            m.attributes.get("ReasonClass").map(String::as_str),
            Some("invalid_field"),
            "{m:?}"
        );
        let error = m
            .attributes
            .get("ErrorMessage")
            .cloned()
            .unwrap_or_default();
        assert!(
            error.starts_with(
                "detail.reservation_id: expected an id that can be one URL path segment"
            ),
            "{error}"
        );
    }
    let called_for_refused = h
        .peers
        .inventory
        .calls()
        .into_iter()
        .filter(|c| refused.contains(&c.reservation_id.as_str()))
        .count();
    assert_eq!(called_for_refused, 0, "a refused id reached the inventory");
}
