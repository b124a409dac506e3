# The quiver image: one binary for every role on Kubernetes (the sidecar `quiver serve`, the
# injector `quiver inject serve`, the registry and offline servers, materialization).
#   docker build -t quiver:0.1.0 .
# The tag is the one the injector puts on sidecars by default and k8s/ deploys; push it to your
# registry and point k8s/ at it (k8s/README.md).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from a crate and SQLite is bundled: nothing beyond the Rust image is needed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin quiver \
    && cp target/release/quiver /usr/local/bin/quiver

# Debian slim rather than distroless: the materialization CronJob needs a shell and `date` for
# its end time, and ca-certificates lets TLS to Redis or object stores use public CAs.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 quiver \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin quiver
COPY --from=build /usr/local/bin/quiver /usr/local/bin/quiver
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 6566 8443
ENTRYPOINT ["quiver"]
CMD ["--help"]
