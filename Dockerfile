# Two images from one Dockerfile:
#
#   docker build --target sidecar -t quiver-sidecar:0.1.0 .   # beside every model (the injector's default)
#   docker build --target full    -t quiver:0.1.0 .           # every other role
#
# `sidecar` carries the lean `quiver-sidecar` binary only (the serving path: no DataFusion, no
# Parquet writer) on distroless; `full` carries `quiver` (injector, registry service, offline
# server, materialization, ingest) on Debian slim. Both binaries are built by the release profile,
# which strips debug info; `strip` drops the symbol table too. The tags are the ones the injector
# and k8s/ use by default; push them to your registry and point k8s/ at them (k8s/README.md).

FROM rust:1-bookworm AS build-sidecar
WORKDIR /src
COPY . .
# protoc comes from a crate and SQLite is bundled: nothing beyond the Rust image is needed.
# `-p quiver-cmd` builds the sidecar's dependency graph alone (no DataFusion is compiled).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p quiver-cmd --bin quiver-sidecar \
    && strip -o /usr/local/bin/quiver-sidecar target/release/quiver-sidecar

FROM rust:1-bookworm AS build-full
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p quiver --bin quiver \
    && strip -o /usr/local/bin/quiver target/release/quiver

# glibc, libgcc and CA certificates (TLS to Redis or object stores with public CAs), no shell;
# `nonroot` runs as 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS sidecar
COPY --from=build-sidecar /usr/local/bin/quiver-sidecar /usr/local/bin/quiver-sidecar
USER 65532:65532
EXPOSE 6566
ENTRYPOINT ["quiver-sidecar"]
CMD ["--help"]

# Debian slim rather than distroless: the materialization CronJob needs a shell and `date` for
# its end time, and ca-certificates lets TLS to Redis or object stores use public CAs.
FROM debian:bookworm-slim AS full
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 quiver \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin quiver
COPY --from=build-full /usr/local/bin/quiver /usr/local/bin/quiver
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 6566 8443
ENTRYPOINT ["quiver"]
CMD ["--help"]
