# Base images are pinned by exact tag: Rust 1.95.0 (the toolchain the project is built and tested
# with) and the Debian 12.11 point release. Bump both deliberately; for byte-for-byte repeatable
# builds pin them by digest as well (rust:1.95.0-bookworm@sha256:...).

# Build stage: Pingora builds zlib-ng with cmake.
FROM rust:1.95.0-bookworm AS build
# Package versions follow the Debian release the base image is pinned to; exact version pins
# would break the build as soon as a security update supersedes them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The patched pingora-proxy and pingora-core (vendor/README.md), and every target the manifest declares.
COPY vendor ./vendor
COPY src ./src
COPY benches ./benches
COPY bench/tools ./bench/tools
COPY policies ./policies
RUN cargo build --release --locked --bin portcullis

# Runtime stage: the binary and the default policies, run as a non-root user.
FROM debian:12.11-slim
# ca-certificates: the gateway fetches JWKS over HTTPS and checks them against the system's
# roots. curl: the HEALTHCHECK below (the slim image has no HTTP client).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 portcullis \
    && useradd --system --uid 10001 --gid portcullis --home-dir /var/lib/portcullis --shell /usr/sbin/nologin portcullis \
    && mkdir -p /var/lib/portcullis/certs /var/lib/portcullis/data \
    && chown -R portcullis:portcullis /var/lib/portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY policies /etc/portcullis/policies
# The listener is on every interface, where the default policy's development provider
# (`local`, anyone is admin) is refused: the image's copy of that policy guards every route
# without its own provider with the worker token instead. Pass the token with
# `-e PORTCULLIS_WORKER_TOKEN=...` (else one is generated in the data folder). The environment sets
# no AUTH_PROVIDER, so a policy mounted over this folder keeps the provider it names.
RUN sed -i 's/^default_provider = "local"$/default_provider = "static"/' /etc/portcullis/policies/default.toml \
    && grep -q '^default_provider = "static"$' /etc/portcullis/policies/default.toml
ENV PORTCULLIS_HTTPS_ADDR=0.0.0.0:8443 \
    PORTCULLIS_HTTP_ADDR=0.0.0.0:8080 \
    PORTCULLIS_ADMIN_ADDR=127.0.0.1:9901 \
    PORTCULLIS_POLICY_DIR=/etc/portcullis/policies \
    PORTCULLIS_CERT_DIR=/var/lib/portcullis/certs \
    PORTCULLIS_DATA_DIR=/var/lib/portcullis/data
USER 10001:10001
WORKDIR /var/lib/portcullis
EXPOSE 8443 8080
# Liveness from the admin listener, which stays on the container's loopback here (exec form: no
# shell involved). Kubernetes ignores this and uses the Deployment's probes instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/bin/curl", "--fail", "--silent", "--show-error", "--max-time", "2", "--output", "/dev/null", "http://127.0.0.1:9901/health"]
# SIGTERM fails /ready, then drains for PORTCULLIS_GRACE_SECONDS (20): stop with
# `docker stop --time 30` so the drain is not cut short by docker's 10-second default.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
