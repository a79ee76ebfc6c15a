//! The envelope forms a message body may take, turned into one typed [`Event`]:
//!
//! 1. the documented envelope `{"id","type","source","detail","time","trace_id"}`;
//! 2. EventBridge's SQS target format, with the type in `detail-type`;
//! 3. either of those inside an SNS notification (`"Type":"Notification"`, the envelope as a
//!    JSON string in `Message`), unwrapped exactly once;
//! 4. the payment simulator's `Payment Status Updated` event (EventBridge shape), whose
//!    `detail.status` decides between `payment.approved` and `payment.failed`.
//!
//! Field errors name the field relative to the envelope (`detail.amount`), whichever wrapping
//! it came in, so the same mistake gives the same DLQ reason; only problems with the SNS
//! wrapper itself name its fields (`Message`, `MessageId`).

use super::json::{Json, Object};

use super::validate::{self, Fields, MAX_TEXT_BYTES, describe, invalid};
use super::{
    ENVELOPE_ID_ATTRIBUTE, Event, EventError, EventKind, EventType, HoldExpired, MAX_BODY_BYTES,
    MAX_ID_LEN, MessageContext, Payment,
};

/// How many characters of an unknown type name are kept in [`EventError::UnknownType`].
const MAX_TYPE_CHARS: usize = 100;

/// The payment simulator's EventBridge `detail-type`.
const PAYMENT_STATUS_UPDATED: &str = "Payment Status Updated";

/// The simulator's statuses we act on.
const STATUS_COMPLETED: &str = "PAYMENT_STATUS_COMPLETED";
const STATUS_FAILED: &str = "PAYMENT_STATUS_FAILED";

/// Parses and validates one SQS message body into an [`Event`], so that everything
/// downstream works on typed, checked data and a bad body fails here, once, with an error
/// naming the field (every error is terminal: the message belongs in the DLQ).
///
/// The envelope id is the body's `id`, else the SNS wrapper's `MessageId`, else the
/// [`ENVELOPE_ID_ATTRIBUTE`] message attribute, else `ctx.message_id`. The trace id is the `TraceId` message attribute, else the trace id of a
/// well-formed `traceparent` attribute, else the envelope's `trace_id`.
///
/// # Errors
///
/// [`EventError::TooLarge`] for a body over [`MAX_BODY_BYTES`] (checked before parsing);
/// [`EventError::MalformedJson`] when the body, or an SNS wrapper's `Message`, is not a JSON
/// object; [`EventError::UnknownType`] for a type name the worker does not handle; and
/// [`EventError::InvalidField`], naming the field, for anything missing or wrong.
pub fn parse(body: &str, ctx: &MessageContext<'_>) -> Result<Event, EventError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(EventError::TooLarge {
            size: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    let outer = parse_object(body).map_err(EventError::MalformedJson)?;
    let inner;
    let (envelope, sns) = if is_sns_notification(&outer) {
        inner = unwrap_sns(&outer)?;
        (Fields::new(&inner, ""), Some(Fields::new(&outer, "")))
    } else {
        (Fields::new(&outer, ""), None)
    };

    let route = route(&envelope)?;
    // From here on a field error names the type (a payment status update's status says it).
    let typed = of_type(match route {
        Route::Type(t) => Some(t),
        Route::PaymentStatusUpdated => None,
    });
    let envelope_id = envelope_id(&envelope, sns.as_ref(), ctx).map_err(typed)?;
    let detail = envelope.object("detail").map_err(typed)?;
    let kind = match route {
        Route::Type(EventType::ReservationExpired) => {
            EventKind::ReservationExpired(hold_expired(&detail).map_err(typed)?)
        }
        Route::Type(EventType::PaymentApproved) => {
            EventKind::PaymentApproved(payment(&detail, false).map_err(typed)?)
        }
        Route::Type(EventType::PaymentFailed) => {
            EventKind::PaymentFailed(payment(&detail, true).map_err(typed)?)
        }
        Route::PaymentStatusUpdated => payment_status_updated(&detail)?,
    };
    Ok(Event {
        envelope_id,
        trace_id: trace_id(&envelope, ctx),
        source: envelope.get("source").and_then(validate::log_string),
        kind,
    })
}

/// Tags a field error with the event type the envelope named.
fn of_type(t: Option<EventType>) -> impl Fn(EventError) -> EventError + Copy {
    move |e| match e {
        EventError::InvalidField {
            field,
            problem,
            event_type: None,
        } => EventError::InvalidField {
            field,
            problem,
            event_type: t,
        },
        e => e,
    }
}

/// Parses text that must hold a JSON object. The error text is the reason alone; the caller
/// says where the text came from. serde_json's recursion limit turns deep nesting into an
/// ordinary error, and nothing here recurses.
fn parse_object(text: &str) -> Result<Object<'_>, String> {
    match Json::parse(text) {
        Ok(Json::Object(obj)) => Ok(obj),
        Ok(other) => Err(format!(
            "expected a JSON object, found {}",
            describe(&other)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a parsed body is an SNS notification (raw message delivery off).
fn is_sns_notification(obj: &Object<'_>) -> bool {
    obj.get("Type").and_then(Json::as_str) == Some("Notification")
}

/// Returns the envelope held (as a JSON string) in an SNS notification's `Message`. Only one
/// level is unwrapped: a notification inside a notification is a routing mistake, not
/// something to follow.
fn unwrap_sns<'a>(outer: &'a Object<'_>) -> Result<Object<'a>, EventError> {
    let message = match outer.get("Message") {
        Some(Json::String(s)) => s,
        Some(other) => {
            return Err(invalid(
                "Message",
                format!(
                    "expected a string holding the event envelope as JSON, found {}",
                    describe(other)
                ),
            ));
        }
        None => {
            return Err(invalid(
                "Message",
                "missing: expected the SNS notification to carry the event envelope as a JSON string",
            ));
        }
    };
    let inner =
        parse_object(message).map_err(|e| EventError::MalformedJson(format!("Message: {e}")))?;
    if is_sns_notification(&inner) {
        return Err(invalid(
            "Message",
            "expected an event envelope, found another SNS notification (only one level of SNS wrapping is unwrapped)",
        ));
    }
    Ok(inner)
}

/// What the type name tells the parser to build.
enum Route {
    /// One of our own type names (or an alias).
    Type(EventType),
    /// The payment simulator's event; `detail.status` picks approved or failed.
    PaymentStatusUpdated,
}

/// Reads the event type from `type` (documented form) or `detail-type` (EventBridge); `type`
/// wins when both are present, being our own field.
fn route(envelope: &Fields<'_>) -> Result<Route, EventError> {
    let (field, value) = match (envelope.get("type"), envelope.get("detail-type")) {
        (Some(v), _) => ("type", v),
        (None, Some(v)) => ("detail-type", v),
        (None, None) => {
            return Err(invalid(
                "type",
                "missing: expected the event type in type (or detail-type for EventBridge)",
            ));
        }
    };
    let Json::String(name) = value else {
        return Err(invalid(
            field,
            format!(
                "expected a string naming the event type, found {}",
                describe(value)
            ),
        ));
    };
    match name.as_ref() {
        "reservation.expired" | "reservation.hold.expired" => {
            Ok(Route::Type(EventType::ReservationExpired))
        }
        "payment.approved" => Ok(Route::Type(EventType::PaymentApproved)),
        "payment.failed" => Ok(Route::Type(EventType::PaymentFailed)),
        PAYMENT_STATUS_UPDATED => Ok(Route::PaymentStatusUpdated),
        "" => Err(invalid(
            field,
            "expected an event type name, found an empty string",
        )),
        other => Err(EventError::UnknownType(crate::text::shortened_chars(
            other,
            MAX_TYPE_CHARS,
        ))),
    }
}

/// The envelope id, the idempotency key downstream: the envelope's `id`, else the SNS
/// `MessageId`, else the `EnvelopeId` message attribute (which `send --file` sets to an id
/// derived from the line, so sending a file twice sends the same events), else the SQS
/// MessageId. An id written in the body wins over one beside it, so the attribute never changes
/// the key of a message that already had one. An id that is present must be a valid id;
/// falling back past a bad one would silently change the key between redeliveries of fixed
/// bodies.
fn envelope_id(
    envelope: &Fields<'_>,
    sns: Option<&Fields<'_>>,
    ctx: &MessageContext<'_>,
) -> Result<String, EventError> {
    if let Some(v) = envelope.get("id") {
        return validate::key_id("id", v);
    }
    if let Some(v) = sns.and_then(|s| s.get("MessageId")) {
        return validate::key_id("MessageId", v);
    }
    if let Some(v) = ctx.attributes.get(ENVELOPE_ID_ATTRIBUTE) {
        return validate::key_id_str(ENVELOPE_ID_ATTRIBUTE, v);
    }
    if ctx.message_id.trim().is_empty() {
        return Err(invalid(
            "id",
            "missing: expected an envelope id, and the SQS message has no MessageId to fall back on",
        ));
    }
    validate::key_id_str("id", ctx.message_id)
}

/// The trace id: `TraceId` attribute, else `traceparent` attribute, else the envelope's
/// `trace_id`. Bad values are skipped, never fatal: tracing is best effort.
fn trace_id(envelope: &Fields<'_>, ctx: &MessageContext<'_>) -> Option<String> {
    ctx.attributes
        .get("TraceId")
        .and_then(|t| validate::id_str("TraceId", t).ok())
        .or_else(|| {
            ctx.attributes
                .get("traceparent")
                .and_then(|t| validate::traceparent_trace_id(t))
        })
        .or_else(|| envelope.get("trace_id").and_then(validate::log_string))
}

/// `reservation.expired`: everything `ReleaseHold` needs, which is the seats or a count.
fn hold_expired(detail: &Fields<'_>) -> Result<HoldExpired, EventError> {
    let reservation_id = detail.required_path_id("reservation_id")?;
    let event_id = detail.required_id("event_id")?;
    let seat_ids = detail.seat_ids("seat_ids")?;
    let qty = detail.optional_qty("qty", "quantity")?.unwrap_or(0);
    if seat_ids.is_empty() && qty == 0 {
        return Err(invalid(
            detail.path("seat_ids"),
            "neither seat_ids nor qty given: ReleaseHold needs one (expected a non-empty seat_ids or a qty above 0)",
        ));
    }
    Ok(HoldExpired {
        reservation_id,
        event_id,
        seat_ids,
        qty,
    })
}

/// `payment.approved` / `payment.failed`. The error fields are read only for a failure;
/// `failure_reason` (the simulator's name) fills `error_message` when that is absent.
fn payment(detail: &Fields<'_>, failed: bool) -> Result<Payment, EventError> {
    let reservation_id = detail.required_path_id("reservation_id")?;
    let payment_intent_id = detail.required_id_or("payment_intent_id", "payment_id")?;
    let amount = detail.amount("amount")?;
    let currency = detail.optional_currency("currency")?;
    let event_id = detail.optional_id("event_id")?;
    let user_id = detail.optional_id("user_id")?;
    let seat_ids = detail.seat_ids("seat_ids")?;
    let qty = detail.optional_qty("qty", "quantity")?;
    let (error_code, error_message) = if failed {
        let code = detail.optional_text("error_code", MAX_ID_LEN)?;
        let message = match detail.optional_text("error_message", MAX_TEXT_BYTES)? {
            Some(m) => Some(m),
            None => detail.optional_text("failure_reason", MAX_TEXT_BYTES)?,
        };
        (code, message)
    } else {
        (None, None)
    };
    Ok(Payment {
        reservation_id,
        payment_intent_id,
        amount,
        currency,
        event_id,
        user_id,
        seat_ids,
        qty,
        error_code,
        error_message,
    })
}

/// The payment simulator's `Payment Status Updated`: completed → approved, failed → failed.
/// Any other status (pending, refunded, …) is not ours to act on, and says so.
fn payment_status_updated(detail: &Fields<'_>) -> Result<EventKind, EventError> {
    let expected = format!("expected {STATUS_COMPLETED} or {STATUS_FAILED}");
    match detail.get("status") {
        Some(Json::String(s)) if s == STATUS_COMPLETED => Ok(EventKind::PaymentApproved(
            payment(detail, false).map_err(of_type(Some(EventType::PaymentApproved)))?,
        )),
        Some(Json::String(s)) if s == STATUS_FAILED => Ok(EventKind::PaymentFailed(
            payment(detail, true).map_err(of_type(Some(EventType::PaymentFailed)))?,
        )),
        Some(other) => Err(invalid(
            detail.path("status"),
            format!("unhandled payment status {}: {expected}", describe(other)),
        )),
        None => Err(invalid(
            detail.path("status"),
            format!("missing: {expected}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{MAX_SEATS, MessageContext};
    use serde_json::{Value, json};
    use std::collections::HashMap;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn ctx() -> MessageContext<'static> {
        MessageContext {
            message_id: "sqs-msg-1",
            ..MessageContext::default()
        }
    }

    /// A context with `attrs`, leaked: a test's few small maps outlive it by a moment.
    fn ctx_with(attrs: &[(&str, &str)]) -> MessageContext<'static> {
        MessageContext {
            attributes: Box::leak(Box::new(
                attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<HashMap<_, _>>(),
            )),
            ..ctx()
        }
    }

    fn documented(ty: &str, detail: Value) -> Value {
        json!({
            "id": "env-1",
            "type": ty,
            "source": "reservation-api",
            "detail": detail,
            "time": "2026-05-01T12:00:00Z",
            "trace_id": "trace-from-envelope",
        })
    }

    fn eventbridge(detail_type: &str, detail: Value) -> Value {
        json!({
            "version": "0",
            "id": "eb-1",
            "detail-type": detail_type,
            "source": "payment-sim-api",
            "account": "123456789012",
            "time": "2026-05-01T12:00:00Z",
            "region": "eu-west-1",
            "resources": [],
            "detail": detail,
        })
    }

    fn sns(inner: &Value) -> Value {
        sns_message(json!(inner.to_string()))
    }

    fn sns_message(message: Value) -> Value {
        json!({
            "Type": "Notification",
            "MessageId": "sns-1",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:events",
            "Message": message,
            "Timestamp": "2026-05-01T12:00:01.000Z",
            "SignatureVersion": "1",
            "Signature": "c2ln",
            "SigningCertURL": "https://sns.example/cert.pem",
            "UnsubscribeURL": "https://sns.example/unsub",
        })
    }

    fn parse_value(v: &Value) -> Result<Event, EventError> {
        parse(&v.to_string(), &ctx())
    }

    fn field_error(r: Result<Event, EventError>) -> (String, String) {
        match r {
            Err(EventError::InvalidField { field, problem, .. }) => (field, problem),
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    fn malformed(r: Result<Event, EventError>) -> String {
        match r {
            Err(EventError::MalformedJson(m)) => m,
            other => panic!("expected MalformedJson, got {other:?}"),
        }
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        if let Some(obj) = v.as_object_mut() {
            obj.insert(key.to_owned(), value);
        }
        v
    }

    fn without(mut v: Value, key: &str) -> Value {
        if let Some(obj) = v.as_object_mut() {
            obj.remove(key);
        }
        v
    }

    #[test]
    fn a_field_error_keeps_the_type_the_envelope_named() {
        let err = |v: Value| parse_value(&v).expect_err("invalid");
        let e = err(documented(
            "reservation.expired",
            json!({"reservation_id": "r", "event_id": "e", "qty": -1}),
        ));
        assert_eq!(e.event_type(), Some(EventType::ReservationExpired), "{e}");
        let e = err(documented("payment.failed", json!({"reservation_id": "r"})));
        assert_eq!(e.event_type(), Some(EventType::PaymentFailed), "{e}");
        let e = err(eventbridge(
            PAYMENT_STATUS_UPDATED,
            json!({"status": STATUS_COMPLETED, "reservation_id": "r"}),
        ));
        assert_eq!(e.event_type(), Some(EventType::PaymentApproved), "{e}");
        // The status names the type; without one, nothing does.
        let e = err(eventbridge(
            PAYMENT_STATUS_UPDATED,
            json!({"reservation_id": "r"}),
        ));
        assert_eq!(e.event_type(), None, "{e}");
        let e = err(json!({"detail": expired_detail()}));
        assert_eq!(e.event_type(), None, "{e}");
        let e = err(documented("order.created", expired_detail()));
        assert_eq!(e.event_type(), None, "{e}");
        let e = parse("{not json", &ctx()).expect_err("malformed");
        assert_eq!(e.event_type(), None, "{e}");
    }

    fn expired_detail() -> Value {
        json!({"reservation_id": "r-1", "event_id": "ev-9", "seat_ids": ["A1", "A2"], "qty": 2})
    }

    fn expected_expired() -> EventKind {
        EventKind::ReservationExpired(HoldExpired {
            reservation_id: "r-1".to_owned(),
            event_id: "ev-9".to_owned(),
            seat_ids: vec!["A1".to_owned(), "A2".to_owned()],
            qty: 2,
        })
    }

    fn payment_detail(failed: bool) -> Value {
        let mut d = json!({
            "reservation_id": "r-1",
            "payment_intent_id": "pi-7",
            "amount": 42.5,
            "currency": "EUR",
            "event_id": "ev-9",
            "user_id": "u-3",
            "seat_ids": ["A1", "A2"],
            "qty": 2,
            "error_code": "card_declined",
            "error_message": "Your card was declined.",
        });
        if !failed {
            // Carried on an approval too, but ignored there.
            d = with(d, "error_code", json!("ignored"));
        }
        d
    }

    fn expected_payment(failed: bool) -> Payment {
        Payment {
            reservation_id: "r-1".to_owned(),
            payment_intent_id: "pi-7".to_owned(),
            amount: 42.5,
            currency: Some("EUR".to_owned()),
            event_id: Some("ev-9".to_owned()),
            user_id: Some("u-3".to_owned()),
            seat_ids: vec!["A1".to_owned(), "A2".to_owned()],
            qty: Some(2),
            error_code: failed.then(|| "card_declined".to_owned()),
            error_message: failed.then(|| "Your card was declined.".to_owned()),
        }
    }

    /// (type name, detail, expected kind) for each of our event types.
    fn cases() -> Vec<(&'static str, Value, EventKind)> {
        vec![
            ("reservation.expired", expired_detail(), expected_expired()),
            (
                "payment.approved",
                payment_detail(false),
                EventKind::PaymentApproved(expected_payment(false)),
            ),
            (
                "payment.failed",
                payment_detail(true),
                EventKind::PaymentFailed(expected_payment(true)),
            ),
        ]
    }

    #[test]
    fn documented_form_every_type() {
        for (ty, detail, kind) in cases() {
            let event = parse_value(&documented(ty, detail));
            assert_eq!(
                event,
                Ok(Event {
                    envelope_id: "env-1".to_owned(),
                    trace_id: Some("trace-from-envelope".to_owned()),
                    source: Some("reservation-api".to_owned()),
                    kind,
                }),
                "{ty}"
            );
        }
    }

    #[test]
    fn eventbridge_form_every_type() {
        for (ty, detail, kind) in cases() {
            let event = parse_value(&eventbridge(ty, detail));
            assert_eq!(
                event,
                Ok(Event {
                    envelope_id: "eb-1".to_owned(),
                    trace_id: None,
                    source: Some("payment-sim-api".to_owned()),
                    kind,
                }),
                "{ty}"
            );
        }
    }

    #[test]
    fn sns_wrapped_documented_form_every_type() {
        for (ty, detail, kind) in cases() {
            let event = parse_value(&sns(&documented(ty, detail)));
            assert_eq!(
                event,
                Ok(Event {
                    envelope_id: "env-1".to_owned(),
                    trace_id: Some("trace-from-envelope".to_owned()),
                    source: Some("reservation-api".to_owned()),
                    kind,
                }),
                "{ty}"
            );
        }
    }

    #[test]
    fn sns_wrapped_eventbridge_form_every_type() {
        for (ty, detail, kind) in cases() {
            let event = parse_value(&sns(&eventbridge(ty, detail)));
            assert_eq!(
                event,
                Ok(Event {
                    envelope_id: "eb-1".to_owned(),
                    trace_id: None,
                    source: Some("payment-sim-api".to_owned()),
                    kind,
                }),
                "{ty}"
            );
        }
    }

    #[test]
    fn event_type_and_reservation_id_accessors() {
        for (ty, detail, _) in cases() {
            let Ok(event) = parse_value(&documented(ty, detail)) else {
                panic!("{ty} should parse");
            };
            assert_eq!(event.event_type().as_str(), ty);
            assert_eq!(event.reservation_id(), "r-1");
        }
    }

    #[test]
    fn legacy_hold_expired_alias() {
        let event = parse_value(&documented("reservation.hold.expired", expired_detail()));
        assert_eq!(event.map(|e| e.kind), Ok(expected_expired()));
        let event = parse_value(&eventbridge("reservation.hold.expired", expired_detail()));
        assert_eq!(event.map(|e| e.kind), Ok(expected_expired()));
    }

    fn sim_detail(status: &str) -> Value {
        json!({
            "payment_id": "pay_123",
            "reservation_id": "r-1",
            "user_id": "u-3",
            "status": status,
            "amount": 1999,
            "currency": "USD",
            "created_at": "2026-05-01T12:00:00Z",
            "provider": "sim",
        })
    }

    fn sim_payment(failed: bool) -> Payment {
        Payment {
            reservation_id: "r-1".to_owned(),
            payment_intent_id: "pay_123".to_owned(),
            amount: 1999.0,
            currency: Some("USD".to_owned()),
            event_id: None,
            user_id: Some("u-3".to_owned()),
            seat_ids: vec![],
            qty: None,
            error_code: None,
            error_message: failed.then(|| "insufficient funds".to_owned()),
        }
    }

    #[test]
    fn payment_sim_completed_is_approved() {
        let body = eventbridge(
            "Payment Status Updated",
            sim_detail("PAYMENT_STATUS_COMPLETED"),
        );
        assert_eq!(
            parse_value(&body),
            Ok(Event {
                envelope_id: "eb-1".to_owned(),
                trace_id: None,
                source: Some("payment-sim-api".to_owned()),
                kind: EventKind::PaymentApproved(sim_payment(false)),
            })
        );
    }

    #[test]
    fn payment_sim_failed_maps_failure_reason() {
        let detail = with(
            sim_detail("PAYMENT_STATUS_FAILED"),
            "failure_reason",
            json!("insufficient funds"),
        );
        let body = eventbridge("Payment Status Updated", detail);
        assert_eq!(
            parse_value(&body).map(|e| e.kind),
            Ok(EventKind::PaymentFailed(sim_payment(true)))
        );
        // Through SNS too.
        assert_eq!(
            parse_value(&sns(&body)).map(|e| e.kind),
            Ok(EventKind::PaymentFailed(sim_payment(true)))
        );
    }

    #[test]
    fn payment_sim_failed_with_error_fields() {
        let mut detail = sim_detail("PAYMENT_STATUS_FAILED");
        detail = with(detail, "error_code", json!("card_declined"));
        detail = with(detail, "error_message", json!("Card declined"));
        detail = with(
            detail,
            "failure_reason",
            json!("not used when error_message is set"),
        );
        let Ok(Event {
            kind: EventKind::PaymentFailed(p),
            ..
        }) = parse_value(&eventbridge("Payment Status Updated", detail))
        else {
            panic!("expected payment.failed");
        };
        assert_eq!(p.error_code.as_deref(), Some("card_declined"));
        assert_eq!(p.error_message.as_deref(), Some("Card declined"));

        // Nothing at all is fine: the failure is still a failure.
        let Ok(Event {
            kind: EventKind::PaymentFailed(p),
            ..
        }) = parse_value(&eventbridge(
            "Payment Status Updated",
            sim_detail("PAYMENT_STATUS_FAILED"),
        ))
        else {
            panic!("expected payment.failed");
        };
        assert_eq!((p.error_code, p.error_message), (None, None));
    }

    #[test]
    fn payment_sim_other_status_is_rejected() {
        let body = eventbridge(
            "Payment Status Updated",
            sim_detail("PAYMENT_STATUS_PENDING"),
        );
        assert_eq!(
            field_error(parse_value(&body)),
            (
                "detail.status".to_owned(),
                "unhandled payment status string \"PAYMENT_STATUS_PENDING\": expected PAYMENT_STATUS_COMPLETED or PAYMENT_STATUS_FAILED".to_owned()
            )
        );
        let body = eventbridge(
            "Payment Status Updated",
            with(sim_detail(""), "status", json!(3)),
        );
        let (field, problem) = field_error(parse_value(&body));
        assert_eq!(field, "detail.status");
        assert!(
            problem.starts_with("unhandled payment status number 3"),
            "{problem}"
        );
        let body = eventbridge("Payment Status Updated", without(sim_detail(""), "status"));
        assert_eq!(
            field_error(parse_value(&body)),
            (
                "detail.status".to_owned(),
                "missing: expected PAYMENT_STATUS_COMPLETED or PAYMENT_STATUS_FAILED".to_owned()
            )
        );
    }

    #[test]
    fn payment_sim_missing_payment_id() {
        let body = eventbridge(
            "Payment Status Updated",
            without(sim_detail("PAYMENT_STATUS_COMPLETED"), "payment_id"),
        );
        assert_eq!(
            field_error(parse_value(&body)).0,
            "detail.payment_intent_id"
        );
    }

    #[test]
    fn envelope_id_falls_back_to_sns_message_id_then_sqs_message_id() {
        let inner = without(documented("reservation.expired", expired_detail()), "id");
        assert_eq!(
            parse_value(&sns(&inner)).map(|e| e.envelope_id),
            Ok("sns-1".to_owned())
        );
        assert_eq!(
            parse_value(&inner).map(|e| e.envelope_id),
            Ok("sqs-msg-1".to_owned())
        );
        let null_id = with(inner.clone(), "id", Value::Null);
        assert_eq!(
            parse_value(&null_id).map(|e| e.envelope_id),
            Ok("sqs-msg-1".to_owned())
        );
        let no_sns_id = without(sns(&inner), "MessageId");
        assert_eq!(
            parse_value(&no_sns_id).map(|e| e.envelope_id),
            Ok("sqs-msg-1".to_owned())
        );
        // Nothing to fall back on.
        let empty_ctx = MessageContext::default();
        let (field, problem) = field_error(parse(&inner.to_string(), &empty_ctx));
        assert_eq!(field, "id");
        assert!(problem.starts_with("missing:"), "{problem}");
    }

    #[test]
    fn envelope_id_attribute_comes_after_the_body_and_sns_ids() {
        let attr = ctx_with(&[(ENVELOPE_ID_ATTRIBUTE, "line-id")]);
        let id_of = |v: &Value| parse(&v.to_string(), &attr).map(|e| e.envelope_id);
        let body = documented("reservation.expired", expired_detail());
        assert_eq!(id_of(&body), Ok("env-1".to_owned()));
        let inner = without(body, "id");
        assert_eq!(id_of(&sns(&inner)), Ok("sns-1".to_owned()));
        assert_eq!(id_of(&inner), Ok("line-id".to_owned()));
        assert_eq!(
            id_of(&without(sns(&inner), "MessageId")),
            Ok("line-id".to_owned())
        );
        // Present but unusable: an error, never a silent fall back to the SQS MessageId.
        let blank = ctx_with(&[(ENVELOPE_ID_ATTRIBUTE, " ")]);
        assert_eq!(
            field_error(parse(&inner.to_string(), &blank)),
            (
                "EnvelopeId".to_owned(),
                "expected a non-empty id, found string \" \"".to_owned()
            )
        );
    }

    #[test]
    fn envelope_id_present_must_be_valid() {
        let body = documented("reservation.expired", expired_detail());
        assert_eq!(
            field_error(parse_value(&with(body.clone(), "id", json!("")))),
            (
                "id".to_owned(),
                "expected a non-empty id, found an empty string".to_owned()
            )
        );
        assert_eq!(
            field_error(parse_value(&with(body.clone(), "id", json!(42)))),
            (
                "id".to_owned(),
                "expected a string, found number 42".to_owned()
            )
        );
        let inner = without(body, "id");
        let bad_sns = with(sns(&inner), "MessageId", json!(7));
        assert_eq!(field_error(parse_value(&bad_sns)).0, "MessageId");
    }

    #[test]
    fn trace_id_precedence() {
        let body = documented("reservation.expired", expired_detail()).to_string();
        let parent = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let trace = |c: &MessageContext<'_>| parse(&body, c).map(|e| e.trace_id);

        let all = ctx_with(&[("TraceId", "attr-trace"), ("traceparent", &parent)]);
        assert_eq!(trace(&all), Ok(Some("attr-trace".to_owned())));
        let parent_only = ctx_with(&[("traceparent", &parent)]);
        assert_eq!(trace(&parent_only), Ok(Some(TRACE.to_owned())));
        assert_eq!(trace(&ctx()), Ok(Some("trace-from-envelope".to_owned())));
        let bad_parent = ctx_with(&[("traceparent", "00-nothex-01")]);
        assert_eq!(
            trace(&bad_parent),
            Ok(Some("trace-from-envelope".to_owned()))
        );
        let blank_attr = ctx_with(&[("TraceId", "  "), ("traceparent", &parent)]);
        assert_eq!(trace(&blank_attr), Ok(Some(TRACE.to_owned())));

        let no_envelope_trace = without(
            documented("reservation.expired", expired_detail()),
            "trace_id",
        )
        .to_string();
        assert_eq!(
            parse(&no_envelope_trace, &bad_parent).map(|e| e.trace_id),
            Ok(None)
        );
        // A non-string envelope trace_id is ignored, not fatal.
        let numeric_trace = with(
            documented("reservation.expired", expired_detail()),
            "trace_id",
            json!(12),
        );
        assert_eq!(parse_value(&numeric_trace).map(|e| e.trace_id), Ok(None));
    }

    #[test]
    fn source_is_optional_and_never_fatal() {
        let body = without(
            documented("reservation.expired", expired_detail()),
            "source",
        );
        assert_eq!(parse_value(&body).map(|e| e.source), Ok(None));
        let body = with(body, "source", json!({"not": "a string"}));
        assert_eq!(parse_value(&body).map(|e| e.source), Ok(None));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let detail = with(
            expired_detail(),
            "colour",
            json!({"deep": [1, 2, {"x": null}]}),
        );
        let body = with(
            documented("reservation.expired", detail),
            "extra",
            json!([true]),
        );
        assert_eq!(parse_value(&body).map(|e| e.kind), Ok(expected_expired()));
        let body = with(
            eventbridge(
                "payment.approved",
                with(payment_detail(false), "foo", json!(1)),
            ),
            "bar",
            json!("baz"),
        );
        assert_eq!(
            parse_value(&body).map(|e| e.kind),
            Ok(EventKind::PaymentApproved(expected_payment(false)))
        );
    }

    #[test]
    fn malformed_json() {
        for body in [
            "",
            "{",
            "not json",
            "{\"a\":1} trailing",
            "{'single': 1}",
            "\u{feff}{}",
        ] {
            let m = malformed(parse(body, &ctx()));
            assert!(!m.is_empty(), "{body:?}");
        }
    }

    #[test]
    fn non_object_json() {
        for (body, found) in [
            ("[1,2]", "an array of 2 items"),
            ("\"hello\"", "string \"hello\""),
            ("42", "number 42"),
            ("null", "null"),
            ("true", "boolean true"),
        ] {
            assert_eq!(
                malformed(parse(body, &ctx())),
                format!("expected a JSON object, found {found}")
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let m = malformed(parse(&deep, &ctx()));
        assert!(m.contains("recursion limit"), "{m}");

        let deep_detail = format!(
            "{{\"type\":\"payment.approved\",\"detail\":{}{}}}",
            "{\"a\":".repeat(10_000),
            "1".to_owned() + &"}".repeat(10_000)
        );
        assert!(deep_detail.len() < MAX_BODY_BYTES);
        malformed(parse(&deep_detail, &ctx()));

        let in_sns = sns_message(json!(deep));
        let m = malformed(parse_value(&in_sns));
        assert!(m.starts_with("Message: "), "{m}");
    }

    #[test]
    fn too_large_body_is_rejected_before_parsing() {
        let body = " ".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(
            parse(&body, &ctx()),
            Err(EventError::TooLarge {
                size: MAX_BODY_BYTES + 1,
                max: MAX_BODY_BYTES
            })
        );
        // At the limit it is parsed (and this one is valid once padded).
        let valid = documented("reservation.expired", expired_detail()).to_string();
        let padded = format!("{valid}{}", " ".repeat(MAX_BODY_BYTES - valid.len()));
        assert!(parse(&padded, &ctx()).is_ok());
    }

    #[test]
    fn sns_message_garbage() {
        let m = malformed(parse_value(&sns_message(json!("not json at all"))));
        assert!(m.starts_with("Message: "), "{m}");
        assert_eq!(
            malformed(parse_value(&sns_message(json!("[1,2,3]")))),
            "Message: expected a JSON object, found an array of 3 items"
        );
        let (field, problem) = field_error(parse_value(&sns_message(json!({"type": "x"}))));
        assert_eq!(field, "Message");
        assert!(
            problem.starts_with(
                "expected a string holding the event envelope as JSON, found an object"
            ),
            "{problem}"
        );
        assert_eq!(
            field_error(parse_value(&without(sns_message(json!("")), "Message"))).0,
            "Message"
        );
    }

    #[test]
    fn sns_inside_sns_is_not_followed() {
        let inner = sns(&documented("reservation.expired", expired_detail()));
        let (field, problem) = field_error(parse_value(&sns(&inner)));
        assert_eq!(field, "Message");
        assert!(problem.contains("another SNS notification"), "{problem}");
    }

    #[test]
    fn type_missing_wrong_or_unknown() {
        let body = without(documented("x", expired_detail()), "type");
        assert_eq!(field_error(parse_value(&body)).0, "type");
        let body = documented("x", expired_detail());
        assert_eq!(
            field_error(parse_value(&with(body, "type", json!(42)))),
            (
                "type".to_owned(),
                "expected a string naming the event type, found number 42".to_owned()
            )
        );
        assert_eq!(
            field_error(parse_value(&eventbridge("", expired_detail()))).0,
            "detail-type"
        );
        assert_eq!(
            parse_value(&documented("order.created", expired_detail())),
            Err(EventError::UnknownType("order.created".to_owned()))
        );
        // Case matters: only the exact names are ours.
        assert!(matches!(
            parse_value(&documented("Payment.Approved", expired_detail())),
            Err(EventError::UnknownType(_))
        ));
        let long = "t".repeat(5_000);
        let Err(EventError::UnknownType(raw)) = parse_value(&documented(&long, expired_detail()))
        else {
            panic!("expected UnknownType");
        };
        assert!(raw.chars().count() <= MAX_TYPE_CHARS + 1, "{}", raw.len());
        let shown = EventError::UnknownType(raw).to_string();
        assert!(shown.len() < 250, "{shown}");
    }

    #[test]
    fn type_wins_over_detail_type() {
        let body = with(
            eventbridge("payment.approved", expired_detail()),
            "type",
            json!("reservation.expired"),
        );
        assert_eq!(parse_value(&body).map(|e| e.kind), Ok(expected_expired()));
    }

    #[test]
    fn detail_missing_or_not_an_object() {
        for ty in ["reservation.expired", "payment.approved", "payment.failed"] {
            let body = without(documented(ty, json!({})), "detail");
            assert_eq!(
                field_error(parse_value(&body)),
                (
                    "detail".to_owned(),
                    "missing: expected an object holding the event's fields".to_owned()
                )
            );
            let body = documented(ty, json!("{\"reservation_id\":\"r\"}"));
            let (field, problem) = field_error(parse_value(&body));
            assert_eq!(field, "detail");
            assert!(
                problem.starts_with("expected an object, found string"),
                "{problem}"
            );
            let body = documented(ty, json!(null));
            assert_eq!(field_error(parse_value(&body)).0, "detail");
        }
    }

    #[test]
    fn required_fields_missing_are_named() {
        for key in ["reservation_id", "event_id"] {
            let body = documented("reservation.expired", without(expired_detail(), key));
            assert_eq!(
                field_error(parse_value(&body)),
                (
                    format!("detail.{key}"),
                    "missing: expected a non-empty string".to_owned()
                ),
                "{key}"
            );
        }
        for (ty, failed) in [("payment.approved", false), ("payment.failed", true)] {
            for key in ["reservation_id", "payment_intent_id", "amount"] {
                let body = eventbridge(ty, without(payment_detail(failed), key));
                let (field, problem) = field_error(parse_value(&body));
                assert_eq!(field, format!("detail.{key}"), "{ty} {key}");
                assert!(problem.starts_with("missing: expected"), "{problem}");
            }
            // Null counts as missing.
            let body = documented(
                ty,
                with(payment_detail(failed), "reservation_id", Value::Null),
            );
            assert_eq!(field_error(parse_value(&body)).0, "detail.reservation_id");
        }
    }

    #[test]
    fn expired_needs_seats_or_qty() {
        let no_seats = without(without(expired_detail(), "seat_ids"), "qty");
        let (field, problem) = field_error(parse_value(&documented(
            "reservation.expired",
            no_seats.clone(),
        )));
        assert_eq!(field, "detail.seat_ids");
        assert!(
            problem.starts_with("neither seat_ids nor qty given: ReleaseHold needs one"),
            "{problem}"
        );
        let empty = with(
            with(no_seats.clone(), "seat_ids", json!([])),
            "qty",
            json!(0),
        );
        assert_eq!(
            field_error(parse_value(&documented("reservation.expired", empty))).0,
            "detail.seat_ids"
        );

        let qty_only = with(no_seats.clone(), "quantity", json!(3));
        let Ok(Event {
            kind: EventKind::ReservationExpired(h),
            ..
        }) = parse_value(&documented("reservation.expired", qty_only))
        else {
            panic!("qty alone is enough");
        };
        assert_eq!((h.seat_ids.len(), h.qty), (0, 3));

        let seats_only = with(no_seats, "seat_ids", json!(["B7"]));
        let Ok(Event {
            kind: EventKind::ReservationExpired(h),
            ..
        }) = parse_value(&documented("reservation.expired", seats_only))
        else {
            panic!("seats alone are enough");
        };
        assert_eq!((h.seat_ids, h.qty), (vec!["B7".to_owned()], 0));
    }

    #[test]
    fn payment_optional_fields_may_be_absent() {
        let minimal = json!({"reservation_id": "r-1", "payment_id": "pi-7", "amount": "12.50"});
        let Ok(Event {
            kind: EventKind::PaymentApproved(p),
            ..
        }) = parse_value(&documented("payment.approved", minimal.clone()))
        else {
            panic!("minimal approval should parse");
        };
        assert_eq!(
            p,
            Payment {
                reservation_id: "r-1".to_owned(),
                payment_intent_id: "pi-7".to_owned(),
                amount: 12.5,
                currency: None,
                event_id: None,
                user_id: None,
                seat_ids: vec![],
                qty: None,
                error_code: None,
                error_message: None,
            }
        );
        // Empty optional ids and currency count as absent.
        let blanks = with(
            with(with(minimal, "event_id", json!("")), "user_id", json!(" ")),
            "currency",
            json!(""),
        );
        let Ok(Event {
            kind: EventKind::PaymentFailed(p),
            ..
        }) = parse_value(&documented("payment.failed", blanks))
        else {
            panic!("blank optionals should parse");
        };
        assert_eq!((p.event_id, p.user_id, p.currency), (None, None, None));
    }

    #[test]
    fn payment_id_alias_must_agree() {
        let both_same = with(payment_detail(false), "payment_id", json!("pi-7"));
        assert!(parse_value(&documented("payment.approved", both_same)).is_ok());
        let both_differ = with(payment_detail(false), "payment_id", json!("pi-8"));
        let (field, problem) =
            field_error(parse_value(&documented("payment.approved", both_differ)));
        assert_eq!(field, "detail.payment_id");
        assert!(problem.contains("detail.payment_intent_id"), "{problem}");
        let qty_differ = with(expired_detail(), "quantity", json!(5));
        assert_eq!(
            field_error(parse_value(&documented("reservation.expired", qty_differ))).0,
            "detail.quantity"
        );
    }

    #[test]
    fn wrong_types_are_named_with_expected_and_found() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            (
                "reservation.expired",
                with(expired_detail(), "reservation_id", json!(42)),
                "detail.reservation_id",
                "expected a string, found number 42",
            ),
            (
                "reservation.expired",
                with(expired_detail(), "event_id", json!(["e"])),
                "detail.event_id",
                "expected a string, found an array of 1 item",
            ),
            (
                "reservation.expired",
                with(expired_detail(), "seat_ids", json!("A1,A2")),
                "detail.seat_ids",
                "expected an array of seat id strings, found string \"A1,A2\"",
            ),
            (
                "reservation.expired",
                with(expired_detail(), "seat_ids", json!(["A1", 2])),
                "detail.seat_ids[1]",
                "expected a string, found number 2",
            ),
            (
                "reservation.expired",
                with(expired_detail(), "qty", json!("2")),
                "detail.qty",
                "expected an integer from 0 to 2147483647, found string \"2\"",
            ),
            (
                "reservation.expired",
                with(without(expired_detail(), "qty"), "quantity", json!(1.5)),
                "detail.quantity",
                "expected an integer from 0 to 2147483647, found number 1.5",
            ),
            (
                "payment.approved",
                with(payment_detail(false), "amount", json!("twelve")),
                "detail.amount",
                "expected a finite number ≥ 0 (or a numeric string), found string \"twelve\"",
            ),
            (
                "payment.approved",
                with(payment_detail(false), "amount", json!(true)),
                "detail.amount",
                "expected a finite number ≥ 0 (or a numeric string), found boolean true",
            ),
            (
                "payment.approved",
                with(payment_detail(false), "amount", json!(-1)),
                "detail.amount",
                "expected a finite number ≥ 0 (or a numeric string), found number -1",
            ),
            (
                "payment.approved",
                with(payment_detail(false), "currency", json!("eur")),
                "detail.currency",
                "expected a 3-letter uppercase currency code such as \"EUR\", found string \"eur\"",
            ),
            (
                "payment.approved",
                with(payment_detail(false), "user_id", json!(7)),
                "detail.user_id",
                "expected a string, found number 7",
            ),
            (
                "payment.approved",
                with(payment_detail(false), "event_id", json!({})),
                "detail.event_id",
                "expected a string, found an object with 0 keys",
            ),
            (
                "payment.approved",
                without(
                    with(payment_detail(false), "payment_id", json!(false)),
                    "payment_intent_id",
                ),
                "detail.payment_id",
                "expected a string, found boolean false",
            ),
            (
                "payment.failed",
                with(payment_detail(true), "error_code", json!(500)),
                "detail.error_code",
                "expected a string, found number 500",
            ),
            (
                "payment.failed",
                with(payment_detail(true), "error_message", json!(["x"])),
                "detail.error_message",
                "expected a string, found an array of 1 item",
            ),
        ];
        for (ty, detail, field, problem) in cases {
            assert_eq!(
                field_error(parse_value(&documented(ty, detail))),
                (field.to_owned(), problem.to_owned())
            );
        }
    }

    #[test]
    fn qty_bounds() {
        let neg = with(expired_detail(), "qty", json!(-1));
        assert_eq!(
            field_error(parse_value(&documented("reservation.expired", neg))),
            (
                "detail.qty".to_owned(),
                "expected an integer from 0 to 2147483647, found number -1".to_owned()
            )
        );
        let big = with(payment_detail(false), "qty", json!(2_147_483_648_u64));
        assert_eq!(
            field_error(parse_value(&documented("payment.approved", big))).0,
            "detail.qty"
        );
        let max = with(payment_detail(false), "qty", json!(2_147_483_647_u64));
        let Ok(Event {
            kind: EventKind::PaymentApproved(p),
            ..
        }) = parse_value(&documented("payment.approved", max))
        else {
            panic!("i32::MAX is allowed");
        };
        assert_eq!(p.qty, Some(2_147_483_647));
    }

    #[test]
    fn seat_limits() {
        let many: Vec<String> = (0..=MAX_SEATS).map(|i| format!("S{i}")).collect();
        let body = documented(
            "reservation.expired",
            with(expired_detail(), "seat_ids", json!(many)),
        );
        assert_eq!(
            field_error(parse_value(&body)),
            (
                "detail.seat_ids".to_owned(),
                "expected at most 500 seat ids, found 501".to_owned()
            )
        );
        let dup = with(
            payment_detail(false),
            "seat_ids",
            json!(["A1", "A2", "A3", "A2"]),
        );
        let (field, problem) = field_error(parse_value(&documented("payment.approved", dup)));
        assert_eq!(field, "detail.seat_ids[3]");
        assert!(
            problem.contains("\"A2\" again (first at index 1)"),
            "{problem}"
        );
        let empty = with(expired_detail(), "seat_ids", json!(["A1", ""]));
        assert_eq!(
            field_error(parse_value(&documented("reservation.expired", empty))),
            (
                "detail.seat_ids[1]".to_owned(),
                "expected a non-empty id, found an empty string".to_owned()
            )
        );
    }

    #[test]
    fn empty_and_bad_ids() {
        for value in [json!(""), json!("   ")] {
            let body = documented(
                "reservation.expired",
                with(expired_detail(), "reservation_id", value),
            );
            let (field, problem) = field_error(parse_value(&body));
            assert_eq!(field, "detail.reservation_id");
            assert!(
                problem.starts_with("expected a non-empty id, found"),
                "{problem}"
            );
        }
        let long = "r".repeat(100_000);
        let body = documented(
            "payment.approved",
            with(payment_detail(false), "reservation_id", json!(long)),
        );
        let (field, problem) = field_error(parse_value(&body));
        assert_eq!(field, "detail.reservation_id");
        assert!(
            problem.starts_with("expected an id of at most 256 bytes, found 100000 bytes"),
            "{problem}"
        );
        assert!(problem.len() < 200, "bounded: {} bytes", problem.len());
        let ctrl = documented(
            "payment.approved",
            with(
                payment_detail(false),
                "payment_intent_id",
                json!("pi\u{7}7"),
            ),
        );
        assert_eq!(
            field_error(parse_value(&ctrl)).0,
            "detail.payment_intent_id"
        );
        // Surrounding whitespace is trimmed off ids.
        let padded = documented(
            "reservation.expired",
            with(expired_detail(), "reservation_id", json!("  r-1\t")),
        );
        assert_eq!(parse_value(&padded).map(|e| e.kind), Ok(expected_expired()));
    }

    #[test]
    fn long_error_message_is_cut_not_rejected() {
        let detail = with(
            payment_detail(true),
            "error_message",
            json!("é".repeat(5_000)),
        );
        let Ok(Event {
            kind: EventKind::PaymentFailed(p),
            ..
        }) = parse_value(&documented("payment.failed", detail))
        else {
            panic!("a long error_message is still a failure");
        };
        let len = p.error_message.map_or(0, |m| m.len());
        assert!(len <= MAX_TEXT_BYTES && len > MAX_TEXT_BYTES - 4, "{len}");
    }

    #[test]
    fn every_error_display_is_bounded() {
        let huge = "x".repeat(200_000);
        let bodies = [
            documented(&huge, expired_detail()),
            documented(
                "payment.approved",
                with(payment_detail(false), "amount", json!(huge)),
            ),
            documented(
                "payment.approved",
                with(payment_detail(false), "currency", json!(huge)),
            ),
            documented(
                "reservation.expired",
                with(expired_detail(), "seat_ids", json!([huge])),
            ),
            eventbridge("Payment Status Updated", sim_detail(&huge)),
            sns_message(json!(huge)),
        ];
        for body in bodies {
            let err = parse_value(&body)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                !err.is_empty() && err.len() < 300,
                "{} bytes: {err:.100}",
                err.len()
            );
        }
    }
}
