//! The command line as an operator meets it: errors in one short line, `--output json` for
//! scripts, colour only on a terminal and never with `NO_COLOR`, shell completions, and `send`
//! refusing an event the worker would dead-letter unless told otherwise.

use crate::support;

use support::Harness;
use support::worker::{BIN, run};

/// `send` of one event the worker accepts.
const SEND_VALID: [&str; 11] = [
    "send",
    "--type",
    "reservation.expired",
    "--reservation-id",
    "r-1",
    "--event-id",
    "e",
    "--seat-ids",
    "A-1",
    "--qty",
    "1",
];

/// The harness's environment with `SQS_QUEUE_URL` set to `url`.
fn env_with_queue(h: &Harness, url: &str) -> Vec<(String, String)> {
    let mut env = h.env();
    env.retain(|(k, _)| k != "SQS_QUEUE_URL");
    env.push(("SQS_QUEUE_URL".into(), url.into()));
    env
}

/// No trace of the SDK's `Debug` form: raw responses, headers, nested error structs.
fn assert_no_dump(text: &str) {
    for dump in [
        "ServiceError",
        "Response {",
        "headers",
        "SdkBody",
        "ErrorMetadata",
        "Some(",
    ] {
        assert!(!text.contains(dump), "{dump:?} in {text:?}");
    }
}

#[tokio::test]
async fn sqs_errors_are_one_short_line() {
    let h = Harness::start().await;
    let missing = format!(
        "{}/000000000000/no-such-queue",
        h.sqs.endpoint().trim_end_matches('/')
    );
    let env = env_with_queue(&h, &missing);
    let expected = "SQS GetQueueAttributes: AWS.SimpleQueueService.NonExistentQueue: The specified queue does not exist.";

    let r = run(&env, &["dlq", "peek"]).await;
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr, format!("dlq: {expected}\n"));

    let r = run(&env, &["check"]).await;
    assert_eq!(r.code, Some(1));
    let queue_line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("queue "))
        .expect("the queue row");
    assert!(
        queue_line.ends_with(&format!("{missing}: {expected}")),
        "{queue_line}"
    );
    assert_no_dump(&r.stdout);

    let r = run(&env, &SEND_VALID).await;
    assert_eq!(r.code, Some(1));
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("event: not sent: SQS SendMessageBatch: AWS.SimpleQueueService.NonExistentQueue: The specified queue does not exist."),
        "{all}"
    );
    assert_no_dump(&all);

    // No answer at all: the causes, each once, on one line.
    let mut env = env_with_queue(&h, &missing);
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:1".into()));
    let r = run(&env, &["dlq", "peek"]).await;
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("dlq: SQS GetQueueAttributes: dispatch failure: ")
            && r.stderr.contains("Connection refused"),
        "{}",
        r.stderr
    );
    assert_no_dump(&r.stderr);
}

#[tokio::test]
async fn check_and_dlq_peek_speak_json() {
    let h = Harness::start().await;
    let w = h.worker(&[]).await;
    h.queue.send("{not json").await;
    h.wait_queue_empty().await;
    w.wait_logs("dead-lettered").await;
    drop(w);

    let r = run(&h.env(), &["check", "--output", "json"]).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert_eq!(report["ok"], true);
    let checks: Vec<(&str, &str)> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        checks,
        [
            ("config", "ok"),
            ("queue", "ok"),
            ("dead-letter queue", "ok"),
            ("inventory", "ok"),
            ("reservation api", "ok")
        ],
        "{report}"
    );

    let r = run(&h.env(), &["dlq", "peek", "--output", "json"]).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let peek: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert_eq!(peek["dlq"], h.dlq.url.as_str());
    assert_eq!(peek["found_by"], "RedrivePolicy target");
    let messages = peek["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{peek}");
    let m = &messages[0];
    assert_eq!(m["reason"], "malformed_json");
    assert_eq!(m["applied_steps"], "none");
    assert_eq!(m["body"], "{not json", "the whole body");
    assert_eq!(m["receive_count"], 1);
    assert_eq!(m["source_queue"], h.queue.url.as_str());
    assert!(
        m["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("malformed JSON")),
        "{m}"
    );
    // Still there, visible.
    assert_eq!(h.dlq.depth().await, (1, 0));
}

/// Runs `args` under a pseudo-terminal (util-linux `script`), as in an operator's shell.
async fn on_a_terminal(env: &[(String, String)], args: &str) -> String {
    let out = tokio::process::Command::new("script")
        .args(["-qfec", &format!("{BIN} {args}"), "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run script(1)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn colour_only_on_a_terminal_and_never_with_no_color() {
    let h = Harness::start().await;
    const ESC: char = '\u{1b}';
    let coloured = on_a_terminal(&h.env(), "check").await;
    assert!(coloured.contains("config"), "{coloured:?}");
    assert!(
        coloured.contains(ESC),
        "a terminal gets colour: {coloured:?}"
    );

    let mut env = h.env();
    env.push(("NO_COLOR".into(), "1".into()));
    let plain = on_a_terminal(&env, "check").await;
    assert!(plain.contains("config"), "{plain:?}");
    assert!(!plain.contains(ESC), "NO_COLOR: {plain:?}");
    let help = on_a_terminal(&env, "--help").await;
    assert!(help.contains("Usage"), "{help:?}");
    assert!(!help.contains(ESC), "NO_COLOR in --help: {help:?}");

    // Piped: no colour either.
    let r = run(&h.env(), &["check"]).await;
    assert!(!r.stdout.contains(ESC), "{:?}", r.stdout);
}

#[tokio::test]
async fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef reservation-worker"),
        ("fish", "complete -c reservation-worker"),
    ] {
        let r = run(&[], &["completions", shell]).await;
        assert_eq!(r.code, Some(0), "{shell}: {}", r.stderr);
        assert!(r.stdout.contains(marker), "{shell}: {}", r.stdout);
        for word in ["dlq", "redrive", "output", "allow-invalid"] {
            assert!(r.stdout.contains(word), "{shell} completes no {word}");
        }
    }
    let r = run(&[], &["completions", "tcsh"]).await;
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("invalid value 'tcsh'"), "{}", r.stderr);
}

#[tokio::test]
async fn send_refuses_an_event_the_worker_would_dead_letter_unless_allowed() {
    let h = Harness::start().await;
    // A hold expiry without its seats and quantity: the worker's parser refuses it.
    let args = &SEND_VALID[..7];
    let r = run(&h.env(), args).await;
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(
            "event: refused: the worker would dead-letter it (invalid_field): detail.seat_ids: "
        ),
        "{}",
        r.stdout
    );
    assert_eq!(h.queue.depth().await, (0, 0), "nothing sent");

    let mut allowed = args.to_vec();
    allowed.push("--allow-invalid");
    let r = run(&h.env(), &allowed).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(h.queue.depth().await, (1, 0), "sent on purpose");

    // A valid one goes out without the flag.
    let r = run(&h.env(), &SEND_VALID).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let sent = h.queue.receive(30).await;
    assert_eq!(sent.len(), 2);
}
