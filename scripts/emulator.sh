#!/usr/bin/env bash
# A background SQS emulator (moto) for running the worker by hand (`make emulator-up`,
# `make emulator-down`).
#
#   scripts/emulator.sh up     starts moto on 127.0.0.1:$EMULATOR_PORT (default 4566), creates
#                              reservation-events + reservation-events-dlq, prints the settings
#   scripts/emulator.sh down   stops it
#
# State: .dev/moto.pid (the pid), .dev/emulator.log (moto's log). moto keeps queues in memory:
# they are gone after `down`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${EMULATOR_PORT:-4566}"
PIDFILE=.dev/moto.pid
LOG=.dev/emulator.log
ENDPOINT="http://127.0.0.1:$PORT"

die() { echo "emulator: $*" >&2; exit 1; }
# shellcheck source=scripts/sqs.sh
. scripts/sqs.sh

# The pid in the pid file, if that process is still a moto_server.
running_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && grep -q moto_server "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

up() {
    local moto pid queues
    if pid="$(running_pid)"; then
        echo "emulator: already running (pid $pid; $PIDFILE)"
        return 0
    fi
    command -v curl >/dev/null 2>&1 || die "curl not found: apt-get install -y curl"
    moto="$(bash scripts/install-moto.sh)"
    if ! .venv/bin/python -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$PORT" 2>/dev/null; then
        die "port $PORT is already in use; stop what listens there or set EMULATOR_PORT"
    fi
    mkdir -p .dev
    if command -v setsid >/dev/null 2>&1; then
        setsid nohup "$moto" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 </dev/null &
    else
        nohup "$moto" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 </dev/null &
    fi
    pid=$!
    echo "$pid" >"$PIDFILE"
    for ((i = 0; ; i++)); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "$ENDPOINT/moto-api/" || true)" != 000 ]] && break
        if ! kill -0 "$pid" 2>/dev/null || ((i >= 300)); then
            cat "$LOG" >&2
            kill "$pid" 2>/dev/null || true
            rm -f "$PIDFILE"
            die "moto did not start on $ENDPOINT (log above)"
        fi
        sleep 0.1
    done
    queues="$(AWS_REGION=ap-northeast-2 sqs_create_queues "$ENDPOINT")" ||
        die "moto is up (pid $pid) but creating the queues failed"
    cat <<EOF
emulator: moto running on $ENDPOINT (pid $pid, log $LOG)
Settings for the worker (already in .env.example):
  AWS_ENDPOINT_URL=$ENDPOINT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=ap-northeast-2
  $(grep '^SQS_QUEUE_URL=' <<<"$queues")
  ($(grep '^SQS_DLQ_URL=' <<<"$queues"), found by the worker from the RedrivePolicy)
EOF
}

down() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        echo "emulator: not running"
        return 0
    fi
    kill -TERM "$pid"
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    rm -f "$PIDFILE"
    echo "emulator: stopped (pid $pid)"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) die "usage: $0 up|down" ;;
esac
