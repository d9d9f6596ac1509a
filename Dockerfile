# Build stage: Pingora builds zlib-ng with cmake.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
RUN cargo build --release --locked --bin portcullis

# Runtime stage: the binary and the default policies, run as a non-root user.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 portcullis \
    && useradd --system --uid 10001 --gid portcullis --home-dir /var/lib/portcullis --shell /usr/sbin/nologin portcullis \
    && mkdir -p /var/lib/portcullis/certs /var/lib/portcullis/data \
    && chown -R portcullis:portcullis /var/lib/portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY policies /etc/portcullis/policies
ENV PORTCULLIS_HTTPS_ADDR=0.0.0.0:8443 \
    PORTCULLIS_HTTP_ADDR=0.0.0.0:8080 \
    PORTCULLIS_ADMIN_ADDR=127.0.0.1:9901 \
    PORTCULLIS_POLICY_DIR=/etc/portcullis/policies \
    PORTCULLIS_CERT_DIR=/var/lib/portcullis/certs \
    PORTCULLIS_DATA_DIR=/var/lib/portcullis/data
USER 10001:10001
WORKDIR /var/lib/portcullis
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
