//! [`MemoryQueue`]: the [`Queue`] seam in memory, for in-process tests of the pipeline. It keeps
//! the SQS rules the pipeline relies on (which the conformance suite checks moto and the fast
//! endpoint for): visibility and redelivery, receive counts, a fresh receipt handle per
//! receive, per-entry batch failures, FIFO groups blocked while a message of theirs is in
//! flight, and long polls woken by a send. Time is tokio's, so tests may pause it. Every call
//! is recorded, and failures can be scripted per operation.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Delivery, EntryFailure, Queue, QueueError, QueueErrorKind, SqsOperation};

/// A queue in memory. Its URL ends in `.fifo` for a FIFO queue, as on SQS.
#[derive(Debug)]
pub(crate) struct MemoryQueue {
    url: String,
    state: Mutex<State>,
    sent: Notify,
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<Stored>,
    next_id: u64,
    calls: Vec<Call>,
    /// Whole calls to fail, per operation, in order.
    failures: HashMap<SqsOperation, VecDeque<QueueErrorKind>>,
    /// Batch entries to refuse as SQS's own (transient) failure, per operation: how many.
    refusals: HashMap<SqsOperation, usize>,
    /// How long each call of an operation takes to be answered.
    delays: HashMap<SqsOperation, Duration>,
}

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: String,
    attributes: HashMap<String, String>,
    group: Option<String>,
    sequence: u128,
    sent_at: SystemTime,
    visible_at: Instant,
    /// The handle of the latest receive; only it may delete or change the message.
    receipt: Option<String>,
    receive_count: u32,
}

/// One call the queue answered (or failed).
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub operation: SqsOperation,
    /// Entries of a batch call, messages asked for by a receive, 1 otherwise.
    pub entries: usize,
    pub at: Instant,
}

/// A message sent to the queue, as a test reads it back.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub body: String,
    pub attributes: HashMap<String, String>,
}

impl MemoryQueue {
    pub(crate) fn new(url: &str) -> MemoryQueue {
        MemoryQueue {
            url: url.to_string(),
            state: Mutex::default(),
            sent: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fifo(&self) -> bool {
        self.url.ends_with(".fifo")
    }

    /// Sends a message as a producer would; returns its id.
    pub(crate) fn push(&self, body: &str, group: Option<&str>) -> String {
        self.store(body, HashMap::new(), group)
    }

    fn store(
        &self,
        body: &str,
        attributes: HashMap<String, String>,
        group: Option<&str>,
    ) -> String {
        let mut s = self.state();
        s.next_id += 1;
        let id = format!("m-{}", s.next_id);
        let sequence = u128::from(s.next_id);
        s.messages.push(Stored {
            id: id.clone(),
            body: body.to_string(),
            attributes,
            group: group.map(str::to_string),
            sequence,
            sent_at: SystemTime::now(),
            visible_at: Instant::now(),
            receipt: None,
            receive_count: 0,
        });
        drop(s);
        self.sent.notify_waiters();
        id
    }

    /// Fails the next calls of `operation`, one per kind given, in order.
    pub(crate) fn fail(&self, operation: SqsOperation, kinds: &[QueueErrorKind]) {
        self.state()
            .failures
            .entry(operation)
            .or_default()
            .extend(kinds);
    }

    /// Refuses the next `n` entries of `operation`'s batches as SQS's own failure (not the
    /// sender's), the way SQS reports a partial batch.
    pub(crate) fn refuse_entries(&self, operation: SqsOperation, n: usize) {
        *self.state().refusals.entry(operation).or_default() += n;
    }

    /// Answers each later call of `operation` only after `delay` (its effect lands then).
    pub(crate) fn delay(&self, operation: SqsOperation, delay: Duration) {
        self.state().delays.insert(operation, delay);
    }

    /// Every call so far, in order.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls of one operation.
    pub(crate) fn calls_of(&self, operation: SqsOperation) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.operation == operation)
            .collect()
    }

    /// The messages still on the queue (visible or not), oldest first.
    pub(crate) fn messages(&self) -> Vec<Sent> {
        self.state()
            .messages
            .iter()
            .map(|m| Sent {
                body: m.body.clone(),
                attributes: m.attributes.clone(),
            })
            .collect()
    }

    /// How many messages are on the queue and visible now.
    pub(crate) fn visible(&self) -> usize {
        let now = Instant::now();
        self.state()
            .messages
            .iter()
            .filter(|m| m.visible_at <= now)
            .count()
    }

    /// How many messages are on the queue, visible or not.
    pub(crate) fn len(&self) -> usize {
        self.state().messages.len()
    }

    /// The receive count of the message with `id`, if it is still on the queue.
    pub(crate) fn receive_count(&self, id: &str) -> Option<u32> {
        self.state()
            .messages
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.receive_count)
    }

    /// When the message with `id` becomes visible again, if it is still on the queue.
    pub(crate) fn visible_at(&self, id: &str) -> Option<Instant> {
        self.state()
            .messages
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.visible_at)
    }

    /// Records a call and applies its scripted failure.
    async fn call(&self, operation: SqsOperation, entries: usize) -> Result<(), QueueError> {
        let (failure, delay) = {
            let mut s = self.state();
            s.calls.push(Call {
                operation,
                entries,
                at: Instant::now(),
            });
            let delay = s.delays.get(&operation).copied();
            (
                s.failures.get_mut(&operation).and_then(VecDeque::pop_front),
                delay,
            )
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match failure {
            Some(kind) => Err(QueueError {
                operation,
                kind,
                message: format!("scripted {} failure", kind.as_str()),
            }),
            None => Ok(()),
        }
    }

    /// Takes up to `max` visible messages; on a FIFO queue, none of a group with a message in
    /// flight, and a group's messages in order.
    fn take(&self, max: usize, visibility: Duration) -> Vec<Delivery> {
        let now = Instant::now();
        let fifo = self.fifo();
        let mut s = self.state();
        let mut blocked: Vec<Option<String>> = Vec::new();
        let mut out = Vec::new();
        for m in s.messages.iter_mut() {
            if out.len() == max {
                break;
            }
            let in_flight = m.visible_at > now;
            if fifo && blocked.contains(&m.group) {
                continue;
            }
            if in_flight {
                if fifo {
                    blocked.push(m.group.clone());
                }
                continue;
            }
            m.receive_count += 1;
            m.visible_at = now + visibility;
            let receipt = format!("{}#{}", m.id, m.receive_count);
            m.receipt = Some(receipt.clone());
            out.push(Delivery {
                message_id: m.id.clone(),
                receipt_handle: receipt,
                body: m.body.clone(),
                receive_count: m.receive_count,
                group_id: m.group.clone(),
                sequence_number: fifo.then_some(m.sequence),
                sent_at: Some(m.sent_at),
                attributes: m.attributes.clone(),
                // The tokio clock's, so that it stands still in a test that pauses it.
                received_at: now.into_std(),
                received_in: None,
            });
        }
        out
    }

    /// Applies `change` (to the message's position and the entry's index) for each entry whose
    /// receipt is current; refuses the others (and as many as scripted) the way SQS does.
    fn per_entry(
        &self,
        operation: SqsOperation,
        receipts: &[&str],
        mut change: impl FnMut(&mut Vec<Stored>, usize, usize),
    ) -> Vec<EntryFailure> {
        let mut s = self.state();
        let mut failed = Vec::new();
        for (index, receipt) in receipts.iter().enumerate() {
            let refuse = s.refusals.get_mut(&operation).filter(|n| **n > 0);
            if let Some(n) = refuse {
                *n -= 1;
                failed.push(EntryFailure {
                    index,
                    code: "InternalError".into(),
                    message: "scripted entry failure".into(),
                    sender_fault: false,
                });
                continue;
            }
            match s
                .messages
                .iter()
                .position(|m| m.receipt.as_deref() == Some(*receipt))
            {
                Some(i) => change(&mut s.messages, i, index),
                None => failed.push(EntryFailure {
                    index,
                    code: "ReceiptHandleIsInvalid".into(),
                    message: format!("receipt {receipt} is not current"),
                    sender_fault: true,
                }),
            }
        }
        failed
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn url(&self) -> &str {
        &self.url
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let max = max.clamp(1, super::BATCH_LIMIT);
        self.call(SqsOperation::ReceiveMessage, max).await?;
        let until = Instant::now() + wait;
        loop {
            let sent = self.sent.notified();
            let got = self.take(max, visibility);
            if !got.is_empty() || Instant::now() >= until {
                return Ok(got);
            }
            // Woken by a send, by the next message becoming visible, or at the end of the wait.
            let next_visible = self
                .state()
                .messages
                .iter()
                .map(|m| m.visible_at)
                .min()
                .filter(|at| *at > Instant::now())
                .map_or(until, |at| at.min(until));
            tokio::select! {
                _ = sent => {}
                _ = tokio::time::sleep_until(next_visible) => {}
            }
        }
    }

    async fn delete_batch(&self, receipts: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        self.call(SqsOperation::DeleteMessageBatch, receipts.len())
            .await?;
        let mut deleted = Vec::new();
        let failed = self.per_entry(SqsOperation::DeleteMessageBatch, receipts, |_, i, _| {
            deleted.push(i);
        });
        let mut s = self.state();
        deleted.sort_unstable();
        for i in deleted.into_iter().rev() {
            s.messages.remove(i);
        }
        Ok(failed)
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        self.call(SqsOperation::ChangeMessageVisibilityBatch, entries.len())
            .await?;
        let receipts: Vec<&str> = entries.iter().map(|(r, _)| *r).collect();
        let now = Instant::now();
        Ok(self.per_entry(
            SqsOperation::ChangeMessageVisibilityBatch,
            &receipts,
            |messages, i, entry| messages[i].visible_at = now + entries[entry].1,
        ))
    }

    async fn send(
        &self,
        body: &str,
        attributes: &[(&str, String)],
        group: Option<&str>,
        _dedup_id: Option<&str>,
    ) -> Result<String, QueueError> {
        self.call(SqsOperation::SendMessage, 1).await?;
        let attributes = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Ok(self.store(body, attributes, group.filter(|_| self.fifo())))
    }

    async fn attributes(&self) -> Result<HashMap<String, String>, QueueError> {
        self.call(SqsOperation::GetQueueAttributes, 1).await?;
        Ok(HashMap::from([(
            "ApproximateNumberOfMessages".to_string(),
            self.visible().to_string(),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_refused_entry_does_not_shift_the_others_visibility() {
        let q = MemoryQueue::new("memory://q");
        q.push("a", None);
        let got = q
            .receive(1, Duration::ZERO, Duration::from_secs(30))
            .await
            .expect("receive");
        let now = Instant::now();
        let failed = q
            .change_visibility_batch(&[
                ("stale", Duration::from_secs(5)),
                (&got[0].receipt_handle, Duration::from_secs(90)),
            ])
            .await
            .expect("call");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].index, 0);
        assert!(failed[0].sender_fault);
        assert_eq!(q.visible_at("m-1"), Some(now + Duration::from_secs(90)));
    }
}
