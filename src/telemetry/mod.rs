//! Telemetry: [`logging`] (JSON lines on stdout by default, or human-readable with
//! `LOG_FORMAT=pretty`), [`tracing`] (OpenTelemetry spans over OTLP, on when an endpoint is
//! set) and [`metrics`] (Prometheus). Logs and traces share one `tracing` subscriber, so
//! the spans that give log lines their fields are the spans that are exported.

pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod tracing;

use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Config;
use logging::LogSettings;
pub use logging::{batch_log_lines, write_pending_log_lines};

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The running telemetry. Call [`Telemetry::shutdown`] once the worker has stopped, so the
/// spans of its last messages are exported before the process exits.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter (waiting at most 5 s).
    pub(crate) async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks while its export thread hands the last batch to this runtime.
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(e)) = done {
            ::tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

/// Installs the global subscriber of the worker: logs as `LOG_FORMAT` says, filtered by
/// `RUST_LOG`/`LOG_LEVEL`, with `pod_name` on every JSON line and the config's secrets
/// redacted; and, when `config.otel_endpoint` is set, the OpenTelemetry layer. Must run on
/// the tokio runtime (the exporter is bound to it).
pub(crate) fn init(config: &Config) -> Result<Telemetry, tracing::TracingError> {
    // The token registered itself when the config was read; these the SDKs read themselves.
    crate::redact::register_from_env();
    let exporting = tracing::provider(config.otel_endpoint.as_deref(), config.pod_name.as_deref())?;
    let (provider, destination) = exporting.unzip();
    let logs = logging::layer(LogSettings {
        level: config.log_level.clone(),
        format: config.log_format,
        pod_name: config.pod_name.clone(),
    });
    let otel = provider.as_ref().map(tracing::layer);
    // A second init (a test, or a command that already set one up) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
    if let Some(d) = destination {
        ::tracing::info!(
            endpoint = %d.endpoint,
            protocol = d.protocol.as_str(),
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { provider })
}
