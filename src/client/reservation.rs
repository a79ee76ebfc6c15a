//! The reservation API over REST (reqwest): one pooled client, timeouts on connect and on the
//! whole request, the idempotency key on every write.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use tracing::Instrument;

use super::classify::{self, Applied, CallError};
use super::{ReservationRecord, ReservationStatus, Reservations};
use crate::config::Secret;
use crate::telemetry::tracing::ClientSpan;

/// A client of `{base}/internal/reservations/{id}`.
#[derive(Clone, Debug)]
pub struct RestReservations {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<Secret>,
}

impl RestReservations {
    /// One pooled client for all tasks, with connect and request timeouts.
    pub fn new(
        base: &str,
        token: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, ReservationClientError> {
        let base = reqwest::Url::parse(base)
            .map_err(|_| ReservationClientError::Base(base.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("reservation-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(RestReservations { http, base, token })
    }

    /// `{base}/internal/reservations/{id}`, the id percent-encoded as one path segment.
    fn url(&self, reservation_id: &str) -> Result<reqwest::Url, CallError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| CallError::terminal("RESERVATION_API_BASE cannot take a path"))?
            .pop_if_empty()
            .extend(["internal", "reservations", reservation_id]);
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
    #[error("RESERVATION_API_BASE={0:?} is not a URL")]
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
        if code.is_success() {
            return Ok(Applied::Done);
        }
        let body = resp.text().await.unwrap_or_default();
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
        let body = resp
            .text()
            .await
            .map_err(|e| classify::http_transport(&e))?;
        classify::http_status(code, &body)?;
        serde_json::from_str(&body).map_err(|e| {
            CallError::terminal(format!(
                "GET reservation {reservation_id}: body is not a reservation: {e}"
            ))
        })
    }
}
