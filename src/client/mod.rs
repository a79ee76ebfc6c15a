//! The two downstream peers. Each client maps its transport's errors to [`CallError`] at the
//! edge, so the retry loop never looks at a gRPC code or an HTTP status.

pub(crate) mod circuit;
pub(crate) mod classify;
pub(crate) mod inventory;
mod measured;
pub(crate) mod reservation;

use async_trait::async_trait;

use crate::proto::reservation::v1::{CommitReservationRequest, ReleaseHoldRequest};

pub(crate) use classify::{Applied, CallError};
pub(crate) use measured::Measured;

/// The inventory service (gRPC). A trait so the workflows can be exercised against any
/// server speaking the contract.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// `ReleaseHold`: puts the held seats back on sale.
    async fn release_hold(&self, req: ReleaseHoldRequest) -> Result<Applied, CallError>;
    /// `CommitReservation`: sells the held seats.
    async fn commit_reservation(&self, req: CommitReservationRequest)
    -> Result<Applied, CallError>;
    /// A call that changes nothing, for the circuit breaker to learn whether the service is
    /// back: `Ok` when it answers at all, `Err` (retryable) while it cannot be reached.
    async fn probe(&self) -> Result<(), CallError>;
}

/// The reservation API (REST).
#[async_trait]
pub trait Reservations: Send + Sync {
    /// `PATCH /internal/reservations/{id}` with the new status.
    async fn update_status(
        &self,
        reservation_id: &str,
        status: ReservationStatus,
        idempotency_key: &str,
    ) -> Result<Applied, CallError>;
    /// `GET /internal/reservations/{id}`: fills in what a payment event left out.
    async fn fetch(&self, reservation_id: &str) -> Result<ReservationRecord, CallError>;
    /// A call that changes nothing (see [`Inventory::probe`]).
    async fn probe(&self) -> Result<(), CallError>;
}

/// The statuses the worker sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Expired,
    Confirmed,
    Cancelled,
}

impl ReservationStatus {
    /// The status as the reservation API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Expired => "EXPIRED",
            ReservationStatus::Confirmed => "CONFIRMED",
            ReservationStatus::Cancelled => "CANCELLED",
        }
    }
}

/// A reservation as the reservation API returns it; every field may be absent.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct ReservationRecord {
    #[serde(default)]
    pub reservation_id: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub seat_ids: Option<Vec<String>>,
    #[serde(default)]
    pub quantity: Option<i64>,
}
