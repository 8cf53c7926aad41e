# syntax=docker/dockerfile:1
# Build stage: the toolchain matches the one CI uses (Rust 1.95 on Debian bookworm).
FROM rust:1.95.0-slim-bookworm AS build
# libpq and OpenSSL are built from source into the binary (pq-sys bundled,
# openssl-sys vendored): their builds want make and perl, which slim lacks.
RUN apt-get update && apt-get install -y --no-install-recommends make perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
# The patched awc (see vendor/awc/PATCHED.md) is a dependency too.
COPY vendor ./vendor
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/siliconflow-proxy

# Runtime stage: glibc only (SQLite, libpq and OpenSSL are in the binary; the
# HTTPS client is rustls with built-in roots).
FROM debian:bookworm-20241111-slim
RUN useradd --system --uid 10001 --home /app proxy \
    && mkdir -p /app/data && chown -R proxy /app
WORKDIR /app
COPY --from=build /src/target/release/siliconflow-proxy /usr/local/bin/siliconflow-proxy
USER proxy
ENV HOST=0.0.0.0 PORT=7898 DATABASE_URL=sqlite:///app/data/api_keys.db RUST_LOG=info
VOLUME ["/app/data"]
EXPOSE 7898
# No curl in the slim image: the binary's port answering is the check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7898 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/siliconflow-proxy"]
