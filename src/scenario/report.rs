//! The files a run leaves in its folder: `summary.json`, `timeline.csv`, `env.json`, the
//! charts `rate_latency.png` and `mae.png`, and `report.md`, which puts them together.

use super::environment::Environment;
use anyhow::{Context, Result};
use nnmon_report::timeline::{Mark, Panel, Series, render_timeline};
use nnmon_scenario::{CpuTime, Scenario, Summary, TimelineRow};
use std::fmt::Write as _;
use std::path::Path;

pub const SUMMARY_FILE: &str = "summary.json";
pub const TIMELINE_FILE: &str = "timeline.csv";
pub const ENV_FILE: &str = "env.json";
pub const REPORT_FILE: &str = "report.md";
pub const RATE_CHART: &str = "rate_latency.png";
pub const MAE_CHART: &str = "mae.png";

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write(path, text.as_bytes())
}

/// Reads a `summary.json` (or the one in a run's folder).
pub fn read_summary(path: &Path) -> Result<Summary> {
    let file = if path.is_dir() {
        path.join(SUMMARY_FILE)
    } else {
        path.to_owned()
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a summary", file.display()))
}

/// Moments to mark on the charts: faults and injections, from the timeline's events.
fn marks(timeline: &[TimelineRow]) -> Vec<Mark> {
    timeline
        .iter()
        .flat_map(|row| {
            row.events
                .split(';')
                .filter(|e| !e.is_empty())
                .map(|event| Mark {
                    second: row.second as f64,
                    label: event.to_owned(),
                })
        })
        .collect()
}

fn series(
    name: &str,
    timeline: &[TimelineRow],
    value: impl Fn(&TimelineRow) -> Option<f64>,
) -> Series {
    Series {
        name: name.to_owned(),
        points: timeline
            .iter()
            .filter_map(|row| value(row).map(|v| (row.second as f64 + 0.5, v)))
            .collect(),
    }
}

/// Writes every file of the run into `out`.
pub fn write_all(
    out: &Path,
    scenario: &Scenario,
    summary: &Summary,
    timeline: &[TimelineRow],
    environment: &Environment,
) -> Result<()> {
    json(&out.join(SUMMARY_FILE), summary)?;
    json(&out.join(ENV_FILE), environment)?;
    let mut csv = csv::Writer::from_path(out.join(TIMELINE_FILE))
        .with_context(|| format!("writing {}", out.join(TIMELINE_FILE).display()))?;
    for row in timeline {
        csv.serialize(row)?;
    }
    csv.flush()?;
    let seconds = timeline.len() as f64;
    let marks = marks(timeline);
    let rates = Panel {
        y_label: "items per second".into(),
        series: vec![
            series("offered", timeline, |r| Some(r.offered_per_s as f64)),
            series("achieved (rows)", timeline, |r| {
                Some(r.achieved_per_s as f64)
            }),
        ],
    };
    let latency = Panel {
        y_label: "latency, ms".into(),
        series: vec![
            series("p50", timeline, |r| r.latency_p50_ms),
            series("p99", timeline, |r| r.latency_p99_ms),
        ],
    };
    let title = format!("{}: rate and latency per second", scenario.name);
    let png = render_timeline(&title, seconds, &[rates, latency], &marks)?;
    write(&out.join(RATE_CHART), &png)?;
    let mae = Panel {
        y_label: "MAE of the last rows".into(),
        series: vec![series("window MAE", timeline, |r| r.window_mae)],
    };
    let title = format!("{}: error over time", scenario.name);
    let png = render_timeline(&title, seconds, &[mae], &marks)?;
    write(&out.join(MAE_CHART), &png)?;
    write(
        &out.join(REPORT_FILE),
        report(scenario, summary, environment).as_bytes(),
    )
}

fn optional(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// Seconds waiting for a CPU per second on one, for people; `-` without CPU time.
pub fn wait_per_cpu(time: CpuTime) -> String {
    time.wait_per_cpu()
        .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
}

/// The machine's load section: the load average and each service's CPU and runqueue
/// wait, with a warning when they waited longer than they ran.
fn machine_load(text: &mut String, summary: &Summary) {
    let Some(cpu) = &summary.cpu else {
        return;
    };
    let _ = writeln!(text, "## Machine load\n");
    if let Some(load) = summary.load_average {
        let _ = writeln!(
            text,
            "1-minute load average {:.2} at the start, {:.2} at the end.\n",
            load.start, load.end
        );
    }
    let _ = writeln!(
        text,
        "| service | on a CPU (s) | waiting for a CPU (s) | wait / cpu |\n|---|---|---|---|"
    );
    let total = CpuTime::total(cpu.values());
    for (service, time) in cpu.iter().chain([(&"all".to_owned(), &total)]) {
        let _ = writeln!(
            text,
            "| {service} | {:.2} | {:.2} | {} |",
            time.cpu_s,
            time.wait_s,
            wait_per_cpu(*time)
        );
    }
    if total.contended() {
        let _ = writeln!(
            text,
            "\n**The services waited for a CPU longer than they ran: the latency figures are \
             dominated by the machine's load, not by nnmon.**"
        );
    }
    text.push('\n');
}

/// `report.md`: the verdict, the figures, and the charts.
fn report(scenario: &Scenario, summary: &Summary, environment: &Environment) -> String {
    let mut text = format!("# Scenario `{}`\n\n", scenario.name);
    if !scenario.description.is_empty() {
        let _ = writeln!(text, "{}\n", scenario.description.trim());
    }
    let verdict = if summary.hypothesis_held {
        "**Hypothesis held.**".to_owned()
    } else {
        format!(
            "**Hypothesis FAILED:**\n\n{}",
            summary
                .hypothesis_failures
                .iter()
                .map(|f| format!("- {f}\n"))
                .collect::<String>()
        )
    };
    let _ = writeln!(text, "{verdict}\n");
    let latency = summary.latency_ms.map_or_else(
        || "none measured".to_owned(),
        |l| {
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} ms",
                l.p50, l.p90, l.p99, l.max
            )
        },
    );
    let _ = writeln!(
        text,
        "| | |\n|---|---|\n| items confirmed | {} |\n| rows | {} |\n| exactly once | {} |\n\
         | throughput | {:.0} items/s |\n| latency p50 / p90 / p99 / max | {latency} |\n\
         | orphans | {} |\n| dead-lettered | {} |\n| false alarms | {} |\n| seed | {} |\n",
        summary.items_confirmed,
        summary.rows,
        summary.exactly_once,
        summary.throughput_items_per_s,
        summary.orphans,
        summary.dead_lettered,
        summary.false_alarms,
        summary.seed,
    );
    machine_load(&mut text, summary);
    if summary.steps.len() > 1 {
        let _ = writeln!(
            text,
            "## Load steps\n\n| offered items/s | achieved items/s | p50 ms | p99 ms |\n|---|---|---|---|"
        );
        for step in &summary.steps {
            let (p50, p99) = step.latency_ms.map_or(("-".into(), "-".into()), |l| {
                (format!("{:.1}", l.p50), format!("{:.1}", l.p99))
            });
            let _ = writeln!(
                text,
                "| {:.0} | {:.0} | {p50} | {p99} |",
                step.offered_items_per_s, step.achieved_items_per_s
            );
        }
        text.push('\n');
    }
    if !summary.injections.is_empty() {
        let _ = writeln!(
            text,
            "## Injections\n\n| item | change | detection delay (items) |\n|---|---|---|"
        );
        for injection in &summary.injections {
            let _ = writeln!(
                text,
                "| {} | {} | {} |",
                injection.item,
                injection.change,
                optional(injection.detection_delay_items)
            );
        }
        text.push('\n');
    }
    if !summary.alarms.is_empty() {
        let _ = writeln!(
            text,
            "## Alarms\n\n| kind | feature | item | detection delay (items) |\n|---|---|---|---|"
        );
        for alarm in &summary.alarms {
            let _ = writeln!(
                text,
                "| {:?} | {} | {} | {} |",
                alarm.kind,
                alarm.feature.as_deref().unwrap_or("-"),
                alarm.item,
                optional(alarm.detection_delay_items.map(|d| d.to_string()))
                    .replace("none", "false alarm")
            );
        }
        text.push('\n');
    }
    if !summary.faults.is_empty() {
        let _ = writeln!(
            text,
            "## Faults\n\n| at (s) | fault | outcome |\n|---|---|---|"
        );
        for fault in &summary.faults {
            let _ = writeln!(
                text,
                "| {:.1} | {} | {} |",
                fault.seconds,
                fault.fault,
                fault.error.as_deref().unwrap_or("done")
            );
        }
        text.push('\n');
    }
    let _ = writeln!(
        text,
        "## Charts\n\n![rate and latency]({RATE_CHART})\n\n![MAE]({MAE_CHART})\n\n\
         ## Environment\n\nnnmon {} at {}{}, rustc {}, broker {}, {}, {} ({} cores); \
         scenario sha256 {}. Per-second figures in `{TIMELINE_FILE}`.",
        environment.nnmon_version,
        environment
            .git_revision
            .as_deref()
            .unwrap_or("unknown revision"),
        if environment.git_dirty == Some(true) {
            " (uncommitted changes)"
        } else {
            ""
        },
        environment.rustc.as_deref().unwrap_or("unknown"),
        environment.broker_version.as_deref().unwrap_or("unknown"),
        environment.os,
        environment.cpu_model.as_deref().unwrap_or("unknown CPU"),
        environment.cpu_cores,
        environment.scenario_sha256,
    );
    text
}
