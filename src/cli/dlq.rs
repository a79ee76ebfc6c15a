//! `reservation-worker dlq peek|redrive`: look at dead letters and move them back.
//!
//! `peek` receives with a short visibility and then makes every message visible again, so the
//! DLQ is left as it was. `redrive` sends each chosen message to its source queue with its
//! original body and attributes, and deletes it from the DLQ only after that send succeeded:
//! a failure leaves the message on the DLQ, never loses it.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::check::{load_config, redact};
use crate::config::Config;
use crate::sqs::{Queue, QueueError};

/// The attributes our acker adds when it dead-letters a message; `redrive` drops them.
pub const DEAD_LETTER_ATTRIBUTES: [&str; 6] = [
    "ReasonClass",
    "ErrorMessage",
    "OriginalMessageId",
    "ReceiveCount",
    "SourceQueue",
    "DeadLetteredBy",
];

/// How long `peek` hides what it looks at (it makes them visible again straight after).
const PEEK_VISIBILITY: Duration = Duration::from_secs(30);
/// How long `redrive` holds a message it is working on, or skipping, until the end of the run.
const REDRIVE_VISIBILITY: Duration = Duration::from_secs(300);
/// Characters of the body `peek` shows.
const BODY_PREVIEW: usize = 200;

/// `dlq` and its subcommands.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// Which operation.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// What to do with the dead-letter queue (SQS_DLQ_URL, else the queue's RedrivePolicy target).
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show the first messages with their reasons; they stay on the DLQ, visible at once.
    Peek {
        /// How many to show.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max: u32,
    },
    /// Move messages back to their source queue (the SourceQueue attribute, else SQS_QUEUE_URL).
    Redrive {
        /// Move at most this many (default: all).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max: Option<u32>,
        /// Move only messages whose ReasonClass or ErrorMessage contains this text.
        #[arg(long, value_name = "PATTERN")]
        reason: Option<String>,
    },
}

/// Runs `dlq peek` or `dlq redrive`. Exit 0 on success, 1 on a failure, 78 on bad configuration.
pub async fn run(args: DlqArgs) -> ExitCode {
    let config = match load_config().await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let source = Queue::from_config(&config).await;
    let (dlq, how) = match find_dlq(&config, &source).await {
        Ok(found) => found,
        Err(e) => {
            eprintln!("dlq: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match args.command {
        DlqCommand::Peek { max } => peek(&dlq, how, max as usize).await,
        DlqCommand::Redrive { max, reason } => {
            redrive(
                &dlq,
                how,
                &config,
                max.map(|m| m as usize),
                reason.as_deref(),
            )
            .await
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("dlq: {e}");
            ExitCode::from(1)
        }
    }
}

/// The DLQ and how it was found.
async fn find_dlq(config: &Config, source: &Queue) -> Result<(Queue, &'static str), QueueError> {
    match source
        .dead_letter_url(config.dlq_url.as_deref(), None)
        .await?
    {
        Some((url, origin)) => Ok((source.sibling(url), origin.as_str())),
        None => Err(QueueError {
            operation: "GetQueueAttributes",
            message: format!(
                "{} has no RedrivePolicy and SQS_DLQ_URL is not set: no dead-letter queue",
                redact(&source.url)
            ),
            sender_fault: false,
        }),
    }
}

/// A dead letter as received, every attribute kept with its type so a redrive can resend it.
#[derive(Debug, Clone)]
struct DeadLetter {
    message_id: String,
    receipt: String,
    body: String,
    group_id: Option<String>,
    attributes: HashMap<String, MessageAttributeValue>,
}

impl DeadLetter {
    fn text(&self, name: &str) -> Option<&str> {
        self.attributes.get(name)?.string_value()
    }

    /// Whether `--reason` selects it: the pattern occurs in ReasonClass or ErrorMessage.
    fn matches(&self, pattern: Option<&str>) -> bool {
        let Some(p) = pattern else { return true };
        ["ReasonClass", "ErrorMessage"]
            .iter()
            .any(|k| self.text(k).is_some_and(|v| v.contains(p)))
    }
}

/// One ReceiveMessage on the DLQ (1 s long poll, so an emptied queue ends the loop quickly).
async fn receive(
    dlq: &Queue,
    max: usize,
    visibility: Duration,
) -> Result<Vec<DeadLetter>, QueueError> {
    let out = dlq
        .client()
        .receive_message()
        .queue_url(&dlq.url)
        .max_number_of_messages(max.clamp(1, 10) as i32)
        .wait_time_seconds(1)
        .visibility_timeout(visibility.as_secs() as i32)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .send()
        .await
        .map_err(|e| sqs_error("ReceiveMessage", e))?;
    Ok(out
        .messages()
        .iter()
        .map(|m| DeadLetter {
            message_id: m.message_id().unwrap_or_default().to_string(),
            receipt: m.receipt_handle().unwrap_or_default().to_string(),
            body: m.body().unwrap_or_default().to_string(),
            group_id: m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned(),
            attributes: m.message_attributes().cloned().unwrap_or_default(),
        })
        .collect())
}

fn sqs_error(operation: &'static str, e: impl std::error::Error) -> QueueError {
    QueueError {
        operation,
        message: DisplayErrorContext(e).to_string(),
        sender_fault: false,
    }
}

/// Makes messages visible again at once (visibility 0), in batches of 10.
async fn release(dlq: &Queue, receipts: &[String]) -> usize {
    let mut failed = 0;
    for chunk in receipts.chunks(10) {
        let entries: Vec<(&str, Duration)> =
            chunk.iter().map(|r| (r.as_str(), Duration::ZERO)).collect();
        match dlq.change_visibility_batch(&entries).await {
            Ok(refused) => failed += refused.len(),
            Err(_) => failed += chunk.len(),
        }
    }
    failed
}

async fn approximate_depth(dlq: &Queue) -> Option<u64> {
    dlq.attributes()
        .await
        .ok()?
        .get("ApproximateNumberOfMessages")?
        .parse()
        .ok()
}

async fn peek(dlq: &Queue, how: &str, max: usize) -> Result<bool, QueueError> {
    let depth = approximate_depth(dlq).await;
    let mut seen = HashSet::new();
    let mut shown = Vec::new();
    while shown.len() < max {
        let batch = receive(dlq, max - shown.len(), PEEK_VISIBILITY).await?;
        let before = shown.len();
        for m in batch {
            if seen.insert(m.message_id.clone()) {
                shown.push(m);
            }
        }
        if shown.len() == before {
            break;
        }
    }
    let receipts: Vec<String> = shown.iter().map(|m| m.receipt.clone()).collect();
    let not_released = release(dlq, &receipts).await;

    println!(
        "dead-letter queue {} ({how}): about {} message(s); showing {}",
        redact(&dlq.url),
        depth.map_or("?".to_string(), |d| d.to_string()),
        shown.len()
    );
    for (i, m) in shown.iter().enumerate() {
        println!();
        print!("{}", describe(i + 1, m));
    }
    if not_released > 0 {
        eprintln!(
            "dlq: {not_released} message(s) could not be made visible again; they reappear within {} s",
            PEEK_VISIBILITY.as_secs()
        );
    }
    Ok(true)
}

/// One message as `peek` prints it.
fn describe(n: usize, m: &DeadLetter) -> String {
    let field = |k: &str| m.text(k).unwrap_or("-").to_string();
    let reason = match m.text("ReasonClass") {
        Some(r) => r.to_string(),
        None => "- (no ReasonClass: moved by the queue's redrive policy after maxReceiveCount)"
            .to_string(),
    };
    let mut out = format!("[{n}] message {}\n", m.message_id);
    out.push_str(&format!("    reason:     {reason}\n"));
    out.push_str(&format!(
        "    error:      {}\n",
        one_line(&field("ErrorMessage"))
    ));
    out.push_str(&format!(
        "    original:   {} (receive count {})\n",
        field("OriginalMessageId"),
        field("ReceiveCount")
    ));
    out.push_str(&format!(
        "    source:     {}\n",
        m.text("SourceQueue").map_or("-".to_string(), redact)
    ));
    out.push_str(&format!("    by:         {}\n", field("DeadLetteredBy")));
    if let Some(g) = &m.group_id {
        out.push_str(&format!("    group:      {g}\n"));
    }
    out.push_str(&format!("    body:       {}\n", preview(&m.body)));
    out
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn preview(body: &str) -> String {
    let line = one_line(body);
    if line.chars().count() <= BODY_PREVIEW {
        return line;
    }
    let cut: String = line.chars().take(BODY_PREVIEW).collect();
    format!("{cut}… ({} bytes)", body.len())
}

/// Moves the chosen messages. Returns whether none failed.
async fn redrive(
    dlq: &Queue,
    how: &str,
    config: &Config,
    max: Option<usize>,
    pattern: Option<&str>,
) -> Result<bool, QueueError> {
    let depth = approximate_depth(dlq).await;
    let bar = progress_bar(match (depth, max) {
        (Some(d), Some(m)) => Some(d.min(m as u64)),
        (Some(d), None) => Some(d),
        (None, Some(m)) => Some(m as u64),
        (None, None) => None,
    });
    println!(
        "redrive from {} ({how}){}{}",
        redact(&dlq.url),
        max.map_or(String::new(), |m| format!(", at most {m}")),
        pattern.map_or(String::new(), |p| format!(", reason containing {p:?}"))
    );

    let (mut moved, mut skipped, mut failed) = (0usize, 0usize, 0usize);
    let mut seen: HashSet<String> = HashSet::new();
    // Skipped, failed or surplus messages stay hidden until the end of the run, so a loop of
    // receives never sees them twice; then they are made visible again, untouched.
    let mut hold: Vec<String> = Vec::new();
    let mut receive_error = None;
    loop {
        let quota = max.map(|m| m.saturating_sub(moved));
        if quota == Some(0) {
            break;
        }
        let batch = match receive(dlq, quota.unwrap_or(10), REDRIVE_VISIBILITY).await {
            Ok(b) => b,
            Err(e) => {
                receive_error = Some(e);
                break;
            }
        };
        let mut new = 0;
        for m in batch {
            if !seen.insert(m.message_id.clone()) {
                hold.push(m.receipt);
                continue;
            }
            new += 1;
            if max.is_some_and(|q| moved >= q) {
                hold.push(m.receipt);
                continue;
            }
            if !m.matches(pattern) {
                skipped += 1;
                hold.push(m.receipt);
                bar.inc(1);
                continue;
            }
            match move_one(dlq, config, &m).await {
                Ok(()) => moved += 1,
                Err(e) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("dlq: message {}: {e}", m.message_id));
                    hold.push(m.receipt);
                }
            }
            bar.inc(1);
        }
        if new == 0 {
            break;
        }
    }
    bar.finish_and_clear();
    let not_released = release(dlq, &hold).await;
    if not_released > 0 {
        eprintln!(
            "dlq: {not_released} message(s) left on the DLQ could not be made visible again; they reappear within {} s",
            REDRIVE_VISIBILITY.as_secs()
        );
    }
    println!("moved {moved}, skipped {skipped} (did not match), failed {failed}");
    if let Some(e) = receive_error {
        return Err(e);
    }
    Ok(failed == 0)
}

/// Sends one message to its source queue, then deletes it from the DLQ. The delete happens
/// only after the send succeeded.
async fn move_one(dlq: &Queue, config: &Config, m: &DeadLetter) -> Result<(), QueueError> {
    let target = m
        .text("SourceQueue")
        .map(str::to_string)
        .unwrap_or_else(|| config.queue_url.clone());
    let mut req = dlq
        .client()
        .send_message()
        .queue_url(&target)
        .message_body(&m.body);
    for (name, value) in &m.attributes {
        if !DEAD_LETTER_ATTRIBUTES.contains(&name.as_str()) {
            req = req.message_attributes(name, value.clone());
        }
    }
    if target.ends_with(".fifo") {
        // The original id as deduplication id: resending the same dead letter is harmless.
        let dedup = m.text("OriginalMessageId").unwrap_or(&m.message_id);
        req = req
            .message_group_id(m.group_id.as_deref().unwrap_or("redrive"))
            .message_deduplication_id(dedup);
    }
    let sent = req.send().await.map_err(|e| QueueError {
        operation: "SendMessage",
        message: format!("not moved (still on the DLQ): {}", DisplayErrorContext(e)),
        sender_fault: false,
    })?;
    dlq.client()
        .delete_message()
        .queue_url(&dlq.url)
        .receipt_handle(&m.receipt)
        .send()
        .await
        .map_err(|e| QueueError {
            operation: "DeleteMessage",
            message: format!(
                "sent to {} as {} but not deleted from the DLQ, so it may be moved twice (the idempotency key makes the repeat harmless): {}",
                redact(&target),
                sent.message_id().unwrap_or("?"),
                DisplayErrorContext(e)
            ),
            sender_fault: false,
        })?;
    Ok(())
}

/// A bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(len: Option<u64>) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: Option<&str>, error: Option<&str>) -> DeadLetter {
        let mut attributes = HashMap::new();
        for (k, v) in [("ReasonClass", reason), ("ErrorMessage", error)] {
            if let Some(v) = v {
                attributes.insert(
                    k.to_string(),
                    MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(v)
                        .build()
                        .expect("attribute"),
                );
            }
        }
        DeadLetter {
            message_id: "m".into(),
            receipt: "r".into(),
            body: "{}".into(),
            group_id: None,
            attributes,
        }
    }

    #[test]
    fn reason_pattern_matches_class_or_message() {
        let m = letter(Some("invalid_field"), Some("detail.qty: expected"));
        assert!(m.matches(None));
        assert!(m.matches(Some("invalid_field")));
        assert!(m.matches(Some("detail.qty")));
        assert!(!m.matches(Some("malformed_json")));
        assert!(!letter(None, None).matches(Some("x")));
        assert!(letter(None, None).matches(None));
    }

    #[test]
    fn previews_are_one_short_line() {
        assert_eq!(preview("a\nb"), "a b");
        let long = "x".repeat(500);
        let p = preview(&long);
        assert!(p.starts_with(&"x".repeat(BODY_PREVIEW)) && p.ends_with("(500 bytes)"));
    }
}
