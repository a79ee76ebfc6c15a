//! A simulated inventory service (`reservation.v1.InventoryService` over gRPC).
//!
//! Holds are implicit: the real service creates them with `ReserveSeat`, which the worker
//! never calls, so any reservation id seen for the first time is taken to be held. From
//! there a hold is released once or committed once. Both RPCs are idempotent by
//! `idempotency_key`, every call is recorded, and faults can be scripted per method.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::{Code, Request, Response, Status};

use super::fault::{Chaos, ChaosFault, Dice, FaultScript, lock, pause};
use crate::proto::common::v1::{Error as ProtoError, ErrorCode, Money, Seat, SeatStatus};
use crate::proto::reservation::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use crate::proto::reservation::v1::{
    CommitReservationRequest, CommitReservationResponse, CommitStatus, ReleaseHoldRequest,
    ReleaseHoldResponse, ReleaseStatus,
};

/// The most seats generated from a bare `quantity`, so a hostile number cannot cost memory.
const MAX_GENERATED_SEATS: i32 = 1000;

/// The two RPCs, used to address the fault script and to label recorded calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InventoryMethod {
    /// `ReleaseHold`.
    ReleaseHold,
    /// `CommitReservation`.
    CommitReservation,
}

impl InventoryMethod {
    /// The RPC's name as it appears in the proto.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReleaseHold => "ReleaseHold",
            Self::CommitReservation => "CommitReservation",
        }
    }
}

impl fmt::Display for InventoryMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a reservation's hold stands, so tests can assert the effect of the worker's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldState {
    /// Seats are held (implicitly, on first sight of the reservation id).
    Held,
    /// The hold was released; the seats are back on sale.
    Released,
    /// The hold became an order.
    Committed {
        /// The order id handed out by the commit (`ord-<uuid>`).
        order_id: String,
    },
}

/// One call as the simulator received it, so tests can check what the worker sent
/// (fields, idempotency key, trace metadata) and how often.
#[derive(Debug, Clone)]
pub struct InventoryCall {
    /// Which RPC was called.
    pub method: InventoryMethod,
    /// `reservation_id` from the request.
    pub reservation_id: String,
    /// `event_id` from the request.
    pub event_id: String,
    /// `seat_ids` from the request.
    pub seat_ids: Vec<String>,
    /// `quantity` from the request.
    pub quantity: i32,
    /// `reason` (ReleaseHold only; empty for commits).
    pub reason: String,
    /// `payment_intent_id` (CommitReservation only; empty for releases).
    pub payment_intent_id: String,
    /// `user_id` (CommitReservation only; empty for releases).
    pub user_id: String,
    /// `idempotency_key` from the request.
    pub idempotency_key: String,
    /// ASCII gRPC metadata (e.g. `traceparent`), by lowercase name; repeated keys joined
    /// with `", "`.
    pub metadata: HashMap<String, String>,
    /// What was injected into this call, if anything (`"status Unavailable"`,
    /// `"delay 50ms"`, `"random UNAVAILABLE"`, …).
    pub fault: Option<String>,
    /// True when the answer was replayed from an earlier call with the same key.
    pub replayed: bool,
    /// True when this call changed the hold (Held → Released or Committed), so an audit can
    /// count effects per idempotency key, whatever the client was told.
    pub applied: bool,
    /// When the call arrived.
    pub at: Instant,
}

/// A scripted fault for the next call of one method. Exists so tests can make the peer
/// fail in each way the worker must handle.
#[derive(Debug, Clone, PartialEq)]
pub enum GrpcFault {
    /// Answer with this gRPC status; state is not touched.
    Status(Code),
    /// Sleep this long, then answer normally (for deadline tests).
    Delay(Duration),
    /// Answer ReleaseHold with this status without changing state.
    ReleaseStatus(ReleaseStatus),
    /// Answer CommitReservation with this status without changing state.
    CommitStatus(CommitStatus),
}

/// A plain HTTP answer in place of the service's, as an ingress or an auth sidecar in front of
/// a gRPC server gives one: an HTTP status and no `grpc-status`. Exists so tests can check how
/// the client classifies what tonic makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAnswer {
    /// The HTTP status (401, 403, 404, 502, …).
    pub status: u16,
    /// An HTML body; without one the answer is headers only.
    pub with_body: bool,
}

impl GrpcFault {
    fn applies_to(&self, method: InventoryMethod) -> bool {
        match self {
            Self::Status(_) | Self::Delay(_) => true,
            Self::ReleaseStatus(_) => method == InventoryMethod::ReleaseHold,
            Self::CommitStatus(_) => method == InventoryMethod::CommitReservation,
        }
    }
}

impl fmt::Display for GrpcFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "status {code:?}"),
            Self::Delay(d) => write!(f, "delay {d:?}"),
            Self::ReleaseStatus(s) => write!(f, "release status {}", s.as_str_name()),
            Self::CommitStatus(s) => write!(f, "commit status {}", s.as_str_name()),
        }
    }
}

/// The simulated inventory service. Cheap to clone: clones share state, so a test keeps
/// one handle to inspect and script while the server owns another.
#[derive(Debug, Clone, Default)]
pub struct InventorySim {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<Store>,
    script: FaultScript<InventoryMethod, GrpcFault>,
    /// Answers given in front of the service, before a call reaches it.
    proxy: FaultScript<InventoryMethod, ProxyAnswer>,
    proxy_answered: std::sync::atomic::AtomicUsize,
    chaos: Mutex<Chaos>,
    dice: Dice,
}

#[derive(Debug, Default)]
struct Store {
    holds: HashMap<String, HoldState>,
    release_replies: HashMap<String, ReleaseHoldResponse>,
    commit_replies: HashMap<String, CommitReservationResponse>,
    calls: Vec<InventoryCall>,
}

/// What to do with a call after it was recorded.
enum Plan {
    Normal,
    Fail(Code, String),
    Release(ReleaseStatus),
    Commit(CommitStatus),
    /// Apply, then hold the answer this long.
    AppliedThenStall(Duration),
    /// Apply, then answer this error instead.
    AppliedThenFail(Code, String),
}

/// Answers one call by its plan: `apply` changes the hold for real (the plans that apply and
/// then misbehave are what a client must survive), `canned` answers a scripted reply status.
async fn carry_out<T>(
    plan: Plan,
    apply: impl FnOnce() -> Result<T, Status>,
    canned: impl FnOnce(Plan) -> Result<T, Status>,
) -> Result<T, Status> {
    match plan {
        Plan::Normal => apply(),
        Plan::AppliedThenStall(stall) => {
            let result = apply();
            pause(stall).await;
            result
        }
        Plan::AppliedThenFail(code, message) => {
            let _applied = apply();
            Err(Status::new(code, message))
        }
        Plan::Fail(code, message) => Err(Status::new(code, message)),
        scripted => canned(scripted),
    }
}

impl InventoryCall {
    /// The record of a call as it arrives, with the fields both RPCs carry; the caller adds
    /// its own (`reason`, or `payment_intent_id` and `user_id`).
    fn arriving(
        method: InventoryMethod,
        reservation_id: &str,
        event_id: &str,
        seat_ids: &[String],
        quantity: i32,
        idempotency_key: &str,
        metadata: HashMap<String, String>,
    ) -> InventoryCall {
        InventoryCall {
            method,
            reservation_id: reservation_id.to_string(),
            event_id: event_id.to_string(),
            seat_ids: seat_ids.to_vec(),
            quantity,
            reason: String::new(),
            payment_intent_id: String::new(),
            user_id: String::new(),
            idempotency_key: idempotency_key.to_string(),
            metadata,
            fault: None,
            replayed: false,
            applied: false,
            at: Instant::now(),
        }
    }
}

impl InventorySim {
    /// A well-behaved simulator with no holds, no script and no chaos.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the probability (clamped to `0..=1`) that a call fails with UNAVAILABLE.
    pub fn set_failure_rate(&self, failure_rate: f64) {
        lock(&self.inner.chaos).failure_rate = failure_rate;
    }

    /// Sets the latency added to every call.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.inner.chaos).latency = latency;
    }

    /// Replaces the whole random behaviour (rate, latency, mix of failures, stall).
    pub fn set_chaos(&self, chaos: Chaos) {
        *lock(&self.inner.chaos) = chaos;
    }

    /// Seeds the chaos draws, so a soak run repeats the same sequence of failures.
    pub fn seed_chaos(&self, seed: u64) {
        self.inner.dice.seed(seed);
    }

    /// Queues `fault` for a later call of `method` (FIFO, one per call).
    ///
    /// # Panics
    /// If the fault cannot apply to the method (a `CommitStatus` for ReleaseHold or a
    /// `ReleaseStatus` for CommitReservation): that is a mistake in the test.
    pub fn push_fault(&self, method: InventoryMethod, fault: GrpcFault) {
        assert!(
            fault.applies_to(method),
            "fault {fault} cannot be injected into {method}"
        );
        self.inner.script.push(method, fault);
    }

    /// How many scripted faults are still queued for `method`.
    pub fn pending_faults(&self, method: InventoryMethod) -> usize {
        self.inner.script.pending(&method)
    }

    /// Queues a plain HTTP answer for a later call of `method`: that call never reaches the
    /// service (and is not in [`InventorySim::calls`]).
    pub fn push_proxy_answer(&self, method: InventoryMethod, answer: ProxyAnswer) {
        assert!(
            axum::http::StatusCode::from_u16(answer.status).is_ok(),
            "{} is not a valid HTTP status code",
            answer.status
        );
        self.inner.proxy.push(method, answer);
    }

    /// How many calls got a [`ProxyAnswer`] so far.
    pub fn proxy_answered(&self) -> usize {
        self.inner
            .proxy_answered
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every call received so far, in arrival order.
    pub fn calls(&self) -> Vec<InventoryCall> {
        lock(&self.inner.state).calls.clone()
    }

    /// The calls received for one reservation, in arrival order.
    pub fn calls_for(&self, reservation_id: &str) -> Vec<InventoryCall> {
        lock(&self.inner.state)
            .calls
            .iter()
            .filter(|c| c.reservation_id == reservation_id)
            .cloned()
            .collect()
    }

    /// The hold's state, or `None` if the reservation id was never seen.
    pub fn state_of(&self, reservation_id: &str) -> Option<HoldState> {
        lock(&self.inner.state).holds.get(reservation_id).cloned()
    }

    /// Puts a reservation into a given state before a test starts (e.g. already committed).
    pub fn seed(&self, reservation_id: impl Into<String>, state: HoldState) {
        lock(&self.inner.state)
            .holds
            .insert(reservation_id.into(), state);
    }

    /// Records the call and decides, once, whether it is faulted. Returns the call's index
    /// in the log (to mark a replay later), the delay to apply and the plan.
    fn begin(&self, mut call: InventoryCall) -> (usize, Duration, Plan) {
        let method = call.method;
        let chaos = *lock(&self.inner.chaos);
        let mut delay = chaos.latency;
        let plan = match self.inner.script.pop(&method) {
            Some(fault) => {
                call.fault = Some(fault.to_string());
                match fault {
                    GrpcFault::Status(code) => {
                        Plan::Fail(code, format!("injected fault: {code:?}"))
                    }
                    GrpcFault::Delay(d) => {
                        delay += d;
                        Plan::Normal
                    }
                    GrpcFault::ReleaseStatus(s) => Plan::Release(s),
                    GrpcFault::CommitStatus(s) => Plan::Commit(s),
                }
            }
            None => match chaos.roll(&self.inner.dice) {
                None => Plan::Normal,
                Some(kind) => {
                    let (label, plan) = random_plan(kind, chaos.stall, &mut delay);
                    call.fault = Some(label.to_owned());
                    plan
                }
            },
        };
        let mut state = lock(&self.inner.state);
        state.calls.push(call);
        (state.calls.len() - 1, delay, plan)
    }

    fn release(&self, idx: usize, req: &ReleaseHoldRequest) -> Result<ReleaseHoldResponse, Status> {
        require(&req.idempotency_key, "idempotency_key")?;
        require(&req.reservation_id, "reservation_id")?;
        let mut state = lock(&self.inner.state);
        if let Some(reply) = state.release_replies.get(&req.idempotency_key).cloned() {
            state.calls[idx].replayed = true;
            return Ok(reply);
        }
        let mut applied = false;
        let hold = state
            .holds
            .entry(req.reservation_id.clone())
            .or_insert(HoldState::Held);
        let reply = match hold {
            HoldState::Held => {
                *hold = HoldState::Released;
                applied = true;
                ReleaseHoldResponse {
                    released_seats: seats(
                        req.seat_ids.as_slice(),
                        req.quantity,
                        SeatStatus::Available,
                    ),
                    status: ReleaseStatus::Success as i32,
                    released_at: Some(SystemTime::now().into()),
                    error: None,
                }
            }
            HoldState::Released => ReleaseHoldResponse {
                status: ReleaseStatus::AlreadyReleased as i32,
                ..Default::default()
            },
            HoldState::Committed { order_id } => ReleaseHoldResponse {
                status: ReleaseStatus::Failed as i32,
                error: Some(error(
                    ErrorCode::FailedPrecondition,
                    format!(
                        "reservation {} is committed (order {order_id}); its hold cannot be released",
                        req.reservation_id
                    ),
                )),
                ..Default::default()
            },
        };
        state.calls[idx].applied = applied;
        state
            .release_replies
            .insert(req.idempotency_key.clone(), reply.clone());
        Ok(reply)
    }

    fn commit(
        &self,
        idx: usize,
        req: &CommitReservationRequest,
    ) -> Result<CommitReservationResponse, Status> {
        require(&req.idempotency_key, "idempotency_key")?;
        require(&req.reservation_id, "reservation_id")?;
        require(&req.payment_intent_id, "payment_intent_id")?;
        let mut state = lock(&self.inner.state);
        if let Some(reply) = state.commit_replies.get(&req.idempotency_key).cloned() {
            state.calls[idx].replayed = true;
            return Ok(reply);
        }
        let mut applied = false;
        let hold = state
            .holds
            .entry(req.reservation_id.clone())
            .or_insert(HoldState::Held);
        let reply = match hold {
            HoldState::Held => {
                let order_id = format!("ord-{}", uuid::Uuid::new_v4());
                *hold = HoldState::Committed {
                    order_id: order_id.clone(),
                };
                applied = true;
                CommitReservationResponse {
                    order_id,
                    sold_seats: seats(req.seat_ids.as_slice(), req.quantity, SeatStatus::Sold),
                    status: CommitStatus::Success as i32,
                    committed_at: Some(SystemTime::now().into()),
                    error: None,
                }
            }
            HoldState::Released => CommitReservationResponse {
                status: CommitStatus::FailedExpired as i32,
                error: Some(error(
                    ErrorCode::ReservationExpired,
                    format!(
                        "reservation {} was released; it can no longer be committed",
                        req.reservation_id
                    ),
                )),
                ..Default::default()
            },
            HoldState::Committed { order_id } => {
                return Err(Status::already_exists(format!(
                    "reservation {} is already committed as order {order_id}",
                    req.reservation_id
                )));
            }
        };
        state.calls[idx].applied = applied;
        state
            .commit_replies
            .insert(req.idempotency_key.clone(), reply.clone());
        Ok(reply)
    }

    fn was_replayed(&self, idx: usize) -> bool {
        lock(&self.inner.state).calls[idx].replayed
    }
}

#[tonic::async_trait]
impl InventoryService for InventorySim {
    async fn release_hold(
        &self,
        request: Request<ReleaseHoldRequest>,
    ) -> Result<Response<ReleaseHoldResponse>, Status> {
        let metadata = ascii_metadata(request.metadata());
        let req = request.into_inner();
        let (idx, delay, plan) = self.begin(InventoryCall {
            reason: req.reason.clone(),
            ..InventoryCall::arriving(
                InventoryMethod::ReleaseHold,
                &req.reservation_id,
                &req.event_id,
                &req.seat_ids,
                req.quantity,
                &req.idempotency_key,
                metadata,
            )
        });
        pause(delay).await;
        let result = carry_out(
            plan,
            || self.release(idx, &req),
            |plan| match plan {
                Plan::Release(status) => Ok(ReleaseHoldResponse {
                    released_seats: if status == ReleaseStatus::Success {
                        seats(req.seat_ids.as_slice(), req.quantity, SeatStatus::Available)
                    } else {
                        Vec::new()
                    },
                    status: status as i32,
                    released_at: Some(SystemTime::now().into()),
                    error: None,
                }),
                _ => Err(Status::internal("misdirected fault")),
            },
        )
        .await;
        let outcome = match &result {
            Ok(reply) => reply.status().as_str_name().to_owned(),
            Err(status) => format!("grpc {:?}", status.code()),
        };
        log_call(
            InventoryMethod::ReleaseHold,
            &req.reservation_id,
            &outcome,
            self.was_replayed(idx),
        );
        result.map(Response::new)
    }

    async fn commit_reservation(
        &self,
        request: Request<CommitReservationRequest>,
    ) -> Result<Response<CommitReservationResponse>, Status> {
        let metadata = ascii_metadata(request.metadata());
        let req = request.into_inner();
        let (idx, delay, plan) = self.begin(InventoryCall {
            payment_intent_id: req.payment_intent_id.clone(),
            user_id: req.user_id.clone(),
            ..InventoryCall::arriving(
                InventoryMethod::CommitReservation,
                &req.reservation_id,
                &req.event_id,
                &req.seat_ids,
                req.quantity,
                &req.idempotency_key,
                metadata,
            )
        });
        pause(delay).await;
        let result = carry_out(
            plan,
            || self.commit(idx, &req),
            |plan| match plan {
                Plan::Commit(status) => Ok(if status == CommitStatus::Success {
                    CommitReservationResponse {
                        order_id: format!("ord-injected-{}", uuid::Uuid::new_v4()),
                        sold_seats: seats(req.seat_ids.as_slice(), req.quantity, SeatStatus::Sold),
                        status: status as i32,
                        committed_at: Some(SystemTime::now().into()),
                        error: None,
                    }
                } else {
                    CommitReservationResponse {
                        status: status as i32,
                        ..Default::default()
                    }
                }),
                _ => Err(Status::internal("misdirected fault")),
            },
        )
        .await;
        let outcome = match &result {
            Ok(reply) if reply.order_id.is_empty() => reply.status().as_str_name().to_owned(),
            Ok(reply) => format!("{} {}", reply.status().as_str_name(), reply.order_id),
            Err(status) => format!("grpc {:?}", status.code()),
        };
        log_call(
            InventoryMethod::CommitReservation,
            &req.reservation_id,
            &outcome,
            self.was_replayed(idx),
        );
        result.map(Response::new)
    }
}

/// Serves `sim` as `reservation.v1.InventoryService` on `listener` until `shutdown` is
/// cancelled. Taking a bound listener lets tests bind port 0 and learn the address first.
pub async fn serve_inventory(
    listener: TcpListener,
    sim: InventorySim,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = tonic::service::Routes::new(InventoryServiceServer::new(sim.clone()))
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(sim, proxy_in_front));
    tonic::transport::Server::builder()
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .with_context(|| match addr {
            Some(addr) => format!("inventory simulator on {addr} failed"),
            None => "inventory simulator failed".to_owned(),
        })
}

/// The proxy in front of the service: answers a queued [`ProxyAnswer`] itself, else passes
/// the call on.
async fn proxy_in_front(
    axum::extract::State(sim): axum::extract::State<InventorySim>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = match request.uri().path().rsplit('/').next() {
        Some("ReleaseHold") => Some(InventoryMethod::ReleaseHold),
        Some("CommitReservation") => Some(InventoryMethod::CommitReservation),
        _ => None,
    };
    let Some(answer) = method.and_then(|m| sim.inner.proxy.pop(&m)) else {
        return next.run(request).await;
    };
    sim.inner
        .proxy_answered
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        sim = "inventory",
        path = request.uri().path(),
        status = answer.status,
        with_body = answer.with_body,
        "plain HTTP answer in front of the service"
    );
    let status = axum::http::StatusCode::from_u16(answer.status)
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let mut response = axum::response::Response::new(if answer.with_body {
        axum::body::Body::from("<html><body><h1>Access denied</h1></body></html>")
    } else {
        axum::body::Body::empty()
    });
    *response.status_mut() = status;
    if answer.with_body {
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/html"),
        );
    }
    response
}

/// How a random failure of `kind` plays out on gRPC: its label in the call log and its plan
/// (a stall before applying is added to `delay`).
fn random_plan(kind: ChaosFault, stall: Duration, delay: &mut Duration) -> (&'static str, Plan) {
    let unavailable = || {
        Plan::Fail(
            Code::Unavailable,
            "injected random failure (simulator failure rate)".to_owned(),
        )
    };
    match kind {
        ChaosFault::Unavailable => ("random UNAVAILABLE", unavailable()),
        ChaosFault::ServerError => (
            "random DEADLINE_EXCEEDED",
            Plan::Fail(
                Code::DeadlineExceeded,
                "injected random failure: deadline exceeded upstream".to_owned(),
            ),
        ),
        ChaosFault::StallBeforeApply => {
            *delay += stall;
            ("random stall, then UNAVAILABLE", unavailable())
        }
        ChaosFault::StallAfterApply => {
            ("random applied, then stall", Plan::AppliedThenStall(stall))
        }
        ChaosFault::FailAfterApply => (
            "random applied, then UNAVAILABLE",
            Plan::AppliedThenFail(
                Code::Unavailable,
                "injected random failure after the effect was applied".to_owned(),
            ),
        ),
    }
}

fn log_call(method: InventoryMethod, reservation_id: &str, outcome: &str, replayed: bool) {
    tracing::info!(
        sim = "inventory",
        %method,
        reservation_id,
        outcome,
        replayed,
        "inventory call"
    );
}

fn require(value: &str, field: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(())
    }
}

fn error(code: ErrorCode, message: String) -> ProtoError {
    ProtoError {
        code: code as i32,
        message,
        ..Default::default()
    }
}

/// The seats named by `seat_ids`, or `quantity` generated general-admission seats.
fn seats(seat_ids: &[String], quantity: i32, status: SeatStatus) -> Vec<Seat> {
    let ids: Vec<String> = if seat_ids.is_empty() {
        (1..=quantity.clamp(0, MAX_GENERATED_SEATS))
            .map(|n| format!("GA-{n}"))
            .collect()
    } else {
        seat_ids.to_vec()
    };
    ids.into_iter()
        .map(|id| {
            let (section, number) = id
                .split_once('-')
                .map_or((String::new(), id.clone()), |(s, n)| {
                    (s.to_owned(), n.to_owned())
                });
            Seat {
                id,
                section,
                row: String::new(),
                number,
                price: Some(Money {
                    amount: 5000,
                    currency: "USD".to_owned(),
                }),
                status: status as i32,
            }
        })
        .collect()
}

fn ascii_metadata(metadata: &MetadataMap) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for entry in metadata.iter() {
        if let KeyAndValueRef::Ascii(key, value) = entry
            && let Ok(value) = value.to_str()
        {
            out.entry(key.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reservation::v1::inventory_service_client::InventoryServiceClient;
    use tonic::transport::Channel;

    struct Harness {
        sim: InventorySim,
        client: InventoryServiceClient<Channel>,
        shutdown: CancellationToken,
        server: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    async fn start() -> Harness {
        let sim = InventorySim::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_inventory(listener, sim.clone(), shutdown.clone()));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Harness {
            sim,
            client: InventoryServiceClient::new(channel),
            shutdown,
            server,
        }
    }

    impl Harness {
        async fn stop(self) {
            self.shutdown.cancel();
            drop(self.client);
            tokio::time::timeout(Duration::from_secs(5), self.server)
                .await
                .expect("server stops on shutdown")
                .unwrap()
                .unwrap();
        }
    }

    fn release(id: &str, key: &str) -> ReleaseHoldRequest {
        ReleaseHoldRequest {
            reservation_id: id.to_owned(),
            event_id: "evt-1".to_owned(),
            seat_ids: vec!["A-1".to_owned(), "A-2".to_owned()],
            quantity: 2,
            reason: "expired".to_owned(),
            idempotency_key: key.to_owned(),
        }
    }

    fn commit(id: &str, key: &str) -> CommitReservationRequest {
        CommitReservationRequest {
            reservation_id: id.to_owned(),
            event_id: "evt-1".to_owned(),
            seat_ids: vec![],
            quantity: 3,
            payment_intent_id: "pi-1".to_owned(),
            user_id: "user-1".to_owned(),
            idempotency_key: key.to_owned(),
        }
    }

    #[tokio::test]
    async fn release_then_release_again() {
        let mut h = start().await;
        let first = h
            .client
            .release_hold(release("r1", "k1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.status(), ReleaseStatus::Success);
        assert_eq!(first.released_seats.len(), 2);
        assert_eq!(first.released_seats[0].id, "A-1");
        assert_eq!(first.released_seats[0].section, "A");
        assert_eq!(first.released_seats[0].status(), SeatStatus::Available);
        assert!(first.released_at.is_some());
        assert_eq!(h.sim.state_of("r1"), Some(HoldState::Released));

        let second = h
            .client
            .release_hold(release("r1", "k2"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second.status(), ReleaseStatus::AlreadyReleased);

        let calls = h.sim.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].method, InventoryMethod::ReleaseHold);
        assert_eq!(calls[0].reason, "expired");
        assert_eq!(calls[0].seat_ids, vec!["A-1", "A-2"]);
        assert!(!calls[1].replayed);
        h.stop().await;
    }

    #[tokio::test]
    async fn commit_replay_returns_same_order_id() {
        let mut h = start().await;
        let first = h
            .client
            .commit_reservation(commit("r1", "k1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.status(), CommitStatus::Success);
        assert!(first.order_id.starts_with("ord-"));
        assert_eq!(first.sold_seats.len(), 3);
        assert_eq!(first.sold_seats[0].status(), SeatStatus::Sold);
        let again = h
            .client
            .commit_reservation(commit("r1", "k1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, first);
        assert_eq!(
            h.sim.state_of("r1"),
            Some(HoldState::Committed {
                order_id: first.order_id.clone()
            })
        );
        let calls = h.sim.calls();
        assert_eq!(calls.len(), 2);
        assert!(!calls[0].replayed);
        assert!(calls[1].replayed);
        assert_eq!(calls[1].payment_intent_id, "pi-1");
        assert_eq!(calls[1].user_id, "user-1");

        // A new key on a committed reservation is a conflict, not a replay.
        let err = h
            .client
            .commit_reservation(commit("r1", "k2"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        h.stop().await;
    }

    #[tokio::test]
    async fn commit_after_release_is_expired_and_release_after_commit_fails() {
        let mut h = start().await;
        h.client.release_hold(release("r1", "k1")).await.unwrap();
        let reply = h
            .client
            .commit_reservation(commit("r1", "k2"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), CommitStatus::FailedExpired);
        assert!(reply.order_id.is_empty());
        assert_eq!(h.sim.state_of("r1"), Some(HoldState::Released));

        h.client
            .commit_reservation(commit("r2", "k3"))
            .await
            .unwrap();
        let reply = h
            .client
            .release_hold(release("r2", "k4"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ReleaseStatus::Failed);
        assert_eq!(reply.error.unwrap().code(), ErrorCode::FailedPrecondition);
        assert!(matches!(
            h.sim.state_of("r2"),
            Some(HoldState::Committed { .. })
        ));
        h.stop().await;
    }

    #[tokio::test]
    async fn invalid_arguments() {
        let mut h = start().await;
        let err = h.client.release_hold(release("", "k1")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = h.client.release_hold(release("r1", "")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let mut req = commit("r1", "k2");
        req.payment_intent_id.clear();
        let err = h.client.commit_reservation(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = h
            .client
            .commit_reservation(commit("r1", ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(h.sim.state_of("r1"), None);
        assert_eq!(h.sim.calls().len(), 4);
        h.stop().await;
    }

    #[tokio::test]
    async fn scripted_faults_are_consumed_in_order_and_recorded() {
        let mut h = start().await;
        let m = InventoryMethod::ReleaseHold;
        h.sim.push_fault(m, GrpcFault::Status(Code::Unavailable));
        h.sim
            .push_fault(m, GrpcFault::Delay(Duration::from_millis(60)));
        h.sim
            .push_fault(m, GrpcFault::ReleaseStatus(ReleaseStatus::Failed));
        h.sim.push_fault(
            InventoryMethod::CommitReservation,
            GrpcFault::CommitStatus(CommitStatus::FailedPayment),
        );
        assert_eq!(h.sim.pending_faults(m), 3);

        let err = h
            .client
            .release_hold(release("r1", "k1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(h.sim.state_of("r1"), None, "a status fault changes nothing");

        let started = Instant::now();
        let reply = h
            .client
            .release_hold(release("r1", "k1"))
            .await
            .unwrap()
            .into_inner();
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(reply.status(), ReleaseStatus::Success);
        assert_eq!(h.sim.state_of("r1"), Some(HoldState::Released));

        let reply = h
            .client
            .release_hold(release("r2", "k2"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ReleaseStatus::Failed);
        assert_eq!(h.sim.state_of("r2"), None);

        let reply = h
            .client
            .commit_reservation(commit("r3", "k3"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), CommitStatus::FailedPayment);
        assert_eq!(h.sim.state_of("r3"), None);

        // Script exhausted: normal behaviour again.
        let reply = h
            .client
            .release_hold(release("r2", "k4"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ReleaseStatus::Success);
        assert_eq!(h.sim.pending_faults(m), 0);

        let faults: Vec<Option<String>> = h.sim.calls().into_iter().map(|c| c.fault).collect();
        assert_eq!(
            faults,
            vec![
                Some("status Unavailable".to_owned()),
                Some("delay 60ms".to_owned()),
                Some("release status RELEASE_STATUS_FAILED".to_owned()),
                Some("commit status COMMIT_STATUS_FAILED_PAYMENT".to_owned()),
                None,
            ]
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn metadata_is_recorded() {
        let mut h = start().await;
        let mut request = Request::new(release("r1", "k1"));
        request.metadata_mut().insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.client.release_hold(request).await.unwrap();
        let calls = h.sim.calls_for("r1");
        assert_eq!(
            calls[0].metadata.get("traceparent").map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn random_failures_and_seeding() {
        let mut h = start().await;
        h.sim.seed("r1", HoldState::Released);
        h.sim.set_failure_rate(1.0);
        let err = h
            .client
            .commit_reservation(commit("r1", "k1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(
            h.sim.calls()[0].fault.as_deref(),
            Some("random UNAVAILABLE")
        );
        h.sim.set_failure_rate(0.0);
        let reply = h
            .client
            .commit_reservation(commit("r1", "k1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), CommitStatus::FailedExpired);
        h.stop().await;
    }

    #[test]
    #[should_panic(expected = "cannot be injected")]
    fn misdirected_fault_panics() {
        InventorySim::new().push_fault(
            InventoryMethod::ReleaseHold,
            GrpcFault::CommitStatus(CommitStatus::Success),
        );
    }
}
