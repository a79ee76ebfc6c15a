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
