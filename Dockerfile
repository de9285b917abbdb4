# One image for every nnmon service; the command picks the subcommand:
#   docker build -t nnmon:latest .
#   docker run --rm -e AMQP_URL=amqp://guest:guest@host:5672/%2f nnmon:latest features
# docker-compose.yml runs features, model, metric and plot from it next to RabbitMQ.
# No `# syntax=` line: the build needs no frontend image, so an offline or mirrored builder
# (the legacy builder or BuildKit) can build it from the two base images alone.

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
COPY crates/nnmon-observe/Cargo.toml crates/nnmon-observe/
COPY crates/nnmon-stats/Cargo.toml crates/nnmon-stats/
COPY crates/nnmon-scenario/Cargo.toml crates/nnmon-scenario/
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
# build.rs records the rustc (and the revision, from the build argument: there is no .git
# here) for a scenario run's env.json: `docker build --build-arg NNMON_BUILD_GIT_REVISION=$(git rev-parse HEAD) .`
ARG NNMON_BUILD_GIT_REVISION=""
COPY build.rs ./
COPY src src
COPY crates crates
COPY models models
# COPY keeps the files' old mtimes; touch them so cargo rebuilds the workspace crates
# instead of keeping the stand-ins compiled above.
RUN find build.rs src crates models -type f -exec touch {} + \
    && cargo build --release --locked --bin nnmon

# ---- runtime ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# The unprivileged user nnmon, uid/gid 10001, owns /app and the image's own log folder.
RUN groupadd --system --gid 10001 nnmon \
    && useradd --system --uid 10001 --gid nnmon --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin nnmon \
    && mkdir -p /app/logs \
    && chown -R nnmon:nnmon /app

COPY --from=builder /src/target/release/nnmon /usr/local/bin/nnmon
# docker-entrypoint runs nnmon as the owner of $NNMON_LOG_DIR with no capabilities
# (setpriv, from util-linux, which every Debian image has): nnmon for the image's own
# folder, the host user for a bind-mounted ./logs. So no USER line: the entrypoint starts
# as root only to read that owner, and never runs nnmon with root's capabilities.
# docker-healthz probes GET /healthz on $NNMON_METRICS_ADDR's port (compose's healthchecks).
COPY scripts/docker-entrypoint /usr/local/bin/docker-entrypoint
COPY scripts/docker-healthz /usr/local/bin/docker-healthz

WORKDIR /app
ENV NNMON_LOG_DIR=/app/logs
ENTRYPOINT ["docker-entrypoint"]
CMD ["--help"]
