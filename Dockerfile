# syntax=docker/dockerfile:1
# One image for every nnmon service; the command picks the subcommand:
#   docker build -t nnmon:latest .
#   docker run --rm -e AMQP_URL=amqp://guest:guest@host:5672/%2f nnmon:latest features
# docker-compose.yml runs features, model, metric and plot from it next to RabbitMQ.

# ---- builder -------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# Dependency layer: the manifests, the lock file and empty stand-ins for each crate's
# sources, so that the crates.io dependencies are compiled once and this layer is reused
# until a Cargo.toml or Cargo.lock changes. Every workspace member needs its manifest here.
COPY Cargo.toml Cargo.lock ./
COPY crates/nnmon-proto/Cargo.toml crates/nnmon-proto/
COPY crates/nnmon-join/Cargo.toml crates/nnmon-join/
COPY crates/nnmon-model/Cargo.toml crates/nnmon-model/
COPY crates/nnmon-report/Cargo.toml crates/nnmon-report/
COPY crates/nnmon-broker/Cargo.toml crates/nnmon-broker/
COPY crates/nnmon-csvlog/Cargo.toml crates/nnmon-csvlog/
# Stand-ins: an empty lib.rs per crate, a main.rs and lib.rs for the root package, and a
# `fn main() {}` for every [[bin]]/[[test]]/[[bench]]/[[example]] that a Cargo.toml names
# (cargo refuses a manifest whose declared targets are missing; a target with a custom
# `path` needs that path created here too). Test, bench and example stand-ins stay for the
# final build, which compiles only the nnmon binary.
RUN set -eu; \
    for crate in crates/*/; do mkdir -p "${crate}src"; : > "${crate}src/lib.rs"; done; \
    mkdir -p src; echo 'fn main() {}' > src/main.rs; : > src/lib.rs; \
    for manifest in Cargo.toml crates/*/Cargo.toml; do \
        dir=$(dirname "$manifest"); \
        awk -F'"' '/^\[\[(bin|test|bench|example)\]\]/ { kind = $0; next } \
                   /^\[/ { kind = ""; next } \
                   kind != "" && /^name *=/ { \
                       d = (kind ~ /bin/) ? "src/bin" : (kind ~ /test/) ? "tests" : \
                           (kind ~ /bench/) ? "benches" : "examples"; \
                       print d "/" $2 ".rs" }' "$manifest" \
        | while read -r target; do \
            mkdir -p "$dir/$(dirname "$target")"; \
            echo 'fn main() {}' > "$dir/$target"; \
          done; \
    done; \
    cargo build --release --locked --bin nnmon; \
    rm -rf src crates/*/src

# The real sources, and the data the binary embeds at compile time
# (crates/nnmon-model/data/diabetes.csv and models/ols.json, via include_str!).
COPY src src
COPY crates crates
COPY models models
# COPY keeps the files' old mtimes; touch them so cargo rebuilds the workspace crates
# instead of keeping the stand-ins compiled above.
RUN find src crates models -type f -exec touch {} + \
    && cargo build --release --locked --bin nnmon

# ---- runtime ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Unprivileged user, uid/gid 10001. A host directory bind-mounted on /app/logs must be
# writable by uid 10001 (e.g. `sudo chown 10001:10001 logs`), or run the container with
# your own uid (docker-compose.yml reads NNMON_UID/NNMON_GID for that).
RUN groupadd --system --gid 10001 nnmon \
    && useradd --system --uid 10001 --gid nnmon --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin nnmon \
    && mkdir -p /app/logs \
    && chown -R nnmon:nnmon /app

COPY --from=builder /src/target/release/nnmon /usr/local/bin/nnmon

USER nnmon:nnmon
WORKDIR /app
ENV NNMON_LOG_DIR=/app/logs
ENTRYPOINT ["nnmon"]
CMD ["--help"]
