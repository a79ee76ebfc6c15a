#!/usr/bin/env bash
# Fuzzes the envelope parser (`reservation_worker::event::parse`) with cargo-fuzz/libFuzzer.
#
#   scripts/fuzz.sh            600 s (10 minutes), one job
#   scripts/fuzz.sh 60         60 s
#   scripts/fuzz.sh 600 -max_len=8192   extra arguments go to libFuzzer
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if it
# is missing. The fuzz crate (fuzz/) is its own workspace, outside the main build. Corpus:
# fuzz/corpus/envelope (seeded from fuzz/seeds), crashes: fuzz/artifacts/envelope; both are
# git-ignored. Exits non-zero when libFuzzer finds a crash, panic, leak or timeout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${1:-600}"
shift || true
[[ "$DURATION" =~ ^[0-9]+$ ]] || { echo "fuzz: duration must be whole seconds, got '$DURATION'" >&2; exit 2; }

TARGET=envelope
CORPUS="fuzz/corpus/$TARGET"
LOG="fuzz/artifacts/$TARGET.log"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

mkdir -p "$CORPUS" "fuzz/artifacts/$TARGET"
cp -n fuzz/seeds/* "$CORPUS"/ 2>/dev/null || true

echo "==> cargo +nightly fuzz run $TARGET ($DURATION s, 1 job; log: $LOG)"
status=0
# -timeout: one input taking over 10 s counts as a hang. -rss_limit_mb: libFuzzer's default.
cargo +nightly fuzz run "$TARGET" "$CORPUS" -- \
  -max_total_time="$DURATION" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -dict=fuzz/envelope.dict -print_final_stats=1 "$@" 2>&1 | tee "$LOG" || status=$?

echo
echo "==> result"
# The last status line (`#N DONE cov: … ft: … corp: …/… exec/s: …`) and the final stats.
grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)' "$LOG" | tail -n 1 || true
grep -E '^stat::' "$LOG" || true
echo "corpus files: $(find "$CORPUS" -type f | wc -l)"
if [[ $status -ne 0 ]]; then
  if grep -q 'Test unit written' "$LOG"; then
    echo "fuzz: libFuzzer stopped with status $status; the input is in fuzz/artifacts/$TARGET/" >&2
    grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' "$LOG" | head -n 20 >&2 || true
  else
    # No input was written: the target did not build or libFuzzer did not start.
    echo "fuzz: cargo fuzz failed with status $status before finding anything (a build error?); see $LOG" >&2
  fi
fi
exit "$status"
