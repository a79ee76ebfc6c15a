//! Pieces of the chaos soak (the worker's `tests/it/chaos.rs`): a TCP proxy that resets connections, the
//! poison bodies taken from the bad-input corpus, Prometheus text parsing, queue helpers
//! and the audit table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{Received, TestQueue};

/// A loopback TCP proxy in front of a peer that, for a share of the chunks the client sends,
/// forwards the chunk, waits a moment (so the peer may well apply it) and then resets the
/// client's connection (SO_LINGER 0, so the client sees a real RST, not a FIN). Stopped on
/// drop.
pub struct ResetProxy {
    /// Where the worker should connect instead of the peer.
    pub addr: SocketAddr,
    resets: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl ResetProxy {
    /// Proxies to `upstream`, resetting after a chunk with probability `rate` (drawn from a
    /// generator seeded with `seed`).
    pub async fn start(upstream: SocketAddr, rate: f64, seed: u64) -> ResetProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let resets = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let dice = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        {
            let resets = resets.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stop.cancelled() => return,
                    };
                    let Ok((client, _)) = accepted else { continue };
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::spawn(pump(
                        client,
                        server,
                        rate,
                        dice.clone(),
                        resets.clone(),
                        stop.child_token(),
                    ));
                }
            });
        }
        ResetProxy { addr, resets, stop }
    }

    /// How many connections were reset so far.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }
}

impl Drop for ResetProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies both ways until either side closes, or until the dice say reset.
async fn pump(
    client: TcpStream,
    server: TcpStream,
    rate: f64,
    dice: Arc<Mutex<StdRng>>,
    resets: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if server_write.write_all(&buf[..n]).await.is_err() {
                return false;
            }
            let (reset, pause_ms) = {
                let mut rng = dice.lock().expect("proxy dice");
                (rng.random_bool(rate), rng.random_range(0..30u64))
            };
            if reset {
                // The peer has the request; give it a moment to act on it, then cut the
                // client off mid-answer.
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                return true;
            }
        }
    };
    let reset = tokio::select! {
        () = downstream => false,
        r = upstream => r,
        () = stop.cancelled() => false,
    };
    if reset {
        // Whole again, so no half sends a FIN first; with SO_LINGER 0 the close sends RST.
        if let Ok(client) = client_read.reunite(client_write) {
            let _ = client.set_zero_linger();
            resets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A body from the workspace's `tests/corpus/` that the worker must dead-letter with `class`.
#[derive(Debug, Clone)]
pub struct PoisonBody {
    pub file: String,
    pub body: String,
    pub class: String,
    /// A part of the DLQ's `ErrorMessage`.
    pub error_part: String,
}

/// The corpus bodies that can be sent as they are: plain `*.json` files without flags (no
/// generated giants, no bodies SQS refuses, no binary attributes), sorted by file name.
pub fn poison_bodies() -> Vec<PoisonBody> {
    // The corpus belongs to the worker's tests: the workspace root's `tests/corpus/`.
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/corpus"));
    let tsv = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut out = Vec::new();
    for line in tsv.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != 3 || !cols[0].ends_with(".json") {
            continue;
        }
        let body = std::fs::read_to_string(dir.join(cols[0])).expect("corpus body");
        // SQS refuses an empty body at SendMessage (moto alone accepts it).
        if body.is_empty() {
            continue;
        }
        out.push(PoisonBody {
            file: cols[0].to_owned(),
            body,
            class: cols[1].to_owned(),
            error_part: cols[2].to_owned(),
        });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// One scrape of a worker's `/metrics`: `worker_events_total` by outcome (summed over
/// types), and a few other series by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub events: BTreeMap<String, u64>,
    pub active: u64,
    pub received: u64,
}

impl Scrape {
    /// Parses the Prometheus text exposition.
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let value = value as u64;
            if let Some(labels) = series.strip_prefix("worker_events_total{") {
                if let Some(outcome) = label(labels, "outcome") {
                    *s.events.entry(outcome).or_default() += value;
                }
            } else if series == "worker_active_count" {
                s.active = value;
            } else if series == "sqs_messages_received_total" {
                s.received = value;
            }
        }
        s
    }

    /// Deliveries finished with `outcome`.
    pub fn outcome(&self, outcome: &str) -> u64 {
        self.events.get(outcome).copied().unwrap_or(0)
    }
}

fn label(labels: &str, name: &str) -> Option<String> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(labels[start..end].to_owned())
}

/// GETs `/metrics` of the worker whose HTTP port is `port`; `None` when it does not answer.
pub async fn scrape(http: &reqwest::Client, port: u16) -> Option<Scrape> {
    let resp = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(Scrape::parse(&resp.text().await.ok()?))
}

/// `message finished` log lines by outcome: the worker writes one per finished delivery,
/// right after counting it in `worker_events_total`.
pub fn finished_by_outcome(logs: &[serde_json::Value]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in logs {
        if line.get("msg").and_then(|m| m.as_str()) == Some("message finished")
            && let Some(outcome) = line.get("outcome").and_then(|o| o.as_str())
        {
            *out.entry(outcome.to_owned()).or_default() += 1;
        }
    }
    out
}

/// Visible + in flight + delayed, from GetQueueAttributes.
pub async fn queue_depth(queue: &TestQueue) -> u64 {
    let Ok(out) = queue
        .client
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
    else {
        return u64::MAX;
    };
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .map(|k| {
        out.attributes()
            .and_then(|a| a.get(k))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    })
    .sum()
}

/// Reads every message on `queue`, leaving each in flight for 5 minutes so none is read
/// twice; stops after three empty receives in a row.
pub async fn read_all(queue: &TestQueue) -> Vec<Received> {
    let mut all = Vec::new();
    let mut empty = 0;
    while empty < 3 {
        let out = queue
            .client
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .visibility_timeout(300)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage from the DLQ");
        if out.messages().is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        all.extend(out.messages().iter().map(Received::from));
    }
    all
}

/// The audit: one row per check, printed as a table.
#[derive(Debug, Default)]
pub struct Audit {
    rows: Vec<(String, String, String, bool)>,
}

impl Audit {
    /// A check whose actual value must equal the expected one.
    pub fn eq<T: PartialEq + std::fmt::Display>(&mut self, check: &str, expected: T, actual: T) {
        let ok = expected == actual;
        self.row(check, expected.to_string(), actual.to_string(), ok);
    }

    /// A check whose actual value must lie in `lo..=hi`.
    pub fn within(&mut self, check: &str, lo: u64, hi: u64, actual: u64) {
        let expected = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}..={hi}")
        };
        self.row(
            check,
            expected,
            actual.to_string(),
            (lo..=hi).contains(&actual),
        );
    }

    /// A check with its own verdict.
    pub fn row(&mut self, check: &str, expected: String, actual: String, ok: bool) {
        self.rows.push((check.to_owned(), expected, actual, ok));
    }

    /// The failed checks' names.
    pub fn failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| !r.3)
            .map(|r| r.0.clone())
            .collect()
    }

    /// The table: check | expected | actual | ok.
    pub fn table(&self) -> String {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(8)
            .max(8);
        let w2 = self
            .rows
            .iter()
            .map(|r| r.2.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w - s.chars().count()));
        let mut out = format!(
            "| {} | {} | {} | ok |\n|{}|{}|{}|----|\n",
            pad("check", w0),
            pad("expected", w1),
            pad("actual", w2),
            "-".repeat(w0 + 2),
            "-".repeat(w1 + 2),
            "-".repeat(w2 + 2),
        );
        for (check, expected, actual, ok) in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                pad(check, w0),
                pad(expected, w1),
                pad(actual, w2),
                if *ok { "ok" } else { "FAIL" }
            ));
        }
        out
    }
}

/// A loopback TCP proxy in front of a peer that can be taken down: while down, it closes the
/// connections it holds and every new one as soon as it is accepted, as a peer that has gone
/// away behind a load balancer looks to a client. Stopped on drop.
pub struct Outage {
    /// Where the worker should connect instead of the peer.
    pub addr: SocketAddr,
    down: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
}

impl Outage {
    /// Proxies to `upstream`, up.
    pub async fn start(upstream: SocketAddr) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (down, _) = tokio::sync::watch::channel(false);
        let stop = CancellationToken::new();
        let accepting = (down.clone(), stop.clone());
        tokio::spawn(async move {
            let (down, stop) = accepting;
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.cancelled() => return,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                if *down.borrow() {
                    continue;
                }
                let mut gone = down.subscribe();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = gone.wait_for(|d| *d) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        Outage { addr, down, stop }
    }

    /// The peer goes down: every connection through the proxy is closed from now on.
    pub fn begin(&self) {
        self.down.send_replace(true);
    }

    /// The peer is back.
    pub fn end(&self) {
        self.down.send_replace(false);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
