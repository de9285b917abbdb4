//! What operators do to a running pipeline: stop the model for longer than the join's
//! grace, let hundreds of thousands of items pile up, delete queues, start a second metric
//! on the same folder. Every confirmed item still ends up as exactly one row (except, for
//! a deleted queue, the messages that were in it).

mod common;

use common::{MINUTE, Pipeline, assert_exactly_the_confirmed_items, broker, stream_through};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outage_five_times_the_grace_loses_nothing() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "outage");
    // A grace of 2 s; the model stays away for 10 s while items keep coming.
    pipeline.set_env("NNMON_JOIN_TTL", "2");
    stream_through(&mut pipeline, 1500, async |p: &mut Pipeline| {
        p.kill("model");
        tokio::time::sleep(Duration::from_secs(10)).await;
        p.start("model", &["model"]);
    })
    .await;
    let orphans =
        std::fs::read_to_string(pipeline.log_dir().join("orphans.csv")).expect("orphans.csv");
    assert_eq!(
        orphans.lines().count(),
        1,
        "no orphans, only the header:\n{orphans}"
    );
}

/// Reads `VmHWM` (peak resident memory) of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_waiting_truths_stay_in_the_broker_not_in_memory() {
    const ITEMS: usize = 200_000;
    const MAX_PENDING: usize = 50_000;
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "pileup");
    pipeline.set_env("NNMON_JOIN_MAX_PENDING", &MAX_PENDING.to_string());
    pipeline.start("metric", &["metric"]);
    // No model: every truth waits for a prediction that is not coming yet.
    let ids = pipeline.confirmed_ids_path();
    let count = ITEMS.to_string();
    let status = pipeline
        .run(
            "features",
            &[
                "features",
                "--delay",
                "0",
                "--count",
                &count,
                "--confirmed-ids",
                ids.to_str().expect("utf-8 path"),
            ],
            10 * MINUTE,
        )
        .await;
    assert!(status.success(), "{}", pipeline.logs());
    // The metric has taken its fill and paused; the rest waits in the broker.
    let deadline = std::time::Instant::now() + MINUTE;
    let left = loop {
        let left = pipeline.queue_depth(&pipeline.queues.y_true).await as usize;
        if left <= ITEMS - MAX_PENDING || std::time::Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still_left = pipeline.queue_depth(&pipeline.queues.y_true).await as usize;
    let rss = pipeline.rss_kib("metric") / 1024;
    let peak = peak_rss_mib(pipeline.pid("metric"));
    eprintln!(
        "{ITEMS} truths waiting, --join-max-pending {MAX_PENDING}: {still_left} left in the \
         broker, metric RSS {rss} MiB (peak {peak} MiB)"
    );
    assert!(
        left >= ITEMS - MAX_PENDING - 2 * 500 && still_left == left,
        "the metric must stop taking truths at the cap: {left} then {still_left} left\n{}",
        pipeline.logs()
    );
    assert!(
        peak < 200,
        "metric peaked at {peak} MiB with {MAX_PENDING} halves waiting"
    );
    assert!(
        pipeline.logs().contains("pausing"),
        "the pause is announced\n{}",
        pipeline.logs()
    );
    // The model comes back: everything drains, exactly once.
    pipeline.start("model", &["model"]);
    let deadline = 10 * MINUTE;
    pipeline.wait_for_rows(ITEMS, deadline).await;
    assert_exactly_the_confirmed_items(&mut pipeline, ITEMS).await;
}

/// Deletes `queue` of a running pipeline a fifth into the stream: the services warn,
/// restore the topology and their consumers, and every item sent afterwards is a row.
async fn delete_mid_stream(name: &str, queue: fn(&Pipeline) -> String) {
    const ITEMS: usize = 1500;
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, name);
    pipeline.start_stream(ITEMS);
    pipeline.wait_for_rows(ITEMS / 5, MINUTE).await;
    let deleted = queue(&pipeline);
    pipeline.delete_queue(&deleted).await;
    let confirmed_before_delete = pipeline.confirmed_ids().len();
    let status = pipeline.wait("features", 2 * MINUTE).await;
    assert!(status.success(), "features: {status}\n{}", pipeline.logs());
    let confirmed = pipeline.confirmed_ids();
    assert_eq!(confirmed.iter().collect::<HashSet<_>>().len(), ITEMS);
    // Items sent once the consumers were back all arrive; give them time.
    let sent_after: Vec<&String> = confirmed[confirmed_before_delete + 100..].iter().collect();
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let logged: HashSet<String> = pipeline.rows().into_iter().map(|r| r.id).collect();
        let missing = sent_after
            .iter()
            .filter(|id| !logged.contains(**id))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of the {} items sent after {deleted} was deleted have no row\n{}",
            sent_after.len(),
            pipeline.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = pipeline.rows();
    let logged: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(logged.len(), rows.len(), "a row was written twice");
    let confirmed: HashSet<&str> = confirmed.iter().map(String::as_str).collect();
    assert!(
        logged.is_subset(&confirmed),
        "a row for an item never confirmed"
    );
    eprintln!(
        "deleting {deleted} mid-stream lost {} of {ITEMS} items (those in the queue)",
        ITEMS - logged.len()
    );
    let logs = pipeline.logs();
    assert!(logs.contains("cancelled the consumer"), "{logs}");
    for service in ["model", "metric"] {
        assert!(pipeline.is_running(service), "{service} died\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_y_pred_mid_stream_restores_the_metric_consumer() {
    delete_mid_stream("deletepred", |p| p.queues.y_pred.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_y_true_mid_stream_restores_the_metric_consumer() {
    delete_mid_stream("deletetrue", |p| p.queues.y_true.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_features_mid_stream_restores_the_model_consumer() {
    delete_mid_stream("deletefeatures", |p| p.queues.features.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_metric_on_one_log_dir_refuses_and_names_the_first() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "twometrics");
    pipeline.start("metric", &["metric"]);
    let lock = pipeline.log_dir().join("metric.lock");
    let deadline = std::time::Instant::now() + MINUTE;
    while std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no lock taken\n{}",
            pipeline.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = pipeline.run("second", &["metric"], MINUTE).await;
    assert!(!status.success());
    let said = std::fs::read_to_string(pipeline.log_dir().join("second.stderr")).expect("stderr");
    let first = pipeline.pid("metric");
    assert!(
        said.contains(&format!("process {first}")) && said.contains("--log-dir"),
        "{said}"
    );
    assert!(pipeline.is_running("metric"), "the first one goes on");
}
