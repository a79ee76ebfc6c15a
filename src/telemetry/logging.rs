//! Log lines. JSON (the default) is one flat object per line: `ts`, `level`, `msg`, `target`,
//! `pod_name`, then the fields of the enclosing spans (outermost first, an inner span's value
//! replacing an outer one's) and the event's own fields (which replace both). A key appears
//! once per line. Span fields that were never recorded are absent, not null. Span fields with
//! a dot in their name (`otel.kind`, `messaging.system`, …) are trace attributes and stay out
//! of log lines. `LOG_FORMAT=pretty` gives tracing-subscriber's human-readable lines instead.
//!
//! Every value is passed through [`crate::redact`] before it is encoded (a secret holding `"` or
//! `\` would otherwise be escaped in the line and missed), and the finished line once more, as
//! a last line of defence should any library print one.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Keys every JSON line starts with; a span or event field of the same name is written as
/// `field_<name>` instead, so the fixed keys always mean the same thing.
const RESERVED: [&str; 5] = ["ts", "level", "msg", "target", "pod_name"];

/// What the log layer needs to know.
#[derive(Debug, Clone)]
pub(crate) struct LogSettings {
    /// `LOG_LEVEL`: a level or filter directives; `RUST_LOG`, when set and valid, wins.
    pub level: String,
    /// `LOG_FORMAT`: JSON lines or pretty.
    pub format: LogFormat,
    /// Written on every JSON line (`POD_NAME`); `null` when unknown.
    pub pod_name: Option<String>,
}

/// The log layer for the chosen format, filtered by `LOG_LEVEL`/`RUST_LOG`, writing stdout.
pub(crate) fn layer<S>(settings: LogSettings) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = LogFilter::new(env_filter(&settings.level));
    match settings.format {
        LogFormat::Json => {
            Box::new(JsonLines::new(settings.pod_name, BatchedStdout).with_filter(filter))
        }
        // Colour only for a terminal: log files stay free of escape codes.
        LogFormat::Pretty => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(RedactingStdout)
                .with_ansi(io::IsTerminal::is_terminal(&io::stdout()))
                .fmt_fields(PrettyFields)
                .with_filter(filter),
        ),
    }
}

/// JSON lines as `LOG_FORMAT=json` writes them, filtered by `level`, to `writer`.
pub(crate) fn json_layer<S, W>(level: &str, writer: W) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    JsonLines::new(None, writer).with_filter(LogFilter::new(env_filter(level)))
}

/// `RUST_LOG` if set and valid, else `level`, else `info`. No target needs muting for
/// secrets: at `trace` the AWS SDK redacts credentials itself, and hyper, h2 and reqwest do
/// not print header values (checked by `tests/it/logs.rs`).
pub(crate) fn env_filter(level: &str) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// The log filter, except that this crate's spans are always seen by the log layer: a
/// `warn` line from inside a message still carries the message's fields when `LOG_LEVEL`
/// is `warn`. Events are filtered by the [`EnvFilter`] alone.
pub(crate) struct LogFilter {
    env: EnvFilter,
}

impl LogFilter {
    /// Wraps the `LOG_LEVEL`/`RUST_LOG` filter.
    pub(crate) fn new(env: EnvFilter) -> Self {
        LogFilter { env }
    }

    fn always_seen(meta: &Metadata<'_>) -> bool {
        meta.is_span() && meta.target().starts_with(env!("CARGO_CRATE_NAME"))
    }
}

impl<S> Filter<S> for LogFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Self::always_seen(meta) || <EnvFilter as Filter<S>>::enabled(&self.env, meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if Self::always_seen(meta) {
            tracing::subscriber::Interest::always()
        } else {
            <EnvFilter as Filter<S>>::callsite_enabled(&self.env, meta)
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // This crate's spans are at `info`: the hint must let them through.
        <EnvFilter as Filter<S>>::max_level_hint(&self.env).map(|l| l.max(LevelFilter::INFO))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        <EnvFilter as Filter<S>>::on_new_span(&self.env, attrs, id, ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        <EnvFilter as Filter<S>>::on_record(&self.env, id, values, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        <EnvFilter as Filter<S>>::on_enter(&self.env, id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        <EnvFilter as Filter<S>>::on_exit(&self.env, id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        <EnvFilter as Filter<S>>::on_close(&self.env, id, ctx);
    }
}

/// The most lines (in bytes) kept back before they are written anyway.
const BATCH_BYTES: usize = 16 * 1024;

/// The longest a line is kept back when nothing else writes it sooner.
const KEEP_BACK: Duration = Duration::from_millis(10);

/// Lines not yet written, in the order they were made; locked only to add a line or to take
/// them all.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The lines being written, locked for the whole write: writes go out one at a time, in the
/// order their lines were taken. A line logged meanwhile goes to [`PENDING`] without waiting
/// for the write (holding one lock through the write made a runtime thread that logged a line
/// sleep until the other thread's write to the log pipe was done).
static WRITING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Bytes of lines ever kept back (changed under [`PENDING`]'s lock), and how many of them a
/// write took and finished (under [`WRITING`]'s):
/// [`log_lines_written`] waits for the second to pass the first.
static KEPT: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Told after each write, for [`log_lines_written`].
static WROTE: Notify = Notify::const_new();

/// Set by [`batch_log_lines`]: without it every line is written at once.
static BATCHING: AtomicBool = AtomicBool::new(false);

/// How many tasks that write lines [`KEEP_BACK`] after they were kept back run (one, in the
/// worker; none before its runtime starts or after it stops).
static WRITER_TASKS: AtomicUsize = AtomicUsize::new(0);

/// Told when a line goes into an empty [`PENDING`]: the writer task waits for it.
static FIRST_LINE: Notify = Notify::const_new();

/// Makes JSON log lines go out in batches: a line is kept back until 10 ms passed (a task
/// started here on `runtime` writes it then), 16 KiB are waiting, a warning or an error is
/// logged (it goes out with the lines before it), `/metrics` is scraped (a scrape never counts
/// an event whose line is not out) or the process exits. One write per batch instead of one
/// per line: the write, and the wake-up of whoever reads the pipe, were the largest part of a
/// line's cost. The acker sends a delete only once the lines kept back before it are written
/// ([`log_lines_written`]), so a message's `message finished` line is out before the message
/// is acknowledged without a write per delete. Only a process killed outright loses what was
/// kept back.
///
/// A task of the runtime rather than a thread of its own: it waits on the runtime's timer, so
/// a batch wakes no thread of its own (the thread cost a condvar wake, a sleep and several
/// context switches a batch, which counted when events are far apart; docs/performance.md).
pub fn batch_log_lines(runtime: &tokio::runtime::Handle) {
    BATCHING.store(true, Ordering::Relaxed);
    start_writer_task(runtime);
    // A panic that ends the process writes them too; `try_lock`, since the panic may have
    // come from a write that holds the lines.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut writing) = WRITING.try_lock()
            && let Ok(pending) = PENDING.try_lock()
        {
            let _ = write_taken(&mut writing, pending);
        }
        report(info);
    }));
}

/// Spawns the writer task on `runtime`. It runs until the runtime stops; from then on every
/// wait for the lines writes them itself.
fn start_writer_task(runtime: &tokio::runtime::Handle) {
    let running = WriterTaskRunning::new();
    runtime.spawn(async move {
        let _running = running;
        loop {
            FIRST_LINE.notified().await;
            tokio::time::sleep(KEEP_BACK).await;
            let _ = write_out();
        }
    });
}

/// A writer task counted in [`WRITER_TASKS`] for as long as this lives (the task holds it, so
/// it is dropped with its runtime).
struct WriterTaskRunning;

impl WriterTaskRunning {
    fn new() -> Self {
        WRITER_TASKS.fetch_add(1, Ordering::Release);
        WriterTaskRunning
    }
}

impl Drop for WriterTaskRunning {
    fn drop(&mut self) {
        WRITER_TASKS.fetch_sub(1, Ordering::Release);
    }
}

/// Writes the lines kept back, if any. The process calls it before it exits.
pub fn write_pending_log_lines() {
    let _ = write_out();
}

/// Returns once every line kept back before the call is written: by the writer task, about
/// [`KEEP_BACK`] later, or by this call when there is no such task or it is 2 × late.
pub(crate) async fn log_lines_written() {
    let kept = KEPT.load(Ordering::Acquire);
    if WRITER_TASKS.load(Ordering::Acquire) == 0 {
        let _ = write_out();
        return;
    }
    let deadline = tokio::time::Instant::now() + 2 * KEEP_BACK;
    loop {
        let wrote = WROTE.notified();
        let mut wrote = std::pin::pin!(wrote);
        wrote.as_mut().enable();
        if WRITTEN.load(Ordering::Acquire) >= kept {
            return;
        }
        if tokio::time::timeout_at(deadline, wrote).await.is_err() {
            let _ = write_out();
            return;
        }
    }
}

/// Takes the lines kept back and writes them; when it returns, every line kept back before
/// the call is written (or failed to be).
fn write_out() -> io::Result<()> {
    let mut writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    write_taken(
        &mut writing,
        PENDING.lock().unwrap_or_else(PoisonError::into_inner),
    )
}

/// Takes the lines in `pending` into `writing` (whose lock the caller holds), releases
/// `pending`, and writes them to stdout; `writing` is emptied, written or not (a line is never
/// written twice).
fn write_taken(writing: &mut Vec<u8>, mut pending: MutexGuard<'_, Vec<u8>>) -> io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    // The two buffers trade places, so neither is allocated again.
    std::mem::swap(&mut *pending, writing);
    let taken_to = KEPT.load(Ordering::Relaxed);
    drop(pending);
    let written = io::stdout().lock().write_all(writing);
    writing.clear();
    WRITTEN.store(taken_to, Ordering::Release);
    WROTE.notify_waiters();
    written
}

/// For tests of what writes the lines kept back, which are the process's: a lock each such
/// test holds, …
#[cfg(test)]
pub(crate) fn one_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// … the lines kept back now, …
#[cfg(test)]
pub(crate) fn pending_lines() -> String {
    String::from_utf8_lossy(&PENDING.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// … and a line kept back as the batching writer keeps it.
#[cfg(test)]
pub(crate) fn keep_back(line: &str) {
    BATCHING.store(true, Ordering::Relaxed);
    let _ = BatchedLine { urgent: false }.write(line.as_bytes());
}

/// Stdout for JSON lines, batched once [`batch_log_lines`] was called.
#[derive(Clone, Copy)]
pub(crate) struct BatchedStdout;

/// One line (the JSON layer writes each line whole). A warning or an error goes out at once,
/// with the lines before it: it may be the last line before the process exits.
pub(crate) struct BatchedLine {
    urgent: bool,
}

impl io::Write for BatchedLine {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if !BATCHING.load(Ordering::Relaxed) {
            io::stdout().lock().write_all(line)?;
            return Ok(line.len());
        }
        // Added under the lock, so lines keep their order.
        let (first, full) = {
            let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
            let first = pending.is_empty();
            pending.extend_from_slice(line);
            KEPT.fetch_add(line.len() as u64, Ordering::Release);
            (first, pending.len() >= BATCH_BYTES)
        };
        if self.urgent || full {
            write_out()?;
        } else if first && WRITER_TASKS.load(Ordering::Relaxed) > 0 {
            // Kept for the task if it is not waiting yet (writing the batch before).
            FIRST_LINE.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = BatchedLine;

    fn make_writer(&'a self) -> Self::Writer {
        BatchedLine { urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        BatchedLine {
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

/// Stdout for the pretty format, each line redacted before it is written.
#[derive(Clone, Copy)]
pub(crate) struct RedactingStdout;

/// One line on its way to stdout, redacted as a whole when dropped.
pub(crate) struct RedactingLine {
    buf: Vec<u8>,
}

impl io::Write for RedactingLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = crate::redact::owned(String::from_utf8_lossy(&self.buf).into_owned());
        let mut out = io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

impl<'a> MakeWriter<'a> for RedactingStdout {
    type Writer = RedactingLine;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine {
            buf: Vec::with_capacity(256),
        }
    }
}

/// Pretty lines' fields: `name=value`, without the trace-only dotted attributes.
struct PrettyFields;

impl<'w> FormatFields<'w> for PrettyFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = PrettyVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PrettyVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for PrettyVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || field.name().contains('.') {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value:?}")
        } else {
            write!(self.writer, "{sep}{}={value:?}", field.name())
        };
    }
}

/// A span's log fields, kept in its extensions as they are recorded.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, Value)>);

/// The JSON log layer.
pub(crate) struct JsonLines<W> {
    pod_name: Value,
    writer: W,
}

impl<W> JsonLines<W> {
    /// Lines carrying `pod_name` (null when unknown), redacted, written to `writer`.
    pub(crate) fn new(pod_name: Option<String>, writer: W) -> Self {
        JsonLines {
            pod_name: pod_name.map(Value::String).unwrap_or(Value::Null),
            writer,
        }
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut Visitor(&mut fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanFields>() {
            Some(fields) => values.record(&mut Visitor(fields)),
            None => {
                let mut fields = SpanFields::default();
                values.record(&mut Visitor(&mut fields));
                ext.insert(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The enclosing spans' fields are borrowed, not copied: their extensions stay locked
        // (for reading) until the line is written.
        let spans: Vec<_> = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().collect())
            .unwrap_or_default();
        let extensions: Vec<_> = spans.iter().map(|span| span.extensions()).collect();
        let meta = event.metadata();
        // Room for the fixed keys, a message's span fields and a few of the event's: grown
        // from empty it would be reallocated three times per line.
        let mut line = Line(Vec::with_capacity(16));
        line.fixed("ts", Piece::Now);
        line.fixed("level", Piece::Text(meta.level().as_str()));
        line.fixed("msg", Piece::Text(""));
        line.fixed("target", Piece::Text(meta.target()));
        line.fixed("pod_name", Piece::Ref(&self.pod_name));
        for ext in &extensions {
            if let Some(fields) = ext.get::<SpanFields>() {
                for (k, v) in &fields.0 {
                    line.set(k, Piece::Ref(v));
                }
            }
        }
        event.record(&mut Visitor(&mut line));
        let text = crate::redact::owned(line.to_json());
        let mut out = self.writer.make_writer_for(meta);
        let _ = out.write_all(text.as_bytes());
    }
}

/// One value of a line: borrowed where it can be, made for this line where it must.
enum Piece<'a> {
    /// The time the line is written.
    Now,
    /// A JSON string.
    Text(&'a str),
    Ref(&'a Value),
    Owned(Value),
}

/// One line's keys in order of first appearance; setting a key again replaces its value.
/// Keys are field names (`'static`); only a renamed reserved one is allocated.
struct Line<'a>(Vec<(Cow<'static, str>, Piece<'a>)>);

impl<'a> Line<'a> {
    fn fixed(&mut self, key: &'static str, value: Piece<'a>) {
        self.0.push((Cow::Borrowed(key), value));
    }

    fn set(&mut self, key: &'static str, value: Piece<'a>) {
        let key = if RESERVED.contains(&key) {
            Cow::Owned(format!("field_{key}"))
        } else {
            Cow::Borrowed(key)
        };
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    fn set_msg(&mut self, msg: String) {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| k == "msg") {
            slot.1 = Piece::Owned(Value::String(msg));
        }
    }

    /// Serialized straight into one buffer: no string per key or value.
    fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing to a Vec cannot fail, and a Value always serializes.
            let _ = serde_json::to_writer(&mut out, k.as_ref());
            out.push(b':');
            match v {
                Piece::Now => {
                    out.push(b'"');
                    timestamp(&mut out, time::OffsetDateTime::now_utc());
                    out.push(b'"');
                }
                Piece::Text(t) => {
                    let _ = serde_json::to_writer(&mut out, t);
                }
                Piece::Ref(v) => {
                    let _ = serde_json::to_writer(&mut out, v);
                }
                Piece::Owned(v) => {
                    let _ = serde_json::to_writer(&mut out, v);
                }
            }
        }
        out.extend_from_slice(b"}\n");
        String::from_utf8(out).expect("serde_json writes UTF-8 only")
    }
}

/// `at` in RFC 3339, UTC, to the microsecond (`2026-12-04T18:03:07.123456Z`, as
/// tracing-subscriber writes it), digit by digit: through `fmt` it cost a fifth of the line.
fn timestamp(out: &mut Vec<u8>, at: time::OffsetDateTime) {
    let (year, month, day) = at.to_calendar_date();
    let (hour, minute, second, micro) = at.to_hms_micro();
    digits(out, year.clamp(0, 9999).unsigned_abs(), 4);
    out.push(b'-');
    digits(out, u8::from(month).into(), 2);
    out.push(b'-');
    digits(out, day.into(), 2);
    out.push(b'T');
    digits(out, hour.into(), 2);
    out.push(b':');
    digits(out, minute.into(), 2);
    out.push(b':');
    digits(out, second.into(), 2);
    out.push(b'.');
    digits(out, micro, 6);
    out.push(b'Z');
}

/// `n`'s last `width` decimal digits, zero-padded.
fn digits(out: &mut Vec<u8>, n: u32, width: u32) {
    for place in (0..width).rev() {
        // A digit: always below 10.
        #[allow(clippy::cast_possible_truncation)]
        out.push(b'0' + (n / 10u32.pow(place) % 10) as u8);
    }
}

/// Field value → JSON: numbers and booleans stay typed, everything else is text.
fn number_or_text<T: TryInto<i64> + TryInto<u64> + fmt::Display + Copy>(v: T) -> Value {
    if let Ok(n) = TryInto::<u64>::try_into(v) {
        Value::from(n)
    } else if let Ok(n) = TryInto::<i64>::try_into(v) {
        Value::from(n)
    } else {
        Value::String(v.to_string())
    }
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(v.to_string()))
}

/// Turns field values into JSON for one sink: span fields or an event's line.
trait FieldSink {
    /// Whether the sink keeps this field; a dropped one is not converted at all.
    fn wants(&self, _field: &Field) -> bool {
        true
    }
    fn put(&mut self, field: &Field, value: Value);
    /// The event's `message` field is the line's `msg`; spans have none.
    fn message(&mut self, text: String, field: &Field) {
        self.put(field, Value::String(text));
    }
}

/// The one `Visit` implementation: numbers and booleans stay typed, the rest is text.
struct Visitor<'a, S: FieldSink>(&'a mut S);

impl<S: FieldSink> Visitor<'_, S> {
    /// Converts the value only for a field the sink keeps.
    fn keep(&mut self, field: &Field, value: impl FnOnce() -> Value) {
        if self.0.wants(field) {
            self.0.put(field, value());
        }
    }

    /// Text, secrets masked, which is the line's `msg` when the field is `message`.
    fn text(&mut self, field: &Field, text: impl FnOnce() -> String) {
        if !self.0.wants(field) {
            return;
        }
        let text = crate::redact::owned(text());
        if field.name() == "message" {
            self.0.message(text, field);
        } else {
            self.0.put(field, Value::String(text));
        }
    }
}

impl<S: FieldSink> Visit for Visitor<'_, S> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.keep(field, || float(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.keep(field, || Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.keep(field, || Value::from(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.keep(field, || number_or_text(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.keep(field, || number_or_text(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.keep(field, || Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, || value.to_string());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, || value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, || {
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            text
        });
    }
}

impl FieldSink for SpanFields {
    /// Dotted names (`otel.kind`, `messaging.system`, …) are trace attributes, not log fields.
    fn wants(&self, field: &Field) -> bool {
        !field.name().contains('.')
    }
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl FieldSink for Line<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.set(field.name(), Piece::Owned(value));
    }
    fn message(&mut self, text: String, _: &Field) {
        self.set_msg(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_lines_wait_for_a_warning_or_a_flush_and_keep_their_order() {
        let _one_at_a_time = one_test_at_a_time();
        BATCHING.store(true, Ordering::Relaxed);
        let info = |text: &str| {
            let _ = BatchedLine { urgent: false }.write(text.as_bytes());
        };
        info("{\"msg\":\"batched test line 1\"}\n");
        info("{\"msg\":\"batched test line 2\"}\n");
        let kept = PENDING.lock().expect("pending").clone();
        assert!(kept.ends_with(b"line 1\"}\n{\"msg\":\"batched test line 2\"}\n"));
        let _ = BatchedLine { urgent: true }.write(b"{\"msg\":\"batched test warning\"}\n");
        assert!(
            PENDING.lock().expect("pending").is_empty(),
            "a warning goes out with the lines before it"
        );
        info("{\"msg\":\"batched test line 3\"}\n");
        write_pending_log_lines();
        assert!(PENDING.lock().expect("pending").is_empty());
    }

    #[test]
    fn a_line_is_kept_back_while_earlier_lines_are_being_written() {
        let _one_at_a_time = one_test_at_a_time();
        BATCHING.store(true, Ordering::Relaxed);
        // Held as a write to a slow log pipe holds it.
        let writing = WRITING.lock().expect("writing");
        let (done, kept) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = BatchedLine { urgent: false }.write(b"{\"msg\":\"kept during a write\"}\n");
            let _ = done.send(());
        });
        let waited = kept.recv_timeout(std::time::Duration::from_secs(10));
        drop(writing);
        assert!(
            waited.is_ok(),
            "logging a line waited for another thread's write"
        );
        assert!(pending_lines().contains("kept during a write"));
        write_pending_log_lines();
        assert!(!pending_lines().contains("kept during a write"));
    }

    /// Starts a write of the lines kept back (`line` among them) that takes them and then
    /// waits for `stdout`, held by the caller; returns once it took them.
    fn a_write_under_way(line: &str) -> std::thread::JoinHandle<()> {
        let write = std::thread::spawn(write_pending_log_lines);
        while pending_lines().contains(line) {
            std::thread::yield_now();
        }
        write
    }

    #[test]
    fn a_write_under_way_counts_only_the_lines_it_took() {
        let _one_at_a_time = one_test_at_a_time();
        let _task = pretend_writer_task();
        keep_back("{\"msg\":\"taken by the write\"}\n");
        let stdout = io::stdout().lock();
        let write = a_write_under_way("taken by the write");
        keep_back("{\"msg\":\"kept during the write\"}\n");
        drop(stdout);
        let _ = write.join();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let mut wait = std::pin::pin!(log_lines_written());
        runtime.block_on(async {
            assert!(
                futures::poll!(wait.as_mut()).is_pending(),
                "a line kept during a write counted as written by it"
            );
        });
        write_pending_log_lines();
        runtime.block_on(wait);
        assert!(!pending_lines().contains("kept during the write"));
    }

    #[test]
    fn a_warning_logged_during_a_write_goes_out_after_it() {
        let _one_at_a_time = one_test_at_a_time();
        keep_back("{\"msg\":\"written first\"}\n");
        let stdout = io::stdout().lock();
        let write = a_write_under_way("written first");
        let warning = std::thread::spawn(|| {
            let _ = BatchedLine { urgent: true }.write(b"{\"msg\":\"a warning meanwhile\"}\n");
        });
        while !pending_lines().contains("a warning meanwhile") {
            std::thread::yield_now();
        }
        drop(stdout);
        let _ = write.join();
        let _ = warning.join();
        assert!(
            !pending_lines().contains("a warning meanwhile"),
            "a warning logged during another thread's write was left kept back"
        );
    }

    /// Pretends a writer task runs (the tests write the lines themselves) while the value lives.
    fn pretend_writer_task() -> WriterTaskRunning {
        BATCHING.store(true, Ordering::Relaxed);
        WriterTaskRunning::new()
    }

    #[test]
    fn the_writer_task_writes_a_line_kept_back_after_the_keep_back_and_stops_with_its_runtime() {
        let _one_at_a_time = one_test_at_a_time();
        BATCHING.store(true, Ordering::Relaxed);
        write_pending_log_lines();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        start_writer_task(runtime.handle());
        let line = "for the writer task";
        runtime.block_on(async {
            keep_back(&format!("{{\"msg\":\"{line}\"}}\n"));
            tokio::time::sleep(KEEP_BACK - Duration::from_millis(1)).await;
            assert!(
                pending_lines().contains(line),
                "written before the keep-back was up"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(
                !pending_lines().contains(line),
                "the writer task did not write the line"
            );
        });
        drop(runtime);
        assert_eq!(
            WRITER_TASKS.load(Ordering::Acquire),
            0,
            "a waiter would wait for a task that is gone"
        );
    }

    #[tokio::test(start_paused = true)]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock only keeps other tests off the process's kept-back lines meanwhile"
    )]
    async fn waiting_for_the_lines_ends_with_the_write_that_took_them() {
        let _one_at_a_time = one_test_at_a_time();
        let _task = pretend_writer_task();
        keep_back("{\"msg\":\"waited for\"}\n");
        let start = tokio::time::Instant::now();
        let mut wait = std::pin::pin!(log_lines_written());
        assert!(futures::poll!(wait.as_mut()).is_pending());
        tokio::time::sleep(KEEP_BACK).await;
        assert!(
            futures::poll!(wait.as_mut()).is_pending(),
            "the wait ended before the lines were written"
        );
        assert!(
            pending_lines().contains("waited for"),
            "the wait wrote the lines itself before its bound"
        );
        write_pending_log_lines();
        wait.await;
        assert_eq!(start.elapsed(), KEEP_BACK);
    }

    #[tokio::test(start_paused = true)]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock only keeps other tests off the process's kept-back lines meanwhile"
    )]
    async fn waiting_for_lines_nothing_writes_writes_them_after_twice_the_keep_back() {
        let _one_at_a_time = one_test_at_a_time();
        let _task = pretend_writer_task();
        keep_back("{\"msg\":\"nobody wrote\"}\n");
        let start = tokio::time::Instant::now();
        log_lines_written().await;
        assert_eq!(start.elapsed(), 2 * KEEP_BACK);
        assert!(!pending_lines().contains("nobody wrote"));
    }

    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock only keeps other tests off the process's kept-back lines meanwhile"
    )]
    async fn without_the_writer_task_waiting_for_the_lines_writes_them() {
        let _one_at_a_time = one_test_at_a_time();
        keep_back("{\"msg\":\"no writer task\"}\n");
        log_lines_written().await;
        assert!(!pending_lines().contains("no writer task"));
    }
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    struct BufferLine(Arc<Mutex<Vec<u8>>>);

    impl io::Write for BufferLine {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = BufferLine;
        fn make_writer(&'a self) -> BufferLine {
            BufferLine(self.0.clone())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().expect("buffer").clone())
                .expect("utf-8")
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    /// The top-level keys of a JSON object in order, repeats included.
    fn keys(line: &str) -> Vec<String> {
        let mut de = serde_json::Deserializer::from_str(line);
        let map: Vec<(String, serde::de::IgnoredAny)> =
            serde::Deserializer::deserialize_map(&mut de, PairsVisitor).expect("object");
        map.into_iter().map(|(k, _)| k).collect()
    }

    struct PairsVisitor;

    impl<'de> serde::de::Visitor<'de> for PairsVisitor {
        type Value = Vec<(String, serde::de::IgnoredAny)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = a.next_entry()? {
                out.push(pair);
            }
            Ok(out)
        }
    }

    fn capture(pod: Option<&str>, f: impl FnOnce()) -> Vec<String> {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(JsonLines::new(pod.map(str::to_string), buf.clone()));
        tracing::subscriber::with_default(subscriber, f);
        buf.lines()
    }

    #[test]
    fn span_fields_are_flattened_without_duplicates() {
        let lines = capture(Some("pod-1"), || {
            let outer = tracing::info_span!(
                "message",
                message_id = "m-1",
                event_type = "payment.approved",
                envelope_id = tracing::field::Empty,
                otel.kind = "consumer",
            );
            let _o = outer.enter();
            outer.record("envelope_id", "env-1");
            let inner = tracing::info_span!("inner", message_id = "m-inner", attempt = 2);
            let _i = inner.enter();
            tracing::info!(
                event_type = "payment.approved",
                outcome = "success",
                latency_ms = 12u64,
                "message finished"
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(
            keys(line),
            [
                "ts",
                "level",
                "msg",
                "target",
                "pod_name",
                "message_id",
                "event_type",
                "envelope_id",
                "attempt",
                "outcome",
                "latency_ms"
            ]
        );
        let v: Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["msg"], "message finished");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["pod_name"], "pod-1");
        assert_eq!(v["message_id"], "m-inner", "the innermost span wins");
        assert_eq!(v["envelope_id"], "env-1", "recorded after creation");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["latency_ms"], 12);
        assert!(
            v["ts"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
        );
    }

    #[test]
    fn fixed_keys_cannot_be_overwritten_and_pod_name_is_always_there() {
        let lines = capture(None, || {
            let s = tracing::info_span!("s", level = "custom");
            let _g = s.enter();
            tracing::warn!(target = "x", "hello {}", 1);
            tracing::info!(answer = 42);
        });
        assert_eq!(
            keys(&lines[0]),
            [
                "ts",
                "level",
                "msg",
                "target",
                "pod_name",
                "field_level",
                "field_target"
            ]
        );
        let v: Value = serde_json::from_str(&lines[0]).expect("json");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["msg"], "hello 1");
        assert_eq!(v["pod_name"], Value::Null);
        let v: Value = serde_json::from_str(&lines[1]).expect("json");
        assert_eq!(v["msg"], "", "a line without a message still has msg");
        assert_eq!(v["answer"], 42);
    }

    #[test]
    fn timestamps_are_rfc3339_to_the_microsecond_as_tracing_subscriber_writes_them() {
        let fmt = time::format_description::parse_borrowed::<2>(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z",
        )
        .expect("description");
        // 1970-01-01, a leap day's last nanosecond, a few microseconds, a half second in 2099.
        for nanos in [
            0,
            1_709_251_199_999_999_999,
            1_796_371_509_000_042_000,
            4_102_403_696_500_000_000,
        ] {
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("in range");
            let mut ours = Vec::new();
            timestamp(&mut ours, at);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                at.format(&fmt).expect("format")
            );
        }
        // The same shape as the formatter it replaced.
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::FormatTime::format_time(
            &tracing_subscriber::fmt::time::SystemTime,
            &mut Writer::new(&mut theirs),
        )
        .expect("format");
        let mut ours = Vec::new();
        timestamp(&mut ours, time::OffsetDateTime::now_utc());
        let shape = |t: &[u8]| {
            t.iter()
                .map(|b| if b.is_ascii_digit() { b'0' } else { *b })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&ours), shape(theirs.as_bytes()), "{theirs}");
    }

    #[test]
    fn secrets_are_redacted() {
        crate::redact::register("tok-0123456789");
        crate::redact::register("short");
        let lines = capture(None, || {
            tracing::info!(header = "Bearer tok-0123456789", "short and tok-0123456789");
        });
        assert!(!lines[0].contains("tok-0123456789"), "{}", lines[0]);
        assert!(lines[0].contains("Bearer ***"));
        assert!(
            lines[0].contains("short and ***"),
            "short values are not redacted"
        );
    }

    /// Found by attacking the promise: a token holding `"` or `\` is escaped in the encoded
    /// line, and a scan of the finished line missed it.
    #[test]
    fn a_secret_that_json_escapes_is_redacted_in_every_field() {
        let token = r#"tok"quote\slash-5c2e"#;
        crate::redact::register(token);
        let lines = capture(None, || {
            let span = tracing::info_span!("s", auth = format!("Bearer {token}").as_str());
            let _g = span.enter();
            let err = std::io::Error::other(format!("peer said {token}"));
            tracing::warn!(error = &err as &(dyn std::error::Error + 'static), debug = ?token, "{token}");
        });
        let line = &lines[0];
        assert!(!line.contains("quote"), "{line}");
        let v: Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["msg"], "***");
        assert_eq!(v["auth"], "Bearer ***");
        assert_eq!(v["error"], "peer said ***");
    }
}
