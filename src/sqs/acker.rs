//! The acker: the one task that writes dispositions back to SQS. Deletes and visibility
//! changes are batched (10 per call, or whatever is waiting after a short interval); dead
//! letters are sent to the DLQ and only then deleted from the source queue, once per message
//! even when SQS delivers it twice.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Delivery, EntryFailure, Queue, QueueError};
use crate::config::MAX_VISIBILITY;
use crate::telemetry::metrics::metrics;
use crate::worker::{Disposition, RecentlyCompleted};

/// SQS's batch limit.
const BATCH: usize = 10;
/// How long a lone write waits for company before it is sent.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Attempts per batch call before giving up (the message then simply reappears later).
const WRITE_ATTEMPTS: u32 = 3;

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
}

/// Owns every SQS write for the worker's lifetime. Runs until all senders are dropped, then
/// flushes and returns: that is how shutdown makes sure no decided disposition is lost.
pub struct Acker {
    queue: Queue,
    dlq: Option<Queue>,
    /// Visibility for a terminal message whose DLQ send failed: try again later.
    dlq_retry_after: Duration,
    /// SQS message ids whose DLQ copy was sent. SQS delivers at least once: two receives can
    /// hand out the same message at once, and a copy whose delete failed comes back. Either
    /// way a second DLQ copy would be a second record of one failure.
    dead_lettered: RecentlyCompleted,
    /// Written on each DLQ copy (`DeadLetteredBy`): whose logs tell the story.
    pod_name: String,
}

impl Acker {
    /// An acker writing to `queue`, dead-lettering to `dlq` when there is one, and remembering
    /// what it dead-lettered in `dead_lettered`.
    pub fn new(
        queue: Queue,
        dlq: Option<Queue>,
        dlq_retry_after: Duration,
        dead_lettered: RecentlyCompleted,
    ) -> Self {
        Acker {
            queue,
            dlq,
            dlq_retry_after,
            dead_lettered,
            pod_name: format!("pid-{}", std::process::id()),
        }
    }

    /// Names this pod on its DLQ copies (`POD_NAME`); without it, the process id.
    pub fn with_pod_name(mut self, pod_name: Option<&str>) -> Self {
        if let Some(name) = pod_name {
            self.pod_name = name.to_string();
        }
        self
    }

    /// Writes dispositions until every sender is gone, then flushes what is left.
    pub async fn run(self, mut rx: mpsc::Receiver<Settle>) {
        let mut deletes: Vec<String> = Vec::new();
        let mut visibility: Vec<(String, Duration)> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let next = match deadline {
                Some(at) => tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(at) => {
                        self.flush(&mut deletes, &mut visibility).await;
                        deadline = None;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(settle) = next else {
                self.flush(&mut deletes, &mut visibility).await;
                return;
            };
            let span = settle.span.clone();
            self.route(settle, &mut deletes, &mut visibility)
                .instrument(span)
                .await;
            if deletes.len() >= BATCH {
                self.flush_deletes(std::mem::take(&mut deletes)).await;
            }
            if visibility.len() >= BATCH {
                self.flush_visibility(std::mem::take(&mut visibility)).await;
            }
            if deletes.is_empty() && visibility.is_empty() {
                deadline = None;
            } else if deadline.is_none() {
                deadline = Some(Instant::now() + FLUSH_INTERVAL);
            }
        }
    }

    async fn route(
        &self,
        s: Settle,
        deletes: &mut Vec<String>,
        visibility: &mut Vec<(String, Duration)>,
    ) {
        let receipt = s.delivery.receipt_handle.clone();
        let cap = visibility_cap(s.delivery.received_at.elapsed());
        match s.disposition {
            Disposition::Delete(_) => deletes.push(receipt),
            Disposition::RetryLater { after, .. } => visibility.push((receipt, after.min(cap))),
            Disposition::Release => visibility.push((receipt, Duration::ZERO)),
            Disposition::DeadLetter { .. }
                if self.dead_lettered.contains(&s.delivery.message_id) =>
            {
                tracing::warn!(message_id = %s.delivery.message_id, "{ALREADY_DEAD_LETTERED}");
                deletes.push(receipt);
            }
            Disposition::DeadLetter { class, error } => match &self.dlq {
                Some(dlq) => {
                    // What is already decided goes out first: a slow DLQ must not hold it back.
                    self.flush(deletes, visibility).await;
                    let sent = self.dead_letter(dlq, &s.delivery, class, &error).await;
                    match sent {
                        Ok(()) => {
                            self.dead_lettered.insert(&s.delivery.message_id);
                            metrics().dead_lettered(class);
                            deletes.push(receipt);
                        }
                        Err(e) => {
                            tracing::error!(message_id = %s.delivery.message_id, error = %e, "dead-letter send failed; message kept for a later attempt");
                            visibility.push((receipt, self.dlq_retry_after.min(cap)));
                        }
                    }
                }
                None => {
                    tracing::error!(message_id = %s.delivery.message_id, reason = class, error = %error, "terminal message but no dead-letter queue: kept invisible for 12 h, not deleted");
                    visibility.push((receipt, cap));
                }
            },
        }
    }

    /// Sends the original body to the DLQ with the reason as message attributes.
    async fn dead_letter(
        &self,
        dlq: &Queue,
        d: &Delivery,
        class: &str,
        error: &str,
    ) -> Result<(), QueueError> {
        let mut attrs: Vec<(&str, String)> = vec![
            ("ReasonClass", class.to_string()),
            ("ErrorMessage", truncate(error, 1024)),
            ("OriginalMessageId", d.message_id.clone()),
            ("ReceiveCount", d.receive_count.to_string()),
            ("SourceQueue", self.queue.url.clone()),
            ("DeadLetteredBy", self.pod_name.clone()),
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
        let group = d.group_id.as_deref().or(Some("dead-letter"));
        let mut last = None;
        for attempt in 0..WRITE_ATTEMPTS {
            match dlq.send(&d.body, &attrs, group, Some(&d.message_id)).await {
                Ok(id) => {
                    tracing::warn!(message_id = %d.message_id, dlq_message_id = %id, reason = class, error = %error, "dead-lettered");
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        Err(last.unwrap_or(QueueError {
            operation: "SendMessage",
            message: "no attempt made".into(),
        }))
    }

    async fn flush(&self, deletes: &mut Vec<String>, visibility: &mut Vec<(String, Duration)>) {
        for chunk in std::mem::take(deletes).chunks(BATCH) {
            self.flush_deletes(chunk.to_vec()).await;
        }
        for chunk in std::mem::take(visibility).chunks(BATCH) {
            self.flush_visibility(chunk.to_vec()).await;
        }
    }

    async fn flush_deletes(&self, pending: Vec<String>) {
        let left = write_with_retries(pending, "DeleteMessageBatch", |batch| async move {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let result = self.queue.delete_batch(&refs).await;
            if let Ok(failed) = &result {
                metrics().deleted(refs.len().saturating_sub(failed.len()));
            }
            result
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

    async fn flush_visibility(&self, pending: Vec<(String, Duration)>) {
        let left = write_with_retries(
            pending,
            "ChangeMessageVisibilityBatch",
            |batch| async move {
                let refs: Vec<(&str, Duration)> =
                    batch.iter().map(|(r, d)| (r.as_str(), *d)).collect();
                let result = self.queue.change_visibility_batch(&refs).await;
                if let Ok(failed) = &result {
                    let released = (0..refs.len())
                        .filter(|i| refs[*i].1.is_zero() && !failed.iter().any(|f| f.index == *i))
                        .count();
                    metrics().released(released);
                }
                result
            },
        )
        .await;
        if left > 0 {
            tracing::error!(
                count = left,
                "visibility changes abandoned after retries; the messages reappear when their current visibility ends"
            );
        }
    }
}

/// Sends a batch, then resends whatever failed for reasons other than the request itself, up
/// to [`WRITE_ATTEMPTS`] times. Returns how many entries were never written.
async fn write_with_retries<T, F, Fut>(mut pending: Vec<T>, op: &'static str, send: F) -> usize
where
    T: Clone,
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<EntryFailure>, QueueError>>,
{
    for attempt in 0..WRITE_ATTEMPTS {
        match send(pending.clone()).await {
            Ok(failed) => {
                pending = retry_entries(&pending, &failed, op);
                if pending.is_empty() {
                    return 0;
                }
            }
            Err(e) => tracing::warn!(operation = op, error = %e, attempt, "batch call failed"),
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
    }
    pending.len()
}

/// The longest visibility SQS accepts for a message received `age` ago: 12 h from its receive,
/// less a minute for clock and transit. SQS refuses (does not shorten) anything longer.
fn visibility_cap(age: Duration) -> Duration {
    MAX_VISIBILITY.saturating_sub(age + Duration::from_secs(60))
}

/// Logs refused entries and returns those worth sending again (not the sender's fault).
fn retry_entries<T: Clone>(sent: &[T], failed: &[EntryFailure], op: &str) -> Vec<T> {
    let mut again = Vec::new();
    for f in failed {
        tracing::warn!(operation = op, code = %f.code, error = %f.message, sender_fault = f.sender_fault, "batch entry refused");
        if !f.sender_fault
            && let Some(item) = sent.get(f.index)
        {
            again.push(item.clone());
        }
    }
    again
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
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
}
