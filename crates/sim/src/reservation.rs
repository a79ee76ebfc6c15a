//! A simulated reservation API (the REST peer, served with axum).
//!
//! Two routes, the ones the worker uses:
//!
//! * `PATCH /internal/reservations/{id}` with `{"status": "EXPIRED" | "CONFIRMED" |
//!   "CANCELLED"}`: moves a HELD reservation to a final status. Idempotent twice over:
//!   a repeated `Idempotency-Key` replays the stored answer, and asking for the status the
//!   reservation already has succeeds. Any other transition is a 409.
//! * `GET /internal/reservations/{id}`: the reservation as JSON.
//!
//! Every request that reaches a route is recorded, and faults can be scripted per route.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, Version};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::fault::{Chaos, ChaosFault, Dice, FaultScript, lock, pause};

/// The statuses a PATCH may ask for.
const FINAL_STATUSES: [&str; 3] = ["EXPIRED", "CONFIRMED", "CANCELLED"];

/// The status of a reservation that is still open.
const HELD: &str = "HELD";

/// A reservation as the API stores and returns it; also what tests seed and inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The reservation's id (any string; may contain `/` and other reserved characters).
    pub reservation_id: String,
    /// The event the seats belong to.
    pub event_id: String,
    /// The user who holds the reservation.
    pub user_id: String,
    /// `HELD`, `EXPIRED`, `CONFIRMED` or `CANCELLED`.
    pub status: String,
    /// The held seats.
    pub seat_ids: Vec<String>,
    /// How many seats.
    pub quantity: i32,
}

impl Reservation {
    /// A HELD reservation with the deterministic demo data used by `auto_create`
    /// (event `evt-demo`, user `user-demo`, seats `A-1` and `A-2`). Handy for seeding too.
    pub fn demo(reservation_id: impl Into<String>) -> Self {
        Self {
            reservation_id: reservation_id.into(),
            event_id: "evt-demo".to_owned(),
            user_id: "user-demo".to_owned(),
            status: HELD.to_owned(),
            seat_ids: vec!["A-1".to_owned(), "A-2".to_owned()],
            quantity: 2,
        }
    }

    /// A HELD reservation matching the tests' sample events (`evt-1`, `user-1`, seats A-1 and
    /// A-2): the reservation API refuses PATCHes of unknown ids.
    pub fn held(reservation_id: impl Into<String>) -> Self {
        Self {
            event_id: "evt-1".to_owned(),
            user_id: "user-1".to_owned(),
            ..Self::demo(reservation_id)
        }
    }
}

/// The two routes, used to address the fault script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpRoute {
    /// `PATCH /internal/reservations/{id}`.
    Patch,
    /// `GET /internal/reservations/{id}`.
    Get,
}

/// A scripted fault for the next request on one route. Exists so tests can make the peer
/// fail in each way the worker must handle, including the ways of what stands in front of a
/// real API (an auth proxy, an ingress, a maintenance page). State is never touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFault {
    /// Answer this status with a JSON error body.
    Status(u16),
    /// Sleep this long, then answer normally (for timeout tests).
    Delay(Duration),
    /// Answer this 3xx with a `Location` header (a path or a URL), as an auth proxy sending
    /// clients to its login page, or a 303 "see the resource" does.
    Redirect { status: u16, location: String },
    /// Answer this status with headers only: no body, no content type.
    Bare(u16),
    /// Answer this status with an HTML page (a proxy's login or maintenance page).
    Html(u16),
    /// Answer this status with a JSON error that quotes the request's `Authorization` header,
    /// as careless APIs do in their error messages.
    EchoCredentials(u16),
}

impl HttpFault {
    fn status(&self) -> Option<u16> {
        match self {
            Self::Delay(_) => None,
            Self::Status(code)
            | Self::Redirect { status: code, .. }
            | Self::Bare(code)
            | Self::Html(code)
            | Self::EchoCredentials(code) => Some(*code),
        }
    }

    /// The answer this fault gives instead of handling the request.
    fn answer(&self, headers: &HeaderMap) -> Option<Response> {
        let status = StatusCode::from_u16(self.status()?).unwrap_or(StatusCode::BAD_GATEWAY);
        let response = match self {
            // Answered by `serve`, as the random failures are.
            Self::Delay(_) | Self::Status(_) => return None,
            Self::Redirect { location, .. } => {
                let mut r = status.into_response();
                if let Ok(v) = HeaderValue::from_str(location) {
                    r.headers_mut().insert(LOCATION, v);
                }
                r
            }
            Self::Bare(_) => status.into_response(),
            Self::Html(_) => (status, Html(MAINTENANCE_PAGE)).into_response(),
            Self::EchoCredentials(code) => {
                let presented = headers
                    .get(AUTHORIZATION)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                let reply = Reply::error(
                    *code,
                    "BAD_REQUEST",
                    format!("request with Authorization {presented:?} was refused"),
                );
                (status, axum::Json(reply.body)).into_response()
            }
        };
        Some(response)
    }
}

/// What a proxy in front of an API serves when the API is not there.
const MAINTENANCE_PAGE: &str =
    "<!doctype html><html><body><h1>Down for maintenance</h1><p>Back soon.</p></body></html>";

impl fmt::Display for HttpFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "status {code}"),
            Self::Delay(d) => write!(f, "delay {d:?}"),
            Self::Redirect { status, location } => write!(f, "redirect {status} to {location}"),
            Self::Bare(code) => write!(f, "bare {code}"),
            Self::Html(code) => write!(f, "html {code}"),
            Self::EchoCredentials(code) => write!(f, "echo credentials {code}"),
        }
    }
}

/// One request as the simulator received it, so tests can check what the worker sent and
/// what it was told.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// `PATCH` or `GET`.
    pub method: String,
    /// The path exactly as received (still percent-encoded).
    pub path: String,
    /// The reservation id, percent-decoded.
    pub reservation_id: String,
    /// Request headers by lowercase name; repeated headers joined with `", "`.
    pub headers: HashMap<String, String>,
    /// The body: parsed JSON, a JSON string holding the raw text if it was not JSON, or
    /// `None` if empty.
    pub body: Option<Value>,
    /// The status answered; 0 if the client went away before the answer (e.g. it timed out
    /// during an injected delay).
    pub status: u16,
    /// What was injected into this request, if anything (`"status 503"`, `"delay 50ms"`,
    /// `"random 503"`).
    pub fault: Option<String>,
    /// True when the answer was replayed for a repeated `Idempotency-Key`.
    pub replayed: bool,
    /// True when this request changed the reservation's status (HELD → a final status), so
    /// an audit can count effects per idempotency key, whatever the client was told.
    pub applied: bool,
    /// When the request arrived.
    pub at: Instant,
    /// The HTTP version it came over (`HTTP/1.1`, or `HTTP/2.0` from a client speaking h2c).
    pub version: String,
}

/// The simulated reservation API. Cheap to clone: clones share state, so a test keeps one
/// handle to seed, script and inspect while the server owns another.
#[derive(Debug, Clone, Default)]
pub struct ReservationSim {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<Store>,
    script: FaultScript<HttpRoute, HttpFault>,
    config: Mutex<Config>,
    dice: Dice,
}

#[derive(Debug, Default, Clone)]
struct Config {
    chaos: Chaos,
    auto_create: bool,
    token: Option<String>,
}

#[derive(Debug, Default)]
struct Store {
    reservations: HashMap<String, Reservation>,
    /// Stored answers by idempotency key: (status, body).
    replies: HashMap<String, (u16, Value)>,
    calls: Vec<HttpCall>,
}

/// An answer before it becomes an HTTP response.
struct Reply {
    status: u16,
    body: Value,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body)).into_response()
    }
}

impl Reply {
    fn ok(reservation: &Reservation) -> Self {
        Self {
            status: 200,
            body: serde_json::to_value(reservation).unwrap_or(Value::Null),
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": { "code": code, "message": message.into() } }),
        }
    }
}

impl ReservationSim {
    /// A well-behaved simulator with no reservations, no token, no auto-create, no chaos:
    /// the setup integration tests want.
    pub fn new() -> Self {
        Self::default()
    }

    /// When on, an unknown id is created HELD with [`Reservation::demo`] data on its first
    /// GET or PATCH (local runs); when off, unknown ids are 404 (tests).
    pub fn set_auto_create(&self, auto_create: bool) {
        lock(&self.inner.config).auto_create = auto_create;
    }

    /// Requires `Authorization: Bearer <token>` on every request when `Some`.
    pub fn set_token(&self, token: Option<String>) {
        lock(&self.inner.config).token = token;
    }

    /// Sets the probability (clamped to `0..=1`) that a request fails with 503.
    pub fn set_failure_rate(&self, failure_rate: f64) {
        lock(&self.inner.config).chaos.failure_rate = failure_rate;
    }

    /// Sets the latency added to every request.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.inner.config).chaos.latency = latency;
    }

    /// Replaces the whole random behaviour (rate, latency, mix of failures, stall).
    pub fn set_chaos(&self, chaos: Chaos) {
        lock(&self.inner.config).chaos = chaos;
    }

    /// Seeds the chaos draws, so a soak run repeats the same sequence of failures.
    pub fn seed_chaos(&self, seed: u64) {
        self.inner.dice.seed(seed);
    }

    /// Stores a reservation (replacing any with the same id).
    pub fn seed(&self, reservation: Reservation) {
        lock(&self.inner.state)
            .reservations
            .insert(reservation.reservation_id.clone(), reservation);
    }

    /// The reservation as currently stored, if any.
    pub fn get(&self, reservation_id: &str) -> Option<Reservation> {
        lock(&self.inner.state)
            .reservations
            .get(reservation_id)
            .cloned()
    }

    /// Queues `fault` for a later request on `route` (FIFO, one per request).
    ///
    /// # Panics
    /// If a `Status` fault is not a valid HTTP status code (100..=999): a mistake in the test.
    pub fn push_fault(&self, route: HttpRoute, fault: HttpFault) {
        if let Some(code) = fault.status() {
            assert!(
                StatusCode::from_u16(code).is_ok(),
                "{code} is not a valid HTTP status code"
            );
        }
        self.inner.script.push(route, fault);
    }

    /// How many scripted faults are still queued for `route`.
    pub fn pending_faults(&self, route: HttpRoute) -> usize {
        self.inner.script.pending(&route)
    }

    /// Every request received so far, in arrival order.
    pub fn calls(&self) -> Vec<HttpCall> {
        lock(&self.inner.state).calls.clone()
    }

    /// The requests received for one (decoded) reservation id, in arrival order.
    pub fn calls_for(&self, reservation_id: &str) -> Vec<HttpCall> {
        lock(&self.inner.state)
            .calls
            .iter()
            .filter(|c| c.reservation_id == reservation_id)
            .cloned()
            .collect()
    }

    /// Records the request, applies latency and any fault, then runs `handle` unless the
    /// fault answers instead. Finally records and logs the answer.
    async fn serve(
        &self,
        route: HttpRoute,
        mut call: HttpCall,
        headers: &HeaderMap,
        handle: impl FnOnce(&Self, &Config, usize) -> (Reply, bool),
    ) -> Response {
        let config = lock(&self.inner.config).clone();
        let mut delay = config.chaos.latency;
        let mut injected = None;
        let mut scripted = None;
        let mut after_apply = None;
        match self.inner.script.pop(&route) {
            Some(fault) => {
                call.fault = Some(fault.to_string());
                match fault {
                    HttpFault::Status(code) => injected = Some(code),
                    HttpFault::Delay(d) => delay += d,
                    other => scripted = Some(other),
                }
            }
            None => {
                if let Some(kind) = config.chaos.roll(&self.inner.dice) {
                    let (label, plan) = random_plan(kind, config.chaos.stall);
                    call.fault = Some(label.to_owned());
                    match plan {
                        RandomPlan::Answer(code) => injected = Some(code),
                        RandomPlan::StallThenAnswer(code) => {
                            delay += config.chaos.stall;
                            injected = Some(code);
                        }
                        RandomPlan::AfterApply(after) => after_apply = Some(after),
                    }
                }
            }
        }
        let method = call.method.clone();
        let reservation_id = call.reservation_id.clone();
        let idx = {
            let mut state = lock(&self.inner.state);
            state.calls.push(call);
            state.calls.len() - 1
        };

        pause(delay).await;

        if let Some(response) = scripted.and_then(|f| f.answer(headers)) {
            let status = response.status().as_u16();
            lock(&self.inner.state).calls[idx].status = status;
            tracing::info!(
                sim = "reservation",
                method,
                reservation_id,
                status,
                "reservation API call (scripted fault)"
            );
            return response;
        }

        let (reply, replayed) = match injected {
            Some(code) => (
                Reply::error(
                    code,
                    "INJECTED_FAULT",
                    format!("injected fault: status {code}"),
                ),
                false,
            ),
            None => match authorize(&config, headers) {
                Some(denied) => (denied, false),
                None => handle(self, &config, idx),
            },
        };
        let (reply, replayed) = match after_apply {
            None => (reply, replayed),
            Some(AfterApply::Stall(stall)) => {
                pause(stall).await;
                (reply, replayed)
            }
            Some(AfterApply::Fail(code)) => (
                Reply::error(
                    code,
                    "INJECTED_FAULT",
                    format!("injected fault after the request was handled: status {code}"),
                ),
                replayed,
            ),
        };

        {
            let mut state = lock(&self.inner.state);
            let entry = &mut state.calls[idx];
            entry.status = reply.status;
            entry.replayed = replayed;
        }
        tracing::info!(
            sim = "reservation",
            method,
            reservation_id,
            status = reply.status,
            replayed,
            "reservation API call"
        );

        let status =
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(reply.body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }

    /// The PATCH logic after faults and auth. Returns the reply and whether it was replayed.
    fn patch(
        &self,
        config: &Config,
        idx: usize,
        id: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Reply, bool) {
        if !is_json(headers) {
            return (
                Reply::error(
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "Content-Type must be application/json",
                ),
                false,
            );
        }
        let key = match headers.get("idempotency-key").map(HeaderValue::to_str) {
            Some(Ok(key)) if !key.trim().is_empty() => key.to_owned(),
            _ => {
                return (
                    Reply::error(
                        400,
                        "IDEMPOTENCY_KEY_REQUIRED",
                        "the Idempotency-Key header is required",
                    ),
                    false,
                );
            }
        };

        let mut state = lock(&self.inner.state);
        if let Some((status, body)) = state.replies.get(&key) {
            return (
                Reply {
                    status: *status,
                    body: body.clone(),
                },
                true,
            );
        }

        let target = match serde_json::from_slice::<Value>(body) {
            Err(e) => {
                return (
                    Reply::error(400, "INVALID_JSON", format!("body is not valid JSON: {e}")),
                    false,
                );
            }
            Ok(value) => match value.get("status").and_then(Value::as_str) {
                Some(s) if FINAL_STATUSES.contains(&s) => s.to_owned(),
                Some(s) => {
                    return (
                        Reply::error(
                            422,
                            "INVALID_STATUS",
                            format!("status must be one of {FINAL_STATUSES:?}, got {s:?}"),
                        ),
                        false,
                    );
                }
                None => {
                    return (
                        Reply::error(
                            422,
                            "INVALID_STATUS",
                            "body must have a string field \"status\"",
                        ),
                        false,
                    );
                }
            },
        };

        let mut applied = false;
        let Some(reservation) = find(&mut state.reservations, config, id) else {
            return (not_found(id), false);
        };
        let reply = if reservation.status == target {
            Reply::ok(reservation)
        } else if reservation.status == HELD {
            reservation.status = target;
            applied = true;
            Reply::ok(reservation)
        } else {
            let mut reply = Reply::error(
                409,
                "INVALID_TRANSITION",
                format!(
                    "reservation {id} is {} and cannot become {target}",
                    reservation.status
                ),
            );
            reply.body["error"]["current_status"] = Value::String(reservation.status.clone());
            reply
        };
        state.calls[idx].applied = applied;
        // Answers that decided something are kept for replay; 4xx validation answers are
        // not, so a corrected retry with the same key is processed.
        state
            .replies
            .insert(key, (reply.status, reply.body.clone()));
        (reply, false)
    }

    fn get_one(&self, config: &Config, id: &str) -> (Reply, bool) {
        let mut state = lock(&self.inner.state);
        match find(&mut state.reservations, config, id) {
            Some(reservation) => (Reply::ok(reservation), false),
            None => (not_found(id), false),
        }
    }
}

/// The simulator's routes, for tests that want to mount or drive them directly. A request
/// for any other path is recorded too (with an empty `reservation_id`), so a test can prove
/// that nothing went astray; a GET there is answered with an HTML page, as the login page
/// behind a proxy's redirect would be, anything else with 404.
pub fn router(sim: ReservationSim) -> Router {
    Router::new()
        .route(
            "/internal/reservations/{id}",
            get(get_handler).patch(patch_handler),
        )
        .fallback(stray_handler)
        .with_state(sim)
}

async fn stray_handler(
    State(sim): State<ReservationSim>,
    method: axum::http::Method,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = new_call(method.as_str(), version, &uri, "", &headers, &body);
    let response = if method == axum::http::Method::GET {
        (StatusCode::OK, Html(MAINTENANCE_PAGE)).into_response()
    } else {
        Reply::error(
            404,
            "NOT_FOUND",
            format!("no route for {method} {}", uri.path()),
        )
        .into_response()
    };
    call.status = response.status().as_u16();
    tracing::warn!(sim = "reservation", method = %method, path = uri.path(), status = call.status, "request outside the API's routes");
    lock(&sim.inner.state).calls.push(call);
    response
}

/// Serves the simulator on `listener` until `shutdown` is cancelled. Taking a bound
/// listener lets tests bind port 0 and learn the address first.
pub async fn serve_reservation(
    listener: TcpListener,
    sim: ReservationSim,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .with_context(|| match addr {
            Some(addr) => format!("reservation API simulator on {addr} failed"),
            None => "reservation API simulator failed".to_owned(),
        })
}

async fn patch_handler(
    State(sim): State<ReservationSim>,
    Path(id): Path<String>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = new_call("PATCH", version, &uri, &id, &headers, &body);
    sim.serve(HttpRoute::Patch, call, &headers, |sim, config, idx| {
        sim.patch(config, idx, &id, &headers, &body)
    })
    .await
}

async fn get_handler(
    State(sim): State<ReservationSim>,
    Path(id): Path<String>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = new_call("GET", version, &uri, &id, &headers, &body);
    sim.serve(HttpRoute::Get, call, &headers, |sim, config, _idx| {
        sim.get_one(config, &id)
    })
    .await
}

fn new_call(
    method: &str,
    version: Version,
    uri: &Uri,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> HttpCall {
    let mut names: HashMap<String, String> = HashMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        names
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let body = if body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
        )
    };
    HttpCall {
        method: method.to_owned(),
        path: uri.path().to_owned(),
        reservation_id: id.to_owned(),
        headers: names,
        body,
        status: 0,
        fault: None,
        replayed: false,
        applied: false,
        at: Instant::now(),
        version: format!("{version:?}"),
    }
}

/// What a request that comes after its effect gets.
#[derive(Debug, Clone, Copy)]
enum AfterApply {
    /// The answer is held this long.
    Stall(Duration),
    /// This error status is answered instead of the stored reply.
    Fail(u16),
}

/// How a random failure plays out on HTTP.
enum RandomPlan {
    /// Answer this status at once; nothing applied.
    Answer(u16),
    /// Answer this status after the stall; nothing applied.
    StallThenAnswer(u16),
    /// Handle the request, then misbehave.
    AfterApply(AfterApply),
}

/// A random failure of `kind` on HTTP: its label in the call log and its plan.
fn random_plan(kind: ChaosFault, stall: Duration) -> (&'static str, RandomPlan) {
    match kind {
        ChaosFault::Unavailable => ("random 503", RandomPlan::Answer(503)),
        ChaosFault::ServerError => ("random 500", RandomPlan::Answer(500)),
        ChaosFault::StallBeforeApply => {
            ("random stall, then 503", RandomPlan::StallThenAnswer(503))
        }
        ChaosFault::StallAfterApply => (
            "random applied, then stall",
            RandomPlan::AfterApply(AfterApply::Stall(stall)),
        ),
        ChaosFault::FailAfterApply => (
            "random applied, then 503",
            RandomPlan::AfterApply(AfterApply::Fail(503)),
        ),
    }
}

/// `None` when the request may proceed, else the 401 to answer.
fn authorize(config: &Config, headers: &HeaderMap) -> Option<Reply> {
    let token = config.token.as_deref()?;
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented == Some(token) {
        None
    } else {
        Some(Reply::error(
            401,
            "UNAUTHENTICATED",
            "a valid Authorization: Bearer token is required",
        ))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

fn find<'a>(
    reservations: &'a mut HashMap<String, Reservation>,
    config: &Config,
    id: &str,
) -> Option<&'a mut Reservation> {
    if config.auto_create && !reservations.contains_key(id) {
        reservations.insert(id.to_owned(), Reservation::demo(id));
    }
    reservations.get_mut(id)
}

fn not_found(id: &str) -> Reply {
    Reply::error(404, "NOT_FOUND", format!("reservation {id} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Client;

    struct Harness {
        sim: ReservationSim,
        base: String,
        client: Client,
        shutdown: CancellationToken,
        server: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    async fn start(sim: ReservationSim) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_reservation(listener, sim.clone(), shutdown.clone()));
        Harness {
            sim,
            base: format!("http://{addr}/internal/reservations"),
            client: Client::new(),
            shutdown,
            server,
        }
    }

    impl Harness {
        fn patch(&self, id: &str, key: &str, status: &str) -> reqwest::RequestBuilder {
            self.client
                .patch(format!("{}/{id}", self.base))
                .header("Idempotency-Key", key)
                .json(&json!({ "status": status }))
        }

        async fn get(&self, id: &str) -> reqwest::Response {
            self.client
                .get(format!("{}/{id}", self.base))
                .send()
                .await
                .unwrap()
        }

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

    fn held(id: &str) -> Reservation {
        Reservation {
            reservation_id: id.to_owned(),
            event_id: "evt-1".to_owned(),
            user_id: "user-1".to_owned(),
            status: HELD.to_owned(),
            seat_ids: vec!["B-7".to_owned()],
            quantity: 1,
        }
    }

    #[tokio::test]
    async fn patch_transitions_and_conflict() {
        let h = start(ReservationSim::new()).await;
        h.sim.seed(held("r1"));

        let resp = h.patch("r1", "k1", "EXPIRED").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Reservation = resp.json().await.unwrap();
        assert_eq!(body.status, "EXPIRED");
        assert_eq!(body.event_id, "evt-1");
        assert_eq!(h.sim.get("r1").unwrap().status, "EXPIRED");

        // Same status, new key: idempotent by state.
        let resp = h.patch("r1", "k2", "EXPIRED").send().await.unwrap();
        assert_eq!(resp.status(), 200);

        // A different final status: conflict.
        let resp = h.patch("r1", "k3", "CONFIRMED").send().await.unwrap();
        assert_eq!(resp.status(), 409);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "INVALID_TRANSITION");
        assert_eq!(body["error"]["current_status"], "EXPIRED");
        assert_eq!(h.sim.get("r1").unwrap().status, "EXPIRED");

        // Replaying k1 gives the stored 200, even though the state moved on since.
        let resp = h.patch("r1", "k1", "CANCELLED").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Reservation = resp.json().await.unwrap();
        assert_eq!(body.status, "EXPIRED");

        let calls = h.sim.calls();
        let summary: Vec<(u16, bool)> = calls.iter().map(|c| (c.status, c.replayed)).collect();
        assert_eq!(
            summary,
            vec![(200, false), (200, false), (409, false), (200, true)]
        );
        assert_eq!(calls[0].method, "PATCH");
        assert_eq!(calls[0].path, "/internal/reservations/r1");
        assert_eq!(calls[0].headers["idempotency-key"], "k1");
        assert_eq!(calls[0].body, Some(json!({ "status": "EXPIRED" })));
        h.stop().await;
    }

    #[tokio::test]
    async fn patch_validation() {
        let h = start(ReservationSim::new()).await;
        h.sim.seed(held("r1"));

        let resp = h
            .client
            .patch(format!("{}/r1", h.base))
            .json(&json!({ "status": "EXPIRED" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "missing Idempotency-Key");

        let resp = h
            .client
            .patch(format!("{}/r1", h.base))
            .header("Idempotency-Key", "k1")
            .header(CONTENT_TYPE, "text/plain")
            .body(r#"{"status":"EXPIRED"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 415);

        let resp = h.patch("r1", "k2", "SOLD").send().await.unwrap();
        assert_eq!(resp.status(), 422);
        let resp = h.patch("r1", "k3", "HELD").send().await.unwrap();
        assert_eq!(resp.status(), 422);

        let resp = h.patch("nope", "k4", "EXPIRED").send().await.unwrap();
        assert_eq!(resp.status(), 404);

        assert_eq!(h.sim.get("r1").unwrap().status, HELD);
        // Validation answers are not stored: the same key works once corrected.
        let resp = h.patch("r1", "k2", "CANCELLED").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(h.sim.get("r1").unwrap().status, "CANCELLED");
        h.stop().await;
    }

    #[tokio::test]
    async fn token_is_enforced() {
        let sim = ReservationSim::new();
        sim.set_token(Some("s3cret".to_owned()));
        let h = start(sim).await;
        h.sim.seed(held("r1"));

        assert_eq!(h.get("r1").await.status(), 401);
        let resp = h
            .patch("r1", "k1", "EXPIRED")
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(h.sim.get("r1").unwrap().status, HELD);

        let resp = h
            .patch("r1", "k1", "EXPIRED")
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let resp = h
            .client
            .get(format!("{}/r1", h.base))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(h.sim.calls()[2].headers["authorization"], "Bearer s3cret");
        h.stop().await;
    }

    #[tokio::test]
    async fn get_unknown_and_auto_create() {
        let h = start(ReservationSim::new()).await;
        assert_eq!(h.get("r1").await.status(), 404);
        assert_eq!(h.sim.get("r1"), None);

        h.sim.set_auto_create(true);
        let resp = h.get("r1").await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!({
                "reservation_id": "r1",
                "event_id": "evt-demo",
                "user_id": "user-demo",
                "status": "HELD",
                "seat_ids": ["A-1", "A-2"],
                "quantity": 2,
            })
        );
        let resp = h.patch("r2", "k1", "CONFIRMED").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(h.sim.get("r2").unwrap().status, "CONFIRMED");
        h.stop().await;
    }

    #[tokio::test]
    async fn percent_encoded_id_is_decoded() {
        let h = start(ReservationSim::new()).await;
        h.sim.seed(held("r/1"));
        let resp = h.patch("r%2F1", "k1", "EXPIRED").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(h.sim.get("r/1").unwrap().status, "EXPIRED");
        let call = &h.sim.calls_for("r/1")[0];
        assert_eq!(call.path, "/internal/reservations/r%2F1");
        assert_eq!(call.reservation_id, "r/1");
        h.stop().await;
    }

    #[tokio::test]
    async fn scripted_faults_are_consumed_in_order_and_recorded() {
        let h = start(ReservationSim::new()).await;
        h.sim.seed(held("r1"));
        h.sim.push_fault(HttpRoute::Patch, HttpFault::Status(503));
        h.sim.push_fault(
            HttpRoute::Patch,
            HttpFault::Delay(Duration::from_millis(60)),
        );
        h.sim.push_fault(HttpRoute::Get, HttpFault::Status(500));

        let resp = h.patch("r1", "k1", "EXPIRED").send().await.unwrap();
        assert_eq!(resp.status(), 503);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "INJECTED_FAULT");
        assert_eq!(h.sim.get("r1").unwrap().status, HELD, "no state change");

        assert_eq!(h.get("r1").await.status(), 500);

        let started = Instant::now();
        let resp = h.patch("r1", "k1", "EXPIRED").send().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(
            resp.status(),
            200,
            "the faulted attempt was not stored under k1"
        );
        assert_eq!(h.get("r1").await.status(), 200);
        assert_eq!(h.sim.pending_faults(HttpRoute::Patch), 0);
        assert_eq!(h.sim.pending_faults(HttpRoute::Get), 0);

        let calls: Vec<(String, u16, Option<String>)> = h
            .sim
            .calls()
            .into_iter()
            .map(|c| (c.method, c.status, c.fault))
            .collect();
        assert_eq!(
            calls,
            vec![
                ("PATCH".to_owned(), 503, Some("status 503".to_owned())),
                ("GET".to_owned(), 500, Some("status 500".to_owned())),
                ("PATCH".to_owned(), 200, Some("delay 60ms".to_owned())),
                ("GET".to_owned(), 200, None),
            ]
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn random_failures() {
        let sim = ReservationSim::new();
        sim.set_failure_rate(1.0);
        sim.seed(held("r1"));
        let h = start(sim).await;
        assert_eq!(h.get("r1").await.status(), 503);
        assert_eq!(h.sim.calls()[0].fault.as_deref(), Some("random 503"));
        h.stop().await;
    }

    #[test]
    #[should_panic(expected = "not a valid HTTP status")]
    fn invalid_status_fault_panics() {
        ReservationSim::new().push_fault(HttpRoute::Get, HttpFault::Status(42));
    }
}
