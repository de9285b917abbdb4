//! nnmon: watches a machine-learning model in production, in real time, over RabbitMQ.
//!
//! # Layout
//! - [`cli`]: the `nnmon` command line; every flag has an environment-variable twin.
//! - [`services`]: one module per subcommand — `features` (source) → `model` (transform)
//!   → `metric` (sink, joins by ID, logs CSV) → `plot` (reads the CSV, draws the PNG),
//!   plus `train`, which fits the model offline.
//! - [`supervisor`]: runs a service's broker session and rebuilds connection, channels and
//!   consumers whenever the broker goes away, until shutdown.
//! - [`shutdown`]: turns SIGINT/SIGTERM into a cancellation token every service watches;
//!   a second signal exits at once.
//! - [`logging`]: log lines on stderr, filtered by `RUST_LOG`; a failed write never stops
//!   a service.
//! - [`telemetry`]: Prometheus metrics and health (`--metrics-addr`), progress lines and
//!   status files.
//! - [`scenario`]: `nnmon scenario run|compare`, the research harness: the services as
//!   processes, faults, a partition proxy, measurements and the run's folder (the pure
//!   part is the `nnmon-scenario` crate).
//!
//! The pure logic lives in the workspace crates: `nnmon-proto` (wire format), `nnmon-join`
//! (the ID join), `nnmon-model` (data set and model), `nnmon-stats` (regression statistics
//! and drift detectors), `nnmon-report` (the chart), `nnmon-csvlog` (CSV files),
//! `nnmon-broker` (AMQP plumbing) and `nnmon-observe` (metrics over HTTP).

pub mod cli;
pub mod logging;
pub mod scenario;
pub mod services;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;

use anyhow::Result;
use cli::{Cli, Command, ScenarioCommand};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a service may take to finish in-flight work once asked to stop.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Runs the subcommand `cli` names until it finishes or `cancel` fires.
pub async fn run(cli: Cli, cancel: CancellationToken) -> Result<()> {
    let service = async {
        match cli.command {
            Command::Features(args) => services::features::run(args, cancel.clone()).await,
            Command::Model(args) => services::model::run(args, cancel.clone()).await,
            Command::Metric(args) => services::metric::run(args, cancel.clone()).await,
            Command::Plot(args) => services::plot::run(args, cancel.clone()).await,
            Command::Train(args) => services::train::run(args),
            Command::Scenario(ScenarioCommand::Run(args)) => {
                scenario::run(args, cancel.clone()).await
            }
            Command::Scenario(ScenarioCommand::Compare(args)) => scenario::compare_runs(args),
        }
    };
    let deadline = async {
        cancel.cancelled().await;
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    };
    tokio::select! {
        result = service => result,
        () = deadline => anyhow::bail!("in-flight work did not finish within {SHUTDOWN_DEADLINE:?} of the shutdown signal"),
    }
}
