//! Visibility renewal: while messages are worked on, one task keeps them hidden. Each message
//! is renewed at half the visibility timeout, counted from its receive and then from its last
//! renewal, with `ChangeMessageVisibilityBatch`, ten to a call. Messages falling due close
//! together are renewed together, a little early: they then stay in step, so many slow messages
//! cost one call per ten instead of one each. A message joins the schedule only shortly before
//! its first renewal is due: most are finished by then, and cost a timer, not a place in it.
//!
//! A renewal still under way when its message finishes is waited for before the message's
//! disposition is written: landing after the acker's visibility change, it would undo it.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Span;

use crate::sqs::{BATCH_LIMIT, Delivery, EntryFailure, Queue, QueueError};
use crate::telemetry::metrics::metrics;

/// How far ahead of its time a message may be renewed to share a call: a tenth of the period.
const EARLY_SHARE: u32 = 10;
/// A failed renewal is tried again after a quarter of the period, so that one failure does
/// not leave the message to lapse before the next regular renewal.
const RETRY_SHARE: u32 = 4;

/// The renewals of every message being worked on. Stops its task when dropped.
pub(crate) struct Renewals {
    inner: Arc<Inner>,
    _stop: DropGuard,
}

struct Inner {
    queue: Arc<dyn Queue>,
    visibility: Duration,
    schedule: Mutex<Schedule>,
    /// Wakes the renewal task when a message falls due before every other.
    sooner: Notify,
    /// Wakes finished messages waiting for their renewal call to end.
    answered: Notify,
}

#[derive(Default)]
struct Schedule {
    next_key: u64,
    messages: HashMap<u64, Watched>,
    /// When each waiting message falls due, soonest first.
    due: BTreeSet<(Instant, u64)>,
}

struct Watched {
    receipt: Arc<str>,
    /// The message's span: its renewal lines carry its fields.
    span: Span,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Due(Instant),
    /// A call renewing it is under way.
    Renewing,
    /// SQS refused its receipt (the message was deleted or received again): renewing it again
    /// cannot succeed.
    Lost,
}

impl Renewals {
    /// Starts the renewal task, renewing to `visibility` through `queue`, whose calls should
    /// give up on their own (the pipeline's write queue does, after its write timeout).
    pub(crate) fn start(queue: Arc<dyn Queue>, visibility: Duration) -> Renewals {
        let inner = Arc::new(Inner {
            queue,
            visibility,
            schedule: Mutex::default(),
            sooner: Notify::new(),
            answered: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(renew(inner.clone(), stop.clone()));
        Renewals {
            inner,
            _stop: stop.drop_guard(),
        }
    }

    /// Runs `work`, keeping `delivery` hidden until it ends and any renewal of it under way
    /// then has been answered. `span` is the message's.
    pub(crate) async fn hidden_while<F: Future>(
        &self,
        delivery: &Delivery,
        span: &Span,
        work: F,
    ) -> F::Output {
        let due = Instant::from_std(delivery.received_at) + self.inner.period();
        // Most messages finish long before their first renewal: only a slow one joins the
        // schedule, early enough to share the call of any due just before it.
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep_until(due - self.inner.early()) => {}
        }
        let watch = Watch {
            inner: &self.inner,
            key: self.inner.add(delivery, span, due),
        };
        let out = work.await;
        watch.end().await;
        out
    }
}

impl Inner {
    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn period(&self) -> Duration {
        self.visibility / 2
    }

    /// How far ahead of its time a message may be renewed to share a call.
    fn early(&self) -> Duration {
        self.period() / EARLY_SHARE
    }

    fn add(&self, delivery: &Delivery, span: &Span, at: Instant) -> u64 {
        let mut s = self.schedule();
        let key = s.next_key;
        s.next_key += 1;
        let sooner = s.due.first().is_none_or(|(first, _)| at < *first);
        s.due.insert((at, key));
        s.messages.insert(
            key,
            Watched {
                receipt: delivery.receipt_handle.as_str().into(),
                span: span.clone(),
                state: State::Due(at),
            },
        );
        drop(s);
        if sooner {
            self.sooner.notify_one();
        }
        key
    }

    /// Takes every message due by `by`, marked as being renewed.
    fn take_due(&self, by: Instant) -> Vec<(u64, Arc<str>)> {
        let mut s = self.schedule();
        let mut taken = Vec::new();
        while let Some(&(at, key)) = s.due.first()
            && at <= by
        {
            s.due.pop_first();
            if let Some(m) = s.messages.get_mut(&key) {
                m.state = State::Renewing;
                taken.push((key, m.receipt.clone()));
            }
        }
        taken
    }
}

/// One message's place in the schedule; dropping it (the work was cut short) takes the
/// message out without waiting.
struct Watch<'a> {
    inner: &'a Inner,
    key: u64,
}

impl Watch<'_> {
    /// Waits until no renewal of the message is under way; dropping `self` then takes it out.
    async fn end(self) {
        loop {
            let answered = self.inner.answered.notified();
            let renewing = self
                .inner
                .schedule()
                .messages
                .get(&self.key)
                .is_some_and(|m| m.state == State::Renewing);
            if !renewing {
                return;
            }
            answered.await;
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut s = self.inner.schedule();
        if let Some(m) = s.messages.remove(&self.key)
            && let State::Due(at) = m.state
        {
            s.due.remove(&(at, self.key));
        }
    }
}

/// The renewal task: sleeps until the soonest message is due, then renews it with every other
/// due within a tenth of a period, each ten in a call of their own.
async fn renew(inner: Arc<Inner>, stop: CancellationToken) {
    let early = inner.early();
    let mut calls = JoinSet::new();
    loop {
        let sooner = inner.sooner.notified();
        let next = inner.schedule().due.first().map(|(at, _)| *at);
        let wake = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sooner => continue,
            Some(_) = calls.join_next() => continue,
            _ = wake => {}
        }
        let due = inner.take_due(Instant::now() + early);
        for batch in due.chunks(BATCH_LIMIT) {
            calls.spawn(renew_batch(inner.clone(), batch.to_vec()));
        }
    }
}

/// What became of one message's renewal.
enum Renewed<'a> {
    Ok,
    Refused(&'a EntryFailure),
    Failed(&'a QueueError),
}

/// One `ChangeMessageVisibilityBatch`; each message is then due again a period after it was
/// sent, or sooner when it failed, or never when SQS refused its receipt.
async fn renew_batch(inner: Arc<Inner>, batch: Vec<(u64, Arc<str>)>) {
    let sent = Instant::now();
    let entries: Vec<(&str, Duration)> = batch
        .iter()
        .map(|(_, receipt)| (&**receipt, inner.visibility))
        .collect();
    let result = inner.queue.change_visibility_batch(&entries).await;
    let period = inner.period();
    let retry_at = Instant::now() + period / RETRY_SHARE;
    let mut lines = Vec::with_capacity(batch.len());
    {
        let mut s = inner.schedule();
        let Schedule { messages, due, .. } = &mut *s;
        for (index, (key, _)) in batch.iter().enumerate() {
            let renewed = match &result {
                Err(e) => Renewed::Failed(e),
                Ok(refused) => refused
                    .iter()
                    .find(|f| f.index == index)
                    .map_or(Renewed::Ok, Renewed::Refused),
            };
            let state = match renewed {
                Renewed::Ok => State::Due(sent + period),
                Renewed::Refused(f) if f.sender_fault => State::Lost,
                Renewed::Refused(_) | Renewed::Failed(_) => State::Due(retry_at),
            };
            // A message that finished while its call was under way was cut short.
            let Some(m) = messages.get_mut(key) else {
                continue;
            };
            m.state = state;
            if let State::Due(at) = state {
                due.insert((at, *key));
            }
            lines.push((m.span.clone(), renewed));
        }
    }
    inner.answered.notify_waiters();
    for (span, renewed) in lines {
        let _in = span.enter();
        metrics().visibility_extended(matches!(renewed, Renewed::Ok));
        match renewed {
            Renewed::Ok => tracing::debug!("visibility extended"),
            Renewed::Refused(f) if f.sender_fault => tracing::warn!(
                code = %f.code,
                error = %f.message,
                "visibility extension refused: the receipt is no longer current, so the message may be delivered again while it is worked on"
            ),
            Renewed::Refused(f) => tracing::warn!(
                code = %f.code,
                error = %f.message,
                "visibility extension failed"
            ),
            Renewed::Failed(e) => tracing::warn!(error = %e, "visibility extension failed"),
        }
    }
}
