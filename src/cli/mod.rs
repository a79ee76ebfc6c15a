//! The command line: `run` (the default), `send`, and the ops commands `check` and `dlq`.
//! The peer simulators are another binary (`reservation-sim`, in `crates/sim`): they never ship.

/// `println!` through [`crate::redact`], as every output of the process. Through anstream:
/// colour codes reach a terminal only, and never when `NO_COLOR` is set.
macro_rules! outln {
    () => {
        anstream::println!()
    };
    ($($arg:tt)*) => {
        anstream::println!("{}", crate::redact::owned(format!($($arg)*)))
    };
}

/// `eprintln!` as [`outln!`] prints.
macro_rules! errln {
    ($($arg:tt)*) => {
        anstream::eprintln!("{}", crate::redact::owned(format!($($arg)*)))
    };
}

pub mod check;
pub mod dlq;
pub mod send;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// reservation-worker: applies reservation and payment events from SQS to inventory and reservations.
#[derive(Debug, Parser)]
#[command(
    name = "reservation-worker",
    version = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("WORKER_REVISION"), ")"),
    about
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to run; `run` when no subcommand is given (the container's default).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker (the default). Configured from the environment; see .env.example.
    Run,
    /// Publish events to SQS_QUEUE_URL: one from flags, many from a JSONL file, or N generated.
    Send(Box<send::SendArgs>),
    /// Check the configuration and reach the queue, its DLQ, the inventory service and the
    /// reservation API. Exit 0 when all is well, 1 when a check failed, 78 on bad configuration.
    Check(check::CheckArgs),
    /// Inspect the dead-letter queue or move its messages back to their source queue.
    Dlq(dlq::DlqArgs),
    /// Print the completion script of a shell, e.g.
    /// `reservation-worker completions bash > /etc/bash_completion.d/reservation-worker`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// How `check` and `dlq peek` print their result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people: a table, or one block per message.
    #[default]
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Prints `value` as pretty JSON, masked as every output is.
pub(crate) fn print_json(value: &serde_json::Value) {
    // A Value always serializes: its keys are strings.
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    println!("{}", crate::redact::owned(text));
}

impl Cli {
    /// Whether this is the worker itself, whose runtime is sized by `WORKER_THREADS`; the other
    /// commands keep the runtime's default.
    pub fn runs_the_worker(&self) -> bool {
        matches!(self.command, None | Some(Command::Run))
    }
}

/// Exit code for a configuration error (EX_CONFIG from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

/// Runs the chosen command and maps its result to an exit code.
pub async fn main(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run_worker().await,
        Command::Send(args) => match send::run(*args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                errln!("send: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Check(args) => check::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "reservation-worker",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

async fn run_worker() -> ExitCode {
    let config = match Config::load().await {
        Ok(c) => c,
        Err(e) => {
            errln!("configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let telemetry = match crate::telemetry::init(&config) {
        Ok(t) => t,
        Err(e) => {
            errln!("configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(source) = &config.secret {
        source.log();
    }
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    if threads != config.runtime_threads {
        tracing::warn!(
            runtime_threads = threads,
            configured = config.runtime_threads,
            "WORKER_THREADS (or WORKER_CONCURRENCY) from the secret does not resize the runtime: it is sized from the environment before the secret is read"
        );
    }
    let shutdown = shutdown_on_signals();
    stop_by_the_deadline(shutdown.clone(), config.shutdown_timeout);
    let code = match crate::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            errln!("reservation-worker: {e}");
            ExitCode::from(1)
        }
    };
    // The last messages' spans are exported before the process exits.
    telemetry.shutdown().await;
    code
}

/// Once shutdown begins, ends the process at `SHUTDOWN_TIMEOUT_SECS` + [`crate::SHUTDOWN_MARGIN`]
/// whatever still runs: Kubernetes would SIGKILL it soon after, in the middle of something.
fn stop_by_the_deadline(shutdown: CancellationToken, timeout: std::time::Duration) {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        tokio::time::sleep(timeout + crate::SHUTDOWN_MARGIN).await;
        tracing::error!(
            limit_secs = (timeout + crate::SHUTDOWN_MARGIN).as_secs(),
            "shutdown did not finish within SHUTDOWN_TIMEOUT_SECS + {} s: exiting now; unsettled messages reappear when their visibility ends",
            crate::SHUTDOWN_MARGIN.as_secs()
        );
        std::process::exit(1);
    });
}

/// The one shutdown signal: the first SIGTERM, SIGINT or SIGHUP (a closed terminal, or a
/// supervisor's reload) cancels the returned token; a second exits at once (status 130), for
/// an operator who does not want to wait for the drain.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down (send another to exit at once)");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        // Without signal handlers there is nothing to wait for; never resolve.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag and argument of every command says what it is for.
    #[test]
    fn every_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "reservation-worker", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
