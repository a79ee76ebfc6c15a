//! One queue's messages and the SQS rules that move them: visibility, redelivery with a fresh
//! receipt handle, redrive to a dead-letter queue, FIFO group order and deduplication.
//!
//! Everything here is synchronous and takes the time as an argument ([`Now`]), so the rules
//! are unit-tested without sleeping; the server holds one mutex per queue around it. Each
//! operation is O(log n): visible messages sit in an ordered set by send order, in-flight
//! deadlines in a heap whose stale entries are skipped when they surface.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wire::{AttributeValue, SqsError};

/// SQS's longest visibility timeout, and the longest a message may stay invisible after a receive.
pub(super) const MAX_VISIBILITY_SECS: i64 = 43_200;
/// How long a FIFO deduplication id is remembered.
pub(super) const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// SQS's largest `MaximumMessageSize`.
const MAX_MESSAGE_SIZE_LIMIT: usize = 1_048_576;

/// A moment, both as a monotonic instant (for deadlines) and as epoch milliseconds (for the
/// timestamp attributes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    pub at: Instant,
    pub ms: u64,
}

#[cfg(test)]
impl Now {
    /// `d` later.
    pub(super) fn after(self, d: Duration) -> Now {
        Now {
            at: self.at + d,
            ms: self.ms + d.as_millis() as u64,
        }
    }
}

/// What SQS fixes when a message is sent; shared by every delivery of it.
#[derive(Debug, Clone)]
pub(super) struct MessageData {
    pub message_id: String,
    pub body: String,
    pub attributes: Vec<(String, AttributeValue)>,
    pub sent_ms: u64,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    pub sequence_number: Option<String>,
    /// The `AWSTraceHeader` system attribute, when the sender set one.
    pub trace_header: Option<String>,
    /// Set when a redrive moved the message here from its source queue.
    pub dead_letter_source_arn: Option<String>,
}

/// A message to add, before the queue has accepted it.
#[derive(Debug)]
pub(super) struct NewMessage {
    pub message_id: String,
    pub body: String,
    pub attributes: Vec<(String, AttributeValue)>,
    pub delay_seconds: Option<i64>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    pub trace_header: Option<String>,
}

/// What SendMessage answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sent {
    pub message_id: String,
    pub sequence_number: Option<String>,
    /// False when a FIFO deduplication id (or identical body) was seen within 5 minutes.
    pub enqueued: bool,
}

/// One message handed out by ReceiveMessage.
#[derive(Debug, Clone)]
pub(super) struct Delivered {
    pub data: Arc<MessageData>,
    pub receipt: String,
    pub receive_count: u32,
    pub first_receive_ms: u64,
}

/// The parsed `RedrivePolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Redrive {
    /// The DLQ's name (the ARN's last part: this simulator has one account and region).
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

/// The attributes that steer behaviour, parsed from the attribute strings.
#[derive(Debug, Clone)]
pub(super) struct QueueConfig {
    pub fifo: bool,
    pub visibility_timeout: Duration,
    pub delay: Duration,
    pub receive_wait: Duration,
    pub max_message_size: usize,
    pub content_based_dedup: bool,
    pub redrive: Option<Redrive>,
}

/// Attribute names CreateQueue and SetQueueAttributes accept.
const SETTABLE: &[&str] = &[
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "Policy",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];

fn int_attr(
    attrs: &BTreeMap<String, String>,
    name: &str,
    range: (i64, i64),
) -> Result<i64, SqsError> {
    let Some(text) = attrs.get(name) else {
        return Ok(0);
    };
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|v| (range.0..=range.1).contains(v))
        .ok_or_else(|| {
            SqsError::InvalidParameterValue(format!(
                "Invalid value for the parameter {name}: {text:?} is not an integer from {} to {}.",
                range.0, range.1
            ))
        })
}

fn bool_attr(attrs: &BTreeMap<String, String>, name: &str) -> Result<bool, SqsError> {
    match attrs.get(name).map(|s| s.to_ascii_lowercase()).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(SqsError::InvalidParameterValue(format!(
            "Invalid value for the parameter {name}: {other:?} is not true or false."
        ))),
    }
}

fn parse_redrive(text: &str) -> Result<Redrive, SqsError> {
    let invalid = || {
        SqsError::InvalidParameterValue(format!(
            "Invalid value for the parameter RedrivePolicy: {text:?} needs deadLetterTargetArn and maxReceiveCount (1 to 1000)."
        ))
    };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| invalid())?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(|a| a.as_str())
        .ok_or_else(invalid)?;
    let max = match v.get("maxReceiveCount") {
        Some(serde_json::Value::String(s)) => s.trim().parse::<u32>().ok(),
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
    .filter(|m| (1..=1000).contains(m))
    .ok_or_else(invalid)?;
    let name = arn
        .rsplit(':')
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(invalid)?;
    Ok(Redrive {
        dead_letter_queue: name.to_owned(),
        max_receive_count: max,
    })
}

impl QueueConfig {
    /// Validates the attributes of a queue named `name` and parses what steers behaviour.
    pub(super) fn parse(
        name: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<QueueConfig, SqsError> {
        if let Some(unknown) = attrs.keys().find(|k| !SETTABLE.contains(&k.as_str())) {
            return Err(SqsError::InvalidAttributeName(unknown.clone()));
        }
        let fifo = bool_attr(attrs, "FifoQueue")?;
        if fifo != name.ends_with(".fifo") {
            return Err(SqsError::InvalidParameterValue(
                "A FIFO queue's name must end with .fifo, and only a FIFO queue's may.".into(),
            ));
        }
        let content_based_dedup = bool_attr(attrs, "ContentBasedDeduplication")?;
        if content_based_dedup && !fifo {
            return Err(SqsError::InvalidAttributeName(
                "ContentBasedDeduplication".into(),
            ));
        }
        let visibility = match attrs.get("VisibilityTimeout") {
            Some(_) => int_attr(attrs, "VisibilityTimeout", (0, MAX_VISIBILITY_SECS))?,
            None => 30,
        };
        let max_size = match attrs.get("MaximumMessageSize") {
            Some(_) => int_attr(
                attrs,
                "MaximumMessageSize",
                (1024, MAX_MESSAGE_SIZE_LIMIT as i64),
            )?,
            None => 262_144,
        };
        int_attr(attrs, "MessageRetentionPeriod", (0, 1_209_600))?;
        Ok(QueueConfig {
            fifo,
            visibility_timeout: Duration::from_secs(visibility as u64),
            delay: Duration::from_secs(int_attr(attrs, "DelaySeconds", (0, 900))? as u64),
            receive_wait: Duration::from_secs(int_attr(
                attrs,
                "ReceiveMessageWaitTimeSeconds",
                (0, 20),
            )? as u64),
            max_message_size: max_size as usize,
            content_based_dedup,
            redrive: attrs
                .get("RedrivePolicy")
                .map(|p| parse_redrive(p))
                .transpose()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Delayed(Instant),
    Visible,
    InFlight {
        until: Instant,
        received_at: Instant,
    },
}

#[derive(Debug)]
struct Message {
    data: Arc<MessageData>,
    receive_count: u32,
    first_receive_ms: Option<u64>,
    state: State,
}

/// The order visible messages are handed out in.
#[derive(Debug)]
enum Ready {
    /// Oldest first (by send order; a message whose visibility ran out goes back to its place).
    Standard(BTreeSet<u64>),
    Fifo(FifoReady),
}

/// FIFO: per group, messages in order; a group with a message in flight hands out nothing.
#[derive(Debug, Default)]
struct FifoReady {
    groups: HashMap<String, Group>,
    /// Groups that may deliver now, by the sequence of their first visible message.
    heads: BTreeMap<u64, String>,
    visible: usize,
    /// Behave like emulators that keep handing out a group while one of its messages is in
    /// flight (order is then the consumer's job).
    lax: bool,
}

#[derive(Debug, Default)]
struct Group {
    visible: BTreeSet<u64>,
    in_flight: u32,
    head_key: Option<u64>,
}

impl FifoReady {
    /// Puts `name` into `heads` iff it may deliver, and drops it when it holds nothing.
    fn refresh(&mut self, name: &str) {
        let Some(g) = self.groups.get_mut(name) else {
            return;
        };
        let want = if g.in_flight == 0 || self.lax {
            g.visible.first().copied()
        } else {
            None
        };
        if g.head_key != want {
            if let Some(old) = g.head_key.take() {
                self.heads.remove(&old);
            }
            if let Some(new) = want {
                self.heads.insert(new, name.to_owned());
                g.head_key = Some(new);
            }
        }
        if g.in_flight == 0 && g.visible.is_empty() {
            self.groups.remove(name);
        }
    }
}

impl Ready {
    fn insert(&mut self, seq: u64, group: Option<&str>) {
        match self {
            Ready::Standard(set) => {
                set.insert(seq);
            }
            Ready::Fifo(f) => {
                let name = group.unwrap_or_default();
                if f.groups
                    .entry(name.to_owned())
                    .or_default()
                    .visible
                    .insert(seq)
                {
                    f.visible += 1;
                }
                f.refresh(name);
            }
        }
    }

    fn remove(&mut self, seq: u64, group: Option<&str>) {
        match self {
            Ready::Standard(set) => {
                set.remove(&seq);
            }
            Ready::Fifo(f) => {
                let name = group.unwrap_or_default();
                if let Some(g) = f.groups.get_mut(name)
                    && g.visible.remove(&seq)
                {
                    f.visible -= 1;
                }
                f.refresh(name);
            }
        }
    }

    /// A message of `group` is no longer in flight.
    fn release(&mut self, group: Option<&str>) {
        if let Ready::Fifo(f) = self {
            let name = group.unwrap_or_default();
            if let Some(g) = f.groups.get_mut(name) {
                g.in_flight = g.in_flight.saturating_sub(1);
            }
            f.refresh(name);
        }
    }

    fn len(&self) -> usize {
        match self {
            Ready::Standard(set) => set.len(),
            Ready::Fifo(f) => f.visible,
        }
    }

    /// Takes up to `max` messages in order. `accept` is asked about each: false means it was
    /// dead-lettered instead (it neither counts nor locks its group).
    fn take(&mut self, max: usize, mut accept: impl FnMut(u64) -> bool) -> Vec<u64> {
        let mut out = Vec::with_capacity(max);
        match self {
            Ready::Standard(set) => {
                while out.len() < max {
                    let Some(seq) = set.pop_first() else { break };
                    if accept(seq) {
                        out.push(seq);
                    }
                }
            }
            Ready::Fifo(f) => {
                while out.len() < max {
                    let Some((head, name)) = f.heads.pop_first() else {
                        break;
                    };
                    let Some(g) = f.groups.get_mut(&name) else {
                        continue;
                    };
                    debug_assert_eq!(g.head_key, Some(head));
                    g.head_key = None;
                    // SQS hands out a run of one group's messages in one response.
                    while out.len() < max {
                        let Some(seq) = g.visible.pop_first() else {
                            break;
                        };
                        f.visible -= 1;
                        if accept(seq) {
                            g.in_flight += 1;
                            out.push(seq);
                        }
                    }
                    f.refresh(&name);
                }
            }
        }
        out
    }

    fn clear(&mut self) {
        match self {
            Ready::Standard(set) => set.clear(),
            Ready::Fifo(f) => {
                *f = FifoReady {
                    lax: f.lax,
                    ..FifoReady::default()
                }
            }
        }
    }
}

/// What a receive produced: the deliveries, and the messages whose receive count ran past the
/// redrive policy's limit (to be added to the dead-letter queue by the caller).
#[derive(Debug, Default)]
pub(super) struct Received {
    pub delivered: Vec<Delivered>,
    pub dead_lettered: Vec<Arc<MessageData>>,
}

/// Message counts as GetQueueAttributes reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Depth {
    pub visible: usize,
    pub in_flight: usize,
    pub delayed: usize,
}

/// One queue's state, behind the queue's mutex.
#[derive(Debug)]
pub(super) struct QueueState {
    /// Part of every receipt handle, so handles of another (or a re-created) queue are refused.
    incarnation: u64,
    pub config: QueueConfig,
    /// The settable attributes as set (strings, echoed by GetQueueAttributes).
    pub attributes: BTreeMap<String, String>,
    pub last_modified_ms: u64,
    messages: HashMap<u64, Message>,
    ready: Ready,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: usize,
    delays: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed: usize,
    next_seq: u64,
    dedup: HashMap<String, Sent>,
    dedup_expiry: VecDeque<(Instant, String)>,
}

impl QueueState {
    /// An empty queue; `attributes` must have passed [`QueueConfig::parse`].
    pub(super) fn new(
        incarnation: u64,
        config: QueueConfig,
        attributes: BTreeMap<String, String>,
        now: Now,
    ) -> Self {
        let ready = if config.fifo {
            Ready::Fifo(FifoReady::default())
        } else {
            Ready::Standard(BTreeSet::new())
        };
        QueueState {
            incarnation,
            config,
            attributes,
            last_modified_ms: now.ms,
            messages: HashMap::new(),
            ready,
            deadlines: BinaryHeap::new(),
            in_flight: 0,
            delays: BinaryHeap::new(),
            delayed: 0,
            next_seq: 1,
            dedup: HashMap::new(),
            dedup_expiry: VecDeque::new(),
        }
    }

    /// A lax FIFO queue hands out a group's next messages while one is in flight, as some
    /// emulators do. Exists so tests can show the worker keeps order without the server's help.
    pub(super) fn set_lax_fifo(&mut self, lax: bool) {
        if let Ready::Fifo(f) = &mut self.ready {
            f.lax = lax;
            let names: Vec<String> = f.groups.keys().cloned().collect();
            for name in names {
                f.refresh(&name);
            }
        }
    }

    /// Adds a message (or, for a FIFO duplicate within 5 minutes, answers as for the first).
    pub(super) fn send(&mut self, now: Now, m: NewMessage) -> Result<Sent, SqsError> {
        let fifo = self.config.fifo;
        if m.body.is_empty() {
            return Err(SqsError::MissingParameter("MessageBody"));
        }
        if !m.body.chars().all(allowed_char) {
            return Err(SqsError::InvalidMessageContents);
        }
        let size = m.body.len() + m.attributes.iter().map(|(k, v)| v.size(k)).sum::<usize>();
        if size > self.config.max_message_size {
            return Err(SqsError::InvalidParameterValue(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
                self.config.max_message_size
            )));
        }
        if fifo && m.group_id.is_none() {
            return Err(SqsError::MissingParameter("MessageGroupId"));
        }
        if !fifo && m.dedup_id.is_some() {
            return Err(SqsError::InvalidParameterValue(
                "The request includes MessageDeduplicationId, which is only valid for FIFO queues."
                    .into(),
            ));
        }
        let delay = match m.delay_seconds {
            None => self.config.delay,
            Some(d) if !(0..=900).contains(&d) => {
                return Err(SqsError::InvalidParameterValue(format!(
                    "Value {d} for parameter DelaySeconds is invalid. Reason: must be between 0 and 900."
                )));
            }
            Some(d) if fifo && d != 0 => {
                return Err(SqsError::InvalidParameterValue(
                    "The request includes DelaySeconds, which FIFO queues only take as a queue attribute.".into(),
                ));
            }
            Some(d) => Duration::from_secs(d as u64),
        };
        let dedup_key = if fifo {
            let key = match (&m.dedup_id, self.config.content_based_dedup) {
                (Some(id), _) => format!("i:{id}"),
                // Content-based deduplication keys on the body's SHA-256; the body itself is
                // the same key without the hash.
                (None, true) => format!("b:{}", m.body),
                (None, false) => {
                    return Err(SqsError::InvalidParameterValue(
                        "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly".into(),
                    ));
                }
            };
            self.forget_old_dedup_ids(now);
            if let Some(first) = self.dedup.get(&key) {
                return Ok(Sent {
                    enqueued: false,
                    ..first.clone()
                });
            }
            Some(key)
        } else {
            None
        };

        let seq = self.next_seq;
        self.next_seq += 1;
        let sequence_number = fifo.then(|| format!("{:020}", 10_000_000_000_000_000_000u64 + seq));
        let sent = Sent {
            message_id: m.message_id.clone(),
            sequence_number: sequence_number.clone(),
            enqueued: true,
        };
        if let Some(key) = dedup_key {
            self.dedup.insert(key.clone(), sent.clone());
            self.dedup_expiry.push_back((now.at + DEDUP_WINDOW, key));
        }
        let data = MessageData {
            message_id: m.message_id,
            body: m.body,
            attributes: m.attributes,
            sent_ms: now.ms,
            group_id: m.group_id,
            dedup_id: m.dedup_id,
            sequence_number,
            trace_header: m.trace_header,
            dead_letter_source_arn: None,
        };
        self.enqueue(now, Arc::new(data), 0, delay);
        Ok(sent)
    }

    /// Adds a message moved here by a redrive, keeping its id, body and sent time.
    pub(super) fn add_dead_letter(&mut self, now: Now, data: Arc<MessageData>) {
        self.enqueue(now, data, 0, Duration::ZERO);
    }

    fn enqueue(&mut self, now: Now, data: Arc<MessageData>, receive_count: u32, delay: Duration) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let state = if delay.is_zero() {
            self.ready.insert(seq, data.group_id.as_deref());
            State::Visible
        } else {
            let until = now.at + delay;
            self.delays.push(Reverse((until, seq)));
            self.delayed += 1;
            State::Delayed(until)
        };
        self.messages.insert(
            seq,
            Message {
                data,
                receive_count,
                first_receive_ms: None,
                state,
            },
        );
    }

    fn forget_old_dedup_ids(&mut self, now: Now) {
        while let Some((until, _)) = self.dedup_expiry.front() {
            if *until > now.at {
                break;
            }
            if let Some((_, key)) = self.dedup_expiry.pop_front() {
                self.dedup.remove(&key);
            }
        }
    }

    /// Makes visible what is due: in-flight messages whose visibility ran out, delayed ones
    /// whose delay is over. Heap entries that no longer match their message are dropped.
    pub(super) fn promote(&mut self, now: Now) {
        while let Some(&Reverse((until, seq))) = self.deadlines.peek() {
            if until > now.at {
                break;
            }
            self.deadlines.pop();
            if let Some(m) = self.messages.get_mut(&seq)
                && matches!(m.state, State::InFlight { until: u, .. } if u == until)
            {
                m.state = State::Visible;
                self.in_flight -= 1;
                let group = m.data.group_id.as_deref();
                self.ready.release(group);
                self.ready.insert(seq, group);
            }
        }
        while let Some(&Reverse((until, seq))) = self.delays.peek() {
            if until > now.at {
                break;
            }
            self.delays.pop();
            if let Some(m) = self.messages.get_mut(&seq)
                && m.state == State::Delayed(until)
            {
                m.state = State::Visible;
                self.delayed -= 1;
                self.ready.insert(seq, m.data.group_id.as_deref());
            }
        }
        // Stale entries of long visibilities could pile up; keep the heap near the live count.
        if self.deadlines.len() > 2 * self.in_flight + 1024 {
            let messages = &self.messages;
            self.deadlines.retain(|Reverse((until, seq))| {
                messages.get(seq).is_some_and(
                    |m| matches!(m.state, State::InFlight { until: u, .. } if u == *until),
                )
            });
        }
    }

    /// When something invisible may next become visible (a wake-up time for long polls).
    pub(super) fn next_change(&self) -> Option<Instant> {
        let a = self.deadlines.peek().map(|Reverse((t, _))| *t);
        let b = self.delays.peek().map(|Reverse((t, _))| *t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands out up to `max` visible messages, each invisible for `visibility` with a fresh
    /// receipt handle. With `redrive` (the policy's maxReceiveCount, when its DLQ exists), a
    /// message already received that many times goes to the returned dead letters instead.
    pub(super) fn receive(
        &mut self,
        now: Now,
        max: usize,
        visibility: Duration,
        redrive: Option<u32>,
    ) -> Received {
        self.promote(now);
        let until = now.at + visibility;
        let mut dead_lettered = Vec::new();
        let messages = &mut self.messages;
        let taken = self.ready.take(max, |seq| {
            let Some(count) = messages.get(&seq).map(|m| m.receive_count) else {
                return false;
            };
            if redrive.is_some_and(|limit| count >= limit) {
                if let Some(m) = messages.remove(&seq) {
                    dead_lettered.push(m.data);
                }
                return false;
            }
            true
        });
        let mut delivered = Vec::with_capacity(taken.len());
        for seq in taken {
            let Some(m) = self.messages.get_mut(&seq) else {
                continue;
            };
            m.receive_count += 1;
            let first = *m.first_receive_ms.get_or_insert(now.ms);
            m.state = State::InFlight {
                until,
                received_at: now.at,
            };
            self.in_flight += 1;
            self.deadlines.push(Reverse((until, seq)));
            delivered.push(Delivered {
                data: m.data.clone(),
                receipt: format!("{:x}-{seq:x}-{:x}", self.incarnation, m.receive_count),
                receive_count: m.receive_count,
                first_receive_ms: first,
            });
        }
        Received {
            delivered,
            dead_lettered,
        }
    }

    /// `(sequence, receive count)` from a handle of this queue, or why it is not one.
    fn parse_receipt(&self, receipt: &str) -> Result<(u64, u32), SqsError> {
        let invalid = || SqsError::ReceiptHandleIsInvalid(receipt.to_owned());
        let mut parts = receipt.split('-');
        let (Some(inc), Some(seq), Some(count), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let inc = u64::from_str_radix(inc, 16).map_err(|_| invalid())?;
        let seq = u64::from_str_radix(seq, 16).map_err(|_| invalid())?;
        let count = u32::from_str_radix(count, 16).map_err(|_| invalid())?;
        if inc != self.incarnation || count == 0 || seq >= self.next_seq {
            return Err(invalid());
        }
        Ok((seq, count))
    }

    /// Deletes by receipt handle. Like SQS, a handle of an already deleted message is
    /// accepted, and only the latest handle of a message deletes it (an older one is accepted
    /// and ignored). Returns whether a message was deleted.
    pub(super) fn delete(&mut self, receipt: &str) -> Result<bool, SqsError> {
        let (seq, count) = self.parse_receipt(receipt)?;
        let Some(m) = self.messages.get(&seq) else {
            return Ok(false);
        };
        if count > m.receive_count {
            return Err(SqsError::ReceiptHandleIsInvalid(receipt.to_owned()));
        }
        if count < m.receive_count {
            return Ok(false);
        }
        let Some(m) = self.messages.remove(&seq) else {
            return Ok(false);
        };
        let group = m.data.group_id.as_deref();
        match m.state {
            State::InFlight { .. } => {
                self.in_flight -= 1;
                self.ready.release(group);
            }
            State::Visible => self.ready.remove(seq, group),
            State::Delayed(_) => self.delayed -= 1,
        }
        Ok(true)
    }

    /// Changes the visibility of an in-flight message from now on. 0 makes it visible at once
    /// (returns true then, so waiting receivers can be woken).
    pub(super) fn change_visibility(
        &mut self,
        now: Now,
        receipt: &str,
        seconds: i64,
    ) -> Result<bool, SqsError> {
        if !(0..=MAX_VISIBILITY_SECS).contains(&seconds) {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {seconds} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
            )));
        }
        let (seq, count) = self.parse_receipt(receipt)?;
        self.promote(now);
        let m = self
            .messages
            .get_mut(&seq)
            .filter(|m| m.receive_count == count)
            .ok_or_else(|| SqsError::ReceiptHandleIsInvalid(receipt.to_owned()))?;
        let State::InFlight { received_at, .. } = m.state else {
            return Err(SqsError::MessageNotInflight);
        };
        let until = now.at + Duration::from_secs(seconds as u64);
        if until > received_at + Duration::from_secs(MAX_VISIBILITY_SECS as u64) {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {seconds} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [43200 seconds]"
            )));
        }
        if seconds == 0 {
            m.state = State::Visible;
            self.in_flight -= 1;
            let group = m.data.group_id.as_deref();
            self.ready.release(group);
            self.ready.insert(seq, group);
            return Ok(true);
        }
        if m.state != (State::InFlight { until, received_at }) {
            m.state = State::InFlight { until, received_at };
            self.deadlines.push(Reverse((until, seq)));
        }
        Ok(false)
    }

    /// Drops every message (PurgeQueue).
    pub(super) fn purge(&mut self) {
        self.messages.clear();
        self.ready.clear();
        self.deadlines.clear();
        self.delays.clear();
        self.in_flight = 0;
        self.delayed = 0;
    }

    /// How long the longest-hidden in-flight message stays hidden from `now`.
    pub(super) fn longest_hold(&mut self, now: Now) -> Option<Duration> {
        self.promote(now);
        self.messages
            .values()
            .filter_map(|m| match m.state {
                State::InFlight { until, .. } => Some(until.saturating_duration_since(now.at)),
                _ => None,
            })
            .max()
    }

    /// Counts after making visible what is due.
    pub(super) fn depth(&mut self, now: Now) -> Depth {
        self.promote(now);
        Depth {
            visible: self.ready.len(),
            in_flight: self.in_flight,
            delayed: self.delayed,
        }
    }
}

/// The characters SQS allows in a body: #x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD |
/// #x10000–#x10FFFF (a Rust `char` is never a surrogate).
fn allowed_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= '\u{20}' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now0() -> Now {
        Now {
            at: Instant::now(),
            ms: 1_700_000_000_000,
        }
    }

    fn queue(name: &str, attrs: &[(&str, &str)]) -> QueueState {
        let attrs: BTreeMap<String, String> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = QueueConfig::parse(name, &attrs).unwrap();
        QueueState::new(7, config, attrs, now0())
    }

    fn msg(id: &str, body: &str, group: Option<&str>) -> NewMessage {
        NewMessage {
            message_id: id.into(),
            body: body.into(),
            attributes: Vec::new(),
            delay_seconds: None,
            group_id: group.map(str::to_owned),
            dedup_id: None,
            trace_header: None,
        }
    }

    fn ids(r: &Received) -> Vec<&str> {
        r.delivered
            .iter()
            .map(|d| d.data.message_id.as_str())
            .collect()
    }

    const VIS: Duration = Duration::from_secs(30);

    #[test]
    fn received_messages_are_invisible_until_deleted() {
        let now = now0();
        let mut q = queue("q", &[]);
        for i in 0..3 {
            q.send(now, msg(&format!("m{i}"), "b", None)).unwrap();
        }
        let r = q.receive(now, 2, VIS, None);
        assert_eq!(ids(&r), ["m0", "m1"]);
        assert_eq!(
            q.depth(now),
            Depth {
                visible: 1,
                in_flight: 2,
                delayed: 0
            }
        );
        assert!(q.delete(&r.delivered[0].receipt).unwrap());
        assert_eq!(
            q.depth(now),
            Depth {
                visible: 1,
                in_flight: 1,
                delayed: 0
            }
        );
        // Deleting twice is accepted, like SQS.
        assert!(!q.delete(&r.delivered[0].receipt).unwrap());
    }

    #[test]
    fn an_expired_visibility_redelivers_with_a_new_handle_and_count() {
        let now = now0();
        let mut q = queue("q", &[]);
        q.send(now, msg("m", "b", None)).unwrap();
        let first = q.receive(now, 10, VIS, None).delivered.remove(0);
        assert_eq!(first.receive_count, 1);
        assert!(
            q.receive(now.after(Duration::from_secs(29)), 10, VIS, None)
                .delivered
                .is_empty()
        );
        let later = now.after(Duration::from_secs(30));
        let second = q.receive(later, 10, VIS, None).delivered.remove(0);
        assert_eq!(second.receive_count, 2);
        assert_ne!(second.receipt, first.receipt);
        assert_eq!(second.first_receive_ms, now.ms);
        // The old handle no longer deletes the message nor changes its visibility.
        assert!(!q.delete(&first.receipt).unwrap());
        assert!(matches!(
            q.change_visibility(later, &first.receipt, 0),
            Err(SqsError::ReceiptHandleIsInvalid(_))
        ));
        assert_eq!(q.depth(later).in_flight, 1);
        assert!(q.delete(&second.receipt).unwrap());
        assert_eq!(
            q.depth(later),
            Depth {
                visible: 0,
                in_flight: 0,
                delayed: 0
            }
        );
    }

    #[test]
    fn visibility_zero_makes_a_message_visible_at_once_and_limits_hold() {
        let now = now0();
        let mut q = queue("q", &[]);
        q.send(now, msg("m", "b", None)).unwrap();
        let d = q
            .receive(now, 10, Duration::from_secs(600), None)
            .delivered
            .remove(0);
        assert!(matches!(
            q.change_visibility(now, &d.receipt, 43_201),
            Err(SqsError::InvalidParameterValue(_))
        ));
        // 12 h counts from the receive, not from the change.
        let later = now.after(Duration::from_secs(60));
        assert!(matches!(
            q.change_visibility(later, &d.receipt, 43_200),
            Err(SqsError::InvalidParameterValue(_))
        ));
        assert!(!q.change_visibility(later, &d.receipt, 43_000).unwrap());
        assert!(q.change_visibility(later, &d.receipt, 0).unwrap());
        assert_eq!(q.depth(later).visible, 1);
        // Visible (not in flight) with its latest handle: MessageNotInflight.
        assert_eq!(
            q.change_visibility(later, &d.receipt, 5),
            Err(SqsError::MessageNotInflight)
        );
        let again = q.receive(later, 10, VIS, None).delivered.remove(0);
        assert_eq!(again.receive_count, 2);
    }

    #[test]
    fn the_longest_hold_is_the_last_in_flight_message_to_come_back() {
        let now = now0();
        let mut q = queue("q", &[]);
        assert_eq!(q.longest_hold(now), None);
        q.send(now, msg("a", "b", None)).unwrap();
        q.send(now, msg("b", "b", None)).unwrap();
        q.receive(now, 1, Duration::from_secs(30), None);
        q.receive(now, 1, Duration::from_secs(10), None);
        let later = now.after(Duration::from_secs(5));
        assert_eq!(q.longest_hold(later), Some(Duration::from_secs(25)));
        assert_eq!(q.longest_hold(now.after(Duration::from_secs(30))), None);
    }

    #[test]
    fn malformed_or_foreign_handles_are_invalid() {
        let mut q = queue("q", &[]);
        for h in ["", "x", "7-1", "7-1-1-1", "8-1-1", "7-99-1", "7-1-0"] {
            assert!(
                matches!(q.delete(h), Err(SqsError::ReceiptHandleIsInvalid(_))),
                "{h}"
            );
        }
    }

    #[test]
    fn messages_past_max_receive_count_are_dead_lettered_on_the_next_receive() {
        let now = now0();
        let mut q = queue(
            "q",
            &[(
                "RedrivePolicy",
                r#"{"deadLetterTargetArn":"arn:aws:sqs:r:000000000000:dlq","maxReceiveCount":"2"}"#,
            )],
        );
        assert_eq!(q.config.redrive.as_ref().unwrap().dead_letter_queue, "dlq");
        q.send(now, msg("m", "b", None)).unwrap();
        let mut t = now;
        for n in 1..=2 {
            let r = q.receive(t, 10, Duration::ZERO, Some(2));
            assert_eq!(r.delivered[0].receive_count, n);
            t = t.after(Duration::from_millis(1));
        }
        let r = q.receive(t, 10, Duration::ZERO, Some(2));
        assert!(r.delivered.is_empty());
        assert_eq!(r.dead_lettered.len(), 1);
        assert_eq!(r.dead_lettered[0].message_id, "m");
        assert_eq!(
            q.depth(t),
            Depth {
                visible: 0,
                in_flight: 0,
                delayed: 0
            }
        );
    }

    #[test]
    fn fifo_holds_a_group_while_one_of_its_messages_is_in_flight() {
        let now = now0();
        let mut q = queue(
            "q.fifo",
            &[("FifoQueue", "true"), ("ContentBasedDeduplication", "true")],
        );
        for (id, g) in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B")] {
            q.send(now, msg(id, id, Some(g))).unwrap();
        }
        // One response takes a run of a group, then the next group.
        let r = q.receive(now, 1, VIS, None);
        assert_eq!(ids(&r), ["a1"]);
        let r2 = q.receive(now, 10, VIS, None);
        assert_eq!(ids(&r2), ["b1", "b2"]);
        assert!(q.receive(now, 10, VIS, None).delivered.is_empty());
        q.delete(&r.delivered[0].receipt).unwrap();
        assert_eq!(ids(&q.receive(now, 10, VIS, None)), ["a2"]);
    }

    #[test]
    fn fifo_redelivers_an_expired_message_before_the_rest_of_its_group() {
        let now = now0();
        let mut q = queue(
            "q.fifo",
            &[("FifoQueue", "true"), ("ContentBasedDeduplication", "true")],
        );
        for id in ["a1", "a2"] {
            q.send(now, msg(id, id, Some("A"))).unwrap();
        }
        assert_eq!(ids(&q.receive(now, 1, VIS, None)), ["a1"]);
        let later = now.after(VIS);
        assert_eq!(ids(&q.receive(later, 10, VIS, None)), ["a1", "a2"]);
    }

    #[test]
    fn fifo_deduplicates_within_five_minutes() {
        let now = now0();
        let mut q = queue("q.fifo", &[("FifoQueue", "true")]);
        let mut m = msg("m1", "body", Some("g"));
        assert!(matches!(
            q.send(now, msg("x", "b", Some("g"))),
            Err(SqsError::InvalidParameterValue(_))
        ));
        m.dedup_id = Some("d".into());
        let first = q.send(now, m).unwrap();
        assert!(first.enqueued);
        let mut dup = msg("m2", "other", Some("g"));
        dup.dedup_id = Some("d".into());
        let second = q.send(now.after(Duration::from_secs(299)), dup).unwrap();
        assert!(!second.enqueued);
        assert_eq!(second.message_id, "m1");
        assert_eq!(second.sequence_number, first.sequence_number);
        let mut late = msg("m3", "other", Some("g"));
        late.dedup_id = Some("d".into());
        assert!(q.send(now.after(DEDUP_WINDOW), late).unwrap().enqueued);
        assert_eq!(q.depth(now).visible, 2);
        assert!(matches!(
            q.send(now, msg("x", "b", None)),
            Err(SqsError::MissingParameter("MessageGroupId"))
        ));
    }

    #[test]
    fn delayed_messages_appear_when_their_delay_ends() {
        let now = now0();
        let mut q = queue("q", &[("DelaySeconds", "5")]);
        q.send(now, msg("m", "b", None)).unwrap();
        let mut quick = msg("n", "b", None);
        quick.delay_seconds = Some(0);
        q.send(now, quick).unwrap();
        assert_eq!(
            q.depth(now),
            Depth {
                visible: 1,
                in_flight: 0,
                delayed: 1
            }
        );
        assert_eq!(q.next_change(), Some(now.at + Duration::from_secs(5)));
        assert_eq!(ids(&q.receive(now, 10, VIS, None)), ["n"]);
        assert_eq!(
            ids(&q.receive(now.after(Duration::from_secs(5)), 10, VIS, None)),
            ["m"]
        );
    }

    #[test]
    fn bodies_and_attributes_are_validated() {
        let now = now0();
        let mut q = queue("q", &[("MaximumMessageSize", "1024")]);
        assert_eq!(
            q.send(now, msg("m", "", None)),
            Err(SqsError::MissingParameter("MessageBody"))
        );
        assert_eq!(
            q.send(now, msg("m", "a\u{1}b", None)),
            Err(SqsError::InvalidMessageContents)
        );
        assert!(matches!(
            q.send(now, msg("m", &"x".repeat(1025), None)),
            Err(SqsError::InvalidParameterValue(_))
        ));
        let attrs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(matches!(
            QueueConfig::parse("q", &attrs(&[("Bogus", "1")])),
            Err(SqsError::InvalidAttributeName(_))
        ));
        assert!(matches!(
            QueueConfig::parse("q", &attrs(&[("VisibilityTimeout", "43201")])),
            Err(SqsError::InvalidParameterValue(_))
        ));
        assert!(matches!(
            QueueConfig::parse("q", &attrs(&[("FifoQueue", "true")])),
            Err(SqsError::InvalidParameterValue(_))
        ));
        assert!(matches!(
            QueueConfig::parse(
                "q",
                &attrs(&[(
                    "RedrivePolicy",
                    r#"{"deadLetterTargetArn":"arn:x:dlq","maxReceiveCount":0}"#
                )])
            ),
            Err(SqsError::InvalidParameterValue(_))
        ));
    }

    #[test]
    fn stale_deadline_entries_do_not_pile_up() {
        let now = now0();
        let mut q = queue("q", &[]);
        q.send(now, msg("m", "b", None)).unwrap();
        let d = q.receive(now, 1, VIS, None).delivered.remove(0);
        for i in 0..5000 {
            let t = now.after(Duration::from_millis(i));
            q.change_visibility(t, &d.receipt, 40_000).unwrap();
        }
        assert!(
            q.deadlines.len() <= 2 * q.in_flight + 1025,
            "{}",
            q.deadlines.len()
        );
    }

    #[test]
    fn purge_empties_the_queue() {
        let now = now0();
        let mut q = queue("q", &[]);
        for i in 0..3 {
            q.send(now, msg(&format!("m{i}"), "b", None)).unwrap();
        }
        let d = q.receive(now, 1, VIS, None).delivered.remove(0);
        q.purge();
        assert_eq!(
            q.depth(now),
            Depth {
                visible: 0,
                in_flight: 0,
                delayed: 0
            }
        );
        assert!(!q.delete(&d.receipt).unwrap());
    }
}
