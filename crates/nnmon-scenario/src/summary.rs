//! What a run leaves behind: `summary.json` ([`Summary`]), the rows of `timeline.csv`
//! ([`TimelineRow`]), and the side-by-side comparison of two summaries ([`compare`]).

use crate::load::{CpuTime, LoadAverage};
use crate::verdict::{Delivery, InjectionOutcome, ScoredAlarm};
use nnmon_stats::nearest_rank;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// Percentiles of latencies in microseconds; `None` when there are none.
    pub fn of_micros(latencies_us: &[u64]) -> Option<Self> {
        let mut ms: Vec<f64> = latencies_us.iter().map(|&us| us as f64 / 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Some(Self {
            p50: nearest_rank(&ms, 0.50)?,
            p90: nearest_rank(&ms, 0.90)?,
            p99: nearest_rank(&ms, 0.99)?,
            max: *ms.last()?,
        })
    }
}

/// One load step's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    pub offered_items_per_s: f64,
    /// Rows logged per second during the step's time.
    pub achieved_items_per_s: f64,
    /// Latency of the step's items (from their scheduled send time to their row).
    pub latency_ms: Option<Latency>,
}

/// A fault as it was carried out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Seconds after the load started.
    pub seconds: f64,
    pub fault: String,
    /// `None` when it went as planned; else what went wrong.
    pub error: Option<String>,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    /// Items features had confirmed by the broker.
    pub items_confirmed: u64,
    /// Rows in the metric log.
    pub rows: u64,
    pub exactly_once: bool,
    pub delivery: Delivery,
    /// Rows over the time from the load's start to the last row.
    pub throughput_items_per_s: f64,
    /// From each item's scheduled send time to its row; absent (`null`) when no row had a
    /// latency.
    pub latency_ms: Option<Latency>,
    /// Lines of orphans.csv.
    pub orphans: u64,
    /// Messages in the dead-letter queue at the end.
    pub dead_lettered: u64,
    pub alarms: Vec<ScoredAlarm>,
    pub false_alarms: u64,
    pub injections: Vec<InjectionOutcome>,
    pub faults: Vec<FaultRecord>,
    pub steps: Vec<StepSummary>,
    pub hypothesis_held: bool,
    /// Why it did not hold (empty when it did).
    pub hypothesis_failures: Vec<String>,
    /// From the first service started to the last stopped.
    pub duration_s: f64,
    /// Each service's CPU time and time waiting runnable for a CPU, over all its starts
    /// and threads. Absent in summaries written before it was measured.
    pub cpu: Option<BTreeMap<String, CpuTime>>,
    /// The machine's 1-minute load average when the run started and ended: a run's
    /// latency depends on it, so it is kept with the figures rather than in `env.json`
    /// (which describes what a rerun would reproduce). Absent in older summaries.
    pub load_average: Option<LoadAverage>,
}

/// One line of `timeline.csv`: one second of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineRow {
    /// Seconds after the load started (this row covers `[second, second + 1)`).
    pub second: u64,
    /// Items the schedule had due in this second.
    pub offered_per_s: u64,
    /// Items confirmed in this second.
    pub confirmed_per_s: u64,
    /// Rows logged in this second.
    pub achieved_per_s: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    /// MAE of the last `--window` rows at the second's end.
    pub window_mae: Option<f64>,
    /// Halves waiting in metric's join, as its status file last said.
    pub pending_truths: Option<u64>,
    pub pending_predictions: Option<u64>,
    /// Alarms first seen in this second (`kind:feature@item`, `;`-separated).
    pub alarms: String,
    /// Faults and injections carried out in this second (`;`-separated).
    pub events: String,
    /// The machine's 1-minute load average as last read in this second.
    pub load1: Option<f64>,
}

impl TimelineRow {
    /// Fills the latency columns from the second's latencies in microseconds.
    pub fn set_latency(&mut self, latencies_us: &[u64]) {
        if let Some(latency) = Latency::of_micros(latencies_us) {
            self.latency_p50_ms = Some(latency.p50);
            self.latency_p90_ms = Some(latency.p90);
            self.latency_p99_ms = Some(latency.p99);
            self.latency_max_ms = Some(latency.max);
        }
    }
}

/// One line of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub metric: String,
    pub a: String,
    pub b: String,
    /// `(b − a) / a`, when both are numbers and `a` is not 0.
    pub change: Option<f64>,
}

fn number(metric: &str, a: f64, b: f64) -> Comparison {
    let text = |v: f64| {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    Comparison {
        metric: metric.to_owned(),
        a: text(a),
        b: text(b),
        change: (a != 0.0).then(|| (b - a) / a),
    }
}

/// A latency figure of two runs, `-` for a run without one.
fn latency(
    metric: &str,
    a: Option<Latency>,
    b: Option<Latency>,
    figure: impl Fn(&Latency) -> f64,
) -> Comparison {
    match (a, b) {
        (Some(a), Some(b)) => number(metric, figure(&a), figure(&b)),
        (a, b) => {
            let text = |l: Option<Latency>| {
                l.map_or_else(|| "-".to_owned(), |l| format!("{:.2}", figure(&l)))
            };
            Comparison {
                metric: metric.to_owned(),
                a: text(a),
                b: text(b),
                change: None,
            }
        }
    }
}

fn flag(metric: &str, a: bool, b: bool) -> Comparison {
    Comparison {
        metric: metric.to_owned(),
        a: a.to_string(),
        b: b.to_string(),
        change: None,
    }
}

fn delays(summary: &Summary) -> String {
    let delays: Vec<String> = summary
        .injections
        .iter()
        .map(|i| {
            i.detection_delay_items
                .map_or_else(|| "none".to_owned(), |d| d.to_string())
        })
        .collect();
    if delays.is_empty() {
        "-".to_owned()
    } else {
        delays.join(", ")
    }
}

/// A figure two runs may lack (older summaries), `-` for a run without it.
fn maybe(metric: &str, a: Option<f64>, b: Option<f64>) -> Comparison {
    match (a, b) {
        (Some(a), Some(b)) => number(metric, a, b),
        (a, b) => {
            let text = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            Comparison {
                metric: metric.to_owned(),
                a: text(a),
                b: text(b),
                change: None,
            }
        }
    }
}

/// The machine's load in two runs: the load average and how long the services waited
/// for a CPU per second they ran on one, in all and per service.
fn load_lines(a: &Summary, b: &Summary) -> Vec<Comparison> {
    let load = |s: &Summary, figure: fn(&LoadAverage) -> f64| s.load_average.as_ref().map(figure);
    let total = |s: &Summary| {
        s.cpu
            .as_ref()
            .and_then(|cpu| CpuTime::total(cpu.values()).wait_per_cpu())
    };
    let mut lines = vec![
        maybe(
            "load_average.start",
            load(a, |l| l.start),
            load(b, |l| l.start),
        ),
        maybe("load_average.end", load(a, |l| l.end), load(b, |l| l.end)),
        maybe("cpu.wait_per_cpu", total(a), total(b)),
    ];
    let services: std::collections::BTreeSet<&String> = a
        .cpu
        .iter()
        .chain(&b.cpu)
        .flat_map(|cpu| cpu.keys())
        .collect();
    for service in services {
        let ratio = |s: &Summary| {
            s.cpu
                .as_ref()
                .and_then(|cpu| cpu.get(service))
                .and_then(CpuTime::wait_per_cpu)
        };
        lines.push(maybe(
            &format!("cpu.{service}.wait_per_cpu"),
            ratio(a),
            ratio(b),
        ));
    }
    lines
}

/// The figures of two runs side by side, with the relative change of each number.
pub fn compare(a: &Summary, b: &Summary) -> Vec<Comparison> {
    let mut lines = vec![
        Comparison {
            metric: "scenario".into(),
            a: a.scenario.clone(),
            b: b.scenario.clone(),
            change: None,
        },
        flag("hypothesis_held", a.hypothesis_held, b.hypothesis_held),
        flag("exactly_once", a.exactly_once, b.exactly_once),
        number(
            "items_confirmed",
            a.items_confirmed as f64,
            b.items_confirmed as f64,
        ),
        number("rows", a.rows as f64, b.rows as f64),
        number(
            "throughput_items_per_s",
            a.throughput_items_per_s,
            b.throughput_items_per_s,
        ),
        latency("latency_ms.p50", a.latency_ms, b.latency_ms, |l| l.p50),
        latency("latency_ms.p90", a.latency_ms, b.latency_ms, |l| l.p90),
        latency("latency_ms.p99", a.latency_ms, b.latency_ms, |l| l.p99),
        latency("latency_ms.max", a.latency_ms, b.latency_ms, |l| l.max),
        number("orphans", a.orphans as f64, b.orphans as f64),
        number(
            "dead_lettered",
            a.dead_lettered as f64,
            b.dead_lettered as f64,
        ),
        number("false_alarms", a.false_alarms as f64, b.false_alarms as f64),
        Comparison {
            metric: "detection_delay_items".into(),
            a: delays(a),
            b: delays(b),
            change: None,
        },
    ];
    lines.extend(load_lines(a, b));
    if a.steps.len() == b.steps.len() {
        for (index, (sa, sb)) in a.steps.iter().zip(&b.steps).enumerate() {
            lines.push(number(
                &format!("steps[{index}].achieved_items_per_s"),
                sa.achieved_items_per_s,
                sb.achieved_items_per_s,
            ));
            if let (Some(la), Some(lb)) = (sa.latency_ms, sb.latency_ms) {
                lines.push(number(
                    &format!("steps[{index}].latency_ms.p99"),
                    la.p99,
                    lb.p99,
                ));
            }
        }
    }
    lines
}

/// The comparison as an aligned text table.
pub fn format_comparison(lines: &[Comparison], a_name: &str, b_name: &str) -> String {
    let change = |c: &Comparison| {
        c.change
            .map_or_else(String::new, |change| format!("{:+.1} %", change * 100.0))
    };
    let widths = [
        lines
            .iter()
            .map(|c| c.metric.len())
            .max()
            .unwrap_or(0)
            .max(6),
        lines
            .iter()
            .map(|c| c.a.len())
            .max()
            .unwrap_or(0)
            .max(a_name.len()),
        lines
            .iter()
            .map(|c| c.b.len())
            .max()
            .unwrap_or(0)
            .max(b_name.len()),
    ];
    let mut text = format!(
        "{:<w0$}  {:>w1$}  {:>w2$}  change\n",
        "metric",
        a_name,
        b_name,
        w0 = widths[0],
        w1 = widths[1],
        w2 = widths[2]
    );
    for line in lines {
        text += &format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {}\n",
            line.metric,
            line.a,
            line.b,
            change(line),
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p99: f64, throughput: f64) -> Summary {
        Summary {
            scenario: "baseline".into(),
            seed: 1,
            items_confirmed: 100,
            rows: 100,
            exactly_once: true,
            delivery: Delivery::default(),
            throughput_items_per_s: throughput,
            latency_ms: Some(Latency {
                p50: 1.0,
                p90: 2.0,
                p99,
                max: 9.0,
            }),
            orphans: 0,
            dead_lettered: 0,
            alarms: Vec::new(),
            false_alarms: 0,
            injections: Vec::new(),
            faults: Vec::new(),
            steps: Vec::new(),
            hypothesis_held: true,
            hypothesis_failures: Vec::new(),
            duration_s: 3.0,
            cpu: Some(BTreeMap::from([(
                "model".to_owned(),
                CpuTime {
                    cpu_s: 2.0,
                    wait_s: 6.0,
                },
            )])),
            load_average: Some(LoadAverage {
                start: 1.5,
                end: 3.0,
            }),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_in_milliseconds() {
        let latencies: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let latency = Latency::of_micros(&latencies).expect("some");
        assert_eq!(
            latency,
            Latency {
                p50: 50.0,
                p90: 90.0,
                p99: 99.0,
                max: 100.0
            }
        );
        assert_eq!(Latency::of_micros(&[]), None);
    }

    #[test]
    fn comparison_gives_the_relative_change() {
        let lines = compare(&summary(4.0, 100.0), &summary(5.0, 90.0));
        let p99 = lines
            .iter()
            .find(|l| l.metric == "latency_ms.p99")
            .expect("p99");
        assert_eq!((p99.a.as_str(), p99.b.as_str()), ("4", "5"));
        assert_eq!(p99.change, Some(0.25));
        let table = format_comparison(&lines, "A", "B");
        assert!(table.contains("+25.0 %"), "{table}");
        assert!(table.contains("-10.0 %"), "{table}");
    }

    #[test]
    fn a_summary_round_trips_through_json() {
        let original = summary(4.0, 100.0);
        let json = serde_json::to_string(&original).expect("serialize");
        let back: Summary = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, original);
        assert!(json.contains("\"latency_ms\":{\"p50\":1.0"), "{json}");
        // No row with a latency: null, not zeros a reader would take for a measurement.
        let empty = Summary {
            latency_ms: None,
            ..original
        };
        let json = serde_json::to_string(&empty).expect("serialize");
        assert!(json.contains("\"latency_ms\":null"), "{json}");
        let lines = compare(&empty, &summary(5.0, 90.0));
        let p99 = lines.iter().find(|l| l.metric == "latency_ms.p99");
        assert_eq!(
            p99.map(|l| (l.a.as_str(), l.b.as_str(), l.change)),
            Some(("-", "5.00", None))
        );
    }

    #[test]
    fn a_summary_without_the_load_still_loads_and_compares() {
        let measured = summary(4.0, 100.0);
        let mut json: serde_json::Value = serde_json::to_value(&measured).expect("serialize");
        let object = json.as_object_mut().expect("an object");
        object.remove("cpu");
        object.remove("load_average");
        let old: Summary = serde_json::from_value(json).expect("an older summary loads");
        assert_eq!((old.cpu.as_ref(), old.load_average), (None, None));
        let lines = compare(&old, &measured);
        let line = |metric: &str| {
            lines
                .iter()
                .find(|l| l.metric == metric)
                .map(|l| (l.a.clone(), l.b.clone(), l.change))
        };
        assert_eq!(
            line("cpu.wait_per_cpu"),
            Some(("-".to_owned(), "3.00".to_owned(), None))
        );
        assert_eq!(
            line("cpu.model.wait_per_cpu"),
            Some(("-".to_owned(), "3.00".to_owned(), None))
        );
        assert_eq!(
            line("load_average.end"),
            Some(("-".to_owned(), "3.00".to_owned(), None))
        );
        let both = compare(&measured, &measured);
        let start = both.iter().find(|l| l.metric == "load_average.start");
        assert_eq!(start.map(|l| l.change), Some(Some(0.0)));
    }
}
