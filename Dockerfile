# nfhost and nfctl in a container, for the docker-compose demo (docker-compose.yml,
# docker/README.md).
#
#   docker build -t nfhost:demo .
#
# Stage 1 builds the two binaries with the pinned Rust toolchain (edition 2024;
# Cargo.lock is honoured with --locked). Stage 2 is Debian of the same release
# (same glibc) with only what the entrypoint needs: iproute2 and ethtool.
#
# The service runs as root, with its capability set cut down by the compose file
# to CAP_NET_ADMIN (offloads, promiscuous mode on its interfaces), CAP_NET_RAW
# (AF_PACKET sockets on them), and CAP_SETUID, CAP_SETGID and CAP_KILL (NF
# processes drop to an unprivileged user; nfhost stops them). A non-root user would need those as ambient
# capabilities, inherited by every NF process nfhost starts (they re-execute
# this binary), so it buys little here; see docker/README.md.
#
# Plain Dockerfile syntax only (no BuildKit-only flags), so the classic builder
# behind docker-compose 1.29 builds it as well as BuildKit does.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Everything the two binaries are built from: the workspace manifest and lock,
# proto/ (read by the build scripts of crates/api and crates/vf-abi), the
# workspace members under crates/ and nfs/, examples/edge.toml (embedded by
# include_str! in src/demo.rs) and src/ (the dashboard assets in src/web/assets
# are embedded by rust-embed). fuzz/ has its own workspace and is not needed.
COPY Cargo.toml Cargo.lock ./
COPY proto/ proto/
COPY crates/ crates/
COPY nfs/ nfs/
COPY examples/ examples/
COPY src/ src/
RUN cargo build --release --locked -p nfhost -p nfctl \
 && mkdir -p /out \
 && cp target/release/nfhost target/release/nfctl /out/

FROM ${DEBIAN_IMAGE} AS nfhost
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iproute2 ethtool \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/nfhost /out/nfctl /usr/local/bin/
COPY docker/nfhost-entrypoint.sh /usr/local/bin/nfhost-entrypoint
# The mode bit is set again in case the checkout lost it (e.g. on Windows).
RUN chmod 0755 /usr/local/bin/nfhost-entrypoint \
 && mkdir -p /var/lib/nfhost /etc/nfhost \
 && nfhost --version \
 && nfctl --version

# gRPC API, dashboard + /metrics.
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/nfhost-entrypoint"]
