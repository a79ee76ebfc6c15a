//! The ops commands against real servers: `check` reaches the queue, its DLQ and both peers
//! and says which one is broken; `dlq peek` shows dead letters and leaves them; `dlq redrive`
//! moves them back (all, `--max N`, `--reason PATTERN`) without losing one, and a redriven
//! message is then processed by the running worker. A redrive ends even while a worker keeps
//! failing what it moves, leaves nothing hidden when interrupted or killed, moves nothing on
//! `--dry-run`, and sends only to the configured queue (or a `--to` the DLQ's
//! RedriveAllowPolicy permits), never where a message's SourceQueue attribute points.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use reservation_sim::proto::reservation::v1::CommitStatus;
use reservation_sim::{GrpcFault, InventoryMethod};
use support::fast_sqs::FastSqs;
use support::worker::{BIN, run};
use support::{Harness, TestQueue, bodies, eventually};

fn env_plus(h: &Harness, add: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = h.env();
    env.extend(add.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// The table row for `check`, split into (status, detail).
fn row<'a>(stdout: &'a str, check: &str) -> (&'a str, &'a str) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{check}  ")))
        .unwrap_or_else(|| panic!("no {check} row in:\n{stdout}"));
    let rest = line[check.len()..].trim_start();
    let (status, detail) = rest.split_once(' ').unwrap_or((rest, ""));
    (status, detail.trim_start())
}

fn closed_port() -> u16 {
    // Bound and dropped: nothing listens there afterwards.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

#[tokio::test]
async fn check_reports_every_part_ok_against_a_healthy_setup() {
    let h = Harness::start().await;
    let r = run(&h.env(), &["check"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    for check in [
        "config",
        "queue",
        "dead-letter queue",
        "inventory",
        "reservation api",
    ] {
        assert_eq!(row(&r.stdout, check).0, "ok", "{check}:\n{}", r.stdout);
    }
    let (_, dlq) = row(&r.stdout, "dead-letter queue");
    assert!(
        dlq.starts_with(&format!("{} (RedrivePolicy target)", h.dlq.url)),
        "{dlq}"
    );
    let (_, inv) = row(&r.stdout, "inventory");
    assert!(inv.contains(&h.peers.inventory_addr), "{inv}");
    assert!(r.stdout.starts_with("CHECK"), "{}", r.stdout);

    // An explicit SQS_DLQ_URL is reported as such.
    let r = run(&env_plus(&h, &[("SQS_DLQ_URL", &h.dlq.url)]), &["check"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(
        row(&r.stdout, "dead-letter queue")
            .1
            .contains("(SQS_DLQ_URL)"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn check_names_unreachable_peers_and_exits_1() {
    let h = Harness::start().await;
    let inv = format!("127.0.0.1:{}", closed_port());
    let api = format!("http://127.0.0.1:{}", closed_port());
    let r = run(
        &env_plus(
            &h,
            &[
                ("INVENTORY_GRPC_ADDR", &inv),
                ("RESERVATION_API_BASE", &api),
            ],
        ),
        &["check"],
    )
    .await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    let (status, detail) = row(&r.stdout, "inventory");
    assert_eq!(status, "FAIL", "{}", r.stdout);
    assert!(detail.contains(&inv), "{detail}");
    let (status, detail) = row(&r.stdout, "reservation api");
    assert_eq!(status, "FAIL", "{}", r.stdout);
    assert!(detail.contains(&api), "{detail}");
    assert_eq!(row(&r.stdout, "queue").0, "ok", "{}", r.stdout);

    // A queue that does not exist fails its row (and the DLQ cannot be found from it).
    let r = run(
        &env_plus(
            &h,
            &[(
                "SQS_QUEUE_URL",
                &format!("{}/123456789012/no-such-queue", h.sqs.endpoint()),
            )],
        ),
        &["check"],
    )
    .await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert_eq!(row(&r.stdout, "queue").0, "FAIL", "{}", r.stdout);
    assert_eq!(
        row(&r.stdout, "dead-letter queue").0,
        "FAIL",
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn check_and_dlq_with_a_bad_configuration_exit_78() {
    let h = Harness::start().await;
    for args in [&["check"][..], &["dlq", "peek"][..]] {
        let r = run(&env_plus(&h, &[("SQS_WAIT_TIME", "abc")]), args).await;
        assert_eq!(r.code, Some(78), "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.trim_end(),
            "configuration error: SQS_WAIT_TIME=\"abc\" is invalid: expected an integer from 0 to 20 (whole seconds)"
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
}

#[tokio::test]
async fn check_loads_the_secret_overlay_and_never_prints_the_token() {
    // Secrets Manager: moto serves it, the fast endpoint is SQS only.
    let h = Harness::on_moto().await;
    let token = "check-token-5d1e";
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new(
                support::moto::REGION,
            ))
            .endpoint_url(h.sqs.endpoint())
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build(),
    );
    secrets
        .create_secret()
        .name("ops/check")
        .secret_string(
            serde_json::json!({"sqs_queue_url": h.queue.url, "reservation_api_token": token})
                .to_string(),
        )
        .send()
        .await
        .expect("CreateSecret");
    let env: Vec<(String, String)> = env_plus(
        &h,
        &[("USE_SECRET_MANAGER", "true"), ("SECRET_NAME", "ops/check")],
    )
    .into_iter()
    .filter(|(k, _)| k != "SQS_QUEUE_URL")
    .collect();
    let r = run(&env, &["check"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let (_, config) = row(&r.stdout, "config");
    assert!(
        config.contains("secret ops/check applied: sqs_queue_url, reservation_api_token"),
        "{config}"
    );
    assert!(row(&r.stdout, "queue").1.starts_with(&h.queue.url));
    assert!(!r.stdout.contains(token) && !r.stderr.contains(token));

    let r = run(
        &env_plus(
            &h,
            &[
                ("USE_SECRET_MANAGER", "true"),
                ("SECRET_NAME", "ops/absent"),
            ],
        ),
        &["check"],
    )
    .await;
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(r.stderr.contains("ops/absent"), "{}", r.stderr);
}

// ---- dlq ---------------------------------------------------------------------------------

fn text(v: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .expect("attribute")
}

/// Puts a message on the DLQ the way the acker does, plus a trace attribute and a Number
/// attribute that a redrive must carry over unchanged.
async fn dead_letter(h: &Harness, body: &str, reason: &str, error: &str, original: &str) {
    dead_letter_with(h, body, reason, error, original, &[]).await;
}

/// [`dead_letter`] with more string attributes.
async fn dead_letter_with(
    h: &Harness,
    body: &str,
    reason: &str,
    error: &str,
    original: &str,
    extra: &[(&str, &str)],
) {
    let s = text;
    let mut req = h
        .dlq
        .client
        .send_message()
        .queue_url(&h.dlq.url)
        .message_body(body)
        .message_attributes("ReasonClass", s(reason))
        .message_attributes("ErrorMessage", s(error))
        .message_attributes("OriginalMessageId", s(original))
        .message_attributes("ReceiveCount", s("1"))
        .message_attributes("SourceQueue", s(&h.queue.url))
        .message_attributes(
            "traceparent",
            s("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        )
        .message_attributes(
            "Priority",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("7")
                .build()
                .expect("attribute"),
        );
    for (k, v) in extra {
        req = req.message_attributes(*k, s(v));
    }
    if h.dlq.url.ends_with(".fifo") {
        req = req.message_group_id(format!("group-{original}"));
    }
    req.send().await.expect("SendMessage to the DLQ");
}

/// Receives everything visible on `q` with every attribute and its type.
async fn drain(q: &TestQueue, n: usize) -> Vec<aws_sdk_sqs::types::Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while got.len() < n {
        let out = q
            .client
            .receive_message()
            .queue_url(&q.url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .visibility_timeout(60)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage");
        got.extend(out.messages().iter().cloned());
        if tokio::time::Instant::now() > deadline {
            panic!("expected {n} messages on {}, got {}", q.url, got.len());
        }
    }
    got
}

fn summary(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("moved "))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"))
}

#[tokio::test]
async fn dlq_peek_shows_reasons_and_leaves_the_messages_visible() {
    let h = Harness::start().await;
    let w = h.worker(&[]).await;
    let malformed = h.queue.send("{not json").await;
    let invalid = h
        .queue
        .send(&bodies::documented(
            "peek-2",
            "reservation.expired",
            serde_json::json!({"reservation_id": "r", "event_id": "e", "qty": -1}),
        ))
        .await;
    // Paid and CONFIRMED, then the seats' commit refused for good: half-applied.
    h.peers.hold("r-half");
    h.peers.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::CommitStatus(CommitStatus::FailedExpired),
    );
    h.queue.send(&bodies::approved("peek-3", "r-half")).await;
    h.wait_queue_empty().await;
    eventually("all three dead-lettered", || {
        w.logs_with_message("dead-lettered").len() >= 3
    })
    .await;
    drop(w);

    let r = run(&h.env(), &["dlq", "peek"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let out = &r.stdout;
    assert!(
        out.starts_with(&format!(
            "dead-letter queue {} (RedrivePolicy target): about 3 message(s); showing 3",
            h.dlq.url
        )),
        "{out}"
    );
    assert_eq!(out.matches("applied:    none\n").count(), 2, "{out}");
    for needle in [
        "reason:     malformed_json",
        "reason:     invalid_field",
        "reason:     downstream_rejected",
        "applied:    status_update  (half-applied: these took effect, the rest did not)",
        "COMMIT_STATUS_FAILED_EXPIRED",
        "detail.qty",
        malformed.as_str(),
        invalid.as_str(),
        "(receive count 1)",
        &format!("source:     {}", h.queue.url),
        "body:       {not json",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    // Still there, and visible at once (not just after the peek's visibility timeout).
    assert_eq!(h.dlq.depth().await, (3, 0));

    let r = run(&h.env(), &["dlq", "peek", "--max", "1"]).await;
    assert!(r.stdout.contains("showing 1"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("\n[").count(), 1, "{}", r.stdout);
    assert_eq!(h.dlq.depth().await, (3, 0));
}

#[tokio::test]
async fn dlq_redrive_moves_everything_back_with_bodies_and_attributes() {
    let h = Harness::start().await;
    let mut want = Vec::new();
    for i in 0..3 {
        let body = bodies::expired(&format!("redrive-{i}"), &format!("r-{i}"));
        dead_letter(
            &h,
            &body,
            "downstream_rejected",
            "ReleaseHold: nope",
            &format!("orig-{i}"),
        )
        .await;
        want.push(body);
    }
    let r = run(&h.env(), &["dlq", "redrive"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&r.stdout),
        "moved 3, skipped 0 (did not match), failed 0"
    );
    assert_eq!(h.dlq.depth().await, (0, 0), "the DLQ is empty");

    let moved = drain(&h.queue, 3).await;
    let mut got: Vec<String> = moved
        .iter()
        .map(|m| m.body().unwrap_or_default().to_string())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for m in &moved {
        let attrs: HashMap<String, MessageAttributeValue> =
            m.message_attributes().cloned().unwrap_or_default();
        let mut names: Vec<&str> = attrs.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            ["Priority", "traceparent"],
            "dead-letter attributes dropped"
        );
        assert_eq!(attrs["Priority"].data_type(), "Number");
        assert_eq!(attrs["Priority"].string_value(), Some("7"));
    }
}

#[tokio::test]
async fn dlq_redrive_max_moves_exactly_that_many_and_leaves_the_rest_visible() {
    let h = Harness::start().await;
    for i in 0..3 {
        dead_letter(
            &h,
            &format!("body-{i}"),
            "invalid_field",
            "detail.qty",
            &format!("o-{i}"),
        )
        .await;
    }
    let r = run(&h.env(), &["dlq", "redrive", "--max", "1"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&r.stdout),
        "moved 1, skipped 0 (did not match), failed 0"
    );
    assert_eq!(h.dlq.depth().await, (2, 0));
    assert_eq!(h.queue.depth().await, (1, 0));
}

#[tokio::test]
async fn dlq_redrive_reason_moves_only_matching_messages() {
    let h = Harness::start().await;
    dead_letter(
        &h,
        "invalid-1",
        "invalid_field",
        "detail.qty: expected an integer",
        "o-1",
    )
    .await;
    dead_letter(
        &h,
        "rejected-1",
        "downstream_rejected",
        "ReleaseHold: FAILED_PRECONDITION",
        "o-2",
    )
    .await;
    dead_letter(
        &h,
        "invalid-2",
        "invalid_field",
        "detail.event_id: missing",
        "o-3",
    )
    .await;
    let r = run(&h.env(), &["dlq", "redrive", "--reason", "invalid_field"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&r.stdout),
        "moved 2, skipped 1 (did not match), failed 0"
    );
    let mut moved: Vec<String> = drain(&h.queue, 2)
        .await
        .iter()
        .map(|m| m.body().unwrap_or_default().to_string())
        .collect();
    moved.sort();
    assert_eq!(moved, ["invalid-1", "invalid-2"]);
    // The other one is untouched and visible at once.
    assert_eq!(h.dlq.depth().await, (1, 0));
    let left = h.dlq.receive(30).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body, "rejected-1");
    assert_eq!(left[0].attributes["ReasonClass"], "downstream_rejected");

    // The pattern also matches inside ErrorMessage.
    h.dlq
        .client
        .change_message_visibility()
        .queue_url(&h.dlq.url)
        .receipt_handle(&left[0].receipt)
        .visibility_timeout(0)
        .send()
        .await
        .expect("release");
    let r = run(
        &h.env(),
        &["dlq", "redrive", "--reason", "FAILED_PRECONDITION"],
    )
    .await;
    assert_eq!(
        summary(&r.stdout),
        "moved 1, skipped 0 (did not match), failed 0"
    );
    assert_eq!(h.dlq.depth().await, (0, 0));
}

#[tokio::test]
async fn dlq_redrive_on_fifo_keeps_the_group() {
    let h = Harness::start_fifo().await;
    dead_letter(&h, "fifo-body", "downstream_rejected", "x", "orig-fifo").await;
    let r = run(&h.env(), &["dlq", "redrive"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&r.stdout),
        "moved 1, skipped 0 (did not match), failed 0"
    );
    let moved = drain(&h.queue, 1).await;
    assert_eq!(moved[0].body(), Some("fifo-body"));
    assert_eq!(
        moved[0]
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .map(String::as_str),
        Some("group-orig-fifo")
    );
    assert_eq!(h.dlq.depth().await, (0, 0));
}

#[tokio::test]
async fn a_redriven_message_is_processed_by_the_running_worker() {
    let h = Harness::start().await;
    h.peers.hold("r-redrive");
    // A terminal answer from the inventory service dead-letters the event…
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Status(tonic::Code::FailedPrecondition),
    );
    let w = h.worker(&[]).await;
    h.queue
        .send(&bodies::expired("env-redrive", "r-redrive"))
        .await;
    h.wait_queue_empty().await;
    let dead = h.dlq.receive_n(1).await;
    assert_eq!(dead[0].attributes["ReasonClass"], "downstream_rejected");
    h.dlq
        .client
        .change_message_visibility()
        .queue_url(&h.dlq.url)
        .receipt_handle(&dead[0].receipt)
        .visibility_timeout(0)
        .send()
        .await
        .expect("release");
    assert_eq!(
        h.peers.reservations.get("r-redrive").map(|r| r.status),
        Some("HELD".to_string())
    );

    // …the fault is gone (it was scripted for one call), so a redrive completes it.
    let r = run(&h.env(), &["dlq", "redrive"]).await;
    assert_eq!(
        summary(&r.stdout),
        "moved 1, skipped 0 (did not match), failed 0"
    );
    h.wait_queue_empty().await;
    let reservations = h.peers.reservations.clone();
    eventually("the redriven event applied", || {
        reservations.get("r-redrive").map(|r| r.status) == Some("EXPIRED".to_string())
    })
    .await;
    assert_eq!(h.dlq.depth().await, (0, 0));
    // Both deliveries carried the same idempotency key: the envelope id survived the trip.
    let calls = h.peers.inventory.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].fault.is_some() && calls[1].fault.is_none(),
        "{calls:?}"
    );
    assert!(
        calls.iter().all(|c| c.idempotency_key == "env-redrive"),
        "{calls:?}"
    );
    drop(w);
}

#[tokio::test]
async fn a_message_whose_send_fails_stays_on_the_dlq_and_the_exit_code_says_so() {
    let h = Harness::start().await;
    // The source queue refuses bodies over 1 KiB; the DLQ took one.
    h.queue
        .client
        .set_queue_attributes()
        .queue_url(&h.queue.url)
        .attributes(QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .expect("SetQueueAttributes");
    let big = "x".repeat(2000);
    dead_letter(&h, &big, "downstream_rejected", "x", "o-big").await;
    dead_letter(&h, "fine", "downstream_rejected", "x", "o-fine").await;
    let r = run(&h.env(), &["dlq", "redrive"]).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&r.stdout),
        "moved 1, skipped 0 (did not match), failed 1"
    );
    assert!(
        r.stderr.contains("not moved (still on the DLQ)"),
        "{}",
        r.stderr
    );
    // Not deleted, and visible again at once.
    assert_eq!(h.dlq.depth().await, (1, 0));
    assert_eq!(h.dlq.receive(30).await[0].body, big);
    assert_eq!(drain(&h.queue, 1).await[0].body(), Some("fine"));
}

// ---- redrive: ends, leaves nothing hidden, never follows an attribute ---------------------

/// Starts the binary with exactly `env` (plus PATH), its output piped.
fn spawn(env: &[(String, String)], args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn")
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("still running").to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Puts `n` dead letters on the DLQ in batches: the even ones with ReasonClass
/// `downstream_rejected`, the odd ones `invalid_field`.
async fn fill_dlq(h: &Harness, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .map(|i| {
                let reason = if i % 2 == 0 {
                    "downstream_rejected"
                } else {
                    "invalid_field"
                };
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("body-{i}"))
                    .message_attributes("ReasonClass", text(reason))
                    .message_attributes("OriginalMessageId", text(&format!("o-{i}")))
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = h
            .dlq
            .client
            .send_message_batch()
            .queue_url(&h.dlq.url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("SendMessageBatch");
        assert!(out.failed().is_empty(), "{:?}", out.failed());
    }
}

#[tokio::test]
async fn a_redrive_while_the_worker_fails_the_events_again_ends_and_leaves_their_copies() {
    let h = Harness::start().await;
    // The inventory service rejects every ReleaseHold (terminal): each redriven event is
    // dead-lettered again, under a new message id.
    for _ in 0..1000 {
        h.peers.inventory.push_fault(
            InventoryMethod::ReleaseHold,
            GrpcFault::Status(tonic::Code::FailedPrecondition),
        );
    }
    let w = h.worker(&[]).await;
    // Bodies without `id`: the envelope id travels as the EnvelopeId attribute.
    let mut body =
        serde_json::from_str::<serde_json::Value>(&bodies::expired("x", "r-0")).expect("json");
    body.as_object_mut().expect("object").remove("id");
    for i in 0..3 {
        h.peers.hold(&format!("r-{i}"));
        body["detail"]["reservation_id"] = serde_json::json!(format!("r-{i}"));
        dead_letter_with(
            &h,
            &body.to_string(),
            "downstream_rejected",
            "ReleaseHold: nope",
            &format!("orig-{i}"),
            &[("EnvelopeId", &format!("stable-{i}"))],
        )
        .await;
    }

    let r = run(&h.env(), &["dlq", "redrive"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&r.stdout),
        "moved 3, skipped 0 (did not match), failed 0"
    );
    if let Some(line) = r.stdout.lines().find(|l| l.contains("came back")) {
        assert!(
            ["1 ", "2 ", "3 "].iter().any(|n| line.starts_with(n)),
            "{line}"
        );
    }
    h.wait_queue_empty().await;
    let dlq = h.dlq.clone();
    let mut depth = (0, 0);
    for _ in 0..100 {
        depth = dlq.depth().await;
        if depth == (3, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(depth, (3, 0), "the three copies, visible");
    // Each event was tried once: no loop of redrive and dead-letter.
    let calls = h.peers.inventory.calls();
    let mut keys: Vec<&str> = calls.iter().map(|c| c.idempotency_key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["stable-0", "stable-1", "stable-2"], "{calls:?}");
    let copies = h.dlq.receive(30).await;
    assert_eq!(copies.len(), 3);
    let mut envelope_ids: Vec<&str> = copies
        .iter()
        .map(|m| m.attributes["EnvelopeId"].as_str())
        .collect();
    envelope_ids.sort();
    assert_eq!(envelope_ids, ["stable-0", "stable-1", "stable-2"]);
    for m in &copies {
        assert_eq!(m.attributes["ReasonClass"], "downstream_rejected");
        assert!(
            !m.attributes["OriginalMessageId"].starts_with("orig-"),
            "{m:?}"
        );
    }
    drop(w);
}

#[tokio::test]
async fn a_redrive_stopped_by_sigint_leaves_nothing_hidden_and_says_what_it_did() {
    let h = Harness::start().await;
    let n = 300;
    fill_dlq(&h, n).await;
    // Every other message does not match: a run holds those hidden until it ends.
    let mut child = spawn(
        &h.env(),
        &["dlq", "redrive", "--reason", "downstream_rejected"],
    );
    let q = h.queue.clone();
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while q.depth().await.0 < 10 {
        assert!(tokio::time::Instant::now() < deadline, "nothing moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, "INT");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the redrive stopped")
        .expect("wait");
    let (dlq_visible, dlq_hidden) = h.dlq.depth().await;
    let mut stdout = String::new();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt as _;
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut stdout).await.expect("stdout");
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).await.expect("stderr");
    }
    assert_eq!(out.code(), Some(130), "{stdout}\n{stderr}");
    assert_eq!(dlq_hidden, 0, "nothing left hidden:\n{stdout}\n{stderr}");
    let moved: u64 = summary(&stdout)
        .strip_prefix("moved ")
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(moved < n as u64 / 2, "stopped early: {stdout}");
    assert_eq!(h.queue.depth().await, (moved, 0));
    assert_eq!(dlq_visible + moved, n as u64, "none lost");
    assert!(stderr.contains("interrupted by a signal"), "{stderr}");
}

#[tokio::test]
async fn a_killed_redrive_leaves_nothing_hidden_for_long() {
    let h = Harness::start().await;
    let n = 200;
    fill_dlq(&h, n).await;
    let mut child = spawn(
        &h.env(),
        &["dlq", "redrive", "--reason", "downstream_rejected"],
    );
    let q = h.queue.clone();
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while q.depth().await.0 < 10 {
        assert!(tokio::time::Instant::now() < deadline, "nothing moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, "KILL");
    let _ = child.wait().await;
    assert!(h.dlq.depth().await.1 > 0, "the killed run held messages");
    // The hold is 30 s, renewed every 10 s while the run lasted: whatever the killed run held
    // comes back within 30 s of the kill. The endpoint says when, so the test need not wait.
    let dlq_name = h.dlq.url.rsplit('/').next().expect("queue name");
    let longest = h
        .sqs
        .sim()
        .longest_hold(dlq_name)
        .expect("messages in flight");
    assert!(
        longest <= Duration::from_secs(30),
        "a message stays hidden {longest:?} after the kill"
    );
}

#[tokio::test]
async fn dlq_redrive_dry_run_lists_what_would_move_moves_nothing_and_warns_of_a_consumer() {
    let h = Harness::start().await;
    for i in 0..3 {
        dead_letter(
            &h,
            &format!("body-{i}"),
            "downstream_rejected",
            "x",
            &format!("orig-{i}"),
        )
        .await;
    }
    // A consumer holds a message of the source queue: the run warns.
    h.queue.send("in-flight").await;
    assert_eq!(h.queue.receive(60).await.len(), 1);
    let r = run(&h.env(), &["dlq", "redrive", "--dry-run"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "dlq: warning: {} has 1 message(s) in flight: a consumer is running.",
            h.queue.url
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("(dry run)")),
        "{}",
        r.stdout
    );
    for i in 0..3 {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with("would move message ")
                    && l.ends_with(&format!("reason downstream_rejected, original orig-{i}"))),
            "{}",
            r.stdout
        );
    }
    assert!(
        r.stdout
            .contains("dry run: would move 3, skipped 0 (did not match); nothing was moved"),
        "{}",
        r.stdout
    );
    assert_eq!(h.dlq.depth().await, (3, 0), "all still there, visible");
    assert_eq!(h.queue.depth().await, (0, 1), "nothing moved");
}

#[tokio::test]
async fn a_source_queue_attribute_naming_another_queue_is_not_followed() {
    let h = Harness::start().await;
    let third = h.sqs.create_queue("someone-elses-queue", None).await;
    h.dlq
        .send_with(
            "aimed-elsewhere",
            &[
                ("ReasonClass", "downstream_rejected"),
                ("SourceQueue", &third.url),
            ],
            None,
        )
        .await;
    dead_letter(&h, "ours", "downstream_rejected", "x", "o-ours").await;
    // Moved by the queue's own RedrivePolicy: no SourceQueue.
    h.dlq.send("moved-by-policy").await;

    let r = run(&h.env(), &["dlq", "redrive"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&r.stdout),
        "moved 2, skipped 0 (did not match), failed 0"
    );
    assert!(
        r.stdout.contains(&format!(
            "skipped 1 (SourceQueue names another queue: {}); left on the DLQ",
            third.url
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.lines().any(|l| l.starts_with("skipped message ")
            && l.ends_with(&format!(
                "SourceQueue names another queue ({}), not {}",
                third.url, h.queue.url
            ))),
        "{}",
        r.stdout
    );
    assert_eq!(
        third.depth().await,
        (0, 0),
        "nothing sent where the attribute points"
    );
    assert_eq!(h.dlq.depth().await, (1, 0));
    assert_eq!(h.dlq.receive(30).await[0].body, "aimed-elsewhere");
    let mut moved: Vec<String> = drain(&h.queue, 2)
        .await
        .iter()
        .map(|m| m.body().unwrap_or_default().to_string())
        .collect();
    moved.sort();
    assert_eq!(moved, ["moved-by-policy", "ours"]);
}

#[tokio::test]
async fn redrive_to_another_queue_only_when_the_dlq_redrive_allow_policy_names_it() {
    // moto does not keep RedriveAllowPolicy; the crate's SQS simulator does.
    let sqs = FastSqs::start().await;
    let source = sqs.create_queue_with("events", &[]).await;
    let other = sqs.create_queue_with("events-replay", &[]).await;
    let stranger = sqs.create_queue_with("not-named", &[]).await;
    let policy = serde_json::json!({"redrivePermission": "byQueue", "sourceQueueArns": [source.arn, other.arn]});
    let dlq = sqs
        .create_queue_with(
            "events-dlq",
            &[(QueueAttributeName::RedriveAllowPolicy, &policy.to_string())],
        )
        .await;
    dlq.send("moved-by-policy").await;
    let mut env = sqs.aws_env();
    env.push(("SQS_QUEUE_URL".into(), source.url.clone()));
    env.push(("SQS_DLQ_URL".into(), dlq.url.clone()));

    let r = run(&env, &["dlq", "redrive", "--to", &stranger.url]).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stderr.trim_end(),
        format!(
            "dlq: --to {}: not SQS_QUEUE_URL ({}) and not a queue the DLQ's RedriveAllowPolicy permits (byQueue: 000000000000/events, 000000000000/events-replay); a redrive moves messages only to the source queue or a queue that policy names",
            stranger.url, source.url
        )
    );
    assert_eq!(dlq.depth().await, (1, 0));
    assert_eq!(stranger.depth().await, (0, 0));

    let r = run(&env, &["dlq", "redrive", "--to", &other.url]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&r.stdout),
        "moved 1, skipped 0 (did not match), failed 0"
    );
    assert_eq!(other.receive_n(1).await[0].body, "moved-by-policy");
    assert_eq!(dlq.depth().await, (0, 0));
}
