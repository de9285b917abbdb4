# nnmon's everyday commands. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

export AMQP_URL := env_var_or_default("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")

# Show the recipes
default:
    @just --list

# Start a local RabbitMQ unless one already listens at $AMQP_URL
broker:
    scripts/ensure-broker

# Run the whole system: broker, then features, model, metric and plot (Ctrl-C stops all)
up: broker
    cargo build --release --bin nnmon
    scripts/up

# Every test: unit, property and end-to-end (needs the broker), then the drift detectors'
# 100 000-item calibration runs (in release: they are slow in debug)
test: broker
    cargo test --workspace
    cargo test --release -p nnmon-stats --test calibration -- --include-ignored

# The same suite as `test` with nnmon built on lapin instead of amqprs (the default, through
# the feature client-amqprs); the calibration, which no AMQP client touches, is left to `test`
test-lapin: broker
    cargo test --workspace --no-default-features

# The drift detectors' calibration, with its figures printed
calibrate:
    cargo test --release -p nnmon-stats --test calibration -- --include-ignored --nocapture

# The end-to-end suite only: real broker, real processes
e2e: broker
    cargo test --test pipeline --test faults --test operations --test observability --test live_page --test broker_restart --test cluster --test shards --test scenarios --test scenario_broker_restart

# A 3-node RabbitMQ cluster on this host (127.0.0.1:5681-5683), beside the broker on 5672
cluster:
    scripts/cluster start

# Stop the 3-node cluster and remove its data
cluster-down:
    scripts/cluster stop

# Formatting and clippy, warnings as errors
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --workspace --all-targets --no-default-features -- -D warnings

# Criterion benchmarks, including the pipeline against the broker's own ceiling
bench: broker
    cargo bench

# Release nnmon binaries, one per AMQP client, copied to <target>/bench-binaries/ (the
# second build reuses the first's dependencies), and the pipeline bench built on lapin (it
# moves the ceiling through nnmon-broker on lapin); prints them as the bench wants them
bench-binaries:
    #!/usr/bin/env bash
    set -euo pipefail
    target="${CARGO_TARGET_DIR:-target}"
    mkdir -p "$target/bench-binaries"
    cargo build --release --bin nnmon --no-default-features
    cp "$target/release/nnmon" "$target/bench-binaries/nnmon-lapin"
    bench=$(cargo bench --bench pipeline --no-default-features --no-run --message-format=json \
        | grep -o '"executable":"[^"]*/deps/pipeline-[^"]*"' | cut -d'"' -f4 | tail -n 1)
    cp "$bench" "$target/bench-binaries/pipeline-bench-lapin"
    cargo build --release --bin nnmon
    cp "$target/release/nnmon" "$target/bench-binaries/nnmon-amqprs"
    echo "NNMON_BENCH_BINARIES=lapin=$target/bench-binaries/nnmon-lapin,amqprs=$target/bench-binaries/nnmon-amqprs"
    echo "NNMON_BENCH_SEAMS=lapin=$target/bench-binaries/pipeline-bench-lapin"

# The pipeline bench with nnmon on each client side by side, each beside a raw client of
# the same library, the same ceiling moved through nnmon-broker, and the chain (the
# pipeline's flow through nnmon-broker with none of the services' work): the tables in
# README's "Two AMQP clients"
bench-clients: broker bench-binaries
    #!/usr/bin/env bash
    set -euo pipefail
    target="${CARGO_TARGET_DIR:-target}"
    NNMON_BENCH_BINARIES="lapin=$target/bench-binaries/nnmon-lapin,amqprs=$target/bench-binaries/nnmon-amqprs" \
    NNMON_BENCH_SEAMS="lapin=$target/bench-binaries/pipeline-bench-lapin" \
        cargo bench --bench pipeline

# Every shipped scenario (scenarios/*.toml) with the release build into results/latest/,
# then the README's scenario results regenerated from their summary.json files
scenarios: broker
    cargo build --release --bin nnmon
    scripts/scenarios

# Refit the model and rewrite models/ols.json
train:
    cargo run --release --bin nnmon -- train --output models/ols.json

# Docker: build the image, run docker-compose.yml on spare ports until rows, chart and health show, then down -v
compose-smoke:
    scripts/compose-smoke
