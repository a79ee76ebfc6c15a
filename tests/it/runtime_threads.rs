//! The worker's async runtime is sized by `WORKER_THREADS`, by default from the concurrency:
//! threads beyond the work only cost CPU.

use crate::support;

use support::{Harness, WorkerProcess};

/// The runtime's thread count, as the worker reports it at start-up.
async fn runtime_threads(w: &WorkerProcess) -> u64 {
    let started = w.wait_logs("worker started").await;
    started
        .first()
        .and_then(|l| l["runtime_threads"].as_u64())
        .unwrap_or_else(|| panic!("no runtime_threads in {started:?}"))
}

#[tokio::test]
async fn the_runtime_has_the_threads_the_setting_says() {
    let h = Harness::start().await;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    for (extra, expected, why) in [
        (vec![], 1, "WORKER_CONCURRENCY=20 needs one thread"),
        (
            vec![("WORKER_CONCURRENCY", "300")],
            3.min(cpus),
            "ceil(300 / 100), at most the CPUs",
        ),
        (
            vec![("WORKER_THREADS", "3")],
            3,
            "an explicit WORKER_THREADS",
        ),
    ] {
        let w = h.worker(&extra).await;
        assert_eq!(runtime_threads(&w).await, expected, "{why}");
    }
}
