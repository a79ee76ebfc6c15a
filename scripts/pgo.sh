#!/usr/bin/env bash
# Builds the worker as it ships: release, optimised with a profile of its own work (PGO).
#
#   scripts/pgo.sh [--locked]           instrumented build, training run, final build
#   scripts/pgo.sh prepare [--locked]   only the builds the training needs (the Dockerfile's
#                                       dependency layer runs this on placeholder sources)
#
# 1. The worker built with `-Cprofile-generate` (every crate, so tokio, hyper, h2 and the SDK
#    are profiled too), and reservation-sim (plain release).
# 2. Training on loopback, configured as the chart's defaults are (the DLQ found from the
#    queue's RedrivePolicy, the gRPC debug port open): the simulators with the fast SQS
#    endpoint, 5 ms per peer call; events of all three types, first at concurrency 50 over
#    HTTP/1.1, then at 500 over h2c, with /metrics and /ready scraped as Prometheus and the
#    kubelet would. Nothing outside the machine is reached.
# 3. The worker built with `-Cprofile-use`, and linked (when the linker is lld, the
#    toolchain's default on x86_64 Linux) with the code the training ran first, hottest
#    first, then the code the profile cannot see (the standard library's, C), then the code
#    it never ran; relative relocations packed (`-z pack-relative-relocs`,
#    glibc >= 2.36). Code is most of what is resident, and a page is mapped with its
#    neighbours, so code that runs kept apart from code that does not is less memory
#    (docs/performance.md).
# 4. With valgrind: that build (symbols kept) runs the training again under callgrind, which
#    sees every function that runs, by its name in that build, including what the profile
#    cannot (the standard library's precompiled code, C, copies LLVM merged or renamed);
#    those join the front and the worker is linked once more.
#
# Output: target/pgo/reservation-worker. Needs llvm-profdata of the toolchain's own LLVM
# (`rustup component add llvm-tools`; installed here when rustup is present) and curl
# (scripts/sqs.sh's queue calls); valgrind for step 4 (skipped, with a note, without it).
# Builds go to their own target directories (target/pgo-*), since RUSTFLAGS differ.
# PGO_EVENTS (default 20000) events per phase (PGO_LAYOUT_EVENTS, default 5000, under
# callgrind); PGO_PORT (default 9470) and the four above it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=build
if [[ "${1:-}" == prepare ]]; then MODE=prepare; shift; fi
CARGO_ARGS=("$@")
for a in "${CARGO_ARGS[@]}"; do
    [[ "$a" == --locked || "$a" == --frozen || "$a" == --offline ]] ||
        { echo "pgo: unexpected argument '$a': expected --locked, --frozen or --offline" >&2; exit 2; }
done

EVENTS="${PGO_EVENTS:-20000}"
LAYOUT_EVENTS="${PGO_LAYOUT_EVENTS:-5000}"
PORT="${PGO_PORT:-9470}"
SQS_PORT=$PORT GRPC_PORT=$((PORT + 1)) REST_PORT=$((PORT + 2)) HTTP_PORT=$((PORT + 3)) DEBUG_PORT=$((PORT + 4))
HOST="$(rustc -vV | sed -n 's/^host: //p')"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (they are neither
# profiled nor optimised by the profile), and so out of the profile.
GEN_DIR=target/pgo-instrumented
USE_DIR=target/pgo-optimized
PROFILE_DIR="$ROOT/target/pgo/profile"
OUT=target/pgo/reservation-worker

say() { echo "==> pgo: $*" >&2; }
die() { echo "pgo: $*" >&2; exit 1; }

prepare() {
    say "building reservation-sim (release) and the instrumented worker"
    cargo build --release "${CARGO_ARGS[@]}" -p reservation-sim
    # Symbols kept: the link order lists the functions the profile cannot see by name.
    RUSTFLAGS="-Cprofile-generate=$PROFILE_DIR -Cstrip=none" \
        cargo build --release "${CARGO_ARGS[@]}" -p reservation-worker --target "$HOST" --target-dir "$GEN_DIR"
}

prepare
[[ "$MODE" == prepare ]] && exit 0

profdata() {
    local bin
    bin="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
    if [[ ! -x "$bin" ]] && command -v rustup >/dev/null 2>&1; then
        rustup component add llvm-tools >&2
    fi
    [[ -x "$bin" ]] || die "$bin not found: rustup component add llvm-tools (an llvm-profdata of another LLVM cannot read rustc's profiles)"
    echo "$bin"
}
PROFDATA="$(profdata)"
command -v curl >/dev/null 2>&1 || die "curl not found (it creates the queues and watches them drain)"

SIM_PID="" WORKER_PID=""
stop() {
    [[ -n "$WORKER_PID" ]] && kill "$WORKER_PID" 2>/dev/null || true
    [[ -n "$SIM_PID" ]] && kill "$SIM_PID" 2>/dev/null || true
}
trap stop EXIT

LOGS=target/pgo/logs
rm -rf "$PROFILE_DIR" "$LOGS" && mkdir -p "$PROFILE_DIR" "$LOGS"

target/release/reservation-sim --sqs-addr "127.0.0.1:$SQS_PORT" --inventory-addr "127.0.0.1:$GRPC_PORT" \
    --reservation-addr "127.0.0.1:$REST_PORT" --latency-ms 5 >"$LOGS/sim.log" 2>&1 &
SIM_PID=$!

# shellcheck source=scripts/sqs.sh
. scripts/sqs.sh
ENDPOINT="http://127.0.0.1:$SQS_PORT"
for _ in $(seq 100); do sqs_call "$ENDPOINT" ListQueues '{}' >/dev/null 2>&1 && break; sleep 0.1; done
QUEUES="$(sqs_create_queues "$ENDPOINT")" || die "could not create the training queues: $LOGS/sim.log"
QUEUE="$(sed -n 's/^SQS_QUEUE_URL=//p' <<<"$QUEUES")"
DLQ="$(sed -n 's/^SQS_DLQ_URL=//p' <<<"$QUEUES")"

# Only these (and PATH) reach the worker, as in a container: what this shell has set, a CA
# bundle for instance, would take the worker down paths production does not.
WORKER_ENV=(PATH="$PATH" AWS_ENDPOINT_URL="$ENDPOINT" AWS_REGION=us-east-1
    AWS_ACCESS_KEY_ID=pgo AWS_SECRET_ACCESS_KEY=pgo SQS_QUEUE_URL="$QUEUE"
    INVENTORY_GRPC_ADDR="127.0.0.1:$GRPC_PORT" RESERVATION_API_BASE="http://127.0.0.1:$REST_PORT"
    SERVER_PORT="$HTTP_PORT" GRPC_DEBUG_PORT="$DEBUG_PORT" SQS_WAIT_TIME=1 LOG_LEVEL=info LOG_FORMAT=json)
WORKER="$GEN_DIR/$HOST/release/reservation-worker"

# phase NAME CONCURRENCY [VAR=VALUE ...]: send the events, run the worker until the queue is
# empty, then stop it as Kubernetes would (SIGTERM) so it writes its profile on the way out.
# The worker is "${RUNNER[@]}" "$WORKER": RUNNER is empty, or callgrind for the layout run.
RUNNER=()
phase() {
    local name=$1 concurrency=$2 t=0
    shift 2
    say "training: $name, $EVENTS events at concurrency $concurrency${RUNNER[*]:+ under ${RUNNER[0]}}"
    # `send` is the operator's command, not the worker's work: its profile is not kept.
    env -i "${WORKER_ENV[@]}" LLVM_PROFILE_FILE="$ROOT/target/pgo/send-%m.profraw" "$WORKER" send --count "$EVENTS" >"$LOGS/send-$name.log" 2>&1 ||
        die "send failed: $LOGS/send-$name.log"
    env -i "${WORKER_ENV[@]}" "$@" WORKER_CONCURRENCY="$concurrency" LLVM_PROFILE_FILE="$PROFILE_DIR/worker-%m-%p.profraw" \
        "${RUNNER[@]}" "$WORKER" run >"$LOGS/worker-$name.log" 2>&1 &
    WORKER_PID=$!
    while [[ "$(sqs_depth "$ENDPOINT" "$QUEUE")" != 0 ]]; do
        kill -0 "$WORKER_PID" 2>/dev/null || die "the worker stopped: $LOGS/worker-$name.log"
        ((t++ < 3000)) || die "the queue did not drain in 5 minutes: $LOGS/worker-$name.log"
        curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" >/dev/null 2>&1 || true
        curl -fsS "http://127.0.0.1:$HTTP_PORT/ready" >/dev/null 2>&1 || true
        sleep 0.1
    done
    kill -TERM "$WORKER_PID"
    wait "$WORKER_PID" || die "the worker did not stop cleanly: $LOGS/worker-$name.log"
    WORKER_PID=""
}
phase http1 50
phase h2c 500 RESERVATION_API_HTTP2=prior-knowledge

dead="$(sqs_depth "$ENDPOINT" "$DLQ")"
[[ "$dead" == 0 ]] || die "$dead events were dead-lettered in training: $LOGS/worker-*.log"

"$PROFDATA" merge -o target/pgo/worker.profdata "$PROFILE_DIR"/worker-*.profraw
say "profile: target/pgo/worker.profdata (logs: $LOGS)"

# link_order: one symbol a line: the functions that ran (also in target/pgo/profile-ran.txt),
# then those the profile cannot see. Profile names are `[file;]symbol`; a function ran if any
# of its counters is non-zero; the hottest counter orders them.
link_order() {
    local names=target/pgo/profiled.txt
    "$PROFDATA" show --all-functions --counts target/pgo/worker.profdata |
        awk -v names="$names" '/^  [^ ].*:$/ { name = substr($0, 3, length($0) - 3); sub(/^.*;/, "", name); print name > names }
             /^    Block counts: / {
                 line = $0; gsub(/[^0-9,]/, "", line); n = split(line, c, ","); top = 0
                 for (i = 1; i <= n; i++) if (c[i] + 0 > top) top = c[i] + 0
                 if (top > 0) print top, name
             }' |
        sort -k1,1nr -s | awk '!seen[$2]++ { print $2 }' | tee target/pgo/profile-ran.txt
    "$(dirname "$PROFDATA")/llvm-nm" --defined-only "$WORKER" |
        awk 'NR == FNR { profiled[$0] = 1; next } $2 ~ /^[tTwW]$/ && !($3 in profiled) { print $3 }' "$names" -
}

# link ORDER [RUSTC_ARGS...]: the worker with the profile, linked in ORDER's order. The link
# arguments go to the worker's own compilation only (`cargo rustc`), so the dependencies are
# built once for every link.
LINK_ARGS=()
link() {
    local order=$1
    shift
    local args=()
    ((${#LINK_ARGS[@]})) && args=("${LINK_ARGS[@]}" "-Clink-arg=-Wl,--symbol-ordering-file=$ROOT/$order")
    RUSTFLAGS="-Cprofile-use=$ROOT/target/pgo/worker.profdata" \
        cargo rustc --release "${CARGO_ARGS[@]}" -p reservation-worker --bin reservation-worker \
        --target "$HOST" --target-dir "$USE_DIR" -- "${args[@]}" "$@"
}

if grep -aq 'Linker: LLD' "$WORKER"; then
    link_order >target/pgo/link-order-profile.txt
    say "link order: $(wc -l <target/pgo/profile-ran.txt) functions ran in training (target/pgo/link-order-profile.txt)"
    LINK_ARGS=(-Clink-arg=-Wl,--no-warn-symbol-ordering -Clink-arg=-Wl,-z,pack-relative-relocs)
else
    say "the linker is not lld: the code is linked in the compiler's order"
fi

if ((${#LINK_ARGS[@]})) && command -v valgrind >/dev/null 2>&1; then
    say "building the worker with the profile, symbols kept, for the layout run"
    link target/pgo/link-order-profile.txt -Cstrip=none
    cp "$USE_DIR/$HOST/release/reservation-worker" target/pgo/layout-worker
    rm -rf target/pgo/layout && mkdir -p target/pgo/layout
    WORKER=target/pgo/layout-worker EVENTS=$LAYOUT_EVENTS
    RUNNER=(valgrind --tool=callgrind --demangle=no "--callgrind-out-file=$ROOT/target/pgo/layout/callgrind.%p")
    # In a subshell, so a worker valgrind cannot run (under QEMU, say) costs only this step.
    if (
        trap stop EXIT
        phase layout-http1 50
        phase layout-h2c 500 RESERVATION_API_HTTP2=prior-knowledge
    ); then
        # Every function callgrind saw run, as named in that build (`fn=(id) name` at first use).
        awk '/^c?fn=/ { sub(/^c?fn=(\([0-9]+\))? ?/, ""); if ($0 != "") print }' target/pgo/layout/callgrind.* |
            awk '!seen[$0]++' >target/pgo/layout/ran.txt
    else
        say "the run under callgrind failed (target/pgo/logs): linked in the profile's order only"
        : >target/pgo/layout/ran.txt
    fi
    awk 'FILENAME == ARGV[1] { seen[$0] = 1; print; next } !seen[$0]++' \
        target/pgo/profile-ran.txt target/pgo/layout/ran.txt target/pgo/link-order-profile.txt >target/pgo/link-order.txt
    unseen="$(awk 'NR == FNR { seen[$0] = 1; next } !($0 in seen)' target/pgo/profile-ran.txt target/pgo/layout/ran.txt | wc -l)"
    say "link order: $unseen more functions first, that callgrind saw run and the profile did not (target/pgo/link-order.txt)"
else
    ((${#LINK_ARGS[@]})) && say "valgrind not found: linked in the profile's order only (what runs unseen by the profile stays apart, ~2 MiB more resident code)"
    cp target/pgo/link-order-profile.txt target/pgo/link-order.txt 2>/dev/null || true
fi

say "building the worker with the profile"
link target/pgo/link-order.txt
cp "$USE_DIR/$HOST/release/reservation-worker" "$OUT"
say "done: $OUT"
