//! `reservation-worker send` puts parseable events on the queue: from flags, a JSONL file, or
//! N generated ones. A file goes out in batches that fit SQS's request limit, each line is
//! reported (sent, or refused and why), a refused line does not stop the others, and sending
//! the same file twice sends the same events (the same envelope ids), not new ones.

use crate::support;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use reservation_worker::event::{self, EventKind, MessageContext};
use serde_json::{Value, json};
use support::fast_sqs::FastSqs;
use support::{Harness, Moto, bodies, eventually, worker::BIN};

async fn send(moto: &Moto, queue_url: &str, args: &[&str]) -> std::process::Output {
    send_with(&moto.aws_env(), queue_url, args).await
}

/// Runs `send` with exactly `env` and the queue URL, without blocking the test's runtime (the
/// SQS simulator and the peers run on it).
async fn send_with(
    env: &[(String, String)],
    queue_url: &str,
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .arg("send")
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SQS_QUEUE_URL", queue_url)
        .output()
        .await
        .expect("run send")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `lines` as a JSONL file in `dir`.
fn jsonl(dir: &tempfile::TempDir, lines: &[String]) -> String {
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the file");
    path.to_str().expect("utf-8 path").to_string()
}

/// A documented event with its `id` removed: the worker must take the envelope id from
/// elsewhere.
fn without_id(body: &str) -> String {
    let mut v: Value = serde_json::from_str(body).expect("json");
    v.as_object_mut().expect("object").remove("id");
    v.to_string()
}

/// The report line `send` printed for a file line.
fn report(out: &str, line: usize) -> &str {
    let prefix = format!("line {line}: ");
    out.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no report for line {line} in:\n{out}"))
}

#[tokio::test]
async fn send_from_flags_file_and_count() {
    let moto = Moto::start().await;
    let q = moto.create_queue("send-test", None).await;

    let out = send(
        &moto,
        &q.url,
        &[
            "--type",
            "payment.approved",
            "--reservation-id",
            "r-1",
            "--payment-intent-id",
            "pi-1",
            "--amount",
            "100",
            "--id",
            "env-1",
            "--form",
            "sns",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = q.receive_n(1).await;
    let ev = event::parse(&got[0].body, &MessageContext::default()).expect("a valid event");
    assert_eq!(ev.envelope_id, "env-1");
    match ev.kind {
        EventKind::PaymentApproved(p) => {
            assert_eq!(p.reservation_id, "r-1");
            assert_eq!(p.payment_intent_id, "pi-1");
        }
        other => panic!("wrong kind {other:?}"),
    }

    // --allow-invalid sends lines the worker would dead-letter, as they are.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, "{\"a\":1}\n\n{\"b\":2}\nnot json\n").expect("write");
    let out = send(
        &moto,
        &q.url,
        &["--file", file.to_str().expect("path"), "--allow-invalid"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [1, 3, 4] {
        assert!(report(&stdout(&out), line).contains(": sent as message "));
    }
    let bodies: Vec<String> = q.receive_n(3).await.into_iter().map(|m| m.body).collect();
    for line in ["{\"a\":1}", "{\"b\":2}", "not json"] {
        assert!(bodies.contains(&line.to_string()), "{bodies:?}");
    }

    // --queue-url stands in for SQS_QUEUE_URL.
    let out = Command::new(BIN)
        .args(["send", "--count", "25", "--queue-url", q.url.as_str()])
        .env_clear()
        .envs(moto.aws_env())
        .output()
        .expect("run send");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).starts_with(&format!("sent 25 of 25 message(s) to {}", q.url)),
        "{}",
        stdout(&out)
    );
    let got = q.receive_n(25).await;
    let mut kinds = [0usize; 3];
    for m in &got {
        match event::parse(&m.body, &MessageContext::default())
            .expect("generated events are valid")
            .kind
        {
            EventKind::ReservationExpired(_) => kinds[0] += 1,
            EventKind::PaymentApproved(_) => kinds[1] += 1,
            EventKind::PaymentFailed(_) => kinds[2] += 1,
        }
    }
    assert_eq!(kinds, [9, 8, 8]);
}

/// A valid expiry event padded to about `bytes` with a field the worker ignores.
fn padded_event(i: usize, bytes: usize) -> String {
    let mut v: Value =
        serde_json::from_str(&bodies::expired(&format!("big-{i}"), &format!("r-{i}")))
            .expect("json");
    v["padding"] = json!("x".repeat(bytes));
    v.to_string()
}

#[tokio::test]
async fn ten_30_kib_events_are_all_sent_in_batches_that_fit_the_request_limit() {
    // SqsSim holds a batch to SQS's 256 KiB request limit (moto allows 1 MiB).
    let sqs = FastSqs::start().await;
    let q = sqs.create_queue_with("big-events", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: Vec<String> = (0..10).map(|i| padded_event(i, 30 * 1024)).collect();
    let file = jsonl(&dir, &lines);

    let out = send_with(&sqs.aws_env(), &q.url, &["--file", &file]).await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in 1..=10 {
        assert!(report(&text, line).contains(": sent as message "), "{text}");
    }
    assert!(text.contains("sent 10 of 10 message(s)"), "{text}");
    assert_eq!(q.depth().await, (10, 0));
    // Cut by size, not one message per call: 8 fit under 256 KiB, then 2.
    assert_eq!(sqs.sim.stats().send_message_batch, 2);
}

#[tokio::test]
async fn a_refused_line_is_reported_by_number_the_others_are_sent_and_the_exit_code_says_so() {
    let moto = Moto::start().await;
    let q = moto.create_queue("refusals", None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = vec![
        bodies::expired("ok-1", "r-1"),
        padded_event(2, 300 * 1024),
        bodies::documented(
            "bad-qty",
            "reservation.expired",
            json!({"reservation_id": "r-3", "event_id": "e", "qty": -1}),
        ),
        String::new(),
        "not json".to_string(),
        bodies::approved("ok-6", "r-6"),
    ];
    let file = jsonl(&dir, &lines);

    let out = send(&moto, &q.url, &["--file", &file]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        report(&text, 1).starts_with("line 1: sent as message "),
        "{text}"
    );
    assert!(report(&text, 1).ends_with(", envelope id ok-1"), "{text}");
    let size = lines[1].len() + "EnvelopeId".len() + "String".len() + 36;
    assert_eq!(
        report(&text, 2),
        format!(
            "line 2: refused: {size} bytes with its attributes, more than the 262144 one SQS message may hold"
        )
    );
    assert_eq!(
        report(&text, 3),
        "line 3: refused: the worker would dead-letter it (invalid_field): detail.qty: expected an integer from 0 to 2147483647, found number -1"
    );
    assert!(!text.contains("line 4:"), "a blank line is skipped: {text}");
    assert!(
        report(&text, 5)
            .starts_with("line 5: refused: the worker would dead-letter it (malformed_json): "),
        "{text}"
    );
    assert!(report(&text, 6).ends_with(", envelope id ok-6"), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("sent 2 of 5 message(s)")
                && l.ends_with("; refused 3: line 2, line 3, line 5")),
        "{text}"
    );
    let mut got: Vec<String> = q.receive_n(2).await.into_iter().map(|m| m.body).collect();
    got.sort();
    let mut want = [lines[0].clone(), lines[5].clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(q.depth().await, (0, 2), "nothing else was sent");
}

#[tokio::test]
async fn sending_the_same_file_twice_applies_each_event_once() {
    let h = Harness::start().await;
    for r in ["r-1", "r-2", "r-3"] {
        h.peers.hold(r);
    }
    // No memory of completed ids: the second run reaches the peers, with the same keys.
    let w = h.worker(&[("DEDUPE_CAPACITY", "0")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = vec![
        without_id(&bodies::expired("x", "r-1")),
        without_id(&bodies::approved("x", "r-2")),
        without_id(&bodies::failed("x", "r-3")),
    ];
    let file = jsonl(&dir, &lines);
    let envelope_ids = |text: &str| -> Vec<String> {
        (1..=3)
            .map(|n| {
                report(text, n)
                    .split_once(", envelope id ")
                    .unwrap_or_else(|| panic!("no envelope id in:\n{text}"))
                    .1
                    .to_string()
            })
            .collect()
    };

    // Each run's idempotency keys as the inventory service saw them, and as `send` reported.
    let mut seen = Vec::new();
    let mut outputs = Vec::new();
    for run in 1..=2 {
        let out = send_with(&h.sqs.aws_env(), &h.queue.url, &["--file", &file]).await;
        assert!(out.status.success(), "{}", stdout(&out));
        h.wait_queue_empty().await;
        let inventory = h.peers.inventory.clone();
        eventually("each event reached the inventory service", || {
            inventory.calls().len() == 3 * run
        })
        .await;
        let keys: BTreeSet<String> = h.peers.inventory.calls()[3 * (run - 1)..]
            .iter()
            .map(|c| c.idempotency_key.clone())
            .collect();
        seen.push(keys);
        outputs.push(stdout(&out));
    }
    assert_eq!(seen[0], seen[1], "the second run carried the same keys");
    let reported: Vec<Vec<String>> = outputs.iter().map(|o| envelope_ids(o)).collect();
    assert_eq!(
        reported[0], reported[1],
        "and reported the same envelope ids"
    );
    assert_eq!(
        seen[0],
        reported[0].iter().cloned().collect::<BTreeSet<_>>()
    );

    let calls = h.peers.inventory.calls();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for c in calls.iter().filter(|c| c.applied) {
        *by_key.entry(c.idempotency_key.as_str()).or_default() += 1;
    }
    assert!(
        by_key.values().all(|n| *n == 1) && by_key.len() == 3,
        "{calls:?}"
    );
    let rest_keys: BTreeSet<String> = h
        .peers
        .reservations
        .calls()
        .iter()
        .filter(|c| c.method == "PATCH")
        .filter_map(|c| c.headers.get("idempotency-key").cloned())
        .collect();
    assert_eq!(rest_keys.len(), 3, "{rest_keys:?}");
    for r in ["r-1", "r-2", "r-3"] {
        assert_eq!(
            h.peers
                .inventory
                .calls_for(r)
                .iter()
                .filter(|c| c.applied)
                .count(),
            1
        );
    }
    drop(w);
}
