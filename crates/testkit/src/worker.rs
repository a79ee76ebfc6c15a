//! The real worker binary as a child process: started with an environment, its JSON log lines
//! collected, stopped with real signals.

use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Names the worker binary to start. testkit cannot name it itself: cargo defines
/// `CARGO_BIN_EXE_reservation-worker` only while it compiles the worker package's own
/// integration tests and benches. So the test crate names it once, with a type, and uses the
/// harness types with that type filled in:
///
/// ```ignore
/// pub(crate) enum Worker {}
/// impl reservation_testkit::WorkerBinary for Worker {
///     const PATH: &'static str = env!("CARGO_BIN_EXE_reservation-worker");
/// }
/// pub(crate) type Harness = reservation_testkit::Harness<Worker>;
/// pub(crate) type WorkerProcess = reservation_testkit::WorkerProcess<Worker>;
/// ```
///
/// [`WorkerProcess::spawn_at`] and [`run`] take a path instead, for a binary named at run time.
pub trait WorkerBinary {
    /// The binary's path.
    const PATH: &'static str;
}

/// A worker's log lines as they arrive (a child's stdout, or the writer of a worker running
/// in the test's own process), and the ways tests read them.
#[derive(Debug, Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    /// Adds one line as written.
    pub fn push(&self, line: String) {
        self.0.lock().expect("logs").push(line);
    }

    /// Every line so far, as written.
    pub fn raw(&self) -> Vec<String> {
        self.0.lock().expect("logs").clone()
    }

    /// JSON lines parsed; non-JSON lines are skipped.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .expect("logs")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Lines whose `msg` equals `msg`.
    pub fn with_message(&self, msg: &str) -> Vec<serde_json::Value> {
        self.json()
            .into_iter()
            .filter(|v| v.get("msg").and_then(|m| m.as_str()) == Some(msg))
            .collect()
    }

    /// Lines whose `msg` equals `msg`, once there is at least one.
    pub async fn wait_for(&self, msg: &str) -> Vec<serde_json::Value> {
        crate::eventually(&format!("a log line {msg:?}"), || {
            !self.with_message(msg).is_empty()
        })
        .await;
        self.with_message(msg)
    }
}

/// A running `reservation-worker`; `W` names the binary [`WorkerProcess::spawn`] starts.
pub struct WorkerProcess<W> {
    child: Child,
    pub logs: LogLines,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// The threads copying stdout and stderr; they end at the pipes' EOF, after the process.
    readers: Vec<std::thread::JoinHandle<()>>,
    binary: PhantomData<fn() -> W>,
}

impl<W: WorkerBinary> WorkerProcess<W> {
    /// Starts the worker `W` names with exactly `env` (plus PATH): nothing leaks in from the
    /// test's own environment, so a developer's AWS settings can never point a test at real AWS.
    pub fn spawn(env: &[(String, String)]) -> WorkerProcess<W> {
        Self::spawn_at(Path::new(W::PATH), env)
    }
}

impl<W> WorkerProcess<W> {
    /// Starts the worker binary at `bin` with exactly `env` (plus PATH), as [`Self::spawn`].
    pub fn spawn_at(bin: &Path, env: &[(String, String)]) -> WorkerProcess<W> {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn reservation-worker");
        let logs = LogLines::default();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let logs = logs.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var_os("WORKER_LOGS").is_some() {
                        eprintln!("worker: {line}");
                    }
                    logs.push(line);
                }
            }));
        }
        if let Some(err) = child.stderr.take() {
            let stderr = stderr.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    stderr.lock().expect("stderr").push(line);
                }
            }));
        }
        WorkerProcess {
            child,
            logs,
            stderr,
            readers,
            binary: PhantomData,
        }
    }

    /// Waits until every line the process wrote has been collected. Call it after the process
    /// exited (its pipes then reach EOF), before counting log lines.
    pub fn finish_logs(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// JSON log lines parsed; non-JSON lines are skipped.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.logs.json()
    }

    /// Log lines whose `msg` equals `msg`.
    pub fn logs_with_message(&self, msg: &str) -> Vec<serde_json::Value> {
        self.logs.with_message(msg)
    }

    /// Log lines whose `msg` equals `msg`, once there is at least one: lines are read from the
    /// pipe by another thread, so one written just before `/ready` answered may not be here yet.
    pub async fn wait_logs(&self, msg: &str) -> Vec<serde_json::Value> {
        self.logs.wait_for(msg).await
    }

    /// Every stdout line so far, as written.
    pub fn raw_logs(&self) -> Vec<String> {
        self.logs.raw()
    }

    /// Every stderr line so far.
    pub fn raw_stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr").clone()
    }

    /// The port the worker's HTTP server bound (it logs it at start).
    pub async fn http_port(&self) -> u16 {
        self.logged_port("http server listening").await
    }

    /// The port of the gRPC debug server.
    pub async fn grpc_port(&self) -> u16 {
        self.logged_port("grpc debug server listening").await
    }

    async fn logged_port(&self, message: &str) -> u16 {
        let deadline = tokio::time::Instant::now() + crate::PATIENCE;
        loop {
            if let Some(p) = self
                .logs_with_message(message)
                .first()
                .and_then(|v| v.get("port")?.as_u64())
            {
                return p as u16;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "worker never logged its HTTP port; stderr: {:?}",
                    self.stderr.lock().expect("stderr")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET a path on the worker's HTTP port; returns (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let port = self.http_port().await;
        let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.unwrap_or_default()))
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + crate::PATIENCE;
        loop {
            if let Some((200, _)) = self.get("/ready").await {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "worker not ready; logs: {:?}; stderr: {:?}",
                    self.logs.raw(),
                    self.stderr.lock().expect("stderr")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal by name (TERM, INT, KILL).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, up to `limit`, then for every line it wrote; panics if it
    /// does not exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.finish_logs();
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("worker did not exit within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl<W> Drop for WorkerProcess<W> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The top-level keys of a JSON object line in order, repeats included (a map type would
/// silently keep one of two equal keys). `None` when the line is not a JSON object.
pub fn top_level_keys(line: &str) -> Option<Vec<String>> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    serde::Deserializer::deserialize_map(&mut de, Keys).ok()
}

/// What a command printed and how it ended.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the worker binary at `bin` with exactly `env` (plus PATH) and `args`.
pub async fn run(bin: &Path, env: &[(String, String)], args: &[&str]) -> Ran {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("command finished in time")
    .expect("command ran");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
