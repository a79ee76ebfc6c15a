//! The reservation API over REST (reqwest): one pooled client, timeouts on connect and on the
//! whole request, the idempotency key on every write.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use tracing::Instrument;

use super::classify::{self, Applied, CallError};
use super::{ReservationRecord, ReservationStatus, Reservations};
use crate::config::{Http2, Secret};
use crate::labels::DeadLetterReason;
use crate::telemetry::tracing::ClientSpan;

/// How much of an error answer's body is read: its first lines say what went wrong, and an
/// error page can be any size.
const ERROR_BODY_BYTES: usize = 4096;

/// The reservation the circuit breaker's probe asks for: no such reservation exists, and any
/// answer from the API itself (a 404) proves it is back.
pub(crate) const PROBE_RESERVATION_ID: &str = "reservation-worker-probe";

/// The largest reservation record read; a real one is a few hundred bytes.
const RECORD_BYTES: usize = 1 << 20;

/// The body's first `max` bytes as text, and whether there was more.
async fn bounded_text(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<(String, bool), reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((String::from_utf8_lossy(&buf).into_owned(), false))
}

/// A client of `{base}/internal/reservations/{id}`.
#[derive(Clone, Debug)]
pub struct RestReservations {
    http: reqwest::Client,
    /// `{base}/internal/reservations`, made once: each call only adds the id.
    reservations: reqwest::Url,
    /// Its path segments, which a call's URL has one more of.
    segments: usize,
    token: Option<Secret>,
}

impl RestReservations {
    /// One pooled client for all tasks, with connect and request timeouts.
    pub fn new(
        base: &str,
        token: Option<Secret>,
        timeout: Duration,
        http2: Http2,
    ) -> Result<Self, ReservationClientError> {
        let not_a_base = || ReservationClientError::Base(base.to_string());
        let mut reservations = reqwest::Url::parse(base).map_err(|_| not_a_base())?;
        reservations
            .path_segments_mut()
            .map_err(|_| not_a_base())?
            .pop_if_empty()
            .extend(["internal", "reservations"]);
        let segments = reservations.path_segments().map_or(0, Iterator::count);
        let builder = match http2 {
            Http2::Alpn => reqwest::Client::builder(),
            Http2::PriorKnowledge => reqwest::Client::builder().http2_prior_knowledge(),
            Http2::Off => reqwest::Client::builder().http1_only(),
        };
        let http = builder
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // A redirect is classified, never followed: see `classify::http_head`.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("reservation-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(RestReservations {
            http,
            reservations,
            segments,
            token,
        })
    }

    /// `{base}/internal/reservations/{id}`, the id percent-encoded as one path segment.
    fn url(&self, reservation_id: &str) -> Result<reqwest::Url, CallError> {
        let mut url = self.reservations.clone();
        // `new` checked that this URL takes a path, so the push always happens.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(reservation_id);
        }
        // The URL library skips `.` and `..` instead of encoding them: the request would go to
        // another resource. Validation refuses such ids; this catches any that get past it.
        if url.path_segments().map_or(0, Iterator::count) != self.segments + 1 {
            return Err(CallError::Terminal {
                class: DeadLetterReason::InvalidField,
                reason: format!("reservation id {reservation_id:?} cannot be one URL path segment"),
            });
        }
        Ok(url)
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => match HeaderValue::from_str(&format!("Bearer {}", t.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    req.header(AUTHORIZATION, v)
                }
                Err(_) => req,
            },
            None => req,
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReservationClientError {
    #[error("RESERVATION_API_BASE={0:?} is not a URL that can take a path")]
    Base(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

#[async_trait]
impl Reservations for RestReservations {
    async fn update_status(
        &self,
        reservation_id: &str,
        status: ReservationStatus,
        idempotency_key: &str,
    ) -> Result<Applied, CallError> {
        let url = self.url(reservation_id)?;
        let call = ClientSpan::http("PATCH", &url);
        let req = self
            .http
            .patch(url)
            .headers(call.http_headers())
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", idempotency_key)
            .body(format!(r#"{{"status":"{}"}}"#, status.as_str()));
        let resp = self
            .authorize(req)
            .send()
            .instrument(call.span().clone())
            .await
            .map_err(|e| classify::http_transport(&call.fail(e)))?;
        let code = resp.status();
        call.http_status(code.as_u16());
        if let Some(decided) = classify::http_head(code, resp.headers()) {
            return decided;
        }
        let body = bounded_text(resp, ERROR_BODY_BYTES)
            .await
            .map(|(text, _)| text)
            .unwrap_or_default();
        classify::http_status(code, &body)
    }

    async fn fetch(&self, reservation_id: &str) -> Result<ReservationRecord, CallError> {
        let url = self.url(reservation_id)?;
        let call = ClientSpan::http("GET", &url);
        let resp = self
            .authorize(self.http.get(url).headers(call.http_headers()))
            .send()
            .instrument(call.span().clone())
            .await
            .map_err(|e| classify::http_transport(&call.fail(e)))?;
        let code = resp.status();
        call.http_status(code.as_u16());
        let decided = classify::http_head(code, resp.headers());
        if let Some(Err(e)) = decided {
            return Err(e);
        }
        let max = if decided.is_some() {
            RECORD_BYTES
        } else {
            ERROR_BODY_BYTES
        };
        let (body, cut) = bounded_text(resp, max)
            .await
            .map_err(|e| classify::http_transport(&e))?;
        if decided.is_none() {
            classify::http_status(code, &body)?;
        }
        if cut {
            return Err(CallError::terminal(format!(
                "GET reservation {reservation_id}: body is larger than {RECORD_BYTES} bytes, not a reservation"
            )));
        }
        serde_json::from_str(&body).map_err(|e| {
            CallError::terminal(format!(
                "GET reservation {reservation_id}: body is not a reservation: {e}"
            ))
        })
    }

    /// A GET of [`PROBE_RESERVATION_ID`]: the API answered unless the answer is retryable
    /// (no connection, a 5xx, a proxy's redirect or page, 401/403).
    async fn probe(&self) -> Result<(), CallError> {
        match self.fetch(PROBE_RESERVATION_ID).await {
            Err(e @ CallError::Retryable(_)) => Err(e),
            Ok(_) | Err(CallError::Terminal { .. }) => Ok(()),
        }
    }
}
