//! `reservation-worker check`: loads the configuration as the worker does (secret overlay
//! included) and reaches everything the worker needs, so an operator sees in one table what is
//! fine and what is not. Exit code 0: all ok (warnings included); 1: a check failed; 78: the
//! configuration is invalid.

use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Config;
use crate::sqs::{DlqOrigin, Queue, SqsQueue};

/// Each check gives up after this long: `check` answers quickly even when a peer hangs.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Works, but something deserves a look (does not change the exit code).
    Warn,
    /// Does not work: the worker would not either.
    Fail,
}

impl Status {
    /// Its colour on a terminal.
    fn style(self) -> anstyle::Style {
        use anstyle::AnsiColor;
        match self {
            Status::Ok => AnsiColor::Green.on_default(),
            Status::Warn => AnsiColor::Yellow.on_default(),
            Status::Fail => AnsiColor::Red.on_default().bold(),
        }
    }

    /// As `--output json` spells it.
    fn as_json(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was checked.
    pub check: &'static str,
    /// How it went.
    pub status: Status,
    /// Where and why, without secrets.
    pub detail: String,
}

fn row(check: &'static str, status: Status, detail: impl Into<String>) -> Row {
    Row {
        check,
        status,
        detail: detail.into(),
    }
}

/// Flags of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// `text` (a table) or `json` (`{"ok": …, "checks": [{"check", "status", "detail"}]}`).
    #[arg(long, value_enum, default_value_t = super::Output::Text)]
    pub output: super::Output,
}

/// Runs `check` and maps the result to the exit code.
pub async fn run(args: CheckArgs) -> ExitCode {
    let config = match load_config().await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rows = check_all(&config).await;
    match args.output {
        super::Output::Text => {
            anstream::print!("{}", crate::redact::text(&table(&rows)));
        }
        super::Output::Json => super::print_json(&serde_json::json!({
            "ok": !rows.iter().any(|r| r.status == Status::Fail),
            "checks": rows
                .iter()
                .map(|r| serde_json::json!({
                    "check": r.check,
                    "status": r.status.as_json(),
                    "detail": r.detail,
                }))
                .collect::<Vec<_>>(),
        })),
    }
    if rows.iter().any(|r| r.status == Status::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Loads the configuration like the worker (environment, then the secret overlay); on error
/// prints the one-line reason and returns exit code 78.
pub(crate) async fn load_config() -> Result<Config, ExitCode> {
    Config::load().await.map_err(|e| {
        errln!(
            "configuration error: {}",
            crate::redact::owned(e.to_string())
        );
        ExitCode::from(super::EXIT_CONFIG)
    })
}

/// Every check, the independent ones at the same time.
pub async fn check_all(config: &Config) -> Vec<Row> {
    let mut rows = vec![config_row(config)];
    let (queues, inventory, reservations) = tokio::join!(
        check_queues(config),
        check_inventory(config),
        check_reservations(config)
    );
    rows.extend(queues);
    rows.push(inventory);
    rows.push(reservations);
    rows
}

/// Formats rows as an aligned table with a header, each status in its colour (the padding
/// outside the colour, so the columns stay aligned; anstream drops the colours off a terminal).
pub fn table(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| r.check.len())
        .chain(["CHECK".len()])
        .max()
        .unwrap_or(5);
    let mut out = format!("{:<width$}  {:<6}  DETAIL\n", "CHECK", "STATUS");
    for r in rows {
        let status = r.status.to_string();
        let style = r.status.style();
        out.push_str(&format!(
            "{:<width$}  {style}{status}{style:#}{:pad$}  {}\n",
            r.check,
            "",
            r.detail,
            pad = 6usize.saturating_sub(status.len()),
        ));
    }
    out
}

fn config_row(config: &Config) -> Row {
    let mut detail = format!(
        "valid; {} queue, region {}",
        if config.is_fifo() { "FIFO" } else { "standard" },
        config.aws_region
    );
    let Some(secret) = &config.secret else {
        return row("config", Status::Ok, detail);
    };
    detail.push_str(&format!(
        "; secret {} applied: {}",
        secret.name,
        if secret.applied.is_empty() {
            "nothing".to_string()
        } else {
            secret.applied.join(", ")
        }
    ));
    if secret.ignored.is_empty() {
        return row("config", Status::Ok, detail);
    }
    detail.push_str(&format!(
        "; unknown keys ignored: {}",
        secret.ignored.join(", ")
    ));
    row("config", Status::Warn, detail)
}

/// Waits for `fut` at most [`CHECK_TIMEOUT`].
async fn bounded<T>(fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(CHECK_TIMEOUT, fut).await.ok()
}

fn no_answer() -> String {
    format!("no answer within {} s", CHECK_TIMEOUT.as_secs())
}

/// The queue (GetQueueAttributes) and its DLQ: SQS_DLQ_URL, else the RedrivePolicy target
/// (the rule of [`Queue::dead_letter_url`], spelled out here for a row per way it can fail).
async fn check_queues(config: &Config) -> Vec<Row> {
    let queue = SqsQueue::from_config(config).await;
    let shown = redact(&queue.url);
    let attrs = match bounded(queue.attributes()).await {
        Some(Ok(a)) => Ok(a),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(no_answer()),
    };
    let queue_row = match &attrs {
        Ok(a) => row("queue", Status::Ok, format!("{shown}: {}", depth(a))),
        Err(e) => row("queue", Status::Fail, format!("{shown}: {e}")),
    };
    let dlq = match (&config.dlq_url, &attrs) {
        (Some(url), _) => Ok((url.clone(), DlqOrigin::Setting.as_str())),
        (None, Err(_)) => Err(row(
            "dead-letter queue",
            Status::Fail,
            "unknown: SQS_DLQ_URL is not set and the queue's RedrivePolicy could not be read",
        )),
        (None, Ok(a)) if !a.contains_key("RedrivePolicy") => Err(row(
            "dead-letter queue",
            Status::Warn,
            "none: set SQS_DLQ_URL or a RedrivePolicy, or terminal messages are kept invisible for 12 h instead of dead-lettered",
        )),
        (None, Ok(a)) => match bounded(queue.redrive_dlq_url(a)).await {
            Some(Ok(Some(url))) => Ok((url, DlqOrigin::RedrivePolicy.as_str())),
            Some(Ok(None)) => Err(row(
                "dead-letter queue",
                Status::Fail,
                "the queue's RedrivePolicy names no deadLetterTargetArn that can be read",
            )),
            Some(Err(e)) => Err(row(
                "dead-letter queue",
                Status::Fail,
                format!("RedrivePolicy target: {e}"),
            )),
            None => Err(row(
                "dead-letter queue",
                Status::Fail,
                format!("RedrivePolicy target: {}", no_answer()),
            )),
        },
    };
    let dlq_row = match dlq {
        Err(r) => r,
        Ok((url, how)) => {
            let shown = redact(&url);
            match bounded(queue.sibling(url).attributes()).await {
                Some(Ok(a)) => row(
                    "dead-letter queue",
                    Status::Ok,
                    format!("{shown} ({how}): {}", depth(&a)),
                ),
                Some(Err(e)) => row(
                    "dead-letter queue",
                    Status::Fail,
                    format!("{shown} ({how}): {e}"),
                ),
                None => row(
                    "dead-letter queue",
                    Status::Fail,
                    format!("{shown} ({how}): {}", no_answer()),
                ),
            }
        }
    };
    vec![queue_row, dlq_row]
}

fn depth(attrs: &std::collections::HashMap<String, String>) -> String {
    let get = |k: &str| attrs.get(k).map(String::as_str).unwrap_or("?");
    format!(
        "{} visible, {} in flight",
        get("ApproximateNumberOfMessages"),
        get("ApproximateNumberOfMessagesNotVisible")
    )
}

/// A real gRPC connection, then `grpc.health.v1.Health/Check`; UNIMPLEMENTED still proves the
/// server answers gRPC.
async fn check_inventory(config: &Config) -> Row {
    let uri = redact(&config.inventory_uri);
    let fail = |detail: String| row("inventory", Status::Fail, format!("{uri}: {detail}"));
    let endpoint = match Endpoint::from_shared(config.inventory_uri.clone()) {
        Ok(e) => e.connect_timeout(CHECK_TIMEOUT).timeout(CHECK_TIMEOUT),
        Err(e) => return fail(crate::aws::causes(&e)),
    };
    let endpoint = if config.inventory_uri.starts_with("https://") {
        match endpoint.tls_config(ClientTlsConfig::new().with_native_roots()) {
            Ok(e) => e,
            Err(e) => return fail(format!("TLS: {}", crate::aws::causes(&e))),
        }
    } else {
        endpoint
    };
    let channel = match bounded(endpoint.connect()).await {
        Some(Ok(c)) => c,
        Some(Err(e)) => return fail(format!("cannot connect: {}", crate::aws::causes(&e))),
        None => return fail(format!("cannot connect: {}", no_answer())),
    };
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match bounded(call).await {
        Some(Ok(resp)) => match resp.into_inner().status() {
            ServingStatus::Serving => row(
                "inventory",
                Status::Ok,
                format!("{uri}: SERVING (grpc.health.v1)"),
            ),
            other => row(
                "inventory",
                Status::Warn,
                format!(
                    "{uri}: connected, but health reports {}",
                    other.as_str_name()
                ),
            ),
        },
        Some(Err(s)) if s.code() == tonic::Code::Unimplemented => row(
            "inventory",
            Status::Ok,
            format!("{uri}: connected (grpc.health.v1 not served)"),
        ),
        Some(Err(s))
            if matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
            ) =>
        {
            fail(format!(
                "connected, but the call failed: {:?}: {}",
                s.code(),
                s.message()
            ))
        }
        Some(Err(s)) => row(
            "inventory",
            Status::Warn,
            format!("{uri}: connected; health check answered {:?}", s.code()),
        ),
        None => fail(format!("connected, but {}", no_answer())),
    }
}

/// An HTTP GET of the base URL (with the token, so 401/403 shows up as a warning): any answer
/// means reachable.
async fn check_reservations(config: &Config) -> Row {
    let base = redact(&config.reservation_api_base);
    let fail = |detail: String| row("reservation api", Status::Fail, format!("{base}: {detail}"));
    let http = match reqwest::Client::builder()
        .connect_timeout(CHECK_TIMEOUT)
        .timeout(CHECK_TIMEOUT)
        .user_agent(concat!(
            "reservation-worker-check/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
    {
        Ok(h) => h,
        Err(e) => return fail(crate::aws::causes(&e.without_url())),
    };
    let mut req = http.get(&config.reservation_api_base);
    if let Some(token) = &config.reservation_api_token
        && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
    {
        v.set_sensitive(true);
        req = req.header(AUTHORIZATION, v);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            if matches!(status.as_u16(), 401 | 403) {
                row(
                    "reservation api",
                    Status::Warn,
                    format!("{base}: HTTP {status} (reachable; check RESERVATION_API_TOKEN)"),
                )
            } else {
                row(
                    "reservation api",
                    Status::Ok,
                    format!("{base}: HTTP {status}"),
                )
            }
        }
        Err(e) if e.is_timeout() => fail(no_answer()),
        Err(e) => fail(format!(
            "cannot connect: {}",
            crate::aws::causes(&e.without_url())
        )),
    }
}

/// A URL without user or password, for output.
pub(crate) fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact("https://u:p@h.example/x"), "https://h.example/x");
        assert_eq!(redact("http://h:1/q"), "http://h:1/q");
    }

    #[test]
    fn the_table_is_aligned() {
        let styled = table(&[
            row("queue", Status::Ok, "a"),
            row("dead-letter queue", Status::Fail, "b"),
        ]);
        let t = anstream::adapter::strip_str(&styled).to_string();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "CHECK              STATUS  DETAIL");
        assert_eq!(lines[1], "queue              ok      a");
        assert_eq!(lines[2], "dead-letter queue  FAIL    b");
    }
}
