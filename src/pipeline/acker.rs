//! The acker: every write of a disposition back to SQS. Deletes and visibility changes are
//! batched (10 per call, or whatever is waiting after a short interval); dead letters are sent
//! to the DLQ and only then deleted from the source queue, once per message even when SQS
//! delivers it twice.
//!
//! The acker's own loop never waits on SQS: each write is a task of its own, with a bounded
//! number of attempts of bounded length, so a hanging DLQ or a slow delete holds up nothing
//! else, and shutdown can cut whatever is still in flight (the message then simply reappears).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Disposition, RecentlyCompleted};
use crate::backoff::Backoff;
use crate::config::MAX_VISIBILITY;
use crate::event::EventType;
use crate::health::WorkerStatus;
use crate::labels::{AppliedSteps, DeadLetterReason, SettleWrite};
use crate::sqs::{
    BATCH_LIMIT, Delivery, EntryFailure, Queue, QueueError, QueueErrorKind, SqsOperation,
};
use crate::telemetry::metrics::metrics;
use crate::text::shortened;

/// How long a lone write waits for company before it is sent.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Attempts per write before giving up (the message then simply reappears later).
const WRITE_ATTEMPTS: u32 = 3;
/// The wait before each further attempt: 100 ms, then 200 ms.
const WRITE_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(1),
};
/// Longest one attempt of a write may take, the SDK's own retries included. With
/// [`WRITE_ATTEMPTS`] and the pauses between them, no write lasts more than ~16 s.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Batch writes (deletes, visibility changes) in flight at once; more wait in the buffer.
const BATCH_WRITES: usize = 64;
/// The DLQ's message size limit when it cannot be read: SQS's default.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 262_144;
/// How much of an error's text a dead letter carries at most.
const ERROR_TEXT_BYTES: usize = 1024;

/// Logged for a delivery of a message this acker already sent to the DLQ (SQS gave it twice at
/// once, or again after a delete failed): it is deleted, not sent again.
pub const ALREADY_DEAD_LETTERED: &str = "already dead-lettered: this copy is only deleted";

/// A finished delivery and what to do with it.
#[derive(Debug)]
pub struct Settle {
    pub delivery: Delivery,
    pub disposition: Disposition,
    /// The message's span: the acker's lines and its DLQ send belong to the message.
    pub span: tracing::Span,
    /// The message's pool slot, held until a dead letter is sent: the pool's bound on work in
    /// flight then covers DLQ sends too, so a slow DLQ slows intake instead of piling up bodies.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The envelope id the workflow used, when the body parsed: a dead-letter copy carries it
    /// (`EnvelopeId`), so a redrive keeps the idempotency key even for a body without an id.
    pub envelope_id: Option<String>,
    /// The event type, when the body named one the worker handles: the label of a
    /// half-applied event.
    pub event_type: Option<EventType>,
}

/// Why a message goes to the dead-letter queue, and what of it applied all the same.
struct Verdict<'a> {
    envelope_id: Option<&'a str>,
    event_type: Option<EventType>,
    class: DeadLetterReason,
    error: &'a str,
    applied: &'a AppliedSteps,
}

/// The dead-letter queue and the largest message it takes.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterQueue {
    pub queue: Arc<dyn Queue>,
    /// `MaximumMessageSize` of the DLQ, body and attributes together.
    pub max_message_size: usize,
}

/// Owns every SQS write for the worker's lifetime. Runs until all senders are dropped, then
/// flushes and returns when its writes are done: that is how shutdown makes sure no decided
/// disposition is lost. Shutdown bounds that wait by aborting the task.
pub struct Acker {
    writer: Arc<Writer>,
}

/// What the write tasks share.
struct Writer {
    queue: Arc<dyn Queue>,
    dlq: Option<DeadLetterQueue>,
    /// Visibility for a terminal message whose DLQ send failed: try again later.
    dlq_retry_after: Duration,
    /// SQS message ids whose DLQ copy was sent. SQS delivers at least once: two receives can
    /// hand out the same message at once, and a copy whose delete failed comes back. Either
    /// way a second DLQ copy would be a second record of one failure.
    dead_lettered: RecentlyCompleted,
    /// Message ids whose DLQ send is under way, with its outcome once known.
    dead_lettering: Mutex<HashMap<String, watch::Receiver<Option<bool>>>>,
    /// Written on each DLQ copy (`DeadLetteredBy`): whose logs tell the story.
    pod_name: String,
    /// Where failing writes are reported, for `/health`.
    status: Arc<WorkerStatus>,
}

impl Acker {
    /// An acker writing to `queue`, dead-lettering to `dlq` when there is one, and remembering
    /// what it dead-lettered in `dead_lettered`. Each call to either queue should give up
    /// after [`WRITE_TIMEOUT`].
    pub fn new(
        queue: Arc<dyn Queue>,
        dlq: Option<Arc<dyn Queue>>,
        dlq_retry_after: Duration,
        dead_lettered: RecentlyCompleted,
    ) -> Self {
        Acker {
            writer: Arc::new(Writer {
                queue,
                dlq: dlq.map(|q| DeadLetterQueue {
                    queue: q,
                    max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                }),
                dlq_retry_after,
                dead_lettered,
                dead_lettering: Mutex::default(),
                pod_name: format!("pid-{}", std::process::id()),
                status: Arc::new(WorkerStatus::default()),
            }),
        }
    }

    fn writer_mut(&mut self) -> &mut Writer {
        Arc::get_mut(&mut self.writer).expect("configured before it runs")
    }

    /// Names this pod on its DLQ copies (`POD_NAME`); without it, the process id.
    pub fn with_pod_name(mut self, pod_name: Option<&str>) -> Self {
        if let Some(name) = pod_name {
            self.writer_mut().pod_name = name.to_string();
        }
        self
    }

    /// The DLQ's `MaximumMessageSize`, which every dead-letter copy is fitted into.
    pub fn with_dlq_limit(mut self, max_message_size: usize) -> Self {
        if let Some(dlq) = &mut self.writer_mut().dlq {
            dlq.max_message_size = max_message_size;
        }
        self
    }

    /// Reports failing writes to `status`, where `/health` sees them.
    pub fn with_status(mut self, status: Arc<WorkerStatus>) -> Self {
        self.writer_mut().status = status;
        self
    }

    /// Writes dispositions until every sender is gone, then flushes what is left and waits
    /// for the writes under way.
    pub async fn run(self, mut rx: mpsc::Receiver<Settle>) {
        let writer = self.writer;
        let mut writes: JoinSet<()> = JoinSet::new();
        let slots = Arc::new(Semaphore::new(BATCH_WRITES));
        let mut deletes: Vec<String> = Vec::new();
        let mut visibility: Vec<(String, Duration)> = Vec::new();
        // One timer for the loop's life, moved when the deadline changes: a timer made per
        // turn would be entered into and taken out of the runtime's timer wheel per message.
        // `armed` while a partial batch waits for it.
        let flush_due = tokio::time::sleep_until(Instant::now());
        tokio::pin!(flush_due);
        let mut armed = false;
        let mut open = true;
        while open {
            // Partial batches go out when the flush interval since the first of them is up.
            let mut flush = false;
            tokio::select! {
                m = rx.recv() => match m {
                    Some(settle) => {
                        // Only a dead letter logs here, and its lines belong to the message.
                        let _entered = matches!(settle.disposition, Disposition::DeadLetter { .. })
                            .then(|| settle.span.clone().entered());
                        route(&writer, settle, &mut writes, &mut deletes, &mut visibility);
                    }
                    None => open = false,
                },
                _ = &mut flush_due, if armed => flush = true,
                Some(_) = writes.join_next(), if !writes.is_empty() => {}
            }
            let due = !open || flush;
            spawn_batches(
                &writer,
                &slots,
                &mut writes,
                &mut deletes,
                due,
                |w, batch| Box::pin(delete(w, batch)),
            );
            spawn_batches(
                &writer,
                &slots,
                &mut writes,
                &mut visibility,
                due,
                |w, batch| Box::pin(change_visibility(w, batch)),
            );
            if deletes.is_empty() && visibility.is_empty() {
                armed = false;
            } else if !armed || flush {
                // Left over for want of a free batch slot, or the first of a new batch.
                flush_due.as_mut().reset(Instant::now() + FLUSH_INTERVAL);
                armed = true;
            }
        }
        // Everything decided goes out; the batch slots only pace it.
        while !deletes.is_empty() || !visibility.is_empty() || !writes.is_empty() {
            spawn_batches(
                &writer,
                &slots,
                &mut writes,
                &mut deletes,
                true,
                |w, batch| Box::pin(delete(w, batch)),
            );
            spawn_batches(
                &writer,
                &slots,
                &mut writes,
                &mut visibility,
                true,
                |w, batch| Box::pin(change_visibility(w, batch)),
            );
            if writes.join_next().await.is_none() {
                break;
            }
        }
    }
}

type Write = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts a write task for each full batch in `pending` (and for what is left when `due`),
/// as long as batch slots are free.
fn spawn_batches<T: Send + 'static>(
    writer: &Arc<Writer>,
    slots: &Arc<Semaphore>,
    writes: &mut JoinSet<()>,
    pending: &mut Vec<T>,
    due: bool,
    write: impl Fn(Arc<Writer>, Vec<T>) -> Write,
) {
    while pending.len() >= BATCH_LIMIT || (due && !pending.is_empty()) {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            return;
        };
        let take = pending.len().min(BATCH_LIMIT);
        let batch: Vec<T> = pending.drain(..take).collect();
        let work = write(writer.clone(), batch);
        writes.spawn(async move {
            work.await;
            drop(slot);
        });
    }
}

/// Puts a disposition where it goes: a batch buffer, or a dead-letter task of its own.
fn route(
    writer: &Arc<Writer>,
    s: Settle,
    writes: &mut JoinSet<()>,
    deletes: &mut Vec<String>,
    visibility: &mut Vec<(String, Duration)>,
) {
    let receipt = s.delivery.receipt_handle.clone();
    let cap = visibility_cap(s.delivery.received_at.elapsed());
    match s.disposition {
        Disposition::Delete(_) => deletes.push(receipt),
        Disposition::RetryLater { after, .. } => visibility.push((receipt, after.min(cap))),
        Disposition::Release => visibility.push((receipt, Duration::ZERO)),
        Disposition::DeadLetter { .. } if writer.dead_lettered.contains(&s.delivery.message_id) => {
            tracing::warn!(message_id = %s.delivery.message_id, "{ALREADY_DEAD_LETTERED}");
            deletes.push(receipt);
        }
        Disposition::DeadLetter {
            class,
            error,
            applied,
        } => {
            let Some(dlq) = writer.dlq.clone() else {
                tracing::error!(message_id = %s.delivery.message_id, reason = class.as_str(), error = %error, applied_steps = %applied, "terminal message but no dead-letter queue: kept invisible for 12 h, not deleted");
                visibility.push((receipt, cap));
                return;
            };
            let earlier = writer
                .dead_lettering
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&s.delivery.message_id)
                .cloned();
            if let Some(outcome) = earlier {
                // Another copy of this message is being sent: this one follows its outcome.
                let w = writer.clone();
                writes.spawn(
                    after_the_other_copy(w, s.delivery, outcome, cap).instrument(s.span.clone()),
                );
                return;
            }
            let (tx, rx) = watch::channel(None);
            writer
                .dead_lettering
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(s.delivery.message_id.clone(), rx);
            let w = writer.clone();
            let slot = s.slot;
            writes.spawn(
                async move {
                    let verdict = Verdict {
                        envelope_id: s.envelope_id.as_deref(),
                        event_type: s.event_type,
                        class,
                        error: &error,
                        applied: &applied,
                    };
                    let sent = dead_letter(&w, &dlq, &s.delivery, &verdict, cap).await;
                    w.dead_lettering
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&s.delivery.message_id);
                    let _ = tx.send(Some(sent));
                    drop(slot);
                }
                .instrument(s.span),
            );
        }
    }
}

/// A second copy of a message whose DLQ send is under way: once that ends, this copy is
/// deleted if the message reached the DLQ, else kept for a later attempt.
async fn after_the_other_copy(
    w: Arc<Writer>,
    d: Delivery,
    mut outcome: watch::Receiver<Option<bool>>,
    cap: Duration,
) {
    let sent = match outcome.wait_for(Option::is_some).await {
        Ok(v) => v.unwrap_or(false),
        Err(_) => false,
    };
    if sent {
        tracing::warn!(message_id = %d.message_id, "{ALREADY_DEAD_LETTERED}");
        delete(w, vec![d.receipt_handle]).await;
    } else {
        let after = w.dlq_retry_after.min(cap);
        change_visibility(w, vec![(d.receipt_handle, after)]).await;
    }
}

/// Sends the body to the DLQ with the reason as message attributes, then deletes it from the
/// source queue; if the send fails, keeps it invisible for the retry delay. Returns whether
/// the DLQ has it.
async fn dead_letter(
    w: &Arc<Writer>,
    dlq: &DeadLetterQueue,
    d: &Delivery,
    v: &Verdict<'_>,
    cap: Duration,
) -> bool {
    let class = v.class;
    let attrs = dead_letter_attributes(w, d, v);
    let sent = match fit(&d.body, attrs, dlq.max_message_size) {
        Ok(attrs) => send_dead_letter(dlq, d, &attrs).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(id) => {
            w.status.settled(SettleWrite::DeadLetter);
            w.dead_lettered.insert(&d.message_id);
            metrics().dead_lettered(class);
            if let Some(step) = v.applied.last() {
                metrics().half_applied(v.event_type.map(EventType::as_str), step);
            }
            tracing::warn!(message_id = %d.message_id, dlq_message_id = %id, reason = class.as_str(), error = %v.error, applied_steps = %v.applied, "dead-lettered");
            delete(w.clone(), vec![d.receipt_handle.clone()]).await;
            true
        }
        Err(e) => {
            w.status
                .settle_failed(SettleWrite::DeadLetter, &e.to_string());
            metrics().settle_failed(SettleWrite::DeadLetter);
            tracing::error!(message_id = %d.message_id, error = %e, retry_in_secs = w.dlq_retry_after.as_secs(), "dead-letter send failed; message kept for a later attempt");
            change_visibility(
                w.clone(),
                vec![(d.receipt_handle.clone(), w.dlq_retry_after.min(cap))],
            )
            .await;
            false
        }
    }
}

/// One dead-letter copy's attributes, most important first; every value masked.
fn dead_letter_attributes(
    w: &Writer,
    d: &Delivery,
    v: &Verdict<'_>,
) -> Vec<(&'static str, String)> {
    let mut attrs: Vec<(&'static str, String)> = vec![
        ("ReasonClass", v.class.as_str().to_string()),
        ("AppliedSteps", v.applied.to_string()),
        // Masked before the cut, or a cut secret would no longer match.
        (
            "ErrorMessage",
            shortened(&crate::redact::text(v.error), ERROR_TEXT_BYTES),
        ),
        ("OriginalMessageId", d.message_id.clone()),
        ("ReceiveCount", d.receive_count.to_string()),
        ("SourceQueue", w.queue.url().to_string()),
        ("DeadLetteredBy", w.pod_name.clone()),
    ];
    // The envelope id travels with the body, so a redrive keeps the idempotency key.
    for keep in [
        "TraceId",
        "traceparent",
        crate::event::ENVELOPE_ID_ATTRIBUTE,
    ] {
        if let Some(v) = d.attributes.get(keep) {
            attrs.push((keep, v.clone()));
        }
    }
    if let Some(id) = v.envelope_id
        && !attrs
            .iter()
            .any(|(k, _)| *k == crate::event::ENVELOPE_ID_ATTRIBUTE)
    {
        attrs.push((crate::event::ENVELOPE_ID_ATTRIBUTE, id.to_string()));
    }
    attrs
        .into_iter()
        .map(|(k, v)| (k, crate::redact::owned(v)))
        .collect()
}

/// Attributes dropped, in this order, when a copy would not fit: the least needed first.
/// `ReasonClass` is never dropped.
const DROP_ORDER: [&str; 7] = [
    "traceparent",
    "TraceId",
    "DeadLetteredBy",
    "SourceQueue",
    "ReceiveCount",
    "OriginalMessageId",
    "EnvelopeId",
];

/// What SQS counts of a message: the body and each attribute's name, type and value.
fn message_size(body: &str, attrs: &[(&str, String)]) -> usize {
    body.len()
        + attrs
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum::<usize>()
}

/// Makes a dead-letter copy fit the DLQ's size limit: the error text is shortened to the room
/// left (keeping at least [`MIN_ERROR_TEXT`] of it), else attributes are dropped in
/// [`DROP_ORDER`], then the error text, then `AppliedSteps` (the log line and the metric keep it
/// all the same). A body that alone is larger than the limit
/// cannot be copied: the message is left to the queue's RedrivePolicy.
fn fit(
    body: &str,
    mut attrs: Vec<(&'static str, String)>,
    limit: usize,
) -> Result<Vec<(&'static str, String)>, QueueError> {
    let mut drops = DROP_ORDER
        .iter()
        .copied()
        .chain(["ErrorMessage", "AppliedSteps"]);
    loop {
        let size = message_size(body, &attrs);
        if size <= limit {
            return Ok(attrs);
        }
        if let Some(i) = attrs.iter().position(|(k, _)| *k == "ErrorMessage") {
            let room = limit.saturating_sub(size - attrs[i].1.len());
            if room >= MIN_ERROR_TEXT + "…".len() {
                attrs[i].1 = shortened(&attrs[i].1, room - "…".len());
                return Ok(attrs);
            }
        }
        match drops.next() {
            Some(name) => attrs.retain(|(k, _)| *k != name),
            None => {
                return Err(QueueError {
                    operation: SqsOperation::SendMessage,
                    message: format!(
                        "the body is {} bytes and the dead-letter queue takes at most {limit}: no copy can be sent; the queue's RedrivePolicy moves it once its receives run out",
                        body.len()
                    ),
                    kind: QueueErrorKind::Rejected,
                });
            }
        }
    }
}

/// The least of the error text worth keeping before attributes are dropped to make room.
const MIN_ERROR_TEXT: usize = 64;

/// Sends the copy; retries only what SQS did not refuse as the request's own fault.
async fn send_dead_letter(
    dlq: &DeadLetterQueue,
    d: &Delivery,
    attrs: &[(&'static str, String)],
) -> Result<String, QueueError> {
    let group = d.group_id.as_deref().or(Some("dead-letter"));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match dlq
            .queue
            .send(&d.body, attrs, group, Some(&d.message_id))
            .await
        {
            Ok(id) => return Ok(id),
            Err(e) if e.sender_fault() || attempt == WRITE_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(message_id = %d.message_id, error = %e, attempt, "dead-letter send failed; trying again");
                tokio::time::sleep(WRITE_BACKOFF.exact(attempt)).await;
            }
        }
    }
}

async fn delete(w: Arc<Writer>, pending: Vec<String>) {
    // Each message's `message finished` line is out before the message is gone.
    crate::telemetry::logging::log_lines_written().await;
    let left = write_with_retries(&w, pending, SettleWrite::Delete, |batch| {
        let w = w.clone();
        async move {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let result = w.queue.delete_batch(&refs).await;
            if let Ok(failed) = &result {
                metrics().deleted(refs.len().saturating_sub(failed.len()));
            }
            result
        }
    })
    .await;
    if left > 0 {
        // Not lost: each reappears after its visibility and is dropped as a duplicate.
        tracing::error!(
            count = left,
            "deletes abandoned after retries; the messages will be redelivered and recognised as duplicates"
        );
    }
}

async fn change_visibility(w: Arc<Writer>, pending: Vec<(String, Duration)>) {
    let left = write_with_retries(&w, pending, SettleWrite::ChangeVisibility, |batch| {
        let w = w.clone();
        async move {
            let refs: Vec<(&str, Duration)> = batch.iter().map(|(r, d)| (r.as_str(), *d)).collect();
            let result = w.queue.change_visibility_batch(&refs).await;
            if let Ok(failed) = &result {
                let released = (0..refs.len())
                    .filter(|i| refs[*i].1.is_zero() && !failed.iter().any(|f| f.index == *i))
                    .count();
                metrics().released(released);
            }
            result
        }
    })
    .await;
    if left > 0 {
        tracing::error!(
            count = left,
            "visibility changes abandoned after retries; the messages reappear when their current visibility ends"
        );
    }
}

/// Sends a batch, then resends whatever failed for reasons other than the request itself, up
/// to [`WRITE_ATTEMPTS`] times. Reports each call's success or failure for `/health` and
/// returns how many entries were never written.
async fn write_with_retries<T, F, Fut>(
    w: &Writer,
    mut pending: Vec<T>,
    what: SettleWrite,
    send: F,
) -> usize
where
    T: Clone,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<EntryFailure>, QueueError>>,
{
    let op = what.operation();
    for attempt in 0..WRITE_ATTEMPTS {
        match send(pending.clone()).await {
            Ok(failed) => {
                // Refused entries are about those messages (an expired receipt), not about
                // whether this pod can write: the call itself worked.
                w.status.settled(what);
                pending = retry_entries(&pending, &failed, op);
                if pending.is_empty() {
                    return 0;
                }
            }
            Err(e) => {
                w.status.settle_failed(what, &e.to_string());
                metrics().settle_failed(what);
                tracing::warn!(operation = op.as_str(), error = %e, attempt, "batch call failed");
                if e.sender_fault() {
                    return pending.len();
                }
            }
        }
        if attempt + 1 < WRITE_ATTEMPTS {
            tokio::time::sleep(WRITE_BACKOFF.exact(attempt + 1)).await;
        }
    }
    pending.len()
}

/// The longest visibility SQS accepts for a message received `age` ago: 12 h from its receive,
/// less a minute for clock and transit. SQS refuses (does not shorten) anything longer.
fn visibility_cap(age: std::time::Duration) -> Duration {
    MAX_VISIBILITY.saturating_sub(age + Duration::from_secs(60))
}

/// Logs refused entries and returns those worth sending again (not the sender's fault).
fn retry_entries<T: Clone>(sent: &[T], failed: &[EntryFailure], op: SqsOperation) -> Vec<T> {
    let mut again = Vec::new();
    for f in failed {
        tracing::warn!(operation = op.as_str(), code = %f.code, error = %f.message, sender_fault = f.sender_fault, "batch entry refused");
        if !f.sender_fault
            && let Some(item) = sent.get(f.index)
        {
            again.push(item.clone());
        }
    }
    again
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_never_reaches_past_twelve_hours_from_the_receive() {
        assert_eq!(
            visibility_cap(Duration::ZERO),
            MAX_VISIBILITY - Duration::from_secs(60)
        );
        let two_hours = Duration::from_secs(2 * 3600);
        assert_eq!(
            visibility_cap(two_hours) + two_hours,
            MAX_VISIBILITY - Duration::from_secs(60)
        );
        assert_eq!(visibility_cap(MAX_VISIBILITY), Duration::ZERO);
    }

    fn attrs(error: &str) -> Vec<(&'static str, String)> {
        vec![
            ("ReasonClass", "malformed_json".into()),
            ("ErrorMessage", error.into()),
            (
                "OriginalMessageId",
                "0f1e2d3c-0000-4000-8000-000000000001".into(),
            ),
            ("ReceiveCount", "1".into()),
            (
                "SourceQueue",
                "http://127.0.0.1:1/000000000000/events".into(),
            ),
            ("DeadLetteredBy", "pod-a".into()),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ),
        ]
    }

    fn names(a: &[(&'static str, String)]) -> Vec<&'static str> {
        a.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn a_copy_that_fits_is_left_alone() {
        let a = attrs("malformed JSON: expected value at line 1 column 1");
        assert_eq!(fit("{}", a.clone(), DEFAULT_MAX_MESSAGE_SIZE).ok(), Some(a));
    }

    #[test]
    fn the_error_text_is_shortened_before_anything_is_dropped() {
        let error = "e".repeat(1024);
        let a = attrs(&error);
        let full = message_size("", &a);
        let body = "b".repeat(DEFAULT_MAX_MESSAGE_SIZE - full + 500);
        let fitted = fit(&body, a.clone(), DEFAULT_MAX_MESSAGE_SIZE).expect("fits");
        assert_eq!(names(&fitted), names(&a), "nothing dropped");
        let text = &fitted[1].1;
        assert!(text.len() < error.len() && text.ends_with('…'), "{text}");
        assert!(message_size(&body, &fitted) <= DEFAULT_MAX_MESSAGE_SIZE);
    }

    /// The case: a legal 262,104-byte malformed body leaves 40 bytes for attributes.
    #[test]
    fn a_body_near_the_limit_keeps_its_reason_class() {
        let body = "x".repeat(262_104);
        let fitted = fit(&body, attrs(&"e".repeat(300)), DEFAULT_MAX_MESSAGE_SIZE).expect("fits");
        assert!(message_size(&body, &fitted) <= DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(names(&fitted), ["ReasonClass"]);
        let body = "x".repeat(262_000);
        let fitted = fit(&body, attrs(&"e".repeat(300)), DEFAULT_MAX_MESSAGE_SIZE).expect("fits");
        assert!(message_size(&body, &fitted) <= DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(
            names(&fitted)[..2],
            ["ReasonClass", "ErrorMessage"],
            "{fitted:?}"
        );
        assert!(!names(&fitted).contains(&"traceparent"));
    }

    #[test]
    fn a_body_larger_than_the_dlq_takes_cannot_be_copied() {
        let body = "x".repeat(2000);
        let e = fit(&body, attrs("e"), 1024).expect_err("too large");
        assert!(e.sender_fault());
        assert!(e.message.contains("2000 bytes"), "{e}");
    }
}
