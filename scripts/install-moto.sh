#!/usr/bin/env bash
# Installs the SQS emulator (moto[server]) into the project-local virtualenv .venv.
#
# Idempotent: a stamp file inside .venv records what was installed, so a second run only
# prints one status line. Progress goes to stderr; the last line on stdout is always the
# absolute path of .venv/bin/moto_server, so callers can do MOTO=$(scripts/install-moto.sh).
# That is a launcher for scripts/moto_server.py (moto's server with one thread-safety fix).
#
# Environment: MOTO_VERSION (default below) picks another moto release; PYTHON (default
# python3) another interpreter.
set -euo pipefail

MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
PYTHON="${PYTHON:-python3}"
SPEC="moto[server]==${MOTO_VERSION}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
MOTO="$VENV/bin/moto_server"
STAMP="$VENV/.moto-installed"

say() { echo "install-moto: $*" >&2; }
die() { say "error: $*"; exit 1; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    die "'$PYTHON' not found: install Python 3.9 or newer (Debian: apt-get install -y python3 python3-venv)"
fi

# .venv/bin/moto_server runs scripts/moto_server.py: moto's server with SQS deletes under the
# queue's lock (why: that file). Written on every run, over the script pip makes.
write_launcher() {
    local launcher="#!/bin/sh
# Written by scripts/install-moto.sh: moto's server with the fix in scripts/moto_server.py.
exec \"$VENV/bin/python\" \"$ROOT/scripts/moto_server.py\" \"\$@\""
    if [[ ! -f "$MOTO" || "$(cat "$MOTO")" != "$launcher" ]]; then
        printf '%s\n' "$launcher" >"$MOTO"
        chmod +x "$MOTO"
    fi
}

# The stamp names the spec and the interpreter, so changing either reinstalls.
want="$SPEC $("$PYTHON" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')"
if [[ -x "$MOTO" && -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    write_launcher
    say "$SPEC already installed in .venv"
    echo "$MOTO"
    exit 0
fi

make_venv() {
    # A failed attempt leaves a half-made .venv without pip; start clean each time.
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2
}

if [[ ! -x "$VENV/bin/pip" ]]; then
    say "creating .venv with $PYTHON"
    if ! make_venv; then
        if "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
            die "'$PYTHON -m venv $VENV' failed (see above)"
        fi
        # Debian/Ubuntu ship venv's ensurepip in a separate package.
        pkg="python3-venv"
        ver_pkg="python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
        if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "ensurepip is missing: installing $pkg with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y "$pkg" >&2 || { apt-get update >&2 && apt-get install -y "$pkg" >&2; } ||
                apt-get install -y "$ver_pkg" >&2 ||
                die "apt-get could not install $pkg or $ver_pkg"
            make_venv || die "'$PYTHON -m venv' still fails after installing $pkg"
        else
            rm -rf "$VENV" 2>/dev/null || true
            die "'$PYTHON -m venv' needs the ensurepip module, which is missing. Install it with:
    sudo apt-get install -y $pkg    (or $ver_pkg)
then run this script again."
        fi
    fi
fi

say "installing $SPEC into .venv (takes a minute the first time)"
"$VENV/bin/pip" install --disable-pip-version-check --quiet "$SPEC" >&2 ||
    die "pip could not install $SPEC (is PyPI reachable? try: $VENV/bin/pip install '$SPEC')"
[[ -x "$MOTO" ]] || die "$SPEC installed but $MOTO is missing"
"$VENV/bin/python" -c 'import boto3, moto' || die "boto3/moto do not import from .venv"
write_launcher

echo "$want" >"$STAMP"
say "installed $SPEC"
echo "$MOTO"
