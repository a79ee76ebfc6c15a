//! The parser's invariants beyond "does not panic", for the fuzz target (`fuzz/`, built with
//! `--cfg fuzzing`) and for the unit test below, which runs the fuzz seeds and the bad-input
//! corpus through them: what the fuzzer checks is compiled and run by `cargo test` too. Never in
//! the shipped binary.
//!
//! Input layout: UTF-8 text split at NUL bytes. The first part is the SQS message body; the next
//! parts, when present, are the `TraceId`, `traceparent` and `AWSTraceHeader` message
//! attributes, so the trace-id fallbacks are checked as well as the body. (A raw NUL is never
//! valid inside JSON text, so nothing a body could usefully hold is lost to the split.) Input
//! that is not UTF-8 is skipped: SQS bodies are strings by the time they reach `parse`.
//!
//! An accepted event has a usable envelope id, bounded distinct seat ids and a qty that fits
//! the `int32` proto field; a rejection has a bounded message and one of the four known classes.

use std::collections::{HashMap, HashSet};

use super::{Event, EventError, EventKind, MAX_ID_LEN, MAX_SEATS, MessageContext, parse};

/// The longest error text accepted: DLQ reasons go into a message attribute and logs.
const MAX_ERROR_BYTES: usize = 2048;

const ATTRIBUTES: [&str; 3] = ["TraceId", "traceparent", "AWSTraceHeader"];

/// Parses `data` (laid out as the module says) and panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let body = parts.next().unwrap_or_default();
    let attributes: HashMap<String, String> = ATTRIBUTES
        .iter()
        .zip(parts)
        .map(|(name, value)| ((*name).to_owned(), value.to_owned()))
        .collect();
    let ctx = MessageContext {
        message_id: "m-1",
        attributes: &attributes,
    };
    match parse(body, &ctx) {
        Ok(event) => check_event(&event),
        Err(error) => check_error(&error),
    }
}

fn check_id(what: &str, id: &str) {
    assert!(!id.trim().is_empty(), "{what} is blank: {id:?}");
    assert!(
        id.len() <= MAX_ID_LEN,
        "{what} is {} bytes, over {MAX_ID_LEN}",
        id.len()
    );
    assert!(
        !id.chars().any(char::is_control),
        "{what} has a control character: {id:?}"
    );
}

fn check_seats(seat_ids: &[String]) {
    assert!(
        seat_ids.len() <= MAX_SEATS,
        "{} seat ids, over {MAX_SEATS}",
        seat_ids.len()
    );
    let mut seen = HashSet::new();
    for seat in seat_ids {
        check_id("seat id", seat);
        assert!(seen.insert(seat.as_str()), "duplicate seat id {seat:?}");
    }
}

fn check_qty(qty: u32) {
    assert!(
        i32::try_from(qty).is_ok(),
        "qty {qty} does not fit an int32"
    );
}

fn check_event(event: &Event) {
    check_id("envelope id", &event.envelope_id);
    if let Some(trace) = &event.trace_id {
        check_id("trace id", trace);
    }
    if let Some(source) = &event.source {
        check_id("source", source);
    }
    check_id("reservation id", event.reservation_id());
    match &event.kind {
        EventKind::ReservationExpired(hold) => {
            check_id("event id", &hold.event_id);
            check_seats(&hold.seat_ids);
            check_qty(hold.qty);
            assert!(
                !hold.seat_ids.is_empty() || hold.qty > 0,
                "a hold release with neither seats nor qty"
            );
        }
        EventKind::PaymentApproved(p) | EventKind::PaymentFailed(p) => {
            check_id("payment intent id", &p.payment_intent_id);
            assert!(
                p.amount.is_finite() && p.amount >= 0.0,
                "amount {} is not a finite number ≥ 0",
                p.amount
            );
            check_seats(&p.seat_ids);
            if let Some(q) = p.qty {
                check_qty(q);
            }
            if let Some(c) = &p.currency {
                assert!(
                    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()),
                    "currency {c:?}"
                );
            }
            for (what, id) in [("event id", &p.event_id), ("user id", &p.user_id)] {
                if let Some(id) = id {
                    check_id(what, id);
                }
            }
            if matches!(event.kind, EventKind::PaymentApproved(_)) {
                assert!(p.error_code.is_none() && p.error_message.is_none());
            }
        }
    }
}

fn check_error(error: &EventError) {
    let text = error.to_string();
    assert!(
        text.len() < MAX_ERROR_BYTES,
        "error text is {} bytes: {}…",
        text.len(),
        text.chars().take(200).collect::<String>()
    );
    assert!(
        matches!(
            error.class().as_str(),
            "malformed_json" | "too_large" | "unknown_type" | "invalid_field"
        ),
        "unknown error class {}",
        error.class()
    );
}

#[cfg(test)]
mod tests {
    /// The fuzz seeds (a valid envelope of each form) and the bad-input corpus keep every
    /// invariant.
    #[test]
    fn the_seeds_and_the_corpus_keep_the_invariants() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for dir in ["fuzz/seeds", "tests/corpus"] {
            let entries = std::fs::read_dir(root.join(dir)).expect(dir);
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).expect("readable");
                super::check(&data);
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked} inputs");
    }
}
