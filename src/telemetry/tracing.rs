//! Traces: OpenTelemetry spans exported over OTLP, on only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or the secret's `otel_endpoint`) is set.
//!
//! One `<queue> process` span (kind CONSUMER) per message, its parent taken from the message
//! (W3C `traceparent` attribute, else the X-Ray `AWSTraceHeader` system attribute, else a
//! 32-hex trace id from the `TraceId` attribute or the envelope's `trace_id`); a CLIENT span
//! per gRPC and REST call, whose context goes out as `traceparent`; a span per SQS call.
//! Spans are made with `tracing` and turned into OpenTelemetry spans by the
//! `tracing-opentelemetry` layer; with tracing off the spans still feed the log fields.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::labels::SqsOperation;

/// The service name when neither `OTEL_SERVICE_NAME` nor `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "reservation-worker";

/// A tracing setting that stops start-up, naming the variable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TracingError {
    #[error("{var}={value:?} is invalid: expected grpc or http/protobuf")]
    Protocol { var: &'static str, value: String },
    #[error("{var}={value:?} is invalid: expected {expected}")]
    Sampler {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// How spans travel to the collector (`OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// OTLP/gRPC, usually port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies, usually port 4318. The specification's default.
    HttpProtobuf,
}

impl Protocol {
    /// As `OTEL_EXPORTER_OTLP_PROTOCOL` spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// The signal-specific variable, else the generic one, else `http/protobuf` (the OTLP
    /// exporter specification's default).
    pub(crate) fn from_env() -> Result<Protocol, TracingError> {
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(value) = env_nonempty(var) {
                return match value.trim().to_ascii_lowercase().as_str() {
                    "grpc" => Ok(Protocol::Grpc),
                    "http/protobuf" => Ok(Protocol::HttpProtobuf),
                    _ => Err(TracingError::Protocol { var, value }),
                };
            }
        }
        Ok(Protocol::HttpProtobuf)
    }
}

fn env_nonempty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Checks `OTEL_TRACES_SAMPLER(_ARG)`: the SDK reads them itself but silently falls back on a
/// typo, and a typo here means unexpected sampling in production.
fn check_sampler() -> Result<(), TracingError> {
    const SAMPLERS: &str = "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio";
    let Some(sampler) = env_nonempty("OTEL_TRACES_SAMPLER") else {
        return Ok(());
    };
    match sampler.as_str() {
        "always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off" => Ok(()),
        "traceidratio" | "parentbased_traceidratio" => {
            let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_default();
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
                _ => Err(TracingError::Sampler {
                    var: "OTEL_TRACES_SAMPLER_ARG",
                    value: arg,
                    expected: "a sampling ratio from 0 to 1",
                }),
            }
        }
        _ => Err(TracingError::Sampler {
            var: "OTEL_TRACES_SAMPLER",
            value: sampler,
            expected: SAMPLERS,
        }),
    }
}

/// Builds the tracer provider when `endpoint` is set: an OTLP exporter for the chosen
/// protocol, a batch span processor (`OTEL_BSP_*` honoured by the SDK), the sampler from
/// `OTEL_TRACES_SAMPLER(_ARG)` (read by the SDK) and the resource. `None` when tracing is off.
pub(crate) fn provider(
    endpoint: Option<&str>,
    pod_name: Option<&str>,
) -> Result<Option<(SdkTracerProvider, Destination)>, TracingError> {
    let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    check_sampler()?;
    let protocol = Protocol::from_env()?;
    // The signal-specific variable is used as-is by the exporter; otherwise the endpoint is a
    // base URL, to which OTLP/HTTP adds the signal's path.
    let explicit = env_nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let destination = Destination {
        endpoint: shown_url(&match (&explicit, protocol) {
            (Some(url), _) => url.clone(),
            (None, Protocol::Grpc) => endpoint.to_string(),
            (None, Protocol::HttpProtobuf) => {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            }
        }),
        protocol,
    };
    let explicit = explicit.is_some();
    let mut exporter = match protocol {
        Protocol::Grpc => {
            let b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            let b = if explicit {
                b
            } else {
                b.with_endpoint(endpoint)
            };
            b.build()?
        }
        Protocol::HttpProtobuf => {
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            let b = if explicit {
                b
            } else {
                b.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            };
            b.build()?
        }
    };
    let resource = resource(pod_name);
    exporter.set_resource(&resource);
    let exporter = OnRuntime {
        inner: Arc::new(exporter),
        runtime: tokio::runtime::Handle::current(),
        failing: Arc::new(AtomicBool::new(false)),
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_resource(resource)
        .build();
    Ok(Some((provider, destination)))
}

/// Where spans go, for the start-up line that says tracing is on.
#[derive(Debug, Clone)]
pub(crate) struct Destination {
    /// The URL the exporter sends to, without credentials.
    pub(crate) endpoint: String,
    pub(crate) protocol: Protocol,
}

/// `url` without user or password (and masked, as all output), or as given when it is not a
/// URL: the exporter will have refused it by then.
fn shown_url(url: &str) -> String {
    let shown = reqwest::Url::parse(url)
        .map(|u| without_credentials(&u).to_string())
        .unwrap_or_else(|_| url.to_string());
    crate::redact::owned(shown)
}

/// `service.name` (`OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`, else
/// `reservation-worker`), `service.version`, `service.instance.id` (a random UUID per process,
/// as the conventions recommend when nothing better identifies it), `k8s.pod.name` from
/// `POD_NAME`, the SDK's `telemetry.sdk.*`, and everything in `OTEL_RESOURCE_ATTRIBUTES` (which
/// wins over ours; the chart puts `k8s.namespace.name` and `k8s.node.name` there).
pub(crate) fn resource(pod_name: Option<&str>) -> Resource {
    let from_env = EnvResourceDetector::new().detect();
    let service_name = env_nonempty("OTEL_SERVICE_NAME")
        .or_else(|| {
            from_env
                .get(&Key::new("service.name"))
                .map(|v| v.to_string())
        })
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    let mut ours = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
    ];
    if let Some(pod) = pod_name {
        ours.push(KeyValue::new("k8s.pod.name", pod.to_string()));
    }
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(ours)
        .with_detector(Box::new(EnvResourceDetector::new()))
        .with_service_name(service_name)
        .build()
}

/// The OTLP exporter, run on the worker's tokio runtime. The SDK's batch processor exports
/// from its own thread, where neither tonic nor the async reqwest client can run; this hands
/// each export to the runtime and waits for it. It also says, once, when exports start
/// failing and when they recover (the SDK itself stays silent).
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    failing: Arc<AtomicBool>,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        batch.retain(|s| !is_empty_receive(s));
        if batch.is_empty() {
            return Ok(());
        }
        batch.iter_mut().for_each(|s| {
            scrub(s);
            rename_attributes(s);
        });
        let inner = self.inner.clone();
        let result = match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
        };
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("trace export works again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "trace export failed; spans are dropped until the collector answers");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// A `ReceiveMessage` that brought nothing and did not fail: at idle, long polls are most of
/// the spans there would be, and they say nothing.
fn is_empty_receive(span: &SpanData) -> bool {
    span.status == Status::Unset
        && span.attributes.iter().any(|kv| {
            kv.key.as_str() == "messaging.operation.name"
                && kv.value.as_str() == SqsOperation::ReceiveMessage.as_str()
        })
        && span.attributes.iter().any(|kv| {
            kv.key.as_str() == "messaging.batch.message_count"
                && matches!(kv.value, opentelemetry::Value::I64(0))
        })
}

/// Span fields that are log fields too (the JSON log lines take them from the span) and, as
/// span attributes, belong under the worker's own namespace: the log keys stay short, the
/// trace attributes follow OpenTelemetry's naming rules. `None`: the attribute is dropped
/// (`message_id` repeats `messaging.message.id`).
fn otel_attribute(field: &str) -> Option<Option<&'static str>> {
    Some(match field {
        "message_id" => None,
        "receive_count" => Some("reservation_worker.receive_count"),
        "envelope_id" => Some("reservation_worker.envelope_id"),
        "event_type" => Some("reservation_worker.event_type"),
        "reservation_id" => Some("reservation_worker.reservation_id"),
        "trace_id" => Some("reservation_worker.trace_id"),
        "attempt" => Some("reservation_worker.attempt"),
        _ => return None,
    })
}

/// Renames the span's log-field attributes as [`otel_attribute`] says.
fn rename_attributes(span: &mut SpanData) {
    span.attributes
        .retain_mut(|kv| match otel_attribute(kv.key.as_str()) {
            None => true,
            Some(None) => false,
            Some(Some(name)) => {
                kv.key = Key::from_static_str(name);
                true
            }
        });
}

/// Masks secrets in every text of a span before it leaves the process: its name, attributes,
/// events (a log line inside a span becomes one), links and status.
fn scrub(span: &mut SpanData) {
    fn cow(text: &mut Cow<'static, str>) {
        if let Cow::Owned(masked) = crate::redact::text(text) {
            *text = Cow::Owned(masked);
        }
    }
    fn value(v: &mut opentelemetry::Value) {
        match v {
            opentelemetry::Value::String(s) => {
                if let Cow::Owned(masked) = crate::redact::text(s.as_str()) {
                    *s = masked.into();
                }
            }
            opentelemetry::Value::Array(opentelemetry::Array::String(list)) => {
                for s in list {
                    if let Cow::Owned(masked) = crate::redact::text(s.as_str()) {
                        *s = masked.into();
                    }
                }
            }
            _ => {}
        }
    }
    let attributes = |list: &mut Vec<KeyValue>| list.iter_mut().for_each(|kv| value(&mut kv.value));
    cow(&mut span.name);
    attributes(&mut span.attributes);
    for event in span.events.events.iter_mut() {
        cow(&mut event.name);
        attributes(&mut event.attributes);
    }
    for link in span.links.links.iter_mut() {
        attributes(&mut link.attributes);
    }
    if let Status::Error { description } = &mut span.status {
        cow(description);
    }
}

/// The `tracing-opentelemetry` layer for `provider`, seeing this crate's spans and events at
/// `info` and above whatever the log level (libraries' spans stay out of traces).
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    EXPORTING.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(DEFAULT_SERVICE_NAME))
        .with_tracked_inactivity(false)
        // No code.*, thread.* or target attributes: the span names and the worker's own
        // attributes say where, and a tokio worker thread says nothing.
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(env!("CARGO_CRATE_NAME"), tracing::Level::INFO),
        )
}

/// The queue's name: the last path segment of its URL.
pub(crate) fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// The parent of a message's process span, by precedence: the `traceparent` attribute, the
/// `AWSTraceHeader` system attribute, then `trace_id` (the `TraceId` attribute or the
/// envelope's `trace_id`) when it is 32 hex digits, with a made-up remote parent span id.
pub(crate) fn incoming_parent(
    attributes: &HashMap<String, String>,
    trace_id: Option<&str>,
) -> Option<SpanContext> {
    let from_w3c = TraceContextPropagator::new().extract(attributes);
    let sc = from_w3c.span().span_context().clone();
    if sc.is_valid() {
        return Some(sc);
    }
    if let Some(sc) = attributes
        .get("AWSTraceHeader")
        .and_then(|h| xray_parent(h))
    {
        return Some(sc);
    }
    trace_id.and_then(trace_id_parent)
}

/// Parses an X-Ray trace header (`Root=1-5759e988-bd862e3fe1be46a994272793;
/// Parent=53995c3f42cd8ad8;Sampled=1`). A missing `Parent` gets a made-up span id; `Sampled=0`
/// is honoured, anything else counts as sampled.
pub(crate) fn xray_parent(header: &str) -> Option<SpanContext> {
    let mut root = None;
    let mut parent = None;
    let mut sampled = true;
    for part in header.split(';') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        match k.trim() {
            "Root" => root = Some(v.trim()),
            "Parent" => parent = Some(v.trim()),
            "Sampled" => sampled = v.trim() != "0",
            _ => {}
        }
    }
    let mut pieces = root?.split('-');
    let (Some("1"), Some(time), Some(unique), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return None;
    };
    if time.len() != 8 || unique.len() != 24 {
        return None;
    }
    let trace_id = hex_trace_id(&format!("{time}{unique}"))?;
    let span_id = match parent {
        Some(p) => hex_span_id(p)?,
        None => random_span_id(),
    };
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

/// A bare 32-hex trace id as a remote, sampled parent with a made-up span id.
fn trace_id_parent(trace_id: &str) -> Option<SpanContext> {
    Some(SpanContext::new(
        hex_trace_id(trace_id.trim())?,
        random_span_id(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

fn all_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex_trace_id(s: &str) -> Option<TraceId> {
    if !all_hex(s, 32) {
        return None;
    }
    TraceId::from_hex(s).ok().filter(|t| *t != TraceId::INVALID)
}

fn hex_span_id(s: &str) -> Option<SpanId> {
    if !all_hex(s, 16) {
        return None;
    }
    SpanId::from_hex(s).ok().filter(|t| *t != SpanId::INVALID)
}

fn random_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

/// `url` without user and password: `url.full` must never carry credentials.
fn without_credentials(url: &reqwest::Url) -> reqwest::Url {
    let mut safe = url.clone();
    let _ = safe.set_username("");
    let _ = safe.set_password(None);
    safe
}

/// Set once an OpenTelemetry layer exists. Until then client spans are not made: they carry
/// trace attributes only (no log fields), and each one costs a registry entry, its attribute
/// values and an enter and exit per poll of the call.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is set).
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The low-cardinality class of a failed call, for its span's `error.type`. Each client
/// classifies its own errors: the SQS adapter by its error kinds, the REST client by what
/// went wrong on the wire.
pub(crate) trait ErrorType {
    fn error_type(&self) -> &'static str;
}

/// The span of one call to a peer or to SQS. Create it before the call, send its context
/// with the request, run the call inside it, then record the result. A disabled span when
/// traces are not exported.
#[derive(Debug, Clone)]
pub(crate) struct ClientSpan(Span);

impl ClientSpan {
    /// A gRPC call to `reservation.v1.InventoryService/<method>` on `server` (host, port).
    pub(crate) fn grpc(method: &'static str, server: (&str, u16)) -> ClientSpan {
        const SERVICE: &str = "reservation.v1.InventoryService";
        if !exporting() {
            return ClientSpan(Span::none());
        }
        ClientSpan(tracing::info_span!(
            "grpc_call",
            otel.name = format!("{SERVICE}/{method}").as_str(),
            otel.kind = "client",
            "rpc.system" = "grpc",
            "rpc.service" = SERVICE,
            "rpc.method" = method,
            "server.address" = server.0,
            "server.port" = server.1,
            "rpc.grpc.status_code" = Empty,
            "error.type" = Empty,
        ))
    }

    /// A REST call. `url.full` is the URL without any user or password in it.
    pub(crate) fn http(method: &'static str, url: &reqwest::Url) -> ClientSpan {
        if !exporting() {
            return ClientSpan(Span::none());
        }
        let safe = without_credentials(url);
        ClientSpan(tracing::info_span!(
            "http_call",
            otel.name = method,
            otel.kind = "client",
            "http.request.method" = method,
            "url.full" = safe.as_str(),
            "server.address" = safe.host_str().unwrap_or_default(),
            "server.port" = safe.port_or_known_default().unwrap_or_default(),
            "http.response.status_code" = Empty,
            "error.type" = Empty,
        ))
    }

    /// A call about the messages of the queue at `queue_url` (receive, settle or send).
    pub(crate) fn sqs(op: SqsOperation, queue_url: &str) -> ClientSpan {
        if !exporting() {
            return ClientSpan(Span::none());
        }
        let queue = queue_name(queue_url);
        let operation = op.as_str();
        let operation_type = op.operation_type().unwrap_or_default();
        let kind = if op == SqsOperation::SendMessage {
            "producer"
        } else {
            "client"
        };
        ClientSpan(tracing::info_span!(
            "sqs_call",
            otel.name = format!("{operation} {queue}").as_str(),
            otel.kind = kind,
            "messaging.system" = "aws_sqs",
            "messaging.operation.name" = operation,
            "messaging.operation.type" = operation_type,
            "messaging.destination.name" = queue,
            "messaging.batch.message_count" = Empty,
            "rpc.system" = "aws-api",
            "rpc.service" = "SQS",
            "rpc.method" = operation,
            "error.type" = Empty,
        ))
    }

    /// The span, to run the call in (`.instrument(call.span().clone())`).
    pub(crate) fn span(&self) -> &Span {
        &self.0
    }

    /// Puts this span's `traceparent` into a gRPC request's metadata.
    pub(crate) fn inject_grpc(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if self.0.is_disabled() {
            return;
        }
        struct Md<'a>(&'a mut tonic::metadata::MetadataMap);
        impl Injector for Md<'_> {
            fn set(&mut self, key: &str, value: String) {
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                    tonic::metadata::MetadataValue::try_from(value.as_str()),
                ) {
                    self.0.insert(k, v);
                }
            }
        }
        TraceContextPropagator::new().inject_context(&self.0.context(), &mut Md(metadata));
    }

    /// This span's `traceparent` (and `tracestate`) as HTTP headers; empty when tracing is off.
    pub(crate) fn http_headers(&self) -> reqwest::header::HeaderMap {
        if self.0.is_disabled() {
            return reqwest::header::HeaderMap::new();
        }
        struct Headers(reqwest::header::HeaderMap);
        impl Injector for Headers {
            fn set(&mut self, key: &str, value: String) {
                if let (Ok(k), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(key.as_bytes()),
                    reqwest::header::HeaderValue::from_str(&value),
                ) {
                    self.0.insert(k, v);
                }
            }
        }
        let mut headers = Headers(reqwest::header::HeaderMap::new());
        TraceContextPropagator::new().inject_context(&self.0.context(), &mut headers);
        headers.0
    }

    /// The gRPC status the call ended with; anything but OK marks the span as failed.
    pub(crate) fn grpc_result<T>(&self, result: &Result<T, tonic::Status>) {
        let code = result
            .as_ref()
            .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
        self.0.record("rpc.grpc.status_code", code as i64);
        if code != tonic::Code::Ok {
            self.0.record("error.type", format!("{code:?}").as_str());
            self.0.set_status(Status::error(code.description()));
        }
    }

    /// The HTTP status of the response; 4xx and 5xx mark the span as failed.
    pub(crate) fn http_status(&self, status: u16) {
        self.0.record("http.response.status_code", status as i64);
        if status >= 400 {
            self.0.record("error.type", status.to_string().as_str());
            self.0.set_status(Status::error(status.to_string()));
        }
    }

    /// How many messages the call carried or returned.
    pub(crate) fn message_count(&self, n: usize) {
        self.0.record("messaging.batch.message_count", n as i64);
    }

    /// The call failed without a response (connection, timeout, SDK error): marks the span
    /// with the error and its class (`error.type`) and hands the error back, for
    /// `.map_err(|e| call.fail(..))`.
    pub(crate) fn fail<E: std::fmt::Display + ErrorType>(&self, error: E) -> E {
        if !self.0.is_disabled() {
            self.0.record("error.type", error.error_type());
            self.0.set_status(Status::error(error.to_string()));
        }
        error
    }

    /// The span's context, to link to (`None` when spans are not exported).
    pub(crate) fn span_context(&self) -> Option<SpanContext> {
        if self.0.is_disabled() {
            return None;
        }
        let cx = self.0.context().span().span_context().clone();
        cx.is_valid().then_some(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn xray_header_is_parsed() {
        let sc = xray_parent(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert_eq!(sc.span_id().to_string(), "53995c3f42cd8ad8");
        assert!(sc.is_sampled() && sc.is_remote());
        let unsampled = xray_parent(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
        )
        .expect("valid");
        assert!(!unsampled.is_sampled());
        let no_parent = xray_parent("Root=1-5759e988-bd862e3fe1be46a994272793").expect("valid");
        assert_eq!(
            no_parent.trace_id().to_string(),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert!(no_parent.is_valid());
        // Order and extra keys do not matter.
        let shuffled = xray_parent("Self=1-x;Sampled=1;Parent=53995c3f42cd8ad8;Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a:1")
            .expect("valid");
        assert_eq!(shuffled.span_id().to_string(), "53995c3f42cd8ad8");
        for bad in [
            "",
            "Parent=53995c3f42cd8ad8",
            "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e98-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a99427279z;Parent=53995c3f42cd8ad8",
            "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8a",
        ] {
            assert!(xray_parent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn incoming_parent_precedence() {
        let tp = format!("00-{TRACE}-{PARENT}-01");
        let xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let envelope = "0af7651916cd43dd8448eb211c80319c";

        let all = attrs(&[("traceparent", &tp), ("AWSTraceHeader", xray)]);
        let sc = incoming_parent(&all, Some(envelope)).expect("parent");
        assert_eq!(sc.trace_id().to_string(), TRACE);
        assert_eq!(sc.span_id().to_string(), PARENT);

        let bad_w3c = attrs(&[("traceparent", "00-nothex-01"), ("AWSTraceHeader", xray)]);
        let sc = incoming_parent(&bad_w3c, Some(envelope)).expect("parent");
        assert_eq!(
            sc.trace_id().to_string(),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert_eq!(sc.span_id().to_string(), "53995c3f42cd8ad8");

        let sc = incoming_parent(&attrs(&[]), Some(envelope)).expect("parent");
        assert_eq!(sc.trace_id().to_string(), envelope);
        assert!(sc.is_remote() && sc.is_sampled() && sc.span_id() != SpanId::INVALID);

        assert!(incoming_parent(&attrs(&[]), Some("trace-from-body")).is_none());
        assert!(incoming_parent(&attrs(&[]), Some(&"0".repeat(32))).is_none());
        assert!(incoming_parent(&attrs(&[]), None).is_none());
    }

    #[test]
    fn queue_names() {
        assert_eq!(
            queue_name("http://127.0.0.1:5000/123456789012/events"),
            "events"
        );
        assert_eq!(
            queue_name("https://sqs.ap-northeast-2.amazonaws.com/1/reservation-events.fifo/"),
            "reservation-events.fifo"
        );
    }

    #[test]
    fn http_span_url_has_no_credentials() {
        let url = reqwest::Url::parse("http://user:pw-secret@host:8010/internal/reservations/r1")
            .expect("url");
        assert_eq!(
            without_credentials(&url).as_str(),
            "http://host:8010/internal/reservations/r1"
        );
    }
}
