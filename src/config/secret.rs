//! The AWS Secrets Manager overlay: reading the secret and parsing its JSON object into the
//! (variable, value) pairs it overrides. Which keys exist is the table's `key` column.

use std::time::Duration;

use super::{ConfigError, SETTINGS};

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

impl SecretSource {
    /// Logs what the overlay did, by key name only, once logging is up.
    pub fn log(&self) {
        tracing::info!(secret = %self.name, keys = ?self.applied, "settings overlaid from Secrets Manager");
        if !self.ignored.is_empty() {
            tracing::warn!(secret = %self.name, keys = ?self.ignored, "unknown keys in the secret ignored");
        }
    }
}

/// The secret's keys and the variables they override, in the table's order.
fn keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    SETTINGS.iter().filter_map(|s| s.key.map(|k| (k, s.var)))
}

/// Reads the secret's text with the same AWS settings as SQS (region, profile, the SDK's
/// credential chain and `AWS_ENDPOINT_URL(_SECRETS_MANAGER)`).
pub(super) async fn read(
    region: &str,
    profile: Option<&str>,
    name: &str,
) -> Result<String, ConfigError> {
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
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
                None => format!("GetSecretValue failed: {}", crate::aws::error_text(&e)),
            }));
        }
        Ok(Ok(out)) => out,
    };
    out.secret_string().map(str::to_string).ok_or_else(|| {
        problem("it holds binary data, not a SecretString: expected a JSON object".into())
    })
}

/// Parses the secret's text: a JSON object whose known keys hold strings (or null). Returns
/// what it applies and the (variable, value) pairs to overlay. Errors never quote a value.
pub(super) fn parse(
    name: &str,
    text: &str,
) -> Result<(SecretSource, Vec<(String, String)>), ConfigError> {
    let problem = |p: String| ConfigError::Secret {
        secret: name.to_string(),
        problem: p,
    };
    let all = keys().map(|(k, _)| k).collect::<Vec<_>>().join(", ");
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // serde_json's message gives only a position, never the text itself.
        problem(format!(
            "it is not JSON ({e}): expected a JSON object with keys {all}"
        ))
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(problem(format!(
            "it is JSON {}, not an object: expected a JSON object with keys {all}",
            json_kind(&value)
        )));
    };
    let mut source = SecretSource {
        name: name.to_string(),
        applied: Vec::new(),
        ignored: map
            .keys()
            .filter(|k| !keys().any(|(known, _)| known == *k))
            .cloned()
            .collect(),
    };
    let mut values = Vec::new();
    for (key, var) in keys() {
        match map.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => {}
            Some(serde_json::Value::String(s)) => {
                source.applied.push(key);
                values.push((var.to_string(), s.trim().to_string()));
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
