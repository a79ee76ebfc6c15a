//! `make bench` (`cargo bench --bench worker`): the performance figures of issue 5, measured
//! against the real worker binary (release build) in one run, printed as a table beside the
//! machine and written to `target/bench/results.json`.
//!
//! The worker runs as its own process with its production settings (only the endpoints and,
//! where a figure asks for it, `WORKER_CONCURRENCY` differ). Everything else lives in this
//! process: the two downstream peers (the crate's simulators, on loopback) and the SQS
//! endpoints (the in-process fast endpoint and a moto server). Both processes share the
//! machine's cores, so every rate here is a lower bound for a worker with cores of its own.
//!
//! Beside each worker figure runs a *contract floor* ([`floor`]): a separate process making only
//! the calls the contract needs, so the table can tell what the worker adds from what the
//! contract itself costs on this machine. Each figure beside the floor is drained in rounds of
//! worker, floor, floor, worker, two rounds by default ([`beside_floor`]).
//!
//! `cargo bench --bench worker -- load` (`make test-load`) runs only the drain at full N and
//! its exactly-once audit, and exits non-zero on any discrepancy.

#[path = "worker/dedupe.rs"]
mod dedupe;
#[path = "worker/floor.rs"]
mod floor;
#[path = "worker/instructions.rs"]
mod instructions;

/// The worker's allocator, here too: the contract floor (this binary, re-run) should not pay
/// glibc's malloc costs the worker no longer pays, or the worker's overhead would look
/// smaller than it is. The harness (peers, fast endpoint) runs on it as well.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use floor::FloorRun;
use futures::{StreamExt, TryStreamExt};
use reservation_sim::{
    InventorySim, ReservationSim, SqsSim, SqsStats, serve_inventory, serve_reservation, serve_sqs,
};
// moto, and the SDK client the tests use, from the shared test tooling.
use reservation_testkit::moto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a worker may take to become ready or to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(60);

/// The worker binary `cargo bench` built (release profile).
const WORKER_BIN: &str = env!("CARGO_BIN_EXE_reservation-worker");

/// The binary to drive: `BENCH_WORKER_BIN` names another build (an A/B of two builds in turns on
/// one machine is steadier than two runs an hour apart), else the one `cargo bench` built.
fn worker_bin() -> std::ffi::OsString {
    std::env::var_os("BENCH_WORKER_BIN").unwrap_or_else(|| WORKER_BIN.into())
}

/// Downstream latency of the Little's-law runs, per call; a workflow is two calls.
const PEER_LATENCY: Duration = Duration::from_millis(20);

/// The renewal run: peers this slow per call and this visibility keep every message in flight
/// past half its visibility twice, so each is renewed about twice while it is worked on.
const RENEWAL_PEER_LATENCY: Duration = Duration::from_millis(1_200);
const RENEWAL_VISIBILITY_SECS: u64 = 2;
const RENEWAL_CONCURRENCY: usize = 500;
const RENEWAL_N: usize = 2_000;

/// How the worker (and the floor beside it) speak to the reservation API.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RestHttp {
    /// The default: HTTP/1.1, a connection per request in flight.
    Http1,
    /// `RESERVATION_API_HTTP2=prior-knowledge`: cleartext HTTP/2 on a few connections.
    H2c,
}

impl RestHttp {
    fn label(self) -> &'static str {
        match self {
            RestHttp::Http1 => "",
            RestHttp::H2c => ", REST over h2c",
        }
    }
}

/// Rates are measured between these fractions of the drain, so start-up and the tail (the
/// last receives finding a nearly empty queue) do not count.
const WINDOW: (f64, f64) = (0.10, 0.90);

/// Issue 14's targets: each a ratio to the contract floor in the same run, except where noted.
#[derive(Clone, Copy)]
struct Targets;
impl Targets {
    /// The worker's events/s at least this share of the floor's.
    const RATE: f64 = 0.95;
    /// The worker's CPU per event at most this multiple of the floor's.
    const CPU: f64 = 1.15;
    /// The worker's peak RSS at most this multiple of the floor's…
    const RSS: f64 = 1.2;
    /// …and at most this many MiB up to concurrency [`Targets::RSS_MIB_UP_TO`].
    const RSS_MIB: f64 = 30.0;
    const RSS_MIB_UP_TO: usize = 100;
    const PICKUP_P99_MS: f64 = 5.0;
    const STARTUP_MS: f64 = 50.0;
}

/// Settings of one run, from the environment (all optional).
struct Plan {
    /// Messages per drain on the fast endpoint (`BENCH_N`, ≥ 20,000 for the figure).
    n: usize,
    /// Messages per drain on moto (`BENCH_MOTO_N`); moto manages a few hundred per second.
    moto_n: usize,
    /// Concurrencies of the drain-ratio runs (`BENCH_DRAIN_CONCURRENCY`, comma-separated).
    drain_concurrency: Vec<usize>,
    /// Concurrencies of the Little's-law runs (`BENCH_LITTLE_CONCURRENCY`).
    little_concurrency: Vec<usize>,
    /// Skip moto (`BENCH_SKIP_MOTO=1`), e.g. where it is not installed.
    skip_moto: bool,
    pickups: usize,
    startups: usize,
    /// `load`: only the full drain with its audit.
    load_only: bool,
    /// Concurrencies of the 20 ms runs repeated with the REST peer over h2c
    /// (`BENCH_H2C_CONCURRENCY`).
    h2_concurrency: Vec<usize>,
    /// The parts to run (`BENCH_PARTS`, comma-separated; all by default).
    parts: Vec<Part>,
    /// Events of the long run whose memory must stay flat (`BENCH_LEAK_N`).
    leak_n: usize,
    /// Rounds of worker, floor, floor, worker for each figure beside the floor
    /// (`BENCH_ROUNDS`, at least 1).
    rounds: usize,
}

/// A part of the bench, named in `BENCH_PARTS` to run only some (e.g. while profiling one).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    /// The drains with zero-latency peers: worker, bare loop, contract floor.
    Drain,
    /// The 20 ms runs: Little's law and the scale curve, beside the floor.
    Scale,
    /// The long run whose RSS must stay flat.
    Leak,
    Pickup,
    Startup,
    /// What an id costs in the duplicate memory.
    Dedupe,
    /// Slow messages whose visibility is renewed while they are worked on.
    Renewal,
    /// Instructions per event of worker and floor, counted by callgrind.
    Instructions,
}

impl Part {
    const ALL: [Part; 8] = [
        Part::Drain,
        Part::Instructions,
        Part::Scale,
        Part::Renewal,
        Part::Leak,
        Part::Pickup,
        Part::Startup,
        Part::Dedupe,
    ];

    fn name(self) -> &'static str {
        match self {
            Part::Drain => "drain",
            Part::Scale => "scale",
            Part::Leak => "leak",
            Part::Pickup => "pickup",
            Part::Startup => "startup",
            Part::Dedupe => "dedupe",
            Part::Renewal => "renewal",
            Part::Instructions => "instructions",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Part> {
        Part::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .with_context(|| {
                let names: Vec<_> = Part::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "BENCH_PARTS: {s:?} is not a part; expected any of {}",
                    names.join(", ")
                )
            })
    }
}

impl Plan {
    fn runs(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }

    fn from_env() -> anyhow::Result<Plan> {
        let num = |k: &str, d: usize| -> anyhow::Result<usize> {
            match std::env::var(k) {
                Ok(v) => v.trim().parse().with_context(|| format!("{k}={v:?}")),
                Err(_) => Ok(d),
            }
        };
        let list = |k: &str, d: &[usize]| -> anyhow::Result<Vec<usize>> {
            match std::env::var(k) {
                Ok(v) => v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().with_context(|| format!("{k}={v:?}")))
                    .collect(),
                Err(_) => Ok(d.to_vec()),
            }
        };
        Ok(Plan {
            n: num("BENCH_N", 20_000)?,
            moto_n: num("BENCH_MOTO_N", 1_000)?,
            drain_concurrency: list("BENCH_DRAIN_CONCURRENCY", &[20, 100])?,
            little_concurrency: list("BENCH_LITTLE_CONCURRENCY", &[20, 100, 500, 1000])?,
            skip_moto: std::env::var("BENCH_SKIP_MOTO").is_ok_and(|v| v == "1"),
            pickups: num("BENCH_PICKUPS", 500)?,
            startups: num("BENCH_STARTUPS", 20)?,
            load_only: std::env::args().skip(1).any(|a| a == "load"),
            parts: match std::env::var("BENCH_PARTS") {
                Ok(v) => v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Part::parse)
                    .collect::<anyhow::Result<_>>()?,
                Err(_) => Part::ALL.to_vec(),
            },
            leak_n: num("BENCH_LEAK_N", 200_000)?,
            h2_concurrency: list("BENCH_H2C_CONCURRENCY", &[500])?,
            rounds: match num("BENCH_ROUNDS", 2)? {
                0 => anyhow::bail!("BENCH_ROUNDS=0: expected at least 1 round"),
                r => r,
            },
        })
    }
}

fn main() {
    if std::env::args().skip(1).any(|a| a == dedupe::ARG) {
        if let Err(e) = dedupe::child_main() {
            eprintln!("dedupe memory child failed: {e:#}");
            std::process::exit(2);
        }
        return;
    }
    if std::env::args().skip(1).any(|a| a == "dedupe") {
        match dedupe::measure() {
            Ok(costs) => {
                for c in costs {
                    println!("{}", c.line());
                }
                return;
            }
            Err(e) => {
                eprintln!("bench failed: {e:#}");
                std::process::exit(2);
            }
        }
    }
    if std::env::args().skip(1).any(|a| a == floor::ARG) {
        if let Err(e) = floor::child_main() {
            eprintln!("contract floor failed: {e:#}");
            std::process::exit(2);
        }
        return;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench failed: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(run()) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Runs everything the plan asks for; `Ok(false)` when an exactly-once audit failed.
async fn run() -> anyhow::Result<bool> {
    let plan = Plan::from_env()?;
    let machine = Machine::read();
    eprintln!("machine: {}", machine.line());
    let mut report = Report {
        rounds: plan.rounds,
        ..Report::default()
    };
    let fast = Endpoint::fast().await?;

    if plan.load_only {
        let c = plan.drain_concurrency.first().copied().unwrap_or(20);
        let run = worker_drain(&fast, c, plan.n, Duration::ZERO, RestHttp::Http1).await?;
        eprintln!("{}", run.audit.line());
        println!(
            "load: {} messages drained by the worker at WORKER_CONCURRENCY={c} in {:.1} s ({:.0}/s); {}",
            plan.n,
            run.elapsed.as_secs_f64(),
            run.full_rate(),
            run.audit.line()
        );
        return Ok(run.audit.ok());
    }

    // 1. Drain ratio: the worker and a bare loop at the same concurrency, same endpoint.
    let mut endpoints = vec![(fast.clone(), plan.n)];
    if !plan.skip_moto && plan.runs(Part::Drain) {
        endpoints.push((Endpoint::moto().await?, plan.moto_n));
    }
    for (endpoint, n) in &endpoints {
        for &c in plan
            .drain_concurrency
            .iter()
            .filter(|_| plan.runs(Part::Drain))
        {
            // moto serialises requests: its figure is about moto, so one concurrency is enough.
            if endpoint.is_moto() && c != plan.drain_concurrency[0] {
                continue;
            }
            // moto is the bottleneck there: the floor would measure moto again.
            let (worker, floor) = match endpoint.is_moto() {
                true => (
                    worker_drain(endpoint, c, *n, Duration::ZERO, RestHttp::Http1).await?,
                    None,
                ),
                false => {
                    let (w, f) = beside_floor(
                        endpoint,
                        c,
                        *n,
                        Duration::ZERO,
                        RestHttp::Http1,
                        plan.rounds,
                    )
                    .await?;
                    (w, Some(f))
                }
            };
            let bare = bare_drain(endpoint, c, *n).await?;
            eprintln!(
                "drain {} c={c}: worker {:.0}/s, bare {:.0}/s, contract floor {}; {}",
                endpoint.name(),
                worker.rate,
                bare.rate,
                floor.as_ref().map_or("-".into(), |f| format!(
                    "{:.0}/s ({})",
                    f.rate,
                    f.audit.line()
                )),
                worker.audit.line()
            );
            report.drains.push(Drain {
                endpoint: endpoint.name(),
                concurrency: c,
                n: *n,
                worker,
                bare,
                floor,
            });
        }
    }

    // 2. Little's law and the scale curve: 20 ms per peer call.
    for &c in plan
        .little_concurrency
        .iter()
        .filter(|_| plan.runs(Part::Scale))
    {
        let ideal = c as f64 / (2.0 * PEER_LATENCY.as_secs_f64());
        let n = little_n(c);
        let (run, floor) =
            beside_floor(&fast, c, n, PEER_LATENCY, RestHttp::Http1, plan.rounds).await?;
        eprintln!(
            "little c={c}: {:.0}/s of ideal {ideal:.0}/s, contract floor {:.0}/s ({}); {}",
            run.rate,
            floor.rate,
            floor.audit.line(),
            run.audit.line()
        );
        report.little.push((c, n, ideal, run, floor));
    }

    // The same with the reservation API over h2c, worker and floor alike.
    for &c in plan
        .h2_concurrency
        .iter()
        .filter(|_| plan.runs(Part::Scale))
    {
        let n = little_n(c);
        let (run, floor) =
            beside_floor(&fast, c, n, PEER_LATENCY, RestHttp::H2c, plan.rounds).await?;
        eprintln!(
            "h2c c={c}: worker {:.0}/s, contract floor {:.0}/s ({}); {}",
            run.rate,
            floor.rate,
            floor.audit.line(),
            run.audit.line()
        );
        report.h2.push((c, run, floor));
    }

    // Instructions per event: the worker beside the floor, counted rather than timed.
    if plan.runs(Part::Instructions) {
        if instructions::available() {
            let counted = instructions::measure(&fast).await?;
            eprintln!(
                "instructions ({} events, c={}): {}; {}; floor {}",
                instructions::N,
                instructions::CONCURRENCY,
                counted.line(),
                counted.worker_audit.line(),
                counted.floor_audit.line()
            );
            report.instructions = Some(counted);
        } else {
            eprintln!("instructions: skipped (valgrind or callgrind_control not found)");
        }
    }

    // Slow messages: what renewing their visibility costs.
    if plan.runs(Part::Renewal) {
        let run = worker_drain_with(
            &fast,
            RENEWAL_CONCURRENCY,
            RENEWAL_N,
            RENEWAL_PEER_LATENCY,
            RestHttp::Http1,
            &[(
                "SQS_VISIBILITY_TIMEOUT",
                RENEWAL_VISIBILITY_SECS.to_string(),
            )],
        )
        .await?;
        eprintln!("{}", renewal_line(&run));
        report.renewal = Some(run);
    }

    // 3. Memory over a long run.
    if plan.runs(Part::Leak) {
        let run = long_run(&fast, LEAK_CONCURRENCY, plan.leak_n).await?;
        eprintln!("{}", run.line());
        report.leak = Some(run);
    }

    // 4. Pickup latency; 5. start-up.
    if plan.runs(Part::Pickup) {
        report.pickup = Some(pickup_latency(&fast, plan.pickups).await?);
    }
    if plan.runs(Part::Startup) {
        report.startup = Some(startup(&fast, plan.startups).await?);
    }

    // 6. What an id costs in the duplicate memory.
    if plan.runs(Part::Dedupe) {
        report.dedupe = dedupe::measure()?;
    }

    report.fast_stats = fast.stats().and_then(|s| serde_json::to_value(s).ok());
    let (table, all_ok) = report.table(&machine);
    println!("{table}");
    for cost in &report.dedupe {
        println!("{}", cost.line());
    }
    let path = write_json(&report.json(&machine))?;
    println!("results: {}", path.display());
    for (endpoint, _) in endpoints {
        endpoint.stop();
    }
    Ok(all_ok)
}

/// Events of a 20 ms run at concurrency `c`: about ten seconds at the ideal rate.
fn little_n(c: usize) -> usize {
    let ideal = c as f64 / (2.0 * PEER_LATENCY.as_secs_f64());
    ((ideal * 10.0) as usize).clamp(5_000, 30_000)
}

// ---------------------------------------------------------------- the machine

struct Machine {
    cores: usize,
    memory_mib: u64,
    cpu_model: String,
    kernel: String,
}

impl Machine {
    fn read() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: memory_kib / 1024,
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} cores, {} MiB memory, CPU {}, Linux {}",
            self.cores, self.memory_mib, self.cpu_model, self.kernel
        )
    }
}

// ---------------------------------------------------------------- SQS endpoints

/// An SQS-compatible endpoint and a client for it.
#[derive(Clone)]
enum Endpoint {
    Fast {
        url: String,
        client: Client,
        sim: SqsSim,
        stop: CancellationToken,
    },
    Moto {
        moto: Arc<moto::Moto>,
    },
}

impl Endpoint {
    /// The in-process endpoint, served on this process's runtime.
    async fn fast() -> anyhow::Result<Endpoint> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let sim = SqsSim::new();
        tokio::spawn(serve_sqs(listener, sim.clone(), stop.clone()));
        Ok(Endpoint::Fast {
            client: moto::client(&url),
            url,
            sim,
            stop,
        })
    }

    async fn moto() -> anyhow::Result<Endpoint> {
        Ok(Endpoint::Moto {
            moto: Arc::new(moto::Moto::start().await),
        })
    }

    /// What the in-process endpoint served so far (none for moto).
    fn stats(&self) -> Option<SqsStats> {
        match self {
            Endpoint::Fast { sim, .. } => Some(sim.stats()),
            Endpoint::Moto { .. } => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Endpoint::Fast { .. } => "fast",
            Endpoint::Moto { .. } => "moto",
        }
    }

    fn is_moto(&self) -> bool {
        matches!(self, Endpoint::Moto { .. })
    }

    fn url(&self) -> &str {
        match self {
            Endpoint::Fast { url, .. } => url,
            Endpoint::Moto { moto } => &moto.endpoint,
        }
    }

    fn client(&self) -> &Client {
        match self {
            Endpoint::Fast { client, .. } => client,
            Endpoint::Moto { moto } => &moto.client,
        }
    }

    /// How often a drain looks at the queue depth: moto answers slowly under load.
    fn sample_every(&self) -> Duration {
        match self {
            Endpoint::Fast { .. } => Duration::from_millis(25),
            Endpoint::Moto { .. } => Duration::from_millis(200),
        }
    }

    fn stop(&self) {
        if let Endpoint::Fast { stop, .. } = self {
            stop.cancel();
        }
    }

    /// A fresh source queue with its own DLQ (RedrivePolicy, maxReceiveCount 5).
    async fn queues(&self, name: &str) -> anyhow::Result<(String, String)> {
        let client = self.client();
        let dlq = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .context("CreateQueue (DLQ)")?
            .queue_url()
            .context("DLQ url")?
            .to_string();
        let arn = client
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .context("GetQueueAttributes QueueArn")?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .context("QueueArn")?;
        let policy = json!({"deadLetterTargetArn": arn, "maxReceiveCount": "5"});
        let url = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
            .send()
            .await
            .context("CreateQueue")?
            .queue_url()
            .context("queue url")?
            .to_string();
        Ok((url, dlq))
    }

    /// Visible + in-flight messages.
    async fn depth(&self, queue: &str) -> anyhow::Result<u64> {
        let out = self
            .client()
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .context("GetQueueAttributes depth")?;
        let get = |k: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(get(QueueAttributeName::ApproximateNumberOfMessages)
            + get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    /// Sends `n` events (all three types in turn, unique ids) in batches of 10.
    async fn preload(&self, queue: &str, run: &str, n: usize) -> anyhow::Result<()> {
        self.preload_unchecked(queue, run, n).await?;
        let depth = self.depth(queue).await?;
        ensure!(
            depth == n as u64,
            "preloaded {n} but the queue holds {depth}"
        );
        Ok(())
    }

    /// Sends `n` events without checking the queue's depth after (a consumer may be draining
    /// it already).
    async fn preload_unchecked(&self, queue: &str, run: &str, n: usize) -> anyhow::Result<()> {
        let client = self.client();
        let chunks: Vec<(usize, usize)> =
            (0..n).step_by(10).map(|s| (s, (s + 10).min(n))).collect();
        futures::stream::iter(chunks)
            .map(|(start, end)| async move {
                let entries = (start..end)
                    .map(|i| {
                        SendMessageBatchRequestEntry::builder()
                            .id((i - start).to_string())
                            .message_body(event_body(run, i))
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let out = client
                    .send_message_batch()
                    .queue_url(queue)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .context("SendMessageBatch")?;
                ensure!(out.failed().is_empty(), "SendMessageBatch refused entries");
                Ok::<_, anyhow::Error>(())
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// The environment that points a worker at this endpoint.
    fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url().to_string()),
            ("AWS_ACCESS_KEY_ID", "bench".into()),
            ("AWS_SECRET_ACCESS_KEY", "bench".into()),
            ("AWS_REGION", moto::REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }
}

/// Envelope id of message `i` of a run: also the idempotency key the peers see.
fn envelope_id(run: &str, i: usize) -> String {
    format!("{run}-{i}")
}

/// A complete event in the documented form; the three types in turn, one reservation each,
/// every field present so no workflow needs a lookup.
fn event_body(run: &str, i: usize) -> String {
    let rid = format!("r-{run}-{i}");
    let (kind, detail) = match i % 3 {
        0 => (
            "reservation.expired",
            json!({"reservation_id": rid, "event_id": "evt-1", "qty": 2, "seat_ids": ["A-1", "A-2"]}),
        ),
        1 => (
            "payment.approved",
            json!({"reservation_id": rid, "payment_intent_id": format!("pi-{i}"), "amount": 50000, "currency": "KRW", "event_id": "evt-1", "user_id": "user-1", "seat_ids": ["A-1", "A-2"], "qty": 2}),
        ),
        _ => (
            "payment.failed",
            json!({"reservation_id": rid, "payment_intent_id": format!("pi-{i}"), "amount": 50000, "currency": "KRW", "event_id": "evt-1", "user_id": "user-1", "seat_ids": ["A-1", "A-2"], "qty": 2, "error_code": "card_declined", "error_message": "declined"}),
        ),
    };
    json!({"id": envelope_id(run, i), "type": kind, "source": "bench", "detail": detail, "time": "2026-11-21T00:00:00Z"}).to_string()
}

fn run_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{what}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------- peers

/// Both downstream simulators on loopback, fresh for one run (so their call logs stay small).
struct Peers {
    inventory: InventorySim,
    reservations: ReservationSim,
    inventory_addr: String,
    reservation_base: String,
    stop: CancellationToken,
}

impl Peers {
    async fn start(latency: Duration) -> anyhow::Result<Peers> {
        let inventory = InventorySim::new();
        inventory.set_latency(latency);
        let reservations = ReservationSim::new();
        reservations.set_auto_create(true);
        reservations.set_latency(latency);
        let stop = CancellationToken::new();
        let inv = TcpListener::bind("127.0.0.1:0").await?;
        let res = TcpListener::bind("127.0.0.1:0").await?;
        let inventory_addr = inv.local_addr()?.to_string();
        let reservation_base = format!("http://{}", res.local_addr()?);
        tokio::spawn(serve_inventory(inv, inventory.clone(), stop.clone()));
        tokio::spawn(serve_reservation(res, reservations.clone(), stop.clone()));
        Ok(Peers {
            inventory,
            reservations,
            inventory_addr,
            reservation_base,
            stop,
        })
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---------------------------------------------------------------- the worker process

/// The worker binary as a child process with its production settings.
struct Worker {
    child: Child,
    http_port: u16,
    /// Bytes of log the worker wrote to its stdout pipe.
    log_bytes: Arc<AtomicU64>,
    log_lines: Arc<AtomicU64>,
    stderr: Arc<std::sync::Mutex<String>>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Worker {
    /// Starts the worker with exactly these variables (plus PATH, and `settings`). Logs are the
    /// production default, `LOG_LEVEL=info` as JSON lines, written to a pipe this process reads
    /// and discards, like a container runtime's log pipe. `cmd` runs the worker: the binary
    /// itself (`Command::new(worker_bin())`), or a command that runs it (valgrind).
    fn spawn(
        mut cmd: Command,
        endpoint: &Endpoint,
        queue: &str,
        peers: &Peers,
        concurrency: usize,
        http: RestHttp,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Worker> {
        let http_port = free_port()?;
        let grpc_port = free_port()?;
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(endpoint.aws_env())
            .env("SQS_QUEUE_URL", queue)
            .env("WORKER_CONCURRENCY", concurrency.to_string())
            .env("INVENTORY_GRPC_ADDR", &peers.inventory_addr)
            .env("RESERVATION_API_BASE", &peers.reservation_base)
            .env("SERVER_PORT", http_port.to_string())
            .env("GRPC_DEBUG_PORT", grpc_port.to_string())
            .env("LOG_LEVEL", "info")
            .env("LOG_FORMAT", "json")
            .envs((http == RestHttp::H2c).then_some(("RESERVATION_API_HTTP2", "prior-knowledge")))
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn reservation-worker")?;
        let log_bytes = Arc::new(AtomicU64::new(0));
        let log_lines = Arc::new(AtomicU64::new(0));
        if let Some(mut out) = child.stdout.take() {
            let (bytes, lines) = (log_bytes.clone(), log_lines.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                    let nl = buf[..n].iter().filter(|b| **b == b'\n').count();
                    lines.fetch_add(nl as u64, Ordering::Relaxed);
                }
            });
        }
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                if let Ok(mut e) = stderr.lock() {
                    *e = s;
                }
            });
        }
        Ok(Worker {
            child,
            http_port,
            log_bytes,
            log_lines,
            stderr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/ready` every `every` until it answers 200; returns when it did.
    async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        every: Duration,
    ) -> anyhow::Result<Instant> {
        let url = format!("http://127.0.0.1:{}/ready", self.http_port);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().as_u16() == 200
            {
                return Ok(Instant::now());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("worker exited ({status}) before /ready: {}", self.stderr());
            }
            ensure!(
                Instant::now() < deadline,
                "worker not ready within {PATIENCE:?}"
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Messages whose visibility it renewed, from its `/metrics`.
    async fn renewed(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        let text = http.get(&url).send().await?.text().await?;
        let series = "sqs_visibility_extensions_total{result=\"ok\"} ";
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .with_context(|| format!("no {series} in /metrics"))?;
        Ok(value.trim().parse::<f64>().context(series)? as u64)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// (VmRSS, VmHWM) in KiB, from `/proc/<pid>/status`.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// SIGTERM, then waits for the graceful exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "worker exited with {status}: {}",
                    self.stderr()
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "worker did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// User + system CPU time of a process.
fn proc_cpu(pid: u32) -> anyhow::Result<Duration> {
    let (user, sys) = proc_cpu_split(pid)?;
    Ok(user + sys)
}

/// (user, system) CPU time of a process from `/proc/<pid>/stat` (fields 14 and 15).
fn proc_cpu_split(pid: u32) -> anyhow::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<Duration> {
        let t: u64 = f.get(i).context("stat field")?.parse()?;
        Ok(Duration::from_micros(t * 1_000_000 / clock_ticks()))
    };
    Ok((ticks(11)?, ticks(12)?))
}

// ---------------------------------------------------------------- drains

/// Progress samples of one drain: (time since start, messages gone from the queue).
#[derive(Default)]
struct Progress(Vec<(Duration, u64)>);

impl Progress {
    /// Messages per second between the `WINDOW` fractions of `n`.
    fn window_rate(&self, n: u64) -> f64 {
        let lo = (n as f64 * WINDOW.0) as u64;
        let hi = (n as f64 * WINDOW.1) as u64;
        let first = self.0.iter().find(|(_, done)| *done >= lo);
        let last = self.0.iter().rev().find(|(_, done)| *done <= hi);
        match (first, last) {
            (Some(a), Some(b)) if b.0 > a.0 && b.1 > a.1 => {
                (b.1 - a.1) as f64 / (b.0 - a.0).as_secs_f64()
            }
            // Too fast to sample twice inside the window: the whole drain it is.
            _ => self
                .0
                .last()
                .map_or(0.0, |(t, done)| *done as f64 / t.as_secs_f64().max(1e-9)),
        }
    }
}

/// Samples the queue depth until it is empty; `on_sample` sees each (progress fraction).
async fn watch_drain(
    endpoint: &Endpoint,
    queue: &str,
    n: usize,
    start: Instant,
    mut on_sample: impl FnMut(f64),
) -> anyhow::Result<Progress> {
    let mut progress = Progress::default();
    // Generous: moto at its slowest still drains 50 messages a second.
    let deadline = start + Duration::from_secs(60 + n as u64 / 50);
    loop {
        let depth = match endpoint.depth(queue).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("depth: {e:#}");
                tokio::time::sleep(endpoint.sample_every()).await;
                continue;
            }
        };
        let done = (n as u64).saturating_sub(depth);
        progress.0.push((start.elapsed(), done));
        on_sample(done as f64 / n as f64);
        if depth == 0 {
            return Ok(progress);
        }
        ensure!(
            Instant::now() < deadline,
            "drain stalled: {depth} of {n} left after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(endpoint.sample_every()).await;
    }
}

/// What a worker drain measured.
struct WorkerRun {
    /// Messages per second inside the window.
    rate: f64,
    /// From `/ready` to an empty queue.
    elapsed: Duration,
    n: usize,
    cpu: Duration,
    peak_rss_kib: u64,
    steady_rss_kib: u64,
    log_bytes: u64,
    log_lines: u64,
    /// The worker's SQS calls during the drain (fast endpoint only).
    sqs: Option<SqsCalls>,
    /// CPU of this process (peers, fast endpoint, sampling) during the drain: the share of
    /// the cores the worker did not get.
    harness_cpu: Duration,
    /// The kernel's part of `cpu`.
    sys_cpu: Duration,
    /// (fraction of the drain done, VmRSS KiB) at each depth sample.
    rss_samples: Vec<(f64, u64)>,
    /// Messages whose visibility was renewed (`sqs_visibility_extensions_total{result="ok"}`).
    renewed: u64,
    /// Each drain's own figures, when this run is several taken together ([`WorkerRun::and`]).
    drains: Vec<DrainFigures>,
    audit: Audit,
}

/// One drain's rate, CPU per event and bench-process CPU per event: the noise between the
/// drains a figure combines, kept in the JSON.
#[derive(Clone, Copy)]
struct DrainFigures {
    rate: f64,
    cpu_us_per_event: f64,
    harness_us_per_event: f64,
}

impl DrainFigures {
    fn new(rate: f64, n: usize, cpu: Duration, harness_cpu: Duration) -> DrainFigures {
        let per_event = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        DrainFigures {
            rate,
            cpu_us_per_event: per_event(cpu),
            harness_us_per_event: per_event(harness_cpu),
        }
    }

    fn json(&self) -> Value {
        json!({
            "rate_per_s": self.rate,
            "cpu_us_per_event": self.cpu_us_per_event,
            "harness_cpu_us_per_event": self.harness_us_per_event,
        })
    }
}

/// The worker's SQS calls during one drain, from the fast endpoint's counters.
struct SqsCalls {
    receives: u64,
    empty_receives: u64,
    received: u64,
    delete_batches: u64,
    deleted: u64,
    /// ChangeMessageVisibility calls, single and batched.
    visibility_calls: u64,
}

impl SqsCalls {
    /// The calls of two drains together.
    fn and(self, other: SqsCalls) -> SqsCalls {
        SqsCalls {
            receives: self.receives + other.receives,
            empty_receives: self.empty_receives + other.empty_receives,
            received: self.received + other.received,
            delete_batches: self.delete_batches + other.delete_batches,
            deleted: self.deleted + other.deleted,
            visibility_calls: self.visibility_calls + other.visibility_calls,
        }
    }

    fn between(before: &SqsStats, after: &SqsStats) -> SqsCalls {
        SqsCalls {
            receives: after.receive_message - before.receive_message,
            empty_receives: after.empty_receives - before.empty_receives,
            received: after.messages_received - before.messages_received,
            delete_batches: after.delete_message_batch - before.delete_message_batch,
            deleted: after.messages_deleted - before.messages_deleted,
            visibility_calls: after.change_message_visibility
                + after.change_message_visibility_batch
                - before.change_message_visibility
                - before.change_message_visibility_batch,
        }
    }

    fn line(&self) -> String {
        format!(
            "{} receives ({} empty, {:.1} messages each), {} delete batches ({:.1} each)",
            self.receives,
            self.empty_receives,
            self.received as f64 / self.receives.max(1) as f64,
            self.delete_batches,
            self.deleted as f64 / self.delete_batches.max(1) as f64
        )
    }

    fn json(&self) -> Value {
        json!({
            "receives": self.receives,
            "empty_receives": self.empty_receives,
            "messages_received": self.received,
            "delete_batches": self.delete_batches,
            "messages_deleted": self.deleted,
            "visibility_calls": self.visibility_calls,
        })
    }
}

impl WorkerRun {
    /// Two drains of the same figure as one: events and costs added, the rate over both
    /// windows together, memory the larger of the two.
    fn and(self, other: WorkerRun) -> WorkerRun {
        let mut rss_samples = self.rss_samples;
        rss_samples.extend(other.rss_samples);
        WorkerRun {
            rate: combined_rate((self.n, self.rate), (other.n, other.rate)),
            elapsed: self.elapsed + other.elapsed,
            n: self.n + other.n,
            cpu: self.cpu + other.cpu,
            peak_rss_kib: self.peak_rss_kib.max(other.peak_rss_kib),
            steady_rss_kib: self.steady_rss_kib.max(other.steady_rss_kib),
            log_bytes: self.log_bytes + other.log_bytes,
            log_lines: self.log_lines + other.log_lines,
            sqs: self.sqs.zip(other.sqs).map(|(a, b)| a.and(b)),
            harness_cpu: self.harness_cpu + other.harness_cpu,
            sys_cpu: self.sys_cpu + other.sys_cpu,
            rss_samples,
            renewed: self.renewed + other.renewed,
            drains: [self.drains, other.drains].concat(),
            audit: self.audit.and(other.audit),
        }
    }

    fn full_rate(&self) -> f64 {
        self.n as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_us_per_event(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.n as f64
    }
}

/// The worker and the contract floor on one figure, in `rounds` rounds of worker, floor,
/// floor, worker, each side's drains taken together ([`WorkerRun::and`], [`FloorRun::and`]).
///
/// Why this order: on this shared machine a figure drifts by ±10 % within seconds, and the
/// run after the first is the cheaper one for the bench process (its peers reuse the memory
/// the first run's peers freed), so worker-then-floor put both on the worker. A round cancels
/// a drift that is steady over its four drains and the order's own effect. Why more than one
/// round: the drift is not steady, and a slow patch of a few seconds fell on one side's drains
/// (the bench process's own CPU per event, the same work for both sides, moved with it), so
/// each side's figure is an average over more windows spread over a longer time.
async fn beside_floor(
    endpoint: &Endpoint,
    concurrency: usize,
    n: usize,
    latency: Duration,
    http: RestHttp,
    rounds: usize,
) -> anyhow::Result<(WorkerRun, FloorRun)> {
    let (mut worker, mut floor) = round(endpoint, concurrency, n, latency, http).await?;
    for _ in 1..rounds {
        let (w, f) = round(endpoint, concurrency, n, latency, http).await?;
        worker = worker.and(w);
        floor = floor.and(f);
    }
    Ok((worker, floor))
}

/// One round of [`beside_floor`]: worker, floor, floor, worker.
async fn round(
    endpoint: &Endpoint,
    concurrency: usize,
    n: usize,
    latency: Duration,
    http: RestHttp,
) -> anyhow::Result<(WorkerRun, FloorRun)> {
    let first = worker_drain(endpoint, concurrency, n, latency, http).await?;
    let floor = floor::drain(endpoint, concurrency, n, latency, http).await?;
    let floor = floor.and(floor::drain(endpoint, concurrency, n, latency, http).await?);
    let worker = first.and(worker_drain(endpoint, concurrency, n, latency, http).await?);
    Ok((worker, floor))
}

/// The rate over two drains' windows together, given each drain's (events, rate): the windows
/// hold the same share of each drain's events, so this is the events over the time.
fn combined_rate((n1, r1): (usize, f64), (n2, r2): (usize, f64)) -> f64 {
    (n1 + n2) as f64 / (n1 as f64 / r1 + n2 as f64 / r2)
}

/// Preloads `n` events, starts the worker, and measures it draining them.
async fn worker_drain(
    endpoint: &Endpoint,
    concurrency: usize,
    n: usize,
    latency: Duration,
    http: RestHttp,
) -> anyhow::Result<WorkerRun> {
    worker_drain_with(endpoint, concurrency, n, latency, http, &[]).await
}

/// [`worker_drain`] with settings beyond the production defaults.
async fn worker_drain_with(
    endpoint: &Endpoint,
    concurrency: usize,
    n: usize,
    latency: Duration,
    http: RestHttp,
    settings: &[(&str, String)],
) -> anyhow::Result<WorkerRun> {
    let run = run_name("w");
    let (queue, dlq) = endpoint.queues(&run).await?;
    endpoint.preload(&queue, &run, n).await?;
    let peers = Peers::start(latency).await?;
    let stats_before = endpoint.stats();
    let mut worker = Worker::spawn(
        Command::new(worker_bin()),
        endpoint,
        &queue,
        &peers,
        concurrency,
        http,
        settings,
    )?;
    let http = reqwest::Client::new();
    let start = worker.wait_ready(&http, Duration::from_millis(5)).await?;
    let (user_at_start, sys_at_start) = proc_cpu_split(worker.pid())?;
    let harness_cpu_at_start = proc_cpu(std::process::id())?;
    let mut rss_samples = Vec::new();
    let progress = watch_drain(endpoint, &queue, n, start, |fraction| {
        if let Ok((rss, _)) = worker.memory_kib() {
            rss_samples.push((fraction, rss));
        }
    })
    .await?;
    let elapsed = start.elapsed();
    let (user, sys) = proc_cpu_split(worker.pid())?;
    let (user, sys) = (
        user.saturating_sub(user_at_start),
        sys.saturating_sub(sys_at_start),
    );
    let cpu = user + sys;
    let harness_cpu = proc_cpu(std::process::id())?.saturating_sub(harness_cpu_at_start);
    let (rss, peak_rss_kib) = worker.memory_kib()?;
    let sqs = stats_before
        .zip(endpoint.stats())
        .map(|(b, a)| SqsCalls::between(&b, &a));
    let steady_rss_kib = median_rss(&rss_samples, 0.5..0.9).unwrap_or(rss);
    let (log_bytes, log_lines) = (
        worker.log_bytes.load(Ordering::Relaxed),
        worker.log_lines.load(Ordering::Relaxed),
    );
    let renewed = worker.renewed(&http).await?;
    worker.stop().await?;
    let audit = Audit::check(endpoint, &peers, &run, n, &queue, &dlq).await?;
    let rate = progress.window_rate(n as u64);
    Ok(WorkerRun {
        rate,
        drains: vec![DrainFigures::new(rate, n, cpu, harness_cpu)],
        elapsed,
        n,
        cpu,
        peak_rss_kib,
        steady_rss_kib,
        log_bytes,
        log_lines,
        sqs,
        harness_cpu,
        sys_cpu: sys,
        rss_samples,
        renewed,
        audit,
    })
}

/// The median of the RSS samples taken while the drain was within `band` (fractions of it).
fn median_rss(samples: &[(f64, u64)], band: std::ops::Range<f64>) -> Option<u64> {
    let mut in_band: Vec<u64> = samples
        .iter()
        .filter(|(f, _)| band.contains(f))
        .map(|(_, kib)| *kib)
        .collect();
    in_band.sort_unstable();
    in_band.get(in_band.len() / 2).copied()
}

/// The long run's concurrency: the highest the ≤ 30 MiB target covers.
const LEAK_CONCURRENCY: usize = 100;

/// The share of the long run that is warm-up: caches, connection pools and the duplicate
/// memory fill during it.
const WARM_UP: f64 = 0.10;

/// The most RSS may grow after warm-up in the long run.
const LEAK_LIMIT_KIB: u64 = 1024;

/// A long drain whose memory must stay flat once warm.
struct LongRun {
    run: WorkerRun,
    concurrency: usize,
}

impl LongRun {
    /// Median RSS just after warm-up, the largest sample after it, and the median at the end.
    fn rss(&self) -> (u64, u64, u64) {
        let s = &self.run.rss_samples;
        let warm = median_rss(s, WARM_UP..WARM_UP + 0.1).unwrap_or(0);
        let max = s
            .iter()
            .filter(|(f, _)| *f >= WARM_UP)
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0);
        let end = median_rss(s, 0.9..1.01).unwrap_or(0);
        (warm, max, end)
    }

    /// Growth after warm-up: the largest sample over the warm median.
    fn growth_kib(&self) -> u64 {
        let (warm, max, _) = self.rss();
        max.saturating_sub(warm)
    }

    fn ok(&self) -> bool {
        self.growth_kib() <= LEAK_LIMIT_KIB && self.run.audit.ok()
    }

    fn line(&self) -> String {
        let (warm, max, end) = self.rss();
        format!(
            "long run, {} events at c={}: RSS after warm-up {:.1} MiB, largest after {:.1} MiB (+{} KiB), at the end {:.1} MiB, over {} samples; {:.0}/s; {}",
            self.run.n,
            self.concurrency,
            mib(warm),
            mib(max),
            max.saturating_sub(warm),
            mib(end),
            self.run.rss_samples.len(),
            self.run.rate,
            self.run.audit.line()
        )
    }
}

async fn long_run(endpoint: &Endpoint, concurrency: usize, n: usize) -> anyhow::Result<LongRun> {
    Ok(LongRun {
        run: worker_drain(endpoint, concurrency, n, Duration::ZERO, RestHttp::Http1).await?,
        concurrency,
    })
}

/// The renewal run in a line: renewals, the calls that carried them, CPU.
fn renewal_line(r: &WorkerRun) -> String {
    let calls = r.sqs.as_ref().map_or(0, |s| s.visibility_calls);
    format!(
        "{} renewals ({:.2} per event) in {} calls ({:.1} each); {:.0}/s; CPU {:.0} µs/event; {}",
        r.renewed,
        r.renewed as f64 / r.n as f64,
        calls,
        r.renewed as f64 / calls.max(1) as f64,
        r.rate,
        r.cpu_us_per_event(),
        r.audit.line()
    )
}

/// What a bare-loop drain measured.
struct BareRun {
    rate: f64,
    loops: usize,
    /// CPU of this whole process during the drain, per message (the loops plus sampling).
    cpu_us_per_event: f64,
}

/// Preloads `n` events and drains them with `ceil(concurrency / 10)` plain SDK loops, each
/// holding up to 10 messages: ReceiveMessage (10, the same attributes the worker asks for)
/// then DeleteMessageBatch of what it got.
async fn bare_drain(endpoint: &Endpoint, concurrency: usize, n: usize) -> anyhow::Result<BareRun> {
    let run = run_name("b");
    let (queue, _dlq) = endpoint.queues(&run).await?;
    endpoint.preload(&queue, &run, n).await?;
    let loops = concurrency.div_ceil(10);
    let stop = CancellationToken::new();
    let cpu_at_start = proc_cpu(std::process::id())?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..loops {
        let (client, queue, stop) = (endpoint.client().clone(), queue.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    r = client
                        .receive_message()
                        .queue_url(&queue)
                        .max_number_of_messages(10)
                        .wait_time_seconds(20)
                        .visibility_timeout(30)
                        .message_system_attribute_names(MessageSystemAttributeName::All)
                        .message_attribute_names("All")
                        .send() => r,
                    _ = stop.cancelled() => return Ok(()),
                };
                let entries = received
                    .context("ReceiveMessage")?
                    .messages()
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if entries.is_empty() {
                    continue;
                }
                client
                    .delete_message_batch()
                    .queue_url(&queue)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .context("DeleteMessageBatch")?;
            }
        }));
    }
    let progress = watch_drain(endpoint, &queue, n, start, |_| {}).await;
    stop.cancel();
    for t in tasks {
        let result: anyhow::Result<()> = t.await?;
        result?;
    }
    let progress = progress?;
    let cpu = proc_cpu(std::process::id())?.saturating_sub(cpu_at_start);
    Ok(BareRun {
        rate: progress.window_rate(n as u64),
        loops,
        cpu_us_per_event: cpu.as_secs_f64() * 1e6 / n as f64,
    })
}

// ---------------------------------------------------------------- exactly-once audit

/// What the peers and the queues show after a drain.
struct Audit {
    n: usize,
    /// Envelope ids the inventory service never saw / saw more than once.
    inventory_missing: usize,
    inventory_repeated: usize,
    /// The same for the reservation API's PATCHes.
    reservations_missing: usize,
    reservations_repeated: usize,
    /// Calls whose key is not one of this run's envelope ids.
    strangers: usize,
    left_in_queue: u64,
    dead_lettered: u64,
}

impl Audit {
    /// The audits of two drains together: their events and their faults added.
    fn and(self, other: Audit) -> Audit {
        Audit {
            n: self.n + other.n,
            inventory_missing: self.inventory_missing + other.inventory_missing,
            inventory_repeated: self.inventory_repeated + other.inventory_repeated,
            reservations_missing: self.reservations_missing + other.reservations_missing,
            reservations_repeated: self.reservations_repeated + other.reservations_repeated,
            strangers: self.strangers + other.strangers,
            left_in_queue: self.left_in_queue + other.left_in_queue,
            dead_lettered: self.dead_lettered + other.dead_lettered,
        }
    }

    async fn check(
        endpoint: &Endpoint,
        peers: &Peers,
        run: &str,
        n: usize,
        queue: &str,
        dlq: &str,
    ) -> anyhow::Result<Audit> {
        let expected: HashMap<String, ()> = (0..n).map(|i| (envelope_id(run, i), ())).collect();
        let mut strangers = 0;
        let mut count = |keys: &mut dyn Iterator<Item = String>| {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for k in keys {
                if expected.contains_key(&k) {
                    *seen.entry(k).or_default() += 1;
                } else {
                    strangers += 1;
                }
            }
            let missing = n - seen.len();
            let repeated = seen.values().filter(|c| **c > 1).count();
            (missing, repeated)
        };
        let (inventory_missing, inventory_repeated) = count(
            &mut peers
                .inventory
                .calls()
                .into_iter()
                .map(|c| c.idempotency_key),
        );
        let (reservations_missing, reservations_repeated) = count(
            &mut peers
                .reservations
                .calls()
                .into_iter()
                .filter(|c| c.method == "PATCH")
                .map(|c| {
                    c.headers
                        .get("idempotency-key")
                        .cloned()
                        .unwrap_or_default()
                }),
        );
        Ok(Audit {
            n,
            inventory_missing,
            inventory_repeated,
            reservations_missing,
            reservations_repeated,
            strangers,
            left_in_queue: endpoint.depth(queue).await?,
            dead_lettered: endpoint.depth(dlq).await?,
        })
    }

    fn ok(&self) -> bool {
        self.inventory_missing == 0
            && self.inventory_repeated == 0
            && self.reservations_missing == 0
            && self.reservations_repeated == 0
            && self.strangers == 0
            && self.left_in_queue == 0
            && self.dead_lettered == 0
    }

    fn line(&self) -> String {
        format!(
            "audit {}: {} events; inventory missing {} repeated {}; reservation PATCH missing {} repeated {}; unknown keys {}; left in queue {}; dead-lettered {}",
            if self.ok() { "OK" } else { "FAILED" },
            self.n,
            self.inventory_missing,
            self.inventory_repeated,
            self.reservations_missing,
            self.reservations_repeated,
            self.strangers,
            self.left_in_queue,
            self.dead_lettered
        )
    }
}

// ---------------------------------------------------------------- pickup and start-up

/// Percentiles (nearest rank) of durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    fn new(mut samples: Vec<Duration>) -> Latencies {
        samples.sort_unstable();
        Latencies { samples }
    }
    fn p(&self, p: f64) -> f64 {
        percentile_ms(&self.samples, p)
    }
    fn max(&self) -> f64 {
        self.samples
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }
}

/// With the worker idle and long-polling, sends single events one at a time and takes the
/// time from just before each SendMessage to the first downstream call the inventory peer
/// recorded for it (same process, same clock).
async fn pickup_latency(endpoint: &Endpoint, sends: usize) -> anyhow::Result<Latencies> {
    let run = run_name("p");
    let (queue, _dlq) = endpoint.queues(&run).await?;
    let peers = Peers::start(Duration::ZERO).await?;
    let mut worker = Worker::spawn(
        Command::new(worker_bin()),
        endpoint,
        &queue,
        &peers,
        20,
        RestHttp::Http1,
        &[],
    )?;
    worker
        .wait_ready(&reqwest::Client::new(), Duration::from_millis(20))
        .await?;
    // Let the first long poll settle into its wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::with_capacity(sends);
    for i in 0..sends {
        // Expired events call the inventory peer first.
        let i = i * 3;
        let rid = format!("r-{run}-{i}");
        let sent = Instant::now();
        endpoint
            .client()
            .send_message()
            .queue_url(&queue)
            .message_body(event_body(&run, i))
            .send()
            .await
            .context("SendMessage")?;
        let deadline = sent + Duration::from_secs(10);
        let first = loop {
            if let Some(call) = peers.inventory.calls_for(&rid).first() {
                break call.at;
            }
            ensure!(
                Instant::now() < deadline,
                "event {i} not picked up within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        samples.push(first.saturating_duration_since(sent));
    }
    worker.stop().await?;
    Ok(Latencies::new(samples))
}

/// Process start to `/ready` = 200, against the fast endpoint, `times` times.
async fn startup(endpoint: &Endpoint, times: usize) -> anyhow::Result<Latencies> {
    let run = run_name("s");
    let (queue, _dlq) = endpoint.queues(&run).await?;
    let peers = Peers::start(Duration::ZERO).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut samples = Vec::with_capacity(times);
    for _ in 0..times {
        let start = Instant::now();
        let mut worker = Worker::spawn(
            Command::new(worker_bin()),
            endpoint,
            &queue,
            &peers,
            20,
            RestHttp::Http1,
            &[],
        )?;
        let ready = worker.wait_ready(&http, Duration::from_millis(1)).await?;
        samples.push(ready - start);
        worker.stop().await?;
    }
    Ok(Latencies::new(samples))
}

// ---------------------------------------------------------------- the report

/// One drain-ratio figure: the worker, the bare loop and (fast endpoint) the contract floor.
struct Drain {
    endpoint: &'static str,
    concurrency: usize,
    n: usize,
    worker: WorkerRun,
    bare: BareRun,
    floor: Option<FloorRun>,
}

#[derive(Default)]
struct Report {
    drains: Vec<Drain>,
    /// (concurrency, events, ideal rate, worker, contract floor)
    little: Vec<(usize, usize, f64, WorkerRun, FloorRun)>,
    pickup: Option<Latencies>,
    startup: Option<Latencies>,
    leak: Option<LongRun>,
    /// The run of slow messages renewed while worked on.
    renewal: Option<WorkerRun>,
    /// 20 ms runs with the REST peer over h2c: (concurrency, worker, contract floor).
    h2: Vec<(usize, WorkerRun, FloorRun)>,
    /// What the fast endpoint served over the whole run.
    fast_stats: Option<Value>,
    /// What one id costs in the duplicate memory, by id length.
    dedupe: Vec<dedupe::Cost>,
    /// Instructions per event, worker and floor (None: not run, or valgrind is missing).
    instructions: Option<instructions::Instructions>,
    /// Rounds of worker, floor, floor, worker behind each figure beside the floor.
    rounds: usize,
}

fn mark(pass: bool) -> &'static str {
    if pass { "pass" } else { "MISS" }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    /// Every scenario measured beside the contract floor: (name, concurrency, worker, floor).
    fn scenarios(&self) -> impl Iterator<Item = (String, usize, &WorkerRun, &FloorRun)> {
        self.drains
            .iter()
            .filter_map(|d| {
                let f = d.floor.as_ref()?;
                Some((
                    format!("fast drain, c={}", d.concurrency),
                    d.concurrency,
                    &d.worker,
                    f,
                ))
            })
            .chain(self.little.iter().map(|(c, _, _, w, f)| {
                (
                    format!("{} ms peers, c={c}", PEER_LATENCY.as_millis()),
                    *c,
                    w,
                    f,
                )
            }))
            .chain(self.h2.iter().map(|(c, w, f)| {
                (
                    format!(
                        "{} ms peers, c={c}{}",
                        PEER_LATENCY.as_millis(),
                        RestHttp::H2c.label()
                    ),
                    *c,
                    w,
                    f,
                )
            }))
    }

    /// The table, and whether every audit (and the long run's memory check) passed.
    fn table(&self, machine: &Machine) -> (String, bool) {
        let mut t = String::new();
        let mut ok = true;
        let _ = writeln!(t, "\nreservation-worker bench — {}", machine.line());
        let bin = worker_bin();
        let size = std::fs::metadata(&bin).map_or(0, |m| m.len());
        let _ = writeln!(
            t,
            "worker: {} ({:.2} MB), production settings (LOG_LEVEL=info JSON to a pipe, SQS_WAIT_TIME=20); peers and SQS endpoints in the bench process; both share the cores above",
            bin.to_string_lossy(),
            size as f64 / 1e6
        );
        let _ = writeln!(
            t,
            "\nAgainst the contract floor (the same calls, nothing else), measured in this run; each side drains each figure {} times, in {} round(s) of worker, floor, floor, worker:\n",
            2 * self.rounds,
            self.rounds
        );
        let _ = writeln!(
            t,
            "| scenario | events/s worker / floor | rate ≥ {:.2}× | CPU µs/event worker / floor | CPU ≤ {:.2}× | peak RSS MiB worker / floor | RSS ≤ {:.1}× (≤ {:.0} MiB to c={}) |\n|---|---|---|---|---|---|---|",
            Targets::RATE,
            Targets::CPU,
            Targets::RSS,
            Targets::RSS_MIB,
            Targets::RSS_MIB_UP_TO
        );
        for (name, c, w, f) in self.scenarios() {
            ok &= w.audit.ok() && f.audit.ok();
            let rate = w.rate / f.rate;
            let cpu = w.cpu_us_per_event() / f.cpu_us_per_event();
            let (wm, fm) = (mib(w.peak_rss_kib), mib(f.peak_rss_kib));
            let rss_ok =
                wm <= Targets::RSS * fm && (c > Targets::RSS_MIB_UP_TO || wm <= Targets::RSS_MIB);
            let _ = writeln!(
                t,
                "| {name} | {:.0} / {:.0} | {rate:.2} {} | {:.1} / {:.1} | {cpu:.2} {} | {wm:.1} / {fm:.1} | {:.2} {} |",
                w.rate,
                f.rate,
                mark(rate >= Targets::RATE),
                w.cpu_us_per_event(),
                f.cpu_us_per_event(),
                mark(cpu <= Targets::CPU),
                wm / fm,
                mark(rss_ok),
            );
        }
        if !self.little.is_empty() {
            let _ = writeln!(
                t,
                "\nScale curve, {} ms per peer call (ideal = concurrency / {} ms):\n",
                PEER_LATENCY.as_millis(),
                2 * PEER_LATENCY.as_millis()
            );
            let _ = writeln!(
                t,
                "| concurrency | worker events/s (of ideal) | worker CPU µs/event | worker cores busy | floor events/s | floor CPU µs/event |\n|---|---|---|---|---|---|"
            );
            for (c, _, ideal, w, f) in &self.little {
                let _ = writeln!(
                    t,
                    "| {c} | {:.0} ({:.2} of {ideal:.0}) | {:.1} | {:.2} | {:.0} | {:.1} |",
                    w.rate,
                    w.rate / ideal,
                    w.cpu_us_per_event(),
                    w.cpu.as_secs_f64() / w.elapsed.as_secs_f64(),
                    f.rate,
                    f.cpu_us_per_event()
                );
            }
        }
        let _ = writeln!(t, "\n| figure | measured | target | |\n|---|---|---|---|");
        let row =
            |t: &mut String, name: String, value: String, target: String, pass: Option<bool>| {
                let _ = writeln!(
                    t,
                    "| {name} | {value} | {target} | {} |",
                    pass.map_or("", mark)
                );
            };
        for d in self.drains.iter().filter(|d| d.floor.is_none()) {
            ok &= d.worker.audit.ok();
            row(
                &mut t,
                format!(
                    "drain, {}, N={}, concurrency {} (bare: {} loops × 10)",
                    d.endpoint, d.n, d.concurrency, d.bare.loops
                ),
                format!(
                    "worker {:.0}/s, bare {:.0}/s, ratio {:.2} ({} is the limit)",
                    d.worker.rate,
                    d.bare.rate,
                    d.worker.rate / d.bare.rate,
                    d.endpoint
                ),
                "reference".into(),
                None,
            );
        }
        if let Some(r) = &self.renewal {
            ok &= r.audit.ok();
            row(
                &mut t,
                format!(
                    "renewals: {} events at c={}, {} s visibility, peers {} ms per call",
                    r.n,
                    RENEWAL_CONCURRENCY,
                    RENEWAL_VISIBILITY_SECS,
                    RENEWAL_PEER_LATENCY.as_millis()
                ),
                renewal_line(r),
                "reference".into(),
                None,
            );
        }
        if let Some(i) = &self.instructions {
            ok &= i.worker_audit.ok() && i.floor_audit.ok();
            row(
                &mut t,
                format!(
                    "user-space instructions (callgrind), {} events, fast endpoint, c={}",
                    instructions::N,
                    instructions::CONCURRENCY
                ),
                i.line(),
                "reference".into(),
                None,
            );
        }
        if let Some(l) = &self.leak {
            ok &= l.ok();
            row(
                &mut t,
                format!(
                    "RSS over a long run: {} events, fast endpoint, c={}",
                    l.run.n, l.concurrency
                ),
                l.line(),
                format!("growth after warm-up ≤ {} KiB", LEAK_LIMIT_KIB),
                Some(l.ok()),
            );
        }
        if let Some(p) = &self.pickup {
            row(
                &mut t,
                format!(
                    "pickup latency, {} single sends, fast endpoint",
                    p.samples.len()
                ),
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    p.p(50.0),
                    p.p(99.0),
                    p.max()
                ),
                format!("p99 ≤ {:.0} ms", Targets::PICKUP_P99_MS),
                Some(p.p(99.0) <= Targets::PICKUP_P99_MS),
            );
        }
        if let Some(s) = &self.startup {
            row(
                &mut t,
                format!("start-up to /ready, {}×, fast endpoint", s.samples.len()),
                format!("p50 {:.1} ms, max {:.1} ms", s.p(50.0), s.max()),
                format!("p50 ≤ {:.0} ms", Targets::STARTUP_MS),
                Some(s.p(50.0) <= Targets::STARTUP_MS),
            );
        }
        let _ = writeln!(t);
        for d in &self.drains {
            let w = &d.worker;
            let _ = writeln!(
                t,
                "drain {} c={}: worker whole drain {:.0}/s in {:.2} s; bare loop {:.0}/s, {:.1} µs/msg of its process; worker logs {:.0} B/event ({} lines); {}",
                d.endpoint,
                d.concurrency,
                w.full_rate(),
                w.elapsed.as_secs_f64(),
                d.bare.rate,
                d.bare.cpu_us_per_event,
                w.log_bytes as f64 / w.n as f64,
                w.log_lines,
                w.audit.line()
            );
        }
        for (name, _, w, f) in self.scenarios() {
            let cores = |d: Duration| d.as_secs_f64() / w.elapsed.as_secs_f64();
            let _ = write!(
                t,
                "{name}: worker cores busy {:.2} ({:.0} % in the kernel), steady RSS {:.1} MiB, bench process (peers, endpoint) {:.2}; floor {}",
                cores(w.cpu),
                w.sys_cpu.as_secs_f64() * 100.0 / w.cpu.as_secs_f64().max(1e-9),
                mib(w.steady_rss_kib),
                cores(w.harness_cpu),
                f.costs(w)
            );
            if let Some(sqs) = &w.sqs {
                let _ = write!(t, "; worker SQS calls: {}", sqs.line());
            }
            let _ = writeln!(t, "; {}", w.audit.line());
        }
        (t, ok)
    }

    fn json(&self, machine: &Machine) -> Value {
        let worker = |w: &WorkerRun| {
            json!({
                "events": w.n,
                "rate_per_s": w.rate,
                "whole_drain_rate_per_s": w.full_rate(),
                "elapsed_s": w.elapsed.as_secs_f64(),
                "cpu_s": w.cpu.as_secs_f64(),
                "cpu_us_per_event": w.cpu_us_per_event(),
                "peak_rss_mib": mib(w.peak_rss_kib),
                "steady_rss_mib": mib(w.steady_rss_kib),
                "log_bytes": w.log_bytes,
                "log_lines": w.log_lines,
                "sqs_calls": w.sqs.as_ref().map(SqsCalls::json),
                "harness_cpu_s": w.harness_cpu.as_secs_f64(),
                "sys_cpu_s": w.sys_cpu.as_secs_f64(),
                "drains": w.drains.iter().map(DrainFigures::json).collect::<Vec<_>>(),
                "audit_ok": w.audit.ok(),
                "audit": w.audit.line(),
            })
        };
        let lat = |l: &Option<Latencies>| {
            l.as_ref().map(|l| {
                json!({"count": l.samples.len(), "p50_ms": l.p(50.0), "p99_ms": l.p(99.0), "max_ms": l.max()})
            })
        };
        json!({
            "machine": {
                "cores": machine.cores,
                "memory_mib": machine.memory_mib,
                "cpu_model": machine.cpu_model,
                "kernel": machine.kernel,
            },
            "rate_window": [WINDOW.0, WINDOW.1],
            "rounds_beside_floor": self.rounds,
            "targets": {
                "rate_over_floor_min": Targets::RATE,
                "cpu_over_floor_max": Targets::CPU,
                "peak_rss_over_floor_max": Targets::RSS,
                "peak_rss_mib_max": Targets::RSS_MIB,
                "peak_rss_mib_max_up_to_concurrency": Targets::RSS_MIB_UP_TO,
                "pickup_p99_ms": Targets::PICKUP_P99_MS,
                "startup_ms": Targets::STARTUP_MS,
                "leak_kib_max": LEAK_LIMIT_KIB,
            },
            "renewal": self.renewal.as_ref().map(|r| json!({
                "concurrency": RENEWAL_CONCURRENCY,
                "visibility_s": RENEWAL_VISIBILITY_SECS,
                "peer_latency_ms": RENEWAL_PEER_LATENCY.as_millis() as u64,
                "messages_renewed": r.renewed,
                "worker": worker(r),
            })),
            "instructions": self.instructions.as_ref().map(|i| json!({
                "events": instructions::N,
                "concurrency": instructions::CONCURRENCY,
                "worker_per_event": instructions::Instructions::per_event(i.worker),
                "floor_per_event": instructions::Instructions::per_event(i.floor),
                "worker_over_floor": i.ratio(),
            })),
            "long_run": self.leak.as_ref().map(|l| {
                let (warm, max, end) = l.rss();
                json!({
                    "concurrency": l.concurrency,
                    "warm_up_fraction": WARM_UP,
                    "rss_after_warm_up_mib": mib(warm),
                    "rss_max_after_warm_up_mib": mib(max),
                    "rss_at_end_mib": mib(end),
                    "growth_kib": l.growth_kib(),
                    "ok": l.ok(),
                    "worker": worker(&l.run),
                    "rss_samples": l.run.rss_samples.iter().map(|(f, kib)| json!([f, kib])).collect::<Vec<_>>(),
                })
            }),
            "drain": self.drains.iter().map(|Drain { endpoint: ep, concurrency: c, n, worker: w, bare: b, floor: f }| json!({
                "endpoint": ep,
                "concurrency": c,
                "events": n,
                "worker": worker(w),
                "bare": {"loops": b.loops, "rate_per_s": b.rate, "process_cpu_us_per_event": b.cpu_us_per_event},
                "ratio": w.rate / b.rate,
                "contract_floor": f.as_ref().map(|f| floor_json(f, w)),
            })).collect::<Vec<_>>(),
            "littles_law": self.little.iter().map(|(c, n, ideal, w, f)| json!({
                "concurrency": c,
                "events": n,
                "peer_latency_ms": PEER_LATENCY.as_millis() as u64,
                "ideal_per_s": ideal,
                "efficiency": w.rate / ideal,
                "worker": worker(w),
                "contract_floor": floor_json(f, w),
                "contract_floor_efficiency": f.rate / ideal,
            })).collect::<Vec<_>>(),
            "rest_over_h2c": self.h2.iter().map(|(c, w, f)| json!({
                "concurrency": c,
                "events": w.n,
                "peer_latency_ms": PEER_LATENCY.as_millis() as u64,
                "worker": worker(w),
                "contract_floor": floor_json(f, w),
            })).collect::<Vec<_>>(),
            "pickup": lat(&self.pickup),
            "startup": lat(&self.startup),
            "fast_endpoint_stats": self.fast_stats,
            "dedupe_memory": self.dedupe.iter().map(|c| json!({
                "id_bytes": c.id_bytes,
                "entries": c.entries,
                "rss_growth_kib": c.rss_growth_kib,
                "bytes_per_entry": c.bytes_per_entry(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The floor's figures beside the worker's, for the JSON.
fn floor_json(f: &FloorRun, w: &WorkerRun) -> Value {
    json!({
        "rate_per_s": f.rate,
        "worker_over_floor": w.rate / f.rate,
        "cpu_us_per_event": f.cpu_us_per_event(),
        "worker_cpu_over_floor": w.cpu_us_per_event() / f.cpu_us_per_event(),
        "sys_cpu_s": f.sys_cpu.as_secs_f64(),
        "harness_cpu_s": f.harness_cpu.as_secs_f64(),
        "sqs_calls": f.sqs.as_ref().map(SqsCalls::json),
        "drains": f.drains.iter().map(DrainFigures::json).collect::<Vec<_>>(),
        "peak_rss_mib": mib(f.peak_rss_kib),
        "audit_ok": f.audit.ok(),
        "audit": f.audit.line(),
    })
}

fn write_json(v: &Value) -> anyhow::Result<std::path::PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(v)?)?;
    Ok(path)
}
