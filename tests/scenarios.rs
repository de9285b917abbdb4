//! The shipped short scenarios, end to end: `nnmon scenario run` against the broker at
//! `AMQP_URL` (or a container of its own), the real services as processes, and its exit
//! code and `summary.json` checked. `broker-restart` has a binary of its own
//! (`tests/scenario_broker_restart.rs`), `load-steps` is not run here (about a minute and
//! a half of load; `just scenarios` runs it).
//!
//! Also here: `features --rate` (the schedule its messages carry), the model swap at an
//! exact item, and two runs of one file giving the same items, alarms and verdict.
//!
//! The scenarios run one at a time (they measure; running them side by side on a small
//! machine would only slow each down).

mod common;

use common::{Pipeline, TestBroker, broker};
use nnmon_scenario::{AlarmKind, Summary};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

/// Runs `nnmon scenario run FILE --out OUT` against `broker`.
async fn run(broker: &TestBroker, file: &Path, out: &Path) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["scenario", "run"])
        .arg(file)
        .arg("--out")
        .arg(out)
        .env("AMQP_URL", &broker.url)
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("nnmon runs")
}

fn summary(out: &Path) -> Summary {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("a summary")
}

fn explain(output: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a shipped scenario, which must pass; returns its summary and folder.
async fn passes(name: &str) -> Option<(Summary, tempfile::TempDir)> {
    let broker = broker().await?;
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("tempdir");
    let output = run(&broker, &shipped(name), out.path()).await;
    assert!(output.status.success(), "{name}: {}", explain(&output));
    let summary = summary(out.path());
    assert!(summary.hypothesis_held, "{summary:?}");
    assert!(summary.exactly_once, "{summary:?}");
    assert_eq!(summary.rows, summary.items_confirmed, "{summary:?}");
    Some((summary, out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_sends_every_item_once_and_writes_the_whole_folder() {
    let Some((summary, out)) = passes("baseline").await else {
        return;
    };
    assert_eq!(summary.items_confirmed, 6000);
    assert_eq!(summary.false_alarms, 0);
    let latency = summary.latency_ms.expect("rows with a latency");
    assert!(latency.p50 > 0.0 && latency.p50 <= latency.p99);
    // Every service's CPU and runqueue wait, from its threads' schedstat, and the load.
    let cpu = summary.cpu.as_ref().expect("summary.json has cpu");
    for service in ["features", "model", "metric"] {
        let time = cpu.get(service).expect("each service's time");
        assert!(time.cpu_s > 0.0 && time.wait_s > 0.0, "{service}: {time:?}");
    }
    let load = summary.load_average.expect("summary.json has load_average");
    assert!(load.start >= 0.0 && load.end >= 0.0, "{load:?}");
    let report = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(report.contains("## Machine load"), "{report}");
    for file in [
        "timeline.csv",
        "env.json",
        "report.md",
        "rate_latency.png",
        "mae.png",
    ] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    let timeline = std::fs::read_to_string(out.path().join("timeline.csv")).expect("timeline");
    let mut lines = timeline.lines();
    assert!(
        lines
            .next()
            .expect("header")
            .starts_with("second,offered_per_s,confirmed_per_s,achieved_per_s,latency_p50_ms")
    );
    assert!(
        timeline
            .lines()
            .next()
            .is_some_and(|h| h.ends_with(",load1"))
    );
    let rows_per_second: u64 = lines
        .map(|line| {
            line.split(',')
                .nth(3)
                .expect("achieved")
                .parse::<u64>()
                .expect("a count")
        })
        .sum();
    assert_eq!(
        rows_per_second, summary.rows,
        "the timeline accounts for every row"
    );
    let env: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("env.json")).expect("env.json"),
    )
    .expect("JSON");
    assert!(
        env["broker_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(char::is_numeric)),
        "the server's version from its greeting: {env}"
    );
    for key in [
        "git_revision",
        "git_dirty",
        "nnmon_version",
        "rustc",
        "broker_version",
        "os",
        "cpu_model",
        "cpu_cores",
        "scenario_sha256",
    ] {
        assert!(env.get(key).is_some(), "env.json lacks {key}: {env}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_shift_raises_the_alarm_on_that_feature() {
    let Some((summary, out)) = passes("drift-feature").await else {
        return;
    };
    // Item 3 000 is due 7.5 s after the load's start (400 items/s): the injection is
    // marked in that second's row, the one the charts draw it at.
    let timeline = std::fs::read_to_string(out.path().join("timeline.csv")).expect("timeline");
    let marked: Vec<&str> = timeline
        .lines()
        .filter(|line| line.contains("shift bmi +2 sd from item 3000"))
        .collect();
    assert_eq!(marked.len(), 1, "{timeline}");
    assert!(marked[0].starts_with("7,"), "{}", marked[0]);
    let delay = summary.injections[0]
        .detection_delay_items
        .expect("detected");
    assert!(delay <= 1000, "{summary:?}");
    assert!(
        summary
            .alarms
            .iter()
            .any(|a| a.kind == AlarmKind::FeatureDrift
                && a.feature.as_deref() == Some("bmi")
                && a.detection_delay_items.is_some()),
        "{summary:?}"
    );
    assert_eq!(summary.false_alarms, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_model_raises_the_error_alarm() {
    let Some((summary, out)) = passes("drift-model").await else {
        return;
    };
    assert!(
        summary
            .alarms
            .iter()
            .any(|a| a.kind == AlarmKind::ErrorDrift && a.detection_delay_items.is_some()),
        "{summary:?}"
    );
    let timeline = std::fs::read_to_string(out.path().join("timeline.csv")).expect("timeline");
    assert!(
        timeline.contains("model swapped to stale.json at item 3200"),
        "{timeline}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outage_longer_than_the_join_ttl_loses_nothing() {
    let Some((summary, _out)) = passes("model-outage").await else {
        return;
    };
    assert_eq!(summary.orphans, 0, "{summary:?}");
    assert!(
        summary.faults.iter().all(|f| f.error.is_none()),
        "{summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_longer_than_the_heartbeat_loses_nothing() {
    let Some((summary, _out)) = passes("partition").await else {
        return;
    };
    assert!(
        summary.faults.iter().any(|f| f.fault == "partition healed"),
        "{summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_flood_is_dead_lettered_and_the_good_items_still_arrive() {
    let Some((summary, _out)) = passes("poison-flood").await else {
        return;
    };
    assert_eq!(summary.dead_lettered, 2000, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hypothesis_exits_non_zero_and_says_why() {
    let Some(broker) = broker().await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("impossible.toml");
    std::fs::write(
        &file,
        "seed = 9\n[load]\ncount = 200\nrate = 200\n[hypothesis]\ndead_lettered = 7\n",
    )
    .expect("write");
    let out = dir.path().join("out");
    let output = run(&broker, &file, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    let summary = summary(&out);
    assert!(!summary.hypothesis_held);
    assert!(summary.exactly_once, "{summary:?}");
    assert_eq!(
        summary.hypothesis_failures,
        ["dead_lettered: 0 messages dead-lettered, 7 expected"]
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the hypothesis failed"),
        "{}",
        explain(&output)
    );
}

/// `(y_true, y_pred)` of every row, in the order features confirmed the items (its
/// sending order: no fault resends anything here).
fn rows_in_item_order(out: &Path) -> Vec<(String, String)> {
    let log = std::fs::read_to_string(out.join("logs/metric_log.csv")).expect("log");
    let rows: HashMap<String, (String, String)> = csv::Reader::from_reader(log.as_bytes())
        .records()
        .map(|r| {
            let r = r.expect("a row");
            (r[0].to_owned(), (r[1].to_owned(), r[2].to_owned()))
        })
        .collect();
    let ids = std::fs::read_to_string(out.join("logs/confirmed_ids.txt")).expect("ids");
    ids.lines()
        .map(|id| {
            rows.get(id)
                .expect("a row for every confirmed item")
                .clone()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_file_gives_the_same_items_alarms_and_verdict_and_compare_shows_both() {
    let Some(broker) = broker().await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("twice.toml");
    // age and s6 barely move the prediction (coefficients -10 and 68), so only model's
    // input test alarms (metric's error alarm would follow rows in the order metric joined
    // them, which may differ), on items numbered in the messages: the same in both runs.
    std::fs::write(
        &file,
        "seed = 11\n[load]\ncount = 1500\nrate = 500\n[services]\ndrift_window = 200\n\
         [[inject]]\nitem = 500\nkind = \"shift\"\nfeature = \"age\"\nsd = 3\n\
         [[inject]]\nitem = 1000\nkind = \"scale\"\nfeature = \"s6\"\nfactor = 3\n\
         [hypothesis]\nalarm_within_items = 300\n",
    )
    .expect("write");
    let mut items = Vec::new();
    for run_name in ["a", "b"] {
        let out = dir.path().join(run_name);
        let output = run(&broker, &file, &out).await;
        assert!(output.status.success(), "{}", explain(&output));
        items.push(rows_in_item_order(&out));
    }
    assert_eq!(items[0].len(), 1500);
    assert_eq!(
        items[0], items[1],
        "the same seed sends the same rows, with the same injections, in the same order"
    );
    let (a, b) = (
        summary(&dir.path().join("a")),
        summary(&dir.path().join("b")),
    );
    assert!(a.hypothesis_held && b.hypothesis_held, "{a:?}\n{b:?}");
    assert_eq!(a.injections, b.injections);
    assert_eq!(a.injections.len(), 2);
    for feature in ["age", "s6"] {
        assert!(
            a.alarms
                .iter()
                .any(|alarm| alarm.feature.as_deref() == Some(feature)),
            "{a:?}"
        );
    }
    assert_eq!(a.alarms, b.alarms, "the same alarms at the same items");
    assert_eq!(
        (a.false_alarms, a.exactly_once, &a.hypothesis_failures),
        (b.false_alarms, b.exactly_once, &b.hypothesis_failures)
    );
    let compared = std::process::Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["scenario", "compare"])
        .arg(dir.path().join("a"))
        .arg(dir.path().join("b/summary.json"))
        .output()
        .expect("compare runs");
    assert!(compared.status.success(), "{}", explain(&compared));
    let table = String::from_utf8_lossy(&compared.stdout);
    assert!(table.contains("latency_ms.p99"), "{table}");
    assert!(table.contains("items_confirmed"), "{table}");
    assert!(table.contains("%"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_swap_lands_on_its_item_exactly() {
    let Some(broker) = broker().await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The second model predicts 1 000 000 for everything: no item of the first can.
    std::fs::write(
        dir.path().join("far.json"),
        r#"{"intercept": 1000000.0, "coefficients": [0,0,0,0,0,0,0,0,0,0]}"#,
    )
    .expect("write");
    let file = dir.path().join("swap.toml");
    std::fs::write(
        &file,
        "seed = 8\n[load]\ncount = 600\nrate = 300\n\
         [[inject]]\nitem = 250\nkind = \"model\"\ncoefficients = \"far.json\"\n",
    )
    .expect("write");
    let out = dir.path().join("out");
    let output = run(&broker, &file, &out).await;
    assert!(output.status.success(), "{}", explain(&output));
    let predictions: Vec<f64> = rows_in_item_order(&out)
        .iter()
        .map(|(_, y_pred)| y_pred.parse().expect("a number"))
        .collect();
    assert_eq!(predictions.len(), 600);
    let first_of_second = predictions.iter().position(|&p| p == 1_000_000.0);
    assert_eq!(first_of_second, Some(250), "{predictions:?}");
    assert!(
        predictions[..250].iter().all(|&p| p < 1000.0),
        "items before 250 from the first model: {predictions:?}"
    );
    assert!(
        predictions[250..].iter().all(|&p| p == 1_000_000.0),
        "items from 250 on from the second model: {predictions:?}"
    );
    let summary = summary(&out);
    assert_eq!(summary.injections[0].item, 250);
    let timeline = std::fs::read_to_string(out.join("timeline.csv")).expect("timeline");
    assert!(
        timeline.contains("model swapped to far.json at item 250"),
        "{timeline}"
    );
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("env.json")).expect("env"))
            .expect("JSON");
    let copy = out.join(env["models"][0]["copy"].as_str().expect("a copy"));
    assert_eq!(
        std::fs::read(copy).expect("the model file copied"),
        std::fs::read(dir.path().join("far.json")).expect("the model file")
    );
    assert_eq!(env["models"][0]["sha256"].as_str().map(str::len), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_at_a_rate_carries_its_schedule_from_the_start_it_was_given() {
    let Some(broker) = broker().await else { return };
    let pipeline = Pipeline::new(&broker, "rate");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64;
    let start = now_us + 500_000;
    let status = pipeline
        .run(
            "features",
            &[
                "features",
                "--rate",
                "40",
                "--count",
                "60",
                "--seed",
                "2",
                "--start-at",
                &start.to_string(),
            ],
            std::time::Duration::from_secs(60),
        )
        .await;
    assert!(status.success(), "{}", pipeline.logs());
    let connection = pipeline.connect().await;
    let channel = connection.create_channel().await.expect("channel");
    let mut carried = Vec::new();
    while let Some(message) = channel
        .basic_get(
            pipeline.queues.features.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        let body = nnmon_proto::FeaturesMessage::decode(&message.delivery.data).expect("valid");
        carried.push((
            body.item.expect("an item number"),
            body.published_us.expect("a publish time"),
        ));
    }
    let expected: Vec<(u64, u64)> = (0..60).map(|i| (i, start + i * 25_000)).collect();
    assert_eq!(
        carried, expected,
        "item i carries start + i / rate: latency is measured from the schedule"
    );
}

#[test]
fn a_non_empty_out_folder_is_refused() {
    let out = tempfile::tempdir().expect("tempdir");
    std::fs::write(out.path().join("summary.json"), "{}").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["scenario", "run"])
        .arg(shipped("baseline"))
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("nnmon runs");
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not empty"),
        "{}",
        explain(&output)
    );
    let left: Vec<_> = std::fs::read_dir(out.path()).expect("read").collect();
    assert_eq!(left.len(), 1, "the runner wrote into the refused folder");
}

/// The live processes (not zombies) whose environment holds `entry`, with their
/// environments.
fn processes_with_env(entry: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for (pid, folder) in common::procfs::processes() {
        let Ok(environ) = std::fs::read(folder.join("environ")) else {
            continue;
        };
        let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
        if common::procfs::runs(pid) && environ.lines().any(|line| line == entry) {
            found.push((pid, environ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_runner_takes_its_services_with_it() {
    let Some(broker) = broker().await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("long.toml");
    std::fs::write(&file, "seed = 5\n[load]\ncount = 100000\nrate = 50\n").expect("write");
    let out = dir.path().join("out");
    let mut runner = std::process::Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["scenario", "run"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .env("AMQP_URL", &broker.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nnmon runs");
    let marker = format!("NNMON_LOG_DIR={}", out.join("logs").display());
    let mut services = Vec::new();
    for _ in 0..600 {
        services = processes_with_env(&marker);
        if services.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        services.len(),
        3,
        "model, metric and features never all ran"
    );
    let prefix = services[0]
        .1
        .lines()
        .find_map(|line| line.strip_prefix("NNMON_QUEUE_PREFIX="))
        .expect("a queue prefix")
        .to_owned();
    runner.kill().expect("SIGKILL the runner");
    runner.wait().expect("the runner exits");
    let mut left = services.clone();
    for _ in 0..600 {
        left = processes_with_env(&marker);
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let connection = common::connect_any(&broker.url).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    for queue in nnmon_proto::QueueNames::with_prefix(&prefix).all() {
        let _ = channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await;
    }
    let pids: Vec<u32> = left.iter().map(|(pid, _)| *pid).collect();
    assert!(pids.is_empty(), "services outlived the runner: {pids:?}");
}
