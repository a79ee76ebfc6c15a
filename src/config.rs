//! Settings from the environment. Every variable is read as text by envy and then parsed
//! here, so a bad value stops start-up with one line naming the variable, the value and what
//! was expected — never a generic deserializer message.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A value that must never reach logs, metrics or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that sends it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A setting that stops start-up. Holds the variable's name so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set: expected {expected}")]
    Missing {
        var: &'static str,
        expected: &'static str,
    },
    #[error("{var}={value:?} is invalid: expected {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: String,
    },
    #[error("cannot read the environment: {0}")]
    Environment(String),
}

/// Every variable, as text. Unknown variables are ignored; names are the fields, upper-cased.
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    sqs_queue_url: Option<String>,
    sqs_wait_time: Option<String>,
    sqs_visibility_timeout: Option<String>,
    sqs_dlq_url: Option<String>,
    worker_concurrency: Option<String>,
    max_retries: Option<String>,
    backoff_base_ms: Option<String>,
    backoff_max_ms: Option<String>,
    redelivery_backoff_base_secs: Option<String>,
    redelivery_backoff_max_secs: Option<String>,
    shutdown_timeout_secs: Option<String>,
    dedupe_capacity: Option<String>,
    dedupe_ttl_secs: Option<String>,
    inventory_grpc_addr: Option<String>,
    inventory_timeout_ms: Option<String>,
    reservation_api_base: Option<String>,
    reservation_api_token: Option<String>,
    reservation_api_timeout_ms: Option<String>,
    aws_region: Option<String>,
    aws_profile: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    server_port: Option<String>,
    grpc_debug_port: Option<String>,
    otel_exporter_otlp_endpoint: Option<String>,
    pod_name: Option<String>,
    use_secret_manager: Option<String>,
    secret_name: Option<String>,
    debug_process_event: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines (the default).
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

/// The worker's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The queue to consume (`SQS_QUEUE_URL`). A `.fifo` suffix switches on group ordering.
    pub queue_url: String,
    /// Long-poll wait per receive (`SQS_WAIT_TIME`, 0–20 s).
    pub wait_time: Duration,
    /// Visibility requested on receive and renewed by the heartbeat (`SQS_VISIBILITY_TIMEOUT`).
    pub visibility_timeout: Duration,
    /// Where terminal messages go (`SQS_DLQ_URL`); else the source queue's RedrivePolicy target.
    pub dlq_url: Option<String>,
    /// Messages worked on at once (`WORKER_CONCURRENCY`); also bounds messages held unstarted.
    pub concurrency: usize,
    /// Attempts per delivery before leaving the message for a later redelivery (`MAX_RETRIES`).
    pub max_retries: u32,
    /// First in-delivery retry delay; doubles per attempt (`BACKOFF_BASE_MS`).
    pub backoff_base: Duration,
    /// Ceiling of the in-delivery retry delay (`BACKOFF_MAX_MS`).
    pub backoff_max: Duration,
    /// Visibility given to a message whose retries are spent, doubled per receive
    /// (`REDELIVERY_BACKOFF_BASE_SECS`).
    pub redelivery_base: Duration,
    /// Ceiling of that visibility (`REDELIVERY_BACKOFF_MAX_SECS`, ≤ 12 h, SQS's maximum).
    pub redelivery_max: Duration,
    /// How long in-flight work may take to finish after SIGTERM (`SHUTDOWN_TIMEOUT_SECS`).
    pub shutdown_timeout: Duration,
    /// Completed envelope ids remembered to drop redelivered duplicates (`DEDUPE_CAPACITY`).
    pub dedupe_capacity: usize,
    /// How long a completed id is remembered (`DEDUPE_TTL_SECS`).
    pub dedupe_ttl: Duration,
    /// The inventory service as a URI (`INVENTORY_GRPC_ADDR`, `host:port` or a URL).
    pub inventory_uri: String,
    /// Per-call deadline for inventory calls (`INVENTORY_TIMEOUT_MS`).
    pub inventory_timeout: Duration,
    /// Base URL of the reservation API, no trailing slash (`RESERVATION_API_BASE`).
    pub reservation_api_base: String,
    /// Bearer token for the reservation API (`RESERVATION_API_TOKEN`).
    pub reservation_api_token: Option<Secret>,
    /// Per-request timeout for the reservation API (`RESERVATION_API_TIMEOUT_MS`).
    pub reservation_api_timeout: Duration,
    /// AWS region (`AWS_REGION`).
    pub aws_region: String,
    /// Named AWS profile for local runs (`AWS_PROFILE`).
    pub aws_profile: Option<String>,
    /// A tracing filter directive (`LOG_LEVEL`, e.g. `info` or `reservation_worker=debug`).
    pub log_level: String,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// Port of health and readiness (`SERVER_PORT`; 0 picks a free port).
    pub server_port: u16,
    /// Port of gRPC health, reflection and the debug service (`GRPC_DEBUG_PORT`).
    pub grpc_debug_port: u16,
    /// Where traces go (`OTEL_EXPORTER_OTLP_ENDPOINT`); tracing export is off when unset.
    /// The other `OTEL_*` variables are read by the OpenTelemetry SDK itself.
    pub otel_endpoint: Option<String>,
    /// This pod's name (`POD_NAME`, from the downward API), on every log line.
    pub pod_name: Option<String>,
    /// Overlay settings from AWS Secrets Manager (`USE_SECRET_MANAGER`).
    pub use_secret_manager: bool,
    /// The secret to read when `use_secret_manager` is on (`SECRET_NAME`).
    pub secret_name: Option<String>,
    /// Serve `WorkerDebug/ProcessEvent`, which runs a workflow for real (`DEBUG_PROCESS_EVENT`,
    /// off by default).
    pub debug_process_event: bool,
}

/// SQS's ceiling for a message's visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

impl Config {
    /// Reads and validates the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads and validates the given variables (the environment, in tests a list).
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let raw: RawEnv = envy::from_iter(vars.into_iter().filter(|(k, _)| {
            // envy upper-cases field names; our variables are all upper-case already.
            k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        }))
        .map_err(|e| ConfigError::Environment(e.to_string()))?;
        Self::validate(raw)
    }

    /// Whether the queue is FIFO (its URL ends in `.fifo`), which turns on group ordering.
    pub fn is_fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }

    fn validate(raw: RawEnv) -> Result<Config, ConfigError> {
        let queue_url = match nonempty(raw.sqs_queue_url) {
            Some(u) => url("SQS_QUEUE_URL", u)?,
            None => {
                return Err(ConfigError::Missing {
                    var: "SQS_QUEUE_URL",
                    expected: "the URL of the SQS queue to consume",
                });
            }
        };
        let dlq_url = nonempty(raw.sqs_dlq_url)
            .map(|u| url("SQS_DLQ_URL", u))
            .transpose()?;
        let wait = int(
            "SQS_WAIT_TIME",
            raw.sqs_wait_time,
            20,
            0,
            20,
            "whole seconds",
        )?;
        let visibility = int(
            "SQS_VISIBILITY_TIMEOUT",
            raw.sqs_visibility_timeout,
            30,
            2,
            MAX_VISIBILITY.as_secs(),
            "whole seconds",
        )?;
        let concurrency = int(
            "WORKER_CONCURRENCY",
            raw.worker_concurrency,
            20,
            1,
            10_000,
            "a number of tasks",
        )?;
        let max_retries = int("MAX_RETRIES", raw.max_retries, 5, 1, 100, "attempts")?;
        let backoff_base = int(
            "BACKOFF_BASE_MS",
            raw.backoff_base_ms,
            1000,
            1,
            600_000,
            "milliseconds",
        )?;
        let backoff_max = int(
            "BACKOFF_MAX_MS",
            raw.backoff_max_ms,
            30_000,
            1,
            3_600_000,
            "milliseconds",
        )?;
        let redelivery_base = int(
            "REDELIVERY_BACKOFF_BASE_SECS",
            raw.redelivery_backoff_base_secs,
            30,
            0,
            MAX_VISIBILITY.as_secs(),
            "whole seconds",
        )?;
        let redelivery_max = int(
            "REDELIVERY_BACKOFF_MAX_SECS",
            raw.redelivery_backoff_max_secs,
            900,
            0,
            MAX_VISIBILITY.as_secs(),
            "whole seconds",
        )?;
        let shutdown = int(
            "SHUTDOWN_TIMEOUT_SECS",
            raw.shutdown_timeout_secs,
            25,
            0,
            3600,
            "whole seconds",
        )?;
        let dedupe_capacity = int(
            "DEDUPE_CAPACITY",
            raw.dedupe_capacity,
            10_000,
            0,
            10_000_000,
            "a number of envelope ids",
        )?;
        let dedupe_ttl = int(
            "DEDUPE_TTL_SECS",
            raw.dedupe_ttl_secs,
            900,
            1,
            86_400,
            "whole seconds",
        )?;
        let inventory_uri = inventory_uri(
            nonempty(raw.inventory_grpc_addr).unwrap_or_else(|| "inventory-svc:8020".into()),
        )?;
        let inventory_timeout = int(
            "INVENTORY_TIMEOUT_MS",
            raw.inventory_timeout_ms,
            5000,
            1,
            600_000,
            "milliseconds",
        )?;
        let base = nonempty(raw.reservation_api_base)
            .unwrap_or_else(|| "http://reservation-api:8010".into());
        let reservation_api_base = url("RESERVATION_API_BASE", base)?
            .trim_end_matches('/')
            .to_string();
        let reservation_api_timeout = int(
            "RESERVATION_API_TIMEOUT_MS",
            raw.reservation_api_timeout_ms,
            5000,
            1,
            600_000,
            "milliseconds",
        )?;
        let reservation_api_token = match nonempty(raw.reservation_api_token) {
            Some(t) if t.chars().any(|c| c.is_control() || c == ' ') => {
                return Err(ConfigError::Invalid {
                    var: "RESERVATION_API_TOKEN",
                    value: "***".into(),
                    expected: "a bearer token without spaces or control characters".into(),
                });
            }
            t => t.map(Secret),
        };
        let log_format = match nonempty(raw.log_format).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "LOG_FORMAT",
                    value: other.into(),
                    expected: "json or pretty".into(),
                });
            }
        };
        let log_level = nonempty(raw.log_level).unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(ConfigError::Invalid {
                var: "LOG_LEVEL",
                value: log_level,
                expected: format!("a level (error, warn, info, debug, trace) or filter ({e})"),
            });
        }
        let server_port = int("SERVER_PORT", raw.server_port, 8040, 0, 65535, "a TCP port")?;
        let grpc_debug_port = int(
            "GRPC_DEBUG_PORT",
            raw.grpc_debug_port,
            8041,
            0,
            65535,
            "a TCP port",
        )?;
        if server_port != 0 && server_port == grpc_debug_port {
            return Err(ConfigError::Invalid {
                var: "GRPC_DEBUG_PORT",
                value: grpc_debug_port.to_string(),
                expected: "a port other than SERVER_PORT".into(),
            });
        }
        let use_secret_manager = boolean("USE_SECRET_MANAGER", raw.use_secret_manager)?;
        let secret_name = nonempty(raw.secret_name);
        if use_secret_manager && secret_name.is_none() {
            return Err(ConfigError::Missing {
                var: "SECRET_NAME",
                expected: "the name or ARN of the secret to read (USE_SECRET_MANAGER is true)",
            });
        }
        let otel_endpoint = nonempty(raw.otel_exporter_otlp_endpoint)
            .map(|u| url("OTEL_EXPORTER_OTLP_ENDPOINT", u))
            .transpose()?;
        Ok(Config {
            otel_endpoint,
            pod_name: nonempty(raw.pod_name),
            use_secret_manager,
            secret_name,
            debug_process_event: boolean("DEBUG_PROCESS_EVENT", raw.debug_process_event)?,
            queue_url,
            wait_time: Duration::from_secs(wait),
            visibility_timeout: Duration::from_secs(visibility),
            dlq_url,
            concurrency: concurrency as usize,
            max_retries: max_retries as u32,
            backoff_base: Duration::from_millis(backoff_base),
            backoff_max: Duration::from_millis(backoff_max),
            redelivery_base: Duration::from_secs(redelivery_base),
            redelivery_max: Duration::from_secs(redelivery_max),
            shutdown_timeout: Duration::from_secs(shutdown),
            dedupe_capacity: dedupe_capacity as usize,
            dedupe_ttl: Duration::from_secs(dedupe_ttl),
            inventory_uri,
            inventory_timeout: Duration::from_millis(inventory_timeout),
            reservation_api_base,
            reservation_api_token,
            reservation_api_timeout: Duration::from_millis(reservation_api_timeout),
            aws_region: nonempty(raw.aws_region).unwrap_or_else(|| "ap-northeast-2".into()),
            aws_profile: nonempty(raw.aws_profile),
            log_level,
            log_format,
            server_port: server_port as u16,
            grpc_debug_port: grpc_debug_port as u16,
        })
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Parses an optional integer within `min..=max`, naming the variable on failure.
fn int(
    var: &'static str,
    value: Option<String>,
    default: u64,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<u64, ConfigError> {
    let Some(text) = nonempty(value) else {
        return Ok(default);
    };
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            var,
            value: text,
            expected: format!("an integer from {min} to {max} ({unit})"),
        }),
    }
}

/// Parses an optional boolean (`true`/`false`, `1`/`0`, `yes`/`no`), default false.
fn boolean(var: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match nonempty(value).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            var,
            value: other.to_string(),
            expected: "true or false".into(),
        }),
    }
}

/// Checks that a value is an absolute http(s) URL with a host.
fn url(var: &'static str, value: String) -> Result<String, ConfigError> {
    match reqwest::Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(value),
        _ => Err(ConfigError::Invalid {
            var,
            value,
            expected: "an absolute http:// or https:// URL".into(),
        }),
    }
}

/// Accepts `host:port` or an http(s) URL and returns a URI tonic can dial.
fn inventory_uri(value: String) -> Result<String, ConfigError> {
    let candidate = if value.contains("://") {
        value.clone()
    } else {
        format!("http://{value}")
    };
    match reqwest::Url::parse(&candidate) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.port_or_known_default().is_some()
                && (u.path().is_empty() || u.path() == "/") =>
        {
            Ok(candidate.trim_end_matches('/').to_string())
        }
        _ => Err(ConfigError::Invalid {
            var: "INVENTORY_GRPC_ADDR",
            value,
            expected: "host:port or an http(s):// URL with no path".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const QUEUE: (&str, &str) = ("SQS_QUEUE_URL", "http://127.0.0.1:5000/123/q");

    #[test]
    fn defaults_follow_the_documented_values() {
        let c = Config::from_vars(vars(&[QUEUE])).expect("valid");
        assert_eq!(c.wait_time, Duration::from_secs(20));
        assert_eq!(c.visibility_timeout, Duration::from_secs(30));
        assert_eq!(c.concurrency, 20);
        assert_eq!(c.max_retries, 5);
        assert_eq!(c.backoff_base, Duration::from_millis(1000));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(25));
        assert_eq!(c.inventory_uri, "http://inventory-svc:8020");
        assert_eq!(c.reservation_api_base, "http://reservation-api:8010");
        assert_eq!(c.aws_region, "ap-northeast-2");
        assert_eq!((c.server_port, c.grpc_debug_port), (8040, 8041));
        assert!(!c.is_fifo());
    }

    #[test]
    fn missing_queue_url_names_the_variable() {
        let e = Config::from_vars(vars(&[])).expect_err("must fail");
        assert!(e.to_string().starts_with("SQS_QUEUE_URL is not set"), "{e}");
    }

    #[test]
    fn bad_numbers_name_variable_value_and_range() {
        for (var, val) in [
            ("SQS_WAIT_TIME", "21"),
            ("SQS_WAIT_TIME", "abc"),
            ("WORKER_CONCURRENCY", "0"),
            ("MAX_RETRIES", "-1"),
            ("SERVER_PORT", "70000"),
        ] {
            let e = Config::from_vars(vars(&[QUEUE, (var, val)])).expect_err(var);
            let text = e.to_string();
            assert!(text.starts_with(&format!("{var}=\"{val}\"")), "{text}");
            assert!(text.contains("expected an integer from"), "{text}");
        }
    }

    #[test]
    fn inventory_address_accepts_host_port_and_urls() {
        for (given, want) in [
            ("inv:9000", "http://inv:9000"),
            ("http://inv:9000/", "http://inv:9000"),
            ("https://inv.example.com", "https://inv.example.com"),
        ] {
            let c = Config::from_vars(vars(&[QUEUE, ("INVENTORY_GRPC_ADDR", given)])).expect(given);
            assert_eq!(c.inventory_uri, want);
        }
        let e = Config::from_vars(vars(&[QUEUE, ("INVENTORY_GRPC_ADDR", "ftp://x:1")]))
            .expect_err("bad scheme");
        assert!(e.to_string().contains("INVENTORY_GRPC_ADDR"), "{e}");
    }

    #[test]
    fn token_never_appears_in_errors_or_debug() {
        let c = Config::from_vars(vars(&[QUEUE, ("RESERVATION_API_TOKEN", "s3cr3t")])).expect("ok");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let e = Config::from_vars(vars(&[QUEUE, ("RESERVATION_API_TOKEN", "s3 cr3t")]))
            .expect_err("space");
        assert!(!e.to_string().contains("s3"), "{e}");
    }

    #[test]
    fn switches_and_the_secret_name() {
        let c = Config::from_vars(vars(&[QUEUE, ("DEBUG_PROCESS_EVENT", "TRUE")])).expect("ok");
        assert!(c.debug_process_event && !c.use_secret_manager);
        let e = Config::from_vars(vars(&[QUEUE, ("USE_SECRET_MANAGER", "true")]))
            .expect_err("needs a name");
        assert!(e.to_string().starts_with("SECRET_NAME is not set"), "{e}");
        let e =
            Config::from_vars(vars(&[QUEUE, ("USE_SECRET_MANAGER", "maybe")])).expect_err("bad");
        assert!(
            e.to_string().starts_with("USE_SECRET_MANAGER=\"maybe\""),
            "{e}"
        );
    }

    #[test]
    fn fifo_is_detected_from_the_url() {
        let c = Config::from_vars(vars(&[("SQS_QUEUE_URL", "http://h/1/q.fifo")])).expect("ok");
        assert!(c.is_fifo());
    }
}
