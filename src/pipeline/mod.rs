//! The pipeline: receive loops feed a bounded pool of tasks, each taking one delivery from
//! parse to disposition (retry, keyed serialization, duplicate memory) while the renewals keep
//! it hidden; the acker carries the dispositions out in batches.

pub(crate) mod acker;
pub(crate) mod disposition;
mod groups;
#[cfg(test)]
mod in_process;
mod keyed;
pub(crate) mod poller;
mod pool;
mod recent;
mod renewal;
mod run;
mod span;

pub(crate) use disposition::Disposition;
pub(crate) use keyed::KeyedLocks;
pub use pool::{Pool, PoolSettings};
pub use recent::RecentlyCompleted;
pub(crate) use run::{PipelineSettings, Queues, run};
