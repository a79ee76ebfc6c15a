//! The shared test servers, from `reservation-testkit` (crates/testkit): the fast SQS endpoint
//! and moto, the two peers, the worker binary as a child process, the OTLP receiver, the chaos
//! pieces. testkit cannot name the worker binary (`CARGO_BIN_EXE_*` exists only here), so this
//! module does, and fills it into testkit's harness types under the names the tests use.

pub(crate) use reservation_testkit::{
    Moto, PATIENCE, Received, SqsServer, TestPeers, TestQueue, bodies, chaos, eventually, moto,
    otlp,
};

/// The worker binary cargo built for these tests.
pub(crate) enum Worker {}

impl reservation_testkit::WorkerBinary for Worker {
    const PATH: &'static str = worker::BIN;
}

pub(crate) type Harness = reservation_testkit::Harness<Worker>;
pub(crate) type WorkerProcess = reservation_testkit::WorkerProcess<Worker>;

pub(crate) mod fast_sqs {
    pub(crate) use reservation_testkit::fast_sqs::FastSqs;
}

pub(crate) mod worker {
    use std::path::Path;

    pub(crate) use reservation_testkit::worker::{Ran, top_level_keys};

    pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_reservation-worker");

    /// Runs the worker binary with exactly `env` (plus PATH) and `args`.
    pub(crate) async fn run(env: &[(String, String)], args: &[&str]) -> Ran {
        reservation_testkit::worker::run(Path::new(BIN), env, args).await
    }
}
