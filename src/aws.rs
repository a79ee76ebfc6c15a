//! The AWS SDK's settings, shared by the queue (SQS) and the configuration's Secrets Manager
//! overlay: below both, so neither depends on the other.

/// Loads AWS settings the SDK's usual way (env keys, `AWS_PROFILE`, web identity, …),
/// with the region from the config. `AWS_ENDPOINT_URL(_SQS)` is honoured by the SDK itself.
pub(crate) async fn sdk_config(region: &str, profile: Option<&str>) -> aws_config::SdkConfig {
    loader(region, profile).load().await
}

fn loader(region: &str, profile: Option<&str>) -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .http_client(https_client());
    match profile {
        Some(p) => loader.profile_name(p),
        None => loader,
    }
}

/// The HTTPS client every SDK client made from these settings shares (the queue's, its
/// long-poll and write clients, the DLQ's, Secrets Manager's, the credential providers'). Left
/// to itself the SDK makes one for each client, and each loads the system's root certificates
/// into a trust store of its own and keeps connections of its own. Built as the SDK's default
/// is: rustls with aws-lc, proxies from the environment (`HTTPS_PROXY`, `NO_PROXY`).
fn https_client() -> aws_sdk_sqs::config::SharedHttpClient {
    use aws_smithy_http_client::{ConnectorBuilder, proxy::ProxyConfig, tls};
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use reservation_testkit::fast_sqs::FastSqs;
    use tokio::net::{TcpListener, TcpStream};

    use crate::sqs::{Queue, SqsQueue};

    /// A loopback relay to `upstream` that counts the connections made through it.
    async fn counting_relay(upstream: String) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(upstream).await.expect("upstream");
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    #[tokio::test]
    async fn the_queues_clients_share_one_http_client_and_its_connections() {
        let sqs = FastSqs::start().await;
        let queue = sqs.create_queue("shared", None).await;
        let (endpoint, accepted) =
            counting_relay(sqs.endpoint.trim_start_matches("http://").to_string()).await;
        let sdk = super::loader("us-east-1", None)
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::for_tests())
            .load()
            .await;
        let main = SqsQueue::new(&sdk, queue.url.clone());
        let writes = main.with_timeout(Duration::from_secs(5));
        // Each call through another of the SDK clients the worker makes: the queue's own, its
        // long-poll client, the write client, then the queue's again. One after another, so
        // each finds the last one's connection idle once it is back in the pool.
        let settle = || tokio::time::sleep(Duration::from_millis(100));
        main.attributes().await.expect("attributes");
        settle().await;
        writes.send("{}", &[], None, None).await.expect("send");
        settle().await;
        let got = main
            .receive(10, Duration::from_secs(1), Duration::from_secs(30))
            .await
            .expect("receive");
        settle().await;
        let receipts: Vec<&str> = got.iter().map(|d| d.receipt_handle.as_str()).collect();
        assert_eq!(receipts.len(), 1);
        writes.delete_batch(&receipts).await.expect("delete");
        settle().await;
        main.attributes().await.expect("attributes again");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for all the clients' calls"
        );
    }
}
