//! gRPC on `GRPC_DEBUG_PORT`: `grpc.health.v1.Health` mirroring readiness, server reflection
//! (v1 and v1alpha, since many clients still speak only v1alpha) and `WorkerDebug`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::client::CallError;
use crate::config::Config;
use crate::event::{self, Event, EventError, EventKind, MessageContext};
use crate::health::WorkerStatus;
use crate::labels::Outcome;
use crate::proto::reservation::worker::v1::worker_debug_server::{WorkerDebug, WorkerDebugServer};
use crate::proto::reservation::worker::v1::{
    DownstreamCall, GetStatusRequest, GetStatusResponse, HoldExpired, OutcomeCount, ParsedEvent,
    Payment, ProcessEventRequest, ProcessEventResponse, RestRequest, Setting, ValidateEventRequest,
    ValidateEventResponse, ValidationError, downstream_call, parsed_event, validate_event_response,
};
use crate::telemetry::metrics::{self, EVENT_TYPES, metrics};
use crate::workflow::{self, InventoryFields, InventoryRequest, Peers, Progress, Step};

/// Why the gRPC port could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GrpcServerError {
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What a masked secret shows.
const MASKED: &str = "***";
/// What an absent optional setting shows.
const UNSET: &str = "(unset)";
/// The MessageId given to a debug body when the request names none.
const DEBUG_MESSAGE_ID: &str = "debug-message";

/// `reservation.worker.v1.WorkerDebug`. Holds the configuration only as masked text, so no
/// answer can carry a secret.
pub(crate) struct Debug {
    status: Arc<WorkerStatus>,
    queue_url: String,
    reservation_api_base: String,
    settings: Vec<Setting>,
    pool_capacity: u64,
    /// The peers, present only when `DEBUG_PROCESS_EVENT` is on.
    peers: Option<Peers>,
}

impl Debug {
    /// The service for this worker: its status, its configuration (masked) and, when
    /// `ProcessEvent` is switched on, the same peers the pool calls.
    pub(crate) fn new(config: &Config, status: Arc<WorkerStatus>, peers: Peers) -> Debug {
        Debug {
            status,
            queue_url: config.queue_url.clone(),
            reservation_api_base: config.reservation_api_base.clone(),
            settings: settings(config),
            pool_capacity: config.concurrency as u64,
            peers: config.debug_process_event.then_some(peers),
        }
    }
}

/// The effective configuration by variable name, secrets masked and URL credentials hidden.
fn settings(c: &Config) -> Vec<Setting> {
    c.settings()
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                // The runtime's own count: it was sized from the environment, before any
                // secret overlay.
                Some(_) if name == "WORKER_THREADS" => tokio::runtime::Handle::try_current()
                    .map_or(c.runtime_threads, |h| h.metrics().num_workers())
                    .to_string(),
                Some(v) => mask_url(&v),
                None => UNSET.to_string(),
            };
            Setting {
                name: name.to_string(),
                value: crate::redact::owned(value),
            }
        })
        .collect()
}

/// A URL with any user name or password replaced by `***`.
fn mask_url(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username(MASKED);
            let _ = u.set_password(Some(MASKED));
            u.to_string()
        }
        _ => text.to_string(),
    }
}

#[tonic::async_trait]
impl WorkerDebug for Debug {
    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let s = &self.status;
        let m = metrics();
        let mut outcomes = Vec::new();
        let mut outcome_totals: HashMap<String, u64> = HashMap::new();
        for t in EVENT_TYPES {
            for o in Outcome::ALL {
                let count = m.events(t, o);
                *outcome_totals.entry(o.as_str().to_string()).or_default() += count;
                outcomes.push(OutcomeCount {
                    event_type: t.to_string(),
                    outcome: o.as_str().to_string(),
                    count,
                });
            }
        }
        let last_poll = s.last_poll_ms();
        let liveness = s.liveness();
        Ok(Response::new(GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: s.uptime().as_secs(),
            queue_url: mask_url(&self.queue_url),
            in_flight: s.in_flight() as u64,
            ready: s.is_ready(),
            draining: s.is_draining(),
            config: self.settings.clone(),
            outcomes,
            outcome_totals,
            last_successful_poll: (last_poll > 0).then(|| prost_types::Timestamp {
                seconds: (last_poll / 1000) as i64,
                nanos: ((last_poll % 1000) * 1_000_000) as i32,
            }),
            liveness: liveness.as_str().to_string(),
            liveness_reason: crate::redact::owned(liveness.reason()),
            pool_capacity: self.pool_capacity,
        }))
    }

    async fn validate_event(
        &self,
        request: Request<ValidateEventRequest>,
    ) -> Result<Response<ValidateEventResponse>, Status> {
        let r = request.into_inner();
        let answer = match parse(r.body, r.attributes, r.message_id) {
            Ok(event) => ValidateEventResponse {
                calls: plan(&event, &self.reservation_api_base),
                result: Some(validate_event_response::Result::Event(parsed(&event))),
            },
            Err(e) => ValidateEventResponse {
                result: Some(validate_event_response::Result::Error(ValidationError {
                    class: e.class().as_str().to_string(),
                    message: crate::redact::owned(e.to_string()),
                    field: match &e {
                        EventError::InvalidField { field, .. } => field.clone(),
                        _ => String::new(),
                    },
                })),
                calls: Vec::new(),
            },
        };
        Ok(Response::new(answer))
    }

    async fn process_event(
        &self,
        request: Request<ProcessEventRequest>,
    ) -> Result<Response<ProcessEventResponse>, Status> {
        let Some(peers) = &self.peers else {
            return Err(Status::failed_precondition(
                "ProcessEvent is off: start the worker with DEBUG_PROCESS_EVENT=true to run workflows from the debug port",
            ));
        };
        let r = request.into_inner();
        let event = parse(r.body, r.attributes, r.message_id).map_err(|e| {
            Status::invalid_argument(crate::redact::owned(format!("{}: {e}", e.class())))
        })?;
        tracing::warn!(
            envelope_id = %event.envelope_id,
            event_type = event.event_type().as_str(),
            reservation_id = event.reservation_id(),
            "ProcessEvent: running a workflow from the debug port"
        );
        let mut progress = Progress::default();
        let result = workflow::attempt(&event, &mut progress, peers).await;
        let steps = workflow::steps(&event);
        let mut answer = ProcessEventResponse {
            event: Some(parsed(&event)),
            outcome: "success".into(),
            steps_done: steps
                .iter()
                .take(progress.steps_done())
                .map(|s| s.name().as_str().to_string())
                .collect(),
            already_applied: progress.already_applied() as u32,
            ..Default::default()
        };
        if let Err(e) = result {
            answer.outcome = "failed".into();
            answer.failed_step = e.step.name().as_str().to_string();
            answer.error = crate::redact::owned(e.error.to_string());
            match e.error {
                CallError::Retryable(_) => answer.error_kind = "retryable".into(),
                CallError::Terminal { class, .. } => {
                    answer.error_kind = "terminal".into();
                    answer.error_class = class.as_str().to_string();
                }
            }
        }
        Ok(Response::new(answer))
    }
}

/// Parses a body the way the pool does.
fn parse(
    body: String,
    attributes: HashMap<String, String>,
    message_id: String,
) -> Result<Event, EventError> {
    let message_id = if message_id.is_empty() {
        DEBUG_MESSAGE_ID.to_string()
    } else {
        message_id
    };
    event::parse(
        &body,
        &MessageContext {
            message_id: &message_id,
            attributes: &attributes,
        },
    )
}

fn parsed(event: &Event) -> ParsedEvent {
    let detail = match &event.kind {
        EventKind::ReservationExpired(e) => parsed_event::Detail::Expired(HoldExpired {
            reservation_id: e.reservation_id.clone(),
            event_id: e.event_id.clone(),
            seat_ids: e.seat_ids.clone(),
            qty: e.qty,
        }),
        EventKind::PaymentApproved(p) | EventKind::PaymentFailed(p) => {
            parsed_event::Detail::Payment(Payment {
                reservation_id: p.reservation_id.clone(),
                payment_intent_id: p.payment_intent_id.clone(),
                amount: p.amount,
                currency: p.currency.clone(),
                event_id: p.event_id.clone(),
                user_id: p.user_id.clone(),
                seat_ids: p.seat_ids.clone(),
                qty: p.qty,
                error_code: p.error_code.clone(),
                error_message: p.error_message.clone(),
            })
        }
    };
    ParsedEvent {
        event_type: event.event_type().as_str().to_string(),
        envelope_id: event.envelope_id.clone(),
        reservation_id: event.reservation_id().to_string(),
        trace_id: event.trace_id.clone().unwrap_or_default(),
        source: event.source.clone().unwrap_or_default(),
        detail: Some(detail),
    }
}

/// The calls [`workflow::attempt`] would make for `event`, in order, built from the event
/// alone. A payment event lacking inventory fields is looked up first; that GET is listed,
/// not made, and the inventory requests show what the event itself carries.
fn plan(event: &Event, reservation_api_base: &str) -> Vec<DownstreamCall> {
    let key = event.envelope_id.clone();
    let rid = event.reservation_id().to_string();
    let url = reservation_url(reservation_api_base, &rid);
    let mut calls = Vec::new();
    let mut note = String::new();
    if let EventKind::PaymentApproved(p) | EventKind::PaymentFailed(p) = &event.kind
        && workflow::needs_lookup(p)
    {
        calls.push(DownstreamCall {
            target: metrics::RESERVATION_API.into(),
            method: "GET".into(),
            step: Step::FetchReservation.name().as_str().into(),
            idempotency_key: String::new(),
            request: Some(downstream_call::Request::Rest(RestRequest {
                url: url.clone(),
                body: String::new(),
            })),
            note: "the event lacks event_id, or both seat_ids and qty: they are read from the reservation first".into(),
        });
        note = "fields the event lacks are filled from the GET answer".into();
    }
    let fields = InventoryFields::carried_by(event);
    for step in workflow::steps(event) {
        let (target, method, request, note) = match step {
            Step::StatusUpdate(status) => (
                metrics::RESERVATION_API,
                "PATCH",
                downstream_call::Request::Rest(RestRequest {
                    url: url.clone(),
                    body: serde_json::json!({"status": status.as_str()}).to_string(),
                }),
                String::new(),
            ),
            Step::FetchReservation => (
                metrics::RESERVATION_API,
                "GET",
                downstream_call::Request::Rest(RestRequest {
                    url: url.clone(),
                    body: String::new(),
                }),
                String::new(),
            ),
            _ => match workflow::inventory_request(step, event, fields.clone()) {
                Some(InventoryRequest::ReleaseHold(r)) => (
                    metrics::INVENTORY,
                    "ReleaseHold",
                    downstream_call::Request::ReleaseHold(r),
                    note.clone(),
                ),
                Some(InventoryRequest::CommitReservation(r)) => (
                    metrics::INVENTORY,
                    "CommitReservation",
                    downstream_call::Request::CommitReservation(r),
                    note.clone(),
                ),
                None => continue,
            },
        };
        calls.push(DownstreamCall {
            target: target.into(),
            method: method.into(),
            step: step.name().as_str().into(),
            idempotency_key: key.clone(),
            request: Some(request),
            note,
        });
    }
    calls
}

/// `{base}/internal/reservations/{id}`, built as the REST client builds it.
fn reservation_url(base: &str, reservation_id: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(base) else {
        return format!("{base}/internal/reservations/{reservation_id}");
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .extend(["internal", "reservations", reservation_id]);
    }
    mask_url(url.as_str())
}

/// Reflection over what this port serves, identical in both versions. The inventory contract
/// is compiled into the same descriptor set but not served here, so it is not listed.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .with_service_name("reservation.worker.v1.WorkerDebug")
}

/// A service built by its first request, then kept. Reflection copies and indexes every
/// descriptor it serves when it is built, memory only an operator's grpcurl needs: a worker
/// nobody inspects never holds it (docs/performance.md). The descriptors are compiled in, so
/// building cannot fail unless the binary is broken; if it does, that is logged once as an
/// error and each call answers `INTERNAL` with why. The build runs once, in the first call,
/// on the runtime's thread (milliseconds); a call racing it waits for it there.
#[derive(Clone)]
struct OnDemand<S, F> {
    service: Arc<OnceLock<Result<S, String>>>,
    build: F,
}

impl<S, F> OnDemand<S, F> {
    fn new(build: F) -> Self {
        OnDemand {
            service: Arc::new(OnceLock::new()),
            build,
        }
    }
}

impl<S: NamedService, F> NamedService for OnDemand<S, F> {
    const NAME: &'static str = S::NAME;
}

impl<S, F, E> Service<http::Request<Body>> for OnDemand<S, F>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    F: Fn() -> Result<S, E>,
    E: Display,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let built = self.service.get_or_init(|| {
            (self.build)().map_err(|e| {
                tracing::error!(service = S::NAME, error = %e, "cannot build the service");
                e.to_string()
            })
        });
        match built {
            Ok(service) => {
                let mut service = service.clone();
                Box::pin(async move {
                    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                    service.call(request).await
                })
            }
            Err(why) => {
                let status = Status::internal(format!("{} is unavailable: {why}", S::NAME));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Serves until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    debug: Debug,
    stop: CancellationToken,
) -> Result<(), GrpcServerError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut ready = debug.status.watch_ready();
    let follow = {
        let reporter = reporter.clone();
        let stop = stop.clone();
        async move {
            loop {
                let serving = if *ready.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status("", serving).await;
                reporter
                    .set_service_status("reservation.worker.v1.WorkerDebug", serving)
                    .await;
                tokio::select! {
                    r = ready.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    tokio::spawn(follow);
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(OnDemand::new(|| reflection().build_v1()))
        .add_service(OnDemand::new(|| reflection().build_v1alpha()))
        .add_service(WorkerDebugServer::new(debug))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            stop.cancelled().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that answers every call with an empty 200.
    #[derive(Clone)]
    struct Empty;

    impl NamedService for Empty {
        const NAME: &'static str = "test.Empty";
    }

    impl Service<http::Request<Body>> for Empty {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(Body::empty())))
        }
    }

    #[tokio::test]
    async fn a_service_on_demand_is_built_by_its_first_call_once_for_every_clone() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = builds.clone();
        let service = OnDemand::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(Empty)
        });
        let clone = service.clone();
        assert_eq!(builds.load(Ordering::SeqCst), 0, "built before any call");
        for mut s in [service.clone(), clone, service] {
            let answer = s.call(http::Request::new(Body::empty())).await;
            assert_eq!(answer.map(|a| a.status()), Ok(http::StatusCode::OK));
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1, "built once");
    }

    #[tokio::test]
    async fn a_service_that_cannot_be_built_answers_internal_with_why() {
        let mut service = OnDemand::new(|| Err::<Empty, _>("descriptor 3 is truncated"));
        for _ in 0..2 {
            let answer = service
                .call(http::Request::new(Body::empty()))
                .await
                .map(|a| Status::from_header_map(a.headers()));
            let Ok(Some(status)) = answer else {
                panic!("no gRPC status in the answer: {answer:?}");
            };
            assert_eq!(status.code(), tonic::Code::Internal);
            assert_eq!(
                status.message(),
                "test.Empty is unavailable: descriptor 3 is truncated"
            );
        }
    }

    #[test]
    fn url_credentials_are_masked() {
        assert_eq!(
            mask_url("https://user:pw@example.com/x"),
            "https://***:***@example.com/x"
        );
        assert_eq!(mask_url("http://h:1"), "http://h:1");
        assert_eq!(
            reservation_url("http://api:8010/v2", "r/1 ?"),
            "http://api:8010/v2/internal/reservations/r%2F1%20%3F"
        );
    }

    #[test]
    fn the_token_is_masked_in_the_settings() {
        let c = Config::from_vars([
            ("SQS_QUEUE_URL".to_string(), "http://q/1/q".to_string()),
            (
                "RESERVATION_API_TOKEN".to_string(),
                "s3cr3t-value".to_string(),
            ),
        ])
        .expect("config");
        let all = format!("{:?}", settings(&c));
        assert!(!all.contains("s3cr3t"), "{all}");
        assert!(
            all.contains("\"RESERVATION_API_TOKEN\", value: \"***\""),
            "{all}"
        );
    }
}
