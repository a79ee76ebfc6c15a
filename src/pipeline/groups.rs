//! FIFO group order inside one process, whatever the queue hands out. SQS FIFO holds a group
//! while one of its messages is in flight, but that guarantee ends when a visibility lapses (a
//! heartbeat that cannot renew while a peer is slow), and some emulators never give it at all.
//! So the process keeps its own order per group, across receive batches:
//!
//! * a line: a message starts only when the one dispatched before it in its group has
//!   finished, so one group never runs two messages (or two copies of one) at once;
//! * the messages put back for a later retry, by their place in the group (`SequenceNumber`,
//!   or receive order where the queue gives none): a later message of the group is put back
//!   with them, never run ahead of them nor released to be handed out again at once.
//!
//! When it comes back depends on the queue. A strict one (SQS) delivers nothing of a group
//! while one of its messages is hidden, so the later message is hidden to come back just before
//! the earlier one (a hold past it would keep the group locked and delay the earlier message;
//! moto also needs it cleared first). A lax one (some emulators) hands out a later message
//! while an earlier one is hidden: once that is seen, later messages are hidden until after the
//! earlier one is back.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Disposition;

/// How much before (strict queue) or after (lax queue) the earlier messages of its group a held
/// message comes back (SQS counts visibility in whole seconds).
const HOLD_MARGIN: Duration = Duration::from_secs(1);

/// How long past its return a put-back message still holds its group back here: it may have
/// gone to another consumer (or to the DLQ), and its group must not wait for it forever.
const HOLD_GRACE: Duration = Duration::from_secs(30);

/// The lines and the put-back messages of every FIFO group this process has seen recently.
#[derive(Debug, Default)]
pub(crate) struct FifoGroups {
    inner: Mutex<Groups>,
}

#[derive(Debug, Default)]
struct Groups {
    /// Per group, the last message dispatched: the next one waits for it.
    tails: HashMap<String, Tail>,
    /// Per group, the messages dispatched and not finished: (place in the group, line entry)
    /// and the receive batch each came in.
    in_hand: HashMap<String, BTreeMap<(u128, u128), u64>>,
    /// Per group, the messages put back for a later retry, by their place in the group.
    waiting: HashMap<String, BTreeMap<u128, Waiting>>,
    /// Places for messages the queue gives no `SequenceNumber`, in receive order.
    next: u128,
    batches: u64,
    /// The queue handed out a message while an earlier one of its group was in flight.
    lax: bool,
}

#[derive(Debug)]
struct Tail {
    id: u128,
    finished: oneshot::Receiver<()>,
}

#[derive(Debug)]
struct Waiting {
    message_id: String,
    /// When it becomes visible again.
    back_at: Instant,
}

/// A message's place in its group.
#[derive(Debug)]
pub(crate) struct Place {
    group: String,
    /// Its order in the group.
    seq: u128,
    /// Its entry in the line.
    id: u128,
    before: Option<oneshot::Receiver<()>>,
    finished: oneshot::Sender<()>,
}

impl FifoGroups {
    fn groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new receive batch: messages of one batch may be a run of one group, as SQS hands out.
    pub(crate) fn batch(&self) -> u64 {
        let mut g = self.groups();
        g.batches += 1;
        g.batches
    }

    /// Puts a message at the end of its group's line. Called in receive order; `seq` is the
    /// message's `SequenceNumber` when the queue gives one.
    pub(crate) fn join(
        &self,
        group: &str,
        message_id: &str,
        seq: Option<u128>,
        batch: u64,
    ) -> Place {
        let mut g = self.groups();
        g.next += 1;
        let id = g.next;
        // Without a sequence number, a message put back keeps the place it had.
        let seq = seq.unwrap_or_else(|| {
            g.waiting
                .get(group)
                .and_then(|w| w.iter().find(|(_, m)| m.message_id == message_id))
                .map_or(id, |(seq, _)| *seq)
        });
        let now = Instant::now();
        let earlier_in_flight = g
            .in_hand
            .get(group)
            .is_some_and(|h| h.range(..(seq, 0)).any(|(_, b)| *b != batch))
            || g.waiting
                .get(group)
                .is_some_and(|w| w.range(..seq).any(|(_, m)| m.back_at > now));
        if earlier_in_flight && !g.lax {
            g.lax = true;
            tracing::warn!(
                group,
                "the queue handed out a message while an earlier one of its FIFO group was in flight: later messages are now held until after earlier ones come back"
            );
        }
        g.in_hand
            .entry(group.to_string())
            .or_default()
            .insert((seq, id), batch);
        let (finished, rx) = oneshot::channel();
        let before = g
            .tails
            .insert(group.to_string(), Tail { id, finished: rx })
            .map(|t| t.finished);
        Place {
            group: group.to_string(),
            seq,
            id,
            before,
            finished,
        }
    }

    /// How long this message must stay back because an earlier message of its group is
    /// waiting to be retried; `None` when it may run.
    pub(crate) fn held_for(&self, place: &Place) -> Option<Duration> {
        let mut g = self.groups();
        let waiting = g.waiting.get_mut(&place.group)?;
        let now = Instant::now();
        waiting.retain(|_, w| w.back_at + HOLD_GRACE > now);
        let last_back = waiting.range(..place.seq).map(|(_, w)| w.back_at).max();
        if waiting.is_empty() {
            g.waiting.remove(&place.group);
        }
        let left = last_back?.saturating_duration_since(now);
        Some(if g.lax {
            Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0)) + HOLD_MARGIN
        } else {
            Duration::from_secs(left.saturating_sub(HOLD_MARGIN).as_secs())
        })
    }

    /// Records how a message ended and lets the next in its line start.
    pub(crate) fn finish(&self, place: Place, message_id: &str, disposition: &Disposition) {
        let mut g = self.groups();
        match disposition {
            Disposition::RetryLater { after, .. } => {
                g.waiting.entry(place.group.clone()).or_default().insert(
                    place.seq,
                    Waiting {
                        message_id: message_id.to_string(),
                        back_at: Instant::now() + *after,
                    },
                );
            }
            d if d.lets_group_continue() => {
                if let Some(waiting) = g.waiting.get_mut(&place.group) {
                    waiting.remove(&place.seq);
                    if waiting.is_empty() {
                        g.waiting.remove(&place.group);
                    }
                }
            }
            // Released at shutdown: it comes back at once, in its place.
            _ => {}
        }
        if g.tails.get(&place.group).is_some_and(|t| t.id == place.id) {
            g.tails.remove(&place.group);
        }
        if let Some(hand) = g.in_hand.get_mut(&place.group) {
            hand.remove(&(place.seq, place.id));
            if hand.is_empty() {
                g.in_hand.remove(&place.group);
            }
        }
        let _ = place.finished.send(());
    }

    /// Groups with a line or a message waiting (memory returns to nothing when all is done).
    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.groups();
        g.tails.len() + g.in_hand.len() + g.waiting.len()
    }
}

impl Place {
    /// Waits until the message before this one in its line has finished (or was dropped).
    pub(crate) async fn wait_turn(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = before.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::disposition::Deleted;

    fn retry(secs: u64) -> Disposition {
        Disposition::RetryLater {
            after: Duration::from_secs(secs),
            error: "x".into(),
        }
    }

    const DONE: Disposition = Disposition::Delete(Deleted::Applied);

    #[tokio::test]
    async fn a_line_spans_batches_and_empties_when_done() {
        let g = FifoGroups::default();
        let first = g.join("g", "m1", None, g.batch());
        let mut second = g.join("g", "m2", None, g.batch());
        let waiting = tokio::spawn(async move {
            second.wait_turn().await;
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second waits for the first");
        g.finish(first, "m1", &DONE);
        let second = waiting.await.expect("turn");
        assert_eq!(g.held_for(&second), None);
        g.finish(second, "m2", &DONE);
        assert_eq!(g.len(), 0);
    }

    /// SQS: a run of the group comes in one batch; the later messages are hidden to come back
    /// just before the head (the group stays locked until the head is back, which comes first).
    #[tokio::test(start_paused = true)]
    async fn on_a_strict_queue_later_messages_come_back_just_before_the_head() {
        let g = FifoGroups::default();
        let batch = g.batch();
        let m1 = g.join("g", "m1", Some(1), batch);
        let m2 = g.join("g", "m2", Some(2), batch);
        let m3 = g.join("g", "m3", Some(3), batch);
        g.finish(m1, "m1", &retry(30));
        let held = g.held_for(&m2).expect("m2 held");
        assert_eq!(held, Duration::from_secs(29));
        g.finish(m2, "m2", &retry(held.as_secs()));
        assert_eq!(g.held_for(&m3), Some(Duration::from_secs(29)));
        g.finish(m3, "m3", &retry(29));

        tokio::time::advance(Duration::from_secs(30)).await;
        let head = g.join("g", "m1", Some(1), g.batch());
        assert_eq!(g.held_for(&head), None, "the head runs");
        g.finish(head, "m1", &DONE);
        let batch = g.batch();
        for (id, seq) in [("m2", 2), ("m3", 3)] {
            let p = g.join("g", id, Some(seq), batch);
            assert_eq!(g.held_for(&p), None, "{id}");
            g.finish(p, id, &DONE);
        }
        assert_eq!(g.len(), 0);
    }

    /// A lax queue hands out a later message while the head is hidden: from then on later
    /// messages are hidden until after the earlier ones, each after the one before it.
    #[tokio::test(start_paused = true)]
    async fn on_a_lax_queue_later_messages_come_back_after_the_head_in_order() {
        let g = FifoGroups::default();
        let m1 = g.join("g", "m1", Some(1), g.batch());
        g.finish(m1, "m1", &retry(30));
        let m2 = g.join("g", "m2", Some(2), g.batch());
        let held2 = g.held_for(&m2).expect("m2 held");
        assert_eq!(held2, Duration::from_secs(31));
        g.finish(m2, "m2", &retry(held2.as_secs()));
        let m3 = g.join("g", "m3", Some(3), g.batch());
        let held3 = g.held_for(&m3).expect("m3 held");
        assert_eq!(held3, Duration::from_secs(32), "after m2");
        g.finish(m3, "m3", &retry(held3.as_secs()));

        // m3 back before the others (the queue is lax): held again.
        tokio::time::advance(Duration::from_secs(10)).await;
        let early = g.join("g", "m3", Some(3), g.batch());
        assert!(g.held_for(&early).is_some());
        g.finish(early, "m3", &retry(25));
        tokio::time::advance(Duration::from_secs(20)).await;
        let head = g.join("g", "m1", Some(1), g.batch());
        assert_eq!(g.held_for(&head), None);
        g.finish(head, "m1", &DONE);
        let m2 = g.join("g", "m2", Some(2), g.batch());
        assert_eq!(g.held_for(&m2), None);
        g.finish(m2, "m2", &DONE);
        tokio::time::advance(Duration::from_secs(5)).await;
        let m3 = g.join("g", "m3", Some(3), g.batch());
        assert_eq!(g.held_for(&m3), None);
        g.finish(m3, "m3", &DONE);
        assert_eq!(g.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_sequence_numbers_a_message_keeps_its_place_and_a_lost_head_stops_holding() {
        let g = FifoGroups::default();
        let batch = g.batch();
        let head = g.join("g", "m1", None, batch);
        let m2 = g.join("g", "m2", None, batch);
        g.finish(head, "m1", &retry(5));
        assert!(g.held_for(&m2).is_some());
        g.finish(m2, "m2", &retry(4));
        tokio::time::advance(Duration::from_secs(5)).await;
        let back = g.join("g", "m1", None, g.batch());
        assert_eq!(g.held_for(&back), None, "m1 kept its place before m2");
        g.finish(back, "m1", &retry(5));
        // m1 went to another consumer: once its grace is over it holds nothing back.
        tokio::time::advance(Duration::from_secs(5) + HOLD_GRACE + Duration::from_secs(1)).await;
        let m2 = g.join("g", "m2", None, g.batch());
        assert_eq!(g.held_for(&m2), None);
        g.finish(m2, "m2", &DONE);
        assert_eq!(g.len(), 0);
    }
}
