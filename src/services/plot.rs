//! `nnmon plot`: follows `<log-dir>/metric_log.csv` and shows how the model is doing.
//! With `--shards N` > 1 it follows `<log-dir>/all_shards_log.csv` instead, which its
//! [`collector`] fills with the rows every shard publishes over the broker: the view of
//! all shards, which also says how many of them sent rows.
//!
//! At every interval it reads only the rows appended since the last refresh (never a
//! half-written row), updates the statistics ([`nnmon_stats::ErrorStats`]: the last
//! `--window` rows exactly, every row in bounded memory), reads the status files `model`
//! (input drift) and `metric` (join health, error drift) write beside the log, and writes
//! `error_distribution.png` and `summary.json` atomically. With `--http` it also serves
//! the live page ([`http`]), which the same refresh updates through server-sent events.
//!
//! # Layout
//! - [`collector`]: the rows of every shard, from the broker into one local log.
//! - [`monitor`]: the [`Monitor`] that reads the log and status files and answers the
//!   [`Summary`](monitor::Summary).
//! - [`http`]: the page, `/api/summary`, `/events` and `/error_distribution.png`.

pub mod collector;
pub mod http;
pub mod monitor;

use crate::cli::PlotArgs;
use crate::services::Topology;
use crate::telemetry::write_atomically;
use crate::telemetry::{StatusClock, Telemetry};
use anyhow::{Context, Result};
use axum::body::Bytes;
use collector::Collector;
pub use monitor::Monitor;
use monitor::Summary;
use nnmon_observe::Service;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub const CHART_FILE: &str = "error_distribution.png";
pub const SUMMARY_FILE: &str = "summary.json";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where one refresh writes its files.
struct Outputs {
    chart: PathBuf,
    summary: PathBuf,
}

/// One refresh: new rows in, files written, and what the server hands out next.
fn refresh(monitor: &mut Monitor, outputs: &Outputs) -> Result<(http::Snapshot, Summary, usize)> {
    let new_rows = monitor.read_new()?;
    let summary = monitor.summary(now_ms());
    monitor.record_history(&summary);
    let png = Monitor::render_chart(&summary)?;
    write_atomically(&outputs.chart, &png)?;
    let summary_json = serde_json::to_string_pretty(&summary).context("encoding the summary")?;
    write_atomically(&outputs.summary, summary_json.as_bytes())?;
    let update_json = serde_json::to_string(&monitor.page_update(&summary))
        .context("encoding the page update")?;
    let snapshot = http::Snapshot {
        summary_json,
        update_json,
        png: Bytes::from(png),
    };
    Ok((snapshot, summary, new_rows))
}

pub async fn run(args: PlotArgs, cancel: CancellationToken) -> Result<()> {
    let log_dir: &Path = &args.logs.log_dir;
    std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let outputs = Arc::new(Outputs {
        chart: log_dir.join(CHART_FILE),
        summary: log_dir.join(SUMMARY_FILE),
    });
    // Stops the page server, the refresh loop and the collector together: at a signal,
    // after `--once`, or when one of them fails.
    let stop = cancel.child_token();
    let (latest, receiver) = watch::channel(Arc::new(http::Snapshot::default()));
    let server = match args.http {
        Some(addr) => Some(http::serve(addr, receiver, stop.clone()).await?),
        None => None,
    };
    let page = Page { latest, server };
    let telemetry = Telemetry::start(Service::Plot, &args.observe, &cancel).await?;
    let topology = Topology::new(&args.broker.queue_prefix, args.shards.shards);
    let window = args.window as usize;
    let Some(shards) = &topology.shards else {
        // No broker: plot is healthy while it reads its log and writes its outputs.
        let monitor = Monitor::new(log_dir, window);
        return follow(&args, monitor, &outputs, page, &telemetry, &stop).await;
    };
    let collector = Collector::open(log_dir, shards.count())?;
    let monitor = Monitor::of_all_shards(log_dir, window, shards.count());
    // Healthy while the collector is connected and consuming.
    let collecting = async {
        let collected = collector::run(&args, &topology, collector, &telemetry, &stop).await;
        stop.cancel();
        collected
    };
    let following = async {
        let followed = follow(&args, monitor, &outputs, page, &telemetry, &stop).await;
        stop.cancel();
        followed
    };
    tokio::try_join!(collecting, following)?;
    Ok(())
}

/// The live page: where refreshes go, and its server if `--http` asked for one.
struct Page {
    latest: watch::Sender<Arc<http::Snapshot>>,
    server: Option<tokio::task::JoinHandle<Result<()>>>,
}

/// Refreshes from `monitor`'s log every interval until `cancel` fires (or once), then
/// stops the page's server.
async fn follow(
    args: &PlotArgs,
    mut monitor: Monitor,
    outputs: &Arc<Outputs>,
    page: Page,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) -> Result<()> {
    let sharded = args.shards.shards > 1;
    let mut status = StatusClock::new(args.observe.status_interval);
    loop {
        // Reading a long log takes seconds: off the runtime, so the page stays responsive.
        let outputs_for_refresh = Arc::clone(outputs);
        let (returned, result) = tokio::task::spawn_blocking(move || {
            let result = refresh(&mut monitor, &outputs_for_refresh);
            (monitor, result)
        })
        .await
        .context("the refresh task panicked")?;
        monitor = returned;
        let (snapshot, summary, new_rows) = match result {
            Ok(refreshed) => refreshed,
            Err(error) => {
                telemetry.health.set(false);
                return Err(error);
            }
        };
        if !sharded {
            telemetry.health.set(true);
        }
        page.latest.send_replace(Arc::new(snapshot));
        debug!(rows = summary.rows, new_rows, "refreshed");
        if let Some(rate) = status.due(summary.rows, false) {
            let quality = match &summary.window {
                Some(w) => format!(
                    "last {} rows: MAE {:.1}, RMSE {:.1}, bias {:+.1}",
                    w.count, w.mae, w.rmse, w.bias
                ),
                None => "no rows yet".to_owned(),
            };
            let from = match &summary.shards {
                Some(s) => format!(" from {} of {} shards", s.reported, s.shards),
                None => String::new(),
            };
            info!(
                "{} rows in the log{from} ({rate:.0}/s); {quality}",
                summary.rows
            );
        }
        if args.once {
            info!(rows = summary.rows, path = %outputs.chart.display(), "chart written");
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            () = cancel.cancelled() => break,
        }
    }
    if let Some(server) = page.server {
        cancel.cancel();
        server.await.context("the page server panicked")??;
    }
    Ok(())
}
