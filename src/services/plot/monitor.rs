//! What `plot` knows: statistics of the metric log's rows, read incrementally, and the
//! status files the other services write beside it.

use anyhow::Result;
use nnmon_csvlog::LogTail;
use nnmon_report::{ChartData, chart};
use nnmon_stats::status::{FEATURE_DRIFT_FILE, METRIC_STATUS_FILE};
use nnmon_stats::{
    ErrorStats, FeatureDriftReport, Histogram, MetricStatus, QuantileSketch, RegressionStats,
    nearest_rank,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tracing::{info, warn};

/// Points of history kept for the page's time series (an hour at the default interval of
/// 10 s).
pub const HISTORY_POINTS: usize = 360;
/// Recent `(y_true, y_pred)` pairs kept for the page's scatter plot.
pub const RECENT_PAIRS: usize = 500;

/// Quantiles of the row latency (publish by `features` to the row written), in ms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl LatencyStats {
    fn of(count: usize, quantile: impl Fn(f64) -> Option<f64>) -> Option<Self> {
        Some(Self {
            count: count as u64,
            p50_ms: quantile(0.5)?,
            p90_ms: quantile(0.9)?,
            p99_ms: quantile(0.99)?,
        })
    }
}

/// Every statistic `plot` has, as `/api/summary` and `summary.json` give it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// When these figures were computed, in ms since the Unix epoch.
    pub updated_ms: u64,
    /// Rows read from the metric log.
    pub rows: u64,
    /// Rows skipped because a value was not a number.
    pub unreadable_rows: u64,
    /// Rows in the window of `window`.
    pub window_size: usize,
    /// The last `window_size` rows (exact).
    pub window: Option<RegressionStats>,
    /// Every row (quantiles within 0.1 %).
    pub total: Option<RegressionStats>,
    pub latency_window: Option<LatencyStats>,
    pub latency_total: Option<LatencyStats>,
    /// The absolute errors of every row, binned from 0.
    pub histogram: Histogram,
    /// `model`'s input-drift report; `None`: not reported yet.
    pub feature_drift: Option<FeatureDriftReport>,
    /// `metric`'s join health and error alarm; `None`: not reported yet.
    pub metric: Option<MetricStatus>,
    /// With `--shards N` > 1: how many shards were heard from. Absent with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardsSummary>,
}

/// Which shards of a sharded pipeline were heard from, and how its rows are spread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardsSummary {
    /// `--shards`: how many there are.
    pub shards: u16,
    /// How many reported: have rows in the view, or sent a status while this `plot` ran
    /// (a status file older than its start is a past run's, and is not counted).
    pub reported: u16,
    /// Rows from each shard, by shard number.
    pub rows: Vec<u64>,
    /// Whether each shard's status (join health, error alarm) was received while this
    /// `plot` ran.
    pub status: Vec<bool>,
}

impl ShardsSummary {
    fn of(rows: &[u64], status: Vec<bool>) -> Self {
        let heard = rows.iter().zip(&status).filter(|&(&n, &s)| n > 0 || s);
        Self {
            shards: u16::try_from(rows.len()).unwrap_or(u16::MAX),
            reported: u16::try_from(heard.count()).unwrap_or(u16::MAX),
            rows: rows.to_vec(),
            status,
        }
    }
}

/// One point of the page's time series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub t_ms: u64,
    pub rows: u64,
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    pub bias: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// What the page receives at each refresh: the summary, the recent history and pairs.
#[derive(Clone, Debug, Serialize)]
pub struct PageUpdate<'a> {
    pub summary: &'a Summary,
    pub history: &'a VecDeque<HistoryPoint>,
    /// Recent `[y_true, y_pred]`.
    pub pairs: &'a VecDeque<[f64; 2]>,
}

/// The statistics of a run of rows, in memory that does not grow with them.
struct Rows {
    window: usize,
    stats: ErrorStats,
    latency: QuantileSketch,
    recent_latency: VecDeque<f64>,
    pairs: VecDeque<[f64; 2]>,
}

/// Pushes `value` to a ring of at most `capacity` values.
fn push_bounded<T>(ring: &mut VecDeque<T>, capacity: usize, value: T) {
    if ring.len() == capacity {
        ring.pop_front();
    }
    ring.push_back(value);
}

impl Rows {
    fn new(window: usize, reference_mean: f64) -> Self {
        Self {
            window,
            stats: ErrorStats::new(window, reference_mean),
            latency: QuantileSketch::new(),
            recent_latency: VecDeque::with_capacity(window),
            pairs: VecDeque::with_capacity(RECENT_PAIRS),
        }
    }

    fn push(&mut self, y_true: f64, y_pred: f64, latency_ms: Option<f64>) {
        self.stats.push(y_true, y_pred);
        push_bounded(&mut self.pairs, RECENT_PAIRS, [y_true, y_pred]);
        if let Some(ms) = latency_ms.filter(|ms| ms.is_finite()) {
            self.latency.record(ms);
            push_bounded(&mut self.recent_latency, self.window, ms);
        }
    }

    /// Continues these rows with `later` ones.
    fn append(&mut self, later: Rows) {
        self.stats.append(&later.stats);
        self.latency.merge(&later.latency);
        for ms in later.recent_latency {
            push_bounded(&mut self.recent_latency, self.window, ms);
        }
        for pair in later.pairs {
            push_bounded(&mut self.pairs, RECENT_PAIRS, pair);
        }
    }
}

/// File times lag the clock by up to a kernel tick: a status written just after the start
/// must not look older than it.
const MTIME_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows the metric log and keeps the statistics of every row read so far.
pub struct Monitor {
    log_dir: PathBuf,
    tail: LogTail,
    /// Rows of each shard, when the log is the view of all shards.
    shard_rows: Option<Vec<u64>>,
    window: usize,
    reference_mean: f64,
    rows: Rows,
    history: VecDeque<HistoryPoint>,
    unreadable: u64,
    /// Status files already warned about as unreadable, so a bad file warns once.
    warned: Vec<PathBuf>,
    /// When this `plot` started, less a second of the file system's coarse timestamps:
    /// sharded, a shard's status file last written before then is a past run's.
    started: SystemTime,
}

impl Monitor {
    /// Follows `<log_dir>/metric_log.csv`, with statistics over windows of `window` rows.
    pub fn new(log_dir: &Path, window: usize) -> Self {
        Self::following(log_dir, crate::services::metric::METRIC_LOG, window, None)
    }

    /// Follows `<log_dir>/all_shards_log.csv`, the rows of `shards` shards.
    pub fn of_all_shards(log_dir: &Path, window: usize, shards: u16) -> Self {
        let log = super::collector::COMBINED_LOG;
        Self::following(log_dir, log, window, Some(shards))
    }

    /// Follows `<log_dir>/<log>`; with `shards`, counts the rows of each (its `shard`
    /// column).
    fn following(log_dir: &Path, log: &str, window: usize, shards: Option<u16>) -> Self {
        let mut columns = vec!["y_true", "y_pred", "latency_us"];
        if shards.is_some() {
            columns.push("shard");
        }
        let targets = nnmon_model::diabetes();
        // The dummy baseline predicts the training targets' mean.
        let reference_mean =
            targets.iter().map(|s| s.target).sum::<f64>() / targets.len().max(1) as f64;
        let window = window.max(1);
        Self {
            log_dir: log_dir.to_owned(),
            tail: LogTail::new(&log_dir.join(log), &columns),
            shard_rows: shards.map(|n| vec![0; usize::from(n)]),
            window,
            reference_mean,
            rows: Rows::new(window, reference_mean),
            history: VecDeque::with_capacity(HISTORY_POINTS),
            unreadable: 0,
            warned: Vec::new(),
            started: SystemTime::now() - MTIME_SLACK,
        }
    }

    /// Reads the rows appended since the last call; returns how many.
    pub fn read_new(&mut self) -> Result<usize> {
        let mut unreadable = 0;
        // The new rows' statistics, in bounded memory however many there are (a first
        // read of a long log hands out millions); whether they continue the rows read
        // before or replace them (a new log) is known only once they are all read.
        let mut fresh = Rows::new(self.window, self.reference_mean);
        let mut fresh_shard_rows = self.shard_rows.as_ref().map(|rows| vec![0; rows.len()]);
        let event = self.tail.read_new(|row| {
            let [y_true, y_pred, latency_us, shard @ ..] = row else {
                return;
            };
            if let (Some(counts), Some(shard)) = (&mut fresh_shard_rows, shard.first())
                && let Some(count) = shard.parse().ok().and_then(|s: usize| counts.get_mut(s))
            {
                *count += 1;
            }
            match (y_true.parse::<f64>(), y_pred.parse::<f64>()) {
                (Ok(t), Ok(p)) if t.is_finite() && p.is_finite() => {
                    // Empty when the producer did not say when it published.
                    let latency_ms = latency_us.parse::<f64>().ok().map(|us| us / 1000.0);
                    fresh.push(t, p, latency_ms);
                }
                _ => unreadable += 1,
            }
        })?;
        if event.reset {
            info!("the metric log was replaced; starting over");
            self.rows = Rows::new(self.window, self.reference_mean);
            self.shard_rows
                .iter_mut()
                .flatten()
                .for_each(|count| *count = 0);
        }
        if let (Some(counts), Some(fresh)) = (&mut self.shard_rows, fresh_shard_rows) {
            counts
                .iter_mut()
                .zip(fresh)
                .for_each(|(count, new)| *count += new);
        }
        if unreadable > 0 && self.unreadable == 0 {
            warn!(
                unreadable,
                "skipping rows whose y_true or y_pred is not a number"
            );
        }
        self.unreadable += unreadable;
        self.rows.append(fresh);
        Ok(event.rows)
    }

    pub fn rows(&self) -> u64 {
        self.rows.stats.count()
    }

    /// Every statistic as of `now_ms`, with the status files as they are on disk now.
    pub fn summary(&mut self, now_ms: u64) -> Summary {
        // Sharded, each shard's status is in its folder: the view shows them merged.
        let (metric, shards) = match self.shard_rows.clone() {
            None => (self.status_file(METRIC_STATUS_FILE), None),
            Some(counts) => {
                let statuses: Vec<Option<MetricStatus>> = (0..counts.len() as u16)
                    .map(|shard| {
                        let folder = crate::services::metric::shard_dir(Path::new(""), shard);
                        let file = folder.join(METRIC_STATUS_FILE);
                        // Written (by the collector or a local shard) since the start, by
                        // this machine's clock, whatever the shard's clock says.
                        let fresh = std::fs::metadata(self.log_dir.join(&file))
                            .and_then(|metadata| metadata.modified())
                            .is_ok_and(|written| written >= self.started);
                        fresh.then(|| self.status_file(file)).flatten()
                    })
                    .collect();
                let heard = statuses.iter().map(Option::is_some).collect();
                let metric = MetricStatus::merge(statuses.iter().flatten());
                (metric, Some(ShardsSummary::of(&counts, heard)))
            }
        };
        let rows = &self.rows;
        let mut recent: Vec<f64> = rows.recent_latency.iter().copied().collect();
        recent.sort_unstable_by(f64::total_cmp);
        Summary {
            updated_ms: now_ms,
            rows: self.rows.stats.count(),
            unreadable_rows: self.unreadable,
            window_size: self.window,
            window: rows.stats.window(),
            total: rows.stats.total(),
            latency_window: LatencyStats::of(recent.len(), |q| nearest_rank(&recent, q)),
            latency_total: LatencyStats::of(rows.latency.count() as usize, |q| {
                rows.latency.quantile(q)
            }),
            histogram: rows.stats.histogram(chart::BINS),
            feature_drift: self.status_file(FEATURE_DRIFT_FILE),
            metric,
            shards,
        }
    }

    /// Adds `summary` to the time series.
    pub fn record_history(&mut self, summary: &Summary) {
        if self.history.len() == HISTORY_POINTS {
            self.history.pop_front();
        }
        let window = summary.window.as_ref();
        let latency = summary.latency_window.as_ref();
        self.history.push_back(HistoryPoint {
            t_ms: summary.updated_ms,
            rows: summary.rows,
            mae: window.map(|w| w.mae),
            rmse: window.map(|w| w.rmse),
            bias: window.map(|w| w.bias),
            latency_p50_ms: latency.map(|l| l.p50_ms),
            latency_p99_ms: latency.map(|l| l.p99_ms),
        });
    }

    pub fn page_update<'a>(&'a self, summary: &'a Summary) -> PageUpdate<'a> {
        PageUpdate {
            summary,
            history: &self.history,
            pairs: &self.rows.pairs,
        }
    }

    /// A status file another service writes; `None` while it has not written one. One it
    /// wrote badly is warned about once and treated as not written.
    fn status_file<T: serde::de::DeserializeOwned>(&mut self, name: impl AsRef<Path>) -> Option<T> {
        let path = self.log_dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.warn_once(&path, &e);
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(value) => Some(value),
            Err(e) => {
                self.warn_once(&path, &e);
                None
            }
        }
    }

    fn warn_once(&mut self, path: &Path, error: &dyn std::fmt::Display) {
        if !self.warned.iter().any(|p| p == path) {
            warn!(path = %path.display(), %error, "ignoring an unreadable status file");
            self.warned.push(path.to_owned());
        }
    }

    /// The chart of `summary` as PNG bytes.
    pub fn render_chart(summary: &Summary) -> Result<Vec<u8>> {
        let data = ChartData {
            histogram: &summary.histogram,
            total: summary.total.as_ref(),
            window: summary.window.as_ref(),
            window_size: summary.window_size,
            updated_ms: summary.updated_ms,
            shards: summary.shards.as_ref().map(|s| (s.reported, s.shards)),
        };
        Ok(chart::render_png(&data)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nnmon_stats::{ErrorDriftScore, FeatureScore};

    fn write_log(dir: &Path, rows: &str) {
        let header = crate::services::metric::METRIC_HEADER;
        std::fs::write(
            dir.join(crate::services::metric::METRIC_LOG),
            format!("{header}\n{rows}"),
        )
        .expect("write the log");
    }

    #[test]
    fn reads_rows_latency_and_status_files_missing_or_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_log(dir.path(), "a,10,12,2,3000\nb,20,17,3,\nc,x,1,1,1\n");
        let mut monitor = Monitor::new(dir.path(), 2);
        assert_eq!(monitor.read_new().expect("read"), 3);
        let summary = monitor.summary(7);
        assert_eq!((summary.rows, summary.unreadable_rows), (2, 1));
        let window = summary.window.expect("window stats");
        assert_eq!((window.count, window.mae, window.bias), (2, 2.5, -0.5));
        // Only row a said when it was published.
        let latency = summary.latency_total.expect("latency");
        assert_eq!(latency.count, 1);
        // From the sketch: within its relative error.
        assert!((latency.p50_ms - 3.0).abs() <= 3.0 * QuantileSketch::RELATIVE_ERROR);
        assert_eq!((summary.feature_drift, summary.metric), (None, None));

        let status = MetricStatus {
            updated_ms: 5,
            rows: 2,
            duplicates: 0,
            orphans: 1,
            waiting_truths: 0,
            waiting_predictions: 3,
            dead_lettered: 4,
            error_drift: ErrorDriftScore {
                alarm: false,
                score: 0.25,
            },
        };
        let drift = FeatureDriftReport {
            updated_ms: 6,
            items: 600,
            window: 500,
            features: vec![FeatureScore {
                name: "bmi".into(),
                statistic: 0.5,
                p_value: 1e-9,
                alarm: true,
            }],
        };
        let status_json = serde_json::to_string(&status).expect("json");
        let drift_json = serde_json::to_string(&drift).expect("json");
        std::fs::write(dir.path().join(METRIC_STATUS_FILE), status_json).expect("write");
        std::fs::write(dir.path().join(FEATURE_DRIFT_FILE), drift_json).expect("write");
        let summary = monitor.summary(8);
        assert_eq!(summary.metric, Some(status));
        assert_eq!(summary.feature_drift, Some(drift));
        // A file cut short is "not reported", not an error.
        std::fs::write(dir.path().join(METRIC_STATUS_FILE), "{\"updated_ms\":").expect("write");
        assert_eq!(monitor.summary(9).metric, None);
    }

    #[test]
    fn a_shard_status_from_before_the_start_is_not_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = MetricStatus {
            updated_ms: 5,
            rows: 2,
            duplicates: 0,
            orphans: 0,
            waiting_truths: 0,
            waiting_predictions: 0,
            dead_lettered: 0,
            error_drift: ErrorDriftScore {
                alarm: false,
                score: 0.0,
            },
        };
        let json = serde_json::to_string(&status).expect("json");
        let write_status = |shard: u16| {
            let folder = crate::services::metric::shard_dir(dir.path(), shard);
            std::fs::create_dir_all(&folder).expect("folder");
            let path = folder.join(METRIC_STATUS_FILE);
            std::fs::write(&path, &json).expect("write");
            path
        };
        // A past run's file, written an hour before this plot started.
        let old = std::fs::File::options()
            .write(true)
            .open(write_status(0))
            .expect("open");
        let an_hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        old.set_modified(an_hour_ago).expect("set the time");
        let mut monitor = Monitor::of_all_shards(dir.path(), 10, 2);
        let shards = monitor.summary(1).shards.expect("sharded");
        assert_eq!((shards.reported, shards.status), (0, vec![false, false]));
        assert_eq!(monitor.summary(1).metric, None);
        write_status(1);
        let shards = monitor.summary(2).shards.expect("sharded");
        assert_eq!((shards.reported, shards.status), (1, vec![false, true]));
    }

    #[test]
    fn a_replaced_log_starts_the_statistics_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_log(dir.path(), "a,10,12,2,\nb,20,17,3,\n");
        let mut monitor = Monitor::new(dir.path(), 10);
        monitor.read_new().expect("read");
        let replacement = dir.path().join("new.csv");
        std::fs::write(
            &replacement,
            format!("{}\nc,1,2,1,\n", crate::services::metric::METRIC_HEADER),
        )
        .expect("write");
        std::fs::rename(
            &replacement,
            dir.path().join(crate::services::metric::METRIC_LOG),
        )
        .expect("rename");
        monitor.read_new().expect("read");
        assert_eq!(monitor.rows(), 1);
        let summary = monitor.summary(1);
        monitor.record_history(&summary);
        let update = serde_json::to_value(monitor.page_update(&summary)).expect("json");
        assert_eq!(update["pairs"], serde_json::json!([[1.0, 2.0]]));
        assert_eq!(update["history"][0]["rows"], 1);
    }
}
