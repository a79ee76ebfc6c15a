//! The `reservation-worker` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, not glibc's malloc: a message's work allocates a few hundred times, and glibc's
/// slower paths (consolidating freed chunks, moving them between bins) were the largest single
/// cost once two runtime threads shared the work (docs/performance.md). Its arenas are
/// committed on demand (`.cargo/config.toml`), which keeps the resident memory where it was.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = reservation_worker::cli::Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    reservation_worker::batch_log_lines(&mut builder);
    if cli.runs_the_worker()
        && let Some(threads) = reservation_worker::config::runtime_threads_from_env()
    {
        builder.worker_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(reservation_worker::cli::main(cli));
    // Lines logged while the runtime stops are kept back too.
    drop(runtime);
    reservation_worker::write_pending_log_lines();
    code
}
