//! No output of the process ever shows a secret, however it got into the text. The reservation
//! API here quotes the request's `Authorization` header in its error bodies, and the token holds
//! `"` and `\`, which JSON and `Debug` escape: every text the worker and its commands write is
//! then grepped for the token's unique tail, which any encoding of it keeps.

use crate::support;

use reservation_sim::{HttpFault, HttpRoute};
use reservation_worker::proto::reservation::worker::v1::worker_debug_client::WorkerDebugClient;
use reservation_worker::proto::reservation::worker::v1::{GetStatusRequest, ProcessEventRequest};
use support::otlp::OtlpReceiver;
use support::worker::run;
use support::{Harness, bodies};

/// A token with the characters that escaping changes; its tail is what the grep looks for.
const TOKEN: &str = r#"tok"en\echo-5f1c2a9e"#;
const TAIL: &str = "5f1c2a9e";

/// Found by attacking the promise: a token holding `"` or `\` was written JSON-escaped and the
/// line scan missed it (5 lines at `LOG_LEVEL=trace`), and a token a peer echoed went verbatim
/// into the DLQ's `ErrorMessage` and `dlq peek`.
#[tokio::test]
async fn a_token_the_peer_echoes_reaches_no_output() {
    let h = Harness::start().await;
    let otlp = OtlpReceiver::start().await;
    h.peers.reservations.set_token(Some(TOKEN.to_string()));
    for r in ["r-echo-1", "r-echo-2", "r-echo-3"] {
        h.peers.hold(r);
    }
    // One terminal echo (dead-lettered), one retryable echo (logged, retried).
    for status in [422, 503] {
        h.peers
            .reservations
            .push_fault(HttpRoute::Patch, HttpFault::EchoCredentials(status));
    }
    let extra = [
        ("RESERVATION_API_TOKEN", TOKEN),
        ("LOG_LEVEL", "trace"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.grpc_endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("DEBUG_PROCESS_EVENT", "true"),
        ("WORKER_CONCURRENCY", "1"),
    ];
    let mut w = h.worker(&extra).await;
    h.queue
        .send(&bodies::expired("env-echo-1", "r-echo-1"))
        .await;
    h.queue
        .send(&bodies::approved("env-echo-2", "r-echo-2"))
        .await;
    h.wait_queue_empty().await;
    let echoed = h
        .peers
        .reservations
        .calls()
        .iter()
        .filter(|c| c.fault.as_deref().is_some_and(|f| f.starts_with("echo")))
        .count();
    assert_eq!(echoed, 2, "the peer really echoed the token");

    // And one for the debug port's ProcessEvent.
    h.peers
        .reservations
        .push_fault(HttpRoute::Patch, HttpFault::EchoCredentials(422));
    let port = w.grpc_port().await;
    let mut debug = WorkerDebugClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("debug port");
    let status = debug
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    let processed = debug
        .process_event(ProcessEventRequest {
            body: bodies::failed("env-echo-3", "r-echo-3"),
            ..Default::default()
        })
        .await
        .expect("ProcessEvent")
        .into_inner();
    assert!(
        processed.error.contains("Authorization"),
        "the echo came back: {processed:?}"
    );
    let (_, metrics) = w.get("/metrics").await.expect("metrics");
    let (_, health) = w.get("/health").await.expect("health");

    let mut env = h.env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let check = run(&env, &["check"]).await;
    let peek = run(&env, &["dlq", "peek"]).await;
    assert!(
        peek.stdout.contains("downstream_rejected"),
        "{}",
        peek.stdout
    );
    let letters = h.dlq.receive_n(1).await;
    let error = letters[0]
        .attributes
        .get("ErrorMessage")
        .cloned()
        .unwrap_or_default();
    assert!(
        error.contains("Authorization") && error.contains("***"),
        "{error}"
    );

    support::eventually("spans exported", || {
        otlp.all_text().contains("Authorization")
    })
    .await;
    w.signal("TERM");
    w.wait_exit(support::PATIENCE).await;
    w.finish_logs();

    let outputs = [
        ("worker stdout", w.raw_logs().join("\n")),
        ("worker stderr", w.raw_stderr().join("\n")),
        ("DLQ attributes and body", format!("{letters:?}")),
        ("spans", otlp.all_text()),
        ("/metrics", metrics),
        ("/health", health),
        ("GetStatus", format!("{status:?}")),
        ("ProcessEvent", format!("{processed:?}")),
        ("check", format!("{}{}", check.stdout, check.stderr)),
        ("dlq peek", format!("{}{}", peek.stdout, peek.stderr)),
    ];
    assert!(
        outputs[0].1.lines().any(|l| l.contains("TRACE")),
        "the worker really logged at trace"
    );
    for (what, text) in &outputs {
        if let Some(at) = text.find(TAIL) {
            let before: String = text[..at].chars().rev().take(120).collect();
            let before: String = before.chars().rev().collect();
            panic!("the token leaked into {what}: …{before}{TAIL}…");
        }
    }
}
