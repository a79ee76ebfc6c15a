//! The chaos soak (issue 5): thousands of events through real worker processes while the
//! peers fail at random, connections are reset, workers are SIGKILLed, SIGTERMed and run two
//! at once — then an audit of what the peers, the queues and the workers' metrics say.
//!
//! Sizes, seed and SQS server: `CHAOS_EVENTS` (default 1,000; `make chaos` runs 10,000),
//! `CHAOS_SEED` (default fixed, printed, so a failure can be re-run) and `CHAOS_SQS` (`fast`,
//! the default: the project's fast endpoint, which the conformance suite holds to moto's
//! behaviour; `moto`, which `make chaos` uses). Everything is real: an SQS server (a standard
//! queue whose RedrivePolicy names a DLQ), the crate's simulators as tonic and HTTP servers
//! behind a resetting TCP proxy each, and the worker binary as child processes.
//!
//! Why the settings are what they are:
//! * `maxReceiveCount` 10: a valid event is received again only after a kill (2), the drain
//!   (1) or spent retries (each needs five failed attempts at ~10 %: about 1e-5 per step), so
//!   it stays far below 10 and never reaches the DLQ by the redrive policy; poison goes to the
//!   DLQ through the worker, on its first receive, with a `ReasonClass`.
//! * Visibility 4 s (the queue's and the workers'): messages held by a killed worker come back
//!   within seconds.
//! * At most 300 messages queued at once (the producer waits): moto scans the whole queue on
//!   every receive and delete, so a deeper backlog only measures moto.
//! * The choreography goes by progress (messages gone from the source queue): SIGKILL at 10 %,
//!   a second worker from 25 %, SIGKILL of the older one at 40 %, SIGTERM of the other at 55 %,
//!   each followed by a fresh worker, so two run at once for most of the run. Each signal
//!   waits for a scrape that shows work in flight.
//! * Peer timeouts 1 s, stalls 1.5 s: a stalling peer is always given up on, half of the time
//!   after it already applied the effect — the case idempotency keys protect against.
//!
//! The metrics rule (`worker_events_total` is per process, and a SIGKILLed process takes its
//! unscraped counts with it). Every process is scraped every 200 ms, right before each signal,
//! during its SIGTERM drain, and once more at the end when nothing is in flight. Each process
//! also logs `message finished` per delivery, right after counting it, so its log tally tells
//! how many deliveries it finished after its last scrape (its hidden window). With `S` the sum
//! of last scrapes, `H` the hidden windows of signalled processes, `V` valid and `P` poison
//! events:
//! * every process: counter ≤ log tally; a process scraped at the end (nothing in flight):
//!   counter = log tally, exactly;
//! * dead-lettered: `P − H ≤ S ≤ P + R`, where `R` is the deliveries of poison beyond the first
//!   (from the DLQ copies' `ReceiveCount` and `DeadLetteredBy`, and the copies a worker logged
//!   as already dead-lettered: given twice at once, or again after a failed delete): exact `P`
//!   when no kill hid or repeated one;
//! * success: `V − H ≤ S ≤ V + replays`, since each valid event finishes as success at least
//!   once (its first completion), and a later success needs a redelivery after completion,
//!   which makes at least one call the peers answer from their idempotency store (a replay).

use crate::support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use reservation_sim::{Chaos, FaultMix, HoldState, InventoryCall, InventoryMethod, Reservation};
use serde_json::{Value, json};
use support::chaos::{
    Audit, PoisonBody, ResetProxy, Scrape, finished_by_outcome, poison_bodies, queue_depth,
    read_all, scrape,
};
use support::fast_sqs::FastSqs;
use support::{Moto, SqsServer, TestPeers, TestQueue, WorkerProcess, bodies};

const DEFAULT_EVENTS: usize = 1_000;
const DEFAULT_SEED: u64 = 20_261_121;
/// Share of events that are poison.
const POISON_SHARE: f64 = 0.02;
/// Probability that a peer call fails in the simulator (the proxies' resets come on top).
const PEER_FAILURE_RATE: f64 = 0.09;
/// Probability that a chunk a worker sends is followed by a connection reset.
const RESET_RATE: f64 = 0.01;
const MAX_RECEIVE_COUNT: u32 = 10;
const VISIBILITY_SECS: &str = "4";
const PEER_TIMEOUT_MS: u64 = 1_000;
const STALL: Duration = Duration::from_millis(1_500);
const PEER_LATENCY: Duration = Duration::from_millis(5);
/// The most messages the producer keeps in the source queue (see `send_all`).
const BACKLOG: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Expired,
    Approved,
    Failed,
}

impl Kind {
    fn event_type(self) -> &'static str {
        match self {
            Kind::Expired => "reservation.expired",
            Kind::Approved => "payment.approved",
            Kind::Failed => "payment.failed",
        }
    }

    /// The final status the reservation API must hold.
    fn status(self) -> &'static str {
        match self {
            Kind::Expired => "EXPIRED",
            Kind::Approved => "CONFIRMED",
            Kind::Failed => "CANCELLED",
        }
    }

    /// Whether `call` is the inventory effect of this kind of event.
    fn is_inventory_effect(self, call: &InventoryCall, payment_intent_id: &str) -> bool {
        match self {
            Kind::Expired => {
                call.method == InventoryMethod::ReleaseHold && call.reason == "expired"
            }
            Kind::Failed => {
                call.method == InventoryMethod::ReleaseHold && call.reason == "payment_failed"
            }
            Kind::Approved => {
                call.method == InventoryMethod::CommitReservation
                    && call.payment_intent_id == payment_intent_id
            }
        }
    }

    fn hold_explained(self, state: Option<&HoldState>) -> bool {
        match self {
            Kind::Expired | Kind::Failed => state == Some(&HoldState::Released),
            Kind::Approved => matches!(state, Some(HoldState::Committed { .. })),
        }
    }
}

/// A valid event: one per reservation, so its final state is exactly its own effect.
#[derive(Debug, Clone)]
struct ValidEvent {
    key: String,
    rid: String,
    payment_intent_id: String,
    kind: Kind,
    form: &'static str,
}

impl ValidEvent {
    fn body(&self) -> String {
        let detail = self.detail();
        let t = self.kind.event_type();
        match self.form {
            "documented" => bodies::documented(&self.key, t, detail),
            "eventbridge" => bodies::eventbridge(&self.key, t, detail),
            "sns" => bodies::sns(&bodies::documented(&self.key, t, detail)),
            "sns-eventbridge" => bodies::sns(&bodies::eventbridge(&self.key, t, detail)),
            // The payment simulator's form carries no event_id or seats: the worker looks the
            // reservation up first (a GET that the chaos hits too).
            _ => json!({"version": "0", "id": self.key, "detail-type": "Payment Status Updated",
                "source": "payment-sim-api", "time": "2026-11-21T00:00:00Z",
                "detail": {"payment_id": self.payment_intent_id, "reservation_id": self.rid,
                    "user_id": "user-chaos",
                    "status": if self.kind == Kind::Approved { "PAYMENT_STATUS_COMPLETED" } else { "PAYMENT_STATUS_FAILED" },
                    "amount": 120.5, "currency": "USD", "method": "card"}})
            .to_string(),
        }
    }

    fn detail(&self) -> Value {
        match self.kind {
            Kind::Expired => json!({"reservation_id": self.rid, "event_id": "evt-chaos",
                "seat_ids": ["A-1", "A-2"], "qty": 2}),
            Kind::Approved => json!({"reservation_id": self.rid,
                "payment_intent_id": self.payment_intent_id, "amount": 50000, "currency": "KRW",
                "event_id": "evt-chaos", "user_id": "user-chaos", "seat_ids": ["A-1", "A-2"], "qty": 2}),
            Kind::Failed => json!({"reservation_id": self.rid,
                "payment_intent_id": self.payment_intent_id, "amount": 50000, "currency": "KRW",
                "event_id": "evt-chaos", "user_id": "user-chaos", "seat_ids": ["A-1", "A-2"], "qty": 2,
                "error_code": "card_declined", "error_message": "declined"}),
        }
    }
}

/// What was sent: a valid event or a poison body, by index.
#[derive(Debug, Clone, Copy)]
enum Planned {
    Valid(usize),
    Poison(usize),
}

/// The soak's load, generated from the seed.
struct Load {
    valid: Vec<ValidEvent>,
    poison: Vec<PoisonBody>,
    /// Send order.
    order: Vec<Planned>,
}

fn plan(events: usize, seed: u64) -> Load {
    let mut rng = StdRng::seed_from_u64(seed);
    let poison_count = ((events as f64 * POISON_SHARE).round() as usize).max(1);
    let mut pool = poison_bodies();
    assert!(pool.len() >= 20, "the corpus offers {} bodies", pool.len());
    pool.shuffle(&mut rng);
    let poison: Vec<PoisonBody> = (0..poison_count)
        .map(|i| pool[i % pool.len()].clone())
        .collect();
    let valid: Vec<ValidEvent> = (0..events - poison_count)
        .map(|i| {
            let kind = [Kind::Expired, Kind::Approved, Kind::Failed][i % 3];
            let forms: &[&'static str] = if kind == Kind::Expired {
                &["documented", "eventbridge", "sns", "sns-eventbridge"]
            } else {
                &[
                    "documented",
                    "eventbridge",
                    "sns",
                    "sns-eventbridge",
                    "payment-sim",
                ]
            };
            ValidEvent {
                key: format!("chaos-env-{i:05}"),
                rid: format!("chaos-res-{i:05}"),
                payment_intent_id: format!("pi-{i:05}"),
                kind,
                form: forms[rng.random_range(0..forms.len())],
            }
        })
        .collect();
    let mut order: Vec<Planned> = (0..valid.len())
        .map(Planned::Valid)
        .chain((0..poison.len()).map(Planned::Poison))
        .collect();
    order.shuffle(&mut rng);
    Load {
        valid,
        poison,
        order,
    }
}

/// Sends every planned body (batches of 10, four batches at a time), counting them in `sent`
/// as they go; returns the SQS MessageId of each, in `order`. Keeps at most `BACKLOG`
/// messages in the queue: moto's ReceiveMessage and DeleteMessage scan the whole queue, so a
/// 10,000-message backlog would make moto, not the worker, the subject of the soak.
async fn send_all(queue: TestQueue, load: Arc<Load>, sent: Arc<AtomicU64>) -> Vec<String> {
    let bodies: Vec<String> = load
        .order
        .iter()
        .map(|p| match *p {
            Planned::Valid(i) => load.valid[i].body(),
            Planned::Poison(i) => load.poison[i].body.clone(),
        })
        .collect();
    let mut ids = vec![String::new(); bodies.len()];
    for (group, bodies) in bodies.chunks(40).enumerate() {
        let first = group * 40;
        while first as u64 >= BACKLOG && queue_depth(&queue).await + 40 > BACKLOG {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let batches = bodies.chunks(10).enumerate().map(|(n, chunk)| {
            let queue = &queue;
            async move {
                let start = first + n * 10;
                let mut req = queue.client.send_message_batch().queue_url(&queue.url);
                for (j, body) in chunk.iter().enumerate() {
                    req = req.entries(
                        SendMessageBatchRequestEntry::builder()
                            .id(format!("m{}", start + j))
                            .message_body(body)
                            .build()
                            .expect("batch entry"),
                    );
                }
                let out = req.send().await.expect("SendMessageBatch");
                assert!(
                    out.failed().is_empty(),
                    "refused entries: {:?}",
                    out.failed()
                );
                out.successful()
                    .iter()
                    .map(|e| {
                        (
                            e.id()[1..].parse::<usize>().expect("entry id"),
                            e.message_id().to_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            }
        });
        for (i, id) in futures::future::join_all(batches)
            .await
            .into_iter()
            .flatten()
        {
            ids[i] = id;
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    assert!(ids.iter().all(|id| !id.is_empty()), "every body was sent");
    ids
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Running,
    Killed,
    Terminated,
    /// Stopped by the test after the run, once it had nothing in flight.
    Stopped,
}

struct Member {
    name: String,
    process: WorkerProcess,
    port: u16,
    last: Scrape,
    end: End,
    exit: Option<ExitStatus>,
    /// `worker_active_count` at the scrape right before its signal.
    active_at_signal: Option<u64>,
}

/// The worker processes of the run and the moment-to-moment view of them.
struct Fleet {
    env: Vec<(String, String)>,
    members: Vec<Member>,
    http: reqwest::Client,
    queue: TestQueue,
    total: u64,
    /// Messages sent so far (the load goes out while the first worker runs).
    sent: Arc<AtomicU64>,
    started: Instant,
    /// The last progress line printed, in tenths.
    reported_tenths: u64,
}

impl Fleet {
    async fn spawn(&mut self) {
        let name = format!("chaos-w{}", self.members.len() + 1);
        let mut env = self.env.clone();
        env.push(("POD_NAME".into(), name.clone()));
        let process = WorkerProcess::spawn(&env);
        process.wait_ready().await;
        let port = process.http_port().await;
        self.log(&format!("{name} started"));
        self.members.push(Member {
            name,
            process,
            port,
            last: Scrape::default(),
            end: End::Running,
            exit: None,
            active_at_signal: None,
        });
    }

    fn log(&self, what: &str) {
        eprintln!(
            "chaos: {:>6.1}s  {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    async fn scrape_running(&mut self) {
        for m in self.members.iter_mut().filter(|m| m.end == End::Running) {
            if let Some(s) = scrape(&self.http, m.port).await {
                m.last = s;
            }
        }
    }

    /// Share of the sent messages no longer in the source queue (deleted or dead-lettered).
    async fn progress(&self) -> f64 {
        let sent = self.sent.load(Ordering::Relaxed);
        let depth = queue_depth(&self.queue).await.min(sent);
        (sent - depth) as f64 / self.total as f64
    }

    /// Waits until `share` of the messages are done, scraping all the while; gives up at
    /// `deadline` (the audit then tells what is missing).
    async fn wait_progress(&mut self, share: f64, deadline: Instant) -> f64 {
        loop {
            self.scrape_running().await;
            let p = self.progress().await;
            let tenths = (p * 10.0) as u64;
            if tenths > self.reported_tenths {
                self.reported_tenths = tenths;
                self.log(&format!("{} % done", tenths * 10));
            }
            if p >= share || Instant::now() > deadline {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].end == End::Running)
            .collect()
    }

    /// Scrapes member `i` until it shows work in flight (up to 5 s), so the signal that
    /// follows hits a busy worker.
    async fn until_busy(&mut self, i: usize) {
        let m = &mut self.members[i];
        let busy_by = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = scrape(&self.http, m.port).await {
                m.last = s;
            }
            if m.last.active > 0 || Instant::now() > busy_by {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn kill(&mut self, i: usize) {
        self.until_busy(i).await;
        let m = &mut self.members[i];
        m.active_at_signal = Some(m.last.active);
        m.process.signal("KILL");
        m.exit = Some(m.process.wait_exit(Duration::from_secs(10)).await);
        m.end = End::Killed;
        let line = format!("{} SIGKILLed with {} in flight", m.name, m.last.active);
        self.log(&line);
    }

    /// SIGTERM, scraping through the drain until the process stops answering.
    async fn terminate(&mut self, i: usize, end: End) {
        if end == End::Terminated {
            self.until_busy(i).await;
        }
        let m = &mut self.members[i];
        m.active_at_signal = Some(m.last.active);
        m.process.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = scrape(&self.http, m.port).await {
                m.last = s;
            }
            if !m.process.running() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        m.exit = Some(m.process.wait_exit(Duration::from_secs(10)).await);
        m.end = end;
        let line = format!(
            "{} SIGTERMed with {} in flight: {:?}",
            m.name,
            m.active_at_signal.unwrap_or(0),
            m.exit
        );
        self.log(&line);
    }

    /// Waits until every running worker has nothing in flight and its counters stand still,
    /// so its last scrape is its final count.
    async fn quiesce(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut previous: Vec<Scrape> = Vec::new();
        loop {
            let mut now = Vec::new();
            for i in self.running() {
                let m = &mut self.members[i];
                if let Some(s) = scrape(&self.http, m.port).await {
                    m.last = s;
                }
                now.push(m.last.clone());
            }
            if (now == previous && now.iter().all(|s| s.active == 0)) || Instant::now() > deadline {
                return;
            }
            previous = now;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn socket(addr: &str) -> SocketAddr {
    addr.trim_start_matches("http://")
        .parse()
        .expect("a loopback socket address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_applies_every_valid_event_exactly_once() {
    let events: usize = env_or("CHAOS_EVENTS", DEFAULT_EVENTS);
    let seed: u64 = env_or("CHAOS_SEED", DEFAULT_SEED);
    assert!(events >= 100, "CHAOS_EVENTS must be at least 100");
    eprintln!("chaos: {events} events, CHAOS_SEED={seed}");
    let started = Instant::now();

    let sqs = match std::env::var("CHAOS_SQS").as_deref() {
        Ok("moto") => SqsServer::Moto(Moto::start().await),
        Ok("fast") | Err(_) => SqsServer::Fast(FastSqs::start().await),
        Ok(other) => panic!("CHAOS_SQS={other:?}: expected fast or moto"),
    };
    let dlq = sqs.create_queue("chaos-events-dlq", None).await;
    let queue = sqs
        .create_queue("chaos-events", Some((&dlq, MAX_RECEIVE_COUNT)))
        .await;
    // The workers ask for this visibility on every receive anyway; the queue's own default
    // matches, so nothing received any other way hides a message for long.
    queue
        .client
        .set_queue_attributes()
        .queue_url(&queue.url)
        .attributes(QueueAttributeName::VisibilityTimeout, VISIBILITY_SECS)
        .send()
        .await
        .expect("SetQueueAttributes");

    let peers = TestPeers::start().await;
    let chaos = Chaos {
        failure_rate: PEER_FAILURE_RATE,
        // A little work per call, so a worker holds messages in flight when it is killed.
        latency: PEER_LATENCY,
        mix: FaultMix {
            unavailable: 3,
            server_error: 3,
            stall_before_apply: 1,
            stall_after_apply: 1,
            fail_after_apply: 2,
        },
        stall: STALL,
    };
    peers.inventory.set_chaos(chaos);
    peers.inventory.seed_chaos(seed);
    peers.reservations.set_chaos(chaos);
    peers.reservations.seed_chaos(seed.wrapping_add(1));
    let inventory_proxy =
        ResetProxy::start(socket(&peers.inventory_addr), RESET_RATE, seed ^ 0x1).await;
    let reservation_proxy =
        ResetProxy::start(socket(&peers.reservation_base), RESET_RATE, seed ^ 0x2).await;

    let load = Arc::new(plan(events, seed));
    for v in &load.valid {
        let mut r = Reservation::demo(v.rid.clone());
        r.event_id = "evt-chaos".into();
        r.user_id = "user-chaos".into();
        peers.reservations.seed(r);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let sending = tokio::spawn(send_all(queue.clone(), load.clone(), sent.clone()));

    let mut env = sqs.aws_env();
    for (k, v) in [
        ("SQS_QUEUE_URL", queue.url.clone()),
        ("SQS_WAIT_TIME", "1".into()),
        ("SQS_VISIBILITY_TIMEOUT", VISIBILITY_SECS.into()),
        ("WORKER_CONCURRENCY", "16".into()),
        ("MAX_RETRIES", "5".into()),
        ("BACKOFF_BASE_MS", "20".into()),
        ("BACKOFF_MAX_MS", "200".into()),
        ("REDELIVERY_BACKOFF_BASE_SECS", "1".into()),
        ("REDELIVERY_BACKOFF_MAX_SECS", "2".into()),
        ("SHUTDOWN_TIMEOUT_SECS", "5".into()),
        ("INVENTORY_GRPC_ADDR", inventory_proxy.addr.to_string()),
        ("INVENTORY_TIMEOUT_MS", PEER_TIMEOUT_MS.to_string()),
        (
            "RESERVATION_API_BASE",
            format!("http://{}", reservation_proxy.addr),
        ),
        ("RESERVATION_API_TIMEOUT_MS", PEER_TIMEOUT_MS.to_string()),
        ("SERVER_PORT", "0".into()),
        ("GRPC_DEBUG_PORT", "0".into()),
        ("LOG_LEVEL", "info".into()),
    ] {
        env.push((k.to_owned(), v));
    }
    let mut fleet = Fleet {
        env,
        members: Vec::new(),
        http: reqwest::Client::new(),
        queue: queue.clone(),
        total: load.order.len() as u64,
        sent,
        started,
        reported_tenths: 0,
    };
    // Generous: the audit, not this deadline, is what fails a slow run.
    let deadline = Instant::now() + Duration::from_secs(120 + events as u64 / 10);

    // The choreography, by progress: kill, restart, two at once, kill, drain, restart.
    fleet.spawn().await;
    fleet.wait_progress(0.10, deadline).await;
    fleet.kill(0).await;
    fleet.spawn().await;
    fleet.wait_progress(0.25, deadline).await;
    fleet.spawn().await;
    fleet.log("two workers at once");
    fleet.wait_progress(0.40, deadline).await;
    fleet.kill(1).await;
    fleet.spawn().await;
    fleet.wait_progress(0.55, deadline).await;
    fleet.terminate(2, End::Terminated).await;
    fleet.spawn().await;
    let message_ids = sending.await.expect("the load was sent");
    let done = fleet.wait_progress(1.0, deadline).await;
    fleet.log(&format!("source queue drained: {:.1} %", done * 100.0));
    fleet.quiesce().await;
    for i in fleet.running() {
        fleet.terminate(i, End::Stopped).await;
    }
    // Every process has exited: collect the rest of their logs before counting them.
    for member in &mut fleet.members {
        member.process.finish_logs();
    }

    let mut audit = audit(&load, &message_ids, &peers, &queue, &dlq, &fleet).await;
    let resets = inventory_proxy.resets() + reservation_proxy.resets();
    audit.row(
        "connection resets (RST) by the proxies: inventory, reservation API",
        "> 0 each".into(),
        format!(
            "{}, {}",
            inventory_proxy.resets(),
            reservation_proxy.resets()
        ),
        inventory_proxy.resets() > 0 && reservation_proxy.resets() > 0,
    );
    println!(
        "\nchaos soak: {events} events ({} valid, {} poison), CHAOS_SEED={seed}, {} worker processes, {resets} connection resets, {:.1} s\n",
        load.valid.len(),
        load.poison.len(),
        fleet.members.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", audit.table());
    let failures = audit.failures();
    assert!(
        failures.is_empty(),
        "chaos audit failed (CHAOS_SEED={seed}): {failures:?}"
    );
}

async fn audit(
    load: &Load,
    message_ids: &[String],
    peers: &TestPeers,
    queue: &TestQueue,
    dlq: &TestQueue,
    fleet: &Fleet,
) -> Audit {
    let mut audit = Audit::default();
    let v = load.valid.len() as u64;
    let p = load.poison.len() as u64;
    let inv_calls = peers.inventory.calls();
    let res_calls = peers.reservations.calls();
    let valid_keys: HashSet<&str> = load.valid.iter().map(|e| e.key.as_str()).collect();
    let valid_rids: HashSet<&str> = load.valid.iter().map(|e| e.rid.as_str()).collect();

    // Effects, by idempotency key, as the peers applied them.
    let mut inv_applied: HashMap<&str, Vec<&InventoryCall>> = HashMap::new();
    for c in inv_calls.iter().filter(|c| c.applied) {
        inv_applied
            .entry(c.idempotency_key.as_str())
            .or_default()
            .push(c);
    }
    let patch_key = |c: &reservation_sim::HttpCall| {
        c.headers
            .get("idempotency-key")
            .cloned()
            .unwrap_or_default()
    };
    let mut res_applied: HashMap<String, Vec<&reservation_sim::HttpCall>> = HashMap::new();
    for c in res_calls.iter().filter(|c| c.applied) {
        res_applied.entry(patch_key(c)).or_default().push(c);
    }
    let right_inventory = load
        .valid
        .iter()
        .filter(|e| {
            inv_applied.get(e.key.as_str()).is_some_and(|calls| {
                calls.len() == 1
                    && calls[0].reservation_id == e.rid
                    && e.kind.is_inventory_effect(calls[0], &e.payment_intent_id)
            })
        })
        .count() as u64;
    audit.eq(
        "valid events with exactly one inventory effect, the right one",
        v,
        right_inventory,
    );
    let right_status = load
        .valid
        .iter()
        .filter(|e| {
            res_applied.get(&e.key).is_some_and(|calls| {
                calls.len() == 1
                    && calls[0].reservation_id == e.rid
                    && calls[0]
                        .body
                        .as_ref()
                        .and_then(|b| b.get("status"))
                        .and_then(Value::as_str)
                        == Some(e.kind.status())
            })
        })
        .count() as u64;
    audit.eq(
        "valid events with exactly one status change, the right one",
        v,
        right_status,
    );
    let twice = inv_applied.values().filter(|c| c.len() > 1).count()
        + res_applied.values().filter(|c| c.len() > 1).count();
    audit.eq("idempotency keys applied more than once", 0, twice as u64);

    let mut keys: HashSet<String> = inv_calls
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    keys.extend(
        res_calls
            .iter()
            .filter(|c| c.method == "PATCH")
            .map(patch_key),
    );
    audit.eq(
        "distinct idempotency keys seen by the peers",
        v,
        keys.len() as u64,
    );
    audit.eq(
        "keys at the peers that are no valid event's",
        0,
        keys.iter()
            .filter(|k| !valid_keys.contains(k.as_str()))
            .count() as u64,
    );
    let stray = inv_calls
        .iter()
        .filter(|c| !valid_rids.contains(c.reservation_id.as_str()))
        .count()
        + res_calls
            .iter()
            .filter(|c| !valid_rids.contains(c.reservation_id.as_str()))
            .count();
    audit.eq(
        "peer calls for no valid event (poison effects)",
        0,
        stray as u64,
    );
    let explained = load
        .valid
        .iter()
        .filter(|e| {
            e.kind
                .hold_explained(peers.inventory.state_of(&e.rid).as_ref())
                && peers
                    .reservations
                    .get(&e.rid)
                    .is_some_and(|r| r.status == e.kind.status())
        })
        .count() as u64;
    audit.eq(
        "reservations whose hold and status their event explains",
        v,
        explained,
    );

    audit.eq(
        "source queue: visible + in flight + delayed",
        0,
        queue_depth(queue).await,
    );

    // The DLQ, by the source message each copy came from.
    let letters = read_all(dlq).await;
    let poison_by_message: HashMap<&str, &PoisonBody> = load
        .order
        .iter()
        .zip(message_ids)
        .filter_map(|(planned, id)| match *planned {
            Planned::Poison(i) => Some((id.as_str(), &load.poison[i])),
            Planned::Valid(_) => None,
        })
        .collect();
    let mut copies: BTreeMap<String, Vec<&support::Received>> = BTreeMap::new();
    let mut foreign = 0;
    for l in &letters {
        match l.attributes.get("OriginalMessageId") {
            Some(id) if poison_by_message.contains_key(id.as_str()) => {
                copies.entry(id.clone()).or_default().push(l);
            }
            _ => {
                foreign += 1;
                if foreign <= 3 {
                    explain(l, fleet);
                }
            }
        }
    }
    audit.eq(
        "DLQ: poison messages present (distinct)",
        p,
        copies.len() as u64,
    );
    audit.eq("DLQ: messages that are not poison", 0, foreign);
    let mut wrong_reason = 0;
    let mut wrong_error = 0;
    let mut changed = 0;
    let mut unexplained_copies = 0;
    let mut extra_copies = 0;
    let mut redeliveries = 0u64;
    for (id, list) in &copies {
        let expected = poison_by_message[id.as_str()];
        for l in list {
            if l.attributes.get("ReasonClass") != Some(&expected.class) {
                wrong_reason += 1;
            }
            if !l
                .attributes
                .get("ErrorMessage")
                .is_some_and(|m| m.contains(&expected.error_part))
            {
                wrong_error += 1;
            }
            if l.body != expected.body {
                changed += 1;
            }
        }
        let deliveries: HashSet<(Option<&String>, Option<&String>)> = list
            .iter()
            .map(|l| {
                (
                    l.attributes.get("ReceiveCount"),
                    l.attributes.get("DeadLetteredBy"),
                )
            })
            .collect();
        extra_copies += list.len() - 1;
        // A second copy is only explained by a redelivery (a kill between the DLQ send and
        // the delete), which shows as a different receive count, or by SQS handing the
        // message to two workers at once, which shows as a different `DeadLetteredBy`. (A DLQ
        // send retried after a client-side timeout that SQS did take would also repeat a copy;
        // on loopback it has not happened, and the audit would show it here.)
        unexplained_copies += list.len() - deliveries.len();
        let counts: HashSet<Option<&String>> = deliveries.iter().map(|d| d.0).collect();
        // Two workers given the message at once: each counted it as dead-lettered.
        redeliveries += (deliveries.len() - counts.len()) as u64;
        redeliveries += list
            .iter()
            .filter_map(|l| l.attributes.get("ReceiveCount")?.parse::<u64>().ok())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
    }
    audit.eq(
        "DLQ: copies with a wrong ReasonClass",
        0,
        wrong_reason as u64,
    );
    audit.eq(
        "DLQ: copies without the expected ErrorMessage",
        0,
        wrong_error as u64,
    );
    audit.eq("DLQ: copies whose body changed", 0, changed as u64);
    audit.eq(
        "DLQ: extra copies not explained by a redelivery",
        0,
        unexplained_copies as u64,
    );
    audit.row(
        "DLQ: extra copies after a kill (allowed)",
        "any".into(),
        extra_copies.to_string(),
        true,
    );

    metrics_audit(
        &mut audit,
        load,
        fleet,
        &inv_calls,
        &res_calls,
        redeliveries,
    );

    // The chaos really happened.
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    for f in inv_calls
        .iter()
        .filter_map(|c| Some(format!("inventory: {}", c.fault.as_ref()?)))
        .chain(
            res_calls
                .iter()
                .filter_map(|c| Some(format!("reservation API: {}", c.fault.as_ref()?))),
        )
    {
        *faults.entry(f).or_default() += 1;
    }
    let calls = (inv_calls.len() + res_calls.len()) as u64;
    let injected: u64 = faults.values().sum();
    audit.row(
        "peer calls failed at random (all 10 kinds seen)",
        "5–15 % of calls".into(),
        format!(
            "{injected} of {calls} ({:.1} %), {} kinds",
            injected as f64 * 100.0 / calls.max(1) as f64,
            faults.len()
        ),
        faults.len() == 10 && (0.05..=0.15).contains(&(injected as f64 / calls.max(1) as f64)),
    );
    for (kind, n) in &faults {
        audit.row(
            &format!("  fault: {kind}"),
            "> 0".into(),
            n.to_string(),
            *n > 0,
        );
    }
    audit
}

/// Prints what the workers logged about a message that should not be on the DLQ.
fn explain(letter: &support::Received, fleet: &Fleet) {
    let key = letter
        .body
        .find("chaos-env-")
        .map(|at| letter.body[at..at + 15].to_owned())
        .unwrap_or_default();
    eprintln!(
        "chaos: unexpected on the DLQ (receive count {}, attributes {:?}): {key}",
        letter.receive_count, letter.attributes
    );
    for m in &fleet.members {
        for line in m.process.json_logs() {
            if line.get("envelope_id").and_then(Value::as_str) == Some(key.as_str()) {
                eprintln!("chaos:   {}: {line}", m.name);
            }
        }
    }
}

/// `worker_events_total` against the audit, by the rule in the module docs.
fn metrics_audit(
    audit: &mut Audit,
    load: &Load,
    fleet: &Fleet,
    inv_calls: &[InventoryCall],
    res_calls: &[reservation_sim::HttpCall],
    poison_redeliveries: u64,
) {
    let v = load.valid.len() as u64;
    let p = load.poison.len() as u64;
    let mut sum: BTreeMap<String, u64> = BTreeMap::new();
    let mut hidden: BTreeMap<String, u64> = BTreeMap::new();
    let mut ahead = Vec::new();
    let mut inexact = Vec::new();
    for m in &fleet.members {
        let logged = finished_by_outcome(&m.process.json_logs());
        for (outcome, n) in &m.last.events {
            *sum.entry(outcome.clone()).or_default() += n;
            let l = logged.get(outcome).copied().unwrap_or(0);
            if *n > l {
                ahead.push(format!("{} {outcome} {n}>{l}", m.name));
            }
            match m.end {
                End::Stopped | End::Running => {
                    if *n != l {
                        inexact.push(format!("{} {outcome} {n}≠{l}", m.name));
                    }
                }
                End::Killed | End::Terminated => {
                    *hidden.entry(outcome.clone()).or_default() += l.saturating_sub(*n);
                }
            }
        }
    }
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    audit.row(
        "every process: counters never ahead of its log",
        "none ahead".into(),
        if ahead.is_empty() {
            "none ahead".into()
        } else {
            ahead.join(", ")
        },
        ahead.is_empty(),
    );
    audit.row(
        "processes alive at the end: final scrape = log tally",
        "equal".into(),
        if inexact.is_empty() {
            "equal".into()
        } else {
            inexact.join(", ")
        },
        inexact.is_empty(),
    );
    // A message SQS delivered twice (at once, or again after its delete failed) is counted by
    // each task that finished it; the acker sends one copy and logs the others as already
    // dead-lettered. The bound may count such a copy twice (also by its receive count): it is an
    // upper bound, not an exact one.
    let concurrent: u64 = fleet
        .members
        .iter()
        .map(|m| {
            m.process
                .json_logs()
                .iter()
                .filter(|l| {
                    l.get("msg").and_then(Value::as_str)
                        == Some(reservation_worker::ALREADY_DEAD_LETTERED)
                })
                .count() as u64
        })
        .sum();
    audit.within(
        "worker_events_total dead_lettered (Σ last scrapes)",
        p.saturating_sub(get(&hidden, "dead_lettered")),
        p + poison_redeliveries + concurrent,
        get(&sum, "dead_lettered"),
    );
    let replays = (inv_calls.iter().filter(|c| c.replayed).count()
        + res_calls.iter().filter(|c| c.replayed).count()) as u64;
    audit.within(
        "worker_events_total success (Σ last scrapes)",
        v.saturating_sub(get(&hidden, "success")),
        v + replays,
        get(&sum, "success"),
    );
    audit.row(
        "worker_events_total other outcomes (Σ last scrapes)",
        "info".into(),
        format!(
            "duplicate {}, retry_later {}, released {}",
            get(&sum, "duplicate"),
            get(&sum, "retry_later"),
            get(&sum, "released")
        ),
        true,
    );
    audit.row(
        "hidden windows of signalled processes (from their logs)",
        "info".into(),
        format!("{hidden:?}"),
        true,
    );
    let killed_busy = fleet
        .members
        .iter()
        .filter(|m| m.end == End::Killed && m.active_at_signal.is_some_and(|a| a > 0))
        .count() as u64;
    audit.eq("SIGKILLs with work in flight", 2, killed_busy);
    let clean: Vec<String> = fleet
        .members
        .iter()
        .filter(|m| matches!(m.end, End::Terminated | End::Stopped))
        .map(|m| {
            format!(
                "{}:{}",
                m.name,
                m.exit
                    .and_then(|e| e.code())
                    .map_or("signal".into(), |c| c.to_string())
            )
        })
        .collect();
    audit.row(
        "SIGTERMed workers exited 0",
        "all 0".into(),
        clean.join(" "),
        clean.iter().all(|c| c.ends_with(":0")),
    );
}
