//! `GET /metrics`: every known series exported at zero from the start, exact counts after a
//! known mix of deliveries, no label taken from a message, and an exposition Prometheus's own
//! `promtool check metrics` accepts.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use reservation_sim::{GrpcFault, HttpFault, HttpRoute, InventoryMethod};
use serde_json::json;
use support::{Harness, WorkerProcess, bodies};
use tonic::Code;

/// Series (name plus labels in name order) → value.
type Scrape = HashMap<String, f64>;

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let sorted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn parse(text: &str) -> Scrape {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let labels: Vec<(&str, &str)> = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").expect("label");
                        (k, v.trim_end_matches('"'))
                    })
                    .collect();
                (n, labels)
            }
            None => (series, Vec::new()),
        };
        out.insert(key(name, &labels), value.parse().expect("a number"));
    }
    out
}

async fn scrape_text(w: &WorkerProcess) -> String {
    let port = w.http_port().await;
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4")
    );
    resp.text().await.expect("body")
}

async fn scrape(w: &WorkerProcess) -> Scrape {
    parse(&scrape_text(w).await)
}

fn get(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    *s.get(&key(name, labels))
        .unwrap_or_else(|| panic!("series {} missing", key(name, labels)))
}

fn events_total(s: &Scrape) -> f64 {
    s.iter()
        .filter(|(k, _)| k.starts_with("worker_events_total{"))
        .map(|(_, v)| v)
        .sum()
}

/// Waits until the scrape satisfies `cond`.
async fn until(w: &WorkerProcess, what: &str, cond: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let s = scrape(w).await;
        if cond(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one problem promtool reports that we keep on purpose: `worker_active_count` is the name
/// the existing dashboards use, and promtool reserves `_count` for histograms and summaries.
const ACCEPTED_LINT: &str =
    "worker_active_count non-histogram and non-summary metrics should not have \"_count\" suffix";

/// Runs `promtool check metrics` on a scrape when promtool is installed (Debian: `apt-get
/// install -y prometheus`); says so and skips the check otherwise.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED promtool check: promtool not on PATH (apt-get install -y prometheus)"
            );
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != ACCEPTED_LINT)
        .collect();
    assert!(problems.is_empty(), "promtool check metrics: {report}");
    // Exit 0 (clean) or 3 (lint findings, here only the accepted one); anything else is an
    // exposition promtool could not parse.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "promtool exit {:?}: {report}",
        out.status
    );
}

const TYPES: [&str; 4] = [
    "reservation.expired",
    "payment.approved",
    "payment.failed",
    "unknown",
];
const OUTCOMES: [&str; 5] = [
    "success",
    "duplicate",
    "retry_later",
    "dead_lettered",
    "released",
];

#[tokio::test]
async fn every_known_series_is_exported_at_zero_from_the_start() {
    let h = Harness::start().await;
    let w = h.worker(&[("WORKER_CONCURRENCY", "7")]).await;
    let text = scrape_text(&w).await;
    let s = parse(&text);
    for t in TYPES {
        for o in OUTCOMES {
            assert_eq!(
                get(&s, "worker_events_total", &[("type", t), ("outcome", o)]),
                0.0
            );
        }
        assert_eq!(get(&s, "worker_latency_seconds_count", &[("type", t)]), 0.0);
        assert_eq!(
            get(
                &s,
                "worker_latency_seconds_bucket",
                &[("type", t), ("le", "0.005")]
            ),
            0.0
        );
        assert_eq!(
            get(
                &s,
                "worker_latency_seconds_bucket",
                &[("type", t), ("le", "60")]
            ),
            0.0
        );
    }
    for reason in [
        "malformed_json",
        "too_large",
        "unknown_type",
        "invalid_field",
        "downstream_rejected",
        "missing_inventory_fields",
    ] {
        assert_eq!(
            get(&s, "worker_dead_letters_total", &[("reason", reason)]),
            0.0
        );
    }
    for step in [
        "release_hold",
        "commit_reservation",
        "status_update",
        "fetch_reservation",
    ] {
        assert_eq!(get(&s, "worker_retries_total", &[("step", step)]), 0.0);
    }
    for (t, step) in [
        ("reservation.expired", "release_hold"),
        ("payment.approved", "status_update"),
        ("payment.failed", "status_update"),
    ] {
        assert_eq!(
            get(
                &s,
                "worker_half_applied_events_total",
                &[("type", t), ("applied_step", step)]
            ),
            0.0
        );
    }
    for (target, method) in [
        ("inventory", "ReleaseHold"),
        ("inventory", "CommitReservation"),
        ("reservation_api", "PATCH"),
        ("reservation_api", "GET"),
    ] {
        for result in ["ok", "already_applied", "retryable", "terminal"] {
            let labels = [("target", target), ("method", method), ("result", result)];
            assert_eq!(
                get(&s, "downstream_request_duration_seconds_count", &labels),
                0.0
            );
        }
    }
    for op in [
        "ReceiveMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibilityBatch",
        "SendMessage",
        "GetQueueAttributes",
        "GetQueueUrl",
    ] {
        assert!(s.contains_key(&key(
            "sqs_request_duration_seconds_count",
            &[("operation", op)]
        )));
    }
    for result in ["ok", "error"] {
        assert_eq!(
            get(&s, "sqs_visibility_extensions_total", &[("result", result)]),
            0.0
        );
    }
    for name in [
        "sqs_poll_errors_total",
        "worker_active_count",
        "sqs_messages_received_total",
        "sqs_messages_deleted_total",
        "sqs_messages_released_total",
        "worker_message_age_seconds_count",
    ] {
        assert_eq!(get(&s, name, &[]), 0.0, "{name}");
    }
    assert_eq!(get(&s, "worker_pool_capacity", &[]), 7.0);
    assert_eq!(
        get(
            &s,
            "worker_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("WORKER_REVISION"))
            ]
        ),
        1.0
    );
    // The process collector's standard series.
    assert!(get(&s, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(get(&s, "process_open_fds", &[]) > 0.0);
    assert!(get(&s, "process_max_fds", &[]) > 0.0);
    let started = get(&s, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        now - started < 600.0 && started <= now + 1.0,
        "{started} vs {now}"
    );
    assert!(s.contains_key(&key("process_cpu_seconds_total", &[])));
    // Read at the scrape: the worker answered /ready before this test scraped.
    assert_eq!(get(&s, "worker_ready", &[]), 1.0);
    // Ready means the queue was reached; `/health` leaves `starting` once a receive loop has
    // beaten, a moment later (a fresh clone's run once scraped in between).
    let health = until(&w, "health ok", |s| {
        get(s, "worker_health_status", &[("status", "ok")]) == 1.0
    })
    .await;
    for (status, v) in [
        ("starting", 0.0),
        ("ok", 1.0),
        ("draining", 0.0),
        ("wedged", 0.0),
        ("stopped", 0.0),
        ("unsettled", 0.0),
    ] {
        assert_eq!(
            get(&health, "worker_health_status", &[("status", status)]),
            v,
            "{status}"
        );
    }
    // Ready means a receive succeeded: the gauge is a moment ago, not 0.
    let last = until(&w, "a successful receive", |s| {
        get(s, "sqs_last_successful_receive_timestamp_seconds", &[]) > 0.0
    })
    .await;
    let at = get(&last, "sqs_last_successful_receive_timestamp_seconds", &[]);
    assert!((now - at).abs() < 60.0, "{at} vs {now}");
    // Every metric says what it means.
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap_or_default();
        let help = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
            .unwrap_or_default();
        assert!(help.len() > 20, "{name} has no real help text: {help:?}");
    }
    promtool_check(&text);
}

#[tokio::test]
async fn a_known_mix_of_deliveries_is_counted_exactly() {
    let h = Harness::start().await;
    for r in ["r-ok", "r-retry", "r-later", "r-rejected"] {
        h.peers.hold(r);
    }
    let w = h
        .worker(&[("MAX_RETRIES", "2"), ("WORKER_CONCURRENCY", "3")])
        .await;
    let raw_type = "order.secret-type-x9";
    // One at a time, so each scripted fault meets the message it is meant for.
    let mut sent = 0.0;
    let mut deliver = async |body: String| {
        h.queue.send(&body).await;
        sent += 1.0;
        let n = sent;
        until(&w, &format!("{n} deliveries finished"), |s| {
            events_total(s) == n
        })
        .await;
    };
    // success, then the same envelope again: a duplicate.
    deliver(bodies::expired("env-ok", "r-ok")).await;
    deliver(bodies::expired("env-ok", "r-ok")).await;
    // success after one retry of the PATCH.
    h.peers
        .reservations
        .push_fault(HttpRoute::Patch, HttpFault::Status(503));
    deliver(bodies::failed("env-retry", "r-retry")).await;
    // retries spent (2 attempts): left for a later delivery, 30 s away.
    for _ in 0..2 {
        h.peers
            .reservations
            .push_fault(HttpRoute::Patch, HttpFault::Status(503));
    }
    deliver(bodies::approved("env-later", "r-later")).await;
    // dead letters: not JSON, an unknown type, a field of a known type, a rejected commit
    // (after the PATCH applied: half-applied).
    deliver("{not json".to_string()).await;
    deliver(bodies::documented(
        "env-unknown",
        raw_type,
        json!({"reservation_id": "r-x"}),
    ))
    .await;
    deliver(bodies::documented(
        "env-invalid",
        "reservation.expired",
        json!({"reservation_id": "r-x", "event_id": "e", "qty": -1}),
    ))
    .await;
    h.peers.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::Status(Code::FailedPrecondition),
    );
    deliver(bodies::approved("env-rejected", "r-rejected")).await;

    let s = until(&w, "the acker's deletes", |s| {
        get(s, "sqs_messages_deleted_total", &[]) == 7.0
    })
    .await;
    let expected_events: [(&str, &str, f64); 7] = [
        ("reservation.expired", "success", 1.0),
        ("reservation.expired", "duplicate", 1.0),
        // It named its type: counted under it, not unknown.
        ("reservation.expired", "dead_lettered", 1.0),
        ("payment.failed", "success", 1.0),
        ("payment.approved", "retry_later", 1.0),
        ("payment.approved", "dead_lettered", 1.0),
        ("unknown", "dead_lettered", 2.0),
    ];
    for t in TYPES {
        for o in OUTCOMES {
            let want = expected_events
                .iter()
                .find(|(et, eo, _)| *et == t && *eo == o)
                .map_or(0.0, |(_, _, n)| *n);
            assert_eq!(
                get(&s, "worker_events_total", &[("type", t), ("outcome", o)]),
                want,
                "worker_events_total{{type={t},outcome={o}}}"
            );
        }
    }
    for (t, n) in [
        ("reservation.expired", 3.0),
        ("payment.failed", 1.0),
        ("payment.approved", 2.0),
        ("unknown", 2.0),
    ] {
        assert_eq!(
            get(&s, "worker_latency_seconds_count", &[("type", t)]),
            n,
            "{t}"
        );
    }
    for (reason, n) in [
        ("malformed_json", 1.0),
        ("unknown_type", 1.0),
        ("downstream_rejected", 1.0),
        ("invalid_field", 1.0),
        ("too_large", 0.0),
    ] {
        assert_eq!(
            get(&s, "worker_dead_letters_total", &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    for (t, step, n) in [
        ("payment.approved", "status_update", 1.0),
        ("payment.failed", "status_update", 0.0),
        ("reservation.expired", "release_hold", 0.0),
    ] {
        assert_eq!(
            get(
                &s,
                "worker_half_applied_events_total",
                &[("type", t), ("applied_step", step)]
            ),
            n,
            "half-applied {t} {step}"
        );
    }
    assert_eq!(
        get(&s, "worker_retries_total", &[("step", "status_update")]),
        2.0
    );
    assert_eq!(
        get(&s, "worker_retries_total", &[("step", "release_hold")]),
        0.0
    );
    for (target, method, result, n) in [
        ("inventory", "ReleaseHold", "ok", 2.0),
        ("inventory", "CommitReservation", "terminal", 1.0),
        ("inventory", "CommitReservation", "ok", 0.0),
        ("reservation_api", "PATCH", "ok", 3.0),
        ("reservation_api", "PATCH", "retryable", 3.0),
        ("reservation_api", "GET", "ok", 0.0),
    ] {
        let labels = [("target", target), ("method", method), ("result", result)];
        assert_eq!(
            get(&s, "downstream_request_duration_seconds_count", &labels),
            n,
            "{target} {method} {result}"
        );
    }
    assert_eq!(get(&s, "sqs_messages_received_total", &[]), 8.0);
    assert_eq!(get(&s, "worker_message_age_seconds_count", &[]), 8.0);
    assert_eq!(get(&s, "sqs_messages_released_total", &[]), 0.0);
    assert_eq!(get(&s, "sqs_poll_errors_total", &[]), 0.0);
    assert_eq!(get(&s, "worker_active_count", &[]), 0.0);
    assert_eq!(
        get(
            &s,
            "sqs_request_duration_seconds_count",
            &[("operation", "SendMessage")]
        ),
        4.0,
        "four dead letters sent"
    );
    assert!(
        get(
            &s,
            "sqs_request_duration_seconds_count",
            &[("operation", "ReceiveMessage")]
        ) >= 8.0
    );
    assert_eq!(h.dlq.depth().await.0, 4);

    let text = scrape_text(&w).await;
    assert!(
        !text.contains("secret-type") && !text.contains("order."),
        "a raw event type reached a label"
    );
    let labelled_types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("type=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(labelled_types.iter().all(|t| TYPES.contains(t)));
    promtool_check(&text);
}

#[tokio::test]
async fn active_count_and_visibility_renewals_follow_a_slow_message() {
    let h = Harness::start().await;
    h.peers.hold("r-slow");
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_millis(2500)),
    );
    let w = h.worker(&[("SQS_VISIBILITY_TIMEOUT", "2")]).await;
    h.queue.send(&bodies::expired("env-slow", "r-slow")).await;
    // Renewed at half the visibility while the slow call is under way.
    let s = until(&w, "a renewal while in flight", |s| {
        get(s, "sqs_visibility_extensions_total", &[("result", "ok")]) >= 1.0
    })
    .await;
    assert_eq!(get(&s, "worker_active_count", &[]), 1.0);
    assert_eq!(get(&s, "worker_pool_capacity", &[]), 20.0);
    let s = until(&w, "the message finished", |s| events_total(s) == 1.0).await;
    assert_eq!(
        get(
            &s,
            "worker_events_total",
            &[("type", "reservation.expired"), ("outcome", "success")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "sqs_visibility_extensions_total",
            &[("result", "error")]
        ),
        0.0
    );
    let s = until(&w, "the task is gone", |s| {
        get(s, "worker_active_count", &[]) == 0.0
    })
    .await;
    assert!(
        get(
            &s,
            "worker_latency_seconds_bucket",
            &[("type", "reservation.expired"), ("le", "1")]
        ) == 0.0,
        "a 2.5 s delivery is not in the 1 s bucket"
    );
}
