//! `nnmon plot`: redraws `<log-dir>/error_distribution.png` from `metric_log.csv`.
//!
//! Each refresh reads only the bytes appended since the last one (never a half-written
//! row), and the PNG is written to a temporary file then renamed into place, so a viewer
//! never sees a partial image.

use crate::cli::PlotArgs;
use anyhow::{Context, Result};
use nnmon_csvlog::LogTail;
use nnmon_report::{ErrorSummary, chart};
use std::path::Path;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub const CHART_FILE: &str = "error_distribution.png";

/// Follows the metric log and keeps the statistics of every row read so far.
pub struct Plotter {
    tail: LogTail,
    summary: ErrorSummary,
    unreadable: u64,
}

impl Plotter {
    pub fn new(log_dir: &Path) -> Self {
        Self {
            tail: LogTail::new(&log_dir.join(super::metric::METRIC_LOG), "absolute_error"),
            summary: ErrorSummary::new(chart::BINS),
            unreadable: 0,
        }
    }

    /// Reads the rows appended since the last call; returns how many.
    pub fn read_new(&mut self) -> Result<usize> {
        let mut fresh = Vec::new();
        let mut unreadable = 0;
        let event = self.tail.read_new(|value| match value.parse::<f64>() {
            Ok(error) => fresh.push(error),
            Err(_) => unreadable += 1,
        })?;
        if event.reset {
            info!("the metric log was replaced; starting over");
            self.summary = ErrorSummary::new(chart::BINS);
        }
        if unreadable > 0 && self.unreadable == 0 {
            warn!(
                unreadable,
                "skipping rows whose absolute_error is not a number"
            );
        }
        self.unreadable += unreadable;
        self.summary.extend(fresh);
        Ok(event.rows)
    }

    pub fn summary(&self) -> &ErrorSummary {
        &self.summary
    }

    /// Renders the chart and moves it into place at `path`.
    pub fn write_chart(&mut self, path: &Path) -> Result<()> {
        let png = chart::render_png(&mut self.summary)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, png)
            .with_context(|| format!("writing {}", Path::new(&tmp).display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("moving the chart into {}", path.display()))?;
        Ok(())
    }
}

pub async fn run(args: PlotArgs, cancel: CancellationToken) -> Result<()> {
    let log_dir = &args.logs.log_dir;
    std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let chart_path = log_dir.join(CHART_FILE);
    let mut plotter = Plotter::new(log_dir);
    let mut drawn_once = false;
    loop {
        let new_rows = plotter.read_new()?;
        if new_rows > 0 || !drawn_once {
            plotter.write_chart(&chart_path)?;
            drawn_once = true;
            debug!(
                rows = plotter.summary().count(),
                new_rows, "chart refreshed"
            );
        }
        if args.once {
            info!(rows = plotter.summary().count(), path = %chart_path.display(), "chart written");
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}
