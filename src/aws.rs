//! The AWS SDK's settings, shared by the queue (SQS) and the configuration's Secrets Manager
//! overlay: below both, so neither depends on the other.

/// Loads AWS settings the SDK's usual way (env keys, `AWS_PROFILE`, web identity, …),
/// with the region from the config. `AWS_ENDPOINT_URL(_SQS)` is honoured by the SDK itself.
pub(crate) async fn sdk_config(region: &str, profile: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()));
    if let Some(p) = profile {
        loader = loader.profile_name(p);
    }
    loader.load().await
}

/// One short line for an AWS SDK error, for people: the service's error code and message
/// (`AWS.SimpleQueueService.NonExistentQueue: The specified queue does not exist.`), `timed out`,
/// or the chain of causes of a call that got no answer. Never the SDK's `Debug` form (the raw
/// response, headers and all), which `DisplayErrorContext` appends.
pub(crate) fn error_text<E, R>(e: &aws_sdk_sqs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_sqs::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                (None, Some(message)) => message.to_string(),
                (None, None) => causes(err),
            }
        }
        SdkError::TimeoutError(_) => "timed out".to_string(),
        other => causes(other),
    }
}

/// An error and its sources on one line, each said once (some repeat their source's text in
/// their own; the SDK, tonic and reqwest put the useful part in sources).
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}
