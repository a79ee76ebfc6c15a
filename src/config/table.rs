//! Every setting of the worker, once: its `Config` field and type, its variable, how it is read
//! and checked, what applies when it is unset, its secret key, and (the doc comment) what it
//! does. `Config`, its validation, the `GetStatus` settings and the tables in
//! docs/configuration.md come from here. A new row also needs its line in `.env.example` and
//! the Helm chart: the tests in `docs.rs` name what is missing.

use std::time::Duration;

use super::setting::Kind::{BaseUrl, Bool, Choice, Endpoint, Filter, Text, Token, Url};
use super::setting::{Field, FromSetting, Seed, Setting, Unset, count, millis, secs};
use super::{
    ConfigError, DEDUPE_CAPACITY_EXPECTED, Http2, LogFormat, MAX_DEDUPE_CAPACITY,
    MAX_RUNTIME_THREADS, MAX_VISIBILITY, Secret,
};

/// The most messages `WORKER_CONCURRENCY` may ask for (and so the most receive loops).
const MAX_CONCURRENCY: u64 = 10_000;

settings! {
    /// the queue to consume; a `.fifo` URL switches on group ordering
    queue_url: String = SQS_QUEUE_URL, Url,
        required "the URL of the SQS queue to consume", key "sqs_queue_url";
    /// long-poll wait per receive
    wait_time: Duration = SQS_WAIT_TIME, secs(0, 20), default "20";
    /// visibility per receive, renewed at half of it while a message is worked on (at most SQS's 12 h)
    visibility_timeout: Duration = SQS_VISIBILITY_TIMEOUT, secs(2, MAX_VISIBILITY.as_secs()),
        default "30";
    /// where terminal messages go
    dlq_url: Option<String> = SQS_DLQ_URL, Url,
        optional "the source queue's RedrivePolicy target";
    /// messages worked on at once; also the most ever held received-but-unfinished
    concurrency: usize = WORKER_CONCURRENCY, count(1, MAX_CONCURRENCY, "a number of tasks"),
        default "20";
    /// ReceiveMessage calls in flight at once, at most `WORKER_CONCURRENCY`; each loop takes its
    /// share of free slots *before* it receives, so one loop cannot starve the others and
    /// nothing waits received
    receive_loops: usize = SQS_RECEIVE_LOOPS,
        count(1, MAX_CONCURRENCY, "receive loops, at most WORKER_CONCURRENCY"),
        derived "ceil(`WORKER_CONCURRENCY` / 10)";
    /// async runtime threads; threads beyond the work only add CPU (a handoff between threads
    /// is a futex wake and a context switch; see the [capacity model](performance.md#capacity-model)).
    /// Environment only: the runtime starts before the Secrets Manager overlay is read
    runtime_threads: usize = WORKER_THREADS,
        count(1, MAX_RUNTIME_THREADS as u64, "async runtime threads"),
        derived "ceil(`WORKER_CONCURRENCY` / 100), at most the CPUs the process may use";
    /// attempts per delivery for retryable failures
    max_retries: u32 = MAX_RETRIES, count(1, 100, "attempts"), default "5";
    /// retry delay `BACKOFF_BASE_MS·2^(n-1)` (1 s, 2 s, 4 s, 8 s) plus up to 25 % jitter
    backoff_base: Duration = BACKOFF_BASE_MS, millis(1, 600_000), default "1000";
    /// cap of that delay
    backoff_max: Duration = BACKOFF_MAX_MS, millis(1, 3_600_000), default "30000";
    /// when retries are spent, the message stays invisible `base·2^(receive_count-1)` s …
    redelivery_base: Duration = REDELIVERY_BACKOFF_BASE_SECS, secs(0, MAX_VISIBILITY.as_secs()),
        default "30";
    /// … capped here (at most SQS's 12 h)
    redelivery_max: Duration = REDELIVERY_BACKOFF_MAX_SECS, secs(0, MAX_VISIBILITY.as_secs()),
        default "900";
    /// how long in-flight work may finish after SIGTERM (or SIGINT, SIGHUP); the process then
    /// ends within 5 s more, whatever SQS does (keep the pod's grace period above the sum)
    shutdown_timeout: Duration = SHUTDOWN_TIMEOUT_SECS, secs(0, 3600), default "25";
    /// completed envelope ids (and dead-lettered message ids) remembered, to drop redelivered
    /// duplicates (0 turns the memory off); bounded because each id is held in memory, in
    /// each of the two memories ([what an id costs](performance.md#memory-of-the-duplicate-memory))
    dedupe_capacity: usize = DEDUPE_CAPACITY,
        count(0, MAX_DEDUPE_CAPACITY as u64, DEDUPE_CAPACITY_EXPECTED), default "10000";
    /// how long each is remembered (up to a 64th more: times are kept a run of completions at
    /// a time)
    dedupe_ttl: Duration = DEDUPE_TTL_SECS, secs(1, 86_400), default "900";
    /// retryable failures in a row of one peer that open its circuit breaker
    /// ([the circuit breaker](reliability.md#a-long-outage-of-a-peer-the-circuit-breaker));
    /// 0 turns the breakers off
    circuit_failures: u32 = CIRCUIT_FAILURE_THRESHOLD, count(0, 1_000_000,
        "retryable failures in a row that open a peer's circuit; 0 turns the breakers off"),
        default "10";
    /// … and how long they must span, so a blip never opens it
    circuit_failing_for: Duration = CIRCUIT_FAILING_SECS,
        secs(0, 3600).saying("whole seconds those failures must span"), default "10";
    /// first wait before probing an open circuit's peer; doubled after each failed probe …
    circuit_probe_base: Duration = CIRCUIT_PROBE_BASE_SECS, secs(1, 3600), default "5";
    /// … up to this, at least `CIRCUIT_PROBE_BASE_SECS` (a longer first wait raises the
    /// default with it)
    circuit_probe_max: Duration = CIRCUIT_PROBE_MAX_SECS,
        secs(1, 3600).saying("whole seconds, at least CIRCUIT_PROBE_BASE_SECS"), default "120";
    /// the inventory service: `host:port`, `http://host:port`, or `https://…` for TLS
    inventory_uri: String = INVENTORY_GRPC_ADDR, Endpoint, default "inventory-svc:8020",
        key "inventory_grpc_addr";
    /// deadline of each gRPC call
    inventory_timeout: Duration = INVENTORY_TIMEOUT_MS, millis(1, 600_000), default "5000";
    /// base URL of the reservation API (a trailing slash is dropped)
    reservation_api_base: String = RESERVATION_API_BASE, BaseUrl,
        default "http://reservation-api:8010", key "reservation_api_base";
    /// sent as `Authorization: Bearer …` when set; never logged
    reservation_api_token: Option<Secret> = RESERVATION_API_TOKEN, Token, optional "",
        key "reservation_api_token";
    /// timeout of each REST request (connect timeout ≤ 5 s)
    reservation_api_timeout: Duration = RESERVATION_API_TIMEOUT_MS, millis(1, 600_000),
        default "5000";
    /// `alpn`: HTTP/2 where TLS negotiates it, else HTTP/1.1; `prior-knowledge`: HTTP/2 from
    /// the first byte (h2c on `http://`), so requests in flight share connections instead of
    /// holding one each ([memory](performance.md#memory-at-high-concurrency)); `off`: HTTP/1.1 only
    reservation_api_http2: Http2 = RESERVATION_API_HTTP2,
        Choice(&["alpn", "prior-knowledge", "off"]), default "alpn";
    /// region of the queue and of the secret
    aws_region: String = AWS_REGION, Text, default "ap-northeast-2";
    /// named profile for local runs
    aws_profile: Option<String> = AWS_PROFILE, Text, optional "";
    /// a level or a filter (`info,reservation_worker=debug`); `RUST_LOG` wins when set
    log_level: String = LOG_LEVEL, Filter, default "info";
    /// `json` (one flat object per line, [fields](operating.md#logs)) or `pretty`
    log_format: LogFormat = LOG_FORMAT, Choice(&["json", "pretty"]), default "json";
    /// HTTP: `GET /health`, `GET /ready`, `GET /metrics` (0 picks a free port)
    server_port: u16 = SERVER_PORT, count(0, 65535, "a TCP port"), default "8040";
    /// gRPC health, server reflection (v1 and v1alpha), `reservation.worker.v1.WorkerDebug`;
    /// not `SERVER_PORT`
    grpc_debug_port: u16 = GRPC_DEBUG_PORT, count(0, 65535, "a TCP port"), default "8041";
    /// serve `WorkerDebug/ProcessEvent`, which runs a workflow for real
    debug_process_event: bool = DEBUG_PROCESS_EVENT, Bool, default "false";
    /// overlay settings from AWS Secrets Manager (below)
    use_secret_manager: bool = USE_SECRET_MANAGER, Bool, default "false";
    /// the secret's name or ARN; required when `USE_SECRET_MANAGER` is true
    secret_name: Option<String> = SECRET_NAME, Text, optional "";
    /// turns on trace export over OTLP ([traces](operating.md#traces-opentelemetry-otlp)); the
    /// SDK's other `OTEL_*` variables are read by the SDK itself
    otel_endpoint: Option<String> = OTEL_EXPORTER_OTLP_ENDPOINT, Url, optional "",
        key "otel_endpoint";
    /// this pod's name, on every log line (from the downward API)
    pod_name: Option<String> = POD_NAME, Text, optional "";
}
