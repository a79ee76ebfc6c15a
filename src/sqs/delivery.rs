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
    pub(crate) fn from_sdk(m: &Message) -> Delivery {
        let sys = m.attributes();
        let sys_get = |k: MessageSystemAttributeName| sys.and_then(|a| a.get(&k)).cloned();
        let mut attributes: HashMap<String, String> = m
            .message_attributes()
            .map(|attrs| {
                attrs
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(xray) = sys_get(MessageSystemAttributeName::AwsTraceHeader) {
            attributes.insert("AWSTraceHeader".into(), xray);
        }
        Delivery {
            message_id: m.message_id().unwrap_or_default().to_string(),
            receipt_handle: m.receipt_handle().unwrap_or_default().to_string(),
            body: m.body().unwrap_or_default().to_string(),
            receive_count: sys_get(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
            group_id: sys_get(MessageSystemAttributeName::MessageGroupId),
            sequence_number: sys_get(MessageSystemAttributeName::SequenceNumber)
                .and_then(|n| n.parse().ok()),
            sent_at: sys_get(MessageSystemAttributeName::SentTimestamp)
                .and_then(|t| super::epoch_millis(&t)),
            attributes,
            received_at: Instant::now(),
            received_in: None,
        }
    }
}
