//! Traces over OTLP, checked with an in-process collector: one `process` span per message
//! continuing the message's trace (W3C `traceparent`, X-Ray `AWSTraceHeader`, or the
//! envelope's trace id), CLIENT spans for the gRPC and REST calls whose `traceparent` the
//! peers receive, SQS spans, both OTLP protocols, the OTEL_* settings, flushing at SIGTERM,
//! and nothing at all when no endpoint is set.

use crate::support;

use aws_sdk_sqs::types::{MessageSystemAttributeNameForSends, MessageSystemAttributeValue};
use reservation_sim::{GrpcFault, InventoryMethod, SqsFault, SqsOperation};
use support::otlp::{KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, OtlpReceiver, ReceivedSpan};
use support::{Harness, WorkerProcess, bodies};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{PARENT}-01")
}

/// The worker exporting to `endpoint` with `protocol`, flushing every 100 ms.
async fn traced_worker(h: &Harness, endpoint: &str, extra: &[(&str, &str)]) -> WorkerProcess {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    env.extend_from_slice(extra);
    h.worker(&env).await
}

/// Waits for a span matching `pred` and returns it.
async fn span_where(
    r: &OtlpReceiver,
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> ReceivedSpan {
    support::eventually(what, || r.spans().iter().any(&pred)).await;
    r.spans().into_iter().find(|s| pred(s)).expect("span")
}

/// The process span of the message whose envelope id is `envelope_id`.
async fn process_span(r: &OtlpReceiver, envelope_id: &str) -> ReceivedSpan {
    span_where(r, "the process span", |s| {
        s.name == "process events" && s.attr("reservation_worker.envelope_id") == Some(envelope_id)
    })
    .await
}

#[tokio::test]
async fn process_span_continues_the_traceparent_and_the_peers_get_the_callers_context() {
    let h = Harness::start().await;
    let r = OtlpReceiver::start().await;
    h.peers.hold("r-tp");
    let w = traced_worker(
        &h,
        &r.grpc_endpoint,
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
    )
    .await;
    let message_id = h
        .queue
        .send_with(
            &bodies::expired("env-tp", "r-tp"),
            &[("traceparent", &traceparent())],
            None,
        )
        .await;

    let process = process_span(&r, "env-tp").await;
    assert_eq!(process.via, "grpc");
    assert_eq!(process.kind, KIND_CONSUMER);
    assert_eq!(process.trace_id, TRACE);
    assert_eq!(process.parent_span_id, PARENT, "parent = the sender's span");
    for (k, v) in [
        ("messaging.system", "aws_sqs"),
        ("messaging.destination.name", "events"),
        ("messaging.message.id", message_id.as_str()),
        ("messaging.operation.type", "process"),
        ("messaging.operation.name", "process"),
        ("messaging.operation", "process"),
        ("reservation_worker.event_type", "reservation.expired"),
        ("reservation_worker.reservation_id", "r-tp"),
        ("reservation_worker.receive_count", "1"),
        ("reservation_worker.outcome", "success"),
    ] {
        assert_eq!(process.attr(k), Some(v), "{k}: {process:?}");
    }
    // The worker's own attributes under one namespace; the message id only once, as the
    // convention names it.
    for k in process.attributes.keys() {
        assert!(
            k.starts_with("messaging.") || k.starts_with("reservation_worker."),
            "{k} on the process span: {process:?}"
        );
    }
    assert_eq!(
        process.resource.get("service.name").map(String::as_str),
        Some("reservation-worker")
    );
    let instance = process
        .resource
        .get("service.instance.id")
        .expect("service.instance.id");
    assert_eq!(instance.len(), 36, "a UUID: {instance}");

    let grpc = span_where(&r, "the ReleaseHold span", |s| {
        s.name == "reservation.v1.InventoryService/ReleaseHold" && s.trace_id == TRACE
    })
    .await;
    assert_eq!(grpc.kind, KIND_CLIENT);
    assert_eq!(
        grpc.parent_span_id, process.span_id,
        "child of the process span"
    );
    for (k, v) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "reservation.v1.InventoryService"),
        ("rpc.method", "ReleaseHold"),
        ("rpc.grpc.status_code", "0"),
        ("server.address", "127.0.0.1"),
    ] {
        assert_eq!(grpc.attr(k), Some(v), "{k}: {grpc:?}");
    }
    let inventory_port = h.peers.inventory_addr.rsplit(':').next().expect("a port");
    assert_eq!(
        grpc.attr("server.port"),
        Some(inventory_port.trim_end_matches('/'))
    );
    assert_eq!(grpc.attr("error.type"), None, "it succeeded");

    let rest = span_where(&r, "the PATCH span", |s| {
        s.name == "PATCH" && s.trace_id == TRACE
    })
    .await;
    assert_eq!(rest.kind, KIND_CLIENT);
    assert_eq!(
        rest.parent_span_id, process.span_id,
        "child of the process span"
    );
    let url = format!("{}/internal/reservations/r-tp", h.peers.reservation_base);
    for (k, v) in [
        ("http.request.method", "PATCH"),
        ("url.full", url.as_str()),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(rest.attr(k), Some(v), "{k}: {rest:?}");
    }

    // Each peer received the context of the span that called it.
    let inventory = h.peers.inventory.calls_for("r-tp");
    assert_eq!(
        inventory[0].metadata.get("traceparent").map(String::as_str),
        Some(format!("00-{TRACE}-{}-01", grpc.span_id).as_str())
    );
    let patch = h
        .peers
        .reservations
        .calls_for("r-tp")
        .into_iter()
        .find(|c| c.method == "PATCH")
        .expect("PATCH");
    assert_eq!(
        patch.headers.get("traceparent").map(String::as_str),
        Some(format!("00-{TRACE}-{}-01", rest.span_id).as_str())
    );

    // The SQS calls have spans of their own; the process span links to the receive that
    // delivered the message.
    let receive = span_where(&r, "a ReceiveMessage span", |s| {
        s.name == "ReceiveMessage events"
    })
    .await;
    assert_eq!(
        process.links,
        [(receive.trace_id.clone(), receive.span_id.clone())],
        "{process:?}"
    );
    assert_eq!(receive.attr("messaging.batch.message_count"), Some("1"));
    assert_eq!(receive.kind, KIND_CLIENT);
    assert_eq!(receive.attr("messaging.system"), Some("aws_sqs"));
    assert_eq!(
        receive.attr("messaging.operation.name"),
        Some("ReceiveMessage")
    );
    assert_eq!(receive.attr("messaging.operation.type"), Some("receive"));
    let delete = span_where(&r, "a DeleteMessageBatch span", |s| {
        s.name == "DeleteMessageBatch events"
    })
    .await;
    assert_eq!(delete.attr("messaging.operation.type"), Some("settle"));
    assert_eq!(delete.attr("messaging.batch.message_count"), Some("1"));
    drop(w);
}

#[tokio::test]
async fn http_protobuf_is_the_default_and_otel_settings_are_honoured() {
    let h = Harness::start().await;
    let r = OtlpReceiver::start().await;
    h.peers.hold("r-http");
    let _w = traced_worker(
        &h,
        &r.http_endpoint,
        &[
            ("OTEL_SERVICE_NAME", "worker-under-test"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,team=tickets",
            ),
            ("POD_NAME", "pod-http-1"),
        ],
    )
    .await;
    h.queue.send(&bodies::approved("env-http", "r-http")).await;
    let process = process_span(&r, "env-http").await;
    assert_eq!(
        process.via, "http",
        "no protocol set: OTLP/HTTP with protobuf"
    );
    let res = |k: &str| process.resource.get(k).cloned();
    assert_eq!(res("service.name").as_deref(), Some("worker-under-test"));
    assert_eq!(res("deployment.environment").as_deref(), Some("test"));
    assert_eq!(res("team").as_deref(), Some("tickets"));
    assert_eq!(res("k8s.pod.name").as_deref(), Some("pod-http-1"));
    assert!(res("service.version").is_some());
    assert_eq!(
        process.parent_span_id, "",
        "no incoming context: a root span"
    );
    let commit = span_where(&r, "the CommitReservation span", |s| {
        s.name == "reservation.v1.InventoryService/CommitReservation"
    })
    .await;
    assert_eq!(commit.trace_id, process.trace_id);
    assert_eq!(commit.parent_span_id, process.span_id);

    // The lookup of missing inventory fields (a GET) carries its own span's context too.
    h.peers.hold("r-get");
    h.queue
        .send(&bodies::documented(
            "env-get",
            "payment.approved",
            serde_json::json!({"reservation_id": "r-get", "payment_intent_id": "pi-9", "amount": 10}),
        ))
        .await;
    let get = span_where(&r, "the GET span", |s| {
        s.name == "GET" && s.attr("url.full").is_some_and(|u| u.ends_with("/r-get"))
    })
    .await;
    let lookup = h
        .peers
        .reservations
        .calls_for("r-get")
        .into_iter()
        .find(|c| c.method == "GET")
        .expect("GET");
    assert_eq!(
        lookup.headers.get("traceparent").map(String::as_str),
        Some(format!("00-{}-{}-01", get.trace_id, get.span_id).as_str())
    );

    // A dead letter is sent to the DLQ under a PRODUCER span, a child of the message's span.
    let poison = h.queue.send("{not json").await;
    let send = span_where(&r, "the DLQ SendMessage span", |s| {
        s.name == "SendMessage events-dlq"
    })
    .await;
    let poison_process = span_where(&r, "the poison message's process span", |s| {
        s.kind == KIND_CONSUMER && s.attr("messaging.message.id") == Some(poison.as_str())
    })
    .await;
    assert_eq!(send.trace_id, poison_process.trace_id);
    assert_eq!(send.parent_span_id, poison_process.span_id);
    assert_eq!(send.kind, KIND_PRODUCER);
    assert_eq!(send.attr("messaging.operation.type"), Some("send"));
    assert_eq!(send.attr("messaging.destination.name"), Some("events-dlq"));
    assert_eq!(
        poison_process.attr("error.type"),
        Some("malformed_json"),
        "a failed process span names its error class"
    );
}

#[tokio::test]
async fn failed_calls_carry_error_type_idle_receives_make_no_spans_and_the_start_says_where_spans_go()
 {
    let h = Harness::start().await;
    let r = OtlpReceiver::start().await;
    h.peers.hold("r-fail");
    h.peers.hold("r-after");
    let w = traced_worker(&h, &r.http_endpoint, &[("MAX_RETRIES", "2")]).await;
    let started = w.wait_logs("exporting traces over OTLP").await;
    assert_eq!(started.len(), 1, "one start-up line: {started:?}");
    assert_eq!(
        started[0]["endpoint"],
        format!("{}/v1/traces", r.http_endpoint)
    );
    assert_eq!(started[0]["protocol"], "http/protobuf");

    // A gRPC failure: its span names the status; the retry succeeds. The message's delete
    // fails too (every attempt the SDK makes), and is tried again by the acker.
    h.sqs.sim().inject(
        SqsOperation::DeleteMessageBatch,
        None,
        SqsFault::InternalError,
        Some(3),
    );
    h.peers.inventory.push_fault(
        InventoryMethod::ReleaseHold,
        GrpcFault::Status(tonic::Code::Unavailable),
    );
    h.queue.send(&bodies::expired("env-fail", "r-fail")).await;
    let failed = span_where(&r, "the failed ReleaseHold span", |s| {
        s.name == "reservation.v1.InventoryService/ReleaseHold"
            && s.attr("rpc.grpc.status_code") == Some("14")
    })
    .await;
    assert_eq!(failed.attr("error.type"), Some("Unavailable"), "{failed:?}");
    process_span(&r, "env-fail").await;
    let delete = span_where(&r, "the failed DeleteMessageBatch span", |s| {
        s.name == "DeleteMessageBatch events" && s.attr("error.type").is_some()
    })
    .await;
    assert_eq!(delete.attr("error.type"), Some("transient"), "{delete:?}");
    // The peer heard who called: the worker and its version, before tonic's own name.
    let calls = h.peers.inventory.calls_for("r-fail");
    let agent = calls[0]
        .metadata
        .get("user-agent")
        .cloned()
        .unwrap_or_default();
    assert!(
        agent.starts_with(concat!("reservation-worker/", env!("CARGO_PKG_VERSION"))),
        "{agent}"
    );

    // Idle: empty long polls (SQS_WAIT_TIME=1) export nothing. Let several pass, then one
    // more message, whose spans are exported after theirs would have been.
    let receives = async || {
        let (_, text) = w.get("/metrics").await.expect("metrics");
        text.lines()
            .find(|l| {
                l.starts_with("sqs_request_duration_seconds_count{operation=\"ReceiveMessage\"}")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = receives().await;
    support::eventually_async("three more receives", async || {
        receives().await >= before + 3.0
    })
    .await;
    h.queue.send(&bodies::expired("env-after", "r-after")).await;
    process_span(&r, "env-after").await;
    let spans = r.spans();
    let receive_spans: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "ReceiveMessage events")
        .collect();
    assert!(!receive_spans.is_empty());
    for s in &receive_spans {
        assert_ne!(
            s.attr("messaging.batch.message_count"),
            Some("0"),
            "an empty receive was exported: {s:?}"
        );
    }
    // No span carries source locations, thread names or the Rust target.
    for s in &spans {
        for k in s.attributes.keys() {
            assert!(
                !k.starts_with("code.") && !k.starts_with("thread.") && k != "target",
                "{k} on {}",
                s.name
            );
        }
    }
}

#[tokio::test]
async fn the_aws_trace_header_is_the_parent_when_there_is_no_traceparent() {
    let h = Harness::start().await;
    let r = OtlpReceiver::start().await;
    h.peers.hold("r-xray");
    let _w = traced_worker(&h, &r.http_endpoint, &[]).await;
    h.queue
        .client
        .send_message()
        .queue_url(&h.queue.url)
        .message_body(bodies::expired("env-xray", "r-xray"))
        .message_system_attributes(
            MessageSystemAttributeNameForSends::AwsTraceHeader,
            MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                )
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("SendMessage with AWSTraceHeader");
    let process = process_span(&r, "env-xray").await;
    assert_eq!(process.trace_id, "5759e988bd862e3fe1be46a994272793");
    assert_eq!(process.parent_span_id, "53995c3f42cd8ad8");
}

#[tokio::test]
async fn a_hex_trace_id_in_the_envelope_becomes_the_trace() {
    let h = Harness::start().await;
    let r = OtlpReceiver::start().await;
    h.peers.hold("r-env");
    let _w = traced_worker(&h, &r.http_endpoint, &[]).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let body = serde_json::json!({
        "id": "env-hex", "type": "reservation.expired", "source": "tests",
        "detail": {"reservation_id": "r-env", "event_id": "evt-1", "qty": 2},
        "trace_id": trace,
    })
    .to_string();
    h.queue.send(&body).await;
    let process = process_span(&r, "env-hex").await;
    assert_eq!(process.trace_id, trace);
    assert_eq!(
        process.parent_span_id.len(),
        16,
        "a remote parent stands in for the sender"
    );
    assert_eq!(process.attr("reservation_worker.trace_id"), Some(trace));
}

#[tokio::test]
async fn spans_are_flushed_at_sigterm() {
    let h = Harness::start().await;
    let r = OtlpReceiver::start().await;
    h.peers.hold("r-term");
    // A delay no test waits out: only the shutdown flush can deliver the spans.
    let mut w = h
        .worker(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &r.grpc_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ])
        .await;
    h.queue.send(&bodies::expired("env-term", "r-term")).await;
    support::eventually("processed", || {
        !w.logs_with_message("message finished").is_empty()
    })
    .await;
    assert!(
        r.named("process events").is_empty(),
        "nothing exported before shutdown"
    );
    w.signal("TERM");
    let status = w.wait_exit(support::PATIENCE).await;
    assert!(status.success(), "{status:?}");
    let process = r.named("process events");
    assert_eq!(process.len(), 1, "{:?}", r.spans());
    assert_eq!(
        process[0].attr("reservation_worker.envelope_id"),
        Some("env-term")
    );
    assert!(
        !r.named("reservation.v1.InventoryService/ReleaseHold")
            .is_empty()
    );
}

#[tokio::test]
async fn an_unsampled_trace_is_not_exported_but_still_propagated() {
    let h = Harness::start().await;
    let r = OtlpReceiver::start().await;
    h.peers.hold("r-off");
    let mut w = traced_worker(
        &h,
        &r.http_endpoint,
        &[("OTEL_TRACES_SAMPLER", "always_off")],
    )
    .await;
    h.queue
        .send_with(
            &bodies::expired("env-off", "r-off"),
            &[("traceparent", &traceparent())],
            None,
        )
        .await;
    support::eventually("processed", || {
        !w.logs_with_message("message finished").is_empty()
    })
    .await;
    w.signal("TERM");
    w.wait_exit(support::PATIENCE).await;
    assert!(r.spans().is_empty(), "always_off: {:?}", r.spans());
    let sent = h.peers.inventory.calls_for("r-off")[0]
        .metadata
        .get("traceparent")
        .cloned()
        .expect("traceparent");
    assert!(
        sent.starts_with(&format!("00-{TRACE}-")) && sent.ends_with("-00"),
        "same trace, not sampled: {sent}"
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_sent_or_complained_about() {
    let h = Harness::start().await;
    let r = OtlpReceiver::start().await;
    h.peers.hold("r-none");
    // Tracing is switched by OTEL_EXPORTER_OTLP_ENDPOINT alone: the signal-specific variable
    // only redirects an exporter that is on.
    let traces_endpoint = format!("{}/v1/traces", r.http_endpoint);
    let mut w = h
        .worker(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                traces_endpoint.as_str(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ])
        .await;
    h.queue
        .send_with(
            &bodies::expired("env-none", "r-none"),
            &[("traceparent", &traceparent())],
            None,
        )
        .await;
    support::eventually("processed", || {
        !w.logs_with_message("message finished").is_empty()
    })
    .await;
    w.signal("TERM");
    w.wait_exit(support::PATIENCE).await;
    assert!(r.spans().is_empty());
    assert!(
        !h.peers.inventory.calls_for("r-none")[0]
            .metadata
            .contains_key("traceparent")
    );
    assert!(
        !h.peers.reservations.calls_for("r-none")[0]
            .headers
            .contains_key("traceparent")
    );
    let complaints: Vec<_> = w
        .json_logs()
        .into_iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .collect();
    assert!(complaints.is_empty(), "{complaints:?}");
    assert!(w.raw_stderr().is_empty(), "{:?}", w.raw_stderr());
}

#[tokio::test]
async fn an_unreachable_collector_is_reported_and_work_goes_on() {
    let h = Harness::start().await;
    h.peers.hold("r-down");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let endpoint = format!("http://{closed}");
    let w = traced_worker(&h, &endpoint, &[]).await;
    h.queue.send(&bodies::expired("env-down", "r-down")).await;
    support::eventually("processed", || {
        w.logs_with_message("message finished")
            .iter()
            .any(|l| l["outcome"] == "success")
    })
    .await;
    support::eventually("the export failure is logged", || {
        w.logs_with_message("trace export failed; spans are dropped until the collector answers")
            .iter()
            .any(|l| l["level"] == "WARN")
    })
    .await;
}

#[tokio::test]
async fn bad_otel_settings_stop_start_up_naming_the_variable() {
    let h = Harness::start().await;
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/xml"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
    ] {
        let mut env = h.env();
        env.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            "http://127.0.0.1:4318".into(),
        ));
        env.push((var.into(), value.into()));
        let mut w = WorkerProcess::spawn(&env);
        let status = w.wait_exit(support::PATIENCE).await;
        assert_eq!(status.code(), Some(78), "{var}");
        let stderr = w.raw_stderr().join("\n");
        assert!(stderr.contains(var) && stderr.contains(value), "{stderr}");
    }
}
