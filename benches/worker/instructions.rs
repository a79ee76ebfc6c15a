//! Instructions per event, worker and contract floor, counted by callgrind.
//!
//! CPU time per event moves ±10 % from one run to the next on a shared 2-core machine, more than
//! most single changes to the worker are worth. callgrind counts the instructions a process
//! executes in user space instead, whatever else the machine is doing: the same drain of the
//! same build gives the same count within a percent or two (what varies is how the messages
//! happen to batch). It does not see the kernel's work nor how fast the instructions run, so it
//! complements the CPU figures rather than replacing them.
//!
//! Each process starts under `valgrind --tool=callgrind`; its counters are zeroed once it is
//! ready and idle, the events are sent, and the counters are dumped when the queue is empty.
//! Only the drain is counted, not start-up or shutdown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::{Audit, Endpoint, Peers, RestHttp, Worker, floor, run_name, watch_drain, worker_bin};

/// Events per count: enough that the per-batch costs average out, few enough that a drain
/// under callgrind (about 50× slower) takes seconds.
pub(crate) const N: usize = 2_000;

/// The fast drain's lower concurrency, where the worker and the floor batch alike.
pub(crate) const CONCURRENCY: usize = 20;

/// The two counts of one run.
pub(crate) struct Instructions {
    pub worker: u64,
    pub floor: u64,
    pub worker_audit: Audit,
    pub floor_audit: Audit,
}

impl Instructions {
    pub(crate) fn per_event(count: u64) -> f64 {
        count as f64 / N as f64
    }

    pub(crate) fn ratio(&self) -> f64 {
        self.worker as f64 / self.floor.max(1) as f64
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "worker {:.1}k, floor {:.1}k per event: {:.2}×",
            Self::per_event(self.worker) / 1e3,
            Self::per_event(self.floor) / 1e3,
            self.ratio()
        )
    }
}

/// Whether valgrind and callgrind_control can be run here.
pub(crate) fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Counts the worker's and the floor's instructions for the same drain, one after the other.
pub(crate) async fn measure(endpoint: &Endpoint) -> anyhow::Result<Instructions> {
    let dir = std::env::temp_dir().join(format!("rw-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let result = async {
        let (worker, worker_audit) = count(endpoint, &dir, Subject::Worker).await?;
        let (floor, floor_audit) = count(endpoint, &dir, Subject::Floor).await?;
        Ok(Instructions {
            worker,
            floor,
            worker_audit,
            floor_audit,
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[derive(Clone, Copy)]
enum Subject {
    Worker,
    Floor,
}

/// `valgrind --tool=callgrind` writing to `out`, ready for the program and its arguments.
fn callgrind(out: &Path) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg("-q")
        .arg("--dump-instr=no")
        .arg(format!("--callgrind-out-file={}", out.display()));
    cmd
}

/// Runs `callgrind_control` with `flag` (`-z` zeroes, `-d` dumps) on `pid`.
fn control(flag: &str, pid: u32) -> anyhow::Result<()> {
    let out = Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .output()
        .context("run callgrind_control")?;
    ensure!(
        out.status.success(),
        "callgrind_control {flag} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One subject's count of one drain of [`N`] events, and the drain's exactly-once audit.
async fn count(endpoint: &Endpoint, dir: &Path, subject: Subject) -> anyhow::Result<(u64, Audit)> {
    let run = run_name("i");
    let (queue, dlq) = endpoint.queues(&run).await?;
    let peers = Peers::start(Duration::ZERO).await?;
    let out = dir.join(&run);
    let http = reqwest::Client::new();
    // Kept until the dump is read: dropping either kills its process.
    let (pid, _worker, _floor) = match subject {
        Subject::Worker => {
            let mut cmd = callgrind(&out);
            cmd.arg(worker_bin());
            let mut worker = Worker::spawn(
                cmd,
                endpoint,
                &queue,
                &peers,
                CONCURRENCY,
                RestHttp::Http1,
                &[],
            )?;
            worker.wait_ready(&http, Duration::from_millis(50)).await?;
            (worker.pid(), Some(worker), None)
        }
        Subject::Floor => {
            let mut cmd = callgrind(&out);
            cmd.arg(std::env::current_exe().context("the bench binary")?);
            let process =
                floor::spawn(cmd, endpoint, &queue, &peers, CONCURRENCY, RestHttp::Http1).await?;
            (process.pid(), None, Some(process))
        }
    };
    // Let start-up settle into the first long poll, then count from zero.
    tokio::time::sleep(Duration::from_secs(1)).await;
    control("-z", pid)?;
    let start = Instant::now();
    endpoint.preload_unchecked(&queue, &run, N).await?;
    watch_drain(endpoint, &queue, N, start, |_| {}).await?;
    control("-d", pid)?;
    let count = read_summary(&dump_file(&out)).await?;
    let audit = Audit::check(endpoint, &peers, &run, N, &queue, &dlq).await?;
    Ok((count, audit))
}

/// The first dump callgrind writes for `callgrind_control -d` is `<out>.1`.
fn dump_file(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The `totals:` line of a callgrind dump (instructions executed), written last: once it is
/// there, the file is complete.
async fn read_summary(path: &Path) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(total) = text.lines().find_map(|l| l.strip_prefix("totals: "))
        {
            return total
                .trim()
                .parse()
                .with_context(|| format!("{}: totals {total:?}", path.display()));
        }
        if Instant::now() >= deadline {
            bail!("no complete callgrind dump at {}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
