//! `make dev` (scripts/dev.sh) stops everything it started, however it ends: the terminal
//! closed, Ctrl-C (once, twice, or with the output piped into a reader that dies with it),
//! SIGTERM, SIGKILL of the script or of its whole process group, a failure during start-up,
//! and the normal end with DEV_NO_WAIT=1.
//!
//! Each scenario runs the real script on its own free ports, in its own process group and
//! directory (DEV_DIR), with the already-built binaries (DEV_BIN, DEV_SIM_BIN: `cargo build`
//! inside `cargo test` would wait for the build lock). `reservation-sim` is built beside the
//! worker by `cargo test` at the root (crates/sim's own integration test needs it). All scenarios run at once. Every process the
//! scenario starts inherits a unique environment variable; afterwards no live process may
//! carry it and every port must bind again.
//!
//! Its own test binary, not a module of `tests/it`: it runs eight whole stacks (moto, the
//! simulators, a worker each) at once and needs the machine to itself. Run beside the other
//! integration tests, one Ctrl-C scenario once went unanswered for a minute.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_reservation-worker");

/// `reservation-sim`, from the same build as the worker.
fn sim_bin() -> PathBuf {
    let sim = Path::new(BIN).with_file_name("reservation-sim");
    assert!(
        sim.is_file(),
        "{} is missing: run `cargo test` at the workspace root (or `make test`), which builds it",
        sim.display()
    );
    sim
}
/// Marks every process a scenario starts (children inherit the environment).
const TAG_VAR: &str = "DEV_SCRIPT_TEST_RUN";
/// The last line the script prints once moto, the simulators and the worker all run.
const RUNNING: &str = "Ctrl-C stops everything.";
/// Start-up shares 2 cores with the other scenarios; moto is slow to import.
const START_TIMEOUT: Duration = Duration::from_secs(150);
/// The worker may drain for SHUTDOWN_TIMEOUT_SECS; the rest stops at once.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    /// `make dev` typed into an interactive shell in a terminal that is then closed: the pty
    /// master goes away, the shell gets SIGHUP and passes it to its jobs, and writes to the
    /// terminal fail from then on.
    Hangup,
    /// `make dev 2>&1 | tee dev.log`, then Ctrl-C: SIGINT to the group kills tee as well, so
    /// every later write to stdout or stderr meets a pipe without a reader.
    InterruptDeadReader,
    /// Ctrl-C, then Ctrl-C again while the first one's cleanup runs.
    InterruptTwice,
    /// SIGTERM to `make dev`'s process group (make forwards it too: bash gets two).
    Terminate,
    /// SIGKILL to the script's process group: the script and its `tail -F` die at once, and
    /// only a watchdog outside that group can stop the rest.
    KillGroup,
    /// SIGKILL to the script alone: its `tail -F` is left behind as well.
    KillScript,
    /// DEV_NO_WAIT=1: the script ends by itself after the table.
    NoWait,
    /// The simulators cannot start (DEV_SIM_BIN is `false`) after moto is already up.
    StartupFailure,
}

const ENDINGS: [Ending; 8] = [
    Ending::Hangup,
    Ending::InterruptDeadReader,
    Ending::InterruptTwice,
    Ending::Terminate,
    Ending::KillGroup,
    Ending::KillScript,
    Ending::NoWait,
    Ending::StartupFailure,
];

#[test]
fn every_way_of_ending_stops_everything_it_started() {
    // Installed once up front: several scripts installing moto at once would race.
    let install = Command::new("bash")
        .arg("scripts/install-moto.sh")
        .current_dir(ROOT)
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/install-moto.sh");
    assert!(install.success(), "scripts/install-moto.sh failed");

    let ports = free_ports(ENDINGS.len() * 5);
    let started = Instant::now();
    let results: Vec<(Ending, Duration, Result<(), String>)> = thread::scope(|s| {
        let handles: Vec<_> = ENDINGS
            .iter()
            .zip(ports.chunks(5))
            .map(|(&ending, ports)| {
                s.spawn(move || {
                    let t = Instant::now();
                    let result = Scenario::new(ending, ports).run();
                    (ending, t.elapsed(), result)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scenario thread"))
            .collect()
    });

    let mut report = String::new();
    for (ending, took, result) in &results {
        let verdict = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("FAILED: {e}"),
        };
        let _ = writeln!(
            report,
            "{ending:?} ({:.1} s): {verdict}",
            took.as_secs_f64()
        );
    }
    eprintln!(
        "{report}all scenarios: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(results.iter().all(|(_, _, r)| r.is_ok()), "\n{report}");
}

/// Distinct free loopback ports, all held at once so no two are the same.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

struct Scenario {
    ending: Ending,
    tag: String,
    /// moto, worker HTTP, worker gRPC, inventory simulator, reservation simulator.
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl Scenario {
    fn new(ending: Ending, ports: &[u16]) -> Scenario {
        Scenario {
            ending,
            tag: format!("{}-{ending:?}-{}", std::process::id(), ports[0]),
            ports: ports.to_vec(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn output(&self) -> PathBuf {
        self.dir.path().join("output.log")
    }

    fn run(&self) -> Result<(), String> {
        let mut started = self.start()?;
        let child = &mut started.child;
        let pid = child.id();
        match self.ending {
            Ending::NoWait => {
                let status = self.wait_exit(child, START_TIMEOUT)?;
                if !status.success() {
                    return Err(self.fail(&format!("DEV_NO_WAIT=1 run exited with {status}")));
                }
            }
            Ending::StartupFailure => {
                let status = self.wait_exit(child, START_TIMEOUT)?;
                let out = self.read_output();
                if status.success() || !out.contains("the simulators exited at start-up") {
                    return Err(self.fail(&format!(
                        "expected the start-up failure of the simulators, got {status}"
                    )));
                }
                if !out.contains("SQS_QUEUE_URL=") {
                    return Err(self.fail("moto never answered, so this tested nothing"));
                }
            }
            ending => {
                self.wait_running(child)?;
                match ending {
                    Ending::Hangup | Ending::KillScript => signal("KILL", &pid.to_string()),
                    Ending::InterruptDeadReader => signal("INT", &format!("-{pid}")),
                    Ending::InterruptTwice => {
                        signal("INT", &format!("-{pid}"));
                        // The group may already be gone if the cleanup was that quick.
                        if self.wait_output("dev: stopping", STOP_TIMEOUT) {
                            signal("INT", &format!("-{pid}"));
                        }
                    }
                    Ending::Terminate => signal("TERM", &format!("-{pid}")),
                    Ending::KillGroup => signal("KILL", &format!("-{pid}")),
                    Ending::NoWait | Ending::StartupFailure => unreachable!(),
                }
                self.wait_exit(child, STOP_TIMEOUT)?;
            }
        }
        self.wait_all_stopped()?;
        // The watchdog is the last resort: whenever the script lives to clean up, it must do
        // so itself (in order, the worker first); when it is killed, the watchdog must act.
        let watchdog =
            fs::read_to_string(self.dir.path().join("dev/watchdog.log")).unwrap_or_default();
        let killed = matches!(self.ending, Ending::KillGroup | Ending::KillScript);
        if killed != watchdog.contains("without cleaning up") {
            return Err(self.fail(&format!("unexpected watchdog log: {watchdog:?}")));
        }
        Ok(())
    }

    /// Starts the scenario's command in its own process group.
    fn start(&self) -> Result<Started, String> {
        let out = fs::File::create(self.output()).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let make_dev = "make --no-print-directory dev";
        let argv: Vec<String> = match self.ending {
            // `; exit` keeps the shell from exec-ing make: it must stay the session leader.
            Ending::Hangup => vec![
                "script".into(),
                "-qfec".into(),
                format!("bash --norc --noprofile -i -c '{make_dev}; exit'"),
                "/dev/null".into(),
            ],
            Ending::InterruptDeadReader => vec![
                "bash".into(),
                "-c".into(),
                format!("{make_dev} 2>&1 | tee \"$0\""),
                self.dir.path().join("dev.log").display().to_string(),
            ],
            Ending::Terminate => make_dev.split(' ').map(String::from).collect(),
            _ => vec!["bash".into(), "scripts/dev.sh".into()],
        };
        let sim_bin = if self.ending == Ending::StartupFailure {
            PathBuf::from("/bin/false")
        } else {
            sim_bin()
        };
        let mut cmd = Command::new("env");
        // Signals ignored by whoever started `cargo test` (a background job ignores SIGINT)
        // would otherwise be ignored by the script too.
        cmd.arg("--default-signal=HUP,INT,QUIT,TERM,PIPE")
            .args(&argv)
            .current_dir(ROOT)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .env(TAG_VAR, &self.tag)
            .env("DEV_DIR", self.dir.path().join("dev"))
            .env("DEV_BIN", BIN)
            .env("DEV_SIM_BIN", &sim_bin)
            .env("DEV_MOTO_PORT", self.ports[0].to_string())
            .env("DEV_HTTP_PORT", self.ports[1].to_string())
            .env("DEV_GRPC_PORT", self.ports[2].to_string())
            .env("DEV_SIM_GRPC_PORT", self.ports[3].to_string())
            .env("DEV_SIM_REST_PORT", self.ports[4].to_string())
            .env("SHELL", "/bin/bash")
            // A make running `cargo test` passes its jobserver, which the nested make cannot use.
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .env_remove("RESERVATION_API_TOKEN");
        if self.ending == Ending::NoWait {
            cmd.env("DEV_NO_WAIT", "1");
        } else {
            cmd.env_remove("DEV_NO_WAIT");
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn {argv:?}: {e}"))?;
        Ok(Started {
            _stdin: child.stdin.take(),
            child,
            tag: self.tag.clone(),
        })
    }

    fn read_output(&self) -> String {
        fs::read(self.output())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn wait_output(&self, what: &str, timeout: Duration) -> bool {
        eventually(timeout, || self.read_output().contains(what))
    }

    fn wait_running(&self, child: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.read_output().contains(RUNNING) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.fail(&format!("exited with {status} before everything ran")));
            }
            if Instant::now() > deadline {
                return Err(self.fail("everything was not running in time"));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn wait_exit(&self, child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(self.fail(&format!(
                    "did not end within {timeout:?}; running: {:?}",
                    self.running()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// No process the scenario started is left, and every port binds again.
    fn wait_all_stopped(&self) -> Result<(), String> {
        if !eventually(STOP_TIMEOUT, || tagged_processes(&self.tag).is_empty()) {
            return Err(self.fail(&format!(
                "still running {STOP_TIMEOUT:?} after the end: {:?}",
                self.running()
            )));
        }
        let busy: Vec<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|&p| TcpListener::bind(("0.0.0.0", p)).is_err())
            .collect();
        if !busy.is_empty() {
            return Err(self.fail(&format!("ports still held: {busy:?}")));
        }
        Ok(())
    }

    /// The scenario's live processes: pid, state, what it waits in, command line.
    fn running(&self) -> Vec<String> {
        tagged_processes(&self.tag)
            .into_iter()
            .map(|(pid, cmd)| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat.rsplit(") ").next().unwrap_or("").split(' ').next();
                let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                format!("{pid} {} {wchan} {cmd}", state.unwrap_or("?"))
            })
            .collect()
    }

    /// `what`, with the end of the script's output for context.
    fn fail(&self, what: &str) -> String {
        let out = self.read_output();
        let lines: Vec<&str> = out.lines().collect();
        let tail = lines[lines.len().saturating_sub(12)..].join("\n    ");
        format!("{what}\n  last output:\n    {tail}")
    }
}

/// The scenario's direct child; whatever it started is killed when this is dropped, so a
/// failing scenario leaves nothing behind.
struct Started {
    child: Child,
    /// Held open, as a terminal would be: `script` treats EOF on its input as the end.
    _stdin: Option<ChildStdin>,
    tag: String,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let left: Vec<String> = tagged_processes(&self.tag)
            .into_iter()
            .map(|(pid, _)| pid.to_string())
            .collect();
        if !left.is_empty() {
            let _ = Command::new("kill").arg("-9").args(&left).status();
        }
    }
}

/// `kill -s SIG -- TARGET` (a pid, or `-pgid` for a process group).
fn signal(sig: &str, target: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", target])
        .stderr(Stdio::null())
        .status();
}

/// Live processes (not zombies) whose environment carries `TAG_VAR=tag`, with their command
/// lines.
fn tagged_processes(tag: &str) -> Vec<(u32, String)> {
    let needle = format!("{TAG_VAR}={tag}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            // A zombie's environ reads empty: it holds no port and needs no stopping.
            let env = fs::read(e.path().join("environ")).ok()?;
            if !env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
                return None;
            }
            Some((pid, command_line(&e.path())))
        })
        .collect()
}

fn command_line(proc_dir: &Path) -> String {
    fs::read(proc_dir.join("cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Polls `cond` every 100 ms until it holds (true) or `timeout` passes (false).
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
