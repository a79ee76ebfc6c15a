//! [`Disposition`]: what should happen to a message, decided by the worker and carried out
//! by the acker. A workflow never writes to SQS itself, which keeps delivery rules testable
//! and SQS traffic batched.

use std::time::Duration;

/// How a delivery ended: a label of logs and metrics, so it lives with them.
pub(crate) use crate::labels::Outcome;
use crate::labels::{AppliedSteps, DeadLetterReason};

/// Why a message is deleted: the only two ways a delivery may end in a plain delete, so a
/// retry or a dead letter cannot be spelled as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Both steps applied (or were already applied).
    Applied,
    /// The envelope id was completed recently: nobody was called.
    Duplicate,
}

/// What the acker does with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Delete it: its effects are applied.
    Delete(Deleted),
    /// Keep it, invisible for this long, so the next delivery comes later.
    RetryLater { after: Duration, error: String },
    /// Send the body to the DLQ with the reason, then delete it. `applied` are the steps
    /// whose effect is in place all the same (a half-applied event when any).
    DeadLetter {
        class: DeadLetterReason,
        error: String,
        applied: AppliedSteps,
    },
    /// Make it visible again at once, for another consumer.
    Release,
}

impl Disposition {
    /// How the delivery ended, for logs and metrics.
    pub fn outcome(&self) -> Outcome {
        match self {
            Disposition::Delete(Deleted::Applied) => Outcome::Success,
            Disposition::Delete(Deleted::Duplicate) => Outcome::Duplicate,
            Disposition::RetryLater { .. } => Outcome::RetryLater,
            Disposition::DeadLetter { .. } => Outcome::DeadLettered,
            Disposition::Release => Outcome::Released,
        }
    }

    /// Whether the message is out of the way, so the next one of its FIFO group may run.
    pub fn lets_group_continue(&self) -> bool {
        matches!(
            self,
            Disposition::Delete(_) | Disposition::DeadLetter { .. }
        )
    }
}
