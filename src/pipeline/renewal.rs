//! Visibility renewal: while messages are worked on, one task keeps them hidden. Each message
//! is renewed at half the visibility timeout, counted from its receive and then from its last
//! renewal, with `ChangeMessageVisibilityBatch`, ten to a call. Messages falling due close
//! together are renewed together, a little early: they then stay in step, so many slow messages
//! cost one call per ten instead of one each. A message joins the schedule only shortly before
//! its first renewal is due: most are finished by then, and cost a timer, not a place in it.
//!
//! A renewal under way when its message finishes is waited for (answered, or given up after the
//! write timeout) before the message's disposition is written: an answered renewal landing after
//! the acker's visibility change would undo it.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Span;

use crate::health::WorkerStatus;
use crate::sqs::{BATCH_LIMIT, Delivery, EntryFailure, Queue, QueueError};
use crate::telemetry::metrics::metrics;

/// A message may be renewed up to a tenth of a period early, to share a call.
const EARLY_DIVISOR: u32 = 10;
/// A failed renewal is tried again after a quarter of a period, so that one failure does not
/// leave the message to lapse before the next regular renewal.
const RETRY_DIVISOR: u32 = 4;

/// The renewals of every message being worked on. Must be made inside a tokio runtime; stops
/// its task when dropped.
pub(crate) struct Renewals {
    renewer: Arc<Renewer>,
    _stop: DropGuard,
}

/// What the renewal task and the messages' work share.
struct Renewer {
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
    held: HashMap<u64, Held>,
    /// When each waiting message falls due, soonest first.
    due: BTreeSet<(Instant, u64)>,
}

impl Schedule {
    /// Takes a message out, and out of the order it was due in.
    fn forget(&mut self, key: u64) {
        if let Some(h) = self.held.remove(&key)
            && let State::Due(at) = h.state
        {
            self.due.remove(&(at, key));
        }
    }
}

/// A message kept hidden while it is worked on.
struct Held {
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
    /// SQS refused its receipt as the request's fault (the message was deleted or received
    /// again, or reached SQS's 12 h limit): renewing it again cannot succeed.
    Refused,
}

/// One message of a renewal call.
#[derive(Clone)]
struct Renewal {
    key: u64,
    receipt: Arc<str>,
}

impl Renewals {
    /// Starts the renewal task, renewing to `visibility` through `queue`, whose calls should
    /// give up on their own (the pipeline's write queue does, after its write timeout). If the
    /// task ever stopped before the renewals are dropped, `status` fails `/health`: messages
    /// would lapse while they are worked on.
    pub(crate) fn start(
        queue: Arc<dyn Queue>,
        visibility: Duration,
        status: Arc<WorkerStatus>,
    ) -> Renewals {
        let renewer = Arc::new(Renewer {
            queue,
            visibility,
            schedule: Mutex::default(),
            sooner: Notify::new(),
            answered: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(status.supervise(
            "visibility renewal",
            stop.clone(),
            renew(renewer.clone(), stop.clone()),
        ));
        Renewals {
            renewer,
            _stop: stop.drop_guard(),
        }
    }

    /// Runs `work`, keeping `delivery` hidden until it ends and any renewal of it under way
    /// then has been answered. Dropped before that, it waits for nothing. `span` is the
    /// message's.
    pub(crate) async fn hidden_while<F: Future>(
        &self,
        delivery: &Delivery,
        span: &Span,
        work: F,
    ) -> F::Output {
        let renewer = &self.renewer;
        let due = Instant::from_std(delivery.received_at) + renewer.period();
        // Most messages finish long before their first renewal: only a slow one joins the
        // schedule, early enough to be there when any due just before it is renewed.
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep_until(due - 2 * renewer.early()) => {}
        }
        let hold = Hold {
            renewer,
            key: renewer.add(delivery, span, due),
        };
        let out = work.await;
        hold.end().await;
        out
    }
}

impl Renewer {
    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn period(&self) -> Duration {
        self.visibility / 2
    }

    /// How far ahead of its time a message may be renewed to share a call.
    fn early(&self) -> Duration {
        self.period() / EARLY_DIVISOR
    }

    fn add(&self, delivery: &Delivery, span: &Span, at: Instant) -> u64 {
        let mut s = self.schedule();
        let key = s.next_key;
        s.next_key += 1;
        let sooner = s.due.first().is_none_or(|(first, _)| at < *first);
        s.due.insert((at, key));
        s.held.insert(
            key,
            Held {
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

    /// Takes the message out of the schedule, unless a call renewing it is under way: in one
    /// lock, so that the renewal task cannot take it for a call in between.
    fn leave(&self, key: u64) -> bool {
        let mut s = self.schedule();
        if s.held.get(&key).is_some_and(|h| h.state == State::Renewing) {
            return false;
        }
        s.forget(key);
        true
    }

    /// Takes out every message due by `by`, marked as being renewed.
    fn take_due(&self, by: Instant) -> Vec<Renewal> {
        let mut s = self.schedule();
        let mut taken = Vec::new();
        while let Some(&(at, key)) = s.due.first()
            && at <= by
        {
            s.due.pop_first();
            if let Some(h) = s.held.get_mut(&key) {
                h.state = State::Renewing;
                taken.push(Renewal {
                    key,
                    receipt: h.receipt.clone(),
                });
            }
        }
        taken
    }

    /// Gives each message of an answered call its new state (by its index in the call), then
    /// wakes the work waiting for the answer. Returns the messages still held, by index, with
    /// their spans.
    fn answer(&self, batch: &[Renewal], state: impl Fn(usize) -> State) -> Vec<(usize, Span)> {
        let mut still_held = Vec::with_capacity(batch.len());
        {
            let mut s = self.schedule();
            let Schedule { held, due, .. } = &mut *s;
            for (index, r) in batch.iter().enumerate() {
                // Gone: its work was cut short while the call was under way.
                let Some(h) = held.get_mut(&r.key) else {
                    continue;
                };
                h.state = state(index);
                if let State::Due(at) = h.state {
                    due.insert((at, r.key));
                }
                still_held.push((index, h.span.clone()));
            }
        }
        self.answered.notify_waiters();
        still_held
    }
}

/// A slow message's place in the schedule; dropping it (the work was cut short) takes the
/// message out without waiting.
struct Hold<'a> {
    renewer: &'a Renewer,
    key: u64,
}

impl Hold<'_> {
    /// Waits until no renewal of the message is under way, and takes it out.
    async fn end(self) {
        loop {
            let answered = self.renewer.answered.notified();
            if self.renewer.leave(self.key) {
                return;
            }
            answered.await;
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.renewer.schedule().forget(self.key);
    }
}

/// The renewal task: sleeps until the soonest message is due, then renews it with every other
/// due within a tenth of a period, each ten in a call of their own.
async fn renew(renewer: Arc<Renewer>, stop: CancellationToken) {
    let early = renewer.early();
    let mut calls = JoinSet::new();
    loop {
        let sooner = renewer.sooner.notified();
        let next = renewer.schedule().due.first().map(|(at, _)| *at);
        let wake = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sooner => continue,
            Some(joined) = calls.join_next() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "a visibility renewal call failed to finish");
                }
                continue;
            }
            _ = wake => {}
        }
        let due = renewer.take_due(Instant::now() + early);
        for batch in due.chunks(BATCH_LIMIT) {
            calls.spawn(renew_batch(renewer.clone(), batch.to_vec()));
        }
    }
}

/// What became of one message's renewal.
enum Renewed<'a> {
    Ok,
    /// Refused as the request's fault: not tried again.
    Refused(&'a EntryFailure),
    /// Refused as SQS's own failure: tried again soon.
    Failed(&'a EntryFailure),
    /// The whole call failed: tried again soon.
    CallFailed(&'a QueueError),
}

/// One `ChangeMessageVisibilityBatch`; each message is then due again a period after it was
/// sent, or sooner when it failed, or never when SQS refused its receipt.
async fn renew_batch(renewer: Arc<Renewer>, batch: Vec<Renewal>) {
    let sent = Instant::now();
    let entries: Vec<(&str, Duration)> = batch
        .iter()
        .map(|r| (&*r.receipt, renewer.visibility))
        .collect();
    let mut unanswered = Unanswered {
        renewer: &renewer,
        batch: &batch,
        armed: true,
    };
    let result = renewer.queue.change_visibility_batch(&entries).await;
    unanswered.armed = false;
    let period = renewer.period();
    // Soon, and before the last renewal runs out even when the call took long to fail.
    let retry_at = (Instant::now() + period / RETRY_DIVISOR).min(sent + period);
    let renewed = |index: usize| match &result {
        Err(e) => Renewed::CallFailed(e),
        Ok(refused) => match refused.iter().find(|f| f.index == index) {
            None => Renewed::Ok,
            Some(f) if f.sender_fault => Renewed::Refused(f),
            Some(f) => Renewed::Failed(f),
        },
    };
    let still_held = renewer.answer(&batch, |index| match renewed(index) {
        Renewed::Ok => State::Due(sent + period),
        Renewed::Refused(_) => State::Refused,
        Renewed::Failed(_) | Renewed::CallFailed(_) => State::Due(retry_at),
    });
    for (index, span) in still_held {
        let renewed = renewed(index);
        let _in = span.enter();
        metrics().visibility_extended(matches!(renewed, Renewed::Ok));
        match renewed {
            Renewed::Ok => tracing::debug!("visibility extended"),
            Renewed::Refused(f) => tracing::warn!(
                code = %f.code,
                error = %f.message,
                "visibility extension refused, not tried again: the message may be delivered again while it is worked on"
            ),
            Renewed::Failed(f) => tracing::warn!(
                code = %f.code,
                error = %f.message,
                "visibility extension failed"
            ),
            Renewed::CallFailed(e) => {
                tracing::warn!(error = %e, "visibility extension failed");
            }
        }
    }
}

/// A renewal call that never returned (its task panicked or was aborted): its messages go back
/// in the schedule, so that their work does not wait for an answer forever.
struct Unanswered<'a> {
    renewer: &'a Renewer,
    batch: &'a [Renewal],
    armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            let retry_at = Instant::now() + self.renewer.period() / RETRY_DIVISOR;
            self.renewer.answer(self.batch, |_| State::Due(retry_at));
        }
    }
}
