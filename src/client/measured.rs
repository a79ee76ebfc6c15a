//! A peer client timed into `downstream_request_duration_seconds`. Wrapping at the trait
//! keeps the clients free of metrics code and times every caller the same way.

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;

use super::{Applied, CallError, Inventory, ReservationRecord, ReservationStatus, Reservations};
use crate::proto::reservation::v1::{CommitReservationRequest, ReleaseHoldRequest};
use crate::telemetry::metrics::{INVENTORY, RESERVATION_API, metrics};

/// The `result` label of a call's classified answer.
fn result_label<T>(r: &Result<T, CallError>, applied: impl Fn(&T) -> bool) -> &'static str {
    match r {
        Ok(v) if applied(v) => "already_applied",
        Ok(_) => "ok",
        Err(CallError::Retryable(_)) => "retryable",
        Err(CallError::Terminal { .. }) => "terminal",
    }
}

async fn timed<T, F>(
    target: &'static str,
    method: &'static str,
    call: F,
    applied: impl Fn(&T) -> bool,
) -> Result<T, CallError>
where
    F: Future<Output = Result<T, CallError>>,
{
    let started = Instant::now();
    let r = call.await;
    metrics().downstream(target, method, result_label(&r, applied), started.elapsed());
    r
}

/// A peer client whose calls are timed (see the module).
pub(crate) struct Measured<T>(pub T);

fn already(a: &Applied) -> bool {
    *a == Applied::AlreadyApplied
}

#[async_trait]
impl<T: Inventory> Inventory for Measured<T> {
    async fn release_hold(&self, req: ReleaseHoldRequest) -> Result<Applied, CallError> {
        timed(INVENTORY, "ReleaseHold", self.0.release_hold(req), already).await
    }

    async fn commit_reservation(
        &self,
        req: CommitReservationRequest,
    ) -> Result<Applied, CallError> {
        timed(
            INVENTORY,
            "CommitReservation",
            self.0.commit_reservation(req),
            already,
        )
        .await
    }

    /// Counted in `worker_circuit_probes_total`, not as a workflow call.
    async fn probe(&self) -> Result<(), CallError> {
        self.0.probe().await
    }
}

#[async_trait]
impl<T: Reservations> Reservations for Measured<T> {
    async fn update_status(
        &self,
        reservation_id: &str,
        status: ReservationStatus,
        idempotency_key: &str,
    ) -> Result<Applied, CallError> {
        timed(
            RESERVATION_API,
            "PATCH",
            self.0
                .update_status(reservation_id, status, idempotency_key),
            already,
        )
        .await
    }

    async fn fetch(&self, reservation_id: &str) -> Result<ReservationRecord, CallError> {
        timed(RESERVATION_API, "GET", self.0.fetch(reservation_id), |_| {
            false
        })
        .await
    }

    /// Counted in `worker_circuit_probes_total`, not as a workflow call.
    async fn probe(&self) -> Result<(), CallError> {
        self.0.probe().await
    }
}
