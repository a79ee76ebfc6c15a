//! The span of one message, made where the pipeline's types are known; the tracing set-up,
//! the trace-context parsing and the exporter stay in [`crate::telemetry::tracing`], which
//! knows none of them.

use opentelemetry::Context;
use opentelemetry::trace::{Status, TraceContextExt};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::Disposition;
use crate::event::Event;
use crate::sqs::Delivery;
use crate::telemetry::tracing::{incoming_parent, queue_name};

/// A queue's names in its messages' spans, made once rather than per message.
pub(super) struct SpanNames {
    queue: String,
    process: String,
}

impl SpanNames {
    pub(super) fn new(queue_url: &str) -> SpanNames {
        let queue = queue_name(queue_url);
        SpanNames {
            process: format!("process {queue}"),
            queue: queue.to_string(),
        }
    }
}

/// The span of one message, start to finish, named `process <queue>` as OpenTelemetry's
/// messaging conventions name it. Its fields are the message's log fields (the event's, when
/// it parsed; the exporter files them under `reservation_worker.*`); its parent is the
/// message's incoming trace context, and it links to the receive that delivered it.
pub(super) fn process_span(names: &SpanNames, delivery: &Delivery, event: Option<&Event>) -> Span {
    // The event's fields go in at creation: one pass over the fields instead of a `record`
    // (an extensions lock and a visit) per field. A `None` is left out of the log line.
    let span = tracing::info_span!(
        "message",
        otel.name = names.process.as_str(),
        otel.kind = "consumer",
        "messaging.system" = "aws_sqs",
        "messaging.destination.name" = names.queue.as_str(),
        "messaging.message.id" = delivery.message_id.as_str(),
        "messaging.operation.type" = "process",
        "messaging.operation.name" = "process",
        "messaging.operation" = "process",
        message_id = delivery.message_id.as_str(),
        receive_count = delivery.receive_count,
        envelope_id = event.map(|e| e.envelope_id.as_str()),
        event_type = event.map(|e| e.event_type().as_str()),
        reservation_id = event.map(Event::reservation_id),
        trace_id = event.and_then(|e| e.trace_id.as_deref()),
        attempt = Empty,
    );
    if let Some(receive) = &delivery.received_in {
        span.add_link(receive.clone());
    }
    let trace_id = event.and_then(|e| e.trace_id.as_deref());
    if let Some(parent) = incoming_parent(&delivery.attributes, trace_id) {
        // Fails only when tracing is off (no layer): nothing to do then.
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
    span
}

/// Marks the process span with the message's outcome; a dead letter or a retry is an error.
pub(super) fn finish_process(span: &Span, disposition: &Disposition) {
    span.set_attribute("reservation_worker.outcome", disposition.outcome().as_str());
    match disposition {
        Disposition::DeadLetter { class, error, .. } => {
            span.set_attribute("error.type", class.as_str());
            span.set_status(Status::error(format!("{class}: {error}")));
        }
        Disposition::RetryLater { error, .. } => {
            span.set_attribute("error.type", "retryable");
            span.set_status(Status::error(error.clone()));
        }
        _ => {}
    }
}
