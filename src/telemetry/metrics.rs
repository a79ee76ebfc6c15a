//! Prometheus metrics. One process-wide set, registered in the worker's own [`Registry`] so the
//! exposition holds exactly what is defined here. The first four names are what the existing
//! dashboards use; every label takes values from a fixed list, and every series whose labels
//! are known up front is exported at zero from the start.

use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

use crate::labels::{DeadLetterReason, Outcome, SettleWrite, SqsOperation, StepName};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The content type of [`Metrics::encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// `type` label values: the three event types, or `unknown` for a body that did not parse.
pub(crate) const EVENT_TYPES: [&str; 4] = [
    "reservation.expired",
    "payment.approved",
    "payment.failed",
    UNKNOWN_TYPE,
];

/// The `type` of a delivery whose body did not parse (never the raw string from the message).
pub(crate) const UNKNOWN_TYPE: &str = "unknown";

/// (`type`, `applied_step`) of a half-applied event: each workflow's first step, the one that
/// can have applied when the second is rejected for good. (The workflow's tests check this
/// list against the workflows.)
pub(crate) const HALF_APPLIED: [(&str, StepName); 3] = [
    ("reservation.expired", StepName::ReleaseHold),
    ("payment.approved", StepName::StatusUpdate),
    ("payment.failed", StepName::StatusUpdate),
];

/// The source commit the worker was built from (see build.rs), or `unknown`.
pub(crate) const REVISION: &str = env!("WORKER_REVISION");

/// `status` of `worker_health_status`: what `/health` answers (the health module's tests check
/// this list against its states).
pub(crate) const HEALTH_STATES: [&str; 6] = [
    "starting",
    "ok",
    "draining",
    "wedged",
    "stopped",
    "unsettled",
];

/// `target` of inventory calls.
pub(crate) const INVENTORY: &str = "inventory";
/// `target` of reservation API calls.
pub(crate) const RESERVATION_API: &str = "reservation_api";

/// (`target`, `method`) of every downstream call.
pub(crate) const DOWNSTREAM_CALLS: [(&str, &str); 4] = [
    (INVENTORY, "ReleaseHold"),
    (INVENTORY, "CommitReservation"),
    (RESERVATION_API, "PATCH"),
    (RESERVATION_API, "GET"),
];

/// `result` of a downstream call, as classified at the edge.
pub(crate) const DOWNSTREAM_RESULTS: [&str; 4] = ["ok", "already_applied", "retryable", "terminal"];

/// `result` of a visibility renewal.
pub(crate) const RENEWAL_RESULTS: [&str; 2] = ["ok", "error"];

/// `peer` of the circuit breakers (the same words as the downstream `target`).
pub(crate) const CIRCUIT_PEERS: [&str; 2] = [INVENTORY, RESERVATION_API];

/// `state` of a circuit breaker.
pub(crate) const CIRCUIT_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// `result` of a circuit breaker's probe.
pub(crate) const PROBE_RESULTS: [&str; 2] = ["answered", "failed"];

/// 5 ms to 60 s: a delivery takes milliseconds when all is well, up to a minute with retries.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];
/// 50 ms to 12 h: a backlog shows as messages that waited minutes or hours.
const AGE_BUCKETS: [f64; 16] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0,
    43200.0,
];
/// 1 ms to 30 s: peer calls are bounded by their timeouts (5 s by default).
const CALL_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric of the worker. Reached through [`metrics`].
pub(crate) struct Metrics {
    registry: Registry,
    events: IntCounterVec,
    latency: HistogramVec,
    poll_errors: IntCounter,
    active: IntGauge,
    received: IntCounter,
    deleted: IntCounter,
    released: IntCounter,
    dead_letters: IntCounterVec,
    half_applied: IntCounterVec,
    retries: IntCounterVec,
    settle_failures: IntCounterVec,
    renewals: IntCounterVec,
    message_age: Histogram,
    downstream: HistogramVec,
    sqs_requests: HistogramVec,
    pool_capacity: IntGauge,
    last_receive: prometheus::Gauge,
    ready: IntGauge,
    health_status: IntGaugeVec,
    build_info: IntGaugeVec,
    circuit_state: IntGaugeVec,
    circuit_probes: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics. One set per process, so the pool, the poller, the acker and the
/// clients count without being handed a registry.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

// Registration fails only for a malformed definition in this file (a unit test builds them all),
// never because of anything from outside the process.
fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid counter");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid histogram");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            events: counter_vec(
                &r,
                "worker_events_total",
                "Deliveries finished, by event type (unknown = the body did not parse) and outcome (success, duplicate, retry_later, dead_lettered, released).",
                &["type", "outcome"],
            ),
            latency: histogram_vec(
                &r,
                "worker_latency_seconds",
                "Time from receiving a message to its final disposition, by event type.",
                &["type"],
                &LATENCY_BUCKETS,
            ),
            poll_errors: counter(
                &r,
                "sqs_poll_errors_total",
                "ReceiveMessage calls that failed or timed out.",
            ),
            active: gauge(
                &r,
                "worker_active_count",
                "Messages being worked on right now (received and not yet handed to the acker).",
            ),
            received: counter(
                &r,
                "sqs_messages_received_total",
                "Messages received from the source queue (each delivery counts).",
            ),
            deleted: counter(
                &r,
                "sqs_messages_deleted_total",
                "Messages deleted from the source queue (done, duplicate, or dead-lettered).",
            ),
            released: counter(
                &r,
                "sqs_messages_released_total",
                "Messages handed back unfinished (visibility set to 0) for another delivery.",
            ),
            dead_letters: counter_vec(
                &r,
                "worker_dead_letters_total",
                "Messages sent to the dead-letter queue, by reason class. A second delivery of a message already sent is only deleted: it counts in worker_events_total{outcome=\"dead_lettered\"}, not here.",
                &["reason"],
            ),
            half_applied: counter_vec(
                &r,
                "worker_half_applied_events_total",
                "Events dead-lettered after part of their workflow applied, by event type and the last step that applied (payment.approved with status_update: the reservation is CONFIRMED and the seats are not committed). Each one needs an operator; see the runbook.",
                &["type", "applied_step"],
            ),
            retries: counter_vec(
                &r,
                "worker_retries_total",
                "Retries within a delivery (backoffs started after a retryable failure), by the step that failed.",
                &["step"],
            ),
            settle_failures: counter_vec(
                &r,
                "worker_settle_failures_total",
                "SQS calls that settle messages and failed (after the SDK's own retries), by write: delete, change_visibility, dead_letter. While they fail, decided messages come back to be worked on again; /health fails when one kind fails for longer than the liveness limit.",
                &["write"],
            ),
            renewals: counter_vec(
                &r,
                "sqs_visibility_extensions_total",
                "Renewals of an in-flight message's visibility, one per message, by result (ok, error).",
                &["result"],
            ),
            message_age: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "worker_message_age_seconds",
                        "Age of a message when this worker picked it up (now minus SentTimestamp).",
                    )
                    .buckets(AGE_BUCKETS.to_vec()),
                )
                .expect("valid histogram");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            downstream: histogram_vec(
                &r,
                "downstream_request_duration_seconds",
                "Duration of calls to the peers, by target (inventory, reservation_api), method and classified result (ok, already_applied, retryable, terminal).",
                &["target", "method", "result"],
                &CALL_BUCKETS,
            ),
            sqs_requests: histogram_vec(
                &r,
                "sqs_request_duration_seconds",
                "Duration of SQS calls by operation, including failed ones and long polls cut short at shutdown.",
                &["operation"],
                &CALL_BUCKETS,
            ),
            pool_capacity: gauge(
                &r,
                "worker_pool_capacity",
                "Messages the pool may work on at once (WORKER_CONCURRENCY).",
            ),
            last_receive: {
                let g = prometheus::Gauge::new(
                    "sqs_last_successful_receive_timestamp_seconds",
                    "Unix time of the last ReceiveMessage call that succeeded (with messages or without); 0 until the first. time() minus this is how long receiving has been failing or stuck.",
                )
                .expect("valid gauge");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            ready: gauge(
                &r,
                "worker_ready",
                "1 while /ready answers 200 (the queue reached, no circuit open, not draining), else 0. Read at each scrape.",
            ),
            health_status: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "worker_health_status",
                        "1 for what /health answers now (starting, ok, draining; wedged, stopped, unsettled: 503, restart the pod), 0 for the others. Read at each scrape.",
                    ),
                    &["status"],
                )
                .expect("valid gauge");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            build_info: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "worker_build_info",
                        "Always 1; the version and revision (the source commit) labels say which build is running.",
                    ),
                    &["version", "revision"],
                )
                .expect("valid gauge");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            circuit_state: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "worker_circuit_state",
                        "State of each peer's circuit breaker: 1 for the current state (closed, open, half_open), 0 for the others. While a circuit is not closed, receiving is paused (open) or limited to one message (half_open), and /ready answers 503.",
                    ),
                    &["peer", "state"],
                )
                .expect("valid gauge");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            circuit_probes: counter_vec(
                &r,
                "worker_circuit_probes_total",
                "Probes of a peer whose circuit is open (gRPC health, a GET of a probe reservation), by result (answered, failed).",
                &["peer", "result"],
            ),
            registry: r,
        };
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
        // process_max_fds, process_start_time_seconds, …: read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        m.zero_series();
        m
    }

    /// Creates every series whose labels are known, so dashboards and alerts see zeros rather
    /// than missing data before the first event.
    fn zero_series(&self) {
        for t in EVENT_TYPES {
            for o in Outcome::ALL {
                self.events.with_label_values(&[t, o.as_str()]);
            }
            self.latency.with_label_values(&[t]);
        }
        for r in DeadLetterReason::ALL {
            self.dead_letters.with_label_values(&[r.as_str()]);
        }
        for s in StepName::ALL {
            self.retries.with_label_values(&[s.as_str()]);
        }
        for (t, s) in HALF_APPLIED {
            self.half_applied.with_label_values(&[t, s.as_str()]);
        }
        for r in RENEWAL_RESULTS {
            self.renewals.with_label_values(&[r]);
        }
        for w in SettleWrite::ALL {
            self.settle_failures.with_label_values(&[w.as_str()]);
        }
        for (target, method) in DOWNSTREAM_CALLS {
            for result in DOWNSTREAM_RESULTS {
                self.downstream.with_label_values(&[target, method, result]);
            }
        }
        for op in SqsOperation::ALL.map(SqsOperation::as_str) {
            self.sqs_requests.with_label_values(&[op]);
        }
        for peer in CIRCUIT_PEERS {
            self.circuit_state(peer, "closed");
            for result in PROBE_RESULTS {
                self.circuit_probes.with_label_values(&[peer, result]);
            }
        }
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), REVISION])
            .set(1);
        self.health("starting", false);
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn encode(&self) -> String {
        let text = TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "metrics encoding failed");
                String::new()
            });
        // Labels are bounded enums, never message text; masked all the same, as every output.
        crate::redact::owned(text)
    }

    /// One delivery finished. `event_type` is `None` when the body did not parse; a value not
    /// among [`EVENT_TYPES`] is counted as `unknown` too, so no label can come from a message.
    pub(crate) fn event_finished(
        &self,
        event_type: Option<&str>,
        outcome: Outcome,
        latency: Duration,
    ) {
        let t = type_label(event_type);
        self.events.with_label_values(&[t, outcome.as_str()]).inc();
        self.latency
            .with_label_values(&[t])
            .observe(latency.as_secs_f64());
    }

    /// How many deliveries of `event_type` ended with `outcome` so far.
    pub(crate) fn events(&self, event_type: &str, outcome: Outcome) -> u64 {
        self.events
            .with_label_values(&[type_label(Some(event_type)), outcome.as_str()])
            .get()
    }

    /// A message task started.
    pub(crate) fn task_started(&self) {
        self.active.inc();
    }

    /// A message task handed its disposition over.
    pub(crate) fn task_finished(&self) {
        self.active.dec();
    }

    /// A ReceiveMessage call failed.
    pub(crate) fn poll_failed(&self) {
        self.poll_errors.inc();
    }

    /// A ReceiveMessage call succeeded (an empty one too): counts the batch, records each
    /// message's age (from the time SQS says it was sent, when it says) and the time of the
    /// receive.
    pub(crate) fn received(&self, sent_at: impl ExactSizeIterator<Item = Option<SystemTime>>) {
        self.received.inc_by(sent_at.len() as u64);
        let now = SystemTime::now();
        self.last_receive.set(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        for sent in sent_at.flatten() {
            // A sender clock ahead of ours reads as age 0, not as an error.
            let age = now.duration_since(sent).unwrap_or_default();
            self.message_age.observe(age.as_secs_f64());
        }
    }

    /// A settling write (`delete`, `change_visibility`, `dead_letter`) failed.
    pub(crate) fn settle_failed(&self, write: SettleWrite) {
        self.settle_failures
            .with_label_values(&[write.as_str()])
            .inc();
    }

    /// `n` messages were deleted from the source queue.
    pub(crate) fn deleted(&self, n: usize) {
        self.deleted.inc_by(n as u64);
    }

    /// `n` messages were made visible again at once.
    pub(crate) fn released(&self, n: usize) {
        self.released.inc_by(n as u64);
    }

    /// A message was sent to the DLQ for `reason` (an error class).
    pub(crate) fn dead_lettered(&self, reason: DeadLetterReason) {
        self.dead_letters
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// A dead letter left `step` (and any step before it) applied. `event_type` as in
    /// [`Metrics::event_finished`].
    pub(crate) fn half_applied(&self, event_type: Option<&str>, step: StepName) {
        self.half_applied
            .with_label_values(&[type_label(event_type), step.as_str()])
            .inc();
    }

    /// A retry of `step` (a workflow step's name) is about to wait out its backoff.
    pub(crate) fn retry(&self, step: StepName) {
        self.retries.with_label_values(&[step.as_str()]).inc();
    }

    /// A message's visibility was renewed (or the renewal failed).
    pub(crate) fn visibility_extended(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.renewals.with_label_values(&[result]).inc();
    }

    /// Times one SQS call; the duration is recorded when the returned guard is dropped.
    pub(crate) fn sqs_call(&self, operation: SqsOperation) -> SqsTimer {
        SqsTimer {
            operation,
            started: Instant::now(),
        }
    }

    /// Records one downstream call.
    pub(crate) fn downstream(
        &self,
        target: &'static str,
        method: &'static str,
        result: &'static str,
        took: Duration,
    ) {
        self.downstream
            .with_label_values(&[target, method, result])
            .observe(took.as_secs_f64());
    }

    /// What `/health` (`status`, one of [`HEALTH_STATES`]) and `/ready` answer now.
    pub(crate) fn health(&self, status: &str, ready: bool) {
        self.ready.set(i64::from(ready));
        for s in HEALTH_STATES {
            self.health_status
                .with_label_values(&[s])
                .set(i64::from(s == status));
        }
    }

    /// `peer`'s circuit is now in `state` (one of [`CIRCUIT_STATES`]).
    pub(crate) fn circuit_state(&self, peer: &'static str, state: &'static str) {
        for s in CIRCUIT_STATES {
            self.circuit_state
                .with_label_values(&[peer, s])
                .set(i64::from(s == state));
        }
    }

    /// A probe of `peer` answered, or not.
    pub(crate) fn circuit_probe(&self, peer: &'static str, answered: bool) {
        let result = if answered { "answered" } else { "failed" };
        self.circuit_probes.with_label_values(&[peer, result]).inc();
    }

    /// The pool's size (`WORKER_CONCURRENCY`).
    pub(crate) fn set_pool_capacity(&self, n: usize) {
        self.pool_capacity.set(n as i64);
    }
}

fn type_label(event_type: Option<&str>) -> &'static str {
    event_type
        .and_then(|t| EVENT_TYPES.iter().find(|k| **k == t))
        .copied()
        .unwrap_or(UNKNOWN_TYPE)
}

/// Records an SQS call's duration when dropped (see [`Metrics::sqs_call`]).
#[must_use = "the call is timed until this guard is dropped"]
pub(crate) struct SqsTimer {
    operation: SqsOperation,
    started: Instant,
}

impl Drop for SqsTimer {
    fn drop(&mut self) {
        metrics()
            .sqs_requests
            .with_label_values(&[self.operation.as_str()])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    #[test]
    fn every_known_series_is_exported_at_zero() {
        // A private registry: the process-wide one is shared with other tests.
        let m = Metrics::new();
        let text = m.encode();
        for t in EVENT_TYPES {
            for o in Outcome::ALL {
                let s = format!(
                    "worker_events_total{{outcome=\"{}\",type=\"{t}\"}} 0",
                    o.as_str()
                );
                assert!(text.contains(&s), "{s} missing");
            }
        }
        for name in [
            "sqs_poll_errors_total 0",
            "worker_active_count 0",
            "sqs_messages_received_total 0",
            "sqs_messages_deleted_total 0",
            "sqs_messages_released_total 0",
            "worker_message_age_seconds_count 0",
            "worker_pool_capacity 0",
        ] {
            assert!(line(&text, name).is_some(), "{name} missing:\n{text}");
        }
        assert!(text.contains(&format!(
            "worker_build_info{{revision=\"{REVISION}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("worker_ready 0"), "{text}");
        assert!(text.contains("worker_health_status{status=\"starting\"} 1"));
        assert!(text.contains("worker_latency_seconds_bucket{type=\"unknown\",le=\"0.005\"} 0"));
        assert!(text.contains("worker_latency_seconds_bucket{type=\"unknown\",le=\"60\"} 0"));
    }

    #[test]
    fn a_type_not_in_the_list_is_counted_as_unknown() {
        let m = Metrics::new();
        m.event_finished(
            Some("evil\"type{x}"),
            Outcome::DeadLettered,
            Duration::from_millis(3),
        );
        m.event_finished(None, Outcome::DeadLettered, Duration::from_millis(3));
        m.event_finished(
            Some("payment.failed"),
            Outcome::Success,
            Duration::from_millis(3),
        );
        assert_eq!(m.events("unknown", Outcome::DeadLettered), 2);
        assert_eq!(m.events("payment.failed", Outcome::Success), 1);
        assert!(!m.encode().contains("evil"));
    }
}
