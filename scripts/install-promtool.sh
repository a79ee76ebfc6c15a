#!/usr/bin/env bash
# Installs Debian's `prometheus` package: promtool (tests/it/metrics.rs checks the /metrics
# exposition with it, tests/it/alerts.rs the alerts) and the Prometheus server
# (tests/it/prometheus.rs scrapes a worker with it). Idempotent; without root or apt-get it
# says what is missing, and those tests say how to install it.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install-promtool: installing Debian's prometheus package for promtool" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; } ||
        echo "install-promtool: could not install prometheus; the alert and dashboard tests will fail (apt-get install -y prometheus)" >&2
    # The package may start a Prometheus server on :9090 where an init system runs; not needed.
    if command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
else
    echo "install-promtool: promtool or prometheus not found; install Debian's prometheus package (apt-get install -y prometheus): the alert and dashboard tests need it" >&2
fi
