//! `reservation-sim`: both peer simulators (and, with `--sqs-addr`, the fast SQS endpoint) on
//! fixed ports, for `make dev` and for trying the worker by hand.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use reservation_sim::{SimArgs, run_sims};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// reservation-sim: simulators of reservation-worker's inventory (gRPC) and reservation
/// (REST) peers, and of SQS.
#[derive(Debug, Parser)]
#[command(name = "reservation-sim", version, about)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("signal received: stopping");
            shutdown.cancel();
        }
    });
    match run_sims(cli.sim, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reservation-sim: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `LOG_LEVEL` (default `info`) and `LOG_FORMAT` (`pretty`, or JSON lines), as the worker
/// reads them; a value the filter cannot parse falls back to `info` rather than stopping a
/// simulator.
fn init_logging() {
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("LOG_FORMAT").as_deref() == Ok("pretty") {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

/// The first SIGTERM, SIGINT or SIGHUP.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
}
