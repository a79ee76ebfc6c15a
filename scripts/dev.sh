#!/usr/bin/env bash
# One-command local run (`make dev`): SQS emulator (moto) + simulators + worker, then one
# sample event of each type and form, and a table of what became of them.
#
#   scripts/dev.sh                 keeps everything running until Ctrl-C
#   DEV_NO_WAIT=1 scripts/dev.sh   stops after the table; exit 1 if a demo reservation did
#                                  not reach its expected status (for unattended runs)
#
# Ports (the defaults must be free, except moto, which takes the first free port from 4566):
#   DEV_MOTO_PORT=4566 DEV_HTTP_PORT=8040 DEV_GRPC_PORT=8041 DEV_SIM_GRPC_PORT=8020 DEV_SIM_REST_PORT=8010
# Logs: .dev/moto.log, .dev/sim.log, .dev/worker.log, .dev/watchdog.log (DEV_DIR=path for
# another directory)
# DEV_BIN=path and DEV_SIM_BIN=path run those reservation-worker and reservation-sim binaries
# instead of building target/debug's (both must be set to skip `cargo build`).
#
# However it ends (Ctrl-C, a second Ctrl-C to skip the worker's drain, the terminal closed,
# SIGTERM, its output piped into a reader that died, a failure, even SIGKILL via a watchdog),
# it stops everything it started: the worker first (it drains for up to 10 s), then the
# simulators, then moto.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MOTO_PORT="${DEV_MOTO_PORT:-4566}"
HTTP_PORT="${DEV_HTTP_PORT:-8040}"
GRPC_PORT="${DEV_GRPC_PORT:-8041}"
SIM_GRPC_PORT="${DEV_SIM_GRPC_PORT:-8020}"
SIM_REST_PORT="${DEV_SIM_REST_PORT:-8010}"
NO_WAIT="${DEV_NO_WAIT:-0}"
DEV="${DEV_DIR:-.dev}"
BIN="${DEV_BIN:-target/debug/reservation-worker}"
SIM_BIN="${DEV_SIM_BIN:-target/debug/reservation-sim}"
PY=.venv/bin/python
# shellcheck source=scripts/sqs.sh
. scripts/sqs.sh

if [[ -t 1 ]]; then BOLD=$'\033[1;36m' RED=$'\033[1;31m' RESET=$'\033[0m'; else BOLD="" RED="" RESET=""; fi
say() { echo "${BOLD}==> $*${RESET}"; }
die() { echo "${RED}dev: $*${RESET}" >&2; exit 1; }

# ---- background processes and their shutdown ---------------------------------------------
# Every way this script ends stops what it started: the EXIT trap (also reached from SIGHUP,
# SIGINT, SIGTERM and SIGPIPE) stops the children itself; if the script dies without it
# (SIGKILL), a watchdog started beside it does. The children run in their own sessions, so
# nothing else would: a closed terminal or a Ctrl-C reaches only this script's group.
# The stopping polls instead of calling the `wait` builtin (bash reaps its children by itself):
# with bash 5.2, a signal arriving around a `wait` at times left the cleanup blocked in it.
MOTO_PID="" SIM_PID="" WORKER_PID="" TAIL_PID="" WATCHDOG_PID="" PIDS="" FORCE=0
DRAIN_SECS=10 # the worker's SHUTDOWN_TIMEOUT_SECS: a dev queue holds a few messages at most

note() { echo "dev: $*" >&2; }

# Whether PID runs. An exited child of a dead parent can stay a zombie until init reaps it:
# that counts as gone.
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 0
    [[ "${state// /}" != Z* ]]
}

# Starts a command in the background in its own session (stdin closed), so a Ctrl-C on the
# terminal reaches only this script, which then stops the children in order.
spawn() {
    if command -v setsid >/dev/null 2>&1; then setsid "$@" </dev/null & else "$@" </dev/null & fi
}

# shellcheck disable=SC2317 # stop, cleanup and the watchdog run from traps or another process
# stop NAME PID SECONDS: SIGTERM, wait up to SECONDS (a second Ctrl-C cuts it short), SIGKILL.
stop() {
    local name=$1 pid=$2 secs=$3 waited=0
    [[ -n "$pid" ]] && alive "$pid" || return 0
    note "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    while alive "$pid" && ((waited < secs * 10 && FORCE == 0)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if alive "$pid"; then
        note "$name did not stop in time; killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    return 0
}

# The watchdog's list, in stopping order (worker first, so it drains): NAME PID SECONDS.
# Replaced whole (mv), so the watchdog never reads half of it.
save_pids() {
    [[ -n "$PIDS" ]] || return 0
    {
        [[ -z "$TAIL_PID" ]] || echo "log-tail $TAIL_PID 1"
        [[ -z "$WORKER_PID" ]] || echo "worker $WORKER_PID $((DRAIN_SECS + 5))"
        [[ -z "$SIM_PID" ]] || echo "simulators $SIM_PID 5"
        [[ -z "$MOTO_PID" ]] || echo "moto $MOTO_PID 5"
    } >"$PIDS.tmp" && mv -f "$PIDS.tmp" "$PIDS"
}

# `dev.sh --watchdog PID FILE`: waits while the script PID runs and FILE exists; if the script
# is gone and left FILE behind, it ended without cleaning up: stop what FILE lists. In its own
# session, so signals to the terminal's or the script's process group do not reach it.
watchdog() {
    local parent=$1 pids=$2 name pid secs
    trap '' HUP INT QUIT TERM PIPE
    set +e
    while [[ -f "$pids" ]] && alive "$parent"; do sleep 0.5; done
    [[ -f "$pids" ]] || return 0
    note "dev.sh (pid $parent) is gone without cleaning up; stopping what it started"
    while read -r name pid secs; do stop "$name" "$pid" "$secs"; done <"$pids"
    rm -f "$pids"
}

if [[ "${1:-}" == --watchdog ]]; then
    watchdog "$2" "$3"
    exit 0
fi

# shellcheck disable=SC2317
cleanup() {
    local rc=$? i
    # Nothing may cut the cleanup short: a write to a closed terminal or a dead pipe fails
    # (ignored, and set -e is off), SIGHUP and SIGTERM may come twice (make forwards SIGTERM),
    # and a second Ctrl-C only skips the waiting.
    trap '' HUP TERM PIPE
    trap 'FORCE=1' INT
    set +e
    if [[ -n "$TAIL_PID" ]]; then
        kill "$TAIL_PID" 2>/dev/null
        TAIL_PID="" && save_pids
    fi
    stop worker "$WORKER_PID" $((DRAIN_SECS + 5)) && WORKER_PID="" && save_pids
    stop simulators "$SIM_PID" 5 && SIM_PID="" && save_pids
    stop moto "$MOTO_PID" 5 && MOTO_PID="" && save_pids
    [[ -z "$PIDS" ]] || rm -f "$PIDS" # the watchdog sees it gone and exits
    for ((i = 0; i < 20; i++)); do alive "$WATCHDOG_PID" || break; sleep 0.1; done
    exit "$rc"
}

# shellcheck disable=SC2317
on_signal() {
    trap '' HUP TERM PIPE # a repeat before cleanup starts must not exit from inside it
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 129' HUP
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 141' PIPE

for tool in cargo curl python3; do
    [[ "$tool" == cargo && -n "${DEV_BIN:-}" && -n "${DEV_SIM_BIN:-}" ]] && continue
    command -v "$tool" >/dev/null 2>&1 || case "$tool" in
        cargo) die "cargo not found: install Rust 1.94+ (https://rustup.rs)" ;;
        curl) die "curl not found: apt-get install -y curl" ;;
        python3) die "python3 not found: apt-get install -y python3 python3-venv" ;;
    esac
done

# ---- 1. moto ----------------------------------------------------------------------------
say "installing the SQS emulator (moto) into .venv"
MOTO="$(bash scripts/install-moto.sh)"

# Whether something already holds PORT (tries to bind it on all interfaces, as the worker does).
port_busy() {
    ! "$PY" - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
EOF
}

who_holds() {
    command -v ss >/dev/null 2>&1 || return 0
    local line
    line="$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n1 | grep -o 'users:(.*)' || true)"
    [[ -n "$line" ]] && echo " ($line)"
    return 0
}

require_free() { # PORT WHAT VAR
    if port_busy "$1"; then
        die "port $1 ($2) is already in use$(who_holds "$1"). Stop what holds it (a previous 'make dev'?) or set $3 to another port."
    fi
}

say "checking ports"
require_free "$HTTP_PORT" "worker HTTP: /health, /ready" DEV_HTTP_PORT
require_free "$GRPC_PORT" "worker gRPC debug" DEV_GRPC_PORT
require_free "$SIM_GRPC_PORT" "inventory simulator, gRPC" DEV_SIM_GRPC_PORT
require_free "$SIM_REST_PORT" "reservation API simulator, REST" DEV_SIM_REST_PORT
first=$MOTO_PORT
while port_busy "$MOTO_PORT"; do
    MOTO_PORT=$((MOTO_PORT + 1))
    ((MOTO_PORT < first + 100)) || die "no free port for moto in $first-$((first + 99))"
done
[[ "$MOTO_PORT" == "$first" ]] || echo "dev: port $first is taken; moto uses $MOTO_PORT"

# ---- 2. build ---------------------------------------------------------------------------
if [[ -z "${DEV_BIN:-}" || -z "${DEV_SIM_BIN:-}" ]]; then
    say "cargo build (the worker and reservation-sim)"
    cargo build -p reservation-worker -p reservation-sim --bins
fi
[[ -x "$BIN" ]] || die "$BIN was not built"
[[ -x "$SIM_BIN" ]] || die "$SIM_BIN was not built"

mkdir -p "$DEV"
: >"$DEV/moto.log" && : >"$DEV/sim.log" && : >"$DEV/worker.log" && : >"$DEV/watchdog.log"

PIDS="$DEV/dev.pids"
save_pids
spawn bash "$ROOT/scripts/$(basename "${BASH_SOURCE[0]}")" --watchdog "$$" "$PIDS" >>"$DEV/watchdog.log" 2>&1
WATCHDOG_PID=$!

# ---- 3. emulator and queues ---------------------------------------------------------------
ENDPOINT="http://127.0.0.1:$MOTO_PORT"
say "starting moto on $ENDPOINT (log $DEV/moto.log)"
spawn "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$DEV/moto.log" 2>&1
MOTO_PID=$!
save_pids
for ((i = 0; ; i++)); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "$ENDPOINT/moto-api/" || true)"
    [[ "$code" != 000 ]] && break
    kill -0 "$MOTO_PID" 2>/dev/null || { cat "$DEV/moto.log" >&2; die "moto exited at start-up (log above)"; }
    ((i < 300)) || { cat "$DEV/moto.log" >&2; die "moto did not answer on $ENDPOINT within 30 s"; }
    sleep 0.1
done

# The worker and `send` talk to moto with these (and scripts/sqs.sh with the region). Variables that would
# send the SDK elsewhere are cleared.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_SQS SQS_DLQ_URL
export AWS_ENDPOINT_URL="$ENDPOINT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=ap-northeast-2

say "creating reservation-events-dlq and reservation-events (RedrivePolicy maxReceiveCount 5)"
queues="$(sqs_create_queues "$ENDPOINT")" || die "could not create the queues"
SQS_QUEUE_URL="$(sed -n 's/^SQS_QUEUE_URL=//p' <<<"$queues")"
DLQ_URL="$(sed -n 's/^SQS_DLQ_URL=//p' <<<"$queues")"
[[ -n "$SQS_QUEUE_URL" && -n "$DLQ_URL" ]] || die "sqs_create_queues printed no queue URLs: $queues"
export SQS_QUEUE_URL
echo "$queues"

# ---- 4. simulators and worker -------------------------------------------------------------
say "starting the simulators: inventory gRPC 127.0.0.1:$SIM_GRPC_PORT, reservation API http://127.0.0.1:$SIM_REST_PORT (log $DEV/sim.log)"
LOG_FORMAT=pretty spawn "$SIM_BIN" --inventory-addr "127.0.0.1:$SIM_GRPC_PORT" \
    --reservation-addr "127.0.0.1:$SIM_REST_PORT" >"$DEV/sim.log" 2>&1
SIM_PID=$!
save_pids
for ((i = 0; ; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIM_REST_PORT/" || true)" != 000 ]] && break
    kill -0 "$SIM_PID" 2>/dev/null || { cat "$DEV/sim.log" >&2; die "the simulators exited at start-up (log above)"; }
    ((i < 100)) || { cat "$DEV/sim.log" >&2; die "the simulators did not answer within 10 s"; }
    sleep 0.1
done

say "starting the worker: http://127.0.0.1:$HTTP_PORT, gRPC 127.0.0.1:$GRPC_PORT (log $DEV/worker.log)"
INVENTORY_GRPC_ADDR="127.0.0.1:$SIM_GRPC_PORT" \
    RESERVATION_API_BASE="http://127.0.0.1:$SIM_REST_PORT" \
    SERVER_PORT="$HTTP_PORT" GRPC_DEBUG_PORT="$GRPC_PORT" \
    LOG_FORMAT=pretty SQS_WAIT_TIME=2 SHUTDOWN_TIMEOUT_SECS="$DRAIN_SECS" \
    spawn "$BIN" run >"$DEV/worker.log" 2>&1
WORKER_PID=$!
save_pids
tail -n +1 -F "$DEV/worker.log" 2>/dev/null </dev/null &
TAIL_PID=$!
save_pids

for ((i = 0; ; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/ready" || true)" == 200 ]] && break
    if ! kill -0 "$WORKER_PID" 2>/dev/null || ((i >= 600)); then
        kill "$TAIL_PID" 2>/dev/null || true
        TAIL_PID=""
        save_pids
        echo "----- $DEV/worker.log -----" >&2
        cat "$DEV/worker.log" >&2
        kill -0 "$WORKER_PID" 2>/dev/null && die "the worker was not ready within 60 s (log above)"
        die "the worker exited at start-up (log above)"
    fi
    sleep 0.1
done
say "worker ready"

# ---- 5. sample events ---------------------------------------------------------------------
# id | what is sent | expected final status
DEMOS=(
    "demo-expired-1|reservation.expired|EXPIRED"
    "demo-approved-1|payment.approved|CONFIRMED"
    "demo-failed-1|payment.failed, no event_id/seat_ids/qty (looked up)|CANCELLED"
    "demo-eventbridge-1|payment.approved, EventBridge form|CONFIRMED"
    "demo-sns-1|reservation.expired, SNS form|EXPIRED"
)

send() { "$BIN" send "$@" >/dev/null || die "reservation-worker send $* failed"; }
say "sending sample events"
send --type reservation.expired --reservation-id demo-expired-1 --event-id evt-demo --seat-ids A-1,A-2 --qty 2
send --type payment.approved --reservation-id demo-approved-1 --payment-intent-id pi-demo-approved-1 \
    --amount 12000 --currency KRW --event-id evt-demo --user-id user-demo --seat-ids A-1,A-2 --qty 2
send --type payment.failed --reservation-id demo-failed-1 --payment-intent-id pi-demo-failed-1 \
    --amount 12000 --currency KRW
send --form eventbridge --type payment.approved --reservation-id demo-eventbridge-1 \
    --payment-intent-id pi-demo-eventbridge-1 --amount 12000 --currency KRW --event-id evt-demo \
    --user-id user-demo --seat-ids A-1,A-2 --qty 2
send --form sns --type reservation.expired --reservation-id demo-sns-1 --event-id evt-demo --seat-ids A-1,A-2 --qty 2
echo "dev: sent 5 events to $SQS_QUEUE_URL"

# ---- 6. wait for the queue to drain, then report ------------------------------------------
say "waiting for the source queue to drain (visible + in flight = 0)"
depth=""
for ((i = 0; i < 60; i++)); do
    depth="$(sqs_depth "$ENDPOINT" "$SQS_QUEUE_URL" || echo "?")"
    [[ "$depth" == 0 ]] && break
    sleep 1
done
[[ "$depth" == 0 ]] || echo "dev: the source queue still holds $depth message(s) after 60 s" >&2

auth=()
[[ -n "${RESERVATION_API_TOKEN:-}" ]] && auth=(-H "Authorization: Bearer $RESERVATION_API_TOKEN")
status_of() {
    local status
    status="$(curl -s "${auth[@]}" "http://127.0.0.1:$SIM_REST_PORT/internal/reservations/$1" | json_string status)"
    echo "${status:-?}"
}

dlq_depth="$(sqs_depth "$ENDPOINT" "$DLQ_URL" || echo "?")"
sleep 0.3 # let the tailed log catch up before the table
failures=0
{
    echo
    printf '%-20s %-52s %-10s %-10s %s\n' RESERVATION EVENT EXPECTED STATUS ""
    for demo in "${DEMOS[@]}"; do
        IFS='|' read -r id what want <<<"$demo"
        got="$(status_of "$id")"
        mark=ok
        [[ "$got" == "$want" ]] || { mark=MISMATCH; failures=$((failures + 1)); }
        printf '%-20s %-52s %-10s %-10s %s\n' "$id" "$what" "$want" "$got" "$mark"
    done
    echo
    echo "source queue depth: $depth    DLQ depth: $dlq_depth ($DLQ_URL)"
    echo
}

if ((failures > 0)); then
    echo "dev: $failures demo reservation(s) did not reach the expected status; see $DEV/worker.log and $DEV/sim.log" >&2
fi

if [[ "$NO_WAIT" == 1 ]]; then
    say "DEV_NO_WAIT=1: stopping everything"
    ((failures == 0)) || exit 1
    exit 0
fi

cat <<EOF
Everything is running:
  worker        http://127.0.0.1:$HTTP_PORT/ready  /health  (gRPC 127.0.0.1:$GRPC_PORT)
  simulators    inventory gRPC 127.0.0.1:$SIM_GRPC_PORT, reservations http://127.0.0.1:$SIM_REST_PORT/internal/reservations/<id>
  SQS (moto)    $ENDPOINT   queue $SQS_QUEUE_URL
  logs          $DEV/worker.log  $DEV/sim.log  $DEV/moto.log
Send more from another shell:
  AWS_ENDPOINT_URL=$ENDPOINT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SQS_QUEUE_URL=$SQS_QUEUE_URL \\
    $BIN send --count 30
Ctrl-C stops everything.
EOF
# Until the worker exits or a signal arrives; either way the EXIT trap cleans up. `wait` returns
# as soon as a trapped signal arrives. (A loop of `alive` and `sleep 1` here once let a Ctrl-C go
# unanswered: bash can lose a SIGINT that lands while it forks the loop's commands.)
wait "$WORKER_PID" 2>/dev/null || true
echo "dev: the worker exited; see $DEV/worker.log" >&2
exit 1
