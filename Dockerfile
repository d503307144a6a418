# syntax=docker/dockerfile:1
# The grantwatch stream services (grantwatch-ingest, grantwatch-processor, grantwatch-detector) in one
# image; docker-compose.yml picks the binary per service.
#
#   docker build -t grantwatch .

# ---------------------------------------------------------------------------------------------- build
FROM rust:1-bookworm AS builder

# libclang: rocksdb bindings (bindgen); cmake: librdkafka and aws-lc; libcurl: as the crates expect.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev cmake libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the build reads (data/ is embedded with include_bytes!).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY services ./services
COPY tests ./tests
COPY data ./data

# The target directory is a cache mount, so the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p grantwatch-ingest -p grantwatch-processor -p grantwatch-detector \
    && mkdir -p /out \
    && cp target/release/grantwatch-ingest target/release/grantwatch-processor target/release/grantwatch-detector /out/

# -------------------------------------------------------------------------------------------- runtime
FROM debian:bookworm-slim

# curl: the compose healthchecks (GET /health).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# Non-root; /var/lib/grantwatch holds the services' state (named volumes mounted below it start out
# owned by this user because the directories exist in the image).
RUN groupadd --system --gid 10001 grantwatch \
    && useradd --system --uid 10001 --gid grantwatch --home-dir /var/lib/grantwatch --shell /usr/sbin/nologin grantwatch \
    && mkdir -p /var/lib/grantwatch/processor /var/lib/grantwatch/detector \
    && chown -R grantwatch:grantwatch /var/lib/grantwatch

COPY --from=builder /out/grantwatch-ingest /out/grantwatch-processor /out/grantwatch-detector /usr/local/bin/

USER grantwatch
WORKDIR /var/lib/grantwatch
# Kafka/HTTP settings come from --config and GRANTWATCH_* variables (config/grantwatch.example.toml).
EXPOSE 9464 9465 9466
CMD ["grantwatch-ingest", "--help"]
