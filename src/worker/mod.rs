//! The worker: a bounded pool of tasks, each taking one delivery from parse to disposition,
//! with retry, keyed serialization, duplicate memory and a visibility heartbeat.

pub mod disposition;
mod keyed;
mod pool;
mod recent;
pub mod retry;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use disposition::{Disposition, Outcome};
pub use keyed::KeyedLocks;
pub use pool::{Pool, PoolSettings};
pub use recent::RecentlyCompleted;

/// What the health endpoints and the debug service report. Written by the poller and the pool,
/// read by the servers; plain atomics, no locks on the hot path.
#[derive(Debug)]
pub struct WorkerStatus {
    started: Instant,
    queue_reached: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds since the epoch of the last receive call that returned (0 = never).
    last_poll_ms: AtomicU64,
    /// Milliseconds since the epoch when the poller last started a receive.
    poll_started_ms: AtomicU64,
    ready: tokio::sync::watch::Sender<bool>,
}

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            started: Instant::now(),
            queue_reached: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_poll_ms: AtomicU64::new(0),
            poll_started_ms: AtomicU64::new(0),
            ready: tokio::sync::watch::Sender::new(false),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl WorkerStatus {
    /// The queue answered: the worker can be ready.
    pub fn queue_reached(&self) {
        self.queue_reached.store(true, Ordering::SeqCst);
        self.update_ready();
    }

    /// Shutdown began: not ready from this moment on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.update_ready();
    }

    fn update_ready(&self) {
        let ready = self.is_ready();
        self.ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    pub fn is_ready(&self) -> bool {
        self.queue_reached.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    /// Why the worker is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::SeqCst) {
            Some("draining: shutting down")
        } else if !self.queue_reached.load(Ordering::SeqCst) {
            Some("the queue has not been reached yet")
        } else {
            None
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Follows readiness changes (the gRPC health service mirrors them).
    pub fn watch_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub(crate) fn polling(&self) {
        self.poll_started_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn polled(&self) {
        self.last_poll_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The last time a receive call returned, in ms since the epoch (0 if never).
    pub fn last_poll_ms(&self) -> u64 {
        self.last_poll_ms.load(Ordering::Relaxed)
    }

    /// Messages being worked on right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
