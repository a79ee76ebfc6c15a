//! Error classification, in one place: every downstream failure is retryable or terminal, and
//! some "failures" mean the effect is already there. The table in docs/reliability.md is this file.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use tonic::Code;

use crate::labels::DeadLetterReason;
use crate::proto::common::v1::ErrorCode;
use crate::proto::reservation::v1::{CommitStatus, ReleaseStatus};
use crate::text::prefix;

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
    Terminal {
        class: DeadLetterReason,
        reason: String,
    },
}

impl CallError {
    /// A peer's refusal: retrying cannot help, so the message goes to the DLQ.
    pub fn terminal(reason: impl Into<String>) -> Self {
        CallError::Terminal {
            class: DeadLetterReason::DownstreamRejected,
            reason: reason.into(),
        }
    }
}

/// The start of the message tonic gives a status it made up from the HTTP status of an answer
/// that had no `grpc-status` (tonic's `infer_grpc_status`; `tests/it/proxies.rs` fails if a tonic
/// upgrade changes it).
const HTTP_DERIVED: &str = "grpc-status header missing, mapped from HTTP status code";

/// A gRPC status other than OK.
pub(crate) fn grpc_status(status: &tonic::Status) -> Result<Applied, CallError> {
    let text = format!(
        "gRPC {:?}: {}",
        status.code(),
        prefix(&crate::redact::text(status.message()), 300)
    );
    // An answer without `grpc-status` is an ingress's or an auth sidecar's (401, 403, a 404
    // for a missing route), never the inventory service's verdict on the event.
    if status.message().starts_with(HTTP_DERIVED) {
        return Err(CallError::Retryable(format!(
            "{text} (an HTTP answer without grpc-status: a proxy in front of the inventory service)"
        )));
    }
    match status.code() {
        Code::AlreadyExists => Ok(Applied::AlreadyApplied),
        // A CANCELLED made on this side by the transport (it carries the transport's error
        // as its source: the connection was reset or closed mid-call) is a broken connection,
        // not the peer's verdict. Only a CANCELLED the peer sent is terminal.
        Code::Cancelled if std::error::Error::source(status).is_some() => {
            Err(CallError::Retryable(text))
        }
        // About the deployment (credentials, a route, a server version), not the event: an
        // auth sidecar or ingress that speaks gRPC (Envoy) sends these with a real
        // grpc-status. Retried like the REST side's 401/403, so fixing it applies the events.
        Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented => {
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

/// A gRPC health probe's error status: whether the inventory service answered. Its own
/// UNIMPLEMENTED (it does not serve `grpc.health.v1`) is an answer; one made up from a
/// proxy's HTTP status, and everything retryable, is not.
pub(crate) fn grpc_probe(status: &tonic::Status) -> Result<(), CallError> {
    if status.code() == Code::Unimplemented && !status.message().starts_with(HTTP_DERIVED) {
        return Ok(());
    }
    match grpc_status(status) {
        Err(e @ CallError::Retryable(_)) => Err(e),
        Ok(_) | Err(CallError::Terminal { .. }) => Ok(()),
    }
}

/// An OK `ReleaseHold` response, by its status field.
pub(crate) fn release_status(
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
pub(crate) fn commit_status(
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
    format!("{code} {}", prefix(&crate::redact::text(&e.message), 200))
}

/// What the status line and headers of a reservation API answer decide on their own: a 2xx
/// is applied, a 3xx or a 2xx HTML page is not the API's answer at all. `None` when the body
/// is needed ([`http_status`]). Redirects are never followed (a 303 would turn the PATCH
/// into a GET and its 200 into a false success); they are retried like 401/403, because a
/// redirect comes from something in front of the API (an auth proxy sending to its login page,
/// a maintenance page) that an operator fixes, and the event must apply once they have.
pub(crate) fn http_head(
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Result<Applied, CallError>> {
    if status.is_redirection() {
        let to = headers
            .get(LOCATION)
            .map(|l| format!(" to {}", location(l)))
            .unwrap_or_default();
        return Some(Err(CallError::Retryable(format!(
            "HTTP {}: redirect{to} not followed (RESERVATION_API_BASE must reach the API itself, not a proxy's login or maintenance page)",
            status.as_u16()
        ))));
    }
    if !status.is_success() {
        return None;
    }
    let html = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html {
        return Some(Err(CallError::Retryable(format!(
            "HTTP {}: an HTML page is not the reservation API's answer (a proxy's login or maintenance page?)",
            status.as_u16()
        ))));
    }
    Some(Ok(Applied::Done))
}

/// A redirect's target for an error message: without its query and fragment, which can hold
/// tokens (an OAuth `state`, a signed URL).
fn location(value: &HeaderValue) -> String {
    let text = String::from_utf8_lossy(value.as_bytes());
    let end = text.find(['?', '#']).unwrap_or(text.len());
    prefix(&crate::redact::text(&text[..end]), 200).to_string()
}

/// An HTTP status from the reservation API.
pub(crate) fn http_status(status: StatusCode, body: &str) -> Result<Applied, CallError> {
    if status.is_success() {
        return Ok(Applied::Done);
    }
    // Masked before the cut: a peer may echo the token, and a cut token no longer matches.
    let text = format!(
        "HTTP {}: {}",
        status.as_u16(),
        prefix(&crate::redact::text(body), 300)
    );
    match status.as_u16() {
        // 401/403 are retried: a token rotation in progress should not dead-letter events.
        401 | 403 | 408 | 425 | 429 | 500..=599 => Err(CallError::Retryable(text)),
        _ => Err(CallError::terminal(text)),
    }
}

/// A transport failure from reqwest (connect, timeout, reset): retryable. A request that could
/// not even be built is a bug on our side, reported as terminal so it is looked at.
pub(crate) fn http_transport(e: &reqwest::Error) -> CallError {
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
    CallError::Retryable(prefix(&crate::redact::text(&text), 400).to_string())
}

/// A REST call that got no response, as its span's `error.type`.
impl crate::telemetry::tracing::ErrorType for reqwest::Error {
    fn error_type(&self) -> &'static str {
        if self.is_timeout() {
            "timeout"
        } else if self.is_connect() {
            "connect"
        } else if self.is_body() || self.is_decode() {
            "body"
        } else {
            "request"
        }
    }
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
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
        ] {
            assert!(
                matches!(
                    grpc_status(&tonic::Status::new(c, "x")),
                    Err(CallError::Retryable(_))
                ),
                "{c:?} is about the deployment, not the event"
            );
        }
        for c in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::OutOfRange,
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

    /// A status tonic made up from a proxy's HTTP answer is retried, whatever code it got.
    #[test]
    fn a_status_derived_from_an_http_answer_is_retryable() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::FailedPrecondition, 412),
        ] {
            let derived = tonic::Status::new(code, format!("{HTTP_DERIVED} {http}"));
            assert!(
                matches!(grpc_status(&derived), Err(CallError::Retryable(_))),
                "{derived:?}"
            );
        }
    }

    #[test]
    fn redirects_and_html_pages_are_not_the_apis_answer() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LOCATION,
            HeaderValue::from_static("https://sso.example/login?state=tok-secret-1#x"),
        );
        for s in [301, 302, 303, 307, 308] {
            let st = StatusCode::from_u16(s).expect("status");
            match http_head(st, &headers) {
                Some(Err(CallError::Retryable(e))) => {
                    assert!(e.contains("https://sso.example/login"), "{e}");
                    assert!(!e.contains("tok-secret"), "query dropped: {e}");
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        let mut html = HeaderMap::new();
        html.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Text/HTML; charset=utf-8"),
        );
        assert!(matches!(
            http_head(StatusCode::OK, &html),
            Some(Err(CallError::Retryable(_)))
        ));
        let mut json = HeaderMap::new();
        json.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(http_head(StatusCode::OK, &json), Some(Ok(Applied::Done)));
        assert_eq!(
            http_head(StatusCode::NO_CONTENT, &HeaderMap::new()),
            Some(Ok(Applied::Done))
        );
        assert_eq!(http_head(StatusCode::NOT_FOUND, &json), None);
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
