//! `nnmon scenario run` and `nnmon scenario compare`: the research harness's I/O shell
//! around the pure `nnmon-scenario` crate.
//!
//! # Layout
//! - [`services`]: the pipeline's services as child processes (this binary), signalled,
//!   restarted and stopped.
//! - [`proxy`]: a local TCP proxy between the services and the broker that can hold every
//!   byte (the `partition` fault).
//! - [`broker`]: the runner's own broker work — poison messages, the dead-letter count,
//!   deleting the run's queues — and `rabbitmqctl`.
//! - [`probe`]: what the runner watches while the scenario runs (the metric log, the
//!   confirmed IDs, metric's status file, the services' alarm lines), second by second.
//! - [`load`]: the machine's load from `/proc` (the services' CPU and runqueue wait, the
//!   load average).
//! - [`environment`]: what `env.json` says about the machine and the checkout.
//! - [`report`]: the files of a run's folder.
//!
//! A run: parse the file → start `model` (with `--swap-model`/`--swap-at-item` if the
//! file swaps the model: the swap lands on that item exactly) and `metric` (through the
//! proxy if a partition is planned) → choose the load's start t0 and start
//! `features --scenario FILE --start-at t0` (it keeps the schedule and applies the drift
//! injections; the runner times faults and measures against the same t0) → carry out
//! faults at their times while polling → once features has exited, wait for every
//! confirmed item's row → stop the services → judge
//! ([`nnmon_scenario::check_hypothesis`]) → write the folder → exit non-zero if the
//! hypothesis failed.

mod broker;
mod environment;
mod load;
mod probe;
mod proxy;
mod report;
mod services;

use crate::cli::{ScenarioCompareArgs, ScenarioRunArgs};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nnmon_broker::{Broker, BrokerUrls};
use nnmon_proto::QueueNames;
use nnmon_scenario::{
    Change, CpuTime, FaultAction, FaultRecord, Latency, LoadAverage, Observed, Scenario,
    StepSummary, Summary, check_delivery, check_hypothesis, compare, format_comparison,
    score_alarms,
};
use probe::Probe;
use services::Services;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How often the runner looks at the files.
const POLL: Duration = Duration::from_millis(250);
/// How long a service may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(25);
/// How long features may run past its schedule before the run is called off.
const FEATURES_GRACE: Duration = Duration::from_secs(120);
/// Once features is done, how long the rows may stop growing before the runner stops
/// waiting for the missing ones.
const DRAIN_STALL: Duration = Duration::from_secs(20);

/// One thing the runner does at a time after the load started.
#[derive(Clone, Debug)]
enum Action {
    Signal { service: &'static str, kill: bool },
    Restart(&'static str),
    BrokerRestart(Duration),
    Hold(bool),
    Poison(u64),
}

/// What an action reports, possibly from a background task.
enum Report {
    /// A moment to mark on the timeline.
    Event { at: f64, what: String },
    /// The action is over: carried out, or failed with `error`.
    Done {
        at: f64,
        what: String,
        error: Option<String>,
        /// It was a broker restart: the broker has started again (or failed to).
        broker: bool,
    },
}

/// The scenario's faults as timed actions, in time order.
fn actions(scenario: &Scenario) -> Vec<(Duration, Action)> {
    let mut actions = Vec::new();
    for fault in &scenario.faults {
        match &fault.action {
            FaultAction::Stop {
                service,
                kill,
                down,
            } => {
                let service = service.as_str();
                actions.push((
                    fault.at,
                    Action::Signal {
                        service,
                        kill: *kill,
                    },
                ));
                actions.push((fault.at + *down, Action::Restart(service)));
            }
            FaultAction::BrokerRestart { down } => {
                actions.push((fault.at, Action::BrokerRestart(*down)));
            }
            FaultAction::Partition { down } => {
                actions.push((fault.at, Action::Hold(true)));
                actions.push((fault.at + *down, Action::Hold(false)));
            }
            FaultAction::Poison { count } => actions.push((fault.at, Action::Poison(*count))),
        }
    }
    actions.sort_by_key(|(at, _)| *at);
    actions
}

/// How long before the load's start features is started: time to reach the broker, so
/// that the first items are not sent late in a burst.
const START_LEAD: Duration = Duration::from_secs(1);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `results/<name>-<UTC time>`, e.g. `results/baseline-20261128T104500Z`.
fn default_out(name: &str, started_ms: u64) -> PathBuf {
    let utc: String = nnmon_report::format_utc(started_ms)
        .trim_end_matches(" UTC")
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == ' ')
        .map(|c| if c == ' ' { 'T' } else { c })
        .collect();
    PathBuf::from("results").join(format!("{name}-{utc}Z"))
}

/// `out`, which must be missing or empty: a second run's files would mix with the first's.
fn fresh_out(out: &Path) -> Result<PathBuf> {
    if let Ok(mut entries) = std::fs::read_dir(out)
        && entries.next().is_some()
    {
        bail!(
            "{} is not empty: give --out a new folder (the results of two runs would mix)",
            out.display()
        );
    }
    Ok(out.to_owned())
}

/// Creates `wanted`, or `wanted-2`, `wanted-3`... when it exists (two runs in one second).
fn new_default_out(wanted: &Path) -> Result<PathBuf> {
    if let Some(parent) = wanted.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    for suffix in 1u32.. {
        let candidate = if suffix == 1 {
            wanted.to_owned()
        } else {
            PathBuf::from(format!("{}-{suffix}", wanted.display()))
        };
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error).with_context(|| format!("creating {}", candidate.display()));
            }
        }
    }
    unreachable!("some suffix is free")
}

/// Waits until every log in `stderr` says its service reached the broker.
async fn wait_connected(services: &mut Services, names: &[(&str, PathBuf)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, stderr) in names {
        loop {
            let text = std::fs::read_to_string(stderr).unwrap_or_default();
            if text.contains("connected to the broker") {
                break;
            }
            if services.exited(name)?.is_some() {
                bail!("{name} exited at start:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not reach the broker within a minute:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Runs a scenario file and writes its folder; an error when the hypothesis failed.
pub async fn run(args: ScenarioRunArgs, cancel: CancellationToken) -> Result<()> {
    let bytes =
        std::fs::read(&args.path).with_context(|| format!("reading {}", args.path.display()))?;
    let text = String::from_utf8(bytes.clone())
        .with_context(|| format!("{} is not UTF-8", args.path.display()))?;
    let stem = args.path.file_stem().unwrap_or_default().to_string_lossy();
    let scenario = Scenario::parse(&text, &stem)
        .with_context(|| format!("scenario {}", args.path.display()))?;
    let scenario_path = std::path::absolute(&args.path)?;
    let scenario_dir = scenario_path.parent().unwrap_or(Path::new(".")).to_owned();
    let started_ms = now_ms();
    let out = match &args.out {
        Some(out) => fresh_out(out)?,
        None => new_default_out(&default_out(&scenario.name, started_ms))?,
    };
    let log_dir = out.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let rabbitmqctl: Vec<String> = args
        .rabbitmqctl
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let tls = args.tls.files();
    let urls: BrokerUrls = args
        .amqp_url
        .parse::<BrokerUrls>()
        .context("AMQP_URL")?
        .with_tls(tls.clone())
        .context("AMQP_URL")?;
    let broker_version = match Broker::server_version(urls.first()).await {
        Ok(version) => Some(version),
        Err(error) => {
            tracing::warn!("asking the broker for its version: {error:#}");
            None
        }
    };
    // The scenario's model swap (the schema allows one): model runs the copy kept in the
    // run's folder, the file env.json hashes, even if the original changes meanwhile.
    let mut models = Vec::new();
    let mut swap = None;
    for drift in &scenario.drifts {
        if let Change::Model { coefficients } = &drift.change {
            let kept =
                environment::keep_model(&scenario_dir.join(coefficients), coefficients, &out)?;
            swap = Some((drift.item, out.join(&kept.copy)));
            models.push(kept);
        }
    }
    let environment = environment::describe(
        &args.path,
        &bytes,
        broker_version,
        models,
        nnmon_report::format_utc(started_ms),
    );
    info!(scenario = %scenario.name, out = %out.display(), "running a scenario");

    let prefix = format!(
        "scenario.{}.{}.",
        scenario.name,
        uuid::Uuid::now_v7().simple()
    );
    let queues = QueueNames::with_prefix(&prefix);
    let run_cancel = cancel.child_token();
    let needs_proxy = scenario
        .faults
        .iter()
        .any(|f| matches!(f.action, FaultAction::Partition { .. }));
    // The proxy listens on 127.0.0.1, a name the broker's certificate does not hold: a
    // partition over TLS could not connect (a URL list never mixes amqp:// and amqps://).
    if needs_proxy && urls.first().tls_files().is_some() {
        bail!(
            "a partition fault needs a plain amqp:// AMQP_URL: the services would reach the broker through the runner's proxy at 127.0.0.1, which its TLS certificate does not name"
        );
    }
    let (service_url, proxy) = if needs_proxy {
        let (upstream, _) =
            proxy::reroute(&args.amqp_url, "").context("AMQP_URL has no host to proxy")?;
        let proxy = proxy::Proxy::start(upstream, run_cancel.clone()).await?;
        let (_, url) = proxy::reroute(&args.amqp_url, &proxy.address)
            .context("AMQP_URL has no host to proxy")?;
        (url, Some(proxy))
    } else {
        (args.amqp_url.clone(), None)
    };
    let settings = &scenario.services;
    let mut env = vec![
        ("AMQP_URL".to_owned(), service_url),
        ("NNMON_QUEUE_PREFIX".to_owned(), prefix.clone()),
        ("NNMON_LOG_DIR".to_owned(), log_dir.display().to_string()),
        (
            "NNMON_STATUS_INTERVAL".to_owned(),
            settings.status_interval.unwrap_or(0.5).to_string(),
        ),
    ];
    if let Some(prefetch) = settings.prefetch {
        env.push(("NNMON_PREFETCH".to_owned(), prefetch.to_string()));
    }
    for (key, file) in [
        ("NNMON_TLS_CA_FILE", &tls.ca_file),
        ("NNMON_TLS_CERT_FILE", &tls.cert_file),
        ("NNMON_TLS_KEY_FILE", &tls.key_file),
    ] {
        if let Some(file) = file {
            env.push((key.to_owned(), file.display().to_string()));
        }
    }
    let exe = std::env::current_exe().context("finding the nnmon binary")?;
    let mut services = Services::new(exe, env, &log_dir);
    let confirmed_path = log_dir.join("confirmed_ids.txt");
    let window = settings.window.unwrap_or(1000) as usize;
    let mut probe = Probe::new(&log_dir, &confirmed_path, window);

    let mut model_args = vec!["model".to_owned()];
    if let Some(window) = settings.drift_window {
        model_args.extend(["--drift-window".to_owned(), window.to_string()]);
    }
    if let Some((item, path)) = &swap {
        model_args.extend([
            "--swap-model".to_owned(),
            path.display().to_string(),
            "--swap-at-item".to_owned(),
            item.to_string(),
        ]);
    }
    let mut metric_args = vec!["metric".to_owned()];
    if let Some(ttl) = settings.join_ttl {
        metric_args.extend(["--join-ttl".to_owned(), ttl.to_string()]);
    }
    if let Some(window) = settings.window {
        metric_args.extend(["--window".to_owned(), window.to_string()]);
    }
    let load_at_start = load::load1();
    let model_log = services.start("model", model_args)?;
    let metric_log = services.start("metric", metric_args)?;
    probe.watch_model(model_log.clone());
    probe.watch_metric(metric_log.clone());
    let started = Instant::now();
    let mut restarts = Vec::new();
    let outcome = async {
        wait_connected(
            &mut services,
            &[("model", model_log), ("metric", metric_log)],
        )
        .await?;
        // One t0 for features' schedule and the runner's clock.
        let start_us = now_us() + START_LEAD.as_micros() as u64;
        let load_start = Instant::now() + START_LEAD;
        services.start(
            "features",
            vec![
                "features".to_owned(),
                "--scenario".to_owned(),
                scenario_path.display().to_string(),
                "--confirmed-ids".to_owned(),
                confirmed_path.display().to_string(),
                "--start-at".to_owned(),
                start_us.to_string(),
            ],
        )?;
        drive(
            &scenario,
            load_start,
            &urls,
            &rabbitmqctl,
            &queues,
            &mut services,
            &mut probe,
            proxy.as_ref(),
            &mut restarts,
            &cancel,
        )
        .await
    }
    .await;
    // Waits for a broker restart cut short by Ctrl-C or an error to start the app again
    // (dropped with the run, e.g. by the shutdown deadline, it waits all the same).
    drop(restarts);
    let stop_failures = services.stop_all(STOP_TIMEOUT).await;
    let duration_s = started.elapsed().as_secs_f64();
    let machine = Machine {
        cpu: Some(services.cpu()).filter(|cpu| !cpu.is_empty()),
        load_average: load_at_start
            .zip(load::load1())
            .map(|(start, end)| LoadAverage { start, end }),
    };
    run_cancel.cancel();
    // On every way out, a failed start included.
    let (dead_lettered, deleted) =
        broker::count_and_delete(&urls, &queues.dead_letter, &queues.all()).await;
    let dead_lettered = dead_lettered.map(u64::from);
    let mut driven = match outcome {
        Ok(driven) => driven,
        Err(error) => {
            if let Err(deleting) = deleted {
                tracing::warn!("deleting the run's queues: {deleting:#}");
            }
            return Err(error);
        }
    };
    driven.failures.extend(stop_failures);
    probe.poll(driven.load_seconds);
    // features reached the broker after t0 (a loaded machine, a slow build): its first
    // items went at once, their latency counting the lateness. Recorded, not a failure.
    if let Some(late_ms) = probe::features_late_ms(&log_dir.join("features-1.stderr")) {
        tracing::warn!(
            "features' schedule started {late_ms} ms after t0: the first items' latency includes it"
        );
        probe.event(0.0, format!("features started {late_ms} ms late"));
    }
    // features applies an injection to the item due then (one t0 for both clocks), and
    // model swaps at that item: each is marked in the second that item was due. A swap
    // model never reported is not marked (judge counts it as a failure).
    for drift in &scenario.drifts {
        let at = scenario.plan.due(drift.item).as_secs_f64();
        let what = match &drift.change {
            Change::Model { coefficients } if probe.swapped_at == Some(drift.item) => {
                let file = coefficients.file_name().unwrap_or(coefficients.as_os_str());
                format!(
                    "model swapped to {} at item {}",
                    file.to_string_lossy(),
                    drift.item
                )
            }
            Change::Model { .. } => continue,
            change => format!("{} from item {}", change.describe(), drift.item),
        };
        probe.event(at, what);
    }
    if let Err(error) = deleted {
        driven
            .failures
            .push(format!("deleting the run's queues: {error:#}"));
    }
    let dead_lettered = match dead_lettered {
        Ok(count) => count,
        Err(error) => {
            driven
                .failures
                .push(format!("counting dead letters: {error:#}"));
            0
        }
    };
    let summary = judge(
        &scenario,
        &probe,
        &log_dir,
        dead_lettered,
        driven,
        duration_s,
        machine,
    );
    let timeline = probe.timeline(|second| {
        let plan = &scenario.plan;
        plan.due_before(Duration::from_secs(second + 1))
            - plan.due_before(Duration::from_secs(second))
    });
    report::write_all(&out, &scenario, &summary, &timeline, &environment)?;
    print_summary(&summary, &out);
    if let Some(cpu) = &summary.cpu {
        let total = CpuTime::total(cpu.values());
        if total.contended() {
            tracing::warn!(
                "the services waited {:.1} s for a CPU and ran {:.1} s: latency figures are dominated by the machine's load ({}), not by nnmon",
                total.wait_s,
                total.cpu_s,
                load_text(summary.load_average)
            );
        }
    }
    if !summary.hypothesis_held {
        bail!(
            "scenario {}: the hypothesis failed: {}",
            scenario.name,
            summary.hypothesis_failures.join("; ")
        );
    }
    Ok(())
}

fn print_summary(summary: &Summary, out: &Path) {
    let latency = summary.latency_ms.map_or_else(
        || "no latency measured".to_owned(),
        |l| {
            format!(
                "latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50, l.p99, l.max
            )
        },
    );
    println!(
        "{}: {} items confirmed, {} rows, exactly once: {}, {:.0} items/s, {latency}, {} orphans, {} dead-lettered, {} alarms ({} false)",
        summary.scenario,
        summary.items_confirmed,
        summary.rows,
        summary.exactly_once,
        summary.throughput_items_per_s,
        summary.orphans,
        summary.dead_lettered,
        summary.alarms.len(),
        summary.false_alarms,
    );
    for injection in &summary.injections {
        println!(
            "  injection at item {} ({}): detection delay {}",
            injection.item,
            injection.change,
            injection
                .detection_delay_items
                .map_or_else(|| "none".to_owned(), |d| format!("{d} items"))
        );
    }
    for step in &summary.steps {
        if summary.steps.len() > 1 {
            println!(
                "  step {:.0} items/s offered: {:.0} achieved, p99 {}",
                step.offered_items_per_s,
                step.achieved_items_per_s,
                step.latency_ms
                    .map_or_else(|| "-".to_owned(), |l| format!("{:.1} ms", l.p99))
            );
        }
    }
    if let Some(cpu) = &summary.cpu {
        let total = CpuTime::total(cpu.values());
        println!(
            "  services: {:.1} s on a CPU, {:.1} s waiting for one (wait/cpu {}); {}",
            total.cpu_s,
            total.wait_s,
            report::wait_per_cpu(total),
            load_text(summary.load_average)
        );
    }
    let verdict = if summary.hypothesis_held {
        "held".to_owned()
    } else {
        format!("FAILED ({})", summary.hypothesis_failures.join("; "))
    };
    println!("hypothesis {verdict}; results in {}", out.display());
}

/// The load average from start to end, for people.
fn load_text(load: Option<LoadAverage>) -> String {
    load.map_or_else(
        || "load average unknown".to_owned(),
        |l| format!("load average {:.2} → {:.2}", l.start, l.end),
    )
}

/// The machine's load during the run, for the summary.
struct Machine {
    cpu: Option<std::collections::BTreeMap<String, CpuTime>>,
    load_average: Option<LoadAverage>,
}

/// What [`drive`] did.
struct Driven {
    /// Problems met (each fails the hypothesis).
    failures: Vec<String>,
    faults: Vec<FaultRecord>,
    /// Seconds after the load started when it ended.
    load_seconds: f64,
}

/// Runs the load and the faults, then waits for the rows.
#[allow(clippy::too_many_arguments)]
async fn drive(
    scenario: &Scenario,
    load_start: Instant,
    urls: &BrokerUrls,
    rabbitmqctl: &[String],
    queues: &QueueNames,
    services: &mut Services,
    probe: &mut Probe,
    proxy: Option<&proxy::Proxy>,
    restarts: &mut Vec<broker::BrokerRestart>,
    cancel: &CancellationToken,
) -> Result<Driven> {
    let plan_seconds = scenario.plan.duration().as_secs_f64();
    let bar = ProgressBar::new(plan_seconds.ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut pending = actions(scenario);
    let (report_tx, mut reports) = mpsc::unbounded_channel::<Report>();
    let mut background = 0usize;
    // A broker restart lasts longer than its `down` (start_app and the boot wait after
    // it), which the schema's overlap check cannot know: the next fault waits for it.
    let mut broker_restarting = false;
    let mut failures = Vec::new();
    let mut faults = Vec::new();
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut features_done = false;
    let mut last_growth = Instant::now();
    let mut rows_seen = 0;
    let mut logged_second = u64::MAX;
    loop {
        let next = pending.first().map(|(due, _)| load_start + *due);
        // The time when a branch below wakes up, not when the wait began (a poll's
        // findings and an action's mark belong to the second they happen in).
        let now = || load_start.elapsed().as_secs_f64();
        tokio::select! {
            _ = ticker.tick() => {
                let at = now();
                services.sample();
                probe.poll(at);
                let (rows, confirmed) = probe.rates_before(at);
                let p99 = probe.p99_before(at).map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"));
                let offered = {
                    let second = at.max(1.0).floor() - 1.0;
                    scenario.plan.due_before(Duration::from_secs_f64(second + 1.0))
                        - scenario.plan.due_before(Duration::from_secs_f64(second))
                };
                let message = format!(
                    "offered {offered}/s, confirmed {confirmed}/s, achieved {rows}/s, p99 {p99} ms; {} rows of {} confirmed",
                    probe.rows.len(), probe.confirmed.len()
                );
                bar.set_position(at.min(plan_seconds) as u64);
                bar.set_message(message.clone());
                if bar.is_hidden() && (at as u64).is_multiple_of(5) && at as u64 != logged_second {
                    logged_second = at as u64;
                    info!("{:.0} s: {message}", at);
                }
                if probe.rows.len() > rows_seen {
                    rows_seen = probe.rows.len();
                    last_growth = Instant::now();
                }
                if !features_done {
                    if let Some(status) = services.exited("features")? {
                        features_done = true;
                        last_growth = Instant::now();
                        if !status.success() {
                            failures.push(format!("features exited with {status}"));
                        }
                    } else if at > plan_seconds + FEATURES_GRACE.as_secs_f64() {
                        failures.push(format!("features had not finished {} s after its schedule ended: {}", FEATURES_GRACE.as_secs(), services.tail("features")));
                        services.signal("features", true)?;
                    }
                }
                if features_done && pending.is_empty() && background == 0 {
                    let complete = probe.rows.len() >= probe.confirmed.len() && {
                        let ids: HashSet<&str> = probe.rows.iter().map(|(id, _)| id.as_str()).collect();
                        probe.confirmed.iter().all(|id| ids.contains(id.as_str()))
                    };
                    if complete {
                        // Duplicates would come after the last new row: give them time.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                    if last_growth.elapsed() > DRAIN_STALL {
                        break;
                    }
                }
            }
            () = tokio::time::sleep_until(next.unwrap_or(load_start)), if next.is_some() && !broker_restarting => {
                let at = now();
                let (due, action) = pending.remove(0);
                if at > due.as_secs_f64() + 1.0 {
                    info!("{action:?} starts at {at:.1} s instead of {:.1} s: the broker restart before it was still on", due.as_secs_f64());
                }
                let restarting_broker = matches!(action, Action::BrokerRestart(_));
                // Every action ends with one `Report::Done`, some from a background task.
                background += 1;
                let context = Setting { urls, rabbitmqctl, queues, proxy, load_start };
                match act(action, at, &context, services, probe, &report_tx, restarts).await {
                    Ok(()) => broker_restarting |= restarting_broker,
                    Err(error) => {
                        failures.push(format!("{error:#}"));
                        background -= 1;
                    }
                }
            }
            Some(report) = reports.recv() => match report {
                Report::Event { at, what } => probe.event(at, what),
                Report::Done { at, what, error, broker } => {
                    broker_restarting &= !broker;
                    background -= 1;
                    if let Some(error) = &error {
                        failures.push(format!("{what}: {error}"));
                    }
                    faults.push(FaultRecord { seconds: at, fault: what, error });
                }
            },
            () = cancel.cancelled() => {
                failures.push("interrupted".to_owned());
                break;
            }
        }
    }
    bar.finish_and_clear();
    faults.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    Ok(Driven {
        failures,
        faults,
        load_seconds: load_start.elapsed().as_secs_f64(),
    })
}

/// What actions need besides the services: the run's setting.
struct Setting<'a> {
    urls: &'a BrokerUrls,
    rabbitmqctl: &'a [String],
    queues: &'a QueueNames,
    proxy: Option<&'a proxy::Proxy>,
    load_start: Instant,
}

/// Carries out one action at `at` seconds, marking it on the timeline; it ends with one
/// [`Report::Done`] (sent from a background task for the slow ones) unless it fails here.
async fn act(
    action: Action,
    at: f64,
    context: &Setting<'_>,
    services: &mut Services,
    probe: &mut Probe,
    reports: &mpsc::UnboundedSender<Report>,
    restarts: &mut Vec<broker::BrokerRestart>,
) -> Result<()> {
    let event = |what: &str| {
        let _ = reports.send(Report::Event {
            at,
            what: what.to_owned(),
        });
    };
    let done = |what: String, error: Option<String>| {
        let _ = reports.send(Report::Done {
            at,
            what,
            error,
            broker: false,
        });
    };
    match action {
        Action::Signal { service, kill } => {
            let what = format!("{} {service}", if kill { "sigkill" } else { "sigterm" });
            event(&what);
            services.signal(service, kill)?;
            done(what, None);
        }
        Action::Restart(service) => {
            if services.is_known(service) {
                services.reap(service, STOP_TIMEOUT).await?;
            }
            // The new metric's row counts start after every row logged so far: read
            // them all first, or its alarms' items would be offset by a stale count.
            probe.poll(at);
            let stderr = services.restart(service)?;
            match service {
                "model" => probe.watch_model(stderr),
                _ => probe.watch_metric(stderr),
            }
            event(&format!("restart {service}"));
            done(format!("restart {service}"), None);
        }
        Action::Hold(hold) => {
            context.proxy.context("no proxy")?.hold(hold);
            let what = if hold {
                "partition"
            } else {
                "partition healed"
            };
            event(what);
            done(what.to_owned(), None);
        }
        Action::Poison(count) => {
            let urls = context.urls.clone();
            let targets = [
                context.queues.features.clone(),
                context.queues.y_true.clone(),
            ];
            let what = format!("{count} poison messages");
            event(&what);
            let reports = reports.clone();
            tokio::spawn(async move {
                let result = broker::publish_poison(&urls, [&targets[0], &targets[1]], count).await;
                let error = result.err().map(|e| format!("{e:#}"));
                let _ = reports.send(Report::Done {
                    at,
                    what,
                    error,
                    broker: false,
                });
            });
        }
        Action::BrokerRestart(down) => {
            event("broker stop_app");
            let load_start = context.load_start;
            let what = format!("broker app stopped for {} s", down.as_secs_f64());
            let (starting, done) = (reports.clone(), reports.clone());
            restarts.push(broker::BrokerRestart::start(
                context.rabbitmqctl.to_vec(),
                down,
                move || {
                    let _ = starting.send(Report::Event {
                        at: load_start.elapsed().as_secs_f64(),
                        what: "broker start_app".to_owned(),
                    });
                },
                move |result| {
                    let error = result.err().map(|e| format!("{e:#}"));
                    let _ = done.send(Report::Done {
                        at,
                        what,
                        error,
                        broker: true,
                    });
                },
            )?);
        }
    }
    Ok(())
}

/// Judges the run from what the probe saw.
fn judge(
    scenario: &Scenario,
    probe: &Probe,
    log_dir: &Path,
    dead_lettered: u64,
    driven: Driven,
    duration_s: f64,
    machine: Machine,
) -> Summary {
    let Driven {
        mut failures,
        faults,
        ..
    } = driven;
    let delivery = check_delivery(
        probe.confirmed.iter().map(String::as_str),
        probe.rows.iter().map(|(id, _)| id.as_str()),
    );
    let mut alarms = probe.alarms.clone();
    alarms.sort_by_key(|a| a.item);
    let score = score_alarms(&scenario.drifts, &alarms);
    let latencies: Vec<u64> = probe.rows.iter().filter_map(|(_, l)| *l).collect();
    let latency = Latency::of_micros(&latencies);
    let steps = steps(scenario, probe);
    let swap_item = scenario
        .drifts
        .iter()
        .find(|drift| matches!(drift.change, Change::Model { .. }))
        .map(|drift| drift.item);
    if let Some(item) = swap_item
        && probe.swapped_at != Some(item)
    {
        failures.push(format!(
            "the model swap at item {item} never happened (model predicted no item that far)"
        ));
    }
    let mut hypothesis_failures = check_hypothesis(
        &scenario.hypothesis,
        &Observed {
            delivery: &delivery,
            score: &score,
            dead_lettered,
            latency,
            step_latency: steps.iter().map(|step| step.latency_ms).collect(),
        },
    );
    hypothesis_failures.append(&mut failures);
    let orphans = std::fs::read_to_string(log_dir.join("orphans.csv"))
        .map_or(0, |text| text.lines().count().saturating_sub(1) as u64);
    let throughput = if probe.last_row_at > 0.0 {
        probe.rows.len() as f64 / probe.last_row_at
    } else {
        0.0
    };
    Summary {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        items_confirmed: probe.confirmed.len() as u64,
        rows: probe.rows.len() as u64,
        exactly_once: delivery.exactly_once(),
        delivery,
        throughput_items_per_s: throughput,
        latency_ms: latency,
        orphans,
        dead_lettered,
        alarms: score.alarms,
        false_alarms: score.false_alarms,
        injections: score.injections,
        faults,
        steps,
        hypothesis_held: hypothesis_failures.is_empty(),
        hypothesis_failures,
        duration_s,
        cpu: machine.cpu,
        load_average: machine.load_average,
    }
}

/// Each load step's offered and achieved rate and its items' latency. An item's step is
/// found from its place in the confirmed IDs (features confirms in sending order, except
/// for items sent again after a lost connection).
fn steps(scenario: &Scenario, probe: &Probe) -> Vec<StepSummary> {
    let plan = &scenario.plan;
    let position: HashMap<&str, u64> = probe
        .confirmed
        .iter()
        .enumerate()
        .map(|(index, id)| (id.as_str(), index as u64))
        .collect();
    let mut latencies = vec![Vec::new(); plan.steps().len()];
    for (id, latency) in &probe.rows {
        if let (Some(index), Some(latency)) = (position.get(id.as_str()), latency) {
            latencies[plan.step_of(*index)].push(*latency);
        }
    }
    let timeline = probe.timeline(|_| 0);
    plan.steps()
        .iter()
        .zip(plan.step_times())
        .zip(latencies)
        .map(|((step, (start, end)), latencies)| {
            let seconds: Vec<u64> = timeline
                .iter()
                .filter(|row| {
                    let second = Duration::from_secs(row.second);
                    second >= start && second + Duration::from_secs(1) <= end
                })
                .map(|row| row.achieved_per_s)
                .collect();
            let achieved = if seconds.is_empty() {
                0.0
            } else {
                seconds.iter().sum::<u64>() as f64 / seconds.len() as f64
            };
            StepSummary {
                offered_items_per_s: step.rate,
                achieved_items_per_s: achieved,
                latency_ms: Latency::of_micros(&latencies),
            }
        })
        .collect()
}

/// Prints two runs side by side.
pub fn compare_runs(args: ScenarioCompareArgs) -> Result<()> {
    let a = report::read_summary(&args.a)?;
    let b = report::read_summary(&args.b)?;
    let lines = compare(&a, &b);
    print!(
        "{}",
        format_comparison(
            &lines,
            &args.a.display().to_string(),
            &args.b.display().to_string()
        )
    );
    Ok(())
}
