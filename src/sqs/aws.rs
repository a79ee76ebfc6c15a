//! [`SqsQueue`]: the [`Queue`] seam implemented with aws-sdk-sqs, plus what only start-up and
//! the operator commands need (finding the dead-letter queue, the raw client).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};
use tracing::Instrument;

use super::{
    BATCH_LIMIT, CALL_TIMEOUT, Delivery, DlqOrigin, EntryFailure, Queue, QueueError,
    QueueErrorKind, SqsOperation, receive_timeout,
};
use crate::config::{Config, MAX_VISIBILITY};
use crate::telemetry::metrics::metrics;
use crate::telemetry::tracing::ClientSpan;

/// Error codes SQS uses for "slow down": a 4xx worth retrying.
const THROTTLING_CODES: [&str; 4] = [
    "ThrottlingException",
    "RequestThrottled",
    "Throttling",
    "KmsThrottled",
];

/// Error codes of credentials that may not do what was asked.
const ACCESS_DENIED_CODES: [&str; 8] = [
    "AccessDenied",
    "AccessDeniedException",
    "KmsAccessDenied",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "MissingAuthenticationToken",
];

/// Error codes of a queue that does not exist (the query and the JSON protocol's spellings).
const NOT_FOUND_CODES: [&str; 3] = [
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NonExistentQueue",
];

impl QueueError {
    /// A request that could not be built: the worker's own mistake, which retrying repeats.
    fn building(operation: SqsOperation, e: impl std::error::Error + 'static) -> Self {
        QueueError {
            operation,
            kind: QueueErrorKind::Rejected,
            message: crate::aws::causes(&e),
        }
    }

    /// An SDK call's error, with its kind read from SQS's error code and HTTP status.
    pub(crate) fn from_sdk<E>(operation: SqsOperation, e: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let kind = match &e {
            SdkError::ServiceError(se) => kind_of(se.err().code(), se.raw().status().as_u16()),
            _ => QueueErrorKind::Transient,
        };
        QueueError {
            operation,
            kind,
            message: crate::aws::error_text(&e),
        }
    }
}

/// The kind of an error SQS answered with `code` and HTTP `status`.
fn kind_of(code: Option<&str>, status: u16) -> QueueErrorKind {
    let is = |codes: &[&str]| code.is_some_and(|c| codes.contains(&c));
    if is(&THROTTLING_CODES) {
        QueueErrorKind::Throttled
    } else if is(&ACCESS_DENIED_CODES) || status == 403 {
        QueueErrorKind::AccessDenied
    } else if is(&NOT_FOUND_CODES) {
        QueueErrorKind::NotFound
    } else if (400..500).contains(&status) {
        QueueErrorKind::Rejected
    } else {
        QueueErrorKind::Transient
    }
}

/// An SQS queue reached through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    /// The client for long polls, whose timeout fits the poll's wait; built at the first
    /// receive. One per queue handle rather than a per-call override: merging an override into
    /// the client's settings costs every receive more CPU than its signing does.
    receiver: Arc<Mutex<Option<(Duration, aws_sdk_sqs::Client)>>>,
    /// The source queue's URL.
    pub url: String,
}

impl SqsQueue {
    /// A handle on `url` using the given AWS settings.
    pub fn new(sdk: &aws_config::SdkConfig, url: impl Into<String>) -> SqsQueue {
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
        SqsQueue {
            client: aws_sdk_sqs::Client::from_conf(conf),
            receiver: Arc::default(),
            url: url.into(),
        }
    }

    /// The client for a long poll of `wait`: the queue's, with the operation timeout of a
    /// receive.
    fn receiver(&self, wait: Duration) -> aws_sdk_sqs::Client {
        let mut cached = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((w, client)) = cached.as_ref()
            && *w == wait
        {
            return client.clone();
        }
        let conf = self.client.config();
        let timeouts = conf
            .timeout_config()
            .map(TimeoutConfig::to_builder)
            .unwrap_or_default()
            .operation_timeout(receive_timeout(wait))
            .build();
        let client =
            aws_sdk_sqs::Client::from_conf(conf.to_builder().timeout_config(timeouts).build());
        *cached = Some((wait, client.clone()));
        client
    }

    /// Builds the SDK settings from the worker's config and returns a handle on its queue.
    pub async fn from_config(config: &Config) -> SqsQueue {
        let sdk = crate::aws::sdk_config(&config.aws_region, config.aws_profile.as_deref()).await;
        SqsQueue::new(&sdk, config.queue_url.clone())
    }

    /// The same queue through a client whose calls each give up after `limit` (retries
    /// included): for writes that must not hold anything up for long.
    pub fn with_timeout(&self, limit: Duration) -> SqsQueue {
        let conf = self
            .client
            .config()
            .to_builder()
            .timeout_config(TimeoutConfig::builder().operation_timeout(limit).build())
            .build();
        SqsQueue {
            client: aws_sdk_sqs::Client::from_conf(conf),
            receiver: Arc::default(),
            url: self.url.clone(),
        }
    }

    /// The same client pointed at another queue (the DLQ).
    pub fn sibling(&self, url: impl Into<String>) -> SqsQueue {
        SqsQueue {
            client: self.client.clone(),
            receiver: Arc::default(),
            url: url.into(),
        }
    }

    /// The raw SDK client, for commands that need more than the worker does.
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
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

#[async_trait]
impl Queue for SqsQueue {
    fn url(&self) -> &str {
        &self.url
    }

    /// Long-polls for up to `max` messages (1–10).
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let _timer = metrics().sqs_call(SqsOperation::ReceiveMessage);
        let call = ClientSpan::sqs(SqsOperation::ReceiveMessage, &self.url);
        let out = self
            .receiver(wait)
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, BATCH_LIMIT) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .instrument(call.span().clone())
            .await
            .map_err(|e| call.fail(QueueError::from_sdk(SqsOperation::ReceiveMessage, e)))?;
        call.message_count(out.messages().len());
        let received_in = call.span_context();
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| Delivery {
                received_in: received_in.clone(),
                ..Delivery::from_sdk(m)
            })
            .collect())
    }

    /// Deletes up to 10 messages by receipt handle; returns the entries SQS refused.
    async fn delete_batch(&self, receipts: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*r)
                    .build()
                    .map_err(|e| QueueError::building(SqsOperation::DeleteMessageBatch, e))
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
        entry_failures(
            SqsOperation::DeleteMessageBatch,
            out.failed(),
            receipts.len(),
        )
        .map_err(|e| call.fail(e))
    }

    /// Sets the visibility of up to 10 messages; returns the entries SQS refused.
    async fn change_visibility_batch(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let sent = entries.len();
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, (r, d))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*r)
                    .visibility_timeout(d.as_secs().min(MAX_VISIBILITY.as_secs()) as i32)
                    .build()
                    .map_err(|e| {
                        QueueError::building(SqsOperation::ChangeMessageVisibilityBatch, e)
                    })
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
        entry_failures(
            SqsOperation::ChangeMessageVisibilityBatch,
            out.failed(),
            sent,
        )
        .map_err(|e| call.fail(e))
    }

    /// Sends one message with string attributes. On a FIFO queue `group` is required and the
    /// deduplication id makes a repeated send harmless.
    async fn send(
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
                .map_err(|e| QueueError::building(SqsOperation::SendMessage, e))?;
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
    async fn attributes(&self) -> Result<HashMap<String, String>, QueueError> {
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
}

/// The refused entries of a batch call of `sent` entries, by their position in the request (ids
/// are indexes). An answer naming an id the request did not have leaves every entry's outcome
/// unknown, so the whole call counts as failed (and is tried again) rather than the entry it
/// should have named counting as done.
fn entry_failures(
    operation: SqsOperation,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
    sent: usize,
) -> Result<Vec<EntryFailure>, QueueError> {
    failed
        .iter()
        .map(|f| match f.id().parse::<usize>() {
            Ok(index) if index < sent => Ok(EntryFailure {
                index,
                code: f.code().to_string(),
                message: f.message().unwrap_or_default().to_string(),
                sender_fault: f.sender_fault(),
            }),
            _ => Err(QueueError {
                operation,
                kind: QueueErrorKind::Transient,
                message: format!(
                    "the answer names a failed entry {:?}, and the request's entries were 0 to {}: the outcome of each is unknown",
                    crate::text::shortened_chars(f.id(), 40),
                    sent.saturating_sub(1)
                ),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_entry_the_request_did_not_have_fails_the_whole_call() {
        let failed = |id: &str| {
            aws_sdk_sqs::types::BatchResultErrorEntry::builder()
                .id(id)
                .code("ReceiptHandleIsInvalid")
                .sender_fault(true)
                .build()
                .expect("entry")
        };
        let op = SqsOperation::DeleteMessageBatch;
        let named = entry_failures(op, &[failed("2")], 3).expect("entry 2 was sent");
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].index, 2);
        assert!(named[0].sender_fault);
        for stranger in ["3", "x", "-1", ""] {
            let e = entry_failures(op, &[failed("0"), failed(stranger)], 3)
                .expect_err("an id that was not sent");
            assert_eq!(e.kind, QueueErrorKind::Transient, "{stranger:?}");
            assert!(
                e.to_string().contains(&format!("{stranger:?}"))
                    && e.to_string().contains("0 to 2"),
                "{e}"
            );
        }
    }

    #[test]
    fn error_kinds_follow_the_code_and_then_the_status() {
        let cases = [
            (Some("ThrottlingException"), 400, QueueErrorKind::Throttled),
            (Some("RequestThrottled"), 403, QueueErrorKind::Throttled),
            (Some("AccessDenied"), 400, QueueErrorKind::AccessDenied),
            (
                Some("InvalidClientTokenId"),
                400,
                QueueErrorKind::AccessDenied,
            ),
            (None, 403, QueueErrorKind::AccessDenied),
            (
                Some("AWS.SimpleQueueService.NonExistentQueue"),
                400,
                QueueErrorKind::NotFound,
            ),
            (Some("QueueDoesNotExist"), 400, QueueErrorKind::NotFound),
            (
                Some("ReceiptHandleIsInvalid"),
                400,
                QueueErrorKind::Rejected,
            ),
            (Some("InternalError"), 500, QueueErrorKind::Transient),
            (None, 503, QueueErrorKind::Transient),
        ];
        for (code, status, kind) in cases {
            assert_eq!(kind_of(code, status), kind, "{code:?} {status}");
        }
        assert!(!QueueErrorKind::Throttled.sender_fault());
        assert!(!QueueErrorKind::Transient.sender_fault());
        assert!(QueueErrorKind::NotFound.sender_fault());
    }
}
