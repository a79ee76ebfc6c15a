# reservation-worker container image, in two variants:
#
#   make docker-build                          # the default image (glibc), linux/amd64 + linux/arm64
#   make docker-build PLATFORMS=linux/amd64    # one platform
#   make docker-build VARIANT=static           # the static image (musl): smaller, more CPU per event
#
# The default (last) stage, `runtime`, is a glibc binary on distroless cc: about 17 MB to pull
# (compressed), 45 MB unpacked. `--target runtime-static` is a static musl binary on distroless
# static: about 9 MB compressed, 24 MB unpacked, but it used 20-50 % more CPU per event in
# `make bench` (musl's allocator), so it is not the default. docs/deploying.md: Docker image.
#
# Multi-arch: each platform builds natively inside its own builder stage (under QEMU on a
# foreign host). Slow for the emulated arch, but needs no cross linker for aws-lc-sys.
# Checked without a Docker engine by `make dockerfile-check` (scripts/check-dockerfile.sh).

# ---- sources: the dependency manifests and placeholder crate, shared by both builders ----
# Rust >= 1.94.1 (the AWS SDK's minimum). Debian 12 (bookworm), the same glibc (2.36) as the
# default runtime: the binary must not need a newer glibc than the runtime has. protobuf is
# compiled by protox (pure Rust), so no protoc or cmake is installed.
FROM rust:1.95.0-bookworm AS sources
WORKDIR /src
# The manifests, the build script and its protos, and placeholder sources for every target
# the manifests name (cargo refuses to build when one is missing). The bench, the simulators'
# crate and the test tooling's crate (workspace members cargo must load, never built here:
# every build names `-p reservation-worker`) keep their placeholders for good.
COPY Cargo.toml Cargo.lock build.rs ./
# Build settings: mimalloc's compile-time defaults (see the file).
COPY .cargo ./.cargo
COPY crates/sim/Cargo.toml crates/sim/build.rs ./crates/sim/
COPY crates/testkit/Cargo.toml ./crates/testkit/
COPY proto ./proto
# The profile-guided build (scripts/pgo.sh): instrumented build, training, final build;
# scripts/sqs.sh holds its queue calls.
COPY scripts/pgo.sh scripts/sqs.sh ./scripts/
RUN mkdir src benches crates/sim/src crates/testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/worker.rs \
    && touch crates/sim/src/lib.rs \
    && echo 'fn main() {}' > crates/sim/src/main.rs \
    && touch crates/testkit/src/lib.rs

# ---- builder: glibc ----------------------------------------------------------------------
# Profile-guided by default (PGO=1): the worker is built instrumented, runs 40,000 events
# against the simulators on loopback inside the build, and is built again with that profile:
# about a quarter less CPU per event and 2.6-3.5 MiB less peak RSS (docs/performance.md),
# for two more release builds and the simulators' (under QEMU, the emulated arch's training
# is slow too). --build-arg PGO=0 builds it plainly. The simulators never leave this stage.
FROM sources AS builder
ARG PGO=1
# valgrind: callgrind names every function the training runs, for the link order.
RUN case "$PGO" in 0|1) ;; *) echo "PGO=$PGO: expected 0 or 1" >&2; exit 1;; esac \
    && if [ "$PGO" = 1 ]; then rustup component add llvm-tools \
        && apt-get update \
        && apt-get install -y --no-install-recommends 'valgrind=1:3.19*' \
        && rm -rf /var/lib/apt/lists/*; fi
# 1) Dependencies only, against the placeholder crates. This layer is reused until
#    Cargo.toml, Cargo.lock, build.rs or proto/ change. gcc is all aws-lc-sys needs. (The
#    profile-using build's dependencies depend on the profile, so only PGO=0 keeps them.)
RUN if [ "$PGO" = 1 ]; then scripts/pgo.sh prepare --locked; \
    else cargo build --release --locked -p reservation-worker; fi \
    && rm -rf src crates/sim/src
# 2) The real sources. `touch` makes cargo rebuild the crate itself even when COPY keeps
#    timestamps older than the placeholder build's.
COPY src ./src
COPY crates/sim/src ./crates/sim/src
# The commit `--version` and worker_build_info name (the context has no .git); declared
# here, after the dependency layer, so a new commit does not rebuild the dependencies.
ARG REVISION=unknown
RUN touch src/main.rs src/lib.rs crates/sim/src/main.rs crates/sim/src/lib.rs \
    && if [ "$PGO" = 1 ]; then WORKER_REVISION="$REVISION" scripts/pgo.sh --locked \
        && cp target/pgo/reservation-worker /reservation-worker; \
    else WORKER_REVISION="$REVISION" cargo build --release --locked -p reservation-worker \
        && cp target/release/reservation-worker /reservation-worker; fi

# ---- builder: static (musl) --------------------------------------------------------------
# The toolchain comes first, so a change to the manifests does not fetch it again: musl-gcc
# compiles aws-lc-sys's C for the musl target, and rustup adds that target's std (which
# brings its own musl libc, linked in statically).
FROM rust:1.95.0-bookworm AS builder-static
RUN apt-get update \
    && apt-get install -y --no-install-recommends 'musl-tools=1.2.3*' \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY --from=sources /src ./
RUN cargo build --release --locked -p reservation-worker --target "$(uname -m)-unknown-linux-musl" && rm -rf src
COPY src ./src
ARG REVISION=unknown
RUN touch src/main.rs src/lib.rs \
    && WORKER_REVISION="$REVISION" cargo build --release --locked -p reservation-worker --target "$(uname -m)-unknown-linux-musl" \
    && cp "target/$(uname -m)-unknown-linux-musl/release/reservation-worker" /reservation-worker

# ---- runtime-static: distroless static (opt-in: --target runtime-static) ----------------
# CA certificates, tzdata, /etc/passwd with nonroot (65532); no libc, no shell, no package
# manager. The binary is static-pie, so it needs nothing else.
# Pin by digest for reproducible releases:
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot
FROM gcr.io/distroless/static-debian12:nonroot AS runtime-static
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="reservation-worker" \
      org.opencontainers.image.description="SQS worker applying reservation and payment events to inventory (gRPC) and reservations (REST); static musl build" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=builder-static /reservation-worker /reservation-worker
USER 65532:65532
EXPOSE 8040 8041
ENTRYPOINT ["/reservation-worker"]
CMD ["run"]

# ---- runtime: distroless cc (the default image) ------------------------------------------
# glibc, libgcc_s, CA certificates, tzdata, /etc/passwd with nonroot (65532); no shell, no
# package manager. The binary links only libc, libm and libgcc_s (ldd-checked).
# Pin by digest for reproducible releases:
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="reservation-worker" \
      org.opencontainers.image.description="SQS worker applying reservation and payment events to inventory (gRPC) and reservations (REST)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

# Root-owned and not writable by the worker's user. Nothing is written at runtime, so the
# container runs with a read-only root filesystem and needs no /tmp volume.
COPY --from=builder /reservation-worker /reservation-worker

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532

# 8040: HTTP /metrics, /health, /ready (SERVER_PORT). 8041: gRPC debug (GRPC_DEBUG_PORT).
EXPOSE 8040 8041

ENTRYPOINT ["/reservation-worker"]
CMD ["run"]
