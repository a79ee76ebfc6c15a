//! [`Delivery`]: one received message, with what the rest of the pipeline needs from SQS.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

/// One received message. The receipt handle is this delivery's right to delete or hide it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on the first delivery; drives redelivery backoff.
    pub receive_count: u32,
    /// `MessageGroupId` on FIFO queues: the ordering key.
    pub group_id: Option<String>,
    /// `SequenceNumber` on FIFO queues: the message's place in its group.
    pub sequence_number: Option<u128>,
    /// `SentTimestamp`.
    pub sent_at: Option<SystemTime>,
    /// String-valued message attributes (and `AWSTraceHeader`, a system attribute).
    pub attributes: HashMap<String, String>,
    /// When this process received it.
    pub received_at: Instant,
    /// The span of the `ReceiveMessage` call that delivered it (when traces are exported):
    /// the message's process span links to it.
    pub received_in: Option<opentelemetry::trace::SpanContext>,
}

impl Delivery {
    /// Takes the message apart: its strings are moved, not copied.
    pub(crate) fn from_sdk(m: Message) -> Delivery {
        let mut sys = m.attributes.unwrap_or_default();
        let mut sys_take = |k: MessageSystemAttributeName| sys.remove(&k);
        let mut attributes: HashMap<String, String> = m
            .message_attributes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.string_value?)))
            .collect();
        if let Some(xray) = sys_take(MessageSystemAttributeName::AwsTraceHeader) {
            attributes.insert("AWSTraceHeader".into(), xray);
        }
        Delivery {
            message_id: m.message_id.unwrap_or_default(),
            receipt_handle: m.receipt_handle.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
            receive_count: sys_take(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
            group_id: sys_take(MessageSystemAttributeName::MessageGroupId),
            sequence_number: sys_take(MessageSystemAttributeName::SequenceNumber)
                .and_then(|n| n.parse().ok()),
            sent_at: sys_take(MessageSystemAttributeName::SentTimestamp)
                .and_then(|t| super::epoch_millis(&t)),
            attributes,
            received_at: Instant::now(),
            received_in: None,
        }
    }
}
