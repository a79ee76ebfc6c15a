//! The pipeline: receive loops feed a bounded pool of tasks, each taking one delivery from
//! parse to disposition (retry, keyed serialization, duplicate memory, a visibility
//! heartbeat); the acker carries the dispositions out in batches.

pub mod acker;
pub mod disposition;
mod groups;
#[cfg(test)]
mod in_process;
mod keyed;
pub mod poller;
mod pool;
mod recent;
mod run;
mod span;

pub use disposition::{Deleted, Disposition, Outcome};
pub use keyed::KeyedLocks;
pub use pool::{Pool, PoolSettings};
pub use recent::RecentlyCompleted;
pub use run::{PipelineSettings, Queues, SETTLE_MARGIN, run};
