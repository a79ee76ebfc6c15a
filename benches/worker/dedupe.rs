//! What one remembered id costs in the duplicate memory (`DEDUPE_CAPACITY`): a child process
//! of its own (this bench binary, re-run with [`ARG`]) fills a `RecentlyCompleted` with
//! `DEDUPE_ENTRIES` ids of one length and reports its resident memory before and after. The
//! worker keeps two such memories (completed envelope ids, dead-lettered message ids), each
//! up to `DEDUPE_CAPACITY`; the bound on the setting (docs/performance.md) rests on these figures.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use reservation_worker::RecentlyCompleted;

/// The argument that makes the bench binary the measuring child.
pub(crate) const ARG: &str = "dedupe-memory";

/// Ids remembered per measurement: the largest `DEDUPE_CAPACITY` accepted.
pub(crate) const ENTRIES: usize = reservation_worker::config::MAX_DEDUPE_CAPACITY;

/// The id lengths measured: a UUID (SQS message ids, most envelope ids) and the longest id
/// the parser accepts.
pub(crate) const ID_LENGTHS: [usize; 2] = [36, reservation_worker::event::MAX_ID_LEN];

/// One measurement.
#[derive(Debug, Clone)]
pub(crate) struct Cost {
    pub id_bytes: usize,
    pub entries: usize,
    pub rss_growth_kib: u64,
}

impl Cost {
    pub(crate) fn bytes_per_entry(&self) -> f64 {
        self.rss_growth_kib as f64 * 1024.0 / self.entries as f64
    }

    /// One line for the report.
    pub(crate) fn line(&self) -> String {
        format!(
            "dedupe memory: {} ids of {} bytes: +{:.1} MiB RSS, {:.0} bytes an id",
            self.entries,
            self.id_bytes,
            self.rss_growth_kib as f64 / 1024.0,
            self.bytes_per_entry()
        )
    }
}

/// Measures every id length, each in a fresh child process.
pub(crate) fn measure() -> anyhow::Result<Vec<Cost>> {
    ID_LENGTHS
        .iter()
        .map(|&id_bytes| {
            let out = Command::new(std::env::current_exe().context("the bench binary")?)
                .arg(ARG)
                .env("DEDUPE_ID_BYTES", id_bytes.to_string())
                .env("DEDUPE_ENTRIES", ENTRIES.to_string())
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .context("run the dedupe child")?;
            ensure!(
                out.status.success(),
                "the dedupe child failed: {}",
                out.status
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let mut kib = text.split_whitespace().map(str::parse::<u64>);
            let (Some(Ok(before)), Some(Ok(after))) = (kib.next(), kib.next()) else {
                anyhow::bail!("the dedupe child printed {text:?}");
            };
            Ok(Cost {
                id_bytes,
                entries: ENTRIES,
                rss_growth_kib: after.saturating_sub(before),
            })
        })
        .collect()
}

/// The child's side: prints its RSS in KiB before and after filling the memory.
pub(crate) fn child_main() -> anyhow::Result<()> {
    let var = |k: &str| -> anyhow::Result<usize> {
        Ok(std::env::var(k)
            .with_context(|| format!("{k} is not set"))?
            .parse()?)
    };
    let (id_bytes, entries) = (var("DEDUPE_ID_BYTES")?, var("DEDUPE_ENTRIES")?);
    // Ids made up front, so only what the memory holds shows in the difference.
    let ids: Vec<String> = (0..entries).map(|i| format!("{i:0>id_bytes$}")).collect();
    let before = rss_kib()?;
    let memory = RecentlyCompleted::new(entries, Duration::from_secs(3600));
    for id in &ids {
        memory.insert(id);
    }
    let after = rss_kib()?;
    ensure!(
        memory.len() == entries,
        "the memory holds {} ids",
        memory.len()
    );
    println!("{before} {after}");
    Ok(())
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("/proc/self/status has no VmRSS")
}
