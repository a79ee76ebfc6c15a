//! A missing or malformed setting stops start-up with a non-zero exit and one line naming the
//! variable, the value and what was expected.

use crate::support;

use std::time::Duration;

use support::WorkerProcess;

async fn start_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut w = WorkerProcess::spawn(&env);
    let status = w.wait_exit(Duration::from_secs(10)).await;
    let stderr = w.stderr.lock().expect("stderr").join("\n");
    (status.code(), stderr)
}

const QUEUE: (&str, &str) = ("SQS_QUEUE_URL", "http://127.0.0.1:9/123456789012/q");

#[tokio::test]
async fn a_missing_queue_url_is_named() {
    let (code, stderr) = start_with(&[]).await;
    assert_eq!(code, Some(78));
    assert_eq!(
        stderr,
        "configuration error: SQS_QUEUE_URL is not set: expected the URL of the SQS queue to consume"
    );
}

#[tokio::test]
async fn each_bad_value_is_named_with_what_was_expected() {
    for (var, value, expected) in [
        ("SQS_WAIT_TIME", "abc", "an integer from 0 to 20"),
        (
            "SQS_VISIBILITY_TIMEOUT",
            "99999999",
            "an integer from 2 to 43200",
        ),
        ("WORKER_CONCURRENCY", "0", "an integer from 1 to 10000"),
        ("MAX_RETRIES", "five", "an integer from 1 to 100"),
        ("BACKOFF_BASE_MS", "-5", "an integer from 1 to 600000"),
        ("SHUTDOWN_TIMEOUT_SECS", "1.5", "an integer from 0 to 3600"),
        (
            "INVENTORY_GRPC_ADDR",
            "ftp://inv:1",
            "host:port or an http(s):// URL",
        ),
        (
            "RESERVATION_API_BASE",
            "reservation-api",
            "an absolute http:// or https:// URL",
        ),
        (
            "SQS_DLQ_URL",
            "not a url",
            "an absolute http:// or https:// URL",
        ),
        ("SERVER_PORT", "65536", "an integer from 0 to 65535"),
        ("LOG_FORMAT", "xml", "json or pretty"),
    ] {
        let (code, stderr) = start_with(&[QUEUE, (var, value)]).await;
        assert_eq!(code, Some(78), "{var}");
        assert!(
            stderr.starts_with(&format!(
                "configuration error: {var}=\"{value}\" is invalid: expected {expected}"
            )),
            "{var}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[tokio::test]
async fn a_bad_token_is_named_but_never_printed() {
    let (code, stderr) = start_with(&[QUEUE, ("RESERVATION_API_TOKEN", "secret value")]).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("RESERVATION_API_TOKEN"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// Only the worker and its operator commands ship; the simulators are `reservation-sim`.
#[test]
fn the_command_line_lists_only_what_ships() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reservation-worker"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("Options:").next())
        .expect("a Commands section")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        ["run", "send", "check", "dlq", "completions", "help"],
        "{help}"
    );
}

/// `--version` names the source commit: HEAD of this checkout (build.rs reads it), the same
/// revision `worker_build_info` carries.
#[test]
fn the_version_names_the_revision() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reservation-worker"))
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!(
            "reservation-worker {} (revision {})",
            env!("CARGO_PKG_VERSION"),
            env!("WORKER_REVISION")
        )
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    // WORKER_REVISION set by hand names another revision on purpose.
    if let Ok(head) = head
        && head.status.success()
        && std::env::var_os("WORKER_REVISION").is_none()
    {
        let head = String::from_utf8_lossy(&head.stdout);
        assert_eq!(env!("WORKER_REVISION"), head.trim(), "built from HEAD");
    }
}
