//! The shared test servers, from `reservation-testkit` (crates/testkit): the fast SQS endpoint
//! and moto, the two peers, the worker binary as a child process, the OTLP receiver, the chaos
//! pieces. testkit cannot name the worker binary (`CARGO_BIN_EXE_*` exists only here), so this
//! module does, and fills it into testkit's harness types under the names the tests use.

pub(crate) use reservation_testkit::{
    Moto, PATIENCE, Received, SqsServer, TestPeers, TestQueue, bodies, chaos, eventually,
    eventually_async, moto, otlp,
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

/// The whole worker (`reservation_worker::serve`: servers, pipeline, drain) in this test's
/// process, on loopback ports and the harness's SQS server: for scenarios whose point is the
/// worker's behaviour, not its process (signals, exit codes, stdout). Its JSON log lines are
/// collected from this thread: tests using it run on tokio's default current-thread runtime,
/// where the worker's tasks run too. Stopped on drop.
pub(crate) struct InProcess {
    pub logs: reservation_testkit::LogLines,
    _logging: tracing::subscriber::DefaultGuard,
    stop: tokio_util::sync::DropGuard,
    task: tokio::task::JoinHandle<Result<(), reservation_worker::RunError>>,
}

impl InProcess {
    /// Starts the worker with the harness's environment plus `extra` (later entries win) and
    /// waits for `/ready`.
    pub(crate) async fn start(h: &Harness, extra: &[(&str, &str)]) -> InProcess {
        let mut env = h.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let logs = reservation_testkit::LogLines::default();
        let sink = logs.clone();
        let logging =
            reservation_worker::log_to_writer("info,reservation_worker=debug", move || {
                EventLines {
                    logs: sink.clone(),
                    buf: Vec::new(),
                }
            });
        let config = reservation_worker::config::Config::load_from_vars(env)
            .await
            .expect("the test's configuration is valid");
        let queue =
            reservation_worker::SqsQueue::new(&h.sqs.sdk_config().await, config.queue_url.clone());
        let listeners = reservation_worker::Listeners {
            http: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            grpc: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        };
        let ready = format!(
            "http://{}/ready",
            listeners.http.local_addr().expect("addr")
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(reservation_worker::serve(
            config,
            listeners,
            queue,
            stop.clone(),
        ));
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = client.get(&ready).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                !task.is_finished() && tokio::time::Instant::now() < deadline,
                "the in-process worker did not become ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        InProcess {
            logs,
            _logging: logging,
            stop: stop.drop_guard(),
            task,
        }
    }

    /// Shuts down as SIGTERM does and waits for the drain to end.
    pub(crate) async fn stop(self) {
        self.stop.disarm().cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the worker stops")
            .expect("the worker does not panic")
            .expect("the worker ran");
    }

    /// Log lines whose `msg` equals `msg`.
    pub(crate) fn logs_with_message(&self, msg: &str) -> Vec<serde_json::Value> {
        self.logs.with_message(msg)
    }

    /// Log lines whose `msg` equals `msg`, once there is at least one.
    pub(crate) async fn wait_logs(&self, msg: &str) -> Vec<serde_json::Value> {
        self.logs.wait_for(msg).await
    }
}

/// What the log layer writes for one event, added to the worker's lines when dropped.
struct EventLines {
    logs: reservation_testkit::LogLines,
    buf: Vec<u8>,
}

impl std::io::Write for EventLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventLines {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.buf).lines() {
            self.logs.push(line.to_string());
        }
    }
}
