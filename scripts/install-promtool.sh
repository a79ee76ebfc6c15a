#!/usr/bin/env bash
# Installs promtool (Debian's `prometheus` package), used by tests/it/metrics.rs to check the
# /metrics exposition. Idempotent; without root or apt-get it says what is missing and the
# test reports the check as skipped.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install-promtool: installing Debian's prometheus package for promtool" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; } ||
        echo "install-promtool: could not install prometheus; the promtool check will be skipped" >&2
    # The package may start a Prometheus server on :9090 where an init system runs; not needed.
    if command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
else
    echo "install-promtool: promtool not found; install Debian's prometheus package (apt-get install -y prometheus) to enable the exposition check" >&2
fi
