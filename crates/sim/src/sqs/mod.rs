//! A fast in-process SQS endpoint, so `make bench` measures the worker rather than the
//! emulator (moto manages ~450 msgs/s).
//!
//! It speaks what aws-sdk-sqs speaks: AWS JSON 1.0 (`POST /`, `X-Amz-Target:
//! AmazonSQS.<Operation>`), with errors as `{"__type","message"}` plus the
//! `x-amzn-query-error` header the SDK takes error codes from. Signatures are not checked.
//! Queues are created over the wire like on moto; a queue URL is
//! `http://<Host header>/000000000000/<name>` and requests name the queue by the URL's last
//! path segment. The queue rules live in [`queue`]; the JSON shapes in [`wire`].

mod digest;
mod queue;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use queue::{Delivered, MessageData, NewMessage, Now, QueueConfig, QueueState};
use wire::{
    AttributeValue, BatchFailure, BatchResponse, BatchSuccess, Pairs, SendResult, SqsError,
    WireMessage,
};

/// The one account of the simulator, as in its queue URLs and ARNs.
pub const ACCOUNT_ID: &str = "000000000000";
const JSON: &str = "application/x-amz-json-1.0";
/// Region of ARNs when a request carries no SigV4 scope to take it from.
const DEFAULT_REGION: &str = "us-east-1";

/// An in-memory SQS endpoint shared by its server and whoever wants its [`SqsStats`].
#[derive(Clone, Default, Debug)]
pub struct SqsSim {
    inner: Arc<Inner>,
}

/// Calls per operation and messages moved, so a benchmark can show what the endpoint did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SqsStats {
    pub create_queue: u64,
    pub get_queue_url: u64,
    pub list_queues: u64,
    pub delete_queue: u64,
    pub purge_queue: u64,
    pub get_queue_attributes: u64,
    pub set_queue_attributes: u64,
    pub send_message: u64,
    pub send_message_batch: u64,
    pub receive_message: u64,
    /// ReceiveMessage calls that returned no message.
    pub empty_receives: u64,
    pub delete_message: u64,
    pub delete_message_batch: u64,
    pub change_message_visibility: u64,
    pub change_message_visibility_batch: u64,
    /// Requests for operations the simulator does not implement.
    pub unsupported: u64,
    /// Requests answered with an error (refused batch entries not included).
    pub errors: u64,
    /// Messages accepted by SendMessage(Batch) (FIFO duplicates not included).
    pub messages_sent: u64,
    /// Messages handed out by ReceiveMessage (each redelivery counts).
    pub messages_received: u64,
    /// Messages deleted by DeleteMessage(Batch).
    pub messages_deleted: u64,
    /// Messages moved to a dead-letter queue by a redrive policy.
    pub messages_dead_lettered: u64,
    /// Calls that met an injected fault ([`SqsSim::inject`]).
    pub faulted: u64,
}

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        struct Counters { $($field: AtomicU64,)* }
        impl Counters {
            fn snapshot(&self) -> SqsStats {
                SqsStats { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters!(
    create_queue,
    get_queue_url,
    list_queues,
    delete_queue,
    purge_queue,
    get_queue_attributes,
    set_queue_attributes,
    send_message,
    send_message_batch,
    receive_message,
    empty_receives,
    delete_message,
    delete_message_batch,
    change_message_visibility,
    change_message_visibility_batch,
    unsupported,
    errors,
    messages_sent,
    messages_received,
    messages_deleted,
    messages_dead_lettered,
    faulted,
);

fn bump(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

struct Inner {
    queues: RwLock<HashMap<String, Arc<SimQueue>>>,
    counters: Counters,
    faults: Mutex<Vec<FaultRule>>,
    /// FIFO queues (present and future) hand out groups with a message in flight.
    lax_fifo: AtomicBool,
    /// Random high half of message ids; the low half counts, so ids cost no syscall.
    id_high: u64,
    next_id: AtomicU64,
    incarnations: AtomicU64,
    /// One instant and its epoch milliseconds, so every timestamp derives from the monotonic clock.
    epoch: (Instant, u64),
}

impl Default for Inner {
    fn default() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Inner {
            queues: RwLock::default(),
            counters: Counters::default(),
            faults: Mutex::default(),
            lax_fifo: AtomicBool::new(false),
            id_high: uuid::Uuid::new_v4().as_u64_pair().0,
            next_id: AtomicU64::new(1),
            incarnations: AtomicU64::new(1),
            epoch: (Instant::now(), ms),
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = read(&self.queues).keys().cloned().collect();
        f.debug_struct("SqsSim").field("queues", &names).finish()
    }
}

/// The operations a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqsOperation {
    ReceiveMessage,
    SendMessage,
    SendMessageBatch,
    DeleteMessage,
    DeleteMessageBatch,
    ChangeMessageVisibility,
    ChangeMessageVisibilityBatch,
    GetQueueAttributes,
    GetQueueUrl,
}

impl SqsOperation {
    /// The operation named by an `X-Amz-Target` (`AmazonSQS.<name>`).
    fn from_name(name: &str) -> Option<SqsOperation> {
        Some(match name {
            "ReceiveMessage" => Self::ReceiveMessage,
            "SendMessage" => Self::SendMessage,
            "SendMessageBatch" => Self::SendMessageBatch,
            "DeleteMessage" => Self::DeleteMessage,
            "DeleteMessageBatch" => Self::DeleteMessageBatch,
            "ChangeMessageVisibility" => Self::ChangeMessageVisibility,
            "ChangeMessageVisibilityBatch" => Self::ChangeMessageVisibilityBatch,
            "GetQueueAttributes" => Self::GetQueueAttributes,
            "GetQueueUrl" => Self::GetQueueUrl,
            _ => return None,
        })
    }
}

/// How the endpoint misbehaves on a call. Exists so tests can show what the worker does when
/// SQS is throttling, failing or hanging, one operation and one queue at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqsFault {
    /// Answer `ThrottlingException` (HTTP 400; the SDK retries it a few times itself).
    Throttle,
    /// Answer `InternalError` (HTTP 500).
    InternalError,
    /// Hold the call this long, then handle it (an endpoint that accepts and hangs).
    Delay(Duration),
}

#[derive(Debug)]
struct FaultRule {
    operation: SqsOperation,
    /// Only calls naming this queue; `None` for every queue.
    queue: Option<String>,
    fault: SqsFault,
    /// Calls left to fault; `None` until the rule is cleared.
    left: Option<u32>,
}

/// One queue: its state behind its own mutex, and a [`Notify`] that wakes long polls.
struct SimQueue {
    name: String,
    arn: String,
    created_ms: u64,
    state: Mutex<QueueState>,
    arrivals: Notify,
    deleted: AtomicBool,
}

impl SimQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock leaves consistent-enough state for a simulator.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// What a handler needs besides the request: the Host (for queue URLs), the SigV4 region
/// (for ARNs) and the server's shutdown (which ends long polls).
struct Context<'a> {
    host: &'a str,
    region: &'a str,
    shutdown: &'a CancellationToken,
}

type Answer = Result<Vec<u8>, SqsError>;

fn parse<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, SqsError> {
    // The SDK sends an empty body for an operation without input members.
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| SqsError::Serialization(e.to_string()))
}

fn json(value: &impl Serialize) -> Answer {
    serde_json::to_vec(value).map_err(|e| SqsError::Serialization(e.to_string()))
}

fn empty() -> Answer {
    Ok(b"{}".to_vec())
}

/// The queue name in a queue URL: its last path segment.
fn queue_name(url: Option<&str>) -> Result<&str, SqsError> {
    let url = url.ok_or(SqsError::MissingParameter("QueueUrl"))?;
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .ok_or(SqsError::QueueDoesNotExist)
}

fn valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn queue_url(host: &str, name: &str) -> String {
    format!("http://{host}/{ACCOUNT_ID}/{name}")
}

/// The region of a SigV4 `Authorization` header's credential scope, if any.
fn sigv4_region(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    scope.split('/').nth(2).filter(|r| !r.is_empty())
}

impl SqsSim {
    /// An endpoint with no queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes calls of `operation` (on the queue named `queue`, or on every queue) misbehave as
    /// `fault`: the next `times` calls, or every call until [`SqsSim::clear_faults`]. The
    /// faulted calls are counted in [`SqsStats::faulted`].
    pub fn inject(
        &self,
        operation: SqsOperation,
        queue: Option<&str>,
        fault: SqsFault,
        times: Option<u32>,
    ) {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(FaultRule {
                operation,
                queue: queue.map(str::to_owned),
                fault,
                left: times,
            });
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Makes every FIFO queue, present and future, hand out the rest of a group while one of
    /// its messages is in flight, as some emulators do.
    pub fn set_lax_fifo(&self, lax: bool) {
        self.inner.lax_fifo.store(lax, Ordering::Relaxed);
        for q in read(&self.inner.queues).values() {
            q.lock().set_lax_fifo(lax);
        }
    }

    /// The fault for a call, if one applies (and counts it against its rule).
    fn fault_for(&self, op: &str, body: &[u8]) -> Option<SqsFault> {
        let operation = SqsOperation::from_name(op)?;
        let mut rules = self.inner.faults.lock().unwrap_or_else(|p| p.into_inner());
        if rules.is_empty() {
            return None;
        }
        let queue = serde_json::from_slice::<wire::QueueUrlRequest>(body)
            .ok()
            .and_then(|r| r.queue_url)
            .and_then(|u| queue_name(Some(&u)).ok().map(str::to_owned));
        let index = rules.iter().position(|r| {
            r.operation == operation
                && r.left != Some(0)
                && r.queue.as_ref().is_none_or(|q| Some(q) == queue.as_ref())
        })?;
        let rule = &mut rules[index];
        if let Some(left) = &mut rule.left {
            *left -= 1;
        }
        bump(&self.inner.counters.faulted, 1);
        Some(rule.fault)
    }

    /// How much longer the queue named `queue` hides its longest-hidden in-flight message
    /// (`None` when nothing is in flight, or there is no such queue): what a test asks after
    /// a consumer died holding messages, without waiting out their visibility.
    pub fn longest_hold(&self, queue: &str) -> Option<Duration> {
        let q = self.queue(queue).ok()?;
        let now = self.now();
        q.lock().longest_hold(now)
    }

    /// Counts of calls per operation and of messages sent, received, deleted and
    /// dead-lettered, for the benchmark report.
    pub fn stats(&self) -> SqsStats {
        self.inner.counters.snapshot()
    }

    fn now(&self) -> Now {
        let (at0, ms0) = self.inner.epoch;
        let at = Instant::now();
        Now {
            at,
            ms: ms0 + at.duration_since(at0).as_millis() as u64,
        }
    }

    fn queue(&self, name: &str) -> Result<Arc<SimQueue>, SqsError> {
        read(&self.inner.queues)
            .get(name)
            .cloned()
            .ok_or(SqsError::QueueDoesNotExist)
    }

    fn queue_of(&self, url: Option<&str>) -> Result<Arc<SimQueue>, SqsError> {
        self.queue(queue_name(url)?)
    }

    fn message_id(&self) -> String {
        let low = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        uuid::Uuid::from_u64_pair(self.inner.id_high, low)
            .hyphenated()
            .to_string()
    }

    /// Runs one operation; the answer is the JSON body of a 200.
    async fn dispatch(&self, op: &str, body: &[u8], cx: Context<'_>) -> Answer {
        let c = &self.inner.counters;
        match op {
            "ReceiveMessage" => {
                bump(&c.receive_message, 1);
                self.receive_message(body, &cx).await
            }
            "DeleteMessageBatch" => {
                bump(&c.delete_message_batch, 1);
                self.delete_message_batch(body)
            }
            "DeleteMessage" => {
                bump(&c.delete_message, 1);
                self.delete_message(body)
            }
            "SendMessage" => {
                bump(&c.send_message, 1);
                self.send_message(body)
            }
            "SendMessageBatch" => {
                bump(&c.send_message_batch, 1);
                self.send_message_batch(body)
            }
            "ChangeMessageVisibility" => {
                bump(&c.change_message_visibility, 1);
                self.change_message_visibility(body)
            }
            "ChangeMessageVisibilityBatch" => {
                bump(&c.change_message_visibility_batch, 1);
                self.change_message_visibility_batch(body)
            }
            "GetQueueAttributes" => {
                bump(&c.get_queue_attributes, 1);
                self.get_queue_attributes(body)
            }
            "SetQueueAttributes" => {
                bump(&c.set_queue_attributes, 1);
                self.set_queue_attributes(body)
            }
            "GetQueueUrl" => {
                bump(&c.get_queue_url, 1);
                self.get_queue_url(body, &cx)
            }
            "CreateQueue" => {
                bump(&c.create_queue, 1);
                self.create_queue(body, &cx)
            }
            "ListQueues" => {
                bump(&c.list_queues, 1);
                self.list_queues(body, &cx)
            }
            "DeleteQueue" => {
                bump(&c.delete_queue, 1);
                self.delete_queue(body)
            }
            "PurgeQueue" => {
                bump(&c.purge_queue, 1);
                self.purge_queue(body)
            }
            other => {
                bump(&c.unsupported, 1);
                Err(SqsError::UnsupportedOperation(other.to_owned()))
            }
        }
    }

    fn create_queue(&self, body: &[u8], cx: &Context<'_>) -> Answer {
        let req: wire::CreateQueueRequest = parse(body)?;
        let name = req
            .queue_name
            .ok_or(SqsError::MissingParameter("QueueName"))?;
        if !valid_queue_name(&name) {
            return Err(SqsError::InvalidParameterValue(format!(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length; {name:?} is not a valid queue name."
            )));
        }
        let attrs: BTreeMap<String, String> = req.attributes.into_iter().collect();
        let config = QueueConfig::parse(&name, &attrs)?;
        let url = queue_url(cx.host, &name);
        let mut queues = write(&self.inner.queues);
        if let Some(existing) = queues.get(&name) {
            // Idempotent when the given attributes match; SQS refuses a different value.
            let state = existing.lock();
            for (k, v) in &attrs {
                let same = state.attributes.get(k).map(|e| e == v).unwrap_or(false);
                if !same {
                    return Err(SqsError::QueueNameExists(k.clone()));
                }
            }
            return json(&serde_json::json!({ "QueueUrl": url }));
        }
        let now = self.now();
        let incarnation = self.inner.incarnations.fetch_add(1, Ordering::Relaxed);
        let queue = SimQueue {
            arn: format!("arn:aws:sqs:{}:{ACCOUNT_ID}:{name}", cx.region),
            name: name.clone(),
            created_ms: now.ms,
            state: Mutex::new({
                let mut state = QueueState::new(incarnation, config, attrs, now);
                state.set_lax_fifo(self.inner.lax_fifo.load(Ordering::Relaxed));
                state
            }),
            arrivals: Notify::new(),
            deleted: AtomicBool::new(false),
        };
        queues.insert(name, Arc::new(queue));
        json(&serde_json::json!({ "QueueUrl": url }))
    }

    fn get_queue_url(&self, body: &[u8], cx: &Context<'_>) -> Answer {
        let req: wire::GetQueueUrlRequest = parse(body)?;
        let name = req
            .queue_name
            .ok_or(SqsError::MissingParameter("QueueName"))?;
        let q = self.queue(&name)?;
        json(&serde_json::json!({ "QueueUrl": queue_url(cx.host, &q.name) }))
    }

    fn list_queues(&self, body: &[u8], cx: &Context<'_>) -> Answer {
        let req: wire::ListQueuesRequest = parse(body)?;
        let prefix = req.queue_name_prefix.unwrap_or_default();
        let mut names: Vec<String> = read(&self.inner.queues)
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect();
        names.sort();
        let start: usize = match req.next_token {
            Some(t) => t
                .parse()
                .map_err(|_| SqsError::InvalidParameterValue(format!("Invalid NextToken {t:?}")))?,
            None => 0,
        };
        let page = match req.max_results {
            Some(n) if !(1..=1000).contains(&n) => {
                return Err(SqsError::InvalidParameterValue(
                    "MaxResults must be an integer between 1 and 1000.".into(),
                ));
            }
            Some(n) => n as usize,
            None => 1000,
        };
        let urls: Vec<String> = names
            .iter()
            .skip(start)
            .take(page)
            .map(|n| queue_url(cx.host, n))
            .collect();
        let mut out = serde_json::Map::new();
        let next = start.saturating_add(page);
        let more = req.max_results.is_some() && next < names.len();
        if !urls.is_empty() {
            out.insert("QueueUrls".into(), urls.into());
        }
        if more {
            out.insert("NextToken".into(), next.to_string().into());
        }
        json(&out)
    }

    fn delete_queue(&self, body: &[u8]) -> Answer {
        let req: wire::QueueUrlRequest = parse(body)?;
        let name = queue_name(req.queue_url.as_deref())?;
        let q = write(&self.inner.queues)
            .remove(name)
            .ok_or(SqsError::QueueDoesNotExist)?;
        q.deleted.store(true, Ordering::Release);
        q.arrivals.notify_waiters();
        empty()
    }

    fn purge_queue(&self, body: &[u8]) -> Answer {
        let req: wire::QueueUrlRequest = parse(body)?;
        self.queue_of(req.queue_url.as_deref())?.lock().purge();
        empty()
    }

    fn get_queue_attributes(&self, body: &[u8]) -> Answer {
        let req: wire::GetQueueAttributesRequest = parse(body)?;
        let q = self.queue_of(req.queue_url.as_deref())?;
        let all = req.attribute_names.iter().any(|n| n == "All");
        let wanted = |n: &str| all || req.attribute_names.iter().any(|w| w == n);
        const KNOWN: &[&str] = &[
            "All",
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "CreatedTimestamp",
            "LastModifiedTimestamp",
            "QueueArn",
            "VisibilityTimeout",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
            "RedrivePolicy",
            "RedriveAllowPolicy",
            "FifoQueue",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
            "Policy",
            "KmsMasterKeyId",
            "KmsDataKeyReusePeriodSeconds",
            "SqsManagedSseEnabled",
        ];
        if let Some(unknown) = req
            .attribute_names
            .iter()
            .find(|n| !KNOWN.contains(&n.as_str()))
        {
            return Err(SqsError::InvalidAttributeName(unknown.clone()));
        }
        let now = self.now();
        let mut state = q.lock();
        let depth = state.depth(now);
        let mut out: BTreeMap<&str, String> = BTreeMap::new();
        for (k, v) in &state.attributes {
            if wanted(k) {
                out.insert(k.as_str(), v.clone());
            }
        }
        let mut defaults = vec![
            ("MessageRetentionPeriod", "345600"),
            ("ReceiveMessageWaitTimeSeconds", "0"),
            ("SqsManagedSseEnabled", "true"),
        ];
        if state.config.fifo {
            defaults.extend([
                ("FifoQueue", "true"),
                ("ContentBasedDeduplication", "false"),
                ("DeduplicationScope", "queue"),
                ("FifoThroughputLimit", "perQueue"),
            ]);
        }
        for (k, v) in defaults {
            if wanted(k) && !out.contains_key(k) {
                out.insert(k, v.to_owned());
            }
        }
        let c = &state.config;
        let computed: [(&str, String); 9] = [
            ("ApproximateNumberOfMessages", depth.visible.to_string()),
            (
                "ApproximateNumberOfMessagesNotVisible",
                depth.in_flight.to_string(),
            ),
            (
                "ApproximateNumberOfMessagesDelayed",
                depth.delayed.to_string(),
            ),
            ("CreatedTimestamp", (q.created_ms / 1000).to_string()),
            (
                "LastModifiedTimestamp",
                (state.last_modified_ms / 1000).to_string(),
            ),
            ("QueueArn", q.arn.clone()),
            (
                "VisibilityTimeout",
                c.visibility_timeout.as_secs().to_string(),
            ),
            ("MaximumMessageSize", c.max_message_size.to_string()),
            ("DelaySeconds", c.delay.as_secs().to_string()),
        ];
        for (k, v) in computed {
            if wanted(k) {
                out.insert(k, v);
            }
        }
        if out.is_empty() {
            return empty();
        }
        let pairs: Vec<(&str, String)> = out.into_iter().collect();
        json(&serde_json::json!({ "Attributes": Pairs(&pairs) }))
    }

    fn set_queue_attributes(&self, body: &[u8]) -> Answer {
        let req: wire::SetQueueAttributesRequest = parse(body)?;
        let q = self.queue_of(req.queue_url.as_deref())?;
        let now = self.now();
        let mut state = q.lock();
        let mut attrs = state.attributes.clone();
        attrs.extend(req.attributes);
        state.config = QueueConfig::parse(&q.name, &attrs)?;
        state.attributes = attrs;
        state.last_modified_ms = now.ms;
        empty()
    }

    fn new_message(&self, e: wire::SendEntry) -> Result<NewMessage, SqsError> {
        if e.message_attributes.len() > 10 {
            return Err(SqsError::InvalidParameterValue(
                "Number of message attributes [11] exceeds the allowed maximum [10].".into(),
            ));
        }
        let mut attributes: Vec<(String, AttributeValue)> =
            e.message_attributes.into_iter().collect();
        for (name, v) in &attributes {
            let kind = v.data_type.split('.').next().unwrap_or_default();
            let ok = match kind {
                "String" | "Number" => v.string_value.is_some(),
                "Binary" => v.binary_value.is_some(),
                _ => false,
            };
            if !ok {
                return Err(SqsError::InvalidParameterValue(format!(
                    "The message attribute '{name}' has an invalid DataType {:?} or lacks its value.",
                    v.data_type
                )));
            }
        }
        attributes.sort_by(|a, b| a.0.cmp(&b.0));
        let trace_header = e
            .message_system_attributes
            .get("AWSTraceHeader")
            .and_then(|v| v.string_value.clone());
        Ok(NewMessage {
            message_id: self.message_id(),
            body: e
                .message_body
                .ok_or(SqsError::MissingParameter("MessageBody"))?,
            attributes,
            delay_seconds: e.delay_seconds,
            group_id: e.message_group_id,
            dedup_id: e.message_deduplication_id,
            trace_header,
        })
    }

    fn send_message(&self, body: &[u8]) -> Answer {
        let mut req: wire::SendEntry = parse(body)?;
        let q = self.queue_of(req.queue_url.take().as_deref())?;
        let m = self.new_message(req)?;
        let (body_md5, attributes_md5) = digests(&m);
        let sent = q.lock().send(self.now(), m)?;
        if sent.enqueued {
            bump(&self.inner.counters.messages_sent, 1);
            q.arrivals.notify_waiters();
        }
        json(&SendResult {
            id: None,
            message_id: sent.message_id,
            md5_of_message_body: body_md5,
            md5_of_message_attributes: attributes_md5,
            sequence_number: sent.sequence_number,
        })
    }

    fn send_message_batch(&self, body: &[u8]) -> Answer {
        let req: wire::SendMessageBatchRequest = parse(body)?;
        let q = self.queue_of(req.queue_url.as_deref())?;
        wire::check_batch_ids(req.entries.iter().map(|e| e.id.as_deref()))?;
        let total: usize = req
            .entries
            .iter()
            .map(|e| {
                e.message_body.as_ref().map_or(0, String::len)
                    + e.message_attributes
                        .iter()
                        .map(|(k, v)| v.size(k))
                        .sum::<usize>()
            })
            .sum();
        let limit = q.lock().config.max_message_size;
        if total > limit {
            return Err(SqsError::BatchRequestTooLong(limit));
        }
        let now = self.now();
        let mut out = BatchResponse {
            successful: Vec::with_capacity(req.entries.len()),
            failed: Vec::new(),
        };
        let mut enqueued = 0;
        let messages: Vec<(String, Result<NewMessage, SqsError>)> = req
            .entries
            .into_iter()
            .map(|e| (e.id.clone().unwrap_or_default(), self.new_message(e)))
            .collect();
        {
            let mut state = q.lock();
            for (id, m) in messages {
                let sent = m.and_then(|m| {
                    let (body_md5, attributes_md5) = digests(&m);
                    Ok((state.send(now, m)?, body_md5, attributes_md5))
                });
                match sent {
                    Ok((sent, body_md5, attributes_md5)) => {
                        enqueued += usize::from(sent.enqueued);
                        out.successful.push(SendResult {
                            id: Some(id),
                            message_id: sent.message_id,
                            md5_of_message_body: body_md5,
                            md5_of_message_attributes: attributes_md5,
                            sequence_number: sent.sequence_number,
                        });
                    }
                    Err(e) => out.failed.push(BatchFailure::new(&id, &e)),
                }
            }
        }
        if enqueued > 0 {
            bump(&self.inner.counters.messages_sent, enqueued);
            q.arrivals.notify_waiters();
        }
        json(&out)
    }

    async fn receive_message(&self, body: &[u8], cx: &Context<'_>) -> Answer {
        let req: wire::ReceiveMessageRequest = parse(body)?;
        let q = self.queue_of(req.queue_url.as_deref())?;
        let max = match req.max_number_of_messages {
            None => 1,
            Some(n @ 1..=10) => n as usize,
            Some(n) => {
                return Err(SqsError::InvalidParameterValue(format!(
                    "Value {n} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided."
                )));
            }
        };
        let (default_visibility, default_wait, redrive) = {
            let state = q.lock();
            (
                state.config.visibility_timeout,
                state.config.receive_wait,
                state.config.redrive.clone(),
            )
        };
        let visibility = match req.visibility_timeout {
            None => default_visibility,
            Some(v @ 0..=queue::MAX_VISIBILITY_SECS) => Duration::from_secs(v as u64),
            Some(v) => {
                return Err(SqsError::InvalidParameterValue(format!(
                    "Value {v} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
                )));
            }
        };
        let wait = match req.wait_time_seconds {
            None => default_wait,
            Some(w @ 0..=20) => Duration::from_secs(w as u64),
            Some(w) => {
                return Err(SqsError::InvalidParameterValue(format!(
                    "Value {w} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."
                )));
            }
        };
        // The redrive applies only while its dead-letter queue exists.
        let dead_letter_queue = redrive
            .as_ref()
            .and_then(|r| self.queue(&r.dead_letter_queue).ok());
        let limit = dead_letter_queue
            .as_ref()
            .and(redrive.as_ref())
            .map(|r| r.max_receive_count);
        let give_up = Instant::now() + wait;
        let delivered = loop {
            let arrival = q.arrivals.notified();
            tokio::pin!(arrival);
            // Registered before looking, so a send between the look and the wait still wakes us.
            arrival.as_mut().enable();
            let now = self.now();
            let (received, next_change) = {
                let mut state = q.lock();
                let r = state.receive(now, max, visibility, limit);
                (r, state.next_change())
            };
            if let Some(dlq) = &dead_letter_queue
                && !received.dead_lettered.is_empty()
            {
                self.dead_letter(&q, dlq, received.dead_lettered, now);
            }
            if !received.delivered.is_empty() || now.at >= give_up {
                break received.delivered;
            }
            let wake = next_change.map_or(give_up, |t| t.min(give_up));
            tokio::select! {
                _ = &mut arrival => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = cx.shutdown.cancelled() => break Vec::new(),
            }
            if q.deleted.load(Ordering::Acquire) {
                return Err(SqsError::QueueDoesNotExist);
            }
        };
        let c = &self.inner.counters;
        if delivered.is_empty() {
            bump(&c.empty_receives, 1);
        }
        bump(&c.messages_received, delivered.len());
        let system =
            SystemSelection::new(&req.attribute_names, &req.message_system_attribute_names);
        let user = UserSelection::new(&req.message_attribute_names);
        render_messages(&delivered, &system, &user)
    }

    fn dead_letter(
        &self,
        source: &SimQueue,
        dlq: &SimQueue,
        moved: Vec<Arc<MessageData>>,
        now: Now,
    ) {
        bump(&self.inner.counters.messages_dead_lettered, moved.len());
        {
            let mut state = dlq.lock();
            for data in moved {
                let mut data = Arc::unwrap_or_clone(data);
                data.dead_letter_source_arn = Some(source.arn.clone());
                state.add_dead_letter(now, Arc::new(data));
            }
        }
        dlq.arrivals.notify_waiters();
    }

    fn delete_message(&self, body: &[u8]) -> Answer {
        let req: wire::DeleteMessageRequest = parse(body)?;
        let q = self.queue_of(req.queue_url.as_deref())?;
        let receipt = req
            .receipt_handle
            .ok_or(SqsError::MissingParameter("ReceiptHandle"))?;
        if q.lock().delete(&receipt)? {
            bump(&self.inner.counters.messages_deleted, 1);
        }
        empty()
    }

    fn delete_message_batch(&self, body: &[u8]) -> Answer {
        let req: wire::ReceiptBatchRequest = parse(body)?;
        let q = self.queue_of(req.queue_url.as_deref())?;
        wire::check_batch_ids(req.entries.iter().map(|e| e.id.as_deref()))?;
        let mut out = BatchResponse {
            successful: Vec::with_capacity(req.entries.len()),
            failed: Vec::new(),
        };
        let mut deleted = 0;
        {
            let mut state = q.lock();
            for e in req.entries {
                let id = e.id.unwrap_or_default();
                let result = e
                    .receipt_handle
                    .ok_or(SqsError::MissingParameter("ReceiptHandle"))
                    .and_then(|r| state.delete(&r));
                match result {
                    Ok(d) => {
                        deleted += usize::from(d);
                        out.successful.push(BatchSuccess { id });
                    }
                    Err(err) => out.failed.push(BatchFailure::new(&id, &err)),
                }
            }
        }
        bump(&self.inner.counters.messages_deleted, deleted);
        json(&out)
    }

    fn change_message_visibility(&self, body: &[u8]) -> Answer {
        let req: wire::ChangeVisibilityRequest = parse(body)?;
        let q = self.queue_of(req.queue_url.as_deref())?;
        let receipt = req
            .receipt_handle
            .ok_or(SqsError::MissingParameter("ReceiptHandle"))?;
        let seconds = req
            .visibility_timeout
            .ok_or(SqsError::MissingParameter("VisibilityTimeout"))?;
        let visible = q.lock().change_visibility(self.now(), &receipt, seconds)?;
        if visible {
            q.arrivals.notify_waiters();
        }
        empty()
    }

    fn change_message_visibility_batch(&self, body: &[u8]) -> Answer {
        let req: wire::ReceiptBatchRequest = parse(body)?;
        let q = self.queue_of(req.queue_url.as_deref())?;
        wire::check_batch_ids(req.entries.iter().map(|e| e.id.as_deref()))?;
        let now = self.now();
        let mut out = BatchResponse {
            successful: Vec::with_capacity(req.entries.len()),
            failed: Vec::new(),
        };
        let mut visible = false;
        {
            let mut state = q.lock();
            for e in req.entries {
                let id = e.id.unwrap_or_default();
                let result = match (e.receipt_handle, e.visibility_timeout) {
                    (None, _) => Err(SqsError::MissingParameter("ReceiptHandle")),
                    (_, None) => Err(SqsError::MissingParameter("VisibilityTimeout")),
                    (Some(r), Some(s)) => state.change_visibility(now, &r, s),
                };
                match result {
                    Ok(v) => {
                        visible |= v;
                        out.successful.push(BatchSuccess { id });
                    }
                    Err(err) => out.failed.push(BatchFailure::new(&id, &err)),
                }
            }
        }
        if visible {
            q.arrivals.notify_waiters();
        }
        json(&out)
    }
}

/// Which system attributes a receive asked for (`All` or names).
struct SystemSelection {
    all: bool,
    names: Vec<String>,
}

impl SystemSelection {
    fn new(legacy: &[String], names: &[String]) -> Self {
        let names: Vec<String> = legacy.iter().chain(names).cloned().collect();
        SystemSelection {
            all: names.iter().any(|n| n == "All"),
            names,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.all || self.names.iter().any(|n| n == name)
    }

    fn any(&self) -> bool {
        !self.names.is_empty()
    }
}

/// Which message attributes a receive asked for: `All`, `.*`, `prefix.*` or exact names.
struct UserSelection<'a> {
    all: bool,
    names: Vec<&'a str>,
    prefixes: Vec<&'a str>,
}

impl<'a> UserSelection<'a> {
    fn new(requested: &'a [String]) -> Self {
        let mut s = UserSelection {
            all: false,
            names: Vec::new(),
            prefixes: Vec::new(),
        };
        for n in requested {
            if n == "All" || n == ".*" {
                s.all = true;
            } else if let Some(p) = n.strip_suffix(".*") {
                s.prefixes.push(p);
            } else {
                s.names.push(n);
            }
        }
        s
    }

    fn wants(&self, name: &str) -> bool {
        self.all
            || self.names.contains(&name)
            || self.prefixes.iter().any(|p| {
                name.strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

fn render_messages(
    delivered: &[Delivered],
    system: &SystemSelection,
    user: &UserSelection<'_>,
) -> Answer {
    let systems: Vec<Vec<(&'static str, String)>> = delivered
        .iter()
        .map(|d| {
            if !system.any() {
                return Vec::new();
            }
            let m = &d.data;
            let mut a: Vec<(&'static str, String)> = Vec::with_capacity(8);
            let mut put = |k: &'static str, v: Option<String>| {
                if let Some(v) = v
                    && system.wants(k)
                {
                    a.push((k, v));
                }
            };
            put("SenderId", Some(ACCOUNT_ID.to_owned()));
            put("SentTimestamp", Some(m.sent_ms.to_string()));
            put("ApproximateReceiveCount", Some(d.receive_count.to_string()));
            put(
                "ApproximateFirstReceiveTimestamp",
                Some(d.first_receive_ms.to_string()),
            );
            put("MessageGroupId", m.group_id.clone());
            put("MessageDeduplicationId", m.dedup_id.clone());
            put("SequenceNumber", m.sequence_number.clone());
            put("AWSTraceHeader", m.trace_header.clone());
            put("DeadLetterQueueSourceArn", m.dead_letter_source_arn.clone());
            a
        })
        .collect();
    let users: Vec<Vec<(&str, &AttributeValue)>> = delivered
        .iter()
        .map(|d| {
            d.data
                .attributes
                .iter()
                .filter(|(k, _)| user.wants(k))
                .map(|(k, v)| (k.as_str(), v))
                .collect()
        })
        .collect();
    let messages: Vec<WireMessage<'_>> = delivered
        .iter()
        .zip(&systems)
        .zip(&users)
        .map(|((d, s), u)| WireMessage {
            message_id: &d.data.message_id,
            receipt_handle: &d.receipt,
            body: &d.data.body,
            md5_of_body: digest::md5_hex(d.data.body.as_bytes()),
            md5_of_message_attributes: digest::attributes_md5(u.iter().copied()),
            attributes: (!s.is_empty()).then_some(Pairs(s.as_slice())),
            message_attributes: (!u.is_empty()).then_some(Pairs(u.as_slice())),
        })
        .collect();
    json(&wire::ReceiveMessageResponse { messages })
}

/// SendMessage's digests of a message: of its body and of its attributes.
fn digests(m: &NewMessage) -> (String, Option<String>) {
    (
        digest::md5_hex(m.body.as_bytes()),
        digest::attributes_md5(m.attributes.iter().map(|(k, v)| (k.as_str(), v))),
    )
}

#[derive(Clone)]
struct ServerState {
    sim: SqsSim,
    shutdown: CancellationToken,
}

async fn handle(State(s): State<ServerState>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let op = target.strip_prefix("AmazonSQS.").unwrap_or(target);
    let cx = Context {
        host: headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost"),
        region: sigv4_region(&headers).unwrap_or(DEFAULT_REGION),
        shutdown: &s.shutdown,
    };
    let answer = match s.sim.fault_for(op, &body) {
        Some(SqsFault::Throttle) => Err(SqsError::Throttled),
        Some(SqsFault::InternalError) => Err(SqsError::InternalError),
        Some(SqsFault::Delay(d)) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = s.shutdown.cancelled() => {}
            }
            s.sim.dispatch(op, &body, cx).await
        }
        None => s.sim.dispatch(op, &body, cx).await,
    };
    match answer {
        Ok(out) => ([(CONTENT_TYPE, HeaderValue::from_static(JSON))], out).into_response(),
        Err(e) => {
            bump(&s.sim.inner.counters.errors, 1);
            let query = HeaderValue::from_str(&e.query_header())
                .unwrap_or_else(|_| HeaderValue::from_static("InternalError;Receiver"));
            let status = if e.sender_fault() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (
                status,
                [
                    (CONTENT_TYPE, HeaderValue::from_static(JSON)),
                    (
                        axum::http::HeaderName::from_static("x-amzn-query-error"),
                        query,
                    ),
                ],
                e.body(),
            )
                .into_response()
        }
    }
}

/// Serves until `shutdown` is cancelled. Long polls in progress then return what they have
/// (nothing), so shutdown never waits for them.
pub async fn serve_sqs(
    listener: TcpListener,
    sim: SqsSim,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    let state = ServerState {
        sim,
        shutdown: shutdown.clone(),
    };
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // Small answers go out at once rather than waiting on Nagle.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .with_context(|| match addr {
            Some(addr) => format!("SQS simulator on {addr} failed"),
            None => "SQS simulator failed".to_owned(),
        })
}
