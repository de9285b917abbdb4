//! What `metric` tells the people watching the model: regression statistics over the last
//! `--window` rows, the error-drift alarm, Prometheus metrics, a progress line and
//! `<log-dir>/metric_status.json` for `plot`'s page.

use super::ledger::{Events, Ledger};
use crate::services::{PoisonCounter, now_ms};
use crate::telemetry::{StatusClock, StatusFile, Telemetry};
use anyhow::Result;
use nnmon_join::Side;
use nnmon_model::LinearModel;
use nnmon_observe::{OrphanLabels, SideLabels};
use nnmon_stats::{
    ErrorDrift, ErrorDriftConfig, ErrorDriftScore, ErrorReference, ErrorStats, METRIC_STATUS_FILE,
    MetricStatus,
};
use std::path::Path;
use tracing::{info, warn};

pub struct Monitor {
    stats: ErrorStats,
    drift: ErrorDrift,
    telemetry: Telemetry,
    clock: StatusClock,
    status_file: StatusFile,
}

impl Monitor {
    /// The reference is the data set the model was fitted on: its mean target is the dummy
    /// baseline's prediction, and the built-in model's errors on it are what "normal"
    /// errors look like to the drift detector (so a model that serves worse than the
    /// validated one raises the alarm from its first rows, with no warm-up to hide in).
    pub fn new(
        telemetry: Telemetry,
        window: usize,
        clock: StatusClock,
        log_dir: &Path,
    ) -> Result<Self> {
        let data = nnmon_model::diabetes();
        let reference_mean = data.iter().map(|s| s.target).sum::<f64>() / data.len() as f64;
        let reference = LinearModel::default_ols().ok().and_then(|model| {
            let errors: Vec<f64> = data
                .iter()
                .map(|s| (s.target - model.predict(&s.features)).abs())
                .collect();
            ErrorReference::from_errors(&errors)
        });
        let mut drift = ErrorDriftConfig::default();
        if let Some(reference) = reference {
            drift.reference = reference;
        }
        Ok(Self {
            stats: ErrorStats::new(window, reference_mean),
            drift: ErrorDrift::new(drift),
            telemetry,
            clock,
            status_file: StatusFile::new(log_dir.join(METRIC_STATUS_FILE))?,
        })
    }

    /// Takes in what the ledger did: rows into the statistics, the detector and the
    /// histograms; orphans and duplicates into their counters.
    pub fn observe(&mut self, events: Events) {
        let metrics = &self.telemetry.metrics;
        for row in &events.rows {
            let absolute_error = (row.y_true - row.y_pred).abs();
            self.stats.push(row.y_true, row.y_pred);
            metrics.absolute_error.observe(absolute_error);
            if let Some(latency) = row.latency_us {
                metrics.row_latency_seconds.observe(latency as f64 / 1e6);
            }
            if let Some(flip) = self.drift.push(absolute_error) {
                metrics.error_drift_alarm.set(i64::from(flip.alarm));
                if flip.alarm {
                    warn!(
                        row = flip.item,
                        "performance drift: the absolute error has risen above what it was"
                    );
                } else {
                    info!(
                        row = flip.item,
                        "performance drift cleared: the absolute error is back to normal"
                    );
                }
            }
        }
        metrics.rows.inc_by(events.rows.len() as u64);
        metrics.duplicates.inc_by(events.duplicates);
        for (side, cause) in events.orphans {
            metrics
                .orphans
                .get_or_create(&OrphanLabels {
                    side: side.as_str().to_owned(),
                    cause: cause.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// Updates the gauges (every call), and the status file and the progress line when
    /// due (or `last`); returns the status when it was due.
    pub fn report(
        &mut self,
        ledger: &Ledger,
        poison: &PoisonCounter,
        last: bool,
    ) -> Result<Option<MetricStatus>> {
        let counts = ledger.counts();
        let metrics = &self.telemetry.metrics;
        for (side, waiting) in [
            (Side::Truth, counts.waiting_truths),
            (Side::Prediction, counts.waiting_predictions),
        ] {
            metrics
                .join_pending
                .get_or_create(&SideLabels {
                    side: side.as_str().to_owned(),
                })
                .set(waiting as i64);
        }
        let window = self.stats.window();
        if let Some(window) = &window {
            metrics.window_mae.set(window.mae);
            metrics.window_rmse.set(window.rmse);
            metrics.window_bias.set(window.bias);
            // Undefined while every true value in the window is the same.
            metrics.window_r2.set(window.r2.unwrap_or(f64::NAN));
        }
        let Some(rate) = self.clock.due(counts.rows, last) else {
            return Ok(None);
        };
        let status = MetricStatus {
            updated_ms: now_ms(),
            rows: counts.rows,
            duplicates: counts.duplicates,
            orphans: counts.orphans,
            waiting_truths: counts.waiting_truths as u64,
            waiting_predictions: counts.waiting_predictions as u64,
            dead_lettered: poison.total(),
            error_drift: ErrorDriftScore {
                alarm: self.drift.alarm(),
                score: self.drift.score(),
            },
        };
        // The page's copy, written off the event loop; the last one before `metric` exits.
        if last {
            self.status_file.write_and_wait(&status);
        } else {
            self.status_file.write(&status);
        }
        let quality = match &window {
            Some(w) => format!(
                "last {} rows: MAE {:.1}, bias {:+.1}{}",
                w.count,
                w.mae,
                w.bias,
                if self.drift.alarm() {
                    ", ERROR DRIFT ALARM"
                } else {
                    ""
                }
            ),
            None => "no rows yet".to_owned(),
        };
        let done = if last { "metric stopped: " } else { "" };
        info!(
            "{done}{} rows this run ({rate:.0}/s); {quality}; waiting for a partner: {} true \
             values, {} predictions; {} orphans, {} duplicates dropped, {} dead-lettered",
            counts.rows,
            counts.waiting_truths,
            counts.waiting_predictions,
            counts.orphans,
            counts.duplicates,
            poison.total()
        );
        Ok(Some(status))
    }
}
