//! Settings from the environment, optionally overlaid by an AWS Secrets Manager secret. Each
//! setting is one row of the table in `table.rs`; envy deserializes the variables into typed
//! values by that row (so a bad value stops start-up with one line naming the variable, or the
//! secret's key, the value and what was expected), then the few rules between settings apply.

#[macro_use]
mod setting;
#[cfg(test)]
mod docs;
mod secret;
mod table;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use secret::SecretSource;
pub use setting::{Kind, Setting, Unit, Unset};
pub use table::{Config, SETTINGS, vars};

use setting::Field;
use table::Env;

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

/// Which HTTP the worker speaks to the reservation API (`RESERVATION_API_HTTP2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2 {
    /// HTTP/2 where TLS negotiates it (ALPN on `https://`), HTTP/1.1 otherwise: the default,
    /// since not every API behind a plain `http://` URL speaks HTTP/2.
    Alpn,
    /// HTTP/2 from the first byte, without negotiating: cleartext h2c on `http://`. Every
    /// request in flight shares a few connections instead of holding one each.
    PriorKnowledge,
    /// HTTP/1.1 only, even where TLS would offer HTTP/2.
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines (the default).
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

/// The most ids `DEDUPE_CAPACITY` may ask each of the worker's two duplicate memories to keep.
/// It bounds their memory: `make bench` measures what an id costs (docs/performance.md).
pub const MAX_DEDUPE_CAPACITY: usize = 100_000;

/// What a `DEDUPE_CAPACITY` error says the number counts.
const DEDUPE_CAPACITY_EXPECTED: &str =
    "ids in each of the worker's two duplicate memories; the bound keeps their memory in check";

/// SQS's ceiling for a message's visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// Slots one runtime thread keeps busy by default: what one thread's CPU carries when an
/// event's two downstream calls take about 10 ms together (docs/performance.md, capacity
/// model); slower peers need fewer threads still.
pub const SLOTS_PER_THREAD: usize = 100;

/// Most runtime threads `WORKER_THREADS` may ask for.
pub const MAX_RUNTIME_THREADS: usize = 256;

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
        let env = Env::from_vars(vars)?;
        if !env.USE_SECRET_MANAGER.get(None)? {
            return env.into_config(None);
        }
        let name = env.SECRET_NAME.get(None)?.ok_or_else(secret_name_missing)?;
        let profile = env.AWS_PROFILE.get(None)?;
        let text = secret::read(&env.AWS_REGION.get(None)?, profile.as_deref(), &name).await?;
        env.overlaid(&name, &text)
    }

    /// Reads and validates the given variables without the secret overlay (no AWS call):
    /// for unit tests and tools that must work offline.
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        Env::from_vars(vars)?.into_config(None)
    }

    /// Whether the queue is FIFO (its URL ends in `.fifo`), which turns on group ordering.
    pub fn is_fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }
}

impl Env {
    fn from_vars<I>(vars: I) -> Result<Env, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        envy::from_iter(vars.into_iter().filter(|(k, _)| {
            // envy lower-cases names; only the upper-case spelling is ours.
            k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        }))
        .map_err(|e| ConfigError::Environment(e.to_string()))
    }

    /// This environment overlaid by the secret `name`, whose text is `text`.
    fn overlaid(mut self, name: &str, text: &str) -> Result<Config, ConfigError> {
        let (source, values) = secret::parse(name, text)?;
        self.overlay(Env::from_vars(values)?, name);
        let mut config = self.into_config(Some(name))?;
        config.secret = Some(source);
        Ok(config)
    }

    /// The rules between settings (defaults and bounds that depend on another setting), then
    /// every setting as the table says.
    fn into_config(mut self, secret: Option<&str>) -> Result<Config, ConfigError> {
        let concurrency = self.WORKER_CONCURRENCY.get(secret)?;
        // Enough loops for every slot to be asked for in one round of receives; more than
        // one per slot could never receive anything.
        self.SQS_RECEIVE_LOOPS
            .within(None, Some(concurrency as u64), |n| *n as u64);
        self.SQS_RECEIVE_LOOPS.or(concurrency.div_ceil(10));
        self.WORKER_THREADS.or(default_threads(concurrency));
        let probe_base = self.CIRCUIT_PROBE_BASE_SECS.get(secret)?;
        self.CIRCUIT_PROBE_MAX_SECS
            .within(Some(probe_base.as_secs()), None, Duration::as_secs);
        let probe_max = self.CIRCUIT_PROBE_MAX_SECS.get(secret)?.max(probe_base);
        self.CIRCUIT_PROBE_MAX_SECS.or(probe_max);
        let config = self.resolve(secret)?;
        if config.server_port != 0 && config.server_port == config.grpc_debug_port {
            return Err(vars::GRPC_DEBUG_PORT.invalid(
                config.grpc_debug_port.to_string(),
                "a port other than SERVER_PORT",
            ));
        }
        if config.use_secret_manager && config.secret_name.is_none() {
            return Err(secret_name_missing());
        }
        Ok(config)
    }
}

fn secret_name_missing() -> ConfigError {
    ConfigError::Missing {
        var: "SECRET_NAME",
        expected: "the name or ARN of the secret to read (USE_SECRET_MANAGER is true)",
    }
}

/// The default runtime threads: one per [`SLOTS_PER_THREAD`] slots, at most one per CPU this
/// process may use (cgroup limits included). Threads beyond the work only cost CPU: each
/// handoff between them is a futex wake and a context switch (what one thread instead of two
/// saves is measured in docs/performance.md).
fn default_threads(concurrency: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    concurrency.div_ceil(SLOTS_PER_THREAD).clamp(1, cpus)
}

/// The async runtime's thread count: `WORKER_THREADS` if set (`value`), else the default for
/// `concurrency` slots.
pub fn runtime_threads(value: Option<String>, concurrency: usize) -> Result<usize, ConfigError> {
    let mut threads = Field::read(&vars::WORKER_THREADS, value);
    threads.or(default_threads(concurrency));
    threads.get(None)
}

/// [`runtime_threads`] from the process environment, for `main`, which must size the runtime
/// before the configuration (and its Secrets Manager overlay) can be loaded. A bad value is
/// left for [`Config::load`] to report.
pub fn runtime_threads_from_env() -> Option<usize> {
    let var = |name: &str| std::env::var(name).ok();
    let concurrency = Field::<usize>::read(&vars::WORKER_CONCURRENCY, var("WORKER_CONCURRENCY"));
    runtime_threads(var("WORKER_THREADS"), concurrency.get(None).ok()?).ok()
}
