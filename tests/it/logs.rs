//! Log lines: one flat JSON object per line with fixed keys, the message's fields on every
//! line of that message, no key twice, `pod_name` everywhere, no secret anywhere (even at
//! `trace`), and human-readable lines with `LOG_FORMAT=pretty`.

use crate::support;

use std::collections::BTreeSet;

use reservation_sim::{GrpcFault, HttpFault, HttpRoute, InventoryMethod};
use serde_json::Value;
use support::worker::top_level_keys;
use support::{Harness, WorkerProcess, bodies};
use tonic::Code;

fn key_set(line: &Value) -> BTreeSet<String> {
    line.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// Keys of every line of a finished message, besides the outcome-specific ones.
const MESSAGE_KEYS: [&str; 14] = [
    "ts",
    "level",
    "msg",
    "target",
    "pod_name",
    "message_id",
    "receive_count",
    "envelope_id",
    "event_type",
    "reservation_id",
    "trace_id",
    "attempt",
    "outcome",
    "latency_ms",
];

/// The "message finished" line of the message with this envelope id.
fn finished(w: &WorkerProcess, envelope_id: &str) -> Option<Value> {
    w.logs_with_message("message finished")
        .into_iter()
        .find(|l| l["envelope_id"] == envelope_id)
}

#[tokio::test]
async fn message_lines_are_flat_with_exact_keys_and_no_duplicates() {
    let h = Harness::start().await;
    h.peers.hold("r-ok");
    h.peers.hold("r-retry");
    // r-gone is not held: the reservation API answers 404, a terminal failure.
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Status(Code::Unavailable),
    );
    let w = h.worker(&[("POD_NAME", "worker-pod-7")]).await;

    let ok_id = h
        .queue
        .send_with(
            &bodies::approved("env-ok", "r-ok"),
            &[("TraceId", "trace-attr-1")],
            None,
        )
        .await;
    h.queue.send(&bodies::expired("env-retry", "r-retry")).await;
    h.queue.send(&bodies::approved("env-gone", "r-gone")).await;
    support::eventually("three messages finished", || {
        ["env-ok", "env-retry", "env-gone"]
            .iter()
            .all(|e| finished(&w, e).is_some())
    })
    .await;

    let ok = finished(&w, "env-ok").expect("success line");
    assert_eq!(key_set(&ok), set(&MESSAGE_KEYS), "{ok}");
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["outcome"], "success");
    assert_eq!(ok["pod_name"], "worker-pod-7");
    assert_eq!(ok["message_id"], ok_id.as_str());
    assert_eq!(ok["event_type"], "payment.approved");
    assert_eq!(ok["reservation_id"], "r-ok");
    assert_eq!(
        ok["trace_id"], "trace-attr-1",
        "the TraceId attribute wins over the body"
    );
    assert_eq!(ok["attempt"], 1);
    assert_eq!(ok["receive_count"], 1);
    assert!(ok["latency_ms"].is_u64());
    let ts = ok["ts"].as_str().expect("ts");
    assert!(
        ts.len() >= 20 && ts.ends_with('Z') && &ts[10..11] == "T",
        "RFC 3339 UTC: {ts}"
    );

    let retried = finished(&w, "env-retry").expect("retried line");
    assert_eq!(key_set(&retried), set(&MESSAGE_KEYS), "{retried}");
    assert_eq!(retried["attempt"], 2, "the attempt that succeeded");
    assert_eq!(retried["trace_id"], "trace-from-body");
    let failed_attempt = w
        .logs_with_message("step failed, retryable")
        .into_iter()
        .find(|l| l["envelope_id"] == "env-retry")
        .expect("the failed attempt is logged with the message's fields");
    for key in [
        "message_id",
        "event_type",
        "reservation_id",
        "trace_id",
        "pod_name",
    ] {
        assert_eq!(failed_attempt[key], retried[key], "{key}");
    }
    assert_eq!(failed_attempt["attempt"], 1);

    let gone = finished(&w, "env-gone").expect("dead-letter line");
    let mut dead_letter_keys = set(&MESSAGE_KEYS);
    dead_letter_keys.extend(set(&["reason", "error", "applied_steps"]));
    assert_eq!(key_set(&gone), dead_letter_keys, "{gone}");
    assert_eq!(
        gone["applied_steps"], "none",
        "the PATCH, the first step, failed"
    );
    assert_eq!(gone["level"], "WARN");
    assert_eq!(gone["outcome"], "dead_lettered");
    assert_eq!(gone["reason"], "downstream_rejected");
    assert_eq!(gone["trace_id"], "trace-from-body");
    // The acker's own line about the DLQ send carries the message's fields too. It comes after
    // "message finished" (the acker sends once the disposition is handed over), so wait for it.
    support::eventually("the acker's dead-lettered line", || {
        w.logs_with_message("dead-lettered")
            .iter()
            .any(|l| l["envelope_id"] == "env-gone")
    })
    .await;
    let sent = w
        .logs_with_message("dead-lettered")
        .into_iter()
        .find(|l| l["envelope_id"] == "env-gone")
        .expect("the acker's dead-lettered line, with the message's fields");
    for key in ["message_id", "event_type", "reservation_id", "trace_id"] {
        assert_eq!(sent[key], gone[key], "{key}");
    }

    // Every line: a flat JSON object, no key twice, the fixed keys, the pod name.
    let lines = w.raw_logs();
    assert!(lines.len() > 10, "{lines:?}");
    for line in &lines {
        let keys = top_level_keys(line).unwrap_or_else(|| panic!("not a JSON object: {line}"));
        let unique: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "duplicate key in {line}");
        assert_eq!(
            &keys[..5],
            ["ts", "level", "msg", "target", "pod_name"],
            "{line}"
        );
        let v: Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["pod_name"], "worker-pod-7", "{line}");
        assert!(
            v.as_object()
                .expect("object")
                .values()
                .all(|x| !x.is_object() && !x.is_array()),
            "flat: {line}"
        );
    }
}

#[tokio::test]
async fn a_warn_level_keeps_the_message_fields_on_warn_lines() {
    let h = Harness::start().await;
    // Not `h.worker()`: it finds the HTTP port in an `info` line, which `warn` leaves out.
    let mut env = h.env();
    env.push(("LOG_LEVEL".into(), "warn".into()));
    let w = WorkerProcess::spawn(&env);
    h.queue
        .send(&bodies::approved("env-warn", "r-missing"))
        .await;
    support::eventually("dead-lettered", || finished(&w, "env-warn").is_some()).await;
    let line = finished(&w, "env-warn").expect("line");
    assert_eq!(line["reservation_id"], "r-missing");
    assert_eq!(line["event_type"], "payment.approved");
    assert!(
        line["message_id"].is_string() && line["attempt"] == 1,
        "{line}"
    );
    assert!(
        w.json_logs()
            .iter()
            .all(|l| l["level"] == "WARN" || l["level"] == "ERROR"),
        "nothing below warn is written"
    );
}

#[tokio::test]
async fn an_unparseable_message_has_the_fields_that_are_known() {
    let h = Harness::start().await;
    let w = h.worker(&[]).await;
    let id = h.queue.send("{not json").await;
    support::eventually("dead-lettered", || {
        w.logs_with_message("message finished")
            .iter()
            .any(|l| l["message_id"] == id.as_str())
    })
    .await;
    let line = w
        .logs_with_message("message finished")
        .into_iter()
        .find(|l| l["message_id"] == id.as_str())
        .expect("line");
    // Not parsed: no envelope, event type, reservation, trace id or attempt; absent, not null.
    let mut keys = set(&MESSAGE_KEYS);
    for unknown in [
        "envelope_id",
        "event_type",
        "reservation_id",
        "trace_id",
        "attempt",
    ] {
        keys.remove(unknown);
    }
    keys.extend(set(&["reason", "error", "applied_steps"]));
    assert_eq!(key_set(&line), keys, "{line}");
    assert_eq!(
        line["pod_name"],
        Value::Null,
        "POD_NAME unset: null, but present"
    );
}

#[tokio::test]
async fn no_secret_reaches_any_output_even_at_trace_level() {
    no_secret_in_output("json").await;
}

#[tokio::test]
async fn no_secret_reaches_pretty_output_either() {
    no_secret_in_output("pretty").await;
}

/// Runs a worker holding secrets at `LOG_LEVEL=trace` through a success, a retry and a dead
/// letter, and checks that no secret appears on stdout or stderr.
async fn no_secret_in_output(format: &str) {
    const TOKEN: &str = "tok-unique-5d1f0c8e9a7b4e21";
    const AWS_SECRET: &str = "awssecret-unique-0b6c1f2e8d3a4957";
    const AWS_SESSION: &str = "awssession-unique-7e2d9c4b1a6f3085";
    let h = Harness::start().await;
    h.peers.reservations.set_token(Some(TOKEN.to_string()));
    h.peers.hold("r-s1");
    h.peers.hold("r-s2");
    h.peers
        .reservations
        .push_fault(HttpRoute::Patch, HttpFault::Status(503));
    let mut env = h.env();
    for (k, v) in [
        ("RESERVATION_API_TOKEN", TOKEN),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ("AWS_SESSION_TOKEN", AWS_SESSION),
        ("LOG_LEVEL", "trace"),
        ("LOG_FORMAT", format),
    ] {
        env.push((k.into(), v.into()));
    }
    // Spawned directly: pretty lines do not give `h.worker()` the HTTP port.
    let mut w = WorkerProcess::spawn(&env);
    h.queue.send(&bodies::expired("env-s1", "r-s1")).await;
    h.queue.send(&bodies::approved("env-s2", "r-s2")).await;
    h.queue.send(&bodies::approved("env-s3", "r-absent")).await;
    let finished_lines = |w: &WorkerProcess| {
        w.raw_logs()
            .into_iter()
            .filter(|l| {
                l.contains("message finished") && !l.contains("DEBUG") && !l.contains("TRACE")
            })
            .collect::<Vec<_>>()
    };
    support::eventually("three messages finished", || finished_lines(&w).len() == 3).await;
    let done = finished_lines(&w).join("\n");
    assert_eq!(done.matches("success").count(), 2, "{done}");
    assert_eq!(done.matches("dead_lettered").count(), 1, "{done}");
    let authorized = h
        .peers
        .reservations
        .calls()
        .iter()
        .filter(|c| {
            c.headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"))
        })
        .count();
    assert!(authorized >= 3, "the token was really sent");
    w.signal("TERM");
    w.wait_exit(support::PATIENCE).await;

    let out = w.raw_logs();
    let err = w.raw_stderr();
    assert!(
        out.iter()
            .any(|l| l.contains("TRACE") && l.contains("aws_smithy_runtime")),
        "the SDK really logged at trace"
    );
    for line in out.iter().chain(err.iter()) {
        for secret in [TOKEN, AWS_SECRET, AWS_SESSION] {
            assert!(!line.contains(secret), "secret in {format} output: {line}");
        }
    }
}

#[tokio::test]
async fn pretty_format_gives_human_lines() {
    let h = Harness::start().await;
    h.peers.hold("r-pretty");
    let mut env = h.env();
    env.push(("LOG_FORMAT".into(), "pretty".into()));
    let w = WorkerProcess::spawn(&env);
    h.queue
        .send(&bodies::expired("env-pretty", "r-pretty"))
        .await;
    support::eventually("message finished", || {
        w.raw_logs().iter().any(|l| l.contains("message finished"))
    })
    .await;
    let lines = w.raw_logs();
    for line in &lines {
        assert!(top_level_keys(line).is_none(), "not JSON: {line}");
        assert!(
            !line.contains('\u{1b}'),
            "no colour when stdout is not a terminal: {line}"
        );
    }
    let done = lines
        .iter()
        .find(|l| l.contains("message finished"))
        .expect("line");
    assert!(done.contains("INFO"), "{done}");
    assert!(done.contains("envelope_id=\"env-pretty\""), "{done}");
    assert!(done.contains("outcome=\"success\""), "{done}");
    assert!(
        !done.contains("messaging."),
        "trace attributes stay out of logs: {done}"
    );
}

#[tokio::test]
async fn rust_log_wins_over_log_level() {
    let h = Harness::start().await;
    h.peers.hold("r-rl");
    // `h.worker()` finds the HTTP port in an `info` line: with LOG_LEVEL alone there would be none.
    let w = h
        .worker(&[("LOG_LEVEL", "error"), ("RUST_LOG", "info")])
        .await;
    h.queue.send(&bodies::expired("env-rl", "r-rl")).await;
    support::eventually("finished", || finished(&w, "env-rl").is_some()).await;
    assert!(
        w.json_logs().iter().all(|l| l["level"] != "DEBUG"),
        "RUST_LOG=info also replaces the harness's reservation_worker=debug"
    );
}
