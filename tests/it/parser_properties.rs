//! Properties of the envelope parser (`event::parse`), checked on generated input:
//!
//! - it never panics, on arbitrary text, on arbitrary bytes read as lossy UTF-8, and on random
//!   JSON placed inside a documented envelope, and its error messages stay bounded;
//! - a valid generated event of each type parses back to exactly the generated fields, with the
//!   envelope `id` as the idempotency key;
//! - an SNS wrapper changes nothing but, when the body has no `id`, the envelope id (the SNS
//!   `MessageId`, then the SQS MessageId).
//!
//! 256 cases per property by default (`PROPTEST_CASES` overrides), well under a second each.

use std::collections::BTreeSet;

use proptest::prelude::*;
use reservation_worker::event::{
    self, Event, EventKind, EventType, HoldExpired, MAX_ID_LEN, MAX_SEATS, MessageContext, Payment,
};
use serde_json::{Value, json};

fn ctx() -> MessageContext<'static> {
    MessageContext {
        message_id: "sqs-prop-1",
        ..MessageContext::default()
    }
}

/// Parses and checks what must hold for any input: no panic (proptest reports one as a
/// failure), and an error's text bounded whatever the input's size.
fn parse_bounded(body: &str) -> Result<Event, event::EventError> {
    let r = event::parse(body, &ctx());
    if let Err(e) = &r {
        let text = e.to_string();
        assert!(text.len() <= 1024, "{} byte error: {text:.200}", text.len());
    }
    r
}

/// Ids as producers send them: no surrounding whitespace (the parser trims), no controls.
fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_.:/-]{0,39}"
}

/// Reservation ids, which the reservation API gets as one URL path segment: no `/` or `\`.
fn reservation_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}"
}

fn seats() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[A-Z][0-9]{1,3}", 0..20)
        .prop_map(|s: BTreeSet<String>| s.into_iter().collect())
}

/// Amounts exactly representable with a short decimal form, so JSON round-trips them exactly.
fn amount() -> impl Strategy<Value = f64> {
    (0u64..4_000_000_000_000).prop_map(|q| q as f64 / 4.0)
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::hash_map(".{0,10}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The keys the parser reads, so random values land where they matter.
const ENVELOPE_KEYS: &[&str] = &["id", "type", "detail-type", "detail", "source", "trace_id"];
const DETAIL_KEYS: &[&str] = &[
    "reservation_id",
    "event_id",
    "seat_ids",
    "qty",
    "quantity",
    "payment_intent_id",
    "payment_id",
    "amount",
    "currency",
    "user_id",
    "error_code",
    "error_message",
    "failure_reason",
    "status",
];
const TYPES: &[&str] = &[
    "reservation.expired",
    "reservation.hold.expired",
    "payment.approved",
    "payment.failed",
    "Payment Status Updated",
];

/// A documented envelope of a known type whose keys (envelope and detail) are overwritten
/// with random JSON, optionally wrapped in SNS.
fn envelope_shaped() -> impl Strategy<Value = String> {
    (
        prop::sample::select(TYPES),
        prop::collection::vec((prop::sample::select(ENVELOPE_KEYS), any_json()), 0..3),
        prop::collection::vec((prop::sample::select(DETAIL_KEYS), any_json()), 0..6),
        any::<bool>(),
    )
        .prop_map(|(ty, top, detail_edits, wrap)| {
            let mut detail = json!({"reservation_id": "r-1", "event_id": "ev-1",
                "payment_intent_id": "pi-1", "amount": 1, "seat_ids": ["A1"], "qty": 1,
                "status": "PAYMENT_STATUS_COMPLETED"});
            for (k, v) in detail_edits {
                detail[k] = v;
            }
            let mut body = json!({"id": "env-1", "type": ty, "detail": detail});
            for (k, v) in top {
                body[k] = v;
            }
            let text = body.to_string();
            if wrap { sns(&text, None) } else { text }
        })
}

fn sns(inner: &str, message_id: Option<&str>) -> String {
    let mut o = json!({"Type": "Notification", "TopicArn": "arn:aws:sns:x:1:t", "Message": inner});
    if let Some(m) = message_id {
        o["MessageId"] = json!(m);
    }
    o.to_string()
}

/// A valid event of each type, as (body without `id`, the typed kind it must parse to).
fn valid_event() -> impl Strategy<Value = (Value, EventKind)> {
    let expired = (reservation_id(), id(), seats(), 0u32..=i32::MAX as u32)
        .prop_filter("seats or qty", |(_, _, s, q)| !s.is_empty() || *q > 0)
        .prop_map(|(rid, eid, seat_ids, qty)| {
            let body = json!({"type": "reservation.expired", "detail": {
                "reservation_id": rid, "event_id": eid, "seat_ids": seat_ids, "qty": qty}});
            let kind = EventKind::ReservationExpired(HoldExpired {
                reservation_id: rid,
                event_id: eid,
                seat_ids,
                qty,
            });
            (body, kind)
        });
    let payment = (
        any::<bool>(),
        (
            reservation_id(),
            id(),
            amount(),
            prop::option::of("[A-Z]{3}"),
        ),
        (prop::option::of(id()), prop::option::of(id()), seats()),
        prop::option::of(0u32..=i32::MAX as u32),
        (prop::option::of(id()), prop::option::of("[a-z ]{1,40}")),
    )
        .prop_map(
            |(failed, (rid, pi, amount, currency), (event_id, user_id, seat_ids), qty, errs)| {
                let mut detail = json!({"reservation_id": rid, "payment_intent_id": pi,
                    "amount": amount, "seat_ids": seat_ids});
                let optional = [
                    ("currency", currency.clone()),
                    ("event_id", event_id.clone()),
                    ("user_id", user_id.clone()),
                    ("error_code", errs.0.clone()),
                    ("error_message", errs.1.clone()),
                ];
                for (k, v) in optional {
                    if let Some(v) = v {
                        detail[k] = json!(v);
                    }
                }
                if let Some(q) = qty {
                    detail["qty"] = json!(q);
                }
                let p = |error_code, error_message| Payment {
                    reservation_id: rid.clone(),
                    payment_intent_id: pi.clone(),
                    amount,
                    currency: currency.clone(),
                    event_id: event_id.clone(),
                    user_id: user_id.clone(),
                    seat_ids: seat_ids.clone(),
                    qty,
                    error_code,
                    error_message,
                };
                let (ty, kind) = if failed {
                    // The error fields trim and treat blank as absent, as ids do.
                    let msg = errs.1.as_deref().map(str::trim).filter(|m| !m.is_empty());
                    (
                        "payment.failed",
                        EventKind::PaymentFailed(p(errs.0.clone(), msg.map(str::to_owned))),
                    )
                } else {
                    (
                        "payment.approved",
                        EventKind::PaymentApproved(p(None, None)),
                    )
                };
                (json!({"type": ty, "detail": detail}), kind)
            },
        );
    prop_oneof![expired, payment]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        let _ = parse_bounded(&s);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_utf8_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_bounded(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn json_ish_text_never_panics(s in "[\\[\\]{}\":,0-9a-z.\\\\ -]{0,300}") {
        let _ = parse_bounded(&s);
    }

    #[test]
    fn random_values_in_an_envelope_never_panic(body in envelope_shaped()) {
        if let Ok(ev) = parse_bounded(&body) {
            // Whatever got through is within the documented bounds.
            prop_assert!(!ev.envelope_id.is_empty() && ev.envelope_id.len() <= MAX_ID_LEN);
            prop_assert!(!ev.reservation_id().is_empty() && ev.reservation_id().len() <= MAX_ID_LEN);
            let seats = match &ev.kind {
                EventKind::ReservationExpired(h) => &h.seat_ids,
                EventKind::PaymentApproved(p) | EventKind::PaymentFailed(p) => {
                    prop_assert!(p.amount.is_finite() && p.amount >= 0.0);
                    &p.seat_ids
                }
            };
            prop_assert!(seats.len() <= MAX_SEATS);
            prop_assert_eq!(seats.iter().collect::<BTreeSet<_>>().len(), seats.len());
        }
    }

    #[test]
    fn valid_events_round_trip((body, kind) in valid_event(), env_id in id()) {
        let mut with_id = body.clone();
        with_id["id"] = json!(env_id);
        with_id["source"] = json!("props");
        let ev = parse_bounded(&with_id.to_string()).expect("a valid generated event");
        let ty = ev.event_type();
        prop_assert_eq!(&ev.kind, &kind);
        prop_assert_eq!(&ev.envelope_id, &env_id, "the envelope id is the idempotency key");
        prop_assert_eq!(ev.source.as_deref(), Some("props"));
        prop_assert!(matches!(ty, EventType::ReservationExpired | EventType::PaymentApproved | EventType::PaymentFailed));

        // In SNS, with an envelope id: the very same event.
        let in_sns = parse_bounded(&sns(&with_id.to_string(), Some("sns-9"))).expect("SNS-wrapped");
        prop_assert_eq!(&in_sns, &ev);

        // Without one, only the envelope id changes: the SNS MessageId, else the SQS MessageId.
        let no_id = body.to_string();
        let via_sns = parse_bounded(&sns(&no_id, Some("sns-9"))).expect("no id, SNS");
        prop_assert_eq!(&via_sns.envelope_id, "sns-9");
        prop_assert_eq!(&via_sns.kind, &kind);
        let bare_sns = parse_bounded(&sns(&no_id, None)).expect("no id, no MessageId");
        prop_assert_eq!(&bare_sns.envelope_id, "sqs-prop-1");
        let bare = parse_bounded(&no_id).expect("no id, unwrapped");
        prop_assert_eq!(&bare.envelope_id, "sqs-prop-1");
        prop_assert_eq!(&bare.kind, &kind);
    }
}
