//! The AWS JSON 1.0 shapes aws-sdk-sqs sends and reads, and the errors as it maps them.
//!
//! Field names follow the SDK's serializers (`protocol_serde/shape_*_input.rs`) and
//! deserializers (`shape_message.rs`, `shape_batch_result_error_entry.rs`, …). SQS is
//! "query compatible": the SDK takes an error's code from the `x-amzn-query-error` header
//! (`<code>;<Sender|Receiver>`) when present, so that header carries the codes the SDK matches
//! on (e.g. `AWS.SimpleQueueService.NonExistentQueue` for `QueueDoesNotExist`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize, Serializer};

/// A refusal, as SQS words it. Each variant knows its JSON `__type` and its query code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SqsError {
    #[error("The specified queue does not exist.")]
    QueueDoesNotExist,
    #[error("The input receipt handle \"{0}\" is not a valid receipt handle.")]
    ReceiptHandleIsInvalid(String),
    #[error("Message does not exist or is not available for visibility timeout change.")]
    MessageNotInflight,
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("The request must contain the parameter {0}.")]
    MissingParameter(&'static str),
    #[error("A queue already exists with the same name and a different value for attribute {0}")]
    QueueNameExists(String),
    #[error("Unknown Attribute {0}.")]
    InvalidAttributeName(String),
    #[error("Invalid characters found in the message body.")]
    InvalidMessageContents,
    #[error("There should be at least one entry in the request.")]
    EmptyBatchRequest,
    #[error("Maximum number of entries per request are 10. You have sent {0}.")]
    TooManyEntriesInBatchRequest(usize),
    #[error("Id {0} repeated.")]
    BatchEntryIdsNotDistinct(String),
    #[error(
        "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long. Found {0:?}."
    )]
    InvalidBatchEntryId(String),
    #[error("Batch requests cannot be longer than {0} bytes.")]
    BatchRequestTooLong(usize),
    #[error("The operation {0} is not supported by this simulator.")]
    UnsupportedOperation(String),
    #[error("The request body could not be read: {0}")]
    Serialization(String),
    /// Injected by a test: the request rate was exceeded.
    #[error("Rate exceeded")]
    Throttled,
    /// Injected by a test: SQS failed on its side (HTTP 500).
    #[error("We encountered an internal error. Please try again.")]
    InternalError,
}

impl SqsError {
    /// The JSON protocol's error name (after `com.amazonaws.sqs#`).
    pub(super) fn json_type(&self) -> &'static str {
        match self {
            SqsError::QueueDoesNotExist => "QueueDoesNotExist",
            SqsError::ReceiptHandleIsInvalid(_) => "ReceiptHandleIsInvalid",
            SqsError::MessageNotInflight => "MessageNotInflight",
            SqsError::InvalidParameterValue(_) => "InvalidParameterValueException",
            SqsError::MissingParameter(_) => "MissingParameter",
            SqsError::QueueNameExists(_) => "QueueNameExists",
            SqsError::InvalidAttributeName(_) => "InvalidAttributeName",
            SqsError::InvalidMessageContents => "InvalidMessageContents",
            SqsError::EmptyBatchRequest => "EmptyBatchRequest",
            SqsError::TooManyEntriesInBatchRequest(_) => "TooManyEntriesInBatchRequest",
            SqsError::BatchEntryIdsNotDistinct(_) => "BatchEntryIdsNotDistinct",
            SqsError::InvalidBatchEntryId(_) => "InvalidBatchEntryId",
            SqsError::BatchRequestTooLong(_) => "BatchRequestTooLong",
            SqsError::UnsupportedOperation(_) => "UnsupportedOperation",
            SqsError::Serialization(_) => "SerializationException",
            SqsError::Throttled => "ThrottlingException",
            SqsError::InternalError => "InternalError",
        }
    }

    /// The query-protocol code: what the SDK's error enums match on, and the `Code` of a
    /// refused batch entry.
    pub(super) fn query_code(&self) -> &'static str {
        match self {
            SqsError::QueueDoesNotExist => "AWS.SimpleQueueService.NonExistentQueue",
            SqsError::ReceiptHandleIsInvalid(_) => "ReceiptHandleIsInvalid",
            SqsError::MessageNotInflight => "AWS.SimpleQueueService.MessageNotInflight",
            SqsError::InvalidParameterValue(_) => "InvalidParameterValue",
            SqsError::MissingParameter(_) => "MissingParameter",
            SqsError::QueueNameExists(_) => "QueueAlreadyExists",
            SqsError::InvalidAttributeName(_) => "InvalidAttributeName",
            SqsError::InvalidMessageContents => "InvalidMessageContents",
            SqsError::EmptyBatchRequest => "AWS.SimpleQueueService.EmptyBatchRequest",
            SqsError::TooManyEntriesInBatchRequest(_) => {
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
            }
            SqsError::BatchEntryIdsNotDistinct(_) => {
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
            }
            SqsError::InvalidBatchEntryId(_) => "AWS.SimpleQueueService.InvalidBatchEntryId",
            SqsError::BatchRequestTooLong(_) => "AWS.SimpleQueueService.BatchRequestTooLong",
            SqsError::UnsupportedOperation(_) => "AWS.SimpleQueueService.UnsupportedOperation",
            SqsError::Serialization(_) => "SerializationException",
            SqsError::Throttled => "RequestThrottled",
            SqsError::InternalError => "InternalError",
        }
    }

    /// Whether the caller's request was at fault (HTTP 400) rather than SQS (HTTP 500).
    pub(super) fn sender_fault(&self) -> bool {
        !matches!(self, SqsError::InternalError)
    }

    /// The error body: `{"__type":"com.amazonaws.sqs#…","message":"…"}`.
    pub(super) fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "__type")]
            kind: String,
            message: &'a str,
        }
        let message = self.to_string();
        serde_json::to_vec(&Body {
            kind: format!("com.amazonaws.sqs#{}", self.json_type()),
            message: &message,
        })
        .unwrap_or_default()
    }

    /// The `x-amzn-query-error` header value. Every error here is the caller's fault.
    pub(super) fn query_header(&self) -> String {
        let fault = if self.sender_fault() {
            "Sender"
        } else {
            "Receiver"
        };
        format!("{};{fault}", self.query_code())
    }
}

/// A message attribute exactly as the SDK sends it (binary values stay base64 text: they are
/// echoed back, never decoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct AttributeValue {
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_list_values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_list_values: Option<Vec<String>>,
}

impl AttributeValue {
    /// Bytes SQS counts toward the message size: name, type and value.
    pub(super) fn size(&self, name: &str) -> usize {
        name.len()
            + self.data_type.len()
            + self.string_value.as_ref().map_or(0, String::len)
            + self.binary_value.as_ref().map_or(0, |b| b.len() * 3 / 4)
    }
}

/// `QueueUrl` alone (DeleteQueue, PurgeQueue).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct QueueUrlRequest {
    pub queue_url: Option<String>,
}

/// CreateQueue: a name and optional attributes (tags are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateQueueRequest {
    pub queue_name: Option<String>,
    #[serde(default)]
    pub attributes: HashMap<String, String>,
}

/// GetQueueUrl: by name (the owner account is ignored: there is one).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GetQueueUrlRequest {
    pub queue_name: Option<String>,
}

/// ListQueues: optional prefix and paging.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListQueuesRequest {
    pub queue_name_prefix: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

/// GetQueueAttributes: `All` or named attributes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GetQueueAttributesRequest {
    pub queue_url: Option<String>,
    #[serde(default)]
    pub attribute_names: Vec<String>,
}

/// SetQueueAttributes: attributes to change.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SetQueueAttributesRequest {
    pub queue_url: Option<String>,
    #[serde(default)]
    pub attributes: HashMap<String, String>,
}

/// One message to send: SendMessage's body (with `QueueUrl`), or one SendMessageBatch entry
/// (with `Id`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SendEntry {
    pub queue_url: Option<String>,
    pub id: Option<String>,
    pub message_body: Option<String>,
    pub delay_seconds: Option<i64>,
    #[serde(default)]
    pub message_attributes: HashMap<String, AttributeValue>,
    #[serde(default)]
    pub message_system_attributes: HashMap<String, AttributeValue>,
    pub message_deduplication_id: Option<String>,
    pub message_group_id: Option<String>,
}

/// SendMessageBatch: up to 10 entries.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SendMessageBatchRequest {
    pub queue_url: Option<String>,
    #[serde(default)]
    pub entries: Vec<SendEntry>,
}

/// ReceiveMessage: how many, how long to wait, for how long to hide, which attributes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ReceiveMessageRequest {
    pub queue_url: Option<String>,
    /// The deprecated spelling of `MessageSystemAttributeNames`; both are honoured.
    #[serde(default)]
    pub attribute_names: Vec<String>,
    #[serde(default)]
    pub message_system_attribute_names: Vec<String>,
    #[serde(default)]
    pub message_attribute_names: Vec<String>,
    pub max_number_of_messages: Option<i64>,
    pub visibility_timeout: Option<i64>,
    pub wait_time_seconds: Option<i64>,
}

/// DeleteMessage: one receipt handle.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DeleteMessageRequest {
    pub queue_url: Option<String>,
    pub receipt_handle: Option<String>,
}

/// ChangeMessageVisibility: one receipt handle and its new timeout.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ChangeVisibilityRequest {
    pub queue_url: Option<String>,
    pub receipt_handle: Option<String>,
    pub visibility_timeout: Option<i64>,
}

/// One DeleteMessageBatch or ChangeMessageVisibilityBatch entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ReceiptEntry {
    pub id: Option<String>,
    pub receipt_handle: Option<String>,
    pub visibility_timeout: Option<i64>,
}

/// DeleteMessageBatch or ChangeMessageVisibilityBatch: up to 10 entries.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ReceiptBatchRequest {
    pub queue_url: Option<String>,
    #[serde(default)]
    pub entries: Vec<ReceiptEntry>,
}

/// Serializes a list of pairs as a JSON object without building a map.
pub(super) struct Pairs<'a, K, V>(pub &'a [(K, V)]);

impl<K: Serialize, V: Serialize> Serialize for Pairs<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// One received message as ReceiveMessage returns it, with SQS's digests (of the body, and of
/// the message attributes returned).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireMessage<'a> {
    pub message_id: &'a str,
    pub receipt_handle: &'a str,
    pub body: &'a str,
    #[serde(rename = "MD5OfBody")]
    pub md5_of_body: String,
    #[serde(
        rename = "MD5OfMessageAttributes",
        skip_serializing_if = "Option::is_none"
    )]
    pub md5_of_message_attributes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Pairs<'a, &'static str, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_attributes: Option<Pairs<'a, &'a str, &'a AttributeValue>>,
}

/// ReceiveMessage's answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ReceiveMessageResponse<'a> {
    pub messages: Vec<WireMessage<'a>>,
}

/// One accepted message of SendMessage (no `Id`) or SendMessageBatch.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SendResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub message_id: String,
    #[serde(rename = "MD5OfMessageBody")]
    pub md5_of_message_body: String,
    #[serde(
        rename = "MD5OfMessageAttributes",
        skip_serializing_if = "Option::is_none"
    )]
    pub md5_of_message_attributes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
}

/// A refused batch entry.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct BatchFailure {
    pub id: String,
    pub sender_fault: bool,
    pub code: &'static str,
    pub message: String,
}

impl BatchFailure {
    /// Entry `id` refused for `e` (always the sender's fault here).
    pub(super) fn new(id: &str, e: &SqsError) -> Self {
        BatchFailure {
            id: id.to_owned(),
            sender_fault: true,
            code: e.query_code(),
            message: e.to_string(),
        }
    }
}

/// An accepted DeleteMessageBatch / ChangeMessageVisibilityBatch entry.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct BatchSuccess {
    pub id: String,
}

/// A batch call's answer: accepted and refused entries.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct BatchResponse<T> {
    pub successful: Vec<T>,
    pub failed: Vec<BatchFailure>,
}

/// Checks batch entry ids the way SQS does: 1–10 entries, distinct, `[A-Za-z0-9_-]{1,80}`.
pub(super) fn check_batch_ids<'a>(
    ids: impl ExactSizeIterator<Item = Option<&'a str>>,
) -> Result<(), SqsError> {
    let n = ids.len();
    if n == 0 {
        return Err(SqsError::EmptyBatchRequest);
    }
    if n > 10 {
        return Err(SqsError::TooManyEntriesInBatchRequest(n));
    }
    let mut seen: Vec<&str> = Vec::with_capacity(n);
    for id in ids {
        let id = id.ok_or(SqsError::MissingParameter("Id"))?;
        let valid = !id.is_empty()
            && id.len() <= 80
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(SqsError::InvalidBatchEntryId(id.to_owned()));
        }
        if seen.contains(&id) {
            return Err(SqsError::BatchEntryIdsNotDistinct(id.to_owned()));
        }
        seen.push(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_codes_the_sdk_matches() {
        let e = SqsError::QueueDoesNotExist;
        assert_eq!(
            e.query_header(),
            "AWS.SimpleQueueService.NonExistentQueue;Sender"
        );
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body["__type"], "com.amazonaws.sqs#QueueDoesNotExist");
        assert_eq!(body["message"], "The specified queue does not exist.");
    }

    #[test]
    fn batch_ids_are_checked_like_sqs() {
        let ok = ["a", "b-1", "C_2"];
        assert!(check_batch_ids(ok.iter().map(|s| Some(*s))).is_ok());
        let none: [&str; 0] = [];
        assert_eq!(
            check_batch_ids(none.iter().map(|s| Some(*s))),
            Err(SqsError::EmptyBatchRequest)
        );
        let dup = ["a", "a"];
        assert!(matches!(
            check_batch_ids(dup.iter().map(|s| Some(*s))),
            Err(SqsError::BatchEntryIdsNotDistinct(_))
        ));
        let bad = ["a b"];
        assert!(matches!(
            check_batch_ids(bad.iter().map(|s| Some(*s))),
            Err(SqsError::InvalidBatchEntryId(_))
        ));
        let many: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert_eq!(
            check_batch_ids(many.iter().map(|s| Some(s.as_str()))),
            Err(SqsError::TooManyEntriesInBatchRequest(11))
        );
    }
}
