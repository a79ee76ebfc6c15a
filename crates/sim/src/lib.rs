//! Simulators of reservation-worker's two peers, the inventory service (gRPC) and the
//! reservation API (REST), and a fast in-process SQS endpoint. Test and development tooling:
//! this crate is never built into the worker's image.
//!
//! They serve two purposes with one implementation:
//!
//! * `reservation-sim` runs the peers for local development ([`run_sims`]; `make dev`), with
//!   auto-created demo reservations, optional random failures and latency, and an info
//!   log line per call so a person can watch the worker at work.
//! * The tests start them on port 0 as the real servers the worker talks to, script faults
//!   per route ([`InventorySim::push_fault`], [`ReservationSim::push_fault`]) and assert on the
//!   recorded calls ([`InventorySim::calls`], [`ReservationSim::calls`]).
//!
//! [`SqsSim`] is a fast SQS endpoint (AWS JSON 1.0) for tests and benchmarks, where moto is
//! too slow; its fault injection stands in for a misbehaving queue.

#![forbid(unsafe_code)]

pub mod fault;
pub mod inventory;
pub mod proto;
pub mod reservation;
pub mod sqs;

use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use fault::{Chaos, ChaosFault, Dice, FaultMix, FaultScript};
pub use inventory::{
    GrpcFault, HoldState, InventoryCall, InventoryMethod, InventorySim, ProxyAnswer,
    serve_inventory,
};
pub use reservation::{
    HttpCall, HttpFault, HttpRoute, Reservation, ReservationSim, router, serve_reservation,
};
pub use sqs::{SqsFault, SqsOperation, SqsSim, SqsStats, serve_sqs};

/// Options of `reservation-sim`: where the two simulators listen and how badly they
/// behave.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address for the inventory gRPC simulator (`reservation.v1.InventoryService`).
    #[arg(long, default_value = "127.0.0.1:8020")]
    pub inventory_addr: String,

    /// Address for the reservation API HTTP simulator.
    #[arg(long, default_value = "127.0.0.1:8010")]
    pub reservation_addr: String,

    /// Latency added to every call of both simulators, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Probability (0 to 1) that a call fails: UNAVAILABLE for gRPC, 503 for HTTP.
    #[arg(long, default_value_t = 0.0, value_parser = parse_failure_rate)]
    pub failure_rate: f64,

    /// Bearer token the reservation API simulator requires; none means no auth.
    #[arg(long, env = "RESERVATION_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Also serve the SQS simulator here (off by default; queues are created over the wire,
    /// as on moto). Fast enough to benchmark the worker against.
    #[arg(long)]
    pub sqs_addr: Option<String>,
}

fn parse_failure_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("failure rate must be a number between 0 and 1, got {s:?}"))?;
    fault::validate_failure_rate(rate)
}

/// Runs both simulators until `shutdown` is cancelled (or one of them fails, which stops the
/// other). Reservations are auto-created, so any id the worker sends is found.
pub async fn run_sims(args: SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let failure_rate =
        fault::validate_failure_rate(args.failure_rate).map_err(anyhow::Error::msg)?;
    let latency = Duration::from_millis(args.latency_ms);
    let token = args.token.filter(|t| !t.is_empty());

    let inventory_listener = TcpListener::bind(&args.inventory_addr)
        .await
        .with_context(|| {
            format!(
                "cannot bind the inventory simulator to {}",
                args.inventory_addr
            )
        })?;
    let reservation_listener = TcpListener::bind(&args.reservation_addr)
        .await
        .with_context(|| {
            format!(
                "cannot bind the reservation API simulator to {}",
                args.reservation_addr
            )
        })?;
    let sqs_listener = match &args.sqs_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the SQS simulator to {addr}"))?,
        ),
        None => None,
    };

    let inventory = InventorySim::new();
    inventory.set_failure_rate(failure_rate);
    inventory.set_latency(latency);

    let reservation = ReservationSim::new();
    reservation.set_auto_create(true);
    reservation.set_failure_rate(failure_rate);
    reservation.set_latency(latency);
    let auth = token.is_some();
    reservation.set_token(token);

    tracing::info!(
        addr = %inventory_listener.local_addr()?,
        service = "reservation.v1.InventoryService",
        latency_ms = args.latency_ms,
        failure_rate,
        "inventory simulator (gRPC) listening"
    );
    tracing::info!(
        addr = %reservation_listener.local_addr()?,
        auth,
        latency_ms = args.latency_ms,
        failure_rate,
        "reservation API simulator (HTTP) listening"
    );
    if let Some(l) = &sqs_listener {
        tracing::info!(addr = %l.local_addr()?, "SQS simulator (AWS JSON 1.0) listening");
    }

    // One token for all servers, so any failing stops the others.
    let stop = shutdown.child_token();
    let inventory_task = {
        let stop = stop.clone();
        async move {
            let result = serve_inventory(inventory_listener, inventory, stop.clone()).await;
            stop.cancel();
            result
        }
    };
    let reservation_task = {
        let stop = stop.clone();
        async move {
            let result = serve_reservation(reservation_listener, reservation, stop.clone()).await;
            stop.cancel();
            result
        }
    };
    let sqs_task = {
        let stop = stop.clone();
        async move {
            let Some(listener) = sqs_listener else {
                return Ok(());
            };
            let result = serve_sqs(listener, SqsSim::new(), stop.clone()).await;
            stop.cancel();
            result
        }
    };
    let (inventory_result, reservation_result, sqs_result) =
        tokio::join!(inventory_task, reservation_task, sqs_task);
    inventory_result?;
    reservation_result?;
    sqs_result?;
    tracing::info!("simulators stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["sim"]).unwrap();
        assert_eq!(cli.sim.inventory_addr, "127.0.0.1:8020");
        assert_eq!(cli.sim.reservation_addr, "127.0.0.1:8010");
        assert_eq!(cli.sim.latency_ms, 0);
        assert_eq!(cli.sim.failure_rate, 0.0);
        assert_eq!(cli.sim.sqs_addr, None);
    }

    #[test]
    fn failure_rate_is_validated() {
        let cli = Cli::try_parse_from(["sim", "--failure-rate", "0.25"]).unwrap();
        assert_eq!(cli.sim.failure_rate, 0.25);
        let err = Cli::try_parse_from(["sim", "--failure-rate", "1.5"]).unwrap_err();
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
        let err = Cli::try_parse_from(["sim", "--failure-rate", "lots"]).unwrap_err();
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
    }

    /// Loopback simulators on free ports, the reservation API on `reservation_addr`.
    fn loopback(reservation_addr: &str, sqs_addr: Option<String>) -> SimArgs {
        SimArgs {
            inventory_addr: "127.0.0.1:0".to_owned(),
            reservation_addr: reservation_addr.to_owned(),
            latency_ms: 0,
            failure_rate: 0.0,
            token: None,
            sqs_addr,
        }
    }

    /// Cancels `shutdown` and expects `run_sims` to end cleanly soon after.
    async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<anyhow::Result<()>>) {
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run_sims stops on shutdown")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn run_sims_serves_sqs_when_asked() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = loopback("127.0.0.1:0", Some(format!("127.0.0.1:{port}")));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_sims(args, shutdown.clone()));
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("ap-northeast-2"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        let client = aws_sdk_sqs::Client::from_conf(conf);
        let mut url = None;
        for _ in 0..100 {
            if let Ok(out) = client.create_queue().queue_name("events").send().await {
                url = out.queue_url().map(str::to_owned);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            url.as_deref(),
            Some(format!("http://127.0.0.1:{port}/000000000000/events").as_str())
        );
        stop(shutdown, task).await;
    }

    #[tokio::test]
    async fn run_sims_reports_the_busy_address_and_stops_on_shutdown() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy_addr = busy.local_addr().unwrap().to_string();
        let err = run_sims(loopback(&busy_addr, None), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains(&busy_addr), "{err:#}");

        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_sims(loopback("127.0.0.1:0", None), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop(shutdown, task).await;
    }
}
