//! The queue seam: [`Queue`] is everything the pipeline asks of SQS, [`SqsQueue`] implements it
//! with the AWS SDK, and tests implement it in memory. Nothing here knows the pipeline's types:
//! a message arrives as a [`Delivery`] and leaves as a receipt handle.

mod aws;
pub(crate) mod delivery;
#[cfg(test)]
pub(crate) mod memory;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub(crate) use crate::labels::SqsOperation;
pub use aws::SqsQueue;
pub use delivery::Delivery;

/// SQS's limit on the entries of a batch call and the messages of one receive.
pub(crate) const BATCH_LIMIT: usize = 10;

/// Longest a ReceiveMessage may take beyond its long-poll wait before it counts as failed.
pub(crate) const RECEIVE_MARGIN: Duration = Duration::from_secs(5);

/// Longest any other SQS call may take (all its retries included) before it counts as failed,
/// so an endpoint that accepts connections and never answers cannot hang the worker.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The operation timeout of a ReceiveMessage that long-polls for `wait`.
pub(crate) fn receive_timeout(wait: Duration) -> Duration {
    wait + RECEIVE_MARGIN
}

/// What the pipeline needs from a queue. Receipt handles are the only way back to a message,
/// as with SQS: a handle from an earlier receive of the same message may be refused.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// The queue's URL, for spans, logs and dead-letter attributes.
    fn url(&self) -> &str;

    /// Long-polls for up to `max` messages (1–10), hiding them for `visibility`.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Deletes up to 10 messages by receipt handle; returns the entries refused.
    async fn delete_batch(&self, receipts: &[&str]) -> Result<Vec<EntryFailure>, QueueError>;

    /// Sets the visibility of up to 10 messages; returns the entries refused.
    async fn change_visibility_batch(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<EntryFailure>, QueueError>;

    /// Sends one message with string attributes; returns its message id. On a FIFO queue
    /// `group` is required, and the deduplication id makes a repeated send harmless.
    async fn send(
        &self,
        body: &str,
        attributes: &[(&str, String)],
        group: Option<&str>,
        dedup_id: Option<&str>,
    ) -> Result<String, QueueError>;

    /// The queue's attributes (all of them), as plain strings.
    async fn attributes(&self) -> Result<HashMap<String, String>, QueueError>;
}

/// A failed SQS call. The text comes from SQS or the SDK and never contains credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("SQS {operation}: {message}")]
pub struct QueueError {
    pub operation: SqsOperation,
    pub kind: QueueErrorKind,
    pub message: String,
}

impl crate::telemetry::tracing::ErrorType for QueueError {
    fn error_type(&self) -> &'static str {
        self.kind.as_str()
    }
}

impl QueueError {
    /// SQS refused the request itself: sending it again cannot help.
    pub fn sender_fault(&self) -> bool {
        self.kind.sender_fault()
    }
}

/// What kind of failure a [`QueueError`] is: what decides whether to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueErrorKind {
    /// SQS asked to slow down: worth retrying, later.
    Throttled,
    /// The credentials may not do this (or are invalid or expired).
    AccessDenied,
    /// The queue does not exist (or is not visible to this account).
    NotFound,
    /// Any other refusal of the request as malformed or not allowed (too large, an expired
    /// receipt, a bad attribute).
    Rejected,
    /// No answer, a broken connection, a timeout or a server error: worth retrying.
    Transient,
}

impl QueueErrorKind {
    /// The kind as logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueErrorKind::Throttled => "throttled",
            QueueErrorKind::AccessDenied => "access_denied",
            QueueErrorKind::NotFound => "not_found",
            QueueErrorKind::Rejected => "rejected",
            QueueErrorKind::Transient => "transient",
        }
    }

    /// Whether the request itself is at fault, so that sending it again cannot help.
    pub fn sender_fault(self) -> bool {
        matches!(
            self,
            QueueErrorKind::AccessDenied | QueueErrorKind::NotFound | QueueErrorKind::Rejected
        )
    }
}

/// One entry of a batch call that SQS refused, by its position in the request.
#[derive(Debug, Clone)]
pub struct EntryFailure {
    pub index: usize,
    pub code: String,
    pub message: String,
    /// SQS says the request itself was wrong (e.g. an expired receipt): retrying won't help.
    pub sender_fault: bool,
}

/// Where the dead-letter queue's URL came from, said beside it to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqOrigin {
    /// `SQS_DLQ_URL`, which wins.
    Setting,
    /// The `deadLetterTargetArn` of the source queue's RedrivePolicy.
    RedrivePolicy,
}

impl DlqOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            DlqOrigin::Setting => "SQS_DLQ_URL",
            DlqOrigin::RedrivePolicy => "RedrivePolicy target",
        }
    }
}

/// SQS's millisecond timestamp attribute (`SentTimestamp`) as a time.
pub(crate) fn epoch_millis(text: &str) -> Option<SystemTime> {
    text.parse::<u64>()
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}
