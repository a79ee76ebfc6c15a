# reservation-worker container image.
#
#   make docker-build                       # linux/amd64 + linux/arm64 with buildx
#   make docker-build PLATFORMS=linux/amd64 # one platform
#
# Multi-arch: each platform builds natively inside its own builder stage (under QEMU on a
# foreign host). Slow for the emulated arch, but needs no cross linker for aws-lc-sys.
# Checked without a Docker engine by `make dockerfile-check` (scripts/check-dockerfile.sh).

# ---- builder ---------------------------------------------------------------------------
# Rust >= 1.94.1 (the AWS SDK's minimum). Debian 12 (bookworm), the same glibc (2.36) as the
# runtime image below: the binary must not need a newer glibc than the runtime has.
# gcc from this image is all aws-lc-sys needs; protobuf is compiled by protox (pure Rust),
# so no protoc or cmake is installed.
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src

# 1) Dependencies only: the manifests, the build script and its protos, and an empty crate.
#    This layer is reused until Cargo.toml, Cargo.lock, build.rs or proto/ change.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2) The real sources. `touch` makes cargo rebuild the crate itself even when COPY keeps
#    timestamps older than the placeholder build's.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/reservation-worker /reservation-worker

# ---- runtime ---------------------------------------------------------------------------
# distroless cc: glibc, libgcc_s, CA certificates, tzdata, /etc/passwd with nonroot (65532);
# no shell, no package manager. The binary links only libc and libgcc_s (ldd-checked).
# Pin by digest for reproducible releases:
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
FROM gcr.io/distroless/cc-debian12:nonroot

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
