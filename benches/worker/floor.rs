//! The contract floor: the least any client of this contract can spend per event on the
//! bench's machine, measured beside the worker in the same run.
//!
//! It is a separate process (this bench binary, re-run with [`ARG`]) that makes exactly the
//! calls the contract needs and nothing else: ReceiveMessage (10), per message the two peer
//! calls in the workflow's order (one gRPC, one REST PATCH, with the envelope id as the
//! idempotency key), then DeleteMessageBatch. No validation beyond reading the fields, no
//! retries, no logs, metrics, spans, heartbeats or dedupe. The bench audits its effects with
//! the same exactly-once audit as the worker's, so both did the same work.
//!
//! Why it exists: the bare loop (receive → delete) has no peer calls, so worker/bare mixes
//! the worker's overhead with the cost of the contract itself. The floor separates the two:
//! worker/floor is the worker's overhead, floor/bare what the contract costs on this machine.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use futures::future::join_all;
use reservation_worker::proto::reservation::v1::{
    CommitReservationRequest, ReleaseHoldRequest, inventory_service_client::InventoryServiceClient,
};
use serde::Deserialize;
use tonic::transport::Channel;

use crate::{
    Audit, DrainFigures, Endpoint, Peers, Progress, RestHttp, SqsCalls, WorkerRun, combined_rate,
    moto, proc_cpu, proc_cpu_split, run_name, watch_drain,
};

/// The argument that makes the bench binary run as the floor's process.
pub(crate) const ARG: &str = "contract-floor";

/// What one floor drain measured (the same fields the worker's rows use).
pub(crate) struct FloorRun {
    pub rate: f64,
    pub n: usize,
    pub cpu: Duration,
    pub sys_cpu: Duration,
    pub peak_rss_kib: u64,
    /// CPU of the bench process (peers, fast endpoint) during the drain, as in the worker's run.
    pub harness_cpu: Duration,
    /// The floor's SQS calls during the drain (fast endpoint only).
    pub sqs: Option<SqsCalls>,
    /// Each drain's own figures, when this run is several taken together.
    pub drains: Vec<DrainFigures>,
    pub audit: Audit,
}

impl FloorRun {
    /// Two drains of the same figure as one, as [`WorkerRun::and`] takes the worker's.
    pub(crate) fn and(self, other: FloorRun) -> FloorRun {
        FloorRun {
            rate: combined_rate((self.n, self.rate), (other.n, other.rate)),
            n: self.n + other.n,
            cpu: self.cpu + other.cpu,
            sys_cpu: self.sys_cpu + other.sys_cpu,
            peak_rss_kib: self.peak_rss_kib.max(other.peak_rss_kib),
            harness_cpu: self.harness_cpu + other.harness_cpu,
            sqs: self.sqs.zip(other.sqs).map(|(a, b)| a.and(b)),
            drains: [self.drains, other.drains].concat(),
            audit: self.audit.and(other.audit),
        }
    }

    pub(crate) fn cpu_us_per_event(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.n as f64
    }

    /// CPU and memory beside the worker's run of the same figure.
    pub(crate) fn costs(&self, worker: &WorkerRun) -> String {
        format!(
            "CPU {:.1} µs/event ({:.0} % in the kernel), worker/floor {:.2}; peak RSS {:.1} MiB; bench process {:.1} µs/event (worker's run {:.1}){}",
            self.cpu_us_per_event(),
            self.sys_cpu.as_secs_f64() * 100.0 / self.cpu.as_secs_f64().max(1e-9),
            worker.cpu_us_per_event() / self.cpu_us_per_event(),
            self.peak_rss_kib as f64 / 1024.0,
            self.harness_cpu.as_secs_f64() * 1e6 / self.n as f64,
            worker.harness_cpu.as_secs_f64() * 1e6 / worker.n as f64,
            self.sqs.as_ref().map_or(String::new(), |s| format!(
                "; floor SQS calls: {}",
                s.line()
            ))
        )
    }
}

/// The floor's child process; killed when dropped, so an error never leaves it running.
pub(crate) struct FloorProcess(Child);

impl FloorProcess {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the floor's process as `program` (the bench binary, or a command that runs it, such
/// as valgrind's) followed by [`ARG`], and returns once it said "ready" (its clients exist).
pub(crate) async fn spawn(
    mut program: Command,
    endpoint: &Endpoint,
    queue: &str,
    peers: &Peers,
    concurrency: usize,
    http: RestHttp,
) -> anyhow::Result<FloorProcess> {
    let mut child = program
        .arg(ARG)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(endpoint.aws_env())
        .env("FLOOR_QUEUE_URL", queue)
        .env("FLOOR_CONCURRENCY", concurrency.to_string())
        .env(
            "FLOOR_INVENTORY",
            format!("http://{}", peers.inventory_addr),
        )
        .env("FLOOR_RESERVATIONS", &peers.reservation_base)
        .envs((http == RestHttp::H2c).then_some(("FLOOR_H2C", "1")))
        // The worker's allocator setting: the floor is the same program apart from its calls.
        .env(
            "MIMALLOC_PURGE_DELAY",
            reservation_worker::ALLOCATOR_PURGE_DELAY
                .as_millis()
                .to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn the contract floor")?;
    let stdout = child.stdout.take().context("the floor's stdout")?;
    let process = FloorProcess(child);
    // The child says "ready" once its clients exist; its start-up is not part of any figure.
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await??;
    ensure!(
        ready.trim() == "ready",
        "the contract floor did not start: {ready:?}"
    );
    Ok(process)
}

/// Preloads `n` events and measures the floor draining them, like `worker_drain` does the
/// worker: CPU from the moment its clients are built, the rate inside the window.
pub(crate) async fn drain(
    endpoint: &Endpoint,
    concurrency: usize,
    n: usize,
    latency: Duration,
    http: RestHttp,
) -> anyhow::Result<FloorRun> {
    let run = run_name("f");
    let (queue, dlq) = endpoint.queues(&run).await?;
    endpoint.preload(&queue, &run, n).await?;
    let peers = Peers::start(latency).await?;
    let program = Command::new(std::env::current_exe().context("the bench binary")?);
    let process = spawn(program, endpoint, &queue, &peers, concurrency, http).await?;
    let pid = process.pid();
    let stats_before = endpoint.stats();
    let start = Instant::now();
    let (user_at_start, sys_at_start) = proc_cpu_split(pid)?;
    let harness_cpu_at_start = proc_cpu(std::process::id())?;
    let progress: Progress = watch_drain(endpoint, &queue, n, start, |_| {}).await?;
    let (user, sys) = proc_cpu_split(pid)?;
    let harness_cpu = proc_cpu(std::process::id())?.saturating_sub(harness_cpu_at_start);
    let sqs = stats_before
        .zip(endpoint.stats())
        .map(|(b, a)| SqsCalls::between(&b, &a));
    let peak_rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    drop(process);
    let audit = Audit::check(endpoint, &peers, &run, n, &queue, &dlq).await?;
    let sys_cpu = sys.saturating_sub(sys_at_start);
    let rate = progress.window_rate(n as u64);
    let cpu = user.saturating_sub(user_at_start) + sys_cpu;
    Ok(FloorRun {
        rate,
        drains: vec![DrainFigures::new(rate, n, cpu, harness_cpu)],
        n,
        cpu,
        sys_cpu,
        peak_rss_kib,
        harness_cpu,
        sqs,
        audit,
    })
}

/// The child's side: sized like the worker's runtime (the same `WORKER_THREADS` default for
/// the concurrency), it drains until it is killed.
pub(crate) fn child_main() -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let concurrency: usize = var("FLOOR_CONCURRENCY")?.parse()?;
    let threads = reservation_worker::config::runtime_threads(None, concurrency)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sqs = moto::client(&var("AWS_ENDPOINT_URL")?);
        let inventory = InventoryServiceClient::new(
            tonic::transport::Endpoint::from_shared(var("FLOOR_INVENTORY")?)?
                .tcp_nodelay(true)
                .connect_lazy(),
        );
        let rest = match std::env::var("FLOOR_H2C").is_ok_and(|v| v == "1") {
            true => reqwest::Client::builder().http2_prior_knowledge(),
            false => reqwest::Client::builder(),
        }
        .tcp_nodelay(true)
        .build()?;
        let peers = Arc::new(Calls {
            inventory,
            rest,
            base: var("FLOOR_RESERVATIONS")?,
        });
        let queue: Arc<str> = var("FLOOR_QUEUE_URL")?.into();
        println!("ready");
        // Spawned, as the worker's loops are: run inside `block_on` they would have the main
        // thread to themselves, one thread more than the worker gets.
        let loops = (0..concurrency.div_ceil(10))
            .map(|_| tokio::spawn(receive_loop(sqs.clone(), queue.clone(), peers.clone())));
        for result in join_all(loops).await {
            result??;
        }
        Ok(())
    })
}

/// The two peers, as plainly as their libraries allow.
struct Calls {
    inventory: InventoryServiceClient<Channel>,
    rest: reqwest::Client,
    base: String,
}

/// The fields the three workflows read.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    detail: Detail,
}

#[derive(Deserialize)]
struct Detail {
    reservation_id: String,
    event_id: String,
    seat_ids: Vec<String>,
    qty: i32,
    #[serde(default)]
    payment_intent_id: String,
    #[serde(default)]
    user_id: String,
}

async fn receive_loop(
    sqs: aws_sdk_sqs::Client,
    queue: Arc<str>,
    peers: Arc<Calls>,
) -> anyhow::Result<()> {
    let (queue, peers) = (&*queue, &*peers);
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .visibility_timeout(30)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .context("ReceiveMessage")?;
        let done = join_all(received.messages().iter().map(|m| async move {
            let body = m.body().unwrap_or_default();
            match process(peers, body).await {
                Ok(()) => m.receipt_handle().map(str::to_string),
                // Left for redelivery, as a worker would: the audit then shows it.
                Err(e) => {
                    eprintln!("contract floor: {e:#}");
                    None
                }
            }
        }))
        .await;
        let entries = done
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            continue;
        }
        sqs.delete_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
            .context("DeleteMessageBatch")?;
    }
}

/// One event's calls, in its workflow's order.
async fn process(peers: &Calls, body: &str) -> anyhow::Result<()> {
    let e: Envelope = serde_json::from_str(body)?;
    match e.kind.as_str() {
        "reservation.expired" => {
            release(peers, &e, "expired").await?;
            patch(peers, &e, "EXPIRED").await
        }
        "payment.approved" => {
            patch(peers, &e, "CONFIRMED").await?;
            let d = &e.detail;
            let req = CommitReservationRequest {
                reservation_id: d.reservation_id.clone(),
                event_id: d.event_id.clone(),
                seat_ids: d.seat_ids.clone(),
                quantity: d.qty,
                payment_intent_id: d.payment_intent_id.clone(),
                user_id: d.user_id.clone(),
                idempotency_key: e.id.clone(),
            };
            peers.inventory.clone().commit_reservation(req).await?;
            Ok(())
        }
        "payment.failed" => {
            patch(peers, &e, "CANCELLED").await?;
            release(peers, &e, "payment_failed").await
        }
        other => anyhow::bail!("unknown type {other:?}"),
    }
}

async fn release(peers: &Calls, e: &Envelope, reason: &str) -> anyhow::Result<()> {
    let d = &e.detail;
    let req = ReleaseHoldRequest {
        reservation_id: d.reservation_id.clone(),
        event_id: d.event_id.clone(),
        seat_ids: d.seat_ids.clone(),
        quantity: d.qty,
        reason: reason.to_string(),
        idempotency_key: e.id.clone(),
    };
    peers.inventory.clone().release_hold(req).await?;
    Ok(())
}

async fn patch(peers: &Calls, e: &Envelope, status: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}/internal/reservations/{}",
        peers.base, e.detail.reservation_id
    );
    let resp = peers
        .rest
        .patch(url)
        .header("content-type", "application/json")
        .header("idempotency-key", &e.id)
        .body(format!(r#"{{"status":"{status}"}}"#))
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "PATCH answered {}",
        resp.status()
    );
    Ok(())
}
