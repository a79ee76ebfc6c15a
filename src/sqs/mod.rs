//! The queue: receiving (the [`poller`]), and every write back to SQS (the [`acker`]).
//! [`Queue`] is the one seam to AWS, so the rest of the worker never sees SDK types.

pub mod delivery;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};

use aws_sdk_sqs::config::timeout::TimeoutConfig;
use tracing::Instrument;

use crate::config::Config;
pub use crate::telemetry::metrics::SqsOperation;
use crate::telemetry::metrics::metrics;
use crate::telemetry::tracing::ClientSpan;
pub use delivery::Delivery;

/// Longest a ReceiveMessage may take beyond its long-poll wait before it counts as failed.
pub const RECEIVE_MARGIN: Duration = Duration::from_secs(5);

/// Longest any other SQS call may take (all its retries included) before it counts as failed,
/// so an endpoint that accepts connections and never answers cannot hang the worker.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The operation timeout of a ReceiveMessage that long-polls for `wait`.
pub fn receive_timeout(wait: Duration) -> Duration {
    wait + RECEIVE_MARGIN
}

/// A failed SQS call. The text comes from the SDK and never contains credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct QueueError {
    pub operation: SqsOperation,
    pub message: String,
    /// SQS refused the request itself (a 4xx other than throttling: too large, invalid):
    /// sending it again cannot help.
    pub sender_fault: bool,
}

/// Error codes SQS uses for "slow down": a 4xx worth retrying.
const THROTTLING_CODES: [&str; 4] = [
    "ThrottlingException",
    "RequestThrottled",
    "Throttling",
    "KmsThrottled",
];

impl QueueError {
    /// An error that is not SQS's answer to a well-formed request (building it failed).
    fn new(operation: SqsOperation, e: impl std::error::Error) -> Self {
        QueueError {
            operation,
            message: DisplayErrorContext(e).to_string(),
            sender_fault: false,
        }
    }

    /// An SDK call's error, with whether SQS blamed the request.
    fn from_sdk<E>(operation: SqsOperation, e: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let sender_fault = match &e {
            SdkError::ServiceError(se) => {
                (400..500).contains(&se.raw().status().as_u16())
                    && !se
                        .err()
                        .code()
                        .is_some_and(|c| THROTTLING_CODES.contains(&c))
            }
            _ => false,
        };
        QueueError {
            operation,
            message: DisplayErrorContext(&e).to_string(),
            sender_fault,
        }
    }
}

/// One entry of a batch call that SQS refused, by its position in the request.
#[derive(Debug, Clone)]
pub struct EntryFailure {
    pub index: usize,
    pub code: String,
    pub message: String,
    /// SQS says the request itself was wrong (e.g. an expired receipt): retrying won't help.
    pub sender_fault: bool,
}

/// Where the dead-letter queue's URL came from, said beside it to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqOrigin {
    /// `SQS_DLQ_URL`, which wins.
    Setting,
    /// The `deadLetterTargetArn` of the source queue's RedrivePolicy.
    RedrivePolicy,
}

impl DlqOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            DlqOrigin::Setting => "SQS_DLQ_URL",
            DlqOrigin::RedrivePolicy => "RedrivePolicy target",
        }
    }
}

/// The SQS queue the worker consumes and, if known, its dead-letter queue.
#[derive(Clone, Debug)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    /// The source queue's URL.
    pub url: String,
}

impl Queue {
    /// A handle on `url` using the given AWS settings.
    pub fn new(sdk: &aws_config::SdkConfig, url: impl Into<String>) -> Queue {
        // The SDK sets only a connect timeout by default; an answer that never comes would
        // otherwise be waited for forever. With every call bounded that way, the SDK's stalled
        // stream protection (a throughput check wrapped around each small request and response
        // body, ~1 % of the worker's CPU in the profile) adds nothing.
        let conf = aws_sdk_sqs::config::Builder::from(sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            )
            .stalled_stream_protection(
                aws_sdk_sqs::config::StalledStreamProtectionConfig::disabled(),
            )
            .build();
        Queue {
            client: aws_sdk_sqs::Client::from_conf(conf),
            url: url.into(),
        }
    }

    /// Builds the SDK settings from the worker's config and returns a handle on its queue.
    pub async fn from_config(config: &Config) -> Queue {
        let sdk = crate::aws::sdk_config(&config.aws_region, config.aws_profile.as_deref()).await;
        Queue::new(&sdk, config.queue_url.clone())
    }

    /// The same queue through a client whose calls each give up after `limit` (retries
    /// included): for writes that must not hold anything up for long.
    pub fn with_timeout(&self, limit: Duration) -> Queue {
        let conf = self
            .client
            .config()
            .to_builder()
            .timeout_config(TimeoutConfig::builder().operation_timeout(limit).build())
            .build();
        Queue {
            client: aws_sdk_sqs::Client::from_conf(conf),
            url: self.url.clone(),
        }
    }

    /// The same client pointed at another queue (the DLQ).
    pub fn sibling(&self, url: impl Into<String>) -> Queue {
        Queue {
            client: self.client.clone(),
            url: url.into(),
        }
    }

    /// The raw SDK client, for commands that need more than the worker does.
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// Long-polls for up to `max` messages (1–10).
    pub async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let _timer = metrics().sqs_call(SqsOperation::ReceiveMessage);
        let call = ClientSpan::sqs(SqsOperation::ReceiveMessage, &self.url);
        let timeouts = self
            .client
            .config()
            .timeout_config()
            .map(TimeoutConfig::to_builder)
            .unwrap_or_default()
            .operation_timeout(receive_timeout(wait))
            .build();
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .instrument(call.span().clone())
            .await
            .map_err(|e| call.fail(QueueError::from_sdk(SqsOperation::ReceiveMessage, e)))?;
        call.message_count(out.messages().len());
        Ok(out.messages().iter().map(Delivery::from_sdk).collect())
    }

    /// Deletes up to 10 messages by receipt handle; returns the entries SQS refused.
    pub async fn delete_batch(&self, receipts: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*r)
                    .build()
                    .map_err(|e| QueueError::new(SqsOperation::DeleteMessageBatch, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let _timer = metrics().sqs_call(SqsOperation::DeleteMessageBatch);
        let call = ClientSpan::sqs(SqsOperation::DeleteMessageBatch, &self.url);
        call.message_count(receipts.len());
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .instrument(call.span().clone())
            .await
            .map_err(|e| call.fail(QueueError::from_sdk(SqsOperation::DeleteMessageBatch, e)))?;
        Ok(entry_failures(out.failed()))
    }

    /// Sets the visibility of up to 10 messages; returns the entries SQS refused.
    pub async fn change_visibility_batch(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, (r, d))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*r)
                    .visibility_timeout(
                        d.as_secs().min(crate::config::MAX_VISIBILITY.as_secs()) as i32
                    )
                    .build()
                    .map_err(|e| QueueError::new(SqsOperation::ChangeMessageVisibilityBatch, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let _timer = metrics().sqs_call(SqsOperation::ChangeMessageVisibilityBatch);
        let call = ClientSpan::sqs(SqsOperation::ChangeMessageVisibilityBatch, &self.url);
        call.message_count(entries.len());
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .instrument(call.span().clone())
            .await
            .map_err(|e| {
                call.fail(QueueError::from_sdk(
                    SqsOperation::ChangeMessageVisibilityBatch,
                    e,
                ))
            })?;
        Ok(entry_failures(out.failed()))
    }

    /// Sets one message's visibility (the heartbeat's renewal).
    pub async fn change_visibility(&self, receipt: &str, d: Duration) -> Result<(), QueueError> {
        let _timer = metrics().sqs_call(SqsOperation::ChangeMessageVisibility);
        let call = ClientSpan::sqs(SqsOperation::ChangeMessageVisibility, &self.url);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(d.as_secs().min(crate::config::MAX_VISIBILITY.as_secs()) as i32)
            .send()
            .instrument(call.span().clone())
            .await
            .map_err(|e| {
                call.fail(QueueError::from_sdk(
                    SqsOperation::ChangeMessageVisibility,
                    e,
                ))
            })?;
        Ok(())
    }

    /// Sends one message with string attributes. On a FIFO queue `group` is required and the
    /// deduplication id makes a repeated send harmless.
    pub async fn send(
        &self,
        body: &str,
        attributes: &[(&str, String)],
        group: Option<&str>,
        dedup_id: Option<&str>,
    ) -> Result<String, QueueError> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        for (name, value) in attributes {
            let v = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| QueueError::new(SqsOperation::SendMessage, e))?;
            req = req.message_attributes(*name, v);
        }
        if self.url.ends_with(".fifo") {
            req = req
                .message_group_id(group.unwrap_or("default"))
                .message_deduplication_id(
                    dedup_id
                        .map(str::to_string)
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                );
        }
        let _timer = metrics().sqs_call(SqsOperation::SendMessage);
        let call = ClientSpan::sqs(SqsOperation::SendMessage, &self.url);
        let out = req
            .send()
            .instrument(call.span().clone())
            .await
            .map_err(|e| call.fail(QueueError::from_sdk(SqsOperation::SendMessage, e)))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    /// The queue's attributes (all of them), as plain strings.
    pub async fn attributes(&self) -> Result<HashMap<String, String>, QueueError> {
        let _timer = metrics().sqs_call(SqsOperation::GetQueueAttributes);
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| QueueError::from_sdk(SqsOperation::GetQueueAttributes, e))?;
        Ok(out
            .attributes()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The dead-letter queue and where it came from: `SQS_DLQ_URL` (`configured`) when set,
    /// else the target of this queue's RedrivePolicy; `None` with neither. One rule for the
    /// worker and `dlq peek|redrive`, so they never pick different queues. `attrs` are this
    /// queue's attributes when the caller has them; they are fetched only if needed.
    pub async fn dead_letter_url(
        &self,
        configured: Option<&str>,
        attrs: Option<&HashMap<String, String>>,
    ) -> Result<Option<(String, DlqOrigin)>, QueueError> {
        if let Some(url) = configured {
            return Ok(Some((url.to_string(), DlqOrigin::Setting)));
        }
        let fetched;
        let attrs = match attrs {
            Some(a) => a,
            None => {
                fetched = self.attributes().await?;
                &fetched
            }
        };
        Ok(self
            .redrive_dlq_url(attrs)
            .await?
            .map(|url| (url, DlqOrigin::RedrivePolicy)))
    }

    /// The URL of the dead-letter queue named by this queue's RedrivePolicy, if it has one.
    /// `attrs` are this queue's attributes, as [`Queue::attributes`] returns them.
    pub async fn redrive_dlq_url(
        &self,
        attrs: &HashMap<String, String>,
    ) -> Result<Option<String>, QueueError> {
        let Some(policy) = attrs.get("RedrivePolicy") else {
            return Ok(None);
        };
        let arn = serde_json::from_str::<serde_json::Value>(policy)
            .ok()
            .and_then(|v| v.get("deadLetterTargetArn")?.as_str().map(str::to_string));
        let Some(arn) = arn else {
            return Ok(None);
        };
        // arn:aws:sqs:region:account:name
        let parts: Vec<&str> = arn.split(':').collect();
        let (Some(account), Some(name)) = (parts.get(4), parts.get(5)) else {
            return Ok(None);
        };
        let _timer = metrics().sqs_call(SqsOperation::GetQueueUrl);
        let out = self
            .client
            .get_queue_url()
            .queue_name(*name)
            .queue_owner_aws_account_id(*account)
            .send()
            .await
            .map_err(|e| QueueError::from_sdk(SqsOperation::GetQueueUrl, e))?;
        Ok(out.queue_url().map(str::to_string))
    }
}

/// The refused entries of a batch call, by their position in the request (ids are indexes).
fn entry_failures(failed: &[aws_sdk_sqs::types::BatchResultErrorEntry]) -> Vec<EntryFailure> {
    failed
        .iter()
        .map(|f| EntryFailure {
            index: f.id().parse().unwrap_or(usize::MAX),
            code: f.code().to_string(),
            message: f.message().unwrap_or_default().to_string(),
            sender_fault: f.sender_fault(),
        })
        .collect()
}

/// SQS's millisecond timestamp attribute (`SentTimestamp`) as a time.
pub(crate) fn epoch_millis(text: &str) -> Option<SystemTime> {
    text.parse::<u64>()
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}
