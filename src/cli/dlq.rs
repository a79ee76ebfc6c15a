//! `reservation-worker dlq peek|redrive`: look at dead letters and move them back.
//!
//! `peek` receives with a short visibility and then makes every message visible again, so the
//! DLQ is left as it was. `redrive` sends each chosen message to the configured source queue
//! (never to a queue an attribute names) with its original body and attributes, and deletes it
//! from the DLQ only after that send succeeded: a failure leaves the message on the DLQ, never
//! loses it. A run handles what was on the DLQ when it started: a message it moved that comes
//! back (a worker failed it again) is recognised by id and left, so the run ends.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::check::{load_config, redact};
use crate::config::Config;
use crate::sqs::{
    BATCH_LIMIT, Queue, QueueError, QueueErrorKind, SqsOperation, SqsQueue, epoch_millis,
};

/// The attributes our acker adds when it dead-letters a message; `redrive` drops them.
pub const DEAD_LETTER_ATTRIBUTES: [&str; 7] = [
    "ReasonClass",
    "AppliedSteps",
    "ErrorMessage",
    "OriginalMessageId",
    "ReceiveCount",
    "SourceQueue",
    "DeadLetteredBy",
];

/// How long `peek` hides what it looks at (it makes them visible again straight after).
const PEEK_VISIBILITY: Duration = Duration::from_secs(30);
/// How long `redrive` hides a message it holds (working on it, or leaving it until the end of
/// the run). Renewed every [`HOLD_RENEWAL`] while the run lasts, so a run killed without a
/// chance to clean up leaves nothing hidden for longer than this.
const HOLD_VISIBILITY: Duration = Duration::from_secs(30);
/// How often `redrive` renews the visibility of what it holds.
const HOLD_RENEWAL: Duration = Duration::from_secs(10);
/// A DLQ message SQS stamped (`SentTimestamp`) more than this after the run began, by this
/// machine's clock, arrived during the run and is left; the margin absorbs clock skew.
const ARRIVAL_MARGIN: Duration = Duration::from_secs(60);
/// Exit code of a redrive stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;
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
        /// `text` (one block per message, the body cut short) or `json` (every attribute and
        /// the whole body).
        #[arg(long, value_enum, default_value_t = super::Output::Text)]
        output: super::Output,
    },
    /// Move the messages on the DLQ now back to SQS_QUEUE_URL (or --to); ends when those are
    /// done. A message whose SourceQueue attribute names another queue is left on the DLQ.
    Redrive {
        /// Move at most this many (default: all).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max: Option<u32>,
        /// Move only messages whose ReasonClass or ErrorMessage contains this text.
        #[arg(long, value_name = "PATTERN")]
        reason: Option<String>,
        /// Move to this queue instead of SQS_QUEUE_URL; only a queue the DLQ's
        /// RedriveAllowPolicy permits.
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// List what would move; move nothing, and leave every message visible.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs `dlq peek` or `dlq redrive`. Exit 0 on success, 1 on a failure, 78 on bad
/// configuration, 130 when a signal stopped a redrive.
pub async fn run(args: DlqArgs) -> ExitCode {
    let config = match load_config().await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let source = SqsQueue::from_config(&config).await;
    let (dlq, how) = match find_dlq(&config, &source).await {
        Ok(found) => found,
        Err(e) => {
            errln!("dlq: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match args.command {
        DlqCommand::Peek { max, output } => peek(&dlq, how, max as usize, output)
            .await
            .map(|ok| if ok { Ended::Done } else { Ended::Failed }),
        DlqCommand::Redrive {
            max,
            reason,
            to,
            dry_run,
        } => {
            let target = match redrive_target(&config, &source, &dlq, to.as_deref()).await {
                Ok(t) => t,
                Err(e) => {
                    errln!("dlq: {e}");
                    return ExitCode::from(1);
                }
            };
            let run = Redrive {
                dlq: &dlq,
                how,
                target,
                max: max.map(|m| m as usize),
                pattern: reason.as_deref(),
                dry_run,
            };
            run.run(super::shutdown_on_signals()).await
        }
    };
    match result {
        Ok(Ended::Done) => ExitCode::SUCCESS,
        Ok(Ended::Failed) => ExitCode::from(1),
        Ok(Ended::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            errln!("dlq: {e}");
            ExitCode::from(1)
        }
    }
}

/// How a `dlq` command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Everything asked for was done (or, for a redrive, deliberately left).
    Done,
    /// Something failed (a message could not be moved).
    Failed,
    /// A signal stopped a redrive.
    Interrupted,
}

/// The DLQ and how it was found.
async fn find_dlq(
    config: &Config,
    source: &SqsQueue,
) -> Result<(SqsQueue, &'static str), QueueError> {
    match source
        .dead_letter_url(config.dlq_url.as_deref(), None)
        .await?
    {
        Some((url, origin)) => Ok((source.sibling(url), origin.as_str())),
        None => Err(QueueError {
            operation: SqsOperation::GetQueueAttributes,
            message: format!(
                "{} has no RedrivePolicy and SQS_DLQ_URL is not set: no dead-letter queue",
                redact(&source.url)
            ),
            kind: QueueErrorKind::NotFound,
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
    /// When SQS accepted it onto the DLQ (`SentTimestamp`).
    sent_at: Option<SystemTime>,
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
    dlq: &SqsQueue,
    max: usize,
    visibility: Duration,
) -> Result<Vec<DeadLetter>, QueueError> {
    let out = dlq
        .client()
        .receive_message()
        .queue_url(&dlq.url)
        .max_number_of_messages(max.clamp(1, BATCH_LIMIT) as i32)
        .wait_time_seconds(1)
        .visibility_timeout(visibility.as_secs() as i32)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .map_err(|e| QueueError::from_sdk(SqsOperation::ReceiveMessage, e))?;
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
            sent_at: m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|t| epoch_millis(t)),
            attributes: m.message_attributes().cloned().unwrap_or_default(),
        })
        .collect())
}

/// Makes messages visible again at once (visibility 0); returns how many were not.
async fn release(dlq: &SqsQueue, receipts: &[String]) -> usize {
    set_visibility(dlq, receipts, Duration::ZERO).await
}

/// Sets the visibility of every receipt, in batches of 10; returns how many were not set
/// (refused, or in a batch whose call failed).
async fn set_visibility(dlq: &SqsQueue, receipts: &[String], visibility: Duration) -> usize {
    let mut failed = 0;
    for chunk in receipts.chunks(BATCH_LIMIT) {
        let entries: Vec<(&str, Duration)> =
            chunk.iter().map(|r| (r.as_str(), visibility)).collect();
        match dlq.change_visibility_batch(&entries).await {
            Ok(refused) => failed += refused.len(),
            Err(_) => failed += chunk.len(),
        }
    }
    failed
}

async fn approximate_depth(dlq: &SqsQueue) -> Option<u64> {
    dlq.attributes()
        .await
        .ok()?
        .get("ApproximateNumberOfMessages")?
        .parse()
        .ok()
}

async fn peek(
    dlq: &SqsQueue,
    how: &str,
    max: usize,
    output: super::Output,
) -> Result<bool, QueueError> {
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

    if output == super::Output::Json {
        super::print_json(&serde_json::json!({
            "dlq": redact(&dlq.url),
            "found_by": how,
            "approximate_messages": depth,
            "messages": shown.iter().map(as_json).collect::<Vec<_>>(),
            "not_made_visible": not_released,
        }));
    } else {
        outln!(
            "dead-letter queue {} ({how}): about {} message(s); showing {}",
            redact(&dlq.url),
            depth.map_or("?".to_string(), |d| d.to_string()),
            shown.len()
        );
        for (i, m) in shown.iter().enumerate() {
            outln!();
            anstream::print!("{}", crate::redact::owned(describe(i + 1, m)));
        }
    }
    if not_released > 0 {
        errln!(
            "dlq: {not_released} message(s) could not be made visible again; they reappear within {} s",
            PEEK_VISIBILITY.as_secs()
        );
    }
    Ok(true)
}

/// One message as `peek --output json` prints it: the worker's attributes by name (null when
/// absent: moved by the queue's RedrivePolicy, or not the worker's), every other string
/// attribute, and the whole body.
fn as_json(m: &DeadLetter) -> serde_json::Value {
    let text = |k: &str| m.text(k).map(str::to_string);
    let others: serde_json::Map<String, serde_json::Value> = m
        .attributes
        .iter()
        .filter(|(k, _)| !DEAD_LETTER_ATTRIBUTES.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.into())))
        .collect();
    serde_json::json!({
        "message_id": m.message_id,
        "reason": text("ReasonClass"),
        "applied_steps": text("AppliedSteps"),
        "error": text("ErrorMessage"),
        "original_message_id": text("OriginalMessageId"),
        "receive_count": text("ReceiveCount").and_then(|c| c.parse::<u64>().ok()),
        "source_queue": text("SourceQueue").map(|q| redact(&q)),
        "dead_lettered_by": text("DeadLetteredBy"),
        "group_id": m.group_id,
        "attributes": others,
        "body": m.body,
    })
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
    if let Some(applied) = m.text("AppliedSteps") {
        if applied == crate::AppliedSteps::NONE {
            out.push_str(&format!("    applied:    {applied}\n"));
        } else {
            let style = anstyle::AnsiColor::Red.on_default().bold();
            out.push_str(&format!(
                "    applied:    {style}{applied}  (half-applied: these took effect, the rest did not){style:#}\n"
            ));
        }
    }
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
    let cut = crate::text::shortened_chars(&line, BODY_PREVIEW);
    if cut.len() == line.len() {
        return line;
    }
    format!("{cut} ({} bytes)", body.len())
}

/// A queue as every name for it agrees: its account and name (the last two path segments of
/// a URL, the last two fields of an ARN). Hosts differ between endpoints and URL styles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueueName {
    account: String,
    name: String,
}

impl QueueName {
    fn from_url(url: &str) -> Option<QueueName> {
        let parsed = reqwest::Url::parse(url).ok()?;
        let mut segments = parsed.path_segments()?.filter(|s| !s.is_empty()).rev();
        let name = segments.next()?;
        let account = segments.next()?;
        Some(QueueName {
            account: account.to_string(),
            name: name.to_string(),
        })
    }

    /// `arn:<partition>:sqs:<region>:<account>:<name>`.
    fn from_arn(arn: &str) -> Option<QueueName> {
        let parts: Vec<&str> = arn.split(':').collect();
        match parts.as_slice() {
            ["arn", _, "sqs", _, account, name] if !account.is_empty() && !name.is_empty() => {
                Some(QueueName {
                    account: (*account).to_string(),
                    name: (*name).to_string(),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.name)
    }
}

/// Whether two queue URLs name the same queue: equal, or the same account and name.
fn same_queue(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (QueueName::from_url(a), QueueName::from_url(b)),
            (Some(x), Some(y)) if x == y
        )
}

/// The DLQ's `RedriveAllowPolicy`: which source queues may use it, and so which queues a
/// redrive may move its messages to besides `SQS_QUEUE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RedriveAllow {
    /// No policy set: SQS then lets any queue use the DLQ, but nobody chose that, so `--to`
    /// is not trusted on its strength.
    NotSet,
    AllowAll,
    DenyAll,
    ByQueue(Vec<QueueName>),
    /// Present but not a policy this code understands (the text, for the error).
    Unreadable(String),
}

impl RedriveAllow {
    fn parse(text: Option<&str>) -> RedriveAllow {
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return RedriveAllow::NotSet;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return RedriveAllow::Unreadable(text.to_string());
        };
        match v.get("redrivePermission").and_then(|p| p.as_str()) {
            Some("allowAll") => RedriveAllow::AllowAll,
            Some("denyAll") => RedriveAllow::DenyAll,
            Some("byQueue") => {
                let arns = v.get("sourceQueueArns").and_then(|a| a.as_array());
                let names: Option<Vec<QueueName>> = arns.map(|arns| {
                    arns.iter()
                        .filter_map(|a| a.as_str().and_then(QueueName::from_arn))
                        .collect()
                });
                match names {
                    Some(names) => RedriveAllow::ByQueue(names),
                    None => RedriveAllow::Unreadable(text.to_string()),
                }
            }
            _ => RedriveAllow::Unreadable(text.to_string()),
        }
    }

    fn permits(&self, queue: &QueueName) -> bool {
        match self {
            RedriveAllow::AllowAll => true,
            RedriveAllow::ByQueue(names) => names.contains(queue),
            RedriveAllow::NotSet | RedriveAllow::DenyAll | RedriveAllow::Unreadable(_) => false,
        }
    }
}

impl fmt::Display for RedriveAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedriveAllow::NotSet => f.write_str("none set"),
            RedriveAllow::AllowAll => f.write_str("allowAll"),
            RedriveAllow::DenyAll => f.write_str("denyAll"),
            RedriveAllow::ByQueue(names) => {
                let names: Vec<String> = names.iter().map(QueueName::to_string).collect();
                write!(f, "byQueue: {}", names.join(", "))
            }
            RedriveAllow::Unreadable(text) => write!(f, "unreadable: {text}"),
        }
    }
}

/// Why a redrive will not move anything to the queue asked for.
#[derive(Debug, thiserror::Error)]
enum TargetError {
    #[error(
        "--to {to}: not SQS_QUEUE_URL ({configured}) and not a queue the DLQ's RedriveAllowPolicy permits ({policy}); a redrive moves messages only to the source queue or a queue that policy names"
    )]
    NotPermitted {
        to: String,
        configured: String,
        policy: RedriveAllow,
    },
    #[error(
        "--to {0}: not a queue URL (expected https://sqs.<region>.amazonaws.com/<account>/<name>)"
    )]
    NotAQueueUrl(String),
    #[error("{0} is the dead-letter queue itself: there is nowhere to move its messages")]
    IsTheDlq(String),
    #[error("reading the DLQ's RedriveAllowPolicy: {0}")]
    Policy(QueueError),
}

/// Where a redrive sends: `SQS_QUEUE_URL`, or `--to` when the DLQ's RedriveAllowPolicy permits
/// it. Never a queue a message's attribute names: a producer can set any attribute.
async fn redrive_target(
    config: &Config,
    source: &SqsQueue,
    dlq: &SqsQueue,
    to: Option<&str>,
) -> Result<SqsQueue, TargetError> {
    let url = match to {
        None => config.queue_url.clone(),
        Some(to) if same_queue(to, &config.queue_url) => to.to_string(),
        Some(to) => {
            let name =
                QueueName::from_url(to).ok_or_else(|| TargetError::NotAQueueUrl(redact(to)))?;
            let attrs = dlq.attributes().await.map_err(TargetError::Policy)?;
            let policy = RedriveAllow::parse(attrs.get("RedriveAllowPolicy").map(String::as_str));
            if !policy.permits(&name) {
                return Err(TargetError::NotPermitted {
                    to: redact(to),
                    configured: redact(&config.queue_url),
                    policy,
                });
            }
            to.to_string()
        }
    };
    if same_queue(&url, &dlq.url) {
        return Err(TargetError::IsTheDlq(redact(&url)));
    }
    Ok(source.sibling(url))
}

/// The DLQ messages a run holds hidden, by message id, with the latest receipt of each. While
/// the run lasts a task renews their short visibility; at its end they are made visible again.
#[derive(Debug)]
struct Holds {
    dlq: SqsQueue,
    visibility: Duration,
    held: Mutex<HashMap<String, String>>,
}

impl Holds {
    fn new(dlq: SqsQueue, visibility: Duration) -> Holds {
        Holds {
            dlq,
            visibility,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // The map stays consistent whatever panicked while it was locked.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, message_id: &str, receipt: &str) {
        self.lock()
            .insert(message_id.to_string(), receipt.to_string());
    }

    /// Stops holding a message that was deleted.
    fn forget(&self, message_id: &str) {
        self.lock().remove(message_id);
    }

    fn receipts(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }

    /// Hides everything held for another `visibility`.
    async fn renew(&self) {
        // One not renewed is a message deleted meanwhile, or one whose hold lapsed: a later
        // receive hands it out again and it is held anew.
        set_visibility(&self.dlq, &self.receipts(), self.visibility).await;
    }

    /// Renews every `every` until the returned token is cancelled.
    fn keep_renewing(
        self: &Arc<Self>,
        every: Duration,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let holds = self.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(every) => holds.renew().await,
                }
            }
        });
        (stop, task)
    }

    /// Makes everything held visible at once; returns how many could not be.
    async fn release_all(&self) -> usize {
        let receipts: Vec<String> = self.lock().drain().map(|(_, r)| r).collect();
        release(&self.dlq, &receipts).await
    }
}

/// What a redrive does with a message it received.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// A copy of a message this run moved: a worker failed it again. Left, never moved twice.
    CameBack,
    /// SQS stamped it after the run began (by more than [`ARRIVAL_MARGIN`]). Left.
    Arrived,
    /// `--reason` does not select it. Left.
    NotMatching,
    /// Its `SourceQueue` names another queue than the target (the URL, redacted). Left.
    OtherQueue(String),
    Move,
}

/// Why one message was not moved.
#[derive(Debug, thiserror::Error)]
enum MoveError {
    #[error("not moved (still on the DLQ): SendMessage: {0}")]
    NotSent(String),
    #[error(
        "sent to {target} as {sent_id} but not deleted from the DLQ, so a later run may move it again (the idempotency key makes the repeat harmless): DeleteMessage: {error}"
    )]
    NotDeleted {
        target: String,
        sent_id: String,
        error: String,
    },
}

/// What a redrive did, for its summary.
#[derive(Debug, Default)]
struct Tally {
    moved: usize,
    would_move: usize,
    failed: usize,
    not_matching: usize,
    other_queue: usize,
    /// The other queues named, redacted.
    other_queues: BTreeSet<String>,
    came_back: usize,
    arrived: usize,
}

impl Tally {
    fn count(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::CameBack => self.came_back += 1,
            Verdict::Arrived => self.arrived += 1,
            Verdict::NotMatching => self.not_matching += 1,
            Verdict::OtherQueue(q) => {
                self.other_queue += 1;
                self.other_queues.insert(q.clone());
            }
            Verdict::Move => {}
        }
    }

    fn summary(&self, dry_run: bool) -> Vec<String> {
        let mut lines = vec![if dry_run {
            format!(
                "dry run: would move {}, skipped {} (did not match); nothing was moved",
                self.would_move, self.not_matching
            )
        } else {
            format!(
                "moved {}, skipped {} (did not match), failed {}",
                self.moved, self.not_matching, self.failed
            )
        }];
        if self.other_queue > 0 {
            let queues: Vec<&str> = self.other_queues.iter().map(String::as_str).collect();
            lines.push(format!(
                "skipped {} (SourceQueue names another queue: {}); left on the DLQ",
                self.other_queue,
                queues.join(", ")
            ));
        }
        if self.came_back > 0 {
            lines.push(format!(
                "{} moved message(s) came back to the DLQ during this run (a worker is consuming and they failed again); left on the DLQ",
                self.came_back
            ));
        }
        if self.arrived > 0 {
            lines.push(format!(
                "{} message(s) arrived on the DLQ after this run began; left on the DLQ",
                self.arrived
            ));
        }
        lines
    }
}

/// One `dlq redrive` run.
struct Redrive<'a> {
    dlq: &'a SqsQueue,
    how: &'a str,
    target: SqsQueue,
    max: Option<usize>,
    pattern: Option<&'a str>,
    dry_run: bool,
}

impl Redrive<'_> {
    /// Moves (or lists) what is on the DLQ until a receive brings nothing it has not seen,
    /// then makes everything it held visible again. `stop` (SIGINT/SIGTERM) ends it early,
    /// the same way.
    async fn run(&self, stop: CancellationToken) -> Result<Ended, QueueError> {
        let started = SystemTime::now();
        let depth = approximate_depth(self.dlq).await;
        outln!(
            "redrive from {} ({}) to {}{}{}{}",
            redact(&self.dlq.url),
            self.how,
            redact(&self.target.url),
            self.max.map_or(String::new(), |m| format!(", at most {m}")),
            self.pattern
                .map_or(String::new(), |p| format!(", reason containing {p:?}")),
            if self.dry_run { " (dry run)" } else { "" }
        );
        self.warn_if_consumed().await;
        let bar = progress_bar(match (depth, self.max) {
            (Some(d), Some(m)) => Some(d.min(m as u64)),
            (Some(d), None) => Some(d),
            (None, Some(m)) => Some(m as u64),
            (None, None) => None,
        });

        let holds = Arc::new(Holds::new(self.dlq.clone(), HOLD_VISIBILITY));
        let (renewal, renewing) = holds.keep_renewing(HOLD_RENEWAL);
        let mut tally = Tally::default();
        // Source-queue message ids of what this run sent: a DLQ message carrying one (as its
        // own id after a RedrivePolicy move, or as OriginalMessageId on a worker's copy) came
        // back, and is not moved again.
        let mut sent_ids: HashSet<String> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut interrupted = false;
        let mut receive_error = None;
        loop {
            if stop.is_cancelled() {
                interrupted = true;
                break;
            }
            let quota = self
                .max
                .map(|m| m.saturating_sub(tally.moved + tally.would_move));
            if quota == Some(0) {
                break;
            }
            let batch = match receive(self.dlq, quota.unwrap_or(BATCH_LIMIT), HOLD_VISIBILITY).await
            {
                Ok(b) => b,
                Err(e) => {
                    receive_error = Some(e);
                    break;
                }
            };
            let mut new = 0;
            for m in batch {
                holds.hold(&m.message_id, &m.receipt);
                if !seen.insert(m.message_id.clone()) {
                    continue;
                }
                new += 1;
                if stop.is_cancelled() {
                    interrupted = true;
                    continue;
                }
                bar.inc(1);
                let verdict = self.verdict(&m, &sent_ids, started);
                tally.count(&verdict);
                match verdict {
                    Verdict::OtherQueue(q) => bar.suspend(|| {
                        outln!(
                            "skipped message {}: SourceQueue names another queue ({q}), not {}",
                            m.message_id,
                            redact(&self.target.url)
                        );
                    }),
                    Verdict::Move if self.dry_run => {
                        tally.would_move += 1;
                        bar.suspend(|| outln!("would move {}", summary_of(&m)));
                    }
                    Verdict::Move => match self.move_one(&m).await {
                        Ok(sent_id) => {
                            sent_ids.insert(sent_id);
                            holds.forget(&m.message_id);
                            tally.moved += 1;
                        }
                        Err(e) => {
                            if let MoveError::NotDeleted { sent_id, .. } = &e {
                                sent_ids.insert(sent_id.clone());
                            }
                            tally.failed += 1;
                            bar.suspend(|| errln!("dlq: message {}: {e}", m.message_id));
                        }
                    },
                    Verdict::CameBack | Verdict::Arrived | Verdict::NotMatching => {}
                }
            }
            if new == 0 {
                break;
            }
        }
        renewal.cancel();
        let _ = renewing.await;
        bar.finish_and_clear();
        let not_released = holds.release_all().await;
        if not_released > 0 {
            errln!(
                "dlq: {not_released} message(s) left on the DLQ could not be made visible again; they reappear within {} s",
                HOLD_VISIBILITY.as_secs()
            );
        }
        for line in tally.summary(self.dry_run) {
            outln!("{line}");
        }
        if interrupted {
            errln!(
                "dlq: interrupted by a signal: stopped early; every message this run held is visible again"
            );
            return Ok(Ended::Interrupted);
        }
        if let Some(e) = receive_error {
            return Err(e);
        }
        Ok(if tally.failed == 0 {
            Ended::Done
        } else {
            Ended::Failed
        })
    }

    /// Says so when the target has messages in flight: a consumer is running, and what this
    /// run moves may fail again and come back.
    async fn warn_if_consumed(&self) {
        match self.target.attributes().await {
            Ok(attrs) => {
                let in_flight = attrs
                    .get("ApproximateNumberOfMessagesNotVisible")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if in_flight > 0 {
                    errln!(
                        "dlq: warning: {} has {in_flight} message(s) in flight: a consumer is running. Messages this run moves that fail again come back to the DLQ; this run leaves them there",
                        redact(&self.target.url)
                    );
                }
            }
            Err(e) => errln!(
                "dlq: warning: cannot read the attributes of {} ({e}), so cannot tell whether a consumer is running",
                redact(&self.target.url)
            ),
        }
    }

    fn verdict(&self, m: &DeadLetter, sent_ids: &HashSet<String>, started: SystemTime) -> Verdict {
        let original = m.text("OriginalMessageId");
        if sent_ids.contains(&m.message_id) || original.is_some_and(|o| sent_ids.contains(o)) {
            return Verdict::CameBack;
        }
        if m.sent_at.is_some_and(|t| t > started + ARRIVAL_MARGIN) {
            return Verdict::Arrived;
        }
        if !m.matches(self.pattern) {
            return Verdict::NotMatching;
        }
        match m.text("SourceQueue") {
            Some(q) if !same_queue(q, &self.target.url) => Verdict::OtherQueue(redact(q)),
            _ => Verdict::Move,
        }
    }

    /// Sends one message to the target, then deletes it from the DLQ; the delete happens only
    /// after the send succeeded. Returns the id SQS gave the sent message.
    async fn move_one(&self, m: &DeadLetter) -> Result<String, MoveError> {
        let mut req = self
            .target
            .client()
            .send_message()
            .queue_url(&self.target.url)
            .message_body(&m.body);
        for (name, value) in &m.attributes {
            if !DEAD_LETTER_ATTRIBUTES.contains(&name.as_str()) {
                req = req.message_attributes(name, value.clone());
            }
        }
        if self.target.url.ends_with(".fifo") {
            // The original id as deduplication id: resending the same dead letter is harmless.
            let dedup = m.text("OriginalMessageId").unwrap_or(&m.message_id);
            req = req
                .message_group_id(m.group_id.as_deref().unwrap_or("redrive"))
                .message_deduplication_id(dedup);
        }
        let sent = req
            .send()
            .await
            .map_err(|e| MoveError::NotSent(crate::aws::error_text(&e)))?;
        let sent_id = sent.message_id().unwrap_or_default().to_string();
        self.dlq
            .client()
            .delete_message()
            .queue_url(&self.dlq.url)
            .receipt_handle(&m.receipt)
            .send()
            .await
            .map_err(|e| MoveError::NotDeleted {
                target: redact(&self.target.url),
                sent_id: sent_id.clone(),
                error: crate::aws::error_text(&e),
            })?;
        Ok(sent_id)
    }
}

/// One line about a dead letter, as a dry run lists it.
fn summary_of(m: &DeadLetter) -> String {
    format!(
        "message {}: reason {}, original {}",
        m.message_id,
        m.text("ReasonClass").unwrap_or("-"),
        m.text("OriginalMessageId").unwrap_or("-")
    )
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
            sent_at: None,
            attributes,
        }
    }

    fn with(mut m: DeadLetter, name: &str, value: &str) -> DeadLetter {
        m.attributes.insert(
            name.to_string(),
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("attribute"),
        );
        m
    }

    fn queue(sdk: &aws_config::SdkConfig, url: &str) -> SqsQueue {
        SqsQueue::new(sdk, url)
    }

    fn offline_sdk() -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("ap-northeast-2"))
            .build()
    }

    const SOURCE: &str = "https://sqs.ap-northeast-2.amazonaws.com/123456789012/events";

    #[test]
    fn queues_are_the_same_by_account_and_name() {
        assert!(same_queue(SOURCE, SOURCE));
        assert!(same_queue(
            SOURCE,
            "https://ap-northeast-2.queue.amazonaws.com/123456789012/events"
        ));
        assert!(!same_queue(
            SOURCE,
            "https://sqs.ap-northeast-2.amazonaws.com/999999999999/events"
        ));
        assert!(!same_queue(
            SOURCE,
            "https://sqs.ap-northeast-2.amazonaws.com/123456789012/events-dlq"
        ));
        assert!(!same_queue(SOURCE, "not a url"));
        assert_eq!(
            QueueName::from_arn("arn:aws:sqs:ap-northeast-2:123456789012:events"),
            QueueName::from_url(SOURCE)
        );
        assert_eq!(QueueName::from_arn("arn:aws:sns:r:1:events"), None);
    }

    #[test]
    fn the_redrive_allow_policy_decides_which_other_queues_may_be_targets() {
        let events = QueueName::from_url(SOURCE).expect("name");
        let by_queue = RedriveAllow::parse(Some(
            r#"{"redrivePermission":"byQueue","sourceQueueArns":["arn:aws:sqs:ap-northeast-2:123456789012:events"]}"#,
        ));
        assert!(by_queue.permits(&events));
        assert_eq!(by_queue.to_string(), "byQueue: 123456789012/events");
        let other = QueueName {
            account: "123456789012".into(),
            name: "other".into(),
        };
        assert!(!by_queue.permits(&other));
        assert!(RedriveAllow::parse(Some(r#"{"redrivePermission":"allowAll"}"#)).permits(&other));
        assert!(!RedriveAllow::parse(Some(r#"{"redrivePermission":"denyAll"}"#)).permits(&events));
        assert_eq!(RedriveAllow::parse(None), RedriveAllow::NotSet);
        assert!(!RedriveAllow::NotSet.permits(&events));
        assert!(matches!(
            RedriveAllow::parse(Some("{nope")),
            RedriveAllow::Unreadable(_)
        ));
        assert!(matches!(
            RedriveAllow::parse(Some(r#"{"redrivePermission":"byQueue"}"#)),
            RedriveAllow::Unreadable(_)
        ));
    }

    #[test]
    fn what_came_back_or_arrived_late_or_names_another_queue_is_left() {
        let sdk = offline_sdk();
        let dlq = queue(
            &sdk,
            "https://sqs.ap-northeast-2.amazonaws.com/123456789012/dlq",
        );
        let run = Redrive {
            dlq: &dlq,
            how: "SQS_DLQ_URL",
            target: queue(&sdk, SOURCE),
            max: None,
            pattern: Some("rejected"),
            dry_run: false,
        };
        let started = SystemTime::now();
        let sent: HashSet<String> = ["sent-1".to_string()].into();
        let base = letter(Some("downstream_rejected"), None);
        let verdict = |m: &DeadLetter| run.verdict(m, &sent, started);

        assert_eq!(verdict(&base), Verdict::Move);
        assert_eq!(
            verdict(&with(base.clone(), "SourceQueue", SOURCE)),
            Verdict::Move
        );
        // A worker's copy names what it failed; a RedrivePolicy move keeps the id.
        assert_eq!(
            verdict(&with(base.clone(), "OriginalMessageId", "sent-1")),
            Verdict::CameBack
        );
        let moved_back = DeadLetter {
            message_id: "sent-1".into(),
            ..base.clone()
        };
        assert_eq!(verdict(&moved_back), Verdict::CameBack);
        let late = DeadLetter {
            sent_at: Some(started + ARRIVAL_MARGIN + Duration::from_secs(1)),
            ..base.clone()
        };
        assert_eq!(verdict(&late), Verdict::Arrived);
        let skewed = DeadLetter {
            sent_at: Some(started + ARRIVAL_MARGIN - Duration::from_secs(1)),
            ..base.clone()
        };
        assert_eq!(verdict(&skewed), Verdict::Move);
        assert_eq!(
            verdict(&letter(Some("invalid_field"), None)),
            Verdict::NotMatching
        );
        let elsewhere = "https://u:p@sqs.ap-northeast-2.amazonaws.com/123456789012/theirs";
        assert_eq!(
            verdict(&with(base, "SourceQueue", elsewhere)),
            Verdict::OtherQueue(
                "https://sqs.ap-northeast-2.amazonaws.com/123456789012/theirs".into()
            )
        );
    }

    #[test]
    fn the_summary_says_what_was_left_and_why() {
        let mut t = Tally {
            moved: 3,
            ..Tally::default()
        };
        for v in [
            Verdict::CameBack,
            Verdict::CameBack,
            Verdict::Arrived,
            Verdict::NotMatching,
            Verdict::OtherQueue("q1".into()),
            Verdict::OtherQueue("q1".into()),
            Verdict::OtherQueue("q2".into()),
        ] {
            t.count(&v);
        }
        assert_eq!(
            t.summary(false),
            [
                "moved 3, skipped 1 (did not match), failed 0",
                "skipped 3 (SourceQueue names another queue: q1, q2); left on the DLQ",
                "2 moved message(s) came back to the DLQ during this run (a worker is consuming and they failed again); left on the DLQ",
                "1 message(s) arrived on the DLQ after this run began; left on the DLQ",
            ]
        );
        let dry = Tally {
            would_move: 2,
            ..Tally::default()
        };
        assert_eq!(
            dry.summary(true),
            ["dry run: would move 2, skipped 0 (did not match); nothing was moved"]
        );
    }

    /// Held messages stay hidden past their visibility while the renewal runs, and are
    /// visible at once after `release_all`.
    #[tokio::test]
    async fn holds_are_renewed_while_the_run_lasts_and_released_at_its_end() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        tokio::spawn(reservation_sim::serve_sqs(
            listener,
            reservation_sim::SqsSim::new(),
            stop.clone(),
        ));
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("ap-northeast-2"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
                aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"),
            ))
            .build();
        let client = aws_sdk_sqs::Client::new(&sdk);
        let url = client
            .create_queue()
            .queue_name("dlq")
            .send()
            .await
            .expect("CreateQueue")
            .queue_url()
            .expect("url")
            .to_string();
        let dlq = queue(&sdk, &url);
        dlq.send("held", &[], None, None).await.expect("send");
        let got = receive(&dlq, 1, Duration::from_secs(1))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1);

        let holds = Arc::new(Holds::new(dlq.clone(), Duration::from_secs(1)));
        holds.hold(&got[0].message_id, &got[0].receipt);
        let (renewal, renewing) = holds.keep_renewing(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let hidden = dlq.attributes().await.expect("attributes");
        assert_eq!(hidden["ApproximateNumberOfMessagesNotVisible"], "1");
        renewal.cancel();
        renewing.await.expect("renewal task");
        assert_eq!(holds.release_all().await, 0);
        let visible = dlq.attributes().await.expect("attributes");
        assert_eq!(visible["ApproximateNumberOfMessages"], "1");
        stop.cancel();
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
