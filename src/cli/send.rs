//! `reservation-worker send`: puts events on the queue, for local runs, demos and load.
//!
//! Messages go out in SendMessageBatch calls cut by count (10) and by size (SQS's limit on the
//! whole request). Each line of a file is checked first (size, characters SQS accepts, and the
//! worker's own parser unless `--allow-invalid`); a refused line is reported with its number and
//! the run goes on. Every line of a file carries the `EnvelopeId` attribute, a UUID v5 of the
//! line's bytes, which the worker uses as the envelope id when the body has none: sending the
//! same file again sends the same events, not new ones.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::check::redact;
use crate::config::Config;
use crate::event::{self, ENVELOPE_ID_ATTRIBUTE, EventError, MessageContext};
use crate::sqs::{BATCH_LIMIT, Queue, SqsQueue};

/// SQS's limit on one SendMessageBatch request, and so on any one message in it: the bodies
/// plus every message attribute's name, data type and value, in bytes.
const SQS_REQUEST_LIMIT: usize = 262_144;
/// The data type of every attribute `send` sets.
const STRING: &str = "String";
/// Namespace of the envelope ids derived from file lines (UUID v5 of the line's bytes).
const LINE_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f1d_3c2a_9b47_4e58_a0c1_5d2e_8f93_b716);
/// Line numbers listed in the summary before it says "…".
const SUMMARY_LINES: usize = 20;

/// Which envelope form a flag-built event is written in.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Form {
    /// `{"id","type","source","detail","time","trace_id"}`
    Documented,
    /// EventBridge's SQS target format (`detail-type`).
    Eventbridge,
    /// The documented form inside an SNS notification.
    Sns,
}

/// Flags of `send`: one event from flags, a JSONL file, or N generated events.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Event type: reservation.expired, payment.approved or payment.failed.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// The reservation the event is about (`detail.reservation_id`).
    #[arg(long)]
    pub reservation_id: Option<String>,
    /// The show or performance of the seats (`detail.event_id`).
    #[arg(long)]
    pub event_id: Option<String>,
    /// Comma-separated seat ids.
    #[arg(long, value_delimiter = ',')]
    pub seat_ids: Vec<String>,
    /// Number of seats (`detail.qty`).
    #[arg(long)]
    pub qty: Option<u32>,
    /// The payment of a payment event (`detail.payment_intent_id`).
    #[arg(long)]
    pub payment_intent_id: Option<String>,
    /// The amount paid (`detail.amount`).
    #[arg(long)]
    pub amount: Option<f64>,
    /// ISO 4217 currency of the amount (`detail.currency`).
    #[arg(long)]
    pub currency: Option<String>,
    /// The customer (`detail.user_id`).
    #[arg(long)]
    pub user_id: Option<String>,
    /// Envelope id (the idempotency key); generated when absent.
    #[arg(long)]
    pub id: Option<String>,
    /// The envelope form: documented, eventbridge or sns.
    #[arg(long, value_enum, default_value = "documented")]
    pub form: Form,
    /// Send each line of this JSONL file as one message body, reporting each line.
    #[arg(long, conflicts_with_all = ["count", "event_type"])]
    pub file: Option<PathBuf>,
    /// Send events the worker would dead-letter too (invalid JSON, unknown types, bad fields),
    /// e.g. to exercise the DLQ. Size and SQS's character rules are still checked. Without it,
    /// an event the worker's parser refuses is not sent, and the exit status says so.
    #[arg(long, alias = "no-validate")]
    pub allow_invalid: bool,
    /// Send this many generated events, cycling through the three types.
    #[arg(long, conflicts_with = "event_type")]
    pub count: Option<usize>,
    /// MessageGroupId on FIFO queues (default: the reservation id).
    #[arg(long)]
    pub group_id: Option<String>,
    /// Queue URL (default: SQS_QUEUE_URL).
    #[arg(long)]
    pub queue_url: Option<String>,
}

/// Where a message came from, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A line of `--file`, numbered from 1.
    Line(usize),
    /// The event built from the flags.
    Flags,
    /// The `n`-th of `--count`.
    Generated(usize),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Flags => f.write_str("event"),
            Origin::Generated(n) => write!(f, "generated event {n}"),
        }
    }
}

/// One message body to send, before it is checked.
#[derive(Debug)]
struct Candidate {
    origin: Origin,
    /// The raw bytes: a file line need not be UTF-8.
    bytes: Vec<u8>,
}

/// A checked message, ready for a batch.
#[derive(Debug)]
struct Ready {
    origin: Origin,
    body: String,
    /// UUID v5 of the body: the FIFO deduplication id, and on file lines the `EnvelopeId`.
    stable_id: String,
    /// The envelope id the worker will use, when the body parses.
    envelope_id: Option<String>,
    group: String,
    /// Body plus attributes, as SQS counts them against its limits.
    size: usize,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("not valid UTF-8 (byte {at}); SQS bodies are text")]
    NotUtf8 { at: usize },
    #[error("{size} bytes with its attributes, more than the {limit} one SQS message may hold")]
    TooLarge { size: usize, limit: usize },
    #[error("character U+{code:04X} at byte {at} is not allowed in an SQS message")]
    Character { code: u32, at: usize },
    #[error("the worker would dead-letter it ({class}): {0}", class = .0.class())]
    Invalid(EventError),
    #[error("SQS refused it: {code}: {message}")]
    BySqs { code: String, message: String },
}

/// What happened to one message.
#[derive(Debug)]
enum Outcome {
    Sent {
        message_id: String,
        envelope_id: Option<String>,
    },
    Refused(Refusal),
    /// The call carrying it failed; it may or may not have reached the queue.
    NotSent(String),
}

/// The tally of a run, printed as its summary.
#[derive(Debug, Default)]
struct Tally {
    /// Messages handed to `send`.
    total: usize,
    sent: usize,
    refused: Vec<Origin>,
    not_sent: Vec<Origin>,
    /// A batch call failed: the run stopped there.
    stopped: bool,
    /// Where the messages never tried begin, when the run stopped early.
    first_not_attempted: Option<Origin>,
}

impl Tally {
    fn not_attempted(&self) -> usize {
        self.total - self.sent - self.refused.len() - self.not_sent.len()
    }

    fn all_sent(&self) -> bool {
        self.sent == self.total
    }
}

/// Publishes the events; for local runs, demos and load. Returns whether every one was sent.
pub async fn run(args: SendArgs) -> anyhow::Result<bool> {
    // --queue-url stands in for SQS_QUEUE_URL; the rest (region, profile) comes from the env.
    let vars = std::env::vars()
        .filter(|(k, _)| args.queue_url.is_none() || k != "SQS_QUEUE_URL")
        .chain(
            args.queue_url
                .clone()
                .map(|u| ("SQS_QUEUE_URL".to_string(), u)),
        );
    let mut config = Config::load_from_vars(vars)
        .await
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    // The flag wins over the secret overlay too.
    if let Some(url) = &args.queue_url {
        config.queue_url = url.clone();
    }
    let queue = SqsQueue::from_config(&config).await;

    let candidates: Vec<Candidate> = if let Some(path) = &args.file {
        read_lines(path)?
    } else if let Some(count) = args.count {
        (0..count)
            .map(|n| Candidate {
                origin: Origin::Generated(n + 1),
                bytes: generated(n).0.into_bytes(),
            })
            .collect()
    } else {
        vec![Candidate {
            origin: Origin::Flags,
            bytes: from_flags(&args)?.0.into_bytes(),
        }]
    };
    let limit = message_limit(&queue).await;
    let sender = Sender {
        queue: &queue,
        fifo: queue.url.ends_with(".fifo"),
        group_id: args.group_id.as_deref(),
        validate: !args.allow_invalid,
        with_envelope_id: args.file.is_some(),
        limit,
        bar: progress_bar(candidates.len()),
    };
    let tally = sender.send_all(candidates).await;
    sender.bar.finish_and_clear();
    outln!("{}", summary(&tally, &queue.url, args.file.as_deref()));
    Ok(tally.all_sent())
}

/// The non-blank lines of a file, numbered from 1, as bytes (a line need not be UTF-8).
fn read_lines(path: &Path) -> anyhow::Result<Vec<Candidate>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(data
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(n, line)| Candidate {
            origin: Origin::Line(n),
            bytes: line.to_vec(),
        })
        .collect())
}

/// The most one message (and one batch request) may hold on this queue: its
/// `MaximumMessageSize`, never more than [`SQS_REQUEST_LIMIT`]. When the attribute cannot be
/// read (a role allowed only to send), SQS's own limit.
async fn message_limit(queue: &SqsQueue) -> usize {
    match queue.attributes().await {
        Ok(attrs) => attrs
            .get("MaximumMessageSize")
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(SQS_REQUEST_LIMIT, |m| m.min(SQS_REQUEST_LIMIT)),
        Err(e) => {
            errln!(
                "send: cannot read the queue's MaximumMessageSize ({e}); assuming {SQS_REQUEST_LIMIT} bytes"
            );
            SQS_REQUEST_LIMIT
        }
    }
}

fn progress_bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if total < 50 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sent ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Checks, batches and sends messages, reporting each as it goes.
struct Sender<'a> {
    queue: &'a SqsQueue,
    fifo: bool,
    group_id: Option<&'a str>,
    validate: bool,
    /// Set `EnvelopeId` on every message (file lines: their bodies may carry no id).
    with_envelope_id: bool,
    limit: usize,
    bar: ProgressBar,
}

impl Sender<'_> {
    async fn send_all(&self, candidates: Vec<Candidate>) -> Tally {
        let mut tally = Tally {
            total: candidates.len(),
            ..Tally::default()
        };
        let mut batch: Vec<Ready> = Vec::new();
        let mut batch_bytes = 0usize;
        for candidate in candidates {
            let origin = candidate.origin;
            let checked = self.check(candidate);
            // A refused message flushes what came before it, so the report stays in line order.
            let cut = match &checked {
                Ok(ready) => batch.len() == BATCH_LIMIT || batch_bytes + ready.size > self.limit,
                Err(_) => true,
            };
            if cut {
                self.flush(std::mem::take(&mut batch), &mut tally).await;
                batch_bytes = 0;
            }
            if tally.stopped {
                tally.first_not_attempted = Some(origin);
                break;
            }
            match checked {
                Ok(ready) => {
                    batch_bytes += ready.size;
                    batch.push(ready);
                }
                Err(refusal) => self.record(origin, Outcome::Refused(refusal), &mut tally),
            }
        }
        if !tally.stopped {
            self.flush(batch, &mut tally).await;
        }
        tally
    }

    /// Everything SQS or the worker would refuse, found before sending.
    fn check(&self, c: Candidate) -> Result<Ready, Refusal> {
        let body = String::from_utf8(c.bytes).map_err(|e| Refusal::NotUtf8 {
            at: e.utf8_error().valid_up_to(),
        })?;
        let stable_id = uuid::Uuid::new_v5(&LINE_ID_NAMESPACE, body.as_bytes()).to_string();
        let size = body.len()
            + if self.with_envelope_id {
                attribute_size(ENVELOPE_ID_ATTRIBUTE, &stable_id)
            } else {
                0
            };
        if size > self.limit {
            return Err(Refusal::TooLarge {
                size,
                limit: self.limit,
            });
        }
        if let Some((at, c)) = body.char_indices().find(|(_, c)| !sqs_allows(*c)) {
            return Err(Refusal::Character {
                code: u32::from(c),
                at,
            });
        }
        let mut attributes = HashMap::new();
        if self.with_envelope_id {
            attributes.insert(ENVELOPE_ID_ATTRIBUTE.to_string(), stable_id.clone());
        }
        let parsed = event::parse(
            &body,
            &MessageContext {
                message_id: "",
                attributes: &attributes,
            },
        );
        let (envelope_id, reservation_id) = match parsed {
            Ok(e) => (
                Some(e.envelope_id.clone()),
                Some(e.reservation_id().to_string()),
            ),
            Err(e) if self.validate => return Err(Refusal::Invalid(e)),
            Err(_) => (None, None),
        };
        let group = match (self.group_id, reservation_id, c.origin) {
            (Some(g), _, _) => g.to_string(),
            (None, Some(r), _) => r,
            (None, None, Origin::Line(n)) => format!("line-{n}"),
            (None, None, _) => "send".to_string(),
        };
        Ok(Ready {
            origin: c.origin,
            body,
            stable_id,
            envelope_id,
            group,
            size,
        })
    }

    /// Sends one batch and records each entry's outcome. A failed call stops the run: the
    /// queue is unreachable or refuses whole requests, and later calls would fare the same.
    async fn flush(&self, batch: Vec<Ready>, tally: &mut Tally) {
        if batch.is_empty() {
            return;
        }
        let entries = match batch
            .iter()
            .enumerate()
            .map(|(i, r)| self.entry(i, r))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(e) => e,
            Err(e) => return self.fail_batch(batch, format!("building a batch entry: {e}"), tally),
        };
        let out = match self
            .queue
            .client()
            .send_message_batch()
            .queue_url(&self.queue.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let why = format!("SQS SendMessageBatch: {}", crate::aws::error_text(&e));
                return self.fail_batch(batch, why, tally);
            }
        };
        // Entry ids are positions in the batch.
        let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
        for ok in out.successful() {
            let Some(i) = ok.id().parse::<usize>().ok().filter(|i| *i < batch.len()) else {
                continue;
            };
            outcomes[i] = Some(Outcome::Sent {
                message_id: ok.message_id().to_string(),
                envelope_id: batch[i].envelope_id.clone(),
            });
        }
        for f in out.failed() {
            let Some(i) = f.id().parse::<usize>().ok().filter(|i| *i < batch.len()) else {
                continue;
            };
            outcomes[i] = Some(Outcome::Refused(Refusal::BySqs {
                code: f.code().to_string(),
                message: f.message().unwrap_or_default().to_string(),
            }));
        }
        for (ready, outcome) in batch.into_iter().zip(outcomes) {
            let outcome = outcome.unwrap_or_else(|| {
                Outcome::NotSent("SendMessageBatch answered without this entry".to_string())
            });
            self.record(ready.origin, outcome, tally);
        }
    }

    fn fail_batch(&self, batch: Vec<Ready>, why: String, tally: &mut Tally) {
        for ready in batch {
            self.record(ready.origin, Outcome::NotSent(why.clone()), tally);
        }

        tally.stopped = true;
    }

    fn entry(
        &self,
        i: usize,
        r: &Ready,
    ) -> Result<SendMessageBatchRequestEntry, aws_sdk_sqs::error::BuildError> {
        let mut e = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(&r.body);
        if self.with_envelope_id {
            e = e.message_attributes(
                ENVELOPE_ID_ATTRIBUTE,
                MessageAttributeValue::builder()
                    .data_type(STRING)
                    .string_value(&r.stable_id)
                    .build()?,
            );
        }
        if self.fifo {
            // The same line gives the same deduplication id: a re-run within SQS's 5-minute
            // window is dropped by the queue itself.
            e = e
                .message_group_id(&r.group)
                .message_deduplication_id(&r.stable_id);
        }
        e.build()
    }

    /// Counts an outcome and prints it: every line of a file, and whatever was not sent.
    fn record(&self, origin: Origin, outcome: Outcome, tally: &mut Tally) {
        match &outcome {
            Outcome::Sent { .. } => tally.sent += 1,
            Outcome::Refused(_) => tally.refused.push(origin),
            Outcome::NotSent(_) => tally.not_sent.push(origin),
        }
        self.bar.inc(1);
        let text = match (&outcome, origin) {
            (
                Outcome::Sent {
                    message_id,
                    envelope_id: Some(id),
                },
                Origin::Line(_),
            ) => format!("{origin}: sent as message {message_id}, envelope id {id}"),
            (Outcome::Sent { message_id, .. }, Origin::Line(_)) => {
                format!("{origin}: sent as message {message_id}")
            }
            (Outcome::Sent { .. }, _) => return,
            (Outcome::Refused(r), _) => format!("{origin}: refused: {r}"),
            (Outcome::NotSent(why), _) => format!("{origin}: not sent: {why}"),
        };
        self.bar.suspend(|| outln!("{text}"));
    }
}

/// SQS's message size accounting for one String attribute.
fn attribute_size(name: &str, value: &str) -> usize {
    name.len() + STRING.len() + value.len()
}

/// The characters SQS accepts in a message body (#x9, #xA, #xD, #x20–#xD7FF, #xE000–#xFFFD,
/// #x10000–#x10FFFF).
fn sqs_allows(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// The last line of the output.
fn summary(t: &Tally, url: &str, file: Option<&Path>) -> String {
    let mut out = format!(
        "sent {} of {} message(s) to {}",
        t.sent,
        t.total,
        redact(url)
    );
    if let Some(path) = file {
        out.push_str(&format!(" from {}", path.display()));
    }
    if !t.refused.is_empty() {
        out.push_str(&format!(
            "; refused {}: {}",
            t.refused.len(),
            listing(&t.refused)
        ));
    }
    if !t.not_sent.is_empty() {
        out.push_str(&format!(
            "; not sent {} (a call failed): {}",
            t.not_sent.len(),
            listing(&t.not_sent)
        ));
    }
    if let Some(first) = t.first_not_attempted {
        out.push_str(&format!(
            "; stopped there: {} not attempted, from {first} on",
            t.not_attempted()
        ));
    }
    out
}

/// Line numbers (or messages) for the summary, the first [`SUMMARY_LINES`] of them.
fn listing(origins: &[Origin]) -> String {
    let mut listed: Vec<String> = origins
        .iter()
        .take(SUMMARY_LINES)
        .map(Origin::to_string)
        .collect();
    if origins.len() > SUMMARY_LINES {
        listed.push("…".to_string());
    }
    listed.join(", ")
}

/// One event from the flags.
fn from_flags(a: &SendArgs) -> anyhow::Result<(String, String)> {
    let Some(t) = a.event_type.as_deref() else {
        bail!("give --type (with its fields), --file or --count");
    };
    let rid = a
        .reservation_id
        .clone()
        .context("--reservation-id is required with --type")?;
    let mut detail = json!({ "reservation_id": rid });
    let d = detail.as_object_mut().context("detail")?;
    let mut put = |k: &str, v: Value| {
        d.insert(k.to_string(), v);
    };
    if let Some(v) = &a.event_id {
        put("event_id", json!(v));
    }
    if !a.seat_ids.is_empty() {
        put("seat_ids", json!(a.seat_ids));
    }
    if let Some(v) = a.qty {
        put("qty", json!(v));
    }
    if let Some(v) = &a.payment_intent_id {
        put("payment_intent_id", json!(v));
    }
    if let Some(v) = a.amount {
        put("amount", json!(v));
    }
    if let Some(v) = &a.currency {
        put("currency", json!(v));
    }
    if let Some(v) = &a.user_id {
        put("user_id", json!(v));
    }
    let id =
        a.id.clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    Ok((envelope(a.form, &id, t, detail), rid))
}

/// The `n`-th generated event: all three types in turn, complete, on distinct reservations.
pub fn generated(n: usize) -> (String, String) {
    let rid = format!(
        "res-{n:06}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let seats = json!([format!("S-{n}-1"), format!("S-{n}-2")]);
    let (t, detail) = match n % 3 {
        0 => (
            "reservation.expired",
            json!({"reservation_id": rid, "event_id": "evt-gen", "seat_ids": seats, "qty": 2}),
        ),
        1 => (
            "payment.approved",
            json!({"reservation_id": rid, "payment_intent_id": format!("pi-{n}"), "amount": 12000, "currency": "KRW", "event_id": "evt-gen", "user_id": "user-gen", "seat_ids": seats, "qty": 2}),
        ),
        _ => (
            "payment.failed",
            json!({"reservation_id": rid, "payment_intent_id": format!("pi-{n}"), "amount": 12000, "currency": "KRW", "event_id": "evt-gen", "user_id": "user-gen", "seat_ids": seats, "qty": 2, "error_code": "card_declined"}),
        ),
    };
    (
        envelope(
            Form::Documented,
            &uuid::Uuid::new_v4().to_string(),
            t,
            detail,
        ),
        rid,
    )
}

fn envelope(form: Form, id: &str, event_type: &str, detail: Value) -> String {
    let time = utc_now();
    match form {
        Form::Documented => json!({"id": id, "type": event_type, "source": "reservation-worker.send", "detail": detail, "time": time}).to_string(),
        Form::Eventbridge => json!({"version": "0", "id": id, "detail-type": event_type, "source": "reservation-worker.send", "account": "000000000000", "time": time, "region": "ap-northeast-2", "resources": [], "detail": detail}).to_string(),
        Form::Sns => {
            let inner = envelope(Form::Documented, id, event_type, detail);
            json!({"Type": "Notification", "MessageId": uuid::Uuid::new_v4().to_string(), "TopicArn": "arn:aws:sns:ap-northeast-2:000000000000:reservations", "Message": inner, "Timestamp": time}).to_string()
        }
    }
}

/// "Now" in RFC 3339, UTC, to the second (the envelope's `time`).
fn utc_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_rfc_3339_to_the_second() {
        let now = utc_now();
        // 2026-12-03T19:01:32Z
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
    }

    #[test]
    fn lines_are_numbered_from_one_and_blank_ones_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.jsonl");
        std::fs::write(&path, b"a\r\n\n  \nb\n\xff\n").expect("write");
        let got: Vec<(Origin, Vec<u8>)> = read_lines(&path)
            .expect("read")
            .into_iter()
            .map(|c| (c.origin, c.bytes))
            .collect();
        assert_eq!(
            got,
            [
                (Origin::Line(1), b"a".to_vec()),
                (Origin::Line(4), b"b".to_vec()),
                (Origin::Line(5), b"\xff".to_vec()),
            ]
        );
    }

    #[test]
    fn the_derived_id_depends_on_the_line_bytes_only() {
        let id = |s: &str| uuid::Uuid::new_v5(&LINE_ID_NAMESPACE, s.as_bytes()).to_string();
        assert_eq!(id("{\"a\":1}"), id("{\"a\":1}"));
        assert_ne!(id("{\"a\":1}"), id("{\"a\": 1}"));
        assert_eq!(id("x").len(), 36);
    }

    #[test]
    fn only_characters_sqs_accepts_pass() {
        for ok in [
            '\t',
            '\n',
            '\r',
            ' ',
            'é',
            '\u{D7FF}',
            '\u{E000}',
            '\u{1F600}',
        ] {
            assert!(sqs_allows(ok), "{ok:?}");
        }
        for bad in ['\u{0}', '\u{1}', '\u{1F}', '\u{FFFE}', '\u{FFFF}'] {
            assert!(!sqs_allows(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_summary_lists_what_was_not_sent() {
        let t = Tally {
            total: 5,
            sent: 2,
            refused: vec![Origin::Line(2), Origin::Line(4)],
            not_sent: vec![Origin::Line(5)],
            stopped: true,
            first_not_attempted: None,
        };
        assert_eq!(
            summary(&t, "https://u:p@q.example/1/q", Some(Path::new("e.jsonl"))),
            "sent 2 of 5 message(s) to https://q.example/1/q from e.jsonl; refused 2: line 2, line 4; not sent 1 (a call failed): line 5"
        );
        let t = Tally {
            total: 30,
            sent: 0,
            refused: Vec::new(),
            not_sent: (1..=10).map(Origin::Line).collect(),
            stopped: true,
            first_not_attempted: Some(Origin::Line(11)),
        };
        assert!(
            summary(&t, "u", None).ends_with("; stopped there: 20 not attempted, from line 11 on"),
            "{}",
            summary(&t, "u", None)
        );
    }
}
