//! The `reservation-worker` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, not glibc's malloc: a message's work allocates a few hundred times, and glibc's
/// slower paths (consolidating freed chunks, moving them between bins) were the largest single
/// cost once two runtime threads shared the work (docs/performance.md). Its arenas are
/// committed on demand (`.cargo/config.toml`), which keeps the resident memory where it was.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: `mi_option_t` is a C enum and `libmimalloc-sys` names
/// only some of its values. The test below checks that this one is the purge delay.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets [`reservation_worker::ALLOCATOR_PURGE_DELAY`], unless `MIMALLOC_PURGE_DELAY` is set:
/// mimalloc has read that already, and an operator's choice stands.
#[allow(unsafe_code)]
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let millis = reservation_worker::ALLOCATOR_PURGE_DELAY.as_millis() as std::ffi::c_long;
    // SAFETY: `mi_option_set` stores a number in mimalloc's table of options, which every
    // later purge reads; any number is valid for this option, at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, millis) }
}

/// Task polls between two looks for I/O on a busy runtime thread (tokio's default is 61). The
/// worker's tasks poll briefly and often (a task per message, the acker, the log writer, the
/// peers' connections), so at the default a busy worker polls the I/O driver more often an
/// event than a client with fewer tasks would, and each look costs synchronisation and a
/// syscall. An idle thread looks at once, so an idle worker still picks up at once (pickup
/// latency as measured: docs/performance.md).
const EVENT_INTERVAL: u32 = 200;

fn main() -> ExitCode {
    return_freed_memory_promptly();
    let cli = reservation_worker::cli::Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder.event_interval(EVENT_INTERVAL);
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
    reservation_worker::batch_log_lines(runtime.handle());
    let code = runtime.block_on(reservation_worker::cli::main(cli));
    // Lines logged while the runtime stops are kept back too.
    drop(runtime);
    reservation_worker::write_pending_log_lines();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: reads a number from mimalloc's table of options.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    /// Option 15 is mimalloc 3's purge delay (1000 ms by default; no option beside it has
    /// that default), and the worker sets it to `ALLOCATOR_PURGE_DELAY`.
    #[test]
    fn the_worker_sets_the_allocators_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        assert_eq!(
            purge_delay(),
            1000,
            "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
        );
        return_freed_memory_promptly();
        assert_eq!(
            purge_delay(),
            reservation_worker::ALLOCATOR_PURGE_DELAY.as_millis() as std::ffi::c_long
        );
    }
}
