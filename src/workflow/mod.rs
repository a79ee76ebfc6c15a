//! The three workflows. Each is two steps in a fixed order; [`attempt`] runs the steps not yet
//! done in this delivery, so a retry never repeats a step that already succeeded.

mod approved;
mod expired;
mod failed;

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::client::circuit::{CircuitSettings, Circuits, Peer};
use crate::client::{
    Applied, CallError, Inventory, ReservationRecord, ReservationStatus, Reservations,
};
use crate::event::{Event, EventKind, Payment};
use crate::labels::{AppliedSteps, DeadLetterReason, StepName};
use crate::proto::reservation::v1::{CommitReservationRequest, ReleaseHoldRequest};

/// One downstream call of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// gRPC `ReleaseHold` with this reason.
    ReleaseHold { reason: &'static str },
    /// gRPC `CommitReservation`.
    CommitReservation,
    /// REST PATCH of the reservation's status.
    StatusUpdate(ReservationStatus),
    /// REST GET of the reservation, for the inventory fields a payment event left out. Runs
    /// before the first step, so an event that cannot be completed changes nothing.
    FetchReservation,
}

impl Step {
    /// Its label in logs and metrics.
    pub(crate) fn name(self) -> StepName {
        match self {
            Step::ReleaseHold { .. } => StepName::ReleaseHold,
            Step::CommitReservation => StepName::CommitReservation,
            Step::StatusUpdate(_) => StepName::StatusUpdate,
            Step::FetchReservation => StepName::FetchReservation,
        }
    }

    /// The peer the step calls.
    pub(crate) fn peer(self) -> Peer {
        match self {
            Step::ReleaseHold { .. } | Step::CommitReservation => Peer::Inventory,
            Step::StatusUpdate(_) | Step::FetchReservation => Peer::ReservationApi,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ReleaseHold { reason } => write!(f, "ReleaseHold({reason})"),
            Step::CommitReservation => f.write_str("CommitReservation"),
            Step::StatusUpdate(s) => write!(f, "PATCH status {}", s.as_str()),
            Step::FetchReservation => f.write_str("GET reservation"),
        }
    }
}

/// The workflow of an event: its two steps, in order.
pub(crate) fn steps(event: &Event) -> [Step; 2] {
    match event.kind {
        EventKind::ReservationExpired(_) => expired::STEPS,
        EventKind::PaymentApproved(_) => approved::STEPS,
        EventKind::PaymentFailed(_) => failed::STEPS,
    }
}

/// The downstream peers a workflow calls, each behind its circuit breaker.
#[derive(Clone)]
pub struct Peers {
    pub inventory: Arc<dyn Inventory>,
    pub reservations: Arc<dyn Reservations>,
    /// The breakers: the pool stops retrying, and the receive loops stop receiving, while
    /// one is open.
    pub circuits: Circuits,
}

impl Peers {
    /// The two clients behind breakers with `settings`; `on_change` hears whether receiving
    /// is paused and why (readiness), and the probes stop when `stop` is cancelled.
    pub fn new(
        inventory: Arc<dyn Inventory>,
        reservations: Arc<dyn Reservations>,
        settings: CircuitSettings,
        on_change: impl Fn(Option<String>) + Send + Sync + 'static,
        stop: CancellationToken,
    ) -> Peers {
        let circuits = Circuits::new(
            settings,
            inventory.clone(),
            reservations.clone(),
            on_change,
            stop,
        );
        Peers {
            inventory: Arc::new(circuits.guard_inventory(inventory)),
            reservations: Arc::new(circuits.guard_reservations(reservations)),
            circuits,
        }
    }
}

/// What one delivery has done so far: steps completed and the reservation looked up.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    done: usize,
    /// The inventory fields of a payment event, resolved once per delivery.
    fields: Option<InventoryFields>,
    already_applied: usize,
}

impl Progress {
    /// Steps completed in this delivery.
    pub(crate) fn steps_done(&self) -> usize {
        self.done
    }

    /// Steps whose peer said the effect was already there.
    pub(crate) fn already_applied(&self) -> usize {
        self.already_applied
    }

    /// The steps of `event`'s workflow whose effect is in place: applied in this delivery, or
    /// found already applied (by an earlier one).
    pub(crate) fn applied(&self, event: &Event) -> AppliedSteps {
        AppliedSteps::new(steps(event).iter().take(self.done).map(|s| s.name()))
    }
}

/// A step that failed, and how.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{step}: {error}")]
pub(crate) struct StepError {
    pub step: Step,
    pub error: CallError,
}

/// Runs the steps not yet done, in order, stopping at the first failure.
pub(crate) async fn attempt(
    event: &Event,
    progress: &mut Progress,
    peers: &Peers,
) -> Result<(), StepError> {
    if let EventKind::PaymentApproved(p) | EventKind::PaymentFailed(p) = &event.kind
        && progress.fields.is_none()
    {
        let fields = inventory_fields(p, peers)
            .await
            .map_err(|error| StepError {
                step: Step::FetchReservation,
                error,
            })?;
        progress.fields = Some(fields);
    }
    let steps = steps(event);
    while let Some(&step) = steps.get(progress.done) {
        match run_step(step, event, progress, peers).await {
            Ok(applied) => {
                if applied == Applied::AlreadyApplied {
                    progress.already_applied += 1;
                }
                progress.done += 1;
            }
            Err(error) => return Err(StepError { step, error }),
        }
    }
    Ok(())
}

async fn run_step(
    step: Step,
    event: &Event,
    progress: &mut Progress,
    peers: &Peers,
) -> Result<Applied, CallError> {
    if let Step::StatusUpdate(status) = step {
        return peers
            .reservations
            .update_status(event.reservation_id(), status, &event.envelope_id)
            .await;
    }
    let fields = match &event.kind {
        EventKind::ReservationExpired(_) => InventoryFields::carried_by(event),
        EventKind::PaymentApproved(_) | EventKind::PaymentFailed(_) => resolved(progress)?,
    };
    match inventory_request(step, event, fields) {
        Some(InventoryRequest::ReleaseHold(req)) => peers.inventory.release_hold(req).await,
        Some(InventoryRequest::CommitReservation(req)) => {
            peers.inventory.commit_reservation(req).await
        }
        None => Err(CallError::terminal(format!(
            "{step} is not a step of {}",
            event.event_type()
        ))),
    }
}

/// An inventory call of a workflow step, built in one place for [`attempt`] to send and for
/// the debug port's ValidateEvent to show, so the two cannot disagree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InventoryRequest {
    ReleaseHold(ReleaseHoldRequest),
    CommitReservation(CommitReservationRequest),
}

/// The request `step` sends for `event` with `fields`; `None` when `step` is not an inventory
/// call of that event.
pub(crate) fn inventory_request(
    step: Step,
    event: &Event,
    fields: InventoryFields,
) -> Option<InventoryRequest> {
    let reservation_id = event.reservation_id().to_string();
    let idempotency_key = event.envelope_id.clone();
    match (step, &event.kind) {
        (Step::ReleaseHold { reason }, _) => {
            Some(InventoryRequest::ReleaseHold(ReleaseHoldRequest {
                reservation_id,
                event_id: fields.event_id,
                seat_ids: fields.seat_ids,
                quantity: fields.quantity,
                reason: reason.to_string(),
                idempotency_key,
            }))
        }
        (Step::CommitReservation, EventKind::PaymentApproved(p) | EventKind::PaymentFailed(p)) => {
            Some(InventoryRequest::CommitReservation(
                CommitReservationRequest {
                    reservation_id,
                    event_id: fields.event_id,
                    seat_ids: fields.seat_ids,
                    quantity: fields.quantity,
                    payment_intent_id: p.payment_intent_id.clone(),
                    user_id: fields.user_id,
                    idempotency_key,
                },
            ))
        }
        _ => None,
    }
}

/// What the inventory calls of an event need.
#[derive(Debug, Clone)]
pub(crate) struct InventoryFields {
    pub event_id: String,
    pub seat_ids: Vec<String>,
    pub quantity: i32,
    pub user_id: String,
}

impl InventoryFields {
    /// The fields the event carries itself. An expiry carries them all; what a payment lacks
    /// ([`needs_lookup`]) is left empty here and read from the reservation by [`attempt`].
    pub(crate) fn carried_by(event: &Event) -> InventoryFields {
        match &event.kind {
            EventKind::ReservationExpired(e) => InventoryFields {
                event_id: e.event_id.clone(),
                seat_ids: e.seat_ids.clone(),
                quantity: e.qty as i32,
                user_id: String::new(),
            },
            EventKind::PaymentApproved(p) | EventKind::PaymentFailed(p) => InventoryFields {
                event_id: p.event_id.clone().unwrap_or_default(),
                seat_ids: p.seat_ids.clone(),
                quantity: positive_qty(p).unwrap_or(0) as i32,
                user_id: p.user_id.clone().unwrap_or_default(),
            },
        }
    }
}

/// A payment event that lacks `event_id`, or both `seat_ids` and `qty`, has them read from
/// the reservation (GET) before its first step.
pub(crate) fn needs_lookup(p: &Payment) -> bool {
    p.event_id.is_none() || (p.seat_ids.is_empty() && positive_qty(p).is_none())
}

/// `qty` when it says something: zero counts as absent.
fn positive_qty(p: &Payment) -> Option<u32> {
    p.qty.filter(|q| *q > 0)
}

/// The fields resolved before the first step (`attempt` guarantees they are there).
fn resolved(progress: &Progress) -> Result<InventoryFields, CallError> {
    progress
        .fields
        .clone()
        .ok_or_else(|| CallError::terminal("inventory fields were not resolved"))
}

/// Takes the inventory fields from the event, looking the reservation up when the event lacks
/// the `event_id` or both `seat_ids` and `qty`.
async fn inventory_fields(p: &Payment, peers: &Peers) -> Result<InventoryFields, CallError> {
    let qty = positive_qty(p);
    let found = if !needs_lookup(p) {
        ReservationRecord::default()
    } else {
        peers.reservations.fetch(&p.reservation_id).await?
    };
    let event_id = p
        .event_id
        .clone()
        .or(found.event_id.filter(|s| !s.is_empty()));
    let seat_ids = if p.seat_ids.is_empty() {
        found
            .seat_ids
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        p.seat_ids.clone()
    };
    let quantity = qty
        .map(i64::from)
        .or(found.quantity.filter(|q| *q > 0))
        .unwrap_or(0);
    let mut missing = Vec::new();
    if event_id.is_none() {
        missing.push("event_id");
    }
    if seat_ids.is_empty() && quantity == 0 {
        missing.push("seat_ids or qty");
    }
    if !(0..=i64::from(i32::MAX)).contains(&quantity) {
        missing.push("a quantity within int32");
    }
    if !missing.is_empty() {
        return Err(CallError::Terminal {
            class: DeadLetterReason::MissingInventoryFields,
            reason: format!(
                "{} missing from the event and from GET /internal/reservations/{}",
                missing.join(", "),
                p.reservation_id
            ),
        });
    }
    Ok(InventoryFields {
        event_id: event_id.unwrap_or_default(),
        seat_ids,
        quantity: quantity as i32,
        user_id: p.user_id.clone().or(found.user_id).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The half-applied series exported at zero are the workflows' first steps: the only
    /// steps that can have applied when a workflow ends in a dead letter.
    #[test]
    fn half_applied_series_follow_the_workflows() {
        let first = [
            ("reservation.expired", expired::STEPS[0].name()),
            ("payment.approved", approved::STEPS[0].name()),
            ("payment.failed", failed::STEPS[0].name()),
        ];
        assert_eq!(crate::telemetry::metrics::HALF_APPLIED, first);
    }

    #[test]
    fn applied_steps_are_the_steps_done_in_order() {
        let mut p = Progress::default();
        let event = crate::event::parse(
            &serde_json::json!({"type": "payment.approved", "detail": {"reservation_id": "r", "payment_intent_id": "pi", "amount": 1}}).to_string(),
            &crate::event::MessageContext { message_id: "m", attributes: &Default::default() },
        )
        .expect("a valid event");
        assert_eq!(p.applied(&event).to_string(), "none");
        p.done = 1;
        assert_eq!(p.applied(&event).to_string(), "status_update");
        assert_eq!(p.applied(&event).last(), Some(StepName::StatusUpdate));
        p.done = 2;
        assert_eq!(
            p.applied(&event).to_string(),
            "status_update,commit_reservation"
        );
    }

    #[test]
    fn every_step_has_its_own_label() {
        let steps = [
            Step::ReleaseHold { reason: "x" },
            Step::CommitReservation,
            Step::StatusUpdate(ReservationStatus::Expired),
            Step::FetchReservation,
        ];
        assert_eq!(steps.map(Step::name), StepName::ALL);
    }
}
