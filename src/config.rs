//! Settings from the environment, optionally overlaid by an AWS Secrets Manager secret. Every
//! variable is read as text by envy and then parsed here, so a bad value stops start-up with
//! one line naming the variable (or the secret's key), the value and what was expected — never
//! a generic deserializer message.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A value that must never reach logs, metrics or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Holds `value`, and registers it with [`crate::redact`] so no output of the process
    /// shows it, whatever path it takes there.
    pub fn new(value: String) -> Secret {
        crate::redact::register(&value);
        Secret(value)
    }

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
    /// The secret could not be read or is not a JSON object of strings. Never holds its values.
    #[error("cannot use secret {secret}: {problem}")]
    Secret { secret: String, problem: String },
    /// A value from the secret failed the same check as its variable would have.
    #[error("secret {secret} key {key}={value:?} is invalid: expected {expected}")]
    SecretValue {
        secret: String,
        key: &'static str,
        value: String,
        expected: String,
    },
    /// A required setting is in neither the environment nor the secret.
    #[error(
        "{var} is not set: expected {expected} (in the environment, or as {key} in secret {secret})"
    )]
    MissingEverywhere {
        var: &'static str,
        key: &'static str,
        secret: String,
        expected: &'static str,
    },
}

/// The secret's keys and the variables they override, in the order they are reported.
pub const SECRET_KEYS: [(&str, &str); 5] = [
    ("sqs_queue_url", "SQS_QUEUE_URL"),
    ("inventory_grpc_addr", "INVENTORY_GRPC_ADDR"),
    ("reservation_api_base", "RESERVATION_API_BASE"),
    ("reservation_api_token", "RESERVATION_API_TOKEN"),
    ("otel_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"),
];

/// How long reading the secret may take before start-up gives up.
const SECRET_TIMEOUT: Duration = Duration::from_secs(20);

/// What the secret contributed, so start-up can log it and `check` can show it (names only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    /// The secret's name or ARN (`SECRET_NAME`).
    pub name: String,
    /// Keys whose non-empty values overrode the environment.
    pub applied: Vec<&'static str>,
    /// Keys the worker does not know: ignored, and warned about (a typo would otherwise
    /// silently leave the environment's value in place).
    pub ignored: Vec<String>,
}

/// Every variable, as text. Unknown variables are ignored; names are the fields, upper-cased.
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    sqs_queue_url: Option<String>,
    sqs_wait_time: Option<String>,
    sqs_visibility_timeout: Option<String>,
    sqs_dlq_url: Option<String>,
    worker_concurrency: Option<String>,
    sqs_receive_loops: Option<String>,
    worker_threads: Option<String>,
    max_retries: Option<String>,
    backoff_base_ms: Option<String>,
    backoff_max_ms: Option<String>,
    redelivery_backoff_base_secs: Option<String>,
    redelivery_backoff_max_secs: Option<String>,
    shutdown_timeout_secs: Option<String>,
    dedupe_capacity: Option<String>,
    dedupe_ttl_secs: Option<String>,
    circuit_failure_threshold: Option<String>,
    circuit_failing_secs: Option<String>,
    circuit_probe_base_secs: Option<String>,
    circuit_probe_max_secs: Option<String>,
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
    /// ReceiveMessage loops running at once (`SQS_RECEIVE_LOOPS`, default
    /// `ceil(WORKER_CONCURRENCY / 10)`): one loop asks for at most 10 messages per round trip,
    /// so one loop caps the worker at 10 / receive latency (~500–1,000/s on real SQS).
    pub receive_loops: usize,
    /// Threads of the async runtime (`WORKER_THREADS`); see [`runtime_threads`].
    pub runtime_threads: usize,
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
    /// Retryable failures in a row that open a peer's circuit (`CIRCUIT_FAILURE_THRESHOLD`,
    /// 0 = no breaker).
    pub circuit_failures: u32,
    /// How long those failures must have lasted (`CIRCUIT_FAILING_SECS`).
    pub circuit_failing_for: Duration,
    /// The first wait between probes of an open circuit (`CIRCUIT_PROBE_BASE_SECS`); doubled
    /// after each failed probe up to `CIRCUIT_PROBE_MAX_SECS`.
    pub circuit_probe_base: Duration,
    /// The longest wait between probes (`CIRCUIT_PROBE_MAX_SECS`).
    pub circuit_probe_max: Duration,
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
    /// What the Secrets Manager overlay applied, when it was on.
    pub secret: Option<SecretSource>,
}

/// The most ids `DEDUPE_CAPACITY` may ask each of the worker's two duplicate memories to keep.
/// It bounds their memory: `make bench` measures what an id costs (docs/performance.md).
pub const MAX_DEDUPE_CAPACITY: usize = 100_000;

/// What a `DEDUPE_CAPACITY` error says the number counts.
const DEDUPE_CAPACITY_EXPECTED: &str =
    "ids in each of the worker's two duplicate memories; the bound keeps their memory in check";

/// SQS's ceiling for a message's visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

impl Config {
    /// The worker's settings: the process environment, overlaid by the secret when
    /// `USE_SECRET_MANAGER` is on, then validated.
    pub async fn load() -> Result<Config, ConfigError> {
        Self::load_from_vars(std::env::vars()).await
    }

    /// As [`Config::load`], from the given variables. A secret that cannot be read or parsed
    /// is an error, never a silent fallback to the environment.
    pub async fn load_from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        crate::redact::register_from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut raw = RawEnv::from_vars(vars)?;
        if !boolean("USE_SECRET_MANAGER", raw.use_secret_manager.clone())? {
            return Self::validate(raw);
        }
        let Some(name) = nonempty(raw.secret_name.clone()) else {
            return Err(secret_name_missing());
        };
        let region = nonempty(raw.aws_region.clone()).unwrap_or_else(|| DEFAULT_REGION.into());
        let text =
            read_secret(&region, nonempty(raw.aws_profile.clone()).as_deref(), &name).await?;
        let (source, values) = parse_secret(&name, &text)?;
        for (var, value) in values {
            raw.set(var, value);
        }
        let mut config = Self::validate(raw).map_err(|e| blame_secret(e, &source))?;
        config.secret = Some(source);
        Ok(config)
    }

    /// Reads and validates the given variables without the secret overlay (no AWS call):
    /// for unit tests and tools that must work offline.
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        Self::validate(RawEnv::from_vars(vars)?)
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
        let concurrency = concurrency(raw.worker_concurrency)?;
        // Enough loops for every slot to be asked for in one round of receives; more than
        // one per slot could never receive anything.
        let receive_loops = int(
            "SQS_RECEIVE_LOOPS",
            raw.sqs_receive_loops,
            concurrency.div_ceil(10),
            1,
            concurrency,
            "receive loops, at most WORKER_CONCURRENCY",
        )?;
        let runtime_threads = runtime_threads(raw.worker_threads, concurrency as usize)?;
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
            MAX_DEDUPE_CAPACITY as u64,
            DEDUPE_CAPACITY_EXPECTED,
        )?;
        let dedupe_ttl = int(
            "DEDUPE_TTL_SECS",
            raw.dedupe_ttl_secs,
            900,
            1,
            86_400,
            "whole seconds",
        )?;
        let circuit_failures = int(
            "CIRCUIT_FAILURE_THRESHOLD",
            raw.circuit_failure_threshold,
            10,
            0,
            1_000_000,
            "retryable failures in a row that open a peer's circuit; 0 turns the breakers off",
        )?;
        let circuit_failing_for = int(
            "CIRCUIT_FAILING_SECS",
            raw.circuit_failing_secs,
            10,
            0,
            3600,
            "whole seconds those failures must span",
        )?;
        let circuit_probe_base = int(
            "CIRCUIT_PROBE_BASE_SECS",
            raw.circuit_probe_base_secs,
            5,
            1,
            3600,
            "whole seconds",
        )?;
        let circuit_probe_max = int(
            "CIRCUIT_PROBE_MAX_SECS",
            raw.circuit_probe_max_secs,
            120.max(circuit_probe_base),
            circuit_probe_base,
            3600,
            "whole seconds, at least CIRCUIT_PROBE_BASE_SECS",
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
            t => t.map(Secret::new),
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
            return Err(secret_name_missing());
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
            secret: None,
            queue_url,
            wait_time: Duration::from_secs(wait),
            visibility_timeout: Duration::from_secs(visibility),
            dlq_url,
            concurrency: concurrency as usize,
            receive_loops: receive_loops as usize,
            runtime_threads,
            max_retries: max_retries as u32,
            backoff_base: Duration::from_millis(backoff_base),
            backoff_max: Duration::from_millis(backoff_max),
            redelivery_base: Duration::from_secs(redelivery_base),
            redelivery_max: Duration::from_secs(redelivery_max),
            shutdown_timeout: Duration::from_secs(shutdown),
            dedupe_capacity: dedupe_capacity as usize,
            dedupe_ttl: Duration::from_secs(dedupe_ttl),
            circuit_failures: circuit_failures as u32,
            circuit_failing_for: Duration::from_secs(circuit_failing_for),
            circuit_probe_base: Duration::from_secs(circuit_probe_base),
            circuit_probe_max: Duration::from_secs(circuit_probe_max),
            inventory_uri,
            inventory_timeout: Duration::from_millis(inventory_timeout),
            reservation_api_base,
            reservation_api_token,
            reservation_api_timeout: Duration::from_millis(reservation_api_timeout),
            aws_region: nonempty(raw.aws_region).unwrap_or_else(|| DEFAULT_REGION.into()),
            aws_profile: nonempty(raw.aws_profile),
            log_level,
            log_format,
            server_port: server_port as u16,
            grpc_debug_port: grpc_debug_port as u16,
        })
    }
}

/// The region when `AWS_REGION` is unset.
const DEFAULT_REGION: &str = "ap-northeast-2";

impl RawEnv {
    fn from_vars<I>(vars: I) -> Result<RawEnv, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        envy::from_iter(vars.into_iter().filter(|(k, _)| {
            // envy upper-cases field names; our variables are all upper-case already.
            k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        }))
        .map_err(|e| ConfigError::Environment(e.to_string()))
    }

    /// Overrides one of the variables the secret may carry.
    fn set(&mut self, var: &str, value: String) {
        let field = match var {
            "SQS_QUEUE_URL" => &mut self.sqs_queue_url,
            "INVENTORY_GRPC_ADDR" => &mut self.inventory_grpc_addr,
            "RESERVATION_API_BASE" => &mut self.reservation_api_base,
            "RESERVATION_API_TOKEN" => &mut self.reservation_api_token,
            "OTEL_EXPORTER_OTLP_ENDPOINT" => &mut self.otel_exporter_otlp_endpoint,
            _ => return,
        };
        *field = Some(value);
    }
}

impl SecretSource {
    /// Logs what the overlay did, by key name only, once logging is up.
    pub fn log(&self) {
        tracing::info!(secret = %self.name, keys = ?self.applied, "settings overlaid from Secrets Manager");
        if !self.ignored.is_empty() {
            tracing::warn!(secret = %self.name, keys = ?self.ignored, "unknown keys in the secret ignored");
        }
    }
}

fn secret_name_missing() -> ConfigError {
    ConfigError::Missing {
        var: "SECRET_NAME",
        expected: "the name or ARN of the secret to read (USE_SECRET_MANAGER is true)",
    }
}

/// Reads the secret's text with the same AWS settings as SQS (region, profile, the SDK's
/// credential chain and `AWS_ENDPOINT_URL(_SECRETS_MANAGER)`).
async fn read_secret(
    region: &str,
    profile: Option<&str>,
    name: &str,
) -> Result<String, ConfigError> {
    use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
    let problem = |p: String| ConfigError::Secret {
        secret: name.to_string(),
        problem: p,
    };
    let sdk = crate::aws::sdk_config(region, profile).await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let call = client.get_secret_value().secret_id(name).send();
    let out = match tokio::time::timeout(SECRET_TIMEOUT, call).await {
        Err(_) => {
            return Err(problem(format!(
                "no answer from Secrets Manager within {} s",
                SECRET_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => {
            return Err(problem(match e.as_service_error() {
                Some(se) if se.is_resource_not_found_exception() => {
                    format!("not found in region {region} (ResourceNotFoundException)")
                }
                Some(se) => format!(
                    "{}: {}",
                    se.code().unwrap_or("error"),
                    se.message().unwrap_or("no message")
                ),
                None => format!("GetSecretValue failed: {}", DisplayErrorContext(&e)),
            }));
        }
        Ok(Ok(out)) => out,
    };
    out.secret_string().map(str::to_string).ok_or_else(|| {
        problem("it holds binary data, not a SecretString: expected a JSON object".into())
    })
}

/// (variable, value) pairs a secret overrides.
type Overrides = Vec<(&'static str, String)>;

/// Parses the secret's text: a JSON object whose known keys hold strings (or null). Returns
/// what it applies and the (variable, value) pairs to overlay. Errors never quote a value.
fn parse_secret(name: &str, text: &str) -> Result<(SecretSource, Overrides), ConfigError> {
    let problem = |p: String| ConfigError::Secret {
        secret: name.to_string(),
        problem: p,
    };
    let keys = SECRET_KEYS.map(|(k, _)| k).join(", ");
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // serde_json's message gives only a position, never the text itself.
        problem(format!(
            "it is not JSON ({e}): expected a JSON object with keys {keys}"
        ))
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(problem(format!(
            "it is JSON {}, not an object: expected a JSON object with keys {keys}",
            json_kind(&value)
        )));
    };
    let mut source = SecretSource {
        name: name.to_string(),
        applied: Vec::new(),
        ignored: map
            .keys()
            .filter(|k| !SECRET_KEYS.iter().any(|(known, _)| known == k))
            .cloned()
            .collect(),
    };
    let mut values = Vec::new();
    for (key, var) in SECRET_KEYS {
        match map.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) => {
                if let Some(v) = nonempty(Some(s.clone())) {
                    source.applied.push(key);
                    values.push((var, v));
                }
            }
            Some(other) => {
                return Err(problem(format!(
                    "key {key} is {}: expected a string",
                    json_kind(other)
                )));
            }
        }
    }
    Ok((source, values))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Rewrites a validation error about a value the secret supplied so it names the secret's
/// key instead of the variable the operator did not set.
fn blame_secret(e: ConfigError, source: &SecretSource) -> ConfigError {
    let key_of = |var: &str| SECRET_KEYS.iter().find(|(_, v)| *v == var).map(|(k, _)| *k);
    match e {
        ConfigError::Invalid {
            var,
            value,
            expected,
        } => match key_of(var).filter(|k| source.applied.contains(k)) {
            Some(key) => ConfigError::SecretValue {
                secret: source.name.clone(),
                key,
                value,
                expected,
            },
            None => ConfigError::Invalid {
                var,
                value,
                expected,
            },
        },
        ConfigError::Missing { var, expected } => match key_of(var) {
            Some(key) => ConfigError::MissingEverywhere {
                var,
                key,
                secret: source.name.clone(),
                expected,
            },
            None => ConfigError::Missing { var, expected },
        },
        other => other,
    }
}

/// `WORKER_CONCURRENCY`: tasks at once, default 20.
fn concurrency(value: Option<String>) -> Result<u64, ConfigError> {
    int(
        "WORKER_CONCURRENCY",
        value,
        20,
        1,
        10_000,
        "a number of tasks",
    )
}

/// Slots one runtime thread keeps busy by default. One thread sustains about 10,000 events/s
/// (`make bench`: ~90 µs of CPU per event), which is what 100 slots produce when an event's
/// two downstream calls take 10 ms together; slower peers need fewer threads still.
pub const SLOTS_PER_THREAD: usize = 100;

/// Most runtime threads `WORKER_THREADS` may ask for.
pub const MAX_RUNTIME_THREADS: usize = 256;

/// The async runtime's thread count: `WORKER_THREADS` if set, else one per
/// [`SLOTS_PER_THREAD`] slots, at most one per CPU this process may use (cgroup limits
/// included). Threads beyond the work only cost CPU: each handoff between them is a futex
/// wake and a context switch (with one thread instead of two, `make bench` spent ~20% less
/// CPU per event at the same rate).
pub fn runtime_threads(value: Option<String>, concurrency: usize) -> Result<usize, ConfigError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let derived = concurrency.div_ceil(SLOTS_PER_THREAD).clamp(1, cpus);
    int(
        "WORKER_THREADS",
        value,
        derived as u64,
        1,
        MAX_RUNTIME_THREADS as u64,
        "async runtime threads",
    )
    .map(|n| n as usize)
}

/// [`runtime_threads`] from the process environment, for `main`, which must size the runtime
/// before the configuration (and its Secrets Manager overlay) can be loaded. A bad value is
/// left for [`Config::load`] to report.
pub fn runtime_threads_from_env() -> Option<usize> {
    let concurrency = concurrency(std::env::var("WORKER_CONCURRENCY").ok()).ok()?;
    runtime_threads(std::env::var("WORKER_THREADS").ok(), concurrency as usize).ok()
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
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            // A password in a URL is sent (as Basic auth) and must never be shown.
            if let Some(password) = u.password() {
                crate::redact::register(password);
            }
            Ok(value)
        }
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
        assert_eq!(c.receive_loops, 2);
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
    fn receive_loops_follow_the_concurrency_unless_set() {
        for (concurrency, loops) in [("1", 1), ("10", 1), ("11", 2), ("100", 10), ("500", 50)] {
            let c = Config::from_vars(vars(&[QUEUE, ("WORKER_CONCURRENCY", concurrency)]))
                .expect(concurrency);
            assert_eq!(c.receive_loops, loops, "WORKER_CONCURRENCY={concurrency}");
        }
        let c = Config::from_vars(vars(&[
            QUEUE,
            ("WORKER_CONCURRENCY", "100"),
            ("SQS_RECEIVE_LOOPS", "3"),
        ]))
        .expect("valid");
        assert_eq!(c.receive_loops, 3);
        for bad in ["0", "101", "two"] {
            let e = Config::from_vars(vars(&[
                QUEUE,
                ("WORKER_CONCURRENCY", "100"),
                ("SQS_RECEIVE_LOOPS", bad),
            ]))
            .expect_err(bad);
            assert_eq!(
                e.to_string(),
                format!(
                    "SQS_RECEIVE_LOOPS=\"{bad}\" is invalid: expected an integer from 1 to 100 (receive loops, at most WORKER_CONCURRENCY)"
                )
            );
        }
    }

    #[test]
    fn runtime_threads_follow_the_concurrency_up_to_the_cpus_unless_set() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (concurrency, threads) in [("1", 1), ("100", 1), ("101", 2), ("500", 5)] {
            let c = Config::from_vars(vars(&[QUEUE, ("WORKER_CONCURRENCY", concurrency)]))
                .expect(concurrency);
            assert_eq!(
                c.runtime_threads,
                threads.min(cpus),
                "WORKER_CONCURRENCY={concurrency}"
            );
        }
        let c = Config::from_vars(vars(&[QUEUE, ("WORKER_THREADS", "3")])).expect("valid");
        assert_eq!(c.runtime_threads, 3, "an explicit value is not capped");
        for bad in ["0", "257", "many"] {
            let e = Config::from_vars(vars(&[QUEUE, ("WORKER_THREADS", bad)])).expect_err(bad);
            assert_eq!(
                e.to_string(),
                format!(
                    "WORKER_THREADS=\"{bad}\" is invalid: expected an integer from 1 to 256 (async runtime threads)"
                )
            );
        }
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
            ("DEDUPE_CAPACITY", "10000000"),
            ("CIRCUIT_PROBE_BASE_SECS", "0"),
        ] {
            let e = Config::from_vars(vars(&[QUEUE, (var, val)])).expect_err(var);
            let text = e.to_string();
            assert!(text.starts_with(&format!("{var}=\"{val}\"")), "{text}");
            assert!(text.contains("expected an integer from"), "{text}");
        }
    }

    /// Found by an attack on the promise: 10,000,000 was accepted, gigabytes of ids twice
    /// over. What an id costs is measured by the bench and written in docs/performance.md.
    #[test]
    fn the_duplicate_memory_is_bounded_by_what_it_costs() {
        let e = Config::from_vars(vars(&[QUEUE, ("DEDUPE_CAPACITY", "100001")]))
            .expect_err("above the bound");
        assert!(
            e.to_string()
                .contains("expected an integer from 0 to 100000 (ids in each of the worker's two duplicate memories"),
            "{e}"
        );
        let c =
            Config::from_vars(vars(&[QUEUE, ("DEDUPE_CAPACITY", "100000")])).expect("the bound");
        assert_eq!(c.dedupe_capacity, MAX_DEDUPE_CAPACITY);
    }

    #[test]
    fn circuit_settings_have_defaults_and_the_probe_cap_is_not_below_its_base() {
        let c = Config::from_vars(vars(&[QUEUE])).expect("defaults");
        assert_eq!(
            (
                c.circuit_failures,
                c.circuit_failing_for,
                c.circuit_probe_base,
                c.circuit_probe_max
            ),
            (
                10,
                Duration::from_secs(10),
                Duration::from_secs(5),
                Duration::from_secs(120)
            )
        );
        let c = Config::from_vars(vars(&[QUEUE, ("CIRCUIT_PROBE_BASE_SECS", "300")]))
            .expect("a longer base raises the default cap");
        assert_eq!(c.circuit_probe_max, Duration::from_secs(300));
        let e = Config::from_vars(vars(&[
            QUEUE,
            ("CIRCUIT_PROBE_BASE_SECS", "30"),
            ("CIRCUIT_PROBE_MAX_SECS", "10"),
        ]))
        .expect_err("cap below base");
        assert!(
            e.to_string().starts_with("CIRCUIT_PROBE_MAX_SECS=\"10\"")
                && e.to_string().contains("at least CIRCUIT_PROBE_BASE_SECS"),
            "{e}"
        );
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
    fn secret_values_are_parsed_and_unknown_keys_reported() {
        let text = r#"{"sqs_queue_url":"http://h/1/q","reservation_api_token":"tok","inventory_grpc_addr":"  ","otel_endpoint":null,"db_password":"x"}"#;
        let (source, values) = parse_secret("s", text).expect("valid");
        assert_eq!(
            source.applied,
            vec!["sqs_queue_url", "reservation_api_token"]
        );
        assert_eq!(source.ignored, vec!["db_password".to_string()]);
        assert_eq!(
            values,
            vec![
                ("SQS_QUEUE_URL", "http://h/1/q".to_string()),
                ("RESERVATION_API_TOKEN", "tok".to_string())
            ]
        );
    }

    #[test]
    fn a_malformed_secret_is_an_error_that_never_quotes_it() {
        for (text, want) in [
            ("not json sekrit", "it is not JSON"),
            (r#"["sekrit"]"#, "it is JSON an array, not an object"),
            (r#""sekrit""#, "it is JSON a string, not an object"),
            (
                r#"{"sqs_queue_url": 5, "reservation_api_token": "sekrit"}"#,
                "key sqs_queue_url is a number: expected a string",
            ),
            (
                r#"{"reservation_api_token": {"v": "sekrit"}}"#,
                "key reservation_api_token is an object: expected a string",
            ),
        ] {
            let e = parse_secret("prod/worker", text).expect_err(text);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("cannot use secret prod/worker: {want}")),
                "{msg}"
            );
            assert!(!msg.contains("sekrit"), "{msg}");
        }
    }

    #[test]
    fn errors_about_secret_values_name_the_key() {
        let (source, values) = parse_secret(
            "s",
            r#"{"sqs_queue_url":"not a url","reservation_api_token":"a b"}"#,
        )
        .expect("parsed");
        let mut raw = RawEnv::from_vars(vars(&[])).expect("raw");
        for (var, value) in values {
            raw.set(var, value);
        }
        let e = blame_secret(Config::validate(raw).expect_err("bad url"), &source);
        assert_eq!(
            e.to_string(),
            "secret s key sqs_queue_url=\"not a url\" is invalid: expected an absolute http:// or https:// URL"
        );

        let (source, values) =
            parse_secret("s", r#"{"reservation_api_token":"a b"}"#).expect("parsed");
        let mut raw = RawEnv::from_vars(vars(&[QUEUE])).expect("raw");
        for (var, value) in values {
            raw.set(var, value);
        }
        let e = blame_secret(Config::validate(raw).expect_err("bad token"), &source);
        let msg = e.to_string();
        assert!(
            msg.starts_with("secret s key reservation_api_token=\"***\" is invalid"),
            "{msg}"
        );

        // A bad value from the environment still names the variable.
        let raw = RawEnv::from_vars(vars(&[("SQS_QUEUE_URL", "nope")])).expect("raw");
        let e = blame_secret(Config::validate(raw).expect_err("env"), &source);
        assert!(e.to_string().starts_with("SQS_QUEUE_URL=\"nope\""), "{e}");
        // Absent everywhere: says where it could have come from.
        let raw = RawEnv::from_vars(vars(&[])).expect("raw");
        let e = blame_secret(Config::validate(raw).expect_err("missing"), &source);
        assert!(
            e.to_string()
                .ends_with("(in the environment, or as sqs_queue_url in secret s)"),
            "{e}"
        );
    }

    #[test]
    fn fifo_is_detected_from_the_url() {
        let c = Config::from_vars(vars(&[("SQS_QUEUE_URL", "http://h/1/q.fifo")])).expect("ok");
        assert!(c.is_fifo());
    }
}
