//! Error classification, in one place: every downstream failure is retryable or terminal, and
//! some "failures" mean the effect is already there. The README's table is this file.

use reqwest::StatusCode;
use tonic::Code;

use crate::proto::common::v1::ErrorCode;
use crate::proto::reservation::v1::{CommitStatus, ReleaseStatus};

/// A call that did its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// This call made the change.
    Done,
    /// The change was already there (a repeat): counts as success.
    AlreadyApplied,
}

/// A call that did not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Worth trying again: the peer was unreachable, slow, overloaded or briefly wrong.
    #[error("{0}")]
    Retryable(String),
    /// Trying again cannot help; `class` is a short bounded reason for the DLQ.
    #[error("{reason}")]
    Terminal { class: &'static str, reason: String },
}

impl CallError {
    /// A peer's refusal: retrying cannot help, so the message goes to the DLQ.
    pub fn terminal(reason: impl Into<String>) -> Self {
        CallError::Terminal {
            class: "downstream_rejected",
            reason: reason.into(),
        }
    }
}

/// A gRPC status other than OK.
pub fn grpc_status(status: &tonic::Status) -> Result<Applied, CallError> {
    let text = format!(
        "gRPC {:?}: {}",
        status.code(),
        truncate(status.message(), 300)
    );
    match status.code() {
        Code::AlreadyExists => Ok(Applied::AlreadyApplied),
        // A CANCELLED made on this side by the transport (it carries the transport's error
        // as its source: the connection was reset or closed mid-call) is a broken connection,
        // not the peer's verdict. Only a CANCELLED the peer sent is terminal.
        Code::Cancelled if std::error::Error::source(status).is_some() => {
            Err(CallError::Retryable(text))
        }
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown => Err(CallError::Retryable(text)),
        _ => Err(CallError::terminal(text)),
    }
}

/// An OK `ReleaseHold` response, by its status field.
pub fn release_status(
    status: i32,
    error: Option<&crate::proto::common::v1::Error>,
) -> Result<Applied, CallError> {
    match ReleaseStatus::try_from(status) {
        Ok(ReleaseStatus::Success) => Ok(Applied::Done),
        Ok(ReleaseStatus::AlreadyReleased | ReleaseStatus::NotFound) => Ok(Applied::AlreadyApplied),
        // An older server that leaves the status unset answers OK without an error: success.
        Ok(ReleaseStatus::Unspecified) if error.is_none() => Ok(Applied::Done),
        Ok(ReleaseStatus::Unspecified | ReleaseStatus::Failed) => Err(body_error(
            "ReleaseHold",
            status_name_release(status),
            error,
        )),
        Err(_) => Err(CallError::terminal(format!(
            "ReleaseHold answered unknown status {status}"
        ))),
    }
}

/// An OK `CommitReservation` response, by its status field. `FAILED_*` are business
/// rejections: terminal.
pub fn commit_status(
    status: i32,
    error: Option<&crate::proto::common::v1::Error>,
) -> Result<Applied, CallError> {
    match CommitStatus::try_from(status) {
        Ok(CommitStatus::Success) => Ok(Applied::Done),
        Ok(CommitStatus::Unspecified) if error.is_none() => Ok(Applied::Done),
        Ok(s) => Err(CallError::terminal(format!(
            "CommitReservation answered {}{}",
            s.as_str_name(),
            error
                .map(|e| format!(": {}", describe(e)))
                .unwrap_or_default()
        ))),
        Err(_) => Err(CallError::terminal(format!(
            "CommitReservation answered unknown status {status}"
        ))),
    }
}

fn status_name_release(status: i32) -> &'static str {
    ReleaseStatus::try_from(status)
        .map(|s| s.as_str_name())
        .unwrap_or("?")
}

/// A FAILED release: retryable only when the error code says the failure was transient.
fn body_error(
    rpc: &str,
    status: &str,
    error: Option<&crate::proto::common::v1::Error>,
) -> CallError {
    let text = format!(
        "{rpc} answered {status}{}",
        error
            .map(|e| format!(": {}", describe(e)))
            .unwrap_or_default()
    );
    let transient = error.is_some_and(|e| {
        matches!(
            ErrorCode::try_from(e.code),
            Ok(ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::UpstreamTimeout
                | ErrorCode::UpstreamError
                | ErrorCode::RateLimited
                | ErrorCode::Internal
                | ErrorCode::ConcurrentModification)
        )
    });
    if transient {
        CallError::Retryable(text)
    } else {
        CallError::terminal(text)
    }
}

fn describe(e: &crate::proto::common::v1::Error) -> String {
    let code = ErrorCode::try_from(e.code)
        .map(|c| c.as_str_name())
        .unwrap_or("ERROR_CODE_?");
    format!("{code} {}", truncate(&e.message, 200))
}

/// An HTTP status from the reservation API.
pub fn http_status(status: StatusCode, body: &str) -> Result<Applied, CallError> {
    if status.is_success() {
        return Ok(Applied::Done);
    }
    let text = format!("HTTP {}: {}", status.as_u16(), truncate(body, 300));
    match status.as_u16() {
        // 401/403 are retried: a token rotation in progress should not dead-letter events.
        401 | 403 | 408 | 425 | 429 | 500..=599 => Err(CallError::Retryable(text)),
        _ => Err(CallError::terminal(text)),
    }
}

/// A transport failure from reqwest (connect, timeout, reset): retryable. A request that could
/// not even be built is a bug on our side, reported as terminal so it is looked at.
pub fn http_transport(e: &reqwest::Error) -> CallError {
    if e.is_builder() {
        return CallError::terminal(format!("cannot build request: {e}"));
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    CallError::Retryable(truncate(&text, 400).to_string())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_follow_the_table() {
        for c in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Internal,
            Code::Unknown,
        ] {
            assert!(
                matches!(
                    grpc_status(&tonic::Status::new(c, "x")),
                    Err(CallError::Retryable(_))
                ),
                "{c:?}"
            );
        }
        for c in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::DataLoss,
            Code::Cancelled,
        ] {
            assert!(
                matches!(
                    grpc_status(&tonic::Status::new(c, "x")),
                    Err(CallError::Terminal { .. })
                ),
                "{c:?}"
            );
        }
        assert_eq!(
            grpc_status(&tonic::Status::already_exists("x")),
            Ok(Applied::AlreadyApplied)
        );
    }

    /// Found by the chaos soak: a connection reset mid-call surfaced as `CANCELLED: operation
    /// was canceled` (hyper's error, mapped by tonic), which dead-lettered valid events.
    #[test]
    fn a_cancelled_made_by_the_transport_is_retryable() {
        let local = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(local.code(), Code::Cancelled);
        assert!(
            matches!(grpc_status(&local), Err(CallError::Retryable(_))),
            "{local:?}"
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let mut reset = tonic::Status::cancelled("operation was canceled");
        reset.set_source(std::sync::Arc::new(io));
        assert!(matches!(grpc_status(&reset), Err(CallError::Retryable(_))));
        // The peer's own CANCELLED (from the grpc-status trailer, no source) stays terminal.
        assert!(matches!(
            grpc_status(&tonic::Status::cancelled("x")),
            Err(CallError::Terminal { .. })
        ));
    }

    #[test]
    fn http_statuses_follow_the_table() {
        for s in [401, 403, 408, 425, 429, 500, 502, 503, 504] {
            let st = StatusCode::from_u16(s).expect("status");
            assert!(
                matches!(http_status(st, ""), Err(CallError::Retryable(_))),
                "{s}"
            );
        }
        for s in [400, 404, 409, 410, 415, 422] {
            let st = StatusCode::from_u16(s).expect("status");
            assert!(
                matches!(http_status(st, ""), Err(CallError::Terminal { .. })),
                "{s}"
            );
        }
        assert_eq!(http_status(StatusCode::NO_CONTENT, ""), Ok(Applied::Done));
    }

    #[test]
    fn response_statuses() {
        assert_eq!(
            release_status(ReleaseStatus::Success as i32, None),
            Ok(Applied::Done)
        );
        assert_eq!(
            release_status(ReleaseStatus::AlreadyReleased as i32, None),
            Ok(Applied::AlreadyApplied)
        );
        assert_eq!(
            release_status(ReleaseStatus::NotFound as i32, None),
            Ok(Applied::AlreadyApplied)
        );
        assert!(matches!(
            release_status(ReleaseStatus::Failed as i32, None),
            Err(CallError::Terminal { .. })
        ));
        let transient = crate::proto::common::v1::Error {
            code: ErrorCode::Unavailable as i32,
            ..Default::default()
        };
        assert!(matches!(
            release_status(ReleaseStatus::Failed as i32, Some(&transient)),
            Err(CallError::Retryable(_))
        ));
        assert_eq!(
            commit_status(CommitStatus::Success as i32, None),
            Ok(Applied::Done)
        );
        for s in [
            CommitStatus::FailedPayment,
            CommitStatus::FailedExpired,
            CommitStatus::FailedConflict,
        ] {
            assert!(
                matches!(
                    commit_status(s as i32, None),
                    Err(CallError::Terminal { .. })
                ),
                "{s:?}"
            );
        }
    }
}
