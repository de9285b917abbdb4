//! `nnmon plot`: follows `<log-dir>/metric_log.csv` and shows how the model is doing.
//!
//! At every interval it reads only the rows appended since the last refresh (never a
//! half-written row), updates the statistics ([`nnmon_stats::ErrorStats`]: the last
//! `--window` rows exactly, every row in bounded memory), reads the status files `model`
//! (input drift) and `metric` (join health, error drift) write beside the log, and writes
//! `error_distribution.png` and `summary.json` atomically. With `--http` it also serves
//! the live page ([`http`]), which the same refresh updates through server-sent events.
//!
//! # Layout
//! - [`monitor`]: the [`Monitor`] that reads the log and status files and answers the
//!   [`Summary`](monitor::Summary).
//! - [`http`]: the page, `/api/summary`, `/events` and `/error_distribution.png`.

pub mod http;
pub mod monitor;

use crate::cli::PlotArgs;
use crate::telemetry::write_atomically;
use crate::telemetry::{StatusClock, Telemetry};
use anyhow::{Context, Result};
use axum::body::Bytes;
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
    let (latest, receiver) = watch::channel(Arc::new(http::Snapshot::default()));
    let server = match args.http {
        Some(addr) => Some(http::serve(addr, receiver, cancel.clone()).await?),
        None => None,
    };
    // No broker: plot is healthy while it reads its log and writes its outputs.
    let telemetry = Telemetry::start(Service::Plot, &args.observe, &cancel).await?;
    let mut status = StatusClock::new(args.observe.status_interval);
    let mut monitor = Monitor::new(log_dir, args.window as usize);
    loop {
        // Reading a long log takes seconds: off the runtime, so the page stays responsive.
        let outputs_for_refresh = Arc::clone(&outputs);
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
        telemetry.health.set(true);
        latest.send_replace(Arc::new(snapshot));
        debug!(rows = summary.rows, new_rows, "refreshed");
        if let Some(rate) = status.due(summary.rows, false) {
            let quality = match &summary.window {
                Some(w) => format!(
                    "last {} rows: MAE {:.1}, RMSE {:.1}, bias {:+.1}",
                    w.count, w.mae, w.rmse, w.bias
                ),
                None => "no rows yet".to_owned(),
            };
            info!("{} rows in the log ({rate:.0}/s); {quality}", summary.rows);
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
    if let Some(server) = server {
        cancel.cancel();
        server.await.context("the page server panicked")??;
    }
    Ok(())
}
