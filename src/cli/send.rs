//! `reservation-worker send`: puts events on the queue, for local runs, demos and load.

use std::io::BufRead;

use anyhow::{Context, bail};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::config::Config;
use crate::sqs::Queue;

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
    #[arg(long)]
    pub reservation_id: Option<String>,
    #[arg(long)]
    pub event_id: Option<String>,
    /// Comma-separated seat ids.
    #[arg(long, value_delimiter = ',')]
    pub seat_ids: Vec<String>,
    #[arg(long)]
    pub qty: Option<u32>,
    #[arg(long)]
    pub payment_intent_id: Option<String>,
    #[arg(long)]
    pub amount: Option<f64>,
    #[arg(long)]
    pub currency: Option<String>,
    #[arg(long)]
    pub user_id: Option<String>,
    /// Envelope id (the idempotency key); generated when absent.
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long, value_enum, default_value = "documented")]
    pub form: Form,
    /// Send each line of this JSONL file as one message body.
    #[arg(long, conflicts_with_all = ["count", "event_type"])]
    pub file: Option<std::path::PathBuf>,
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

/// Publishes the events; for local runs, demos and load.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
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
    let queue = Queue::from_config(&config).await;

    let bodies: Vec<(String, String)> = if let Some(path) = &args.file {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut out = Vec::new();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}: line {}", path.display(), n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let group = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| {
                    v.pointer("/detail/reservation_id")?
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| format!("line-{n}"));
            out.push((line, group));
        }
        out
    } else if let Some(count) = args.count {
        (0..count).map(generated).collect()
    } else {
        vec![from_flags(&args)?]
    };

    let total = bodies.len();
    let bar = ProgressBar::new(total as u64);
    if total < 50 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sent ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let fifo = queue.url.ends_with(".fifo");
    let mut sent = 0usize;
    for chunk in bodies.chunks(10) {
        let mut entries = Vec::with_capacity(chunk.len());
        for (i, (body, group)) in chunk.iter().enumerate() {
            let mut e = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body);
            if fifo {
                e = e
                    .message_group_id(args.group_id.clone().unwrap_or_else(|| group.clone()))
                    .message_deduplication_id(uuid::Uuid::new_v4().to_string());
            }
            entries.push(e.build().context("building a batch entry")?);
        }
        let out = queue
            .client()
            .send_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "SendMessageBatch: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        if let Some(f) = out.failed().first() {
            bail!(
                "SendMessageBatch refused an entry: {} {}",
                f.code(),
                f.message().unwrap_or_default()
            );
        }
        sent += out.successful().len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    println!("sent {sent} message(s) to {}", queue.url);
    Ok(())
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
    let time = chrono_now();
    match form {
        Form::Documented => json!({"id": id, "type": event_type, "source": "reservation-worker.send", "detail": detail, "time": time}).to_string(),
        Form::Eventbridge => json!({"version": "0", "id": id, "detail-type": event_type, "source": "reservation-worker.send", "account": "000000000000", "time": time, "region": "ap-northeast-2", "resources": [], "detail": detail}).to_string(),
        Form::Sns => {
            let inner = envelope(Form::Documented, id, event_type, detail);
            json!({"Type": "Notification", "MessageId": uuid::Uuid::new_v4().to_string(), "TopicArn": "arn:aws:sns:ap-northeast-2:000000000000:reservations", "Message": inner, "Timestamp": time}).to_string()
        }
    }
}

/// RFC 3339 UTC "now" without a date-time dependency.
fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
