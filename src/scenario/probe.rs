//! What the runner watches while a scenario runs, from the files the services already
//! write: the metric log (rows, latency, MAE), features' confirmed IDs, metric's status
//! file (halves waiting), and the services' own log lines for the drift alarms they raise
//! (the only place that says at which item an alarm was raised), and the machine's load
//! average. Everything seen is put into the second of the run it was seen in.

use nnmon_csvlog::LogTail;
use nnmon_scenario::{Alarm, AlarmKind, TimelineRow};
use nnmon_stats::{ErrorStats, METRIC_STATUS_FILE, MetricStatus};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A drift alarm raised as a service's log line says: `model`'s input drift
/// (`input drift: bmi no longer looks like the training data feature="bmi" item=1234`,
/// the item's own number) or `metric`'s error drift (`performance drift: the absolute
/// error has risen … row=1234`, metric's count of rows since it started).
pub fn parse_alarm_line(line: &str) -> Option<(AlarmKind, Option<String>, u64)> {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .map(|value| value.trim_matches('"').to_owned())
    };
    if line.contains("input drift: ") && line.contains("no longer looks like") {
        let item = field("item=")?.parse().ok()?;
        return Some((AlarmKind::FeatureDrift, field("feature="), item));
    }
    if line.contains("performance drift: the absolute error has risen") {
        let row = field("row=")?.parse().ok()?;
        return Some((AlarmKind::ErrorDrift, None, row));
    }
    None
}

/// `model`'s line when it first predicted with its second model (`model swap: items from
/// 3200 on are predicted by /x/stale.json swap_at_item=3200 item=3200`): the item the swap
/// is at. Only that field is read: the file's path may hold spaces, and the runner knows it.
pub fn parse_swap_line(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("model swap: items from ")?;
    rest.split_whitespace()
        .find_map(|word| word.strip_prefix("swap_at_item="))?
        .parse()
        .ok()
}

/// How late features' schedule started after t0, in ms, from the line it logs then
/// (`schedule starts at 1764340000000000, 35 ms late`).
pub fn parse_late_line(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once(crate::services::features::SCHEDULE_LATE)?;
    let (_, rest) = rest.split_once(", ")?;
    rest.split_once(" ms late")?.0.trim().parse().ok()
}

/// How late features' schedule started (see [`parse_late_line`]), from its stderr file.
pub fn features_late_ms(stderr: &Path) -> Option<u64> {
    std::fs::read_to_string(stderr)
        .ok()?
        .lines()
        .find_map(parse_late_line)
}

/// A service's stderr file, read as it grows.
struct LogScan {
    path: PathBuf,
    offset: u64,
    /// Rows logged before this start of `metric`, added to its row counts (`model`'s
    /// alarms carry the items' own numbers: 0).
    rows_before: u64,
}

impl LogScan {
    fn read_new(&mut self, mut on_line: impl FnMut(&str)) {
        let Ok(mut file) = File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while let Ok(read @ 1..) = reader.read_line(&mut line) {
            if !line.ends_with('\n') {
                break; // a partial line: read again next time
            }
            self.offset += read as u64;
            on_line(&line);
            line.clear();
        }
    }
}

/// One second of the run as seen so far.
#[derive(Default)]
struct Second {
    confirmed: u64,
    rows: u64,
    latencies_us: Vec<u64>,
    window_mae: Option<f64>,
    pending: Option<(u64, u64)>,
    alarms: Vec<String>,
    events: Vec<String>,
    load1: Option<f64>,
}

/// Everything the runner has seen.
pub struct Probe {
    log_dir: PathBuf,
    rows_tail: LogTail,
    confirmed_scan: LogScan,
    service_logs: Vec<LogScan>,
    stats: ErrorStats,
    /// Every row's ID and latency, in log order.
    pub rows: Vec<(String, Option<u64>)>,
    /// Every confirmed ID, in confirmation order.
    pub confirmed: Vec<String>,
    pub alarms: Vec<Alarm>,
    seconds: Vec<Second>,
    /// When the latest new row was seen, in seconds after the load started.
    pub last_row_at: f64,
    /// The item `model` said it swapped models at, once it did (marked on the timeline at
    /// the end, in the second that item was due).
    pub swapped_at: Option<u64>,
}

impl Probe {
    /// Watches `log_dir`, where features writes `confirmed_ids_file`; `window` rows make
    /// the MAE column.
    pub fn new(log_dir: &Path, confirmed_ids_file: &Path, window: usize) -> Self {
        let data = nnmon_model::diabetes();
        let mean = data.iter().map(|s| s.target).sum::<f64>() / data.len() as f64;
        Self {
            log_dir: log_dir.to_owned(),
            rows_tail: LogTail::new(
                &log_dir.join("metric_log.csv"),
                &["id", "y_true", "y_pred", "latency_us"],
            ),
            confirmed_scan: LogScan {
                path: confirmed_ids_file.to_owned(),
                offset: 0,
                rows_before: 0,
            },
            service_logs: Vec::new(),
            stats: ErrorStats::new(window, mean),
            rows: Vec::new(),
            confirmed: Vec::new(),
            alarms: Vec::new(),
            seconds: Vec::new(),
            last_row_at: 0.0,
            swapped_at: None,
        }
    }

    /// Watches `metric`'s new stderr file for alarms, its counts offset by the rows
    /// logged before it started (poll first, so that they are all counted).
    pub fn watch_metric(&mut self, stderr: PathBuf) {
        self.service_logs.push(LogScan {
            path: stderr,
            offset: 0,
            rows_before: self.rows.len() as u64,
        });
    }

    /// Watches `model`'s new stderr file for alarms and its model swap.
    pub fn watch_model(&mut self, stderr: PathBuf) {
        self.service_logs.push(LogScan {
            path: stderr,
            offset: 0,
            rows_before: 0,
        });
    }

    fn second(&mut self, at: f64) -> &mut Second {
        let index = at.max(0.0) as usize;
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        &mut self.seconds[index]
    }

    /// Notes an event (a fault, a model swap) at `at` seconds after the load started.
    pub fn event(&mut self, at: f64, text: String) {
        self.second(at).events.push(text);
    }

    /// Reads what is new, `at` seconds after the load started.
    pub fn poll(&mut self, at: f64) {
        let mut new_rows = Vec::new();
        let stats = &mut self.stats;
        // A reset (the log replaced) cannot happen: the run's log folder is its own.
        let _ = self.rows_tail.read_new(|fields| {
            let (Ok(y_true), Ok(y_pred)) = (fields[1].parse::<f64>(), fields[2].parse::<f64>())
            else {
                return;
            };
            stats.push(y_true, y_pred);
            new_rows.push((fields[0].to_owned(), fields[3].parse::<u64>().ok()));
        });
        let mut confirmed = Vec::new();
        self.confirmed_scan
            .read_new(|line| confirmed.push(line.trim_end().to_owned()));
        let mut alarms = Vec::new();
        let mut swaps = Vec::new();
        for scan in &mut self.service_logs {
            let before = scan.rows_before;
            scan.read_new(|line| {
                if let Some(swap) = parse_swap_line(line) {
                    swaps.push(swap);
                }
                if let Some((kind, feature, count)) = parse_alarm_line(line) {
                    alarms.push(Alarm {
                        kind,
                        feature,
                        item: before + count,
                    });
                }
            });
        }
        // A restarted model logs its swap again: the first is the one that counts.
        if self.swapped_at.is_none() {
            self.swapped_at = swaps.first().copied();
        }
        let mae = self.stats.window().map(|w| w.mae);
        let pending = read_status(&self.log_dir)
            .map(|status| (status.waiting_truths, status.waiting_predictions));
        let load1 = super::load::load1();
        let second = self.second(at);
        second.load1 = load1.or(second.load1);
        second.confirmed += confirmed.len() as u64;
        second.rows += new_rows.len() as u64;
        second
            .latencies_us
            .extend(new_rows.iter().filter_map(|(_, latency)| *latency));
        if mae.is_some() {
            second.window_mae = mae;
        }
        if pending.is_some() {
            second.pending = pending;
        }
        for alarm in &alarms {
            let kind = match alarm.kind {
                AlarmKind::FeatureDrift => "feature_drift",
                AlarmKind::ErrorDrift => "error_drift",
            };
            let feature = alarm.feature.as_deref().unwrap_or("absolute_error");
            second
                .alarms
                .push(format!("{kind}:{feature}@{}", alarm.item));
        }
        if !new_rows.is_empty() {
            self.last_row_at = at;
        }
        self.rows.extend(new_rows);
        self.confirmed.extend(confirmed);
        self.alarms.extend(alarms);
    }

    /// Rows and confirmed items seen in the second before `at`.
    pub fn rates_before(&self, at: f64) -> (u64, u64) {
        let index = at.max(1.0) as usize - 1;
        self.seconds
            .get(index)
            .map_or((0, 0), |s| (s.rows, s.confirmed))
    }

    /// The p99 latency (ms) of the rows seen in the second before `at`.
    pub fn p99_before(&self, at: f64) -> Option<f64> {
        let index = at.max(1.0) as usize - 1;
        let second = self.seconds.get(index)?;
        nnmon_scenario::Latency::of_micros(&second.latencies_us).map(|l| l.p99)
    }

    /// The timeline, one row per second; `offered(s)` is the items due in second `s`.
    pub fn timeline(&self, offered: impl Fn(u64) -> u64) -> Vec<TimelineRow> {
        let mut mae = None;
        let mut pending = None;
        self.seconds
            .iter()
            .enumerate()
            .map(|(index, second)| {
                mae = second.window_mae.or(mae);
                pending = second.pending.or(pending);
                let mut row = TimelineRow {
                    second: index as u64,
                    offered_per_s: offered(index as u64),
                    confirmed_per_s: second.confirmed,
                    achieved_per_s: second.rows,
                    window_mae: mae,
                    pending_truths: pending.map(|p| p.0),
                    pending_predictions: pending.map(|p| p.1),
                    alarms: second.alarms.join(";"),
                    events: second.events.join(";"),
                    load1: second.load1,
                    ..TimelineRow::default()
                };
                row.set_latency(&second.latencies_us);
                row
            })
            .collect()
    }
}

/// metric's status file, if it can be read.
pub fn read_status(log_dir: &Path) -> Option<MetricStatus> {
    let text = std::fs::read_to_string(log_dir.join(METRIC_STATUS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_lines_give_kind_feature_and_count() {
        let feature = "2026-11-28T10:00:00.1Z  WARN nnmon::services::model: input drift: bmi no longer looks like the training data feature=\"bmi\" item=1550";
        assert_eq!(
            parse_alarm_line(feature),
            Some((AlarmKind::FeatureDrift, Some("bmi".into()), 1550))
        );
        let error = "2026-11-28T10:00:00.1Z  WARN nnmon::services::metric::monitor: performance drift: the absolute error has risen above what it was row=321";
        assert_eq!(
            parse_alarm_line(error),
            Some((AlarmKind::ErrorDrift, None, 321))
        );
        let swap = "2026-11-28T10:00:00.1Z  INFO nnmon::services::model: model swap: items from 3200 on are predicted by /s/models/stale.json swap_at_item=3200 item=3200";
        assert_eq!(parse_swap_line(swap), Some(3200));
        assert_eq!(parse_alarm_line(swap), None);
        let late = "2026-11-28T10:00:00.1Z  WARN nnmon::services::features: schedule starts at 1764340000000000, 35 ms late t0_us=1764340000000000 late_ms=35";
        assert_eq!(parse_late_line(late), Some(35));
        assert_eq!(parse_late_line(swap), None);
        let cleared = "INFO nnmon::services::model: input drift cleared: bmi looks like the training data again feature=\"bmi\" item=9000";
        assert_eq!(parse_alarm_line(cleared), None);
    }
}
