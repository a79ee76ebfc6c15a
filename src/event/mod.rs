//! Envelope → typed [`Event`]. Everything downstream works on validated, typed events, so a
//! malformed message is caught here, once, with an error that names the field.

mod envelope;
#[cfg(any(test, fuzzing))]
pub mod invariants;
mod json;
mod validate;

pub use envelope::parse;

use std::collections::HashMap;
use std::fmt;

use crate::labels::DeadLetterReason;

/// The largest message body accepted, in bytes. SQS allows more, but no genuine event of
/// ours comes near it, and a bound keeps a hostile body from costing memory or CPU.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The most seats one event may name: a sanity bound, far above any real basket.
pub const MAX_SEATS: usize = 500;

/// The longest id (reservation, event, payment, user, seat) accepted.
pub const MAX_ID_LEN: usize = 256;

/// The message attribute that carries the envelope id when the body has none (set by
/// `send --file`, kept on DLQ copies and by a redrive).
pub const ENVELOPE_ID_ATTRIBUTE: &str = "EnvelopeId";

/// What the parser needs from the SQS message besides its body, borrowed from the delivery:
/// parsing is per message, and copying the attributes for it would be too.
#[derive(Debug, Clone, Copy)]
pub struct MessageContext<'a> {
    /// The SQS MessageId: the envelope id when the body carries none.
    pub message_id: &'a str,
    /// String-valued SQS message attributes (`TraceId`, `traceparent`, `EnvelopeId`, …).
    pub attributes: &'a HashMap<String, String>,
}

impl Default for MessageContext<'_> {
    /// No MessageId and no attributes: the body alone decides.
    fn default() -> Self {
        static NONE: std::sync::LazyLock<HashMap<String, String>> =
            std::sync::LazyLock::new(HashMap::new);
        MessageContext {
            message_id: "",
            attributes: &NONE,
        }
    }
}

/// The three kinds of event the worker acts on. Used as a bounded label and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    ReservationExpired,
    PaymentApproved,
    PaymentFailed,
}

impl EventType {
    /// The canonical wire name (`reservation.expired`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ReservationExpired => "reservation.expired",
            EventType::PaymentApproved => "payment.approved",
            EventType::PaymentFailed => "payment.failed",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated event, ready for its workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The envelope id: the idempotency key of every downstream call this event causes.
    pub envelope_id: String,
    /// The trace id from a message attribute, else the envelope's `trace_id`.
    pub trace_id: Option<String>,
    /// The envelope's `source`, for logs.
    pub source: Option<String>,
    pub kind: EventKind,
}

impl Event {
    /// The event's type, a bounded value for labels and routing.
    pub fn event_type(&self) -> EventType {
        match self.kind {
            EventKind::ReservationExpired(_) => EventType::ReservationExpired,
            EventKind::PaymentApproved(_) => EventType::PaymentApproved,
            EventKind::PaymentFailed(_) => EventType::PaymentFailed,
        }
    }

    /// The reservation this event is about: the key that serializes work on standard queues.
    pub fn reservation_id(&self) -> &str {
        match &self.kind {
            EventKind::ReservationExpired(e) => &e.reservation_id,
            EventKind::PaymentApproved(p) | EventKind::PaymentFailed(p) => &p.reservation_id,
        }
    }
}

/// The typed payload of each event type.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    ReservationExpired(HoldExpired),
    PaymentApproved(Payment),
    PaymentFailed(Payment),
}

/// `reservation.expired`: a seat hold ran out. Carries everything `ReleaseHold` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldExpired {
    pub reservation_id: String,
    pub event_id: String,
    pub seat_ids: Vec<String>,
    /// Seat count; 0 when only `seat_ids` were given.
    pub qty: u32,
}

/// `payment.approved` / `payment.failed`. The inventory fields may be absent: the workflow
/// then looks them up from the reservation API before the gRPC step.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub reservation_id: String,
    pub payment_intent_id: String,
    /// Amount as sent (minor or major units, the worker does not interpret it).
    pub amount: f64,
    pub currency: Option<String>,
    pub event_id: Option<String>,
    pub user_id: Option<String>,
    pub seat_ids: Vec<String>,
    pub qty: Option<u32>,
    /// Only on `payment.failed`.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Why a message body is not a valid event. Always terminal: retrying cannot fix a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The body (or an SNS wrapper's `Message`) is not JSON, or not a JSON object.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body exceeds [`MAX_BODY_BYTES`].
    #[error("body is {size} bytes, more than the {max} accepted")]
    TooLarge { size: usize, max: usize },
    /// The event type is not one the worker handles (the raw name is kept for the DLQ reason,
    /// never used as a metric label).
    #[error(
        "unknown event type {0:?}: expected reservation.expired, payment.approved or payment.failed"
    )]
    UnknownType(String),
    /// A field is missing or has a wrong type or value. `event_type` is the type the envelope
    /// named, when it named one the worker handles: metrics and the DLQ keep it.
    #[error("{field}: {problem}")]
    InvalidField {
        field: String,
        problem: String,
        event_type: Option<EventType>,
    },
}

impl EventError {
    /// The bounded class for the DLQ `reason` attribute and metrics.
    pub fn class(&self) -> DeadLetterReason {
        match self {
            EventError::MalformedJson(_) => DeadLetterReason::MalformedJson,
            EventError::TooLarge { .. } => DeadLetterReason::TooLarge,
            EventError::UnknownType(_) => DeadLetterReason::UnknownType,
            EventError::InvalidField { .. } => DeadLetterReason::InvalidField,
        }
    }

    /// The event type the body named, when it named one the worker handles and only a field
    /// was wrong: a dead letter of a known type counts under it, not `unknown`.
    pub fn event_type(&self) -> Option<EventType> {
        match self {
            EventError::InvalidField { event_type, .. } => *event_type,
            _ => None,
        }
    }
}
