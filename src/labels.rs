//! The bounded vocabularies that logs, metrics, spans, the DLQ attributes and the debug
//! service share. One enum per label, spelled once in its `as_str`, with `ALL` so metrics
//! export every value at zero and dashboards, alerts and tests can list them. A leaf: it
//! imports nothing from the crate.

use std::fmt;

/// How a delivery ended, for logs and metrics. A bounded set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Both steps applied (or were already applied): deleted.
    Success,
    /// The envelope id was completed recently: deleted without calling anyone.
    Duplicate,
    /// Retries spent on a retryable failure: left for a later redelivery.
    RetryLater,
    /// Terminal: moved to the dead-letter queue.
    DeadLettered,
    /// Handed back unfinished on shutdown (or held back behind its FIFO group).
    Released,
}

impl Outcome {
    /// The outcome as logs and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Duplicate => "duplicate",
            Outcome::RetryLater => "retry_later",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Released => "released",
        }
    }
}

impl Outcome {
    /// Every outcome, in the order dashboards list them.
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Duplicate,
        Outcome::RetryLater,
        Outcome::DeadLettered,
        Outcome::Released,
    ];
}

/// An SQS call the worker makes: the `operation` label of the SQS metrics and the name of
/// its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqsOperation {
    ReceiveMessage,
    DeleteMessageBatch,
    ChangeMessageVisibilityBatch,
    SendMessage,
    GetQueueAttributes,
    GetQueueUrl,
}

impl SqsOperation {
    /// Every operation, each exported at zero from the start.
    pub const ALL: [SqsOperation; 6] = [
        SqsOperation::ReceiveMessage,
        SqsOperation::DeleteMessageBatch,
        SqsOperation::ChangeMessageVisibilityBatch,
        SqsOperation::SendMessage,
        SqsOperation::GetQueueAttributes,
        SqsOperation::GetQueueUrl,
    ];

    /// The API's name of the call.
    pub fn as_str(self) -> &'static str {
        match self {
            SqsOperation::ReceiveMessage => "ReceiveMessage",
            SqsOperation::DeleteMessageBatch => "DeleteMessageBatch",
            SqsOperation::ChangeMessageVisibilityBatch => "ChangeMessageVisibilityBatch",
            SqsOperation::SendMessage => "SendMessage",
            SqsOperation::GetQueueAttributes => "GetQueueAttributes",
            SqsOperation::GetQueueUrl => "GetQueueUrl",
        }
    }

    /// The messaging conventions' `messaging.operation.type`: `receive`, `settle`, `send`,
    /// or none for the calls about the queue rather than its messages.
    pub fn operation_type(self) -> Option<&'static str> {
        match self {
            SqsOperation::ReceiveMessage => Some("receive"),
            SqsOperation::DeleteMessageBatch | SqsOperation::ChangeMessageVisibilityBatch => {
                Some("settle")
            }
            SqsOperation::SendMessage => Some("send"),
            SqsOperation::GetQueueAttributes | SqsOperation::GetQueueUrl => None,
        }
    }
}

impl fmt::Display for SqsOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message went to the dead-letter queue: the `reason` label and the DLQ's
/// `ReasonClass` attribute. The full error text travels beside it, never as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The body is not JSON, or not a JSON object.
    MalformedJson,
    /// The body is larger than the worker accepts.
    TooLarge,
    /// The event type is not one of the three.
    UnknownType,
    /// A field is missing or has a wrong type or value.
    InvalidField,
    /// A peer refused the change for good.
    DownstreamRejected,
    /// A payment event without the inventory fields, and no reservation to read them from.
    MissingInventoryFields,
}

impl DeadLetterReason {
    /// Every reason, each exported at zero from the start.
    pub const ALL: [DeadLetterReason; 6] = [
        DeadLetterReason::MalformedJson,
        DeadLetterReason::TooLarge,
        DeadLetterReason::UnknownType,
        DeadLetterReason::InvalidField,
        DeadLetterReason::DownstreamRejected,
        DeadLetterReason::MissingInventoryFields,
    ];

    /// The reason as the label, the DLQ attribute and the logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::MalformedJson => "malformed_json",
            DeadLetterReason::TooLarge => "too_large",
            DeadLetterReason::UnknownType => "unknown_type",
            DeadLetterReason::InvalidField => "invalid_field",
            DeadLetterReason::DownstreamRejected => "downstream_rejected",
            DeadLetterReason::MissingInventoryFields => "missing_inventory_fields",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which downstream call of a workflow: the `step` label (the workflow's `Step` carries the
/// call's arguments besides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepName {
    /// gRPC `ReleaseHold`.
    ReleaseHold,
    /// gRPC `CommitReservation`.
    CommitReservation,
    /// REST PATCH of the reservation's status.
    StatusUpdate,
    /// REST GET of the reservation.
    FetchReservation,
}

impl StepName {
    /// Every step, each exported at zero from the start.
    pub const ALL: [StepName; 4] = [
        StepName::ReleaseHold,
        StepName::CommitReservation,
        StepName::StatusUpdate,
        StepName::FetchReservation,
    ];

    /// The step as logs, metrics and the debug service spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::ReleaseHold => "release_hold",
            StepName::CommitReservation => "commit_reservation",
            StepName::StatusUpdate => "status_update",
            StepName::FetchReservation => "fetch_reservation",
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The workflow steps whose effect was in place when a delivery ended, in order. On a dead
/// letter, anything here is a half-applied event: for `payment.approved` with
/// `status_update`, a reservation marked CONFIRMED whose seats were never committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedSteps(Vec<StepName>);

impl AppliedSteps {
    /// The `AppliedSteps` text when no step applied. SQS refuses an empty attribute value.
    pub const NONE: &'static str = "none";

    pub fn new(steps: impl IntoIterator<Item = StepName>) -> AppliedSteps {
        AppliedSteps(steps.into_iter().collect())
    }

    /// Whether no step applied (nothing to repair by hand).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last step that applied: the `applied_step` label of a half-applied event.
    pub fn last(&self) -> Option<StepName> {
        self.0.last().copied()
    }
}

/// The steps comma-separated (`status_update`), or [`AppliedSteps::NONE`]: the dead letter's
/// `AppliedSteps` attribute and the `applied_steps` log field.
impl fmt::Display for AppliedSteps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(Self::NONE);
        }
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

/// A kind of write that settles a message on SQS: the `write` label of failed settling
/// calls, and the parts of the health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleWrite {
    /// Deleting finished messages.
    Delete,
    /// Hiding messages for a later retry, or releasing them.
    ChangeVisibility,
    /// Sending terminal messages to the dead-letter queue.
    DeadLetter,
}

impl SettleWrite {
    /// Every kind, in a fixed order (their index in the health state).
    pub const ALL: [SettleWrite; 3] = [
        SettleWrite::Delete,
        SettleWrite::ChangeVisibility,
        SettleWrite::DeadLetter,
    ];

    /// The label of metrics and the health body.
    pub fn as_str(self) -> &'static str {
        match self {
            SettleWrite::Delete => "delete",
            SettleWrite::ChangeVisibility => "change_visibility",
            SettleWrite::DeadLetter => "dead_letter",
        }
    }

    /// The SQS operation that makes the write.
    pub fn operation(self) -> SqsOperation {
        match self {
            SettleWrite::Delete => SqsOperation::DeleteMessageBatch,
            SettleWrite::ChangeVisibility => SqsOperation::ChangeMessageVisibilityBatch,
            SettleWrite::DeadLetter => SqsOperation::SendMessage,
        }
    }

    /// Its position in [`SettleWrite::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dashboards, alerts and the DLQ tooling match on these spellings: changing one is a
    /// breaking change, not a refactor.
    #[test]
    fn the_spellings_are_the_published_ones() {
        assert_eq!(
            Outcome::ALL.map(Outcome::as_str),
            [
                "success",
                "duplicate",
                "retry_later",
                "dead_lettered",
                "released"
            ]
        );
        assert_eq!(
            DeadLetterReason::ALL.map(DeadLetterReason::as_str),
            [
                "malformed_json",
                "too_large",
                "unknown_type",
                "invalid_field",
                "downstream_rejected",
                "missing_inventory_fields"
            ]
        );
        assert_eq!(
            StepName::ALL.map(StepName::as_str),
            [
                "release_hold",
                "commit_reservation",
                "status_update",
                "fetch_reservation"
            ]
        );
        assert_eq!(
            SettleWrite::ALL.map(SettleWrite::as_str),
            ["delete", "change_visibility", "dead_letter"]
        );
    }

    #[test]
    fn each_list_holds_every_value_once_in_index_order() {
        for (i, w) in SettleWrite::ALL.into_iter().enumerate() {
            assert_eq!(w.index(), i);
        }
        let ops: std::collections::HashSet<_> = SqsOperation::ALL.into_iter().collect();
        assert_eq!(ops.len(), SqsOperation::ALL.len());
    }
}
